#include "server/http.h"

#include <sys/resource.h>

#include <atomic>
#include <boost/asio.hpp>
#include <boost/beast.hpp>
#include <list>
#include <mutex>
#include <thread>
#include <vector>

namespace rsv::server {
namespace {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using tcp = asio::ip::tcp;

class Session;

// What every session of one server shares: its limits, and the sessions now waiting for a
// request, oldest first (the ones evicted when the connection cap is reached).
struct Shared {
  Api* api = nullptr;
  HttpLimits limits;
  std::atomic<int> open{0};
  std::mutex mu;
  std::list<std::weak_ptr<Session>> waiting;
};

HttpResponse ErrorResponse(int status, const std::string& field, const std::string& message) {
  return HttpResponse{status, "application/json", ErrorBody(InvalidArgument(field, message))};
}

using Parser = http::request_parser<http::string_body>;

void Limit(Parser& parser) {
  parser.body_limit(Api::kMaxBodyBytes);
  parser.header_limit(HttpLimits::kMaxHeaderBytes);
}

struct Framed : FramedRequest {
  unsigned version = 11;
};

// What one read produced: a request, an error reply for a malformed one, or nothing when the
// client went away or timed out.
std::optional<Framed> Judge(beast::error_code ec, Parser& parser) {
  if (ec == http::error::end_of_stream || ec == beast::error::timeout ||
      ec == asio::error::operation_aborted || ec == asio::error::connection_reset ||
      ec == http::error::partial_message) {
    return std::nullopt;
  }
  Framed f;  // after a malformed request the stream cannot be trusted: keep_alive stays false
  if (ec == http::error::body_limit) {
    f.error = ErrorResponse(400, "body", "is larger than 1 MiB");
    return f;
  }
  if (ec == http::error::header_limit) {
    // The parser stopped inside the request line (414), or after it, in the headers (431).
    if (parser.get().target().empty()) {
      f.error = ErrorResponse(414, "target", "the request line is too long");
    } else {
      f.error = ErrorResponse(431, "headers", "the request headers are too large");
    }
    return f;
  }
  if (ec) {
    f.error = ErrorResponse(400, "request", "is not valid HTTP/1.1: " + ec.message());
    return f;
  }
  http::request<http::string_body> req = parser.release();
  f.version = req.version();
  if (req.target().size() > HttpLimits::kMaxTargetBytes) {
    f.error = ErrorResponse(414, "target", "is longer than 8 KiB");
    return f;
  }
  size_t fields = 0;
  for (const auto& field : req) {
    if (++fields > HttpLimits::kMaxFields || field.value().size() > HttpLimits::kMaxFieldBytes) {
      f.error = ErrorResponse(431, "headers", "more than 100 fields or a field over 8 KiB");
      return f;
    }
  }
  f.keep_alive = req.keep_alive();
  f.request.method = std::string(req.method_string());
  f.request.target = std::string(req.target());
  f.request.authorization = std::string(req[http::field::authorization]);
  f.request.body = std::move(req.body());
  return f;
}

class Session : public std::enable_shared_from_this<Session> {
 public:
  Session(tcp::socket socket, std::shared_ptr<Shared> shared)
      : stream_(std::move(socket)), shared_(std::move(shared)) {
    shared_->open.fetch_add(1);
  }
  ~Session() {
    Unlist();
    shared_->open.fetch_sub(1);
  }
  void Start() { Read(); }
  // Closes the session that has waited longest for a request (from any thread); false when no
  // session is waiting.
  static bool EvictOldestWaiting(Shared& shared) {
    std::shared_ptr<Session> victim;
    {
      std::lock_guard<std::mutex> lock(shared.mu);
      for (auto it = shared.waiting.begin(); it != shared.waiting.end(); ++it) {
        victim = it->lock();  // null: being destroyed, it unlists itself
        if (victim) {
          shared.waiting.erase(it);
          victim->is_listed_ = false;
          break;
        }
      }
    }
    if (!victim) return false;
    asio::post(victim->stream_.get_executor(), [victim] {
      beast::error_code ignored;
      victim->stream_.socket().shutdown(tcp::socket::shutdown_both, ignored);
      victim->stream_.socket().close(ignored);
    });
    return true;
  }

 private:
  void List() {
    std::lock_guard<std::mutex> lock(shared_->mu);
    shared_->waiting.push_back(weak_from_this());
    listed_ = std::prev(shared_->waiting.end());
    is_listed_ = true;
  }
  void Unlist() {
    std::lock_guard<std::mutex> lock(shared_->mu);
    if (is_listed_) shared_->waiting.erase(listed_);
    is_listed_ = false;
  }

