// sim: replays a workload trace in virtual time through the scheduler the server runs (market,
// static and quota-borrow are the same Scheduler with different tiers, prices and lending), or
// through an EASY-backfill queue (fifo-backfill), and measures what each policy delivers.
// Never reads a clock for decisions: time is the trace's; an optional Ticker only measures the
// run's own wall time. Depends on scheduler/, placement/, core/, common/.
#pragma once

#include <functional>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "common/clock.h"
#include "sim/trace.h"

namespace rsv::sim {

enum class Policy { kMarket, kStatic, kFifoBackfill, kQuotaBorrow };
std::string_view PolicyName(Policy p);
Result<Policy> ParsePolicy(std::string_view s);
inline const Policy kAllPolicies[] = {Policy::kStatic, Policy::kFifoBackfill, Policy::kQuotaBorrow,
                                      Policy::kMarket};

struct PriceRange {
  Money lo;
  Money hi;
};

struct SimConfig {
  uint64_t seed = 1;
  std::vector<TraceNode> nodes;  // the cluster; topology assigned in order (see docs)
  int32_t nodes_per_rack = 16;
  int32_t racks_per_zone = 8;
  std::map<std::string, int32_t> reservations;  // tenant → reserved GPUs (fits the cluster)
  PriceRange default_prices{Money::Units(1), Money::Units(5)};
  std::map<std::string, PriceRange> tenant_prices;
  Money reserve_price = Money::Units(1);
  Money min_increment = Money::Micros(250'000);
  Duration notice = Duration::Minutes(2);  // jobs' notice and the pool's maximum
  Duration checkpoint_interval = Duration::Minutes(30);
  Duration restart_cost = Duration::Minutes(2);
  // From placement to the job running (image, process start): the start is confirmed then, as
  // an agent confirms it. Zero: starts are not two-phase.
  Duration start_latency = Duration::Seconds(30);
  // A job under notice writes a checkpoint in this long and leaves, its progress up to the
  // notice saved; when the notice is shorter it is stopped at the deadline instead, keeping
  // only its last periodic checkpoint.
  Duration checkpoint_time = Duration::Seconds(60);
  // Elastic jobs (market only; docs/simulator.md, "Elastic jobs"): this share of multi-GPU
  // jobs asks for half to twice its trace size; throughput at n GPUs is n / (1 + s·(n − 1))
  // with s = elastic_serial, relative to the trace's size.
  double elastic_fraction = 0;
  double elastic_serial = 0.05;
  int32_t backfill_depth = 1000;   // fifo-backfill: queued jobs examined per pass
  const Ticker* ticker = nullptr;  // measures wall time and drives progress; never decisions
  // Called now and then with (jobs finished, jobs total, simulated time, events so far).
  std::function<void(int64_t, int64_t, Timestamp, int64_t)> progress;
};

struct Stat {
  double mean = 0;
  double p50 = 0;
  double p99 = 0;
  int64_t count = 0;
};

struct PolicyResult {
  Policy policy = Policy::kMarket;
  int64_t jobs = 0;
  int64_t finished = 0;
  int64_t unfinished = 0;  // never completed (could not fit under this policy)
  int32_t cluster_gpus = 0;
  double allocation_ratio = 0;  // time-weighted allocated/available over the steady window
  Timestamp window_start;
  Timestamp window_end;
  // The whole run, from the first submission to the last completion (or the end of the
  // replay when some job never finished): its length and allocation.
  Timestamp run_start;
  Timestamp run_end;
  double makespan_s = 0;
  double allocation_ratio_run = 0;
  Stat jct_s;               // completion − submission, seconds
  Stat queue_guaranteed_s;  // first start − submission, jobs that fit their tenant's reservation
  Stat queue_spot_s;        // the same for all other jobs
  // The owner's wait (invariant 7): from the moment a reserved-tier attempt fits its
  // reservation's free room to its start, over every such start; must stay within the notice.
  Stat owner_wait_s;
  double owner_wait_max_s = 0;
  int64_t owner_waits_over_notice = 0;
  int64_t preemptions = 0;
  int64_t elastic_jobs = 0;  // jobs submitted elastic
  int64_t grows = 0;         // units started
  int64_t shrinks = 0;       // units stopped while their job ran on (preemptions avoided)
  double lost_gpu_hours = 0;
  double work_gpu_hours = 0;  // sum of duration × GPUs of finished jobs
  double used_gpu_hours = 0;  // GPU time held by all attempts
  Money spot_spend;
  Money owner_credits;
  Money operator_revenue;  // spot revenue kept by the operator
  Money ledger_sum;
  int64_t invariant_violations = 0;
  std::string first_violation;
  int64_t events = 0;   // decisions and simulation events processed
  int64_t wall_ns = 0;  // not part of result.json (not deterministic)
  std::vector<std::pair<int64_t, double>> utilization;  // (seconds, allocated fraction), ≤ 400
  std::vector<std::pair<int64_t, Money>> price;         // (seconds, price), changes only
  std::vector<double> jct_sorted_s;                     // for the CDF
};

// Cluster of `nodes` nodes of `gpus_per_node`.
std::vector<TraceNode> UniformCluster(int32_t nodes, int32_t gpus_per_node);

// The "defensive" reservation of each tenant: the p95 (time-weighted) of its own concurrent GPU
// demand if every job ran on arrival, scaled down proportionally if the total exceeds `gpus`.
std::map<std::string, int32_t> DefensiveReservations(const Trace& trace, int32_t gpus);
// Scales reservations down proportionally (floors) so they sum to at most `gpus`.
std::map<std::string, int32_t> FitReservations(std::map<std::string, int32_t> r, int32_t gpus);

Result<PolicyResult> Simulate(const Trace& trace, const SimConfig& config, Policy policy);

}  // namespace rsv::sim
