// End to end, as on a real fleet: a `reservoir server` and two `reservoir agent` processes with
// 8 fake GPUs each on 127.0.0.1, running real job processes. Nothing sleeps: the test blocks on
// the server's event long-poll and on the agents' log pipes; durations come from the server's
// event timestamps.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <poll.h>
#include <sys/inotify.h>
#include <sys/stat.h>

#include <chrono>
#include <condition_variable>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <mutex>
#include <nlohmann/json.hpp>
#include <set>
#include <sstream>
#include <thread>
#include <tuple>

#include "agent_process.h"
#include "common/units.h"
#include "server_process.h"

namespace rsv {
namespace {

using json = nlohmann::json;
using rsv::testing::AgentProcess;
using rsv::testing::ServerProcess;

const char kAdmin[] = "e2e-admin-token";

// The server's event stream, read with long-polls.
class Events {
 public:
  explicit Events(const ServerProcess* s) : s_(s) {}
  // Blocks until an event satisfies `pred` (returns it) or 24 long-polls (2 minutes) pass.
  json WaitFor(const std::function<bool(const json&)>& pred) {
    for (size_t i = 0; i < all_.size(); ++i) {
      if (!used_.count(i) && pred(all_[i])) return Use(i);
    }
    for (int round = 0; round < 24; ++round) {
      auto r = s_->Get("/v1/events?since=" + std::to_string(last_) + "&wait=5", kAdmin);
      if (r.status != 200) return json();
      json b = json::parse(r.body);
      last_ = b["last_seq"];
      size_t first = all_.size();
      for (const json& e : b["events"]) all_.push_back(e);
      for (size_t i = first; i < all_.size(); ++i) {
        if (pred(all_[i])) return Use(i);
      }
    }
    return json();
  }
  json Job(const std::string& type, int64_t job, int32_t attempt = 0) {
    return WaitFor([&](const json& e) {
      return e["type"] == type && e.value("job", 0) == job &&
             (attempt == 0 || e.value("attempt", 0) == attempt);
    });
  }
  const std::vector<json>& all() const { return all_; }
  // Events of `type` seen so far (of `attempt` only, when given).
  int Count(const std::string& type, int32_t attempt = 0) const {
    int n = 0;
    for (const json& e : all_) {
      n += e["type"] == type && (attempt == 0 || e.value("attempt", 0) == attempt);
    }
    return n;
  }

 private:
  json Use(size_t i) {
    used_.insert(i);
    return all_[i];
  }
  const ServerProcess* s_;
  int64_t last_ = 0;
  std::vector<json> all_;
  std::set<size_t> used_;
};

int64_t At(const json& e) { return e.at("at_us").get<int64_t>(); }

// Submits a spot job of tenant "b" (created if needed): 4 GPUs at limit 2 unless `fields` says
// otherwise. Returns its id, or 0 (and fails the test) if the server refused it.
int64_t SpotJob(const ServerProcess& s, const json& fields) {
  s.Post("/v1/tenants", kAdmin, R"({"name":"b"})");  // 201, or 409 when it exists
  json body = {{"tenant", "b"}, {"pool", "h100"}, {"gpus", 4}, {"limit_price", "2"}};
  body.update(fields);
  auto r = s.Post("/v1/jobs", kAdmin, body.dump());
  EXPECT_EQ(r.status, 201) << r.body;
  return r.status == 201 ? json::parse(r.body)["id"].get<int64_t>() : 0;
}

// Output of one member of an attempt (rank 0's when `node` is empty), read until it holds
// `text` (or a minute of long-polls passed).
std::string MemberOutput(const ServerProcess& s, int64_t job, int attempt, const std::string& node,
                         const std::string& text) {
  std::string all;
  for (int round = 0; round < 12 && all.find(text) == std::string::npos; ++round) {
    auto r = s.Get("/v1/jobs/" + std::to_string(job) + "/logs?attempt=" + std::to_string(attempt) +
                       "&offset=" + std::to_string(all.size()) + "&wait=5" +
                       (node.empty() ? "" : "&node=" + node),
                   kAdmin);
    if (r.status != 200) return r.body;
    all += json::parse(r.body)["data"].get<std::string>();
  }
  return all;
}

struct AgentE2E : ::testing::Test {
  std::string dir;
  void SetUp() override {
    dir = (std::filesystem::temp_directory_path() / ("rsv_e2e_" + std::to_string(::getpid())))
              .string();
    std::filesystem::remove_all(dir);
    std::filesystem::create_directories(dir);
  }
  void TearDown() override { std::filesystem::remove_all(dir); }
  std::string Config(const std::string& heartbeat, const std::string& start) {
    std::string path = dir + "/config.json";
    std::ofstream(path) << R"({"tick": "1s", "heartbeat_timeout": ")" << heartbeat
                        << R"(", "start_timeout": ")" << start
                        << R"(", "pools": [{"name": "h100", "reserve_price": "1",
                            "min_increment": "0.25", "max_notice": "30s"}]})";
    return path;
  }
};

// The counter job: resumes from its checkpoint, counts every 100 ms, and exits cleanly when the
// notice file appears (SIGTERM only wakes it).
const char kCounter[] = R"sh(#!/bin/sh
trap 'true' TERM
f="$RESERVOIR_CHECKPOINT_DIR/counter"
n=$(cat "$f" 2>/dev/null || echo 0)
echo "attempt $RESERVOIR_ATTEMPT gpus $CUDA_VISIBLE_DEVICES resumes at $n"
while true; do
  if [ -f "$RESERVOIR_NOTICE_FILE" ]; then echo "notice at $n: $(cat "$RESERVOIR_NOTICE_FILE")"; exit 0; fi
  n=$((n+1)); echo $n > "$f.tmp"; mv "$f.tmp" "$f"
  sleep 0.1
done
)sh";

// "... resumes at N" and "notice at M" in one attempt's output.
int64_t Number(const std::string& log, const std::string& after) {
  size_t at = log.find(after);
  return at == std::string::npos ? -1 : std::atoll(log.c_str() + at + after.size());
}

