#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <map>

#include "common/rng.h"
#include "sim/packing.h"
#include "sim/report.h"
#include "sim/simulator.h"

namespace rsv::sim {
namespace {

TraceJob Job(int64_t submit_s, int64_t duration_s, int32_t gpus, const std::string& tenant) {
  TraceJob j;
  j.line = submit_s;
  j.submit = Timestamp::FromMicros(submit_s * 1'000'000);
  j.duration = Duration::Seconds(duration_s);
  j.gpus = gpus;
  j.tenant = tenant;
  return j;
}

// One 8-GPU node; A and B reserve 4 GPUs each.
//   j0: t=0,  A, 4 GPUs, 100 s     j1: t=0, A, 4 GPUs, 100 s     j2: t=10, B, 4 GPUs, 50 s
SimConfig TinyConfig() {
  SimConfig c;
  c.nodes = UniformCluster(1, 8);
  c.reservations = {{"A", 4}, {"B", 4}};
  c.notice = Duration::Seconds(20);
  c.checkpoint_interval = Duration::Seconds(25);
  c.restart_cost = Duration::Seconds(5);
  // The lifecycle's own costs are off here (see Tiny.LifecycleCosts): starts are immediate and
  // a job under notice is stopped at its deadline.
  c.start_latency = Duration();
  c.checkpoint_time = Duration::Hours(1);
  return c;
}
Trace TinyTrace() {
  Trace t;
  t.jobs = {Job(0, 100, 4, "A"), Job(0, 100, 4, "A"), Job(10, 50, 4, "B")};
  return t;
}

// Elastic jobs (docs/simulator.md, "Elastic jobs"), with a linear speedup so the arithmetic is
// exact. X (4 GPUs, 100 s at that size) is elastic 2..8 in steps of 2: it starts at 8 GPUs,
// twice as fast. At 10 s Y's 1-GPU job (limit 5) outbids X's last unit (limit 2): X shrinks in
// place after its 10 s checkpoint (20 s) to 6 GPUs, Y starts then, and the cooldown keeps X
// from growing back when Y ends. X: 40 s of work by 20 s, 60 s left at 1.5x → ends at 60.
TEST(Tiny, ElasticJobsGrowAndShrinkInPlace) {
  SimConfig c = TinyConfig();
  c.reservations.clear();
  c.checkpoint_time = Duration::Seconds(10);
  c.elastic_fraction = 1;
  c.elastic_serial = 0;
  c.tenant_prices = {{"X", {Money::Units(2), Money::Units(2)}},
                     {"Y", {Money::Units(5), Money::Units(5)}}};
  Trace t;
  t.jobs = {Job(0, 100, 4, "X"), Job(10, 30, 1, "Y")};
  auto r = Simulate(t, c, Policy::kMarket);
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ(r->elastic_jobs, 1);
  EXPECT_EQ(r->grows, 3);
  EXPECT_EQ(r->shrinks, 1);
  EXPECT_EQ(r->preemptions, 0);  // the shrink stopped no job
  EXPECT_EQ(r->finished, 2);
  EXPECT_EQ(r->jct_sorted_s, (std::vector<double>{40, 60}));
  EXPECT_EQ(r->invariant_violations, 0) << r->first_violation;
  // Rigid, X holds its 4 GPUs for 100 s and Y runs at once.
  c.elastic_fraction = 0;
  auto rigid = Simulate(t, c, Policy::kMarket);
  ASSERT_TRUE(rigid.ok());
  EXPECT_EQ(rigid->jct_sorted_s, (std::vector<double>{30, 100}));
  // The baselines never run elastic jobs.
  c.elastic_fraction = 1;
  auto fixed = Simulate(t, c, Policy::kStatic);
  ASSERT_TRUE(fixed.ok());
  EXPECT_EQ(fixed->elastic_jobs, 0);
}

TEST(Tiny, Static) {
  // j0 on A's 4 GPUs 0-100; j1 waits for A's reservation: 100-200; j2 on B's: 10-60.
  // JCT: 100, 200, 50 → mean 116.667. Nothing is lent: no preemption, no money.
  auto r = Simulate(TinyTrace(), TinyConfig(), Policy::kStatic);
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_NEAR(r->jct_s.mean, 350.0 / 3, 1e-6);
  EXPECT_EQ(r->jct_s.p99, 200);
  EXPECT_EQ(r->preemptions, 0);
  EXPECT_EQ(r->finished, 3);
}

TEST(Tiny, FifoBackfill) {
  // One queue, no quotas: j0 and j1 both start at 0 (8 GPUs); j2 waits until 100, ends 150.
  // JCT: 100, 100, 140 → mean 113.333.
  auto r = Simulate(TinyTrace(), TinyConfig(), Policy::kFifoBackfill);
  ASSERT_TRUE(r.ok());
  EXPECT_NEAR(r->jct_s.mean, 340.0 / 3, 1e-6);
  EXPECT_EQ(r->queue_spot_s.count + r->queue_guaranteed_s.count, 3);
}

void ExpectBorrowThenReclaim(const PolicyResult& r) {
  // j0 runs on A's quota 0-100. j1 borrows B's idle quota at 0. At 10 B's j2 needs its quota:
  // j1 gets 20 s notice and stops at 30, having run 30 s: one 25 s checkpoint kept, 5 s lost.
  // j2 runs 30-80 (owner wait 20 s). j1 resumes at 80: 5 s restart + 75 s left → ends 160.
  // JCT: 100, 160, 70 → mean 110. Lost GPU time: (5 s unsaved + 5 s restart) x 4 GPUs = 40 GPU-s.
  EXPECT_NEAR(r.jct_s.mean, 110.0, 1e-6);
  EXPECT_EQ(r.preemptions, 1);
  EXPECT_NEAR(r.owner_wait_max_s, 20.0, 1e-9);
  EXPECT_NEAR(r.lost_gpu_hours * 3600, 40.0, 1e-6);
  EXPECT_EQ(r.invariant_violations, 0) << r.first_violation;
}

TEST(Tiny, QuotaBorrow) {
  auto r = Simulate(TinyTrace(), TinyConfig(), Policy::kQuotaBorrow);
  ASSERT_TRUE(r.ok());
  ExpectBorrowThenReclaim(*r);
  EXPECT_EQ(r->spot_spend, Money());  // no prices: nothing is charged
}

TEST(Tiny, Market) {
  auto r = Simulate(TinyTrace(), TinyConfig(), Policy::kMarket);
  ASSERT_TRUE(r.ok());
  ExpectBorrowThenReclaim(*r);
  // j1 held 4 GPUs as spot for 30 s and 80 s at the reserve price 1/GPU-hour (nothing was left
  // out, so the price stayed at the reserve): 4 x 110 / 3600 = 0.122222 (rounded down per step).
  EXPECT_NEAR(r->spot_spend.micros() / 1e6, 4 * 110 / 3600.0, 2e-6);
  // All of it ran on B's lent GPUs: B gets 90%, the operator 10% (each accrual step rounds the
  // owners' share down to a micro-unit, in the operator's favour; there are a handful of steps).
  EXPECT_NEAR(r->owner_credits.micros() / 1e6, 0.9 * 4 * 110 / 3600.0, 6e-6);
  EXPECT_LE(r->owner_credits.micros(), 110'000);
  EXPECT_EQ(r->ledger_sum, Money());
}

// The server's lifecycle: every start takes 2 s to be confirmed (no progress meanwhile), and a
// job under notice writes its checkpoint in 4 s and leaves, its progress up to the notice saved.
TEST(Tiny, LifecycleCosts) {
  SimConfig c = TinyConfig();
  c.start_latency = Duration::Seconds(2);
  c.checkpoint_time = Duration::Seconds(4);
  for (Policy p : {Policy::kMarket, Policy::kQuotaBorrow}) {
    auto r = Simulate(TinyTrace(), c, p);
    ASSERT_TRUE(r.ok());
    // j0 on A's quota: 0-102. j1 borrows B's quota at 0, up at 2; notice at 10 when B's j2
    // comes, checkpoints and leaves at 14 with 8 s saved. j2 runs 14-66 (owner wait 4 s). j1
    // borrows again at 66: 2 s up + 5 s restart + 92 s left → ends 165.
    // JCT: 102, 165, 56. Lost GPU-s: j1's first attempt 14 - 8 = 6, its restart 7, the start
    // latency of j0 and j2, 2 each: (6 + 7 + 2 + 2) x 4 GPUs = 68.
    EXPECT_NEAR(r->jct_s.mean, (102.0 + 165 + 56) / 3, 1e-6) << PolicyName(p);
    EXPECT_EQ(r->preemptions, 1);
    EXPECT_NEAR(r->owner_wait_max_s, 4.0, 1e-9);
    EXPECT_NEAR(r->lost_gpu_hours * 3600, 68.0, 1e-6) << PolicyName(p);
    EXPECT_NEAR(r->used_gpu_hours, r->work_gpu_hours + r->lost_gpu_hours, 1e-9);
    EXPECT_EQ(r->invariant_violations, 0) << r->first_violation;
  }
}

TEST(Tiny, MarketPreemptsByPriceQuotaBorrowDoesNot) {
  // No reservations. C (limit 1) takes the node at 0 for 100 s; D (limit 5) arrives at 10.
  //   market: D outbids C by more than the increment: C gets 20 s notice, stops at 30 (25 s
  //   saved), D runs 30-80, C resumes 80-160. JCT C 160, D 70.
  //   quota-borrow: one price for all: D waits for C: C 0-100, D 100-150. JCT C 100, D 140.
  Trace t;
  t.jobs = {Job(0, 100, 8, "C"), Job(10, 50, 8, "D")};
  SimConfig c = TinyConfig();
  c.reservations.clear();
  c.tenant_prices = {{"C", {Money::Units(1), Money::Units(1)}},
                     {"D", {Money::Units(5), Money::Units(5)}}};
  auto m = Simulate(t, c, Policy::kMarket);
  ASSERT_TRUE(m.ok());
  EXPECT_NEAR(m->jct_s.mean, (160 + 70) / 2.0, 1e-6);
  EXPECT_EQ(m->preemptions, 1);
  auto q = Simulate(t, c, Policy::kQuotaBorrow);
  ASSERT_TRUE(q.ok());
  EXPECT_NEAR(q->jct_s.mean, (100 + 140) / 2.0, 1e-6);
  EXPECT_EQ(q->preemptions, 0);
}

Trace RandomTrace(uint64_t seed, int n) {
  Rng rng(seed);
  Trace t;
  int64_t at = 0;
  for (int i = 0; i < n; ++i) {
    at += rng.Range(0, 120);
    int32_t g = rng.Chance(1, 10) ? 16 : static_cast<int32_t>(1 << rng.Range(0, 3));
    t.jobs.push_back(Job(at, rng.Range(30, 4000), g, "t" + std::to_string(rng.Range(0, 4))));
  }
  return t;
}

SimConfig RandomConfig(const Trace& t) {
  SimConfig c;
  c.nodes = UniformCluster(6, 8);
  c.reservations = DefensiveReservations(t, 48);
  c.notice = Duration::Seconds(30);
  c.checkpoint_interval = Duration::Seconds(300);
  c.restart_cost = Duration::Seconds(20);
  return c;
}

TEST(Simulate, ConservesGpuTimeAndMoneyUnderEveryPolicy) {
  for (uint64_t seed = 1; seed <= 5; ++seed) {
    Trace t = RandomTrace(seed, 400);
    SimConfig c = RandomConfig(t);
    for (Policy p : kAllPolicies) {
      auto r = Simulate(t, c, p);
      ASSERT_TRUE(r.ok()) << r.status().ToString();
      EXPECT_EQ(r->invariant_violations, 0) << PolicyName(p) << ": " << r->first_violation;
      EXPECT_EQ(r->ledger_sum, Money()) << PolicyName(p);
      // GPU time held = the work done + the work lost (unsaved progress and restarts).
      EXPECT_NEAR(r->used_gpu_hours, r->work_gpu_hours + r->lost_gpu_hours, 1e-6)
          << PolicyName(p) << " seed " << seed;
      EXPECT_EQ(r->finished + r->unfinished, 400);
      EXPECT_GT(r->allocation_ratio, 0.0);
      EXPECT_LE(r->allocation_ratio, 1.0 + 1e-9);
      // Every spot job pays at most its limit; the ledger's spend is the spot spend.
      EXPECT_GE(r->spot_spend, r->owner_credits);
    }
  }
}

// A batch submitted at once has no steady state: the metrics cover the whole run, from the
// first submission to the last completion, and the utilization series spans it.
TEST(Simulate, ABatchSubmittedAtOnceIsMeasuredOverTheWholeRun) {
  // 8 GPUs; eight 4-GPU jobs of 100 s and a 1-GPU job of 50 s, all at t=0.
  Trace t;
  for (int i = 0; i < 8; ++i) t.jobs.push_back(Job(0, 100, 4, "A"));
  t.jobs.push_back(Job(0, 50, 1, "A"));
  SimConfig c;
  c.nodes = UniformCluster(1, 8);
  for (Policy p : {Policy::kFifoBackfill, Policy::kMarket}) {
    auto r = Simulate(t, c, p);
    ASSERT_TRUE(r.ok()) << r.status().ToString();
    ASSERT_EQ(r->finished, 9) << PolicyName(p);
    EXPECT_EQ(r->run_start, Timestamp());
    EXPECT_GE(r->makespan_s, 400) << PolicyName(p);
    EXPECT_EQ(r->run_end, Timestamp::FromMicros(static_cast<int64_t>(r->makespan_s) * 1'000'000));
    // The steady window is the whole run, not [0 s, 1 s].
    EXPECT_EQ(r->window_start, r->run_start);
    EXPECT_EQ(r->window_end, r->run_end);
    // GPU time held by every attempt, over the cluster's GPU time in the run.
    EXPECT_GE(r->used_gpu_hours * 3600, 8 * 4 * 100 + 50);
    EXPECT_NEAR(r->allocation_ratio_run, r->used_gpu_hours * 3600 / (8 * r->makespan_s), 1e-9)
        << PolicyName(p);
    EXPECT_LT(r->allocation_ratio_run, 1.0);
    // The series reaches the end of the run, and its last points show the cluster draining.
    ASSERT_FALSE(r->utilization.empty());
    EXPECT_GT(r->utilization.back().first, 0.9 * r->makespan_s);
    EXPECT_LT(r->utilization.back().second, 1.0);
  }
}

TEST(Simulate, SameInputsSameBytesOtherSeedOtherPrices) {
  Trace t = RandomTrace(9, 600);
  SimConfig c = RandomConfig(t);
  c.nodes = UniformCluster(3, 8);
  c.reservations = DefensiveReservations(t, 24);
  auto run = [&](uint64_t seed) {
    c.seed = seed;
    RunInfo info;
    info.trace_path = "random";
    info.format = "csv";
    info.config = &c;
    info.seed = seed;
    for (Policy p : kAllPolicies) info.results.push_back(*Simulate(t, c, p));
    return ResultJson(info);
  };
  std::string a = run(1), b = run(1), other = run(2);
  EXPECT_EQ(a, b);
  EXPECT_NE(a, other);  // limit prices are drawn from the seed
  EXPECT_NE(a.find("\"policy\": \"market\""), std::string::npos);
}

TEST(Simulate, RejectsBadConfigNamingTheField) {
  SimConfig c = TinyConfig();
  c.default_prices = {Money::Units(5), Money::Units(2)};
  auto r = Simulate(TinyTrace(), c, Policy::kMarket);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().field(), "price-range");
}

TEST(Reservations, DefensiveIsP95OfOwnDemandScaledToFit) {
  // Tenant A: 4 GPUs for 95 s, then 8 GPUs for 5 s → p95 (time-weighted) = 4.
  Trace t;
  t.jobs = {Job(0, 100, 4, "A"), Job(95, 5, 4, "A"), Job(0, 10, 2, "B")};
  auto r = DefensiveReservations(t, 100);
  EXPECT_EQ(r["A"], 4);
  EXPECT_EQ(r["B"], 2);
  auto fit = FitReservations({{"A", 60}, {"B", 40}}, 50);
  EXPECT_EQ(fit["A"], 30);
  EXPECT_EQ(fit["B"], 20);
}

std::string WriteTemp(const std::string& name, const std::string& text) {
  std::string path = (std::filesystem::temp_directory_path() / name).string();
  std::ofstream(path) << text;
  return path;
}

TEST(Trace, PhillyRowsSortedAndRebased) {
  std::string p = WriteTemp("philly_ok.csv",
                            "timestamp,duration,num_gpus,gpu_time,cluster\n"
                            "2017-10-09 07:01:55,66.0,1,66.0,vc1\n"
                            "2017-10-09 06:13:03,2951.5,2,5903.0,vc2\n");
  auto t = ReadTrace(p, TraceFormat::kPhilly, {});
  ASSERT_TRUE(t.ok()) << t.status().ToString();
  ASSERT_EQ(t->jobs.size(), 2u);
  EXPECT_EQ(t->jobs[0].tenant, "vc2");
  EXPECT_EQ(t->jobs[0].submit.micros(), 0);
  EXPECT_EQ(t->jobs[1].submit.micros(), (48 * 60 + 52) * 1'000'000LL);
  EXPECT_EQ(t->jobs[0].duration.micros(), 2'951'500'000);
}

TEST(Trace, BadRowsNameFileLineAndFieldOrAreSkippedAndCounted) {
  std::string p = WriteTemp("philly_bad.csv",
                            "timestamp,duration,num_gpus,gpu_time,cluster\n"
                            "2017-10-09 07:01:55,66.0,1,66.0,vc1\n"
                            "2017-10-09 07:01:55,abc,1,66.0,vc1\n"
                            "2017-13-09 07:01:55,66.0,1,66.0,vc1\n"
                            "2017-10-09 07:01:55,66.0,0,66.0,vc1\n");
  auto t = ReadTrace(p, TraceFormat::kPhilly, {});
  ASSERT_FALSE(t.ok());
  EXPECT_NE(t.status().field().find("philly_bad.csv:3: duration"), std::string::npos)
      << t.status().ToString();
  ReadOptions skip;
  skip.skip_bad_rows = true;
  t = ReadTrace(p, TraceFormat::kPhilly, skip);
  ASSERT_TRUE(t.ok());
  EXPECT_EQ(t->jobs.size(), 1u);
  EXPECT_EQ(t->skipped, 3);
}

TEST(Trace, GenericCsvRequiredAndOptionalColumns) {
  std::string p =
      WriteTemp("generic.csv",
                "submit_time,duration,gpus,tenant,limit_price,tier,checkpoint_interval\n"
                "10,1h,2,a,3.5,spot,600\n"
                "0,90,1,b,,,\n");
  auto t = ReadTrace(p, TraceFormat::kCsv, {});
  ASSERT_TRUE(t.ok()) << t.status().ToString();
  EXPECT_EQ(t->jobs[0].tenant, "b");
  EXPECT_EQ(t->jobs[1].duration, Duration::Hours(1));
  EXPECT_EQ(*t->jobs[1].limit_price, Money::Micros(3'500'000));
  EXPECT_EQ(*t->jobs[1].tier, Tier::kSpot);
  EXPECT_EQ(*t->jobs[1].checkpoint_interval, Duration::Seconds(600));
  std::string missing = WriteTemp("generic_missing.csv", "submit_time,duration,tenant\n1,2,a\n");
  auto m = ReadTrace(missing, TraceFormat::kCsv, {});
  ASSERT_FALSE(m.ok());
  EXPECT_NE(m.status().field().find("gpus"), std::string::npos) << m.status().ToString();
  std::string bad_tier =
      WriteTemp("generic_tier.csv", "submit_time,duration,gpus,tenant,tier\n1,2,1,a,gold\n");
  auto b = ReadTrace(bad_tier, TraceFormat::kCsv, {});
  ASSERT_FALSE(b.ok());
  EXPECT_NE(b.status().field().find(":2: tier"), std::string::npos) << b.status().ToString();
}

TEST(Trace, ClusterFileWithTopologyAndErrors) {
  std::string p = WriteTemp("cluster.csv", "name,gpus,topology\nn1,8,z1/r1\nn2,4,\n");
  auto c = ReadClusterFile(p);
  ASSERT_TRUE(c.ok()) << c.status().ToString();
  ASSERT_EQ(c->size(), 2u);
  EXPECT_EQ((*c)[0].topology, "z1/r1");
  EXPECT_EQ((*c)[1].gpus, 4);
  std::string bad = WriteTemp("cluster_bad.csv", "name,gpus\nn1,0\n");
  auto b = ReadClusterFile(bad);
  ASSERT_FALSE(b.ok());
  EXPECT_NE(b.status().field().find("cluster_bad.csv:2: gpus"), std::string::npos)
      << b.status().ToString();
}

TEST(Packing, BestFitPacksSharesOntoTheFullestGpu) {
  // One node, 2 GPUs. Pods: 0.6, 0.4, 0.5 GPU (in seeded order; all arrive before 130%).
  // Best fit: the 0.4 share goes onto the GPU already holding 0.6 if it arrives after it, so
  // every pod fits: 1.5 of 2 GPUs allocated = 75% at the end.
  std::vector<TraceNode> nodes(1);
  nodes[0].gpus = 2;
  nodes[0].cpu_milli = 10000;
  nodes[0].memory_mib = 1000;
  Trace pods;
  for (int32_t milli : {600, 400, 500}) {
    TraceJob j;
    j.gpus = 1;
    j.gpu_milli = milli;
    pods.jobs.push_back(j);
  }
  auto r = RunPacking(nodes, pods, 1, 75);
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->pods_failed, 0);
  EXPECT_NEAR(r->allocation.back(), 75.0, 1e-9);
  EXPECT_EQ(r->allocation.size(), 76u);
}

TEST(Packing, OpenbDefaultLookaheadBeatsFgdAndBestFit) {
  const std::string dir = "../shared/traces/alibaba-gpu-v2023-openb/";
  if (!std::filesystem::exists(dir + "openb_pod_list_default.csv")) {
    GTEST_SKIP() << "shared traces not present at " << dir;
  }
  auto nodes = ReadOpenbNodes(dir + "openb_node_list_all_node.csv");
  ASSERT_TRUE(nodes.ok());
  ReadOptions ro;
  ro.keep_cpu_only = true;
  ro.need_times = false;
  auto pods = ReadTrace(dir + "openb_pod_list_default.csv", TraceFormat::kOpenb, ro);
  ASSERT_TRUE(pods.ok());
  std::map<SharePolicy, PackingResult> by;
  for (SharePolicy rule : {SharePolicy::kBestFit, SharePolicy::kFgd, SharePolicy::kLookahead}) {
    auto r = RunPacking(*nodes, *pods, 42, 130, rule);
    ASSERT_TRUE(r.ok());
    ASSERT_EQ(r->allocation.size(), 131u);
    by[rule] = *r;
  }
  // Published (FGD, ATC'23, mean of 10 seeds at 130%): BestFit 93.08%, FGD 95.39%. Each rule
  // here has its own tie-breaking, so only the order and the band are asserted: best fit in
  // BestFit's band, FGD's measure above it, the look-ahead above FGD's published mean.
  const double best_fit = by[SharePolicy::kBestFit].allocation[130];
  const double fgd = by[SharePolicy::kFgd].allocation[130];
  const double lookahead = by[SharePolicy::kLookahead].allocation[130];
  EXPECT_GT(best_fit, 92.0);
  EXPECT_GT(fgd, best_fit + 0.5);
  EXPECT_GT(lookahead, fgd + 0.5);
  EXPECT_GT(lookahead, 95.39);
}

TEST(Trace, FullPhillyFileParses) {
  const std::string path = "../shared/traces/philly-derived/philly_jobs_pollux.csv";
  if (!std::filesystem::exists(path)) GTEST_SKIP() << "shared traces not present";
  auto t = ReadTrace(path, TraceFormat::kPhilly, {});
  ASSERT_TRUE(t.ok()) << t.status().ToString();
  EXPECT_EQ(t->jobs.size(), 82247u);
  int64_t one_gpu = 0;
  for (const TraceJob& j : t->jobs) one_gpu += j.gpus == 1;
  EXPECT_EQ(one_gpu, 76627);  // SOURCE.md's count
}

}  // namespace
}  // namespace rsv::sim
