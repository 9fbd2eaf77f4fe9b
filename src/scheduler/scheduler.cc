#include "scheduler/scheduler.h"

#include <algorithm>
#include <bit>
#include <ctime>
#include <limits>
#include <queue>

namespace rsv {
namespace {

// A spot job as the clearing sees it.
Bid BidOf(const Job& j) {
  Bid b{j.id,         j.limit,           j.submitted,
        j.spec.gpus,  IsActive(j.state), j.state == JobState::kPreempting,
        &j.placement, j.started,         j.last_checkpoint};
  b.unit = j.unit;
  b.parent = j.unit_of;
  b.milli = j.spec.share() ? j.spec.gpu_milli : kMilliPerGpu;
  b.gpu_memory_mib = j.spec.gpu_memory_mib;
  return b;
}

// A time for people: UTC, to the second.
std::string When(Timestamp t) {
  const time_t secs = static_cast<time_t>(t.micros() / 1'000'000);
  tm u{};
  gmtime_r(&secs, &u);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%d %H:%M:%SZ", &u);
  return buf;
}

std::string PlacementString(const ClusterState& s, const Placement& p) {
  std::string out;
  for (const NodeSlice& sl : p.slices) {
    if (!out.empty()) out += ",";
    out += s.node(sl.node).name + "[";
    bool first = true;
    for (int g = 0; g < 64; ++g) {
      if ((sl.gpu_mask >> g) & 1) {
        if (!first) out += " ";
        out += std::to_string(g);
        first = false;
      }
    }
    out += "]";
  }
  return out;
}

}  // namespace

Scheduler::Scheduler(SchedulerOptions options) : options_(options) {
  ledger_.set_keep_entries(options.keep_ledger_entries);
}

// ---------------------------------------------------------------------------------------------
// Fleet

Result<PoolId> Scheduler::AddPool(PoolConfig config) {
  RSV_ASSIGN_OR_RETURN(PoolId id, state_.AddPool(std::move(config)));
  pools_.emplace_back();
  PoolRuntime& r = pools_.back();
  r.free = FreeMap(state_, id);
  r.price = state_.pool(id).config.reserve_price;
  at_fixpoint_ = false;
  return id;
}

Status Scheduler::SetPoolConfig(PoolId pool, PoolConfig config, Timestamp now) {
  if (!state_.HasPool(pool)) return InvalidArgument("pool", "unknown pool");
  RSV_RETURN_IF_ERROR(config.Validate());
  if (config.name != state_.pool(pool).config.name) {
    return InvalidArgument("name", "a pool keeps its name");
  }
  Accrue(now);
  state_.pool(pool).config = std::move(config);
  at_fixpoint_ = false;  // the next decision is a full cycle under the new config
  return Status::Ok();
}

Result<NodeId> Scheduler::AddNode(std::string name, PoolId pool, int32_t gpus,
                                  std::string topology) {
  RSV_ASSIGN_OR_RETURN(NodeId id, state_.AddNode(std::move(name), pool, gpus, std::move(topology)));
  rt(pool).index_stale = true;  // rebuilt once before the next decision, not once per node
  rt(pool).installed += gpus;
  at_fixpoint_ = false;
  return id;
}

void Scheduler::SetGpuMemory(NodeId id, int64_t mib) {
  if (!state_.HasNode(id) || mib < 0) return;
  Node& n = state_.node(id);
  for (int64_t used : n.share_memory_mib) {
    if (used > mib) return;
  }
  if (n.gpu_memory_mib != mib) {
    at_fixpoint_ = false;
    HolderChanged(n.pool);  // the room its GPUs of shares have
  }
  n.gpu_memory_mib = mib;
}

Result<TenantId> Scheduler::AddTenant(std::string name) {
  return state_.AddTenant(std::move(name));
}

Status Scheduler::DeleteTenant(TenantId id, Timestamp now) {
  if (!state_.HasTenant(id) || state_.tenant(id).deleted) return NotFound("no such tenant");
  for (const Job& j : state_.jobs()) {
    if (j.spec.tenant == id && !IsTerminal(j.state)) {
      return FailedPrecondition("tenant '" + state_.tenant(id).name + "' has job " +
                                j.id.ToString() + " " + std::string(JobStateName(j.state)) +
                                ": cancel its jobs first");
    }
  }
  for (const Reservation& r : state_.reservations()) {
    if (r.tenant == id && r.end > now) {
      return FailedPrecondition(
          "tenant '" + state_.tenant(id).name + "' holds reservation " + r.id.ToString() +
          " until t=" + Duration::Micros(r.end.micros()).ToString() + ": return it first");
    }
  }
  state_.DeleteTenant(id);
  return Status::Ok();
}

Status Scheduler::SetNodeState(NodeId id, NodeState to, Timestamp now) {
  Accrue(now);  // money for the time up to now, under the state that held
  if (!state_.HasNode(id)) return NotFound("no such node");
  RefreshIndexes();
  Node& n = state_.node(id);
  if (n.state == to) return Status::Ok();
  at_fixpoint_ = false;
  n.state = to;
  HolderChanged(n.pool);  // whether shares may join its GPUs
  rt(n.pool).free.SetReady(id, to == NodeState::kReady);
  if (to == NodeState::kDown) {
    std::vector<JobId> lost;
    const std::vector<JobId> held = n.Holders();
    for (JobId j : held) {
      if (j.valid() && state_.job(j).unit_of.valid()) {
        Job& unit = state_.job(j);
        const Job& owner = state_.job(unit.unit_of);
        if (unit.joined > owner.attempt && HoldsGpus(unit.state)) {
          // Granted for the next attempt (restart mode): no member runs on it yet; only the
          // unit is lost.
          Requeue(unit, EventType::kJobRequeued, "node " + n.name + " down", now);
          continue;
        }
        j = unit.unit_of;  // a member of its job's attempt: the job's loss
      }
      if (j.valid() && std::find(lost.begin(), lost.end(), j) == lost.end()) lost.push_back(j);
    }
    std::sort(lost.begin(), lost.end());
    for (JobId j : lost) {
      Job& job = state_.job(j);
      if (!HoldsGpus(job.state)) continue;  // ended with an earlier member's loss
      if (n.agent && Members(job).size() > 1) {
        // One member of a gang: the others stop with a notice, then the job is requeued.
        (void)MemberEnded(j, job.attempt, id, MemberEnd::kLost, "node " + n.name + " down", now);
      } else {
        Requeue(job, EventType::kJobRequeued, "node " + n.name + " down", now);
      }
    }
  }
  Event e;
  e.at = now;
  e.type = EventType::kNodeStateChanged;
  e.node = id;
  e.pool = n.pool;
  e.detail = std::string(NodeStateName(to));
  Emit(std::move(e));
  return Status::Ok();
}

Event Scheduler::JobEvent(EventType type, const Job& j, Timestamp now) {
  Event e;
  e.at = now;
  e.type = type;
  e.job = j.id;
  e.pool = j.spec.pool;
  e.attempt = j.attempt;
  return e;
}

Status Scheduler::SetNodeAgent(NodeId id) {
  if (!state_.HasNode(id)) return NotFound("no such node");
  state_.node(id).agent = true;
  return Status::Ok();
}

// ---------------------------------------------------------------------------------------------
// Reservations

Result<Quote> Scheduler::QuoteReservation(const ReservationRequest& req, Timestamp now) const {
  if (!state_.HasTenant(req.tenant)) return InvalidArgument("tenant", "unknown tenant");
  if (!state_.HasPool(req.pool)) return InvalidArgument("pool", "unknown pool");
  if (req.gpus <= 0) return InvalidArgument("gpus", "must be positive");
  if (!(req.start < req.end)) return InvalidArgument("end", "must be after start");
  if (req.start < now) return InvalidArgument("start", "is in the past");
  const PoolConfig& cfg = state_.pool(req.pool).config;
  Quote q;
  q.reservable = std::max(0, state_.ReadyGpus(req.pool) - cfg.holdback_gpus);
  q.admission = rt(req.pool).calendar.Check(q.reservable, req.gpus, req.start, req.end);
  // A count that fits is not enough: the reservation must hold a shape every gang of its size
  // fits (docs/market.md, "What a reservation guarantees").
  std::optional<Placement> binding;
  if (q.admission.admitted) {
    binding = BindShape(UnboundMap(req.pool, req.start, req.end, ReservationId()), req.gpus);
  }
  if (binding) {
    q.binding = std::move(*binding);
  } else {
    q.admission.admitted = false;
    q.admission.largest_fit =
        LargestBinding(req.pool, req.start, req.end, std::min(req.gpus, q.admission.largest_fit));
    q.admission.earliest_start =
        EarliestBinding(req.pool, req.gpus, q.reservable, req.end - req.start, req.start);
  }
  q.price_per_gpu_hour = ReservationPrice(cfg.reservation_base_price, cfg.reservation_surge,
                                          q.reservable, q.admission.peak_booked);
  q.total = CostOf(q.price_per_gpu_hour, req.gpus, req.end - req.start);
  return q;
}

FreeMap Scheduler::UnboundMap(PoolId pool, Timestamp start, Timestamp end,
                              ReservationId skip) const {
  FreeMap m(state_, pool);
  for (NodeId id : state_.pool_nodes(pool)) m.SetFreeMask(id, ~uint64_t{0});
  for (const Reservation& r : state_.reservations()) {
    if (r.pool != pool || r.id == skip || !(r.start < end && start < r.end)) continue;
    m.Occupy(r.binding);
  }
  return m;
}

int32_t Scheduler::LargestBinding(PoolId pool, Timestamp start, Timestamp end,
                                  int32_t at_most) const {
  // Monotone: if g GPUs bind, so do g - 1 (drop one GPU of the remainder, or split the last
  // whole node into a remainder of N - 1), so bisect.
  FreeMap unbound = UnboundMap(pool, start, end, ReservationId());
  int32_t lo = 0, hi = at_most;
  while (lo < hi) {
    int32_t mid = lo + (hi - lo + 1) / 2;
    if (BindShape(unbound, mid)) {
      lo = mid;
    } else {
      hi = mid - 1;
    }
  }
  return lo;
}

std::optional<Timestamp> Scheduler::EarliestBinding(PoolId pool, int32_t gpus, int32_t reservable,
                                                    Duration length, Timestamp from) const {
  // Bindings only free up where a reservation ends, so the answer is `from` or such an end.
  std::set<Timestamp> candidates{from};
  for (const Reservation& r : state_.reservations()) {
    if (r.pool == pool && r.end > from) candidates.insert(r.end);
  }
  const Calendar& cal = rt(pool).calendar;
  for (Timestamp t : candidates) {
    if (!cal.Check(reservable, gpus, t, t + length).admitted) continue;
    if (BindShape(UnboundMap(pool, t, t + length, ReservationId()), gpus)) return t;
  }
  return std::nullopt;
}

Result<ReservationId> Scheduler::Reserve(const ReservationRequest& req, Timestamp now) {
  Accrue(now);  // money for the time up to now, under the state that held
  RSV_ASSIGN_OR_RETURN(Quote q, QuoteReservation(req, now));
  if (!q.admission.admitted) {
    std::string msg = std::to_string(req.gpus) +
                      " GPUs do not fit over the window (by count, or as a shape every gang of " +
                      "that size fits: whole nodes plus the rest on one node); at most " +
                      std::to_string(q.admission.largest_fit) + " fit";
    if (q.admission.earliest_start) {
      msg += "; all " + std::to_string(req.gpus) + " fit from " + When(*q.admission.earliest_start);
    } else {
      msg += "; the pool has only " + std::to_string(q.reservable) + " reservable GPUs";
    }
    return Status(Code::kResourceExhausted, msg, "gpus");
  }
  at_fixpoint_ = false;
  Reservation r;
  r.tenant = req.tenant;
  r.pool = req.pool;
  r.gpus = req.gpus;
  r.start = req.start;
  r.end = req.end;
  r.lend = req.lend;
  r.price_per_gpu_hour = q.price_per_gpu_hour;
  r.charged = q.total;
  r.binding = q.binding;
  ReservationId id = state_.AddReservation(r);
  rt(req.pool).calendar.Book(req.gpus, req.start, req.end);
  if (q.total > Money()) {
    LedgerEntry e;
    e.at = now;
    e.kind = EntryKind::kReservationCharge;
    e.pool = req.pool;
    e.reservation = id;
    e.postings = {{Account::Of(req.tenant), -q.total}, {Account::Operator(), q.total}};
    Status s = ledger_.Post(std::move(e));
    if (!s.ok()) violations_.push_back(s.ToString());
  }
  Event ev;
  ev.at = now;
  ev.type = EventType::kReservationConfirmed;
  ev.reservation = id;
  ev.pool = req.pool;
  ev.price = q.price_per_gpu_hour;
  ev.detail = std::to_string(req.gpus) + " GPUs on " + PlacementString(state_, q.binding);
  Emit(std::move(ev));
  return id;
}

void Scheduler::KeepSpotOff(const PoolRuntime& r, FreeMap* m) const {
  for (ReservationId id : r.unlent) m->Occupy(state_.reservation(id).binding);
}

FreeMap Scheduler::SpotFree(const PoolRuntime& r) const {
  FreeMap m = r.free;
  KeepSpotOff(r, &m);
  return m;
}

void Scheduler::MoveSlice(Reservation& res, size_t k, NodeSlice to, Timestamp now,
                          const std::string& why) {
  NodeSlice& sl = res.binding.slices[k];
  Event e;
  e.at = now;
  e.type = EventType::kReservationMoved;
  e.reservation = res.id;
  e.pool = res.pool;
  e.node = sl.node;
  e.detail = PlacementString(state_, Placement{{sl}}) + " -> " +
             PlacementString(state_, Placement{{to}}) + " (" + why + ")";
  if (res.ActiveAt(now)) {
    PoolRuntime& r = rt(res.pool);
    GpuDomain& bound = BoundOf(r, res.tenant);
    // Only this slice's GPUs: another of its reservations may hold the rest of the node.
    bound[r.free.local_index(sl.node)] &= ~sl.gpu_mask;
    bound[r.free.local_index(to.node)] |= to.gpu_mask;
  }
  sl = to;
  Emit(std::move(e));
}

void Scheduler::MoveIdleBindings(PoolId pool, Timestamp now) {
  for (Reservation& res : state_.mutable_reservations()) {
    if (res.pool != pool || res.end <= now) continue;
    bool moved = false;
    for (size_t k = 0; k < res.binding.slices.size(); ++k) {
      const NodeSlice sl = res.binding.slices[k];
      const Node& n = state_.node(sl.node);
      if (n.state == NodeState::kReady) continue;
      // The owner's work still running on a draining node may finish there, on its GPUs.
      if (!OwnerIdleOn(pool, res.tenant, sl.node)) continue;
      FreeMap unbound = UnboundMap(pool, std::max(now, res.start), res.end, res.id);
      unbound.Occupy(res.binding);
      // A whole node is replaced by a whole node, a remainder by as many GPUs on one node.
      PlaceResult pr = unbound.Place(std::popcount(sl.gpu_mask));
      if (pr.outcome != PlaceOutcome::kPlaced || pr.placement.slices.size() != 1) continue;
      MoveSlice(res, k, pr.placement.slices.front(), now, "node " + n.name + " out of service");
      moved = true;
    }
    if (moved) SortByNode(res.binding);
  }
}

Status Scheduler::ReturnReservation(ReservationId id, TenantId caller, Timestamp now) {
  Accrue(now);  // money for the time up to now, under the state that held
  if (!state_.HasReservation(id)) return NotFound("no such reservation");
  Reservation& r = state_.reservation(id);
  if (caller.valid() && r.tenant != caller) return NotFound("no such reservation");
  if (r.end <= now) return FailedPrecondition("the reservation has already ended");
  at_fixpoint_ = false;
  Timestamp from = std::max(now, r.start);
  Money credit = CostOf(r.price_per_gpu_hour, r.gpus, r.end - from);
  credit = Money::Micros(static_cast<int64_t>(static_cast<__int128>(credit.micros()) *
                                              state_.pool(r.pool).config.return_rate /
                                              kFullBasisPoints));
  rt(r.pool).calendar.Unbook(r.gpus, from, r.end);
  r.end = from;
  if (credit > Money()) {
    LedgerEntry e;
    e.at = now;
    e.kind = EntryKind::kReturnCredit;
    e.pool = r.pool;
    e.reservation = id;
    e.postings = {{Account::Of(r.tenant), credit}, {Account::Operator(), -credit}};
    Status s = ledger_.Post(std::move(e));
    if (!s.ok()) violations_.push_back(s.ToString());
  }
  Event ev;
  ev.at = now;
  ev.type = EventType::kReservationReturned;
  ev.reservation = id;
  ev.pool = r.pool;
  ev.price = credit;
  Emit(std::move(ev));
  return Status::Ok();
}

// ---------------------------------------------------------------------------------------------
// Jobs

Status Scheduler::Validate(const JobSpec& spec) const {
  if (!state_.HasTenant(spec.tenant)) return InvalidArgument("tenant", "unknown tenant");
  if (!state_.HasPool(spec.pool)) return InvalidArgument("pool", "unknown pool");
  if (spec.gpus <= 0) return InvalidArgument("gpus", "must be positive");
  int32_t installed = rt(spec.pool).installed;
  if (installed > 0 && spec.gpus > installed) {
    return InvalidArgument("gpus", std::to_string(spec.gpus) + " exceeds the pool's " +
                                       std::to_string(installed) + " GPUs");
  }
  const PoolConfig& cfg = state_.pool(spec.pool).config;
  if (spec.tier != Tier::kReserved && spec.limit_price < cfg.reserve_price) {
    return InvalidArgument("limit_price",
                           "is below the pool's reserve price " + cfg.reserve_price.ToString());
  }
  if (spec.fallback_limit && *spec.fallback_limit < cfg.reserve_price) {
    return InvalidArgument("fallback_limit",
                           "is below the pool's reserve price " + cfg.reserve_price.ToString());
  }
  if (spec.notice < Duration()) return InvalidArgument("notice", "must not be negative");
  if (spec.max_gpus != 0 && spec.max_gpus < spec.gpus) {
    return InvalidArgument("gpus", "max must be at least min");
  }
  if (spec.elastic()) {
    if (spec.tier != Tier::kSpot) {
      return InvalidArgument("gpus", "only spot jobs may be elastic (min:max)");
    }
    if (spec.gpu_step <= 0) return InvalidArgument("gpus", "step must be positive");
    if ((spec.max_gpus - spec.gpus) % spec.gpu_step != 0) {
      return InvalidArgument(
          "gpus", "max - min must be a multiple of the step " + std::to_string(spec.gpu_step));
    }
    if ((spec.max_gpus - spec.gpus) / spec.gpu_step > kMaxElasticUnits) {
      return InvalidArgument("gpus",
                             "at most " + std::to_string(kMaxElasticUnits) + " steps above min");
    }
    if (spec.resize_cooldown < Duration() || spec.resize_cooldown > Duration::Hours(24 * 30)) {
      return InvalidArgument("resize_cooldown", "must be from 0 to 30 days");
    }
  }
  if (spec.gpu_milli < 1 || spec.gpu_milli > kMilliPerGpu) {
    return InvalidArgument("gpus", "a share of one GPU is 0.001 to 1 (1 to 1000 thousandths)");
  }
  if (spec.gpu_memory_mib < 0) return InvalidArgument("gpu_memory_mib", "must not be negative");
  if (spec.gpu_memory_mib > 0 && !spec.share()) {
    return InvalidArgument("gpu_memory_mib", "is for a share of one GPU (gpus below 1)");
  }
  if (spec.share()) {  // docs/market.md, "GPU shares"
    if (spec.gpus != 1) return InvalidArgument("gpus", "a share is part of one GPU");
    if (spec.tier != Tier::kSpot) {
      return InvalidArgument("tier", "a share of one GPU runs in the spot tier only");
    }
    if (spec.elastic()) return InvalidArgument("gpus", "a share of one GPU cannot be elastic");
  }
  if (spec.max_restarts < -1) return InvalidArgument("max_restarts", "must be -1 or more");
  for (const Dependency& d : spec.dependencies) {
    if (!state_.HasJob(d.job)) {
      return InvalidArgument("dependencies", "unknown job " + d.job.ToString());
    }
  }
  return Status::Ok();
}

Result<JobId> Scheduler::Submit(JobSpec spec, Timestamp now) {
  Accrue(now);  // money for the time up to now, under the state that held
  if (spec.elastic() && spec.gpu_step == 0 && state_.HasPool(spec.pool)) {
    int32_t per_node = 0;  // the pool's GPUs per node (its largest nodes)
    for (NodeId n : state_.pool_nodes(spec.pool))
      per_node = std::max(per_node, state_.node(n).gpus);
    spec.gpu_step = per_node > 0 && spec.gpus % per_node == 0 ? per_node : spec.gpus;
  }
  if (!spec.elastic()) spec.max_gpus = 0;
  RSV_RETURN_IF_ERROR(Validate(spec));
  Job j;
  j.spec = std::move(spec);
  j.submitted = now;
  j.limit = j.spec.tier == Tier::kReserved ? Money() : j.spec.limit_price;
  j.running_as = j.spec.tier == Tier::kReserved ? Tier::kReserved : Tier::kSpot;
  JobId id = state_.AddJob(std::move(j));
  spot_.resize(id.value() + 1);
  Job& job = state_.job(id);
  // An elastic job's units (docs/market.md, "Elastic jobs"): bids of `step` GPUs of their own.
  for (int32_t k = 1;
       job.spec.elastic() && k <= (job.spec.max_gpus - job.spec.gpus) / job.spec.gpu_step; ++k) {
    Job u;
    u.spec.name = job.spec.name.empty() ? "" : job.spec.name + "+" + std::to_string(k);
    u.spec.tenant = job.spec.tenant;
    u.spec.pool = job.spec.pool;
    u.spec.gpus = job.spec.gpu_step;
    u.spec.limit_price = job.spec.limit_price;
    u.spec.notice = job.spec.notice;
    u.submitted = now;
    u.limit = job.limit;
    u.unit_of = id;
    u.unit = k;
    JobId uid = state_.AddJob(std::move(u));
    spot_.resize(uid.value() + 1);
    job.units.push_back(uid);
  }
  if (!job.spec.dependencies.empty()) {
    dep_waiting_.insert(id.value());
    at_fixpoint_ = false;
  } else {
    Enqueue(job);
  }
  Event e;
  e.at = now;
  e.type = EventType::kJobSubmitted;
  e.job = id;
  e.pool = job.spec.pool;
  e.attempt = job.attempt;
  e.detail = std::string(TierName(job.spec.tier));
  Emit(std::move(e));
  return id;
}

bool Scheduler::FixpointHolds(Timestamp now) const {
  return at_fixpoint_ && now >= last_cycle_ &&
         (now == last_cycle_ || !wakeup_after_cycle_ || now < *wakeup_after_cycle_);
}

bool Scheduler::NothingToDecide(Timestamp now) const {
  if (!FixpointHolds(now)) return false;
  // Open claims and notices are decided again by each cycle (a claimant may start elsewhere
  // as GPUs come free): a cycle runs while any is open.
  for (const PoolRuntime& r : pools_) {
    if (!r.claims.empty() || !r.owner_claims.empty() || r.preempting > 0) return false;
  }
  return true;
}

bool Scheduler::Decide(Timestamp now) {
  if (NothingToDecide(now)) return false;
  RunCycle(now);
  return true;
}

Result<JobId> Scheduler::SubmitAndDecide(JobSpec spec, Timestamp now, CycleReport* report) {
  const bool was_fixpoint = FixpointHolds(now);
  RSV_ASSIGN_OR_RETURN(JobId id, Submit(std::move(spec), now));
  if (was_fixpoint && TryIncremental(id, now)) {
    last_decided_ = now;
    if (report) {
      report->at = now;
      report->incremental = true;
      report->stages.clear();
    }
    return id;
  }
  CycleReport r = RunCycle(now);
  if (report) *report = std::move(r);
  return id;
}

bool Scheduler::TryIncremental(JobId id, Timestamp now) {
  Job& j = state_.job(id);
  PoolRuntime& r = rt(j.spec.pool);
  if (r.index_stale) return false;
  if (j.state != JobState::kPending || !j.spec.dependencies.empty()) return false;
  if (j.spec.elastic()) return false;  // its units bid too
  if (j.spec.share() || !r.share_hosts.empty() || !r.share_shapes.empty()) {
    return false;  // shares bid or hold here: a cycle decides (docs/market.md, "GPU shares")
  }
  if (j.spec.tier == Tier::kReserved) return false;
  if (j.spec.tier == Tier::kAuto && HasRoom(j, 0)) return false;
  if (!r.claims.empty() || !r.owner_claims.empty() || r.preempting > 0) return false;
  const PoolConfig& cfg = state_.pool(j.spec.pool).config;
  std::string why;
  if (!r.free.Feasible(j.spec.gpus, &why)) return true;  // infeasible: no price effect
  if (j.limit < cfg.reserve_price) return true;
  std::optional<Money> lowest;
  if (!r.holder_limits.empty()) lowest = Money::Micros(*r.holder_limits.begin());
  if (r.spot_held + j.spec.gpus <= r.budget) {
    PlaceResult pr = r.unlent.empty() ? r.free.Place(j.spec.gpus) : SpotFree(r).Place(j.spec.gpus);
    if (pr.outcome == PlaceOutcome::kPlaced) {
      Bind(j, std::move(pr.placement), Tier::kSpot, now);
      SetPrice(j.spec.pool,
               ClearingPrice(cfg.reserve_price, r.highest_unplaced,
                             Money::Micros(*r.holder_limits.begin())),
               now);
      return true;
    }
  }
  if (lowest && Outbids(j.limit, *lowest, cfg.min_increment)) return false;  // may preempt
  if (!r.highest_unplaced || j.limit > *r.highest_unplaced) r.highest_unplaced = j.limit;
  SetPrice(j.spec.pool, ClearingPrice(cfg.reserve_price, r.highest_unplaced, lowest), now);
  return true;
}

bool Scheduler::RefillEligible(const Job& j) const {
  // A spot job only: an auto or reserved-tier job requeued by a failure joins its tenant's
  // reserved queue, which only a cycle serves.
  if (!options_.refill_on_exit || j.state != JobState::kRunning || j.spec.tier != Tier::kSpot ||
      j.running_as != Tier::kSpot || j.unit_of.valid() || j.spec.elastic() || j.spec.share() ||
      !j.units.empty() || j.resizing || j.gang_end.set || !dep_waiting_.empty()) {
    return false;
  }
  for (const NodeSlice& sl : j.placement.slices) {
    if (state_.node(sl.node).state != NodeState::kReady) return false;
  }
  const PoolRuntime& r = rt(j.spec.pool);
  if (r.index_stale || !r.claims.empty() || !r.owner_claims.empty() || r.preempting > 0 ||
      !r.unlent.empty() || !r.fits_since.empty()) {
    return false;
  }
  // GPU shares bidding or holding: where they go (and which GPUs of shares a bid may take) is a
  // cycle's to decide (docs/market.md, "GPU shares").
  if (!r.share_hosts.empty() || !r.share_shapes.empty()) return false;
  for (const auto& [tenant, queue] : r.reserved_q) {
    if (!queue.empty()) return false;
  }
  return true;
}

bool Scheduler::Refill(PoolId pool, Timestamp now) {
  // Clear (market/clearing.cc) on this state: no claims and no notices, so what is committed is
  // what spot jobs hold; the budget is unchanged (the exit freed spot GPUs on ready nodes).
  PoolRuntime& r = rt(pool);
  const PoolConfig& cfg = state_.pool(pool).config;
  std::optional<Money> cheapest;  // the cheapest running job a bid might outbid
  if (!r.holder_limits.empty()) cheapest = Money::Micros(*r.holder_limits.begin());
  std::optional<Money> highest_unplaced;
  int32_t free_fail = INT32_MAX;  // free GPUs only shrink: a size that failed fails for larger
  std::string why;
  bool decided = true;
  for (auto it = r.book.begin(); it != r.book.end();) {
    Job& j = state_.job(JobId(it->job));
    ++it;  // a start takes the bid out of the book
    if (j.unit_of.valid() || !j.units.empty() || j.spec.share()) {
      // Whether a unit may start depends on its job (its cooldown, the reservations ahead):
      // an elastic job and its units are a cycle's to decide, together. Where a share goes is
      // the packer's, in a cycle.
      decided = false;
      break;
    }
    const bool room = r.spot_held < r.budget && r.free.free_gpus() > 0 && free_fail > 1;
    const bool may_preempt = cheapest && Outbids(j.limit, *cheapest, cfg.min_increment);
    if (!room && !may_preempt) {
      // The rest are left out; the first that could run at all sets the price.
      for (auto q = std::prev(it); q != r.book.end() && !highest_unplaced; ++q) {
        const Job& b = state_.job(JobId(q->job));
        if (b.limit < cfg.reserve_price) break;
        if (b.unit_of.valid() || b.spec.share()) {
          decided = false;
          break;
        }
        if (r.free.Feasible(b.spec.gpus, &why)) highest_unplaced = b.limit;
      }
      break;
    }
    if (!r.free.Feasible(j.spec.gpus, &why)) continue;  // never fits: no part in the price
    if (j.limit < cfg.reserve_price) break;             // nor any bid after it
    if (r.spot_held + j.spec.gpus <= r.budget && j.spec.gpus < free_fail) {
      PlaceResult pr = r.free.Place(j.spec.gpus);
      if (pr.outcome == PlaceOutcome::kPlaced) {
        Bind(j, std::move(pr.placement), Tier::kSpot, now);
        continue;
      }
      free_fail = j.spec.gpus;
    }
    if (may_preempt) {
      decided = false;
      break;
    }
    if (!highest_unplaced) highest_unplaced = j.limit;
  }
  if (!decided) return false;  // the price is the cycle's to set, as a cycle would set it
  r.highest_unplaced = highest_unplaced;
  std::optional<Money> lowest;
  if (!r.holder_limits.empty()) lowest = Money::Micros(*r.holder_limits.begin());
  SetPrice(pool, ClearingPrice(cfg.reserve_price, highest_unplaced, lowest), now);
  if (options_.checks != InvariantChecks::kOff) {
    for (std::string& v : CheckInvariants(now, true)) {
      violations_.push_back("after a refill: " + v);
    }
  }
  return true;
}

Status Scheduler::Cancel(JobId id, Timestamp now) {
  Accrue(now);  // money for the time up to now, under the state that held
  if (!state_.HasJob(id)) return NotFound("no such job");
  Job& j = state_.job(id);
  if (j.unit_of.valid()) {
    return FailedPrecondition("job " + id.ToString() + " is unit " + std::to_string(j.unit) +
                              " of job " + j.unit_of.ToString() + "; cancel that job");
  }
  if (IsTerminal(j.state)) {
    return FailedPrecondition("job is already " + std::string(JobStateName(j.state)));
  }
  at_fixpoint_ = false;
  Finish(j, JobState::kCancelled, "cancelled", now);
  return Status::Ok();
}

Status Scheduler::Release(JobId id, Timestamp now) {
  Accrue(now);  // money for the time up to now, under the state that held
  if (!state_.HasJob(id)) return NotFound("no such job");
  Job& j = state_.job(id);
  if (j.state != JobState::kPreempting) return FailedPrecondition("job is not under notice");
  at_fixpoint_ = false;
  if (j.gang_end.set) {
    ConcludeGang(j, now);  // a gang stopping because a member ended: that end decides
  } else {
    Requeue(j, EventType::kJobPreempted, "released under notice", now);
  }
  return Status::Ok();
}

Status Scheduler::JobExited(JobId id, bool success, Timestamp now, const std::string& detail) {
  Accrue(now);  // money for the time up to now, under the state that held
  if (!state_.HasJob(id)) return NotFound("no such job");
  Job& j = state_.job(id);
  if (j.unit_of.valid()) return FailedPrecondition("a unit runs no process; its job does");
  if (!HoldsGpus(j.state)) return FailedPrecondition("job is not running");
  const bool refill = FixpointHolds(now) && RefillEligible(j);
  at_fixpoint_ = false;
  EndProcess(j, success, detail, now);
  if (refill) {
    at_fixpoint_ = Refill(j.spec.pool, now);
    if (at_fixpoint_) last_decided_ = now;
  }
  return Status::Ok();
}

void Scheduler::EndProcess(Job& j, bool success, const std::string& detail, Timestamp now) {
  if (j.state == JobState::kPreempting) {
    Requeue(j, EventType::kJobPreempted, "exited under notice", now);
  } else if (j.resizing) {
    RestartInPlace(j, now);            // told to restart at a new size: any exit is that restart
  } else if (ResizeOverdue(j, now)) {  // killed by its agent at the resize's deadline
    Requeue(j, EventType::kJobPreempted, "stopped: resize not taken in by its deadline", now);
  } else if (success) {
    Finish(j, JobState::kSucceeded, detail.empty() ? "exit 0" : detail, now);
  } else {
    Fail(j, detail.empty() ? "failed" : "failed (" + detail + ")", now);
  }
}

void Scheduler::Fail(Job& j, const std::string& why, Timestamp now) {
  j.failures++;
  if (j.spec.max_restarts < 0 || j.failures <= j.spec.max_restarts) {
    Requeue(j, EventType::kJobRequeued, why + "; restart " + std::to_string(j.failures), now);
  } else {
    Finish(j, JobState::kFailed, why, now);
  }
}

std::vector<NodeId> Scheduler::Members(const Job& j) const {
  std::vector<NodeId> out;
  for (const NodeSlice& s : state_.AttemptPlacement(j).slices) {
    if (state_.node(s.node).agent && !Contains(out, s.node)) {
      out.push_back(s.node);
    }
  }
  return out;
}

Status Scheduler::MemberEnded(JobId id, int32_t attempt, NodeId node, MemberEnd how,
                              const std::string& detail, Timestamp now) {
  Accrue(now);  // money for the time up to now, under the state that held
  RSV_RETURN_IF_ERROR(PlacedAttempt(id, attempt));
  Job& j = state_.job(id);
  const std::vector<NodeId> members = Members(j);
  if (!state_.HasNode(node) || !Contains(members, node)) {
    return FailedPrecondition("job " + std::to_string(id.value()) + " has no member on that node");
  }
  if (members.size() <= 1 && how != MemberEnd::kLost) {
    return JobExited(id, how == MemberEnd::kSucceeded, now, detail);  // it may refill
  }
  at_fixpoint_ = false;
  if (members.size() <= 1) {
    Requeue(j, EventType::kJobRequeued, detail, now);
    return Status::Ok();
  }
  if (Contains(j.ended, node)) return Status::Ok();
  j.ended.push_back(node);
  if (j.resizing && how != MemberEnd::kLost && j.state != JobState::kPreempting) {
    // Restarting at a new size: members leave as they stop; the next attempt starts after.
    if (j.ended.size() == members.size()) RestartInPlace(j, now);
    return Status::Ok();
  }
  if (j.state != JobState::kPreempting) {
    const std::string where =
        how == MemberEnd::kLost ? detail : detail + " on node " + state_.node(node).name;
    // Killed by its agent at an unacknowledged resize's deadline: stopped, not failed.
    const bool forced = ResizeOverdue(j, now);
    j.gang_end = Job::GangEnd{true, how == MemberEnd::kSucceeded && !forced,
                              how == MemberEnd::kLost || forced, where};
    // The rest of the gang: SIGTERM now, killed at the deadline.
    SendNotice(j, "gang member ended: " + where, now);
  }
  if (j.ended.size() == members.size()) ConcludeGang(j, now);
  return Status::Ok();
}

void Scheduler::ConcludeGang(Job& j, Timestamp now) {
  const Job::GangEnd end = j.gang_end;  // Requeue and Finish reset it
  if (!end.set) {
    Requeue(j, EventType::kJobPreempted, "exited under notice", now);
  } else if (end.lost) {
    Requeue(j, EventType::kJobRequeued, end.detail, now);
  } else if (end.success) {
    Finish(j, JobState::kSucceeded, end.detail, now);
  } else {
    Fail(j, "failed (" + end.detail + ")", now);
  }
}

Status Scheduler::PlacedAttempt(JobId id, int32_t attempt) const {
  if (!state_.HasJob(id)) return NotFound("no such job");
  const Job& j = state_.job(id);
  if (j.attempt != attempt || !HoldsGpus(j.state)) {
    return FailedPrecondition("attempt " + std::to_string(attempt) + " of job " +
                              std::to_string(id.value()) + " is not placed");
  }
  return Status::Ok();
}

Status Scheduler::ConfirmStart(JobId id, int32_t attempt, Timestamp now, NodeId node) {
  RSV_RETURN_IF_ERROR(PlacedAttempt(id, attempt));
  Job& j = state_.job(id);
  if (j.state == JobState::kRunning && node.valid() && !j.units.empty() &&
      !Contains(j.confirmed, node) && Contains(Members(j), node)) {
    j.confirmed.push_back(node);  // a member on a node a grow added (signal mode)
    return Status::Ok();
  }
  if (j.state != JobState::kStarting) return Status::Ok();  // confirmed already, or under notice
  if (node.valid()) {
    const std::vector<NodeId> members = Members(j);
    if (!Contains(members, node)) {
      return FailedPrecondition("job " + std::to_string(id.value()) +
                                " has no member on that node");
    }
    if (!Contains(j.confirmed, node)) j.confirmed.push_back(node);
    if (j.confirmed.size() < members.size()) return Status::Ok();  // the gang is not whole yet
  }
  j.state = JobState::kRunning;
  if (j.running_as == Tier::kSpot) HolderChanged(j);
  if (!j.units.empty()) at_fixpoint_ = false;  // its units may start now
  Event e = JobEvent(EventType::kJobRunning, j, now);
  Emit(std::move(e));
  return Status::Ok();
}

Status Scheduler::StartFailed(JobId id, int32_t attempt, const std::string& reason,
                              bool counts_as_failure, Timestamp now) {
  Accrue(now);  // money for the time up to now, under the state that held
  RSV_RETURN_IF_ERROR(PlacedAttempt(id, attempt));
  Job& j = state_.job(id);
  at_fixpoint_ = false;
  if (j.gang_end.set) {  // a member already ended the attempt: its end decides
    ConcludeGang(j, now);
    return Status::Ok();
  }
  if (counts_as_failure && j.state != JobState::kPreempting) {
    j.failures++;
    if (j.spec.max_restarts >= 0 && j.failures > j.spec.max_restarts) {
      Finish(j, JobState::kFailed, "could not start: " + reason, now);
      return Status::Ok();
    }
  }
  Requeue(j, EventType::kJobRequeued, "start failed: " + reason, now);
  return Status::Ok();
}

Status Scheduler::Checkpointed(JobId id, Timestamp now) {
  if (!state_.HasJob(id)) return NotFound("no such job");
  Job& j = state_.job(id);
  if (!HoldsGpus(j.state)) return FailedPrecondition("job is not running");
  j.last_checkpoint = now;
  HolderChanged(j);
  for (JobId u : j.units) {
    state_.job(u).last_checkpoint = now;  // a unit loses its job's work
    HolderChanged(state_.job(u));
  }
  Emit(JobEvent(EventType::kJobCheckpointed, j, now));
  return Status::Ok();
}

namespace {
// A unit a signal-mode shrink put under notice, which the job taking in `generation` frees.
bool UnitFreedBy(const Job& u, int64_t generation) {
  return u.state == JobState::kPreempting && u.shrink_generation > 0 &&
         u.shrink_generation <= generation;
}
}  // namespace

bool Scheduler::AckFrees(const Job& j, int64_t generation) const {
  // A job stopping as a whole frees everything at its own deadline.
  return IsActive(j.state) && generation <= j.resize_generation &&
         std::any_of(j.units.begin(), j.units.end(),
                     [&](JobId u) { return UnitFreedBy(state_.job(u), generation); });
}

Status Scheduler::ResizeAcked(JobId id, int32_t attempt, int32_t generation, Timestamp now) {
  Accrue(now);  // money for the time up to now, under the state that held
  RSV_RETURN_IF_ERROR(PlacedAttempt(id, attempt));
  Job& j = state_.job(id);
  if (j.spec.resize_mode != ResizeMode::kSignal) {
    return FailedPrecondition("job " + id.ToString() + " does not resize by signal");
  }
  if (generation > j.resize_generation) {
    return InvalidArgument("generation", "job " + id.ToString() + " is at generation " +
                                             std::to_string(j.resize_generation));
  }
  if (!AckFrees(j, generation)) return Status::Ok();
  for (JobId uid : j.units) {
    Job& u = state_.job(uid);
    if (UnitFreedBy(u, generation)) {
      at_fixpoint_ = false;
      Requeue(u, EventType::kJobPreempted,
              "released: the job took in resize generation " + std::to_string(generation), now);
    }
  }
  return Status::Ok();
}

// ---------------------------------------------------------------------------------------------
// Bookkeeping

void Scheduler::Emit(Event e) {
  e.seq = next_seq_++;
  events_.push_back(std::move(e));
}

std::vector<Event> Scheduler::DrainEvents() {
  std::vector<Event> out;
  out.swap(events_);
  return out;
}

Scheduler::RankKey Scheduler::KeyOf(const Job& j) const {
  return RankKey{-j.limit.micros(),    j.unit > 0 ? 1 : 0, HoldsGpus(j.state) ? 0 : 1, j.unit,
                 j.submitted.micros(), j.id.value()};
}

Scheduler::RankKey Scheduler::HolderKey(const Job& j) const {
  RankKey k = KeyOf(j);
  k.not_holding = 0;  // the same key whether the job's state has changed yet or not
  return k;
}

void Scheduler::BookInsert(const Job& j) {
  // Only bids: holders reach the clearing from `spot_holders`, so a long queue's walk never
  // steps over them.
  if (HoldsGpus(j.state)) return;
  PoolRuntime& r = rt(j.spec.pool);
  if (r.book.insert(KeyOf(j)).second) {
    r.book_gpus += j.spec.gpus;
    CountShape(j, 1);
  }
}

void Scheduler::BookErase(const Job& j) {
  PoolRuntime& r = rt(j.spec.pool);
  if (r.book.erase(KeyOf(j)) > 0) {
    r.book_gpus -= j.spec.gpus;
    CountShape(j, -1);
  }
}

void Scheduler::CountShape(const Job& j, int64_t delta) {
  if (!j.spec.share()) return;
  auto& shapes = rt(j.spec.pool).share_shapes;
  const std::pair<int32_t, int64_t> key{j.spec.gpu_milli, j.spec.gpu_memory_mib};
  if ((shapes[key] += delta) == 0) shapes.erase(key);
}

std::pair<Bid, Scheduler::HolderEntry> Scheduler::ShareGpu(const Node& n, int32_t g) const {
  const std::vector<JobId>& shares = n.gpu_shares[g];
  Bid b;
  HolderEntry e;
  e.key = GpuKey(n.id, g);
  b.job = shares.front();
  b.gpus = 1;
  b.placement = &state_.job(shares.front()).placement;  // a share's placement is its GPU
  bool first = true, noticed = false;
  for (JobId id : shares) {
    const Job& j = state_.job(id);
    const bool active = IsActive(j.state);
    b.running = b.running || active;
    noticed = noticed || !active;
    if (first || j.limit > b.limit) b.limit = j.limit;
    if (first || j.limit < e.floor) e.floor = j.limit;
    if (first || j.submitted < b.submitted) b.submitted = j.submitted;
    if (first || j.started < b.started) b.started = j.started;
    if (first || j.last_checkpoint < b.last_checkpoint) b.last_checkpoint = j.last_checkpoint;
    first = false;
  }
  b.preempting = !b.running;
  e.room.node = n.id;
  e.room.gpu = g;
  // A share may join a GPU with room whose shares are not under notice, on a ready node.
  if (!noticed && n.state == NodeState::kReady && n.share_milli[g] < kMilliPerGpu) {
    e.room.free_milli = kMilliPerGpu - n.share_milli[g];
    e.room.free_memory_mib = n.gpu_memory_mib - n.share_memory_mib[g];
  }
  return {b, e};
}

std::vector<Bid> Scheduler::ShareHolderBids(const PoolRuntime& r, bool active_only,
                                            Supply* supply) const {
  std::vector<Bid> out;
  out.reserve(r.share_hosts.size());
  for (const auto& [node_id, g] : r.share_hosts) {
    const Node& n = state_.node(NodeId(node_id));
    if (n.gpu_shares[g].empty()) continue;
    auto [b, e] = ShareGpu(n, g);
    if (supply) {
      if (!supply->holder_floor || e.floor < *supply->holder_floor) supply->holder_floor = e.floor;
      if (e.room.free_milli > 0) {
        b.share_host = static_cast<int32_t>(supply->share_hosts.size());
        supply->share_hosts.push_back(e.room);
      }
    }
    if (active_only && !b.running) continue;
    out.push_back(b);
  }
  std::sort(out.begin(), out.end(), RanksAhead);
  return out;
}

void Scheduler::HolderChanged(const Job& j) {
  if (j.placement.slices.empty()) return;
  HolderCache& c = rt(j.spec.pool).holders;
  if (c.stale) return;
  if (c.changed.size() > c.bids.size() / 4 + 64) {  // patching would cost more than a rebuild
    HolderChanged(j.spec.pool);
    return;
  }
  if (j.spec.share()) {
    const NodeSlice& sl = j.placement.slices.front();
    c.changed.push_back(GpuKey(sl.node, std::countr_zero(sl.gpu_mask)));
  } else {
    c.changed.push_back(j.id.value());
  }
}

void Scheduler::HolderChanged(PoolId pool) {
  HolderCache& c = rt(pool).holders;
  c.stale = true;
  c.changed.clear();
}

void Scheduler::PatchHolders(PoolRuntime& r) {
  HolderCache& c = r.holders;
  if (!c.stale && c.changed.empty()) return;
  std::vector<std::pair<Bid, HolderEntry>> add;
  auto add_key = [&](uint64_t key) {
    if (IsGpuKey(key)) {
      const auto [node, g] = GpuOfKey(key);
      const Node& n = state_.node(node);
      if (!n.gpu_shares[g].empty()) add.push_back(ShareGpu(n, g));
    } else if (r.spot_holders.Contains(static_cast<uint32_t>(key))) {
      add.emplace_back(BidOf(state_.job(JobId(static_cast<uint32_t>(key)))),
                       HolderEntry{.key = key, .room = {}, .floor = Money()});
    }
  };
  if (c.stale) {
    c.bids.clear();
    c.entries.clear();
    for (const RankKey& k : r.holder_rank) add_key(k.job);
    for (const auto& [node_id, g] : r.share_hosts) add_key(GpuKey(NodeId(node_id), g));
  } else {
    std::sort(c.changed.begin(), c.changed.end());
    c.changed.erase(std::unique(c.changed.begin(), c.changed.end()), c.changed.end());
    size_t kept = 0;
    for (size_t i = 0; i < c.bids.size(); ++i) {
      if (std::binary_search(c.changed.begin(), c.changed.end(), c.entries[i].key)) continue;
      c.bids[kept] = c.bids[i];
      c.entries[kept] = c.entries[i];
      ++kept;
    }
    c.bids.resize(kept);
    c.entries.resize(kept);
    for (uint64_t key : c.changed) add_key(key);
  }
  std::sort(add.begin(), add.end(),
            [](const auto& a, const auto& b) { return RanksAhead(a.first, b.first); });
  if (!add.empty()) {  // merge the new entries in from the back, in place, bids and entries alike
    size_t i = c.bids.size(), k = add.size(), out = i + k;
    c.bids.resize(out);
    c.entries.resize(out);
    while (k > 0) {
      // The kept entry goes last only if the added one ranks ahead of it (a tie keeps it first).
      if (i > 0 && RanksAhead(add[k - 1].first, c.bids[i - 1])) {
        c.bids[--out] = c.bids[--i];
        c.entries[out] = c.entries[i];
      } else {
        c.bids[--out] = add[--k].first;
        c.entries[out] = add[k].second;
      }
    }
  }
  c.stale = false;
  c.changed.clear();
  // The rooms and the floor follow the entries.
  c.rooms.clear();
  c.floor.reset();
  for (size_t i = 0; i < c.bids.size(); ++i) {
    const HolderEntry& e = c.entries[i];
    c.bids[i].share_host = -1;
    if (!IsGpuKey(e.key)) continue;
    if (!c.floor || e.floor < *c.floor) c.floor = e.floor;
    if (e.room.free_milli > 0) {
      c.bids[i].share_host = static_cast<int32_t>(c.rooms.size());
      c.rooms.push_back(e.room);
    }
  }
}

void Scheduler::NoticeVictim(JobId victim, const std::string& reason, Timestamp now,
                             JobId beneficiary) {
  Job& v = state_.job(victim);
  if (!v.spec.share()) {
    SendNotice(v, reason, now, beneficiary);
    return;
  }
  const std::vector<JobId> shares = state_.SharesWith(v);  // a copy: notices change nothing here
  for (JobId id : shares) {
    Job& j = state_.job(id);
    if (IsActive(j.state)) SendNotice(j, reason, now, beneficiary);
  }
}

const Placement* Scheduler::Freeing(const Job& j) const {
  if (!j.spec.share()) return &j.placement;
  for (JobId id : state_.SharesWith(j)) {
    if (state_.job(id).state != JobState::kPreempting) return nullptr;
  }
  return &j.placement;
}

void Scheduler::Enqueue(Job& j) {
  if (j.unit_of.valid()) return SyncUnit(j);
  PoolRuntime& r = rt(j.spec.pool);
  if (j.spec.tier != Tier::kSpot) {
    r.reserved_q[j.spec.tenant].emplace(j.submitted.micros(), j.id.value());
    r.reserved_sizes[j.spec.tenant].insert(j.spec.gpus);
  }
  if (j.spec.tier != Tier::kReserved) BookInsert(j);
  SyncUnits(j);
}

void Scheduler::SyncUnit(Job& u) {
  if (u.state != JobState::kPending) return;
  const Job& j = state_.job(u.unit_of);
  const bool bids =
      j.cooldown_until == Timestamp() &&
      (IsActive(j.state) || (j.state == JobState::kPending && !dep_waiting_.count(j.id.value())));
  if (bids) {
    BookInsert(u);
  } else {
    BookErase(u);
  }
}

void Scheduler::SyncUnits(const Job& j) {
  for (JobId u : j.units) SyncUnit(state_.job(u));
}

void Scheduler::Grew(Job& u, Timestamp now) {
  Job& j = state_.job(u.unit_of);
  const PoolConfig& cfg = state_.pool(j.spec.pool).config;
  u.joined = j.attempt;
  if (j.spec.resize_mode == ResizeMode::kSignal) {
    j.resize_generation++;
  } else if (j.state == JobState::kRunning && j.started < now) {
    // The running attempt ends (notice, checkpoint); the next starts with this unit. (An
    // attempt starting at this instant, as its base was placed, starts with it.)
    u.joined = j.attempt + 1;
    if (!j.resizing) {
      j.resizing = true;
      j.resize_deadline = now + std::min(j.spec.notice, cfg.max_notice);
      resizing_.insert(j.id.value());
    }
  }
}

void Scheduler::Shrinking(Job& u, Timestamp now) {
  Job& j = state_.job(u.unit_of);
  if (!IsActive(j.state)) return;  // the job is stopping as a whole
  if (j.spec.resize_mode == ResizeMode::kSignal) {
    u.shrink_generation = ++j.resize_generation;
  } else if (u.joined <= j.attempt) {
    if (!j.resizing || u.notice_deadline < j.resize_deadline) j.resize_deadline = u.notice_deadline;
    j.resizing = true;
    resizing_.insert(j.id.value());
  }
  (void)now;
}

void Scheduler::DropUnits(Job& j, Timestamp now) {
  for (JobId uid : j.units) {
    Job& u = state_.job(uid);
    if (!HoldsGpus(u.state)) continue;
    Unbind(u);
    u.state = JobState::kPending;
    u.attempt++;
    u.preempt_reason.clear();
    Event e = JobEvent(EventType::kJobRequeued, u, now);
    e.detail = "job " + j.id.ToString() + " stopped";
    Emit(std::move(e));
  }
  j.resizing = false;
  resizing_.erase(j.id.value());
}

void Scheduler::RestartInPlace(Job& j, Timestamp now) {
  for (JobId uid : j.units) {
    Job& u = state_.job(uid);
    if (u.state == JobState::kPreempting) Requeue(u, EventType::kJobPreempted, "resized", now);
  }
  j.resizing = false;
  resizing_.erase(j.id.value());
  j.attempt++;
  j.confirmed.clear();
  j.ended.clear();
  j.gang_end = Job::GangEnd();
  for (JobId uid : j.units) {
    Job& u = state_.job(uid);
    if (HoldsGpus(u.state)) u.joined = j.attempt;
  }
  const Placement all = state_.AttemptPlacement(j);
  bool two_phase = false;
  for (const NodeSlice& s : all.slices) two_phase = two_phase || state_.node(s.node).agent;
  j.state = two_phase ? JobState::kStarting : JobState::kRunning;
  j.started = now;
  if (j.running_as == Tier::kSpot) HolderChanged(j);
  Event e = JobEvent(EventType::kJobResized, j, now);
  e.detail = std::to_string(all.GpuCount()) + " GPUs " + PlacementString(state_, all);
  Emit(std::move(e));
}

void Scheduler::Dequeue(Job& j) {
  PoolRuntime& r = rt(j.spec.pool);
  if (j.spec.tier != Tier::kSpot) {
    auto q = r.reserved_q.find(j.spec.tenant);
    if (q != r.reserved_q.end() && q->second.erase({j.submitted.micros(), j.id.value()})) {
      std::multiset<int32_t>& sizes = r.reserved_sizes[j.spec.tenant];
      sizes.erase(sizes.find(j.spec.gpus));
    }
  }
  BookErase(j);
  if (!r.claims.empty()) r.claims.erase(j.id.value());
  if (!r.owner_claims.empty()) r.owner_claims.erase(j.id.value());
  if (!r.fits_since.empty()) r.fits_since.erase(j.id.value());
  if (!j.spec.dependencies.empty()) dep_waiting_.erase(j.id.value());
}

void Scheduler::Bind(Job& j, Placement p, Tier as, Timestamp now) {
  PoolRuntime& r = rt(j.spec.pool);
  std::optional<Timestamp> fits_since;  // the owner's wait ends here (Dequeue forgets it)
  if (auto f = r.fits_since.find(j.id.value()); f != r.fits_since.end()) fits_since = f->second;
  Dequeue(j);
  bool opens = false;  // a share on a GPU no share held yet: spot holds a GPU more
  for (const NodeSlice& s : p.slices) {
    Node& n = state_.node(s.node);
    for (int g = 0; g < n.gpus; ++g) {
      if (!((s.gpu_mask >> g) & 1)) continue;
      if (j.spec.share()) {
        opens = n.gpu_shares[g].empty();
        n.gpu_shares[g].push_back(j.id);
        n.share_milli[g] += j.spec.gpu_milli;
        n.share_memory_mib[g] += j.spec.gpu_memory_mib;
        if (opens) r.share_hosts.insert({s.node.value(), g});
      } else {
        n.gpu_job[g] = j.id;
      }
    }
  }
  if (!j.spec.share() || opens) r.free.Occupy(p);
  bool two_phase = false;
  for (const NodeSlice& s : p.slices) two_phase = two_phase || state_.node(s.node).agent;
  j.placement = std::move(p);
  // A unit runs as part of its job's processes: nothing of its own to confirm.
  j.state = two_phase && !j.unit_of.valid() ? JobState::kStarting : JobState::kRunning;
  j.started = now;
  j.running_as = as;
  if (as == Tier::kSpot) {
    HolderChanged(j);
    BookInsert(j);
    OpenSpot(j, now);
    r.holder_limits.insert(j.limit.micros());
    if (j.spec.share()) {
      r.share_holders.insert(j.id.value());
      CountShape(j, 1);
      r.spot_held += opens;
    } else {
      r.spot_holders.Insert(j.id.value());
      r.holder_rank.insert(HolderKey(j));
      r.spot_held += j.spec.gpus;
    }
  } else {
    r.reserved_used[j.spec.tenant] += j.spec.gpus;
    r.reserved_holders.insert(j.id.value());
  }
  Event e = JobEvent(EventType::kJobStarted, j, now);
  e.price = as == Tier::kSpot ? r.price : Money();
  e.fits_since = fits_since;
  e.detail = std::string(TierName(as)) + " " + PlacementString(state_, j.placement);
  if (j.unit_of.valid())
    e.detail += " (unit " + std::to_string(j.unit) + " of job " + j.unit_of.ToString() + ")";
  Emit(std::move(e));
  if (j.unit_of.valid()) {
    j.shrink_generation = 0;
    Grew(j, now);
  }
}

void Scheduler::Unbind(Job& j) {
  PoolRuntime& r = rt(j.spec.pool);
  if (j.running_as == Tier::kSpot) {
    HolderChanged(j);
    BookErase(j);
    CloseSpot(j, last_accrual_);
    auto it = r.holder_limits.find(j.limit.micros());
    if (it != r.holder_limits.end()) r.holder_limits.erase(it);
    if (j.spec.share()) {
      r.share_holders.erase(j.id.value());
      CountShape(j, -1);
    } else {
      r.spot_holders.Erase(j.id.value());
      r.holder_rank.erase(HolderKey(j));
      r.spot_held -= j.spec.gpus;
    }
  } else {
    r.reserved_used[j.spec.tenant] -= j.spec.gpus;
    r.reserved_holders.erase(j.id.value());
  }
  if (j.state == JobState::kPreempting) {
    preempting_.erase(j.id.value());
    r.preempting--;
  }
  bool closes = false;  // the last share left its GPU
  for (const NodeSlice& s : j.placement.slices) {
    Node& n = state_.node(s.node);
    for (int g = 0; g < n.gpus; ++g) {
      if (!((s.gpu_mask >> g) & 1)) continue;
      if (j.spec.share()) {
        std::vector<JobId>& on = n.gpu_shares[g];
        auto at = std::find(on.begin(), on.end(), j.id);
        if (at == on.end()) continue;
        on.erase(at);
        n.share_milli[g] -= j.spec.gpu_milli;
        n.share_memory_mib[g] -= j.spec.gpu_memory_mib;
        closes = on.empty();
        if (closes) r.share_hosts.erase({s.node.value(), g});
      } else if (n.gpu_job[g] == j.id) {
        n.gpu_job[g] = JobId();
      }
    }
  }
  if (!j.spec.share()) {
    r.free.Release(j.placement);
  } else if (closes) {
    r.free.Release(j.placement);
    if (j.running_as == Tier::kSpot) r.spot_held -= 1;
  }
  j.last_placement = std::move(j.placement);
  j.placement = Placement();
  j.confirmed.clear();
  j.ended.clear();
  j.gang_end = Job::GangEnd();
}

void Scheduler::Requeue(Job& j, EventType type, std::string reason, Timestamp now) {
  if (!j.units.empty()) DropUnits(j, now);
  if (j.unit_of.valid() && HoldsGpus(j.state)) {
    // A shrink: the job keeps running smaller; its units do not bid for the cooldown.
    Job& owner = state_.job(j.unit_of);
    if (IsActive(owner.state) && owner.spec.resize_cooldown > Duration()) {
      if (owner.cooldown_until != Timestamp()) {
        cooldowns_.erase({owner.cooldown_until.micros(), owner.id.value()});
      }
      owner.cooldown_until = now + owner.spec.resize_cooldown;
      cooldowns_.insert({owner.cooldown_until.micros(), owner.id.value()});
    }
  }
  if (HoldsGpus(j.state)) Unbind(j);
  if (j.unit_of.valid()) {  // members on nodes the job no longer has are gone
    Job& owner = state_.job(j.unit_of);
    if (!owner.confirmed.empty()) {
      const std::vector<NodeId> members = Members(owner);
      std::erase_if(owner.confirmed, [&](NodeId n) { return !Contains(members, n); });
    }
  }
  j.state = JobState::kPending;
  j.attempt++;
  j.running_as = j.spec.tier == Tier::kReserved ? Tier::kReserved : Tier::kSpot;
  if (j.spec.tier == Tier::kReserved && j.limit > Money()) {
    j.limit = Money();  // a converted job goes back to waiting for its reservation
  }
  j.preempt_reason.clear();
  Enqueue(j);
  if (j.unit_of.valid()) SyncUnits(state_.job(j.unit_of));  // a cooldown may have begun
  Event e = JobEvent(type, j, now);
  e.detail = std::move(reason);
  Emit(std::move(e));
}

void Scheduler::Finish(Job& j, JobState to, std::string reason, Timestamp now) {
  DropUnits(j, now);
  for (JobId uid : j.units) {
    Job& u = state_.job(uid);
    Dequeue(u);
    u.state = JobState::kCancelled;
    u.finished = now;
    u.end_reason = "job " + j.id.ToString() + " ended";
  }
  if (j.cooldown_until != Timestamp()) {
    cooldowns_.erase({j.cooldown_until.micros(), j.id.value()});
    j.cooldown_until = Timestamp();
  }
  if (HoldsGpus(j.state)) {
    Unbind(j);
  } else {
    Dequeue(j);
  }
  j.state = to;
  j.finished = now;
  j.end_reason = reason;
  Event e;
  e.at = now;
  e.type = to == JobState::kSucceeded ? EventType::kJobSucceeded
           : to == JobState::kFailed  ? EventType::kJobFailed
                                      : EventType::kJobCancelled;
  e.job = j.id;
  e.pool = j.spec.pool;
  e.attempt = j.attempt;
  e.detail = std::move(reason);
  Emit(std::move(e));
}

bool Scheduler::ResizeOverdue(const Job& j, Timestamp now) const {
  if (j.spec.resize_mode != ResizeMode::kSignal) return false;
  return std::any_of(j.units.begin(), j.units.end(), [&](JobId u) {
    const Job& unit = state_.job(u);
    return unit.state == JobState::kPreempting && unit.shrink_generation > 0 &&
           unit.notice_deadline <= now;
  });
}

void Scheduler::SendNotice(Job& j, std::string reason, Timestamp now, JobId beneficiary,
                           std::optional<Timestamp> deadline) {
  if (!IsActive(j.state)) return;  // already going (the first deadline stands), or gone
  PoolRuntime& r = rt(j.spec.pool);
  const PoolConfig& cfg = state_.pool(j.spec.pool).config;
  const bool spot = j.running_as == Tier::kSpot;  // a gang's end stops reserved jobs too
  if (spot) BookErase(j);
  j.state = JobState::kPreempting;
  if (spot) BookInsert(j);
  if (spot) HolderChanged(j);
  j.notice_deadline = deadline ? *deadline : now + std::min(j.spec.notice, cfg.max_notice);
  j.preempt_reason = reason;
  preempting_.insert(j.id.value());
  r.preempting++;
  Event e = JobEvent(EventType::kNoticeSent, j, now);
  e.price = r.price;
  e.deadline = j.notice_deadline;
  e.beneficiary = beneficiary;
  e.detail = reason;
  Emit(std::move(e));
  if (j.unit_of.valid()) Shrinking(j, now);
  if (!j.units.empty()) {
    // The whole job stops: its units with it, under the same notice.
    j.resizing = false;
    resizing_.erase(j.id.value());
    for (JobId uid : j.units) {
      Job& u = state_.job(uid);
      if (IsActive(u.state)) SendNotice(u, reason, now, beneficiary, j.notice_deadline);
      SyncUnit(u);
    }
  }
}

Scheduler::DepState Scheduler::Dependencies(const Job& j, std::string* why) const {
  DepState out = DepState::kReady;
  for (const Dependency& d : j.spec.dependencies) {
    const Job& dep = state_.job(d.job);
    if (!IsTerminal(dep.state)) {
      out = DepState::kWait;
      continue;
    }
    if (d.kind == DependencyKind::kAfterOk && dep.state != JobState::kSucceeded) {
      *why = "dependency " + (dep.spec.name.empty() ? dep.id.ToString() : dep.spec.name) + " " +
             std::string(JobStateName(dep.state));
      return DepState::kBroken;
    }
  }
  return out;
}

int32_t Scheduler::RoomCount(PoolId pool, TenantId tenant, int32_t claimed) const {
  const PoolRuntime& r = rt(pool);
  auto get = [&](const std::map<TenantId, int32_t>& m) {
    auto it = m.find(tenant);
    return it == m.end() ? 0 : it->second;
  };
  return get(r.active_reserved) - get(r.reserved_used) - claimed;
}

bool Scheduler::HasRoom(const Job& j, int32_t claimed) const {
  return RoomCount(j.spec.pool, j.spec.tenant, claimed) >= j.spec.gpus;
}

bool Scheduler::OnOwnGpus(PoolId pool, TenantId tenant, const Placement& p) const {
  const PoolRuntime& r = rt(pool);
  auto b = r.bound.find(tenant);
  for (const NodeSlice& sl : p.slices) {
    uint64_t held = b == r.bound.end() ? 0 : b->second[r.free.local_index(sl.node)];
    if (sl.gpu_mask & ~held) return false;
  }
  return true;
}

int32_t Scheduler::ReservedInUse(TenantId tenant, PoolId pool) const {
  auto it = rt(pool).reserved_used.find(tenant);
  return it == rt(pool).reserved_used.end() ? 0 : it->second;
}

Duration Scheduler::SpotHeld(JobId job) const {
  if (job.value() >= spot_.size()) return Duration();
  const SpotAccount& a = spot_[job.value()];
  int64_t open = a.open && last_accrual_ > a.since ? (last_accrual_ - a.since).micros() : 0;
  return Duration::Micros(a.held_us + open);
}

void Scheduler::SetPrice(PoolId pool, Money price, Timestamp now) {
  PoolRuntime& r = rt(pool);
  if (r.price == price) return;
  Event e;
  e.at = now;
  e.type = EventType::kPriceChanged;
  e.pool = pool;
  e.old_price = r.price;
  e.price = price;
  r.price = price;
  Emit(std::move(e));
}

int32_t Scheduler::ComputeBudget(PoolId pool) const {
  const PoolRuntime& r = rt(pool);
  int32_t capacity = 0;
  for (NodeId id : state_.pool_nodes(pool)) {
    const Node& n = state_.node(id);
    if (n.state == NodeState::kReady) {
      capacity += n.gpus;
    } else if (n.state == NodeState::kDraining) {
      for (int g = 0; g < n.gpus; ++g) capacity += !n.GpuFree(g);  // work may finish there
    }
  }
  int32_t reserved_use = 0;
  for (const auto& [t, used] : r.reserved_used) reserved_use += used;
  int32_t unlent_idle = 0;
  for (const auto& [t, active] : r.active_reserved) {
    auto u = r.reserved_used.find(t);
    int32_t used = u == r.reserved_used.end() ? 0 : u->second;
    auto l = r.active_lend.find(t);
    int32_t lend = l == r.active_lend.end() ? 0 : l->second;
    unlent_idle += std::min(std::max(0, active - used), active - lend);
  }
  return std::max(0, capacity - reserved_use - unlent_idle);
}

// ---------------------------------------------------------------------------------------------
// Accounting. Each pool keeps the integral of its price over time; a spot job's charge is its
// GPUs times the integral's growth while it held them, so per-job totals cost nothing to keep.
// The ledger gets one entry per pool per step: each tenant charged for its spot GPUs (with its
// sub-micro-unit remainder carried), owners credited for the spot usage that sat on their idle
// reserved GPUs (beyond the unreserved capacity), the operator the rest.

void Scheduler::Accrue(Timestamp now) {
  if (!accrual_started_) {
    accrual_started_ = true;
    last_accrual_ = now;
    return;
  }
  if (now <= last_accrual_) return;
  const int64_t dt = (now - last_accrual_).micros();
  last_accrual_ = now;
  for (const Pool& pool : state_.pools()) {
    PoolRuntime& r = rt(pool.id);
    r.price_integral += static_cast<__int128>(r.price.micros()) * dt;
    AccrueReservedTime(pool.id, r, dt);
    if (r.spot_held == 0) continue;
    const PoolConfig& cfg = pool.config;
    LedgerEntry& e = accrual_entry_;  // reused: no allocation per step
    e.at = now;
    e.kind = EntryKind::kSpotCharge;
    e.pool = pool.id;
    e.job = JobId();
    e.postings.clear();
    int64_t total = 0;
    for (auto& [t, milli] : r.spot_by_tenant) {
      if (milli == 0) continue;
      __int128& carry = r.tenant_carry[t];
      __int128 num = static_cast<__int128>(r.price.micros()) * milli * dt + carry;
      int64_t amount = static_cast<int64_t>(num / kMilliGpuMicrosPerHour);
      carry = num % kMilliGpuMicrosPerHour;
      if (amount == 0) continue;
      total += amount;
      e.postings.push_back({Account::Of(t), Money::Micros(-amount)});
    }
    if (total == 0) continue;
    const Lending lend = LendingOf(r);
    const int32_t lent_total = lend.lent_total, on_lent = lend.on_lent;
    int64_t to_owners = 0;
    if (on_lent > 0) {
      to_owners = static_cast<int64_t>(static_cast<__int128>(total) * on_lent *
                                       (kFullBasisPoints - cfg.operator_share) /
                                       (static_cast<__int128>(r.spot_held) * kFullBasisPoints));
    }
    // Split among lenders in proportion to what they lend; remainders by tenant id.
    const size_t first_owner = e.postings.size();
    int64_t given = 0;
    for (const OwnerNow& o : lend.owners) {
      if (o.lent <= 0) continue;
      int64_t share = to_owners * o.lent / lent_total;
      given += share;
      e.postings.push_back({Account::Of(o.tenant), Money::Micros(share)});
    }
    const size_t lenders = e.postings.size() - first_owner;
    for (size_t i = 0; given < to_owners; i = (i + 1) % lenders) {
      e.postings[first_owner + i].amount += Money::Micros(1);
      ++given;
    }
    e.postings.push_back({Account::Operator(), Money::Micros(total - to_owners)});
    Status st = ledger_.Post(e);
    if (!st.ok()) violations_.push_back(st.ToString());
  }
}

Scheduler::Lending Scheduler::LendingOf(const PoolRuntime& r) const {
  Lending out;
  for (const auto& [t, active] : r.active_reserved) {
    out.reserved_total += active;
    if (active == 0) continue;
    auto u = r.reserved_used.find(t);
    int32_t used = std::min(active, u == r.reserved_used.end() ? 0 : std::max(0, u->second));
    auto l = r.active_lend.find(t);
    int32_t lent = std::min(l == r.active_lend.end() ? 0 : l->second, active - used);
    out.owners.push_back({t, active, used, lent, 0});
    out.lent_total += lent;
  }
  int32_t unreserved = std::max(0, r.budget_capacity - out.reserved_total);
  out.on_lent = std::min(out.lent_total, std::max(0, r.spot_held - unreserved));
  for (OwnerNow& o : out.owners) {
    if (o.lent > 0) o.sold = static_cast<int32_t>(int64_t{out.on_lent} * o.lent / out.lent_total);
  }
  return out;
}

void Scheduler::AccrueReservedTime(PoolId pool, PoolRuntime& r, int64_t dt) {
  r.unmet_spot += r.book_gpus * dt;
  if (r.active_reserved.empty()) return;
  const Lending lend = LendingOf(r);
  for (const OwnerNow& o : lend.owners) {
    int64_t sold = 0;
    if (o.lent > 0) {
      sold =
          static_cast<int64_t>(static_cast<__int128>(lend.on_lent) * dt * o.lent / lend.lent_total);
    }
    ReservedTime& time = reserved_time_[{pool.value(), o.tenant.value()}];
    time.owner_used += int64_t{o.used} * dt;
    time.lent_sold += sold;
    time.idle_unsold += int64_t{o.lent} * dt - sold;
    time.not_lendable += int64_t{o.reserved - o.used - o.lent} * dt;
  }
}

std::vector<OwnerNow> Scheduler::OwnersNow(PoolId pool) const { return LendingOf(rt(pool)).owners; }

PoolUsage Scheduler::Usage(PoolId pool) const {
  const PoolRuntime& r = rt(pool);
  PoolUsage u;
  // Down: the free GPUs of nodes that are not ready (what jobs still hold on a draining node is
  // theirs). Read from the nodes, so it is right between cycles too.
  int32_t installed = 0;
  for (NodeId id : state_.pool_nodes(pool)) {
    const Node& n = state_.node(id);
    installed += n.gpus;
    if (n.state == NodeState::kReady) continue;
    for (int g = 0; g < n.gpus; ++g) u.down += n.GpuFree(g);
  }
  for (const auto& [t, gpus] : r.reserved_used) u.reserved_used += gpus;
  const Lending lend = LendingOf(r);
  u.lent = lend.on_lent;
  u.spot_used = r.spot_held - u.lent;
  const int32_t available = installed - u.down;
  const int32_t busy = u.reserved_used + r.spot_held;
  u.idle_reserved = std::min(std::max(0, available - busy),
                             std::max(0, lend.reserved_total - u.reserved_used - u.lent));
  u.idle = std::max(0, available - busy - u.idle_reserved);
  u.pending_bids = static_cast<int32_t>(r.book.size());
  u.pending_bid_gpus = r.book_gpus;
  return u;
}

void Scheduler::OpenSpot(Job& j, Timestamp now) {
  PoolRuntime& r = rt(j.spec.pool);
  SpotAccount& a = spot_[j.id.value()];
  a.base = r.price_integral;
  a.since = now;
  a.open = true;
  r.spot_by_tenant[j.spec.tenant] += j.spec.Milli();
}

void Scheduler::CloseSpot(Job& j, Timestamp now) {
  PoolRuntime& r = rt(j.spec.pool);
  SpotAccount& a = spot_[j.id.value()];
  if (!a.open) return;
  a.charged += static_cast<int64_t>(static_cast<__int128>(j.spec.Milli()) *
                                    (r.price_integral - a.base) / kMilliGpuMicrosPerHour);
  a.held_us += (now - a.since).micros();
  a.open = false;
  r.spot_by_tenant[j.spec.tenant] -= j.spec.Milli();
}

Money Scheduler::ChargedForJob(JobId job) const {
  if (!state_.HasJob(job) || job.value() >= spot_.size()) return Money();
  const SpotAccount& a = spot_[job.value()];
  int64_t open = 0;
  if (a.open) {
    const Job& j = state_.job(job);
    open = static_cast<int64_t>(static_cast<__int128>(j.spec.Milli()) *
                                (rt(j.spec.pool).price_integral - a.base) / kMilliGpuMicrosPerHour);
  }
  return Money::Micros(a.charged + open);
}

// ---------------------------------------------------------------------------------------------
// The cycle

void Scheduler::RefreshIndexes() {
  for (const Pool& p : state_.pools()) {
    PoolRuntime& r = rt(p.id);
    if (r.index_stale) {
      r.free = FreeMap(state_, p.id);
      r.index_stale = false;
    }
  }
}

CycleReport Scheduler::RunCycle(Timestamp now) {
  RefreshIndexes();
  CycleReport report;
  report.at = now;
  const int64_t first_event = next_seq_;
  bool priced = false;
  auto stage = [&](const char* name, auto&& body) {
    int64_t t0 = options_.ticker ? options_.ticker->Nanos() : 0;
    body();
    int64_t t1 = options_.ticker ? options_.ticker->Nanos() : 0;
    report.stages.push_back(StageTiming{name, t1 - t0});
    bool last = std::string_view(name) == "preemption";
    if (options_.checks == InvariantChecks::kPerStage ||
        (options_.checks == InvariantChecks::kPerCycle && last)) {
      for (std::string& v : CheckInvariants(now, priced)) {
        violations_.push_back("after stage " + std::string(name) + ": " + v);
      }
    }
  };
  std::vector<Supply> supplies;
  std::vector<ClearingResult> results;
  stage("accrue", [&] { Accrue(now); });
  stage("reservations", [&] { StageReservations(now); });
  stage("dependencies", [&] { StageDependencies(now); });
  stage("elastic", [&] { StageElastic(now); });
  stage("notices", [&] { StageNotices(now); });
  stage("reclaim", [&] { StageReclaim(now, &supplies); });
  stage("clearing", [&] { StageClearing(now, &supplies, &results); });
  priced = true;
  stage("placement", [&] { StagePlacement(now, &results); });
  stage("preemption", [&] { StagePreemption(now, &results); });
  report.events = static_cast<int32_t>(next_seq_ - first_event);
  last_cycle_ = now;
  last_decided_ = now;
  // A notice with no time to run (a zero notice) expires at the next cycle, even at this instant.
  at_fixpoint_ =
      std::none_of(preempting_.begin(), preempting_.end(),
                   [&](uint32_t id) { return state_.job(JobId(id)).notice_deadline <= now; }) &&
      std::none_of(resizing_.begin(), resizing_.end(),
                   [&](uint32_t id) { return state_.job(JobId(id)).resize_deadline <= now; });
  wakeup_after_cycle_ = NextWakeup(now);
  return report;
}

void Scheduler::StageReservations(Timestamp now) {
  for (PoolRuntime& r : pools_) {
    r.active_reserved.clear();
    r.active_lend.clear();
  }
  for (Reservation& res : state_.mutable_reservations()) {
    PoolRuntime& r = rt(res.pool);
    if (res.ActiveAt(now)) {
      r.active_reserved[res.tenant] += res.gpus;
      if (res.lend) r.active_lend[res.tenant] += res.gpus;
      if (!res.activated) {
        res.activated = true;
        Event e;
        e.at = now;
        e.type = EventType::kReservationActivated;
        e.reservation = res.id;
        e.pool = res.pool;
        Emit(std::move(e));
      }
    } else if (now >= res.end && !res.ended) {
      res.ended = true;
      if (res.activated) {
        Event e;
        e.at = now;
        e.type = EventType::kReservationEnded;
        e.reservation = res.id;
        e.pool = res.pool;
        Emit(std::move(e));
      }
    }
  }
  // The GPUs each tenant holds under its active reservations.
  for (PoolRuntime& r : pools_) {
    // Kept allocated across cycles (a tenant with nothing active holds all zeros).
    for (auto& [t, d] : r.bound) d.assign(r.free.node_count(), 0);
    r.unlent.clear();
  }
  for (const Reservation& res : state_.reservations()) {
    if (!res.ActiveAt(now)) continue;
    PoolRuntime& r = rt(res.pool);
    if (!res.lend) r.unlent.push_back(res.id);
    GpuDomain& b = BoundOf(r, res.tenant);
    for (const NodeSlice& sl : res.binding.slices) b[r.free.local_index(sl.node)] |= sl.gpu_mask;
  }
  for (const Pool& pool : state_.pools()) MoveIdleBindings(pool.id, now);
  // Ends are exact: a reserved-tier attempt outside what its tenant still holds (work on a
  // draining node may finish there while its GPUs stay bound: a binding stays with its owner's
  // work), then any beyond its count, the most recently started first, continues as spot (at
  // its fallback limit) or stops.
  for (const Pool& pool : state_.pools()) {
    PoolRuntime& r = rt(pool.id);
    std::vector<Job*> jobs;
    for (uint32_t id : r.reserved_holders) jobs.push_back(&state_.job(JobId(id)));
    std::sort(jobs.begin(), jobs.end(), [](const Job* a, const Job* b) {
      return a->started != b->started ? a->started > b->started : a->id > b->id;
    });
    // Off its tenant's GPUs first: such a job still counts until it ends, and must not push a
    // job that runs where it should past the count.
    for (Job* j : jobs) {
      if (r.reserved_holders.count(j->id.value()) &&
          !OnOwnGpus(pool.id, j->spec.tenant, j->placement)) {
        EndReservedAttempt(*j, now);
      }
    }
    for (Job* j : jobs) {
      if (r.reserved_holders.count(j->id.value()) && RoomCount(pool.id, j->spec.tenant, 0) < 0) {
        EndReservedAttempt(*j, now);
      }
    }
  }
}

void Scheduler::EndReservedAttempt(Job& j, Timestamp now) {
  PoolRuntime& r = rt(j.spec.pool);
  std::optional<Money> fallback =
      j.spec.tier == Tier::kAuto ? std::optional<Money>(j.spec.limit_price) : j.spec.fallback_limit;
  if (!fallback) {
    if (j.gang_end.set) {
      ConcludeGang(j, now);  // its gang was stopping because a member ended: that end decides
    } else {
      Requeue(j, EventType::kJobRequeued, "reservation ended", now);
    }
    return;
  }
  r.reserved_used[j.spec.tenant] -= j.spec.gpus;
  r.reserved_holders.erase(j.id.value());
  j.running_as = Tier::kSpot;
  j.limit = *fallback;
  BookInsert(j);
  OpenSpot(j, now);
  r.spot_holders.Insert(j.id.value());
  r.holder_rank.insert(HolderKey(j));
  HolderChanged(j);
  r.holder_limits.insert(j.limit.micros());
  r.spot_held += j.spec.gpus;
  Event e = JobEvent(EventType::kJobConverted, j, now);
  e.price = j.limit;
  e.detail = "reservation ended; continues as spot";
  Emit(std::move(e));
}

void Scheduler::StageDependencies(Timestamp now) {
  std::vector<uint32_t> waiting(dep_waiting_.begin(), dep_waiting_.end());
  for (uint32_t id : waiting) {
    Job& j = state_.job(JobId(id));
    std::string why;
    DepState d = Dependencies(j, &why);
    if (d == DepState::kBroken) {
      Finish(j, JobState::kCancelled, why, now);
    } else if (d == DepState::kReady) {
      dep_waiting_.erase(id);
      Enqueue(j);
    }
  }
}

void Scheduler::StageElastic(Timestamp now) {
  // Cooldowns that have run out: the job's units bid again.
  while (!cooldowns_.empty() && cooldowns_.begin()->first <= now.micros()) {
    Job& j = state_.job(JobId(cooldowns_.begin()->second));
    cooldowns_.erase(cooldowns_.begin());
    j.cooldown_until = Timestamp();
    SyncUnits(j);
  }
}

void Scheduler::StageNotices(Timestamp now) {
  std::vector<uint32_t> due;
  for (uint32_t id : preempting_) {
    if (state_.job(JobId(id)).notice_deadline <= now) due.push_back(id);
  }
  // Restart mode: an attempt told to resize that has not ended by its deadline restarts now
  // (the agent kills it at the same deadline).
  std::vector<uint32_t> resize_due;
  for (uint32_t id : resizing_) {
    if (state_.job(JobId(id)).resize_deadline <= now) resize_due.push_back(id);
  }
  for (uint32_t id : resize_due) RestartInPlace(state_.job(JobId(id)), now);
  for (uint32_t id : due) {
    Job& j = state_.job(JobId(id));
    if (j.state != JobState::kPreempting) continue;  // ended with its job (a unit)
    if (j.unit_of.valid() && j.shrink_generation > 0) {
      // Signal mode, not acknowledged by its deadline: the job still runs on these GPUs, which
      // are given back now; the job is stopped at once (the agent kills it at this deadline).
      Job& owner = state_.job(j.unit_of);
      const int32_t generation = j.shrink_generation;
      Requeue(j, EventType::kJobPreempted, "notice expired", now);
      SendNotice(
          owner,
          "resize generation " + std::to_string(generation) + " not taken in by its deadline", now,
          JobId(), now);
      continue;
    }
    if (j.gang_end.set) {
      ConcludeGang(j, now);  // a gang stopped by a member's end: that end decides
    } else {
      Requeue(j, EventType::kJobPreempted, "notice expired", now);
    }
  }
}

// Spot holders of a pool that may still be stopped (not already under notice), as bids.

GpuDomain& Scheduler::BoundOf(PoolRuntime& r, TenantId tenant) {
  GpuDomain& d = r.bound[tenant];
  if (static_cast<int32_t>(d.size()) != r.free.node_count()) d.assign(r.free.node_count(), 0);
  return d;
}

GpuDomain Scheduler::OwnerDomain(PoolId pool, TenantId tenant) const {
  const PoolRuntime& r = rt(pool);
  GpuDomain d(r.free.node_count(), 0);
  auto b = r.bound.find(tenant);
  if (b == r.bound.end()) return d;
  for (int32_t i = 0; i < r.free.node_count(); ++i) {
    if (r.free.ready(r.free.node_id(i))) d[i] = b->second[i];
  }
  return d;
}

FreeMap Scheduler::OwnerRoom(PoolId pool, TenantId tenant, const GpuDomain& domain) const {
  const PoolRuntime& r = rt(pool);
  GpuDomain room = domain;
  for (int32_t i = 0; i < r.free.node_count(); ++i) {
    if (!room[i]) continue;
    const Node& n = state_.node(r.free.node_id(i));
    for (int32_t g = 0; g < n.gpus; ++g) {
      if (!n.gpu_job[g].valid()) continue;
      const Job& h = state_.job(n.gpu_job[g]);
      if (h.running_as == Tier::kReserved && h.spec.tenant == tenant)
        room[i] &= ~(uint64_t{1} << g);
    }
  }
  for (const auto& [id, claim] : r.owner_claims) {
    if (state_.job(JobId(id)).spec.tenant != tenant) continue;
    for (const NodeSlice& sl : claim.slices) room[r.free.local_index(sl.node)] &= ~sl.gpu_mask;
  }
  FreeMap m = r.free;
  for (int32_t i = 0; i < m.node_count(); ++i) m.SetFreeMask(m.node_id(i), room[i]);
  return m;
}

std::optional<std::pair<Reservation*, size_t>> Scheduler::WholeSliceOn(PoolId pool, NodeId node,
                                                                       Timestamp now) {
  const int32_t size = rt(pool).free.largest_node();
  if (state_.node(node).gpus != size) return std::nullopt;
  for (Reservation& res : state_.mutable_reservations()) {
    if (res.pool != pool || !res.ActiveAt(now)) continue;
    for (size_t k = 0; k < res.binding.slices.size(); ++k) {
      const NodeSlice& sl = res.binding.slices[k];
      if (sl.node == node && std::popcount(sl.gpu_mask) == size) return std::make_pair(&res, k);
    }
  }
  return std::nullopt;
}

bool Scheduler::OwnerIdleOn(PoolId pool, TenantId tenant, NodeId node) const {
  const Node& n = state_.node(node);
  for (JobId h : n.gpu_job) {
    if (!h.valid()) continue;
    const Job& j = state_.job(h);
    if (j.running_as == Tier::kReserved && j.spec.tenant == tenant) return false;
  }
  for (const auto& [id, claim] : rt(pool).owner_claims) {
    if (state_.job(JobId(id)).spec.tenant != tenant) continue;
    for (const NodeSlice& sl : claim.slices) {
      if (sl.node == node) return false;
    }
  }
  return true;
}

GpuDomain Scheduler::SpareNodes(PoolId pool, TenantId tenant, Timestamp now) {
  const PoolRuntime& r = rt(pool);
  GpuDomain spare(r.free.node_count(), 0);
  const int32_t size = r.free.largest_node();
  std::optional<Timestamp> until;
  for (const Reservation& res : state_.reservations()) {
    if (res.pool != pool || res.tenant != tenant || !res.ActiveAt(now)) continue;
    for (const NodeSlice& sl : res.binding.slices) {
      if (std::popcount(sl.gpu_mask) == size && state_.node(sl.node).gpus == size &&
          (!until || res.end > *until)) {
        until = res.end;
      }
    }
  }
  if (!until) return spare;
  FreeMap unbound = UnboundMap(pool, now, *until, ReservationId());
  std::map<ReservationId, FreeMap> unbound_but;  // unbound apart from one reservation
  for (int32_t i = 0; i < unbound.node_count(); ++i) {
    NodeId id = unbound.node_id(i);
    if (!unbound.ready(id) || unbound.capacity(id) != size) continue;
    if (std::popcount(unbound.free_mask(id)) == size) {
      spare[i] = unbound.free_mask(id);
      continue;
    }
    // Another owner's idle whole node, if nothing else holds it until `until` (it takes one of
    // this tenant's idle nodes in exchange; SwapInto checks that side).
    auto other = WholeSliceOn(pool, id, now);
    if (!other || other->first->tenant == tenant || !other->first->lend ||
        !OwnerIdleOn(pool, other->first->tenant, id)) {
      continue;
    }
    ReservationId rid = other->first->id;
    auto m = unbound_but.find(rid);
    if (m == unbound_but.end())
      m = unbound_but.emplace(rid, UnboundMap(pool, now, *until, rid)).first;
    if (std::popcount(m->second.free_mask(id)) == size) spare[i] = m->second.free_mask(id);
  }
  return spare;
}

int32_t Scheduler::SwapInto(PoolId pool, TenantId tenant, const Placement& p, const FreeMap& room,
                            Timestamp now, uint32_t job) {
  PoolRuntime& r = rt(pool);
  const int32_t size = r.free.largest_node();
  const GpuDomain& bound = BoundOf(r, tenant);
  std::vector<NodeId> in;  // nodes of `p` the tenant does not hold
  for (const NodeSlice& sl : p.slices) {
    if (!bound[r.free.local_index(sl.node)]) in.push_back(sl.node);
  }
  if (in.empty()) return 0;
  // Whole nodes it holds with nothing of its own on them, outside `p`: (reservation, slice).
  std::vector<std::pair<Reservation*, size_t>> out;
  for (Reservation& res : state_.mutable_reservations()) {
    if (res.pool != pool || res.tenant != tenant || !res.ActiveAt(now)) continue;
    for (size_t k = 0; k < res.binding.slices.size(); ++k) {
      const NodeSlice& sl = res.binding.slices[k];
      bool in_p = std::any_of(p.slices.begin(), p.slices.end(),
                              [&](const NodeSlice& x) { return x.node == sl.node; });
      if (std::popcount(sl.gpu_mask) == size && state_.node(sl.node).gpus == size && !in_p &&
          room.ready(sl.node) && room.free_mask(sl.node) == sl.gpu_mask) {
        out.emplace_back(&res, k);
      }
    }
  }
  // Pair each node taken with a node given: an unbound node takes any of them; another owner's
  // idle node takes one that nothing else holds until that owner's reservation ends.
  struct Swap {
    std::pair<Reservation*, size_t> mine;
    NodeId to;
    std::optional<std::pair<Reservation*, size_t>> theirs;
  };
  std::vector<Swap> plan;
  std::vector<uint8_t> used(out.size(), 0);
  for (NodeId z : in) {
    auto theirs = WholeSliceOn(pool, z, now);
    std::optional<FreeMap> free_for_them;
    bool paired = false;
    for (size_t k = 0; k < out.size() && !paired; ++k) {
      if (used[k]) continue;
      if (theirs) {
        NodeId w = out[k].first->binding.slices[out[k].second].node;
        if (!free_for_them) {
          free_for_them = UnboundMap(pool, now, theirs->first->end, out[k].first->id);
        }
        if (std::popcount(free_for_them->free_mask(w)) != size) continue;
      }
      used[k] = 1;
      plan.push_back(Swap{out[k], z, theirs});
      paired = true;
    }
    if (!paired) return -1;
  }
  // Slice indices stay valid until every move is made; then each reservation is sorted once.
  const uint64_t whole = ~uint64_t{0} >> (64 - size);
  const std::string why = "swapped for job " + JobId(job).ToString();
  for (const Swap& sw : plan) {
    NodeId given = sw.mine.first->binding.slices[sw.mine.second].node;
    MoveSlice(*sw.mine.first, sw.mine.second, NodeSlice{sw.to, whole}, now, why);
    if (sw.theirs) {
      MoveSlice(*sw.theirs->first, sw.theirs->second, NodeSlice{given, whole}, now, why);
    }
  }
  for (const Swap& sw : plan) {
    SortByNode(sw.mine.first->binding);
    if (sw.theirs) SortByNode(sw.theirs->first->binding);
  }
  return static_cast<int32_t>(plan.size());
}

namespace {

// Whether a gang fits a tenant's room. Within one cycle a room only shrinks, and when a size
// the pool can place does not fit, no larger size does (a node without k free GPUs is not
// whole either), so the smallest such size is remembered. Sizes the pool can never place
// (Place says infeasible) say nothing about others.
struct FitMemo {
  int32_t smallest_misfit = std::numeric_limits<int32_t>::max();
  bool Fits(const FreeMap& room, int32_t gpus) {
    if (gpus >= smallest_misfit) return false;
    PlaceOutcome o = room.Place(gpus).outcome;
    if (o == PlaceOutcome::kWait) smallest_misfit = gpus;
    return o == PlaceOutcome::kPlaced;
  }
};

// One tenant's reservation as the reclaim stage sees it during a cycle.
struct OwnerView {
  GpuDomain domain;  // its bound GPUs on ready nodes
  GpuDomain ext;     // the domain plus whole nodes it could swap in (Scheduler::SpareNodes)
  FreeMap now;       // free now and unclaimed, within the domain
  FreeMap soon;      // free once jobs under notice leave, unclaimed, within the domain
  FreeMap room;      // the domain less its reserved-tier jobs' GPUs and its claims
  FreeMap ext_now;   // `now` and `soon` over `ext`
  FreeMap ext_soon;
  bool spare_known = false;  // ext, ext_now and ext_soon are computed (lazily)
  bool has_spare = false;
  FitMemo fit;
};

bool AllFree(const FreeMap& m, const Placement& p) {
  for (const NodeSlice& sl : p.slices) {
    if (!m.ready(sl.node) || (m.free_mask(sl.node) & sl.gpu_mask) != sl.gpu_mask) return false;
  }
  return true;
}

}  // namespace

// The owner's guarantee (invariant 7, docs/market.md): in submission order, each
// pending reserved-tier job (and auto job with room) that fits its tenant's reserved room starts
// on free GPUs there, or claims GPUs there that jobs under notice are freeing, or sends notice to
// the spot jobs on them and claims them. A claim stays with its job until the job starts.
void Scheduler::StageReclaim(Timestamp now, std::vector<Supply>* supplies) {
  supplies->clear();
  for (const Pool& pool : state_.pools()) {
    PoolRuntime& r = rt(pool.id);
    FreeMap soon, unclaimed;
    // A victim whose zero notice ends at once may be an owner's own auto job, pending again and
    // fitting its reservation: the owners' pass runs again until no victim ended at once.
    for (bool again = true; again;) {
      again = false;
      soon = r.free;
      for (uint32_t id : preempting_) {
        const Job& j = state_.job(JobId(id));
        if (j.spec.pool != pool.id) continue;
        if (const Placement* p = Freeing(j)) soon.Release(*p);
      }
      // Claims from earlier cycles stand while their GPUs are still the tenant's and still free
      // or being freed; a claim that lost them (a node left, the reservation ended) is dropped.
      std::map<TenantId, GpuDomain> domains;
      auto domain_of = [&](TenantId t) -> const GpuDomain& {
        auto it = domains.find(t);
        if (it == domains.end()) it = domains.emplace(t, OwnerDomain(pool.id, t)).first;
        return it->second;
      };
      std::map<TenantId, int32_t> claimed;
      for (auto it = r.owner_claims.begin(); it != r.owner_claims.end();) {
        const Job& j = state_.job(JobId(it->first));
        const GpuDomain& d = domain_of(j.spec.tenant);
        bool valid = AllFree(soon, it->second);
        for (const NodeSlice& sl : it->second.slices) {
          valid = valid && (sl.gpu_mask & ~d[r.free.local_index(sl.node)]) == 0;
        }
        if (!valid) {  // the clock restarts, as for a job whose node failed (invariant 6)
          r.fits_since.erase(it->first);
          it = r.owner_claims.erase(it);
          continue;
        }
        soon.Occupy(it->second);
        claimed[j.spec.tenant] += j.spec.gpus;
        ++it;
      }
      unclaimed = r.free;
      for (const auto& [id, claim] : r.owner_claims) unclaimed.Occupy(claim);

      std::map<TenantId, OwnerView> views;
      auto view_of = [&](TenantId t) -> OwnerView& {
        auto it = views.find(t);
        if (it != views.end()) return it->second;
        const GpuDomain& d = domain_of(t);
        OwnerView v;
        v.domain = d;
        v.now = unclaimed.Restricted(d);
        v.soon = soon.Restricted(d);
        v.room = OwnerRoom(pool.id, t, d);
        return views.emplace(t, std::move(v)).first->second;
      };
      // Nodes to swap in are looked for only when the tenant's own GPUs are not free now.
      auto with_spare = [&](TenantId t, OwnerView& v) {
        if (v.spare_known) return v.has_spare;
        v.spare_known = true;
        GpuDomain spare = SpareNodes(pool.id, t, now);
        v.ext = v.domain;
        for (size_t i = 0; i < spare.size(); ++i) {
          v.ext[i] |= spare[i];
          v.has_spare = v.has_spare || spare[i] != 0;
        }
        if (v.has_spare) {
          v.ext_now = unclaimed.Restricted(v.ext);
          v.ext_soon = soon.Restricted(v.ext);
        }
        return v.has_spare;
      };
      std::vector<Bid> candidates;
      bool candidates_stale = true;
      std::set<uint32_t> fit_unclaimed;  // fit but found nothing to claim (never, by design)
      auto victims_for = [&](const FreeMap& base, const GpuDomain& domain, int32_t gpus) {
        // A reserved job is never blocked by spot work: any spot holder on its GPUs may go.
        if (candidates_stale) {
          std::set<uint32_t> holders;
          for (uint32_t h : r.spot_holders.ids()) {
            if (IsActive(state_.job(JobId(h)).state)) holders.insert(h);
          }
          candidates.clear();
          for (uint32_t h : holders) candidates.push_back(BidOf(state_.job(JobId(h))));
          for (const Bid& b : ShareHolderBids(r, true)) candidates.push_back(b);
          candidates_stale = false;
        }
        return FindVictims(state_, base, candidates, gpus, 0, now, &domain);
      };

      r.reserved_side.clear();
      // Claims first: a claimed job starts once its GPUs are free, whatever else waits.
      std::vector<uint32_t> claim_ids;
      for (const auto& [id, claim] : r.owner_claims) claim_ids.push_back(id);
      for (uint32_t id : claim_ids) {
        Job& j = state_.job(JobId(id));
        if (j.spec.tier == Tier::kAuto) r.reserved_side.push_back(id);
        const Placement& claim = r.owner_claims.at(id);
        if (!AllFree(r.free, claim)) continue;  // its GPUs are still being freed
        Placement p = claim;
        claimed[j.spec.tenant] -= j.spec.gpus;  // held from now on, no longer claimed
        Bind(j, std::move(p), Tier::kReserved, now);
      }
      // Then the other pending jobs of every tenant with room left, merged in submission order;
      // a tenant's queue is left as soon as its reservation is full (no scan of what cannot run).
      using Queue = std::set<std::pair<int64_t, uint32_t>>;
      struct Cursor {
        std::pair<int64_t, uint32_t> key;
        Queue::iterator next;
        const Queue* queue;
        bool operator>(const Cursor& o) const { return key > o.key; }
      };
      std::priority_queue<Cursor, std::vector<Cursor>, std::greater<>> merge;
      // Room for its smallest queued job: a tenant whose room is smaller is not scanned.
      auto room_left = [&](TenantId t) {
        const std::multiset<int32_t>& sizes = r.reserved_sizes[t];
        return !sizes.empty() && RoomCount(pool.id, t, claimed[t]) >= *sizes.begin();
      };
      for (auto& [t, q] : r.reserved_q) {
        if (!q.empty() && room_left(t)) merge.push(Cursor{*q.begin(), std::next(q.begin()), &q});
      }
      while (!merge.empty()) {
        Cursor c = merge.top();
        merge.pop();
        const uint32_t id = c.key.second;
        Job& j = state_.job(JobId(id));
        const TenantId tenant = j.spec.tenant;
        // Bind erases this job from its queue; the cursor already points past it.
        auto advance = [&] {
          if (c.next != c.queue->end() && room_left(tenant)) {
            merge.push(Cursor{*c.next, std::next(c.next), c.queue});
          }
        };
        if (r.owner_claims.count(id)) {
          advance();
          continue;
        }
        const int32_t gpus = j.spec.gpus;
        if (!HasRoom(j, claimed[tenant])) {
          if (!r.fits_since.empty()) r.fits_since.erase(id);
          advance();
          continue;  // auto jobs stay in the spot book
        }
        OwnerView& v = view_of(tenant);
        if (!v.fit.Fits(v.room, gpus)) {
          if (!r.fits_since.empty()) r.fits_since.erase(id);
          advance();
          continue;
        }
        r.fits_since.emplace(id, now);
        // From here the job is served as reserved; an auto job must not also bid for spot.
        if (j.spec.tier == Tier::kAuto) r.reserved_side.push_back(id);
        // In order of preference: free GPUs it holds; free whole nodes it can swap in for idle
        // ones it holds; GPUs it holds that jobs under notice are freeing; the cheapest spot jobs
        // to stop, on its GPUs or on nodes it can swap in.
        std::optional<Placement> target;
        bool start_now = false, swapped = false;
        if (PlaceResult pr = v.now.Place(gpus); pr.outcome == PlaceOutcome::kPlaced) {
          target = std::move(pr.placement);
          start_now = true;
        } else if (PlaceResult ep = with_spare(tenant, v) ? v.ext_now.Place(gpus) : PlaceResult();
                   ep.outcome == PlaceOutcome::kPlaced &&
                   (swapped = SwapInto(pool.id, tenant, ep.placement, v.room, now, id) > 0)) {
          target = std::move(ep.placement);
          start_now = true;
        } else if (PlaceResult later = v.soon.Place(gpus); later.outcome == PlaceOutcome::kPlaced) {
          target = std::move(later.placement);
        } else {
          std::optional<VictimChoice> vc;
          if (v.has_spare) {
            vc = victims_for(v.ext_soon, v.ext, gpus);
            int32_t swaps = vc ? SwapInto(pool.id, tenant, vc->placement, v.room, now, id) : -1;
            if (swaps < 0) vc.reset();
            swapped = swaps > 0;
          }
          if (!vc) vc = victims_for(v.soon, v.domain, gpus);
          if (!vc) {  // cannot happen while the room fits; the invariant check says so
            fit_unclaimed.insert(id);
            advance();
            continue;
          }
          for (JobId victim_id : vc->victims) {
            Job& victim = state_.job(victim_id);
            if (!IsActive(victim.state)) continue;  // went with its job (a unit)
            // The units this notice stops with their job: a unit already under notice had its
            // GPUs counted as being freed before (and they may be claimed already).
            std::vector<JobId> stopped_units;
            for (JobId u : victim.units) {
              if (IsActive(state_.job(u).state)) stopped_units.push_back(u);
            }
            NoticeVictim(victim_id, "reclaim", now, j.id);
            // Its GPUs are being freed, and its units' with it.
            std::vector<const Placement*> freeing{&victim.placement};
            for (JobId u : stopped_units) {
              const Job& unit = state_.job(u);
              if (unit.state == JobState::kPreempting && unit.notice_deadline > now) {
                freeing.push_back(&unit.placement);
              }
            }
            for (const Placement* p : freeing) {
              for (auto& [t, other] : views) {
                other.soon.Release(Clip(*p, r.free, other.domain));
                if (other.has_spare) other.ext_soon.Release(Clip(*p, r.free, other.ext));
              }
              soon.Release(*p);
            }
            // A zero notice ends at once: the owner must not wait for the next cycle. A GPU of
            // shares: every share on it.
            std::vector<JobId> stopping{victim_id};
            if (victim.spec.share()) stopping = state_.SharesWith(victim);
            for (JobId sid : stopping) {
              Job& stop = state_.job(sid);
              if (stop.state == JobState::kPreempting && stop.notice_deadline <= now) {
                Requeue(stop, EventType::kJobPreempted, "notice expired", now);
                again = true;
              }
            }
          }
          candidates_stale = true;
          target = std::move(vc->placement);
          start_now = AllFree(r.free, *target);
        }
        soon.Occupy(*target);
        unclaimed.Occupy(*target);
        if (swapped) {
          // Its GPUs changed: seen afresh by its next job. The nodes it took are spare for no
          // one now, so every other owner looks for spare nodes afresh too.
          views.clear();
          domains.clear();
        } else {
          for (FreeMap* m : {&v.now, &v.soon, &v.room}) m->Occupy(*target);
          if (v.has_spare) {
            v.ext_now.Occupy(*target);
            v.ext_soon.Occupy(*target);
          }
        }
        if (start_now) {
          Bind(j, std::move(*target), Tier::kReserved, now);
        } else {
          claimed[tenant] += gpus;
          r.owner_claims.emplace(id, std::move(*target));
        }
        advance();
      }
      // A fit time outlives the cycle with a claim, or when the job fit but could claim nothing
      // (its wait keeps counting, and the invariant check reports it).
      std::erase_if(r.fits_since, [&](const auto& f) {
        return !r.owner_claims.count(f.first) && !fit_unclaimed.count(f.first);
      });
    }
    Supply s;
    s.state = &state_;
    s.pool = pool.id;
    s.free = std::move(unclaimed);
    s.soon = std::move(soon);
    KeepSpotOff(r, &s.free);
    KeepSpotOff(r, &s.soon);
    if (!r.unlent.empty()) {  // nor does a victim's stop free them for a bid
      s.domain.assign(r.free.node_count(), ~uint64_t{0});
      for (ReservationId id : r.unlent) {
        for (const NodeSlice& sl : state_.reservation(id).binding.slices) {
          s.domain[r.free.local_index(sl.node)] &= ~sl.gpu_mask;
        }
      }
    }
    r.budget_capacity = 0;
    for (NodeId id : state_.pool_nodes(pool.id)) {
      if (state_.node(id).state == NodeState::kReady) r.budget_capacity += state_.node(id).gpus;
    }
    r.budget = ComputeBudget(pool.id);
    s.budget = r.budget;
    s.params = MarketParams{pool.config.reserve_price, pool.config.min_increment};
    supplies->push_back(std::move(s));
  }
}

// A pool's pending bids straight from its book, in rank order; auto jobs their reservation
// serves this cycle do not bid.
class Scheduler::BookPending : public PendingBids {
 public:
  BookPending(const Scheduler& s, const PoolRuntime& r, PoolId pool, Timestamp now)
      : s_(s), r_(r), it_(r.book.begin()), pool_(pool), now_(now) {}
  const Bid* Next() override {
    for (; it_ != r_.book.end(); ++it_) {
      if (it_->not_holding == 0) continue;  // a holder: Clear has it among the holders
      const uint32_t id = it_->job;
      if (id < s_.not_bidding_.size() && s_.not_bidding_[id]) continue;
      ++it_;
      const Job& j = s_.state_.job(JobId(id));
      bid_ = BidOf(j);
      if (j.unit_of.valid()) {
        const Job& owner = s_.state_.job(j.unit_of);
        bid_.parent_ready = owner.state == JobState::kRunning && !owner.resizing &&
                            now_ + owner.spec.resize_cooldown < UnlentFrom();
      }
      return &bid_;
    }
    return nullptr;
  }

