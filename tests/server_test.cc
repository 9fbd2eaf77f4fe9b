// The server as a user runs it: a real process on 127.0.0.1 with a real SQLite file.
#include <gtest/gtest.h>
#include <sys/wait.h>

#include <atomic>
#include <condition_variable>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <nlohmann/json.hpp>
#include <set>
#include <thread>

#include "common/rng.h"
#include "server_process.h"

namespace rsv {
namespace {

using json = nlohmann::json;
using rsv::testing::ServerProcess;

const char kAdmin[] = "test-admin-token";

struct ServerTest : ::testing::Test {
  std::string dir;
  std::string db, config;
  void SetUp() override {
    dir = (std::filesystem::temp_directory_path() /
           ("rsv_server_" + std::to_string(::getpid()) + "_" +
            ::testing::UnitTest::GetInstance()->current_test_info()->name()))
              .string();
    std::filesystem::remove_all(dir);
    std::filesystem::create_directories(dir);
    db = dir + "/r.db";
    config = dir + "/config.json";
    std::ofstream(config) << R"({"tick": "1s", "pools": [{"name": "h100", "reserve_price": "1",
      "min_increment": "0.25", "max_notice": "2m", "reservation_base_price": "2"}],
      "nodes": [{"name": "n", "pool": "h100", "gpus": 8, "topology": "z/r", "count": 2}]})";
  }
  void TearDown() override { std::filesystem::remove_all(dir); }

  std::string Token(const ServerProcess& s, const std::string& tenant) {
    EXPECT_EQ(s.Post("/v1/tenants", kAdmin, json{{"name", tenant}}.dump()).status, 201);
    auto r = s.Post("/v1/tokens", kAdmin, json{{"tenant", tenant}}.dump());
    EXPECT_EQ(r.status, 201) << r.body;
    return json::parse(r.body)["token"];
  }
};

// "Why is my job pending": a reason with its numbers and a place in the queue, from the
// scheduler's last decision; only for the job's own tenant.
// Lists page through cursors (RFC 8288 Link), reads of active jobs and the market walk only
// unfinished jobs, the ledger labels and rolls up, and bad query values get a 400 naming them.
TEST_F(ServerTest, ListsPageAndLedgerRollsUp) {
  ServerProcess s(db, config, kAdmin);
  ASSERT_TRUE(s.Start());
  std::string a = Token(s, "a"), b = Token(s, "b");
  std::vector<int64_t> ids;
  for (int i = 0; i < 5; ++i) {
    auto r = s.Post("/v1/jobs", a, R"({"pool":"h100","gpus":1,"limit_price":"2"})");
    ASSERT_EQ(r.status, 201) << r.body;
    ids.push_back(json::parse(r.body)["id"]);
  }
  ASSERT_EQ(s.Post("/v1/jobs/" + std::to_string(ids[1]) + "/cancel", a, "{}").status, 200);
  ASSERT_EQ(s.Post("/v1/jobs", b, R"({"pool":"h100","gpus":1,"limit_price":"2"})").status, 201);
  // Newest first, two a page: a's active jobs are 5, 4, 3, 1 (2 was cancelled).
  std::vector<int64_t> seen;
  std::string next = "/v1/jobs?order=desc&limit=2&state=active";
  for (int page = 0; page < 5 && !next.empty(); ++page) {
    auto r = s.Get(next, a);
    ASSERT_EQ(r.status, 200) << r.body;
    for (const json& j : json::parse(r.body)) seen.push_back(j["id"]);
    size_t at = r.headers.find("Link: <");
    next =
        at == std::string::npos ? "" : r.headers.substr(at + 7, r.headers.find('>', at) - at - 7);
    if (!next.empty()) {
      EXPECT_NE(r.headers.find(">; rel=\"next\""), std::string::npos);
    }
  }
  EXPECT_EQ(seen, (std::vector<int64_t>{ids[4], ids[3], ids[2], ids[0]}));
  auto all = json::parse(s.Get("/v1/jobs?state=all&after=" + std::to_string(ids[0]), a).body);
  ASSERT_EQ(all.size(), 4u);  // oldest first from the cursor, the cancelled one included
  EXPECT_EQ(all[0]["id"], ids[1]);
  for (const char* bad : {"state=done", "limit=0", "limit=10001", "order=up", "after=x",
                          "tier=gold", "positions=yes"}) {
    auto r = s.Get(std::string("/v1/jobs?") + bad, a);
    EXPECT_EQ(r.status, 400) << bad;
    EXPECT_NE(r.body.find(std::string("\"field\":\"") +
                          std::string(bad).substr(0, std::string(bad).find('=')) + "\""),
              std::string::npos)
        << bad << ": " << r.body;
  }
  // The ledger: every entry says what it is to the reader; per hour it is one row per label.
  // (b's running job is charged as time passes: wait for two charges.)
  while (json::parse(s.Get("/v1/ledger", b).body)["entries"].size() < 2) {
  }
  auto raw = json::parse(s.Get("/v1/ledger?limit=1", b).body);
  ASSERT_EQ(raw["entries"].size(), 1u) << raw.dump();
  EXPECT_EQ(raw["entries"][0]["what"], "spot_charge");
  if (raw.contains("next_after")) {
    auto more = json::parse(
        s.Get("/v1/ledger?limit=1&after=" + raw["next_after"].dump(), b).body)["entries"];
    ASSERT_FALSE(more.empty());
    EXPECT_GT(more[0]["seq"].get<int64_t>(), raw["entries"][0]["seq"].get<int64_t>());
  }
  // Newest first, from the cursor of the page before.
  auto newest = json::parse(s.Get("/v1/ledger?order=desc&limit=1", b).body);
  ASSERT_EQ(newest["entries"].size(), 1u) << newest.dump();
  ASSERT_TRUE(newest.contains("next_before")) << newest.dump();
  auto older = json::parse(
      s.Get("/v1/ledger?order=desc&limit=1&before=" + newest["next_before"].dump(), b).body);
  ASSERT_EQ(older["entries"].size(), 1u) << older.dump();
  EXPECT_LT(older["entries"][0]["seq"].get<int64_t>(), newest["entries"][0]["seq"].get<int64_t>());
  auto hourly = json::parse(s.Get("/v1/ledger?group=hour", b).body);
  for (const json& g : hourly["entries"]) {
    EXPECT_TRUE(g.contains("hour_us") && g.contains("entries") && g.contains("amount")) << g;
  }
  EXPECT_EQ(s.Get("/v1/ledger?group=day", b).status, 400);
  // A reservation starting in the past is refused, not silently moved to now.
  auto past =
      s.Post("/v1/reservations", a, R"({"pool":"h100","gpus":1,"duration":"1h","start_us":1})");
  EXPECT_EQ(past.status, 400) << past.body;
  EXPECT_NE(past.body.find("\"field\":\"start_us\""), std::string::npos) << past.body;
  // Who am I, and the waste report (a tenant sees its own rows only).
  EXPECT_EQ(json::parse(s.Get("/v1/whoami", a).body)["tenant"], "a");
  EXPECT_EQ(json::parse(s.Get("/v1/whoami", kAdmin).body)["admin"], true);
  auto waste = s.Get("/v1/waste", a);
  ASSERT_EQ(waste.status, 200) << waste.body;
  EXPECT_TRUE(json::parse(waste.body)["unmet_spot_gpu_s"].contains("h100"));
  auto usage = json::parse(s.Get("/v1/usage", a).body);
  int64_t sum = 0;
  for (const char* st : {"reserved_used", "lent", "spot_used", "idle_reserved", "idle", "down"})
    sum += usage["h100"]["now"][st].get<int64_t>();
  EXPECT_EQ(sum, 16);
}

