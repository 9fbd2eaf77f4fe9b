// High availability, end to end (docs/ha.md): two `reservoir server` processes on one real
// PostgreSQL database, an agent given both, real job processes. The leader is SIGKILLed at a
// seeded moment while clients submit, or SIGSTOPped past its lease and woken again. Waits are on
// the servers' replies (bounded polls of /healthz), never on a fixed sleep.
#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <cmath>
#include <filesystem>
#include <map>
#include <mutex>
#include <nlohmann/json.hpp>
#include <set>
#include <thread>

#include "agent_process.h"
#include "common/clock.h"
#include "common/rng.h"
#include "server_process.h"
#include "store/pg_test_instance.h"

namespace rsv {
namespace {

using json = nlohmann::json;
using rsv::testing::AgentProcess;
using rsv::testing::Http;
using rsv::testing::HttpResult;
using rsv::testing::ServerProcess;

const char kAdmin[] = "e2e-admin-token";  // AgentProcess mints node tokens with it

// Polls `port`'s /healthz every 20 ms until `pred` holds (a role changes when a lease lapses:
// there is nothing to long-poll), at most 3,000 times; the last reply.
json HealthUntil(int port, const std::function<bool(const json&)>& pred) {
  json h;
  for (int i = 0; i < 3000; ++i) {
    HttpResult r = Http(port, "GET", "/healthz");
    h = r.status == 200 ? json::parse(r.body) : json();
    if (!h.is_null() && pred(h)) return h;
    SleepFor(Duration::Millis(20));
  }
  return h;
}

// The role the server at `port` reports once it is `role` (or when the wait ends).
std::string RoleUntil(int port, const std::string& role) {
  json h = HealthUntil(port, [&](const json& j) { return j["role"] == role; });
  return h.is_null() ? "" : h.value("role", "");
}

// Long-polls the events of the server at `port` until one of `type` for `job` arrives (true),
// or 2,000 long-polls pass.
bool WaitForEvent(int port, const std::string& type, int64_t job) {
  int64_t since = 0;
  for (int round = 0; round < 2000; ++round) {  // each returns at the first events, or in 5 s
    HttpResult r = Http(port, "GET", "/v1/events?wait=5&since=" + std::to_string(since), kAdmin);
    if (r.status != 200) return false;
    const json b = json::parse(r.body);
    since = b["last_seq"];
    for (const json& e : b["events"]) {
      if (e["type"] == type && e.value("job", int64_t{0}) == job) return true;
    }
  }
  return false;
}

// The lease the servers run with: 2 s in the test command; bench/failover.sh runs the failover
// trials with the default, 5 s (RSV_HA_LEASE), and more of them (RSV_HA_TRIALS).
std::string Lease() {
  const char* l = std::getenv("RSV_HA_LEASE");
  return l && *l ? l : "2s";
}
int Trials() {
  const char* t = std::getenv("RSV_HA_TRIALS");
  return t && *t ? std::atoi(t) : 2;
}

struct HaTest : ::testing::Test {
  std::string dir, url;
  void SetUp() override {
    static int n = 0;
    dir = (std::filesystem::temp_directory_path() /
           ("rsv_ha_" + std::to_string(::getpid()) + "_" + std::to_string(n)))
              .string();
    std::filesystem::remove_all(dir);
    std::filesystem::create_directories(dir);
    std::filesystem::permissions(dir, std::filesystem::perms(0755));  // jobs run as their tenant
    rsv::testing::PostgresInstance* pg = rsv::testing::SharedPostgres();
    ASSERT_NE(pg, nullptr);
    const std::string db = "ha_" + std::to_string(n++);
    ASSERT_TRUE(pg->CreateDatabase(db));
    url = pg->Url(db);
    std::ofstream(dir + "/config.json")
        // Snapshots every 40 commands: leaders snapshot and compact the log throughout, and
        // standbys follow, take over and restart across it (docs/ha.md, "Snapshots").
        << R"({"tick": "200ms", "heartbeat_timeout": "10s", "start_timeout": "30s",
              "snapshot_every": 40,
              "pools": [{"name": "h100", "reserve_price": "1", "min_increment": "0.25"}]})";
  }
  void TearDown() override { std::filesystem::remove_all(dir); }
  std::unique_ptr<ServerProcess> Server(const std::string& name, std::string lease = "") {
    auto s = std::make_unique<ServerProcess>(
        url, dir + "/config.json", kAdmin, "127.0.0.1:0",
        std::vector<std::string>{"--name", name, "--lease", lease.empty() ? Lease() : lease,
                                 "--log-dir", dir + "/logs-" + name});
    EXPECT_TRUE(s->Start());
    return s;
  }
};

