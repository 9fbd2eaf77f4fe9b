// server/api: the REST API under /v1. Parses and validates requests (unknown fields, wrong
// types, out-of-range values: a 4xx naming the field, and nothing changes), authenticates
// bearer tokens, scopes every read and write to the caller's tenant, and turns requests into
// ControlPlane commands and reads. No HTTP library types appear here.
#pragma once

#include <functional>
#include <string>

#include "server/control.h"

namespace rsv::server {

struct HttpRequest {
  std::string method;
  std::string target;  // path and query
  std::string authorization;
  std::string body;
};

struct HttpResponse {
  int status = 200;
  std::string content_type = "application/json";
  std::string body;
};

// The one table from Status codes to HTTP statuses.
int HttpStatusOf(Code code);
std::string ErrorBody(const Status& s);

class Api {
 public:
  explicit Api(ControlPlane* control) : control_(control) {}
  // Calls `reply` exactly once, possibly later (writes reply after they are durable).
  void Handle(const HttpRequest& req, std::function<void(HttpResponse)> reply);
  static constexpr size_t kMaxBodyBytes = 1 << 20;

 private:
  ControlPlane* control_;
};

}  // namespace rsv::server
