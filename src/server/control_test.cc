// The control plane over a real (in-memory) SQLite command log: replay of logs written by
// earlier versions.
#include "server/control.h"

#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <future>
#include <nlohmann/json.hpp>

#include "common/clock.h"
#include "common/rng.h"
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
    c.Execute(kind, body.dump(), [&](Result<std::string> r) { answer.set_value(r.status()); });
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
    control.Execute(kind, body.dump(),
                    [&](Result<std::string> r) { answer.set_value(r.status()); });
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

// --- Snapshots (docs/ha.md, "Snapshots") ---

// Runs one write and waits for its answer (the committer replies on its own thread).
Status Write(ControlPlane& c, const std::string& kind, const json& body) {
  std::promise<Status> answer;
  c.Execute(kind, body.dump(), [&](Result<std::string> r) { answer.set_value(r.status()); });
  return answer.get_future().get();
}

// A seeded mix of what a fleet sees: spot, reserved, auto and elastic jobs of every size (gangs
// over nodes included), reservations that lend and one that does not, exits, failures, cancels
// and the passage of time with cycles.
void Workload(ControlPlane& c, ManualClock& clock, uint64_t seed, int steps) {
  Rng rng(seed);
  const char* tenants[] = {"a", "b", "c"};
  for (const char* t : tenants) (void)Write(c, "tenant", {{"name", t}});
  (void)Write(c, "reserve",
              {{"tenant", "a"},
               {"pool", "gpu"},
               {"gpus", 8},
               {"duration_us", int64_t{3600} * 1'000'000},
               {"lend", true}});
  (void)Write(c, "reserve",
              {{"tenant", "b"},
               {"pool", "gpu"},
               {"gpus", 4},
               {"duration_us", int64_t{1800} * 1'000'000},
               {"lend", false}});
  int64_t jobs = 0;
  for (int i = 0; i < steps; ++i) {
    const std::string tenant = tenants[rng.Uniform(3)];
    const int64_t job = jobs > 0 ? rng.Range(1, jobs) : 1;
    switch (rng.Uniform(10)) {
      case 0:
      case 1:
        jobs += Write(c, "submit",
                      {{"tenant", tenant},
                       {"pool", "gpu"},
                       {"gpus", int64_t{1} << rng.Uniform(5)},
                       {"limit_micros", rng.Range(1, 6) * 1'000'000},
                       {"max_restarts", 1}})
                    .ok();
        break;
      case 2:  // a share of one GPU (docs/market.md, "GPU shares")
        jobs += Write(c, "submit",
                      {{"tenant", tenant},
                       {"pool", "gpu"},
                       {"gpus", 1},
                       {"gpu_milli", rng.Range(1, 9) * 100 + 50},
                       {"limit_micros", rng.Range(1, 6) * 1'000'000},
                       {"max_restarts", 1}})
                    .ok();
        break;
      case 3:
        jobs += Write(c, "submit",
                      {{"tenant", rng.Chance(1, 2) ? "a" : "b"},
                       {"pool", "gpu"},
                       {"gpus", rng.Range(1, 4)},
                       {"tier", "reserved"},
                       {"fallback_micros", 2'000'000}})
                    .ok();
        break;
      case 4:
        jobs += Write(c, "submit",
                      {{"tenant", "a"},
                       {"pool", "gpu"},
                       {"gpus", rng.Range(1, 3)},
                       {"tier", "auto"},
                       {"limit_micros", 3'000'000}})
                    .ok();
        break;
      case 5:
        jobs += Write(c, "submit",
                      {{"tenant", tenant},
                       {"pool", "gpu"},
                       {"gpus", 2},
                       {"max_gpus", 8},
                       {"gpu_step", 2},
                       {"limit_micros", rng.Range(2, 5) * 1'000'000},
                       {"resize_cooldown_s", 10}})
                    .ok();
        break;
      case 6:
      case 7:
        (void)Write(c, "exit", {{"job", job}, {"success", rng.Chance(3, 4)}});
        break;
      case 8:
        (void)Write(c, "cancel", {{"job", job}});
        break;
      default:
        clock.Advance(Duration::Seconds(rng.Range(1, 90)));
        c.Tick();
    }
    if (i % 4 == 3) {
      clock.Advance(Duration::Seconds(1));
      c.Tick();
    }
  }
}

