// The server's JSON config: any text gives a config or an error naming a field, never a crash.
#include <cstdint>
#include <cstdlib>
#include <string>

#include "server/control.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  auto cfg = rsv::server::ParseServerConfig(std::string(reinterpret_cast<const char*>(data), size));
  if (!cfg.ok() && cfg.status().field().empty()) std::abort();  // errors name the field
  return 0;
}
