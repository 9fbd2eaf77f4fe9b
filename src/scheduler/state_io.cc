// The scheduler's snapshot codec (docs/ha.md, "Snapshots"): every field of the state that a
// decision or a read depends on, in one list per type (common/archive.h). The free maps are
// not written: they are rebuilt from the nodes' GPU holders, then checked against the masks
// the writer had, so a snapshot never loads into a state that differs from the one written.
// Scratch space (the accrual entry, the clearing's per-job marks) is not state and is skipped.
#include "common/archive.h"
#include "scheduler/scheduler.h"

namespace rsv {

// Public types: found by name from the container codecs.
template <class Ar>
static void Io(Ar& ar, PoolConfig& c) {
  Io(ar, c.name);
  Io(ar, c.gpu_model);
  Io(ar, c.reserve_price);
  Io(ar, c.min_increment);
  Io(ar, c.max_notice);
  Io(ar, c.reservation_base_price);
  Io(ar, c.reservation_surge);
  Io(ar, c.return_rate);
  Io(ar, c.operator_share);
  Io(ar, c.holdback_gpus);
}
template <class Ar>
static void Io(Ar& ar, Pool& p) {
  Io(ar, p.id);
  Io(ar, p.config);
}
template <class Ar>
static void Io(Ar& ar, Node& n) {
  Io(ar, n.id);
  Io(ar, n.name);
  Io(ar, n.pool);
  Io(ar, n.gpus);
  Io(ar, n.topology);
  Io(ar, n.state);
  Io(ar, n.gpu_job);
  Io(ar, n.rack);
  Io(ar, n.zone);
  Io(ar, n.agent);
  Io(ar, n.gpu_shares);
  Io(ar, n.share_milli);
  Io(ar, n.share_memory_mib);
  Io(ar, n.gpu_memory_mib);
}
template <class Ar>
static void Io(Ar& ar, Tenant& t) {
  Io(ar, t.id);
  Io(ar, t.name);
  Io(ar, t.deleted);
}
template <class Ar>
static void Io(Ar& ar, NodeSlice& s) {
  Io(ar, s.node);
  Io(ar, s.gpu_mask);
}
template <class Ar>
static void Io(Ar& ar, Placement& p) {
  Io(ar, p.slices);
}
template <class Ar>
static void Io(Ar& ar, Reservation& r) {
  Io(ar, r.id);
  Io(ar, r.tenant);
  Io(ar, r.pool);
  Io(ar, r.gpus);
  Io(ar, r.start);
  Io(ar, r.end);
  Io(ar, r.lend);
  Io(ar, r.price_per_gpu_hour);
  Io(ar, r.charged);
  Io(ar, r.binding);
  Io(ar, r.activated);
  Io(ar, r.ended);
}
template <class Ar>
static void Io(Ar& ar, Dependency& d) {
  Io(ar, d.kind);
  Io(ar, d.job);
}
template <class Ar>
static void Io(Ar& ar, JobSpec& s) {
  Io(ar, s.name);
  Io(ar, s.tenant);
  Io(ar, s.pool);
  Io(ar, s.gpus);
  Io(ar, s.gpu_milli);
  Io(ar, s.gpu_memory_mib);
  Io(ar, s.tier);
  Io(ar, s.limit_price);
  Io(ar, s.fallback_limit);
  Io(ar, s.notice);
  Io(ar, s.max_restarts);
  Io(ar, s.dependencies);
  Io(ar, s.command);
  Io(ar, s.env);
  Io(ar, s.workdir);
  Io(ar, s.cpu_millis);
  Io(ar, s.memory_mib);
  Io(ar, s.time_limit_s);
  Io(ar, s.max_gpus);
  Io(ar, s.gpu_step);
  Io(ar, s.resize_mode);
  Io(ar, s.resize_cooldown);
}
template <class Ar>
static void Io(Ar& ar, Job& j) {
  Io(ar, j.id);
  Io(ar, j.spec);
  Io(ar, j.submitted);
  Io(ar, j.state);
  Io(ar, j.attempt);
  Io(ar, j.failures);
  Io(ar, j.running_as);
  Io(ar, j.limit);
  Io(ar, j.placement);
  Io(ar, j.last_placement);
  Io(ar, j.started);
  Io(ar, j.last_checkpoint);
  Io(ar, j.notice_deadline);
  Io(ar, j.preempt_reason);
  Io(ar, j.finished);
  Io(ar, j.end_reason);
  Io(ar, j.confirmed);
  Io(ar, j.ended);
  Io(ar, j.gang_end.set);
  Io(ar, j.gang_end.success);
  Io(ar, j.gang_end.lost);
  Io(ar, j.gang_end.detail);
  Io(ar, j.units);
  Io(ar, j.unit_of);
  Io(ar, j.unit);
  Io(ar, j.joined);
  Io(ar, j.shrink_generation);
  Io(ar, j.resize_generation);
  Io(ar, j.resizing);
  Io(ar, j.resize_deadline);
  Io(ar, j.cooldown_until);
}
template <class Ar>
static void Io(Ar& ar, Account& a) {
  Io(ar, a.tenant);
}
template <class Ar>
static void Io(Ar& ar, Posting& p) {
  Io(ar, p.account);
  Io(ar, p.amount);
}
template <class Ar>
static void Io(Ar& ar, LedgerEntry& e) {
  Io(ar, e.seq);
  Io(ar, e.at);
  Io(ar, e.kind);
  Io(ar, e.pool);
  Io(ar, e.job);
  Io(ar, e.reservation);
  Io(ar, e.postings);
}
template <class Ar>
static void Io(Ar& ar, Event& e) {
  Io(ar, e.seq);
  Io(ar, e.at);
  Io(ar, e.type);
  Io(ar, e.job);
  Io(ar, e.pool);
  Io(ar, e.reservation);
  Io(ar, e.node);
  Io(ar, e.price);
  Io(ar, e.old_price);
  Io(ar, e.deadline);
  Io(ar, e.attempt);
  Io(ar, e.beneficiary);
  Io(ar, e.fits_since);
  Io(ar, e.detail);
}
template <class Ar>
static void Io(Ar& ar, ReservedTime& t) {
  Io(ar, t.owner_used);
  Io(ar, t.lent_sold);
  Io(ar, t.idle_unsold);
  Io(ar, t.not_lendable);
}

// Private parts, through the friend the classes name.
struct StateIo {
  template <class Ar>
  static void Cluster(Ar& ar, ClusterState& s) {
    Io(ar, s.pools_);
    Io(ar, s.nodes_);
    Io(ar, s.tenants_);
    Io(ar, s.jobs_);
    Io(ar, s.reservations_);
    Io(ar, s.pool_nodes_);
    Io(ar, s.pool_by_name_);
    Io(ar, s.node_by_name_);
    Io(ar, s.tenant_by_name_);
    Io(ar, s.rack_ids_);
    Io(ar, s.zone_ids_);
    Io(ar, s.rack_names_);
    Io(ar, s.zone_names_);
  }

