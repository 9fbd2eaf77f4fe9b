// The API's route table: every route, method, caller and body gets exactly one reply, and the
// table answers what docs/api/openapi.yaml lists.
#include "server/api.h"

#include <gtest/gtest.h>

#include <atomic>
#include <fstream>
#include <future>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <set>
#include <sstream>

#include "common/clock.h"
#include "common/sha256.h"
#include "store/store.h"

namespace rsv::server {
namespace {

using json = nlohmann::json;

// Every path template filled in, every method (those it answers and others), every kind of
// caller, malformed and valid bodies, with and without a long-poll wait, and targets that name
// nothing: each request is answered once, whether at once, after its write is durable or when
// its long-poll ends (a tick past the deadlines, then the stop answers what still waits).
TEST(ApiRoutes, EveryRequestGetsExactlyOneReply) {
  auto cfg = ParseServerConfig(R"({"pools": [{"name": "gpu", "reserve_price": "1"}],
                                   "nodes": [{"name": "n1", "pool": "gpu", "gpus": 8}]})");
  auto store = OpenSqliteStore(":memory:");
  ASSERT_TRUE(cfg.ok() && store.ok());
  ManualClock clock(Timestamp::FromMicros(100'000'000));
  struct Sent {
    std::string what;
    std::atomic<int> replies{0};
    std::atomic<int> status{0};
  };
  std::vector<std::unique_ptr<Sent>> sent;  // outlives the control plane: late replies count
  auto owned = std::make_unique<ControlPlane>(*cfg, std::move(*store), &clock);
  ControlPlane& control = *owned;
  ASSERT_TRUE(control.Start().ok());
  auto write = [&](const std::string& kind, const json& body) {
    std::promise<Status> done;
    control.Execute(kind, body.dump(), [&](Result<std::string> r) { done.set_value(r.status()); });
    return done.get_future().get();
  };
  ASSERT_TRUE(write("tenant", {{"name", "t"}}).ok());
  ASSERT_TRUE(write("token", {{"admin", true}, {"hash", Sha256Hex("admin")}}).ok());
  ASSERT_TRUE(write("token", {{"tenant", "t"}, {"hash", Sha256Hex("tenant")}}).ok());
  ASSERT_TRUE(write("token", {{"node", "n1"}, {"hash", Sha256Hex("node")}}).ok());
  ASSERT_TRUE(
      write("submit", {{"tenant", "t"}, {"pool", "gpu"}, {"gpus", 1}, {"limit_micros", 2'000'000}})
          .ok());

