#include "server/http.h"

#include <boost/asio.hpp>
#include <boost/beast.hpp>
#include <thread>
#include <vector>

namespace rsv::server {
namespace {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using tcp = asio::ip::tcp;

class Session : public std::enable_shared_from_this<Session> {
 public:
  Session(tcp::socket socket, Api* api) : stream_(std::move(socket)), api_(api) {}
  void Start() { Read(); }

 private:
  void Read() {
    parser_.emplace();
    parser_->body_limit(Api::kMaxBodyBytes);
    stream_.expires_after(std::chrono::seconds(300));
    http::async_read(
        stream_, buffer_, *parser_,
        [self = shared_from_this()](beast::error_code ec, size_t) { self->OnRead(ec); });
  }

  void OnRead(beast::error_code ec) {
    if (ec == http::error::end_of_stream || ec == beast::error::timeout) {
      beast::error_code ignored;
      stream_.socket().shutdown(tcp::socket::shutdown_send, ignored);
      return;
    }
    if (ec == http::error::body_limit) {
      HttpResponse r{400, "application/json",
                     ErrorBody(InvalidArgument("body", "is larger than 1 MiB"))};
      keep_alive_ = false;
      Write(std::move(r), 11);
      return;
    }
    if (ec) return;
    http::request<http::string_body> req = parser_->release();
    keep_alive_ = req.keep_alive();
    unsigned version = req.version();
    HttpRequest r;
    r.method = std::string(req.method_string());
    r.target = std::string(req.target());
    r.authorization = std::string(req[http::field::authorization]);
    r.body = std::move(req.body());
    auto self = shared_from_this();
    api_->Handle(r, [self, version](HttpResponse resp) {
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
    res->keep_alive(keep_alive_);
    res->body() = std::move(r.body);
    res->prepare_payload();
    http::async_write(stream_, *res,
                      [self = shared_from_this(), res](beast::error_code ec, size_t) {
                        if (ec) return;
                        if (!self->keep_alive_) {
                          beast::error_code ignored;
                          self->stream_.socket().shutdown(tcp::socket::shutdown_send, ignored);
                          return;
                        }
                        self->Read();
                      });
  }

  beast::tcp_stream stream_;
  beast::flat_buffer buffer_;
  std::optional<http::request_parser<http::string_body>> parser_;
  Api* api_;
  bool keep_alive_ = true;
};

}  // namespace

struct HttpServer::Impl {
  asio::io_context io;
  std::optional<tcp::acceptor> acceptor;
  Api* api = nullptr;
  std::vector<std::unique_ptr<asio::steady_timer>> timers;

  void Accept() {
    acceptor->async_accept(asio::make_strand(io), [this](beast::error_code ec, tcp::socket s) {
      if (!ec) std::make_shared<Session>(std::move(s), api)->Start();
      if (acceptor->is_open()) Accept();
    });
  }
};

HttpServer::HttpServer() : impl_(std::make_unique<Impl>()) {}
HttpServer::~HttpServer() = default;

Result<int> HttpServer::Listen(const std::string& address, Api* api) {
  size_t colon = address.rfind(':');
  if (colon == std::string::npos) return InvalidArgument("listen", "must be HOST:PORT");
  std::string host = address.substr(0, colon);
  int port = std::atoi(address.substr(colon + 1).c_str());
  if (port < 0 || port > 65535) return InvalidArgument("listen", "port must be 0-65535");
  beast::error_code ec;
  asio::ip::address ip = asio::ip::make_address(host, ec);
  if (ec) return InvalidArgument("listen", "'" + host + "' is not an IP address");
  tcp::endpoint ep(ip, static_cast<unsigned short>(port));
  impl_->api = api;
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
    for (auto& t : impl_->timers) t->cancel();
    impl_->io.stop();
  });
}

}  // namespace rsv::server
