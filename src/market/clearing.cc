#include "market/clearing.h"

#include <algorithm>
#include <bit>
#include <map>
#include <tuple>
#include <unordered_set>

namespace rsv {

bool RanksAhead(const Bid& a, const Bid& b) {
  if (a.limit != b.limit) return a.limit > b.limit;
  if ((a.unit > 0) != (b.unit > 0)) return b.unit > 0;
  bool ha = a.running || a.preempting, hb = b.running || b.preempting;
  if (ha != hb) return ha;
  if (a.unit != b.unit) return a.unit < b.unit;
  if (a.submitted != b.submitted) return a.submitted < b.submitted;
  return a.job < b.job;
}

void SortByRank(std::vector<Bid>& bids) { std::sort(bids.begin(), bids.end(), RanksAhead); }

Duration LostWork(const Bid& b, Timestamp now) {
  Timestamp since = std::max(b.started, b.last_checkpoint);
  return since < now ? now - since : Duration();
}

bool VictimBefore(const Bid& a, const Bid& b, Timestamp now) {
  if ((a.unit > 0) != (b.unit > 0)) return a.unit > 0;
  if (a.limit != b.limit) return a.limit < b.limit;
  Duration la = LostWork(a, now), lb = LostWork(b, now);
  if (la != lb) return la < lb;
  if (a.started != b.started) return a.started > b.started;
  return a.job > b.job;
}

namespace {

// The cost of a victim set: how many base gangs it stops (units first), the highest limit
// stopped, then how many jobs, then the work they lose, then the higher unit numbers (a job
// shrinks from its last unit), then where the gang lands, then the ids (a total order, so the
// choice is unique).
struct SetCost {
  int32_t bases = 0;
  Money max_limit;
  int32_t count = 0;
  int64_t lost_us = 0;
  int32_t neg_units = 0;  // minus the unit numbers stopped: a job's last unit goes first
  int32_t first_node = 0;
  std::vector<uint32_t> ids;  // sorted

  bool operator<(const SetCost& o) const {
    return std::tie(bases, max_limit, count, lost_us, neg_units, first_node, ids) <
           std::tie(o.bases, o.max_limit, o.count, o.lost_us, o.neg_units, o.first_node, o.ids);
  }
};

// Candidates by job id for "may this GPU's holder be stopped?": a sorted index, so building it
// costs the candidates, not the highest job id ever submitted.
class CandidateIndex {
 public:
  explicit CandidateIndex(const std::vector<Bid>& candidates) : candidates_(candidates) {
    index_.reserve(candidates.size());
    for (size_t i = 0; i < candidates.size(); ++i) {
      index_.emplace_back(candidates[i].job.value(), static_cast<int32_t>(i));
    }
    std::sort(index_.begin(), index_.end());
  }
  const Bid* Find(JobId job) const {
    if (!job.valid()) return nullptr;
    auto it = std::lower_bound(index_.begin(), index_.end(), std::make_pair(job.value(), -1));
    return it != index_.end() && it->first == job.value() ? &candidates_[it->second] : nullptr;
  }

