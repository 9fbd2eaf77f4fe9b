#include "cli/slurm.h"

#include <sstream>

namespace rsv::cli {
namespace {

bool ParsePositive(const std::string& s, int64_t* out) {
  if (s.empty() || s.size() > 9 || s.find_first_not_of("0123456789") != std::string::npos) {
    return false;
  }
  *out = std::stoll(s);
  return *out > 0;
}

}  // namespace

Result<SlurmJob> ParseSlurmScript(const std::string& text) {
  SlurmJob job;
  std::istringstream in(text);
  std::string line;
  int number = 0;
  while (std::getline(in, line)) {
    ++number;
    if (line.rfind("#SBATCH", 0) != 0) continue;
    std::istringstream words(line.substr(7));
    std::vector<std::string> toks;
    std::string w;
    while (words >> w) {
      if (w[0] == '#') break;
      toks.push_back(w);
    }
    for (size_t i = 0; i < toks.size(); ++i) {
      std::string opt = toks[i], val;
      size_t eq = opt.find('=');
      if (eq != std::string::npos) {
        val = opt.substr(eq + 1);
        opt = opt.substr(0, eq);
      } else if ((opt == "-G" || opt == "-J" || opt == "-t" || opt == "--gpus" ||
                  opt == "--job-name" || opt == "--time" || opt == "--gres" ||
                  opt == "--dependency" || opt == "-d") &&
                 i + 1 < toks.size()) {
        val = toks[++i];
      }
      const std::string where = "line " + std::to_string(number) + ": " + opt;
      int64_t n = 0;
      if (opt == "--gpus" || opt == "-G") {
        std::string count =
            val.substr(val.rfind(':') == std::string::npos ? 0 : val.rfind(':') + 1);
        if (!ParsePositive(count, &n))
          return InvalidArgument(where, "'" + val + "' is not a GPU count");
        job.gpus = static_cast<int>(n);
      } else if (opt == "--gres") {
        if (val.rfind("gpu", 0) != 0) {
          job.unsupported.push_back(where + "=" + val);
          continue;
        }
        std::string count = val.substr(val.rfind(':') + 1);
        if (val == "gpu") count = "1";
        if (!ParsePositive(count, &n)) return InvalidArgument(where, "'" + val + "' is not gpu:N");
        job.gpus = static_cast<int>(n);
      } else if (opt == "--job-name" || opt == "-J") {
        job.name = val;
      } else if (opt == "--time" || opt == "-t") {
        job.time = val;
      } else if (opt == "--requeue") {
        job.requeue = true;
      } else if (opt == "--dependency" || opt == "-d") {
        size_t colon = val.find(':');
        std::string kind = val.substr(0, colon);
        if (colon == std::string::npos || (kind != "afterok" && kind != "afterany")) {
          return InvalidArgument(where, "'" + val + "' is not afterok:ID or afterany:ID");
        }
        std::istringstream ids(val.substr(colon + 1));
        std::string id;
        while (std::getline(ids, id, ':')) {
          if (!ParsePositive(id, &n)) return InvalidArgument(where, "'" + id + "' is not a job id");
          job.dependencies.emplace_back(kind, n);
        }
      } else {
        job.unsupported.push_back(where + (val.empty() ? "" : "=" + val));
      }
    }
  }
  return job;
}

}  // namespace rsv::cli