TEST_F(AgentE2E, OwnerReclaimsLentGpusAndThePreemptedJobResumes) {
  const std::string config = Config("3s", "20s");
  const std::string script = dir + "/counter.sh";
  std::ofstream(script) << kCounter;
  std::filesystem::permissions(script, std::filesystem::perms(0755));  // jobs run as their tenant

  ServerProcess s(dir + "/r.db", config, kAdmin);
  ASSERT_TRUE(s.Start());
  AgentProcess n1(s.port(), "n1", dir + "/n1", dir + "/checkpoints");
  AgentProcess n2(s.port(), "n2", dir + "/n2", dir + "/checkpoints");
  ASSERT_TRUE(n1.Start()) << n1.log();
  ASSERT_TRUE(n2.Start()) << n2.log();
  Events events(&s);
  for (const char* t : {"a", "b"}) {
    ASSERT_EQ(s.Post("/v1/tenants", kAdmin, json{{"name", t}}.dump()).status, 201);
  }
  auto res = s.Post("/v1/reservations", kAdmin,
                    R"({"tenant":"a","pool":"h100","gpus":8,"duration":"1h"})");
  ASSERT_EQ(res.status, 201) << res.body;

  auto submit = [&](const std::string& tenant, const std::string& name, const std::string& tier,
                    const std::string& limit) {
    json body = {{"tenant", tenant}, {"pool", "h100"}, {"gpus", 8},        {"name", name},
                 {"tier", tier},     {"notice", "5s"}, {"command", script}};
    if (!limit.empty()) body["limit_price"] = limit;
    auto r = s.Post("/v1/jobs", kAdmin, body.dump());
    EXPECT_EQ(r.status, 201) << r.body;
    return json::parse(r.body)["id"].get<int64_t>();
  };
  // B fills the fleet: one job necessarily runs on A's idle reserved GPUs.
  int64_t high = submit("b", "b-high", "spot", "3");
  int64_t low = submit("b", "b-low", "spot", "2");
  ASSERT_FALSE(events.Job("JobRunning", high).is_null());
  ASSERT_FALSE(events.Job("JobRunning", low).is_null());
  // Output of an attempt (waits up to 5 s for some). The counter's first line comes after it
  // set up its SIGTERM handling, so once it shows, a notice finds the job checkpointing.
  auto output = [&](int64_t job, int attempt) {
    auto r = s.Get(
        "/v1/jobs/" + std::to_string(job) + "/logs?attempt=" + std::to_string(attempt) + "&wait=5",
        kAdmin);
    return r.status == 200 ? json::parse(r.body)["data"].get<std::string>() : r.body;
  };
  ASSERT_NE(output(high, 1).find("resumes at 0"), std::string::npos);
  ASSERT_NE(output(low, 1).find("resumes at 0"), std::string::npos);

  // A wants its GPUs: exactly the lower-priced job gets the notice, exits, and A runs within
  // the notice period plus 2 seconds.
  int64_t mine = submit("a", "a-reserved", "reserved", "");
  json submitted = events.Job("JobSubmitted", mine);
  json notice = events.WaitFor([](const json& e) { return e["type"] == "NoticeSent"; });
  ASSERT_FALSE(notice.is_null());
  EXPECT_EQ(notice["job"], low);
  EXPECT_EQ(notice["detail"], "reclaim");
  json preempted = events.Job("JobPreempted", low, 2);  // events carry the new attempt
  ASSERT_FALSE(preempted.is_null());
  EXPECT_EQ(preempted["detail"], "exited under notice");
  json running = events.Job("JobRunning", mine, 1);
  ASSERT_FALSE(running.is_null());
  const int64_t reclaim_us = At(running) - At(submitted);
  EXPECT_LE(reclaim_us, 5'000'000 + 2'000'000);
  std::printf("reclaim latency (submit -> owner's job running): %.1f ms\n", reclaim_us / 1e3);
  for (const json& e : events.all()) {
    if (e["type"] == "NoticeSent") {
      EXPECT_EQ(e["job"], low) << e.dump();
    }
  }

  // The preempted job resumes from its counter once GPUs free up (B gives up its other job).
  ASSERT_EQ(s.Post("/v1/jobs/" + std::to_string(high) + "/cancel", kAdmin, "{}").status, 200);
  ASSERT_FALSE(events.Job("JobRunning", low, 2).is_null());
  const std::string first = output(low, 1);
  const int64_t stopped_at = Number(first, "notice at ");
  EXPECT_GT(stopped_at, 0) << first;
  EXPECT_NE(first.find("\"reason\":\"reclaim\""), std::string::npos) << first;
  std::string second = output(low, 2);
  EXPECT_GE(Number(second, "resumes at "), stopped_at) << second;

  // The host running A's job dies. After the heartbeat timeout its jobs are requeued, and A's
  // reserved job takes the surviving node back from B.
  auto job = json::parse(s.Get("/v1/jobs/" + std::to_string(mine), kAdmin).body);
  const std::string lost_node = job["placement"][0]["node"];
  AgentProcess& victim = lost_node == "n1" ? n1 : n2;
  victim.KillHost();
  json down = events.WaitFor([&](const json& e) {
    return e["type"] == "NodeStateChanged" && e["node"] == lost_node && e["detail"] == "down";
  });
  ASSERT_FALSE(down.is_null());
  json requeued = events.Job("JobRequeued", mine, 2);
  ASSERT_FALSE(requeued.is_null());
  EXPECT_EQ(requeued["detail"], "node " + lost_node + " down");
  ASSERT_FALSE(events.Job("NoticeSent", low, 2).is_null());
  ASSERT_FALSE(events.Job("JobRunning", mine, 2).is_null());
  job = json::parse(s.Get("/v1/jobs/" + std::to_string(mine), kAdmin).body);
  EXPECT_NE(job["placement"][0]["node"], lost_node);
  // The counter never goes back across attempts.
  second = output(low, 2);
  const int64_t second_stop = Number(second, "notice at ");
  EXPECT_GE(second_stop, Number(second, "resumes at ")) << second << n1.log() << n2.log();

  // Settle: everything ends, then the money. B paid the clearing price for exactly the time its
  // jobs held GPUs; A was credited for lending.
  for (int64_t j : {low, mine}) {
    ASSERT_EQ(s.Post("/v1/jobs/" + std::to_string(j) + "/cancel", kAdmin, "{}").status, 200);
    ASSERT_FALSE(events.Job("JobCancelled", j).is_null());
  }
  std::map<int64_t, int64_t> held_since;  // job -> start of the current hold
  std::vector<std::pair<int64_t, int64_t>> price = {{0, 1'000'000}};  // (from, micros/GPU-hour)
  __int128 expected = 0;                                              // micro-units x µs / hour
  auto charge = [&](int64_t from, int64_t to) {
    for (size_t i = 0; i < price.size(); ++i) {
      int64_t lo = std::max(from, price[i].first);
      int64_t hi = std::min(to, i + 1 < price.size() ? price[i + 1].first : INT64_MAX);
      if (hi > lo) expected += static_cast<__int128>(price[i].second) * 8 * (hi - lo);
    }
  };
  for (const json& e : events.all()) {
    std::string type = e["type"];
    if (type == "PriceChanged") {
      Result<Money> m = Money::Parse(e["price"].get<std::string>());
      price.emplace_back(At(e), m->micros());
    }
    int64_t j = e.value("job", 0);
    if (j != high && j != low) continue;
    if (type == "JobStarted") held_since[j] = At(e);
    if ((type == "JobPreempted" || type == "JobRequeued" || type == "JobCancelled") &&
        held_since.count(j)) {
      charge(held_since[j], At(e));
      held_since.erase(j);
    }
  }
  const int64_t expected_micros = static_cast<int64_t>(expected / 3'600'000'000LL);
  json b = json::parse(s.Get("/v1/ledger?tenant=b", kAdmin).body);
  int64_t charged = -Money::Parse(b["charges"].get<std::string>())->micros();
  EXPECT_GT(charged, 0);
  EXPECT_NEAR(charged, expected_micros, 10) << b.dump();
  json a = json::parse(s.Get("/v1/ledger?tenant=a", kAdmin).body);
  int64_t lending = 0;
  for (const json& e : a["entries"]) {
    if (e["kind"] == "spot_charge")
      lending += Money::Parse(e["amount"].get<std::string>())->micros();
  }
  EXPECT_GT(lending, 0) << a.dump();
  EXPECT_LT(lending, charged);  // the operator keeps its share
}

TEST_F(AgentE2E, RestartedAgentFindsItsJobAgainAndNothingRunsTwice) {
  ServerProcess s(dir + "/r.db", Config("30s", "20s"), kAdmin);
  ASSERT_TRUE(s.Start());
  auto n1 = std::make_unique<AgentProcess>(s.port(), "n1", dir + "/n1", dir + "/ckpt");
  ASSERT_TRUE(n1->Start()) << n1->log();
  Events events(&s);
  int64_t job =
      SpotJob(s, {{"command", "echo start >> $RESERVOIR_CHECKPOINT_DIR/starts; exec sleep 600"}});
  ASSERT_FALSE(events.Job("JobRunning", job, 1).is_null());
  ASSERT_TRUE(n1->WaitForLog("started job"));
  n1->Kill();  // the agent only: its job keeps running
  // It completes a checkpoint while no agent runs (the test touches its marker for it).
  std::ofstream(dir + "/ckpt/" + std::to_string(job) + "/.checkpoint") << "";
  n1 = std::make_unique<AgentProcess>(s.port(), "n1", dir + "/n1", dir + "/ckpt");
  ASSERT_TRUE(n1->Start()) << n1->log();
  EXPECT_NE(n1->log().find("found job " + std::to_string(job) + " attempt 1 still running"),
            std::string::npos)
      << n1->log();
  // The restarted agent reports that checkpoint (its last report survives in agent.json).
  ASSERT_FALSE(events.Job("JobCheckpointed", job, 1).is_null()) << n1->log();
  // A full sync round later the job is still attempt 1, running, started once.
  auto sync = s.Post("/v1/jobs/" + std::to_string(job) + "/cancel", kAdmin, "{}");
  ASSERT_EQ(sync.status, 200);
  ASSERT_TRUE(n1->WaitForLog("stopping job " + std::to_string(job)));
  ASSERT_TRUE(n1->WaitForLog("job " + std::to_string(job) + " attempt 1: "));
  for (const json& e : events.all()) EXPECT_NE(e["type"], "JobRequeued") << e.dump();
  std::ifstream starts(dir + "/ckpt/" + std::to_string(job) + "/starts");
  std::string all((std::istreambuf_iterator<char>(starts)), std::istreambuf_iterator<char>());
  EXPECT_EQ(all, "start\n");
}

// A gang member: rank 0 listens on MASTER_ADDR:MASTER_PORT, the others connect and learn the
// step to resume from (rank 0 checkpoints it); all count until SIGTERM, then leave cleanly.
const char kGang[] = R"py(import os, signal, socket, sys, time
rank, n = int(os.environ["RESERVOIR_NODE_RANK"]), int(os.environ["RESERVOIR_NUM_NODES"])
addr, port = os.environ["MASTER_ADDR"], int(os.environ["MASTER_PORT"])
step_file = os.path.join(os.environ["RESERVOIR_CHECKPOINT_DIR"], "step")
stop = []
signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
if rank == 0:
    step = int(open(step_file).read()) if os.path.exists(step_file) else 0
    srv = socket.socket()
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind((addr, port))
    srv.listen(n)
    peers = []
    while len(peers) < n - 1:
        c, _ = srv.accept()
        peers.append((int(c.makefile().readline()), c))
    for _, c in peers:
        c.sendall(b"%d\n" % step)
    open(os.path.join(os.environ["RESERVOIR_CHECKPOINT_DIR"], ".checkpoint"), "w").close()
    print("rank 0 of %d: ranks %s joined at step %d, world %s, gpus %s" % (
        n, sorted(r for r, _ in peers), step, os.environ["WORLD_SIZE"],
        os.environ["CUDA_VISIBLE_DEVICES"]), flush=True)
else:
    for _ in range(600):
        try:
            c = socket.create_connection((addr, port), timeout=5)
            break
        except OSError:
            time.sleep(0.1)
    else:
        sys.exit(3)
    c.sendall(b"%d\n" % rank)
    step = int(c.makefile().readline())
    print("rank %d of %d: joined at step %d via %s:%d" % (rank, n, step, addr, port), flush=True)
while not stop:
    step += 1
    if rank == 0:
        open(step_file + ".tmp", "w").write(str(step))
        os.replace(step_file + ".tmp", step_file)
    time.sleep(0.1)
print("rank %d leaves at step %d" % (rank, step), flush=True)
)py";

