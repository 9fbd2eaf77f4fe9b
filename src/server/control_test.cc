// The control plane over a real (in-memory) SQLite command log: replay of logs written by
// earlier versions.
#include "server/control.h"

#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "common/clock.h"
#include "store/store.h"

namespace rsv::server {
namespace {

using json = nlohmann::json;

// Replays `log` (kind, seconds, body) into a fresh control plane; returns job 1 as JSON.
json ReplayJob(const std::vector<std::tuple<std::string, int64_t, json>>& log) {
  auto cfg = ParseServerConfig(R"({"pools": [{"name": "gpu", "reserve_price": "1"}]})");
  auto store = OpenSqliteStore(":memory:");
  EXPECT_TRUE(cfg.ok() && store.ok());
  std::vector<Command> commands;
  for (const auto& [kind, at_s, body] : log) {
    commands.push_back(Command{0, Timestamp::FromMicros(at_s * 1'000'000), kind, body.dump()});
  }
  EXPECT_TRUE((*store)->Append(commands).ok());
  ManualClock clock(Timestamp::FromMicros(100'000'000));
  ControlPlane control(*cfg, std::move(*store), &clock);
  Status s = control.Start();
  EXPECT_TRUE(s.ok()) << s.ToString();
  EXPECT_TRUE(control.CheckInvariants().empty());
  Caller admin;
  admin.admin = true;
  auto job = control.Read("job/1", admin, {});
  return job.ok() ? json::parse(*job) : json();
}

std::vector<std::tuple<std::string, int64_t, json>> TwoNodeGang() {
  json node = {{"pool", "gpu"}, {"gpus", 8}, {"topology", "z/r"}, {"probe", "fake"}};
  json n1 = node, n2 = node;
  n1["name"] = "n1";
  n2["name"] = "n2";
  return {
      {"register", 1, n1},
      {"register", 1, n2},
      {"tenant", 2, {{"name", "t"}}},
      {"submit", 3, {{"tenant", "t"}, {"pool", "gpu"}, {"gpus", 16}, {"limit_micros", 2'000'000}}}};
}

// Before members were tracked, one "started" confirmed a gang and one "agent_exit" ended it.
TEST(ControlReplay, LogsFromBeforeMembersReplayAsTheyWereApplied) {
  auto log = TwoNodeGang();
  log.push_back({"started", 4, {{"node", "n1"}, {"job", 1}, {"attempt", 1}}});
  json running = ReplayJob(log);
  EXPECT_EQ(running["state"], "running") << running.dump();
  log.push_back({"agent_exit", 9, {{"node", "n2"}, {"job", 1}, {"attempt", 1}, {"success", true}}});
  json done = ReplayJob(log);
  EXPECT_EQ(done["state"], "succeeded") << done.dump();
}

// Today's commands say they are one member's: the gang runs once both started, and the first
// end stops it.
TEST(ControlReplay, MemberCommandsTrackEachMember) {
  auto log = TwoNodeGang();
  json started = {{"job", 1}, {"attempt", 1}, {"member", true}};
  started["node"] = "n1";
  log.push_back({"started", 4, started});
  EXPECT_EQ(ReplayJob(log)["state"], "starting");
  started["node"] = "n2";
  log.push_back({"started", 5, started});
  EXPECT_EQ(ReplayJob(log)["state"], "running");
  log.push_back({"agent_exit",
                 9,
                 {{"node", "n2"},
                  {"job", 1},
                  {"attempt", 1},
                  {"member", true},
                  {"success", false},
                  {"detail", "exit 3"}}});
  json stopping = ReplayJob(log);
  EXPECT_EQ(stopping["state"], "preempting") << stopping.dump();
  EXPECT_EQ(stopping["preempt_reason"], "gang member ended: exit 3 on node n2");
}

}  // namespace
}  // namespace rsv::server