  template <class Ar>
  static void LedgerState(Ar& ar, Ledger& l) {
    Io(ar, l.entries_);
    auto totals = [&](Ledger::Totals& t) {
      Io(ar, t.balance);
      Io(ar, t.charges);
      Io(ar, t.credits);
    };
    IoSeq(ar, l.tenant_totals_, totals);
    totals(l.operator_totals_);
    Io(ar, l.lending_credits_);
    Io(ar, l.next_seq_);
    Io(ar, l.keep_entries_);
  }

  template <class Ar>
  static void Ids(Ar& ar, Scheduler::IdSet& s) {
    Io(ar, s.ids_);
    Io(ar, s.pos_);
  }

  // The free map: written as each node's free mask (when built for the pool's current nodes);
  // read back by rebuilding it from the nodes and comparing.
  static void FreeMasks(ArchiveWriter& ar, const Scheduler::PoolRuntime& r) {
    std::vector<uint64_t> masks;
    if (!r.index_stale) {
      for (int32_t i = 0; i < r.free.node_count(); ++i) {
        NodeId id = r.free.node_id(i);
        masks.push_back(r.free.ready(id) ? r.free.free_mask(id) : ~uint64_t{0});
      }
    }
    Io(ar, masks);
  }
  static void FreeMasks(ArchiveReader& ar, Scheduler::PoolRuntime& r, const ClusterState& state,
                        PoolId pool) {
    std::vector<uint64_t> masks;
    Io(ar, masks);
    r.free = FreeMap(state, pool);
    if (r.index_stale) return;  // nodes were added since: rebuilt before the next decision
    bool same = static_cast<int32_t>(masks.size()) == r.free.node_count();
    for (int32_t i = 0; same && i < r.free.node_count(); ++i) {
      NodeId id = r.free.node_id(i);
      same = masks[i] == (r.free.ready(id) ? r.free.free_mask(id) : ~uint64_t{0});
    }
    if (!same) ar.Fail();
  }

