#include <CLI/CLI.hpp>
#include <cstdio>
#include <filesystem>
#include <iostream>
#include <memory>

#include "cli/commands.h"
#include "common/clock.h"
#include "sim/packing.h"
#include "sim/report.h"
#include "sim/simulator.h"

namespace rsv::cli {
namespace {

struct SimFlags {
  std::string trace, format, policy = "all", out = "sim-out", node_list, cluster, quotas,
                             reservations;
  std::string price_range = "1:5", notice = "2m", checkpoint = "30m", restart = "2m";
  std::string start_latency = "30s", checkpoint_time = "60s";
  std::string reserve = "1", increment = "0.25", experiment, packing_rule = "lookahead";
  std::vector<std::string> tenant_prices;
  uint64_t seed = 1;
  double elastic = 0, elastic_serial = 0.05;
  int32_t nodes = 0, gpus_per_node = 8, target = 130;
  bool skip_bad = false, quiet = false, find_capacity = false;
};

int Usage(const std::string& msg) {
  std::cerr << "reservoir sim: " << msg << "\n";
  return 2;
}
int Fail(const Status& s) {
  std::cerr << "reservoir sim: " << s.ToString() << "\n";
  return 1;
}

Result<sim::PriceRange> ParseRange(const std::string& field, const std::string& s) {
  size_t colon = s.find(':');
  if (colon == std::string::npos) return InvalidArgument(field, "'" + s + "' is not LO:HI");
  Result<Money> lo = Money::Parse(s.substr(0, colon));
  Result<Money> hi = Money::Parse(s.substr(colon + 1));
  if (!lo.ok() || !hi.ok() || *hi < *lo || *lo < Money()) {
    return InvalidArgument(field, "'" + s + "' is not LO:HI with 0 <= LO <= HI");
  }
  return sim::PriceRange{*lo, *hi};
}

Result<Duration> ParseDur(const std::string& field, const std::string& s) {
  Result<Duration> d = Duration::Parse(s);
  if (!d.ok()) return InvalidArgument(field, d.status().message());
  return d;
}

// A sibling file of the trace's folder in the shared traces layout, if it exists.
std::string Beside(const std::string& trace, const std::string& rel) {
  std::filesystem::path p = std::filesystem::path(trace).parent_path() / rel;
  return std::filesystem::exists(p) ? p.string() : "";
}

int Run(const SimFlags& f) {
  Result<sim::TraceFormat> format = sim::ParseTraceFormat(f.format);
  if (!format.ok()) return Usage(format.status().ToString());
  std::vector<sim::Policy> policies;
  if (f.policy == "all") {
    policies.assign(std::begin(sim::kAllPolicies), std::end(sim::kAllPolicies));
  } else {
    Result<sim::Policy> p = sim::ParsePolicy(f.policy);
    if (!p.ok()) return Usage(p.status().ToString());
    policies.push_back(*p);
  }
  if (f.experiment != "" && f.experiment != "packing") {
    return Usage("--experiment: '" + f.experiment + "' is not packing");
  }
  const std::optional<SharePolicy> rule = ParseSharePolicy(f.packing_rule);
  if (!rule) {
    return Usage("--packing-rule: '" + f.packing_rule + "' is not lookahead, fgd or bestfit");
  }
  sim::SimConfig cfg;
  cfg.seed = f.seed;
  Result<sim::PriceRange> range = ParseRange("price-range", f.price_range);
  if (!range.ok()) return Usage(range.status().ToString());
  cfg.default_prices = *range;
  for (const std::string& tp : f.tenant_prices) {
    size_t eq = tp.find('=');
    if (eq == std::string::npos) return Usage("--tenant-price: '" + tp + "' is not TENANT=LO:HI");
    Result<sim::PriceRange> r = ParseRange("tenant-price", tp.substr(eq + 1));
    if (!r.ok()) return Usage(r.status().ToString());
    cfg.tenant_prices[tp.substr(0, eq)] = *r;
  }
  Result<Duration> notice = ParseDur("notice", f.notice);
  Result<Duration> ckpt = ParseDur("checkpoint-interval", f.checkpoint);
  Result<Duration> restart = ParseDur("restart-cost", f.restart);
  Result<Duration> latency = ParseDur("start-latency", f.start_latency);
  Result<Duration> ckpt_time = ParseDur("checkpoint-time", f.checkpoint_time);
  Result<Money> reserve = Money::Parse(f.reserve);
  Result<Money> inc = Money::Parse(f.increment);
  for (const Status* s : {&notice.status(), &ckpt.status(), &restart.status(), &latency.status(),
                          &ckpt_time.status()}) {
    if (!s->ok()) return Usage(s->ToString());
  }
  if (*latency < Duration()) return Usage("--start-latency: must be 0 or more");
  if (*ckpt_time < Duration()) return Usage("--checkpoint-time: must be 0 or more");
  cfg.start_latency = *latency;
  cfg.checkpoint_time = *ckpt_time;
  if (!(f.elastic >= 0 && f.elastic <= 1))
    return Usage("--elastic: must be a fraction from 0 to 1");
  if (!(f.elastic_serial >= 0 && f.elastic_serial <= 1))
    return Usage("--elastic-serial: must be from 0 to 1");
  cfg.elastic_fraction = f.elastic;
  cfg.elastic_serial = f.elastic_serial;
  if (!reserve.ok() || *reserve < Money()) return Usage("--reserve-price: not an amount >= 0");
  if (!inc.ok() || *inc < Money()) return Usage("--min-increment: not an amount >= 0");
  if (*ckpt <= Duration()) return Usage("--checkpoint-interval: must be positive");
  cfg.notice = *notice;
  cfg.checkpoint_interval = *ckpt;
  cfg.restart_cost = *restart;
  cfg.reserve_price = *reserve;
  cfg.min_increment = *inc;
  if (f.gpus_per_node < 1 || f.gpus_per_node > kMaxGpusPerNode) {
    return Usage("--gpus-per-node: must be 1-64");
  }

  sim::ReadOptions ro;
  ro.skip_bad_rows = f.skip_bad;
  const bool packing = f.experiment == "packing";
  if (packing) {
    ro.keep_cpu_only = true;
    ro.need_times = false;
  }
  Result<sim::Trace> trace = sim::ReadTrace(f.trace, *format, ro);
  if (!trace.ok()) return Fail(trace.status());
  if (trace->skipped > 0) {
    std::cerr << "skipped " << trace->skipped << " bad rows (first: " << trace->first_skip << ")\n";
  }

  // The cluster.
  std::string node_list = f.node_list;
  if (node_list.empty() && *format == sim::TraceFormat::kOpenb && f.nodes == 0) {
    node_list =
        Beside(f.trace, packing ? "openb_node_list_all_node.csv" : "openb_node_list_gpu_node.csv");
  }
  std::map<std::string, int32_t> quotas;
  std::string quota_file = f.quotas;
  if (quota_file.empty() && *format == sim::TraceFormat::kPhilly) {
    quota_file = Beside(f.trace, "../helios-sc21/philly_vc_config.csv");
  }
  if (!quota_file.empty()) {
    auto q = sim::ReadTenantCounts(quota_file);
    if (!q.ok()) return Fail(q.status());
    for (const auto& [t, nodes] : *q) quotas[t] = nodes * f.gpus_per_node;
  }
  if (!f.cluster.empty()) {
    auto nodes = sim::ReadClusterFile(f.cluster);
    if (!nodes.ok()) return Fail(nodes.status());
    cfg.nodes = std::move(*nodes);
  } else if (!node_list.empty()) {
    auto nodes = sim::ReadOpenbNodes(node_list);
    if (!nodes.ok()) return Fail(nodes.status());
    cfg.nodes = std::move(*nodes);
  } else if (f.nodes > 0) {
    cfg.nodes = sim::UniformCluster(f.nodes, f.gpus_per_node);
  } else if (!quotas.empty()) {
    int32_t gpus = 0;
    for (const auto& [t, g] : quotas) gpus += g;
    cfg.nodes = sim::UniformCluster(gpus / f.gpus_per_node, f.gpus_per_node);
  } else {
    return Usage(
        "the trace has no cluster shape: give --nodes N [--gpus-per-node G] or --node-list FILE");
  }
  int32_t gpus = 0;
  for (const sim::TraceNode& n : cfg.nodes) gpus += n.gpus;
  if (gpus == 0) return Usage("the cluster has no GPUs");

  if (packing) {
    if (*format != sim::TraceFormat::kOpenb)
      return Usage("--experiment packing needs --format openb");
    auto r = sim::RunPacking(cfg.nodes, *trace, f.seed, f.target, *rule);
    if (!r.ok()) return Fail(r.status());
    std::filesystem::create_directories(f.out);
    std::string json = "{\"experiment\": \"packing\", \"rule\": \"" + f.packing_rule +
                       "\", \"seed\": " + std::to_string(f.seed) +
                       ", \"capacity_gpus\": " + std::to_string(r->capacity_milli / 1000) +
                       ", \"pods_arrived\": " + std::to_string(r->pods_arrived) +
                       ", \"pods_failed\": " + std::to_string(r->pods_failed) +
                       ", \"allocation\": [";
    char buf[32];
    for (size_t k = 0; k < r->allocation.size(); ++k) {
      std::snprintf(buf, sizeof buf, "%s%.2f", k ? ", " : "", r->allocation[k]);
      json += buf;
    }
    json += "]}\n";
    FILE* out = std::fopen((f.out + "/result.json").c_str(), "wb");
    if (!out) return Fail(InvalidArgument("out", "cannot write " + f.out + "/result.json"));
    std::fputs(json.c_str(), out);
    std::fclose(out);
    auto at = [&](int k) {
      return k < static_cast<int>(r->allocation.size()) ? r->allocation[k] : 0.0;
    };
    std::printf(
        "packing (%s, fractional GPUs): %lld pods, %lld failed; GPU allocation ratio %.2f%% "
        "at 100%% demand, %.2f%% at %d%%\n",
        f.packing_rule.c_str(), static_cast<long long>(r->pods_arrived),
        static_cast<long long>(r->pods_failed), at(100), at(f.target), f.target);
    return 0;
  }

  // Reservations: --reservations, else the trace's quotas, else each tenant's defensive size.
  if (!f.reservations.empty()) {
    auto r = sim::ReadTenantCounts(f.reservations);
    if (!r.ok()) return Fail(r.status());
    for (const auto& [t, g] : *r) cfg.reservations[t] = g;
  } else if (!quotas.empty()) {
    cfg.reservations = quotas;
  } else {
    cfg.reservations = sim::DefensiveReservations(*trace, gpus);
  }
  cfg.reservations = sim::FitReservations(cfg.reservations, gpus);

  SteadyTicker ticker;
  cfg.ticker = &ticker;
  std::string current;
  const int64_t started = ticker.Nanos();
  bool drew = false;
  if (!f.quiet) {
    cfg.progress = [&](int64_t done, int64_t total, Timestamp t, int64_t events) {
      int64_t ns = ticker.Nanos() - started;
      if (ns < 1'000'000'000) return;
      drew = true;
      std::fprintf(stderr, "\r[%-13s] %lld/%lld jobs done, simulated day %.1f, %.0f events/s   ",
                   current.c_str(), static_cast<long long>(done), static_cast<long long>(total),
                   t.micros() / 86400e6, events / (ns / 1e9));
    };
  }
  sim::RunInfo run;
  run.trace_path = f.trace;
  run.format = f.format;
  run.trace_jobs = static_cast<int64_t>(trace->jobs.size());
  run.skipped_rows = trace->skipped;
  run.ignored_rows = trace->ignored;
  run.seed = f.seed;
  run.config = &cfg;
  for (sim::Policy p : policies) {
    current = std::string(sim::PolicyName(p));
    auto r = sim::Simulate(*trace, cfg, p);
    if (!r.ok()) return Fail(r.status());
    run.results.push_back(std::move(*r));
  }
  if (f.find_capacity) {
    sim::CapacitySearch cs;
    cs.full_gpus = gpus;
    const sim::PolicyResult* st = nullptr;
    std::optional<sim::PolicyResult> static_run;
    for (const auto& r : run.results) {
      if (r.policy == sim::Policy::kStatic) st = &r;
    }
    if (!st) {
      current = "static";
      auto r = sim::Simulate(*trace, cfg, sim::Policy::kStatic);
      if (!r.ok()) return Fail(r.status());
      static_run = std::move(*r);
      st = &*static_run;
    }
    cs.static_jct_mean_s = st->jct_s.mean;
    // Bisection over the node count, reservations scaled in proportion.
    int32_t lo = 1, hi = static_cast<int32_t>(cfg.nodes.size());
    sim::SimConfig probe_cfg = cfg;
    auto meets = [&](int32_t n, sim::PolicyResult* out) -> Result<bool> {
      probe_cfg.nodes.assign(cfg.nodes.begin(), cfg.nodes.begin() + n);
      int32_t g = 0;
      for (const auto& node : probe_cfg.nodes) g += node.gpus;
      probe_cfg.reservations.clear();
      for (const auto& [t, r] : cfg.reservations) {
        probe_cfg.reservations[t] = static_cast<int32_t>(static_cast<int64_t>(r) * g / gpus);
      }
      current = "capacity " + std::to_string(g);
      auto r = sim::Simulate(*trace, probe_cfg, sim::Policy::kMarket);
      if (!r.ok()) return r.status();
      bool ok = r->unfinished <= st->unfinished && r->jct_s.mean <= st->jct_s.mean &&
                r->owner_waits_over_notice == 0 && r->invariant_violations == 0;
      cs.probes.emplace_back(g, ok);
      *out = std::move(*r);
      return ok;
    };
    sim::PolicyResult best;
    for (const auto& r : run.results) {
      if (r.policy == sim::Policy::kMarket) best = r;
    }
    cs.market_gpus = gpus;
    cs.market_jct_mean_s = best.jct_s.mean;
    cs.market_owner_wait_max_s = best.owner_wait_max_s;
    while (lo < hi) {
      int32_t mid = lo + (hi - lo) / 2;
      sim::PolicyResult r;
      Result<bool> ok = meets(mid, &r);
      if (!ok.ok()) return Fail(ok.status());
      if (*ok) {
        hi = mid;
        cs.market_gpus = 0;
        for (int32_t k = 0; k < mid; ++k) cs.market_gpus += cfg.nodes[k].gpus;
        cs.market_jct_mean_s = r.jct_s.mean;
        cs.market_owner_wait_max_s = r.owner_wait_max_s;
      } else {
        lo = mid + 1;
      }
    }
    run.capacity = cs;
  }
  if (drew) std::fprintf(stderr, "\n");
  Status w = sim::WriteReports(run, f.out);
  if (!w.ok()) return Fail(w);
  std::cout << sim::ComparisonTable(run);
  if (run.capacity) {
    std::cout << "find-capacity: market matches static (" << run.capacity->full_gpus
              << " GPUs) with " << run.capacity->market_gpus << " GPUs\n";
  }
  std::cout << "wrote " << f.out << "/result.json, report.md, report.html, timing.json\n";
  for (const auto& r : run.results) {
    if (r.invariant_violations > 0) {
      std::cerr << "invariant violations under " << sim::PolicyName(r.policy) << ": "
                << r.first_violation << "\n";
      return 1;
    }
  }
  return 0;
}

}  // namespace

Action AddSim(CLI::App& app) {
  auto f = std::make_shared<SimFlags>();
  CLI::App* s =
      app.add_subcommand("sim", "Replay a GPU-cluster trace under Reservoir and today's policies");
  s->add_option("--trace", f->trace, "Trace file")->required();
  s->add_option("--format", f->format, "philly | openb | csv")->required();
  s->add_option("--policy", f->policy, "market | static | fifo-backfill | quota-borrow | all");
  s->add_option("--seed", f->seed, "Seed for every random choice");
  s->add_option("--out", f->out, "Output folder (result.json, report.md, report.html)");
  s->add_option("--nodes", f->nodes, "Cluster of N nodes (when the trace has no cluster)");
  s->add_option("--gpus-per-node", f->gpus_per_node, "GPUs per node (default 8)");
  s->add_option("--node-list", f->node_list, "Cluster from an openb-style node list CSV");
  s->add_option("--cluster", f->cluster, "Cluster file: CSV name,gpus[,topology][,model]");
  s->add_option("--quotas", f->quotas,
                "tenant,nodes CSV of quotas (Philly: found beside the trace)");
  s->add_option("--reservations", f->reservations, "tenant,gpus CSV overriding reservations");
  s->add_option("--price-range", f->price_range, "Spot limit prices drawn uniformly in LO:HI");
  s->add_option("--tenant-price", f->tenant_prices, "TENANT=LO:HI for one tenant (repeatable)");
  s->add_option("--notice", f->notice, "Preemption notice (and pool maximum)");
  s->add_option("--checkpoint-interval", f->checkpoint, "Default checkpoint interval");
  s->add_option("--restart-cost", f->restart, "Time a resumed job spends restarting");
  s->add_option("--start-latency", f->start_latency,
                "From placement to a job running, confirmed as an agent would (default 30s; 0: "
                "immediate)");
  s->add_option("--checkpoint-time", f->checkpoint_time,
                "A job under notice checkpoints in this long and leaves (default 60s); longer "
                "than the notice: stopped at the deadline");
  s->add_option("--elastic", f->elastic,
                "Share of multi-GPU jobs made elastic under market: half to twice their size "
                "(docs/simulator.md)");
  s->add_option(
      "--elastic-serial", f->elastic_serial,
      "Speedup model of elastic jobs: throughput(n) = n / (1 + s(n-1)); s (default 0.05)");
  s->add_option("--reserve-price", f->reserve, "Spot reserve price per GPU-hour");
  s->add_option("--min-increment", f->increment, "Minimum increment to preempt");
  s->add_flag("--skip-bad-rows", f->skip_bad, "Skip malformed rows (counted) instead of failing");
  s->add_flag("-q,--quiet", f->quiet, "No progress bar");
  s->add_flag("--find-capacity", f->find_capacity,
              "Find the smallest cluster on which market serves the trace as well as static");
  s->add_option("--experiment", f->experiment,
                "packing: the FGD static packing experiment (openb)");
  s->add_option("--target", f->target, "packing: arrived demand to reach, % of capacity");
  s->add_option("--packing-rule", f->packing_rule,
                "packing: lookahead (default), fgd or bestfit (docs/placement.md)");
  return [f] { return Run(*f); };
}

}  // namespace rsv::cli
