#include "server/control.h"

#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <nlohmann/json.hpp>

#include "common/archive.h"
#include "common/sha256.h"
#include "server/views.h"

namespace rsv::server {
namespace {

using json = nlohmann::json;

// What a posting is to its account's holder: a spot charge credits owners' lending and the
// operator's share.
std::string_view PostingLabel(const LedgerEntry& e, const Posting& p) {
  if (e.kind != EntryKind::kSpotCharge) return EntryKindName(e.kind);
  if (p.account.is_operator()) return "operator_share";
  return p.amount < Money() ? "spot_charge" : "lending_credit";
}

// Microseconds as decimal seconds, exactly ("12.000500").
std::string SecondsStr(int64_t us) {
  char buf[40];
  std::snprintf(buf, sizeof buf, "%s%lld.%06lld", us < 0 ? "-" : "",
                static_cast<long long>(std::llabs(us) / 1'000'000),
                static_cast<long long>(std::llabs(us) % 1'000'000));
  return buf;
}

// A pool's GPUs by state, in the order /metrics and /v1/usage list them; they sum to the
// GPUs installed.
std::vector<std::pair<const char*, int32_t>> UsageStates(const PoolUsage& u) {
  return {{"reserved_used", u.reserved_used}, {"lent", u.lent}, {"spot_used", u.spot_used},
          {"idle_reserved", u.idle_reserved}, {"idle", u.idle}, {"down", u.down}};
}

std::vector<std::pair<const char*, int64_t>> ReservedTimeParts(const ReservedTime& t) {
  return {{"owner_used", t.owner_used},
          {"lent_sold", t.lent_sold},
          {"idle_unsold", t.idle_unsold},
          {"not_lendable", t.not_lendable}};
}

Result<Money> MoneyOf(const json& j, const std::string& field) {
  if (!j.is_string()) return InvalidArgument(field, "must be a decimal string like \"2.5\"");
  Result<Money> m = Money::Parse(j.get<std::string>());
  if (!m.ok()) return InvalidArgument(field, m.status().message());
  return m;
}

}  // namespace

Result<ServerConfig> ParseServerConfig(const std::string& text) {
  ServerConfig cfg;
  json j = json::parse(text, nullptr, false);
  if (j.is_discarded() || !j.is_object()) return InvalidArgument("config", "is not a JSON object");
  for (const auto& [k, v] : j.items()) {
    if (k != "pools" && k != "nodes" && k != "tick" && k != "heartbeat_timeout" &&
        k != "start_timeout" && k != "max_output_mib" && k != "reservation_limits" &&
        k != "output_retention" && k != "snapshot_every" && k != "snapshot_interval") {
      return InvalidArgument(k.empty() ? "\"\"" : k, "unknown config field");
    }
  }
  if (j.contains("max_output_mib")) {
    const json& v = j["max_output_mib"];
    if (!v.is_number_integer() || v.get<int64_t>() < 1 || v.get<int64_t>() > (int64_t{1} << 20))
      return InvalidArgument("max_output_mib", "must be an integer from 1 to 1048576");
    cfg.max_output_bytes = v.get<int64_t>() << 20;
  }
  if (j.contains("reservation_limits")) {
    const json& all = j["reservation_limits"];
    if (!all.is_object())
      return InvalidArgument("reservation_limits", "must be an object of tenant -> limits");
    for (const auto& [tenant, l] : all.items()) {
      const std::string at = "reservation_limits." + tenant;
      if (!l.is_object()) return InvalidArgument(at, "must be an object");
      ServerConfig::ReservationLimits lim = cfg.reservation_limits["default"];
      for (const auto& [k, v] : l.items()) {
        if (k == "max_gpus") {
          if (!v.is_number_integer() || v.get<int64_t>() < 0 || v.get<int64_t>() > 1'000'000)
            return InvalidArgument(at + ".max_gpus", "must be an integer from 0 to 1000000");
          lim.max_gpus = v.get<int32_t>();
        } else if (k == "max_duration") {
          Result<Duration> d =
              v.is_string() ? Duration::Parse(v.get<std::string>()) : Result<Duration>(Duration());
          if (!v.is_string() || !d.ok() || *d < Duration())
            return InvalidArgument(at + ".max_duration", "must be a duration like \"30d\"");
          lim.max_duration = *d;
        } else if (k == "max_total") {
          RSV_ASSIGN_OR_RETURN(lim.max_total, MoneyOf(v, at + ".max_total"));
        } else {
          return InvalidArgument(at + "." + k, "unknown limit (max_gpus, max_duration, max_total)");
        }
      }
      cfg.reservation_limits[tenant] = lim;
    }
  }
  for (const char* k : {"heartbeat_timeout", "start_timeout"}) {
    if (!j.contains(k)) continue;
    if (!j[k].is_string()) return InvalidArgument(k, "must be a duration like \"10s\"");
    Result<Duration> d = Duration::Parse(j[k].get<std::string>());
    if (!d.ok() || *d <= Duration()) return InvalidArgument(k, "must be a positive duration");
    (std::string(k) == "heartbeat_timeout" ? cfg.heartbeat_timeout : cfg.start_timeout) = *d;
  }
  // Durations of a minute or more.
  for (auto [k, out, example] : {std::tuple{"output_retention", &cfg.output_retention, "30d"},
                                 std::tuple{"snapshot_interval", &cfg.snapshot_interval, "10m"}}) {
    if (!j.contains(k)) continue;
    const json& v = j[k];
    Result<Duration> d =
        v.is_string() ? Duration::Parse(v.get<std::string>()) : Result<Duration>(Duration());
    if (!v.is_string() || !d.ok() || *d < Duration::Minutes(1)) {
      return InvalidArgument(
          k, std::string("must be a duration of a minute or more, like \"") + example + "\"");
    }
    *out = *d;
  }
  if (j.contains("snapshot_every")) {
    const json& v = j["snapshot_every"];
    if (!v.is_number_integer() || v.get<int64_t>() < 0 || v.get<int64_t>() > 1'000'000'000) {
      return InvalidArgument("snapshot_every",
                             "must be a number of commands from 1 to 1000000000, or 0 for never");
    }
    cfg.snapshot_every = v.get<int64_t>();
  }
  if (j.contains("tick")) {
    if (!j["tick"].is_string()) return InvalidArgument("tick", "must be a duration like \"1s\"");
    Result<Duration> d = Duration::Parse(j["tick"].get<std::string>());
    if (!d.ok() || *d <= Duration()) return InvalidArgument("tick", "must be a positive duration");
    cfg.tick = *d;
  }
  if (j.contains("pools")) {
    if (!j["pools"].is_array()) return InvalidArgument("pools", "must be an array");
    for (size_t i = 0; i < j["pools"].size(); ++i) {
      const json& p = j["pools"][i];
      std::string at = "pools[" + std::to_string(i) + "]";
      if (!p.is_object()) return InvalidArgument(at, "must be an object");
      PoolConfig pc;
      for (const auto& [k, v] : p.items()) {
        std::string field = at + "." + k;
        if (k == "name" || k == "gpu_model") {
          if (!v.is_string()) return InvalidArgument(field, "must be a string");
          (k == "name" ? pc.name : pc.gpu_model) = v.get<std::string>();
        } else if (k == "reserve_price" || k == "min_increment" || k == "reservation_base_price") {
          RSV_ASSIGN_OR_RETURN(Money m, MoneyOf(v, field));
          (k == "reserve_price"   ? pc.reserve_price
           : k == "min_increment" ? pc.min_increment
                                  : pc.reservation_base_price) = m;
        } else if (k == "max_notice") {
          if (!v.is_string()) return InvalidArgument(field, "must be a duration like \"2m\"");
          Result<Duration> d = Duration::Parse(v.get<std::string>());
          if (!d.ok()) return InvalidArgument(field, d.status().message());
          pc.max_notice = *d;
        } else if (k == "return_rate_bp" || k == "operator_share_bp" || k == "surge_bp" ||
                   k == "holdback_gpus") {
          if (!v.is_number_integer()) return InvalidArgument(field, "must be an integer");
          int64_t n = v.get<int64_t>();
          if (k == "return_rate_bp") pc.return_rate = n;
          if (k == "operator_share_bp") pc.operator_share = n;
          if (k == "surge_bp") pc.reservation_surge = n;
          if (k == "holdback_gpus") pc.holdback_gpus = static_cast<int32_t>(n);
        } else {
          return InvalidArgument(field, "unknown pool field");
        }
      }
      Status s = pc.Validate();
      if (!s.ok()) return InvalidArgument(at + "." + s.field(), s.message());
      cfg.pools.push_back(std::move(pc));
    }
  }
  if (j.contains("nodes")) {
    if (!j["nodes"].is_array()) return InvalidArgument("nodes", "must be an array");
    for (size_t i = 0; i < j["nodes"].size(); ++i) {
      const json& n = j["nodes"][i];
      std::string at = "nodes[" + std::to_string(i) + "]";
      if (!n.is_object()) return InvalidArgument(at, "must be an object");
      ServerConfig::NodeDecl d;
      for (const auto& [k, v] : n.items()) {
        std::string field = at + "." + k;
        if (k == "name" || k == "pool" || k == "topology") {
          if (!v.is_string()) return InvalidArgument(field, "must be a string");
          (k == "name" ? d.name : k == "pool" ? d.pool : d.topology) = v.get<std::string>();
        } else if (k == "gpus") {
          if (!v.is_number_integer()) return InvalidArgument(field, "must be an integer");
          d.gpus = v.get<int32_t>();
        } else if (k == "gpu_memory_mib") {
          if (!v.is_number_integer() || v.get<int64_t>() < 0 ||
              v.get<int64_t>() > (int64_t{1} << 30))
            return InvalidArgument(field, "must be an integer from 0 to 2^30 (MiB)");
          d.gpu_memory_mib = v.get<int64_t>();
        } else if (k == "count") {
          continue;
        } else {
          return InvalidArgument(field, "unknown node field");
        }
      }
      int32_t count =
          n.contains("count") && n["count"].is_number_integer() ? n["count"].get<int32_t>() : 1;
      if (count < 1 || count > 100000) return InvalidArgument(at + ".count", "must be 1-100000");
      for (int32_t c = 0; c < count; ++c) {
        ServerConfig::NodeDecl one = d;
        if (count > 1) one.name += "-" + std::to_string(c + 1);
        cfg.nodes.push_back(one);
      }
    }
  }
  if (cfg.pools.empty()) {
    PoolConfig pc;
    pc.name = "gpu";
    cfg.pools.push_back(pc);
  }
  return cfg;
}

ControlPlane::ControlPlane(ServerConfig config, std::unique_ptr<Store> store, const Clock* clock)
    : config_(std::move(config)),
      store_(std::move(store)),
      clock_(clock),
      sched_(SchedulerOptions{.checks = InvariantChecks::kOff, .keep_ledger_entries = true}) {
  cycle_ns_buckets_.assign(12, 0);
}

ControlPlane::~ControlPlane() {
  committer_.reset();
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (snapshot_waiting_) {
      AbandonSnapshotLocked();
    } else if (snapshot_child_ > 0) {
      ::kill(snapshot_child_, SIGKILL);
    }
  }
  if (snapshot_writer_.joinable()) snapshot_writer_.join();
}

