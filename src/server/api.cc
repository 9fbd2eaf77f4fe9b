#include "server/api.h"

#include <cctype>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
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

// Every resource, its path template ("{id}": digits, "{name}": any segment) and the methods
// it answers. A path that matches no template is a 404; a method it does not answer, a 405 with
// `Allow`. Metrics are labelled by template, so unknown paths cannot grow them.
struct Route {
  const char* path;
  const char* methods;  // as in the Allow header
};
constexpr Route kRoutes[] = {
    {"/", "GET"},  // the dashboard (docs/dashboard.md) and its assets
    {"/assets/{name}", "GET"},
    {"/healthz", "GET"},
    {"/metrics", "GET"},
    {"/v1/tenants", "GET, POST"},
    {"/v1/tenants/{name}", "DELETE"},
    {"/v1/tokens", "GET, POST"},
    {"/v1/tokens/revoke", "POST"},
    {"/v1/pools", "GET"},
    {"/v1/nodes", "GET, POST"},
    {"/v1/nodes/{name}/register", "POST"},
    {"/v1/nodes/{name}/sync", "POST"},
    {"/v1/nodes/{name}/drain", "POST"},
    {"/v1/nodes/{name}/undrain", "POST"},
    {"/v1/reservations", "GET, POST"},
    {"/v1/reservations/{id}", "GET"},
    {"/v1/reservations/{id}/return", "POST"},
    {"/v1/jobs", "GET, POST"},
    {"/v1/jobs/{id}", "GET"},
    {"/v1/jobs/{id}/logs", "GET"},
    {"/v1/jobs/{id}/why", "GET"},
    {"/v1/jobs/{id}/cancel", "POST"},
    {"/v1/jobs/{id}/release", "POST"},
    {"/v1/jobs/{id}/exit", "POST"},
    {"/v1/market", "GET"},
    {"/v1/market/history", "GET"},
    {"/v1/ledger", "GET"},
    {"/v1/ledger/summary", "GET"},
    {"/v1/usage", "GET"},
    {"/v1/waste", "GET"},
    {"/v1/whoami", "GET"},
    {"/v1/events", "GET"},
};

constexpr char kNodeNameRule[] =
    "must be 1-64 of A-Z a-z 0-9 . _ -, starting with a letter or digit";
bool ValidNodeName(const std::string& s) {
  return !s.empty() && s.size() <= 64 && std::isalnum(static_cast<unsigned char>(s[0])) &&
         s.find_first_not_of("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-") ==
             std::string::npos;
}

const Route* MatchRoute(const std::vector<std::string>& parts) {
  static const std::vector<std::vector<std::string>> patterns = [] {
    std::vector<std::vector<std::string>> out;
    for (const Route& r : kRoutes) out.push_back(Split(r.path));
    return out;
  }();
  for (size_t k = 0; k < patterns.size(); ++k) {
    const Route& r = kRoutes[k];
    const std::vector<std::string>& want = patterns[k];
    if (want.size() != parts.size()) continue;
    bool ok = true;
    for (size_t i = 0; i < want.size() && ok; ++i) {
      if (want[i] == "{id}") {
        ok = !parts[i].empty() && parts[i].size() <= 9 &&
             parts[i].find_first_not_of("0123456789") == std::string::npos;
      } else if (want[i] != "{name}") {
        ok = want[i] == parts[i];
      }
    }
    if (ok) return &r;
  }
  return nullptr;
}

bool Allows(const Route& r, const std::string& method) {
  std::string_view m(r.methods);
  size_t pos = 0;
  while (pos < m.size()) {
    size_t comma = m.find(", ", pos);
    if (comma == std::string_view::npos) comma = m.size();
    if (m.substr(pos, comma - pos) == method) return true;
    pos = comma + 2;
  }
  return false;
}

HttpResponse Error(const Status& s) {
  return HttpResponse{HttpStatusOf(s.code()), "application/json", ErrorBody(s)};
}

