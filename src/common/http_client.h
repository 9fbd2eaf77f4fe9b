// common/http_client: one blocking HTTP/1.1 request over a plain socket (Connection: close), for
// the CLI and the agent. Optionally interruptible: when `interrupt_fd` becomes readable the
// request is abandoned (the agent's long-poll gives way to a job that just exited).
#pragma once

#include <string>

namespace rsv {

struct HttpReply {
  int status = 0;  // 0: no reply (see error)
  std::string body;
  std::string error;
  bool interrupted = false;
  bool refused = false;  // nothing listens at the address (ECONNREFUSED)
};

// `url` is "http://host[:port]"; `path` includes any query. timeout_ms < 0: no limit.
HttpReply HttpCall(const std::string& url, const std::string& method, const std::string& path,
                   const std::string& token, const std::string& body, int interrupt_fd = -1,
                   int timeout_ms = -1);

// The address of this host that packets to the server at `url` leave from (the route's source,
// found without sending anything), as text: what peers on the same network can reach. Empty
// when the server's host does not resolve or no route leads there.
std::string LocalAddressToward(const std::string& url);

}  // namespace rsv