namespace {
Status NotLeading() {
  return Status(Code::kUnavailable, "this server is a standby: writes go to the leader");
}
}  // namespace

Status ControlPlane::Start() {
  RSV_RETURN_IF_ERROR(Load());
  return Lead();
}

Status ControlPlane::Load(bool use_snapshot) {
  std::lock_guard<std::mutex> lock(mu_);
  for (const PoolConfig& p : config_.pools) RSV_RETURN_IF_ERROR(sched_.AddPool(p).status());
  for (const auto& n : config_.nodes) {
    auto pool = sched_.state().FindPool(n.pool);
    if (!pool)
      return InvalidArgument("nodes", "node " + n.name + ": unknown pool '" + n.pool + "'");
    RSV_ASSIGN_OR_RETURN(NodeId id, sched_.AddNode(n.name, *pool, n.gpus, n.topology));
    sched_.SetGpuMemory(id, n.gpu_memory_mib);
  }
  // The newest snapshot, when this server can load it; otherwise the whole log, which must then
  // reach back to its start (docs/ha.md, "Snapshots").
  std::string unusable;
  if (use_snapshot) {
    std::string data;
    RSV_ASSIGN_OR_RETURN(int64_t seq, store_->LatestSnapshot(&data));
    if (seq > 0) unusable = SnapshotUnusable(data);
    if (seq > 0 && unusable.empty()) {
      const int64_t t0 = ticker_.Nanos();
      sched_ = Scheduler(SchedulerOptions{.checks = InvariantChecks::kOff});
      ArchiveReader r(data);
      Status s = StateIoLocked(r);
      if (s.ok() && (r.failed() || !r.done())) s = Internal("it is damaged");
      if (!s.ok()) {
        return Internal("loading the snapshot at seq " + std::to_string(seq) + ": " + s.message() +
                        " (delete it from the store's snapshots to start from " +
                        "the one before it)");
      }
      std::fprintf(stderr,
                   "reservoir server: loaded the snapshot at seq %lld (%.1f MiB) in %.0f ms\n",
                   static_cast<long long>(seq), static_cast<double>(data.size()) / (1 << 20),
                   static_cast<double>(ticker_.Nanos() - t0) / 1e6);
      applied_seq_ = seq;
      loaded_snapshot_ = seq;
      snapshot_seq_ = seq;
      snapshot_bytes_ = static_cast<int64_t>(data.size());
    } else if (seq > 0) {
      std::fprintf(stderr,
                   "reservoir server: not loading the snapshot at seq %lld (%s): replaying the "
                   "whole log\n",
                   static_cast<long long>(seq), unusable.c_str());
    }
  }
  Status replayed =
      store_->ForEachAfter(applied_seq_, [&](const Command& c) { return ApplyLoggedLocked(c); });
  if (!replayed.ok() && !unusable.empty()) {
    return Status(replayed.code(), replayed.message() + ", and the newest snapshot cannot be " +
                                       "loaded: " + unusable);
  }
  RSV_RETURN_IF_ERROR(replayed);
  DrainEvents();
  return ConfigChangesLocked().status();  // a node the config changed fails the start here
}

namespace {
cmd::ConfigPool ConfigPoolOf(const PoolConfig& p) {
  return {p.name,
          p.gpu_model,
          p.reserve_price.micros(),
          p.min_increment.micros(),
          p.max_notice.micros(),
          p.reservation_base_price.micros(),
          p.reservation_surge,
          p.return_rate,
          p.operator_share,
          p.holdback_gpus};
}
}  // namespace

