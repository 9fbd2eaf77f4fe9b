#include "common/http_client.h"

#include <arpa/inet.h>
#include <netdb.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdlib>

namespace rsv {
namespace {

constexpr int kConnectTimeoutMs = 5000;
constexpr int kHealthCheckMs = 1000;  // a suspect server's health check (ServerSet)

// Waits until `fd` is ready for `events`; false on interrupt or timeout (sets the reply).
bool WaitFor(int fd, short events, int interrupt_fd, int timeout_ms, HttpReply* r) {
  pollfd fds[2] = {{fd, events, 0}, {interrupt_fd, POLLIN, 0}};
  int n;
  // A signal (the agent's SIGCHLD when a job exits) is not the server's doing: wait on.
  while ((n = ::poll(fds, interrupt_fd >= 0 ? 2 : 1, timeout_ms)) < 0 && errno == EINTR) {
  }
  if (n < 0) {
    r->error = "poll failed";
    return false;
  }
  if (n == 0) {
    r->error = "timed out";
    return false;
  }
  if (n > 0 && interrupt_fd >= 0 && (fds[1].revents & POLLIN)) {
    r->error = "interrupted";
    r->interrupted = true;
    return false;
  }
  return n > 0;
}

// "http://host[:port]/..." split into host and port ("80" when none).
void SplitUrl(const std::string& url, std::string* hostport, std::string* host, std::string* port) {
  *hostport = url.substr(url.rfind("http://", 0) == 0 ? 7 : 0);
  *hostport = hostport->substr(0, hostport->find('/'));
  size_t colon = hostport->rfind(':');
  *host = colon == std::string::npos ? *hostport : hostport->substr(0, colon);
  *port = colon == std::string::npos ? "80" : hostport->substr(colon + 1);
}

}  // namespace

std::string LocalAddressToward(const std::string& url) {
  std::string hostport, host, port;
  SplitUrl(url, &hostport, &host, &port);
  if (host.size() > 2 && host.front() == '[' && host.back() == ']')
    host = host.substr(1, host.size() - 2);
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_DGRAM;
  addrinfo* res = nullptr;
  if (getaddrinfo(host.c_str(), port.c_str(), &hints, &res) != 0 || !res) return "";
  std::string out;
  for (addrinfo* a = res; a && out.empty(); a = a->ai_next) {
    // Connecting a UDP socket only picks the route: nothing is sent.
    int fd = ::socket(a->ai_family, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (fd < 0) continue;
    sockaddr_storage local{};
    socklen_t len = sizeof local;
    if (::connect(fd, a->ai_addr, a->ai_addrlen) == 0 &&
        ::getsockname(fd, reinterpret_cast<sockaddr*>(&local), &len) == 0) {
      char text[INET6_ADDRSTRLEN] = {};
      const void* bytes =
          local.ss_family == AF_INET
              ? static_cast<const void*>(&reinterpret_cast<sockaddr_in*>(&local)->sin_addr)
              : static_cast<const void*>(&reinterpret_cast<sockaddr_in6*>(&local)->sin6_addr);
      if (::inet_ntop(local.ss_family, bytes, text, sizeof text)) out = text;
    }
    ::close(fd);
  }
  freeaddrinfo(res);
  return out;
}

HttpReply HttpCall(const std::string& url, const std::string& method, const std::string& path,
                   const std::string& token, const std::string& body, int interrupt_fd,
                   int timeout_ms) {
  HttpReply r;
  if (url.rfind("http://", 0) != 0) {
    r.error = "the server URL must start with http:// (got '" + url + "')";
    return r;
  }
  std::string hostport, host, port;
  SplitUrl(url, &hostport, &host, &port);
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  addrinfo* res = nullptr;
  if (getaddrinfo(host.c_str(), port.c_str(), &hints, &res) != 0 || !res) {
    r.error = "cannot resolve " + host;
    return r;
  }
  int fd = -1;
  bool all_refused = true;
  // A host that is down answers nothing: connecting gives up after kConnectTimeoutMs (or the
  // call's own timeout, if shorter), so a list of servers moves on to the next.
  const int connect_ms =
      timeout_ms < 0 ? kConnectTimeoutMs : std::min(timeout_ms, kConnectTimeoutMs);
  for (addrinfo* a = res; a; a = a->ai_next) {
    fd = ::socket(a->ai_family, a->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC, a->ai_protocol);
    if (fd < 0) continue;
    int rc = ::connect(fd, a->ai_addr, a->ai_addrlen);
    int err = rc == 0 ? 0 : errno;
    if (rc != 0 && err == EINPROGRESS) {
      pollfd p{fd, POLLOUT, 0};
      err = ::poll(&p, 1, connect_ms) == 1 ? 0 : ETIMEDOUT;
      socklen_t len = sizeof err;
      if (err == 0 && ::getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) != 0) err = errno;
    }
    if (err == 0) break;
    all_refused = all_refused && err == ECONNREFUSED;
    ::close(fd);
    fd = -1;
  }
  freeaddrinfo(res);
  if (fd < 0) {
    r.error = "cannot connect to " + url;
    r.refused = all_refused;
    return r;
  }
  r.connected = true;
  std::string req = method + " " + path + " HTTP/1.1\r\nHost: " + hostport +
                    "\r\nConnection: close\r\nContent-Type: application/json\r\n";
  if (!token.empty()) req += "Authorization: Bearer " + token + "\r\n";
  req += "Content-Length: " + std::to_string(body.size()) + "\r\n\r\n" + body;
  size_t sent = 0;
  while (sent < req.size()) {
    if (!WaitFor(fd, POLLOUT, interrupt_fd, timeout_ms, &r)) {
      ::close(fd);
      return r;
    }
    ssize_t n = ::send(fd, req.data() + sent, req.size() - sent, MSG_NOSIGNAL);
    if (n <= 0) break;
    sent += static_cast<size_t>(n);
  }
  std::string resp;
  char buf[65536];
  while (true) {
    if (!WaitFor(fd, POLLIN, interrupt_fd, timeout_ms, &r)) {
      ::close(fd);
      return r;
    }
    ssize_t n = ::recv(fd, buf, sizeof buf, 0);
    if (n <= 0) break;
    resp.append(buf, static_cast<size_t>(n));
  }
  ::close(fd);
  if (resp.rfind("HTTP/1.", 0) != 0) {
    r.error = "no HTTP reply from " + url;
    return r;
  }
  r.status = std::atoi(resp.c_str() + 9);
  size_t split = resp.find("\r\n\r\n");
  if (split != std::string::npos) r.body = resp.substr(split + 4);
  return r;
}

std::string BadServerUrls(const std::string& urls) {
  size_t start = 0;
  int n = 0;
  while (start <= urls.size()) {
    size_t comma = urls.find(',', start);
    if (comma == std::string::npos) comma = urls.size();
    const std::string u = urls.substr(start, comma - start);
    start = comma + 1;
    if (u.empty()) continue;
    ++n;
    if (u.rfind("http://", 0) != 0) return "'" + u + "' does not start with http://";
    std::string hostport, host, port;
    SplitUrl(u, &hostport, &host, &port);
    if (host.empty()) return "'" + u + "' names no host";
    char* end = nullptr;
    const long p = std::strtol(port.c_str(), &end, 10);
    if (port.empty() || *end != '\0' || p < 1 || p > 65535) {
      return "'" + u + "' has no valid port (1-65535)";
    }
  }
  return n == 0 ? "no server URL given" : "";
}

bool IsStandbyReply(const HttpReply& r) {
  // Also a write refused by a leader that stepped down before it was durable ("not recorded:",
  // not "perhaps not recorded"): nothing of it was applied, so it may go to the new leader.
  return r.status == 503 && (r.body.find("is a standby") != std::string::npos ||
                             r.body.find("is not the leader") != std::string::npos ||
                             r.body.find("\"message\":\"not recorded:") != std::string::npos);
}

std::string StandbyLeader(const HttpReply& r) {
  if (!IsStandbyReply(r)) return "";
  const std::string key = "\"leader\":\"";
  size_t at = r.body.find(key);
  if (at == std::string::npos) return "";
  at += key.size();
  size_t end = r.body.find('"', at);
  return end == std::string::npos ? "" : r.body.substr(at, end - at);
}

ServerSet::ServerSet(const std::string& urls, int patience_ms) : patience_ms_(patience_ms) {
  size_t start = 0;
  while (start <= urls.size()) {
    size_t comma = urls.find(',', start);
    if (comma == std::string::npos) comma = urls.size();
    std::string u = urls.substr(start, comma - start);
    while (!u.empty() && u.back() == '/') u.pop_back();
    if (!u.empty()) urls_.push_back(u);
    start = comma + 1;
  }
  if (urls_.empty()) urls_.push_back("");  // HttpCall names the problem
}

HttpReply ServerSet::Call(const std::string& method, const std::string& path,
                          const std::string& token, const std::string& body, int interrupt_fd,
                          int timeout_ms) {
  const Timestamp deadline = clock_.Now() + Duration::Millis(patience_ms_);
  while (true) {
    HttpReply last;
    bool all_refused = true;
    std::vector<size_t> failed;  // servers that did not serve this round
    if (suspect_ != kNone && clock_.Now() >= suspect_until_) suspect_ = kNone;
    // The next server to ask after `from`: `preferred` (the leader a standby named) when there
    // is one, else the one after `from`; the suspect only when no other is left this round.
    auto next_after = [&](size_t from, size_t preferred) {
      const size_t n = urls_.size();
      size_t next = preferred != kNone ? preferred : (from + 1) % n;
      if (next == suspect_) {
        const size_t other = (next + 1) % n;
        if (other != suspect_ && std::find(failed.begin(), failed.end(), other) == failed.end()) {
          next = other;
        }
      }
      return next;
    };
    // A round starts at a server that is not suspect.
    if (current_ == suspect_ && urls_.size() > 1) current_ = (current_ + 1) % urls_.size();
    for (size_t tried = 0; tried < urls_.size(); ++tried) {
      if (current_ == suspect_ && urls_.size() > 1) {
        // No other server serves: ask the one that timed out whether it answers at all (a
        // health check is answered without the store) before waiting on it again. If it does
        // not, this round ends and the caller tries again soon (a takeover is near).
        HttpReply alive =
            HttpCall(urls_[current_], "GET", "/healthz", "", "", interrupt_fd, kHealthCheckMs);
        if (alive.status != 200) {
          if (last.status == 0 && last.error.empty()) last = std::move(alive);
          all_refused = all_refused && alive.refused;
          break;
        }
        suspect_ = kNone;
      }
      HttpReply r = HttpCall(urls_[current_], method, path, token, body, interrupt_fd, timeout_ms);
      const bool unsent = r.status == 0 && !r.connected && !r.interrupted;
      if (r.status == 0 && r.connected && !r.interrupted) {
        // Sent, and no answer: perhaps applied, so not sent again (a read excepted). A server
        // that did not answer in time (a frozen leader accepts connections and answers
        // nothing) is asked last for a while, even when a standby names it.
        if (r.error == "timed out") {
          suspect_ = current_;
          suspect_until_ = clock_.Now() + kSuspectFor;
        }
        failed.push_back(current_);
        current_ = next_after(current_, kNone);
        if (method != "GET" || urls_.size() == 1) return r;
        last = std::move(r);  // a read changes nothing: the next server may answer it
        all_refused = false;
        continue;
      }
      if (!unsent && !IsStandbyReply(r)) {
        if (suspect_ == current_) suspect_ = kNone;
        return r;
      }
      all_refused = all_refused && r.refused;
      failed.push_back(current_);
      last = std::move(r);
      // Straight to the leader a standby names (learning it when it is not in the list yet),
      // else the next server.
      const std::string leader = StandbyLeader(last);
      size_t preferred = kNone;
      if (!leader.empty()) {
        auto known = std::find(urls_.begin(), urls_.end(), leader);
        if (known == urls_.end()) known = urls_.insert(urls_.end(), leader);
        preferred = static_cast<size_t>(known - urls_.begin());
      }
      current_ = next_after(current_, preferred);
    }
    last.refused = all_refused;  // nothing listens at any of the servers' addresses
    if (clock_.Now() >= deadline) return last;
    // One server that cannot be reached: said at once, as without standbys.
    if (urls_.size() == 1 && !IsStandbyReply(last)) return last;
    SleepFor(Duration::Millis(200));
  }
}

}  // namespace rsv
