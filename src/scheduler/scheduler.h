// scheduler: the scheduling cycle. Owns the live cluster state, the per-pool indexes (free GPUs,
// reservation calendar, order book, price) and the ledger, and turns inputs (submissions,
// reservations, job exits, node changes, the passage of time) into typed decision events by
// running named, individually timed stages over the pure policies in placement/, market/ and
// reservation/. Never reads a clock: every call takes `now`. The server and the simulator both
// drive this class; it must never include anything from server/, store/, agent/ or sim/.
#pragma once

#include <cstdint>
#include <deque>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "common/clock.h"
#include "core/model.h"
#include "ledger/ledger.h"
#include "market/clearing.h"
#include "placement/placement.h"
#include "reservation/calendar.h"
#include "scheduler/events.h"

namespace rsv {

class ArchiveWriter;
class ArchiveReader;

enum class InvariantChecks {
  kOff,
  kPerCycle,  // after the last stage of every cycle (the simulator's default)
  kPerStage,  // after every stage (debug builds, tests)
};

struct SchedulerOptions {
#ifdef NDEBUG
  InvariantChecks checks = InvariantChecks::kOff;
#else
  InvariantChecks checks = InvariantChecks::kPerStage;
#endif
  bool keep_ledger_entries = true;
  const Ticker* ticker = nullptr;  // times the stages when set; never affects a decision
  // A spot job's exit at a fixpoint places the top bids onto the GPUs it freed at once, as the
  // next cycle would (docs/market.md, "Incremental decisions"). Off: the next decision is a full
  // cycle (the property test compares the two).
  bool refill_on_exit = true;
};

struct StageTiming {
  std::string name;
  int64_t nanos = 0;
};

struct CycleReport {
  Timestamp at;
  std::vector<StageTiming> stages;
  int32_t events = 0;  // emitted by this cycle
  bool incremental = false;
};

struct ReservationRequest {
  TenantId tenant;
  PoolId pool;
  int32_t gpus = 0;
  Timestamp start;
  Timestamp end;
  bool lend = true;
};

// Why a pending job is not running, from the last cycle's decisions (docs/market.md, "Why a
// job is pending"). `reason` is one of: dependency, reservation_not_started, reservation_full,
// claimed, below_price, no_placement, no_budget, infeasible, holdback, job_not_running,
// cooldown, not_decided.
struct PendingWhy {
  std::string reason;
  std::string detail;               // one line for people, with the numbers below
  int32_t position = 0;             // 1-based among the pool's pending spot bids, 0: not bidding
  int32_t bids = 0;                 // pending spot bids in the pool
  Money price;                      // the pool's clearing price now
  Money limit;                      // the job's limit
  std::optional<Money> runs_at;     // the limit at which it would run, where one would do
  int32_t gpus = 0;                 // the gang it needs
  int32_t largest_free = 0;         // no_placement: most free GPUs spot may use on one node
  int32_t free_gpus = 0;            // ... and in the pool
  JobId dependency;                 // dependency: the job it waits for
  std::optional<Timestamp> starts;  // reservation_not_started: when the next one starts
};

// Reserved GPU time by what became of it, per pool and tenant, in GPU-microseconds
// (docs/market.md, "The waste report"). The four parts sum to the time reserved.
struct ReservedTime {
  int64_t owner_used = 0;    // held by the owner's own reserved-tier jobs
  int64_t lent_sold = 0;     // lent, and held by spot jobs
  int64_t idle_unsold = 0;   // lent, but no spot job held it
  int64_t not_lendable = 0;  // idle under reservations that do not lend
};

// A pool's GPUs now, each counted in exactly one state: the six sum to the GPUs installed.
// `lent` is spot work on reserved GPUs, `spot_used` spot work on unreserved ones (the split the
// ledger credits owners by).
struct PoolUsage {
  int32_t reserved_used = 0;
  int32_t lent = 0;
  int32_t spot_used = 0;
  int32_t idle_reserved = 0;  // reserved, idle: lendable without a buyer, or not lendable
  int32_t idle = 0;           // unreserved and idle
  int32_t down = 0;           // on nodes that are not ready
  int32_t pending_bids = 0;   // spot bids waiting (units included)
  int64_t pending_bid_gpus = 0;
  bool operator==(const PoolUsage&) const = default;
};

// One reservation holder's GPUs in a pool now: reserved (active), used by its own jobs, lent
// (idle and lendable), and of those sold to spot jobs (the same split as the money).
struct OwnerNow {
  TenantId tenant;
  int32_t reserved = 0;
  int32_t used = 0;
  int32_t lent = 0;
  int32_t sold = 0;
};

struct Quote {
  Admission admission;  // by count and by shape (docs/market.md, "What a reservation guarantees")
  Placement binding;    // the GPUs it would hold, when admitted
  int32_t reservable = 0;  // ready GPUs minus holdback
  Money price_per_gpu_hour;
  Money total;  // for the whole window
};

class Scheduler {
 public:
  explicit Scheduler(SchedulerOptions options = {});