// A 24-GPU gang over three agents rendezvous over TCP; the host of one member dies: the whole
// gang stops (the others by notice), is requeued, and resumes from its checkpoint.
TEST_F(AgentE2E, AGangRendezvousStopsTogetherAndResumes) {
  const std::string script = dir + "/gang.py";
  std::ofstream(script) << kGang;
  std::filesystem::permissions(script, std::filesystem::perms(0755));
  ServerProcess s(dir + "/r.db", Config("3s", "20s"), kAdmin);
  ASSERT_TRUE(s.Start());
  std::vector<std::unique_ptr<AgentProcess>> agents;
  for (const char* n : {"n1", "n2", "n3"}) {
    agents.push_back(std::make_unique<AgentProcess>(s.port(), n, dir + "/" + n, dir + "/ckpt"));
    ASSERT_TRUE(agents.back()->Start()) << agents.back()->log();
  }
  Events events(&s);
  int64_t job = SpotJob(s, {{"gpus", 24}, {"notice", "5s"}, {"command", "python3 " + script}});
  ASSERT_FALSE(events.Job("JobRunning", job, 1).is_null());
  json j = json::parse(s.Get("/v1/jobs/" + std::to_string(job), kAdmin).body);
  ASSERT_EQ(j["placement"].size(), 3u) << j.dump();
  std::vector<std::string> ranks;
  for (const json& p : j["placement"]) ranks.push_back(p["node"]);
  auto output = [&](int attempt, const std::string& node, const std::string& text) {
    return MemberOutput(s, job, attempt, node, text);
  };
  std::string zero = output(1, "", "joined at step");
  EXPECT_NE(zero.find("rank 0 of 3: ranks [1, 2] joined at step 0, world 24, gpus "),
            std::string::npos)
      << zero;
  for (int rank : {1, 2}) {
    std::string out = output(1, ranks[rank], "joined at step");
    EXPECT_NE(out.find("rank " + std::to_string(rank) + " of 3: joined at step 0 via 127.0.0.1:"),
              std::string::npos)
        << ranks[rank] << ": " << out;
  }
  // The host of rank 1 dies (rank 0 keeps counting until the server notices: 3 s).
  AgentProcess* victim = agents[ranks[1].back() - '1'].get();
  victim->KillHost();
  json notice = events.Job("NoticeSent", job, 1);
  ASSERT_FALSE(notice.is_null());
  EXPECT_EQ(notice["detail"], "gang member ended: node " + ranks[1] + " down");
  json requeued = events.Job("JobRequeued", job, 2);
  ASSERT_FALSE(requeued.is_null());
  EXPECT_EQ(requeued["detail"], "node " + ranks[1] + " down");
  // The survivors got SIGTERM and left cleanly before the deadline.
  EXPECT_LE(At(requeued) - At(notice), 5'000'000);
  std::string first = output(1, "", "rank 0 leaves at step ");
  const int64_t stopped = Number(first, "rank 0 leaves at step ");
  EXPECT_GT(stopped, 0) << first;
  EXPECT_NE(output(1, ranks[2], "leaves").find("rank 2 leaves"), std::string::npos);
  // Rank 0 marked one checkpoint; every member saw the marker (one shared directory), and it
  // counted once.
  EXPECT_LE(events.Count("JobCheckpointed", 1), 1);
  // The host comes back: the gang is whole again and resumes where rank 0 checkpointed.
  ASSERT_TRUE(victim->Start()) << victim->log();
  ASSERT_FALSE(events.Job("JobRunning", job, 2).is_null());
  std::string second = output(2, "", "joined at step");
  EXPECT_GE(Number(second, "joined at step "), stopped - 1) << second;
  EXPECT_NE(second.find("ranks [1, 2]"), std::string::npos) << second;
  ASSERT_EQ(s.Post("/v1/jobs/" + std::to_string(job) + "/cancel", kAdmin, "{}").status, 200);
  ASSERT_FALSE(events.Job("JobCancelled", job).is_null());
}

// An elastic job's member: logs its start, each resize it is signalled (and acknowledges it),
// and leaves cleanly on a notice (restart mode's resize, or a preemption).
const char kElastic[] = R"sh(#!/bin/sh
trap 'true' TERM
trap 'resized=1' USR1
echo "attempt $RESERVOIR_ATTEMPT rank $RESERVOIR_NODE_RANK world $RESERVOIR_GPUS gpus $CUDA_VISIBLE_DEVICES"
while true; do
  if [ -f "$RESERVOIR_NOTICE_FILE" ]; then echo "notice: $(cat "$RESERVOIR_NOTICE_FILE")"; exit 0; fi
  if [ -n "$resized" ]; then
    resized=
    r=$(cat "$RESERVOIR_RESIZE_FILE")
    echo "resize: $r"
    [ -n "$NO_ACK" ] || echo "$r" | sed 's/.*"generation":\([0-9]*\).*/\1/' > "$RESERVOIR_RESIZE_ACK"
  fi
  sleep 0.1
