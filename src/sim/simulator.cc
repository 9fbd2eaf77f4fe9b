#include "sim/simulator.h"

#include <algorithm>
#include <cmath>
#include <deque>
#include <queue>
#include <set>

#include "common/rng.h"
#include "placement/placement.h"
#include "scheduler/scheduler.h"

namespace rsv::sim {
namespace {

constexpr double kMicrosPerSecond = 1e6;
constexpr double kMicrosPerHourD = 3.6e9;

Stat Summarize(std::vector<double> v) {
  Stat s;
  s.count = static_cast<int64_t>(v.size());
  if (v.empty()) return s;
  std::sort(v.begin(), v.end());
  double sum = 0;
  for (double x : v) sum += x;
  s.mean = sum / static_cast<double>(v.size());
  auto pct = [&](double p) {
    size_t i = static_cast<size_t>(std::ceil(p * static_cast<double>(v.size()))) - 1;
    return v[std::min(i, v.size() - 1)];
  };
  s.p50 = pct(0.50);
  s.p99 = pct(0.99);
  return s;
}

// Multi-node gangs take whole nodes: a request that is not a multiple of the node size (Philly
// has 12-GPU jobs on 8-GPU nodes) is rounded up to whole nodes, as a scheduler would have to.
// An openb pod that asks for a share of one GPU.
bool IsShare(const TraceJob& j) { return j.gpus == 1 && j.gpu_milli > 0 && j.gpu_milli < 1000; }

int32_t WholeNodes(int32_t gpus, int32_t node) {
  if (node <= 0 || gpus <= node || gpus % node == 0) return gpus;
  return (gpus / node + 1) * node;
}

// Per-job accounting shared by both engines.
struct SimJob {
  const TraceJob* trace = nullptr;
  Duration remaining;
  Timestamp attempt_start;
  Duration overhead;      // start latency and restart cost paid at the start of this attempt
  Timestamp attempt_end;  // when this attempt's work would be done
  Timestamp noticed_at;   // this attempt's notice, if it got one
  std::optional<Timestamp> saved_at_notice;  // it checkpointed on its notice and left
  int32_t attempt = 0;
  std::optional<Timestamp> first_start;
  std::optional<Timestamp> finished;
  bool guaranteed_class = false;
  int32_t gpus = 0;  // held while running (the request rounded to whole nodes)
  // Milli-GPUs held while running: gpus × 1000, or a share of one GPU (docs/market.md, "GPU
  // shares") where the engine runs shares; and that as GPUs.
  int64_t milli = 0;
  double Gpus() const { return static_cast<double>(milli) / 1000; }
  // Elastic (docs/simulator.md, "Elastic jobs"): GPUs held now (base and units), the work rate
  // at that size relative to the trace's size, when progress and held GPU time were last
  // settled, the remaining work at the last checkpoint and at the notice, and a version that
  // makes completions computed before a resize stale.
  bool elastic = false;
  int32_t size = 0;
  double rate = 1;
  Timestamp settled;
  Duration remaining_at_checkpoint;
  Duration remaining_at_notice;
  double used_us = 0, lost_us = 0;
  int32_t version = 0;
};

// Time-weighted utilization and everything measured from job lifecycles.
class Recorder {
 public:
  // `shares`: the engine runs shares of one GPU as shares (else as whole GPUs).
  Recorder(const Trace& trace, const SimConfig& cfg, int32_t capacity, int32_t largest_node,
           PolicyResult* out, bool shares)
      : cfg_(cfg), capacity_(capacity), out_(out) {
    jobs_.resize(trace.jobs.size());
    for (size_t i = 0; i < trace.jobs.size(); ++i) {
      jobs_[i].trace = &trace.jobs[i];
      jobs_[i].remaining = trace.jobs[i].duration;
      jobs_[i].gpus = WholeNodes(trace.jobs[i].gpus, largest_node);
      jobs_[i].milli = shares && IsShare(trace.jobs[i]) ? trace.jobs[i].gpu_milli
                                                        : int64_t{1000} * jobs_[i].gpus;
      auto r = cfg.reservations.find(trace.jobs[i].tenant);
      jobs_[i].guaranteed_class = r != cfg.reservations.end() && trace.jobs[i].gpus <= r->second;
    }
    // Steady window: from the 10th to the 90th percentile of submissions (warm-up and drain
    // excluded). When those coincide (a batch submitted at once) there is no steady state: the
    // whole run stands in (set at Finish).
    size_t n = trace.jobs.size();
    out_->window_start = trace.jobs[n / 10].submit;
    out_->window_end = trace.jobs[std::min(n - 1, n * 9 / 10)].submit;
    first_submit_ = trace.jobs.front().submit;
    out_->cluster_gpus = capacity;
  }

  SimJob& job(size_t i) { return jobs_[i]; }
  size_t size() const { return jobs_.size(); }