// docs/dashboard.md: the page and its assets come from the binary, under a strict policy.
TEST_F(ServerTest, TheDashboardIsServedUnderAStrictPolicy) {
  ServerProcess s(db, config, kAdmin);
  ASSERT_TRUE(s.Start());
  auto page = s.Get("/", "");
  ASSERT_EQ(page.status, 200);
  EXPECT_NE(page.body.find("/assets/app.js"), std::string::npos);
  EXPECT_NE(page.headers.find("Content-Security-Policy: default-src 'none'; script-src 'self'"),
            std::string::npos)
      << page.headers;
  EXPECT_NE(page.headers.find("X-Frame-Options: DENY"), std::string::npos);
  for (const char* asset : {"app.js", "app.css", "uPlot.min.js", "uPlot.min.css"}) {
    auto r = s.Get(std::string("/assets/") + asset, "");
    EXPECT_EQ(r.status, 200) << asset;
    EXPECT_GT(r.body.size(), 1000u) << asset;
  }
  EXPECT_EQ(s.Get("/assets/..%2Fetc%2Fpasswd", "").status, 404);
  EXPECT_EQ(s.Get("/assets/nope.js", "").status, 404);
}

TEST_F(ServerTest, APendingJobSaysWhyAndWhere) {
  ServerProcess s(db, config, kAdmin);
  ASSERT_TRUE(s.Start());
  std::string a = Token(s, "a"), b = Token(s, "b");
  // a fills both nodes at 5; b's 8-GPU bid at 2 cannot outbid it, and sets no price.
  for (int i = 0; i < 2; ++i) {
    ASSERT_EQ(s.Post("/v1/jobs", a, R"({"pool":"h100","gpus":8,"limit_price":"5"})").status, 201);
  }
  auto low = s.Post("/v1/jobs", b, R"({"pool":"h100","gpus":8,"limit_price":"2"})");
  ASSERT_EQ(low.status, 201) << low.body;
  const int64_t id = json::parse(low.body)["id"];
  auto later = s.Post("/v1/jobs", b, R"({"pool":"h100","gpus":8,"limit_price":"1.5"})");
  ASSERT_EQ(later.status, 201) << later.body;
  auto why = s.Get("/v1/jobs/" + std::to_string(id) + "/why", b);
  ASSERT_EQ(why.status, 200) << why.body;
  json w = json::parse(why.body);
  // It sets the price (the highest bid left out) and still has no room: spot holds all 16
  // GPUs; it would run by outbidding the cheapest running job (5) by the increment (0.25).
  EXPECT_EQ(w["reason"], "no_budget") << w.dump();
  EXPECT_EQ(w["price"], "2.000000");
  EXPECT_EQ(w["runs_at_price"], "5.250000");
  EXPECT_EQ(w["position"], 1);
  EXPECT_EQ(w["bids"], 2);
  const int64_t second = json::parse(later.body)["id"];
  json w2 = json::parse(s.Get("/v1/jobs/" + std::to_string(second) + "/why", b).body);
  EXPECT_EQ(w2["reason"], "below_price") << w2.dump();  // 1.5 < 2
  EXPECT_EQ(w2["position"], 2);
  // The job itself and the list carry the reason too.
  json j = json::parse(s.Get("/v1/jobs/" + std::to_string(id), b).body);
  EXPECT_EQ(j["reason"], w["reason"]);
  EXPECT_EQ(j["position"], 1);
  // A page of the list with positions: the same places, from one walk of the book.
  json listed = json::parse(s.Get("/v1/jobs?state=pending&positions=true", b).body);
  ASSERT_EQ(listed.size(), 2u) << listed.dump();
  EXPECT_EQ(listed[0]["id"], id);
  EXPECT_EQ(listed[0]["position"], 1);
  EXPECT_EQ(listed[1]["id"], second);
  EXPECT_EQ(listed[1]["position"], 2);
  EXPECT_EQ(listed[1]["reason"], "below_price");
  // Another tenant cannot ask; a running job is not pending.
  EXPECT_EQ(s.Get("/v1/jobs/" + std::to_string(id) + "/why", a).status, 404);
  auto running = s.Get("/v1/jobs/1/why", a);
  EXPECT_EQ(running.status, 409) << running.body;
}

