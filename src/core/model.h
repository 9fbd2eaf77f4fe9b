// core/model: Reservoir's domain types (pools, nodes, tenants, reservations, jobs) and the
// ClusterState that holds them. Plain data with lookups; no decisions live here (they are in
// placement/, market/, reservation/ and scheduler/). Depends only on common/. Must never include
// anything from server/, store/, agent/ or sim/.
#pragma once

#include <algorithm>
#include <bit>
#include <cstdint>
#include <deque>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "common/ids.h"
#include "common/status.h"
#include "common/units.h"

namespace rsv {

// Operator-set parameters of one pool (a set of nodes with the same GPU model).
struct PoolConfig {
  std::string name;
  std::string gpu_model;
  Money reserve_price = Money::Units(1);   // per GPU-hour; the spot price never goes below it
  Money min_increment = Money::Micros(0);  // a bid must beat a running limit by this to preempt
  Duration max_notice = Duration::Minutes(2);
  Money reservation_base_price = Money::Units(2);  // per GPU-hour
  // Reservation price = base * (1 + surge * booked fraction); 10000 = +100% when fully booked.
  BasisPoints reservation_surge = 10000;
  BasisPoints return_rate = 5000;     // share of the unused remainder credited on return
  BasisPoints operator_share = 1000;  // share of revenue on lent GPUs kept by the operator
  int32_t holdback_gpus = 0;          // ready GPUs the calendar never books

  Status Validate() const;
  bool operator==(const PoolConfig&) const = default;
};

struct Pool {
  PoolId id;
  PoolConfig config;
};

enum class NodeState { kReady, kDraining, kDown };
std::string_view NodeStateName(NodeState s);

inline constexpr int kMaxGpusPerNode = 64;
// A GPU in thousandths: a share of one GPU asks for 1..999 of them (docs/market.md, "GPU shares").
inline constexpr int32_t kMilliPerGpu = 1000;

struct Node {
  NodeId id;
  std::string name;
  PoolId pool;
  int32_t gpus = 0;
  std::string topology;  // "zone-a/rack-3" (the node's own name is appended when shown)
  NodeState state = NodeState::kReady;
  std::vector<JobId> gpu_job;  // per GPU index: the job holding it, or invalid
  int32_t rack = 0;            // interned ids of the topology parent and grandparent
  int32_t zone = 0;
  // An agent runs this node's jobs: a start is two-phase (starting until the agent confirms).
  // Nodes without an agent (declared in config, simulated) start jobs at once.
  bool agent = false;
  // GPU shares (docs/market.md, "GPU shares"). Per GPU: the jobs holding a share of it (never
  // also a whole-GPU holder in gpu_job), and the milli-GPU and memory they hold in all.
  std::vector<std::vector<JobId>> gpu_shares;
  std::vector<int32_t> share_milli;
  std::vector<int64_t> share_memory_mib;
  int64_t gpu_memory_mib = 0;  // each GPU's memory; 0: unknown (no share asking for memory fits)
  // No job holds any of GPU g, whole or in part.
  bool GpuFree(int g) const { return !gpu_job[g].valid() && gpu_shares[g].empty(); }
  // Who stands for GPU g where a victim is sought: its whole-GPU holder, else the first of the
  // jobs sharing it (they are stopped together to free it), else none.
  JobId Holder(int g) const {
    return gpu_job[g].valid() || gpu_shares[g].empty() ? gpu_job[g] : gpu_shares[g].front();
  }
  // Every job holding a GPU here: the whole-GPU holders per GPU (invalid where none), then the
  // shares of each GPU.
  std::vector<JobId> Holders() const {
    std::vector<JobId> out = gpu_job;
    for (const std::vector<JobId>& shares : gpu_shares) {
      out.insert(out.end(), shares.begin(), shares.end());
    }
    return out;
  }
};

struct Tenant {
  TenantId id;
  std::string name;
  bool deleted = false;  // its name is free again; its history (jobs, ledger) stays
};

// GPUs of one node held by a job, as a bit mask over the node's GPU indices.
struct NodeSlice {
  NodeId node;
  uint64_t gpu_mask = 0;
  bool operator==(const NodeSlice&) const = default;
};

// Whether `nodes` holds `node` (a gang's members, confirmed or ended: a handful at most).
inline bool Contains(const std::vector<NodeId>& nodes, NodeId node) {
  return std::find(nodes.begin(), nodes.end(), node) != nodes.end();
}

struct Placement {
  std::vector<NodeSlice> slices;
  bool operator==(const Placement&) const = default;
  int32_t GpuCount() const;
};

struct Reservation {
  ReservationId id;
  TenantId tenant;
  PoolId pool;
  int32_t gpus = 0;
  Timestamp start;
  Timestamp end;  // exclusive; shrinks on return
  bool lend = true;
  Money price_per_gpu_hour;  // fixed at confirmation
  Money charged;
  // The GPUs the reservation holds over its window (docs/market.md, "What a reservation
  // guarantees"): its owner's reserved-tier jobs run only here, and no other reservation
  // overlapping the window holds any of them.
  Placement binding;
  bool activated = false;  // ReservationActivated emitted
  bool ended = false;      // ReservationEnded emitted

