#include "cli/slurm.h"

#include <cctype>
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

Result<int64_t> ParseSlurmTime(const std::string& s) {
  if (s == "UNLIMITED" || s == "infinite") return 0;
  auto bad = [&] { return InvalidArgument("--time", "'" + s + "' is not a Slurm time (D-H:M:S)"); };
  int64_t days = 0;
  std::string rest = s;
  size_t dash = s.find('-');
  bool has_days = dash != std::string::npos;
  if (has_days && !ParsePositive(s.substr(0, dash), &days) && s.substr(0, dash) != "0")
    return bad();
  if (has_days) rest = s.substr(dash + 1);
  std::vector<int64_t> parts;
  std::istringstream in(rest);
  std::string p;
  while (std::getline(in, p, ':')) {
    int64_t v = 0;
    if (p != "0" && p != "00" && !ParsePositive(p, &v)) return bad();
    parts.push_back(v);
  }
  if (parts.empty() || parts.size() > 3) return bad();
  int64_t seconds = 0;
  if (has_days) {  // D-H, D-H:M, D-H:M:S
    seconds = parts[0] * 3600 + (parts.size() > 1 ? parts[1] * 60 : 0) +
              (parts.size() > 2 ? parts[2] : 0);
  } else if (parts.size() == 1) {  // M
    seconds = parts[0] * 60;
  } else if (parts.size() == 2) {  // M:S
    seconds = parts[0] * 60 + parts[1];
  } else {  // H:M:S
    seconds = parts[0] * 3600 + parts[1] * 60 + parts[2];
  }
  seconds += days * 86400;
  if (seconds <= 0 || seconds > int64_t{3650} * 86400) return bad();
  return seconds;
}

Result<int64_t> ParseSlurmMemory(const std::string& s) {
  std::string digits = s;
  int64_t scale_num = 1, scale_den = 1;  // MiB per unit
  if (!s.empty() && std::string("KMGTkmgt").find(s.back()) != std::string::npos) {
    char u = static_cast<char>(std::toupper(static_cast<unsigned char>(s.back())));
    digits = s.substr(0, s.size() - 1);
    if (u == 'K') scale_den = 1024;
    if (u == 'G') scale_num = 1024;
    if (u == 'T') scale_num = 1024 * 1024;
  }
  int64_t n = 0;
  if (!ParsePositive(digits, &n))
    return InvalidArgument("--mem", "'" + s + "' is not a size like 64G");
  int64_t mib = n * scale_num / scale_den;
  if (mib < 1) return InvalidArgument("--mem", "'" + s + "' is less than 1 MiB");
  return mib;
}

Result<SlurmJob> ParseSlurmScript(const std::string& text) {
  SlurmJob job;
  std::istringstream in(text);
  std::string line;
  int number = 0;
  while (std::getline(in, line)) {
    ++number;
    if (number == 1 && line.rfind("#!", 0) == 0) {
      std::string interp = line.substr(2);
      while (!interp.empty() && (interp.front() == ' ' || interp.front() == '\t'))
        interp.erase(0, 1);
      while (!interp.empty() && (interp.back() == '\r' || interp.back() == ' ')) interp.pop_back();
      if (!interp.empty()) job.interpreter = interp;
      continue;
    }
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
                  opt == "--dependency" || opt == "-d" || opt == "-p" || opt == "--partition" ||
                  opt == "--mem" || opt == "-c" || opt == "--cpus-per-task") &&
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
        Result<int64_t> t = ParseSlurmTime(val);
        if (!t.ok()) return InvalidArgument(where, t.status().message());
        job.time_limit_s = *t;
      } else if (opt == "--partition" || opt == "-p") {
        if (val.empty() || val.find(',') != std::string::npos)
          return InvalidArgument(where, "'" + val + "': give one partition (Reservoir pool)");
        job.partition = val;
      } else if (opt == "--mem") {
        Result<int64_t> m = ParseSlurmMemory(val);
        if (!m.ok()) return InvalidArgument(where, m.status().message());
        job.memory_mib = *m;
      } else if (opt == "--cpus-per-task" || opt == "-c") {
        if (!ParsePositive(val, &n) || n > 1000)
          return InvalidArgument(where, "'" + val + "' is not a CPU count");
        job.cpu_millis = n * 1000;
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
