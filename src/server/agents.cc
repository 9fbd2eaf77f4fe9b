// server/agents: the control plane's side of the agent protocol (docs/agent.md): node
// registration, the level-triggered sync (the agent reports what runs, the server answers with
// what should), heartbeat and start timeouts, and job output shipped by agents.
#include <sys/stat.h>

#include <bit>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <memory>
#include <nlohmann/json.hpp>

#include "common/sha256.h"
#include "server/control.h"
#include "server/views.h"

namespace rsv::server {
namespace {

using json = nlohmann::json;

constexpr int64_t kMaxLogChunk = 256 * 1024;  // bytes per Logs reply

bool IsInt(const json& o, const char* k) { return o.contains(k) && o[k].is_number_integer(); }

// The shape of an agent's report; errors name the field.
Status ValidateReport(const json& r) {
  if (!r.is_object()) return InvalidArgument("body", "must be a JSON object");
  for (const auto& [k, v] : r.items()) {
    if (k != "known" && k != "jobs" && k != "health" && k != "gpus" && k != "logs") {
      return InvalidArgument(k, "unknown field");
    }
  }
  if (r.contains("known") && !r["known"].is_string())
    return InvalidArgument("known", "must be a string");
  if (r.contains("health") && !r["health"].is_string())
    return InvalidArgument("health", "must be a string (empty when healthy)");
  if (r.contains("gpus") && !r["gpus"].is_array())
    return InvalidArgument("gpus", "must be an array");
  if (r.contains("jobs")) {
    if (!r["jobs"].is_array()) return InvalidArgument("jobs", "must be an array");
    for (size_t i = 0; i < r["jobs"].size(); ++i) {
      const json& j = r["jobs"][i];
      std::string at = "jobs[" + std::to_string(i) + "]";
      if (!j.is_object() || !IsInt(j, "job") || !IsInt(j, "attempt"))
        return InvalidArgument(at, "needs integer job and attempt");
      std::string st =
          j.contains("status") && j["status"].is_string() ? j["status"].get<std::string>() : "";
      if (st != "running" && st != "exited" && st != "start_failed" && st != "lost")
        return InvalidArgument(at + ".status", "must be running, exited, start_failed or lost");
      if (j.contains("success") && !j["success"].is_boolean())
        return InvalidArgument(at + ".success", "must be true or false");
      if (j.contains("detail") && !j["detail"].is_string())
        return InvalidArgument(at + ".detail", "must be a string");
      if (j.contains("checkpoint") && !j["checkpoint"].is_boolean())
        return InvalidArgument(at + ".checkpoint", "must be true or false");
      if (j.contains("checkpoint_us") && !IsInt(j, "checkpoint_us"))
        return InvalidArgument(at + ".checkpoint_us", "must be an integer");
      if (j.contains("resize_ack") && !IsInt(j, "resize_ack"))
        return InvalidArgument(at + ".resize_ack", "must be an integer (a resize generation)");
    }
  }
  if (r.contains("logs")) {
    if (!r["logs"].is_array()) return InvalidArgument("logs", "must be an array");
    for (size_t i = 0; i < r["logs"].size(); ++i) {
      const json& l = r["logs"][i];
      std::string at = "logs[" + std::to_string(i) + "]";
      if (!l.is_object() || !IsInt(l, "job") || !IsInt(l, "attempt") || !IsInt(l, "offset") ||
          !l.contains("data") || !l["data"].is_string() || l["offset"].get<int64_t>() < 0) {
        return InvalidArgument(at, "needs integer job, attempt, offset >= 0 and string data");
      }
      if (l.contains("dropped") && !l["dropped"].is_boolean())
        return InvalidArgument(at + ".dropped", "must be true or false");
    }
  }
  return Status::Ok();
}

Status StoppedLeading() {
  return Status(Code::kUnavailable, "this server stopped leading: sync with the leader");
}

// A sync's reply, for once it may be sent (ControlPlane::WhenDurableLocked).
std::function<void(bool)> SyncReply(std::function<void(Result<Reply>)> done, std::string body) {
  return [done = std::move(done), body = std::move(body)](bool ok) {
    if (ok) {
      done(Reply{200, body});
    } else {
      done(StoppedLeading());
    }
  };
}

}  // namespace

bool ControlPlane::QueueLocked(std::vector<Command>* log, std::function<void(Status)> then) {
  if (log->empty()) return false;
  struct Left {
    size_t n;
    Status first_error;
    std::function<void(Status)> then;
  };
  auto left = std::make_shared<Left>(Left{log->size(), Status::Ok(), std::move(then)});
  for (Command& c : *log) {
    // The committer calls back in order, on one thread.
    PersistLocked(std::move(c), [left](Status s) {
      if (!s.ok() && left->first_error.ok()) left->first_error = s;
      if (--left->n == 0) left->then(left->first_error);
    });
  }
  log->clear();
  return true;
}

nlohmann::json ControlPlane::GangLocked(const Job& j, const Placement& all, NodeId here) const {
  const ClusterState& st = sched_.state();
  // Ranks follow the placement's order of nodes; rank 0's node hosts the rendezvous.
  json nodes = json::array();
  int32_t rank = 0, local = 0;
  std::vector<NodeId> order;
  for (const NodeSlice& s : all.slices) {
    if (s.node == here) local += std::popcount(s.gpu_mask);
    if (std::find(order.begin(), order.end(), s.node) != order.end()) continue;
    if (s.node == here) rank = static_cast<int32_t>(order.size());
    order.push_back(s.node);
    auto link = agents_.find(s.node.value());
    nodes.push_back(link != agents_.end() && !link->second.address.empty() ? link->second.address
                                                                           : st.node(s.node).name);
  }
  // A port no other job on rank 0's node has now: GPUs are exclusive, so the lowest GPU the job
  // holds there (its first slice) picks a range of its own; the attempt picks within it, so a
  // new attempt does not meet the last one's sockets (docs/agent.md, "Gangs").
  const uint64_t first = j.placement.slices.empty() ? 0 : j.placement.slices.front().gpu_mask;
  const int64_t lowest = first == 0 ? 0 : std::countr_zero(first);
  // Shares of one GPU have its range between them: the job's id spreads them over it.
  const int64_t pick = j.spec.share() ? j.id.value() + j.attempt : j.attempt;
  const int64_t port = kGangPortBase + lowest * kPortsPerGpu + pick % kPortsPerGpu;
  return json{{"rank", rank},
              {"nodes", std::move(nodes)},
              {"gpus_per_node", local},
              {"gpus", all.GpuCount()},
              {"master_port", port}};
}

nlohmann::json ControlPlane::ResizeLocked(const Job& j, NodeId here) const {
  const Placement target = sched_.state().ResizeTarget(j);
  json gang = GangLocked(j, target, here);
  json gpus = json::array();
  for (const NodeSlice& s : target.slices) {
    for (int g = 0; s.node == here && g < 64; ++g) {
      if ((s.gpu_mask >> g) & 1) gpus.push_back(g);
    }
  }
  json out = {{"generation", j.resize_generation},
              {"gpus", std::move(gpus)},
              {"nodes", gang["nodes"]},
              {"total", target.GpuCount()}};
  // A shrink: the GPUs it takes away are the job's until this deadline, unless it takes the
  // generation in sooner.
  std::optional<Timestamp> deadline;
  for (JobId u : j.units) {
    const Job& unit = sched_.state().job(u);
    if (unit.state == JobState::kPreempting && unit.shrink_generation > 0 &&
        (!deadline || unit.notice_deadline < *deadline)) {
      deadline = unit.notice_deadline;
    }
  }
  if (deadline) out["deadline_us"] = deadline->micros();
  return out;
}

std::string ControlPlane::DesiredKeyLocked(NodeId id, const DesiredVisit& visit) const {
  const ClusterState& st = sched_.state();
  const Node& n = st.node(id);
  std::string key = std::string(NodeStateName(n.state)) + ";";
  std::vector<JobId> seen;
  const std::vector<JobId> holders = n.Holders();  // whole-GPU holders, then the shares
  for (JobId jid : holders) {
    // A unit of an elastic job is GPUs of that job (docs/market.md, "Elastic jobs").
    if (jid.valid() && st.job(jid).unit_of.valid()) jid = st.job(jid).unit_of;
    if (!jid.valid() || std::find(seen.begin(), seen.end(), jid) != seen.end()) continue;
    seen.push_back(jid);
    const Job& j = st.job(jid);
    // A gang member that has ended waits for the others elsewhere; nothing runs here.
    if (Contains(j.ended, id)) continue;
    const Placement all = st.AttemptPlacement(j);
    int32_t here = 0;
    for (const NodeSlice& s : all.slices) {
      if (s.node == id) here += std::popcount(s.gpu_mask);
    }
    if (here == 0) continue;  // a unit granted while the attempt runs joins the next (restart mode)
    // A member on a node a grow added to a running job (signal mode) starts there.
    const bool joining = j.state == JobState::kRunning && j.spec.elastic() &&
                         j.spec.resize_mode == ResizeMode::kSignal && !Contains(j.confirmed, id);
    if (visit) visit(j, all, joining);
    key += std::to_string(jid.value()) + ":" + std::to_string(j.attempt) + ":" +
           std::string(JobStateName(j.state)) + (joining ? ":j" : "") + ":" +
           std::to_string(j.resize_generation) +
           // A later shrink can bring a restart-mode resize's deadline forward: the notice
           // changes, so the agent must hear of it.
           (j.resizing ? ":r" + std::to_string(j.resize_deadline.micros()) : "") + ":" +
           std::to_string(here) + ";";
  }
  return key;
}

std::string ControlPlane::VersionOf(const std::string& key) { return Sha256Hex(key).substr(0, 16); }

std::string ControlPlane::DesiredLocked(NodeId id, std::string* version) const {
  const ClusterState& st = sched_.state();
  const Node& n = st.node(id);
  json jobs = json::array();
  const std::string key =
      DesiredKeyLocked(id, [&](const Job& j, const Placement& all, bool joining) {
        json gpus = json::array();
        for (const NodeSlice& s : all.slices) {
          if (s.node != id) continue;
          for (int g = 0; g < n.gpus; ++g) {
            if ((s.gpu_mask >> g) & 1) gpus.push_back(g);
          }
        }
        json e = {{"job", j.id.value()},
                  {"attempt", j.attempt},
                  {"state", joining ? "starting" : JobStateName(j.state)},
                  {"name", j.spec.name},
                  {"tenant", st.tenant(j.spec.tenant).name},
                  {"tenant_id", j.spec.tenant.value()},
                  {"gpus", gpus},
                  {"command", j.spec.command},
                  {"env", j.spec.env},
                  {"workdir", j.spec.workdir}};
        if (j.spec.cpu_millis > 0) e["cpu_millis"] = j.spec.cpu_millis;
        if (j.spec.memory_mib > 0) e["memory_mib"] = j.spec.memory_mib;
        if (j.spec.time_limit_s > 0) e["time_limit_s"] = j.spec.time_limit_s;
        if (j.spec.share()) {  // docs/agent.md, "GPU shares"
          e["gpu_milli"] = j.spec.gpu_milli;
          if (j.spec.gpu_memory_mib > 0) e["gpu_memory_mib"] = j.spec.gpu_memory_mib;
        }
        e["gang"] = GangLocked(j, all, id);
        if (j.state == JobState::kPreempting) {
          e["notice"] = {{"deadline_us", j.notice_deadline.micros()},
                         {"reason", j.preempt_reason},
                         {"price", sched_.Price(j.spec.pool).ToString()}};
        } else if (j.resizing) {  // restart mode: this attempt stops; the next runs at the new size
          e["notice"] = {{"deadline_us", j.resize_deadline.micros()},
                         {"reason", "resize"},
                         {"price", sched_.Price(j.spec.pool).ToString()}};
        }
        if (j.spec.elastic() && j.spec.resize_mode == ResizeMode::kSignal) {
          e["resize"] = ResizeLocked(j, id);
        }
        jobs.push_back(std::move(e));
      });
  *version = VersionOf(key);
  return Dump(json{{"node", n.name},
                   {"state", NodeStateName(n.state)},
                   {"version", *version},
                   {"heartbeat_timeout_s", config_.heartbeat_timeout.seconds()},
                   {"shared_store", config_.shared_store},
                   {"jobs", std::move(jobs)}});
}

void ControlPlane::Sync(const std::string& node, const std::string& report, Timestamp deadline,
                        std::function<void(Result<Reply>)> done) {
  json r = json::parse(report.empty() ? "{}" : report, nullptr, false);
  if (r.is_discarded()) return done(InvalidArgument("body", "is not valid JSON"));
  if (Status s = ValidateReport(r); !s.ok()) return done(s);
  std::vector<Command> log;
  json acks = json::array();
  std::string reply_body;
  std::function<void()> send;
  bool immediate = false;
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (!leading_) {
      return done(
          Status(Code::kUnavailable, "this server is a standby: agents sync with the leader"));
    }
    const ClusterState& st = sched_.state();
    const Timestamp now = clock_->Now();
    std::optional<NodeId> id = st.FindNode(node);
    if (!id || !agents_.count(id->value())) {
      return done(NotFound("node " + node + " is not registered; the agent registers it first"));
    }
    AgentLink& link = agents_[id->value()];
    link.last_seen = now;
    // A parked sync must end well before the heartbeat timeout: the next sync is the heartbeat.
    const Timestamp latest = now + Duration::Micros(config_.heartbeat_timeout.micros() / 2);
    if (deadline > latest) deadline = latest;
    if (r.contains("gpus")) link.inventory = Dump(r["gpus"]);
    if (st.node(*id).state == NodeState::kDown) {
      (void)ApplyInternal(cmd::NodeStateChange{.node = node, .state = "ready", .reason = ""}, &log);
    }
    // Output first: a job's last lines arrive with (or before) its exit.
    for (const json& l : r.value("logs", json::array())) {
      uint32_t job = l["job"].get<uint32_t>();
      int32_t attempt = l["attempt"].get<int32_t>();
      if (!st.HasJob(JobId(job)) || attempt < 1 || attempt > st.job(JobId(job)).attempt) continue;
      // Only output of attempts this node ran: one the job holds here now (remembered), or one
      // remembered from before. Anything else is acknowledged and dropped, so a node cannot
      // write into another job's output (and its agent does not resend it forever).
      const Job& lj = st.job(JobId(job));
      const Placement all = st.AttemptPlacement(lj);
      const bool here_now = lj.attempt == attempt && HoldsGpus(lj.state) &&
                            std::any_of(all.slices.begin(), all.slices.end(),
                                        [&](const NodeSlice& s) { return s.node == *id; });
      if (here_now) {
        ran_on_[{job, attempt, id->value()}] =
            lj.placement.slices.front().node == *id ? "" : "." + node;
      }
      auto ran = ran_on_.find({job, attempt, id->value()});
      if (ran == ran_on_.end()) {
        acks.push_back({{"job", job},
                        {"attempt", attempt},
                        {"size", l["offset"].get<int64_t>() +
                                     static_cast<int64_t>(l["data"].get<std::string>().size())}});
        continue;
      }
      const bool dropped = l.value("dropped", false);
      int64_t size = AppendLog(LogPathOf(job, attempt, ran->second), l["offset"].get<int64_t>(),
                               l["data"].get<std::string>(), dropped);
      acks.push_back({{"job", job}, {"attempt", attempt}, {"size", size}});
      if (dropped) acks.back()["dropped"] = true;
    }
    bool reported = !acks.empty();
    for (const json& e : r.value("jobs", json::array())) {
      JobId jid(e["job"].get<uint32_t>());
      int32_t attempt = e["attempt"].get<int32_t>();
      if (!st.HasJob(jid)) continue;
      const Job& j = st.job(jid);
      // An attempt's end is reported once all its output is shipped: forget where it ran.
      if (e.value("status", "") != "running") ran_on_.erase({jid.value(), attempt, id->value()});
      bool here = false;
      for (const NodeSlice& s : st.AttemptPlacement(j).slices) here = here || s.node == *id;
      // Reports about attempts this node no longer holds are stale: the desired set in the
      // reply tells the agent to stop them.
      if (!here || j.attempt != attempt || !HoldsGpus(j.state)) continue;
      std::string status = e["status"].get<std::string>();
      // "member": this node's part of the attempt (a gang runs once all have started, and
      // ends when the first has ended).
      const cmd::MemberReport member{node, jid.value(), attempt, true};
      // The job completed a checkpoint. Members of a gang sharing a checkpoint directory all
      // see the same marker (its modification time): the first report of it counts.
      if (status == "running" && e.value("checkpoint", false)) {
        const int64_t marker = e.value("checkpoint_us", int64_t{0});
        auto seen = checkpoint_markers_.find(jid.value());
        if (marker == 0 || seen == checkpoint_markers_.end() || marker > seen->second) {
          cmd::Checkpoint report{member, 0};
          report.marker_us = marker;
          (void)ApplyInternal(report, &log);
        }
      }
      // Signal mode: the job took in a resize generation; units it leaves out are freed.
      if (status == "running" && e.contains("resize_ack")) {
        const int64_t gen = e["resize_ack"].get<int64_t>();
        if (sched_.AckFrees(j, gen)) {
          cmd::ResizeAck ack{member, 0};
          ack.generation = static_cast<int32_t>(gen);
          (void)ApplyInternal(ack, &log);
          reported = true;
        }
      }
      if (status == "running") {
        const bool joins = j.state == JobState::kRunning && !j.units.empty();  // a grow's node
        if ((j.state != JobState::kStarting && !joins) || Contains(j.confirmed, *id)) {
          continue;
        }
        (void)ApplyInternal(cmd::Started{member}, &log);
      } else if (status == "exited") {
        if (Contains(j.ended, *id)) continue;
        cmd::AgentExit exit{member, false, false, ""};
        exit.success = e.value("success", false);
        exit.detail = e.value("detail", "");
        (void)ApplyInternal(exit, &log);
      } else if (status == "lost" && j.state != JobState::kStarting) {
        // A confirmed attempt the agent no longer has: that member is gone (its gang stops).
        if (Contains(j.ended, *id)) continue;
        cmd::AgentExit lost{member, false, false, ""};
        lost.lost = true;
        lost.detail = "lost on node " + node + " (" +
                      e.value("detail", std::string("the agent no longer has it")) + ")";
        (void)ApplyInternal(lost, &log);
      } else {
        cmd::StartFailed failed{member, "", false};
        failed.counts = status == "start_failed";
        failed.reason = status == "lost" ? "lost on node " + node + " (the agent no longer has it)"
                                         : e.value("detail", std::string("could not start"));
        (void)ApplyInternal(failed, &log);
      }
      reported = true;
    }
    std::string health = r.value("health", "");
    if (!health.empty() && st.node(*id).state == NodeState::kReady) {
      (void)ApplyInternal(cmd::NodeStateChange{.node = node, .state = "draining", .reason = health},
                          &log);
    }
    // A sync that reports nothing new and knows the current version costs the set's key and
    // its hash: no JSON is built for an agent that parks.
    std::string known = DesiredKeyLocked(*id);
    immediate =
        reported || !log.empty() || VersionOf(known) != r.value("known", "") || deadline <= now;
    if (!immediate) {
      NodeId nid = *id;
      // A parked agent is answered once its desired set changes: each change compares only
      // the set's key (no JSON, no hash), and builds the reply for the agents it changed.
      park_deadlines_.emplace(deadline.micros(), nid.value());
      node_waiters_[nid.value()].push_back(
          Waiter{deadline,
                 [this, nid, known, done](bool timed_out) -> std::function<void()> {
                   if (!timed_out && DesiredKeyLocked(nid) == known) return {};
                   std::string v;
                   std::string body = DesiredLocked(nid, &v);
                   // Answering is hearing from it: the agent counts its contact from the reply.
                   auto link = agents_.find(nid.value());
                   if (link != agents_.end()) link->second.last_seen = clock_->Now();
                   return WhenDurableLocked(SyncReply(done, std::move(body)));
                 },
                 [done] { done(StoppedLeading()); }});
      return;
    }
    std::string version;
    reply_body = DesiredLocked(*id, &version);
    if (!acks.empty()) {
      json out = json::parse(reply_body);
      out["logs"] = acks;
      reply_body = Dump(out);
    }
    // Queued under the lock: the log's order is the order commands were applied in.
    if (QueueLocked(&log, [this, done, reply_body](Status s) {
          if (!s.ok()) return done(s);
          done(Reply{200, reply_body});
          RunReadyWaiters();
        })) {
      return;
    }
    // Nothing of this sync to make durable, but the set may show commands that are not yet.
    send = WhenDurableLocked(SyncReply(done, std::move(reply_body)));
  }
  send();
  RunReadyWaiters();
}