Result<std::optional<cmd::Config>> ControlPlane::ConfigChangesLocked() const {
  const ClusterState& st = sched_.state();
  cmd::Config changes;
  for (const PoolConfig& p : config_.pools) {
    auto id = st.FindPool(p.name);
    if (!id || !(st.pool(*id).config == p)) changes.pools.push_back(ConfigPoolOf(p));
  }
  for (const auto& n : config_.nodes) {
    auto id = st.FindNode(n.name);
    if (!id) {
      changes.nodes.push_back({n.name, n.pool, n.topology, n.gpus, n.gpu_memory_mib});
      continue;
    }
    const Node& have = st.node(*id);
    if (st.pool(have.pool).config.name != n.pool || have.gpus != n.gpus ||
        have.topology != n.topology) {
      return InvalidArgument(
          "nodes", "node " + n.name + " is declared in pool " + n.pool + " with " +
                       std::to_string(n.gpus) + " GPUs and topology '" + n.topology +
                       "', but it exists in pool " + st.pool(have.pool).config.name + " with " +
                       std::to_string(have.gpus) + " GPUs and topology '" + have.topology +
                       "': a node cannot change; declare it "
                       "as it is, or under a new name");
    }
  }
  if (changes.pools.empty() && changes.nodes.empty()) return std::optional<cmd::Config>();
  return std::optional<cmd::Config>(std::move(changes));
}

Status ControlPlane::ApplyLoggedLocked(const Command& c) {
  // The log is contiguous from its start or from a snapshot's seq: a jump means the commands
  // in between were compacted away under this server (a standby far behind), or never here.
  if (c.seq != applied_seq_ + 1) {
    return Internal("the log continues at seq " + std::to_string(c.seq) + " but this server " +
                    "has applied up to seq " + std::to_string(applied_seq_) +
                    ": the commands between were compacted into a snapshot");
  }
  ++since_snapshot_;
  Result<Cmd> decoded = DecodeCommand(c.kind, c.body);
  Result<std::string> r = Internal("not applied");
  try {
    r = decoded.ok() ? Apply(*decoded, c.at, true, /*render=*/false) : decoded.status();
  } catch (const std::exception& e) {  // the code cannot apply what the log holds
    r = Internal(std::string("cannot be applied: ") + e.what());
  }
  ++replayed_;
  applied_seq_ = c.seq;
  if (c.kind == "cycle") SampleUsageLocked();
  // A logged command was valid when it was applied; refusing it now means the log and the code
  // disagree, which must not be papered over.
  if (!r.ok()) {
    return Internal("replaying command " + std::to_string(c.seq) + " (" + c.kind +
                    "): " + r.status().ToString());
  }
  return Status::Ok();
}

Status ControlPlane::CatchUp() {
  std::lock_guard<std::mutex> lock(mu_);
  if (leading_) return Status::Ok();  // the leader's state is ahead of its log, never behind
  RSV_RETURN_IF_ERROR(store_->ForEachAfter(applied_seq_, [&](const Command& c) {
    Status s = ApplyLoggedLocked(c);
    DrainEvents();
    return s;
  }));
  return Status::Ok();
}

Status ControlPlane::Lead() {
  // The lease is ours, so nothing older can still be appended: this tail is the whole log.
  RSV_RETURN_IF_ERROR(CatchUp());
  std::lock_guard<std::mutex> lock(mu_);
  if (stepped_down_) return FailedPrecondition("this server stepped down; restart it to serve");
  // Agents get a full heartbeat timeout from now to reach this server (restart or takeover),
  // and a start decided by the last leader gets a full start timeout to be confirmed here.
  const Timestamp now = clock_->Now();
  for (auto& [node, link] : agents_) link.last_seen = now;
  start_grace_from_ = now;
  last_snapshot_ = now;
  // Pools and nodes the config changed since the state was written take effect from here,
  // logged, so that every server applies them at this point of the log.
  RSV_ASSIGN_OR_RETURN(std::optional<cmd::Config> changes, ConfigChangesLocked());
  committer_ = std::make_unique<GroupCommitter>(store_.get());
  leading_ = true;
  if (changes) {
    std::vector<Command> log;
    RSV_RETURN_IF_ERROR(ApplyInternal(*changes, &log).status());
    QueueLocked(&log, [](Status) {});
    std::fprintf(stderr, "reservoir server: the config changes %zu pools and %zu nodes: logged\n",
                 changes->pools.size(), changes->nodes.size());
  }
  return Status::Ok();
}

void ControlPlane::StepDown(const std::string& why) {
  if (stepped_down_.exchange(true)) return;
  leading_ = false;
  std::fprintf(stderr, "reservoir server: stepping down: %s\n", why.c_str());
  if (on_step_down_) on_step_down_(why);
}

void ControlPlane::Quiesce() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    leading_ = false;  // from here Execute, Tick and Sync leave the committer alone
  }
  committer_.reset();  // commits what is queued; its callbacks may take the lock
  std::thread writer;  // a snapshot being written is finished; one never durable is dropped
  {
    std::lock_guard<std::mutex> lock(mu_);
    // A snapshot in progress is given up: a clean stop hands the lease over now, not after
    // seconds of writing (the next leader takes its own).
    if (snapshot_waiting_) {
      AbandonSnapshotLocked();
    } else if (snapshot_child_ > 0) {
      ::kill(snapshot_child_, SIGKILL);  // the writer reads the pipe's end and commits nothing
    }
    writer = std::move(snapshot_writer_);
    snapshot_cv_.notify_all();
  }
  if (writer.joinable()) writer.join();
  std::vector<std::function<void()>> replies;
  {
    std::lock_guard<std::mutex> lock(mu_);
    auto answer = [&](std::vector<Waiter>& list) {
      for (Waiter& w : list) {
        if (w.refuse) {
          replies.push_back(std::move(w.refuse));
        } else if (std::function<void()> fire = w.poll(true)) {
          replies.push_back(std::move(fire));
        }
      }
      list.clear();
    };
    answer(waiters_);
    for (auto& [node, list] : node_waiters_) answer(list);
    node_waiters_.clear();
    park_deadlines_.clear();
  }
  for (auto& r : replies) r();
}

std::function<void()> ControlPlane::WhenDurableLocked(std::function<void(bool)> reply) {
  if (durable_ >= queued_) return [reply = std::move(reply)] { reply(true); };
  after_durable_.emplace_back(queued_, std::move(reply));
  return [] {};
}

void ControlPlane::SetLeader(std::string address, int64_t epoch) {
  std::lock_guard<std::mutex> lock(leader_mu_);
  leader_address_ = std::move(address);
  leader_epoch_ = epoch;
}

std::pair<std::string, int64_t> ControlPlane::Leader() const {
  std::lock_guard<std::mutex> lock(leader_mu_);
  return {leader_address_, leader_epoch_};
}

void ControlPlane::PersistLocked(Command c, std::function<void(Status)> then) {
  // The committer calls back in order, on its own thread (which may wait for the lock: never
  // the reverse).
  ++queued_;
  ++since_snapshot_;
  committer_->Submit(std::move(c), [this, then = std::move(then)](Status s, int64_t seq) {
    if (s.ok()) applied_seq_ = seq;
    if (!s.ok()) {
      // Applied but not durable: memory and log disagree. Nothing more is acknowledged; a
      // restart (as a standby, when another server leads now) rebuilds the state from the log.
      const bool deposed = Deposed(s);
      StepDown(deposed ? s.message() : "could not persist a command: " + s.ToString());
      // Deposed: the fence refused the append, so nothing was written. Another failure may
      // have come after the commit reached the database: the outcome is unknown.
      s = Status(Code::kUnavailable,
                 deposed ? "not recorded: this server stopped leading before the write was "
                           "durable; retry at the leader"
                         : "perhaps not recorded: the store failed while committing (" +
                               s.message() + "); check before retrying");
    }
    if (then) then(s);
    // Replies to agents that waited for this command (and those before it) to be durable.
    std::vector<std::function<void(bool)>> ready;
    {
      std::lock_guard<std::mutex> lock(mu_);
      ++durable_;
      if (snapshot_waiting_ && !s.ok()) {
        AbandonSnapshotLocked();  // it holds, or may hold, a command the log lacks
      } else if (snapshot_waiting_ && snapshot_count_ == durable_) {
        WriteSnapshotLocked(seq);  // every command the snapshot holds is durable now
      }
      while (!after_durable_.empty() && after_durable_.front().first <= durable_) {
        ready.push_back(std::move(after_durable_.front().second));
        after_durable_.pop_front();
      }
    }
    for (auto& r : ready) r(s.ok());
  });
}