  bool ActiveAt(Timestamp t) const { return start <= t && t < end; }
};

enum class Tier { kReserved, kSpot, kAuto };
std::string_view TierName(Tier t);
Result<Tier> ParseTier(std::string_view s);

enum class JobState { kPending, kStarting, kRunning, kPreempting, kSucceeded, kFailed, kCancelled };
std::string_view JobStateName(JobState s);
inline bool IsTerminal(JobState s) {
  return s == JobState::kSucceeded || s == JobState::kFailed || s == JobState::kCancelled;
}
// States in which the job holds GPUs (and, on spot, is charged for them).
inline bool HoldsGpus(JobState s) {
  return s == JobState::kStarting || s == JobState::kRunning || s == JobState::kPreempting;
}
// Holding GPUs and not under notice: placed (starting, waiting for the agent) or running.
inline bool IsActive(JobState s) { return s == JobState::kStarting || s == JobState::kRunning; }

enum class DependencyKind { kAfterOk, kAfterAny };

// How an elastic job changes size (docs/market.md, "Elastic jobs").
enum class ResizeMode { kRestart, kSignal };
std::string_view ResizeModeName(ResizeMode m);
Result<ResizeMode> ParseResizeMode(std::string_view s);
inline constexpr int kMaxElasticUnits = 64;

// A job's GPU count as written on a command line or in a scenario: "8" (rigid), "8:32"
// (elastic, the pool's default step), "8:32:8", or a share of one GPU "0.25" (to a thousandth;
// min is then 1 and milli the share). `max` and `step` are 0 when not given.
struct GpuRange {
  int32_t min = 0;
  int32_t max = 0;
  int32_t step = 0;
  int32_t milli = kMilliPerGpu;
};
Result<GpuRange> ParseGpuRange(std::string_view s);
// A memory size: "20GiB", "512MiB", "1TiB" (also G, M, T), or a bare number of MiB. In MiB;
// errors name `field`.
Result<int64_t> ParseMebibytes(std::string_view field, std::string_view s);

struct Dependency {
  DependencyKind kind = DependencyKind::kAfterOk;
  JobId job;
};

// What the user asked for. Immutable after submission.
struct JobSpec {
  std::string name;
  TenantId tenant;
  PoolId pool;
  int32_t gpus = 1;
  // A share of one GPU (docs/market.md, "GPU shares"): 1..999 thousandths with gpus == 1, and at
  // most gpu_memory_mib of its memory (0: no memory asked). kMilliPerGpu: whole GPUs.
  int32_t gpu_milli = kMilliPerGpu;
  int64_t gpu_memory_mib = 0;
  bool share() const { return gpu_milli < kMilliPerGpu; }
  // Thousandths of a GPU the job holds when it runs (a share, or gpus × 1000).
  int64_t Milli() const { return share() ? gpu_milli : int64_t{kMilliPerGpu} * gpus; }
  Tier tier = Tier::kSpot;
  Money limit_price;  // per GPU-hour; spot and auto
  // Reserved-tier jobs when their reservation ends: continue as spot at this limit, or (unset)
  // stop and wait for capacity in a new reservation.
  std::optional<Money> fallback_limit;
  Duration notice = Duration::Seconds(30);  // time the job needs to checkpoint; capped by pool
  int32_t max_restarts = 0;  // failed attempts requeued before the job fails; -1 = unlimited
  std::vector<Dependency> dependencies;
  std::string command;
  std::vector<std::string> env;
  std::string workdir;
  int64_t cpu_millis = 0;    // CPU limit in thousandths of a core, applied by the agent; 0: none
  int64_t memory_mib = 0;    // memory limit, applied by the agent; 0: none
  int64_t time_limit_s = 0;  // wall-clock limit of each attempt, enforced by the agent; 0: none
  // Elastic (docs/market.md, "Elastic jobs"): `gpus` is the minimum, the base gang; up to
  // max_gpus in units of gpu_step GPUs. max_gpus 0 (or == gpus): rigid.
  int32_t max_gpus = 0;
  int32_t gpu_step = 0;  // 0 at submission: the pool's default
  ResizeMode resize_mode = ResizeMode::kRestart;
  Duration resize_cooldown = Duration::Minutes(5);
  bool elastic() const { return max_gpus > gpus; }
};

struct Job {
  JobId id;
  JobSpec spec;
  Timestamp submitted;
  JobState state = JobState::kPending;
  int32_t attempt = 1;
  int32_t failures = 0;
  Tier running_as = Tier::kSpot;  // the tier this attempt runs under (auto resolves to one)
  Money limit;                // the live bid limit (spec limit, or fallback after a reservation)
  Placement placement;        // while HoldsGpus(state)
  Placement last_placement;   // the GPUs of its last attempt that held any (kept after it ends)
  Timestamp started;          // start of the current attempt
  Timestamp last_checkpoint;  // reported by the job; start of attempt if never
  Timestamp notice_deadline;  // while preempting
  std::string preempt_reason;
  Timestamp finished;
  std::string end_reason;  // why a terminal job ended ("exit 1", "dependency 7 failed")
  // A gang on agent nodes (docs/agent.md, "Gangs"), for the current attempt: the members whose
  // agents confirmed its start (it runs once all have), and those that have ended since.
  std::vector<NodeId> confirmed;
  std::vector<NodeId> ended;
  // Set when a member's end stopped the rest of the gang: what the attempt's end means once
  // every member has ended (or the notice ran out).
  struct GangEnd {
    bool set = false;
    bool success = false;
    bool lost = false;  // the member was lost (its node, its agent): no restart is spent
    std::string detail;
  } gang_end;