  // --- Fleet (operator) ---
  Result<PoolId> AddPool(PoolConfig config);
  // A pool's prices, notice cap and holdback change from `now` on (its name stays): what accrued
  // before is charged under the old settings.
  Status SetPoolConfig(PoolId pool, PoolConfig config, Timestamp now);
  Result<NodeId> AddNode(std::string name, PoolId pool, int32_t gpus, std::string topology);
  Result<TenantId> AddTenant(std::string name);
  // Deletes a tenant with no unfinished job and no reservation that has not ended (refused,
  // naming one, otherwise). Its history stays; its name may be used again.
  Status DeleteTenant(TenantId id, Timestamp now);
  // ready <-> draining <-> down. Down requeues the node's jobs at once (no notice possible).
  Status SetNodeState(NodeId node, NodeState state, Timestamp now);
  // Each GPU's memory on the node (docs/market.md, "GPU shares"); 0: unknown. Never below what
  // its shares hold now (ignored then).
  void SetGpuMemory(NodeId id, int64_t mib);
  // An agent runs this node from now on: later starts on it are two-phase (ConfirmStart).
  Status SetNodeAgent(NodeId node);

  // --- Reservations ---
  Result<Quote> QuoteReservation(const ReservationRequest& req, Timestamp now) const;
  // Confirms and charges, or fails with kResourceExhausted saying what would fit.
  Result<ReservationId> Reserve(const ReservationRequest& req, Timestamp now);
  // Shrinks the rest of the window to end now and credits the unused part at the return rate.
  Status ReturnReservation(ReservationId id, TenantId caller, Timestamp now);

  // --- Jobs ---
  Result<JobId> Submit(JobSpec spec, Timestamp now);
  // Submits and decides this one job against the current state without a full cycle when that
  // gives the same decision as RunCycle(now) would (the common case); otherwise runs the cycle.
  Result<JobId> SubmitAndDecide(JobSpec spec, Timestamp now, CycleReport* report = nullptr);
  Status Cancel(JobId job, Timestamp now);
  // A job under notice gives its GPUs back now.
  Status Release(JobId job, Timestamp now);
  // The job's process ended. Under notice any exit requeues it; otherwise success finishes it
  // and failure requeues it while restarts remain.
  // `detail` ("exit 3", "signal 9") goes into the job's end or requeue reason.
  Status JobExited(JobId job, bool success, Timestamp now, const std::string& detail = "");
  Status Checkpointed(JobId job, Timestamp now);
  // Signal mode (docs/market.md, "Elastic jobs"): the job has taken in resize generation
  // `generation`; its units under notice that the generation leaves out give their GPUs back.
  Status ResizeAcked(JobId job, int32_t attempt, int32_t generation, Timestamp now);
  // Whether the job taking in `generation` frees any of its units (what ResizeAcked would do).
  bool AckFrees(const Job& j, int64_t generation) const;
  // Two-phase start on agent nodes: the agent of `node` runs `attempt`; the job goes starting ->
  // running once the agents of all its nodes have confirmed (an invalid `node`: all at once). A
  // notice that came while starting stands; the job stays under notice.
  Status ConfirmStart(JobId job, int32_t attempt, Timestamp now, NodeId node = NodeId());
  // How one member of an attempt ended, as its agent reports it.
  enum class MemberEnd { kSucceeded, kFailed, kLost };
  // One node's part of `attempt` ended. A job on one node ends with it (JobExited, or a requeue
  // that spends no restart when lost). A gang over several agent nodes ends together: the first
  // member's end puts the others under notice (SIGTERM now, killed at the deadline) and decides
  // the outcome, applied once every member has ended or the notice runs out. Under a notice
  // already, members leave as they finish and the job is requeued when the last one has.
  Status MemberEnded(JobId job, int32_t attempt, NodeId node, MemberEnd how,
                     const std::string& detail, Timestamp now);
  // The start of `attempt` failed or was never confirmed: the GPUs are freed and the job goes
  // back to pending with attempt + 1. `counts_as_failure` spends one of its restarts (a job
  // whose command cannot start fails once they are spent); a lost start (agent gone) does not.
  Status StartFailed(JobId job, int32_t attempt, const std::string& reason, bool counts_as_failure,
                     Timestamp now);