// The CLI as a newcomer reads it: times as local times, no made-up prices, short answers,
// durations with units.
TEST_F(ServerTest, TheCliSpeaksPlainly) {
  ServerProcess s(db, config, kAdmin);
  ASSERT_TRUE(s.Start());
  Token(s, "a");
  auto cli = [&](const std::string& args, int* code) {
    // The client flags go right after the subcommand (before a job's command).
    const size_t sp = args.find(' ');
    const std::string cmd = std::string(RESERVOIR_BIN) + " " + args.substr(0, sp) +
                            " --url http://127.0.0.1:" + std::to_string(s.port()) + " --token " +
                            kAdmin + (sp == std::string::npos ? "" : args.substr(sp)) + " 2>&1";
    FILE* p = ::popen(cmd.c_str(), "r");
    std::string out;
    char buf[4096];
    while (p && std::fgets(buf, sizeof buf, p)) out += buf;
    const int status = p ? ::pclose(p) : -1;
    *code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
    return out;
  };
  int code = 0;
  std::string out = cli("reserve --tenant a --pool h100 --gpus 8 --for 90", &code);
  EXPECT_EQ(code, 2) << out;
  EXPECT_NE(out.find("--for: give a unit"), std::string::npos) << out;
  out = cli("reserve --tenant a --pool h100 --gpus 8 --for 2h", &code);
  ASSERT_EQ(code, 0) << out;
  out = cli("reservations", &code);
  EXPECT_NE(out.find("START"), std::string::npos) << out;
  EXPECT_EQ(out.find("START(s)"), std::string::npos) << out;  // local times, not epoch seconds
  out = cli("submit --tenant a --pool h100 --gpus 8 --tier reserved -- sleep 60", &code);
  ASSERT_EQ(code, 0) << out;
  out = cli("jobs", &code);
  EXPECT_EQ(out.find("0.000000"), std::string::npos) << out;  // a reserved job has no limit
  out = cli("job 1", &code);
  EXPECT_NE(out.find("\nsubmitted: 20"), std::string::npos) << out;  // a local time
  EXPECT_EQ(out.find("submitted_us"), std::string::npos) << out;
  out = cli("cancel 1", &code);
  EXPECT_EQ(code, 0) << out;
  EXPECT_EQ(out, "job 1 cancelled\n");
  // Ended jobs leave the default list; --all shows them; --json output of logs is JSON.
  out = cli("jobs", &code);
  EXPECT_EQ(out.find("cancelled"), std::string::npos) << out;
  out = cli("jobs --all --tenant a", &code);
  EXPECT_NE(out.find("cancelled"), std::string::npos) << out;
  EXPECT_NE(out.find("(n"), std::string::npos) << out;  // where it ran, kept after it ended
  out = cli("logs 1 --json", &code);
  EXPECT_EQ(code, 0) << out;
  EXPECT_FALSE(json::parse(out.substr(0, out.find('\n')), nullptr, false).is_discarded()) << out;
  // Several words after -- are argv: quoted for the job's shell, so it runs them as typed.
  out = cli("submit --tenant a --pool h100 --gpus 1 --limit 2 --json -- sh -c 'echo a; echo b'",
            &code);
  ASSERT_EQ(code, 0) << out;
  EXPECT_EQ(json::parse(out)["command"], "sh -c 'echo a; echo b'") << out;
  out = cli("waste", &code);
  EXPECT_EQ(code, 0) << out;
  EXPECT_NE(out.find("OWNER USED"), std::string::npos) << out;
  bool row = false;  // a's reservation of 8 GPUs in h100
  for (size_t at = out.find("\na "); at != std::string::npos; at = out.find("\na ", at + 1))
    row = row || out.substr(at, out.find('\n', at + 1) - at).find("h100") != std::string::npos;
  EXPECT_TRUE(row) << out;
  out = cli("submit --help", &code);
  EXPECT_NE(out.find("--tier TEXT=spot"), std::string::npos) << out;  // help shows defaults
}

