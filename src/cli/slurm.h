// cli/slurm: reads the #SBATCH directives of a Slurm batch script so Slurm users can submit
// their scripts unchanged. Supported: --gpus/-G, --gres=gpu[:type]:N, --time/-t, --job-name/-J,
// --dependency=afterok|afterany:ID[:ID], --requeue. Anything else is reported, not ignored.
#pragma once

#include <string>
#include <vector>

#include "common/status.h"

namespace rsv::cli {

struct SlurmJob {
  int gpus = 0;  // 0: not given
  std::string name;
  std::string time;  // as written; Reservoir does not enforce run-time limits
  std::vector<std::pair<std::string, int64_t>> dependencies;  // (afterok|afterany, job id)
  bool requeue = false;
  std::vector<std::string> unsupported;  // directives as written, with their line
};

Result<SlurmJob> ParseSlurmScript(const std::string& text);

}  // namespace rsv::cli