// A job for pool h100, as POST /v1/jobs takes it.
std::string JobBody(const std::string& tenant, int gpus, const std::string& limit,
                    const std::string& command, const std::string& name = "") {
  json body = {{"tenant", tenant},
               {"pool", "h100"},
               {"gpus", gpus},
               {"limit_price", limit},
               {"command", command}};
  if (!name.empty()) body["name"] = name;
  return body.dump();
}

// Every job of the server at `port`, by name.
std::map<std::string, int> JobNames(int port, std::string* error) {
  std::map<std::string, int> seen;
  for (int64_t after = 0;;) {
    HttpResult list =
        Http(port, "GET", "/v1/jobs?state=all&limit=1000&after=" + std::to_string(after), kAdmin);
    if (list.status != 200) {
      *error = list.body;
      return seen;
    }
    json page = json::parse(list.body);
    for (const json& j : page) seen[j["name"]]++;
    if (page.size() < 1000) return seen;
    after = page.back()["id"];
  }
}

TEST_F(HaTest, FailoverLosesNoAcknowledgedWriteAndRequeuesNothing) {
  for (uint64_t seed = 1; seed <= static_cast<uint64_t>(Trials()); ++seed) {
    SCOPED_TRACE("seed " + std::to_string(seed));
    if (seed > 1) {
      TearDown();
      SetUp();
    }
    Rng rng(seed);
    const int kill_after = static_cast<int>(rng.Range(20, 120));
    auto a = Server("a");
    json ha = HealthUntil(a->port(), [](const json& h) { return h["role"] == "leader"; });
    ASSERT_EQ(ha["role"], "leader") << ha.dump();
    auto b = Server("b");
    ASSERT_EQ(RoleUntil(b->port(), "standby"), "standby");
    const std::string servers = "http://127.0.0.1:" + std::to_string(a->port()) +
                                ",http://127.0.0.1:" + std::to_string(b->port());
    AgentProcess n1(a->port(), "n1", dir + "/n1", dir + "/checkpoints");
    n1.servers = servers;
    ASSERT_TRUE(n1.Start()) << n1.log();
    ASSERT_EQ(a->Post("/v1/tenants", kAdmin, R"({"name":"t"})").status, 201);

    // A long job that must ride through the failover untouched.
    HttpResult long_job =
        a->Post("/v1/jobs", kAdmin, JobBody("t", 2, "5", "exec sleep 600", "long"));
    ASSERT_EQ(long_job.status, 201) << long_job.body;
    const int64_t long_id = json::parse(long_job.body)["id"];
    ASSERT_TRUE(WaitForEvent(a->port(), "JobRunning", long_id));
    ASSERT_EQ(json::parse(a->Get("/v1/jobs/" + std::to_string(long_id), kAdmin).body)["state"],
              "running");

    // Four clients submit short jobs (they start and exit on the agent) to whichever server
    // leads; an acknowledged name must survive, and no name may appear twice.
    std::mutex mu;
    std::condition_variable cv;
    std::set<std::string> acked;
    int acked_after_kill = 0;
    std::atomic<bool> killed{false}, stop{false};
    SteadyTicker ticker;  // measures the failover
    int64_t killed_at = 0, first_ack_after = 0;
    std::vector<std::thread> clients;
    for (int c = 0; c < 4; ++c) {
      clients.emplace_back([&, c] {
        int port = a->port();
        for (int i = 0; !stop; ++i) {
          const std::string name = "c" + std::to_string(c) + "-" + std::to_string(i);
          HttpResult r = Http(port, "POST", "/v1/jobs", kAdmin, JobBody("t", 1, "2", "true", name));
          if (r.status != 201) {  // a dead leader or a standby: the other server, next name
            port = port == a->port() ? b->port() : a->port();
            SleepFor(Duration::Millis(20));
            continue;
          }
          std::lock_guard<std::mutex> lock(mu);
          acked.insert(name);
          if (killed && port == b->port()) {  // the new leader's acknowledgements
            if (acked_after_kill++ == 0) first_ack_after = ticker.Nanos();
          }
          cv.notify_all();
        }
      });
    }
    {
      std::unique_lock<std::mutex> lock(mu);
      cv.wait(lock, [&] { return static_cast<int>(acked.size()) >= kill_after; });
      killed_at = ticker.Nanos();
      killed = true;
    }
    a->Kill(SIGKILL);
    {
      std::unique_lock<std::mutex> lock(mu);
      ASSERT_TRUE(cv.wait_for(lock, std::chrono::seconds(60), [&] {
        return acked_after_kill >= 40;
      })) << "the standby did not take over";
    }
    stop = true;
    for (auto& th : clients) th.join();
    const double took_s = static_cast<double>(first_ack_after - killed_at) / 1e9;
    std::printf(
        "seed %llu: killed after %d acknowledgements; the standby acknowledged a write "
        "%.2f s later\n",
        static_cast<unsigned long long>(seed), kill_after, took_s);
    EXPECT_LT(took_s, 10.0);  // a lease (2 s here, 5 s by default) and a poll

    json hb = HealthUntil(b->port(), [](const json& h) { return h["role"] == "leader"; });
    EXPECT_EQ(hb["epoch"], 2);
    std::string error;
    std::map<std::string, int> seen = JobNames(b->port(), &error);
    ASSERT_TRUE(error.empty()) << error;
    int duplicated = 0, lost = 0;
    for (const auto& [name, n] : seen) {
      EXPECT_EQ(n, 1) << "duplicate " << name;
      duplicated += n > 1;
    }
    for (const std::string& name : acked) {
      EXPECT_TRUE(seen.count(name)) << "lost " << name;
      lost += !seen.count(name);
    }

    // The agent found the new leader (its syncs to the dead one failed first), and works for it:
    // a job submitted there runs on the agent and ends. Contact came back before the agent's
    // fence, or the checks below see the long job stopped and requeued.
    EXPECT_TRUE(n1.WaitForLog("server reachable again")) << n1.log();
    HttpResult after = b->Post("/v1/jobs", kAdmin, JobBody("t", 1, "2", "true", "after"));
    ASSERT_EQ(after.status, 201) << after.body;
    EXPECT_TRUE(WaitForEvent(b->port(), "JobSucceeded", json::parse(after.body)["id"]));
    // The long job kept its first attempt, and nothing was requeued or preempted.
    json lj = json::parse(b->Get("/v1/jobs/" + std::to_string(long_id), kAdmin).body);
    EXPECT_EQ(lj["state"], "running");
    EXPECT_EQ(lj["attempt"], 1);
    HttpResult ev = b->Get("/v1/events?since=0", kAdmin);
    ASSERT_EQ(ev.status, 200);
    int requeued = 0, preempted = 0;
    const json events = json::parse(ev.body)["events"];
    for (const json& e : events) {
      requeued += e["type"] == "JobRequeued";
      preempted += e["type"] == "JobPreempted";
    }
    EXPECT_EQ(requeued, 0) << ev.body.substr(0, 2000);
    std::printf(
        "trial %llu: failover %.2f s, %zu acknowledged, %d lost, %d duplicated, %d "
        "requeued, %d preempted\n",
        static_cast<unsigned long long>(seed), took_s, acked.size(), lost, duplicated, requeued,
        preempted);
    EXPECT_EQ(preempted, 0);
    EXPECT_EQ(n1.log().find("stopped: no contact"), std::string::npos) << n1.log();
    // The money balances: what the tenant was charged, the operator was credited (one read:
    // the long job keeps paying between two).
    HttpResult summary = b->Get("/v1/ledger/summary", kAdmin);
    ASSERT_EQ(summary.status, 200) << summary.body;
    const json pool = json::parse(summary.body)["pools"]["h100"];
    int64_t sum = 0;
    for (const auto& [label, amount] : pool.items()) {
      sum += std::llround(std::stod(amount.get<std::string>()) * 1e6);
    }
    EXPECT_LT(std::llround(std::stod(pool["spot_charge"].get<std::string>()) * 1e6), 0);
    EXPECT_EQ(sum, 0) << summary.body;
    n1.Kill();
  }
}