 private:
  const std::vector<Bid>& candidates_;
  std::vector<std::pair<uint32_t, int32_t>> index_;  // (job id, position), by id
};

struct NodeVictim {
  const Bid* bid;
  uint64_t mask;  // its GPUs on this node
};

// Victims holding GPUs on a node that `base` does not already count as free (within `allowed`).
std::vector<NodeVictim> VictimsOnNode(const Node& node, uint64_t free, uint64_t allowed,
                                      const CandidateIndex& idx) {
  std::vector<NodeVictim> out;
  for (int32_t g = 0; g < node.gpus; ++g) {
    if (((free >> g) & 1) || !((allowed >> g) & 1)) continue;
    const Bid* b = idx.Find(node.Holder(g));
    if (!b) continue;
    auto it = std::find_if(out.begin(), out.end(), [&](const NodeVictim& v) { return v.bid == b; });
    if (it == out.end()) {
      out.push_back(NodeVictim{b, uint64_t{1} << g});
    } else {
      it->mask |= uint64_t{1} << g;
    }
  }
  return out;
}

SetCost CostOfSet(const std::vector<const Bid*>& set, int32_t first_node, Timestamp now) {
  SetCost c;
  c.count = static_cast<int32_t>(set.size());
  c.first_node = first_node;
  for (const Bid* b : set) {
    c.bases += b->unit == 0;
    c.neg_units -= b->unit;
    c.max_limit = std::max(c.max_limit, b->limit);
    c.lost_us += LostWork(*b, now).micros();
    c.ids.push_back(b->job.value());
  }
  std::sort(c.ids.begin(), c.ids.end());
  return c;
}

int32_t GpusOf(const std::vector<const Bid*>& set) {
  int32_t n = 0;
  for (const Bid* b : set) n += b->gpus;
  return n;
}

constexpr size_t kMaxEnumeratedVictims = 12;

// Best victim subset on one node for a single-node gang, or nullopt.
std::optional<std::pair<SetCost, uint64_t>> BestOnNode(const std::vector<NodeVictim>& victims,
                                                       uint64_t free, int32_t gpus,
                                                       int32_t budget_needed, int32_t local,
                                                       Timestamp now) {
  std::optional<std::pair<SetCost, uint64_t>> best;
  auto consider = [&](const std::vector<const Bid*>& set, uint64_t avail) {
    if (std::popcount(avail) < gpus || GpusOf(set) < budget_needed) return;
    SetCost c = CostOfSet(set, local, now);
    if (!best || c < best->first) best = std::make_pair(std::move(c), avail);
  };
  if (victims.size() <= kMaxEnumeratedVictims) {
    std::vector<const Bid*> set;
    for (uint32_t m = 1; m < (1u << victims.size()); ++m) {
      set.clear();
      uint64_t avail = free;
      for (size_t i = 0; i < victims.size(); ++i) {
        if (m & (1u << i)) {
          set.push_back(victims[i].bid);
          avail |= victims[i].mask;
        }
      }
      consider(set, avail);
    }
    return best;
  }
  // Many small jobs on one large node: take victims in victim order until the gang fits.
  std::vector<NodeVictim> order = victims;
  std::sort(order.begin(), order.end(), [&](const NodeVictim& a, const NodeVictim& b) {
    return VictimBefore(*a.bid, *b.bid, now);
  });
  std::vector<const Bid*> set;
  uint64_t avail = free;
  for (const NodeVictim& v : order) {
    if (std::popcount(avail) >= gpus && GpusOf(set) >= budget_needed) break;
    set.push_back(v.bid);
    avail |= v.mask;
  }
  consider(set, avail);
  return best;
}

std::optional<VictimChoice> FindVictimsMulti(const ClusterState& state, const FreeMap& base,
                                             const CandidateIndex& idx, int32_t gpus,
                                             int32_t budget_needed, Timestamp now,
                                             const GpuDomain* domain) {
  const int32_t size = base.largest_node();
  const int32_t k = gpus / size;
  struct Clearable {
    int32_t local;
    std::vector<const Bid*> victims;
    SetCost cost;
  };
  std::vector<Clearable> nodes;
  for (int32_t i = 0; i < base.node_count(); ++i) {
    NodeId id = base.node_id(i);
    if (!base.ready(id) || base.capacity(id) != size) continue;
    const Node& nd = state.node(id);
    uint64_t free = base.free_mask(id);
    std::vector<NodeVictim> vs = VictimsOnNode(nd, free, domain ? (*domain)[i] : ~uint64_t{0}, idx);
    uint64_t avail = free;
    std::vector<const Bid*> set;
    for (const NodeVictim& v : vs) {
      avail |= v.mask;
      set.push_back(v.bid);
    }
    if (std::popcount(avail) < size) continue;
    SetCost c = CostOfSet(set, i, now);
    nodes.push_back(Clearable{i, std::move(set), std::move(c)});
  }
  std::sort(nodes.begin(), nodes.end(),
            [](const Clearable& a, const Clearable& b) { return a.cost < b.cost; });
  // Choose the k cheapest clearable nodes inside one rack, else one zone, else anywhere.
  auto pick = [&](auto domain_of) -> std::optional<std::pair<SetCost, std::vector<int32_t>>> {
    std::map<int32_t, std::vector<const Clearable*>> by_domain;
    for (const Clearable& c : nodes) {
      auto& v = by_domain[domain_of(state.node(base.node_id(c.local)))];
      if (static_cast<int32_t>(v.size()) < k) v.push_back(&c);
    }
    std::optional<std::pair<SetCost, std::vector<int32_t>>> best;
    for (const auto& [domain, chosen] : by_domain) {
      if (static_cast<int32_t>(chosen.size()) < k) continue;
      std::vector<const Bid*> all;
      std::vector<int32_t> locals;
      for (const Clearable* c : chosen) {
        locals.push_back(c->local);
        for (const Bid* b : c->victims) {
          if (std::find(all.begin(), all.end(), b) == all.end()) all.push_back(b);
        }
      }
      if (GpusOf(all) < budget_needed) continue;
      std::sort(locals.begin(), locals.end());
      SetCost cost = CostOfSet(all, locals.front(), now);
      if (!best || cost < best->first) best = std::make_pair(std::move(cost), std::move(locals));
    }
    return best;
  };
  auto chosen = pick([](const Node& n) { return n.rack; });
  if (!chosen) chosen = pick([](const Node& n) { return n.zone; });
  if (!chosen) chosen = pick([](const Node&) { return 0; });
  if (!chosen) return std::nullopt;
  VictimChoice out;
  for (uint32_t id : chosen->first.ids) out.victims.push_back(JobId(id));
  for (int32_t local : chosen->second) {
    NodeId id = base.node_id(local);
    out.placement.slices.push_back(
        NodeSlice{id, size >= 64 ? ~uint64_t{0} : (uint64_t{1} << size) - 1});
  }
  return out;
}

}  // namespace

std::optional<VictimChoice> FindVictims(const ClusterState& state, const FreeMap& base,
                                        const std::vector<Bid>& candidates, int32_t gpus,
                                        int32_t budget_needed, Timestamp now,
                                        const GpuDomain* domain) {
  std::string reason;
  if (!base.Feasible(gpus, &reason)) return std::nullopt;
  CandidateIndex idx(candidates);
  if (gpus > base.largest_node()) {
    return FindVictimsMulti(state, base, idx, gpus, budget_needed, now, domain);
  }
  std::optional<std::pair<SetCost, uint64_t>> best;
  NodeId best_node;
  for (int32_t i = 0; i < base.node_count(); ++i) {
    NodeId id = base.node_id(i);
    if (!base.ready(id)) continue;
    uint64_t free = base.free_mask(id);
    const Node& nd = state.node(id);
    std::vector<NodeVictim> vs = VictimsOnNode(nd, free, domain ? (*domain)[i] : ~uint64_t{0}, idx);
    if (vs.empty()) continue;
    int32_t reachable = std::popcount(free);
    for (const NodeVictim& v : vs) reachable += std::popcount(v.mask);
    if (reachable < gpus) continue;
    auto here = BestOnNode(vs, free, gpus, budget_needed, i, now);
    if (here && (!best || here->first < best->first)) {
      best = std::move(here);
      best_node = id;
    }
  }
  if (!best) return std::nullopt;
  VictimChoice out;
  for (uint32_t id : best->first.ids) out.victims.push_back(JobId(id));
  out.placement.slices.push_back(NodeSlice{best_node, LowestBits(best->second, gpus)});
  return out;
}

std::optional<VictimChoice> FindVictimsBruteForce(const ClusterState& state, const FreeMap& base,
                                                  const std::vector<Bid>& candidates, int32_t gpus,
                                                  int32_t budget_needed, Timestamp now) {
  std::optional<std::pair<SetCost, std::pair<NodeId, uint64_t>>> best;
  const size_t n = candidates.size();
  for (uint32_t m = 1; m < (1u << n); ++m) {
    std::vector<const Bid*> set;
    for (size_t i = 0; i < n; ++i) {
      if (m & (1u << i)) set.push_back(&candidates[i]);
    }
    if (GpusOf(set) < budget_needed) continue;
    for (int32_t i = 0; i < base.node_count(); ++i) {
      NodeId id = base.node_id(i);
      if (!base.ready(id) || base.capacity(id) < gpus) continue;
      const Node& nd = state.node(id);
      uint64_t avail = base.free_mask(id);
      size_t on_node = 0;
      for (const Bid* b : set) {
        bool here = false;
        for (int32_t g = 0; g < nd.gpus; ++g) {
          if (nd.Holder(g) == b->job) {
            avail |= uint64_t{1} << g;
            here = true;
          }
        }
        on_node += here;
      }
      // Only jobs on the gang's node are stopped: each victim must make room where it lands.
      if (on_node != set.size() || std::popcount(avail) < gpus) continue;
      SetCost c = CostOfSet(set, i, now);
      if (!best || c < best->first) best = std::make_pair(std::move(c), std::make_pair(id, avail));
    }
  }
  if (!best) return std::nullopt;
  VictimChoice out;
  for (uint32_t id : best->first.ids) out.victims.push_back(JobId(id));
  out.placement.slices.push_back(
      NodeSlice{best->second.first, LowestBits(best->second.second, gpus)});
  return out;
}

namespace {

class VectorPending : public PendingBids {
 public:
  explicit VectorPending(const std::vector<Bid>& book) : book_(book) {}
  const Bid* Next() override {
    while (i_ < book_.size() && (book_[i_].running || book_[i_].preempting)) ++i_;
    return i_ < book_.size() ? &book_[i_++] : nullptr;
  }

