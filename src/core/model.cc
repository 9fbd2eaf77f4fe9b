#include "core/model.h"

#include <algorithm>
#include <bit>
#include <cctype>

namespace rsv {
namespace {

bool ValidName(std::string_view s) {
  if (s.empty() || s.size() > 128) return false;
  if (!std::isalnum(static_cast<unsigned char>(s[0]))) return false;  // no ".", "..", "-x"
  for (char c : s) {
    bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '-' || c == '_' || c == '.';
    if (!ok) return false;
  }
  return true;
}

const char kNameRule[] =
    "must be 1-128 characters of letters, digits, '-', '_' or '.', starting with a letter or digit";

}  // namespace

Status PoolConfig::Validate() const {
  if (!ValidName(name)) return InvalidArgument("name", kNameRule);
  if (reserve_price < Money()) return InvalidArgument("reserve_price", "must not be negative");
  if (min_increment < Money()) return InvalidArgument("min_increment", "must not be negative");
  if (max_notice < Duration()) return InvalidArgument("max_notice", "must not be negative");
  if (reservation_base_price < Money()) {
    return InvalidArgument("reservation_base_price", "must not be negative");
  }
  if (reservation_surge < 0 || reservation_surge > 10 * kFullBasisPoints) {
    return InvalidArgument("reservation_surge", "must be between 0 and 100000 basis points");
  }
  if (return_rate < 0 || return_rate > kFullBasisPoints) {
    return InvalidArgument("return_rate", "must be between 0% and 100%");
  }
  if (operator_share < 0 || operator_share > kFullBasisPoints) {
    return InvalidArgument("operator_share", "must be between 0% and 100%");
  }
  if (holdback_gpus < 0) return InvalidArgument("holdback_gpus", "must not be negative");
  return Status::Ok();
}

std::string_view NodeStateName(NodeState s) {
  switch (s) {
    case NodeState::kReady:
      return "ready";
    case NodeState::kDraining:
      return "draining";
    case NodeState::kDown:
      return "down";
  }
  return "?";
}

std::string_view ResizeModeName(ResizeMode m) {
  return m == ResizeMode::kSignal ? "signal" : "restart";
}

Result<ResizeMode> ParseResizeMode(std::string_view s) {
  if (s == "restart") return ResizeMode::kRestart;
  if (s == "signal") return ResizeMode::kSignal;
  return InvalidArgument("resize_mode", "must be restart or signal");
}

Result<GpuRange> ParseGpuRange(std::string_view s) {
  GpuRange r;
  if (s.find('.') != std::string_view::npos) {  // a share of one GPU: 0.001 .. 0.999
    std::string_view frac = s;
    if (frac.substr(0, 1) == "0") frac.remove_prefix(1);
    if (frac.size() < 2 || frac.size() > 4 || frac[0] != '.' ||
        !std::all_of(frac.begin() + 1, frac.end(), [](char c) { return c >= '0' && c <= '9'; })) {
      return InvalidArgument("gpus", "a share of one GPU is 0.001 to 0.999 (to a thousandth)");
    }
    int32_t milli = 0;
    for (size_t i = 1; i < 4; ++i) milli = milli * 10 + (i < frac.size() ? frac[i] - '0' : 0);
    if (milli < 1) return InvalidArgument("gpus", "a share of one GPU is 0.001 to 0.999");
    r.min = 1;
    r.milli = milli;
    return r;
  }
  int32_t* parts[] = {&r.min, &r.max, &r.step};
  size_t n = 0;
  while (true) {
    size_t colon = s.find(':');
    std::string_view part = s.substr(0, colon);
    if (n == 3 || part.empty() || part.size() > 7 ||
        !std::all_of(part.begin(), part.end(), [](char c) { return c >= '0' && c <= '9'; })) {
      return InvalidArgument("gpus", "must be N, MIN:MAX or MIN:MAX:STEP (whole numbers)");
    }
    *parts[n++] = static_cast<int32_t>(std::stol(std::string(part)));
    if (colon == std::string_view::npos) break;
    s.remove_prefix(colon + 1);
  }
  if (r.min <= 0) return InvalidArgument("gpus", "must be positive");
  if (n >= 2 && r.max < r.min) return InvalidArgument("gpus", "max must be at least min");
  if (n == 3 && r.step <= 0) return InvalidArgument("gpus", "step must be positive");
  return r;
}

Result<int64_t> ParseMebibytes(std::string_view field, std::string_view s) {
  size_t digits = 0;
  while (digits < s.size() && s[digits] >= '0' && s[digits] <= '9') ++digits;
  const std::string_view unit = s.substr(digits);
  int64_t scale = 0;
  if (unit.empty() || unit == "M" || unit == "MiB") scale = 1;
  if (unit == "G" || unit == "GiB") scale = 1024;
  if (unit == "T" || unit == "TiB") scale = 1024 * 1024;
  if (digits == 0 || digits > 9 || scale == 0) {
    return InvalidArgument(std::string(field),
                           "'" + std::string(s) + "' is not a size like 20GiB, 512MiB or 1TiB");
  }
  const int64_t n = std::stoll(std::string(s.substr(0, digits)));
  if (n * scale > (int64_t{1} << 30)) {
    return InvalidArgument(std::string(field), "must be at most 1PiB");
  }
  return n * scale;
}

std::string_view TierName(Tier t) {
  switch (t) {
    case Tier::kReserved:
      return "reserved";
    case Tier::kSpot:
      return "spot";
    case Tier::kAuto:
      return "auto";
  }
  return "?";
}

Result<Tier> ParseTier(std::string_view s) {
  if (s == "reserved") return Tier::kReserved;
  if (s == "spot") return Tier::kSpot;
  if (s == "auto") return Tier::kAuto;
  return InvalidArgument("tier", "'" + std::string(s) + "' is not one of reserved, spot, auto");
}

std::string_view JobStateName(JobState s) {
  switch (s) {
    case JobState::kPending:
      return "pending";
    case JobState::kStarting:
      return "starting";
    case JobState::kRunning:
      return "running";
    case JobState::kPreempting:
      return "preempting";
    case JobState::kSucceeded:
      return "succeeded";
    case JobState::kFailed:
      return "failed";
    case JobState::kCancelled:
      return "cancelled";
  }
  return "?";
}

int32_t Placement::GpuCount() const {
  int32_t n = 0;
  for (const NodeSlice& s : slices) n += std::popcount(s.gpu_mask);
  return n;
}

Result<PoolId> ClusterState::AddPool(PoolConfig config) {
  RSV_RETURN_IF_ERROR(config.Validate());
  if (pool_by_name_.count(config.name)) {
    return AlreadyExists("pool '" + config.name + "' already exists");
  }
  PoolId id(static_cast<uint32_t>(pools_.size() + 1));
  pool_by_name_[config.name] = id;
  pools_.push_back(Pool{id, std::move(config)});
  pool_nodes_.emplace_back();
  return id;
}

Result<NodeId> ClusterState::AddNode(std::string name, PoolId pool, int32_t gpus,
                                     std::string topology) {
  if (!ValidName(name)) return InvalidArgument("name", kNameRule);
  if (!HasPool(pool)) return InvalidArgument("pool", "unknown pool");
  if (gpus < 1 || gpus > kMaxGpusPerNode) {
    return InvalidArgument("gpus", "must be between 1 and " + std::to_string(kMaxGpusPerNode));
  }
  if (node_by_name_.count(name)) return AlreadyExists("node '" + name + "' already exists");
  // Topology "zone/rack": the rack is the whole path, the zone its first component.
  std::string zone = topology.substr(0, topology.find('/'));
  auto intern = [](std::map<std::string, int32_t, std::less<>>& ids,
                   std::vector<std::string>& names, const std::string& key) {
    auto [it, inserted] = ids.try_emplace(key, static_cast<int32_t>(names.size()));
    if (inserted) names.push_back(key);
    return it->second;
  };
  Node n;
  n.id = NodeId(static_cast<uint32_t>(nodes_.size() + 1));
  n.name = std::move(name);
  n.pool = pool;
  n.gpus = gpus;
  n.topology = std::move(topology);
  n.gpu_job.assign(gpus, JobId());
  n.gpu_shares.assign(gpus, {});
  n.share_milli.assign(gpus, 0);
  n.share_memory_mib.assign(gpus, 0);
  n.rack = intern(rack_ids_, rack_names_, n.topology);
  n.zone = intern(zone_ids_, zone_names_, zone);
  node_by_name_[n.name] = n.id;
  pool_nodes_[pool.value() - 1].push_back(n.id);
  nodes_.push_back(std::move(n));
  return nodes_.back().id;
}

Result<TenantId> ClusterState::AddTenant(std::string name) {
  if (!ValidName(name)) return InvalidArgument("name", kNameRule);
  if (tenant_by_name_.count(name)) return AlreadyExists("tenant '" + name + "' already exists");
  TenantId id(static_cast<uint32_t>(tenants_.size() + 1));
  tenant_by_name_[name] = id;
  tenants_.push_back(Tenant{id, std::move(name)});
  return id;
}

void ClusterState::DeleteTenant(TenantId id) {
  Tenant& t = tenants_[id.value() - 1];
  tenant_by_name_.erase(t.name);
  t.deleted = true;
}

std::optional<PoolId> ClusterState::FindPool(std::string_view name) const {
  auto it = pool_by_name_.find(name);
  if (it == pool_by_name_.end()) return std::nullopt;
  return it->second;
}

std::optional<NodeId> ClusterState::FindNode(std::string_view name) const {
  auto it = node_by_name_.find(name);
  if (it == node_by_name_.end()) return std::nullopt;
  return it->second;
}

std::optional<TenantId> ClusterState::FindTenant(std::string_view name) const {
  auto it = tenant_by_name_.find(name);
  if (it == tenant_by_name_.end()) return std::nullopt;
  return it->second;
}

JobId ClusterState::AddJob(Job job) {
  job.id = JobId(static_cast<uint32_t>(jobs_.size() + 1));
  jobs_.push_back(std::move(job));
  return jobs_.back().id;
}

ReservationId ClusterState::AddReservation(Reservation r) {
  r.id = ReservationId(static_cast<uint32_t>(reservations_.size() + 1));
  reservations_.push_back(std::move(r));
  return reservations_.back().id;
}

int32_t ClusterState::ReadyGpus(PoolId pool) const {
  int32_t n = 0;
  for (NodeId id : pool_nodes(pool)) {
    const Node& nd = node(id);
    if (nd.state == NodeState::kReady) n += nd.gpus;
  }
  return n;
}

namespace {

// Adds `p`'s GPUs to `into`, one slice per node in order of first appearance.
void AddSlices(Placement& into, const Placement& p) {
  for (const NodeSlice& s : p.slices) {
    auto it = std::find_if(into.slices.begin(), into.slices.end(),
                           [&](const NodeSlice& x) { return x.node == s.node; });
    if (it == into.slices.end()) {
      into.slices.push_back(s);
    } else {
      it->gpu_mask |= s.gpu_mask;
    }
  }
}

}  // namespace

Placement ClusterState::UnitsPlacement(const Job& j, bool under_notice) const {
  Placement out = j.placement;
  for (JobId uid : j.units) {
    const Job& u = job(uid);
    const bool held = under_notice ? HoldsGpus(u.state) : IsActive(u.state);
    if (held && u.joined <= j.attempt) AddSlices(out, u.placement);
  }
  return out;
}

}  // namespace rsv
