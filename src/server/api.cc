#include "server/api.h"

#include <cctype>
#include <cmath>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <optional>
#include <set>

#include "common/sha256.h"
#include "common/text.h"
#include "server/web_assets.h"

namespace rsv::server {
namespace {

using json = nlohmann::json;

// Validates a JSON object body field by field; remembers which fields were read so unknown
// ones can be refused.
class Body {
 public:
  static Result<Body> Parse(const std::string& text) {
    json j = json::parse(text.empty() ? "{}" : text, nullptr, false);
    if (j.is_discarded()) return InvalidArgument("body", "is not valid JSON");
    if (!j.is_object()) return InvalidArgument("body", "must be a JSON object");
    return Body(std::move(j));
  }
  Result<std::string> String(const std::string& k, bool required, size_t max = 256) {
    seen_.insert(k);
    if (!j_.contains(k)) {
      if (required) return InvalidArgument(k, "is required");
      return std::string();
    }
    if (!j_[k].is_string()) return InvalidArgument(k, "must be a string");
    std::string v = j_[k].get<std::string>();
    if (v.size() > max) return InvalidArgument(k, "is longer than " + std::to_string(max));
    return v;
  }
  Result<int64_t> Int(const std::string& k, bool required, int64_t def, int64_t lo, int64_t hi) {
    seen_.insert(k);
    if (!j_.contains(k)) {
      if (required) return InvalidArgument(k, "is required");
      return def;
    }
    if (!j_[k].is_number_integer()) return InvalidArgument(k, "must be an integer");
    int64_t v = j_[k].get<int64_t>();
    if (v < lo || v > hi) {
      return InvalidArgument(
          k, "must be between " + std::to_string(lo) + " and " + std::to_string(hi));
    }
    return v;
  }
  Result<bool> Bool(const std::string& k, bool def) {
    seen_.insert(k);
    if (!j_.contains(k)) return def;
    if (!j_[k].is_boolean()) return InvalidArgument(k, "must be true or false");
    return j_[k].get<bool>();
  }
  Result<std::optional<Money>> MoneyField(const std::string& k, bool required) {
    seen_.insert(k);
    if (!j_.contains(k)) {
      if (required) return InvalidArgument(k, "is required");
      return std::optional<Money>();
    }
    if (!j_[k].is_string()) return InvalidArgument(k, "must be a decimal string like \"2.5\"");
    Result<Money> m = Money::Parse(j_[k].get<std::string>());
    if (!m.ok()) return InvalidArgument(k, m.status().message());
    if (*m < Money()) return InvalidArgument(k, "must not be negative");
    return std::optional<Money>(*m);
  }
  Result<std::optional<Duration>> DurationField(const std::string& k) {
    seen_.insert(k);
    if (!j_.contains(k)) return std::optional<Duration>();
    if (!j_[k].is_string()) return InvalidArgument(k, "must be a duration like \"30s\"");
    Result<Duration> d = Duration::Parse(j_[k].get<std::string>());
    if (!d.ok()) return InvalidArgument(k, d.status().message());
    return std::optional<Duration>(*d);
  }
  json Raw(const std::string& k) {
    seen_.insert(k);
    return j_.contains(k) ? j_[k] : json();
  }
  Status NoUnknownFields() const {
    for (const auto& [k, v] : j_.items()) {
      if (!seen_.count(k)) return InvalidArgument(k, "unknown field");
    }
    return Status::Ok();
  }

