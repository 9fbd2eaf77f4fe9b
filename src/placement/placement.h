// placement: where a gang goes. Filter (ready nodes of the pool with room) -> score (integer,
// explicit weights) -> pick (highest score, ties by lowest node id). FreeMap is a flat, copyable
// index over one pool's free GPUs that finds the best-scoring node without scanning every node;
// ScoreNode/PlaceBruteForce are the reference it is tested against.
// Depends on core/ and common/ only; never on scheduler/, server/, store/, agent/ or sim/.
#pragma once

#include <bit>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "core/model.h"

namespace rsv {

// A family of sets of small dense integers 0..n-1 with ordered iteration. Each set is two levels
// of 64-bit words, so its first member is found in a few word reads even among 100,000 nodes;
// all sets share one buffer, so copying the family is one allocation.
class DenseSets {
 public:
  void Resize(int32_t sets, int32_t n);
  void Insert(int32_t set, int32_t i);
  void Erase(int32_t set, int32_t i);
  bool Contains(int32_t set, int32_t i) const { return (Words(set)[i >> 6] >> (i & 63)) & 1; }
  int32_t First(int32_t set) const { return NextFrom(set, 0); }
  int32_t NextFrom(int32_t set, int32_t i) const;  // smallest member >= i, or -1
  int32_t size(int32_t set) const { return static_cast<int32_t>(buf_[set * stride_]); }

 private:
  // Per set: its size, then `words_` member words, then `summary_words_` summary words.
  const uint64_t* Words(int32_t set) const { return buf_.data() + set * stride_ + 1; }
  uint64_t* Words(int32_t set) { return buf_.data() + set * stride_ + 1; }
  std::vector<uint64_t> buf_;
  int32_t n_ = 0;
  int32_t words_ = 0;
  int32_t summary_words_ = 0;
  int32_t stride_ = 0;
};

enum class PlaceOutcome { kPlaced, kWait, kInfeasible };
std::string_view PlaceOutcomeName(PlaceOutcome o);

struct PlaceResult {
  PlaceOutcome outcome = PlaceOutcome::kWait;
  Placement placement;  // when kPlaced
  std::string reason;   // when not placed
};

// Scoring weights for single-node gangs. A node already in use scores kKeepWholeWeight more than
// an untouched one (whole nodes stay whole for large gangs); then fewer GPUs left over is better
// (best fit limits fragmentation). Ties go to the lowest node id.
inline constexpr int64_t kKeepWholeWeight = 1000;
// Score of placing `gpus` on a node with `free` of `capacity` GPUs free (free >= gpus):
//   (free < capacity ? kKeepWholeWeight : 0) + (kMaxGpusPerNode - (free - gpus)).
int64_t ScoreNode(int32_t free, int32_t capacity, int32_t gpus);

// The free GPUs of one pool's ready nodes. Occupy/Release keep it in step with ClusterState.
class FreeMap {
 public:
  FreeMap() = default;
  // Builds from the nodes' current GPU holders (a GPU is free when no job holds it).
  FreeMap(const ClusterState& state, PoolId pool);

  // Decide where a gang of `gpus` goes now (does not occupy).
  PlaceResult Place(int32_t gpus) const;
  // Whether a gang of `gpus` could ever fit on this pool's ready nodes if all were empty.
  bool Feasible(int32_t gpus, std::string* reason) const;

  void Occupy(const Placement& p);
  void Release(const Placement& p);
  // Sets a node's free GPUs outright (used to build maps of other things than "free now": the
  // GPUs a reservation may still bind, the GPUs a tenant's reserved jobs may use).
  void SetFreeMask(NodeId node, uint64_t mask);
  // The same map with each node's free GPUs limited to `domain` (indexed by local node).
  FreeMap Restricted(const std::vector<uint64_t>& domain) const;
  // Node becomes ready / not ready (draining and down nodes offer nothing).
  void SetReady(NodeId node, bool ready);

