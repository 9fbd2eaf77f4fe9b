// sim/trace: reading workload traces into TraceJobs. Owns the Philly (philly-derived CSV),
// generic CSV and Alibaba openb (pod list, node list) formats, and the errors for malformed rows
// (file, line, field). Depends on core/ and common/; nothing in the decision path depends on it.
#pragma once

#include <optional>
#include <string>
#include <vector>

#include "common/status.h"
#include "common/units.h"
#include "core/model.h"

namespace rsv::sim {

struct TraceJob {
  int64_t line = 0;   // source line, for messages
  Timestamp submit;   // relative to the first submission of the trace
  Duration duration;  // run time on the GPUs it asked for
  int32_t gpus = 1;
  int32_t gpu_milli = 1000;  // per-GPU share (openb fractional pods); 1000 = whole GPU
  int32_t cpu_milli = 0;     // openb
  int64_t memory_mib = 0;    // openb
  std::string tenant;
  std::string gpu_model;  // openb: allowed models separated by '|'; empty = any
  std::optional<Money> limit_price;
  std::optional<Tier> tier;
  std::optional<Duration> checkpoint_interval;
};

struct Trace {
  std::vector<TraceJob> jobs;  // sorted by (submit, line)
  int64_t skipped = 0;         // bad rows skipped with skip_bad_rows
  std::string first_skip;      // the first skipped row's error
  int64_t ignored = 0;         // rows that ask for no GPU (openb CPU-only pods)
};

enum class TraceFormat { kPhilly, kOpenb, kCsv };
Result<TraceFormat> ParseTraceFormat(std::string_view s);

struct ReadOptions {
  bool skip_bad_rows = false;
  bool keep_cpu_only = false;  // openb: keep pods with no GPU (the packing experiment needs them)
  bool need_times = true;      // openb: require creation/deletion times
};

Result<Trace> ReadTrace(const std::string& path, TraceFormat format, const ReadOptions& options);

struct TraceNode {
  std::string name;
  int32_t gpus = 0;
  int32_t cpu_milli = 0;
  int64_t memory_mib = 0;
  std::string model;
  std::string topology;  // "zone/rack"; empty = assigned in order
};
// openb node list: sn,cpu_milli,memory_mib,gpu,model.
Result<std::vector<TraceNode>> ReadOpenbNodes(const std::string& path);

// A cluster file: CSV with header `name,gpus[,topology][,model]`, one node per row.
Result<std::vector<TraceNode>> ReadClusterFile(const std::string& path);

// tenant,value CSV with a header (VC quotas in nodes, or reservations in GPUs).
Result<std::vector<std::pair<std::string, int32_t>>> ReadTenantCounts(const std::string& path);

// Helpers shared by the readers (exposed for tests).
std::vector<std::string> SplitCsv(const std::string& line);
// "123", "66.5" → microseconds of seconds, without floating point.
Result<Duration> ParseSeconds(const std::string& s);
// "2017-10-09 07:01:55" (UTC) → seconds since the epoch.
Result<int64_t> ParseDateTime(const std::string& s);

}  // namespace rsv::sim