done
)sh";

class ElasticE2E : public AgentE2E, public ::testing::WithParamInterface<const char*> {};

// An elastic job of 8..24 GPUs grows across three agents as their capacity appears, and shrinks
// back to 8 when an owner reclaims 16: the owner runs within the notice + 2 s, the job's base
// is never stopped (never below 8), in both resize modes.
TEST_P(ElasticE2E, GrowsIntoIdleGpusAndShrinksForTheOwner) {
  // "signal-no-ack": in place, but the job never takes a resize in: at the shrink's deadline
  // its agent kills it and it is requeued (the owner still runs within the notice).
  const std::string variant = GetParam();
  const bool ack = variant != "signal-no-ack";
  const std::string mode = ack ? variant : "signal";
  const std::string script = dir + "/elastic.sh";
  std::ofstream(script) << kElastic;
  std::filesystem::permissions(script, std::filesystem::perms(0755));
  ServerProcess s(dir + "/r.db", Config("5s", "20s"), kAdmin);
  ASSERT_TRUE(s.Start());
  std::vector<std::unique_ptr<AgentProcess>> agents;
  for (const char* n : {"n1", "n2", "n3"}) {
    agents.push_back(std::make_unique<AgentProcess>(s.port(), n, dir + "/" + n, dir + "/ckpt"));
  }
  ASSERT_TRUE(agents[0]->Start()) << agents[0]->log();
  Events events(&s);
  int64_t job = SpotJob(s, {{"gpus", {{"min", 8}, {"max", 24}}},
                            {"notice", "5s"},
                            {"resize_mode", mode},
                            {"resize_cooldown", "1h"},
                            {"env", ack ? json::array() : json::array({"NO_ACK=1"})},
                            {"command", script}});
  ASSERT_NE(job, 0);  // max may exceed what the pool has now: it grows as the fleet does
  ASSERT_FALSE(events.Job("JobRunning", job, 1).is_null());
  auto held = [&] {
    json j = json::parse(s.Get("/v1/jobs/" + std::to_string(job), kAdmin).body);
    return std::make_pair(j.value("gpus_held", 0), j["attempt"].get<int>());
  };
  EXPECT_EQ(held().first, 8);
  // Capacity appears: two more hosts. The job grows to 24 GPUs across the three.
  ASSERT_TRUE(agents[1]->Start()) << agents[1]->log();
  ASSERT_TRUE(agents[2]->Start()) << agents[2]->log();
  auto output = [&](int attempt, const std::string& node, const std::string& text) {
    return MemberOutput(s, job, attempt, node, text);
  };

  int grown_attempt = 1;
  if (mode == "restart") {
    // The attempt ends (notice "resize"), and the next starts with the GPUs the job holds.
    json resized = events.WaitFor([&](const json& e) {
      return e["type"] == "JobResized" && e["job"] == job &&
             e.value("detail", "").rfind("24 GPUs", 0) == 0;
    });
    ASSERT_FALSE(resized.is_null());
    grown_attempt = resized["attempt"];
    ASSERT_FALSE(events.Job("JobRunning", job, grown_attempt).is_null());
    EXPECT_NE(output(grown_attempt, "", "world 24").find("rank 0 world 24"), std::string::npos);
    EXPECT_NE(output(1, "", "notice").find("\"reason\":\"resize\""), std::string::npos);
  } else {
    // In place: rank 0 is told (resize file + SIGUSR1) and acknowledges; the new hosts' members
    // start in the same attempt.
    EXPECT_NE(output(1, "", "\"total\":24").find("\"total\":24"), std::string::npos);
    for (const char* n : {"n2", "n3"}) {
      EXPECT_NE(output(1, n, "attempt 1 rank").find("attempt 1 rank"), std::string::npos) << n;
    }
  }
  EXPECT_EQ(held(), std::make_pair(24, grown_attempt));
  // The owner reserves 16 GPUs (lent to the job's units now) and wants them.
  ASSERT_EQ(s.Post("/v1/tenants", kAdmin, R"({"name":"a"})").status, 201);
  auto res = s.Post("/v1/reservations", kAdmin,
                    R"({"tenant":"a","pool":"h100","gpus":16,"duration":"1h"})");
  ASSERT_EQ(res.status, 201) << res.body;
  auto mine = s.Post("/v1/jobs", kAdmin,
                     json{{"tenant", "a"},
                          {"pool", "h100"},
                          {"gpus", 16},
                          {"tier", "reserved"},
                          {"command", "sleep 600"}}
                         .dump());
  ASSERT_EQ(mine.status, 201) << mine.body;
  const int64_t owner = json::parse(mine.body)["id"].get<int64_t>();
  json submitted = events.Job("JobSubmitted", owner);
  json running = events.Job("JobRunning", owner, 1);
  ASSERT_FALSE(running.is_null());
  const int64_t reclaim_us = At(running) - At(submitted);
  EXPECT_LE(reclaim_us, 5'000'000 + 2'000'000);
  std::printf("%s mode: owner running %.1f ms after submitting\n", mode.c_str(), reclaim_us / 1e3);
  if (!ack) {
    // Stopped at the deadline: requeued (JobPreempted, or JobRequeued when the agent's report
    // of the kill reached the server before the deadline's cycle: a gang member lost).
    json stopped = events.WaitFor([&](const json& e) {
      return (e["type"] == "JobPreempted" || e["type"] == "JobRequeued") && e["job"] == job;
    });
    ASSERT_FALSE(stopped.is_null()) << agents[0]->log();
    EXPECT_EQ(stopped["attempt"], 2);  // requeued, no restart spent (max_restarts is 0)
    ASSERT_FALSE(events.Job("JobRunning", job, 2).is_null());
    EXPECT_EQ(held(), std::make_pair(8, 2));
    EXPECT_TRUE(agents[0]->WaitForLog("resize deadline passed"));
    ASSERT_EQ(s.Post("/v1/jobs/" + std::to_string(job) + "/cancel", kAdmin, "{}").status, 200);
    return;
  }
  // Only the units were stopped; the job runs on at 8 GPUs.
  for (const json& e : events.all()) {
    if (e.value("job", int64_t{0}) == job) {
      EXPECT_NE(e["type"], "NoticeSent") << e.dump();
      EXPECT_NE(e["type"], "JobPreempted") << e.dump();
      EXPECT_NE(e["type"], "JobRequeued") << e.dump();
    }
  }
  if (mode == "restart") {
    json shrunk = events.WaitFor([&](const json& e) {
      return e["type"] == "JobResized" && e["job"] == job &&
             e.value("detail", "").rfind("8 GPUs", 0) == 0;
    });
    ASSERT_FALSE(shrunk.is_null());
    ASSERT_FALSE(events.Job("JobRunning", job, shrunk["attempt"]).is_null());
    EXPECT_EQ(held(), std::make_pair(8, shrunk["attempt"].get<int>()));
  } else {
    EXPECT_NE(output(1, "", "\"total\":8").find("\"total\":8"), std::string::npos);
    EXPECT_EQ(held(), std::make_pair(8, 1));  // the same attempt throughout
    // The members on the hosts given back were stopped there.
    const std::string stop = "stopping job " + std::to_string(job) + " attempt 1";
    EXPECT_TRUE(agents[1]->WaitForLog(stop) || agents[2]->WaitForLog(stop));
  }
  ASSERT_EQ(s.Post("/v1/jobs/" + std::to_string(job) + "/cancel", kAdmin, "{}").status, 200);
  ASSERT_FALSE(events.Job("JobCancelled", job).is_null());
}

