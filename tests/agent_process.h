// Test helper: a real `reservoir agent` child process with fake GPUs, for the end-to-end tests.
// Ready once it logs that it registered; its log is drained on a thread and can be waited on.
#pragma once

#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <condition_variable>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <nlohmann/json.hpp>
#include <string>
#include <thread>
#include <vector>

#include "server_process.h"

namespace rsv::testing {

// A `reservoir agent` child; ready once it logs that it registered.
class AgentProcess {
 public:
  // `checkpoint_root` is shared by all agents, as shared storage is on a fleet.
  AgentProcess(int port, std::string node, std::string state_dir, std::string checkpoint_root,
               std::vector<std::string> extra = {})
      : port_(port),
        node_(std::move(node)),
        state_dir_(std::move(state_dir)),
        checkpoint_root_(std::move(checkpoint_root)),
        extra_(std::move(extra)) {}
  ~AgentProcess() { Kill(); }

  // The servers it is given (default: the one at `port`), and the admin token it mints its own
  // node's token with.
  std::string servers;
  std::string admin_token = "e2e-admin-token";

  bool Start() {
    // Its own node's token, in a file only its owner reads (never the admin token).
    const std::string token_file = state_dir_ + ".token";
    auto minted =
        Http(port_, "POST", "/v1/tokens", admin_token, nlohmann::json{{"node", node_}}.dump());
    if (minted.status != 201) return false;
    {
      std::ofstream(token_file) << nlohmann::json::parse(minted.body)["token"].get<std::string>()
                                << "\n";
      std::filesystem::permissions(token_file, std::filesystem::perms(0600));
    }
    int err[2];
    if (::pipe(err) != 0) return false;
    pid_ = ::fork();
    if (pid_ == 0) {
      ::dup2(err[1], 2);
      ::close(err[0]);
      ::close(err[1]);
      std::vector<std::string> args = {
          RESERVOIR_BIN,
          "agent",
          "--server",
          servers.empty() ? "http://127.0.0.1:" + std::to_string(port_) : servers,
          "--token-file",
          token_file,
          "--pool",
          "h100",
          "--node-id",
          node_,
          "--topology",
          "z/r",
          "--fake-gpus",
          "8",
          "--state-dir",
          state_dir_,
          "--checkpoint-root",
          checkpoint_root_};
      args.insert(args.end(), extra_.begin(), extra_.end());
      ExecChild(std::move(args));
    }
    ::close(err[1]);
    FILE* in = ::fdopen(err[0], "r");
    char line[4096];
    bool registered = false;
    while (!registered && std::fgets(line, sizeof line, in)) {
      Append(line);
      registered = std::strstr(line, "registered with") != nullptr;
    }
    // Keep draining the agent's log so it never blocks on a full pipe.
    ended_ = false;
    drain_ = std::thread([this, in] {
      char l[4096];
      while (std::fgets(l, sizeof l, in)) Append(l);
      std::fclose(in);
      std::lock_guard<std::mutex> lock(mu_);
      ended_ = true;
      grew_.notify_all();
    });
    return registered;
  }

  // The host dies: the agent and every process of its jobs get SIGKILL at once.
  void KillHost() {
    std::ifstream in(state_dir_ + "/agent.json");
    nlohmann::json s = nlohmann::json::parse(in, nullptr, true);
    for (const nlohmann::json& a : s["attempts"]) {
      if (a["pid"].get<int>() > 0) ::kill(-a["pid"].get<int>(), SIGKILL);
    }
    Kill();
  }

  void Kill() {
    if (pid_ > 0) {
      ::kill(pid_, SIGKILL);
      ::waitpid(pid_, nullptr, 0);
      pid_ = -1;
    }
    if (drain_.joinable()) drain_.join();
  }

  std::string log() {
    std::lock_guard<std::mutex> lock(mu_);
    return log_;
  }
  // Blocks until the agent has logged `text` (true), or its log ended or two minutes passed
  // (false: a bound so a broken agent fails the test instead of hanging it).
  bool WaitForLog(const std::string& text) {
    std::unique_lock<std::mutex> lock(mu_);
    grew_.wait_for(lock, std::chrono::minutes(2),
                   [&] { return log_.find(text) != std::string::npos || ended_; });
    return log_.find(text) != std::string::npos;
  }

 private:
  void Append(const char* l) {
    std::lock_guard<std::mutex> lock(mu_);
    log_ += l;
    grew_.notify_all();
  }
  int port_;
  std::string node_, state_dir_, checkpoint_root_;
  std::vector<std::string> extra_;
  std::condition_variable grew_;
  bool ended_ = false;
  pid_t pid_ = -1;
  std::thread drain_;
  std::mutex mu_;
  std::string log_;
};

}  // namespace rsv::testing