  // Elastic jobs (docs/market.md, "Elastic jobs"). On the job: its units, in order; on a unit:
  // the job it belongs to and its number (1, 2, ...).
  std::vector<JobId> units;
  JobId unit_of;
  int32_t unit = 0;
  // A unit: the job's attempt whose GPUs include it (restart mode: a unit granted while an
  // attempt runs joins the next one); signal mode: the resize generation that leaves it out.
  int32_t joined = 0;
  int32_t shrink_generation = 0;
  // The job: signal mode's resize generation (bumped by every change of the target size);
  // restart mode's pending restart at a new size, due by `resize_deadline`; no unit bids
  // before `cooldown_until` (a shrink's cooldown).
  int32_t resize_generation = 0;
  bool resizing = false;
  Timestamp resize_deadline;
  Timestamp cooldown_until;
};

// Everything the scheduler decides over. Ids are dense: object with id k sits at index k-1.
class ClusterState {
 public:
  Result<PoolId> AddPool(PoolConfig config);
  // topology: "zone/rack" path of the node's parents (may be empty or one level).
  Result<NodeId> AddNode(std::string name, PoolId pool, int32_t gpus, std::string topology);
  Result<TenantId> AddTenant(std::string name);
  void DeleteTenant(TenantId id);

  Pool& pool(PoolId id) { return pools_[id.value() - 1]; }
  const Pool& pool(PoolId id) const { return pools_[id.value() - 1]; }
  Node& node(NodeId id) { return nodes_[id.value() - 1]; }
  const Node& node(NodeId id) const { return nodes_[id.value() - 1]; }
  const Tenant& tenant(TenantId id) const { return tenants_[id.value() - 1]; }
  Job& job(JobId id) { return jobs_[id.value() - 1]; }
  const Job& job(JobId id) const { return jobs_[id.value() - 1]; }
  Reservation& reservation(ReservationId id) { return reservations_[id.value() - 1]; }
  // The shares on the GPU a share job holds (itself among them).
  const std::vector<JobId>& SharesWith(const Job& share) const {
    const NodeSlice& sl = share.placement.slices.front();
    return node(sl.node).gpu_shares[std::countr_zero(sl.gpu_mask)];
  }
  const Reservation& reservation(ReservationId id) const { return reservations_[id.value() - 1]; }

