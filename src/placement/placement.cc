#include "placement/placement.h"

#include <algorithm>
#include <bit>
#include <map>

namespace rsv {

void DenseSets::Resize(int32_t sets, int32_t n) {
  n_ = n;
  words_ = (n + 63) / 64 + 1;
  summary_words_ = words_ / 64 + 1;
  stride_ = 1 + words_ + summary_words_;
  buf_.assign(static_cast<size_t>(sets) * stride_, 0);
}

void DenseSets::Insert(int32_t set, int32_t i) {
  uint64_t* words = Words(set);
  uint64_t bit = uint64_t{1} << (i & 63);
  uint64_t& w = words[i >> 6];
  if (w & bit) return;
  w |= bit;
  words[words_ + (i >> 12)] |= uint64_t{1} << ((i >> 6) & 63);
  ++buf_[set * stride_];
}

void DenseSets::Erase(int32_t set, int32_t i) {
  uint64_t* words = Words(set);
  uint64_t bit = uint64_t{1} << (i & 63);
  uint64_t& w = words[i >> 6];
  if (!(w & bit)) return;
  w &= ~bit;
  if (w == 0) words[words_ + (i >> 12)] &= ~(uint64_t{1} << ((i >> 6) & 63));
  --buf_[set * stride_];
}

int32_t DenseSets::NextFrom(int32_t set, int32_t i) const {
  if (i >= n_ || size(set) == 0) return -1;
  const uint64_t* words = Words(set);
  const uint64_t* summary = words + words_;
  int32_t wi = i >> 6;
  uint64_t w = words[wi] & (~uint64_t{0} << (i & 63));
  if (w) return (wi << 6) + std::countr_zero(w);
  // Find the next non-empty word through the summary.
  int32_t next_word = wi + 1;
  int32_t si = next_word >> 6;
  if (si >= summary_words_) return -1;
  uint64_t s = summary[si] & ((next_word & 63) ? (~uint64_t{0} << (next_word & 63)) : ~uint64_t{0});
  while (true) {
    if (s) {
      int32_t word = (si << 6) + std::countr_zero(s);
      return (word << 6) + std::countr_zero(words[word]);
    }
    if (++si >= summary_words_) return -1;
    s = summary[si];
  }
}

std::string_view PlaceOutcomeName(PlaceOutcome o) {
  switch (o) {
    case PlaceOutcome::kPlaced:
      return "placed";
    case PlaceOutcome::kWait:
      return "wait";
    case PlaceOutcome::kInfeasible:
      return "infeasible";
  }
  return "?";
}

int64_t ScoreNode(int32_t free, int32_t capacity, int32_t gpus) {
  return (free < capacity ? kKeepWholeWeight : 0) + (kMaxGpusPerNode - (free - gpus));
}

uint64_t LowestBits(uint64_t mask, int32_t gpus) {
  uint64_t out = 0;
  for (int32_t k = 0; k < gpus && mask; ++k) {
    uint64_t bit = mask & (~mask + 1);
    out |= bit;
    mask &= mask - 1;
  }
  return out;
}

static uint64_t AllBits(int32_t n) { return n >= 64 ? ~uint64_t{0} : (uint64_t{1} << n) - 1; }

FreeMap::FreeMap(const ClusterState& state, PoolId pool) {
  auto layout = std::make_shared<Layout>();
  layout->ids = state.pool_nodes(pool);
  const std::vector<NodeId>& ids = layout->ids;
  if (!ids.empty()) {
    layout->first_id = ids.front().value();
    layout->local_of.assign(ids.back().value() - layout->first_id + 1, -1);
  }
  int32_t n = static_cast<int32_t>(ids.size());
  free_.assign(n, 0);
  layout->capacity.assign(n, 0);
  layout->rack.assign(n, 0);
  layout->zone.assign(n, 0);
  ready_.assign(n, 0);
  int32_t max_capacity = 0;
  for (NodeId id : ids) max_capacity = std::max(max_capacity, state.node(id).gpus);
  buckets_ = max_capacity + 1;
  partial_.Resize(buckets_, n);
  whole_.Resize(buckets_, n);
  layout->rack_nodes.resize(state.rack_count());
  layout->zone_racks.resize(state.zone_count());
  rack_whole_.assign(state.rack_count(), 0);
  zone_whole_.assign(state.zone_count(), 0);
  for (int32_t i = 0; i < n; ++i) {
    const Node& nd = state.node(ids[i]);
    layout->local_of[ids[i].value() - layout->first_id] = i;
    layout->capacity[i] = nd.gpus;
    layout->rack[i] = nd.rack;
    layout->zone[i] = nd.zone;
    layout->rack_nodes[nd.rack].push_back(i);
    std::vector<int32_t>& racks = layout->zone_racks[nd.zone];
    if (std::find(racks.begin(), racks.end(), nd.rack) == racks.end()) racks.push_back(nd.rack);
  }
  layout_ = std::move(layout);
  for (int32_t i = 0; i < n; ++i) {
    const Node& nd = state.node(ids[i]);
    uint64_t mask = 0;
    for (int32_t g = 0; g < nd.gpus; ++g) {
      if (nd.GpuFree(g)) mask |= uint64_t{1} << g;
    }
    free_[i] = mask;
    ready_[i] = nd.state == NodeState::kReady;
    if (ready_[i]) total_free_ += std::popcount(mask);
    Index(i);
  }
  RecountLargest();
}

void FreeMap::RecountLargest() {
  largest_ = 0;
  largest_ready_nodes_ = 0;
  for (int32_t k = 0; k < node_count(); ++k) {
    if (!ready_[k]) continue;
    if (Capacity(k) > largest_) {
      largest_ = Capacity(k);
      largest_ready_nodes_ = 0;
    }
    largest_ready_nodes_ += Capacity(k) == largest_;
  }
  std::fill(rack_whole_.begin(), rack_whole_.end(), 0);
  std::fill(zone_whole_.begin(), zone_whole_.end(), 0);
  for (int32_t k = 0; k < node_count(); ++k) {
    if (CountsAsWhole(k)) {
      rack_whole_[layout_->rack[k]]++;
      zone_whole_[layout_->zone[k]]++;
    }
  }
}

void FreeMap::Unindex(int32_t i) {
  if (!ready_[i]) return;
  if (CountsAsWhole(i) && !rack_whole_.empty()) {
    rack_whole_[layout_->rack[i]]--;
    zone_whole_[layout_->zone[i]]--;
  }
  int32_t f = std::popcount(free_[i]);
  if (f == Capacity(i)) {
    whole_.Erase(f, i);
  } else if (f > 0) {
    partial_.Erase(f, i);
  }
}

void FreeMap::Index(int32_t i) {
  if (!ready_[i]) return;
  if (CountsAsWhole(i) && !rack_whole_.empty()) {
    rack_whole_[layout_->rack[i]]++;
    zone_whole_[layout_->zone[i]]++;
  }
  int32_t f = std::popcount(free_[i]);
  if (f == Capacity(i)) {
    whole_.Insert(f, i);
  } else if (f > 0) {
    partial_.Insert(f, i);
  }
}

void FreeMap::Occupy(const Placement& p) {
  for (const NodeSlice& s : p.slices) {
    int32_t i = Local(s.node);
    Unindex(i);
    if (ready_[i]) total_free_ -= std::popcount(free_[i] & s.gpu_mask);
    free_[i] &= ~s.gpu_mask;
    Index(i);
  }
}

void FreeMap::Release(const Placement& p) {
  for (const NodeSlice& s : p.slices) {
    int32_t i = Local(s.node);
    Unindex(i);
    uint64_t add = s.gpu_mask & ~free_[i] & AllBits(Capacity(i));
    free_[i] |= add;
    if (ready_[i]) total_free_ += std::popcount(add);
    Index(i);
  }
}

void FreeMap::SetFreeMask(NodeId node, uint64_t mask) {
  int32_t i = Local(node);
  Unindex(i);
  mask &= AllBits(Capacity(i));
  if (ready_[i]) total_free_ += std::popcount(mask) - std::popcount(free_[i]);
  free_[i] = mask;
  Index(i);
}

FreeMap FreeMap::Restricted(const std::vector<uint64_t>& domain) const {
  FreeMap out = *this;
  for (int32_t i = 0; i < node_count(); ++i) {
    if ((free_[i] & domain[i]) != free_[i]) out.SetFreeMask(layout_->ids[i], free_[i] & domain[i]);
  }
  return out;
}

void SortByNode(Placement& p) {
  std::sort(p.slices.begin(), p.slices.end(),
            [](const NodeSlice& a, const NodeSlice& b) { return a.node < b.node; });
}

Placement Clip(const Placement& p, const FreeMap& map, const GpuDomain& domain) {
  Placement out;
  for (const NodeSlice& s : p.slices) {
    uint64_t m = s.gpu_mask & domain[map.local_index(s.node)];
    if (m) out.slices.push_back(NodeSlice{s.node, m});
  }
  return out;
}

std::optional<Placement> BindShape(FreeMap unbound, int32_t gpus) {
  const int32_t size = unbound.largest_node();
  if (gpus <= 0 || size == 0) return std::nullopt;
  const int32_t whole = gpus / size * size;
  const int32_t rest = gpus - whole;
  Placement out;
  for (int32_t part : {whole, rest}) {
    if (part == 0) continue;
    PlaceResult pr = unbound.Place(part);
    if (pr.outcome != PlaceOutcome::kPlaced) return std::nullopt;
    unbound.Occupy(pr.placement);
    for (NodeSlice& s : pr.placement.slices) out.slices.push_back(s);
  }
  SortByNode(out);
  return out;
}

void FreeMap::SetReady(NodeId node, bool ready) {
  int32_t i = Local(node);
  if (static_cast<bool>(ready_[i]) == ready) return;
  Unindex(i);
  ready_[i] = ready;
  total_free_ += (ready ? 1 : -1) * std::popcount(free_[i]);
  Index(i);
  RecountLargest();
}

bool FreeMap::Feasible(int32_t gpus, std::string* reason) const {
  if (gpus <= 0) {
    *reason = "a gang needs at least one GPU";
    return false;
  }
  if (largest_ == 0) {
    *reason = "the pool has no ready nodes";
    return false;
  }
  if (gpus <= largest_) return true;
  if (gpus % largest_ != 0) {
    *reason = "a multi-node gang uses whole nodes: " + std::to_string(gpus) +
              " GPUs is not a multiple of the node size " + std::to_string(largest_);
    return false;
  }
  const int32_t nodes = largest_ready_nodes_;
  if (gpus / largest_ > nodes) {
    *reason = "needs " + std::to_string(gpus / largest_) + " whole nodes of " +
              std::to_string(largest_) + " GPUs; the pool has " + std::to_string(nodes) + " ready";
    return false;
  }
  return true;
}

PlaceResult FreeMap::Place(int32_t gpus) const {
  PlaceResult r;
  if (!Feasible(gpus, &r.reason)) {
    r.outcome = PlaceOutcome::kInfeasible;
    return r;
  }
  if (gpus > total_free_) {
    r.outcome = PlaceOutcome::kWait;
    r.reason = "not enough free GPUs";
    return r;
  }
  return gpus <= largest_ ? PlaceSingle(gpus) : PlaceMulti(gpus);
}

PlaceResult FreeMap::PlaceSingle(int32_t gpus) const {
  PlaceResult r;
  // Highest ScoreNode: a node in use with the fewest GPUs left over, then an untouched node
  // of the smallest size that fits; the lowest local index within a bucket is the lowest id.
  int32_t pick = -1;
  for (int32_t c = gpus; c < buckets_ && pick < 0; ++c) pick = partial_.First(c);
  for (int32_t c = gpus; c < buckets_ && pick < 0; ++c) pick = whole_.First(c);
  if (pick < 0) {
    r.outcome = PlaceOutcome::kWait;
    r.reason = "no node has " + std::to_string(gpus) + " free GPUs";
    return r;
  }
  r.outcome = PlaceOutcome::kPlaced;
  r.placement.slices.push_back(NodeSlice{layout_->ids[pick], LowestBits(free_[pick], gpus)});
  return r;
}

PlaceResult FreeMap::PlaceMulti(int32_t gpus) const {
  PlaceResult r;
  const int32_t size = largest_;
  const int32_t k = gpus / size;
  const int32_t whole = whole_.size(size);
  if (whole < k) {
    r.outcome = PlaceOutcome::kWait;
    r.reason =
        "needs " + std::to_string(k) + " whole free nodes, " + std::to_string(whole) + " are free";
    return r;
  }
  // Take up to `want` whole free nodes of a rack, lowest ids first.
  std::vector<int32_t> chosen;
  auto take_from_rack = [&](int32_t rack, int32_t want) {
    for (int32_t i : layout_->rack_nodes[rack]) {
      if (want == 0) break;
      if (CountsAsWhole(i)) {
        chosen.push_back(i);
        --want;
      }
    }
  };
  // Best fit: the smallest count that suffices, ties to the lowest id.
  auto best_fit = [k](const std::vector<int32_t>& counts, const std::vector<int32_t>* among) {
    int32_t best = -1;
    auto consider = [&](int32_t d) {
      if (counts[d] >= k &&
          (best < 0 || counts[d] < counts[best] || (counts[d] == counts[best] && d < best))) {
        best = d;
      }
    };
    if (among) {
      for (int32_t d : *among) consider(d);
    } else {
      for (int32_t d = 0; d < static_cast<int32_t>(counts.size()); ++d) consider(d);
    }
    return best;
  };
  // 1. One rack, the one with the fewest whole free nodes that suffices.
  int32_t rack = best_fit(rack_whole_, nullptr);
  if (rack >= 0) {
    take_from_rack(rack, k);
  } else {
    // 2. One zone (fewest that suffices), else 3. the whole pool; inside it the racks with the
    // most whole free nodes first (ties to the lowest rack), so the gang spans few racks.
    int32_t zone = best_fit(zone_whole_, nullptr);
    std::vector<std::pair<int32_t, int32_t>> racks;  // (-count, rack)
    if (zone >= 0) {
      for (int32_t rk : layout_->zone_racks[zone]) racks.emplace_back(-rack_whole_[rk], rk);
    } else {
      for (int32_t rk = 0; rk < static_cast<int32_t>(rack_whole_.size()); ++rk) {
        racks.emplace_back(-rack_whole_[rk], rk);
      }
    }
    std::sort(racks.begin(), racks.end());
    for (const auto& [neg, rk] : racks) {
      int32_t want = k - static_cast<int32_t>(chosen.size());
      if (want == 0 || neg == 0) break;
      take_from_rack(rk, want);
    }
  }
  std::sort(chosen.begin(), chosen.end());
  r.outcome = PlaceOutcome::kPlaced;
  for (int32_t i : chosen) r.placement.slices.push_back(NodeSlice{layout_->ids[i], free_[i]});
  return r;
}

PlaceResult PlaceBruteForce(const ClusterState& state, PoolId pool, int32_t gpus) {
  // Multi-node gangs share FreeMap's topology rule; only single-node scoring is re-derived here.
  FreeMap map(state, pool);
  if (gpus > map.largest_node() || gpus <= 0) return map.Place(gpus);
  PlaceResult r;
  int64_t best_score = -1;
  const Node* best = nullptr;
  uint64_t best_mask = 0;
  for (NodeId id : state.pool_nodes(pool)) {
    const Node& nd = state.node(id);
    if (nd.state != NodeState::kReady) continue;
    uint64_t mask = 0;
    for (int32_t g = 0; g < nd.gpus; ++g) {
      if (nd.GpuFree(g)) mask |= uint64_t{1} << g;
    }
    int32_t free = std::popcount(mask);
    if (free < gpus) continue;
    int64_t score = ScoreNode(free, nd.gpus, gpus);
    if (score > best_score) {  // strict: ties keep the lower id seen first
      best_score = score;
      best = &nd;
      best_mask = mask;
    }
  }
  if (!best) {
    r.outcome = PlaceOutcome::kWait;
    r.reason = "no node has " + std::to_string(gpus) + " free GPUs";
    return r;
  }
  r.outcome = PlaceOutcome::kPlaced;
  r.placement.slices.push_back(NodeSlice{best->id, LowestBits(best_mask, gpus)});
  return r;
}

}  // namespace rsv
