// placement/shared: where a pod that may ask for a share of one GPU goes (GPU shares in
// milli-GPU, 1000 = one GPU), with CPU, memory and GPU-model constraints. Three rules
// (docs/placement.md): best fit; FGD's fragmentation gradient; and Reservoir's look-ahead, which
// strands fewer GPUs than FGD on every openb trace. Exact integer scores, deterministic.
// Pure functions over plain node state, and a packer that caches scores per node. Used by the
// scheduler for shared jobs and by the simulator's packing experiment. Depends on common/ only.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <tuple>
#include <unordered_map>
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
  // Milli-GPUs the pod takes in all.
  int64_t Demand() const { return gpus == 1 ? gpu_milli : 1000LL * gpus; }
  bool Share() const { return gpus == 1 && gpu_milli < 1000; }
};

struct SharedPlacement {
  int32_t node = -1;
  std::vector<int32_t> gpus;  // GPU indices on the node
};

bool ModelAllowed(const std::string& models, const std::string& model);

// Best-fit choice, or nullopt when no node can take the pod. Scores (lower is better):
//  GPU pods: free milli-GPU left on the node after placing, then free CPU left, then node index;
//  on the node a share goes to the fullest GPU it fits, whole GPUs to the lowest free indices.
//  CPU-only pods: nodes without GPUs first, then the least free CPU left, then node index.
std::optional<SharedPlacement> PlaceShared(const std::vector<SharedNode>& nodes,
                                           const PodRequest& pod);
void ApplyShared(std::vector<SharedNode>& nodes, const PodRequest& pod, const SharedPlacement& p);
void ReleaseShared(std::vector<SharedNode>& nodes, const PodRequest& pod, const SharedPlacement& p);

// The arriving mix: how many pods of each shape arrive (or are expected to), the look-ahead of the
// fragmentation rule. Shapes with equal requests are merged.
class WorkloadMix {
 public:
  void Add(const PodRequest& pod, int64_t count = 1);
  struct Shape {
    PodRequest pod;
    int64_t count = 0;
  };
  const std::vector<Shape>& shapes() const { return shapes_; }
  int64_t total() const { return total_; }

 private:
  std::vector<Shape> shapes_;
  std::map<std::tuple<int32_t, int64_t, int32_t, int32_t, std::string>, size_t> index_;
  int64_t total_ = 0;
};

// FGD's fragmentation measure (Weng et al., USENIX ATC '23; docs/placement.md): milli-GPUs of `n`
// the mix cannot use, weighted by how often each shape arrives. Σ over GPU shapes s of count(s) ×
// (s fits on n ? free milli-GPUs on GPUs with less room than s asks of one GPU : all free
// milli-GPUs of n). A shape fits when the node's model is allowed, its free CPU covers the
// shape's (FGD reads no memory) and it has a GPU with room for the share (or enough whole GPUs).
int64_t FgdFragmentation(const SharedNode& n, const WorkloadMix& mix);

enum class SharePolicy {
  kBestFit,    // the least free capacity left behind
  kFgd,        // the least rise of FgdFragmentation, best fit breaking ties
  kLookahead,  // Reservoir's rule (docs/placement.md): model affinity, then the least rise of
               // the milli-GPUs expected to stay stranded as the mix keeps arriving
};
std::string_view SharePolicyName(SharePolicy p);
std::optional<SharePolicy> ParseSharePolicy(std::string_view name);

// The look-ahead: this many sequences of this many GPU pods, drawn from the mix with a fixed
// seed (the same sequences for every node, so nodes are compared on the same futures).
inline constexpr int kLookaheadSamples = 16;
inline constexpr int kLookaheadLength = 32;

// A set of nodes and the pods placed on them, deciding where the next pod goes. The score of a
// pod shape on a node is cached until that node changes, so a decision reads the nodes' cached
// scores and recomputes only the nodes changed since that shape was last scored.
class SharePacker {
 public:
  SharePacker(std::vector<SharedNode> nodes, WorkloadMix mix, SharePolicy policy);

  std::optional<SharedPlacement> Place(const PodRequest& pod);
  void Apply(const PodRequest& pod, const SharedPlacement& p);
  void Release(const PodRequest& pod, const SharedPlacement& p);
  const std::vector<SharedNode>& nodes() const { return nodes_; }
  // What the policy minimizes on node `i` now (0 for best fit).
  int64_t Stranding(int32_t i) const { return frag_[i]; }

 private:
  struct Choice {
    bool fits = false;
    int64_t delta = 0;     // rise of the policy's stranding measure
    int64_t gpu_left = 0;  // free milli-GPU left on the node
    int64_t cpu_left = 0;
    int32_t gpu = -1;  // the GPU a share goes to
  };
  struct Cached {
    uint64_t version = 0;  // node version it was computed at (0: never)
    Choice choice;
  };
  Choice Score(int32_t node, const PodRequest& pod) const;
  int64_t Measure(int32_t node, const SharedNode& n) const;
  int64_t Lookahead(int32_t node, const SharedNode& n) const;
  int32_t ShapeId(const PodRequest& pod);
  void Touch(int32_t node);

  std::vector<SharedNode> nodes_;
  WorkloadMix mix_;
  SharePolicy policy_;
  std::vector<int32_t> model_of_;              // node -> interned model
  std::vector<std::vector<uint8_t>> allowed_;  // mix shape -> model -> allowed
  // Per model: how much of its capacity pods that may use only some models want (per mille).
  std::vector<int64_t> pressure_;
  std::vector<std::vector<int32_t>> samples_;              // look-ahead sequences of mix shapes
  std::vector<int64_t> frag_;                              // node -> Measure now
  mutable std::unordered_map<std::string, int64_t> memo_;  // node state -> Lookahead
  std::vector<uint64_t> version_;                          // node -> bumped on every change
  std::map<std::tuple<int32_t, int64_t, int32_t, int32_t, std::string>, int32_t> shape_ids_;
  std::vector<std::vector<Cached>> cache_;  // shape id -> node -> score
};

}  // namespace rsv
