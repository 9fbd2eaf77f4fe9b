// Trace files as the simulator reads them (the first byte picks the format: Philly, openb or
// the plain CSV): a bad row is an error naming it, never a crash.
#include <unistd.h>

#include <cstdint>
#include <fstream>
#include <string>

#include "sim/trace.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 1) return 0;
  // In memory-backed storage where there is one: the harness measures the readers, not the disk.
  static const std::string path =
      std::string(::access("/dev/shm", W_OK) == 0 ? "/dev/shm" : "/tmp") + "/rsv_fuzz_trace_" +
      std::to_string(::getpid()) + ".csv";
  {
    std::ofstream out(path, std::ios::binary | std::ios::trunc);
    out.write(reinterpret_cast<const char*>(data) + 1, static_cast<std::streamsize>(size - 1));
  }
  static const rsv::sim::TraceFormat formats[] = {
      rsv::sim::TraceFormat::kPhilly, rsv::sim::TraceFormat::kOpenb, rsv::sim::TraceFormat::kCsv};
  rsv::sim::ReadOptions options;
  options.skip_bad_rows = data[0] & 4;
  (void)rsv::sim::ReadTrace(path, formats[data[0] % 3], options);
  (void)rsv::sim::ReadOpenbNodes(path);
  (void)rsv::sim::ReadClusterFile(path);
  (void)rsv::sim::ReadTenantCounts(path);
  return 0;
}