 private:
  const std::vector<Bid>& book_;
  size_t i_ = 0;
};

// Where a share starts (docs/market.md, "GPU shares"): among the GPUs of shares with room for it
// (the fullest kShareCandidates of them) and, when `may_open`, the free GPU a one-GPU gang would
// take, the look-ahead packer (placement/shared.h) chooses over the candidates' nodes. `host`:
// the index in `s.share_hosts`, or -1 for a GPU more.
struct ShareSpot {
  NodeId node;
  int32_t gpu = 0;
  int32_t host = -1;
};
constexpr size_t kShareCandidates = 16;

std::optional<ShareSpot> PlaceShare(const Supply& s, const Bid& b, bool may_open) {
  const int64_t memory = b.gpu_memory_mib;
  std::vector<int32_t> hosts;
  for (size_t i = 0; i < s.share_hosts.size(); ++i) {
    const Supply::ShareHost& h = s.share_hosts[i];
    if (h.free_milli >= b.milli && h.free_memory_mib >= memory) {
      hosts.push_back(static_cast<int32_t>(i));
    }
  }
  auto fuller = [&](int32_t a, int32_t c) {
    const Supply::ShareHost& x = s.share_hosts[a];
    const Supply::ShareHost& y = s.share_hosts[c];
    return std::make_tuple(x.free_milli, x.node.value(), x.gpu) <
           std::make_tuple(y.free_milli, y.node.value(), y.gpu);
  };
  const size_t keep = std::min(hosts.size(), kShareCandidates);
  std::partial_sort(hosts.begin(), hosts.begin() + static_cast<std::ptrdiff_t>(keep), hosts.end(),
                    fuller);
  hosts.resize(keep);
  std::optional<NodeSlice> fresh;
  if (may_open) {
    PlaceResult pr = s.free.Place(1);
    if (pr.outcome == PlaceOutcome::kPlaced &&
        s.state->node(pr.placement.slices[0].node).gpu_memory_mib >= memory) {
      fresh = pr.placement.slices[0];
    } else if (pr.outcome == PlaceOutcome::kPlaced) {
      // That node's GPUs have too little memory: the fullest node whose GPUs have enough.
      int32_t best = -1, best_free = 0;
      for (int32_t i = 0; i < s.free.node_count(); ++i) {
        const NodeId id = s.free.node_id(i);
        const int32_t n = std::popcount(s.free.free_mask(id));
        if (n == 0 || !s.free.ready(id) || s.state->node(id).gpu_memory_mib < memory) continue;
        if (best < 0 || n < best_free) best = i, best_free = n;
      }
      if (best >= 0) {
        const NodeId id = s.free.node_id(best);
        fresh = NodeSlice{id, uint64_t{1} << std::countr_zero(s.free.free_mask(id))};
      }
    }
  }
  if (hosts.empty() && !fresh) return std::nullopt;
  // The candidates' nodes as the packer sees them: a GPU's room if it is a candidate, else none.
  std::vector<NodeId> ids;
  std::vector<SharedNode> nodes;
  auto view = [&](NodeId id) -> SharedNode& {
    for (size_t i = 0; i < ids.size(); ++i) {
      if (ids[i] == id) return nodes[i];
    }
    ids.push_back(id);
    nodes.push_back(SharedNode{
        .free_cpu_milli = INT32_MAX / 2,
        .free_memory_mib = INT64_MAX / 4,
        .model = "",
        .gpu_free_milli = std::vector<int32_t>(static_cast<size_t>(s.state->node(id).gpus), 0)});
    return nodes.back();
  };
  for (int32_t i : hosts) {
    view(s.share_hosts[i].node).gpu_free_milli[s.share_hosts[i].gpu] = s.share_hosts[i].free_milli;
  }
  if (fresh) {
    SharedNode& n = view(fresh->node);
    for (int g = 0; g < static_cast<int>(n.gpu_free_milli.size()); ++g) {
      if ((fresh->gpu_mask >> g) & 1) n.gpu_free_milli[g] = kMilliPerGpu;
    }
  }
  SharePacker packer(std::move(nodes), s.share_mix, SharePolicy::kLookahead);
  std::optional<SharedPlacement> p = packer.Place(
      PodRequest{.cpu_milli = 0, .memory_mib = 0, .gpus = 1, .gpu_milli = b.milli, .models = ""});
  if (!p) return std::nullopt;
  ShareSpot out{ids[p->node], p->gpus[0], -1};
  for (int32_t i : hosts) {
    if (s.share_hosts[i].node == out.node && s.share_hosts[i].gpu == out.gpu) out.host = i;
  }
  return out;
}

}  // namespace

ClearingResult Clear(const std::vector<Bid>& book, Supply supply, Timestamp now) {
  std::vector<Bid> holders;
  for (const Bid& b : book) {
    if (b.running || b.preempting) holders.push_back(b);
  }
  VectorPending pending(book);
  return Clear(holders, pending, std::move(supply), now);
}

ClearingResult Clear(const std::vector<Bid>& holders, PendingBids& pending, Supply s,
                     Timestamp now) {
  ClearingResult r;
  const MarketParams& p = s.params;
  int32_t committed = 0;  // GPUs of running jobs kept plus bids started or holding a claim
  int32_t held = 0;       // GPUs physically held by spot jobs now (plus those started)
  std::optional<Money> lowest_holder = s.holder_floor;
  // GPUs of shares with room left: while there are any, a share may start without a GPU more.
  int64_t host_room = 0;
  // At least the most thousandths free on any GPU of shares or GPU being freed for a share: a
  // share asking more fits none. Exact when a share finds no room; rooms that shrink since leave
  // it high, never low.
  int32_t room_bound = 0;
  for (const Supply::ShareHost& h : s.share_hosts) {
    host_room += h.free_milli > 0;
    room_bound = std::max(room_bound, h.free_milli);
  }
  std::vector<const Bid*> running;  // kept running jobs, in rank order
  for (const Bid& b : holders) {
    held += b.gpus;
    lowest_holder = lowest_holder ? std::min(*lowest_holder, b.limit) : b.limit;
    if (b.running) {
      committed += b.gpus;
      running.push_back(&b);
    }
  }
  std::vector<uint8_t> noticed(running.size(), 0);
  const GpuDomain* domain = s.domain.empty() ? nullptr : &s.domain;
  auto release = [&](const Placement& p) { s.soon.Release(domain ? Clip(p, s.soon, *domain) : p); };
  // GPUs of shares (docs/market.md, "GPU shares"): the holder standing for each, and the room a
  // share may still join. A GPU whose shares get notice takes no share more; a GPU a share joins
  // here is no victim for the bids after it (they rank below that share).
  std::vector<size_t> host_holder(s.share_hosts.size(), SIZE_MAX);  // by share_hosts index
  for (size_t i = 0; i < running.size(); ++i) {
    if (running[i]->share_host >= 0) host_holder[running[i]->share_host] = i;
  }
  auto stop_host = [&](const Bid& b) {
    if (b.share_host < 0) return;
    Supply::ShareHost& h = s.share_hosts[b.share_host];
    host_room -= h.free_milli > 0;
    h.free_milli = 0;
  };
  // Supply shrank below what runs (an owner stopped lending): the lowest-ranked go first.
  for (size_t i = running.size(); i-- > 0 && committed > s.budget;) {
    noticed[i] = 1;
    committed -= running[i]->gpus;
    r.notices.push_back(Notice{running[i]->job, JobId(), "supply"});
    release(*running[i]->placement);
    stop_host(*running[i]);
  }

  // Victim candidates for pending bids: running jobs not yet noticed, lowest limit first (the
  // rank order, highest limit first, reversed: no sort).
  std::vector<size_t> by_limit;
  by_limit.reserve(running.size());
  for (size_t i = running.size(); i-- > 0;) {
    if (!noticed[i]) by_limit.push_back(i);
  }
  size_t cheapest = 0;  // first entry of by_limit not yet noticed
  auto lowest_candidate = [&]() -> std::optional<Money> {
    while (cheapest < by_limit.size() && noticed[by_limit[cheapest]]) ++cheapest;
    if (cheapest == by_limit.size()) return std::nullopt;
    return running[by_limit[cheapest]]->limit;
  };

  // Within one cycle free GPUs only shrink, so a size that failed fails for every larger gang.
  int32_t free_fail = INT32_MAX;
  int32_t soon_fail = INT32_MAX;
  int32_t preempt_fail = INT32_MAX;  // later bids have lower limits: fewer candidates
  bool any_soon = s.soon.free_gpus() > s.free.free_gpus();
  // Whether no bid of at least one GPU at `limit` or less can start, claim or preempt any more.
  // Once true it stays true: only a preemption loosens the bounds, and none can follow.
  auto exhausted = [&](Money limit) {
    bool room = committed < s.budget;
    bool start = room && held < s.budget && s.free.free_gpus() > 0 && free_fail > 1;
    bool claim = room && any_soon && s.soon.free_gpus() > 0 && soon_fail > 1;
    std::optional<Money> low = lowest_candidate();
    bool preempt = low && Outbids(limit, *low, p.min_increment) && preempt_fail > 1;
    return !start && !claim && !preempt;
  };
  std::string why;
  // Whether a job started in this clearing (its units may follow it), indexed as asked.
  std::unordered_set<uint32_t> started;
  size_t indexed = 0;
  auto started_now = [&](JobId job) {
    for (; indexed < r.starts.size(); ++indexed) {
      // A start on an agent's node is two-phase: the job is starting, not running, until the
      // agent confirms it, and its units wait for that, in this clearing as in later ones.
      bool two_phase = false;
      for (const NodeSlice& sl : r.starts[indexed].placement.slices) {
        two_phase = two_phase || (s.state && s.state->node(sl.node).agent);
      }
      if (!two_phase) started.insert(r.starts[indexed].job.value());
    }
    return started.count(job.value()) > 0;
  };
  bool whole_done = false;  // only shares may still start (exhausted for every other bid)
  int32_t share_fail_milli = INT32_MAX;  // the smallest share that found no room
  int64_t share_fail_memory = 0;
  // GPUs a share claimed or preempted for in this clearing, with the room left on each: a later
  // share with no room waits on one of them rather than freeing a GPU of its own.
  std::vector<Supply::ShareHost> rooms_soon;
  int64_t soon_room = 0;                      // how many of them have room left
  auto room_grew = [&](int32_t free_milli) {  // a share that found none may find it there
    room_bound = std::max(room_bound, free_milli);
    share_fail_milli = INT32_MAX;
    share_fail_memory = 0;
  };
  auto open_room = [&](const Placement& placed, const Bid& b) {
    const NodeSlice& sl = placed.slices.front();
    rooms_soon.push_back(
        Supply::ShareHost{sl.node, std::countr_zero(sl.gpu_mask), kMilliPerGpu - b.milli,
                          s.state->node(sl.node).gpu_memory_mib - b.gpu_memory_mib});
    soon_room += rooms_soon.back().free_milli > 0;
    room_grew(rooms_soon.back().free_milli);
  };
  // A share asking for more memory than some GPUs of the pool have claims and stops only where
  // GPUs have it: the domain of those GPUs (of the ones spot may use), and `soon` limited to it,
  // built once per amount asked and kept in step with `soon` until a preemption releases GPUs.
  // A claim or victim search limited so fails for every share asking as much or more (until a
  // preemption frees more).
  std::map<int64_t, GpuDomain> with_memory;
  auto memory_domain = [&](int64_t memory) -> const GpuDomain& {
    auto [it, fresh] = with_memory.try_emplace(memory);
    if (fresh) {
      it->second.assign(static_cast<size_t>(s.free.node_count()), 0);
      for (int32_t i = 0; i < s.free.node_count(); ++i) {
        if (s.state->node(s.free.node_id(i)).gpu_memory_mib >= memory) {
          it->second[i] = domain ? (*domain)[i] : ~0ULL;
        }
      }
    }
    return it->second;
  };
  std::map<int64_t, FreeMap> soon_with_memory;
  auto soon_for = [&](int64_t memory) -> const FreeMap& {
    auto [it, fresh] = soon_with_memory.try_emplace(memory);
    if (fresh) it->second = s.soon.Restricted(memory_domain(memory));
    return it->second;
  };
  auto occupy = [&](const Placement& placed) {  // taken now or claimed: off `free` and `soon`
    s.free.Occupy(placed);
    s.soon.Occupy(placed);
    for (auto& [memory, soon] : soon_with_memory) soon.Occupy(placed);
  };
  int64_t claim_fail_memory = INT64_MAX;
  int64_t preempt_fail_memory = INT64_MAX;
  // Whether a bid could run in this pool at all: a gang of its size fits, and a share's memory
  // fits one GPU. One that cannot is infeasible, and sets no price.
  auto feasible = [&](const Bid& b) {
    return s.free.Feasible(b.gpus, &why) &&
           (b.milli == kMilliPerGpu || b.gpu_memory_mib <= s.max_gpu_memory_mib);
  };
  while (const Bid* next = pending.Next()) {
    const Bid& b = *next;
    if (!whole_done && exhausted(b.limit)) {
      r.rest_left_out = true;
      whole_done = true;
    }
    // Once whole bids are done no GPU more opens, and room only shrinks: when the smallest share
    // found none, no share after it can start either.
    const bool shares_done =
        (share_fail_milli <= s.share_min_milli && share_fail_memory <= s.share_min_memory_mib) ||
        room_bound < s.share_min_milli;
    if (whole_done && (host_room + soon_room == 0 || shares_done || b.limit < p.reserve_price)) {
      // The rest are left out; the first that could run at all sets the price.
      for (const Bid* q = next; q && !r.highest_unplaced && q->limit >= p.reserve_price;
           q = pending.Next()) {
        if (q->unit > 0 && !q->parent_ready && !started_now(q->parent)) continue;
        if (feasible(*q)) r.highest_unplaced = q->limit;
      }
      break;
    }
    if (whole_done && b.milli == kMilliPerGpu) {
      // Only a share may still start (on a GPU of shares with room): the others are left out,
      // and the first of them that could run at all sets the price.
      if (!r.highest_unplaced && !(b.unit > 0 && !b.parent_ready && !started_now(b.parent)) &&
          feasible(b)) {
        r.highest_unplaced = b.limit;
      }
      continue;
    }
    if (b.unit > 0 && !b.parent_ready && !started_now(b.parent)) {
      continue;  // its job does not run (yet): the unit cannot start, and sets no price
    }
    ++r.examined;
    const bool share = b.milli < kMilliPerGpu;
    if (!feasible(b)) {
      r.infeasible.push_back(b.job);
      continue;
    }
    if (b.limit < p.reserve_price) {
      r.unplaced.push_back(b.job);
      continue;
    }
    if (share) {  // on a GPU of shares with room, or on a GPU more while the budget allows
      const bool may_open =
          committed < s.budget && held < s.budget && free_fail > 1 && s.free.free_gpus() > 0;
      // Room only shrinks within a clearing (unless a GPU more opens): a share at least as
      // large as one that found none finds none.
      const bool hopeless =
          !may_open && ((b.milli >= share_fail_milli && b.gpu_memory_mib >= share_fail_memory) ||
                        b.milli > room_bound);
      if (std::optional<ShareSpot> spot = hopeless ? std::nullopt : PlaceShare(s, b, may_open)) {
        Placement placed{{NodeSlice{spot->node, uint64_t{1} << spot->gpu}}};
        if (spot->host < 0) {
          occupy(placed);
          ++committed;
          ++held;
          s.share_hosts.push_back(Supply::ShareHost{spot->node, spot->gpu, kMilliPerGpu,
                                                    s.state->node(spot->node).gpu_memory_mib});
          spot->host = static_cast<int32_t>(s.share_hosts.size()) - 1;
          ++host_room;
          room_grew(kMilliPerGpu);
        } else if (static_cast<size_t>(spot->host) < host_holder.size() &&
                   host_holder[spot->host] != SIZE_MAX) {
          noticed[host_holder[spot->host]] = 1;  // no victim any more (see above)
        }
        Supply::ShareHost& h = s.share_hosts[spot->host];
        h.free_milli -= b.milli;
        h.free_memory_mib -= b.gpu_memory_mib;
        host_room -= h.free_milli == 0;
        lowest_holder = lowest_holder ? std::min(*lowest_holder, b.limit) : b.limit;
        r.starts.push_back(Start{b.job, std::move(placed)});
        continue;
      }
      if (!hopeless) {  // a GPU being freed for an earlier share, with room for this one (fullest)
        Supply::ShareHost* room = nullptr;
        for (Supply::ShareHost& h : rooms_soon) {
          if (h.free_milli >= b.milli && h.free_memory_mib >= b.gpu_memory_mib &&
              (!room || h.free_milli < room->free_milli)) {
            room = &h;
          }
        }
        if (room) {
          room->free_milli -= b.milli;
          room->free_memory_mib -= b.gpu_memory_mib;
          soon_room -= room->free_milli == 0;
          r.waiting.push_back(b.job);
          continue;
        }
      }
      if (!may_open && !hopeless) {  // no room for it: the bound is made exact again
        room_bound = 0;
        for (const auto* rooms : {&s.share_hosts, &rooms_soon}) {
          for (const Supply::ShareHost& h : *rooms) room_bound = std::max(room_bound, h.free_milli);
        }
      }
      if (!may_open && (b.milli < share_fail_milli ||
                        (b.milli == share_fail_milli && b.gpu_memory_mib < share_fail_memory))) {
        share_fail_milli = b.milli;
        share_fail_memory = b.gpu_memory_mib;
      }
      // No room: it claims a GPU being freed, or preempts for one, as a one-GPU bid does, and
      // later shares may wait on the room it leaves there (docs/market.md, "GPU shares").
    }
    const bool by_memory = share && b.gpu_memory_mib > s.min_gpu_memory_mib;
    if (committed + b.gpus <= s.budget) {
      if (!share && b.gpus < free_fail) {
        PlaceResult pr = s.free.Place(b.gpus);
        if (pr.outcome == PlaceOutcome::kPlaced && held + b.gpus <= s.budget) {
          occupy(pr.placement);
          committed += b.gpus;
          held += b.gpus;
          lowest_holder = lowest_holder ? std::min(*lowest_holder, b.limit) : b.limit;
          r.starts.push_back(Start{b.job, std::move(pr.placement)});
          continue;
        }
        if (pr.outcome != PlaceOutcome::kPlaced) free_fail = b.gpus;
      }
      if (any_soon && b.gpus < soon_fail && !(by_memory && b.gpu_memory_mib >= claim_fail_memory)) {
        PlaceResult pr = by_memory ? soon_for(b.gpu_memory_mib).Place(1) : s.soon.Place(b.gpus);
        if (pr.outcome == PlaceOutcome::kPlaced) {
          occupy(pr.placement);
          committed += b.gpus;
          r.waiting.push_back(b.job);
          if (share) open_room(pr.placement, b);
          continue;
        }
        if (by_memory) {
          claim_fail_memory = b.gpu_memory_mib;
        } else {
          soon_fail = b.gpus;
        }
      }
    }
    // Preempt only jobs whose limit this bid beats by the minimum increment.
    std::optional<Money> low = lowest_candidate();
    if (low && Outbids(b.limit, *low, p.min_increment) && b.gpus < preempt_fail &&
        !(by_memory && b.gpu_memory_mib >= preempt_fail_memory)) {
      std::vector<Bid> candidates;
      for (size_t k = cheapest; k < by_limit.size(); ++k) {
        size_t i = by_limit[k];
        if (!Outbids(b.limit, running[i]->limit, p.min_increment)) break;
        if (!noticed[i]) candidates.push_back(*running[i]);
      }
      int32_t budget_needed = std::max(0, committed + b.gpus - s.budget);
      std::optional<VictimChoice> vc;
      if (by_memory) {  // only GPUs with the memory, of the ones spot may use
        vc = FindVictims(*s.state, soon_for(b.gpu_memory_mib), candidates, b.gpus, budget_needed,
                         now, &memory_domain(b.gpu_memory_mib));
      } else {
        vc = FindVictims(*s.state, s.soon, candidates, b.gpus, budget_needed, now, domain);
      }
      if (vc) {
        for (JobId v : vc->victims) {
          for (size_t i = 0; i < running.size(); ++i) {
            if (running[i]->job == v && !noticed[i]) {
              noticed[i] = 1;
              committed -= running[i]->gpus;
              release(*running[i]->placement);
              stop_host(*running[i]);
            }
          }
          r.notices.push_back(Notice{v, b.job, "outbid"});
        }
        soon_with_memory.clear();  // the victims' GPUs are released: limited maps are rebuilt
        occupy(vc->placement);
        committed += b.gpus;
        r.waiting.push_back(b.job);
        if (share) open_room(vc->placement, b);
        any_soon = true;
        soon_fail = INT32_MAX;  // the victims' leftover GPUs may fit gangs that failed before
        preempt_fail = INT32_MAX;
        claim_fail_memory = INT64_MAX;
        preempt_fail_memory = INT64_MAX;
        continue;
      }
      if (by_memory) {
        preempt_fail_memory = b.gpu_memory_mib;
      } else {
        preempt_fail = b.gpus;
      }
    }
    r.unplaced.push_back(b.job);
    if (!r.highest_unplaced) r.highest_unplaced = b.limit;
  }
  r.price = ClearingPrice(p.reserve_price, r.highest_unplaced, lowest_holder);
  return r;
}

Money ClearingPrice(Money reserve, std::optional<Money> highest_unplaced,
                    std::optional<Money> lowest_holder) {
  Money price = reserve;
  if (highest_unplaced && *highest_unplaced > price) price = *highest_unplaced;
  if (lowest_holder && *lowest_holder < price) price = *lowest_holder;
  return price;
}

}  // namespace rsv
