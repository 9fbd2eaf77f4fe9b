// Slurm batch scripts as `reservoir submit` reads them: never a crash, and what parses is sane.
#include <cstdint>
#include <cstdlib>
#include <string>

#include "cli/slurm.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string text(reinterpret_cast<const char*>(data), size);
  auto job = rsv::cli::ParseSlurmScript(text);
  if (job.ok() && (job->gpus < 0 || job->time_limit_s < 0 || job->memory_mib < 0)) std::abort();
  (void)rsv::cli::ParseSlurmTime(text);
  (void)rsv::cli::ParseSlurmMemory(text);
  return 0;
}
