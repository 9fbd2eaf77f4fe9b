// cli/client: what every client subcommand shares: the server URL and token (flags or
// RESERVOIR_URL / RESERVOIR_TOKEN), one HTTP call over a plain socket, printing a JSON reply as
// a table (or raw with --json), and the exit codes: 0 ok, 1 the server refused or is
// unreachable, 2 usage.
#pragma once

#include <functional>
#include <string>
#include <vector>

namespace CLI {
class App;
}

namespace rsv::cli {

struct ClientFlags {
  std::string url;
  std::string token;
  bool json = false;
};
void AddClientFlags(CLI::App* sub, ClientFlags* flags);

struct CallResult {
  int status = 0;  // 0: could not reach the server
  std::string body;
  std::string transport_error;
};
CallResult Call(const ClientFlags& f, const std::string& method, const std::string& path,
                const std::string& body = "");

// Prints the reply: on success `human(body)` (or the body itself with --json); on failure the
// server's error. Returns the exit code.
int Print(const ClientFlags& f, const CallResult& r,
          const std::function<void(const std::string& body)>& human);

// A time for people: local time to the minute ("2026-11-30 08:30"); 0: "-".
std::string LocalTime(int64_t micros);

// Aligned text table.
void PrintTable(const std::vector<std::string>& header,
                const std::vector<std::vector<std::string>>& rows);

}  // namespace rsv::cli