TEST_F(ServerTest, TenantsNeverSeeOrTouchEachOther) {
  ServerProcess s(db, config, kAdmin);
  ASSERT_TRUE(s.Start());
  std::string a = Token(s, "a"), b = Token(s, "b");
  auto job = s.Post("/v1/jobs", b, R"({"pool":"h100","gpus":4,"tier":"spot","limit_price":"2"})");
  ASSERT_EQ(job.status, 201) << job.body;
  int64_t id = json::parse(job.body)["id"];
  auto res = s.Post("/v1/reservations", b, R"({"pool":"h100","gpus":2,"duration":"1h"})");
  ASSERT_EQ(res.status, 201) << res.body;
  // It holds two GPUs of one node (docs/market.md): the binding says which.
  json binding = json::parse(res.body)["binding"];
  ASSERT_EQ(binding.size(), 1u) << res.body;
  EXPECT_EQ(binding[0]["gpus"].size(), 2u) << res.body;
  int64_t rid = json::parse(res.body)["id"];
  const std::string jp = "/v1/jobs/" + std::to_string(id);
  const std::string rp = "/v1/reservations/" + std::to_string(rid);
  // a: every read and write of b's things is "not found"; lists are empty.
  EXPECT_EQ(s.Get(jp, a).status, 404);
  EXPECT_EQ(s.Post(jp + "/cancel", a, "").status, 404);
  EXPECT_EQ(s.Post(jp + "/release", a, "").status, 404);
  EXPECT_EQ(s.Get(rp, a).status, 404);
  EXPECT_EQ(s.Post(rp + "/return", a, "").status, 404);
  EXPECT_EQ(json::parse(s.Get("/v1/jobs", a).body).size(), 0u);
  EXPECT_EQ(json::parse(s.Get("/v1/reservations", a).body).size(), 0u);
  EXPECT_EQ(json::parse(s.Get("/v1/ledger", a).body)["balance"], "0.000000");
  EXPECT_EQ(
      s.Post("/v1/jobs", a, R"({"pool":"h100","gpus":1,"limit_price":"2","tenant":"b"})").status,
      403);
  json events = json::parse(s.Get("/v1/events?since=0", a).body)["events"];
  for (const json& e : events) EXPECT_FALSE(e.contains("job")) << e.dump();
  // b sees its own; the admin sees all; tokens and tenants are admin-only.
  EXPECT_EQ(s.Get(jp, b).status, 200);
  EXPECT_EQ(json::parse(s.Get("/v1/jobs", kAdmin).body).size(), 1u);
  EXPECT_EQ(s.Post("/v1/tenants", a, R"({"name":"c"})").status, 403);
  EXPECT_EQ(s.Post("/v1/tokens", a, R"({"tenant":"a"})").status, 403);
  EXPECT_EQ(s.Get("/v1/jobs", "").status, 401);
  EXPECT_EQ(s.Get("/v1/jobs", "nope").status, 401);
  // b cancels its own job.
  EXPECT_EQ(s.Post(jp + "/cancel", b, "").status, 200);
  EXPECT_EQ(json::parse(s.Get(jp, b).body)["state"], "cancelled");
}

TEST_F(ServerTest, BadRequestsNameTheFieldAndChangeNothing) {
  ServerProcess s(db, config, kAdmin);
  ASSERT_TRUE(s.Start());
  std::string t = Token(s, "t");
  struct Case {
    const char* body;
    const char* field;
  } cases[] = {
      {R"({"pool":"h100","gpus":-1,"limit_price":"2"})", "gpus"},
      {R"({"pool":"h100","gpus":"8","limit_price":"2"})", "gpus"},
      {R"({"pool":"h100","gpus":1,"limit_price":"0.5"})", "limit_price"},
      {R"({"pool":"h100","gpus":1,"limit_price":2})", "limit_price"},
      {R"({"pool":"nope","gpus":1,"limit_price":"2"})", "pool"},
      {R"({"pool":"h100","gpus":1,"limit_price":"2","colour":"red"})", "colour"},
      {R"({"pool":"h100","gpus":1,"tier":"gold","limit_price":"2"})", "tier"},
      {R"({"pool":"h100","gpus":1,"limit_price":"2","notice":"soon"})", "notice"},
      {R"({"pool":"h100","gpus":99,"limit_price":"2"})", "gpus"},
      {R"({"pool":"h100","gpus":1,"limit_price":"2","dependencies":[{"job":4294967297}]})",
       "dependencies"},
      {R"({"pool":"h100","gpus":1,"limit_price":"2","dependencies":[{"job":0}]})", "dependencies"},
      // Shares of one GPU (docs/market.md, "GPU shares").
      {R"({"pool":"h100","gpus":0.0005,"limit_price":"2"})", "gpus"},
      {R"({"pool":"h100","gpus":0.2501,"limit_price":"2"})", "gpus"},
      {R"({"pool":"h100","gpus":1.5,"limit_price":"2"})", "gpus"},
      {R"({"pool":"h100","gpus":0.25,"tier":"reserved"})", "tier"},
      {R"({"pool":"h100","gpus":0.25,"tier":"auto","limit_price":"2"})", "tier"},
      {R"({"pool":"h100","gpus":2,"limit_price":"2","gpu_memory_mib":1024})", "gpu_memory_mib"},
      {R"({"pool":"h100","gpus":0.25,"limit_price":"2","gpu_memory_mib":-1})", "gpu_memory_mib"},
      {R"([1,2])", "body"},
      {R"({"pool":)", "body"},
  };
  for (const Case& c : cases) {
    auto r = s.Post("/v1/jobs", t, c.body);
    EXPECT_EQ(r.status, 400) << c.body << " -> " << r.body;
    json e = json::parse(r.body, nullptr, false);
    ASSERT_FALSE(e.is_discarded()) << r.body;
    EXPECT_EQ(e["error"]["field"], c.field) << c.body << " -> " << r.body;
    EXPECT_EQ(e["error"]["code"], "invalid_argument");
  }
  auto past = s.Post("/v1/reservations", t, R"({"pool":"h100","gpus":2,"start_us":1,"end_us":2})");
  EXPECT_EQ(past.status, 400) << past.body;
  auto huge = s.Post("/v1/reservations", t, R"({"pool":"h100","gpus":99,"duration":"1h"})");
  EXPECT_EQ(huge.status, 409) << huge.body;
  EXPECT_NE(huge.body.find("at most 16 fit"), std::string::npos) << huge.body;
  std::string big(2 << 20, 'x');
  EXPECT_EQ(s.Post("/v1/jobs", t, "{\"name\":\"" + big + "\"}").status, 400);
  EXPECT_EQ(json::parse(s.Get("/v1/jobs", kAdmin).body).size(), 0u);
  EXPECT_EQ(json::parse(s.Get("/v1/reservations", kAdmin).body).size(), 0u);
}

