// Scenario files through the live decision code: a malformed line is an error, never a crash.
#include <cstdint>
#include <string>

#include "scheduler/scenario.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size > 4096) return 0;  // long scenarios only cost time
  (void)rsv::RunScenario(std::string(reinterpret_cast<const char*>(data), size), "fuzz");
  return 0;
}
