// market: the spot auction of one pool, as pure functions. Owns bid ranking, the uniform
// clearing price, admission in rank order while bids can be placed, and victim selection
// (which running spot jobs get notice so a higher bid or a reserved job can be placed).
// Data in, data out, time as an argument: Clear(book, supply, now) reads no clock and keeps no
// state. Depends on placement/, core/ and common/; never on scheduler/, server/, store/ or sim/.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "core/model.h"
#include "placement/placement.h"
#include "placement/shared.h"

namespace rsv {

// One spot job in the order book: a pending bid or a running job defending its GPUs.
struct Bid {
  JobId job;
  Money limit;
  Timestamp submitted;
  int32_t gpus = 0;
  bool running = false;                  // holds GPUs (running or starting)
  bool preempting = false;               // holds GPUs but has notice; frees them soon
  const Placement* placement = nullptr;  // when running or preempting
  Timestamp started;
  Timestamp last_checkpoint;
  // A unit of an elastic job (docs/market.md, "Elastic jobs"): its number and its job. A pending
  // unit starts only when `parent_ready` (its job runs) or its job starts in the same clearing.
  int32_t unit = 0;
  JobId parent = JobId();
  bool parent_ready = false;
  // A share of one GPU (docs/market.md, "GPU shares"): 1..999 thousandths (gpus is 1) and the
  // GPU memory it asks for. A holder standing for a GPU of shares has kMilliPerGpu.
  int32_t milli = kMilliPerGpu;
  int64_t gpu_memory_mib = 0;
  // A holder standing for the shares of the one GPU of its placement: that GPU's index in
  // Supply::share_hosts when it has room for a share more, else -1.
  int32_t share_host = -1;
};

// Rank order: higher limit first; at equal limits a base gang (any job that is not a unit)
// ahead of a unit, a job holding GPUs ahead of a pending one, a lower unit number first, then
// earlier submission, then lower id.
bool RanksAhead(const Bid& a, const Bid& b);
void SortByRank(std::vector<Bid>& bids);

// Work a victim would lose if stopped now: time since its last checkpoint (or its start).
Duration LostWork(const Bid& b, Timestamp now);

// Victim order: units before base gangs; then lowest limit first; among equals the one that
// loses the least work, then the most recently started, then the highest id.
bool VictimBefore(const Bid& a, const Bid& b, Timestamp now);

struct MarketParams {
  Money reserve_price;
  Money min_increment;
};

// What the spot market may use in this pool right now.
struct Supply {
  const ClusterState* state = nullptr;  // nodes' GPU holders (for victim search)
  PoolId pool;
  FreeMap free;        // GPUs free now that spot may take (claims of reserved jobs removed)
  FreeMap soon;        // `free` plus GPUs of jobs under notice not yet claimed
  int32_t budget = 0;  // GPUs spot may hold in total (ready − reserved use − unlent idle)
  // GPUs spot may use at all, by local node index of `free` (empty: all). GPUs outside it (a
  // reservation that does not lend) are neither taken nor freed for a bid, even when a victim
  // holding them stops.
  GpuDomain domain;
  MarketParams params;
  // GPU shares (docs/market.md, "GPU shares"). The GPUs spot shares hold, with the room left on
  // each: a share may start there without taking a GPU more. Each such GPU is among the holders
  // as one bid (its shares stop together to free it).
  struct ShareHost {
    NodeId node;
    int32_t gpu = 0;
    int32_t free_milli = 0;
    int64_t free_memory_mib = 0;
  };
  std::vector<ShareHost> share_hosts;
  WorkloadMix share_mix;  // where a share goes: the look-ahead's mix
  // The smallest share and the least memory any share of the pool asks for (a lower bound over
  // the pending ones): once a share that small finds no room, no later share can.
  int32_t share_min_milli = 1;
  int64_t share_min_memory_mib = 0;
  std::optional<Money> holder_floor;  // the lowest limit among the shares (each pays the price)
  int64_t max_gpu_memory_mib = 0;     // the most memory of one GPU on the pool's ready nodes
  int64_t min_gpu_memory_mib = 0;     // the least (a share asking more claims and stops by it)
};

struct Notice {
  JobId victim;
  JobId beneficiary;   // the bid or reserved job that needs its GPUs; invalid for "supply"
  std::string reason;  // "outbid", "reclaim", "supply"
};

struct Start {
  JobId job;
  Placement placement;
};

struct ClearingResult {
  Money price;
  std::optional<Money> highest_unplaced;  // the bid that set the price, if any did
  std::vector<Start> starts;              // placed on free GPUs: start now
  std::vector<JobId> waiting;             // holds a claim on GPUs being freed: starts later
  std::vector<Notice> notices;
  std::vector<JobId> unplaced;    // no room (sets the price)
  std::vector<JobId> infeasible;  // can never fit this pool as it is (no price effect)
  // Pending bids examined (listed above). When `rest_left_out`, the pending bids after them
  // were not examined: once no later bid can start, claim or preempt, every one of them is left
  // out, and only the first that could run at all is read (it may set the price).
  int32_t examined = 0;
  bool rest_left_out = false;
};

// Pending bids (not holding GPUs) in rank order, pulled one at a time, so a long queue is read
// only as far as a bid can still start, claim or preempt.
class PendingBids {
 public:
  virtual ~PendingBids() = default;
  virtual const Bid* Next() = 0;  // nullptr after the last; valid until the next call
};

// Whether a bid at `bid` may preempt a running job at `running`: it must exceed it, by at least
// the pool's minimum increment (so equal limits never churn, even with a zero increment).
inline bool Outbids(Money bid, Money running, Money min_increment) {
  return bid > running && bid - min_increment >= running;
}

// Clearing price = max(reserve, highest unplaced limit), capped at the lowest limit among spot
// jobs holding GPUs (so every one of them pays the same price, never above its limit).
Money ClearingPrice(Money reserve, std::optional<Money> highest_unplaced,
                    std::optional<Money> lowest_holder);

// `holders`: the bids holding GPUs (running or under notice), in rank order (SortByRank);
// `pending`: the other bids, in rank order. Deterministic: same inputs, same result.
ClearingResult Clear(const std::vector<Bid>& holders, PendingBids& pending, Supply supply,
                     Timestamp now);
// The same over one book holding both, in rank order.
ClearingResult Clear(const std::vector<Bid>& book, Supply supply, Timestamp now);

// Victim search for one gang. `candidates` are the running jobs that may be stopped (limit
// already filtered by the caller), `base` the GPUs available without stopping anyone; victims
// must also free at least `budget_needed` GPUs of the spot budget. Only jobs holding GPUs where
// the gang will land are stopped (a victim elsewhere would not make it placeable). Among the
// sets that work, the one that stops the fewest base gangs (units of elastic jobs go first),
// then the lowest highest limit, then fewest jobs, then least lost work, then the lowest node,
// then the lowest ids. Returns the chosen victims
// and where the gang would go, or nullopt when no set of candidates makes it placeable.
// With a `domain`, the gang may use only the domain's GPUs (an owner reclaiming inside its
// reservation): `base` must already be limited to it, and a victim's GPUs outside it do not
// count towards the room it makes.
struct VictimChoice {
  std::vector<JobId> victims;
  Placement placement;
};
std::optional<VictimChoice> FindVictims(const ClusterState& state, const FreeMap& base,
                                        const std::vector<Bid>& candidates, int32_t gpus,
                                        int32_t budget_needed, Timestamp now,
                                        const GpuDomain* domain = nullptr);

// Reference victim search by enumerating every subset of candidates (tests, ≤ 12 candidates).
std::optional<VictimChoice> FindVictimsBruteForce(const ClusterState& state, const FreeMap& base,
                                                  const std::vector<Bid>& candidates, int32_t gpus,
                                                  int32_t budget_needed, Timestamp now);

}  // namespace rsv