void ControlPlane::DrainEvents() {
  for (const Event& e : sched_.DrainEvents()) {
    json j = EventJson(sched_.state(), e);
    TenantId owner;
    if (e.job.valid()) owner = sched_.state().job(e.job).spec.tenant;
    if (e.reservation.valid()) owner = sched_.state().reservation(e.reservation).tenant;
    events_.push_back(j.dump());
    event_owner_.emplace_back(owner, e.job);
    MarkTouchedLocked(e);
    if (e.type == EventType::kPriceChanged) {
      price_history_[e.pool.value()].emplace_back(e.at.micros(), e.price.micros());
    }
    if (e.type == EventType::kJobPreempted) ++preemptions_;
  }
}

void ControlPlane::SampleUsageLocked() {
  // GPUs by state after each cycle that changed them, for the dashboard's history (GET
  // /v1/usage). Not journaled: after a restart it holds what the logged cycles rebuild.
  const int64_t now = sched_.last_accrual().micros();
  if (now == 0) return;  // nothing has happened yet
  for (const Pool& p : sched_.state().pools()) {
    PoolUsage u = sched_.Usage(p.id);
    auto& h = usage_history_[p.id.value()];
    if (!h.empty() && h.back().second == u) continue;
    if (!h.empty() && h.back().first == now) {
      h.back().second = u;
    } else {
      h.emplace_back(now, u);
    }
    if (h.size() > kUsagePoints) h.pop_front();
  }
}

std::vector<std::string> ControlPlane::CheckInvariants() {
  std::lock_guard<std::mutex> lock(mu_);
  return sched_.CheckInvariants(clock_->Now());
}

std::optional<TenantId> ControlPlane::FindTenant(const std::string& name) {
  std::lock_guard<std::mutex> lock(mu_);
  return sched_.state().FindTenant(name);
}

std::optional<Caller> ControlPlane::Authenticate(const std::string& token) {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = tokens_.find(Sha256Hex(token));
  if (it == tokens_.end()) return std::nullopt;
  return it->second;
}

bool ControlPlane::HasAdmin() {
  std::lock_guard<std::mutex> lock(mu_);
  for (const auto& [h, c] : tokens_) {
    if (c.admin) return true;
  }
  return false;
}

void ControlPlane::Execute(Cmd command, std::function<void(Result<std::string>)> done) {
  Command c;
  c.kind = KindOf(command);
  c.body = EncodeCommand(command);
  // Client strings that are not UTF-8 are logged with U+FFFD in their place: applied as logged,
  // so that a replay makes the same state.
  if (c.body.find("\xEF\xBF\xBD") != std::string::npos) {
    Result<Cmd> logged = DecodeCommand(c.kind, c.body);
    if (!logged.ok()) return done(logged.status());
    command = std::move(*logged);
  }
  std::lock_guard<std::mutex> lock(mu_);
  if (!leading_) return done(NotLeading());
  c.at = clock_->Now();
  Result<std::string> r = Apply(command, c.at, false);
  DrainEvents();
  if (!r.ok()) return done(r.status());
  // Queued while the lock is held, so the log's order is the order commands were applied in.
  PersistLocked(std::move(c), [this, done = std::move(done), body = std::move(*r)](Status s) {
    if (!s.ok()) return done(s);
    done(body);
    RunReadyWaiters();  // long-polls see the events once they are durable
  });
}

void ControlPlane::Execute(const std::string& kind, const std::string& body,
                           std::function<void(Result<std::string>)> done) {
  Result<Cmd> c = DecodeCommand(kind, body);
  if (!c.ok()) return done(c.status());
  Execute(std::move(*c), std::move(done));
}

void ControlPlane::RunReadyWaiters() {
  std::vector<std::function<void()>> ready;
  {
    std::lock_guard<std::mutex> lock(mu_);
    ready = TakeReadyWaiters(clock_->Now());
  }
  for (auto& fn : ready) fn();
}

Result<int64_t> QueryInt(const std::map<std::string, std::string>& query, const std::string& k,
                         int64_t lo, int64_t hi, int64_t def) {
  auto it = query.find(k);
  if (it == query.end()) return def;
  const std::string& v = it->second;
  if (v.empty() || v.size() > 18 || v.find_first_not_of("0123456789") != std::string::npos ||
      std::stoll(v) < lo || std::stoll(v) > hi) {
    return InvalidArgument(
        k, "must be an integer between " + std::to_string(lo) + " and " + std::to_string(hi));
  }
  return std::stoll(v);
}

void ControlPlane::RefreshUnfinishedLocked() {
  const auto& jobs = sched_.state().jobs();
  for (; jobs_indexed_ < jobs.size(); ++jobs_indexed_) {
    unfinished_.insert(static_cast<uint32_t>(jobs_indexed_ + 1));
  }
  for (auto it = unfinished_.begin(); it != unfinished_.end();) {
    const Job& j = sched_.state().job(JobId(*it));
    if (!IsTerminal(j.state)) {
      ++it;
      continue;
    }
    ++finished_[std::string(JobStateName(j.state))];
    output_kept_.emplace(j.finished.micros(), *it);
    it = unfinished_.erase(it);
  }
}

// GET /v1/jobs: filters, then one page in id order from a cursor (docs/api/openapi.yaml).
Result<std::string> ControlPlane::JobsLocked(const Caller& caller,
                                             const std::map<std::string, std::string>& q,
                                             std::string* next) {
  const ClusterState& st = sched_.state();
  auto get = [&](const std::string& k) {
    auto it = q.find(k);
    return it == q.end() ? std::string() : it->second;
  };
  const std::string state = get("state"), tier = get("tier"), pool = get("pool"),
                    tenant = get("tenant"), order = get("order");
  static const std::set<std::string> kStates = {"",         "active",   "all",        "pending",
                                                "starting", "running",  "preempting", "succeeded",
                                                "failed",   "cancelled"};
  if (!kStates.count(state)) {
    return InvalidArgument("state",
                           "must be active, all or a job state (pending, starting, "
                           "running, preempting, succeeded, failed, cancelled)");
  }
  if (!tier.empty() && !ParseTier(tier).ok())
    return InvalidArgument("tier", "must be reserved, spot or auto");
  if (order != "" && order != "asc" && order != "desc")
    return InvalidArgument("order", "must be asc (oldest first) or desc (newest first)");
  RSV_ASSIGN_OR_RETURN(int64_t limit, QueryInt(q, "limit", 1, 10000, 1000));
  RSV_ASSIGN_OR_RETURN(int64_t after, QueryInt(q, "after", 0, INT32_MAX));
  RSV_ASSIGN_OR_RETURN(int64_t before, QueryInt(q, "before", 0, INT32_MAX));
  const bool desc = order == "desc";
  // Queue positions cost a walk of the bids ahead of each pending job: only when asked.
  const std::string with_positions = get("positions");
  if (with_positions != "" && with_positions != "true" && with_positions != "false")
    return InvalidArgument("positions", "must be true or false");
  const bool positions = with_positions == "true";
  RefreshUnfinishedLocked();
  const bool only_unfinished = state == "active" || state == "pending" || state == "starting" ||
                               state == "running" || state == "preempting";
  const int64_t n = static_cast<int64_t>(st.jobs().size());
  // The ids a page walks, from the cursor on: unfinished ones, or every job ever submitted.
  std::vector<uint32_t> page;
  auto take = [&](uint32_t id) {
    const Job& j = st.job(JobId(id));
    if (!(caller.admin || j.spec.tenant == caller.tenant)) return;
    if (state == "active" ? IsTerminal(j.state)
                          : !state.empty() && state != "all" && JobStateName(j.state) != state) {
      return;
    }
    if (!tier.empty() && TierName(j.spec.tier) != tier) return;
    if (!pool.empty() && st.pool(j.spec.pool).config.name != pool) return;
    if (!tenant.empty() && st.tenant(j.spec.tenant).name != tenant) return;
    page.push_back(id);
  };
  const size_t want = static_cast<size_t>(limit) + 1;  // one more tells whether a next page exists
  if (only_unfinished && !desc) {
    for (auto it = unfinished_.upper_bound(static_cast<uint32_t>(after));
         it != unfinished_.end() && page.size() < want; ++it) {
      take(*it);
    }
  } else if (only_unfinished) {
    auto it =
        before > 0 ? unfinished_.lower_bound(static_cast<uint32_t>(before)) : unfinished_.end();
    while (it != unfinished_.begin() && page.size() < want) take(*--it);
  } else if (!desc) {
    for (int64_t id = after + 1; id <= n && page.size() < want; ++id) take(id);
  } else {
    for (int64_t id = before > 0 ? std::min(before - 1, n) : n; id >= 1 && page.size() < want;
         --id) {
      take(id);
    }
  }
  if (page.size() == want) {
    page.pop_back();
    if (next) *next = std::to_string(page.back());
  }
  // Positions: one walk of each pool's book for the whole page.
  std::map<uint32_t, std::set<uint32_t>> pending_by_pool;
  std::map<uint32_t, int32_t> places;
  if (positions) {
    for (uint32_t id : page) {
      const Job& j = st.job(JobId(id));
      if (j.state == JobState::kPending) pending_by_pool[j.spec.pool.value()].insert(id);
    }
    for (const auto& [pool, ids] : pending_by_pool) {
      places.merge(sched_.BookPositions(PoolId(pool), ids));
    }
  }
  std::string out = "[";
  for (uint32_t id : page) {
    const Job& j = st.job(JobId(id));
    json row = JobJson(st, j);
    if (Result<PendingWhy> w = sched_.Why(j.id, /*with_position=*/false); w.ok()) {
      row["reason"] = w->reason;
      row["reason_detail"] = w->detail;
      if (positions) row["position"] = places.count(id) ? places[id] : 0;
    }
    if (out.size() > 1) out += ",";
    out += row.dump();
  }
  return out + "]";
}