TEST_F(ServerTest, RestartRebuildsEverything) {
  json before_jobs, before_res, before_ledger;
  int64_t last_seq = 0;
  std::string t;
  {
    ServerProcess s(db, config, kAdmin);
    ASSERT_TRUE(s.Start());
    t = Token(s, "t");
    ASSERT_EQ(s.Post("/v1/reservations", t, R"({"pool":"h100","gpus":8,"duration":"10h"})").status,
              201);
    for (int i = 0; i < 3; ++i) {
      ASSERT_EQ(s.Post("/v1/jobs", t,
                       json{{"pool", "h100"},
                            {"gpus", 8},
                            {"tier", "spot"},
                            {"limit_price", std::to_string(2 + i)}}
                           .dump())
                    .status,
                201);
    }
    before_jobs = json::parse(s.Get("/v1/jobs", kAdmin).body);
    before_res = json::parse(s.Get("/v1/reservations", kAdmin).body);
    before_ledger = json::parse(s.Get("/v1/ledger", t).body);
    last_seq = json::parse(s.Get("/v1/events?since=0", kAdmin).body)["last_seq"];
    s.Kill(SIGKILL);
  }
  ServerProcess s(db, config, kAdmin);
  ASSERT_TRUE(s.Start());
  EXPECT_EQ(json::parse(s.Get("/v1/jobs", kAdmin).body), before_jobs);
  EXPECT_EQ(json::parse(s.Get("/v1/reservations", kAdmin).body), before_res);
  EXPECT_EQ(json::parse(s.Get("/v1/ledger", t).body)["charges"], before_ledger["charges"]);
  EXPECT_GE(json::parse(s.Get("/v1/events?since=0", kAdmin).body)["last_seq"].get<int64_t>(),
            last_seq);
  EXPECT_EQ(s.Get("/v1/jobs", t).status, 200);  // the tenant's token survived too
}

// Clients submit as fast as they can; the server is killed with SIGKILL after a seeded number of
// acknowledgements while requests are in flight; after a restart every acknowledged job is there
// exactly once and every record is whole.
TEST_F(ServerTest, CrashLosesNothingAcknowledged) {
  for (uint64_t seed : {1, 2, 3}) {
    std::filesystem::remove(db);
    std::filesystem::remove(db + "-wal");
    std::filesystem::remove(db + "-shm");
    Rng rng(seed);
    const int kill_after = static_cast<int>(rng.Range(100, 400));
    auto s = std::make_unique<ServerProcess>(db, config, kAdmin);
    ASSERT_TRUE(s->Start());
    std::string t = Token(*s, "t");
    std::mutex mu;
    std::condition_variable cv;
    std::set<std::string> acked;  // job names acknowledged with 201
    std::map<std::string, int64_t> acked_ids;
    std::atomic<bool> dead{false};
    std::vector<std::thread> clients;
    for (int c = 0; c < 4; ++c) {
      clients.emplace_back([&, c] {
        for (int i = 0; !dead; ++i) {
          std::string name =
              "s" + std::to_string(seed) + "-c" + std::to_string(c) + "-" + std::to_string(i);
          auto r = rsv::testing::Http(s->port(), "POST", "/v1/jobs", t,
                                      json{{"name", name},
                                           {"pool", "h100"},
                                           {"gpus", 1},
                                           {"tier", "spot"},
                                           {"limit_price", "2"}}
                                          .dump());
          if (r.status == 0) break;  // the server is gone
          if (r.status != 201) continue;
          std::lock_guard<std::mutex> lock(mu);
          acked.insert(name);
          acked_ids[name] = json::parse(r.body)["id"];
          cv.notify_all();
        }
      });
    }
    {
      std::unique_lock<std::mutex> lock(mu);
      cv.wait(lock, [&] { return static_cast<int>(acked.size()) >= kill_after; });
    }
    s->Kill(SIGKILL);
    dead = true;
    for (auto& th : clients) th.join();
    s = std::make_unique<ServerProcess>(db, config, kAdmin);
    ASSERT_TRUE(s->Start());
    json jobs = json::array();  // every job, page by page
    for (int64_t after = 0;;) {
      auto list = s->Get("/v1/jobs?state=all&limit=500&after=" + std::to_string(after), kAdmin);
      ASSERT_EQ(list.status, 200) << list.body;
      json page = json::parse(list.body);
      for (json& j : page) jobs.push_back(std::move(j));
      if (page.size() < 500) break;
      after = jobs.back()["id"];
    }
    std::map<std::string, int> seen;
    for (const json& j : jobs) {
      ASSERT_TRUE(j.contains("id") && j.contains("state") && j.contains("gpus")) << j.dump();
      seen[j["name"]]++;
    }
    for (const auto& [name, n] : seen) EXPECT_EQ(n, 1) << "duplicate " << name;
    for (const std::string& name : acked) {
      ASSERT_TRUE(seen.count(name)) << "seed " << seed << ": acknowledged job " << name << " lost";
    }
    EXPECT_GE(static_cast<int>(acked.size()), kill_after);
    s->Kill(SIGTERM);
  }
}

