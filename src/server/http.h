// server/http: an asynchronous HTTP/1.1 server on Boost.Beast. A few threads serve any number
// of idle keep-alive connections. Everything Beast stays inside http.cc.
#pragma once

#include <functional>
#include <memory>
#include <string>

#include "common/status.h"
#include "server/api.h"

namespace rsv::server {

class HttpServer {
 public:
  HttpServer();
  ~HttpServer();
  // Binds "host:port" (port 0 picks a free one); returns the bound port.
  Result<int> Listen(const std::string& address, Api* api);
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