Result<std::string> ControlPlane::Read(const std::string& what, const Caller& caller,
                                       const std::map<std::string, std::string>& q,
                                       std::string* next) {
  std::lock_guard<std::mutex> lock(mu_);
  const ClusterState& st = sched_.state();
  auto visible = [&](TenantId t) { return caller.admin || t == caller.tenant; };
  auto get = [&](const std::string& k) {
    auto it = q.find(k);
    return it == q.end() ? std::string() : it->second;
  };
  if (what == "tenants") {
    json out = json::array();
    for (const Tenant& t : st.tenants()) {
      if (visible(t.id) && !t.deleted) out.push_back({{"id", t.id.value()}, {"name", t.name}});
    }
    return out.dump();
  }
  if (what == "tokens") {
    if (!caller.admin) return Status(Code::kPermissionDenied, "this needs an admin token");
    json out = json::array();
    for (const auto& [hash, c] : tokens_) out.push_back(TokenJson(hash, c));
    return out.dump();
  }
  if (what == "pools") {
    json out = json::array();
    for (const Pool& p : st.pools()) {
      out.push_back({{"name", p.config.name},
                     {"gpu_model", p.config.gpu_model},
                     {"reserve_price", MoneyStr(p.config.reserve_price)},
                     {"min_increment", MoneyStr(p.config.min_increment)},
                     {"max_notice_s", p.config.max_notice.seconds()},
                     {"ready_gpus", st.ReadyGpus(p.id)},
                     {"price", MoneyStr(sched_.Price(p.id))}});
    }
    return out.dump();
  }
  if (what == "nodes") {
    json out = json::array();
    for (const Node& n : st.nodes()) {
      int32_t used = 0;
      // Per GPU: the job on it, 0 for another tenant's job, null when free; a GPU of shares
      // shows its first share here, and all of them under "gpu_shares".
      json gpu_jobs = json::array();
      json gpu_shares = json::object();
      for (int g = 0; g < n.gpus; ++g) {
        const JobId j = n.Holder(g);
        used += j.valid();
        if (!n.gpu_shares[g].empty()) {
          json shares = json::array();
          for (JobId sid : n.gpu_shares[g]) {
            const Job& share = st.job(sid);
            shares.push_back({{"job", visible(share.spec.tenant) ? sid.value() : 0},
                              {"gpu_milli", share.spec.gpu_milli}});
          }
          gpu_shares[std::to_string(g)] = std::move(shares);
        }
        if (!j.valid()) {
          gpu_jobs.push_back(nullptr);
        } else {
          const Job& job = st.job(j);
          JobId shown = job.unit_of.valid() ? job.unit_of : j;
          gpu_jobs.push_back(visible(job.spec.tenant) ? shown.value() : 0);
        }
      }
      json node = {{"name", n.name},
                   {"pool", st.pool(n.pool).config.name},
                   {"gpus", n.gpus},
                   {"used", used},
                   {"topology", n.topology},
                   {"state", NodeStateName(n.state)},
                   {"gpu_jobs", std::move(gpu_jobs)}};
      if (!gpu_shares.empty()) node["gpu_shares"] = std::move(gpu_shares);
      if (n.gpu_memory_mib > 0) node["gpu_memory_mib"] = n.gpu_memory_mib;
      auto link = agents_.find(n.id.value());
      if (link != agents_.end()) {
        const AgentLink& a = link->second;
        node["agent"] = {{"probe", a.probe},
                         {"cgroups", a.cgroups},
                         {"last_seen_us", a.last_seen.micros()},
                         {"health", a.health},
                         {"gpus", json::parse(a.inventory, nullptr, false)}};
      }
      out.push_back(std::move(node));
    }
    return out.dump();
  }
  if (what == "jobs") return JobsLocked(caller, q, next);
  if (what.rfind("job/", 0) == 0) {
    uint32_t id = static_cast<uint32_t>(std::strtoul(what.c_str() + 4, nullptr, 10));
    if (!st.HasJob(JobId(id)) || !visible(st.job(JobId(id)).spec.tenant)) {
      return NotFound("no such job");
    }
    Result<PendingWhy> w = sched_.Why(JobId(id));
    const size_t tail = what.find_first_not_of("0123456789", 4);
    if (tail != std::string::npos && what.compare(tail, std::string::npos, "/why") == 0) {
      if (!w.ok()) return w.status();  // not pending: 409 saying what it is
      json why = {{"job", id},
                  {"reason", w->reason},
                  {"detail", w->detail},
                  {"position", w->position},
                  {"bids", w->bids},
                  {"price", MoneyStr(w->price)},
                  {"limit", MoneyStr(w->limit)},
                  {"gpus", w->gpus}};
      if (w->runs_at) why["runs_at_price"] = MoneyStr(*w->runs_at);
      if (w->reason == "no_placement") {
        why["largest_free_block"] = w->largest_free;
        why["free_gpus"] = w->free_gpus;
      }
      if (w->dependency.valid()) why["dependency"] = w->dependency.value();
      if (w->starts) why["starts_us"] = w->starts->micros();
      return why.dump();
    }
    json out = JobJson(st, st.job(JobId(id)));
    if (w.ok()) {
      out["reason"] = w->reason;
      out["reason_detail"] = w->detail;
      out["position"] = w->position;
    }
    return out.dump();
  }
  if (what == "reservations") {
    json out = json::array();
    for (const Reservation& r : st.reservations()) {
      if (visible(r.tenant)) out.push_back(ReservationJson(st, r));
    }
    return out.dump();
  }
  if (what.rfind("reservation/", 0) == 0) {
    uint32_t id = static_cast<uint32_t>(std::strtoul(what.c_str() + 12, nullptr, 10));
    if (!st.HasReservation(ReservationId(id)) ||
        !visible(st.reservation(ReservationId(id)).tenant)) {
      return NotFound("no such reservation");
    }
    return ReservationJson(st, st.reservation(ReservationId(id))).dump();
  }
  if (what == "market") {
    RefreshUnfinishedLocked();
    json out = json::array();
    for (const Pool& p : st.pools()) {
      const PoolUsage u = sched_.Usage(p.id);
      std::map<int64_t, int32_t> depth;  // limit → GPUs bid, pending spot
      std::map<int64_t, int32_t> held;   // limit → GPUs held by spot jobs (what a bid outbids)
      for (uint32_t id : unfinished_) {
        const Job& j = st.job(JobId(id));
        if (j.spec.pool != p.id) continue;
        if (j.state == JobState::kPending && j.spec.tier != Tier::kReserved)
          depth[j.limit.micros()] += j.spec.gpus;
        if (HoldsGpus(j.state) && j.running_as == Tier::kSpot)
          held[j.limit.micros()] += j.spec.gpus;
      }
      json held_book = json::array();
      for (const auto& [limit, gpus] : held) {  // cheapest first: the first to be outbid
        held_book.push_back({{"limit_price", MoneyStr(Money::Micros(limit))}, {"gpus", gpus}});
      }
      json book = json::array();
      for (auto it = depth.rbegin(); it != depth.rend(); ++it) {
        book.push_back({{"limit_price", MoneyStr(Money::Micros(it->first))}, {"gpus", it->second}});
      }
      out.push_back({{"pool", p.config.name},
                     {"price", MoneyStr(sched_.Price(p.id))},
                     {"reserve_price", MoneyStr(p.config.reserve_price)},
                     {"supply_gpus", sched_.SpotBudget(p.id)},
                     {"spot_used_gpus", u.spot_used + u.lent},
                     {"lent_gpus", u.lent},
                     {"reserved_used_gpus", u.reserved_used},
                     {"demand_pending_bids", u.pending_bids},
                     {"demand_pending_gpus", u.pending_bid_gpus},
                     {"min_increment", MoneyStr(p.config.min_increment)},
                     {"order_book", book},
                     {"held", held_book}});
    }
    return out.dump();
  }
  if (what == "usage") {
    // Each pool's GPUs by state now and at every change since `since_us`.
    RSV_ASSIGN_OR_RETURN(int64_t since, QueryInt(q, "since_us", 0, int64_t{1} << 60));
    auto usage_json = [](const PoolUsage& u) {
      json o = json::object();
      for (const auto& [state, n] : UsageStates(u)) o[state] = n;
      o["pending_bids"] = u.pending_bids;
      o["pending_bid_gpus"] = u.pending_bid_gpus;
      return o;
    };
    json out = json::object();
    for (const Pool& p : st.pools()) {
      json history = json::array();
      for (const auto& [t, u] : usage_history_[p.id.value()]) {
        if (t < since) continue;
        json point = usage_json(u);
        point["at_us"] = t;
        history.push_back(std::move(point));
      }
      // Each reservation holder's GPUs now (a tenant sees its own).
      json owners = json::object();
      for (const OwnerNow& o : sched_.OwnersNow(p.id)) {
        if (!visible(o.tenant)) continue;
        owners[st.tenant(o.tenant).name] = {
            {"reserved", o.reserved}, {"used", o.used}, {"lent", o.lent}, {"sold", o.sold}};
      }
      out[p.config.name] = {{"now", usage_json(sched_.Usage(p.id))},
                            {"price", MoneyStr(sched_.Price(p.id))},
                            {"owners", std::move(owners)},
                            {"history", std::move(history)}};
    }
    return out.dump();
  }
  if (what == "waste") {
    // Reserved GPU time by what became of it, per pool and tenant (docs/market.md).
    json rows = json::array();
    for (const auto& [key, t] : sched_.reserved_time()) {
      if (!visible(TenantId(key.second))) continue;
      json row = {{"pool", st.pool(PoolId(key.first)).config.name},
                  {"tenant", st.tenant(TenantId(key.second)).name}};
      int64_t total = 0;
      for (const auto& [use, us] : ReservedTimeParts(t)) {
        row[std::string(use) + "_gpu_s"] = static_cast<double>(us) / 1e6;
        total += us;
      }
      row["reserved_gpu_s"] = static_cast<double>(total) / 1e6;
      rows.push_back(std::move(row));
    }
    json unmet = json::object();
    for (const Pool& p : st.pools()) {
      unmet[p.config.name] = static_cast<double>(sched_.UnmetSpotTime(p.id)) / 1e6;
    }
    return json{{"reserved", rows}, {"unmet_spot_gpu_s", unmet}}.dump();
  }
  if (what == "market/history") {
    json out = json::object();
    for (const Pool& p : st.pools()) {
      json series = json::array();
      for (auto [t, m] : price_history_[p.id.value()]) {
        series.push_back({{"at_us", t}, {"price", MoneyStr(Money::Micros(m))}});
      }
      out[p.config.name] = series;
    }
    return out.dump();
  }
  if (what == "ledger" || what == "ledger/summary") {
    // docs/api/openapi.yaml: entries labelled by what they are to the account's holder, one page
    // from a cursor (oldest first from `after`, or newest first before `before`), or rolled up
    // per hour or per job; the summary sums the money flow per pool since `since_us`.
    RSV_ASSIGN_OR_RETURN(int64_t after, QueryInt(q, "after", 0, int64_t{1} << 60));
    RSV_ASSIGN_OR_RETURN(int64_t before, QueryInt(q, "before", 0, int64_t{1} << 60));
    RSV_ASSIGN_OR_RETURN(int64_t limit, QueryInt(q, "limit", 1, 10000, 1000));
    RSV_ASSIGN_OR_RETURN(int64_t since, QueryInt(q, "since_us", 0, int64_t{1} << 60));
    const std::string group = get("group"), order = get("order");
    if (group != "" && group != "hour" && group != "job")
      return InvalidArgument("group", "must be hour or job");
    if (order != "" && order != "asc" && order != "desc")
      return InvalidArgument("order", "must be asc (oldest first) or desc (newest first)");
    TenantId t = caller.tenant;
    if (caller.admin && !get("tenant").empty()) {
      auto id = st.FindTenant(get("tenant"));
      if (!id) return NotFound("no such tenant");
      t = *id;
    }
    const auto& all = sched_.ledger().entries();
    // Entries are in time and seq order: start at the first at or after `since`.
    auto first =
        std::lower_bound(all.begin(), all.end(), since,
                         [](const LedgerEntry& e, int64_t at) { return e.at.micros() < at; });
    if (what == "ledger/summary") {
      // Tenants see their own postings; admin sees every tenant's, and the operator's share of
      // spot charges (the operator's side of a reservation is the tenant's charge, not new money).
      std::map<std::string, std::map<std::string, Money>> pools;
      for (auto e = first; e != all.end(); ++e) {
        for (const Posting& p : e->postings) {
          const std::string_view label = PostingLabel(*e, p);
          if (caller.admin ? p.account.is_operator() && label != "operator_share"
                           : p.account.tenant != caller.tenant) {
            continue;
          }
          pools[st.pool(e->pool).config.name][std::string(label)] += p.amount;
        }
      }
      json out = json::object();
      for (const Pool& p : st.pools()) {
        json row = json::object();
        for (const char* k : {"spot_charge", "lending_credit", "operator_share",
                              "reservation_charge", "return_credit"}) {
          auto it = pools[p.config.name].find(k);
          row[k] = MoneyStr(it == pools[p.config.name].end() ? Money() : it->second);
        }
        out[p.config.name] = row;
      }
      return json{{"since_us", since}, {"pools", out}}.dump();
    }
    auto mine = [&](const Posting& p) {
      if (caller.admin && !t.valid()) return p.account.is_operator();
      return !p.account.is_operator() && p.account.tenant == t;
    };
    json entries = json::array();
    int64_t next_cursor = 0;
    if (!group.empty()) {
      // One row per (hour, pool, label) or (job, reservation, label), over every entry.
      std::map<std::tuple<int64_t, int64_t, std::string>, json> groups;
      for (auto e = first; e != all.end(); ++e) {
        for (const Posting& p : e->postings) {
          if (!mine(p)) continue;
          const std::string label(PostingLabel(*e, p));
          const int64_t hour = e->at.micros() / 3'600'000'000 * 3'600'000'000;
          auto key = group == "hour" ? std::make_tuple(hour, int64_t{e->pool.value()}, label)
                                     : std::make_tuple(int64_t{e->job.value()},
                                                       int64_t{e->reservation.value()}, label);
          json& g = groups[key];
          if (g.is_null()) {
            g = {{"what", label},
                 {"amount_micros", 0},
                 {"entries", 0},
                 {"pool", st.pool(e->pool).config.name},
                 {"from_us", e->at.micros()}};
            if (group == "hour") g["hour_us"] = hour;
            if (group == "job" && e->job.valid()) g["job"] = e->job.value();
            if (group == "job" && e->reservation.valid()) g["reservation"] = e->reservation.value();
          }
          g["amount_micros"] = g["amount_micros"].get<int64_t>() + p.amount.micros();
          g["entries"] = g["entries"].get<int64_t>() + 1;
          g["to_us"] = e->at.micros();
        }
      }
      for (auto& [key, g] : groups) {
        g["amount"] = MoneyStr(Money::Micros(g["amount_micros"].get<int64_t>()));
        g.erase("amount_micros");
        entries.push_back(std::move(g));
      }
    } else {
      // One page; it ends between entries, so an entry with two postings for the account (a
      // tenant buying spot and lending in the same step) is never split.
      auto visit = [&](const LedgerEntry& e) {
        if (!std::any_of(e.postings.begin(), e.postings.end(), mine)) return true;
        if (static_cast<int64_t>(entries.size()) >= limit) {
          next_cursor = entries.back()["seq"].get<int64_t>();
          return false;
        }
        for (const Posting& p : e.postings) {
          if (!mine(p)) continue;
          json row = {{"seq", e.seq},
                      {"at_us", e.at.micros()},
                      {"kind", EntryKindName(e.kind)},
                      {"what", PostingLabel(e, p)},
                      {"pool", st.pool(e.pool).config.name},
                      {"amount", MoneyStr(p.amount)}};
          if (e.job.valid()) row["job"] = e.job.value();
          if (e.reservation.valid()) row["reservation"] = e.reservation.value();
          entries.push_back(std::move(row));
        }
        return true;
      };
      auto by_seq = [](int64_t seq, const LedgerEntry& e) { return seq < e.seq; };
      if (order != "desc") {
        for (auto e = std::upper_bound(first, all.end(), after, by_seq); e != all.end(); ++e) {
          if (!visit(*e)) break;
        }
      } else {
        auto e = before > 0 ? std::upper_bound(first, all.end(), before - 1, by_seq) : all.end();
        while (e != first && visit(*--e)) {
        }
      }
    }
    Account acct = t.valid() ? Account::Of(t) : Account::Operator();
    json out = {{"account", t.valid() ? st.tenant(t).name : "operator"},
                {"balance", MoneyStr(sched_.ledger().Balance(acct))},
                {"charges", MoneyStr(sched_.ledger().Charges(acct))},
                {"credits", MoneyStr(sched_.ledger().Credits(acct))},
                {"entries", entries}};
    if (next_cursor > 0) {
      out[order == "desc" ? "next_before" : "next_after"] = next_cursor;
      if (next) *next = std::to_string(next_cursor);
    }
    return out.dump();
  }
  return NotFound("no such resource");
}