INSTANTIATE_TEST_SUITE_P(Modes, ElasticE2E,
                         ::testing::Values("restart", "signal", "signal-no-ack"));

// A job reports a completed checkpoint by touching $RESERVOIR_CHECKPOINT_DIR/.checkpoint: the
// agent reports it, the server journals it (JobCheckpointed) and shows it on the job. A marker
// left by an earlier attempt is not reported again.
TEST_F(AgentE2E, ACheckpointTheJobMarksIsReported) {
  ServerProcess s(dir + "/r.db", Config("30s", "20s"), kAdmin);
  ASSERT_TRUE(s.Start());
  AgentProcess n1(s.port(), "n1", dir + "/n1", dir + "/ckpt");
  ASSERT_TRUE(n1.Start()) << n1.log();
  Events events(&s);
  // Attempt 1 checkpoints when told to, then fails; attempt 2 only waits and succeeds.
  const char* command =
      "d=\"$RESERVOIR_CHECKPOINT_DIR\"; wait_for() { while [ ! -f \"$d/$1\" ]; do sleep 0.05; "
      "done; }; if [ \"$RESERVOIR_ATTEMPT\" = 1 ]; then wait_for go; touch \"$d/.checkpoint\"; "
      "wait_for fail; exit 1; fi; wait_for done; exit 0";
  int64_t job = SpotJob(s, {{"gpus", 1}, {"max_restarts", 1}, {"command", command}});
  ASSERT_FALSE(events.Job("JobRunning", job, 1).is_null());
  json j = json::parse(s.Get("/v1/jobs/" + std::to_string(job), kAdmin).body);
  EXPECT_FALSE(j.contains("last_checkpoint_us")) << j.dump();
  const std::string ckpt_dir = dir + "/ckpt/" + std::to_string(job);
  std::ofstream(ckpt_dir + "/go") << "go\n";
  json ckpt = events.Job("JobCheckpointed", job, 1);
  ASSERT_FALSE(ckpt.is_null()) << n1.log();
  j = json::parse(s.Get("/v1/jobs/" + std::to_string(job), kAdmin).body);
  EXPECT_EQ(j["last_checkpoint_us"], At(ckpt));
  EXPECT_GE(At(ckpt), j["started_us"].get<int64_t>());
  // Attempt 2 finds attempt 1's marker: that is not a new checkpoint.
  std::ofstream(ckpt_dir + "/fail") << "fail\n";
  ASSERT_FALSE(events.Job("JobRunning", job, 2).is_null());
  std::ofstream(ckpt_dir + "/done") << "done\n";
  ASSERT_FALSE(events.Job("JobSucceeded", job).is_null());
  EXPECT_EQ(events.Count("JobCheckpointed"), 1);
}

// Four quarter shares run side by side on one fake GPU where an MPS control daemon runs (its pipe
// holds `control`): each gets its GPU, its share and its memory as MPS limits
// (docs/agent.md, "GPU shares"); the server shows the four on that GPU.
TEST_F(AgentE2E, FourQuarterSharesRunOnOneGpuWithMpsLimits) {
  ServerProcess s(dir + "/r.db", Config("30s", "20s"), kAdmin);
  ASSERT_TRUE(s.Start());
  const std::string pipe = dir + "/mps";
  std::filesystem::create_directories(pipe);
  std::ofstream(pipe + "/control") << "\n";
  AgentProcess n1(s.port(), "n1", dir + "/n1", dir + "/ckpt", {"--mps-pipe", pipe});
  ASSERT_TRUE(n1.Start()) << n1.log();
  Events events(&s);
  // Each runs until the last of the four has started, so all four hold the GPU together.
  const std::string go = dir + "/go";
  const std::string command =
      "echo gpus=$CUDA_VISIBLE_DEVICES share=$RESERVOIR_GPU_SHARE "
      "threads=$CUDA_MPS_ACTIVE_THREAD_PERCENTAGE mem=$CUDA_MPS_PINNED_DEVICE_MEM_LIMIT "
      "pipe=$CUDA_MPS_PIPE_DIRECTORY; while [ ! -f " +
      go + " ]; do sleep 0.05; done";
  std::vector<int64_t> jobs;
  for (int i = 0; i < 4; ++i) {
    jobs.push_back(SpotJob(s, {{"gpus", 0.25}, {"gpu_memory_mib", 20480}, {"command", command}}));
  }
  for (int64_t job : jobs) ASSERT_FALSE(events.Job("JobRunning", job, 1).is_null()) << n1.log();
  json nodes = json::parse(s.Get("/v1/nodes", kAdmin).body);
  ASSERT_EQ(nodes.size(), 1u);
  ASSERT_TRUE(nodes[0].contains("gpu_shares")) << nodes.dump();
  ASSERT_EQ(nodes[0]["gpu_shares"].size(), 1u) << "all four on one GPU: " << nodes.dump();
  const std::string gpu = nodes[0]["gpu_shares"].begin().key();
  EXPECT_EQ(nodes[0]["gpu_shares"][gpu].size(), 4u) << nodes.dump();
  EXPECT_EQ(nodes[0]["used"], 1) << "one GPU in use";
  EXPECT_EQ(nodes[0]["gpu_memory_mib"], 81920) << "the fake GPUs' memory, from the inventory";
  for (int64_t job : jobs) {
    const std::string out = MemberOutput(s, job, 1, "", "pipe=");
    EXPECT_NE(out.find("gpus=" + gpu + " share=0.250 threads=25 mem=0=20480M pipe=" + pipe),
              std::string::npos)
        << out;
    json j = json::parse(s.Get("/v1/jobs/" + std::to_string(job), kAdmin).body);
    EXPECT_EQ(j["gpu_milli"], 250) << j.dump();
    EXPECT_EQ(j["gpu_memory_mib"], 20480) << j.dump();
  }
  std::ofstream(go) << "go\n";
  for (int64_t job : jobs) ASSERT_FALSE(events.Job("JobSucceeded", job).is_null()) << n1.log();
}

TEST_F(AgentE2E, ExitCodesAreReportedAndTheRestartPolicyDecides) {
  ServerProcess s(dir + "/r.db", Config("30s", "20s"), kAdmin);
  ASSERT_TRUE(s.Start());
  AgentProcess n1(s.port(), "n1", dir + "/n1", dir + "/ckpt");
  ASSERT_TRUE(n1.Start()) << n1.log();
  Events events(&s);
  int64_t job = SpotJob(s, {{"gpus", 2},
                            {"max_restarts", 1},
                            {"command", "echo out $RESERVOIR_ATTEMPT; echo err >&2; exit 3"}});
  json requeued = events.Job("JobRequeued", job, 2);
  ASSERT_FALSE(requeued.is_null());
  EXPECT_EQ(requeued["detail"], "failed (exit 3); restart 1");
  ASSERT_FALSE(events.Job("JobFailed", job).is_null());
  json j = json::parse(s.Get("/v1/jobs/" + std::to_string(job), kAdmin).body);
  EXPECT_EQ(j["state"], "failed");
  EXPECT_EQ(j["end_reason"], "failed (exit 3)");
  // Both attempts' output, stdout and stderr, through the server.
  for (int attempt : {1, 2}) {
    json out = json::parse(
        s.Get("/v1/jobs/" + std::to_string(job) + "/logs?attempt=" + std::to_string(attempt),
              kAdmin)
            .body);
    EXPECT_EQ(out["data"], "out " + std::to_string(attempt) + "\nerr\n") << out.dump();
    EXPECT_EQ(out["next_offset"], 10);
    json rest = json::parse(s.Get("/v1/jobs/" + std::to_string(job) +
                                      "/logs?attempt=" + std::to_string(attempt) + "&offset=10",
                                  kAdmin)
                                .body);
    EXPECT_EQ(rest["data"], "");
    EXPECT_TRUE(rest["complete"]);
  }
  // Output larger than one sync carries arrives whole, and before the exit is reported.
  int64_t id = SpotJob(s, {{"gpus", 1}, {"command", "head -c 300000 /dev/zero | tr '\\0' x"}});
  ASSERT_FALSE(events.Job("JobSucceeded", id).is_null());
  std::string all;
  for (int chunk = 0; chunk < 10; ++chunk) {
    json part = json::parse(
        s.Get("/v1/jobs/" + std::to_string(id) + "/logs?offset=" + std::to_string(all.size()),
              kAdmin)
            .body);
    all += part["data"].get<std::string>();
    if (part["complete"]) break;
  }
  EXPECT_EQ(all, std::string(300000, 'x'));
}

