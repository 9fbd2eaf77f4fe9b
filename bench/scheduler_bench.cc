// Scheduling-cycle benchmarks. Figures are quoted in README.md; run with scripts/bench.
//   FullCycle/cold/N/E:   N pending bids cleared onto an empty fleet of N GPUs (8 per node).
//   FullCycle/steady/N/E: a full fleet of N GPUs and N more pending bids re-cleared (a tick).
//   E: percent of the multi-GPU bids that are elastic (min = their size, max = 4x, 3 units).
//   FullCycle/.../N/E/S: S percent of all bids are shares of one GPU (0.1 to 0.9 GPU).
//   IncrementalSubmit:  one new bid decided against a 100,000-GPU fleet; p50/p99 in counters.
#include <benchmark/benchmark.h>

#include <algorithm>
#include <map>
#include <memory>

#include "common/clock.h"
#include "common/rng.h"
#include "scheduler/scheduler.h"

namespace rsv {
namespace {

Timestamp T(int64_t s) { return Timestamp::FromMicros(s * 1'000'000); }

struct Fleet {
  std::unique_ptr<SteadyTicker> ticker = std::make_unique<SteadyTicker>();  // stage timings
  std::unique_ptr<Scheduler> s;
  PoolId pool;
  std::vector<TenantId> tenants;
};

// nodes in racks of 32, racks in zones of 16; 8 GPUs per node.
Fleet MakeFleet(int32_t gpus) {
  Fleet f;
  f.s = std::make_unique<Scheduler>(SchedulerOptions{
      .checks = InvariantChecks::kOff, .keep_ledger_entries = false, .ticker = f.ticker.get()});
  PoolConfig c;
  c.name = "h100";
  c.reserve_price = Money::Units(1);
  c.min_increment = Money::Micros(500'000);
  f.pool = *f.s->AddPool(c);
  for (int32_t n = 0; n < gpus / 8; ++n) {
    (void)f.s->AddNode("n" + std::to_string(n), f.pool, 8,
                       "z" + std::to_string(n / 512) + "/r" + std::to_string(n / 32));
  }
  for (int t = 0; t < 50; ++t) f.tenants.push_back(*f.s->AddTenant("t" + std::to_string(t)));
  return f;
}

JobSpec RandomBid(const Fleet& f, Rng& rng, int64_t min_limit_tenths, int64_t elastic_pct = 0,
                  int64_t share_pct = 0) {
  JobSpec j;
  j.tenant = f.tenants[rng.Uniform(f.tenants.size())];
  j.pool = f.pool;
  uint64_t r = rng.Uniform(100);
  j.gpus = r < 50 ? 1 : r < 70 ? 2 : r < 85 ? 4 : r < 99 ? 8 : 16;
  j.tier = Tier::kSpot;
  j.limit_price =
      Money::Micros((min_limit_tenths + static_cast<int64_t>(rng.Uniform(90))) * 100'000);
  if (elastic_pct > 0 && j.gpus >= 2 && static_cast<int64_t>(rng.Uniform(100)) < elastic_pct) {
    j.max_gpus = 4 * j.gpus;
    j.gpu_step = j.gpus;
  }
  if (share_pct > 0 && static_cast<int64_t>(rng.Uniform(100)) < share_pct) {
    static const int32_t kShares[] = {100, 250, 250, 300, 500, 500, 700, 900};
    j.gpus = 1;
    j.max_gpus = j.gpu_step = 0;
    j.gpu_milli = kShares[rng.Uniform(8)];
  }
  return j;
}

void BM_FullCycleCold(benchmark::State& state) {
  const int32_t gpus = static_cast<int32_t>(state.range(0));
  Fleet f = MakeFleet(gpus);
  Rng rng(1);
  for (int32_t i = 0; i < gpus; ++i) {
    (void)f.s->Submit(RandomBid(f, rng, 10, state.range(1), state.range(2)), T(0));
  }
  int64_t started = 0;
  for (auto _ : state) {
    state.PauseTiming();
    Scheduler copy = *f.s;
    state.ResumeTiming();
    CycleReport r = copy.RunCycle(T(1));
    benchmark::DoNotOptimize(r);
    state.PauseTiming();
    started = r.events;
    { Scheduler gone = std::move(copy); }
    state.ResumeTiming();
  }
  state.counters["pending_bids"] = gpus;
  state.counters["events"] = static_cast<double>(started);
}

void BM_FullCycleSteady(benchmark::State& state) {
  const int32_t gpus = static_cast<int32_t>(state.range(0));
  Fleet f = MakeFleet(gpus);
  Rng rng(2);
  // Fill the fleet with high bids, then add as many low bids that cannot get in.
  for (int32_t i = 0; i < gpus; ++i) {
    (void)f.s->Submit(RandomBid(f, rng, 50, state.range(1), state.range(2)), T(0));
  }
  f.s->RunCycle(T(0));
  for (int32_t i = 0; i < gpus; ++i) {
    (void)f.s->Submit(RandomBid(f, rng, 10, state.range(1), state.range(2)), T(0));
  }
  // Let the market settle (outbid jobs get notice, leave, and the winners start).
  int64_t t = 0;
  int32_t rounds = 0;
  for (; rounds < 200; ++rounds) {
    t += 60;
    if (f.s->RunCycle(T(t)).events == 0) break;
  }
  int32_t running = 0, units = 0, shares = 0;
  for (const Job& j : f.s->state().jobs()) {
    running += j.state == JobState::kRunning;
    units += j.unit_of.valid() && j.state == JobState::kRunning;
    shares += j.spec.share() && j.state == JobState::kRunning;
  }
  // range(3): running jobs that report a checkpoint before each cycle (each changes a holder's
  // bid, which the clearing patches in), taken in turn.
  std::vector<JobId> holding;
  for (const Job& j : f.s->state().jobs()) {
    if (j.state == JobState::kRunning) holding.push_back(j.id);
  }
  size_t next_checkpoint = 0;
  int64_t events = 0, cycles = 0;
  std::map<std::string, int64_t> stage_nanos;  // where a cycle's time goes
  for (auto _ : state) {
    for (int64_t k = 0; k < state.range(3) && !holding.empty(); ++k) {
      (void)f.s->Checkpointed(holding[next_checkpoint++ % holding.size()], T(t));
    }
    CycleReport r = f.s->RunCycle(T(t++));
    benchmark::DoNotOptimize(r);
    events += r.events;
    ++cycles;
    for (const StageTiming& st : r.stages) stage_nanos[st.name] += st.nanos;
  }
  for (const auto& [name, nanos] : stage_nanos) {
    if (nanos >= cycles * 100'000) {  // stages of 0.1 ms or more
      state.counters[name + "_ms"] =
          static_cast<double>(nanos) / 1e6 / std::max<int64_t>(1, cycles);
    }
  }
  state.counters["settle_rounds"] = rounds;
  state.counters["events_per_cycle"] = static_cast<double>(events) / std::max<int64_t>(1, cycles);
  state.counters["running_jobs"] = running;
  state.counters["running_units"] = units;
  state.counters["running_shares"] = shares;
  state.counters["pending_bids"] = static_cast<double>(f.s->state().jobs().size() - running);
}

// range(0): percent of the fleet busy before the submissions start. At 50% new bids land on free
// GPUs; at 100% they join the book and move the price. Bids never outbid the running jobs here
// (those decisions take a full cycle, measured by FullCycleSteady).
void BM_IncrementalSubmit(benchmark::State& state) {
  const int32_t gpus = 100'000;
  Fleet f = MakeFleet(gpus);
  Rng rng(3);
  int32_t placed = 0;
  while (placed < gpus * state.range(0) / 100) {
    JobSpec j = RandomBid(f, rng, 50);
    placed += j.gpus;
    (void)f.s->Submit(j, T(0));
  }
  if (state.range(0) >= 100) {
    for (int32_t i = 0; i < gpus; ++i) (void)f.s->Submit(RandomBid(f, rng, 10), T(0));
  }
  f.s->RunCycle(T(0));
  SteadyTicker ticker;
  std::vector<int64_t> lat;
  int64_t fast = 0;
  for (auto _ : state) {
    JobSpec j = RandomBid(f, rng, 10);
    j.gpus = std::min(j.gpus, 2);
    j.limit_price = Money::Micros(std::min<int64_t>(j.limit_price.micros(), 5'000'000));
    CycleReport r;
    int64_t t0 = ticker.Nanos();
    benchmark::DoNotOptimize(f.s->SubmitAndDecide(j, T(0), &r));
    lat.push_back(ticker.Nanos() - t0);
    fast += r.incremental;
  }
  std::sort(lat.begin(), lat.end());
  state.counters["p50_us"] = lat[lat.size() / 2] / 1000.0;
  state.counters["p99_us"] = lat[lat.size() * 99 / 100] / 1000.0;
  state.counters["incremental_share"] = static_cast<double>(fast) / lat.size();
}

BENCHMARK(BM_FullCycleCold)
    ->Args({1000, 0, 0})
    ->Args({10000, 0, 0})
    ->Args({100000, 0, 0})
    ->Args({100000, 30, 0})
    ->Args({100000, 0, 50})
    ->Unit(benchmark::kMillisecond)
    ->Iterations(5);
BENCHMARK(BM_FullCycleSteady)
    ->Args({1000, 0, 0, 0})
    ->Args({10000, 0, 0, 0})
    ->Args({100000, 0, 0, 0})
    ->Args({100000, 30, 0, 0})
    ->Args({100000, 0, 50, 0})
    ->Args({100000, 0, 0, 100})
    ->Args({100000, 0, 50, 100})
    ->Unit(benchmark::kMillisecond)
    ->MinTime(2);
BENCHMARK(BM_IncrementalSubmit)
    ->Arg(50)
    ->Arg(100)
    ->Unit(benchmark::kMicrosecond)
    ->Iterations(20000);

}  // namespace
}  // namespace rsv

BENCHMARK_MAIN();
