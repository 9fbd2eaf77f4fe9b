// ServerSet against real sockets on 127.0.0.1: a standby's 503 is followed to the leader it
// names, a request is never sent twice to servers that might both have applied it, and a frozen
// server (it accepts connections and answers nothing) is left for the next one.
#include "common/http_client.h"

#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <string>
#include <thread>

namespace rsv {
namespace {

// A listening socket on 127.0.0.1 and a port the kernel picked.
struct Listener {
  int fd = -1;
  int port = 0;
  Listener() {
    fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof a;
    if (::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0 || ::listen(fd, 16) != 0 ||
        ::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len) != 0) {
      ADD_FAILURE() << "cannot listen";
    }
    port = ntohs(a.sin_port);
  }
  ~Listener() { ::close(fd); }
  std::string url() const { return "http://127.0.0.1:" + std::to_string(port); }
};

// Answers `n` requests on `l` with `status` and `body`, counting them.
std::thread Answer(const Listener& l, int n, int status, std::string body, std::atomic<int>* seen) {
  return std::thread([&l, n, status, body = std::move(body), seen] {
    for (int i = 0; i < n; ++i) {
      int c = ::accept(l.fd, nullptr, nullptr);
      if (c < 0) return;
      std::string req;
      char buf[4096];
      while (req.find("\r\n\r\n") == std::string::npos) {
        ssize_t k = ::recv(c, buf, sizeof buf, 0);
        if (k <= 0) break;
        req.append(buf, static_cast<size_t>(k));
      }
      ++*seen;
      const std::string resp = "HTTP/1.1 " + std::to_string(status) +
                               " X\r\nContent-Length: " + std::to_string(body.size()) +
                               "\r\nConnection: close\r\n\r\n" + body;
      (void)::send(c, resp.data(), resp.size(), MSG_NOSIGNAL);
      ::close(c);
    }
  });
}

TEST(ServerSet, FollowsTheLeaderAStandbyNames) {
  Listener standby, leader;
  std::atomic<int> at_standby{0}, at_leader{0};
  const std::string named = R"({"error":{"code":"unavailable","leader":")" + leader.url() +
                            R"(","message":"this server is a standby; the leader is )" +
                            leader.url() + R"("}})";
  std::thread s = Answer(standby, 1, 503, named, &at_standby);
  std::thread l = Answer(leader, 2, 201, "{}", &at_leader);
  ServerSet set(standby.url(), /*patience_ms=*/2000);  // the leader is not in the list
  HttpReply r = set.Call("POST", "/v1/jobs", "t", "{}");
  EXPECT_EQ(r.status, 201);
  EXPECT_EQ(set.current(), leader.url());
  // The next call goes to the leader first.
  EXPECT_EQ(set.Call("POST", "/v1/jobs", "t", "{}").status, 201);
  s.join();
  l.join();
  EXPECT_EQ(at_standby.load(), 1);
  EXPECT_EQ(at_leader.load(), 2);
}

TEST(ServerSet, LeavesAFrozenServerAndNeverSendsARequestTwice) {
  Listener frozen, next;  // `frozen` never accepts: connections complete, nothing answers
  std::atomic<int> at_next{0};
  std::thread n = Answer(next, 1, 200, "{}", &at_next);
  ServerSet set(frozen.url() + "," + next.url(), /*patience_ms=*/0);
  HttpReply first = set.Call("POST", "/v1/nodes/n/sync", "t", "{}", -1, /*timeout_ms=*/300);
  EXPECT_EQ(first.status, 0);  // sent, no answer: not sent again anywhere
  EXPECT_TRUE(first.connected);
  EXPECT_EQ(at_next.load(), 0);
  HttpReply second = set.Call("POST", "/v1/nodes/n/sync", "t", "{}", -1, 300);
  EXPECT_EQ(second.status, 200);
  n.join();
  EXPECT_EQ(at_next.load(), 1);
}

// A standby still names the frozen leader (its lease has not lapsed yet): the call is not sent
// back to it. Only a health check goes there, and, unanswered, the round ends with the standby's
// reply, so the caller tries again soon.
TEST(ServerSet, DoesNotWaitOnAFrozenLeaderAStandbyStillNames) {
  Listener frozen, standby;
  std::atomic<int> at_standby{0};
  const std::string named = R"({"error":{"code":"unavailable","leader":")" + frozen.url() +
                            R"(","message":"this server is a standby; the leader is )" +
                            frozen.url() + R"("}})";
  std::thread s = Answer(standby, 1, 503, named, &at_standby);
  ServerSet set(frozen.url() + "," + standby.url(), /*patience_ms=*/0);
  EXPECT_EQ(set.Call("POST", "/v1/nodes/n/sync", "t", "{}", -1, 300).status, 0);  // timed out
  HttpReply r = set.Call("POST", "/v1/nodes/n/sync", "t", "{}", -1, 300);
  EXPECT_EQ(r.status, 503);  // the standby's: the POST was not sent to the frozen one again
  EXPECT_TRUE(IsStandbyReply(r));
  s.join();
  EXPECT_EQ(at_standby.load(), 1);
}

TEST(ServerSet, ARefusedConnectionMovesOnAtOnce) {
  Listener down, up;
  const std::string down_url = down.url();
  ::close(down.fd);  // nothing listens there now: ECONNREFUSED
  down.fd = -1;
  std::atomic<int> seen{0};
  std::thread u = Answer(up, 1, 200, "{}", &seen);
  ServerSet set(down_url + "," + up.url(), 0);
  EXPECT_EQ(set.Call("GET", "/healthz", "", "").status, 200);
  u.join();
  EXPECT_EQ(seen.load(), 1);
  // Alone and down: said at once, refused.
  ServerSet alone(down_url, 15000);
  HttpReply r = alone.Call("GET", "/healthz", "", "");
  EXPECT_EQ(r.status, 0);
  EXPECT_TRUE(r.refused);
}

}  // namespace
}  // namespace rsv