  // --- The cycle ---
  CycleReport RunCycle(Timestamp now);

  // The next instant after `after` at which time alone changes something (a notice deadline,
  // a reservation starting or ending), for drivers that advance time in jumps.
  std::optional<Timestamp> NextWakeup(Timestamp after) const;

  // --- Reading ---
  // A pending job's reason and queue position (NotFound / FailedPrecondition otherwise).
  // `with_position`: count its place in the book (linear in the bids ahead of it).
  Result<PendingWhy> Why(JobId job, bool with_position = true) const;
  // The 1-based places of `jobs` among the pool's pending spot bids (those bidding), in one walk
  // of the book: for a page of jobs at once.
  std::map<uint32_t, int32_t> BookPositions(PoolId pool, const std::set<uint32_t>& jobs) const;
  const ClusterState& state() const { return state_; }
  const Ledger& ledger() const { return ledger_; }
  Money Price(PoolId pool) const { return pools_[pool.value() - 1].price; }
  // Events since the last drain, in order.
  std::vector<Event> DrainEvents();
  const std::vector<Event>& pending_events() const { return events_; }
  // What an input between cycles leaves to decide, decided now: a full cycle, unless there is
  // nothing to decide (a cycle would decide nothing). True when it ran one.
  bool Decide(Timestamp now);
  // The last decision's fixpoint still holds at `now`, and no claim or notice is open.
  bool NothingToDecide(Timestamp now) const;
  // Whether the last decision left a fixpoint: the next submission (or a spot job's exit) may
  // then be decided without a full cycle (docs/market.md, "Incremental decisions").
  bool at_fixpoint() const { return at_fixpoint_; }
  // Turns deciding a spot job's exit in place (SchedulerOptions::refill_on_exit) on or off; the
  // property test compares a copy without it.
  void SetRefillOnExit(bool on) { options_.refill_on_exit = on; }
  const std::vector<std::string>& violations() const { return violations_; }
  // Spot-tier GPU time each job held (for the ledger's "never charged without GPUs" checks).
  Duration SpotHeld(JobId job) const;
  // What a job's spot time has cost so far: its GPUs times the price integral while it held
  // them. The ledger carries the same money per tenant per step.
  Money ChargedForJob(JobId job) const;
  int32_t ReservedInUse(TenantId tenant, PoolId pool) const;
  int32_t SpotBudget(PoolId pool) const { return pools_[pool.value() - 1].budget; }
  PoolUsage Usage(PoolId pool) const;
  std::vector<OwnerNow> OwnersNow(PoolId pool) const;  // by tenant id
  // The time of the last command or cycle applied (money and reserved time accrue up to it).
  Timestamp last_accrual() const { return last_accrual_; }
  // Reserved GPU time since the start, by (pool, tenant) id values; and the GPU time spot bids
  // waited in a pool (unmet demand). Both GPU-microseconds, accrued like money.
  const std::map<std::pair<uint32_t, uint32_t>, ReservedTime>& reserved_time() const {
    return reserved_time_;
  }
  int64_t UnmetSpotTime(PoolId pool) const { return pools_[pool.value() - 1].unmet_spot; }
  // All invariants of docs/architecture.md against the current state; returns the violations found.
  // `cycle_done`: a cycle has just decided at `now` (invariant 3, the price, and 7, the owner's
  // guarantee, hold only then: a submission or exit since the last cycle is not decided yet).
  std::vector<std::string> CheckInvariants(Timestamp now, bool cycle_done = true) const;