std::string ControlPlane::EventsLocked(int64_t since, const Caller& caller, uint32_t job,
                                       int64_t* last, bool* any) const {
  std::string out = "[";
  bool first = true;
  for (size_t i = static_cast<size_t>(std::max<int64_t>(0, since)); i < events_.size(); ++i) {
    TenantId owner = event_owner_[i].first;
    if (!caller.admin && owner.valid() && owner != caller.tenant) continue;
    if (job != 0 && event_owner_[i].second.value() != job) continue;
    if (!first) out += ",";
    out += events_[i];
    first = false;
  }
  *last = static_cast<int64_t>(events_.size());
  if (any) *any = !first;
  return out + "]";
}

std::string ControlPlane::EventsSince(int64_t since, const Caller& caller, int64_t* last,
                                      uint32_t job) {
  std::lock_guard<std::mutex> lock(mu_);
  return EventsLocked(since, caller, job, last, nullptr);
}

void ControlPlane::WaitForEvents(int64_t since, const Caller& caller, Timestamp deadline,
                                 uint32_t job, std::function<void(std::string, int64_t)> reply) {
  std::string events;
  int64_t last = 0;
  {
    std::lock_guard<std::mutex> lock(mu_);
    bool any = false;
    events = EventsLocked(since, caller, job, &last, &any);
    if (!any) {
      waiters_.push_back(
          Waiter{deadline,
                 [this, since, caller, job, reply](bool timed_out) -> std::function<void()> {
                   int64_t last = 0;
                   bool any = false;
                   std::string events = EventsLocked(since, caller, job, &last, &any);
                   if (!any && !timed_out) return {};
                   return [reply, events = std::move(events), last] { reply(events, last); };
                 },
                 {}});
      return;
    }
  }
  reply(std::move(events), last);
}