TEST_F(ServerTest, EventsLongPollReturnsWhenSomethingHappens) {
  ServerProcess s(db, config, kAdmin);
  ASSERT_TRUE(s.Start());
  std::string t = Token(s, "t");
  int64_t last = json::parse(s.Get("/v1/events?since=0", t).body)["last_seq"];
  rsv::testing::HttpResult polled;
  std::thread poller([&] {
    polled = rsv::testing::Http(s.port(), "GET",
                                "/v1/events?since=" + std::to_string(last) + "&wait=60", t);
  });
  ASSERT_EQ(
      s.Post("/v1/jobs", t, R"({"pool":"h100","gpus":2,"limit_price":"2","name":"x"})").status,
      201);
  poller.join();
  ASSERT_EQ(polled.status, 200) << polled.body;
  json events = json::parse(polled.body)["events"];
  ASSERT_FALSE(events.empty());
  EXPECT_EQ(events[0]["type"], "JobSubmitted");
  EXPECT_GT(events[0]["seq"].get<int64_t>(), last);
  EXPECT_EQ(s.Get("/v1/events?since=0&wait=99", t).status, 400);
}

TEST_F(ServerTest, MetricsPassPromtool) {
  if (std::system("command -v promtool >/dev/null 2>&1") != 0) GTEST_SKIP() << "promtool missing";
  ServerProcess s(db, config, kAdmin);
  ASSERT_TRUE(s.Start());
  std::string t = Token(s, "t");
  ASSERT_EQ(s.Post("/v1/jobs", t, R"({"pool":"h100","gpus":4,"limit_price":"2"})").status, 201);
  auto m = s.Get("/metrics", "");
  ASSERT_EQ(m.status, 200);
  EXPECT_NE(m.body.find("reservoir_gpus{pool=\"h100\",state=\"spot_used\"} 4"), std::string::npos)
      << m.body;
  EXPECT_NE(m.body.find("reservoir_api_request_duration_seconds_count{method=\"POST\",route=\"/v1/"
                        "jobs\",code=\"2xx\"} 1"),
            std::string::npos)
      << m.body;
  std::string file = dir + "/metrics.txt";
  std::ofstream(file) << m.body;
  EXPECT_EQ(std::system(("promtool check metrics < " + file).c_str()), 0) << m.body;
}