  // Snapshots (docs/ha.md, "Snapshots"): the whole state, written so that LoadState on a
  // Scheduler with nothing added yet makes it decide exactly as this one would from here.
  void SaveState(ArchiveWriter& w) const;
  Status LoadState(ArchiveReader& r);

 private:
  friend struct StateIo;  // scheduler/state_io.cc
  struct RankKey {
    int64_t neg_limit;
    int32_t is_unit;
    int32_t not_holding;
    int32_t unit;
    int64_t submitted;
    uint32_t job;
    auto operator<=>(const RankKey&) const = default;
  };
  // Ids with O(1) insert, erase and membership; iteration order is the order of operations,
  // so it is deterministic for the same inputs.
  class IdSet {
   public:
    void Insert(uint32_t id) {
      if (id >= pos_.size()) pos_.resize(id + 1, -1);
      if (pos_[id] >= 0) return;
      pos_[id] = static_cast<int32_t>(ids_.size());
      ids_.push_back(id);
    }
    void Erase(uint32_t id) {
      if (id >= pos_.size() || pos_[id] < 0) return;
      uint32_t last = ids_.back();
      ids_[pos_[id]] = last;
      pos_[last] = pos_[id];
      ids_.pop_back();
      pos_[id] = -1;
    }
    bool Contains(uint32_t id) const { return id < pos_.size() && pos_[id] >= 0; }
    const std::vector<uint32_t>& ids() const { return ids_; }

   private:
    friend struct StateIo;
    std::vector<uint32_t> ids_;
    std::vector<int32_t> pos_;
  };
  // The clearing's holders kept between cycles (docs/architecture.md, "Holders between cycles"):
  // whole-GPU spot holders and GPUs of shares in rank order, each as the clearing sees it, with
  // the rooms shares may join. What changed since is listed, and patched in at the next
  // clearing; an entry not listed is current (invariant 10).
  struct HolderEntry {
    uint64_t key = 0;        // a whole-GPU holder's job id, or GpuKey() of a GPU of shares
    Supply::ShareHost room;  // a GPU of shares a share may join (else free_milli is 0)
    Money floor;             // a GPU of shares: its lowest share's limit
  };
  struct HolderCache {
    HolderCache() = default;
    // A copy would point into the original's jobs (Bid::placement): a copied scheduler starts
    // with a stale cache. A move keeps it (the jobs do not move).
    HolderCache(const HolderCache&) {}
    HolderCache& operator=(const HolderCache&) { return *this = HolderCache(); }
    HolderCache(HolderCache&&) = default;
    HolderCache& operator=(HolderCache&&) = default;
    ~HolderCache() = default;