struct SnapshotFixture {
  // One file per test: ctest runs tests as processes side by side.
  std::string db = ::testing::TempDir() + "/rsv_snapshot_" +
                   ::testing::UnitTest::GetInstance()->current_test_info()->name() + ".db";
  ServerConfig cfg;
  ManualClock clock{Timestamp::FromMicros(100'000'000)};
  SnapshotFixture() {
    for (const char* suffix : {"", "-wal", "-shm"}) std::remove((db + suffix).c_str());
    auto c = ParseServerConfig(
        R"({"pools": [{"name": "gpu", "reserve_price": "1"}], "snapshot_every": 0,
            "nodes": [{"name": "r1n", "pool": "gpu", "gpus": 8, "topology": "z/r1", "count": 3},
                      {"name": "r2n", "pool": "gpu", "gpus": 8, "topology": "z/r2", "count": 3}]})");
    EXPECT_TRUE(c.ok()) << c.status().ToString();
    cfg = *c;
  }
  ~SnapshotFixture() {
    for (const char* suffix : {"", "-wal", "-shm"}) std::remove((db + suffix).c_str());
  }
  std::unique_ptr<ControlPlane> Open() {
    auto store = OpenSqliteStore(db);
    EXPECT_TRUE(store.ok());
    return std::make_unique<ControlPlane>(cfg, std::move(*store), &clock);
  }
};

// What a client can read, everything of it.
std::map<std::string, std::string> Reads(ControlPlane& c) {
  Caller admin;
  admin.admin = true;
  std::map<std::string, std::string> out;
  for (const char* what : {"jobs", "ledger", "market", "nodes", "reservations", "tenants", "tokens",
                           "usage", "waste", "ledger/summary"}) {
    Result<std::string> r = c.Read(what, admin, {{"state", "all"}, {"limit", "10000"}});
    out[what] = r.ok() ? *r : r.status().ToString();
  }
  int64_t last = 0;
  out["events"] = c.EventsSince(0, admin, &last);
  return out;
}

// A start from a snapshot and the log after it reaches exactly the state a replay of the whole
// log reaches: the same bytes, field for field. The snapshot is taken by a leader that itself
// replayed the log, so both starts begin from the same state.
TEST(ControlSnapshot, ASnapshotAndTheTailEqualAFullReplayByteForByte) {
  SnapshotFixture f;
  {
    auto a = f.Open();
    ASSERT_TRUE(a->Start().ok());
    Workload(*a, f.clock, 42, 300);
    a->Quiesce();
  }
  std::string at_snapshot;
  {
    auto d = f.Open();
    ASSERT_TRUE(d->Load(false).ok());
    ASSERT_EQ(*d->store()->TakeLease("d", "http://d", Duration::Seconds(60)), 1);
    ASSERT_TRUE(d->Lead().ok());
    at_snapshot = d->StateBytes();
    d->SnapshotSoon();
    d->Tick();
    Result<int64_t> written = d->WaitForSnapshot();
    ASSERT_TRUE(written.ok()) << written.status().ToString();
    EXPECT_EQ(*written, 0);  // the first snapshot compacts nothing
    Workload(*d, f.clock, 43, 300);
    d->Quiesce();
  }
  auto from_snapshot = f.Open();
  ASSERT_TRUE(from_snapshot->Load().ok());
  auto replayed = f.Open();
  ASSERT_TRUE(replayed->Load(false).ok());
  EXPECT_GT(from_snapshot->loaded_snapshot(), 100);
  EXPECT_EQ(from_snapshot->commands_replayed() + from_snapshot->loaded_snapshot(),
            replayed->commands_replayed());
  EXPECT_GT(replayed->StateBytes().size(), at_snapshot.size());  // the tail did something
  EXPECT_TRUE(from_snapshot->StateBytes() == replayed->StateBytes());
  EXPECT_EQ(Reads(*from_snapshot), Reads(*replayed));
  EXPECT_TRUE(from_snapshot->CheckInvariants().empty());
}

