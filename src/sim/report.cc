#include "sim/report.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>

namespace rsv::sim {
namespace {

std::string Fixed(double v, int decimals = 3) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.*f", decimals, v);
  return buf;
}

std::string Quote(const std::string& s) {
  std::string out = "\"";
  for (char c : s) {
    if (c == '"' || c == '\\') out += '\\';
    if (static_cast<unsigned char>(c) < 0x20) continue;
    out += c;
  }
  return out + "\"";
}

std::string StatJson(const Stat& s) {
  return "{\"count\": " + std::to_string(s.count) + ", \"mean\": " + Fixed(s.mean) +
         ", \"p50\": " + Fixed(s.p50) + ", \"p99\": " + Fixed(s.p99) + "}";
}

std::string Hours(double seconds) { return Fixed(seconds / 3600.0, 2); }

const char* kColors[] = {"#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e"};

struct Series {
  std::string name;
  std::vector<std::pair<double, double>> points;
};

// A line chart as inline SVG. log_x plots log10(x) (x > 0).
std::string Svg(const std::string& title, const std::string& xlabel, const std::string& ylabel,
                const std::vector<Series>& series, bool log_x, bool step) {
  const double w = 720, h = 300, l = 60, r = 150, t = 30, b = 40;
  double x0 = 1e300, x1 = -1e300, y0 = 0, y1 = -1e300;
  auto tx = [&](double x) { return log_x ? std::log10(std::max(x, 1.0)) : x; };
  for (const Series& s : series) {
    for (auto [x, y] : s.points) {
      x0 = std::min(x0, tx(x));
      x1 = std::max(x1, tx(x));
      y1 = std::max(y1, y);
    }
  }
  if (x1 <= x0) x1 = x0 + 1;
  if (y1 <= y0) y1 = y0 + 1;
  auto px = [&](double x) { return l + (tx(x) - x0) / (x1 - x0) * (w - l - r); };
  auto py = [&](double y) { return h - b - (y - y0) / (y1 - y0) * (h - t - b); };
  std::string out = "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"" + Fixed(w, 0) +
                    "\" height=\"" + Fixed(h, 0) +
                    "\" font-family=\"sans-serif\" font-size=\"11\">";
  out += "<text x=\"" + Fixed(l, 0) + "\" y=\"18\" font-size=\"13\" font-weight=\"bold\">" + title +
         "</text>";
  out += "<line x1=\"" + Fixed(l, 0) + "\" y1=\"" + Fixed(h - b, 0) + "\" x2=\"" + Fixed(w - r, 0) +
         "\" y2=\"" + Fixed(h - b, 0) + "\" stroke=\"#333\"/>";
  out += "<line x1=\"" + Fixed(l, 0) + "\" y1=\"" + Fixed(t, 0) + "\" x2=\"" + Fixed(l, 0) +
         "\" y2=\"" + Fixed(h - b, 0) + "\" stroke=\"#333\"/>";
  for (int k = 0; k <= 4; ++k) {
    double yv = y0 + (y1 - y0) * k / 4;
    double xv = x0 + (x1 - x0) * k / 4;
    out += "<text x=\"" + Fixed(l - 5, 0) + "\" y=\"" + Fixed(py(yv) + 4, 0) +
           "\" text-anchor=\"end\">" + Fixed(yv, 2) + "</text>";
    std::string xt = log_x ? Fixed(std::pow(10, xv), 0) : Fixed(xv, 1);
    out += "<text x=\"" + Fixed(l + (xv - x0) / (x1 - x0) * (w - l - r), 0) + "\" y=\"" +
           Fixed(h - b + 14, 0) + "\" text-anchor=\"middle\">" + xt + "</text>";
  }
  out += "<text x=\"" + Fixed((l + w - r) / 2, 0) + "\" y=\"" + Fixed(h - 5, 0) +
         "\" text-anchor=\"middle\">" + xlabel + "</text>";
  out += "<text x=\"12\" y=\"" + Fixed((t + h - b) / 2, 0) + "\" transform=\"rotate(-90 12 " +
         Fixed((t + h - b) / 2, 0) + ")\" text-anchor=\"middle\">" + ylabel + "</text>";
  for (size_t i = 0; i < series.size(); ++i) {
    const char* color = kColors[i % 5];
    std::string pts;
    double last_y = 0;
    bool first = true;
    for (auto [x, y] : series[i].points) {
      if (step && !first) pts += Fixed(px(x), 1) + "," + Fixed(py(last_y), 1) + " ";
      pts += Fixed(px(x), 1) + "," + Fixed(py(y), 1) + " ";
      last_y = y;
      first = false;
    }
    out += "<polyline fill=\"none\" stroke=\"" + std::string(color) +
           "\" stroke-width=\"1.5\" points=\"" + pts + "\"/>";
    out += "<rect x=\"" + Fixed(w - r + 10, 0) + "\" y=\"" + Fixed(t + 16 * i, 0) +
           "\" width=\"10\" height=\"10\" fill=\"" + color + "\"/>";
    out += "<text x=\"" + Fixed(w - r + 25, 0) + "\" y=\"" + Fixed(t + 16 * i + 9, 0) + "\">" +
           series[i].name + "</text>";
  }
  return out + "</svg>";
}

std::vector<std::pair<std::string, std::string>> Rows(const PolicyResult& r) {
  return {
      {"GPU allocation ratio (steady window)", Fixed(100 * r.allocation_ratio, 1) + "%"},
      {"GPU allocation ratio (whole run)", Fixed(100 * r.allocation_ratio_run, 1) + "%"},
      {"makespan (h)", Hours(r.makespan_s)},
      {"JCT mean / p50 / p99 (h)",
       Hours(r.jct_s.mean) + " / " + Hours(r.jct_s.p50) + " / " + Hours(r.jct_s.p99)},
      {"queueing, jobs within their reservation: mean / p99 (h)",
       Hours(r.queue_guaranteed_s.mean) + " / " + Hours(r.queue_guaranteed_s.p99)},
      {"queueing, other jobs: mean / p99 (h)",
       Hours(r.queue_spot_s.mean) + " / " + Hours(r.queue_spot_s.p99)},
      {"owner wait p50 / p99 / max (s), over the notice",
       Fixed(r.owner_wait_s.p50, 0) + " / " + Fixed(r.owner_wait_s.p99, 0) + " / " +
           Fixed(r.owner_wait_max_s, 0) + ", " + std::to_string(r.owner_waits_over_notice)},
      {"preemptions", std::to_string(r.preemptions)},
      {"elastic jobs: grows / shrinks (preemptions avoided)",
       std::to_string(r.elastic_jobs) + ": " + std::to_string(r.grows) + " / " +
           std::to_string(r.shrinks)},
      {"lost GPU-hours", Fixed(r.lost_gpu_hours, 1)},
      {"jobs finished / unfinished",
       std::to_string(r.finished) + " / " + std::to_string(r.unfinished)},
      {"spot spend", r.spot_spend.ToString()},
      {"owner credits", r.owner_credits.ToString()},
      {"operator revenue", r.operator_revenue.ToString()},
      {"invariant violations", std::to_string(r.invariant_violations)},
  };
}

std::vector<Series> UtilizationSeries(const RunInfo& run) {
  std::vector<Series> out;
  for (const PolicyResult& r : run.results) {
    Series s{std::string(PolicyName(r.policy)), {}};
    for (auto [t, u] : r.utilization) s.points.emplace_back(t / 86400.0, 100 * u);
    out.push_back(std::move(s));
  }
  return out;
}

std::vector<Series> PriceSeries(const RunInfo& run) {
  std::vector<Series> out;
  for (const PolicyResult& r : run.results) {
    if (r.policy != Policy::kMarket) continue;
    Series s{"market", {}};
    s.points.emplace_back(0, run.config->reserve_price.micros() / 1e6);
    // At most 2,000 points: keep every k-th change.
    size_t k = std::max<size_t>(1, r.price.size() / 2000);
    for (size_t i = 0; i < r.price.size(); i += k) {
      s.points.emplace_back(r.price[i].first / 86400.0, r.price[i].second.micros() / 1e6);
    }
    out.push_back(std::move(s));
  }
  return out;
}

std::vector<Series> JctCdf(const RunInfo& run) {
  std::vector<Series> out;
  for (const PolicyResult& r : run.results) {
    Series s{std::string(PolicyName(r.policy)), {}};
    const auto& v = r.jct_sorted_s;
    size_t n = v.size();
    for (int q = 0; q <= 200 && n > 0; ++q) {
      size_t i = std::min(n - 1, n * q / 200);
      s.points.emplace_back(std::max(1.0, v[i]), 100.0 * (i + 1) / n);
    }
    out.push_back(std::move(s));
  }
  return out;
}

std::string Headline(const RunInfo& run) {
  std::string out;
  const PolicyResult* st = nullptr;
  const PolicyResult* mk = nullptr;
  for (const PolicyResult& r : run.results) {
    if (r.policy == Policy::kStatic) st = &r;
    if (r.policy == Policy::kMarket) mk = &r;
  }
  if (st && mk) {
    out += "On the same " + std::to_string(mk->cluster_gpus) + " GPUs, `market` allocated " +
           Fixed(100 * mk->allocation_ratio, 1) + "% of GPU time against " +
           Fixed(100 * st->allocation_ratio, 1) + "% under `static`, with mean JCT " +
           Hours(mk->jct_s.mean) + " h against " + Hours(st->jct_s.mean) + " h.\n";
  }
  if (run.capacity) {
    const CapacitySearch& c = *run.capacity;
    out += "\n**Capacity:** `market` serves this trace at least as well as `static` on " +
           std::to_string(c.full_gpus) + " GPUs with " + std::to_string(c.market_gpus) + " GPUs (" +
           Fixed(100.0 * (c.full_gpus - c.market_gpus) / std::max(1, c.full_gpus), 1) +
           "% fewer): mean JCT " + Hours(c.market_jct_mean_s) + " h vs " +
           Hours(c.static_jct_mean_s) + " h, owner wait max " +
           Fixed(c.market_owner_wait_max_s, 0) + " s.\n";
  }
  return out;
}

}  // namespace