    bool stale = true;                     // rebuild it all at the next clearing
    std::vector<Bid> bids;                 // rank order (RanksAhead)
    std::vector<HolderEntry> entries;      // one per bid
    std::vector<Supply::ShareHost> rooms;  // Bid::share_host indexes these
    std::optional<Money> floor;            // the lowest limit among the shares
    std::vector<uint64_t> changed;         // keys whose entry may be out of date
  };
  // A GPU of shares as a holder key: bit 63 set, the node above the low 8 bits, the GPU in them.
  static uint64_t GpuKey(NodeId node, int32_t gpu) {
    return uint64_t{1} << 63 | uint64_t{node.value()} << 8 | static_cast<uint32_t>(gpu);
  }
  static bool IsGpuKey(uint64_t key) { return (key >> 63) != 0; }
  static std::pair<NodeId, int32_t> GpuOfKey(uint64_t key) {
    return {NodeId(static_cast<uint32_t>(key >> 8 & 0xffffffff)), static_cast<int32_t>(key & 0xff)};
  }
  struct PoolRuntime {
    FreeMap free;
    Calendar calendar;
    Money price;
    std::optional<Money> highest_unplaced;
    std::set<RankKey> book;               // pending spot bids, in rank order
    IdSet spot_holders;                   // jobs holding GPUs as spot tier
    std::set<RankKey> holder_rank;        // the same jobs in rank order: clearing never sorts
    std::vector<uint32_t> reserved_side;  // auto jobs served as reserved in this cycle
    // Pending reserved/auto jobs by tenant, each by submission (a tenant's empty queue stays).
    std::map<TenantId, std::set<std::pair<int64_t, uint32_t>>> reserved_q;
    std::map<TenantId, std::multiset<int32_t>> reserved_sizes;  // GPUs of each queued job
    std::multiset<int64_t> holder_limits;                       // limits of spot jobs holding GPUs
    std::map<TenantId, int32_t> reserved_used;                  // GPUs held by reserved-tier jobs
    std::map<TenantId, int32_t> active_reserved;                // refreshed each cycle
    std::map<TenantId, int32_t> active_lend;  // active reservations with lend=true
    std::set<uint32_t> reserved_holders;      // jobs holding GPUs as reserved tier
    std::set<uint32_t> claims;                // spot jobs waiting on GPUs being freed
    // Owners' side (docs/market.md, "What a reservation guarantees"): each tenant's bound GPUs
    // under its active reservations (refreshed each cycle), the GPUs a pending reserved-tier
    // job has claimed (kept until it starts: a claim never moves to another job), and when
    // each pending reserved-tier job began to fit its reservation's free room.
    std::map<TenantId, GpuDomain> bound;  // by local node index of `free`
    std::map<uint32_t, Placement> owner_claims;
    std::map<uint32_t, Timestamp> fits_since;
    std::vector<ReservationId> unlent;  // active reservations with lend=false (spot stays off)
    int32_t spot_held = 0;
    int32_t budget_capacity = 0;                 // ready GPUs at the last cycle
    int32_t installed = 0;                       // GPUs of all nodes, whatever their state
    __int128 price_integral = 0;                 // sum of price (micro-units) x microseconds
    std::map<TenantId, int64_t> spot_by_tenant;  // spot milli-GPUs held, per tenant
    // GPU shares (docs/market.md, "GPU shares"): spot jobs holding a share, and the GPUs they
    // hold (node id, GPU). Rebuilt from the nodes on a snapshot load.
    std::set<uint32_t> share_holders;
    std::set<std::pair<uint32_t, int32_t>> share_hosts;
    // Shares bidding or holding, by (milli-GPU, memory): the mix the packer looks ahead on.
    std::map<std::pair<int32_t, int64_t>, int64_t> share_shapes;
    HolderCache holders;                        // derived: rebuilt after a snapshot load
    std::map<TenantId, __int128> tenant_carry;  // sub-micro-unit remainders
    bool index_stale = false;                   // nodes were added since `free` was built
    int32_t preempting = 0;                     // jobs under notice in this pool
    int32_t budget = 0;
    int64_t book_gpus = 0;   // GPUs the bids in `book` ask for
    int64_t unmet_spot = 0;  // GPU-microseconds bids waited
  };
  // Who lends in a pool now, and how many spot GPUs sit on lent capacity: the split both the
  // money and the reserved time follow.
  struct Lending {
    std::vector<OwnerNow> owners;  // every active holder, by tenant id (lenders: lent > 0)
    int32_t lent_total = 0;
    int32_t reserved_total = 0;
    int32_t on_lent = 0;
  };
  Lending LendingOf(const PoolRuntime& r) const;
  void AccrueReservedTime(PoolId pool, PoolRuntime& r, int64_t dt);