  void Read() {
    parser_.emplace();
    Limit(*parser_);
    // The whole request (line, headers, body) must arrive within the timeout.
    stream_.expires_after(std::chrono::seconds(shared_->limits.request_timeout_s));
    List();
    http::async_read(
        stream_, buffer_, *parser_,
        [self = shared_from_this()](beast::error_code ec, size_t) { self->OnRead(ec); });
  }

  void OnRead(beast::error_code ec) {
    Unlist();
    stream_.expires_never();  // a long-poll may take a minute to answer
    std::optional<Framed> f = Judge(ec, *parser_);
    if (!f) {
      beast::error_code ignored;
      stream_.socket().shutdown(tcp::socket::shutdown_send, ignored);
      return;
    }
    keep_alive_ = f->keep_alive;
    if (f->error) return Write(std::move(*f->error), f->version);
    auto self = shared_from_this();
    unsigned version = f->version;
    shared_->api->Handle(f->request, [self, version](HttpResponse resp) {
      // The reply may come from another thread (after a durable commit): hop back.
      asio::post(self->stream_.get_executor(), [self, version, resp = std::move(resp)]() mutable {
        self->Write(std::move(resp), version);
      });
    });
  }

  void Write(HttpResponse r, unsigned version) {
    auto res = std::make_shared<http::response<http::string_body>>(
        static_cast<http::status>(r.status), version);
    res->set(http::field::server, "reservoir");
    res->set(http::field::content_type, r.content_type);
    if (!r.allow.empty()) res->set(http::field::allow, r.allow);
    res->set("X-Content-Type-Options", "nosniff");
    for (const auto& [name, value] : r.headers) res->set(name, value);
    res->keep_alive(keep_alive_);
    res->body() = std::move(r.body);
    res->prepare_payload();
    stream_.expires_after(std::chrono::seconds(shared_->limits.request_timeout_s));
    http::async_write(stream_, *res,
                      [self = shared_from_this(), res](beast::error_code ec, size_t) {
                        if (ec) return;
                        if (!self->keep_alive_) return self->Linger();
                        self->Read();
                      });
  }

  // Closes after a last reply: stop sending, then read and drop what the client still sends
  // (briefly), so that closing does not reset the connection before it has read the reply.
  void Linger() {
    if (!lingering_) {  // one deadline for the whole linger, however the client trickles
      lingering_ = true;
      beast::error_code ignored;
      stream_.socket().shutdown(tcp::socket::shutdown_send, ignored);
      stream_.expires_after(std::chrono::seconds(2));
      drain_.resize(16 << 10);
    }
    stream_.async_read_some(asio::buffer(drain_),
                            [self = shared_from_this()](beast::error_code ec, size_t n) {
                              self->drained_ += n;
                              if (!ec && self->drained_ < (1 << 20)) self->Linger();
                            });
  }

  beast::tcp_stream stream_;
  beast::flat_buffer buffer_;
  std::optional<Parser> parser_;
  std::shared_ptr<Shared> shared_;
  std::list<std::weak_ptr<Session>>::iterator listed_;  // both under shared_->mu
  bool is_listed_ = false;
  bool keep_alive_ = true;
  std::vector<char> drain_;
  bool lingering_ = false;
  size_t drained_ = 0;
};

}  // namespace

std::vector<FramedRequest> FrameRequests(std::string_view bytes) {
  std::vector<FramedRequest> out;
  for (;;) {
    Parser parser;
    Limit(parser);
    beast::error_code ec;
    size_t used = 0;
    while (!parser.is_done()) {
      std::string_view rest = bytes.substr(used);
      size_t n = rest.empty() ? 0 : parser.put(asio::buffer(rest.data(), rest.size()), ec);
      used += n;
      if (rest.empty() || (n == 0 && (!ec || ec == http::error::need_more))) {
        // Everything there is was offered: the client stopped sending.
        ec = parser.got_some() || used > 0 ? http::error::partial_message
                                           : http::error::end_of_stream;
        break;
      }
      if (ec == http::error::need_more) ec = {};
      if (ec) break;
    }
    std::optional<Framed> f = Judge(ec, parser);
    if (!f) return out;
    out.push_back(std::move(*f));
    if (!out.back().keep_alive) return out;
    bytes = bytes.substr(used);
  }
}

struct HttpServer::Impl {
  asio::io_context io;
  std::optional<tcp::acceptor> acceptor;
  std::shared_ptr<Shared> shared = std::make_shared<Shared>();
  std::vector<std::unique_ptr<asio::steady_timer>> timers;
  std::optional<asio::steady_timer> backoff;