std::string ResultJson(const RunInfo& run) {
  const SimConfig& c = *run.config;
  std::string o = "{\n";
  o += "  \"trace\": {\"path\": " + Quote(run.trace_path) + ", \"format\": " + Quote(run.format) +
       ", \"jobs\": " + std::to_string(run.trace_jobs) +
       ", \"skipped_rows\": " + std::to_string(run.skipped_rows) +
       ", \"ignored_rows\": " + std::to_string(run.ignored_rows) + "},\n";
  int32_t gpus = 0;
  for (const TraceNode& n : c.nodes) gpus += n.gpus;
  o += "  \"cluster\": {\"nodes\": " + std::to_string(c.nodes.size()) +
       ", \"gpus\": " + std::to_string(gpus) + "},\n";
  o += "  \"seed\": " + std::to_string(run.seed) + ",\n";
  o += "  \"config\": {\"reserve_price\": " + Quote(c.reserve_price.ToString()) +
       ", \"min_increment\": " + Quote(c.min_increment.ToString()) +
       ", \"notice_s\": " + std::to_string(c.notice.seconds()) +
       ", \"checkpoint_interval_s\": " + std::to_string(c.checkpoint_interval.seconds()) +
       ", \"restart_cost_s\": " + std::to_string(c.restart_cost.seconds()) +
       ", \"start_latency_s\": " + std::to_string(c.start_latency.seconds()) +
       ", \"checkpoint_time_s\": " + std::to_string(c.checkpoint_time.seconds()) +
       ", \"price_range\": [" + Quote(c.default_prices.lo.ToString()) + ", " +
       Quote(c.default_prices.hi.ToString()) + "]},\n";
  o += "  \"reservations\": {";
  bool first = true;
  for (const auto& [t, g] : c.reservations) {
    o += std::string(first ? "" : ", ") + Quote(t) + ": " + std::to_string(g);
    first = false;
  }
  o += "},\n  \"policies\": [\n";
  for (size_t i = 0; i < run.results.size(); ++i) {
    const PolicyResult& r = run.results[i];
    o += "    {\"policy\": " + Quote(std::string(PolicyName(r.policy))) +
         ", \"jobs\": " + std::to_string(r.jobs) + ", \"finished\": " + std::to_string(r.finished) +
         ", \"unfinished\": " + std::to_string(r.unfinished) +
         ",\n     \"gpu_allocation_ratio\": " + Fixed(r.allocation_ratio, 6) +
         ", \"steady_window_s\": [" + std::to_string(r.window_start.micros() / 1'000'000) + ", " +
         std::to_string(r.window_end.micros() / 1'000'000) + "]" +
         ",\n     \"gpu_allocation_ratio_run\": " + Fixed(r.allocation_ratio_run, 6) +
         ", \"run_s\": [" + std::to_string(r.run_start.micros() / 1'000'000) + ", " +
         std::to_string(r.run_end.micros() / 1'000'000) + "]" +
         ", \"makespan_s\": " + Fixed(r.makespan_s, 0) + ",\n     \"jct_s\": " + StatJson(r.jct_s) +
         ",\n     \"queue_delay_guaranteed_s\": " + StatJson(r.queue_guaranteed_s) +
         ",\n     \"queue_delay_spot_s\": " + StatJson(r.queue_spot_s) +
         ",\n     \"owner_wait_s\": " + StatJson(r.owner_wait_s) +
         ", \"owner_wait_max_s\": " + Fixed(r.owner_wait_max_s) +
         ", \"owner_waits_over_notice\": " + std::to_string(r.owner_waits_over_notice) +
         ", \"preemptions\": " + std::to_string(r.preemptions) +
         ", \"elastic_jobs\": " + std::to_string(r.elastic_jobs) +
         ", \"grows\": " + std::to_string(r.grows) + ", \"shrinks\": " + std::to_string(r.shrinks) +
         ", \"lost_gpu_hours\": " + Fixed(r.lost_gpu_hours, 3) +
         ", \"work_gpu_hours\": " + Fixed(r.work_gpu_hours, 3) +
         ", \"used_gpu_hours\": " + Fixed(r.used_gpu_hours, 3) +
         ",\n     \"money\": {\"spot_spend\": " + Quote(r.spot_spend.ToString()) +
         ", \"owner_credits\": " + Quote(r.owner_credits.ToString()) +
         ", \"operator_revenue\": " + Quote(r.operator_revenue.ToString()) +
         ", \"ledger_sum\": " + Quote(r.ledger_sum.ToString()) + "}" +
         ",\n     \"invariant_violations\": " + std::to_string(r.invariant_violations) +
         ", \"events\": " + std::to_string(r.events) + ",\n     \"price_series\": [";
    for (size_t k = 0; k < r.price.size(); ++k) {
      o += std::string(k ? ", " : "") + "[" + std::to_string(r.price[k].first) + ", " +
           Quote(r.price[k].second.ToString()) + "]";
    }
    o += "],\n     \"utilization_series\": [";
    for (size_t k = 0; k < r.utilization.size(); ++k) {
      o += std::string(k ? ", " : "") + "[" + std::to_string(r.utilization[k].first) + ", " +
           Fixed(r.utilization[k].second, 4) + "]";
    }
    o += "]}" + std::string(i + 1 < run.results.size() ? "," : "") + "\n";
  }
  o += "  ]";
  if (run.capacity) {
    const CapacitySearch& cs = *run.capacity;
    o += ",\n  \"find_capacity\": {\"full_gpus\": " + std::to_string(cs.full_gpus) +
         ", \"market_gpus\": " + std::to_string(cs.market_gpus) +
         ", \"static_jct_mean_s\": " + Fixed(cs.static_jct_mean_s) +
         ", \"market_jct_mean_s\": " + Fixed(cs.market_jct_mean_s) +
         ", \"market_owner_wait_max_s\": " + Fixed(cs.market_owner_wait_max_s) + ", \"probes\": [";
    for (size_t k = 0; k < cs.probes.size(); ++k) {
      o += std::string(k ? ", " : "") + "[" + std::to_string(cs.probes[k].first) + ", " +
           (cs.probes[k].second ? "true" : "false") + "]";
    }
    o += "]}";
  }
  return o + "\n}\n";
}

