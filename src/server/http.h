// server/http: an asynchronous HTTP/1.1 server on Boost.Beast. A few threads serve any number
// of idle keep-alive connections. Everything Beast stays inside http.cc.
#pragma once

#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "common/status.h"
#include "server/api.h"

namespace rsv::server {

// What one client may hold. A connection must deliver each request whole within
// `request_timeout_s` (slow or idle clients are cut off); beyond `max_connections`, a new
// connection evicts the one that has waited longest for its next request, so idle sockets cannot
// lock others out. Limits on a request's line and headers answer 414 and 431.
struct HttpLimits {
  int max_connections = 4096;
  int request_timeout_s = 30;
  static constexpr size_t kMaxTargetBytes = 8 << 10;
  static constexpr size_t kMaxFieldBytes = 8 << 10;
  static constexpr size_t kMaxFields = 100;
  static constexpr size_t kMaxHeaderBytes = 64 << 10;  // request line and headers together
};

// How a connection splits the bytes it receives into requests (the same code serves sockets).
// Each request is either one to serve or, when malformed, the error reply (400, 414, 431) the
// connection sends before it closes; every request gets exactly one of the two.
struct FramedRequest {
  HttpRequest request;
  std::optional<HttpResponse> error;
  bool keep_alive = false;  // false: the connection closes after this reply
};
// The requests in `bytes` as a client would have sent them on one connection, up to the first
// that closes it; a request cut off at the end is dropped (the client went away).
std::vector<FramedRequest> FrameRequests(std::string_view bytes);

class HttpServer {
 public:
  HttpServer();
  ~HttpServer();
  // Binds "host:port" (port 0 picks a free one); returns the bound port.
  Result<int> Listen(const std::string& address, Api* api, HttpLimits limits = {});
  // Connections open now (for tests and metrics).
  int connections() const;
  // Serves on `threads` threads until Stop(); returns when they have finished.
  void Run(int threads);
  void Stop();
  // Runs `fn` every `period_ms` on the server's threads (the scheduling tick).
  void Every(int period_ms, std::function<void()> fn);

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace rsv::server