  int32_t free_gpus() const { return total_free_; }
  uint64_t free_mask(NodeId node) const { return free_[Local(node)]; }
  bool ready(NodeId node) const { return ready_[Local(node)]; }
  int32_t capacity(NodeId node) const { return Capacity(Local(node)); }
  int32_t node_count() const { return static_cast<int32_t>(free_.size()); }
  NodeId node_id(int32_t local) const { return layout_->ids[local]; }
  // Local index of a node of this pool (0 .. node_count()-1).
  int32_t local_index(NodeId node) const { return Local(node); }
  int32_t largest_node() const { return largest_; }

 private:
  int32_t Local(NodeId node) const { return layout_->local_of[node.value() - layout_->first_id]; }
  void Unindex(int32_t i);
  void Index(int32_t i);
  PlaceResult PlaceSingle(int32_t gpus) const;
  PlaceResult PlaceMulti(int32_t gpus) const;
  void RecountLargest();
  bool CountsAsWhole(int32_t i) const {
    return ready_[i] && Capacity(i) == largest_ && std::popcount(free_[i]) == Capacity(i);
  }
  int32_t Capacity(int32_t i) const { return layout_->capacity[i]; }

  // What does not change once the map is built: the nodes, their sizes and topology (nodes of
  // each rack, ascending, and racks of each zone, for multi-node gangs). Shared by copies, so a
  // copy allocates only for the state below.
  struct Layout {
    std::vector<NodeId> ids;  // local index -> node id, ascending
    std::vector<int32_t> local_of;
    uint32_t first_id = 1;
    std::vector<int32_t> capacity;
    std::vector<int32_t> rack;
    std::vector<int32_t> zone;
    std::vector<std::vector<int32_t>> rack_nodes;
    std::vector<std::vector<int32_t>> zone_racks;
  };
  std::shared_ptr<const Layout> layout_;
  std::vector<uint64_t> free_;
  std::vector<uint8_t> ready_;
  DenseSets partial_;  // set f: ready nodes partly in use with f GPUs free
  DenseSets whole_;    // set c: ready nodes of capacity c entirely free
  int32_t total_free_ = 0;
  int32_t largest_ = 0;
  int32_t largest_ready_nodes_ = 0;  // ready nodes of the largest size
  int32_t buckets_ = 0;              // free-count buckets: 0 .. largest capacity in the pool
  // How many whole free nodes of the largest size each rack and zone has right now.
  std::vector<int32_t> rack_whole_;
  std::vector<int32_t> zone_whole_;
};

// GPUs a gang may use, per local node index of a FreeMap (a tenant's reserved GPUs, say).
using GpuDomain = std::vector<uint64_t>;

// Sorts a placement's slices by node (the canonical order of a reservation's GPUs).
void SortByNode(Placement& p);

// `p` limited to the GPUs of `domain` (slices left empty are dropped).
Placement Clip(const Placement& p, const FreeMap& map, const GpuDomain& domain);

// The shape a reservation of `gpus` holds so that every gang that fits `gpus` GPUs fits it:
// gpus / N whole nodes of the pool's largest size N (one rack if possible, else one zone, as a
// multi-node gang is placed) and the remaining gpus % N GPUs on one node (best fit, so
// remainders share nodes and whole nodes stay whole). `unbound` holds the GPUs no other
// reservation holds over the window (ready nodes only). Nullopt when the shape does not fit.
std::optional<Placement> BindShape(FreeMap unbound, int32_t gpus);

// Reference implementation: filter every node, score it with ScoreNode, pick the best; for
// multi-node gangs the same topology rule as FreeMap, written as a plain search. Tests only.
PlaceResult PlaceBruteForce(const ClusterState& state, PoolId pool, int32_t gpus);

// Lowest `gpus` set bits of `mask`.
uint64_t LowestBits(uint64_t mask, int32_t gpus);

}  // namespace rsv