std::string TimingJson(const RunInfo& run) {
  std::string o = "{\"policies\": [";
  for (size_t i = 0; i < run.results.size(); ++i) {
    const PolicyResult& r = run.results[i];
    double s = r.wall_ns / 1e9;
    o += std::string(i ? ", " : "") + "{\"policy\": " + Quote(std::string(PolicyName(r.policy))) +
         ", \"wall_s\": " + Fixed(s) + ", \"events\": " + std::to_string(r.events) +
         ", \"events_per_s\": " + Fixed(s > 0 ? r.events / s : 0, 0) + "}";
  }
  return o + "]}\n";
}

std::string ComparisonTable(const RunInfo& run) {
  std::vector<std::string> head = {"metric"};
  for (const PolicyResult& r : run.results) head.emplace_back(PolicyName(r.policy));
  std::vector<std::vector<std::string>> rows;
  for (size_t k = 0; !run.results.empty() && k < Rows(run.results[0]).size(); ++k) {
    std::vector<std::string> row = {Rows(run.results[0])[k].first};
    for (const PolicyResult& r : run.results) row.push_back(Rows(r)[k].second);
    rows.push_back(row);
  }
  std::vector<std::string> wall = {"wall time (s), events/s"};
  for (const PolicyResult& r : run.results) {
    double s = r.wall_ns / 1e9;
    wall.push_back(Fixed(s, 2) + ", " + Fixed(s > 0 ? r.events / s : 0, 0));
  }
  rows.push_back(wall);
  std::vector<size_t> width(head.size(), 0);
  for (size_t c = 0; c < head.size(); ++c) width[c] = head[c].size();
  for (const auto& row : rows) {
    for (size_t c = 0; c < row.size(); ++c) width[c] = std::max(width[c], row[c].size());
  }
  auto line = [&](const std::vector<std::string>& row) {
    std::string out;
    for (size_t c = 0; c < row.size(); ++c) {
      out += row[c] + std::string(width[c] - row[c].size() + 2, ' ');
    }
    while (!out.empty() && out.back() == ' ') out.pop_back();
    return out + "\n";
  };
  std::string out = line(head);
  for (const auto& row : rows) out += line(row);
  return out;
}

