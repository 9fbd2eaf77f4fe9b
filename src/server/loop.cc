// server/loop: the leader's loop. Each tick: a snapshot when one is due, the output past its
// retention removed, agents' heartbeat and start timeouts, one scheduling cycle (logged when it
// decided something or moved money), and the parked long-polls polled (docs/ha.md,
// docs/agent.md). Everything it changes goes through the applier as commands.
#include <cstdio>
#include <filesystem>

#include "server/control.h"

namespace rsv::server {
namespace {

// A span for people: "10.1s".
std::string Seconds(Duration d) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.1fs", static_cast<double>(d.micros()) / 1e6);
  return buf;
}

}  // namespace

void ControlPlane::Tick() {
  Command c;
  c.kind = cmd::Cycle::kKind;
  c.body = EncodeCommand(cmd::Cycle{});
  std::vector<std::function<void()>> ready;
  std::vector<Command> agent_log;
  int32_t decisions = 0;
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (!leading_) return;
    poll_all_ = ++ticks_ % kNetTicks == 0;  // the net (ControlPlane::node_waiters_)
    c.at = clock_->Now();
    MaybeSnapshotLocked(c.at);         // before the cycle: a snapshot never waits for its commit
    if (c.at >= next_output_sweep_) {  // once a minute: it walks the unfinished jobs
      RemoveExpiredOutputLocked(c.at);
      next_output_sweep_ = c.at + Duration::Minutes(1);
    }
    CheckAgentsLocked(c.at, &agent_log);
    int64_t t0 = ticker_.Nanos();
    const size_t entries_before = sched_.ledger().entries().size();
    CycleReport r = sched_.RunCycle(c.at);
    int64_t ns = ticker_.Nanos() - t0;
    ++cycles_;
    cycle_ns_sum_ += ns;
    for (size_t b = 0; b < cycle_ns_buckets_.size(); ++b) {
      if (ns <= (int64_t{1000} << (2 * b))) ++cycle_ns_buckets_[b];
    }
    // A cycle that moved money (spot charges, lending credits accrue with time) is logged like
    // one that decided something: replay then accrues over exactly the same intervals, so the
    // ledger it rebuilds is the live one, entry for entry.
    decisions = r.events + static_cast<int32_t>(sched_.ledger().entries().size() - entries_before);
    DrainEvents();
    SampleUsageLocked();  // once a cycle: the history's points are cycles that changed something
    // Queued under the lock (the log's order is the order of application). Timeouts decided
    // here are logged before the cycle that may have acted on them. A cycle that decided
    // nothing and moved no money is not logged. Agents hear of the decisions once they are
    // durable: a start a leader's crash lost is never started.
    const Timestamp now = c.at;
    if (decisions > 0) agent_log.push_back(std::move(c));
    if (!QueueLocked(&agent_log, [this](Status) { RunReadyWaiters(); })) {
      ready = TakeReadyWaiters(now);
    }
  }
  for (auto& fn : ready) fn();
}

void ControlPlane::CheckAgentsLocked(Timestamp now, std::vector<Command>* log) {
  const ClusterState& st = sched_.state();
  for (auto& [node_id, link] : agents_) {
    const Node& n = st.node(NodeId(node_id));
    if (n.state != NodeState::kDown && now - link.last_seen > config_.heartbeat_timeout) {
      (void)ApplyInternal(
          cmd::NodeStateChange{.node = n.name,
                               .state = "down",
                               .reason = "no heartbeat for " + Seconds(now - link.last_seen)},
          log);
      continue;
    }
    std::vector<JobId> late;
    const std::vector<JobId> held = n.Holders();  // whole-GPU holders, then the shares
    for (JobId j : held) {
      if (!j.valid() || std::find(late.begin(), late.end(), j) != late.end()) continue;
      const Job& job = st.job(j);
      // Timed from when this server began leading, if later: a start decided by the last
      // leader gets a whole timeout to be confirmed here.
      const Timestamp since = std::max(job.started, start_grace_from_);
      if (job.state == JobState::kStarting && now - since > config_.start_timeout) {
        late.push_back(j);
      }
    }
    for (JobId j : late) {
      cmd::StartFailed late_start;
      late_start.node = n.name;
      late_start.job = j.value();
      late_start.attempt = st.job(j).attempt;
      late_start.reason = "not confirmed by the agent within " + config_.start_timeout.ToString();
      (void)ApplyInternal(late_start, log);
    }
  }
}

void ControlPlane::RemoveExpiredOutputLocked(Timestamp now) {
  RefreshUnfinishedLocked();
  while (!output_kept_.empty() &&
         Timestamp::FromMicros(output_kept_.begin()->first) + config_.output_retention <= now) {
    const uint32_t job = output_kept_.begin()->second;
    output_kept_.erase(output_kept_.begin());
    if (config_.log_dir.empty()) continue;
    std::error_code ec;  // a directory already gone (or never made) is what we want
    std::filesystem::remove_all(config_.log_dir + "/" + std::to_string(job), ec);
  }
}

}  // namespace rsv::server