  void Started(size_t i, Timestamp t, Duration overhead) {
    SimJob& j = jobs_[i];
    j.attempt_start = t;
    j.overhead = overhead;
    j.attempt_end = t + overhead + j.remaining;
    j.saved_at_notice.reset();
    j.attempt++;
    if (!j.first_start) j.first_start = t;
    Allocate(t, j.milli);
    if (j.elastic) {
      j.size = j.gpus;
      j.rate = Rate(j, j.size);
      j.settled = t;
      j.remaining_at_checkpoint = j.remaining;
      j.version++;
      j.attempt_end = t + overhead + Scaled(j.remaining, j.rate);
    }
  }

  // Elastic: work done since the last settlement (none during the start overhead) is taken off
  // the remaining work; GPU time held is counted.
  void Settle(SimJob& j, Timestamp t) {
    const Timestamp from = std::max(j.settled, j.attempt_start + j.overhead);
    if (t > from) {
      Duration done =
          Duration::Micros(static_cast<int64_t>(static_cast<double>((t - from).micros()) * j.rate));
      j.remaining = j.remaining > done ? j.remaining - done : Duration();
    }
    if (t > j.settled) {
      const double held = static_cast<double>((t - j.settled).micros()) * j.size;
      used_us_ += held;
      j.used_us += held;
      j.settled = t;
    }
  }

  // Elastic: the job now holds `size` GPUs (a unit started or stopped); returns its new end.
  Timestamp Resized(size_t i, Timestamp t, int32_t size) {
    SimJob& j = jobs_[i];
    Settle(j, t);
    Allocate(t, int64_t{1000} * (size - j.size));
    j.size = size;
    j.rate = Rate(j, size);
    j.version++;
    j.attempt_end = std::max(t, j.attempt_start + j.overhead) + Scaled(j.remaining, j.rate);
    return j.attempt_end;
  }

  // Elastic: a checkpoint completed (periodic) or was written on the notice.
  void Checkpointed(size_t i, Timestamp t) {
    SimJob& j = jobs_[i];
    if (!j.elastic) return;
    Settle(j, t);
    j.remaining_at_checkpoint = j.remaining;
  }
  void Noticed(size_t i, Timestamp t) {
    SimJob& j = jobs_[i];
    j.noticed_at = t;
    if (!j.elastic) return;
    Settle(j, t);
    j.remaining_at_notice = j.remaining;
  }

  // throughput(n) / throughput(trace size), throughput(n) = n / (1 + s·(n − 1)).
  double Rate(const SimJob& j, int32_t n) const {
    auto tp = [&](double x) { return x / (1 + cfg_.elastic_serial * (x - 1)); };
    return tp(n) / tp(std::max(1, j.trace->gpus));
  }
  static Duration Scaled(Duration work, double rate) {
    return Duration::Micros(
        static_cast<int64_t>(std::ceil(static_cast<double>(work.micros()) / rate)));
  }

  // A reserved-tier attempt started at `t` after fitting its reservation since `since`.
  void OwnerStarted(Timestamp since, Timestamp t) {
    double wait = (t - since).micros() / kMicrosPerSecond;
    owner_waits_.push_back(wait);
    out_->owner_waits_over_notice += t - since > cfg_.notice;
  }

  // The attempt ended without finishing: keep checkpointed progress, lose the rest.
  void Stopped(size_t i, Timestamp t, bool preempted) {
    SimJob& j = jobs_[i];
    if (j.elastic) {  // back to its last checkpoint (or its notice's), at whatever sizes it ran
      Settle(j, t);
      const bool on_notice = j.saved_at_notice.has_value();
      const Duration before = j.remaining;
      j.remaining = on_notice ? j.remaining_at_notice : j.remaining_at_checkpoint;
      if (on_notice && *j.saved_at_notice == t) j.remaining = before;  // done under notice
      // Lost: the start overhead, and the work redone (at the size it ran, as GPU time).
      const double redone =
          before < j.remaining ? static_cast<double>((j.remaining - before).micros()) / j.rate : 0;
      const double lost = (static_cast<double>(j.overhead.micros()) + redone) * j.size;
      lost_us_ += lost;
      j.lost_us += lost;
      out_->preemptions += preempted;
      Allocate(t, int64_t{-1000} * j.size);
      j.size = 0;
      return;
    }
    Duration elapsed = t - j.attempt_start;
    Duration useful = elapsed > j.overhead ? elapsed - j.overhead : Duration();
    Duration ckpt = CheckpointInterval(i);
    Duration saved = Duration::Micros(useful.micros() / ckpt.micros() * ckpt.micros());
    if (j.saved_at_notice) {  // everything up to the notice is in its last checkpoint
      Duration before = *j.saved_at_notice - j.attempt_start;
      saved = std::max(saved, before > j.overhead ? before - j.overhead : Duration());
    }
    saved = std::min(saved, j.remaining);
    j.remaining = j.remaining - saved;
    lost_us_ += static_cast<double>((elapsed - saved).micros()) * j.Gpus();
    used_us_ += static_cast<double>(elapsed.micros()) * j.Gpus();
    out_->preemptions += preempted;
    Allocate(t, -j.milli);
  }