 private:
  const Scheduler& s_;
  const PoolRuntime& r_;
  // When the pool's next reservation that does not lend starts: a unit whose cooldown reaches
  // it is not granted (the GPUs would be taken back). Looked up once, for the first unit read.
  Timestamp UnlentFrom() {
    if (!unlent_from_) {
      unlent_from_ = Timestamp::Max();
      for (const Reservation& res : s_.state_.reservations()) {
        if (res.pool == pool_ && !res.lend && res.start > now_ && res.start < *unlent_from_) {
          unlent_from_ = res.start;
        }
      }
    }
    return *unlent_from_;
  }

  std::set<RankKey>::const_iterator it_;
  PoolId pool_;
  Timestamp now_;
  std::optional<Timestamp> unlent_from_;
  Bid bid_;
};

void Scheduler::StageClearing(Timestamp now, std::vector<Supply>* supplies,
                              std::vector<ClearingResult>* results) {
  results->clear();
  for (const Pool& pool : state_.pools()) {
    PoolRuntime& r = rt(pool.id);
    PatchHolders(r);
    const std::vector<Bid>& holders = r.holders.bids;  // rank order (RanksAhead)
    Supply& supply = (*supplies)[pool.id.value() - 1];
    if (!r.share_hosts.empty() || !r.share_shapes.empty()) {
      // docs/market.md, "GPU shares": each GPU of shares holds as one bid; shares may join a
      // GPU with room whose shares are not under notice, on a ready node.
      supply.share_hosts = r.holders.rooms;
      supply.holder_floor = r.holders.floor;
      supply.share_min_milli = kMilliPerGpu;
      supply.share_min_memory_mib = INT64_MAX;
      for (const auto& [shape, count] : r.share_shapes) {
        supply.share_min_milli = std::min(supply.share_min_milli, shape.first);
        supply.share_min_memory_mib = std::min(supply.share_min_memory_mib, shape.second);
        supply.share_mix.Add(
            PodRequest{
                .cpu_milli = 0, .memory_mib = 0, .gpus = 1, .gpu_milli = shape.first, .models = ""},
            count);
      }
      bool first = true;
      for (NodeId id : state_.pool_nodes(pool.id)) {
        const Node& n = state_.node(id);
        if (n.state != NodeState::kReady) continue;
        supply.max_gpu_memory_mib = std::max(supply.max_gpu_memory_mib, n.gpu_memory_mib);
        supply.min_gpu_memory_mib =
            first ? n.gpu_memory_mib : std::min(supply.min_gpu_memory_mib, n.gpu_memory_mib);
        first = false;
      }
    }
    not_bidding_.resize(state_.jobs().size() + 1, 0);  // grows only; cleared after use
    for (uint32_t id : r.reserved_side) {
      if (state_.job(JobId(id)).state == JobState::kPending) not_bidding_[id] = 1;
    }
    BookPending pending(*this, r, pool.id, now);
    results->push_back(Clear(holders, pending, std::move(supply), now));
    for (uint32_t id : r.reserved_side) not_bidding_[id] = 0;
  }
}

void Scheduler::StagePlacement(Timestamp now, std::vector<ClearingResult>* results) {
  for (const Pool& pool : state_.pools()) {
    PoolRuntime& r = rt(pool.id);
    ClearingResult& cr = (*results)[pool.id.value() - 1];
    for (Start& s : cr.starts) Bind(state_.job(s.job), std::move(s.placement), Tier::kSpot, now);
    r.claims.clear();
    for (JobId j : cr.waiting) r.claims.insert(j.value());
    r.highest_unplaced = cr.highest_unplaced;
    SetPrice(pool.id, cr.price, now);
  }
}

void Scheduler::StagePreemption(Timestamp now, std::vector<ClearingResult>* results) {
  for (const Pool& pool : state_.pools()) {
    ClearingResult& cr = (*results)[pool.id.value() - 1];
    for (const Notice& n : cr.notices) {
      std::string reason = n.reason;
      if (n.beneficiary.valid()) reason += " by job " + n.beneficiary.ToString();
      NoticeVictim(n.victim, reason, now, n.beneficiary);
    }
  }
}

std::optional<Timestamp> Scheduler::NextWakeup(Timestamp after) const {
  std::optional<Timestamp> best;
  auto consider = [&](Timestamp t) {
    if (t > after && (!best || t < *best)) best = t;
  };
  for (uint32_t id : preempting_) consider(state_.job(JobId(id)).notice_deadline);
  for (uint32_t id : resizing_) consider(state_.job(JobId(id)).resize_deadline);
  if (!cooldowns_.empty()) consider(Timestamp::FromMicros(cooldowns_.begin()->first));
  for (const Reservation& r : state_.reservations()) {
    consider(r.start);
    consider(r.end);
  }
  return best;
}

// ---------------------------------------------------------------------------------------------
// Why a job is pending (docs/market.md, "Why a job is pending")

std::map<uint32_t, int32_t> Scheduler::BookPositions(PoolId pool,
                                                     const std::set<uint32_t>& jobs) const {
  std::map<uint32_t, int32_t> out;
  int32_t place = 0;
  for (const RankKey& k : rt(pool).book) {
    ++place;
    if (!jobs.count(k.job)) continue;
    out[k.job] = place;
    if (out.size() == jobs.size()) break;
  }
  return out;
}

Result<PendingWhy> Scheduler::Why(JobId id, bool with_position) const {
  if (!state_.HasJob(id)) return NotFound("no such job");
  const Job& j = state_.job(id);
  if (j.state != JobState::kPending) {
    return FailedPrecondition("job " + id.ToString() + " is " + std::string(JobStateName(j.state)) +
                              ", not pending");
  }
  const PoolRuntime& r = rt(j.spec.pool);
  const PoolConfig& cfg = state_.pool(j.spec.pool).config;
  PendingWhy w;
  w.price = r.price;
  w.limit = j.limit;
  w.gpus = j.spec.gpus;
  // Position among the pool's pending bids, in rank order.
  if (with_position && r.book.count(KeyOf(j))) {
    w.position = static_cast<int32_t>(std::distance(r.book.begin(), r.book.find(KeyOf(j)))) + 1;
  }
  w.bids = static_cast<int32_t>(r.book.size());
  auto say = [&](std::string reason, std::string detail) {
    w.reason = std::move(reason);
    w.detail = std::move(detail);
    return w;
  };
  std::string why;
  if (dep_waiting_.count(id.value())) {
    for (const Dependency& d : j.spec.dependencies) {
      if (!IsTerminal(state_.job(d.job).state)) {
        w.dependency = d.job;
        return say("dependency", "waiting for job " + d.job.ToString() + " to end");
      }
    }
    return say("dependency", "its dependencies are being resolved");
  }
  if (j.unit_of.valid()) {
    const Job& owner = state_.job(j.unit_of);
    if (owner.cooldown_until != Timestamp()) {
      return say("cooldown", "job " + owner.id.ToString() + " shrank: no regrowth until " +
                                 When(owner.cooldown_until));
    }
    if (owner.state != JobState::kRunning || owner.resizing) {
      return say("job_not_running", "unit " + std::to_string(j.unit) + " of job " +
                                        owner.id.ToString() + ", which is " +
                                        std::string(JobStateName(owner.state)));
    }
  }
  const bool served_reserved = j.spec.tier == Tier::kReserved;
  if (served_reserved || (j.spec.tier == Tier::kAuto && r.active_reserved.count(j.spec.tenant))) {
    if (r.owner_claims.count(id.value())) {
      return say("claimed", "holds a claim on GPUs that jobs under notice are freeing");
    }
    if (served_reserved) {
      if (!r.active_reserved.count(j.spec.tenant)) {
        for (const Reservation& res : state_.reservations()) {
          if (res.pool == j.spec.pool && res.tenant == j.spec.tenant && !res.ended &&
              res.start > last_cycle_ && (!w.starts || res.start < *w.starts)) {
            w.starts = res.start;
          }
        }
        return say("reservation_not_started",
                   w.starts ? "its tenant's next reservation starts at " + When(*w.starts)
                            : "its tenant has no reservation in this pool");
      }
      const int32_t room = RoomCount(j.spec.pool, j.spec.tenant, 0);
      if (room < j.spec.gpus) {
        return say("reservation_full", "its tenant's reservation has " + std::to_string(room) +
                                           " GPUs left, it needs " + std::to_string(j.spec.gpus));
      }
      return say("no_placement", "its own reserved GPUs have no free " +
                                     std::to_string(j.spec.gpus) + "-GPU block");
    }
  }
  if (!r.free.Feasible(j.spec.gpus, &why)) return say("infeasible", why);
  if (j.limit < cfg.reserve_price) {
    w.runs_at = cfg.reserve_price;
    return say("below_price",
               "its limit is below the pool's reserve price " + cfg.reserve_price.ToString());
  }
  if (r.claims.count(id.value())) {  // the last clearing's waiting bids
    return say("claimed", "holds a claim on GPUs that jobs under notice are freeing");
  }
  if (j.submitted > last_decided_) return say("not_decided", "submitted since the last cycle");
  FreeMap spot = SpotFree(r);  // what spot may take now: owners' claims are theirs
  for (const auto& [claimant, claim] : r.owner_claims) spot.Occupy(claim);
  if (j.spec.share()) {  // only GPUs with the memory it asks for count (docs/market.md)
    int64_t most = 0;
    for (NodeId n : state_.pool_nodes(j.spec.pool)) {
      const Node& node = state_.node(n);
      if (node.state == NodeState::kReady) most = std::max(most, node.gpu_memory_mib);
      if (node.gpu_memory_mib < j.spec.gpu_memory_mib) spot.SetFreeMask(n, 0);
    }
    if (j.spec.gpu_memory_mib > most) {
      return say("infeasible", "no GPU of the pool's ready nodes has " +
                                   std::to_string(j.spec.gpu_memory_mib) + " MiB");
    }
  }
  for (int32_t i = 0; i < spot.node_count(); ++i) {
    const NodeId n = spot.node_id(i);
    if (spot.ready(n)) w.largest_free = std::max(w.largest_free, std::popcount(spot.free_mask(n)));
  }
  w.free_gpus = spot.free_gpus();
  const bool room = r.spot_held + j.spec.gpus <= r.budget &&
                    spot.Place(j.spec.gpus).outcome == PlaceOutcome::kPlaced;
  // The limit at which it would run: above the price, and, with no room, above the cheapest
  // holder it could stop by the increment (a bid must beat it strictly). A GPU of shares stops
  // only for a bid above its highest limit; a share stops holders as a one-GPU bid does
  // (docs/market.md, "GPU shares").
  std::optional<Money> outbid;
  if (!room) {
    // A share that asks for memory stops only holders of GPUs that have it.
    const int64_t memory = j.spec.share() ? j.spec.gpu_memory_mib : 0;
    auto has_memory = [&](const Placement& p) {
      return std::any_of(p.slices.begin(), p.slices.end(), [&](const NodeSlice& sl) {
        return state_.node(sl.node).gpu_memory_mib >= memory;
      });
    };
    std::optional<Money> cheapest;
    for (auto it = r.holder_rank.rbegin(); it != r.holder_rank.rend() && !cheapest; ++it) {
      if (memory == 0 || has_memory(state_.job(JobId(it->job)).placement)) {
        cheapest = Money::Micros(-it->neg_limit);
      }
    }
    for (const Bid& gpu : ShareHolderBids(r, false)) {  // each at its highest share's limit
      if ((!cheapest || gpu.limit < *cheapest) && (memory == 0 || has_memory(*gpu.placement))) {
        cheapest = gpu.limit;
      }
    }
    if (cheapest) outbid = *cheapest + std::max(cfg.min_increment, Money::Micros(1));
  }
  if (j.limit < r.price) {
    w.runs_at = outbid && *outbid > r.price ? *outbid : r.price;
    return say("below_price", "limit " + j.limit.ToString() + " is below the clearing price " +
                                  r.price.ToString());
  }
  if (outbid && *outbid > j.limit) w.runs_at = outbid;
  if (r.spot_held + j.spec.gpus > r.budget) {
    return say("no_budget", "spot may hold " + std::to_string(r.budget) + " GPUs here and holds " +
                                std::to_string(r.spot_held) +
                                " (the rest is reserved, idle and not lent, or held back)");
  }
  if (j.spec.share()) {
    return say(
        "no_placement",
        "no GPU has room for its share of " + std::to_string(j.spec.gpu_milli) + " thousandths" +
            (j.spec.gpu_memory_mib > 0 ? " and " + std::to_string(j.spec.gpu_memory_mib) + " MiB"
                                       : std::string()) +
            " (" + std::to_string(w.free_gpus) + " free GPUs with that memory)");
  }
  return say("no_placement", "needs " + std::to_string(j.spec.gpus) +
                                 " GPUs in one gang; the largest free block spot may use is " +
                                 std::to_string(w.largest_free) + " (" +
                                 std::to_string(w.free_gpus) + " free in the pool)");
}

// ---------------------------------------------------------------------------------------------
// Invariants (docs/architecture.md, 1-5; 6 is enforced where notices expire)

namespace {

bool SameBid(const Bid& a, const Bid& b) {
  return a.job == b.job && a.limit == b.limit && a.submitted == b.submitted && a.gpus == b.gpus &&
         a.running == b.running && a.preempting == b.preempting && a.placement == b.placement &&
         a.started == b.started && a.last_checkpoint == b.last_checkpoint && a.unit == b.unit &&
         a.parent == b.parent && a.milli == b.milli && a.gpu_memory_mib == b.gpu_memory_mib;
}

bool SameRoom(const Supply::ShareHost& a, const Supply::ShareHost& b) {
  return a.node == b.node && a.gpu == b.gpu && a.free_milli == b.free_milli &&
         a.free_memory_mib == b.free_memory_mib;
}

}  // namespace

// Invariant 10 (docs/architecture.md): the holders kept between cycles are in rank order, and
// every entry not listed as changed is what the clearing would build now; every holder not
// listed is kept.
void Scheduler::CheckHolderCache(PoolId pool, std::vector<std::string>* out) const {
  const PoolRuntime& r = rt(pool);
  const HolderCache& c = r.holders;
  if (c.stale) return;
  const std::string in_pool = "pool " + state_.pool(pool).config.name + ": ";
  const std::string where = in_pool + "kept holder ";
  std::vector<uint64_t> changed = c.changed;
  std::sort(changed.begin(), changed.end());
  auto listed = [&](uint64_t key) {
    return std::binary_search(changed.begin(), changed.end(), key);
  };
  auto name = [&](uint64_t key) {
    if (!IsGpuKey(key)) return "job " + std::to_string(key);
    const auto [n, g] = GpuOfKey(key);
    return "GPU " + (state_.HasNode(n) ? state_.node(n).name : n.ToString()) + "/" +
           std::to_string(g);
  };
  if (c.entries.size() != c.bids.size()) {
    out->push_back(where + "entries and bids differ in number");
    return;
  }
  std::vector<uint64_t> keys;
  for (size_t i = 0; i < c.bids.size(); ++i) {
    const uint64_t key = c.entries[i].key;
    keys.push_back(key);
    if (i > 0 && RanksAhead(c.bids[i], c.bids[i - 1])) {
      out->push_back(where + name(key) + " is out of rank order");
    }
    if (listed(key)) continue;
    bool holds = false, same = false;
    if (IsGpuKey(key)) {
      const auto [n, g] = GpuOfKey(key);
      holds = state_.HasNode(n) && g < state_.node(n).gpus && !state_.node(n).gpu_shares[g].empty();
      if (holds) {
        auto [bid, entry] = ShareGpu(state_.node(n), g);
        same = SameBid(bid, c.bids[i]) && SameRoom(entry.room, c.entries[i].room) &&
               entry.floor == c.entries[i].floor;
      }
    } else {
      holds = r.spot_holders.Contains(static_cast<uint32_t>(key));
      same = holds && SameBid(BidOf(state_.job(JobId(static_cast<uint32_t>(key)))), c.bids[i]);
    }
    if (!holds) {
      out->push_back(where + name(key) + " holds no GPU, and is not listed as changed");
    } else if (!same) {
      out->push_back(where + name(key) + " is out of date, and not listed as changed");
    }
  }
  std::sort(keys.begin(), keys.end());
  auto kept = [&](uint64_t key) {
    if (!listed(key) && !std::binary_search(keys.begin(), keys.end(), key)) {
      out->push_back(in_pool + "holder " + name(key) + " is not kept, and not listed as changed");
    }
  };
  for (const RankKey& k : r.holder_rank) kept(k.job);
  for (const auto& [node_id, g] : r.share_hosts) kept(GpuKey(NodeId(node_id), g));
}

std::vector<std::string> Scheduler::CheckInvariants(Timestamp now, bool cycle_done) const {
  std::vector<std::string> out;
  // 1. No GPU is assigned to two jobs: node holders and job placements agree exactly. Only jobs
  // that hold GPUs are visited, so the check costs O(GPUs), not O(jobs ever submitted).
  auto check_holder = [&](const Job& j) {
    if (!HoldsGpus(j.state)) {
      out.push_back("job " + j.id.ToString() + " listed as holder while " +
                    std::string(JobStateName(j.state)));
      return;
    }
    if (j.unit_of.valid() && !HoldsGpus(state_.job(j.unit_of).state)) {
      out.push_back("unit " + j.id.ToString() + " holds GPUs while its job " +
                    j.unit_of.ToString() + " is " +
                    std::string(JobStateName(state_.job(j.unit_of).state)));
    }
    if (j.placement.GpuCount() != j.spec.gpus) {
      out.push_back("job " + j.id.ToString() + " holds " + std::to_string(j.placement.GpuCount()) +
                    " GPUs, wants " + std::to_string(j.spec.gpus));
    }
    for (const NodeSlice& s : j.placement.slices) {
      const Node& n = state_.node(s.node);
      for (int g = 0; g < n.gpus; ++g) {
        if (((s.gpu_mask >> g) & 1) && n.gpu_job[g] != j.id) {
          out.push_back("GPU " + n.name + "/" + std::to_string(g) + " claimed by job " +
                        j.id.ToString() + " but held by " + n.gpu_job[g].ToString());
        }
      }
    }
  };
  for (const Pool& pool : state_.pools()) {
    const PoolRuntime& r = rt(pool.id);
    for (uint32_t id : r.spot_holders.ids()) {
      const Job& j = state_.job(JobId(id));
      check_holder(j);
      if (!r.holder_rank.count(HolderKey(j))) {
        out.push_back("spot job " + j.id.ToString() + " holds GPUs but is not ranked");
      }
    }
    if (r.holder_rank.size() != r.spot_holders.ids().size()) {
      out.push_back("pool " + pool.config.name + " ranks " + std::to_string(r.holder_rank.size()) +
                    " spot holders of " + std::to_string(r.spot_holders.ids().size()));
    }
    for (uint32_t id : rt(pool.id).reserved_holders) check_holder(state_.job(JobId(id)));
    CheckHolderCache(pool.id, &out);
    // 9. GPU shares (docs/market.md, "GPU shares"): a share holds one GPU of its pool, listed
    // there; no GPU is over-committed in compute share or in memory, and none holds shares and
    // a whole-GPU job at once.
    for (uint32_t id : r.share_holders) {
      const Job& j = state_.job(JobId(id));
      if (!HoldsGpus(j.state) || !j.spec.share() || j.placement.GpuCount() != 1 ||
          j.running_as != Tier::kSpot) {
        out.push_back("share " + j.id.ToString() + " listed as holder while " +
                      std::string(JobStateName(j.state)));
        continue;
      }
      const NodeSlice& sl = j.placement.slices.front();
      const std::vector<JobId>& on = state_.SharesWith(j);
      if (std::find(on.begin(), on.end(), j.id) == on.end()) {
        out.push_back("share " + j.id.ToString() + " is not on the GPU it holds");
      }
      if (!r.share_hosts.count({sl.node.value(), std::countr_zero(sl.gpu_mask)})) {
        out.push_back("share " + j.id.ToString() + "'s GPU is not listed as one of shares");
      }
    }
  }
  int64_t shares_on_gpus = 0, hosts = 0;
  for (const Node& n : state_.nodes()) {
    for (int g = 0; g < n.gpus; ++g) {
      if (n.gpu_shares[g].empty()) continue;
      ++hosts;
      int64_t milli = 0, memory = 0;
      for (JobId id : n.gpu_shares[g]) {
        const Job& j = state_.job(id);
        ++shares_on_gpus;
        milli += j.spec.gpu_milli;
        memory += j.spec.gpu_memory_mib;
        if (!rt(n.pool).share_holders.count(id.value())) {
          out.push_back("GPU " + n.name + "/" + std::to_string(g) + " holds share " +
                        id.ToString() + " that does not hold it");
        }
      }
      const std::string gpu = "GPU " + n.name + "/" + std::to_string(g);
      if (milli > kMilliPerGpu || milli != n.share_milli[g]) {
        out.push_back(gpu + " holds " + std::to_string(milli) + " thousandths in shares (" +
                      std::to_string(n.share_milli[g]) + " counted)");
      }
      if ((memory > 0 && memory > n.gpu_memory_mib) || memory != n.share_memory_mib[g]) {
        out.push_back(gpu + " holds " + std::to_string(memory) + " MiB in shares of " +
                      std::to_string(n.gpu_memory_mib));
      }
      if (n.gpu_job[g].valid()) out.push_back(gpu + " holds shares and a whole-GPU job");
    }
  }
  int64_t listed_shares = 0, listed_hosts = 0;
  for (const Pool& pool : state_.pools()) {
    listed_shares += static_cast<int64_t>(rt(pool.id).share_holders.size());
    listed_hosts += static_cast<int64_t>(rt(pool.id).share_hosts.size());
  }
  if (shares_on_gpus != listed_shares || hosts != listed_hosts) {
    out.push_back(std::to_string(shares_on_gpus) + " shares on " + std::to_string(hosts) +
                  " GPUs, " + std::to_string(listed_shares) + " on " +
                  std::to_string(listed_hosts) + " listed");
  }
  for (const Node& n : state_.nodes()) {
    for (int g = 0; g < n.gpus; ++g) {
      JobId holder = n.gpu_job[g];
      if (!holder.valid()) continue;
      const Job& j = state_.job(holder);
      bool listed = false;
      for (const NodeSlice& s : j.placement.slices) {
        listed |= s.node == n.id && ((s.gpu_mask >> g) & 1);
      }
      if (!HoldsGpus(j.state) || !listed) {
        out.push_back("GPU " + n.name + "/" + std::to_string(g) + " held by job " +
                      holder.ToString() + " that does not hold it");
      }
    }
  }
  for (const Pool& pool : state_.pools()) {
    const PoolRuntime& r = rt(pool.id);
    // 2. Reserved-tier use within the active reservation.
    for (const auto& [t, used] : r.reserved_used) {
      auto a = r.active_reserved.find(t);
      int32_t active = a == r.active_reserved.end() ? 0 : a->second;
      if (used > active) {
        out.push_back("tenant " + state_.tenant(t).name + " runs " + std::to_string(used) +
                      " reserved GPUs in " + pool.config.name + " with " + std::to_string(active) +
                      " reserved");
      }
    }
    // 3. Every spot holder's limit >= the price (shares too: each pays it).
    for (uint32_t id : r.spot_holders.ids()) {
      if (!cycle_done) break;
      const Job& j = state_.job(JobId(id));
      if (j.limit < r.price) {
        out.push_back("spot job " + j.id.ToString() + " limit " + j.limit.ToString() +
                      " below price " + r.price.ToString());
      }
    }
    for (uint32_t id : r.share_holders) {
      if (!cycle_done) break;
      const Job& j = state_.job(JobId(id));
      if (j.limit < r.price) {
        out.push_back("share " + j.id.ToString() + " limit " + j.limit.ToString() +
                      " below price " + r.price.ToString());
      }
    }
    // 4. Reservations within the installed reservable capacity at every instant from now on.
    int32_t installed = 0;
    for (NodeId id : state_.pool_nodes(pool.id)) installed += state_.node(id).gpus;
    int32_t peak = r.calendar.PeakBooked(now, Timestamp::Max());
    if (peak > std::max(0, installed - pool.config.holdback_gpus)) {
      out.push_back("pool " + pool.config.name + " books " + std::to_string(peak) + " GPUs of " +
                    std::to_string(installed));
    }
  }
  // 2 (shape) and 7. The owner's guarantee, once the cycle has decided.
  if (cycle_done) {
    for (const Pool& pool : state_.pools()) CheckOwnerGuarantee(pool.id, now, &out);
  }
  // 5. The ledger sums to zero.
  if (ledger_.Sum() != Money()) out.push_back("ledger sums to " + ledger_.Sum().ToString());
  return out;
}

void Scheduler::CheckOwnerGuarantee(PoolId pool, Timestamp now,
                                    std::vector<std::string>* out) const {
  const PoolRuntime& r = rt(pool);
  const PoolConfig& cfg = state_.pool(pool).config;
  auto name = [&](const Job& j) { return j.spec.name.empty() ? j.id.ToString() : j.spec.name; };
  // Reserved-tier work runs only on GPUs its tenant holds (a binding stays on a node that left
  // service while its owner's work runs there).
  for (uint32_t id : r.reserved_holders) {
    const Job& j = state_.job(JobId(id));
    if (!OnOwnGpus(pool, j.spec.tenant, j.placement)) {
      out->push_back("reserved job " + name(j) + " runs outside its tenant's reservation");
    }
  }
  // Active reservations hold disjoint GPUs, and claims lie on their tenant's GPUs, disjoint.
  auto overlap = [&](std::vector<uint64_t>& seen, const Placement& p) {  // by node id
    bool clash = false;
    for (const NodeSlice& sl : p.slices) {
      uint64_t& s = seen[sl.node.value() - 1];
      clash = clash || (s & sl.gpu_mask);
      s |= sl.gpu_mask;
    }
    return clash;
  };
  std::vector<uint64_t> reserved(state_.nodes().size()), claimed_gpus(state_.nodes().size());
  for (const Reservation& res : state_.reservations()) {
    if (res.pool == pool && res.ActiveAt(now) && overlap(reserved, res.binding)) {
      out->push_back("reservation " + res.id.ToString() + " holds GPUs another one holds");
    }
  }
  for (const auto& [id, claim] : r.owner_claims) {
    const Job& j = state_.job(JobId(id));
    if (overlap(claimed_gpus, claim) || !OnOwnGpus(pool, j.spec.tenant, claim)) {
      out->push_back("owner's guarantee: job " + name(j) +
                     "'s claim overlaps another claim or lies outside its reservation");
    }
  }
  // Every pending job that fits its tenant's reserved room (less its other claims) holds a claim
  // there whose GPUs are all free by its fit time plus the pool's notice.
  struct Owner {
    int32_t claimed = 0;
    std::optional<FreeMap> room;  // built on first need
    FitMemo fit;
  };
  std::map<TenantId, Owner> owners;
  for (const auto& [cid, c] : r.owner_claims) {
    const Job& cj = state_.job(JobId(cid));
    owners[cj.spec.tenant].claimed += cj.spec.gpus;
  }
  for (const auto& [tenant, queue] : r.reserved_q) {
    Owner& o = owners[tenant];
    auto sizes = r.reserved_sizes.find(tenant);
    if (sizes == r.reserved_sizes.end() || sizes->second.empty() ||
        RoomCount(pool, tenant, o.claimed) < *sizes->second.begin()) {
      continue;  // no room by count for any of its jobs
    }
    for (const auto& [submitted, id] : queue) {
      const Job& j = state_.job(JobId(id));
      if (r.owner_claims.count(id)) continue;
      if (!HasRoom(j, o.claimed)) continue;
      if (!o.room) o.room = OwnerRoom(pool, tenant, OwnerDomain(pool, tenant));
      if (!o.fit.Fits(*o.room, j.spec.gpus)) continue;
      out->push_back("owner's guarantee: job " + name(j) +
                     " fits its reservation's free room but holds no claim");
    }
  }
  for (const auto& [id, claim] : r.owner_claims) {
    const Job& j = state_.job(JobId(id));
    auto since = r.fits_since.find(id);
    if (since == r.fits_since.end()) {
      out->push_back("owner's guarantee: job " + name(j) + " holds a claim with no fit time");
      continue;
    }
    const Timestamp due = since->second + cfg.max_notice;
    for (const NodeSlice& sl : claim.slices) {
      const Node& n = state_.node(sl.node);
      for (int32_t g = 0; g < n.gpus; ++g) {
        if (!((sl.gpu_mask >> g) & 1) || n.GpuFree(g)) continue;
        std::vector<JobId> holders = n.gpu_shares[g];
        if (n.gpu_job[g].valid()) holders.push_back(n.gpu_job[g]);
        for (JobId holder : holders) {
          const Job& h = state_.job(holder);
          if (h.state != JobState::kPreempting || h.notice_deadline > due) {
            out->push_back(
                "owner's guarantee: job " + name(j) + " fits its reservation since t=" +
                Duration::Micros(since->second.micros()).ToString() + " but GPU " + n.name + "/" +
                std::to_string(g) + " is held by job " + name(h) +
                (h.state == JobState::kPreempting
                     ? " until t=" + Duration::Micros(h.notice_deadline.micros()).ToString()
                     : " with no notice"));
          }
        }
      }
    }
  }
}

}  // namespace rsv
