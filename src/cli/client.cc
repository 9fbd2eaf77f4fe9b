#include "cli/client.h"

#include <CLI/CLI.hpp>
#include <cstdlib>
#include <ctime>
#include <iostream>
#include <map>
#include <nlohmann/json.hpp>

#include "common/http_client.h"
#include "common/text.h"

namespace rsv::cli {

void AddClientFlags(CLI::App* sub, ClientFlags* f) {
  sub->add_option("--url", f->url,
                  "Server URL, or several separated by commas: a leader and its standbys (default "
                  "$RESERVOIR_URL or http://127.0.0.1:8080)");
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
  // Several servers (a leader and its standbys): the one that answered last is asked first.
  static std::map<std::string, ServerSet> sets;
  ServerSet& servers = sets.try_emplace(url, url).first->second;
  // A server that answers nothing (frozen, or its host gone quiet) gives way after 15 s, or 75
  // s for a long-poll (60 s at most); a read then goes to the next server.
  const bool long_poll = path.find("wait=") != std::string::npos;
  HttpReply h = servers.Call(method, path, token, body, -1, long_poll ? 75'000 : 15'000);
  if (h.status == 0 && h.error == "timed out") h.error = "no reply in time from " + url;
  r.status = h.status;
  r.body = std::move(h.body);
  r.transport_error = std::move(h.error);
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
      if (e["error"].contains("field"))
        std::cerr << Printable(e["error"]["field"].get<std::string>()) << ": ";
      std::cerr << Printable(e["error"].value("message", "")) << "\n";
    } else {
      std::cerr << "error (" << r.status << "): " << Printable(r.body, 2000) << "\n";
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
  // Names and commands come from users: control characters are shown escaped, never sent to
  // the terminal.
  std::vector<std::vector<std::string>> safe;
  for (const auto& row : rows) {
    safe.emplace_back();
    for (const std::string& cell : row) safe.back().push_back(Printable(cell));
  }
  const auto& printable = safe;
  std::vector<size_t> w(header.size());
  for (size_t c = 0; c < header.size(); ++c) w[c] = header[c].size();
  for (const auto& row : printable) {
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
  for (const auto& row : printable) line(row);
}

std::string LocalTime(int64_t micros) {
  if (micros <= 0) return "-";
  const time_t secs = static_cast<time_t>(micros / 1'000'000);
  tm local{};
  localtime_r(&secs, &local);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%d %H:%M", &local);
  return buf;
}

}  // namespace rsv::cli
