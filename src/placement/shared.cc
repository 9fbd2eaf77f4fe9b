#include "placement/shared.h"

#include <algorithm>
#include <tuple>

namespace rsv {
namespace {

bool ModelAllowed(const std::string& models, const std::string& model) {
  if (models.empty()) return true;
  size_t start = 0;
  while (start <= models.size()) {
    size_t end = models.find('|', start);
    if (end == std::string::npos) end = models.size();
    if (models.compare(start, end - start, model) == 0) return true;
    start = end + 1;
  }
  return false;
}

// GPUs the pod would take on this node, or empty if it does not fit.
std::vector<int32_t> ChooseGpus(const SharedNode& n, const PodRequest& pod) {
  std::vector<int32_t> out;
  if (pod.gpus == 1 && pod.gpu_milli < 1000) {
    int32_t best = -1;
    for (int32_t g = 0; g < static_cast<int32_t>(n.gpu_free_milli.size()); ++g) {
      int32_t f = n.gpu_free_milli[g];
      if (f >= pod.gpu_milli && (best < 0 || f < n.gpu_free_milli[best])) best = g;
    }
    if (best >= 0) out.push_back(best);
    return out;
  }
  for (int32_t g = 0; g < static_cast<int32_t>(n.gpu_free_milli.size()) &&
                      static_cast<int32_t>(out.size()) < pod.gpus;
       ++g) {
    if (n.gpu_free_milli[g] == 1000) out.push_back(g);
  }
  if (static_cast<int32_t>(out.size()) < pod.gpus) out.clear();
  return out;
}

}  // namespace

std::optional<SharedPlacement> PlaceShared(const std::vector<SharedNode>& nodes,
                                           const PodRequest& pod) {
  std::optional<SharedPlacement> best;
  std::tuple<int64_t, int64_t, int32_t> best_score{};
  for (int32_t i = 0; i < static_cast<int32_t>(nodes.size()); ++i) {
    const SharedNode& n = nodes[i];
    if (n.free_cpu_milli < pod.cpu_milli || n.free_memory_mib < pod.memory_mib) continue;
    int64_t gpu_left = 0;
    for (int32_t f : n.gpu_free_milli) gpu_left += f;
    std::vector<int32_t> gpus;
    std::tuple<int64_t, int64_t, int32_t> score;
    if (pod.gpus > 0) {
      if (!ModelAllowed(pod.models, n.model)) continue;
      gpus = ChooseGpus(n, pod);
      if (gpus.empty()) continue;
      int64_t take = pod.gpus == 1 ? pod.gpu_milli : 1000LL * pod.gpus;
      score = {gpu_left - take, n.free_cpu_milli - pod.cpu_milli, i};
    } else {
      score = {n.gpu_free_milli.empty() ? 0 : 1, n.free_cpu_milli - pod.cpu_milli, i};
    }
    if (!best || score < best_score) {
      best = SharedPlacement{i, std::move(gpus)};
      best_score = score;
    }
  }
  return best;
}

void ApplyShared(std::vector<SharedNode>& nodes, const PodRequest& pod, const SharedPlacement& p) {
  SharedNode& n = nodes[p.node];
  n.free_cpu_milli -= pod.cpu_milli;
  n.free_memory_mib -= pod.memory_mib;
  for (int32_t g : p.gpus) n.gpu_free_milli[g] -= pod.gpus == 1 ? pod.gpu_milli : 1000;
}

}  // namespace rsv