// With the default lease (5 s) and heartbeat timeout (10 s), as an operator runs it.
TEST_F(HaTest, APausedLeaderIsFencedAndStepsDown) {
  auto a = Server("a", "5s");
  ASSERT_EQ(RoleUntil(a->port(), "leader"), "leader");
  auto b = Server("b", "5s");
  ASSERT_EQ(RoleUntil(b->port(), "standby"), "standby");
  // A standby refuses writes and names the leader.
  HttpResult refused = b->Post("/v1/tenants", kAdmin, R"({"name":"x"})");
  EXPECT_EQ(refused.status, 503);
  EXPECT_EQ(json::parse(refused.body)["error"]["leader"],
            "http://127.0.0.1:" + std::to_string(a->port()));
  ASSERT_EQ(a->Post("/v1/tenants", kAdmin, R"({"name":"before"})").status, 201);
  // An agent given both runs a job through it all.
  AgentProcess n1(a->port(), "n1", dir + "/n1", dir + "/checkpoints");
  n1.servers = "http://127.0.0.1:" + std::to_string(a->port()) +
               ",http://127.0.0.1:" + std::to_string(b->port());
  ASSERT_TRUE(n1.Start()) << n1.log();
  HttpResult job = a->Post("/v1/jobs", kAdmin, JobBody("before", 2, "5", "exec sleep 600"));
  ASSERT_EQ(job.status, 201) << job.body;
  const int64_t id = json::parse(job.body)["id"];
  ASSERT_TRUE(WaitForEvent(a->port(), "JobRunning", id));

  // Paused past its lease: it still accepts connections and answers nothing. B takes over,
  // and the agent, its syncs to A timing out, finds B.
  a->Signal(SIGSTOP);
  json hb = HealthUntil(b->port(), [](const json& h) { return h["role"] == "leader"; });
  ASSERT_EQ(hb["role"], "leader");
  EXPECT_EQ(hb["epoch"], 2);
  ASSERT_EQ(b->Post("/v1/tenants", kAdmin, R"({"name":"after"})").status, 201);
  // The agent reached B (a job submitted there runs on it), and the first job kept its attempt.
  HttpResult other = b->Post("/v1/jobs", kAdmin, JobBody("after", 1, "5", "true"));
  ASSERT_EQ(other.status, 201) << other.body;
  ASSERT_TRUE(WaitForEvent(b->port(), "JobSucceeded", json::parse(other.body)["id"]));
  json running = json::parse(b->Get("/v1/jobs/" + std::to_string(id), kAdmin).body);
  EXPECT_EQ(running["state"], "running");
  EXPECT_EQ(running["attempt"], 1);
  EXPECT_EQ(n1.log().find("stopped: no contact"), std::string::npos) << n1.log();

  // A wakes with an expired lease: it may not write. It steps down and comes back as B's standby.
  a->Signal(SIGCONT);
  HttpResult late = a->Post("/v1/tenants", kAdmin, R"({"name":"late"})");
  EXPECT_NE(late.status, 201) << late.body;
  json ha = HealthUntil(
      a->port(), [&](const json& h) { return h["role"] == "standby" && h.value("epoch", 0) == 2; });
  EXPECT_EQ(ha["role"], "standby") << ha.dump();
  EXPECT_EQ(ha["leader"], "http://127.0.0.1:" + std::to_string(b->port()));

  // One history: B's, followed by A.
  HttpResult tenants = b->Get("/v1/tenants", kAdmin);
  EXPECT_NE(tenants.body.find("\"before\""), std::string::npos);
  EXPECT_NE(tenants.body.find("\"after\""), std::string::npos);
  EXPECT_EQ(tenants.body.find("\"late\""), std::string::npos) << tenants.body;
  ASSERT_EQ(b->Post("/v1/tenants", kAdmin, R"({"name":"later"})").status, 201);
  json caught = HealthUntil(a->port(), [&](const json& h) {
    return h["applied_seq"] == json::parse(Http(b->port(), "GET", "/healthz").body)["applied_seq"];
  });
  EXPECT_EQ(caught["role"], "standby");
}

