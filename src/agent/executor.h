// agent/executor: runs job attempts as real child processes. Each attempt gets its own process
// group (so a notice or a kill reaches everything it started), its GPUs in CUDA_VISIBLE_DEVICES
// and NVIDIA_VISIBLE_DEVICES, RESERVOIR_JOB_ID, RESERVOIR_ATTEMPT, RESERVOIR_CHECKPOINT_DIR
// (kept across attempts) and RESERVOIR_NOTICE_FILE, and writes stdout and stderr to a log file
// per attempt. Notice = the notice file (JSON) written atomically, then SIGTERM to the group;
// Kill = SIGKILL to the group. cgroup limits are not applied (reported by the agent).
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "common/status.h"

namespace rsv::agent {

struct LaunchSpec {
  uint32_t job = 0;
  int32_t attempt = 1;
  std::string command;           // run with /bin/sh -c
  std::vector<std::string> env;  // NAME=value, added to the agent's environment
  std::string workdir;           // empty: the job's checkpoint directory
  std::vector<int32_t> gpus;     // GPU indices on this host
  std::string state_dir;         // jobs/<id>/{checkpoint,notice.json,attempt-N.log} live here
};

struct ExitStatus {
  uint32_t job = 0;
  int32_t attempt = 0;
  bool signaled = false;
  int code = 0;  // exit code, or the signal number when signaled
  bool success() const { return !signaled && code == 0; }
};

class Executor {
 public:
  ~Executor();  // kills what is still running
  Result<pid_t> Start(const LaunchSpec& spec);
  // Writes the notice file ({"deadline_us","reason","price"}) and sends SIGTERM to the group.
  Status Notify(uint32_t job, int64_t deadline_us, const std::string& reason,
                const std::string& price);
  Status Kill(uint32_t job);
  // Exited attempts since the last call; `block` waits for at least one when any runs.
  std::vector<ExitStatus> Reap(bool block);
  bool Running(uint32_t job) const { return running_.count(job) > 0; }
  static std::string LogPath(const std::string& state_dir, uint32_t job, int32_t attempt);
  static std::string NoticePath(const std::string& state_dir, uint32_t job);

 private:
  struct Child {
    pid_t pid;
    int32_t attempt;
    std::string state_dir;
  };
  std::map<uint32_t, Child> running_;
};

}  // namespace rsv::agent
