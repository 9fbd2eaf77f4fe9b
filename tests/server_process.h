// Test helpers: a real `reservoir server` child process on 127.0.0.1 and a minimal blocking
// HTTP/1.1 client over POSIX sockets. No sleeps: the server is ready when it prints its
// "listening" line, which the helper reads from its stdout pipe.
#pragma once

#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

namespace rsv::testing {

struct HttpResult {
  int status = 0;  // 0: no connection
  std::string body;
  std::string headers;  // the status line and header fields, as received
};

// A connected socket to 127.0.0.1:port, or -1.
inline int Connect(int port) {
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<uint16_t>(port));
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
    ::close(fd);
    return -1;
  }
  return fd;
}

// One request on a fresh connection (Connection: close).
inline HttpResult Http(int port, const std::string& method, const std::string& path,
                       const std::string& token = "", const std::string& body = "") {
  HttpResult r;
  int fd = Connect(port);
  if (fd < 0) return r;
  std::string req = method + " " + path + " HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n";
  if (!token.empty()) req += "Authorization: Bearer " + token + "\r\n";
  req += "Content-Type: application/json\r\nContent-Length: " + std::to_string(body.size()) +
         "\r\n\r\n" + body;
  size_t sent = 0;
  while (sent < req.size()) {
    ssize_t n = ::send(fd, req.data() + sent, req.size() - sent, MSG_NOSIGNAL);
    if (n <= 0) break;
    sent += static_cast<size_t>(n);
  }
  std::string resp;
  char buf[65536];
  ssize_t n;
  while ((n = ::recv(fd, buf, sizeof buf, 0)) > 0) resp.append(buf, static_cast<size_t>(n));
  ::close(fd);
  if (resp.rfind("HTTP/1.1 ", 0) != 0) return r;
  r.status = std::atoi(resp.c_str() + 9);
  size_t split = resp.find("\r\n\r\n");
  if (split != std::string::npos) r.body = resp.substr(split + 4);
  r.headers = resp.substr(0, split);
  return r;
}

// Sends `raw` bytes on a fresh connection, closes the sending side and returns everything the
// server sent back until it closed.
inline std::string RawExchange(int port, const std::string& raw) {
  int fd = Connect(port);
  if (fd < 0) return "";
  size_t sent = 0;
  while (sent < raw.size()) {
    ssize_t n = ::send(fd, raw.data() + sent, raw.size() - sent, MSG_NOSIGNAL);
    if (n <= 0) break;
    sent += static_cast<size_t>(n);
  }
  ::shutdown(fd, SHUT_WR);
  std::string resp;
  char buf[65536];
  ssize_t n;
  while ((n = ::recv(fd, buf, sizeof buf, 0)) > 0) resp.append(buf, static_cast<size_t>(n));
  ::close(fd);
  return resp;
}

// A connection that is opened and then left idle (closed when the object goes).
struct IdleConnection {
  explicit IdleConnection(int port) : fd(Connect(port)), connected(fd >= 0) {}
  ~IdleConnection() {
    if (fd >= 0) ::close(fd);
  }
  IdleConnection(const IdleConnection&) = delete;
  IdleConnection& operator=(const IdleConnection&) = delete;
  int fd;
  bool connected = false;
};

// In a forked child: replaces it with `args` (args[0] is the program); exits 127 if it cannot.
[[noreturn]] inline void ExecChild(std::vector<std::string> args) {
  std::vector<char*> argv;
  for (std::string& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);
  ::execv(argv[0], argv.data());
  ::_exit(127);
}

class ServerProcess {
 public:
  // `listen`: HOST:PORT; port 0 picks a free one (see port()).
  ServerProcess(const std::string& db, const std::string& config, const std::string& admin_token,
                const std::string& listen = "127.0.0.1:0", std::vector<std::string> extra = {})
      : db_(db), config_(config), admin_(admin_token), listen_(listen), extra_(std::move(extra)) {}
  ~ServerProcess() { Kill(SIGKILL); }

  // Starts the server and returns once it listens (false if it exited instead).
  bool Start() {
    int out[2];
    if (::pipe(out) != 0) return false;
    pid_ = ::fork();
    if (pid_ == 0) {
      ::dup2(out[1], 1);
      ::close(out[0]);
      ::close(out[1]);
      ::setenv("RESERVOIR_ADMIN_TOKEN", admin_.c_str(), 1);
      std::vector<std::string> args = {RESERVOIR_BIN, "server", "--listen", listen_,
                                       "--db",        db_,      "--config", config_};
      args.insert(args.end(), extra_.begin(), extra_.end());
      ExecChild(std::move(args));
    }
    ::close(out[1]);
    stdout_ = ::fdopen(out[0], "r");
    char line[512];
    while (std::fgets(line, sizeof line, stdout_)) {
      const char* at = std::strstr(line, "http://127.0.0.1:");
      if (at) {
        port_ = std::atoi(at + std::strlen("http://127.0.0.1:"));
        return true;
      }
    }
    return false;
  }

  void Kill(int sig) {
    if (pid_ <= 0) return;
    ::kill(pid_, sig);
    int status = 0;
    ::waitpid(pid_, &status, 0);
    pid_ = -1;
    if (stdout_) std::fclose(stdout_);
    stdout_ = nullptr;
  }

  // Sends `sig` and returns (SIGSTOP, SIGCONT: the process stays).
  void Signal(int sig) {
    if (pid_ > 0) ::kill(pid_, sig);
  }
  int port() const { return port_; }
  HttpResult Get(const std::string& path, const std::string& token) const {
    return rsv::testing::Http(port_, "GET", path, token);
  }
  HttpResult Post(const std::string& path, const std::string& token,
                  const std::string& body) const {
    return rsv::testing::Http(port_, "POST", path, token, body);
  }
  HttpResult Http(const std::string& method, const std::string& path,
                  const std::string& token) const {
    return rsv::testing::Http(port_, method, path, token);
  }

 private:
  std::string db_, config_, admin_, listen_;
  std::vector<std::string> extra_;
  pid_t pid_ = -1;
  int port_ = 0;
  FILE* stdout_ = nullptr;
};

}  // namespace rsv::testing