  SteadyTicker ticker;
  Api api(&control, &clock, &ticker);
  // A body each write accepts, so that its command is applied and answered once durable.
  const std::map<std::string, std::string> valid = {
      {"/v1/tenants", R"({"name":"u"})"},
      {"/v1/tokens", R"({"tenant":"t"})"},
      {"/v1/tokens/revoke", R"({"id":"000000000000"})"},
      {"/v1/nodes", R"({"name":"n9","pool":"gpu","gpus":8})"},
      {"/v1/nodes/n1/register", R"({"pool":"gpu","gpus":8})"},
      {"/v1/reservations", R"({"tenant":"t","pool":"gpu","gpus":1,"duration":"1h"})"},
      {"/v1/jobs", R"({"tenant":"t","pool":"gpu","gpus":1,"limit_price":"2"})"},
      {"/v1/jobs/1/exit", R"({"success":true})"}};
  auto send = [&](const std::string& method, const std::string& target, const std::string& token,
                  const std::string& body) {
    HttpRequest req;
    req.method = method;
    req.target = target;
    if (!token.empty()) req.authorization = "Bearer " + token;
    req.body = body;
    sent.push_back(std::make_unique<Sent>());
    Sent* s = sent.back().get();
    s->what = method + " " + target + " as '" + token + "' with '" + body + "'";
    api.Handle(req, [s](HttpResponse r) {
      s->status = r.status;
      s->replies.fetch_add(1);
    });
  };
  // Targets that name nothing: each gets its one 404.
  for (const char* target : {"*", "x", "//", "/healthz/", "//metrics", "/v1//jobs", ""}) {
    send("GET", target, "admin", "");
  }
  std::set<std::string> templates;
  for (const auto& [path, method] : ApiRoutes()) templates.insert(path);
  for (std::string path : templates) {
    for (auto [from, to] : {std::pair{"{id}", "1"}, std::pair{"{name}", "n1"}}) {
      for (size_t at; (at = path.find(from)) != std::string::npos;) {
        path.replace(at, std::string(from).size(), to);
      }
    }
    std::vector<std::string> bodies = {"", "{", "{}"};
    if (valid.count(path)) bodies.push_back(valid.at(path));
    for (const char* method : {"GET", "POST", "DELETE", "PUT"}) {
      for (const char* token : {"", "admin", "tenant", "node"}) {
        for (const std::string& body : bodies) {
          // wait=1: the long-polls (events, logs, an agent's sync) park until the tick below.
          for (const char* query : {"?wait=0", "?wait=1"}) send(method, path + query, token, body);
        }
      }
    }
  }
  clock.Advance(Duration::Seconds(2));
  control.Tick();     // the long-polls' deadlines have passed
  control.Quiesce();  // answers every write queued and anything still parked
  ASSERT_GT(sent.size(), 3000u);
  for (const auto& s : sent) EXPECT_EQ(s->replies.load(), 1) << s->what;
  owned.reset();  // nothing more arrives after the stop
  std::map<std::string, int> status;
  for (const auto& s : sent) {
    EXPECT_EQ(s->replies.load(), 1) << s->what;
    status[s->what] = s->status;
  }
  // Spot checks that the writes and the scoping ran, not only that they replied.
  const std::string job = "POST /v1/jobs?wait=0 as 'tenant' with '" + valid.at("/v1/jobs") + "'";
  EXPECT_EQ(status[job], 201);
  EXPECT_EQ(status["POST /v1/tenants?wait=0 as 'tenant' with '{\"name\":\"u\"}'"], 403);
  EXPECT_EQ(status["GET /v1/jobs?wait=0 as 'node' with ''"], 403);
  EXPECT_EQ(status["GET /v1/jobs?wait=0 as '' with ''"], 401);
  EXPECT_EQ(status["GET * as 'admin' with ''"], 404);
  EXPECT_EQ(status["PUT /v1/jobs?wait=0 as 'admin' with ''"], 405);
}

// The table and the OpenAPI description list the same routes: paths (parameter names aside) and
// methods, both ways.
TEST(ApiRoutes, MatchTheOpenApiDescription) {
  std::ifstream in("docs/api/openapi.yaml");  // tests run in the source directory
  ASSERT_TRUE(in.good());
  auto normal = [](std::string path) {  // "{anything}" -> "{}"
    for (size_t open; (open = path.find("{")) != std::string::npos && path[open + 1] != '}';) {
      path.erase(open + 1, path.find('}', open) - open - 1);
    }
    return path;
  };
  std::set<std::string> documented, served;
  std::string path;
  for (std::string line; std::getline(in, line);) {
    if (line.rfind("  /", 0) == 0 && line.back() == ':') {
      path = normal(line.substr(2, line.size() - 3));
    } else if (!path.empty() && line.rfind("    ", 0) == 0 && line[4] != ' ') {
      const std::string method = line.substr(4, line.find(':') - 4);
      if (method == "get" || method == "post" || method == "delete" || method == "put") {
        std::string upper = method;
        for (char& ch : upper) ch = static_cast<char>(std::toupper(ch));
        documented.insert(upper + " " + path);
      }
    } else if (line.rfind("  ", 0) != 0) {
      path.clear();  // past the paths section
    }
  }
  for (const auto& [p, method] : ApiRoutes()) served.insert(method + " " + normal(p));
  EXPECT_EQ(served, documented);
}

}  // namespace
}  // namespace rsv::server
