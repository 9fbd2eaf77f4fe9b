// common/http_client: one blocking HTTP/1.1 request over a plain socket (Connection: close), for
// the CLI and the agent. Optionally interruptible: when `interrupt_fd` becomes readable the
// request is abandoned (the agent's long-poll gives way to a job that just exited).
#pragma once

#include <string>
#include <vector>

#include "common/clock.h"

namespace rsv {

struct HttpReply {
  int status = 0;  // 0: no reply (see error)
  std::string body;
  std::string error;
  bool interrupted = false;
  bool refused = false;    // nothing listens at the address (ECONNREFUSED)
  bool connected = false;  // false: the request was never sent
};

// `url` is "http://host[:port]"; `path` includes any query. timeout_ms < 0: no limit.
HttpReply HttpCall(const std::string& url, const std::string& method, const std::string& path,
                   const std::string& token, const std::string& body, int interrupt_fd = -1,
                   int timeout_ms = -1);

// A leader and its standbys (docs/ha.md), given as "URL1,URL2,...". A call goes to the server
// that answered the last one; when that server cannot be reached, or answers as a standby (503
// naming the leader), the call moves to the leader it names or the next server, round the list
// until one leads or `patience_ms` runs out (a takeover takes up to the lease, 5 s by default).
// A request is sent again only when no server could have applied it: never connected, or
// refused by a standby (or by a leader that stepped down: "not recorded"). A call that was sent
// and timed out is not sent again, unless it is a GET (a read); that server is skipped for a
// while (a frozen leader accepts connections and answers nothing), even when a standby still
// names it.
// A reply that reached no leader is `refused` when every server refused the connection. Not
// thread-safe: one per thread.
class ServerSet {
 public:
  explicit ServerSet(const std::string& urls, int patience_ms = 15000);
  HttpReply Call(const std::string& method, const std::string& path, const std::string& token,
                 const std::string& body, int interrupt_fd = -1, int timeout_ms = -1);
  // The server the next call goes to first.
  const std::string& current() const { return urls_[current_]; }
  const std::vector<std::string>& urls() const { return urls_; }

 private:
  static constexpr size_t kNone = static_cast<size_t>(-1);
  std::vector<std::string> urls_;
  size_t current_ = 0;
  size_t suspect_ = kNone;  // the server whose last call timed out: skipped until suspect_until_
  Timestamp suspect_until_;
  // Long enough for a standby to take over from a frozen leader (a lease, 5 s by default).
  static constexpr Duration kSuspectFor = Duration::Seconds(10);
  int patience_ms_;
  SystemClock clock_;
};

// Why `urls` ("URL1,URL2,...") is not a list of http://HOST[:PORT] URLs; empty when it is.
std::string BadServerUrls(const std::string& urls);

// The leader a standby's 503 reply names ("" when the reply is not a standby's).
std::string StandbyLeader(const HttpReply& r);
bool IsStandbyReply(const HttpReply& r);

// The address of this host that packets to the server at `url` leave from (the route's source,
// found without sending anything), as text: what peers on the same network can reach. Empty
// when the server's host does not resolve or no route leads there.
std::string LocalAddressToward(const std::string& url);

}  // namespace rsv