// A standby paused while the leader snapshots twice (every 40 commands here) finds, when it
// wakes, that the log it needs next was compacted away: it starts again from the newest
// snapshot, follows the leader again, and takes over with every job.
TEST_F(HaTest, AStandbyLeftBehindACompactionRestartsFromTheSnapshot) {
  auto a = Server("a", "10m");
  ASSERT_EQ(RoleUntil(a->port(), "leader"), "leader");
  auto b = Server("b", "10m");
  ASSERT_EQ(RoleUntil(b->port(), "standby"), "standby");
  ASSERT_EQ(a->Post("/v1/tenants", kAdmin, R"({"name":"t"})").status, 201);
  b->Signal(SIGSTOP);
  // A gauge of the server's /metrics (-1 when absent).
  auto metric = [](int port, const std::string& name) {
    const std::string body = Http(port, "GET", "/metrics").body;
    const size_t at = body.find("\n" + name + " ");
    return at == std::string::npos ? int64_t{-1} : std::atoll(body.c_str() + at + name.size() + 2);
  };
  // Two snapshots, each after more than 40 new commands: the second compacts the log through
  // the first, past what B has applied.
  int jobs = 0;
  for (int snapshots = 1; snapshots <= 2; ++snapshots) {
    for (int i = 0; i < 45; ++i, ++jobs) {
      HttpResult r =
          a->Post("/v1/jobs", kAdmin, JobBody("t", 1, "2", "true", "j" + std::to_string(jobs)));
      ASSERT_EQ(r.status, 201) << r.body;
    }
    for (int i = 0; i < 500 && metric(a->port(), "reservoir_snapshots_written_total") < snapshots;
         ++i) {
      SleepFor(Duration::Millis(20));
    }
    ASSERT_GE(metric(a->port(), "reservoir_snapshots_written_total"), snapshots);
  }
  b->Signal(SIGCONT);
  const int64_t leader_seq =
      json::parse(Http(a->port(), "GET", "/healthz").body)["applied_seq"].get<int64_t>();
  json hb = HealthUntil(b->port(), [&](const json& h) {
    return h["role"] == "standby" && h.value("applied_seq", int64_t{0}) >= leader_seq;
  });
  EXPECT_EQ(hb["role"], "standby") << hb.dump();
  EXPECT_GE(hb.value("applied_seq", int64_t{0}), leader_seq);
  // It started again from a snapshot (it had replayed the log from its start before).
  EXPECT_GT(metric(b->port(), "reservoir_snapshot_seq"), 0);

  a->Signal(SIGTERM);  // hands the lease over at once
  ASSERT_EQ(RoleUntil(b->port(), "leader"), "leader");
  std::string error;
  std::map<std::string, int> names = JobNames(b->port(), &error);
  ASSERT_TRUE(error.empty()) << error;
  for (int i = 0; i < jobs; ++i) EXPECT_EQ(names["j" + std::to_string(i)], 1) << i;
}

