// cli/slurm: reads the #SBATCH directives of a Slurm batch script so Slurm users can submit
// their scripts unchanged. Supported: --gpus/-G, --gres=gpu[:type]:N, --time/-t (a wall-clock
// limit), --job-name/-J, --partition/-p (the pool), --mem (memory_mib), --cpus-per-task/-c
// (cpu_millis), --dependency=afterok|afterany:ID[:ID], --requeue. Anything else is reported, not
// ignored. The script itself runs verbatim with the interpreter of its #! line (/bin/sh without).
#pragma once

#include <string>
#include <vector>

#include "common/status.h"

namespace rsv::cli {

struct SlurmJob {
  int gpus = 0;  // 0: not given
  std::string name;
  std::string time;          // as written
  int64_t time_limit_s = 0;  // --time in seconds; 0: none
  std::string partition;
  int64_t memory_mib = 0;
  int64_t cpu_millis = 0;
  std::string interpreter = "/bin/sh";                        // from the #! line
  std::vector<std::pair<std::string, int64_t>> dependencies;  // (afterok|afterany, job id)
  bool requeue = false;
  std::vector<std::string> unsupported;  // directives as written, with their line
};

Result<SlurmJob> ParseSlurmScript(const std::string& text);

// Slurm's time formats: M, M:S, H:M:S, D-H, D-H:M, D-H:M:S, in seconds (0: "UNLIMITED"), or
// an error.
Result<int64_t> ParseSlurmTime(const std::string& s);
// Slurm's --mem: a number with an optional K, M (default), G or T suffix, in MiB.
Result<int64_t> ParseSlurmMemory(const std::string& s);

}  // namespace rsv::cli
