// sim/packing: the static packing experiment of the FGD paper (USENIX ATC'23) on the openb
// traces: pods arrive in seeded random order, re-sampled until the requested GPUs reach a target
// share of the cluster's capacity, are placed one by one with fractional GPUs, and never leave.
// Reports the GPU allocation ratio as a function of arrived demand.
#pragma once

#include <vector>

#include "common/status.h"
#include "placement/shared.h"
#include "sim/trace.h"

namespace rsv::sim {

struct PackingResult {
  int64_t capacity_milli = 0;
  int64_t pods_arrived = 0;
  int64_t pods_failed = 0;
  // allocation[k] = allocated milli-GPU / capacity (%), when arrived demand reached k% (0..target).
  std::vector<double> allocation;
};

Result<PackingResult> RunPacking(const std::vector<TraceNode>& nodes, const Trace& pods,
                                 uint64_t seed, int32_t target_percent = 130,
                                 SharePolicy policy = SharePolicy::kLookahead);

}  // namespace rsv::sim
