// agent/executor: runs job attempts as real child processes (docs/agent.md, "What a job can
// reach"). Each attempt is a supervisor process (a subreaper, so nothing the job starts can
// leave its process tree, setsid'd or double-forked processes included) running the job's
// command as the job's user, with an environment built from an allow-list (never the agent's
// own: no tokens), its GPUs in CUDA_VISIBLE_DEVICES and NVIDIA_VISIBLE_DEVICES,
// RESERVOIR_JOB_ID, RESERVOIR_ATTEMPT, RESERVOIR_CHECKPOINT_DIR (kept across attempts, owned by
// the job's user, mode 0700) and RESERVOIR_NOTICE_FILE, and stdout and stderr in a log file per
// attempt. Notice = the notice file (JSON) written atomically, then SIGTERM to the supervisor,
// which passes it to every process of the job; Kill = SIGUSR1 to the supervisor, which kills
// every process of the job and exits (and cgroup.kill where the attempt has a cgroup). With a
// cgroup v2 parent (DetectCgroups), each attempt runs in its own cgroup with the job's CPU and
// memory limits. Attempts started by an earlier agent process are adopted: watched by pid (and
// start time) since they are no longer our children.
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
  std::vector<std::string> env;  // NAME=value, the job's own (after the allow-listed ones)
  // Names taken from the agent's environment (PATH, LANG, ... see kPassedEnv, plus these).
  std::vector<std::string> pass_env;
  // The job's user and group; -1: the agent's own (no switch, as when the agent is not root).
  int64_t uid = -1;
  int64_t gid = -1;
  std::string workdir;        // empty: the job's checkpoint directory
  std::vector<int32_t> gpus;  // GPU indices on this host
  // What CUDA_VISIBLE_DEVICES names for each of `gpus`, in order: a MIG instance's UUID, else
  // the index. Empty: the indices.
  std::vector<std::string> devices;
  // A share of one GPU (docs/agent.md, "GPU shares"): 1-999 milli-GPU of `gpus`' single GPU,
  // with at most `gpu_memory_mib` of its memory (0: not limited). 0 or 1000: whole GPUs.
  int32_t gpu_milli = 0;
  int64_t gpu_memory_mib = 0;
  // The pipe directory of the MPS control daemon on this host, when one runs there: a share's
  // compute and memory limits go to MPS. Empty: the GPU is time-sliced and the share is stated
  // to the job (RESERVOIR_GPU_SHARE), not enforced.
  std::string mps_pipe;
  std::string state_dir;  // jobs/<id>/{checkpoint,notice.json,attempt-N.log} live here
  // RESERVOIR_CHECKPOINT_DIR is <checkpoint_root>/<job> (empty root: <state_dir>/jobs/<id>/
  // checkpoint). Point every agent at shared storage for attempts to resume on any node.
  std::string checkpoint_root;
  int64_t cpu_millis = 0;  // limits; 0: none
  int64_t memory_mib = 0;
  // Wall-clock limit: the supervisor kills the attempt then and exits 124 (as timeout(1)).
  int64_t time_limit_s = 0;
  std::string cgroup_parent;  // a cgroup v2 directory with cpu and memory delegated; empty: none
  // Fencing: the attempt kills itself once `heartbeat_file` (touched by the agent after every
  // successful sync) is older than `fence_after_us`, or gone. Empty: no fencing.
  std::string heartbeat_file;
  int64_t fence_after_us = 0;
  // This node's part of its job's gang (docs/agent.md, "Gangs"); no nodes: not given.
  struct Gang {
    int32_t rank = 0;
    std::vector<std::string> nodes;  // members' addresses in rank order
    int32_t gpus_per_node = 0;       // this member's GPUs
    int32_t gpus = 0;                // the whole job's
    int64_t master_port = 0;
  } gang;
  // An elastic job resized in place (docs/agent.md, "Elastic jobs"): it gets
  // RESERVOIR_RESIZE_FILE and RESERVOIR_RESIZE_ACK.
  bool elastic_signal = false;
  std::string resize_json;  // the generation it starts with, written before it runs
};

// Where per-attempt cgroups can be made on this host: a directory, or an error saying why not
// (no cgroup v2, controllers not delegated, no permission). Called once by the agent.
Result<std::string> DetectCgroups();

// Variables a job gets from the agent's environment when present; nothing else of it passes.
inline constexpr const char* kPassedEnv[] = {
    "PATH", "LANG", "LANGUAGE",        "LC_ALL",    "LC_CTYPE",
    "TZ",   "TERM", "LD_LIBRARY_PATH", "CUDA_HOME", "NVIDIA_DRIVER_CAPABILITIES"};

// Every process in the tree below `pid` (not `pid` itself), found through /proc; zombies left
// out. Used by supervisors to stop what a job started, whatever session it moved to.
std::vector<pid_t> Descendants(pid_t pid, bool with_zombies = false);

struct ExitStatus {
  uint32_t job = 0;
  int32_t attempt = 0;
  bool signaled = false;
  int code = 0;       // exit code, or the signal number when signaled
  bool lost = false;  // an adopted attempt that is gone: its exit status cannot be known
  bool success() const { return !lost && !signaled && code == 0; }
};

struct Attempt {
  uint32_t job = 0;
  int32_t attempt = 0;
  pid_t pid = 0;
  int64_t start_ticks = 0;  // the process's start time (/proc), to tell a reused pid apart
};

class Executor {
 public:
  ~Executor();  // kills what is still running
  // `limits` (optional) says whether the job's CPU/memory limits were applied, and if not why.
  Result<pid_t> Start(const LaunchSpec& spec, std::string* limits = nullptr);
  // Watches an attempt an earlier agent process started; false when it is no longer running.
  bool Adopt(const Attempt& a, const std::string& state_dir);
  std::vector<Attempt> Attempts() const;
  // The process's start time in clock ticks since boot, or 0 when there is no such process.
  static int64_t StartTicks(pid_t pid);
  // Writes the notice file ({"deadline_us","reason","price"}) and sends SIGTERM to the group.
  Status Notify(uint32_t job, int64_t deadline_us, const std::string& reason,
                const std::string& price);
  // Writes the resize file (JSON) atomically, owned by the job's user; with `signal`, the job's
  // processes then get SIGUSR1.
  Status Resize(uint32_t job, const std::string& content, bool signal);
  Status Kill(uint32_t job);
  // Exited attempts since the last call; `block` waits for at least one of our own children.
  std::vector<ExitStatus> Reap(bool block);
  bool Running(uint32_t job) const { return running_.count(job) > 0; }
  static std::string LogPath(const std::string& state_dir, uint32_t job, int32_t attempt);
  static std::string NoticePath(const std::string& state_dir, uint32_t job);
  static std::string ResizePath(const std::string& state_dir, uint32_t job);
  // RESERVOIR_CHECKPOINT_DIR of a job (see LaunchSpec::checkpoint_root).
  static std::string CheckpointDir(const std::string& state_dir, const std::string& checkpoint_root,
                                   uint32_t job);

 private:
  struct Child {
    pid_t pid = 0;
    int32_t attempt = 0;
    std::string state_dir;
    int64_t start_ticks = 0;
    bool adopted = false;
    std::string cgroup;  // removed once the attempt is reaped
    int64_t uid = -1;    // the job's user (its notice file is its own)
    int64_t gid = -1;
  };
  void KillAttempt(const Child& c);
  std::map<uint32_t, Child> running_;
};

}  // namespace rsv::agent
