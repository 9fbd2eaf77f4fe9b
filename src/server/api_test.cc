// The API's route table: every route, method, caller and body gets exactly one reply, and the
// table answers what docs/api/openapi.yaml lists.
#include "server/api.h"

#include <gtest/gtest.h>

#include <atomic>
#include <fstream>
#include <future>
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
// caller and body: each request is answered once, whether at once, after its write is durable
// or when its long-poll ends (a tick, then the stop answers what still waits).
TEST(ApiRoutes, EveryRequestGetsExactlyOneReply) {
  auto cfg = ParseServerConfig(R"({"pools": [{"name": "gpu", "reserve_price": "1"}],
                                   "nodes": [{"name": "n1", "pool": "gpu", "gpus": 8}]})");
  auto store = OpenSqliteStore(":memory:");
  ASSERT_TRUE(cfg.ok() && store.ok());
  ManualClock clock(Timestamp::FromMicros(100'000'000));
  ControlPlane control(*cfg, std::move(*store), &clock);
  ASSERT_TRUE(control.Start().ok());
  auto write = [&](const std::string& kind, const json& body) {
    std::promise<Status> done;
    control.Execute(kind, body.dump(), [&](Result<Reply> r) { done.set_value(r.status()); });
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
  struct Sent {
    std::string what;
    std::atomic<int> replies{0};
  };
  std::vector<std::unique_ptr<Sent>> sent;
  std::set<std::string> templates;
  for (const auto& [path, method] : ApiRoutes()) templates.insert(path);
  for (std::string path : templates) {
    for (auto [from, to] : {std::pair{"{id}", "1"}, std::pair{"{name}", "n1"}}) {
      for (size_t at; (at = path.find(from)) != std::string::npos;) {
        path.replace(at, std::string(from).size(), to);
      }
    }
    for (const char* method : {"GET", "POST", "DELETE", "PUT"}) {
      for (const char* token : {"", "admin", "tenant", "node"}) {
        for (const char* body : {"", "{", "{}"}) {
          HttpRequest req;
          req.method = method;
          req.target = path + "?wait=0";
          if (*token) req.authorization = std::string("Bearer ") + token;
          req.body = body;
          sent.push_back(std::make_unique<Sent>());
          Sent* s = sent.back().get();
          s->what = std::string(method) + " " + path + " as '" + token + "' with '" + body + "'";
          api.Handle(req, [s](HttpResponse) { s->replies.fetch_add(1); });
        }
      }
    }
  }
  clock.Advance(Duration::Seconds(1));
  control.Tick();
  control.Quiesce();  // answers every write queued and every long-poll parked
  ASSERT_GT(sent.size(), 1000u);
  for (const auto& s : sent) EXPECT_EQ(s->replies.load(), 1) << s->what;
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