void ControlPlane::MarkTouchedLocked(const Event& e) {
  const ClusterState& st = sched_.state();
  auto mark = [&](NodeId n) {
    if (!n.valid()) return;
    if (touched_.size() <= n.value()) touched_.resize(st.nodes().size() + 1, 0);
    if (!touched_[n.value()]) touched_list_.push_back(n.value());
    touched_[n.value()] = 1;
  };
  auto mark_all = [&](const Placement& p) {
    for (const NodeSlice& s : p.slices) mark(s.node);
  };
  mark(e.node);
  if (!e.job.valid() || !st.HasJob(e.job)) return;
  const Job& j = st.job(e.job);
  // An elastic job's unit changes the whole job's gang (signal mode: every member's resize).
  const Job& whole = j.unit_of.valid() ? st.job(j.unit_of) : j;
  for (const Job* x : {&j, &whole}) {
    mark_all(x->placement);
    mark_all(x->last_placement);
  }
  mark_all(st.AttemptPlacement(whole));
  mark_all(st.ResizeTarget(whole));
}

std::vector<std::function<void()>> ControlPlane::TakeReadyWaiters(Timestamp now) {
  std::vector<std::function<void()>> ready;
  // Polls `list`, keeping the waiters that have no answer yet.
  auto poll = [&](std::vector<Waiter>& list) {
    size_t kept = 0;
    for (size_t i = 0; i < list.size(); ++i) {
      std::function<void()> fire = list[i].poll(now >= list[i].deadline);
      if (fire) {
        ready.push_back(std::move(fire));
      } else {
        if (kept != i) list[kept] = std::move(list[i]);
        ++kept;
      }
    }
    list.resize(kept);
  };
  poll(waiters_);
  // A parked agent whose node no change touched is not polled: its set cannot have changed.
  // Every kNetTicks ticks all are polled (the net); one whose time ran out is polled then.
  auto poll_node = [&](std::map<uint32_t, std::vector<Waiter>>::iterator it) {
    poll(it->second);
    return it->second.empty() ? node_waiters_.erase(it) : std::next(it);
  };
  if (poll_all_) {
    for (auto it = node_waiters_.begin(); it != node_waiters_.end();) it = poll_node(it);
  } else {
    for (uint32_t n : touched_list_) {
      auto it = node_waiters_.find(n);
      if (it != node_waiters_.end()) poll_node(it);
    }
  }
  // Parks whose time ran out (an entry whose agent was answered already polls nothing).
  while (!park_deadlines_.empty() && park_deadlines_.begin()->first <= now.micros()) {
    auto it = node_waiters_.find(park_deadlines_.begin()->second);
    park_deadlines_.erase(park_deadlines_.begin());
    if (it != node_waiters_.end()) poll_node(it);
  }
  for (uint32_t n : touched_list_) touched_[n] = 0;
  touched_list_.clear();
  poll_all_ = false;
  return ready;
}

