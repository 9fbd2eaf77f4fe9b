// agent/agent: the reconciliation loop run on every GPU host (docs/agent.md). Registers the
// node with its GPUs, then syncs with the server over and over: it reports what actually runs
// (attempts running, exited, lost; GPU health; new job output) and gets back what should run,
// which it makes true: starts attempts, delivers notices (SIGTERM, then SIGKILL at the
// deadline) and stops what the server no longer wants. Level-triggered and idempotent: every
// sync restates the whole truth, so a lost reply or a restart of either side converges.
// What it started is recorded in <state_dir>/agent.json before it starts, so a restarted agent
// finds its attempts again (or reports them lost) and never runs one twice.
#pragma once

#include <atomic>
#include <cstdint>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "agent/executor.h"
#include "agent/gpu_probe.h"
#include "common/clock.h"
#include "common/http_client.h"

namespace rsv::agent {

// Whose user a job runs as (docs/agent.md, "What a job can reach").
struct JobUsers {
  bool switch_users = false;                               // the agent is root: jobs never are
  std::map<std::string, std::pair<int64_t, int64_t>> map;  // tenant -> uid, gid
  int64_t uid_base = 2'000'000;  // unmapped tenants: uid = gid = uid_base + tenant id
};

struct AgentConfig {
  std::string server;  // http://host:port, or several: a leader and its standbys (docs/ha.md)
  std::string token;   // the node's token (or an admin token)
  std::string pool;
  std::string node;      // node id; default: the host name
  std::string topology;  // "zone/rack"
  // Where peers reach this node (gangs' MASTER_ADDR); empty: the server uses the node's name.
  std::string address;
  std::string state_dir;
  int32_t wait_s = 5;
  std::string checkpoint_root;  // shared storage for checkpoints; empty: under state_dir
  JobUsers users;
  std::vector<std::string> pass_env;             // more names jobs get from the agent's environment
  int64_t max_output_bytes = int64_t{64} << 20;  // kept per attempt (the server caps it too)
  // The MPS control daemon's pipe directory (docs/agent.md, "GPU shares"). Empty:
  // $CUDA_MPS_PIPE_DIRECTORY, else /tmp/nvidia-mps. MPS runs here when it holds `control`.
  std::string mps_pipe;
};

class Agent {
 public:
  Agent(AgentConfig config, std::unique_ptr<GpuProbe> probe, const Clock* clock);
  ~Agent();
  // Runs until `stop` is set (then a byte on wake_fd() makes it notice at once). Returns the
  // process exit code. Attempts keep running when the agent stops, unless `stop_jobs`.
  int Run(const std::atomic<bool>* stop, bool stop_jobs);
  // Writing a byte here wakes the loop (SIGCHLD and stop signals do).
  int wake_fd() const { return wake_[1]; }

 private:
  struct Report {
    uint32_t job = 0;
    int32_t attempt = 0;
    std::string status;  // exited, start_failed, lost
    bool success = false;
    std::string detail;
  };
  using Key = std::pair<uint32_t, int32_t>;  // job, attempt

  bool Register();
  // One sync; false when the server could not be reached (or refused the node).
  bool Sync(bool urgent);
  void Reconcile(const std::string& desired_json);
  void CollectExits();
  // How long out of touch with the server before the attempts stop themselves.
  Duration FenceAfter() const;
  // Whether the one server's URL names this host's loopback (a refusal there proves it is down).
  bool ServerIsLocal() const;
  void SaveState();
  void LoadState();
  void Log(const std::string& line);
  void Drain();  // discards wake-ups
  void Touch();  // the heartbeat file: "this agent reached the server just now"

  AgentConfig config_;
  std::unique_ptr<GpuProbe> probe_;
  const Clock* clock_;
  Executor exec_;
  std::string cgroup_parent_;  // empty: limits not applied
  std::string cgroup_note_;
  // What CUDA_VISIBLE_DEVICES names each device by, from the last poll (MIG instances by UUID).
  std::vector<std::string> devices_;
  std::string MpsPipe() const;  // empty: no MPS control daemon runs here
  int wake_[2] = {-1, -1};
  std::string known_;            // the desired-set version last applied
  std::vector<Report> reports_;  // not yet acknowledged by the server
  std::set<Key> launched_;       // attempts started here (and in agent.json) until acked
  std::set<Key> capped_;         // attempts whose output reached the cap
  std::set<Key> marked_;         // ... and the server was told so
  // The modification time (µs) of each running attempt's $RESERVOIR_CHECKPOINT_DIR/.checkpoint
  // last reported (or found at its start): a newer one is a completed checkpoint to report.
  std::map<Key, int64_t> checkpoint_seen_;
  int64_t CheckpointMark(uint32_t job) const;  // 0: no marker file
  std::map<Key, int64_t> shipped_;             // output bytes acknowledged by the server
  std::map<uint32_t, int64_t> kill_at_;        // job -> notice deadline (µs)
  std::set<Key> notified_;
  // Elastic jobs resized in place (docs/agent.md, "Elastic jobs"): per job, the resize
  // generation last delivered, and the acknowledgement last reported.
  std::map<uint32_t, int64_t> resize_sent_;
  std::map<uint32_t, int64_t> resize_acked_;
  std::map<uint32_t, std::pair<int64_t, int64_t>> resize_kill_at_;  // job -> (deadline µs, gen)
  int64_t ResizeAck(uint32_t job) const;
  bool ResizePending() const;  // a shrink the job has not acknowledged yet
  std::string last_error_;
  bool out_of_touch_ = false;  // the last sync failed or went unanswered
  bool shared_store_ = false;  // the server said its store is shared with standbys
  Timestamp fence_gap_ended_;  // the last contact that ended a gap longer than the fence
  bool started_ = false;
  ServerSet servers_;         // the call goes to whichever leads
  bool refused_ = false;      // the server refused the registration: the agent exits
  int64_t heartbeat_s_ = 10;  // the server's heartbeat timeout, from its replies
  Timestamp last_heard_;      // when the last successful sync began  // an attempt was
                              // started since the last sync: confirm it at once
};

}  // namespace rsv::agent
