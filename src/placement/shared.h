// placement/shared: fractional-GPU placement (GPU shares in milli-GPU, 1000 = one GPU) with CPU,
// memory and GPU-model constraints, as in the Alibaba openb traces. Best fit: the node (and GPU)
// that leaves the least free capacity behind. Pure functions over plain node state; used by the
// simulator's packing experiment. Depends on common/ only.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace rsv {

struct SharedNode {
  int32_t free_cpu_milli = 0;
  int64_t free_memory_mib = 0;
  std::string model;
  std::vector<int32_t> gpu_free_milli;  // per GPU, 0..1000
};

struct PodRequest {
  int32_t cpu_milli = 0;
  int64_t memory_mib = 0;
  int32_t gpus = 0;          // whole GPUs when > 1; with gpus == 1, gpu_milli may be a share
  int32_t gpu_milli = 1000;  // per GPU
  std::string models;        // allowed GPU models separated by '|'; empty = any
};

struct SharedPlacement {
  int32_t node = -1;
  std::vector<int32_t> gpus;  // GPU indices on the node
};

// Best-fit choice, or nullopt when no node can take the pod. Scores (lower is better):
//  GPU pods: free milli-GPU left on the node after placing, then free CPU left, then node index;
//  on the node a share goes to the fullest GPU it fits, whole GPUs to the lowest free indices.
//  CPU-only pods: nodes without GPUs first, then the least free CPU left, then node index.
std::optional<SharedPlacement> PlaceShared(const std::vector<SharedNode>& nodes,
                                           const PodRequest& pod);
void ApplyShared(std::vector<SharedNode>& nodes, const PodRequest& pod, const SharedPlacement& p);

}  // namespace rsv