// A job that writes far more than the cap fills neither the server's disk nor the agent's.
TEST_F(AgentE2E, OutputPastTheCapIsDropped) {
  const std::string config = dir + "/capped.json";
  std::ofstream(config) << R"({"max_output_mib": 1, "pools": [{"name": "h100"}]})";
  ServerProcess s(dir + "/r.db", config, kAdmin);
  ASSERT_TRUE(s.Start());
  AgentProcess n1(s.port(), "n1", dir + "/n1", dir + "/ckpt", {"--max-output-mib", "1"});
  ASSERT_TRUE(n1.Start()) << n1.log();
  Events events(&s);
  int64_t id =
      SpotJob(s, {{"gpus", 1}, {"command", "head -c 20000000 /dev/zero | tr '\\0' x; echo end"}});
  ASSERT_FALSE(events.Job("JobSucceeded", id).is_null());
  std::string all;
  for (int chunk = 0; chunk < 100; ++chunk) {
    json part = json::parse(
        s.Get("/v1/jobs/" + std::to_string(id) + "/logs?offset=" + std::to_string(all.size()),
              kAdmin)
            .body);
    all += part["data"].get<std::string>();
    if (part["complete"] || part["data"].get<std::string>().empty()) break;
  }
  EXPECT_EQ(all.substr(0, 1 << 20), std::string(1 << 20, 'x'));
  EXPECT_EQ(all.substr(1 << 20), "\n[reservoir: output past 1 MiB dropped]\n");
  EXPECT_LE(std::filesystem::file_size(dir + "/n1/jobs/" + std::to_string(id) + "/attempt-1.log"),
            uintmax_t{2} << 20);
}

// A Slurm batch script submitted unchanged runs as the script it is: every line, with its
// interpreter; its directives set the pool, the GPUs and a wall-clock limit the agent enforces.
TEST_F(AgentE2E, SlurmBatchScriptsRunAsScripts) {
  ServerProcess s(dir + "/r.db", Config("30s", "20s"), kAdmin);
  ASSERT_TRUE(s.Start());
  AgentProcess n1(s.port(), "n1", dir + "/n1", dir + "/ckpt");
  ASSERT_TRUE(n1.Start()) << n1.log();
  ASSERT_EQ(s.Post("/v1/tenants", kAdmin, R"({"name":"b"})").status, 201);
  Events events(&s);
  const std::string script = dir + "/train.sbatch";
  std::ofstream(script)
      << "#!/bin/bash\n"
         "#SBATCH --job-name=batch-test\n"
         "#SBATCH --partition=h100 --gres=gpu:2\n"
         "#SBATCH --time=0:03\n"
         "set -e\n"
         "if [[ -n \"$CUDA_VISIBLE_DEVICES\" ]]; then echo \"gpus $CUDA_VISIBLE_DEVICES\"; fi\n"
         "for i in 1 2 3; do\n"
         "  echo \"step $i\"\n"
         "done\n"
         "echo 'quotes \"and\" $dollars stay'\n"
         "sleep 600\n";
  std::filesystem::permissions(script, std::filesystem::perms(0644));
  const std::string cmd = "RESERVOIR_URL=http://127.0.0.1:" + std::to_string(s.port()) +
                          " RESERVOIR_TOKEN=" + kAdmin + " " + RESERVOIR_BIN +
                          " submit --tenant b --limit 2 --json " + script + " > " + dir +
                          "/submitted.json 2>&1";
  ASSERT_EQ(std::system(cmd.c_str()), 0);
  std::ifstream in(dir + "/submitted.json");
  json job = json::parse(in, nullptr, false);
  ASSERT_FALSE(job.is_discarded());
  EXPECT_EQ(job["name"], "batch-test");
  EXPECT_EQ(job["pool"], "h100");
  EXPECT_EQ(job["gpus"], 2);
  EXPECT_EQ(job["time_limit_s"], 3);
  const int64_t id = job["id"];
  json failed = events.Job("JobFailed", id);
  ASSERT_FALSE(failed.is_null());
  EXPECT_EQ(failed["detail"], "failed (exit 124)");
  std::string log;
  for (int i = 0; i < 5 && log.find("time limit") == std::string::npos; ++i) {
    log = json::parse(s.Get("/v1/jobs/" + std::to_string(id) + "/logs?wait=2", kAdmin).body)
              .value("data", "");
  }
  EXPECT_NE(log.find("gpus "), std::string::npos) << log;
  EXPECT_NE(log.find("step 1\nstep 2\nstep 3\n"), std::string::npos) << log;
  EXPECT_NE(log.find("quotes \"and\" $dollars stay"), std::string::npos) << log;
  EXPECT_NE(log.find("the time limit of 3s is reached"), std::string::npos) << log;
}

