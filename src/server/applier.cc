// server/applier: the control plane's applier. One typed command at a time
// (server/commands.h), the same live, on a standby and on replay; it answers with what the
// command made and knows nothing of HTTP (docs/architecture.md, "The server's write path").
#include <algorithm>
#include <cstdint>
#include <nlohmann/json.hpp>

#include "server/control.h"
#include "server/views.h"

namespace rsv::server {

using json = nlohmann::json;

PoolConfig ControlPlane::PoolConfigOf(const cmd::ConfigPool& c) {
  PoolConfig p;
  p.name = c.name;
  p.gpu_model = c.gpu_model;
  p.reserve_price = Money::Micros(c.reserve_micros);
  p.min_increment = Money::Micros(c.min_increment_micros);
  p.max_notice = Duration::Micros(c.max_notice_us);
  p.reservation_base_price = Money::Micros(c.base_micros);
  p.reservation_surge = c.surge_bp;
  p.return_rate = c.return_rate_bp;
  p.operator_share = c.operator_share_bp;
  p.holdback_gpus = c.holdback_gpus;
  return p;
}

// ---------------------------------------------------------------------------------------------
// The applier: one typed command at a time (server/commands.h), the same live and on replay.
// It answers with the JSON body of what the command made; the HTTP layer chooses the status.

Result<PoolId> ControlPlane::PoolOf(const std::string& name) const {
  auto p = sched_.state().FindPool(name);
  if (!p) return InvalidArgument("pool", "unknown pool '" + name + "'");
  return *p;
}

Result<TenantId> ControlPlane::TenantOf(const std::string& name) const {
  auto t = sched_.state().FindTenant(name);
  if (!t) return InvalidArgument("tenant", "unknown tenant '" + name + "'");
  return *t;
}

Result<JobId> ControlPlane::JobOf(int64_t id, TenantId caller) const {
  const ClusterState& st = sched_.state();
  if (id <= 0 || id > UINT32_MAX || !st.HasJob(JobId(static_cast<uint32_t>(id)))) {
    return NotFound("no such job");
  }
  JobId j(static_cast<uint32_t>(id));
  if (caller.valid() && st.job(j).spec.tenant != caller) return NotFound("no such job");
  return j;
}

Result<std::string> ControlPlane::Apply(const Cmd& c, Timestamp now, bool replay, bool render) {
  render_ = render;
  return std::visit([&](const auto& x) { return On(x, now, replay); }, c);
}

std::string ControlPlane::Made(JobId id) const {
  return render_ ? JobJson(sched_.state(), sched_.state().job(id)).dump() : std::string();
}

Result<std::string> ControlPlane::On(const cmd::Cycle&, Timestamp now, bool) {
  sched_.RunCycle(now);
  return std::string("{}");
}

Result<std::string> ControlPlane::On(const cmd::Config& c, Timestamp now, bool) {
  const ClusterState& st = sched_.state();
  for (const cmd::ConfigPool& p : c.pools) {
    PoolConfig pc = PoolConfigOf(p);
    if (auto id = st.FindPool(pc.name)) {
      RSV_RETURN_IF_ERROR(sched_.SetPoolConfig(*id, std::move(pc), now));
    } else {
      RSV_RETURN_IF_ERROR(sched_.AddPool(std::move(pc)).status());
    }
  }
  for (const cmd::ConfigNode& n : c.nodes) {
    RSV_ASSIGN_OR_RETURN(PoolId pool, PoolOf(n.pool));
    if (st.FindNode(n.name)) continue;
    RSV_ASSIGN_OR_RETURN(NodeId id, sched_.AddNode(n.name, pool, n.gpus, n.topology));
    sched_.SetGpuMemory(id, n.gpu_memory_mib);
  }
  return std::string("{}");
}

Result<std::string> ControlPlane::On(const cmd::AddTenant& c, Timestamp, bool) {
  RSV_ASSIGN_OR_RETURN(TenantId id, sched_.AddTenant(c.name));
  return json{{"id", id.value()}, {"name", sched_.state().tenant(id).name}}.dump();
}

Result<std::string> ControlPlane::On(const cmd::AddToken& c, Timestamp, bool) {
  Caller caller;
  caller.admin = c.admin;
  caller.node = c.node;
  if (!caller.admin && caller.node.empty()) {
    RSV_ASSIGN_OR_RETURN(caller.tenant, TenantOf(c.tenant));
    caller.tenant_name = sched_.state().tenant(caller.tenant).name;
  }
  tokens_[c.hash] = caller;
  return TokenJson(c.hash, caller).dump();
}

Result<std::string> ControlPlane::On(const cmd::Revoke& c, Timestamp, bool) {
  // By the token's hash, or by its id (the hash's first 12 hex digits).
  std::string hash = c.hash;
  if (hash.empty()) {
    int matches = 0;
    for (const auto& [h, t] : tokens_) {
      if (!c.id.empty() && h.rfind(c.id, 0) == 0) {
        hash = h;
        ++matches;
      }
    }
    if (matches > 1)
      return FailedPrecondition("id " + c.id + " names several tokens: give the token");
  }
  auto it = tokens_.find(hash);
  if (it == tokens_.end()) return NotFound("no such token");
  if (it->second.admin && std::count_if(tokens_.begin(), tokens_.end(),
                                        [](const auto& t) { return t.second.admin; }) == 1) {
    return FailedPrecondition("that is the last admin token: create another admin token first");
  }
  json out = TokenJson(it->first, it->second);
  tokens_.erase(it);
  out["revoked"] = true;
  return out.dump();
}

Result<std::string> ControlPlane::On(const cmd::DeleteTenant& c, Timestamp now, bool) {
  RSV_ASSIGN_OR_RETURN(TenantId id, TenantOf(c.name));
  RSV_RETURN_IF_ERROR(sched_.DeleteTenant(id, now));
  int32_t revoked = 0;
  for (auto it = tokens_.begin(); it != tokens_.end();) {
    if (!it->second.admin && it->second.tenant == id) {
      it = tokens_.erase(it);
      ++revoked;
    } else {
      ++it;
    }
  }
  return json{
      {"name", sched_.state().tenant(id).name}, {"deleted", true}, {"tokens_revoked", revoked}}
      .dump();
}

Result<std::string> ControlPlane::On(const cmd::AddNode& c, Timestamp, bool) {
  RSV_ASSIGN_OR_RETURN(PoolId p, PoolOf(c.pool));
  RSV_ASSIGN_OR_RETURN(NodeId id, sched_.AddNode(c.name, p, c.gpus, c.topology));
  sched_.SetGpuMemory(id, c.gpu_memory_mib);
  return json{{"name", sched_.state().node(id).name}}.dump();
}

Result<std::string> ControlPlane::On(const cmd::ResizeAck& c, Timestamp now, bool) {
  RSV_ASSIGN_OR_RETURN(JobId id, JobOf(c.job, TenantId()));
  RSV_RETURN_IF_ERROR(sched_.ResizeAcked(id, c.attempt, c.generation, now));
  sched_.RunCycle(now);  // freed GPUs go to whoever waits for them
  return Made(id);
}

Result<std::string> ControlPlane::On(const cmd::Checkpoint& c, Timestamp now, bool) {
  RSV_ASSIGN_OR_RETURN(JobId id, JobOf(c.job, TenantId()));
  if (sched_.state().job(id).attempt != c.attempt) return FailedPrecondition("a stale attempt");
  RSV_RETURN_IF_ERROR(sched_.Checkpointed(id, now));
  int64_t& marker = checkpoint_markers_[id.value()];
  marker = std::max(marker, c.marker_us);
  return Made(id);
}

// Commands logged before gangs were tracked per member (`member` false) confirmed and ended a
// job as a whole; they replay as they were applied. After each, what it left is decided (in
// replay too: the log holds the command, not the cycle).
Result<std::string> ControlPlane::On(const cmd::Started& c, Timestamp now, bool) {
  const ClusterState& st = sched_.state();
  auto n = st.FindNode(c.node);
  if (!n) return NotFound("no such node");
  RSV_ASSIGN_OR_RETURN(JobId id, JobOf(c.job, TenantId()));
  RSV_RETURN_IF_ERROR(sched_.ConfirmStart(id, c.attempt, now, c.member ? *n : NodeId()));
  sched_.Decide(now);
  return Made(id);
}

Result<std::string> ControlPlane::On(const cmd::StartFailed& c, Timestamp now, bool) {
  const ClusterState& st = sched_.state();
  if (!st.FindNode(c.node)) return NotFound("no such node");
  RSV_ASSIGN_OR_RETURN(JobId id, JobOf(c.job, TenantId()));
  RSV_RETURN_IF_ERROR(sched_.StartFailed(id, c.attempt, c.reason, c.counts, now));
  sched_.Decide(now);
  return Made(id);
}

Result<std::string> ControlPlane::On(const cmd::AgentExit& c, Timestamp now, bool) {
  const ClusterState& st = sched_.state();
  auto n = st.FindNode(c.node);
  if (!n) return NotFound("no such node");
  RSV_ASSIGN_OR_RETURN(JobId id, JobOf(c.job, TenantId()));
  using End = Scheduler::MemberEnd;
  const End how = c.lost ? End::kLost : c.success ? End::kSucceeded : End::kFailed;
  if (c.member) {
    RSV_RETURN_IF_ERROR(sched_.MemberEnded(id, c.attempt, *n, how, c.detail, now));
  } else if (st.job(id).attempt != c.attempt) {
    return FailedPrecondition("a stale attempt");
  } else {
    RSV_RETURN_IF_ERROR(sched_.JobExited(id, how == End::kSucceeded, now, c.detail));
  }
  sched_.Decide(now);
  return Made(id);
}

Result<std::string> ControlPlane::On(const cmd::NodeStateChange& c, Timestamp now, bool) {
  auto n = sched_.state().FindNode(c.node);
  if (!n) return NotFound("no such node");
  NodeState to = c.state == "ready"      ? NodeState::kReady
                 : c.state == "draining" ? NodeState::kDraining
                                         : NodeState::kDown;
  RSV_RETURN_IF_ERROR(sched_.SetNodeState(*n, to, now));
  if (agents_.count(n->value())) agents_[n->value()].health = c.reason;
  sched_.RunCycle(now);  // requeued or freed work is decided at once
  return json{{"node", c.node}, {"state", c.state}}.dump();
}

Result<std::string> ControlPlane::On(const cmd::Reserve& c, Timestamp now, bool replay) {
  const ClusterState& st = sched_.state();
  ReservationRequest r;
  RSV_ASSIGN_OR_RETURN(r.tenant, TenantOf(c.tenant));
  RSV_ASSIGN_OR_RETURN(r.pool, PoolOf(c.pool));
  r.gpus = c.gpus;
  r.start = Timestamp::FromMicros(c.start_us);
  r.lend = c.lend;
  if (r.start < now) r.start = now;  // "now" at the server's clock
  r.end =
      c.duration_us ? r.start + Duration::Micros(*c.duration_us) : Timestamp::FromMicros(c.end_us);
  if (c.quote_only) {
    RSV_ASSIGN_OR_RETURN(Quote q, sched_.QuoteReservation(r, now));
    json out = {{"admitted", q.admission.admitted},
                {"largest_fit", q.admission.largest_fit},
                {"reservable", q.reservable},
                {"price_per_gpu_hour", MoneyStr(q.price_per_gpu_hour)},
                {"total", MoneyStr(q.total)}};
    if (q.admission.admitted) out["binding"] = PlacementJson(st, q.binding);
    if (q.admission.earliest_start) out["earliest_start_us"] = q.admission.earliest_start->micros();
    return out.dump();
  }
  if (!replay) RSV_RETURN_IF_ERROR(WithinLimits(r, now));
  RSV_ASSIGN_OR_RETURN(ReservationId id, sched_.Reserve(r, now));
  return ReservationJson(st, st.reservation(id)).dump();
}

Result<std::string> ControlPlane::On(const cmd::Return& c, Timestamp now, bool) {
  if (c.reservation <= 0 || c.reservation > UINT32_MAX || c.caller < 0 || c.caller > UINT32_MAX) {
    return NotFound("no such reservation");
  }
  ReservationId id(static_cast<uint32_t>(c.reservation));
  RSV_RETURN_IF_ERROR(sched_.ReturnReservation(id, TenantId(static_cast<uint32_t>(c.caller)), now));
  return ReservationJson(sched_.state(), sched_.state().reservation(id)).dump();
}

Result<std::string> ControlPlane::On(const cmd::Submit& c, Timestamp now, bool replay) {
  JobSpec spec;
  RSV_ASSIGN_OR_RETURN(spec.tenant, TenantOf(c.tenant));
  RSV_ASSIGN_OR_RETURN(spec.pool, PoolOf(c.pool));
  spec.name = c.name;
  spec.gpus = c.gpus;
  RSV_ASSIGN_OR_RETURN(spec.tier, ParseTier(c.tier));
  spec.limit_price = Money::Micros(c.limit_micros);
  if (c.fallback_micros) spec.fallback_limit = Money::Micros(*c.fallback_micros);
  spec.notice = Duration::Seconds(c.notice_s);
  spec.time_limit_s = c.time_limit_s;
  spec.max_restarts = c.max_restarts;
  spec.command = c.command;
  spec.workdir = c.workdir;
  spec.cpu_millis = c.cpu_millis;
  spec.memory_mib = c.memory_mib;
  spec.env = c.env;
  spec.max_gpus = c.max_gpus;
  spec.gpu_step = c.gpu_step;
  spec.gpu_milli = c.gpu_milli;
  spec.gpu_memory_mib = c.gpu_memory_mib;
  RSV_ASSIGN_OR_RETURN(spec.resize_mode, ParseResizeMode(c.resize_mode));
  spec.resize_cooldown = Duration::Seconds(c.resize_cooldown_s);
  for (const cmd::Dependency& d : c.dependencies) {
    Dependency dep;
    dep.kind = d.kind == "afterany" ? DependencyKind::kAfterAny : DependencyKind::kAfterOk;
    // Logs from before ids past 32 bits were refused meant the id's low 32 bits.
    const int64_t job = replay && d.job > UINT32_MAX ? static_cast<uint32_t>(d.job) : d.job;
    RSV_ASSIGN_OR_RETURN(dep.job, JobOf(job, spec.tenant));
    spec.dependencies.push_back(dep);
  }
  RSV_ASSIGN_OR_RETURN(JobId id, sched_.SubmitAndDecide(std::move(spec), now));
  return Made(id);
}

Result<JobId> ControlPlane::JobActionOf(const cmd::JobAction& c) const {
  if (c.caller < 0 || c.caller > UINT32_MAX) return NotFound("no such job");
  return JobOf(c.job, TenantId(static_cast<uint32_t>(c.caller)));
}

Result<std::string> ControlPlane::On(const cmd::Cancel& c, Timestamp now, bool) {
  RSV_ASSIGN_OR_RETURN(JobId id, JobActionOf(c));
  RSV_RETURN_IF_ERROR(sched_.Cancel(id, now));
  sched_.Decide(now);
  return Made(id);
}

Result<std::string> ControlPlane::On(const cmd::Release& c, Timestamp now, bool) {
  RSV_ASSIGN_OR_RETURN(JobId id, JobActionOf(c));
  RSV_RETURN_IF_ERROR(sched_.Release(id, now));
  sched_.Decide(now);
  return Made(id);
}

Result<std::string> ControlPlane::On(const cmd::Exit& c, Timestamp now, bool) {
  RSV_ASSIGN_OR_RETURN(JobId id, JobActionOf(c));
  RSV_RETURN_IF_ERROR(sched_.JobExited(id, c.success, now));
  sched_.Decide(now);
  return Made(id);
}

Status ControlPlane::WithinLimits(const ReservationRequest& r, Timestamp now) {
  const std::string& tenant = sched_.state().tenant(r.tenant).name;
  auto it = config_.reservation_limits.find(tenant);
  if (it == config_.reservation_limits.end()) it = config_.reservation_limits.find("default");
  if (it == config_.reservation_limits.end()) return Status::Ok();
  const ServerConfig::ReservationLimits& lim = it->second;
  const std::string whose = it->first == "default" ? "a tenant's" : tenant + "'s";
  if (lim.max_gpus > 0 && r.gpus > lim.max_gpus) {
    return InvalidArgument("gpus", "is above " + whose + " limit of " +
                                       std::to_string(lim.max_gpus) + " GPUs per reservation");
  }
  if (lim.max_duration > Duration() && r.end - r.start > lim.max_duration) {
    return InvalidArgument("end_us", "the reservation is longer than " + whose + " limit of " +
                                         lim.max_duration.ToString());
  }
  if (lim.max_total > Money()) {
    RSV_ASSIGN_OR_RETURN(Quote q, sched_.QuoteReservation(r, now));
    if (q.total > lim.max_total) {
      return InvalidArgument("gpus", "the reservation would cost " + q.total.ToString() +
                                         ", above " + whose + " limit of " +
                                         lim.max_total.ToString());
    }
  }
  return Status::Ok();
}

Result<std::string> ControlPlane::On(const cmd::Register& c, Timestamp now, bool) {
  const ClusterState& st = sched_.state();
  RSV_ASSIGN_OR_RETURN(PoolId pool, PoolOf(c.pool));
  std::optional<NodeId> id = st.FindNode(c.name);
  if (!id) {
    RSV_ASSIGN_OR_RETURN(NodeId added, sched_.AddNode(c.name, pool, c.gpus, c.topology));
    id = added;
  } else {
    const Node& n = st.node(*id);
    if (n.pool != pool || n.gpus != c.gpus) {
      return FailedPrecondition("node " + c.name + " is registered in pool " +
                                st.pool(n.pool).config.name + " with " + std::to_string(n.gpus) +
                                " GPUs; this agent reports " + c.pool + " with " +
                                std::to_string(c.gpus));
    }
  }
  RSV_RETURN_IF_ERROR(sched_.SetNodeAgent(*id));
  // Each GPU's memory, for shares that ask for memory: the least the agent reports.
  int64_t memory = 0;
  json inventory = json::parse(c.inventory.text, nullptr, false);
  if (inventory.is_array()) {
    for (const json& g : inventory) {
      if (!g.is_object() || !g.contains("memory_mib") || !g["memory_mib"].is_number_integer()) {
        continue;
      }
      const int64_t m = g["memory_mib"].get<int64_t>();
      if (m > 0 && (memory == 0 || m < memory)) memory = m;
    }
  }
  if (memory > 0) sched_.SetGpuMemory(*id, memory);  // none reported: the configured figure
  AgentLink& link = agents_[id->value()];
  link.last_seen = now;
  link.probe = c.probe;
  link.cgroups = c.cgroups;
  link.inventory = c.inventory.text;
  link.registered_inventory = link.inventory;
  link.address = c.address.empty() ? c.name : c.address;
  if (st.node(*id).state == NodeState::kDown) {
    link.health.clear();
    RSV_RETURN_IF_ERROR(sched_.SetNodeState(*id, NodeState::kReady, now));  // the agent is back
    sched_.RunCycle(now);
  }
  const Node& n = st.node(*id);
  return Dump(json{{"name", n.name},
                   {"pool", st.pool(n.pool).config.name},
                   {"gpus", n.gpus},
                   {"state", NodeStateName(n.state)},
                   {"heartbeat_timeout_s", config_.heartbeat_timeout.seconds()},
                   {"shared_store", config_.shared_store}});
}

Result<std::string> ControlPlane::ApplyInternal(const Cmd& cmd, std::vector<Command>* log) {
  Command c;
  c.at = clock_->Now();
  Result<std::string> r = Apply(cmd, c.at, false, /*render=*/false);
  DrainEvents();
  if (r.ok()) {
    c.kind = KindOf(cmd);
    c.body = EncodeCommand(cmd);
    log->push_back(std::move(c));
  }
  return r;
}

}  // namespace rsv::server