// SIGTERM on the leader: it answers what is in flight, then lets its lease go, so the standby
// leads at once. The lease here is 10 minutes: B leading within the poll's minute is the handover.
TEST_F(HaTest, ACleanStopHandsTheLeadOverAtOnce) {
  auto a = Server("a", "10m");
  ASSERT_EQ(RoleUntil(a->port(), "leader"), "leader");
  auto b = Server("b", "10m");
  ASSERT_EQ(RoleUntil(b->port(), "standby"), "standby");
  ASSERT_EQ(a->Post("/v1/tenants", kAdmin, R"({"name":"before"})").status, 201);
  a->Kill(SIGTERM);  // returns once it exited
  json hb = HealthUntil(b->port(), [](const json& h) { return h["role"] == "leader"; });
  ASSERT_EQ(hb["role"], "leader") << hb.dump();
  EXPECT_EQ(hb["epoch"], 2);
  EXPECT_NE(b->Get("/v1/tenants", kAdmin).body.find("\"before\""), std::string::npos);
  EXPECT_EQ(b->Post("/v1/tenants", kAdmin, R"({"name":"after"})").status, 201);
}

// The database goes away under a lone leader: it steps down (its appends and renewals fail),
// waits for the database, and leads again once it is back, with nothing lost.
TEST_F(HaTest, ALeaderRidesOutADatabaseRestart) {
  auto a = Server("a");
  ASSERT_EQ(RoleUntil(a->port(), "leader"), "leader");
  ASSERT_EQ(a->Post("/v1/tenants", kAdmin, R"({"name":"before"})").status, 201);
  ASSERT_TRUE(rsv::testing::SharedPostgres()->Halt());
  // A write now cannot be made durable: never acknowledged.
  HttpResult during = a->Post("/v1/tenants", kAdmin, R"({"name":"during"})");
  EXPECT_NE(during.status, 201) << during.body;
  ASSERT_TRUE(rsv::testing::SharedPostgres()->Resume());
  json h = HealthUntil(a->port(), [](const json& h) { return h["role"] == "leader"; });
  ASSERT_EQ(h["role"], "leader") << h.dump();
  HttpResult tenants = a->Get("/v1/tenants", kAdmin);
  EXPECT_NE(tenants.body.find("\"before\""), std::string::npos) << tenants.body;
  EXPECT_EQ(a->Post("/v1/tenants", kAdmin, R"({"name":"after"})").status, 201);
}

// A second server started under a live leader's name (a typo, or two servers on one host left
// on the default, the host name) is refused; the leader keeps leading.
TEST_F(HaTest, ASecondServerUnderTheLeadersNameIsRefused) {
  auto a = Server("a");
  ASSERT_EQ(RoleUntil(a->port(), "leader"), "leader");
  ServerProcess twin(url, dir + "/config.json", kAdmin, "127.0.0.1:0",
                     {"--name", "a", "--lease", Lease(), "--log-dir", dir + "/logs-twin"});
  EXPECT_FALSE(twin.Start());  // it exits before it listens
  json h = json::parse(Http(a->port(), "GET", "/healthz").body);
  EXPECT_EQ(h["role"], "leader");
  EXPECT_EQ(h["epoch"], 1);
  EXPECT_EQ(a->Post("/v1/tenants", kAdmin, R"({"name":"still"})").status, 201);
}

}  // namespace
}  // namespace rsv