  PoolRuntime& rt(PoolId p) { return pools_[p.value() - 1]; }
  const PoolRuntime& rt(PoolId p) const { return pools_[p.value() - 1]; }
  void RefreshIndexes();
  void Emit(Event e);
  // An event about job `j` (time, type, job, pool, attempt filled in).
  static Event JobEvent(EventType type, const Job& j, Timestamp now);
  // Ok when `attempt` is the job's current attempt and it holds GPUs.
  Status PlacedAttempt(JobId id, int32_t attempt) const;
  RankKey KeyOf(const Job& j) const;
  RankKey HolderKey(const Job& j) const;  // its key among the spot holders (`holder_rank`)
  // Puts a pending job in its pool's queues (reserved queue, spot book, or both for auto).
  void Enqueue(Job& j);
  // Elastic jobs: a pending unit bids while its job bids or runs, outside a cooldown.
  void SyncUnit(Job& u);
  void SyncUnits(const Job& j);
  // A unit started (grow) or got notice (shrink): the job's resize follows its mode.
  void Grew(Job& u, Timestamp now);
  void Shrinking(Job& u, Timestamp now);
  // A job's attempt ends: its units go back to pending with it (no cooldown, no event).
  void DropUnits(Job& j, Timestamp now);
  // Restart mode: the attempt that was told to resize has ended; the next starts on the GPUs
  // the job holds now, its units under notice freed.
  void RestartInPlace(Job& j, Timestamp now);
  void StageElastic(Timestamp now);
  void Dequeue(Job& j);
  // The GPUs of shares in a pool, each as one holder bid (docs/market.md, "GPU shares"), in rank
  // order; `active_only`: GPUs with a share not under notice. With `supply`, also the GPUs with
  // room for a share more (its share_hosts) and the lowest limit among the shares (holder_floor).
  std::vector<Bid> ShareHolderBids(const PoolRuntime& r, bool active_only,
                                   Supply* supply = nullptr) const;
  // One GPU of shares as a holder: its bid, the room a share may join (free_milli 0 when none
  // may) and its lowest share's limit. The GPU holds at least one share.
  std::pair<Bid, HolderEntry> ShareGpu(const Node& n, int32_t g) const;
  // The holder entry of a spot job or of its GPU of shares may have changed: the clearing
  // patches it in (HolderCache).
  void HolderChanged(const Job& j);
  void HolderChanged(PoolId pool);  // all of them (a node's state or GPU memory changed)
  // Brings a pool's HolderCache up to date.
  void PatchHolders(PoolRuntime& r);
  void CheckHolderCache(PoolId pool, std::vector<std::string>* out) const;  // invariant 10
  // A notice to a victim the clearing or the owners' pass chose: to every share of its GPU when
  // it stands for a GPU of shares.
  void NoticeVictim(JobId victim, const std::string& reason, Timestamp now, JobId beneficiary);
  // What a job under notice frees: its GPUs, or for a share its GPU once every share of it is
  // under notice (nullptr until then).
  const Placement* Freeing(const Job& j) const;
  void CountShape(const Job& j, int64_t delta);
  // Every change to a pool's spot book goes through these.
  void BookInsert(const Job& j);
  void BookErase(const Job& j);