  void Finished(size_t i, Timestamp t) {
    SimJob& j = jobs_[i];
    if (j.elastic) {
      Settle(j, t);
      const double lost = static_cast<double>(j.overhead.micros()) * j.size;
      lost_us_ += lost;
      j.lost_us += lost;
      work_us_ += j.used_us - j.lost_us;  // every GPU-second not lost went into its work
      j.finished = t;
      j.remaining = Duration();
      ++finished_;
      Allocate(t, int64_t{-1000} * j.size);
      j.size = 0;
      return;
    }
    Duration elapsed = t - j.attempt_start;
    used_us_ += static_cast<double>(elapsed.micros()) * j.Gpus();
    // Restart overhead of the last attempt is lost time too.
    lost_us_ += static_cast<double>(j.overhead.micros()) * j.Gpus();
    work_us_ += static_cast<double>(j.trace->duration.micros()) * j.Gpus();
    j.finished = t;
    j.remaining = Duration();
    ++finished_;
    Allocate(t, -j.milli);
  }

  Duration CheckpointInterval(size_t i) const {
    return jobs_[i].trace->checkpoint_interval.value_or(cfg_.checkpoint_interval);
  }

  void Price(Timestamp t, Money p) { out_->price.emplace_back(t.micros() / 1'000'000, p); }

  int64_t finished() const { return finished_; }

  void Finish(Timestamp end) {
    Allocate(end, 0);
    // The whole run: from the first submission to the last completion (or the end, when some
    // job never finished).
    Timestamp last = first_submit_;
    for (const SimJob& j : jobs_) {
      if (j.finished) last = std::max(last, *j.finished);
    }
    if (finished_ < static_cast<int64_t>(jobs_.size())) last = std::max(last, end);
    out_->run_start = first_submit_;
    out_->run_end = last;
    out_->makespan_s = (last - first_submit_).micros() / kMicrosPerSecond;
    out_->allocation_ratio_run = Ratio(first_submit_, last);
    if (out_->window_end <= out_->window_start) {
      out_->window_start = first_submit_;
      out_->window_end = last;
    }
    out_->allocation_ratio = Ratio(out_->window_start, out_->window_end);
    std::vector<double> jct, qg, qs;
    for (const SimJob& j : jobs_) {
      if (j.first_start) {
        double q = (*j.first_start - j.trace->submit).micros() / kMicrosPerSecond;
        (j.guaranteed_class ? qg : qs).push_back(q);
      }
      if (j.finished) jct.push_back((*j.finished - j.trace->submit).micros() / kMicrosPerSecond);
    }
    out_->jobs = static_cast<int64_t>(jobs_.size());
    out_->finished = finished_;
    out_->unfinished = out_->jobs - finished_;
    out_->jct_s = Summarize(jct);
    out_->queue_guaranteed_s = Summarize(qg);
    out_->queue_spot_s = Summarize(qs);
    for (double w : owner_waits_) out_->owner_wait_max_s = std::max(out_->owner_wait_max_s, w);
    out_->owner_wait_s = Summarize(std::move(owner_waits_));
    std::sort(jct.begin(), jct.end());
    out_->jct_sorted_s = std::move(jct);
    out_->lost_gpu_hours = lost_us_ / kMicrosPerHourD;
    out_->used_gpu_hours = used_us_ / kMicrosPerHourD;
    out_->work_gpu_hours = work_us_ / kMicrosPerHourD;
    // Utilization series: averages over 400 equal buckets from 0 to the run's end.
    int64_t span = std::max<int64_t>(1, last.micros());
    const int buckets = 400;
    std::vector<double> sum(buckets, 0);
    for (size_t k = 0; k + 1 < steps_.size(); ++k) {
      int64_t a = steps_[k].first, b = std::min(steps_[k + 1].first, span);
      for (int64_t x = a; x < b;) {
        int bi = static_cast<int>(x * buckets / span);
        if (bi >= buckets) break;
        int64_t bucket_end = (static_cast<int64_t>(bi) + 1) * span / buckets;
        int64_t until = std::min(b, std::max(bucket_end, x + 1));
        sum[bi] += static_cast<double>(until - x) * steps_[k].second;
        x = until;
      }
    }
    for (int bi = 0; bi < buckets; ++bi) {
      double width = static_cast<double>(span) / buckets;
      out_->utilization.emplace_back(static_cast<int64_t>(bi * width / kMicrosPerSecond),
                                     capacity_ ? sum[bi] / (width * capacity_ * 1000.0) : 0);
    }
  }

 private:
  // Time-weighted allocated GPUs / cluster GPUs over [from, to).
  double Ratio(Timestamp from, Timestamp to) const {
    const int64_t a = from.micros(), b = to.micros();
    if (b <= a || capacity_ <= 0) return 0;
    double area = 0;
    for (size_t k = 0; k < steps_.size(); ++k) {
      int64_t lo = std::max(a, steps_[k].first);
      int64_t hi = std::min(b, k + 1 < steps_.size() ? steps_[k + 1].first : b);
      if (hi > lo) area += static_cast<double>(hi - lo) * steps_[k].second;
    }
    return area / (static_cast<double>(b - a) * capacity_ * 1000.0);
  }