 private:
  explicit Body(json j) : j_(std::move(j)) {}
  json j_;
  std::set<std::string> seen_;
};

std::map<std::string, std::string> ParseQuery(const std::string& q) {
  std::map<std::string, std::string> out;
  size_t pos = 0;
  while (pos < q.size()) {
    size_t amp = q.find('&', pos);
    if (amp == std::string::npos) amp = q.size();
    std::string kv = q.substr(pos, amp - pos);
    size_t eq = kv.find('=');
    if (eq != std::string::npos) out[kv.substr(0, eq)] = kv.substr(eq + 1);
    pos = amp + 1;
  }
  return out;
}

std::vector<std::string> Split(const std::string& path) {
  std::vector<std::string> out;
  size_t pos = 1;
  while (pos <= path.size()) {
    size_t slash = path.find('/', pos);
    if (slash == std::string::npos) slash = path.size();
    if (slash > pos) out.push_back(path.substr(pos, slash - pos));
    pos = slash + 1;
  }
  return out;
}

constexpr char kNodeNameRule[] =
    "must be 1-64 of A-Z a-z 0-9 . _ -, starting with a letter or digit";
bool ValidNodeName(const std::string& s) {
  return !s.empty() && s.size() <= 64 && std::isalnum(static_cast<unsigned char>(s[0])) &&
         s.find_first_not_of("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-") ==
             std::string::npos;
}

HttpResponse Error(const Status& s) {
  return HttpResponse{HttpStatusOf(s.code()), "application/json", ErrorBody(s)};
}

HttpResponse ToHttp(const Result<Reply>& r) {
  return r.ok() ? HttpResponse{r->status, "application/json", r->body} : Error(r.status());
}

HttpResponse ToHttp(const Result<std::string>& r, int status) {
  return r.ok() ? HttpResponse{status, "application/json", *r} : Error(r.status());
}

}  // namespace

bool ValidAddress(const std::string& s) {
  return !s.empty() && s.size() <= 255 &&
         (std::isalnum(static_cast<unsigned char>(s[0])) || s[0] == ':') &&
         s.find_first_not_of(
             "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.-:_") ==
             std::string::npos;
}

std::string RandomToken(const std::string& prefix) {
  std::ifstream urandom("/dev/urandom", std::ios::binary);
  unsigned char bytes[24];
  urandom.read(reinterpret_cast<char*>(bytes), sizeof bytes);
  static const char* hex = "0123456789abcdef";
  std::string out = prefix;
  for (unsigned char b : bytes) {
    out += hex[b >> 4];
    out += hex[b & 15];
  }
  return out;
}

int HttpStatusOf(Code code) {
  switch (code) {
    case Code::kOk:
      return 200;
    case Code::kInvalidArgument:
      return 400;
    case Code::kUnauthenticated:
      return 401;
    case Code::kPermissionDenied:
      return 403;
    case Code::kNotFound:
      return 404;
    case Code::kAlreadyExists:
      return 409;
    case Code::kFailedPrecondition:
      return 409;
    case Code::kResourceExhausted:
      return 409;
    case Code::kUnavailable:
      return 503;
    case Code::kInternal:
      return 500;
  }
  return 500;
}

std::string ErrorBody(const Status& s) {
  json e = {{"code", CodeName(s.code())}, {"message", s.message()}};
  if (!s.field().empty()) e["field"] = s.field();
  // Messages may quote what a client sent: bytes that are not UTF-8 are replaced, not thrown on.
  return json{{"error", e}}.dump(-1, ' ', false, json::error_handler_t::replace);
}

namespace {

// The dashboard's files, with a policy that lets the page run only its own scripts and styles
// and talk only to this server (docs/dashboard.md, "Security").
HttpResponse Asset(const std::string& name) {
  const WebAsset* a = FindWebAsset(name);
  if (!a) return Error(NotFound("no such resource: /assets/" + Printable(name, 200)));
  HttpResponse r{200, a->content_type,
                 std::string(reinterpret_cast<const char*>(a->data), a->size)};
  r.headers = {{"Content-Security-Policy",
                "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
                "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"},
               {"Cache-Control", "no-cache"},
               {"Referrer-Policy", "no-referrer"},
               {"X-Frame-Options", "DENY"}};
  return r;
}

}  // namespace

namespace {

// What a handler answers: a response now, or later: the reply was handed to the control plane,
// which calls it exactly once (a write once it is durable, a long-poll once it has news). Only
// Call::Later makes a later answer, and a handler can reach the reply only through it; every
// handler returns an Answer. So every request gets exactly one reply, by construction.
class [[nodiscard]] Answer {
 public:
  Answer(HttpResponse r) : now_(std::move(r)) {}  // NOLINT: a response is an answer
  Answer(const Status& s) : now_(Error(s)) {}     // NOLINT: an error is an answer
  std::optional<HttpResponse> now_;

 private:
  friend class Call;
  Answer() = default;
};

// One request, as a handler sees it.
class Call {
 public:
  using ReplyFn = std::function<void(HttpResponse)>;
  Call(ControlPlane* control, const Clock* clock, std::string path,
       std::map<std::string, std::string> query, Caller caller, Body body, ReplyFn reply)
      : control(control),
        clock(clock),
        path(std::move(path)),
        parts(Split(this->path)),
        query(std::move(query)),
        caller(std::move(caller)),
        body(std::move(body)),
        reply_(std::move(reply)) {}
  ControlPlane* const control;
  const Clock* const clock;
  const std::string path;
  const std::vector<std::string> parts;  // the path's segments: parts[0] is "v1"
  const std::map<std::string, std::string> query;
  const Caller caller;
  Body body;
  std::string raw_body;  // as sent (an agent's sync report is passed on whole)

  // Hands the reply to `start`, which must see that it is called once.
  Answer Later(const std::function<void(ReplyFn)>& start) {
    start(reply_);
    return Answer();
  }
  // A command: answered once it is durable (or refused: nothing changed), with `status` (201
  // where it created something).
  Answer Execute(Cmd command, int status = 200) {
    return Later([&](ReplyFn reply) {
      control->Execute(std::move(command),
                       [reply, status](Result<std::string> r) { reply(ToHttp(r, status)); });
    });
  }
  // A read; a list read one page long links to the next (RFC 8288: the same query, from the
  // next page's cursor).
  Answer Read(const std::string& what) {
    std::string next;
    Result<std::string> r = control->Read(what, caller, query, &next);
    if (!r.ok()) return r.status();
    HttpResponse out{200, "application/json", *r};
    if (!next.empty()) {
      std::string q;
      const char* key = query.count("order") && query.at("order") == "desc" ? "before" : "after";
      for (const auto& [k, v] : query) {
        if (k != "after" && k != "before") q += k + "=" + v + "&";
      }
      out.headers.emplace_back("Link", "<" + path + "?" + q + key + "=" + next + ">; rel=\"next\"");
    }
    return out;
  }
  // The `{id}` segment at `i` (the route matched it: digits, at most 9).
  int64_t Id(size_t i) const { return std::stoll(parts[i]); }
  // The caller's tenant id for commands that check ownership (0: the operator).
  uint32_t Owner() const { return caller.admin ? 0 : caller.tenant.value(); }
  // The tenant a write is for: the caller's own, or the one an admin names.
  Result<std::string> Tenant(const std::string& named, const char* verb) const {
    if (caller.admin) {
      if (named.empty()) return InvalidArgument("tenant", "is required for admin callers");
      return named;
    }
    if (!named.empty() && named != caller.tenant_name) {
      return Status(Code::kPermissionDenied, std::string("cannot ") + verb + " for another tenant",
                    "tenant");
    }
    return caller.tenant_name;
  }

