#include "cli/client.h"

#include <netdb.h>
#include <sys/socket.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <cstdlib>
#include <iostream>
#include <nlohmann/json.hpp>

namespace rsv::cli {

void AddClientFlags(CLI::App* sub, ClientFlags* f) {
  sub->add_option("--url", f->url, "Server URL (default $RESERVOIR_URL or http://127.0.0.1:8080)");
  sub->add_option("--token", f->token, "API token (default $RESERVOIR_TOKEN)");
  sub->add_flag("--json", f->json, "Print the server's JSON instead of a table");
}

CallResult Call(const ClientFlags& flags, const std::string& method, const std::string& path,
                const std::string& body) {
  CallResult r;
  std::string url = flags.url;
  if (url.empty() && std::getenv("RESERVOIR_URL")) url = std::getenv("RESERVOIR_URL");
  if (url.empty()) url = "http://127.0.0.1:8080";
  std::string token = flags.token;
  if (token.empty() && std::getenv("RESERVOIR_TOKEN")) token = std::getenv("RESERVOIR_TOKEN");
  if (url.rfind("http://", 0) != 0) {
    r.transport_error = "--url must start with http:// (got '" + url + "')";
    return r;
  }
  std::string hostport = url.substr(7);
  hostport = hostport.substr(0, hostport.find('/'));
  size_t colon = hostport.rfind(':');
  std::string host = colon == std::string::npos ? hostport : hostport.substr(0, colon);
  std::string port = colon == std::string::npos ? "80" : hostport.substr(colon + 1);
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  addrinfo* res = nullptr;
  if (getaddrinfo(host.c_str(), port.c_str(), &hints, &res) != 0 || !res) {
    r.transport_error = "cannot resolve " + host;
    return r;
  }
  int fd = -1;
  for (addrinfo* a = res; a; a = a->ai_next) {
    fd = ::socket(a->ai_family, a->ai_socktype, a->ai_protocol);
    if (fd >= 0 && ::connect(fd, a->ai_addr, a->ai_addrlen) == 0) break;
    if (fd >= 0) ::close(fd);
    fd = -1;
  }
  freeaddrinfo(res);
  if (fd < 0) {
    r.transport_error = "cannot connect to " + url;
    return r;
  }
  std::string req = method + " " + path + " HTTP/1.1\r\nHost: " + hostport +
                    "\r\nConnection: close\r\nContent-Type: application/json\r\n";
  if (!token.empty()) req += "Authorization: Bearer " + token + "\r\n";
  req += "Content-Length: " + std::to_string(body.size()) + "\r\n\r\n" + body;
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
  if (resp.rfind("HTTP/1.", 0) != 0) {
    r.transport_error = "no HTTP reply from " + url;
    return r;
  }
  r.status = std::atoi(resp.c_str() + 9);
  size_t split = resp.find("\r\n\r\n");
  if (split != std::string::npos) r.body = resp.substr(split + 4);
  return r;
}

int Print(const ClientFlags& f, const CallResult& r,
          const std::function<void(const std::string&)>& human) {
  if (r.status == 0) {
    std::cerr << "error: " << r.transport_error << "\n";
    return 1;
  }
  if (r.status >= 400) {
    if (f.json) {
      std::cout << r.body << "\n";
      return 1;
    }
    nlohmann::json e = nlohmann::json::parse(r.body, nullptr, false);
    if (!e.is_discarded() && e.contains("error")) {
      std::cerr << "error (" << r.status << " " << e["error"].value("code", "") << "): ";
      if (e["error"].contains("field")) std::cerr << e["error"]["field"].get<std::string>() << ": ";
      std::cerr << e["error"].value("message", "") << "\n";
    } else {
      std::cerr << "error (" << r.status << "): " << r.body << "\n";
    }
    return 1;
  }
  if (f.json) {
    std::cout << r.body << "\n";
  } else {
    human(r.body);
  }
  return 0;
}

void PrintTable(const std::vector<std::string>& header,
                const std::vector<std::vector<std::string>>& rows) {
  std::vector<size_t> w(header.size());
  for (size_t c = 0; c < header.size(); ++c) w[c] = header[c].size();
  for (const auto& row : rows) {
    for (size_t c = 0; c < row.size() && c < w.size(); ++c) w[c] = std::max(w[c], row[c].size());
  }
  auto line = [&](const std::vector<std::string>& row) {
    std::string out;
    for (size_t c = 0; c < row.size() && c < w.size(); ++c) {
      out += row[c];
      if (c + 1 < row.size()) out += std::string(w[c] - row[c].size() + 2, ' ');
    }
    std::cout << out << "\n";
  };
  line(header);
  for (const auto& row : rows) line(row);
}

}  // namespace rsv::cli
