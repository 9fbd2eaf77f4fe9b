// server/commands: the control plane's commands, typed. Every change to the applied state is one
// of these; the leader applies it, appends it to the command log, and every server replays it
// from there (docs/ha.md). Each struct lists its fields once (`Fields`), and that one list is
// the codec both ways: EncodeCommand writes the log's JSON body, DecodeCommand reads it back
// (an absent field keeps its default, so older logs replay; a field of the wrong type is an
// error naming it). The HTTP layer builds commands; the applier (ControlPlane::Apply) reads them
// and knows nothing of HTTP.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <variant>
#include <vector>

#include "common/status.h"

namespace rsv::server {

// A JSON value carried as is (text): an agent's GPU inventory, whatever its probe reports.
struct RawJson {
  std::string text = "null";
};

namespace cmd {

// One scheduling cycle (the leader's tick), logged when it decided something or moved money.
struct Cycle {
  static constexpr const char* kKind = "cycle";
};
// What the config changed when this server took the lead (ControlPlane::ConfigChangesLocked).
struct ConfigNode {
  std::string name, pool, topology;
  int32_t gpus = 0;
  int64_t gpu_memory_mib = 0;
};
struct ConfigPool {  // a pool's settings (PoolConfig), in micro-units, µs and basis points
  std::string name, gpu_model;
  int64_t reserve_micros = 0, min_increment_micros = 0, max_notice_us = 0, base_micros = 0;
  int64_t surge_bp = 0, return_rate_bp = 0, operator_share_bp = 0;
  int32_t holdback_gpus = 0;
};
struct Config {
  static constexpr const char* kKind = "config";
  std::vector<ConfigPool> pools;
  std::vector<ConfigNode> nodes;
};
struct AddTenant {
  static constexpr const char* kKind = "tenant";
  std::string name;
};
struct DeleteTenant {
  static constexpr const char* kKind = "delete_tenant";
  std::string name;
};
// A token, by its hash: the operator's (admin), a node's agent's (node), or a tenant's.
struct AddToken {
  static constexpr const char* kKind = "token";
  bool admin = false;
  std::string node, tenant, hash;
};
// By the token's hash, or by its id (the hash's first 12 hex digits).
struct Revoke {
  static constexpr const char* kKind = "revoke";
  std::string hash, id;
};
struct AddNode {
  static constexpr const char* kKind = "node";
  std::string name, pool, topology;
  int32_t gpus = 0;
  int64_t gpu_memory_mib = 0;
};
// An agent registers its node (adding it on first contact).
struct Register {
  static constexpr const char* kKind = "register";
  std::string name, pool, topology, probe, cgroups, address;
  int32_t gpus = 0;
  RawJson inventory{"[]"};
};
struct NodeStateChange {
  static constexpr const char* kKind = "node_state";
  std::string node, state, reason;  // state: ready, draining, down
};
// An agent's report about one member of an attempt (`member`: per node; logs from before
// gangs were tracked per member lack it and mean the job as a whole).
struct MemberReport {
  std::string node;
  int64_t job = 0;
  int32_t attempt = 0;
  bool member = false;
};
struct Started : MemberReport {
  static constexpr const char* kKind = "started";
};
struct StartFailed : MemberReport {
  static constexpr const char* kKind = "start_failed";
  std::string reason;
  bool counts = false;  // counts as one of the job's failures
};
struct AgentExit : MemberReport {
  static constexpr const char* kKind = "agent_exit";
  bool success = false, lost = false;
  std::string detail;
};
struct Checkpoint : MemberReport {
  static constexpr const char* kKind = "checkpoint";
  int64_t marker_us = 0;  // the marker file's modification time
};
struct ResizeAck : MemberReport {
  static constexpr const char* kKind = "resize_ack";
  int32_t generation = 0;
};
struct Reserve {
  static constexpr const char* kKind = "reserve";
  std::string tenant, pool;
  int32_t gpus = 0;
  int64_t start_us = 0;
  std::optional<int64_t> duration_us;  // else the end
  int64_t end_us = 0;
  bool lend = true, quote_only = false;
};
struct Return {
  static constexpr const char* kKind = "return";
  int64_t reservation = 0, caller = 0;  // caller: the tenant asking (0: the operator)
};
struct Dependency {
  std::string kind = "afterok";  // or afterany
  int64_t job = 0;
};
struct Submit {
  static constexpr const char* kKind = "submit";
  std::string tenant, pool, name;
  int32_t gpus = 1;
  std::string tier = "spot";
  int64_t limit_micros = 0;
  std::optional<int64_t> fallback_micros;
  int64_t notice_s = 30, time_limit_s = 0;
  int32_t max_restarts = 0;
  std::string command, workdir;
  int64_t cpu_millis = 0, memory_mib = 0;
  std::vector<std::string> env;
  int32_t max_gpus = 0, gpu_step = 0;
  // A share of one GPU (docs/market.md, "GPU shares"); 1000: whole GPUs.
  int32_t gpu_milli = 1000;
  int64_t gpu_memory_mib = 0;
  std::string resize_mode = "restart";
  int64_t resize_cooldown_s = 300;
  std::vector<Dependency> dependencies;
};
// A tenant's (caller) or the operator's (0) action on one job.
struct JobAction {
  int64_t job = 0, caller = 0;
};
struct Cancel : JobAction {
  static constexpr const char* kKind = "cancel";
};
struct Release : JobAction {  // a job under notice gives its GPUs back now
  static constexpr const char* kKind = "release";
};
struct Exit : JobAction {  // a job without an agent reports its end
  static constexpr const char* kKind = "exit";
  bool success = true;
};

}  // namespace cmd

using Cmd =
    std::variant<cmd::Cycle, cmd::Config, cmd::AddTenant, cmd::DeleteTenant, cmd::AddToken,
                 cmd::Revoke, cmd::AddNode, cmd::Register, cmd::NodeStateChange, cmd::Started,
                 cmd::StartFailed, cmd::AgentExit, cmd::Checkpoint, cmd::ResizeAck, cmd::Reserve,
                 cmd::Return, cmd::Submit, cmd::Cancel, cmd::Release, cmd::Exit>;

// The log's kind of `c` ("submit", ...).
const char* KindOf(const Cmd& c);
// The log's JSON body of `c`.
std::string EncodeCommand(const Cmd& c);
// A logged command back: an unknown kind, a body that is not a JSON object, or a field of the
// wrong type is an error naming it.
Result<Cmd> DecodeCommand(const std::string& kind, const std::string& body);

}  // namespace rsv::server
