// Command-log replay (a server's restart) on arbitrary logs: a log the code cannot apply is an
// error naming the command, never a crash; a log it can apply leaves the invariants holding, and
// the state serves reads and the next cycle. Input: one command per line, "KIND SECONDS BODY".
#include <cstdint>
#include <cstdlib>
#include <memory>
#include <string>
#include <vector>

#include "common/clock.h"
#include "server/control.h"
#include "store/store.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size > 4096) return 0;  // long logs only cost time
  std::string in(reinterpret_cast<const char*>(data), size);
  std::vector<rsv::Command> log;
  int64_t at_s = 1'000;
  for (size_t start = 0; start < in.size();) {
    size_t nl = in.find('\n', start);
    std::string line = in.substr(start, nl == std::string::npos ? std::string::npos : nl - start);
    start = nl == std::string::npos ? in.size() : nl + 1;
    size_t sp1 = line.find(' ');
    size_t sp2 = sp1 == std::string::npos ? std::string::npos : line.find(' ', sp1 + 1);
    if (sp2 == std::string::npos) continue;
    // Time only moves forward in a log; the input says by how much (at most a day).
    at_s += std::strtoll(line.substr(sp1 + 1, sp2 - sp1 - 1).c_str(), nullptr, 10) % 86'400;
    rsv::Command c;
    c.kind = line.substr(0, sp1);
    c.at = rsv::Timestamp::FromMicros(at_s * 1'000'000);
    c.body = line.substr(sp2 + 1);
    log.push_back(std::move(c));
  }
  static const auto config = rsv::server::ParseServerConfig(
      R"({"pools": [{"name": "gpu", "reserve_price": "1", "reservation_base_price": "2"}],
          "nodes": [{"name": "n", "pool": "gpu", "gpus": 8, "count": 2, "topology": "z/r"}]})");
  if (!config.ok()) std::abort();
  auto store = rsv::OpenSqliteStore(":memory:");
  if (!store.ok() || !(*store)->Append(log).ok()) std::abort();
  rsv::ManualClock clock{rsv::Timestamp::FromMicros((at_s + 1) * 1'000'000)};
  rsv::server::ControlPlane control(*config, std::move(*store), &clock);
  if (!control.Start().ok()) return 0;  // refused, naming the command: fine
  if (!control.CheckInvariants().empty()) std::abort();
  rsv::server::Caller admin;
  admin.admin = true;
  for (const char* what : {"jobs", "reservations", "nodes", "ledger", "tenants", "tokens", "pools",
                           "market", "market/history"}) {
    (void)control.Read(what, admin, {});
  }
  control.Tick();
  if (!control.CheckInvariants().empty()) std::abort();
  return 0;
}