// Every request gets exactly one reply, however malformed; requests pipelined after an
// unsupported method are still served.
TEST_F(ServerTest, MalformedRequestsGetOneClearReplyEach) {
  ServerProcess s(db, config, kAdmin);
  ASSERT_TRUE(s.Start());
  auto status_of = [](const std::string& resp) {
    return resp.rfind("HTTP/1.1 ", 0) == 0 ? std::atoi(resp.c_str() + 9) : 0;
  };
  const std::string auth = "Authorization: Bearer " + std::string(kAdmin) + "\r\n";
  for (const char* m : {"PUT", "DELETE", "PATCH", "HEAD", "OPTIONS"}) {
    for (const char* path : {"/v1/jobs", "/v1/reservations", "/v1/nodes"}) {
      std::string resp = rsv::testing::RawExchange(
          s.port(), std::string(m) + " " + path + " HTTP/1.1\r\nHost: x\r\n" + auth +
                        "\r\nGET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
      EXPECT_EQ(status_of(resp), 405) << m << " " << path << ": " << resp;
      EXPECT_NE(resp.find("Allow: GET, POST"), std::string::npos) << resp;
      EXPECT_NE(resp.find("HTTP/1.1 200"), std::string::npos) << "pipelined request lost: " << resp;
    }
  }
  EXPECT_EQ(status_of(rsv::testing::RawExchange(
                s.port(), "GET /v1/jobs?" + std::string(10'000, 'a') + " HTTP/1.1\r\n\r\n")),
            414);
  EXPECT_EQ(
      status_of(rsv::testing::RawExchange(
          s.port(), "GET /healthz HTTP/1.1\r\nX-Big: " + std::string(20'000, 'a') + "\r\n\r\n")),
      431);
  // Past the parser's own header limit (64 KiB) it is still the headers, not the request line.
  EXPECT_EQ(
      status_of(rsv::testing::RawExchange(
          s.port(), "GET /healthz HTTP/1.1\r\nX-Big: " + std::string(100'000, 'a') + "\r\n\r\n")),
      431);
  std::string many = "GET /healthz HTTP/1.1\r\n";
  for (int i = 0; i < 2000; ++i) many += "X-" + std::to_string(i) + ": y\r\n";
  EXPECT_EQ(status_of(rsv::testing::RawExchange(s.port(), many + "\r\n")), 431);
  EXPECT_EQ(status_of(rsv::testing::RawExchange(s.port(), "GARBAGE\r\n\r\n")), 400);
  EXPECT_EQ(status_of(rsv::testing::RawExchange(s.port(), std::string("\x01\x02\r\n\r\n"))), 400);
  // Node names cannot walk paths.
  auto dots = s.Post("/v1/nodes/../register", kAdmin, R"({"pool":"h100","gpus":8})");
  EXPECT_EQ(dots.status, 400) << dots.body;
  EXPECT_EQ(s.Get("/healthz", "").status, 200);
}

TEST_F(ServerTest, UnknownPathsDoNotGrowTheMetrics) {
  ServerProcess s(db, config, kAdmin);
  ASSERT_TRUE(s.Start());
  for (int i = 0; i < 50; ++i) s.Get("/warm" + std::to_string(i), "");
  const size_t before = s.Get("/metrics", "").body.size();
  for (int i = 0; i < 3000; ++i) s.Get("/nope/" + std::to_string(i), "");
  const std::string after = s.Get("/metrics", "").body;
  EXPECT_LT(after.size(), before + 2048)
      << "metrics grew from " << before << " to " << after.size() << " bytes";
  EXPECT_NE(after.find("route=\"unmatched\""), std::string::npos);
  EXPECT_EQ(after.find("/nope/"), std::string::npos);
}

// Idle connections beyond the cap cannot lock others out: the longest-idle one makes room.
TEST_F(ServerTest, IdleConnectionsCannotLockOthersOut) {
  ServerProcess s(db, config, kAdmin, "127.0.0.1:0", {"--max-connections", "32"});
  ASSERT_TRUE(s.Start());
  std::vector<std::unique_ptr<rsv::testing::IdleConnection>> idle;
  for (int i = 0; i < 300; ++i) {
    idle.push_back(std::make_unique<rsv::testing::IdleConnection>(s.port()));
    ASSERT_TRUE(idle.back()->connected);
  }
  for (int i = 0; i < 5; ++i) EXPECT_EQ(s.Get("/healthz", "").status, 200) << i;
  EXPECT_EQ(s.Get("/v1/jobs", kAdmin).status, 200);
}

TEST_F(ServerTest, TokensAreRevokedAndTenantsDeleted) {
  ServerProcess s(db, config, kAdmin);
  ASSERT_TRUE(s.Start());
  std::string a = Token(s, "a");
  ASSERT_EQ(s.Get("/v1/jobs", a).status, 200);
  // Listed by id (never the token), revoked by id or by the token itself.
  json tokens = json::parse(s.Get("/v1/tokens", kAdmin).body);
  std::string a_id;
  for (const json& t : tokens) {
    if (t.value("tenant", "") == "a") a_id = t["id"];
    EXPECT_EQ(t.dump().find(a), std::string::npos);
  }
  ASSERT_EQ(a_id.size(), 12u);
  EXPECT_EQ(s.Get("/v1/tokens", a).status, 403);
  auto revoked = s.Post("/v1/tokens/revoke", kAdmin, json{{"id", a_id}}.dump());
  EXPECT_EQ(revoked.status, 200) << revoked.body;
  EXPECT_EQ(s.Get("/v1/jobs", a).status, 401);
  EXPECT_EQ(s.Post("/v1/tokens/revoke", kAdmin, json{{"id", a_id}}.dump()).status, 404);
  EXPECT_EQ(s.Post("/v1/tokens/revoke", kAdmin, json{{"token", kAdmin}}.dump()).status, 409)
      << "the last admin token stays";
  EXPECT_EQ(s.Post("/v1/tokens/revoke", kAdmin, R"({"id":"zz"})").status, 400);
  // A tenant with work is not deleted; once its work is done it is, with its tokens.
  auto a2 = s.Post("/v1/tokens", kAdmin, R"({"tenant":"a"})");
  std::string a_token = json::parse(a2.body)["token"];
  auto job =
      s.Post("/v1/jobs", a_token, R"({"pool":"h100","gpus":1,"limit_price":"2","command":"true"})");
  ASSERT_EQ(job.status, 201) << job.body;
  auto refused = s.Http("DELETE", "/v1/tenants/a", kAdmin);
  EXPECT_EQ(refused.status, 409) << refused.body;
  EXPECT_NE(refused.body.find("cancel its jobs first"), std::string::npos) << refused.body;
  EXPECT_EQ(s.Post("/v1/jobs/" + std::to_string(json::parse(job.body)["id"].get<int>()) + "/cancel",
                   a_token, "{}")
                .status,
            200);
  EXPECT_EQ(s.Http("DELETE", "/v1/tenants/a", a_token).status, 403);
  auto deleted = s.Http("DELETE", "/v1/tenants/a", kAdmin);
  EXPECT_EQ(deleted.status, 200) << deleted.body;
  EXPECT_EQ(s.Get("/v1/jobs", a_token).status, 401);
  EXPECT_EQ(s.Get("/v1/tenants", kAdmin).body, "[]");
  EXPECT_EQ(s.Http("DELETE", "/v1/tenants/a", kAdmin).status, 400);
  // The name is free again, and all of this survives a restart.
  EXPECT_EQ(s.Post("/v1/tenants", kAdmin, R"({"name":"a"})").status, 201);
  s.Kill(SIGKILL);
  ASSERT_TRUE(s.Start());
  EXPECT_EQ(s.Get("/v1/jobs", a_token).status, 401);
  EXPECT_EQ(json::parse(s.Get("/v1/tenants", kAdmin).body).size(), 1u);
}

TEST_F(ServerTest, ReservationsStayWithinTheConfiguredLimits) {
  std::ofstream(config) << R"({"pools": [{"name": "h100", "reservation_base_price": "2"}],
      "nodes": [{"name": "n", "pool": "h100", "gpus": 8, "count": 2}],
      "reservation_limits": {"default": {"max_duration": "30d"},
                             "small": {"max_gpus": 4, "max_total": "100"}}})";
  ServerProcess s(db, config, kAdmin);
  ASSERT_TRUE(s.Start());
  std::string big = Token(s, "big"), small = Token(s, "small");
  auto forever =
      s.Post("/v1/reservations", big, R"({"pool":"h100","gpus":8,"duration":"100000000h"})");
  EXPECT_EQ(forever.status, 400) << forever.body;
  EXPECT_NE(forever.body.find("longer than a tenant's limit of"), std::string::npos);
  EXPECT_EQ(s.Post("/v1/reservations", big, R"({"pool":"h100","gpus":8,"duration":"29d"})").status,
            201);
  auto wide = s.Post("/v1/reservations", small, R"({"pool":"h100","gpus":8,"duration":"1h"})");
  EXPECT_EQ(wide.status, 400) << wide.body;
  EXPECT_NE(wide.body.find("small's limit of 4 GPUs"), std::string::npos) << wide.body;
  auto dear = s.Post("/v1/reservations", small, R"({"pool":"h100","gpus":4,"duration":"100h"})");
  EXPECT_EQ(dear.status, 400) << dear.body;
  EXPECT_NE(dear.body.find("would cost"), std::string::npos) << dear.body;
  EXPECT_EQ(s.Post("/v1/reservations", small, R"({"pool":"h100","gpus":4,"duration":"1h"})").status,
            201);
  EXPECT_EQ(json::parse(s.Get("/v1/reservations", kAdmin).body).size(), 2u);
  std::ofstream(config) << R"({"reservation_limits": {"x": {"max_gpu": 1}}})";
  ServerProcess bad(dir + "/other.db", config, kAdmin);
  EXPECT_FALSE(bad.Start()) << "an unknown limit is refused at start";
}

// Money accrues with time: a restart after kill -9 rebuilds the very ledger the live server had
// (the same entries, numbers and amounts), not one accrued over different intervals.
TEST_F(ServerTest, ReplayRebuildsTheLiveLedgerExactly) {
  std::ofstream(config) << R"({"tick": "50ms", "pools": [{"name": "h100", "reserve_price": "1.37",
      "reservation_base_price": "2"}],
      "nodes": [{"name": "n", "pool": "h100", "gpus": 8, "count": 2}]})";
  ServerProcess s(db, config, kAdmin);
  ASSERT_TRUE(s.Start());
  std::string owner = Token(s, "owner"), spot = Token(s, "spot");
  ASSERT_EQ(s.Post("/v1/reservations", owner, R"({"pool":"h100","gpus":8,"duration":"1h"})").status,
            201);
  auto job = s.Post("/v1/jobs", spot, R"({"pool":"h100","gpus":16,"limit_price":"3.1"})");
  ASSERT_EQ(job.status, 201) << job.body;
  // Let charges and lending credits accrue over many ticks.
  auto entries = [&](const std::string& who) {
    return json::parse(s.Get("/v1/ledger", who).body)["entries"].size();
  };
  while (entries(spot) < 20) {
  }
  ASSERT_EQ(s.Post("/v1/jobs/" + std::to_string(json::parse(job.body)["id"].get<int>()) + "/cancel",
                   spot, "{}")
                .status,
            200);
  std::map<std::string, std::string> live;
  for (const auto& [name, token] : {std::pair{"owner", owner}, {"spot", spot}, {"admin", kAdmin}})
    live[name] = s.Get("/v1/ledger", token).body;
  s.Kill(SIGKILL);
  ASSERT_TRUE(s.Start());
  for (const auto& [name, token] : {std::pair{"owner", owner}, {"spot", spot}, {"admin", kAdmin}})
    EXPECT_EQ(s.Get("/v1/ledger", token).body, live[name]) << name;
}

// A node's token writes output only for attempts that ran on that node.
TEST_F(ServerTest, ANodeCannotWriteAnotherJobsOutput) {
  ServerProcess s(db, config, kAdmin);
  ASSERT_TRUE(s.Start());
  std::string t = Token(s, "t");
  auto job = s.Post("/v1/jobs", t, R"({"pool":"h100","gpus":8,"limit_price":"2"})");
  ASSERT_EQ(job.status, 201) << job.body;
  const int id = json::parse(job.body)["id"];
  auto minted = s.Post("/v1/tokens", kAdmin, R"({"node":"intruder"})");
  const std::string node = json::parse(minted.body)["token"];
  auto registered = s.Post("/v1/nodes/intruder/register", node, R"({"pool":"h100","gpus":8})");
  ASSERT_TRUE(registered.status == 200 || registered.status == 201) << registered.body;
  json report = {{"known", ""},
                 {"jobs", json::array()},
                 {"logs", {{{"job", id}, {"attempt", 1}, {"offset", 0}, {"data", "forged\n"}}}}};
  auto sync = s.Post("/v1/nodes/intruder/sync", node, report.dump());
  ASSERT_EQ(sync.status, 200) << sync.body;
  // Acknowledged (so an agent would not resend it forever), and dropped.
  EXPECT_EQ(json::parse(sync.body)["logs"][0]["size"], 7);
  auto logs = s.Get("/v1/jobs/" + std::to_string(id) + "/logs", t);
  EXPECT_EQ(logs.body.find("forged"), std::string::npos) << logs.body;
  EXPECT_EQ(s.Get("/v1/jobs", node).status, 403);
}

}  // namespace
}  // namespace rsv
