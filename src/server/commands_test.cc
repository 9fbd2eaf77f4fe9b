// The command codec (server/commands.h): one field list read both ways, defaults for what
// older logs left out, and errors naming the field for what no log could hold.
#include "server/commands.h"

#include <gtest/gtest.h>

namespace rsv::server {
namespace {

template <class T>
T RoundTrip(const T& c) {
  Result<Cmd> back = DecodeCommand(T::kKind, EncodeCommand(c));
  EXPECT_TRUE(back.ok()) << back.status().ToString();
  EXPECT_TRUE(std::holds_alternative<T>(*back));
  return std::get<T>(*back);
}

TEST(Commands, EveryKindRoundTripsItsFields) {
  cmd::Submit s;
  s.tenant = "t";
  s.pool = "p";
  s.name = "n\"ame";
  s.gpus = 16;
  s.tier = "auto";
  s.limit_micros = 2'500'000;
  s.fallback_micros = 1'000'000;
  s.notice_s = 90;
  s.time_limit_s = 3600;
  s.max_restarts = -1;
  s.command = "python3 train.py";
  s.workdir = "/w";
  s.cpu_millis = 4000;
  s.memory_mib = int64_t{1} << 20;
  s.env = {"A=1", "B=2"};
  s.max_gpus = 64;
  s.gpu_step = 8;
  s.resize_mode = "signal";
  s.resize_cooldown_s = 60;
  s.dependencies = {{"afterany", 3}, {"afterok", 4}};
  EXPECT_EQ(EncodeCommand(RoundTrip(s)), EncodeCommand(s));
  const cmd::Submit back = RoundTrip(s);
  EXPECT_EQ(back.dependencies[1].job, 4);
  EXPECT_EQ(*back.fallback_micros, 1'000'000);
  EXPECT_EQ(back.env, s.env);

  cmd::Reserve r;
  r.tenant = "t";
  r.pool = "p";
  r.gpus = 8;
  r.start_us = 5;
  r.duration_us = 7;
  r.lend = false;
  r.quote_only = true;
  EXPECT_EQ(EncodeCommand(RoundTrip(r)), EncodeCommand(r));
  cmd::Config config;
  config.pools.push_back({"h100", "H100", 1, 2, 3, 4, 5, 6, 7, 8});
  config.nodes.push_back({"n1", "h100", "z/r", 8});
  EXPECT_EQ(EncodeCommand(RoundTrip(config)), EncodeCommand(config));
  cmd::Register reg;
  reg.name = "n1";
  reg.inventory.text = R"([{"memory_mib":81920,"uuid":"GPU-1"}])";  // as JSON writes it
  EXPECT_EQ(RoundTrip(reg).inventory.text, reg.inventory.text);
  cmd::AgentExit exit{{"n1", 7, 2, true}, true, false, "exit 0"};
  EXPECT_EQ(EncodeCommand(RoundTrip(exit)), EncodeCommand(exit));
  // Every kind, with its defaults, comes back as itself.
  auto every = [](auto... kinds) {
    for (const Cmd& c : {Cmd(kinds)...}) {
      Result<Cmd> back = DecodeCommand(KindOf(c), EncodeCommand(c));
      ASSERT_TRUE(back.ok()) << KindOf(c) << ": " << back.status().ToString();
      EXPECT_EQ(back->index(), c.index()) << KindOf(c);
      EXPECT_EQ(EncodeCommand(*back), EncodeCommand(c)) << KindOf(c);
    }
  };
  every(cmd::Cycle{}, cmd::Config{}, cmd::AddTenant{}, cmd::DeleteTenant{}, cmd::AddToken{},
        cmd::Revoke{}, cmd::AddNode{}, cmd::Register{}, cmd::NodeStateChange{}, cmd::Started{},
        cmd::StartFailed{}, cmd::AgentExit{}, cmd::Checkpoint{}, cmd::ResizeAck{}, cmd::Reserve{},
        cmd::Return{}, cmd::Submit{}, cmd::Cancel{}, cmd::Release{}, cmd::Exit{});
}

// Bodies as older servers logged them: fields absent take the defaults the applier always
// used, and fields no command reads any more are ignored.
TEST(Commands, OlderBodiesTakeTheDefaults) {
  Result<Cmd> s = DecodeCommand("submit", R"({"tenant":"t","pool":"p","status":"x"})");
  ASSERT_TRUE(s.ok()) << s.status().ToString();
  const auto& submit = std::get<cmd::Submit>(*s);
  EXPECT_EQ(submit.gpus, 1);
  EXPECT_EQ(submit.tier, "spot");
  EXPECT_EQ(submit.notice_s, 30);
  EXPECT_EQ(submit.resize_mode, "restart");
  EXPECT_EQ(submit.resize_cooldown_s, 300);
  EXPECT_FALSE(submit.fallback_micros);
  Result<Cmd> e = DecodeCommand("exit", R"({"job":3})");
  ASSERT_TRUE(e.ok());
  EXPECT_TRUE(std::get<cmd::Exit>(*e).success);
  Result<Cmd> r = DecodeCommand("reserve", R"({"tenant":"t","pool":"p","gpus":8,"end_us":9})");
  ASSERT_TRUE(r.ok());
  EXPECT_TRUE(std::get<cmd::Reserve>(*r).lend);
  EXPECT_FALSE(std::get<cmd::Reserve>(*r).duration_us);
  Result<Cmd> a = DecodeCommand("agent_exit", R"({"node":"n","job":1,"attempt":1})");
  ASSERT_TRUE(a.ok());
  EXPECT_FALSE(std::get<cmd::AgentExit>(*a).member);  // ended the job as a whole
}

TEST(Commands, WhatNoLogHoldsIsAnErrorNamingTheField) {
  auto field = [](const std::string& kind, const std::string& body) {
    Result<Cmd> c = DecodeCommand(kind, body);
    return c.ok() ? std::string("ok") : c.status().field() + ": " + c.status().message();
  };
  EXPECT_EQ(field("submit", R"({"gpus":"8"})"), "gpus: is not an integer");
  EXPECT_EQ(field("submit", R"({"gpus":4294967296})"), "gpus: is not an integer in range");
  EXPECT_EQ(field("submit", R"({"gpus":1.5})"), "gpus: is not an integer");
  EXPECT_EQ(field("submit", R"({"env":["A=1",2]})"), "env[1]: is not a string");
  EXPECT_EQ(field("submit", R"({"dependencies":[{"job":1},{"job":"x"}]})"),
            "dependencies[1].job: is not an integer");
  EXPECT_EQ(field("submit", R"({"dependencies":[3]})"), "dependencies[0]: is not an object");
  EXPECT_EQ(field("reserve", R"({"lend":1})"), "lend: is not true or false");
  EXPECT_EQ(field("config", R"({"pools":{}})"), "pools: is not an array");
  EXPECT_EQ(field("exit", R"({"job":18446744073709551615})"), "job: is not an integer in range");
  EXPECT_EQ(field("launch", "{}"), "kind: unknown command kind 'launch'");
  EXPECT_EQ(field("submit", "[1]"), "body: is not a JSON object");
  EXPECT_EQ(field("submit", "{"), "body: is not a JSON object");
}

}  // namespace
}  // namespace rsv::server
