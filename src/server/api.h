// server/api: the REST API under /v1. Parses and validates requests (unknown fields, wrong
// types, out-of-range values: a 4xx naming the field, and nothing changes), authenticates
// bearer tokens, scopes every read and write to the caller's tenant, and turns requests into
// ControlPlane commands and reads. One table lists every route (path template, method, who may
// call it, handler); a handler returns its answer, or hands the reply to the control plane, and
// nothing else, so every request gets exactly one reply (api_test.cc checks every route).
// No HTTP library types appear here.
#pragma once

#include <atomic>
#include <functional>
#include <map>
#include <mutex>
#include <string>
#include <vector>

#include "server/control.h"

namespace rsv::server {

struct HttpRequest {
  std::string method;
  std::string target;  // path and query
  std::string authorization;
  std::string body;
};

struct HttpResponse {
  HttpResponse() = default;
  HttpResponse(int s, std::string type, std::string b)
      : status(s), content_type(std::move(type)), body(std::move(b)) {}
  int status = 200;
  std::string content_type = "application/json";
  std::string body;
  std::string allow;                                         // the Allow header of a 405
  std::vector<std::pair<std::string, std::string>> headers;  // more: Link, security headers
};

// A new API token: `prefix` and 48 hex digits from /dev/urandom. Only its hash is stored.
std::string RandomToken(const std::string& prefix = "rsv_");

// An agent's advertised address: a host name, an IPv4 address or an IPv6 address (no port).
inline constexpr char kAddressRule[] =
    "must be a host name or an IP address (1-255 of A-Z a-z 0-9 . - : _)";
bool ValidAddress(const std::string& s);

// Every route the API answers: its path template ("{id}", "{name}") and method.
std::vector<std::pair<std::string, std::string>> ApiRoutes();

// The one table from Status codes to HTTP statuses.
int HttpStatusOf(Code code);
std::string ErrorBody(const Status& s);

// One structured log line per request: (request id, method, path, status, duration ns).
using RequestLog =
    std::function<void(int64_t, const std::string&, const std::string&, int, int64_t)>;

class Api {
 public:
  // `ticker` times requests for /metrics; `clock` sets long-poll deadlines; `log` may be empty.
  Api(ControlPlane* control, const Clock* clock, const Ticker* ticker, RequestLog log = {})
      : control_(control), clock_(clock), ticker_(ticker), log_(std::move(log)) {}
  // Calls `reply` exactly once, possibly later (writes reply after they are durable).
  void Handle(const HttpRequest& req, std::function<void(HttpResponse)> reply);
  static constexpr size_t kMaxBodyBytes = 1 << 20;

 private:
  void Observe(const std::string& method, const std::string& route, int status, int64_t ns);
  std::string ApiMetrics();

  static constexpr int kBuckets = 8;  // upper bounds 0.1 ms x 4^k
  struct Histogram {
    std::vector<int64_t> buckets;
    int64_t count = 0;
    int64_t sum_ns = 0;
  };
  ControlPlane* control_;
  const Clock* clock_;
  const Ticker* ticker_;
  RequestLog log_;
  std::atomic<int64_t> next_request_id_{0};
  std::mutex metrics_mu_;
  std::map<std::string, Histogram> request_ns_;
};

}  // namespace rsv::server