  void Bind(Job& j, Placement p, Tier as, Timestamp now);
  void Unbind(Job& j);
  // Ends an attempt that held GPUs: back to pending with attempt + 1.
  void Requeue(Job& j, EventType type, std::string reason, Timestamp now);
  void Finish(Job& j, JobState state, std::string reason, Timestamp now);
  // `deadline`: when the notice ends (default: the job's notice, capped by the pool's).
  void SendNotice(Job& j, std::string reason, Timestamp now, JobId beneficiary = JobId(),
                  std::optional<Timestamp> deadline = std::nullopt);
  // Signal mode: a unit under notice whose deadline has come is still unacknowledged (the
  // job keeps running on GPUs that are no longer its own: it is stopped).
  bool ResizeOverdue(const Job& j, Timestamp now) const;
  // A failed attempt: requeued while restarts remain, else the job fails.
  void Fail(Job& j, const std::string& why, Timestamp now);
  // The agent-run nodes of a job's placement, in its order (the gang's ranks).
  std::vector<NodeId> Members(const Job& j) const;
  // Every member has ended (or the notice ran out): the attempt's end takes effect.
  void ConcludeGang(Job& j, Timestamp now);
  enum class DepState { kReady, kWait, kBroken };
  DepState Dependencies(const Job& j, std::string* why) const;
  // Whether the tenant's active reservation has room for the job beyond `claimed` GPUs.
  bool HasRoom(const Job& j, int32_t claimed) const;
  // GPUs the tenant's active reservations in `pool` have left by count, beyond `claimed`.
  int32_t RoomCount(PoolId pool, TenantId tenant, int32_t claimed) const;
  // Whether the GPUs of `p` are all bound to the tenant's active reservations (on any node: a
  // binding stays on a node that left service while its owner's work runs there).
  bool OnOwnGpus(PoolId pool, TenantId tenant, const Placement& p) const;
  // Reservation shape (docs/market.md): the GPUs of `pool`'s ready nodes that no reservation
  // other than `skip` holds at any instant of [start, end).
  FreeMap UnboundMap(PoolId pool, Timestamp start, Timestamp end, ReservationId skip) const;
  // The most GPUs whose shape binds over the window (0 if none), and the earliest start >=
  // `from` at which `gpus` fit by count and by shape for `length`.
  int32_t LargestBinding(PoolId pool, Timestamp start, Timestamp end, int32_t at_most) const;
  std::optional<Timestamp> EarliestBinding(PoolId pool, int32_t gpus, int32_t reservable,
                                           Duration length, Timestamp from) const;
  // Reservation GPUs bound on nodes out of service, with nothing of their owner's running there,
  // move to GPUs of ready nodes no other reservation holds over the rest of the window.
  void MoveIdleBindings(PoolId pool, Timestamp now);
  // GPUs of active reservations that do not lend are not spot's, idle or not: taken out of `m`.
  void KeepSpotOff(const PoolRuntime& r, FreeMap* m) const;
  FreeMap SpotFree(const PoolRuntime& r) const;  // r.free less those GPUs
  // Moves slice `k` of a reservation to `to` (the caller keeps the slices sorted).
  void MoveSlice(Reservation& res, size_t k, NodeSlice to, Timestamp now, const std::string& why);
  // A reserved-tier attempt that no longer fits what its tenant has reserved: continues as
  // spot at its fallback limit, or goes back to pending.
  void EndReservedAttempt(Job& j, Timestamp now);
  // The tenant's bound GPUs on ready nodes, by local node index of the pool's free map.
  GpuDomain OwnerDomain(PoolId pool, TenantId tenant) const;
  // A tenant's entry in `r.bound`, sized to the pool's nodes.
  static GpuDomain& BoundOf(PoolRuntime& r, TenantId tenant);
  // The tenant's reserved room: its domain less the GPUs its reserved-tier jobs hold and the
  // GPUs claimed for its jobs.
  FreeMap OwnerRoom(PoolId pool, TenantId tenant, const GpuDomain& domain) const;
  // Whole ready nodes the tenant may swap in for idle whole nodes it holds, from now until the
  // end of its latest active reservation that holds whole nodes: nodes no reservation holds,
  // and idle whole nodes of other owners' lending reservations that nothing else holds.
  GpuDomain SpareNodes(PoolId pool, TenantId tenant, Timestamp now);
  // Moves the tenant's reservations onto the nodes of `p` it does not hold, each in exchange for
  // a whole node it holds with nothing of its own on them (`room`) outside `p`; another owner's
  // node is exchanged only for one nothing else holds until that owner's reservation ends.
  // All or nothing. Returns how many nodes were swapped in (0: `p` is all its own), or -1.
  int32_t SwapInto(PoolId pool, TenantId tenant, const Placement& p, const FreeMap& room,
                   Timestamp now, uint32_t job);
  // The active reservation holding `node` whole, and the slice's index.
  std::optional<std::pair<Reservation*, size_t>> WholeSliceOn(PoolId pool, NodeId node,
                                                              Timestamp now);
  // Whether the tenant has no reserved-tier work and no claim on `node`.
  bool OwnerIdleOn(PoolId pool, TenantId tenant, NodeId node) const;
  void CheckOwnerGuarantee(PoolId pool, Timestamp now, std::vector<std::string>* out) const;
  int32_t ComputeBudget(PoolId pool) const;
  void SetPrice(PoolId pool, Money price, Timestamp now);
  void OpenSpot(Job& j, Timestamp now);
  void CloseSpot(Job& j, Timestamp now);
  void Accrue(Timestamp now);
  Status Validate(const JobSpec& spec) const;