  bool HasPool(PoolId id) const { return id.valid() && id.value() <= pools_.size(); }
  bool HasNode(NodeId id) const { return id.valid() && id.value() <= nodes_.size(); }
  bool HasTenant(TenantId id) const { return id.valid() && id.value() <= tenants_.size(); }
  bool HasJob(JobId id) const { return id.valid() && id.value() <= jobs_.size(); }
  bool HasReservation(ReservationId id) const {
    return id.valid() && id.value() <= reservations_.size();
  }

  std::optional<PoolId> FindPool(std::string_view name) const;
  std::optional<NodeId> FindNode(std::string_view name) const;
  std::optional<TenantId> FindTenant(std::string_view name) const;

  const std::vector<Pool>& pools() const { return pools_; }
  const std::vector<Node>& nodes() const { return nodes_; }
  const std::vector<Tenant>& tenants() const { return tenants_; }
  // A deque: references to jobs stay valid as jobs are added.
  const std::deque<Job>& jobs() const { return jobs_; }
  const std::vector<Reservation>& reservations() const { return reservations_; }
  std::vector<Reservation>& mutable_reservations() { return reservations_; }
  const std::vector<NodeId>& pool_nodes(PoolId id) const { return pool_nodes_[id.value() - 1]; }

  JobId AddJob(Job job);  // assigns the id
  ReservationId AddReservation(Reservation r);

  // Elastic jobs (docs/market.md, "Elastic jobs"). The GPUs of a job's current attempt: its
  // base placement plus the units that joined it (units under notice included until freed).
  Placement AttemptPlacement(const Job& j) const { return UnitsPlacement(j, true); }
  // Signal mode: the GPUs the job is to use from its resize generation on (units under notice
  // left out).
  Placement ResizeTarget(const Job& j) const { return UnitsPlacement(j, false); }

  // Ready GPUs of a pool right now.
  int32_t ReadyGpus(PoolId pool) const;
  // Number of distinct racks / zones interned so far (topology domain ids are 0..n-1).
  int32_t rack_count() const { return static_cast<int32_t>(rack_names_.size()); }
  int32_t zone_count() const { return static_cast<int32_t>(zone_names_.size()); }

 private:
  friend struct StateIo;  // snapshots (scheduler/state_io.cc)
  std::vector<Pool> pools_;
  std::vector<Node> nodes_;
  std::vector<Tenant> tenants_;
  std::deque<Job> jobs_;
  std::vector<Reservation> reservations_;
  std::vector<std::vector<NodeId>> pool_nodes_;
  std::map<std::string, PoolId, std::less<>> pool_by_name_;
  std::map<std::string, NodeId, std::less<>> node_by_name_;
  std::map<std::string, TenantId, std::less<>> tenant_by_name_;
  std::map<std::string, int32_t, std::less<>> rack_ids_;
  std::map<std::string, int32_t, std::less<>> zone_ids_;
  std::vector<std::string> rack_names_;
  std::vector<std::string> zone_names_;
  // A job's base placement plus its units in the current attempt (with those under notice).
  Placement UnitsPlacement(const Job& j, bool under_notice) const;
};

}  // namespace rsv
