// API requests through the real handler (Api -> ControlPlane -> Scheduler -> SQLite command log):
// every request gets exactly one reply, a 4xx for bad input, and the invariants hold. Input:
// "METHOD\nTARGET\nWHO\nBODY", WHO being admin, tenant, node or anything else (no token).
#include <unistd.h>

#include <cstdint>
#include <cstdlib>
#include <future>
#include <memory>
#include <string>

#include "common/clock.h"
#include "common/sha256.h"
#include "server/api.h"
#include "server/control.h"
#include "store/store.h"

namespace {

struct World {
  rsv::ManualClock clock{rsv::Timestamp::FromMicros(1'000'000'000)};
  std::unique_ptr<rsv::server::ControlPlane> control;
  std::unique_ptr<rsv::server::Api> api;
  // In memory-backed storage where there is one: the harness measures the handler, not fsync.
  std::string db = std::string(::access("/dev/shm", W_OK) == 0 ? "/dev/shm" : "/tmp") +
                   "/rsv_fuzz_api_" + std::to_string(::getpid()) + ".db";

  World() {
    std::remove(db.c_str());
    auto cfg = rsv::server::ParseServerConfig(
        R"({"pools": [{"name": "h100", "reserve_price": "1", "reservation_base_price": "2"}],
            "nodes": [{"name": "n", "pool": "h100", "gpus": 8, "count": 2, "topology": "z/r"}]})");
    auto store = rsv::OpenSqliteStore(db);
    if (!cfg.ok() || !store.ok()) std::abort();
    control = std::make_unique<rsv::server::ControlPlane>(*cfg, std::move(*store), &clock);
    if (!control->Start().ok()) std::abort();
    api = std::make_unique<rsv::server::Api>(control.get(), &clock, nullptr);
  }
  ~World() { std::remove(db.c_str()); }

  int Call(const std::string& method, const std::string& target, const std::string& who,
           const std::string& body) {
    rsv::server::HttpRequest req{method, target, "", body};
    if (who == "admin") req.authorization = "Bearer admin";
    if (who == "tenant") req.authorization = "Bearer tenant";
    if (who == "node") req.authorization = "Bearer node";
    std::promise<int> replied;
    int replies = 0;
    api->Handle(req, [&](rsv::server::HttpResponse r) {
      if (++replies == 1) replied.set_value(r.status);
    });
    int status = replied.get_future().get();
    if (replies != 1) std::abort();  // exactly one reply
    return status;
  }
};

World& TheWorld() {
  static World* w = [] {
    auto* w = new World();
    // Tokens are hashes in the command log: these are made the way the server makes them.
    auto token = [&](const std::string& body) {
      std::promise<void> done;
      w->control->Execute("token", body, [&](auto) { done.set_value(); });
      done.get_future().get();
    };
    token(R"({"admin": true, "hash": ")" + rsv::Sha256Hex("admin") + "\"}");
    w->Call("POST", "/v1/tenants", "admin", R"({"name":"t"})");
    token(R"({"tenant": "t", "hash": ")" + rsv::Sha256Hex("tenant") + "\"}");
    token(R"({"node": "n-1", "hash": ")" + rsv::Sha256Hex("node") + "\"}");
    return w;
  }();
  return *w;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string in(reinterpret_cast<const char*>(data), size);
  std::string parts[3];
  for (std::string& p : parts) {
    size_t nl = in.find('\n');
    if (nl == std::string::npos) return 0;
    p = in.substr(0, nl);
    in = in.substr(nl + 1);
  }
  if (parts[1].empty() || parts[1][0] != '/') return 0;
  // Long-polls would wait for the (manual) clock: keep them short.
  if (parts[1].find("wait=") != std::string::npos) return 0;
  World& w = TheWorld();
  int status = w.Call(parts[0], parts[1], parts[2], in);
  if (status < 200 || status >= 600 || status == 500) std::abort();  // 500: a bug
  w.clock.Advance(rsv::Duration::Seconds(1));
  w.control->Tick();
  return 0;
}
