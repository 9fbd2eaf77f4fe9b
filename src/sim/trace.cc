#include "sim/trace.h"

#include <algorithm>
#include <fstream>
#include <map>

namespace rsv::sim {
namespace {

Status RowError(const std::string& path, int64_t line, const std::string& field,
                const std::string& msg) {
  return InvalidArgument(path + ":" + std::to_string(line) + ": " + field, msg);
}

Result<int64_t> ParseInt(const std::string& s) {
  if (s.empty() || s.size() > 15) return InvalidArgument("", "'" + s + "' is not an integer");
  int64_t v = 0;
  size_t i = s[0] == '-' ? 1 : 0;
  if (i == s.size()) return InvalidArgument("", "'" + s + "' is not an integer");
  for (; i < s.size(); ++i) {
    if (s[i] < '0' || s[i] > '9') return InvalidArgument("", "'" + s + "' is not an integer");
    v = v * 10 + (s[i] - '0');
  }
  return s[0] == '-' ? -v : v;
}

// Columns of a header row by name.
struct Header {
  std::map<std::string, size_t> index;
  std::optional<size_t> Find(const std::string& name) const {
    auto it = index.find(name);
    if (it == index.end()) return std::nullopt;
    return it->second;
  }
  // The named field of a row, trimmed; empty when the column or the field is missing.
  std::string Get(const std::vector<std::string>& row, const std::string& name) const;
};

std::string Trim(std::string s) {
  while (!s.empty() && (s.back() == '\r' || s.back() == ' ')) s.pop_back();
  size_t b = 0;
  while (b < s.size() && s[b] == ' ') ++b;
  return s.substr(b);
}

std::string Header::Get(const std::vector<std::string>& row, const std::string& name) const {
  std::optional<size_t> i = Find(name);
  return i && *i < row.size() ? Trim(row[*i]) : std::string();
}

// Reads a CSV file row by row; `row` returns a Status for a bad row.
template <typename RowFn>
Status ForEachRow(const std::string& path, const std::vector<std::string>& required, Header* header,
                  RowFn row) {
  std::ifstream in(path);
  if (!in) return InvalidArgument("trace", "cannot open '" + path + "'");
  std::string line;
  if (!std::getline(in, line)) return InvalidArgument("trace", "'" + path + "' is empty");
  std::vector<std::string> cols = SplitCsv(Trim(line));
  for (size_t i = 0; i < cols.size(); ++i) header->index[Trim(cols[i])] = i;
  for (const std::string& r : required) {
    if (!header->Find(r)) {
      return RowError(path, 1, r, "missing column (the header must name " + r + ")");
    }
  }
  int64_t number = 1;
  while (std::getline(in, line)) {
    ++number;
    line = Trim(line);
    if (line.empty()) continue;
    std::vector<std::string> fields = SplitCsv(line);
    if (fields.size() < header->index.size()) {
      RSV_RETURN_IF_ERROR(
          row(number, fields,
              RowError(path, number, "row",
                       "has " + std::to_string(fields.size()) + " fields, the header " +
                           std::to_string(header->index.size()))));
      continue;
    }
    RSV_RETURN_IF_ERROR(row(number, fields, Status::Ok()));
  }
  return Status::Ok();
}

}  // namespace

std::vector<std::string> SplitCsv(const std::string& line) {
  std::vector<std::string> out;
  std::string cur;
  bool quoted = false;
  for (char c : line) {
    if (c == '"') {
      quoted = !quoted;
    } else if (c == ',' && !quoted) {
      out.push_back(cur);
      cur.clear();
    } else {
      cur += c;
    }
  }
  out.push_back(cur);
  return out;
}

Result<Duration> ParseSeconds(const std::string& s) {
  size_t dot = s.find('.');
  std::string whole = s.substr(0, dot);
  std::string frac = dot == std::string::npos ? "" : s.substr(dot + 1);
  if (whole.empty() || whole[0] == '-') {
    return InvalidArgument("", "'" + s + "' is not a non-negative number of seconds");
  }
  Result<int64_t> w = ParseInt(whole);
  if (!w.ok()) return InvalidArgument("", "'" + s + "' is not a number of seconds");
  if (*w > int64_t{100} * 365 * 86400) {  // found by fuzzing: microseconds would overflow
    return InvalidArgument("", "'" + s + "' is more than 100 years");
  }
  int64_t us = 0;
  int64_t scale = 100000;
  for (size_t i = 0; i < frac.size(); ++i) {
    if (frac[i] < '0' || frac[i] > '9') {
      return InvalidArgument("", "'" + s + "' is not a number of seconds");
    }
    if (i < 6) {
      us += (frac[i] - '0') * scale;
      scale /= 10;
    }
  }
  return Duration::Micros(*w * 1'000'000 + us);
}

Result<int64_t> ParseDateTime(const std::string& s) {
  // YYYY-MM-DD HH:MM:SS
  if (s.size() != 19 || s[4] != '-' || s[7] != '-' || s[10] != ' ' || s[13] != ':' ||
      s[16] != ':') {
    return InvalidArgument("", "'" + s + "' is not a time like 2017-10-09 07:01:55");
  }
  auto num = [&](size_t at, size_t len) { return ParseInt(s.substr(at, len)); };
  Result<int64_t> y = num(0, 4), mo = num(5, 2), d = num(8, 2), h = num(11, 2), mi = num(14, 2),
                  se = num(17, 2);
  for (const Result<int64_t>* r : {&y, &mo, &d, &h, &mi, &se}) {
    if (!r->ok()) return InvalidArgument("", "'" + s + "' is not a time like 2017-10-09 07:01:55");
  }
  if (*mo < 1 || *mo > 12 || *d < 1 || *d > 31 || *h > 23 || *mi > 59 || *se > 60) {
    return InvalidArgument("", "'" + s + "' is out of range");
  }
  // Days from 1970-01-01 (Howard Hinnant's days_from_civil).
  int64_t yy = *y - (*mo <= 2);
  int64_t era = (yy >= 0 ? yy : yy - 399) / 400;
  int64_t yoe = yy - era * 400;
  int64_t mp = (*mo + 9) % 12;
  int64_t doy = (153 * mp + 2) / 5 + *d - 1;
  int64_t doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
  int64_t days = era * 146097 + doe - 719468;
  return days * 86400 + *h * 3600 + *mi * 60 + *se;
}

Result<TraceFormat> ParseTraceFormat(std::string_view s) {
  if (s == "philly") return TraceFormat::kPhilly;
  if (s == "openb") return TraceFormat::kOpenb;
  if (s == "csv") return TraceFormat::kCsv;
  return InvalidArgument("format", "'" + std::string(s) + "' is not philly, openb or csv");
}

Result<Trace> ReadTrace(const std::string& path, TraceFormat format, const ReadOptions& options) {
  Trace trace;
  Header h;
  std::vector<std::string> required;
  switch (format) {
    case TraceFormat::kPhilly:
      required = {"timestamp", "duration", "num_gpus", "cluster"};
      break;
    case TraceFormat::kCsv:
      required = {"submit_time", "duration", "gpus", "tenant"};
      break;
    case TraceFormat::kOpenb:
      required = {"name", "num_gpu", "gpu_milli"};
      if (options.need_times) {
        required.push_back("creation_time");
        required.push_back("deletion_time");
      }
      break;
  }
  std::vector<int64_t> absolute;  // philly: seconds since epoch, rebased after reading
  auto bad = [&](const Status& s) -> Status {
    if (!options.skip_bad_rows) return s;
    if (trace.skipped++ == 0) trace.first_skip = s.ToString();
    return Status::Ok();
  };
  auto field = [&](const std::vector<std::string>& f, const std::string& name) {
    return h.Get(f, name);
  };
  Status st = ForEachRow(
      path, required, &h,
      [&](int64_t line, const std::vector<std::string>& f, Status row_error) -> Status {
        if (!row_error.ok()) return bad(row_error);
        TraceJob j;
        j.line = line;
        auto err = [&](const std::string& name, const Status& s) {
          return bad(RowError(path, line, name, s.message()));
        };
        if (format == TraceFormat::kPhilly) {
          Result<int64_t> t = ParseDateTime(field(f, "timestamp"));
          if (!t.ok()) return err("timestamp", t.status());
          Result<Duration> d = ParseSeconds(field(f, "duration"));
          if (!d.ok()) return err("duration", d.status());
          Result<int64_t> g = ParseInt(field(f, "num_gpus"));
          if (!g.ok()) return err("num_gpus", g.status());
          if (*g < 1 || *g > 4096) return err("num_gpus", InvalidArgument("", "must be 1-4096"));
          j.tenant = field(f, "cluster");
          if (j.tenant.empty()) return err("cluster", InvalidArgument("", "is empty"));
          j.duration = *d;
          j.gpus = static_cast<int32_t>(*g);
          absolute.push_back(*t);
          j.submit = Timestamp::FromMicros(static_cast<int64_t>(absolute.size()) - 1);  // index
        } else if (format == TraceFormat::kCsv) {
          Result<Duration> s = ParseSeconds(field(f, "submit_time"));
          if (!s.ok()) return err("submit_time", s.status());
          std::string dur = field(f, "duration");
          Result<Duration> d = ParseSeconds(dur);
          if (!d.ok()) d = Duration::Parse(dur);
          if (!d.ok())
            return err("duration",
                       InvalidArgument("", "'" + dur + "' is not seconds or a duration"));
          Result<int64_t> g = ParseInt(field(f, "gpus"));
          if (!g.ok()) return err("gpus", g.status());
          if (*g < 1 || *g > 4096) return err("gpus", InvalidArgument("", "must be 1-4096"));
          j.tenant = field(f, "tenant");
          if (j.tenant.empty()) return err("tenant", InvalidArgument("", "is empty"));
          j.submit = Timestamp::FromMicros(s->micros());
          j.duration = *d;
          j.gpus = static_cast<int32_t>(*g);
          j.gpu_model = field(f, "gpu_model");
          if (std::string lp = field(f, "limit_price"); !lp.empty()) {
            Result<Money> m = Money::Parse(lp);
            if (!m.ok() || *m < Money()) {
              return err("limit_price", InvalidArgument("", "'" + lp + "' is not an amount"));
            }
            j.limit_price = *m;
          }
          if (std::string t = field(f, "tier"); !t.empty()) {
            Result<Tier> tier = ParseTier(t);
            if (!tier.ok()) return err("tier", tier.status());
            j.tier = *tier;
          }
          if (std::string c = field(f, "checkpoint_interval"); !c.empty()) {
            Result<Duration> ci = ParseSeconds(c);
            if (!ci.ok()) ci = Duration::Parse(c);
            if (!ci.ok() || *ci <= Duration()) {
              return err("checkpoint_interval",
                         InvalidArgument("", "'" + c + "' is not a positive duration"));
            }
            j.checkpoint_interval = *ci;
          }
        } else {
          Result<int64_t> g = ParseInt(field(f, "num_gpu"));
          if (!g.ok()) return err("num_gpu", g.status());
          if (*g < 0 || *g > 64) return err("num_gpu", InvalidArgument("", "must be 0-64"));
          Result<int64_t> milli = ParseInt(field(f, "gpu_milli"));
          if (!milli.ok()) return err("gpu_milli", milli.status());
          if (*milli < 0 || *milli > 1000)
            return err("gpu_milli", InvalidArgument("", "must be 0-1000"));
          if (std::string c = field(f, "cpu_milli"); !c.empty()) {
            Result<int64_t> cpu = ParseInt(c);
            if (!cpu.ok() || *cpu < 0)
              return err("cpu_milli", InvalidArgument("", "'" + c + "' is not a count"));
            j.cpu_milli = static_cast<int32_t>(*cpu);
          }
          if (std::string m = field(f, "memory_mib"); !m.empty()) {
            Result<int64_t> mem = ParseInt(m);
            if (!mem.ok() || *mem < 0)
              return err("memory_mib", InvalidArgument("", "'" + m + "' is not a count"));
            j.memory_mib = *mem;
          }
          j.gpu_model = field(f, "gpu_spec");
          j.tenant = field(f, "qos").empty() ? "default" : field(f, "qos");
          j.gpus = static_cast<int32_t>(*g);
          j.gpu_milli = j.gpus == 0 ? 0 : static_cast<int32_t>(*milli);
          if (j.gpus > 0 && j.gpu_milli == 0) j.gpu_milli = 1000;
          if (options.need_times) {
            Result<int64_t> c = ParseInt(field(f, "creation_time"));
            if (!c.ok() || *c < 0)
              return err("creation_time",
                         InvalidArgument("", "'" + field(f, "creation_time") + "' is not seconds"));
            Result<int64_t> d = ParseInt(field(f, "deletion_time"));
            if (!d.ok() || *d < *c)
              return err("deletion_time",
                         InvalidArgument("", "'" + field(f, "deletion_time") +
                                                 "' is not seconds at or after creation"));
            j.submit = Timestamp::FromMicros(*c * 1'000'000);
            j.duration = Duration::Seconds(std::max<int64_t>(1, *d - *c));
          }
          if (j.gpus == 0 && !options.keep_cpu_only) {
            trace.ignored++;
            return Status::Ok();
          }
        }
        trace.jobs.push_back(std::move(j));
        return Status::Ok();
      });
  RSV_RETURN_IF_ERROR(st);
  if (format == TraceFormat::kPhilly && !absolute.empty()) {
    int64_t first = *std::min_element(absolute.begin(), absolute.end());
    for (TraceJob& j : trace.jobs) {
      j.submit = Timestamp::FromMicros((absolute[j.submit.micros()] - first) * 1'000'000);
    }
  }
  if (format != TraceFormat::kPhilly && !trace.jobs.empty()) {
    Timestamp first = trace.jobs.front().submit;
    for (const TraceJob& j : trace.jobs) first = std::min(first, j.submit);
    for (TraceJob& j : trace.jobs)
      j.submit = Timestamp::FromMicros(j.submit.micros() - first.micros());
  }
  std::stable_sort(trace.jobs.begin(), trace.jobs.end(), [](const TraceJob& a, const TraceJob& b) {
    return a.submit != b.submit ? a.submit < b.submit : a.line < b.line;
  });
  if (trace.jobs.empty()) return InvalidArgument("trace", "'" + path + "' has no usable jobs");
  return trace;
}

Result<std::vector<TraceNode>> ReadOpenbNodes(const std::string& path) {
  std::vector<TraceNode> out;
  Header h;
  Status st = ForEachRow(path, {"sn", "gpu"}, &h,
                         [&](int64_t line, const std::vector<std::string>& f, Status e) -> Status {
                           RSV_RETURN_IF_ERROR(e);
                           auto get = [&](const std::string& n) { return h.Get(f, n); };
                           TraceNode n;
                           n.name = get("sn");
                           Result<int64_t> g = ParseInt(get("gpu"));
                           if (!g.ok() || *g < 0 || *g > kMaxGpusPerNode) {
                             return RowError(path, line, "gpu", "'" + get("gpu") + "' is not 0-64");
                           }
                           n.gpus = static_cast<int32_t>(*g);
                           if (!get("cpu_milli").empty()) {
                             Result<int64_t> c = ParseInt(get("cpu_milli"));
                             if (!c.ok())
                               return RowError(path, line, "cpu_milli", c.status().message());
                             n.cpu_milli = static_cast<int32_t>(*c);
                           }
                           if (!get("memory_mib").empty()) {
                             Result<int64_t> m = ParseInt(get("memory_mib"));
                             if (!m.ok())
                               return RowError(path, line, "memory_mib", m.status().message());
                             n.memory_mib = *m;
                           }
                           n.model = get("model");
                           out.push_back(std::move(n));
                           return Status::Ok();
                         });
  RSV_RETURN_IF_ERROR(st);
  return out;
}

Result<std::vector<TraceNode>> ReadClusterFile(const std::string& path) {
  std::vector<TraceNode> out;
  Header h;
  Status st =
      ForEachRow(path, {"name", "gpus"}, &h,
                 [&](int64_t line, const std::vector<std::string>& f, Status e) -> Status {
                   RSV_RETURN_IF_ERROR(e);
                   auto get = [&](const std::string& n) { return h.Get(f, n); };
                   TraceNode n;
                   n.name = get("name");
                   if (n.name.empty()) return RowError(path, line, "name", "is empty");
                   Result<int64_t> g = ParseInt(get("gpus"));
                   if (!g.ok() || *g < 1 || *g > kMaxGpusPerNode) {
                     return RowError(path, line, "gpus", "'" + get("gpus") + "' is not 1-64");
                   }
                   n.gpus = static_cast<int32_t>(*g);
                   n.topology = get("topology");
                   n.model = get("model");
                   out.push_back(std::move(n));
                   return Status::Ok();
                 });
  RSV_RETURN_IF_ERROR(st);
  if (out.empty()) return InvalidArgument("cluster", "'" + path + "' has no nodes");
  return out;
}

Result<std::vector<std::pair<std::string, int32_t>>> ReadTenantCounts(const std::string& path) {
  std::ifstream in(path);
  if (!in) return InvalidArgument("file", "cannot open '" + path + "'");
  std::vector<std::pair<std::string, int32_t>> out;
  std::string line;
  int64_t number = 0;
  while (std::getline(in, line)) {
    ++number;
    line = Trim(line);
    if (line.empty() || line[0] == '#') continue;
    std::vector<std::string> f = SplitCsv(line);
    if (f.size() < 2) return RowError(path, number, "row", "needs tenant,count");
    Result<int64_t> v = ParseInt(Trim(f[1]));
    if (!v.ok()) {
      if (number == 1) continue;  // header
      return RowError(path, number, "count", v.status().message());
    }
    if (*v < 0) return RowError(path, number, "count", "must not be negative");
    out.emplace_back(Trim(f[0]), static_cast<int32_t>(*v));
  }
  return out;
}

}  // namespace rsv::sim