  void StageReservations(Timestamp now);
  void StageDependencies(Timestamp now);
  void StageNotices(Timestamp now);
  void StageReclaim(Timestamp now, std::vector<Supply>* supplies);
  void StageClearing(Timestamp now, std::vector<Supply>* supplies,
                     std::vector<ClearingResult>* results);
  void StagePlacement(Timestamp now, std::vector<ClearingResult>* results);
  void StagePreemption(Timestamp now, std::vector<ClearingResult>* results);
  bool TryIncremental(JobId id, Timestamp now);
  // JobExited's outcome for a job that holds GPUs: requeued, restarted, finished or failed.
  void EndProcess(Job& j, bool success, const std::string& detail, Timestamp now);
  // Whether the last cycle's fixpoint still holds at `now`: nothing but incrementally decided
  // inputs since, and nothing time-driven (a notice deadline, a reservation starting or ending)
  // in between.
  bool FixpointHolds(Timestamp now) const;
  // Whether `j`'s exit leaves a state that Refill decides exactly as a cycle would: a plain spot
  // job (not elastic, not resizing, not a gang that is stopping) on ready nodes, in a pool with
  // no claims, notices, unlent reservations or pending reserved-tier work, and no job waiting on
  // dependencies.
  bool RefillEligible(const Job& j) const;
  // After such an exit: the pool's book in rank order onto the free GPUs, as the clearing would
  // (no holder is walked). False when it met a bid only a full cycle decides (a unit, or one
  // that may preempt): what it started stands, and the next decision is a full cycle.
  bool Refill(PoolId pool, Timestamp now);

  SchedulerOptions options_;
  ClusterState state_;
  std::vector<PoolRuntime> pools_;
  Ledger ledger_;
  std::vector<Event> events_;
  int64_t next_seq_ = 1;
  std::vector<std::string> violations_;
  Timestamp last_accrual_;
  bool accrual_started_ = false;
  // False when anything other than an incrementally decided submission happened since the
  // last full cycle, or the cycle left claims or notices open: the fast path is then unsafe.
  bool at_fixpoint_ = false;
  Timestamp last_cycle_;
  Timestamp last_decided_;  // the last cycle, or the last submission decided incrementally
  std::optional<Timestamp> wakeup_after_cycle_;  // NextWakeup(last_cycle_), cached
  std::map<std::pair<uint32_t, uint32_t>, ReservedTime> reserved_time_;
  LedgerEntry accrual_entry_;  // scratch for Accrue
  // Per job: spot charges and spot-held time of closed intervals, and the open interval's start.
  struct SpotAccount {
    int64_t charged = 0;
    int64_t held_us = 0;
    __int128 base = 0;  // the pool's price integral when the open interval began
    Timestamp since;
    bool open = false;
  };
  std::vector<SpotAccount> spot_;
  std::set<uint32_t> preempting_;  // jobs under notice (all pools)
  std::set<uint32_t> resizing_;    // restart-mode jobs told to restart at a new size
  std::set<std::pair<int64_t, uint32_t>> cooldowns_;  // (until, job): units not bidding
  std::set<uint32_t> dep_waiting_;    // pending jobs whose dependencies have not resolved
  std::vector<uint8_t> not_bidding_;  // scratch for StageClearing, by job id
  class BookPending;
};

}  // namespace rsv