std::string ControlPlane::LogPathOf(uint32_t job, int32_t attempt,
                                    const std::string& suffix) const {
  return config_.log_dir + "/" + std::to_string(job) + "/attempt-" + std::to_string(attempt) +
         suffix + ".log";
}

int64_t ControlPlane::AppendLog(const std::string& path, int64_t offset, const std::string& data,
                                bool dropped) {
  if (config_.log_dir.empty()) return offset + static_cast<int64_t>(data.size());
  std::error_code ec;
  std::filesystem::create_directories(std::filesystem::path(path).parent_path(), ec);
  struct stat sb {};
  int64_t size = ::stat(path.c_str(), &sb) == 0 ? sb.st_size : 0;
  // Idempotent: bytes already here are skipped; a gap (offset past the end) is refused and the
  // agent resends from `size`.
  const int64_t end = offset + static_cast<int64_t>(data.size());
  // Past the cap, output is acknowledged and dropped; a marker line says so, once: when this
  // server drops some, or when the agent says it dropped the rest (at the cap).
  const int64_t cap = config_.max_output_bytes;
  const std::string marker =
      "\n[reservoir: output past " + std::to_string(cap >> 20) + " MiB dropped]\n";
  if (offset > size || end <= size) {
    if (!dropped || size != cap) return size;
    std::ofstream(path, std::ios::binary | std::ios::app) << marker;
    return end;
  }
  if (size >= cap) return end;
  int64_t keep = std::min(end, cap) - size;
  std::ofstream out(path, std::ios::binary | std::ios::app);
  out.write(data.data() + (size - offset), static_cast<std::streamsize>(keep));
  if (end > cap || (dropped && end == cap)) out << marker;
  out.flush();
  return out ? end : size;
}