// A leader snapshots its live state in the middle of the work; a restart from it and the tail
// reads what the leader read, and so does a full replay. A second snapshot compacts the log up
// to the first: starts still load, a full replay is no longer possible, and a standby left
// behind the compaction is told so (it restarts from the newest snapshot).
TEST(ControlSnapshot, ALiveSnapshotRestartsToTheLeadersStateAndCompactsTheLog) {
  SnapshotFixture f;
  auto a = f.Open();
  ASSERT_TRUE(a->Start().ok());
  Workload(*a, f.clock, 7, 200);
  auto behind = f.Open();  // a standby that will not follow
  ASSERT_TRUE(behind->Load().ok());
  ASSERT_TRUE(Write(*a, "tenant", {{"name", "mid"}}).ok());  // the snapshot is past it
  a->SnapshotSoon();
  a->Tick();
  ASSERT_TRUE(a->WaitForSnapshot().ok());
  Workload(*a, f.clock, 8, 200);
  a->Tick();
  ASSERT_TRUE(Write(*a, "tenant", {{"name", "last"}}).ok());  // everything before is durable
  const std::map<std::string, std::string> leader = Reads(*a);
  {
    auto b = f.Open();
    ASSERT_TRUE(b->Load().ok());
    EXPECT_GT(b->loaded_snapshot(), 0);
    EXPECT_EQ(Reads(*b), leader);
    auto c = f.Open();
    ASSERT_TRUE(c->Load(false).ok());
    EXPECT_EQ(Reads(*c), leader);
  }
  const int64_t first = behind->applied_seq();
  a->SnapshotSoon();
  a->Tick();
  Result<int64_t> compacted = a->WaitForSnapshot();
  ASSERT_TRUE(compacted.ok()) << compacted.status().ToString();
  EXPECT_GT(*compacted, first);
  int64_t oldest = 0;
  ASSERT_TRUE(a->store()
                  ->ForEach([&](const Command& c) {
                    if (oldest == 0) oldest = c.seq;
                    return Status::Ok();
                  })
                  .ok());
  EXPECT_EQ(oldest, *compacted + 1);
  Workload(*a, f.clock, 9, 50);
  ASSERT_TRUE(Write(*a, "tenant", {{"name", "after"}}).ok());

  auto b = f.Open();
  ASSERT_TRUE(b->Load().ok());
  EXPECT_EQ(Reads(*b), Reads(*a));
  Status full = f.Open()->Load(false);
  EXPECT_NE(full.message().find("compacted"), std::string::npos) << full.ToString();
  Status gap = behind->CatchUp();
  EXPECT_NE(gap.message().find("compacted"), std::string::npos) << gap.ToString();
  a->Quiesce();
}

// Pools and nodes the config changes after a snapshot take effect from the start that sees them:
// the snapshot is loaded, and the leader logs the change, so that every later start from the
// snapshot applies it at the same point. A node the config changes is refused.
TEST(ControlSnapshot, ConfigChangesAfterASnapshotAreLoggedWhenTheLeaderStarts) {
  SnapshotFixture f;
  {
    auto a = f.Open();
    ASSERT_TRUE(a->Start().ok());
    Workload(*a, f.clock, 3, 60);
    a->SnapshotSoon();
    a->Tick();
    ASSERT_TRUE(a->WaitForSnapshot().ok());
    ASSERT_TRUE(Write(*a, "tenant", {{"name", "x"}}).ok());
    a->Quiesce();
  }
  ServerConfig changed = f.cfg;
  changed.nodes.push_back({"extra", "gpu", "z/r3", 8});
  changed.pools[0].reserve_price = Money::Units(3);
  auto open = [&](const ServerConfig& cfg) {
    auto store = OpenSqliteStore(f.db);
    EXPECT_TRUE(store.ok());
    return std::make_unique<ControlPlane>(cfg, std::move(*store), &f.clock);
  };
  Caller admin;
  admin.admin = true;
  int64_t seq = 0;
  std::map<std::string, std::string> after;
  {
    auto b = open(changed);
    ASSERT_TRUE(b->Start().ok());
    EXPECT_GT(b->loaded_snapshot(), 0);
    EXPECT_NE(b->Read("nodes", admin, {})->find("\"extra\""), std::string::npos);
    EXPECT_NE(b->Read("pools", admin, {})->find("\"3.000000\""), std::string::npos)
        << *b->Read("pools", admin, {});
    ASSERT_TRUE(Write(*b, "tenant", {{"name", "y"}}).ok());  // the config command is durable
    after = Reads(*b);
    seq = b->applied_seq();
    b->Quiesce();
  }
  std::string last_kinds;
  auto store = OpenSqliteStore(f.db);
  ASSERT_TRUE(store.ok());
  ASSERT_TRUE((*store)
                  ->ForEachAfter(seq - 2,
                                 [&](const Command& c) {
                                   last_kinds += c.kind + " ";
                                   return Status::Ok();
                                 })
                  .ok());
  EXPECT_EQ(last_kinds, "config tenant ");
  {
    auto again = open(changed);  // the same config again: nothing more to log
    ASSERT_TRUE(again->Start().ok());
    EXPECT_EQ(again->applied_seq(), seq);
    EXPECT_EQ(Reads(*again), after);
    again->Quiesce();
  }
  ServerConfig bad = changed;
  bad.nodes.back().gpus = 4;
  Status refused = open(bad)->Load();
  EXPECT_EQ(refused.field(), "nodes");
  EXPECT_NE(refused.message().find("extra"), std::string::npos) << refused.ToString();
  EXPECT_EQ(ParseServerConfig(R"({"snapshot_every": -1})").status().field(), "snapshot_every");
  EXPECT_EQ(ParseServerConfig(R"({"snapshot_interval": "5s"})").status().field(),
            "snapshot_interval");
}

}  // namespace
}  // namespace rsv::server