std::string ControlPlane::Metrics() {
  std::lock_guard<std::mutex> lock(mu_);
  const ClusterState& st = sched_.state();
  std::string o;
  auto line = [&](const std::string& s) { o += s + "\n"; };
  line("# HELP reservoir_gpus GPUs by pool and state.");
  line("# TYPE reservoir_gpus gauge");
  RefreshUnfinishedLocked();
  // Pending jobs by pool and tier, and every job by state, from the unfinished ones and the
  // counts of finished ones.
  std::map<std::pair<uint32_t, std::string>, int64_t> queue;
  std::map<std::string, int64_t> states = finished_;
  for (const char* s :
       {"pending", "starting", "running", "preempting", "succeeded", "failed", "cancelled"}) {
    states.try_emplace(s, 0);
  }
  for (uint32_t id : unfinished_) {
    const Job& j = st.job(JobId(id));
    ++states[std::string(JobStateName(j.state))];
    if (j.state == JobState::kPending)
      ++queue[{j.spec.pool.value(), std::string(TierName(j.spec.tier))}];
  }
  for (const Pool& p : st.pools()) {
    const PoolUsage u = sched_.Usage(p.id);
    const std::string pl = "pool=\"" + p.config.name + "\"";
    for (const auto& [state, n] : UsageStates(u)) {
      line("reservoir_gpus{" + pl + ",state=\"" + state + "\"} " + std::to_string(n));
    }
  }
  line("# HELP reservoir_spot_price Clearing price per GPU-hour.");
  line("# TYPE reservoir_spot_price gauge");
  for (const Pool& p : st.pools()) {
    line("reservoir_spot_price{pool=\"" + p.config.name + "\"} " + MoneyStr(sched_.Price(p.id)));
  }
  line("# HELP reservoir_queue_length Pending jobs by pool and tier.");
  line("# TYPE reservoir_queue_length gauge");
  for (const Pool& p : st.pools()) {
    for (const char* tier : {"auto", "reserved", "spot"}) {
      auto it = queue.find({p.id.value(), tier});
      line("reservoir_queue_length{pool=\"" + p.config.name + "\",tier=\"" + tier + "\"} " +
           std::to_string(it == queue.end() ? 0 : it->second));
    }
  }
  line("# HELP reservoir_jobs Jobs by state.");
  line("# TYPE reservoir_jobs gauge");
  for (const auto& [s, n] : states)
    line("reservoir_jobs{state=\"" + s + "\"} " + std::to_string(n));
  line(
      "# HELP reservoir_gpu_seconds_total Reserved GPU time by what became of it "
      "(docs/market.md, \"The waste report\").");
  line("# TYPE reservoir_gpu_seconds_total counter");
  for (const auto& [key, t] : sched_.reserved_time()) {
    const std::string labels = "pool=\"" + st.pool(PoolId(key.first)).config.name + "\",tenant=\"" +
                               st.tenant(TenantId(key.second)).name + "\",use=\"";
    for (const auto& [use, us] : ReservedTimeParts(t)) {
      line("reservoir_gpu_seconds_total{" + labels + use + "\"} " + SecondsStr(us));
    }
  }
  line("# HELP reservoir_unmet_spot_gpu_seconds_total GPU time spot bids waited unserved.");
  line("# TYPE reservoir_unmet_spot_gpu_seconds_total counter");
  for (const Pool& p : st.pools()) {
    line("reservoir_unmet_spot_gpu_seconds_total{pool=\"" + p.config.name + "\"} " +
         SecondsStr(sched_.UnmetSpotTime(p.id)));
  }
  line("# HELP reservoir_agent_last_sync_age_seconds Time since each agent's node last synced.");
  line("# TYPE reservoir_agent_last_sync_age_seconds gauge");
  for (const auto& [node, link] : agents_) {
    char age[32];
    std::snprintf(age, sizeof age, "%.3f", (clock_->Now() - link.last_seen).micros() / 1e6);
    line("reservoir_agent_last_sync_age_seconds{node=\"" + st.node(NodeId(node)).name +
         "\",probe=\"" + (link.probe == "nvml" || link.probe == "fake" ? link.probe : "unknown") +
         "\"} " + age);
  }
  line("# HELP reservoir_preemptions_total Jobs stopped after notice.");
  line("# TYPE reservoir_preemptions_total counter");
  line("reservoir_preemptions_total " + std::to_string(preemptions_));
  line("# HELP reservoir_cycle_duration_seconds Scheduling cycle duration.");
  line("# TYPE reservoir_cycle_duration_seconds histogram");
  char buf[64];
  for (size_t b = 0; b < cycle_ns_buckets_.size(); ++b) {
    std::snprintf(buf, sizeof buf, "%g", static_cast<double>(int64_t{1000} << (2 * b)) / 1e9);
    line(std::string("reservoir_cycle_duration_seconds_bucket{le=\"") + buf + "\"} " +
         std::to_string(cycle_ns_buckets_[b]));
  }
  line("reservoir_cycle_duration_seconds_bucket{le=\"+Inf\"} " + std::to_string(cycles_));
  std::snprintf(buf, sizeof buf, "%.9f", cycle_ns_sum_ / 1e9);
  line(std::string("reservoir_cycle_duration_seconds_sum ") + buf);
  line("reservoir_cycle_duration_seconds_count " + std::to_string(cycles_));
  line("# HELP reservoir_snapshot_seq The log seq of the newest snapshot written or loaded.");
  line("# TYPE reservoir_snapshot_seq gauge");
  line("reservoir_snapshot_seq " + std::to_string(snapshot_seq_));
  line("# HELP reservoir_snapshot_bytes Size of the newest snapshot written or loaded.");
  line("# TYPE reservoir_snapshot_bytes gauge");
  line("reservoir_snapshot_bytes " + std::to_string(snapshot_bytes_));
  line("# HELP reservoir_snapshot_pause_seconds How long the last snapshot held writes.");
  line("# TYPE reservoir_snapshot_pause_seconds gauge");
  std::snprintf(buf, sizeof buf, "%.6f", snapshot_pause_ns_ / 1e9);
  line(std::string("reservoir_snapshot_pause_seconds ") + buf);
  line("# HELP reservoir_snapshots_written_total Snapshots this server wrote.");
  line("# TYPE reservoir_snapshots_written_total counter");
  line("reservoir_snapshots_written_total " + std::to_string(snapshots_written_));
  line("# HELP reservoir_commands_since_snapshot Commands applied since the last snapshot.");
  line("# TYPE reservoir_commands_since_snapshot gauge");
  line("reservoir_commands_since_snapshot " + std::to_string(since_snapshot_));
  return o;
}

}  // namespace rsv::server