  template <class Ar>
  static void Runtime(Ar& ar, Scheduler::PoolRuntime& r) {
    Io(ar, r.calendar.delta_);
    Io(ar, r.price);
    Io(ar, r.highest_unplaced);
    auto key = [&](Scheduler::RankKey& k) {
      Io(ar, k.neg_limit);
      Io(ar, k.is_unit);
      Io(ar, k.not_holding);
      Io(ar, k.unit);
      Io(ar, k.submitted);
      Io(ar, k.job);
    };
    IoSet(ar, r.book, key);
    Ids(ar, r.spot_holders);  // `holder_rank` is rebuilt from these (LoadState)
    Io(ar, r.reserved_side);
    Io(ar, r.reserved_q);
    Io(ar, r.reserved_sizes);
    Io(ar, r.holder_limits);
    Io(ar, r.reserved_used);
    Io(ar, r.active_reserved);
    Io(ar, r.active_lend);
    Io(ar, r.reserved_holders);
    Io(ar, r.claims);
    Io(ar, r.bound);
    Io(ar, r.owner_claims);
    Io(ar, r.fits_since);
    Io(ar, r.unlent);
    Io(ar, r.spot_held);
    Io(ar, r.budget_capacity);
    Io(ar, r.installed);
    Io(ar, r.price_integral);
    Io(ar, r.spot_by_tenant);
    Io(ar, r.tenant_carry);
    Io(ar, r.index_stale);
    Io(ar, r.preempting);
    Io(ar, r.budget);
    Io(ar, r.book_gpus);
    Io(ar, r.unmet_spot);
  }

  template <class Ar>
  static void Rest(Ar& ar, Scheduler& s) {
    Io(ar, s.events_);
    Io(ar, s.next_seq_);
    Io(ar, s.violations_);
    Io(ar, s.last_accrual_);
    Io(ar, s.accrual_started_);
    Io(ar, s.at_fixpoint_);
    Io(ar, s.last_cycle_);
    Io(ar, s.last_decided_);
    Io(ar, s.wakeup_after_cycle_);
    Io(ar, s.reserved_time_);
    IoSeq(ar, s.spot_, [&](Scheduler::SpotAccount& a) {
      Io(ar, a.charged);
      Io(ar, a.held_us);
      Io(ar, a.base);
      Io(ar, a.since);
      Io(ar, a.open);
    });
    Io(ar, s.preempting_);
    Io(ar, s.resizing_);
    Io(ar, s.cooldowns_);
    Io(ar, s.dep_waiting_);
  }
};

void Scheduler::SaveState(ArchiveWriter& w) const {
  auto& s = const_cast<Scheduler&>(*this);  // the writer only reads
  StateIo::Cluster(w, s.state_);
  StateIo::LedgerState(w, s.ledger_);
  uint64_t pools = pools_.size();
  w.Count(pools, 0);
  for (PoolRuntime& r : s.pools_) {
    StateIo::Runtime(w, r);
    StateIo::FreeMasks(w, r);
  }
  StateIo::Rest(w, s);
}

Status Scheduler::LoadState(ArchiveReader& r) {
  if (!state_.pools().empty())
    return FailedPrecondition("a snapshot loads into an empty scheduler");
  StateIo::Cluster(r, state_);
  StateIo::LedgerState(r, ledger_);
  uint64_t pools = 0;
  if (r.Count(pools, 1) && pools != state_.pools().size()) r.Fail();
  pools_.resize(r.failed() ? 0 : pools);
  for (size_t i = 0; i < pools_.size() && !r.failed(); ++i) {
    StateIo::Runtime(r, pools_[i]);
    StateIo::FreeMasks(r, pools_[i], state_, PoolId(static_cast<uint32_t>(i + 1)));
  }
  StateIo::Rest(r, *this);
  if (r.failed()) return Internal("the snapshot's scheduler state is damaged or of another format");
  // Indexes derived from what was read are rebuilt, not stored: a snapshot stays loadable when
  // one is added.
  for (PoolRuntime& p : pools_) {
    for (uint32_t id : p.spot_holders.ids()) {
      if (!state_.HasJob(JobId(id))) return Internal("a snapshot's spot holder is not a job");
      p.holder_rank.insert(HolderKey(state_.job(JobId(id))));
    }
    p.holders = HolderCache();
  }
  for (const Node& n : state_.nodes()) {
    if (!state_.HasPool(n.pool) || n.gpu_shares.size() != static_cast<size_t>(n.gpus)) {
      return Internal("a snapshot's node does not match its GPUs");
    }
    PoolRuntime& p = pools_[n.pool.value() - 1];
    for (int g = 0; g < n.gpus; ++g) {
      if (!n.gpu_shares[g].empty()) p.share_hosts.insert({n.id.value(), g});
      for (JobId id : n.gpu_shares[g]) {
        if (!state_.HasJob(id)) return Internal("a snapshot's GPU share is not a job");
        p.share_holders.insert(id.value());
      }
    }
  }
  // The mix the packer looks ahead on: the shares bidding and holding.
  for (PoolRuntime& p : pools_) {
    for (const RankKey& k : p.book) {
      if (!state_.HasJob(JobId(k.job))) return Internal("a snapshot's bid is not a job");
      CountShape(state_.job(JobId(k.job)), 1);
    }
    for (uint32_t id : p.share_holders) CountShape(state_.job(JobId(id)), 1);
  }
  return Status::Ok();
}

}  // namespace rsv
