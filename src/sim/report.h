// sim/report: writes a simulation's results: result.json (deterministic: the same inputs give
// the same bytes), timing.json (wall time, events/s: not deterministic, so kept apart),
// report.md and report.html (SVG plots: utilization over time, spot price, JCT CDF), and the
// comparison table printed on the terminal.
#pragma once

#include <optional>
#include <string>
#include <vector>

#include "sim/simulator.h"

namespace rsv::sim {

struct CapacitySearch {
  int32_t full_gpus = 0;
  int32_t market_gpus = 0;  // smallest cluster where market serves as well as static on full
  double static_jct_mean_s = 0;
  double market_jct_mean_s = 0;
  double market_owner_wait_max_s = 0;
  std::vector<std::pair<int32_t, bool>> probes;  // (GPUs, met the bar)
};

struct RunInfo {
  std::string trace_path;
  std::string format;
  int64_t trace_jobs = 0;
  int64_t skipped_rows = 0;
  int64_t ignored_rows = 0;
  uint64_t seed = 0;
  const SimConfig* config = nullptr;
  std::vector<PolicyResult> results;
  std::optional<CapacitySearch> capacity;
};

std::string ResultJson(const RunInfo& run);
std::string TimingJson(const RunInfo& run);
std::string ReportMarkdown(const RunInfo& run);
std::string ReportHtml(const RunInfo& run);
std::string ComparisonTable(const RunInfo& run);

// Writes the four files into `dir` (created if missing).
Status WriteReports(const RunInfo& run, const std::string& dir);

}  // namespace rsv::sim