void ControlPlane::Logs(const Caller& caller, int64_t job, int32_t attempt, const std::string& node,
                        int64_t offset, Timestamp deadline,
                        std::function<void(Result<Reply>)> done) {
  if (config_.log_dir.empty()) {
    return done(FailedPrecondition("this server keeps no job output (it runs without --db)"));
  }
  const JobId id(static_cast<uint32_t>(job));
  // Reads under the lock, so "complete" and the bytes agree with the same state.
  auto read = [this, id, offset, node](int32_t attempt, bool timed_out) -> Result<Reply> {
    const Job& j = sched_.state().job(id);
    bool complete = j.attempt > attempt || IsTerminal(j.state) || !HoldsGpus(j.state);
    // The first node's output (rank 0) has no suffix; every other member's is beside it.
    std::ifstream in(LogPathOf(id.value(), attempt, node.empty() ? "" : "." + node),
                     std::ios::binary);
    std::string data;
    if (in) {
      in.seekg(offset);
      data.resize(kMaxLogChunk);
      in.read(data.data(), kMaxLogChunk);
      data.resize(in ? kMaxLogChunk
                     : static_cast<size_t>(std::max<std::streamsize>(in.gcount(), 0)));
    }
    if (data.empty() && !complete && !timed_out) return Status(Code::kUnavailable, "");
    json out = {{"job", id.value()},
                {"attempt", attempt},
                {"offset", offset},
                {"next_offset", offset + static_cast<int64_t>(data.size())},
                {"complete", complete && data.empty()},
                {"data", data}};
    // Removed with the rest of the job's output, config.output_retention after it finished.
    if (IsTerminal(j.state) && j.finished + config_.output_retention <= clock_->Now()) {
      out["expired"] = true;
    }
    return Reply{200, Dump(out)};
  };
  Result<Reply> now = NotFound("no such job");
  {
    std::lock_guard<std::mutex> lock(mu_);
    const ClusterState& st = sched_.state();
    if (job > 0 && st.HasJob(id) && (caller.admin || st.job(id).spec.tenant == caller.tenant)) {
      const int32_t current = st.job(id).attempt;
      if (attempt == 0) attempt = current;
      now = attempt > current
                ? Result<Reply>(InvalidArgument("attempt", "must be 1-" + std::to_string(current)))
                : read(attempt, deadline <= clock_->Now());
    }
    if (!now.ok() && now.status().code() == Code::kUnavailable) {  // nothing yet: wait
      waiters_.push_back(Waiter{deadline,
                                [read, attempt, done](bool timed_out) -> std::function<void()> {
                                  Result<Reply> r = read(attempt, timed_out);
                                  if (!r.ok()) return {};
                                  return [done, r] { done(r); };
                                },
                                {}});
      return;
    }
  }
  done(now);  // outside the lock, like every other reply
}

}  // namespace rsv::server
