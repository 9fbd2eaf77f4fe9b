// The control plane over a real (in-memory) SQLite command log: replay of logs written by
// earlier versions.
#include "server/control.h"

#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <future>
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

// docs/ha.md: a standby on the same log follows the leader to the same state; once it holds the
// lease, the old leader's next write is refused (nothing of it recorded) and it steps down.
TEST(ControlHa, AStandbyFollowsTheLogAndFencesTheOldLeader) {
  const std::string db = ::testing::TempDir() + "/rsv_ha_control.db";
  for (const char* suffix : {"", "-wal", "-shm"}) std::remove((db + suffix).c_str());
  auto cfg = ParseServerConfig(
      R"({"pools": [{"name": "gpu", "reserve_price": "1"}],
          "nodes": [{"name": "n", "pool": "gpu", "gpus": 8}]})");
  ASSERT_TRUE(cfg.ok());
  ManualClock clock(Timestamp::FromMicros(100'000'000));
  auto s1 = OpenSqliteStore(db);
  auto s2 = OpenSqliteStore(db);
  ASSERT_TRUE(s1.ok() && s2.ok());
  ControlPlane leader(*cfg, std::move(*s1), &clock);
  ControlPlane standby(*cfg, std::move(*s2), &clock);
  ASSERT_EQ(*leader.store()->TakeLease("a", "http://a", Duration::Seconds(60)), 1);
  ASSERT_TRUE(leader.Start().ok());
  ASSERT_TRUE(standby.Load().ok());
  EXPECT_FALSE(standby.leading());
  std::string why;
  leader.OnStepDown([&](const std::string& w) { why = w; });

  // Runs one write and waits for its answer (the committer replies on its own thread).
  auto write = [](ControlPlane& c, const std::string& kind, const json& body) {
    std::promise<Status> answer;
    c.Execute(kind, body.dump(), [&](Result<Reply> r) { answer.set_value(r.status()); });
    return answer.get_future().get();
  };
  ASSERT_TRUE(write(leader, "tenant", {{"name", "t"}}).ok());
  ASSERT_TRUE(write(leader, "submit",
                    {{"tenant", "t"}, {"pool", "gpu"}, {"gpus", 3}, {"limit_micros", 2'000'000}})
                  .ok());
  clock.Advance(Duration::Seconds(1));
  leader.Tick();  // places it: a logged cycle
  ASSERT_TRUE(write(leader, "submit",
                    {{"tenant", "t"}, {"pool", "gpu"}, {"gpus", 2}, {"limit_micros", 3'000'000}})
                  .ok());
  clock.Advance(Duration::Seconds(1));
  leader.Tick();                                                  // charges accrue: a logged cycle
  ASSERT_TRUE(write(leader, "tenant", {{"name", "sync"}}).ok());  // after the cycles: durable

  ASSERT_TRUE(standby.CatchUp().ok());
  EXPECT_EQ(standby.applied_seq(), leader.applied_seq());
  EXPECT_GE(standby.applied_seq(), 6);
  Caller admin;
  admin.admin = true;
  for (const char* what : {"jobs", "ledger", "market", "nodes"}) {
    const std::map<std::string, std::string> q = {{"state", "all"}};
    Result<std::string> theirs = standby.Read(what, admin, q), ours = leader.Read(what, admin, q);
    ASSERT_TRUE(theirs.ok() && ours.ok()) << what;
    EXPECT_EQ(*theirs, *ours) << what;
  }

  // The leader's lease lapses (a pause) and the standby takes over with the next epoch.
  ASSERT_TRUE(*leader.store()->RenewLease(1, Duration::Micros(0)));
  ASSERT_EQ(*standby.store()->TakeLease("b", "http://b", Duration::Seconds(60)), 2);
  ASSERT_TRUE(standby.Lead().ok());
  EXPECT_TRUE(standby.leading());
  // The old leader still believes it leads: its write is applied in its memory, refused by the
  // store, answered as not recorded, and it steps down.
  Status late = write(leader, "tenant", {{"name", "late"}});
  EXPECT_EQ(late.code(), Code::kUnavailable) << late.ToString();
  EXPECT_FALSE(leader.leading());
  EXPECT_NE(why.find("deposed"), std::string::npos) << why;
  EXPECT_EQ(write(leader, "tenant", {{"name", "later"}}).code(), Code::kUnavailable);
  // The new leader writes; the log holds its history and none of the old leader's late writes.
  EXPECT_TRUE(write(standby, "tenant", {{"name", "u"}}).ok());
  int lates = 0;
  ASSERT_TRUE(standby.store()
                  ->ForEach([&](const Command& c) {
                    lates += c.body.find("late") != std::string::npos;
                    return Status::Ok();
                  })
                  .ok());
  EXPECT_EQ(lates, 0);
  leader.Quiesce();
  standby.Quiesce();
}

