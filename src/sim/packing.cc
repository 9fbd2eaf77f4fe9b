#include "sim/packing.h"

#include "common/rng.h"
#include "placement/shared.h"

namespace rsv::sim {
namespace {

PodRequest PodOf(const TraceJob& j) {
  return PodRequest{.cpu_milli = j.cpu_milli,
                    .memory_mib = j.memory_mib,
                    .gpus = j.gpus,
                    .gpu_milli = j.gpu_milli,
                    .models = j.gpu_model};
}

}  // namespace

Result<PackingResult> RunPacking(const std::vector<TraceNode>& nodes, const Trace& pods,
                                 uint64_t seed, int32_t target_percent, SharePolicy policy) {
  if (pods.jobs.empty()) return InvalidArgument("trace", "has no pods");
  if (target_percent < 1 || target_percent > 1000) {
    return InvalidArgument("target", "must be 1-1000 (% of capacity)");
  }
  std::vector<SharedNode> state;
  PackingResult r;
  for (const TraceNode& n : nodes) {
    SharedNode s;
    s.free_cpu_milli = n.cpu_milli;
    s.free_memory_mib = n.memory_mib;
    s.model = n.model;
    s.gpu_free_milli.assign(n.gpus, 1000);
    r.capacity_milli += 1000LL * n.gpus;
    state.push_back(std::move(s));
  }
  if (r.capacity_milli == 0) return InvalidArgument("nodes", "the cluster has no GPUs");
  auto demand = [](const TraceJob& j) -> int64_t {
    return j.gpus == 1 ? j.gpu_milli : 1000LL * j.gpus;
  };
  // Seeded shuffle (Fisher-Yates), then re-sample with replacement until the target demand.
  Rng rng(seed);
  std::vector<size_t> order(pods.jobs.size());
  for (size_t i = 0; i < order.size(); ++i) order[i] = i;
  for (size_t i = order.size(); i > 1; --i) std::swap(order[i - 1], order[rng.Uniform(i)]);
  int64_t total = 0;
  for (size_t i : order) total += demand(pods.jobs[i]);
  const int64_t target = r.capacity_milli * target_percent / 100;
  while (total < target) {
    size_t i = rng.Uniform(pods.jobs.size());
    order.push_back(i);
    total += demand(pods.jobs[i]);
  }
  // The arriving mix is the trace's: re-sampling draws every pod alike.
  WorkloadMix mix;
  for (const TraceJob& j : pods.jobs) mix.Add(PodOf(j));
  SharePacker packer(std::move(state), std::move(mix), policy);
  int64_t arrived = 0, allocated = 0;
  int32_t next_mark = 0;
  for (size_t i : order) {
    if (arrived >= target) break;
    const TraceJob& j = pods.jobs[i];
    const PodRequest pod = PodOf(j);
    r.pods_arrived++;
    if (std::optional<SharedPlacement> p = packer.Place(pod)) {
      packer.Apply(pod, *p);
      allocated += demand(j);
    } else {
      r.pods_failed++;
    }
    arrived += demand(j);
    while (next_mark <= target_percent && arrived * 100 >= r.capacity_milli * next_mark) {
      r.allocation.push_back(100.0 * static_cast<double>(allocated) / r.capacity_milli);
      ++next_mark;
    }
  }
  return r;
}

}  // namespace rsv::sim