TEST_F(AgentE2E, AgentsRideOutAServerRestart) {
  const std::string db = dir + "/r.db", config = Config("5s", "20s");
  auto s = std::make_unique<ServerProcess>(db, config, kAdmin);
  ASSERT_TRUE(s->Start());
  const int port = s->port();
  AgentProcess n1(port, "n1", dir + "/n1", dir + "/ckpt");
  ASSERT_TRUE(n1.Start()) << n1.log();
  int64_t job = SpotJob(*s, {{"command", "echo started; exec sleep 600"}});
  {
    Events events(s.get());
    ASSERT_FALSE(events.Job("JobRunning", job, 1).is_null());
  }
  // The server dies and stays down for a whole heartbeat timeout (longer than the agent's
  // fencing window, 3.75 s: a dead server cannot declare the node down, and a restarted one
  // gives it a fresh timeout), then comes back on the same address with the same database.
  s->Kill(SIGKILL);
  // The agent's own clock says how long it has been: it writes its time into the heartbeat
  // file at every contact (refused connections included). Wait, without sleeping, until that
  // covers 5 s of the server being gone.
  {
    const std::string heartbeat = dir + "/n1/heartbeat";
    auto stamp = [&] {
      std::ifstream in(heartbeat);
      int64_t us = 0;
      in >> us;
      return us;
    };
    const int64_t from = stamp();
    int watch = ::inotify_init1(IN_CLOEXEC);
    ASSERT_GE(watch, 0);
    ASSERT_GE(::inotify_add_watch(watch, (dir + "/n1").c_str(), IN_CLOSE_WRITE), 0);
    while (stamp() < from + 5'000'000) {
      pollfd p{watch, POLLIN, 0};
      ASSERT_EQ(::poll(&p, 1, 60'000), 1) << "the agent stopped touching its heartbeat\n"
                                          << n1.log();
      char events[4096];
      ASSERT_GT(::read(watch, events, sizeof events), 0);
    }
    ::close(watch);
  }
  s = std::make_unique<ServerProcess>(db, config, kAdmin, "127.0.0.1:" + std::to_string(port));
  ASSERT_TRUE(s->Start());
  ASSERT_TRUE(n1.WaitForLog("server reachable again")) << n1.log();
  // The running job was never disturbed, and new work reaches the agent.
  Events events(s.get());
  int64_t next = SpotJob(*s, {{"command", "exec sleep 600"}});
  ASSERT_FALSE(events.Job("JobRunning", next, 1).is_null());
  json first = json::parse(s->Get("/v1/jobs/" + std::to_string(job), kAdmin).body);
  EXPECT_EQ(first["state"], "running");
  EXPECT_EQ(first["attempt"], 1);
  for (const json& e : events.all()) EXPECT_NE(e["type"], "JobRequeued") << e.dump();
  EXPECT_EQ(n1.log().find("stopping job"), std::string::npos) << n1.log();
  EXPECT_EQ(n1.log().find("no contact"), std::string::npos) << n1.log();
}

TEST_F(AgentE2E, UpRunsAServerAndALabelledLocalAgentAndCtrlCStopsBoth) {
  int out[2];
  ASSERT_EQ(::pipe(out), 0);
  pid_t up = ::fork();
  if (up == 0) {
    ::dup2(out[1], 1);
    ::close(out[0]);
    ::close(out[1]);
    std::string d = dir + "/up";
    ::execl(RESERVOIR_BIN, RESERVOIR_BIN, "up", "--listen", "127.0.0.1:0", "--dir", d.c_str(),
            "--fake-gpus", "4", static_cast<char*>(nullptr));
    ::_exit(127);
  }
  ::close(out[1]);
  FILE* in = ::fdopen(out[0], "r");
  std::string banner;
  char line[1024];
  while (banner.find("Ctrl-C") == std::string::npos && std::fgets(line, sizeof line, in)) {
    banner += line;
  }
  ASSERT_NE(banner.find("4 FAKE GPUs"), std::string::npos) << banner;
  const size_t at = banner.find("http://127.0.0.1:");
  ASSERT_NE(at, std::string::npos) << banner;
  const int port = std::atoi(banner.c_str() + at + std::strlen("http://127.0.0.1:"));
  const size_t t = banner.find("admin token: ");
  ASSERT_NE(t, std::string::npos) << banner;
  const std::string token = banner.substr(t + 13, banner.find(' ', t + 13) - (t + 13));
  std::ifstream kept(dir + "/up/admin-token");
  std::string stored;
  std::getline(kept, stored);
  EXPECT_EQ(stored, token);
  // By the time the banner shows, the local agent has registered its node.
  auto nodes = rsv::testing::Http(port, "GET", "/v1/nodes", token);
  ASSERT_EQ(nodes.status, 200) << nodes.body;
  json n = json::parse(nodes.body);
  ASSERT_EQ(n.size(), 1u);
  EXPECT_EQ(n[0]["gpus"], 4);
  EXPECT_EQ(n[0]["agent"]["probe"], "fake");
  // Ctrl-C: both stop, `up` exits 0 and the server no longer answers.
  ::kill(up, SIGINT);
  std::string rest;
  while (std::fgets(line, sizeof line, in)) rest += line;
  std::fclose(in);
  int status = 0;
  ASSERT_EQ(::waitpid(up, &status, 0), up);
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << status;
  EXPECT_NE(rest.find("stopping"), std::string::npos) << rest;
  EXPECT_EQ(rsv::testing::Http(port, "GET", "/healthz").status, 0);
}

TEST_F(AgentE2E, AnAgentTheServerRefusesExitsSayingWhy) {
  ServerProcess s(dir + "/r.db", Config("30s", "20s"), kAdmin);
  ASSERT_TRUE(s.Start());
  auto run = [&](const std::string& args, const std::string& env) {
    std::string cmd = env + std::string(RESERVOIR_BIN) +
                      " agent --server http://127.0.0.1:" + std::to_string(s.port()) +
                      " --fake-gpus 8 --state-dir " + dir + "/refused " + args + " 2> " + dir +
                      "/agent.err";
    int status = std::system(cmd.c_str());
    std::ifstream in(dir + "/agent.err");
    std::string err((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    return std::make_pair(WIFEXITED(status) ? WEXITSTATUS(status) : -1, err);
  };
  const std::string env = "RESERVOIR_TOKEN=" + std::string(kAdmin) + " ";
  auto [code, err] = run("--pool nope --node-id n1", env);
  EXPECT_EQ(code, 1);
  EXPECT_NE(err.find("unknown pool 'nope'"), std::string::npos) << err;
  std::tie(code, err) = run("--pool h100 --node-id n1", "RESERVOIR_TOKEN=wrong ");
  EXPECT_EQ(code, 1);
  EXPECT_NE(err.find("unknown token"), std::string::npos) << err;
  std::tie(code, err) = run("--pool h100 --node-id a/b", env);
  EXPECT_EQ(code, 2);
  EXPECT_NE(err.find("--node-id"), std::string::npos) << err;
  // A token on the command line is refused: every process on the host could read it.
  std::tie(code, err) = run("--token " + std::string(kAdmin) + " --pool h100 --node-id n1", "");
  EXPECT_EQ(code, 2);
  EXPECT_NE(err.find("--token-file"), std::string::npos) << err;
  // So is a token file others can read.
  const std::string file = dir + "/token";
  std::ofstream(file) << kAdmin << "\n";
  std::filesystem::permissions(file, std::filesystem::perms(0644));
  std::tie(code, err) = run("--token-file " + file + " --pool h100 --node-id n1", "");
  EXPECT_EQ(code, 2);
  EXPECT_NE(err.find("chmod 600"), std::string::npos) << err;
  // A node's token registers that node only.
  auto minted = s.Post("/v1/tokens", kAdmin, R"({"node":"n1"})");
  ASSERT_EQ(minted.status, 201) << minted.body;
  std::ofstream(file, std::ios::trunc) << json::parse(minted.body)["token"].get<std::string>();
  std::filesystem::permissions(file, std::filesystem::perms(0600));
  std::tie(code, err) = run("--token-file " + file + " --pool h100 --node-id n2", "");
  EXPECT_EQ(code, 1);
  EXPECT_NE(err.find("may only register and sync node n1"), std::string::npos) << err;
  // Nothing was registered.
  EXPECT_EQ(json::parse(s.Get("/v1/nodes", kAdmin).body).size(), 0u);
}

TEST_F(AgentE2E, AnAgentCutOffFromTheServerStopsItsJobsBeforeTheyCanRunTwice) {
  const std::string db = dir + "/r.db", config = Config("3s", "20s");
  auto s = std::make_unique<ServerProcess>(db, config, kAdmin);
  ASSERT_TRUE(s->Start());
  const int port = s->port();
  AgentProcess n1(port, "n1", dir + "/n1", dir + "/ckpt");
  ASSERT_TRUE(n1.Start()) << n1.log();
  const std::string job =
      std::to_string(SpotJob(*s, {{"max_restarts", 0}, {"command", "exec sleep 600"}}));
  {
    Events events(s.get());
    ASSERT_FALSE(events.Job("JobRunning", std::stoll(job), 1).is_null());
  }
  // A partition: the server's address accepts connections but nothing answers (unlike a dead
  // server, which refuses them). Before the heartbeat timeout could pass, the agent stops the job.
  s->Kill(SIGKILL);
  int hole = ::socket(AF_INET, SOCK_STREAM, 0);
  int one = 1;
  ::setsockopt(hole, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<uint16_t>(port));
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ASSERT_EQ(::bind(hole, reinterpret_cast<sockaddr*>(&addr), sizeof addr), 0);
  ASSERT_EQ(::listen(hole, 128), 0);
  ASSERT_TRUE(n1.WaitForLog("job " + job + " attempt 1: stopped: no contact")) << n1.log();
  ::close(hole);
  // Back again: the attempt is reported lost (no restart spent) and the job runs again.
  s = std::make_unique<ServerProcess>(db, config, kAdmin, "127.0.0.1:" + std::to_string(port));
  ASSERT_TRUE(s->Start());
  Events events(s.get());
  json requeued = events.Job("JobRequeued", std::stoll(job), 2);
  ASSERT_FALSE(requeued.is_null());
  EXPECT_NE(requeued["detail"].get<std::string>().find("lost on node n1"), std::string::npos);
  ASSERT_FALSE(events.Job("JobRunning", std::stoll(job), 2).is_null());
}

TEST_F(AgentE2E, JobsOfADeadAgentStopThemselvesBeforeTheyCanRunTwice) {
  ServerProcess s(dir + "/r.db", Config("3s", "20s"), kAdmin);
  ASSERT_TRUE(s.Start());
  auto n1 = std::make_unique<AgentProcess>(s.port(), "n1", dir + "/n1", dir + "/ckpt");
  ASSERT_TRUE(n1->Start()) << n1->log();
  // The job holds the write end of a FIFO: reading it returns end-of-file when the job is gone.
  const std::string fifo = dir + "/alive";
  ASSERT_EQ(::mkfifo(fifo.c_str(), 0600), 0);
  ::chmod(fifo.c_str(), 0666);  // the job runs as its tenant's user
  int64_t job = SpotJob(s, {{"max_restarts", 0}, {"command", "exec sleep 600 > " + fifo}});
  Events events(&s);
  ASSERT_FALSE(events.Job("JobRunning", job, 1).is_null());
  int fd = ::open(fifo.c_str(), O_RDONLY);  // returns once the job has it open
  ASSERT_GE(fd, 0);
  n1->Kill();  // the agent alone dies; nothing will ever stop its job but the job itself
  char c;
  EXPECT_EQ(::read(fd, &c, 1), 0);  // blocks until the job's process is gone
  ::close(fd);
  std::ifstream log(dir + "/n1/jobs/" + std::to_string(job) + "/attempt-1.log");
  std::string text((std::istreambuf_iterator<char>(log)), std::istreambuf_iterator<char>());
  EXPECT_NE(text.find("has not reached the server"), std::string::npos) << text;
  // The server, for its part, requeues it after the heartbeat timeout.
  json requeued = events.Job("JobRequeued", job, 2);
  ASSERT_FALSE(requeued.is_null());
  EXPECT_EQ(requeued["detail"], "node n1 down");
}

TEST_F(AgentE2E, UnhealthyGpuDrainsTheNode) {
  ServerProcess s(dir + "/r.db", Config("30s", "20s"), kAdmin);
  ASSERT_TRUE(s.Start());
  const std::string faults = dir + "/faults";
  AgentProcess n1(s.port(), "n1", dir + "/n1", dir + "/ckpt", {"--fake-faults", faults});
  ASSERT_TRUE(n1.Start()) << n1.log();
  Events events(&s);
  std::ofstream(faults) << "3 XID 79 (GPU fell off the bus)\n";
  json drained = events.WaitFor([](const json& e) {
    return e["type"] == "NodeStateChanged" && e["node"] == "n1" && e["detail"] == "draining";
  });
  ASSERT_FALSE(drained.is_null());
  json nodes = json::parse(s.Get("/v1/nodes", kAdmin).body);
  ASSERT_EQ(nodes.size(), 1u);
  EXPECT_EQ(nodes[0]["state"], "draining");
  EXPECT_EQ(nodes[0]["agent"]["probe"], "fake");
  EXPECT_NE(nodes[0]["agent"]["health"].get<std::string>().find("GPU 3"), std::string::npos);
  EXPECT_NE(nodes[0]["agent"]["health"].get<std::string>().find("XID 79"), std::string::npos);
}

TEST_F(AgentE2E, AStartNoAgentConfirmsIsRolledBackAndBadReportsAreRefused) {
  ServerProcess s(dir + "/r.db", Config("30s", "1s"), kAdmin);
  ASSERT_TRUE(s.Start());
  Events events(&s);
  // A node registered by hand: nobody will ever confirm a start on it.
  auto reg = s.Post("/v1/nodes/n9/register", kAdmin, R"({"pool":"h100","gpus":8})");
  ASSERT_EQ(reg.status, 200) << reg.body;
  auto odd = s.Post("/v1/nodes/n%229/register", kAdmin, R"({"pool":"h100","gpus":8})");
  EXPECT_EQ(odd.status, 400) << odd.body;
  EXPECT_EQ(json::parse(odd.body)["error"]["field"], "node");
  auto metrics = s.Get("/metrics", "");
  EXPECT_NE(
      metrics.body.find("reservoir_agent_last_sync_age_seconds{node=\"n9\",probe=\"unknown\"}"),
      std::string::npos);
  auto again = s.Post("/v1/nodes/n9/register", kAdmin, R"({"pool":"h100","gpus":4})");
  EXPECT_EQ(again.status, 409) << again.body;
  EXPECT_NE(again.body.find("8 GPUs"), std::string::npos);
  ASSERT_EQ(s.Post("/v1/tenants", kAdmin, R"({"name":"b"})").status, 201);
  auto r = s.Post("/v1/jobs", kAdmin,
                  R"({"tenant":"b","pool":"h100","gpus":8,"limit_price":"2","command":"true"})");
  ASSERT_EQ(r.status, 201) << r.body;
  int64_t job = json::parse(r.body)["id"];
  EXPECT_EQ(json::parse(r.body)["state"], "starting");  // placed; the agent must confirm
  json rolled = events.Job("JobRequeued", job, 2);
  ASSERT_FALSE(rolled.is_null());
  EXPECT_NE(rolled["detail"].get<std::string>().find("not confirmed"), std::string::npos);

  // Bad reports name the field and change nothing; unknown nodes are told to register.
  struct Case {
    const char* body;
    const char* field;
  } cases[] = {
      {R"({"jobs": 3})", "jobs"},
      {R"({"jobs": [{"job": 1, "attempt": 1, "status": "dancing"}]})", "jobs[0].status"},
      {R"({"jobs": [{"job": "x", "attempt": 1, "status": "running"}]})", "jobs[0]"},
      {R"({"logs": [{"job": 1, "attempt": 1, "offset": -4, "data": "x"}]})", "logs[0]"},
      {R"({"health": false})", "health"},
      {R"({"colour": "red"})", "colour"},
  };
  for (const Case& c : cases) {
    auto bad = s.Post("/v1/nodes/n9/sync", kAdmin, c.body);
    EXPECT_EQ(bad.status, 400) << c.body;
    EXPECT_EQ(json::parse(bad.body)["error"]["field"], c.field) << bad.body;
  }
  EXPECT_EQ(s.Post("/v1/nodes/nope/sync", kAdmin, "{}").status, 404);
  EXPECT_EQ(s.Post("/v1/nodes/n9/sync?wait=99", kAdmin, "{}").status, 400);
  ASSERT_EQ(s.Post("/v1/tokens", kAdmin, R"({"tenant":"b"})").status, 201);
  auto tenant = json::parse(s.Post("/v1/tokens", kAdmin, R"({"tenant":"b"})").body)["token"];
  EXPECT_EQ(s.Post("/v1/nodes/n9/sync", tenant, "{}").status, 403);
  auto logs = s.Get("/v1/jobs/" + std::to_string(job) + "/logs?attempt=9", kAdmin);
  EXPECT_EQ(logs.status, 400);
  EXPECT_EQ(json::parse(logs.body)["error"]["field"], "attempt");
  // The job is still pending (rolled back again and again), never lost.
  json j = json::parse(s.Get("/v1/jobs/" + std::to_string(job), kAdmin).body);
  EXPECT_NE(j["state"], "failed");
}

}  // namespace
}  // namespace rsv