 private:
  ReplyFn reply_;
};

#define RSV_API_TRY(lhs, expr)                        \
  auto lhs##_r = (expr);                              \
  if (!lhs##_r.ok()) return Answer(lhs##_r.status()); \
  auto lhs = std::move(lhs##_r).value()
#define RSV_API_CHECK(expr) \
  if (Status s_ = (expr); !s_.ok()) return Answer(s_)

Answer ReadAs(Call& c, const char* what) { return c.Read(what); }

Answer PostTenant(Call& c) {
  RSV_API_TRY(name, c.body.String("name", true));
  RSV_API_CHECK(c.body.NoUnknownFields());
  return c.Execute(cmd::AddTenant{name}, 201);
}

Answer DeleteTenant(Call& c) { return c.Execute(cmd::DeleteTenant{c.parts[2]}); }

Answer PostToken(Call& c) {
  RSV_API_TRY(tenant, c.body.String("tenant", false));
  RSV_API_TRY(admin, c.body.Bool("admin", false));
  RSV_API_TRY(node, c.body.String("node", false));
  RSV_API_CHECK(c.body.NoUnknownFields());
  if (int(admin) + int(!tenant.empty()) + int(!node.empty()) != 1) {
    return InvalidArgument("tenant", "give exactly one of tenant, node or admin: true");
  }
  if (!tenant.empty() && !c.control->FindTenant(tenant)) {
    return InvalidArgument("tenant", "unknown tenant '" + tenant + "'");
  }
  if (!node.empty() && !ValidNodeName(node)) return InvalidArgument("node", kNodeNameRule);
  std::string token = RandomToken(node.empty() ? "rsv_" : "rsv_node_");
  return c.Later([&](Call::ReplyFn reply) {
    c.control->Execute(
        cmd::AddToken{.admin = admin, .node = node, .tenant = tenant, .hash = Sha256Hex(token)},
        [reply, token](Result<std::string> r) {
          if (!r.ok()) return reply(Error(r.status()));
          json out = json::parse(*r);
          out["token"] = token;  // shown once; only its hash is stored
          reply(HttpResponse{201, "application/json", out.dump()});
        });
  });
}

Answer RevokeToken(Call& c) {
  RSV_API_TRY(token, c.body.String("token", false));
  RSV_API_TRY(token_id, c.body.String("id", false));
  RSV_API_CHECK(c.body.NoUnknownFields());
  if (token.empty() == token_id.empty()) {
    return InvalidArgument("token", "give either token or id (not both)");
  }
  if (!token_id.empty() && (token_id.size() != 12 ||
                            token_id.find_first_not_of("0123456789abcdef") != std::string::npos)) {
    return InvalidArgument("id", "must be the 12 hex digits `reservoir token --list` shows");
  }
  return c.Execute(token.empty() ? cmd::Revoke{.hash = "", .id = token_id}
                                 : cmd::Revoke{.hash = Sha256Hex(token), .id = ""});
}

Answer PostNode(Call& c) {
  RSV_API_TRY(name, c.body.String("name", true));
  RSV_API_TRY(pool, c.body.String("pool", true));
  RSV_API_TRY(gpus, c.body.Int("gpus", true, 0, 1, kMaxGpusPerNode));
  RSV_API_TRY(topology, c.body.String("topology", false));
  RSV_API_TRY(gpu_memory, c.body.Int("gpu_memory_mib", false, 0, 0, int64_t{1} << 30));
  RSV_API_CHECK(c.body.NoUnknownFields());
  return c.Execute(cmd::AddNode{.name = name,
                                .pool = pool,
                                .topology = topology,
                                .gpus = static_cast<int32_t>(gpus),
                                .gpu_memory_mib = gpu_memory},
                   201);
}

Answer RegisterNode(Call& c) {
  const std::string& name = c.parts[2];
  if (!ValidNodeName(name)) return InvalidArgument("node", kNodeNameRule);
  RSV_API_TRY(pool, c.body.String("pool", true));
  RSV_API_TRY(gpus, c.body.Int("gpus", true, 0, 1, kMaxGpusPerNode));
  RSV_API_TRY(topology, c.body.String("topology", false));
  RSV_API_TRY(probe, c.body.String("probe", false));
  RSV_API_TRY(cgroups, c.body.String("cgroups", false, 1024));
  RSV_API_TRY(address, c.body.String("address", false));
  json inventory = c.body.Raw("inventory");
  RSV_API_CHECK(c.body.NoUnknownFields());
  if (!inventory.is_null() && !inventory.is_array()) {
    return InvalidArgument("inventory", "must be an array of GPUs");
  }
  if (!address.empty() && !ValidAddress(address)) return InvalidArgument("address", kAddressRule);
  cmd::Register r;
  r.name = name;
  r.address = address.empty() ? name : address;
  r.pool = pool;
  r.gpus = static_cast<int32_t>(gpus);
  r.topology = topology;
  r.probe = probe;
  r.cgroups = cgroups;
  r.inventory.text =
      inventory.is_null() ? "[]" : inventory.dump(-1, ' ', false, json::error_handler_t::replace);
  return c.Execute(std::move(r));
}

Answer SyncNode(Call& c) {
  RSV_API_TRY(wait, QueryInt(c.query, "wait", 0, 60));
  return c.Later([&](Call::ReplyFn reply) {
    c.control->Sync(c.parts[2], c.raw_body, c.clock->Now() + Duration::Seconds(wait),
                    [reply](Result<Reply> r) { reply(ToHttp(r)); });
  });
}

Answer DrainNode(Call& c) {
  return c.Execute(cmd::NodeStateChange{
      .node = c.parts[2], .state = c.parts[3] == "drain" ? "draining" : "ready", .reason = ""});
}

Answer PostReservation(Call& c) {
  RSV_API_TRY(pool, c.body.String("pool", true));
  RSV_API_TRY(gpus, c.body.Int("gpus", true, 0, 1, 1'000'000));
  RSV_API_TRY(start, c.body.Int("start_us", false, 0, 0, int64_t{1} << 60));
  RSV_API_TRY(duration, c.body.DurationField("duration"));
  RSV_API_TRY(end, c.body.Int("end_us", false, 0, 0, int64_t{1} << 60));
  RSV_API_TRY(lend, c.body.Bool("lend", true));
  RSV_API_TRY(quote, c.body.Bool("quote_only", false));
  RSV_API_TRY(tenant, c.body.String("tenant", false));
  RSV_API_CHECK(c.body.NoUnknownFields());
  RSV_API_TRY(who, c.Tenant(tenant, "reserve"));
  if (!duration && end == 0) return InvalidArgument("end_us", "end_us or duration is required");
  // A start in the past is a mistake, not "now" (0 or absent is now); a minute of slack for
  // clients whose clocks differ a little. Checked here, not when the command is applied, so
  // that logs written before this check still replay.
  if (start > 0 && start < (c.clock->Now() - Duration::Seconds(60)).micros()) {
    return InvalidArgument("start_us", "is in the past (0 or absent: now)");
  }
  cmd::Reserve r;
  r.tenant = who;
  r.pool = pool;
  r.gpus = static_cast<int32_t>(gpus);
  r.start_us = start;
  r.lend = lend;
  r.quote_only = quote;
  if (duration) {
    r.duration_us = duration->micros();
  } else {
    r.end_us = end;
  }
  return c.Execute(std::move(r), quote ? 200 : 201);
}

Answer GetReservation(Call& c) { return c.Read("reservation/" + c.parts[2]); }

Answer ReturnReservation(Call& c) { return c.Execute(cmd::Return{c.Id(2), c.Owner()}); }

// gpus: a whole number (rigid), a share of one GPU below 1 in thousandths (docs/market.md, "GPU
// shares"), or {"min", "max", "step"} (elastic; docs/market.md, "Elastic jobs").
Status ParseGpus(const json& range, int64_t* gpus, int64_t* max_gpus, int64_t* step,
                 int64_t* milli) {
  if (range.is_number_float() && range.get<double>() > 0 && range.get<double>() < 1) {
    const double thousandths = range.get<double>() * 1000;
    const int64_t m = std::llround(thousandths);
    if (m < 1 || m > 999 || std::abs(thousandths - static_cast<double>(m)) > 1e-6) {
      return InvalidArgument("gpus", "a share of one GPU is 0.001 to 0.999, in thousandths");
    }
    *gpus = 1;
    *milli = m;
    return Status::Ok();
  }
  auto whole = [](const json& v, int64_t* out) {
    if (!v.is_number_integer() || v.get<int64_t>() < 1 || v.get<int64_t>() > 1'000'000)
      return false;
    *out = v.get<int64_t>();
    return true;
  };
  if (range.is_null()) return InvalidArgument("gpus", "is required");
  if (!range.is_object()) {
    if (whole(range, gpus)) return Status::Ok();
    return InvalidArgument("gpus",
                           "must be an integer from 1 to 1000000, a share from 0.001 to 0.999, "
                           "or {\"min\", \"max\", \"step\"}");
  }
  for (const auto& [k, v] : range.items()) {
    if (k != "min" && k != "max" && k != "step")
      return InvalidArgument("gpus." + k, "unknown field (min, max, step)");
  }
  if (!range.contains("min") || !whole(range["min"], gpus))
    return InvalidArgument("gpus.min", "must be an integer from 1 to 1000000");
  if (!range.contains("max") || !whole(range["max"], max_gpus))
    return InvalidArgument("gpus.max", "must be an integer from 1 to 1000000");
  if (range.contains("step") && !whole(range["step"], step))
    return InvalidArgument("gpus.step", "must be an integer from 1 to 1000000");
  if (*max_gpus < *gpus) return InvalidArgument("gpus.max", "must be at least min");
  return Status::Ok();
}

Answer PostJob(Call& c) {
  Body& body = c.body;
  RSV_API_TRY(name, body.String("name", false));
  RSV_API_TRY(pool, body.String("pool", true));
  int64_t gpus = 0, max_gpus = 0, step = 0, milli = 1000;
  RSV_API_CHECK(ParseGpus(body.Raw("gpus"), &gpus, &max_gpus, &step, &milli));
  RSV_API_TRY(gpu_memory, body.Int("gpu_memory_mib", false, 0, 1, int64_t{1} << 30));
  if (gpu_memory > 0 && milli == 1000)
    return InvalidArgument("gpu_memory_mib", "is for a share of one GPU (gpus below 1)");
  RSV_API_TRY(resize_mode, body.String("resize_mode", false));
  if (!resize_mode.empty() && !ParseResizeMode(resize_mode).ok())
    return InvalidArgument("resize_mode", "must be restart or signal");
  RSV_API_TRY(cooldown, body.DurationField("resize_cooldown"));
  RSV_API_TRY(tier, body.String("tier", false));
  RSV_API_TRY(limit, body.MoneyField("limit_price", false));
  RSV_API_TRY(fallback, body.MoneyField("fallback_limit", false));
  RSV_API_TRY(notice, body.DurationField("notice"));
  RSV_API_TRY(time_limit, body.DurationField("time_limit"));
  if (time_limit && (time_limit->micros() < 1'000'000 || time_limit->seconds() > 3650 * 86400))
    return InvalidArgument("time_limit", "must be from 1s to 3650d");
  RSV_API_TRY(restarts, body.Int("max_restarts", false, 0, -1, 1000));
  RSV_API_TRY(command, body.String("command", false, 65536));
  RSV_API_TRY(workdir, body.String("workdir", false, 4096));
  RSV_API_TRY(tenant, body.String("tenant", false));
  RSV_API_TRY(cpu_millis, body.Int("cpu_millis", false, 0, 1, 1'000'000));
  RSV_API_TRY(memory_mib, body.Int("memory_mib", false, 0, 1, int64_t{1} << 30));
  json env = body.Raw("env");
  json deps = body.Raw("dependencies");
  RSV_API_CHECK(body.NoUnknownFields());
  std::string t = tier.empty() ? "spot" : tier;
  if (!ParseTier(t).ok()) return InvalidArgument("tier", "must be reserved, spot or auto");
  if (t != "reserved" && !limit)
    return InvalidArgument("limit_price", "is required for spot and auto jobs");
  if (!env.is_null() && (!env.is_array() || std::any_of(env.begin(), env.end(), [](const json& e) {
        return !e.is_string() || e.get<std::string>().find('=') == std::string::npos;
      }))) {
    return InvalidArgument("env", "must be an array of \"NAME=value\" strings");
  }
  std::vector<cmd::Dependency> dep_cmd;
  if (!deps.is_null()) {
    if (!deps.is_array()) return InvalidArgument("dependencies", "must be an array");
    for (const json& d : deps) {
      if (!d.is_object() || !d.contains("job") || !d["job"].is_number_integer() ||
          (d.contains("kind") && d["kind"] != "afterok" && d["kind"] != "afterany")) {
        return InvalidArgument("dependencies",
                               "entries are {\"kind\": \"afterok\"|\"afterany\", \"job\": ID}");
      }
      const json& job = d["job"];
      const bool id = job.is_number_unsigned()
                          ? job.get<uint64_t>() >= 1 && job.get<uint64_t>() <= UINT32_MAX
                          : job.get<int64_t>() >= 1 && job.get<int64_t>() <= UINT32_MAX;
      if (!id) return InvalidArgument("dependencies", "job " + job.dump() + " is not a job id");
      dep_cmd.push_back({d.value("kind", "afterok"), job.get<int64_t>()});
    }
  }
  RSV_API_TRY(who, c.Tenant(tenant, "submit"));
  cmd::Submit job;
  job.tenant = who;
  job.pool = pool;
  job.gpus = static_cast<int32_t>(gpus);
  job.tier = t;
  job.name = name;
  job.max_restarts = static_cast<int32_t>(restarts);
  job.command = command;
  job.workdir = workdir;
  job.dependencies = std::move(dep_cmd);
  if (limit) job.limit_micros = limit->micros();
  if (fallback) job.fallback_micros = fallback->micros();
  if (notice) job.notice_s = notice->seconds();
  if (time_limit) job.time_limit_s = time_limit->seconds();
  if (!env.is_null()) job.env = env.get<std::vector<std::string>>();
  job.cpu_millis = cpu_millis;
  job.memory_mib = memory_mib;
  job.max_gpus = static_cast<int32_t>(max_gpus);
  job.gpu_step = static_cast<int32_t>(step);
  job.gpu_milli = static_cast<int32_t>(milli);
  job.gpu_memory_mib = gpu_memory;
  if (!resize_mode.empty()) job.resize_mode = resize_mode;
  if (cooldown) job.resize_cooldown_s = cooldown->seconds();
  return c.Execute(std::move(job), 201);
}

Answer GetJob(Call& c) { return c.Read("job/" + c.parts[2]); }
Answer WhyJob(Call& c) { return c.Read("job/" + std::to_string(c.Id(2)) + "/why"); }

Answer JobLogs(Call& c) {
  RSV_API_TRY(attempt, QueryInt(c.query, "attempt", 1, 1'000'000));
  RSV_API_TRY(offset, QueryInt(c.query, "offset", 0, int64_t{1} << 50));
  RSV_API_TRY(wait, QueryInt(c.query, "wait", 0, 60));
  auto node = c.query.find("node");
  const std::string member = node == c.query.end() ? "" : node->second;
  if (!member.empty() && !ValidNodeName(member)) return InvalidArgument("node", kNodeNameRule);
  return c.Later([&](Call::ReplyFn reply) {
    c.control->Logs(c.caller, c.Id(2), static_cast<int32_t>(attempt), member, offset,
                    c.clock->Now() + Duration::Seconds(wait),
                    [reply](Result<Reply> r) { reply(ToHttp(r)); });
  });
}

// cancel, release, exit (the operator's, for agentless nodes).
Answer JobAction(Call& c) {
  const std::string& action = c.parts[3];
  const cmd::JobAction which{c.Id(2), c.Owner()};
  if (action == "exit") {
    RSV_API_TRY(success, c.body.Bool("success", true));
    RSV_API_CHECK(c.body.NoUnknownFields());
    cmd::Exit exit{which};
    exit.success = success;
    return c.Execute(exit);
  }
  RSV_API_CHECK(c.body.NoUnknownFields());
  if (action == "cancel") return c.Execute(cmd::Cancel{which});
  return c.Execute(cmd::Release{which});
}

Answer WhoAmI(Call& c) {
  json who = {{"admin", c.caller.admin}};
  if (!c.caller.tenant_name.empty()) who["tenant"] = c.caller.tenant_name;
  if (!c.caller.node.empty()) who["node"] = c.caller.node;
  return HttpResponse{200, "application/json", who.dump()};
}

Answer Events(Call& c) {
  RSV_API_TRY(since, QueryInt(c.query, "since", 0, int64_t{1} << 50));
  RSV_API_TRY(wait, QueryInt(c.query, "wait", 0, 60));
  RSV_API_TRY(job, QueryInt(c.query, "job", 0, 1'000'000'000));
  auto body = [](const std::string& events, int64_t last) {
    return HttpResponse{200, "application/json",
                        "{\"last_seq\":" + std::to_string(last) + ",\"events\":" + events + "}"};
  };
  if (wait == 0) {
    int64_t last = 0;
    std::string events = c.control->EventsSince(since, c.caller, &last, job);
    return body(events, last);
  }
  return c.Later([&](Call::ReplyFn reply) {
    c.control->WaitForEvents(
        since, c.caller, c.clock->Now() + Duration::Seconds(wait), static_cast<uint32_t>(job),
        [reply, body](std::string events, int64_t last) { reply(body(events, last)); });
  });
}

#undef RSV_API_TRY
#undef RSV_API_CHECK

// Who may call a route: anyone (no token: the dashboard's files, health and metrics, which a
// standby serves too), any token holder, the operator, or the agent of the node the path names
// (and the operator). A node's token reaches its agent routes and nothing else.
enum class Access { kPublic, kAny, kAdmin, kAgent };

// One route: a path template ("{id}": digits, at most 9; "{name}": any segment), a method and
// its handler. The public routes are answered before authentication (Api::Handle). A path that
// matches no template is a 404; a method its template does not list, a 405 with `Allow`.
// Metrics are labelled by template, so unknown paths cannot grow them.
struct Route {
  const char* path;
  const char* method;
  Access access;
  Answer (*handler)(Call&);
};
const Route kRoutes[] = {
    {"/", "GET", Access::kPublic, nullptr},  // the dashboard (docs/dashboard.md), its assets
    {"/assets/{name}", "GET", Access::kPublic, nullptr},
    {"/healthz", "GET", Access::kPublic, nullptr},
    {"/metrics", "GET", Access::kPublic, nullptr},
    {"/v1/tenants", "GET", Access::kAny, [](Call& c) { return ReadAs(c, "tenants"); }},
    {"/v1/tenants", "POST", Access::kAdmin, PostTenant},
    {"/v1/tenants/{name}", "DELETE", Access::kAdmin, DeleteTenant},
    {"/v1/tokens", "GET", Access::kAdmin, [](Call& c) { return ReadAs(c, "tokens"); }},
    {"/v1/tokens", "POST", Access::kAdmin, PostToken},
    {"/v1/tokens/revoke", "POST", Access::kAdmin, RevokeToken},
    {"/v1/pools", "GET", Access::kAny, [](Call& c) { return ReadAs(c, "pools"); }},
    {"/v1/nodes", "GET", Access::kAny, [](Call& c) { return ReadAs(c, "nodes"); }},
    {"/v1/nodes", "POST", Access::kAdmin, PostNode},
    {"/v1/nodes/{name}/register", "POST", Access::kAgent, RegisterNode},
    {"/v1/nodes/{name}/sync", "POST", Access::kAgent, SyncNode},
    {"/v1/nodes/{name}/drain", "POST", Access::kAdmin, DrainNode},
    {"/v1/nodes/{name}/undrain", "POST", Access::kAdmin, DrainNode},
    {"/v1/reservations", "GET", Access::kAny, [](Call& c) { return ReadAs(c, "reservations"); }},
    {"/v1/reservations", "POST", Access::kAny, PostReservation},
    {"/v1/reservations/{id}", "GET", Access::kAny, GetReservation},
    {"/v1/reservations/{id}/return", "POST", Access::kAny, ReturnReservation},
    {"/v1/jobs", "GET", Access::kAny, [](Call& c) { return ReadAs(c, "jobs"); }},
    {"/v1/jobs", "POST", Access::kAny, PostJob},
    {"/v1/jobs/{id}", "GET", Access::kAny, GetJob},
    {"/v1/jobs/{id}/logs", "GET", Access::kAny, JobLogs},
    {"/v1/jobs/{id}/why", "GET", Access::kAny, WhyJob},
    {"/v1/jobs/{id}/cancel", "POST", Access::kAny, JobAction},
    {"/v1/jobs/{id}/release", "POST", Access::kAny, JobAction},
    {"/v1/jobs/{id}/exit", "POST", Access::kAdmin, JobAction},
    {"/v1/market", "GET", Access::kAny, [](Call& c) { return ReadAs(c, "market"); }},
    {"/v1/market/history", "GET", Access::kAny,
     [](Call& c) { return ReadAs(c, "market/history"); }},
    {"/v1/ledger", "GET", Access::kAny, [](Call& c) { return ReadAs(c, "ledger"); }},
    {"/v1/ledger/summary", "GET", Access::kAny,
     [](Call& c) { return ReadAs(c, "ledger/summary"); }},
    {"/v1/usage", "GET", Access::kAny, [](Call& c) { return ReadAs(c, "usage"); }},
    {"/v1/waste", "GET", Access::kAny, [](Call& c) { return ReadAs(c, "waste"); }},
    {"/v1/whoami", "GET", Access::kAny, WhoAmI},
    {"/v1/events", "GET", Access::kAny, Events},
};

// The rows whose template matches the path (one per method), in table order.
std::vector<const Route*> MatchRoutes(const std::vector<std::string>& parts) {
  static const std::vector<std::vector<std::string>> patterns = [] {
    std::vector<std::vector<std::string>> out;
    for (const Route& r : kRoutes) out.push_back(Split(r.path));
    return out;
  }();
  std::vector<const Route*> out;
  for (size_t k = 0; k < patterns.size(); ++k) {
    const std::vector<std::string>& want = patterns[k];
    if (want.size() != parts.size()) continue;
    if (!out.empty() && std::string_view(out.front()->path) != kRoutes[k].path) continue;
    bool ok = true;
    for (size_t i = 0; i < want.size() && ok; ++i) {
      if (want[i] == "{id}") {
        ok = !parts[i].empty() && parts[i].size() <= 9 &&
             parts[i].find_first_not_of("0123456789") == std::string::npos;
      } else if (want[i] != "{name}") {
        ok = want[i] == parts[i];
      }
    }
    if (ok) out.push_back(&kRoutes[k]);
  }
  return out;
}

// Everything a request goes through before its handler, in order: the route and method, the
// public routes, a standby's refusal, authentication, a node token's scope, the body, access.
Answer Dispatch(const HttpRequest& req, const std::string& path,
                const std::vector<const Route*>& routes, ControlPlane* control, const Clock* clock,
                const std::function<std::string()>& api_metrics, Call::ReplyFn reply) {
  if (routes.empty()) return NotFound("no such resource: " + Printable(path, 200));
  const Route* route = nullptr;
  std::string allow;
  for (const Route* r : routes) {
    allow += (allow.empty() ? "" : ", ") + std::string(r->method);
    if (req.method == r->method) route = r;
  }
  if (!route) {
    HttpResponse r = Error(Status(Code::kInvalidArgument,
                                  Printable(req.method, 20) + " is not allowed on " +
                                      routes.front()->path + " (allowed: " + allow + ")",
                                  "method"));
    r.status = 405;
    r.allow = allow;
    return r;
  }
  const std::string_view tmpl(route->path);
  if (tmpl == "/") return Asset("index.html");
  if (tmpl == "/assets/{name}") return Asset(path.substr(std::string_view("/assets/").size()));
  const auto [leader, epoch] = control->Leader();
  if (tmpl == "/healthz") {
    json h = {{"status", "ok"},
              {"role", control->leading() ? "leader" : "standby"},
              {"applied_seq", control->applied_seq()}};
    if (!leader.empty()) h["leader"] = leader;
    if (epoch > 0) h["epoch"] = epoch;
    return HttpResponse{200, "application/json", h.dump()};
  }
  if (tmpl == "/metrics") {
    return HttpResponse{200, "text/plain; version=0.0.4", control->Metrics() + api_metrics()};
  }
  // A standby serves nothing but the public routes: its state trails the leader's. It names
  // the leader, which clients given several servers turn to (docs/ha.md).
  if (!control->leading()) {
    const bool known = !leader.empty() && !control->stepped_down();
    json e = {{"code", "unavailable"},
              {"message", known ? "this server is a standby; the leader is " + leader
                                : "this server is not the leader; another server leads or is "
                                  "taking over"}};
    if (known) e["leader"] = leader;
    HttpResponse r{503, "application/json", json{{"error", e}}.dump()};
    r.headers = {{"Retry-After", "1"}};
    return r;
  }
  if (req.body.size() > Api::kMaxBodyBytes) return InvalidArgument("body", "is larger than 1 MiB");
  if (req.authorization.rfind("Bearer ", 0) != 0) {
    return Status(Code::kUnauthenticated, "missing bearer token");
  }
  std::optional<Caller> caller = control->Authenticate(req.authorization.substr(7));
  if (!caller) return Status(Code::kUnauthenticated, "unknown token");
  const std::vector<std::string> parts = Split(path);
  // A node-scoped token (an agent's) registers and syncs its own node, and nothing else.
  if (!caller->node.empty() && !(route->access == Access::kAgent && parts[2] == caller->node)) {
    return Status(Code::kPermissionDenied,
                  "a node token may only register and sync node " + caller->node);
  }
  Result<Body> body = Body::Parse(req.method == "POST" ? req.body : "");
  if (!body.ok()) return body.status();
  if ((route->access == Access::kAdmin && !caller->admin) ||
      (route->access == Access::kAgent && caller->node.empty() && !caller->admin)) {
    return Status(Code::kPermissionDenied, "this needs an admin token");
  }
  const size_t q = req.target.find('?');
  Call call(control, clock, path,
            q == std::string::npos ? std::map<std::string, std::string>()
                                   : ParseQuery(req.target.substr(q + 1)),
            *caller, std::move(*body), std::move(reply));
  call.raw_body = req.body;
  return route->handler(call);
}

}  // namespace

std::vector<std::pair<std::string, std::string>> ApiRoutes() {
  std::vector<std::pair<std::string, std::string>> out;
  for (const Route& r : kRoutes) out.emplace_back(r.path, r.method);
  return out;
}

void Api::Handle(const HttpRequest& req, std::function<void(HttpResponse)> done) {
  // Every request gets an id, a duration in the metrics and one structured log line.
  const int64_t id = next_request_id_.fetch_add(1) + 1;
  const int64_t t0 = ticker_ ? ticker_->Nanos() : 0;
  std::string path = req.target.substr(0, req.target.find('?'));
  // A path is "/" or segments each after one "/": "*", "x", "//a" and "/a/" name nothing.
  const bool well_formed = path == "/" || (!path.empty() && path[0] == '/' && path.back() != '/' &&
                                           path.find("//") == std::string::npos);
  const std::vector<const Route*> routes =
      well_formed ? MatchRoutes(Split(path)) : std::vector<const Route*>();
  auto reply = [this, id, t0, method = req.method,
                route_label = routes.empty() ? "unmatched" : routes.front()->path,
                done = std::move(done)](HttpResponse r) {
    int64_t ns = ticker_ ? ticker_->Nanos() - t0 : 0;
    Observe(method, route_label, r.status, ns);
    if (log_) log_(id, method, route_label, r.status, ns);
    done(std::move(r));
  };
  Answer answer = Dispatch(
      req, path, routes, control_, clock_, [this] { return ApiMetrics(); }, reply);
  if (answer.now_) reply(std::move(*answer.now_));
}

void Api::Observe(const std::string& method, const std::string& route, int status, int64_t ns) {
  std::string m = method == "GET" || method == "POST" || method == "DELETE" ? method : "other";
  std::lock_guard<std::mutex> lock(metrics_mu_);
  Histogram& h = request_ns_[m + " " + route + " " + std::to_string(status / 100) + "xx"];
  if (h.buckets.empty()) h.buckets.assign(kBuckets, 0);
  for (int b = 0; b < kBuckets; ++b) {
    if (ns <= (int64_t{100'000} << (2 * b))) ++h.buckets[b];
  }
  ++h.count;
  h.sum_ns += ns;
}

std::string Api::ApiMetrics() {
  std::lock_guard<std::mutex> lock(metrics_mu_);
  std::string o =
      "# HELP reservoir_api_request_duration_seconds API request duration.\n"
      "# TYPE reservoir_api_request_duration_seconds histogram\n";
  char buf[64];
  for (const auto& [key, h] : request_ns_) {
    size_t a = key.find(' '), b = key.rfind(' ');
    std::string labels = "method=\"" + key.substr(0, a) + "\",route=\"" +
                         key.substr(a + 1, b - a - 1) + "\",code=\"" + key.substr(b + 1) + "\"";
    for (int k = 0; k < kBuckets; ++k) {
      std::snprintf(buf, sizeof buf, "%g", static_cast<double>(int64_t{100'000} << (2 * k)) / 1e9);
      o += "reservoir_api_request_duration_seconds_bucket{" + labels + ",le=\"" + buf + "\"} " +
           std::to_string(h.buckets[k]) + "\n";
    }
    o += "reservoir_api_request_duration_seconds_bucket{" + labels + ",le=\"+Inf\"} " +
         std::to_string(h.count) + "\n";
    std::snprintf(buf, sizeof buf, "%.9f", h.sum_ns / 1e9);
    o += "reservoir_api_request_duration_seconds_sum{" + labels + "} " + buf + "\n";
    o += "reservoir_api_request_duration_seconds_count{" + labels + "} " + std::to_string(h.count) +
         "\n";
  }
  return o;
}

}  // namespace rsv::server