  void Allocate(Timestamp t, int64_t delta) {  // milli-GPUs
    if (steps_.empty() || steps_.back().first != t.micros()) {
      steps_.emplace_back(t.micros(), allocated_ + delta);
    } else {
      steps_.back().second = allocated_ + delta;
    }
    allocated_ += delta;
  }

  const SimConfig& cfg_;
  int32_t capacity_;
  PolicyResult* out_;
  std::vector<SimJob> jobs_;
  int64_t allocated_ = 0;
  Timestamp first_submit_;
  double lost_us_ = 0, used_us_ = 0, work_us_ = 0;
  std::vector<double> owner_waits_;
  int64_t finished_ = 0;
  std::vector<std::pair<int64_t, int64_t>> steps_;  // (time us, allocated after)
};

// What a queued event is: a job's work done, a scheduler wakeup, a start confirmed after the
// start latency, a periodic checkpoint, a job leaving after checkpointing on its notice, an
// elastic job giving back a unit under notice (in place, after checkpoint_time).
enum class Due { kCompletion, kWakeup, kConfirm, kCheckpoint, kLeave, kShrink };

struct QueuedEvent {
  Timestamp at;
  int64_t seq;
  Due kind;
  size_t job;
  int32_t attempt;
  int32_t version = 0;   // completions of elastic jobs: stale after a resize
  JobId unit = JobId();  // kShrink: the unit to give back
  bool operator>(const QueuedEvent& o) const { return at != o.at ? at > o.at : seq > o.seq; }
};
using EventQueue = std::priority_queue<QueuedEvent, std::vector<QueuedEvent>, std::greater<>>;

void AddTopology(const SimConfig& cfg, const std::vector<TraceNode>& nodes,
                 const std::function<void(const TraceNode&, const std::string&)>& add) {
  for (size_t i = 0; i < nodes.size(); ++i) {
    int32_t rack = static_cast<int32_t>(i) / std::max(1, cfg.nodes_per_rack);
    int32_t zone = rack / std::max(1, cfg.racks_per_zone);
    add(nodes[i], !nodes[i].topology.empty()
                      ? nodes[i].topology
                      : "zone-" + std::to_string(zone) + "/rack-" + std::to_string(rack));
  }
}

// market, static and quota-borrow: the server's Scheduler in virtual time.
Result<PolicyResult> RunScheduler(const Trace& trace, const SimConfig& cfg, Policy policy) {
  PolicyResult out;
  out.policy = policy;
  Scheduler s(SchedulerOptions{.checks = InvariantChecks::kPerCycle, .keep_ledger_entries = false});
  PoolConfig pc;
  pc.name = "gpu";
  // Only the market has prices: the baselines run the same scheduler with a zero price, so no
  // money moves and no job outbids another.
  const Money reserve = policy == Policy::kMarket ? cfg.reserve_price : Money();
  pc.reserve_price = reserve;
  pc.min_increment = cfg.min_increment;
  pc.max_notice = cfg.notice;
  pc.reservation_base_price = Money();  // reservations are the trace's quotas: not priced here
  pc.operator_share = 1000;
  RSV_ASSIGN_OR_RETURN(PoolId pool, s.AddPool(pc));
  int32_t capacity = 0;
  Status add_status;
  AddTopology(cfg, cfg.nodes, [&](const TraceNode& n, const std::string& topo) {
    if (n.gpus == 0 || !add_status.ok()) return;
    Result<NodeId> id = s.AddNode(n.name, pool, n.gpus, topo);
    if (!id.ok()) add_status = id.status();
    // Starts are confirmed after the start latency, as an agent confirms them.
    if (id.ok() && cfg.start_latency > Duration()) add_status = s.SetNodeAgent(*id);
    capacity += n.gpus;
  });
  RSV_RETURN_IF_ERROR(add_status);
  int32_t largest = 0;
  for (const TraceNode& n : cfg.nodes) largest = std::max(largest, n.gpus);
  // Tenants in name order (deterministic ids).
  std::set<std::string> names;
  for (const TraceJob& j : trace.jobs) names.insert(j.tenant);
  for (const auto& [t, g] : cfg.reservations) names.insert(t);
  std::map<std::string, TenantId> tenant;
  for (const std::string& n : names) {
    RSV_ASSIGN_OR_RETURN(TenantId id, s.AddTenant(n));
    tenant[n] = id;
  }
  const Timestamp forever = Timestamp::FromMicros(int64_t{1} << 60);
  for (const auto& [t, g] : cfg.reservations) {
    if (g <= 0) continue;
    ReservationRequest r{tenant[t], pool, g, Timestamp(), forever, policy != Policy::kStatic};
    // Counts that fit the cluster may not all fit as shapes (whole nodes plus the rest on one
    // node; docs/market.md): a quota that does not is cut to the largest that does.
    RSV_ASSIGN_OR_RETURN(Quote q, s.QuoteReservation(r, Timestamp()));
    if (!q.admission.admitted) r.gpus = q.admission.largest_fit;
    if (r.gpus <= 0) continue;
    Result<ReservationId> id = s.Reserve(r, Timestamp());
    if (!id.ok()) {
      return InvalidArgument("reservations", "tenant " + t + ": " + id.status().message());
    }
  }
  s.RunCycle(Timestamp());
  (void)s.DrainEvents();

  Recorder rec(trace, cfg, capacity, largest, &out, /*shares=*/true);
  Rng rng(cfg.seed);
  // Which multi-GPU jobs are elastic: drawn from a stream of their own, so the limits drawn
  // below are the same with or without elastic jobs.
  std::vector<uint8_t> elastic(trace.jobs.size(), 0);
  if (cfg.elastic_fraction > 0) {
    Rng draw(cfg.seed ^ 0x656c6173746963ULL);
    for (size_t k = 0; k < trace.jobs.size(); ++k) {
      const int64_t x = draw.Range(0, 999'999);
      elastic[k] = trace.jobs[k].gpus >= 2 && x < static_cast<int64_t>(cfg.elastic_fraction * 1e6);
    }
  }
  std::vector<size_t> sim_of;  // scheduler job id → trace index
  sim_of.push_back(0);
  EventQueue q;
  int64_t seq = 0;
  std::optional<Timestamp> wakeup_pushed;
  size_t next = 0;
  int64_t events = 0;
  Timestamp now;

  // Units of elastic jobs (docs/simulator.md, "Elastic jobs"): a unit's start grows its job, a
  // unit stopped while its job runs shrinks it; one stopped with its job is the job's stop.
  auto unit_event = [&](const Event& e, size_t i, Timestamp t) {
    const Job& unit = s.state().job(e.job);
    const Job& owner = s.state().job(unit.unit_of);
    SimJob& j = rec.job(i);
    if (!HoldsGpus(owner.state) || j.size == 0) return;
    if (e.type == EventType::kJobStarted || e.type == EventType::kJobPreempted ||
        e.type == EventType::kJobRequeued) {
      const bool grow = e.type == EventType::kJobStarted;
      ++(grow ? out.grows : out.shrinks);
      const Timestamp end = rec.Resized(i, t, j.size + (grow ? 1 : -1) * unit.spec.gpus);
      q.push(QueuedEvent{end, seq++, Due::kCompletion, i, j.attempt, j.version});
    } else if (e.type == EventType::kNoticeSent && IsActive(owner.state)) {
      // In place: the job takes the smaller size in and gives the unit back.
      q.push(QueuedEvent{std::min(t + cfg.checkpoint_time, e.deadline), seq++, Due::kShrink, i,
                         j.attempt, 0, e.job});
    }
  };
  auto handle_events = [&](Timestamp t) {
    for (const Event& e : s.DrainEvents()) {
      ++events;
      size_t i = e.job.valid() ? sim_of[e.job.value()] : 0;
      if (e.job.valid() && s.state().job(e.job).unit_of.valid()) {
        unit_event(e, i, t);
        continue;
      }
      switch (e.type) {
        case EventType::kJobStarted: {
          SimJob& j = rec.job(i);
          Duration overhead = cfg.start_latency + (j.attempt > 0 ? cfg.restart_cost : Duration());
          rec.Started(i, t, overhead);
          if (e.fits_since) rec.OwnerStarted(*e.fits_since, t);
          if (cfg.start_latency > Duration()) {
            q.push(QueuedEvent{t + cfg.start_latency, seq++, Due::kConfirm, i, j.attempt});
          }
          q.push(QueuedEvent{j.attempt_end, seq++, Due::kCompletion, i, j.attempt, j.version});
          const Timestamp first = t + overhead + rec.CheckpointInterval(i);
          if (first < j.attempt_end)
            q.push(QueuedEvent{first, seq++, Due::kCheckpoint, i, j.attempt});
          break;
        }
        case EventType::kNoticeSent: {
          // It checkpoints and leaves, if that takes less than the notice; else the deadline
          // stops it.
          SimJob& j = rec.job(i);
          rec.Noticed(i, t);
          if (t + cfg.checkpoint_time < e.deadline) {
            q.push(QueuedEvent{t + cfg.checkpoint_time, seq++, Due::kLeave, i, j.attempt});
          }
          break;
        }
        case EventType::kJobPreempted:
        case EventType::kJobRequeued:
          rec.Stopped(i, t, e.type == EventType::kJobPreempted);
          break;
        case EventType::kJobSucceeded:
          rec.Finished(i, t);
          break;
        case EventType::kPriceChanged:
          rec.Price(t, e.price);
          break;
        default:
          break;
      }
    }
  };

  std::vector<JobId> sched_id(trace.jobs.size());
  auto report_progress = [&](Timestamp t) {
    if (cfg.progress && (events & 0x3fff) == 0) {
      cfg.progress(rec.finished(), static_cast<int64_t>(trace.jobs.size()), t, events);
    }
  };
  while (next < trace.jobs.size() || !q.empty()) {
    Timestamp t = next < trace.jobs.size() ? trace.jobs[next].submit : Timestamp::Max();
    if (!q.empty()) t = std::min(t, q.top().at);
    now = t;
    // Completions and wakeups at t, then one cycle, then arrivals (decided incrementally).
    bool cycle = false;
    while (!q.empty() && q.top().at == t) {
      QueuedEvent e = q.top();
      q.pop();
      ++events;
      if (e.kind == Due::kWakeup) {
        cycle = true;
        continue;
      }
      SimJob& j = rec.job(e.job);
      if (j.attempt != e.attempt || j.finished) continue;  // a stale completion
      if (e.kind == Due::kCompletion && j.elastic && e.version != j.version) continue;  // resized
      const JobId id = sched_id[e.job];
      const Job& sj = s.state().job(id);
      if (!HoldsGpus(sj.state)) continue;
      if (e.kind == Due::kShrink) {  // the job took the smaller size in: the unit goes
        if (s.state().job(e.unit).state == JobState::kPreempting) {
          RSV_RETURN_IF_ERROR(s.Release(e.unit, t));
          cycle = true;
        }
        continue;
      }
      if (e.kind == Due::kConfirm) {  // the job is up
        RSV_RETURN_IF_ERROR(s.ConfirmStart(id, sj.attempt, t));
        continue;
      }
      if (e.kind ==
          Due::kCheckpoint) {  // a periodic checkpoint completed: reported, as an agent would
        RSV_RETURN_IF_ERROR(s.Checkpointed(id, t));
        rec.Checkpointed(e.job, t);
        const Timestamp again = t + rec.CheckpointInterval(e.job);
        if (again < j.attempt_end)
          q.push(QueuedEvent{again, seq++, Due::kCheckpoint, e.job, e.attempt});
        continue;
      }
      if (e.kind == Due::kLeave) {  // checkpointed on its notice: it leaves, its progress saved
        // (an elastic job's under notice only when it stops as a whole)
        if (sj.state != JobState::kPreempting) continue;
        j.saved_at_notice = j.noticed_at;
      } else if (sj.state == JobState::kPreempting) {
        // Its work is done while under notice: it exits 0, which under notice requeues it (as
        // on the server, where that exit cannot be told from a checkpoint-and-leave); all of
        // its work is saved, so the next attempt only pays its start.
        j.saved_at_notice = t;
      }
      RSV_RETURN_IF_ERROR(s.JobExited(id, true, t));
      cycle = true;
    }
    if (cycle) s.RunCycle(t);
    handle_events(t);
    while (next < trace.jobs.size() && trace.jobs[next].submit == t) {
      const TraceJob& tj = trace.jobs[next];
      JobSpec spec;
      spec.tenant = tenant[tj.tenant];
      spec.pool = pool;
      spec.gpus = WholeNodes(tj.gpus, largest);
      spec.notice = cfg.notice;
      spec.max_restarts = 0;
      auto quota = cfg.reservations.find(tj.tenant);
      int32_t reserved = quota == cfg.reservations.end() ? 0 : quota->second;
      const PriceRange& range =
          cfg.tenant_prices.count(tj.tenant) ? cfg.tenant_prices.at(tj.tenant) : cfg.default_prices;
      // Drawn for every job under every policy, so all policies consume the same randomness.
      Money drawn = Money::Micros(rng.Range(range.lo.micros(), range.hi.micros()));
      switch (policy) {
        case Policy::kMarket:
          spec.tier = tj.tier.value_or(reserved > 0 ? Tier::kAuto : Tier::kSpot);
          spec.limit_price = std::max(tj.limit_price.value_or(drawn), cfg.reserve_price);
          break;
        case Policy::kStatic:
          // Each tenant on its own reservation; others (and jobs larger than their tenant's
          // reservation) share the unreserved remainder first come, first served.
          spec.tier = reserved >= tj.gpus ? Tier::kReserved : Tier::kSpot;
          spec.limit_price = reserve;
          break;
        case Policy::kQuotaBorrow:
          // Quota first, idle quota borrowed, reclaimed by preemption; one price for all, so
          // borrowed work is never preempted by other borrowed work.
          spec.tier = reserved > 0 ? Tier::kAuto : Tier::kSpot;
          spec.limit_price = reserve;
          break;
        case Policy::kFifoBackfill:
          break;
      }
      // A share of one GPU (openb) runs as a share, in the spot tier under every policy
      // (docs/market.md, "GPU shares": reserved-tier shares are not supported), at the limit the
      // policy gives spot work.
      if (IsShare(tj)) {
        spec.gpus = 1;
        spec.gpu_milli = tj.gpu_milli;
        spec.tier = Tier::kSpot;
        if (policy != Policy::kMarket) spec.limit_price = reserve;
      }
      // Elastic (market only): half to twice the trace's size, in the pool's steps.
      if (policy == Policy::kMarket && elastic[next] && !IsShare(tj)) {
        const int32_t min = WholeNodes(std::max(1, tj.gpus / 2), largest);
        const int32_t step = largest > 0 && min % largest == 0 ? largest : min;
        const int32_t units =
            std::min<int32_t>(kMaxElasticUnits, (WholeNodes(tj.gpus * 2, largest) - min) / step);
        if (units >= 1) {
          spec.gpus = min;
          spec.max_gpus = min + units * step;
          spec.gpu_step = step;
          spec.tier = Tier::kSpot;
          spec.resize_mode = ResizeMode::kSignal;
          spec.resize_cooldown = Duration::Minutes(5);
          rec.job(next).elastic = true;
          rec.job(next).gpus = min;
          ++out.elastic_jobs;
        }
      }
      if (spec.gpus > capacity) {  // larger than the whole cluster: never runs (unfinished)
        ++next;
        continue;
      }
      Result<JobId> id = s.SubmitAndDecide(std::move(spec), t);
      if (!id.ok()) {
        return InvalidArgument("trace",
                               "line " + std::to_string(tj.line) + ": " + id.status().ToString());
      }
      sched_id[next] = *id;
      const std::vector<JobId>& units = s.state().job(*id).units;
      const uint32_t last = units.empty() ? id->value() : units.back().value();
      if (sim_of.size() <= last) sim_of.resize(last + 1);
      sim_of[id->value()] = next;
      for (JobId u : units) sim_of[u.value()] = next;
      ++next;
      ++events;
      handle_events(t);
    }
    std::optional<Timestamp> w = s.NextWakeup(t);
    if (w && *w < forever && w != wakeup_pushed) {  // reservations outlast the trace
      q.push(QueuedEvent{*w, seq++, Due::kWakeup, 0, 0});
      wakeup_pushed = w;
    }
    report_progress(t);
  }
  rec.Finish(now);
  out.events = events;
  const Ledger& l = s.ledger();
  Money owners = l.LendingCredits();
  Money spend;
  for (const Job& j : s.state().jobs()) spend += s.ChargedForJob(j.id);
  out.spot_spend = spend;
  out.owner_credits = owners;
  out.operator_revenue = l.Balance(Account::Operator());
  out.ledger_sum = l.Sum();
  out.invariant_violations = static_cast<int64_t>(s.violations().size());
  if (!s.violations().empty()) out.first_violation = s.violations().front();
  return out;
}

// fifo-backfill: one queue in submission order with EASY backfill (Slurm-like): the head job
// gets the earliest start the running jobs' known durations allow; later jobs start now only if
// they do not delay it. Placement is the same FreeMap as the scheduler's.
Result<PolicyResult> RunFifoBackfill(const Trace& trace, const SimConfig& cfg) {
  PolicyResult out;
  out.policy = Policy::kFifoBackfill;
  ClusterState cs;
  PoolConfig pc;
  pc.name = "gpu";
  RSV_ASSIGN_OR_RETURN(PoolId pool, cs.AddPool(pc));
  int32_t capacity = 0;
  Status add_status;
  AddTopology(cfg, cfg.nodes, [&](const TraceNode& n, const std::string& topo) {
    if (n.gpus == 0 || !add_status.ok()) return;
    Result<NodeId> id = cs.AddNode(n.name, pool, n.gpus, topo);
    if (!id.ok()) add_status = id.status();
    capacity += n.gpus;
  });
  RSV_RETURN_IF_ERROR(add_status);
  FreeMap free(cs, pool);
  const int32_t largest = free.largest_node();
  Recorder rec(trace, cfg, capacity, largest, &out, /*shares=*/false);
  auto gpus_of = [&](size_t i) { return WholeNodes(trace.jobs[i].gpus, largest); };
  std::deque<size_t> queue;
  std::multiset<std::pair<Timestamp, size_t>> running;  // (end, job)
  std::vector<Placement> placed(trace.jobs.size());
  size_t next = 0;
  int64_t events = 0;
  Timestamp now;
  std::string why;
  auto start = [&](size_t i, Placement p, Timestamp t) {
    free.Occupy(p);
    placed[i] = std::move(p);
    rec.Started(i, t, cfg.start_latency);
    running.emplace(t + cfg.start_latency + trace.jobs[i].duration, i);
  };
  while (next < trace.jobs.size() || !running.empty()) {
    Timestamp t = next < trace.jobs.size() ? trace.jobs[next].submit : Timestamp::Max();
    if (!running.empty()) t = std::min(t, running.begin()->first);
    now = t;
    while (!running.empty() && running.begin()->first == t) {
      size_t i = running.begin()->second;
      running.erase(running.begin());
      free.Release(placed[i]);
      rec.Finished(i, t);
      ++events;
    }
    while (next < trace.jobs.size() && trace.jobs[next].submit == t) {
      if (free.Feasible(gpus_of(next), &why)) queue.push_back(next);  // else never runs
      ++next;
      ++events;
    }
    // Start from the head while it fits.
    while (!queue.empty()) {
      PlaceResult r = free.Place(gpus_of(queue.front()));
      if (r.outcome != PlaceOutcome::kPlaced) break;
      start(queue.front(), std::move(r.placement), t);
      queue.pop_front();
    }
    if (queue.size() > 1) {
      // The head's shadow time: when enough GPUs will have been freed for it.
      const int32_t head_gpus = gpus_of(queue.front());
      int32_t avail = free.free_gpus();
      Timestamp shadow = Timestamp::Max();
      int32_t extra = 0;
      for (const auto& [end, i] : running) {
        avail += gpus_of(i);
        if (avail >= head_gpus) {
          shadow = end;
          extra = avail - head_gpus;
          break;
        }
      }
      int32_t examined = 0;
      for (auto it = queue.begin() + 1; it != queue.end() && examined < cfg.backfill_depth;) {
        ++examined;
        const TraceJob& tj = trace.jobs[*it];
        const int32_t g = gpus_of(*it);
        bool ends_in_time = t + cfg.start_latency + tj.duration <= shadow;
        if (g > free.free_gpus() || (!ends_in_time && g > extra)) {
          ++it;
          continue;
        }
        PlaceResult r = free.Place(g);
        if (r.outcome != PlaceOutcome::kPlaced) {
          ++it;
          continue;
        }
        if (!ends_in_time) extra -= g;
        start(*it, std::move(r.placement), t);
        it = queue.erase(it);
      }
    }
    if (cfg.progress && (events & 0x3fff) == 0) {
      cfg.progress(rec.finished(), static_cast<int64_t>(trace.jobs.size()), t, events);
    }
  }
  rec.Finish(now);
  out.events = events;
  return out;
}

}  // namespace

std::string_view PolicyName(Policy p) {
  switch (p) {
    case Policy::kMarket:
      return "market";
    case Policy::kStatic:
      return "static";
    case Policy::kFifoBackfill:
      return "fifo-backfill";
    case Policy::kQuotaBorrow:
      return "quota-borrow";
  }
  return "?";
}

Result<Policy> ParsePolicy(std::string_view s) {
  for (Policy p : kAllPolicies) {
    if (PolicyName(p) == s) return p;
  }
  return InvalidArgument(
      "policy",
      "'" + std::string(s) + "' is not market, static, fifo-backfill, quota-borrow or all");
}

std::vector<TraceNode> UniformCluster(int32_t nodes, int32_t gpus_per_node) {
  std::vector<TraceNode> out;
  for (int32_t i = 0; i < nodes; ++i) {
    TraceNode n;
    n.name = "node-" + std::to_string(i);
    n.gpus = gpus_per_node;
    out.push_back(std::move(n));
  }
  return out;
}

std::map<std::string, int32_t> FitReservations(std::map<std::string, int32_t> r, int32_t gpus) {
  int64_t total = 0;
  for (const auto& [t, g] : r) total += g;
  if (total <= gpus) return r;
  for (auto& [t, g] : r) g = static_cast<int32_t>(static_cast<int64_t>(g) * gpus / total);
  return r;
}

std::map<std::string, int32_t> DefensiveReservations(const Trace& trace, int32_t gpus) {
  // Each tenant's demand as a step function if every job ran on arrival.
  std::map<std::string, std::vector<std::pair<int64_t, int32_t>>> deltas;
  for (const TraceJob& j : trace.jobs) {
    auto& d = deltas[j.tenant];
    d.emplace_back(j.submit.micros(), j.gpus);
    d.emplace_back((j.submit + j.duration).micros(), -j.gpus);
  }
  std::map<std::string, int32_t> out;
  for (auto& [tenant, d] : deltas) {
    std::sort(d.begin(), d.end());
    // Time-weighted distribution of the concurrent demand over the tenant's active span.
    std::map<int32_t, int64_t> time_at;
    int32_t level = 0;
    int64_t total = 0;
    for (size_t i = 0; i < d.size(); ++i) {
      level += d[i].second;
      if (i + 1 < d.size() && d[i + 1].first > d[i].first) {
        int64_t dt = d[i + 1].first - d[i].first;
        time_at[level] += dt;
        total += dt;
      }
    }
    int64_t acc = 0;
    int32_t p95 = 0;
    for (const auto& [lvl, dt] : time_at) {
      acc += dt;
      p95 = lvl;
      if (acc * 100 >= total * 95) break;
    }
    out[tenant] = p95;
  }
  return FitReservations(std::move(out), gpus);
}

Result<PolicyResult> Simulate(const Trace& trace, const SimConfig& config, Policy policy) {
  if (trace.jobs.empty()) return InvalidArgument("trace", "has no jobs");
  if (config.default_prices.lo < config.reserve_price ||
      config.default_prices.hi < config.default_prices.lo) {
    return InvalidArgument("price-range", "must be LO:HI with reserve price <= LO <= HI");
  }
  for (const auto& [t, r] : config.tenant_prices) {
    if (r.lo < config.reserve_price || r.hi < r.lo) {
      return InvalidArgument("tenant-price", t + ": must be LO:HI with reserve price <= LO <= HI");
    }
  }
  int64_t t0 = config.ticker ? config.ticker->Nanos() : 0;
  Result<PolicyResult> r = policy == Policy::kFifoBackfill ? RunFifoBackfill(trace, config)
                                                           : RunScheduler(trace, config, policy);
  if (r.ok() && config.ticker) r->wall_ns = config.ticker->Nanos() - t0;
  return r;
}

}  // namespace rsv::sim