std::string ReportMarkdown(const RunInfo& run) {
  std::string o = "# Reservoir simulation report\n\n";
  o += "Trace `" + run.trace_path + "` (" + run.format + ", " + std::to_string(run.trace_jobs) +
       " jobs), seed " + std::to_string(run.seed) + ".\n\n" + Headline(run) + "\n";
  o += "| metric |";
  for (const PolicyResult& r : run.results) o += " " + std::string(PolicyName(r.policy)) + " |";
  o += "\n| --- |";
  for (size_t i = 0; i < run.results.size(); ++i) o += " --- |";
  o += "\n";
  for (size_t k = 0; !run.results.empty() && k < Rows(run.results[0]).size(); ++k) {
    o += "| " + Rows(run.results[0])[k].first + " |";
    for (const PolicyResult& r : run.results) o += " " + Rows(r)[k].second + " |";
    o += "\n";
  }
  o += "\nPlots (utilization over time, spot price, JCT CDF) are in report.html. Model and "
       "assumptions: docs/simulator.md.\n";
  return o;
}

std::string ReportHtml(const RunInfo& run) {
  std::string o =
      "<!doctype html><html><head><meta charset=\"utf-8\"><title>Reservoir simulation</title>"
      "<style>body{font-family:sans-serif;max-width:900px;margin:2em auto}table{border-collapse:"
      "collapse}td,th{border:1px solid #ccc;padding:4px 8px;text-align:right}td:first-child{"
      "text-align:left}</style></head><body><h1>Reservoir simulation report</h1>";
  o += "<p>Trace <code>" + run.trace_path + "</code> (" + run.format + ", " +
       std::to_string(run.trace_jobs) + " jobs), seed " + std::to_string(run.seed) + ".</p>";
  std::string head = Headline(run);
  size_t pos;
  while ((pos = head.find('`')) != std::string::npos) head.replace(pos, 1, "");
  while ((pos = head.find("**")) != std::string::npos) head.replace(pos, 2, "");
  o += "<p>" + head + "</p><table><tr><th>metric</th>";
  for (const PolicyResult& r : run.results)
    o += "<th>" + std::string(PolicyName(r.policy)) + "</th>";
  o += "</tr>";
  for (size_t k = 0; !run.results.empty() && k < Rows(run.results[0]).size(); ++k) {
    o += "<tr><td>" + Rows(run.results[0])[k].first + "</td>";
    for (const PolicyResult& r : run.results) o += "<td>" + Rows(r)[k].second + "</td>";
    o += "</tr>";
  }
  o += "</table>";
  o += "<h2>GPU utilization over time</h2>" +
       Svg("allocated GPUs (% of cluster)", "days", "%", UtilizationSeries(run), false, false);
  std::vector<Series> price = PriceSeries(run);
  if (!price.empty()) {
    o += "<h2>Spot price over time</h2>" +
         Svg("clearing price per GPU-hour", "days", "price", price, false, true);
  }
  o += "<h2>Job completion time</h2>" +
       Svg("JCT CDF", "JCT (s, log scale)", "% of jobs", JctCdf(run), true, false);
  return o + "</body></html>\n";
}

Status WriteReports(const RunInfo& run, const std::string& dir) {
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  if (ec) return InvalidArgument("out", "cannot create '" + dir + "': " + ec.message());
  struct File {
    const char* name;
    std::string text;
  } files[] = {{"result.json", ResultJson(run)},
               {"timing.json", TimingJson(run)},
               {"report.md", ReportMarkdown(run)},
               {"report.html", ReportHtml(run)}};
  for (const File& f : files) {
    std::string path = dir + "/" + f.name;
    std::ofstream out(path, std::ios::binary | std::ios::trunc);
    out << f.text;
    if (!out) return InvalidArgument("out", "cannot write '" + path + "'");
  }
  return Status::Ok();
}

}  // namespace rsv::sim