  void Accept() {
    acceptor->async_accept(asio::make_strand(io), [this](beast::error_code ec, tcp::socket s) {
      if (!acceptor->is_open()) return;
      if (ec) {
        // Out of file descriptors, say: wait a little instead of spinning on the error.
        backoff.emplace(io);
        backoff->expires_after(std::chrono::milliseconds(50));
        backoff->async_wait([this](beast::error_code e) {
          if (!e && acceptor->is_open()) Accept();
        });
        return;
      }
      if (shared->open.load() >= shared->limits.max_connections &&
          !Session::EvictOldestWaiting(*shared)) {
        // Every connection is busy serving a request: this one waits for none of them.
        beast::error_code ignored;
        s.close(ignored);
        Accept();
        return;
      }
      std::make_shared<Session>(std::move(s), shared)->Start();
      Accept();
    });
  }
};

HttpServer::HttpServer() : impl_(std::make_unique<Impl>()) {}
HttpServer::~HttpServer() = default;

int HttpServer::connections() const { return impl_->shared->open.load(); }

Result<int> HttpServer::Listen(const std::string& address, Api* api, HttpLimits limits) {
  size_t colon = address.rfind(':');
  if (colon == std::string::npos) return InvalidArgument("listen", "must be HOST:PORT");
  std::string host = address.substr(0, colon);
  int port = std::atoi(address.substr(colon + 1).c_str());
  if (port < 0 || port > 65535) return InvalidArgument("listen", "port must be 0-65535");
  beast::error_code ec;
  asio::ip::address ip = asio::ip::make_address(host, ec);
  if (ec) return InvalidArgument("listen", "'" + host + "' is not an IP address");
  // Each connection is a file descriptor: use what the hard limit allows, and keep the cap
  // below it (with room for the database, logs and agents' log files).
  rlimit nofile{};
  if (::getrlimit(RLIMIT_NOFILE, &nofile) == 0) {
    if (nofile.rlim_cur < nofile.rlim_max) {
      nofile.rlim_cur = nofile.rlim_max;
      ::setrlimit(RLIMIT_NOFILE, &nofile);
      ::getrlimit(RLIMIT_NOFILE, &nofile);
    }
    if (nofile.rlim_cur != RLIM_INFINITY) {
      int room = static_cast<int>(std::min<rlim_t>(nofile.rlim_cur, 1 << 30)) - 128;
      limits.max_connections = std::max(16, std::min(limits.max_connections, room));
    }
  }
  tcp::endpoint ep(ip, static_cast<unsigned short>(port));
  impl_->shared->api = api;
  impl_->shared->limits = limits;
  impl_->acceptor.emplace(impl_->io);
  impl_->acceptor->open(ep.protocol(), ec);
  if (!ec) impl_->acceptor->set_option(asio::socket_base::reuse_address(true), ec);
  if (!ec) impl_->acceptor->bind(ep, ec);
  if (!ec) impl_->acceptor->listen(asio::socket_base::max_listen_connections, ec);
  if (ec)
    return Status(Code::kUnavailable, "cannot listen on " + address + ": " + ec.message(),
                  "listen");
  impl_->Accept();
  return static_cast<int>(impl_->acceptor->local_endpoint().port());
}

void HttpServer::Every(int period_ms, std::function<void()> fn) {
  auto timer = std::make_unique<asio::steady_timer>(impl_->io);
  asio::steady_timer* t = timer.get();
  impl_->timers.push_back(std::move(timer));
  auto tick = std::make_shared<std::function<void()>>();
  *tick = [t, period_ms, fn, tick]() {
    t->expires_after(std::chrono::milliseconds(period_ms));
    t->async_wait([fn, tick](beast::error_code ec) {
      if (ec) return;
      fn();
      (*tick)();
    });
  };
  (*tick)();
}

void HttpServer::Run(int threads) {
  std::vector<std::thread> pool;
  for (int i = 1; i < threads; ++i) pool.emplace_back([this] { impl_->io.run(); });
  impl_->io.run();
  for (auto& t : pool) t.join();
}

void HttpServer::Stop() {
  asio::post(impl_->io, [this] {
    beast::error_code ec;
    if (impl_->acceptor) impl_->acceptor->close(ec);
    if (impl_->backoff) impl_->backoff->cancel();
    for (auto& t : impl_->timers) t->cancel();
    impl_->io.stop();
  });
}

}  // namespace rsv::server