HttpResponse ToHttp(const Result<Reply>& r) {
  return r.ok() ? HttpResponse{r->status, "application/json", r->body} : Error(r.status());
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

void Api::Handle(const HttpRequest& req, std::function<void(HttpResponse)> done) {
  // Every request gets an id, a duration in the metrics and one structured log line.
  const int64_t id = next_request_id_.fetch_add(1) + 1;
  const int64_t t0 = ticker_ ? ticker_->Nanos() : 0;
  std::string path = req.target.substr(0, req.target.find('?'));
  const Route* route = MatchRoute(Split(path));
  auto reply = [this, id, t0, method = req.method, route_label = route ? route->path : "unmatched",
                done = std::move(done)](HttpResponse r) {
    int64_t ns = ticker_ ? ticker_->Nanos() - t0 : 0;
    Observe(method, route_label, r.status, ns);
    if (log_) log_(id, method, route_label, r.status, ns);
    done(std::move(r));
  };
  if (!route) {
    reply(Error(NotFound("no such resource: " + Printable(path, 200))));
    return;
  }
  if (!Allows(*route, req.method)) {
    HttpResponse r = Error(Status(Code::kInvalidArgument,
                                  Printable(req.method, 20) + " is not allowed on " + route->path +
                                      " (allowed: " + route->methods + ")",
                                  "method"));
    r.status = 405;
    r.allow = route->methods;
    reply(std::move(r));
    return;
  }
  std::map<std::string, std::string> query =
      req.target.find('?') == std::string::npos
          ? std::map<std::string, std::string>()
          : ParseQuery(req.target.substr(req.target.find('?') + 1));
  if (std::string_view(route->path) == "/" || std::string_view(route->path) == "/assets/{name}") {
    reply(Asset(path == "/" ? "index.html" : path.substr(8)));
    return;
  }
  const auto [leader, epoch] = control_->Leader();
  if (path == "/healthz") {
    json h = {{"status", "ok"},
              {"role", control_->leading() ? "leader" : "standby"},
              {"applied_seq", control_->applied_seq()}};
    if (!leader.empty()) h["leader"] = leader;
    if (epoch > 0) h["epoch"] = epoch;
    reply(HttpResponse{200, "application/json", h.dump()});
    return;
  }
  // A standby serves nothing but its health and metrics: its state trails the leader's. It
  // names the leader, which clients given several servers turn to (docs/ha.md).
  if (path != "/metrics" && !control_->leading()) {
    const bool known = !leader.empty() && !control_->stepped_down();
    json e = {{"code", "unavailable"},
              {"message", known ? "this server is a standby; the leader is " + leader
                                : "this server is not the leader; another server leads or is "
                                  "taking over"}};
    if (known) e["leader"] = leader;
    HttpResponse r{503, "application/json", json{{"error", e}}.dump()};
    r.headers = {{"Retry-After", "1"}};
    reply(std::move(r));
    return;
  }
  if (path == "/metrics") {
    reply(HttpResponse{200, "text/plain; version=0.0.4", control_->Metrics() + ApiMetrics()});
    return;
  }
  if (req.body.size() > kMaxBodyBytes) {
    reply(Error(InvalidArgument("body", "is larger than 1 MiB")));
    return;
  }
  // Authentication.
  std::string auth = req.authorization;
  if (auth.rfind("Bearer ", 0) != 0) {
    reply(Error(Status(Code::kUnauthenticated, "missing bearer token")));
    return;
  }
  std::optional<Caller> caller = control_->Authenticate(auth.substr(7));
  if (!caller) {
    reply(Error(Status(Code::kUnauthenticated, "unknown token")));
    return;
  }
  std::vector<std::string> parts = Split(path);
  if (parts.empty() || parts[0] != "v1") {
    reply(Error(NotFound("no such resource: " + path)));
    return;
  }
  parts.erase(parts.begin());
  // A node-scoped token (an agent's) registers and syncs its own node, and nothing else.
  if (!caller->node.empty()) {
    bool own = parts.size() == 3 && parts[0] == "nodes" && parts[1] == caller->node &&
               (parts[2] == "register" || parts[2] == "sync");
    if (!own) {
      reply(Error(Status(Code::kPermissionDenied,
                         "a node token may only register and sync node " + caller->node)));
      return;
    }
  }
  auto admin_only = [&]() -> bool {
    if (caller->admin) return true;
    reply(Error(Status(Code::kPermissionDenied, "this needs an admin token")));
    return false;
  };
  auto execute = [&](const std::string& kind, const json& body) {
    // Path segments are client bytes: what is not UTF-8 is replaced (and then names nothing).
    control_->Execute(kind, body.dump(-1, ' ', false, json::error_handler_t::replace),
                      [reply](Result<Reply> r) { reply(ToHttp(r)); });
  };
  auto read = [&](const std::string& what) {
    std::string next;
    Result<std::string> r = control_->Read(what, *caller, query, &next);
    if (!r.ok()) return reply(Error(r.status()));
    HttpResponse out{200, "application/json", *r};
    if (!next.empty()) {  // RFC 8288: the same query, from the next page's cursor
      std::string q;
      const char* key = query.count("order") && query.at("order") == "desc" ? "before" : "after";
      for (const auto& [k, v] : query) {
        if (k != "after" && k != "before") q += k + "=" + v + "&";
      }
      out.headers.emplace_back("Link", "<" + path + "?" + q + key + "=" + next + ">; rel=\"next\"");
    }
    reply(std::move(out));
  };
  auto id_of = [&](const std::string& s, int64_t* out) {
    if (s.empty() || s.size() > 9 || s.find_first_not_of("0123456789") != std::string::npos) {
      reply(Error(NotFound("no such resource")));
      return false;
    }
    *out = std::stoll(s);
    return true;
  };
  const std::string& m = req.method;
  const std::string first = parts.empty() ? "" : parts[0];
  Result<Body> parsed = Body::Parse(m == "POST" ? req.body : "");
  if (!parsed.ok()) {
    reply(Error(parsed.status()));
    return;
  }
  Body& body = *parsed;
  auto fail_on = [&](const Status& s) {
    if (s.ok()) return false;
    reply(Error(s));
    return true;
  };
#define RSV_API_TRY(lhs, expr)           \
  auto lhs##_r = (expr);                 \
  if (fail_on(lhs##_r.status())) return; \
  auto lhs = std::move(lhs##_r).value()

  if (first == "tenants" && parts.size() == 1) {
    if (m == "GET") return read("tenants");
    if (m != "POST" || !admin_only()) {
      if (m != "POST") reply(Error(Status(Code::kInvalidArgument, "method not allowed", "method")));
      return;
    }
    RSV_API_TRY(name, body.String("name", true));
    if (fail_on(body.NoUnknownFields())) return;
    return execute("tenant", json{{"name", name}});
  }
  if (first == "tenants" && parts.size() == 2) {  // DELETE
    if (!admin_only()) return;
    return execute("delete_tenant", json{{"name", parts[1]}});
  }
  if (first == "tokens" && parts.size() == 1 && m == "GET") {
    if (!admin_only()) return;
    return read("tokens");
  }
  if (first == "tokens" && parts.size() == 2) {  // POST /v1/tokens/revoke
    if (!admin_only()) return;
    RSV_API_TRY(token, body.String("token", false));
    RSV_API_TRY(token_id, body.String("id", false));
    if (fail_on(body.NoUnknownFields())) return;
    if (token.empty() == token_id.empty())
      return reply(Error(InvalidArgument("token", "give either token or id (not both)")));
    if (!token_id.empty() && (token_id.size() != 12 ||
                              token_id.find_first_not_of("0123456789abcdef") != std::string::npos))
      return reply(
          Error(InvalidArgument("id", "must be the 12 hex digits `reservoir token --list` shows")));
    return execute("revoke",
                   token.empty() ? json{{"id", token_id}} : json{{"hash", Sha256Hex(token)}});
  }
  if (first == "tokens" && parts.size() == 1 && m == "POST") {
    if (!admin_only()) return;
    RSV_API_TRY(tenant, body.String("tenant", false));
    RSV_API_TRY(admin, body.Bool("admin", false));
    RSV_API_TRY(node, body.String("node", false));
    if (fail_on(body.NoUnknownFields())) return;
    if (int(admin) + int(!tenant.empty()) + int(!node.empty()) != 1) {
      reply(Error(InvalidArgument("tenant", "give exactly one of tenant, node or admin: true")));
      return;
    }
    if (!tenant.empty() && !control_->FindTenant(tenant)) {
      reply(Error(InvalidArgument("tenant", "unknown tenant '" + tenant + "'")));
      return;
    }
    if (!node.empty() && !ValidNodeName(node)) {
      reply(Error(InvalidArgument("node", kNodeNameRule)));
      return;
    }
    std::string token = RandomToken(node.empty() ? "rsv_" : "rsv_node_");
    control_->Execute(
        "token",
        json{{"tenant", tenant}, {"admin", admin}, {"node", node}, {"hash", Sha256Hex(token)}}
            .dump(),
        [reply, token](Result<Reply> r) {
          if (!r.ok()) return reply(Error(r.status()));
          json out = json::parse(r->body);
          out["token"] = token;  // shown once; only its hash is stored
          reply(HttpResponse{201, "application/json", out.dump()});
        });
    return;
  }
  if (first == "pools" && parts.size() == 1 && m == "GET") return read("pools");
  if (first == "nodes" && parts.size() == 1) {
    if (m == "GET") return read("nodes");
    if (m != "POST" || !admin_only()) return;
    RSV_API_TRY(name, body.String("name", true));
    RSV_API_TRY(pool, body.String("pool", true));
    RSV_API_TRY(gpus, body.Int("gpus", true, 0, 1, kMaxGpusPerNode));
    RSV_API_TRY(topology, body.String("topology", false));
    if (fail_on(body.NoUnknownFields())) return;
    return execute("node",
                   json{{"name", name}, {"pool", pool}, {"gpus", gpus}, {"topology", topology}});
  }
  if (first == "nodes" && parts.size() == 3 && m == "POST" && parts[2] == "register") {
    if (caller->node.empty() && !admin_only()) return;
    if (!ValidNodeName(parts[1])) return reply(Error(InvalidArgument("node", kNodeNameRule)));
    RSV_API_TRY(pool, body.String("pool", true));
    RSV_API_TRY(gpus, body.Int("gpus", true, 0, 1, kMaxGpusPerNode));
    RSV_API_TRY(topology, body.String("topology", false));
    RSV_API_TRY(probe, body.String("probe", false));
    RSV_API_TRY(cgroups, body.String("cgroups", false, 1024));
    RSV_API_TRY(address, body.String("address", false));
    json inventory = body.Raw("inventory");
    if (fail_on(body.NoUnknownFields())) return;
    if (!inventory.is_null() && !inventory.is_array())
      return reply(Error(InvalidArgument("inventory", "must be an array of GPUs")));
    if (!address.empty() && !ValidAddress(address))
      return reply(Error(InvalidArgument("address", kAddressRule)));
    return execute("register",
                   json{{"name", parts[1]},
                        {"address", address.empty() ? parts[1] : address},
                        {"pool", pool},
                        {"gpus", gpus},
                        {"topology", topology},
                        {"probe", probe},
                        {"cgroups", cgroups},
                        {"inventory", inventory.is_null() ? json::array() : inventory}});
  }
  if (first == "nodes" && parts.size() == 3 && m == "POST" && parts[2] == "sync") {
    if (caller->node.empty() && !admin_only()) return;
    RSV_API_TRY(wait, QueryInt(query, "wait", 0, 60));
    control_->Sync(parts[1], req.body, clock_->Now() + Duration::Seconds(wait),
                   [reply](Result<Reply> r) { reply(ToHttp(r)); });
    return;
  }
  if (first == "nodes" && parts.size() == 3 && m == "POST" &&
      (parts[2] == "drain" || parts[2] == "undrain")) {
    if (!admin_only()) return;
    return execute("node_state",
                   json{{"node", parts[1]}, {"state", parts[2] == "drain" ? "draining" : "ready"}});
  }
  if (first == "reservations" && parts.size() == 1) {
    if (m == "GET") return read("reservations");
    if (m != "POST") return;
    RSV_API_TRY(pool, body.String("pool", true));
    RSV_API_TRY(gpus, body.Int("gpus", true, 0, 1, 1'000'000));
    RSV_API_TRY(start, body.Int("start_us", false, 0, 0, int64_t{1} << 60));
    RSV_API_TRY(duration, body.DurationField("duration"));
    RSV_API_TRY(end, body.Int("end_us", false, 0, 0, int64_t{1} << 60));
    RSV_API_TRY(lend, body.Bool("lend", true));
    RSV_API_TRY(quote, body.Bool("quote_only", false));
    RSV_API_TRY(tenant, body.String("tenant", false));
    if (fail_on(body.NoUnknownFields())) return;
    std::string who = caller->tenant_name;
    if (caller->admin) {
      if (tenant.empty())
        return reply(Error(InvalidArgument("tenant", "is required for admin callers")));
      who = tenant;
    } else if (!tenant.empty() && tenant != who) {
      return reply(
          Error(Status(Code::kPermissionDenied, "cannot reserve for another tenant", "tenant")));
    }
    if (!duration && end == 0)
      return reply(Error(InvalidArgument("end_us", "end_us or duration is required")));
    // A start in the past is a mistake, not "now" (0 or absent is now); a minute of slack for
    // clients whose clocks differ a little. Checked here, not when the command is applied, so
    // that logs written before this check still replay.
    if (start > 0 && start < (clock_->Now() - Duration::Seconds(60)).micros())
      return reply(Error(InvalidArgument("start_us", "is in the past (0 or absent: now)")));
    json cmd = {{"tenant", who},     {"pool", pool}, {"gpus", gpus},
                {"start_us", start}, {"lend", lend}, {"quote_only", quote}};
    if (duration) {
      cmd["duration_us"] = duration->micros();
    } else {
      cmd["end_us"] = end;
    }
    return execute("reserve", cmd);
  }
  if (first == "reservations" && parts.size() >= 2) {
    int64_t id = 0;
    if (!id_of(parts[1], &id)) return;
    if (parts.size() == 2 && m == "GET") return read("reservation/" + parts[1]);
    if (parts.size() == 3 && parts[2] == "return" && m == "POST") {
      return execute("return", json{{"reservation", id},
                                    {"caller", caller->admin ? 0 : caller->tenant.value()}});
    }
  }
  if (first == "jobs" && parts.size() == 1) {
    if (m == "GET") return read("jobs");
    if (m != "POST") return;
    RSV_API_TRY(name, body.String("name", false));
    RSV_API_TRY(pool, body.String("pool", true));
    // A number (rigid) or {"min", "max", "step"} (elastic; docs/market.md, "Elastic jobs").
    json range = body.Raw("gpus");
    int64_t gpus = 0, max_gpus = 0, step = 0;
    auto whole = [](const json& v, int64_t* out) {
      if (!v.is_number_integer() || v.get<int64_t>() < 1 || v.get<int64_t>() > 1'000'000)
        return false;
      *out = v.get<int64_t>();
      return true;
    };
    if (range.is_object()) {
      for (const auto& [k, v] : range.items()) {
        if (k != "min" && k != "max" && k != "step")
          return reply(Error(InvalidArgument("gpus." + k, "unknown field (min, max, step)")));
      }
      if (!range.contains("min") || !whole(range["min"], &gpus))
        return reply(Error(InvalidArgument("gpus.min", "must be an integer from 1 to 1000000")));
      if (!range.contains("max") || !whole(range["max"], &max_gpus))
        return reply(Error(InvalidArgument("gpus.max", "must be an integer from 1 to 1000000")));
      if (range.contains("step") && !whole(range["step"], &step))
        return reply(Error(InvalidArgument("gpus.step", "must be an integer from 1 to 1000000")));
      if (max_gpus < gpus) return reply(Error(InvalidArgument("gpus.max", "must be at least min")));
    } else if (range.is_null()) {
      return reply(Error(InvalidArgument("gpus", "is required")));
    } else if (!whole(range, &gpus)) {
      return reply(Error(InvalidArgument(
          "gpus", "must be an integer from 1 to 1000000 or {\"min\", \"max\", \"step\"}")));
    }
    RSV_API_TRY(resize_mode, body.String("resize_mode", false));
    if (!resize_mode.empty() && !ParseResizeMode(resize_mode).ok())
      return reply(Error(InvalidArgument("resize_mode", "must be restart or signal")));
    RSV_API_TRY(cooldown, body.DurationField("resize_cooldown"));
    RSV_API_TRY(tier, body.String("tier", false));
    RSV_API_TRY(limit, body.MoneyField("limit_price", false));
    RSV_API_TRY(fallback, body.MoneyField("fallback_limit", false));
    RSV_API_TRY(notice, body.DurationField("notice"));
    RSV_API_TRY(time_limit, body.DurationField("time_limit"));
    if (time_limit && (time_limit->micros() < 1'000'000 || time_limit->seconds() > 3650 * 86400))
      return reply(Error(InvalidArgument("time_limit", "must be from 1s to 3650d")));
    RSV_API_TRY(restarts, body.Int("max_restarts", false, 0, -1, 1000));
    RSV_API_TRY(command, body.String("command", false, 65536));
    RSV_API_TRY(workdir, body.String("workdir", false, 4096));
    RSV_API_TRY(tenant, body.String("tenant", false));
    RSV_API_TRY(cpu_millis, body.Int("cpu_millis", false, 0, 1, 1'000'000));
    RSV_API_TRY(memory_mib, body.Int("memory_mib", false, 0, 1, int64_t{1} << 30));
    json env = body.Raw("env");
    json deps = body.Raw("dependencies");
    if (fail_on(body.NoUnknownFields())) return;
    std::string t = tier.empty() ? "spot" : tier;
    if (!ParseTier(t).ok())
      return reply(Error(InvalidArgument("tier", "must be reserved, spot or auto")));
    if (t != "reserved" && !limit)
      return reply(Error(InvalidArgument("limit_price", "is required for spot and auto jobs")));
    if (!env.is_null() &&
        (!env.is_array() || std::any_of(env.begin(), env.end(), [](const json& e) {
          return !e.is_string() || e.get<std::string>().find('=') == std::string::npos;
        }))) {
      return reply(Error(InvalidArgument("env", "must be an array of \"NAME=value\" strings")));
    }
    json dep_cmd = json::array();
    if (!deps.is_null()) {
      if (!deps.is_array())
        return reply(Error(InvalidArgument("dependencies", "must be an array")));
      for (const json& d : deps) {
        if (!d.is_object() || !d.contains("job") || !d["job"].is_number_integer() ||
            (d.contains("kind") && d["kind"] != "afterok" && d["kind"] != "afterany")) {
          return reply(Error(InvalidArgument(
              "dependencies", "entries are {\"kind\": \"afterok\"|\"afterany\", \"job\": ID}")));
        }
        dep_cmd.push_back({{"kind", d.value("kind", "afterok")}, {"job", d["job"]}});
      }
    }
    std::string who = caller->tenant_name;
    if (caller->admin) {
      if (tenant.empty())
        return reply(Error(InvalidArgument("tenant", "is required for admin callers")));
      who = tenant;
    } else if (!tenant.empty() && tenant != who) {
      return reply(
          Error(Status(Code::kPermissionDenied, "cannot submit for another tenant", "tenant")));
    }
    json cmd = {{"tenant", who},      {"pool", pool},       {"gpus", gpus},
                {"tier", t},          {"name", name},       {"max_restarts", restarts},
                {"command", command}, {"workdir", workdir}, {"dependencies", dep_cmd}};
    if (limit) cmd["limit_micros"] = limit->micros();
    if (fallback) cmd["fallback_micros"] = fallback->micros();
    if (notice) cmd["notice_s"] = notice->seconds();
    if (time_limit) cmd["time_limit_s"] = time_limit->seconds();
    if (!env.is_null()) cmd["env"] = env;
    if (cpu_millis > 0) cmd["cpu_millis"] = cpu_millis;
    if (memory_mib > 0) cmd["memory_mib"] = memory_mib;
    if (max_gpus > 0) cmd["max_gpus"] = max_gpus;
    if (step > 0) cmd["gpu_step"] = step;
    if (!resize_mode.empty()) cmd["resize_mode"] = resize_mode;
    if (cooldown) cmd["resize_cooldown_s"] = cooldown->seconds();
    return execute("submit", cmd);
  }
  if (first == "jobs" && parts.size() >= 2) {
    int64_t id = 0;
    if (!id_of(parts[1], &id)) return;
    if (parts.size() == 2 && m == "GET") return read("job/" + parts[1]);
    if (parts.size() == 3 && parts[2] == "why" && m == "GET") {
      return read("job/" + std::to_string(id) + "/why");
    }
    if (parts.size() == 3 && parts[2] == "logs" && m == "GET") {
      RSV_API_TRY(attempt, QueryInt(query, "attempt", 1, 1'000'000));
      RSV_API_TRY(offset, QueryInt(query, "offset", 0, int64_t{1} << 50));
      RSV_API_TRY(wait, QueryInt(query, "wait", 0, 60));
      auto node = query.find("node");
      const std::string member = node == query.end() ? "" : node->second;
      if (!member.empty() && !ValidNodeName(member))
        return reply(Error(InvalidArgument("node", kNodeNameRule)));
      control_->Logs(*caller, id, static_cast<int32_t>(attempt), member, offset,
                     clock_->Now() + Duration::Seconds(wait),
                     [reply](Result<Reply> r) { reply(ToHttp(r)); });
      return;
    }
    if (parts.size() == 3 && m == "POST" &&
        (parts[2] == "cancel" || parts[2] == "release" || parts[2] == "exit")) {
      json cmd = {{"job", id}, {"caller", caller->admin ? 0 : caller->tenant.value()}};
      if (parts[2] == "exit") {
        if (!admin_only()) return;
        RSV_API_TRY(success, body.Bool("success", true));
        cmd["success"] = success;
      }
      if (fail_on(body.NoUnknownFields())) return;
      return execute(parts[2], cmd);
    }
  }
  if (first == "market" && m == "GET") {
    if (parts.size() == 1) return read("market");
    if (parts.size() == 2 && parts[1] == "history") return read("market/history");
  }
  if (first == "ledger" && parts.size() == 1 && m == "GET") return read("ledger");
  if (first == "ledger" && parts.size() == 2 && m == "GET") return read("ledger/summary");
  if (first == "usage" && m == "GET") return read("usage");
  if (first == "waste" && m == "GET") return read("waste");
  if (first == "whoami" && m == "GET") {
    json who = {{"admin", caller->admin}};
    if (!caller->tenant_name.empty()) who["tenant"] = caller->tenant_name;
    if (!caller->node.empty()) who["node"] = caller->node;
    return reply(HttpResponse{200, "application/json", who.dump()});
  }
  if (first == "events" && parts.size() == 1 && m == "GET") {
    RSV_API_TRY(since, QueryInt(query, "since", 0, int64_t{1} << 50));
    RSV_API_TRY(wait, QueryInt(query, "wait", 0, 60));
    RSV_API_TRY(job, QueryInt(query, "job", 0, 1'000'000'000));
    auto respond = [reply](std::string events, int64_t last) {
      reply(HttpResponse{200, "application/json",
                         "{\"last_seq\":" + std::to_string(last) + ",\"events\":" + events + "}"});
    };
    if (wait == 0) {
      int64_t last = 0;
      std::string events = control_->EventsSince(since, *caller, &last, job);
      return respond(std::move(events), last);
    }
    control_->WaitForEvents(since, *caller, clock_->Now() + Duration::Seconds(wait),
                            static_cast<uint32_t>(job), respond);
    return;
  }
#undef RSV_API_TRY
  reply(Error(NotFound("no such resource: " + req.method + " " + path)));
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