// A finished job's output is removed output_retention after it finished (at a tick), and a read
// of it then says so; a running job's output stays however old it is.
TEST(ControlOutput, FinishedJobsOutputIsRemovedAfterTheRetention) {
  EXPECT_EQ(ParseServerConfig(R"({"output_retention": "10s"})").status().field(),
            "output_retention");
  EXPECT_EQ(ParseServerConfig(R"({"output_retention": 5})").status().field(), "output_retention");
  auto cfg = ParseServerConfig(
      R"({"pools": [{"name": "gpu", "reserve_price": "1"}], "output_retention": "1h",
          "nodes": [{"name": "n", "pool": "gpu", "gpus": 8}]})");
  ASSERT_TRUE(cfg.ok());
  const std::string logs = ::testing::TempDir() + "/rsv_output_retention";
  std::filesystem::remove_all(logs);
  cfg->log_dir = logs;
  auto store = OpenSqliteStore(":memory:");
  ASSERT_TRUE(store.ok());
  ManualClock clock(Timestamp::FromMicros(100'000'000));
  ControlPlane control(*cfg, std::move(*store), &clock);
  ASSERT_TRUE(control.Start().ok());
  auto write = [&](const std::string& kind, const json& body) {
    std::promise<Status> answer;
    control.Execute(kind, body.dump(), [&](Result<Reply> r) { answer.set_value(r.status()); });
    return answer.get_future().get();
  };
  ASSERT_TRUE(write("tenant", {{"name", "t"}}).ok());
  for (int i = 0; i < 2; ++i) {
    ASSERT_TRUE(write("submit",
                      {{"tenant", "t"}, {"pool", "gpu"}, {"gpus", 1}, {"limit_micros", 2'000'000}})
                    .ok());
  }
  control.Tick();
  for (int job : {1, 2}) {
    std::filesystem::create_directories(logs + "/" + std::to_string(job));
    std::ofstream(logs + "/" + std::to_string(job) + "/attempt-1.log") << "out " << job << "\n";
  }
  ASSERT_TRUE(write("exit", {{"job", 1}, {"success", true}}).ok());  // job 2 keeps running
  clock.Advance(Duration::Minutes(59));
  control.Tick();
  EXPECT_TRUE(std::filesystem::exists(logs + "/1/attempt-1.log"));
  clock.Advance(Duration::Minutes(2));
  control.Tick();
  EXPECT_FALSE(std::filesystem::exists(logs + "/1"));
  EXPECT_TRUE(std::filesystem::exists(logs + "/2/attempt-1.log"));  // still running
  Caller admin;
  admin.admin = true;
  std::promise<Result<Reply>> read;
  control.Logs(admin, 1, 1, "", 0, clock.Now(), [&](Result<Reply> r) { read.set_value(r); });
  Result<Reply> r = read.get_future().get();
  ASSERT_TRUE(r.ok());
  json body = json::parse(r->body);
  EXPECT_EQ(body["expired"], true);
  EXPECT_EQ(body["data"], "");
  control.Quiesce();
  std::filesystem::remove_all(logs);
}

}  // namespace
}  // namespace rsv::server
