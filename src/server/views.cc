// server/views: the JSON views of jobs, reservations, tokens and events (server/views.h).
#include "server/views.h"

#include <bit>

namespace rsv::server {

using json = nlohmann::json;

json PlacementJson(const ClusterState& s, const Placement& p) {
  json out = json::array();
  for (const NodeSlice& sl : p.slices) {
    json gpus = json::array();
    for (int g = 0; g < 64; ++g) {
      if ((sl.gpu_mask >> g) & 1) gpus.push_back(g);
    }
    out.push_back({{"node", s.node(sl.node).name}, {"gpus", gpus}});
  }
  return out;
}

json TokenJson(const std::string& hash, const Caller& c) {
  json t = {{"id", hash.substr(0, 12)}, {"admin", c.admin}};
  if (!c.tenant_name.empty()) t["tenant"] = c.tenant_name;
  if (!c.node.empty()) t["node"] = c.node;
  return t;
}

json JobJson(const ClusterState& s, const Job& j) {
  json placement = PlacementJson(s, j.placement);
  json deps = json::array();
  for (const Dependency& d : j.spec.dependencies) {
    deps.push_back({{"kind", d.kind == DependencyKind::kAfterOk ? "afterok" : "afterany"},
                    {"job", d.job.value()}});
  }
  json out = {{"id", j.id.value()},
              {"name", j.spec.name},
              {"tenant", s.tenant(j.spec.tenant).name},
              {"pool", s.pool(j.spec.pool).config.name},
              {"gpus", j.spec.gpus},
              {"tier", TierName(j.spec.tier)},
              {"running_as", TierName(j.running_as)},
              {"limit_price", MoneyStr(j.spec.limit_price)},
              {"state", JobStateName(j.state)},
              {"attempt", j.attempt},
              {"submitted_us", j.submitted.micros()},
              {"placement", placement},
              {"dependencies", deps},
              {"notice_s", j.spec.notice.seconds()},
              {"max_restarts", j.spec.max_restarts},
              {"command", j.spec.command}};
  if (j.spec.cpu_millis > 0) out["cpu_millis"] = j.spec.cpu_millis;
  if (j.spec.memory_mib > 0) out["memory_mib"] = j.spec.memory_mib;
  if (j.spec.time_limit_s > 0) out["time_limit_s"] = j.spec.time_limit_s;
  if (HoldsGpus(j.state)) out["started_us"] = j.started.micros();
  if (j.last_checkpoint.micros() > 0) out["last_checkpoint_us"] = j.last_checkpoint.micros();
  if (j.state == JobState::kPreempting) {
    out["notice_deadline_us"] = j.notice_deadline.micros();
    out["preempt_reason"] = j.preempt_reason;
  }
  if (j.spec.share()) {  // docs/market.md, "GPU shares"
    out["gpu_milli"] = j.spec.gpu_milli;
    if (j.spec.gpu_memory_mib > 0) out["gpu_memory_mib"] = j.spec.gpu_memory_mib;
  }
  if (j.spec.elastic()) {  // docs/market.md, "Elastic jobs"
    json units = json::array();
    for (JobId u : j.units) units.push_back(u.value());
    out["elastic"] = {{"min", j.spec.gpus},
                      {"max", j.spec.max_gpus},
                      {"step", j.spec.gpu_step},
                      {"resize_mode", ResizeModeName(j.spec.resize_mode)},
                      {"resize_cooldown_s", j.spec.resize_cooldown.seconds()},
                      {"units", std::move(units)},
                      {"generation", j.resize_generation}};
    if (HoldsGpus(j.state)) {
      const Placement all = s.AttemptPlacement(j);
      out["gpus_held"] = all.GpuCount();
      out["placement"] = PlacementJson(s, all);
    }
    if (j.resizing) out["elastic"]["resize_deadline_us"] = j.resize_deadline.micros();
    if (j.cooldown_until.micros() > 0) {
      out["elastic"]["cooldown_until_us"] = j.cooldown_until.micros();
    }
  }
  if (j.unit_of.valid()) {
    out["unit_of"] = j.unit_of.value();
    out["unit"] = j.unit;
  }
  if (!HoldsGpus(j.state) && !j.last_placement.slices.empty()) {
    out["last_placement"] = PlacementJson(s, j.last_placement);  // where its last attempt ran
  }
  if (IsTerminal(j.state)) {
    out["finished_us"] = j.finished.micros();
    out["end_reason"] = j.end_reason;
  }
  return out;
}

json ReservationJson(const ClusterState& s, const Reservation& r) {
  return {{"id", r.id.value()},
          {"tenant", s.tenant(r.tenant).name},
          {"pool", s.pool(r.pool).config.name},
          {"gpus", r.gpus},
          {"start_us", r.start.micros()},
          {"end_us", r.end.micros()},
          {"lend", r.lend},
          {"price_per_gpu_hour", MoneyStr(r.price_per_gpu_hour)},
          {"charged", MoneyStr(r.charged)},
          {"binding", PlacementJson(s, r.binding)}};
}

json EventJson(const ClusterState& s, const Event& e) {
  json out = {{"seq", e.seq}, {"at_us", e.at.micros()}, {"type", EventTypeName(e.type)}};
  if (e.job.valid()) {
    out["job"] = e.job.value();
    out["attempt"] = e.attempt;
  }
  if (e.pool.valid()) out["pool"] = s.pool(e.pool).config.name;
  if (e.reservation.valid()) out["reservation"] = e.reservation.value();
  if (e.node.valid()) out["node"] = s.node(e.node).name;
  if (e.type == EventType::kPriceChanged) {
    out["price"] = MoneyStr(e.price);
    out["old_price"] = MoneyStr(e.old_price);
  }
  if (e.type == EventType::kNoticeSent) out["deadline_us"] = e.deadline.micros();
  if (!e.detail.empty()) out["detail"] = e.detail;
  return out;
}

}  // namespace rsv::server
