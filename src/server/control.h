// server/control: the control plane's state behind the HTTP API. Owns the Scheduler, the
// tenants' tokens, the event history and price history, and the durable command log: a
// mutation is applied to the scheduler, appended to the Store (group-committed) and only then
// acknowledged; restart replays the log through the same Apply. Reads run under the same lock.
// Knows nothing of HTTP; JSON appears only as strings at this boundary.
#pragma once

#include <atomic>
#include <condition_variable>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <nlohmann/json_fwd.hpp>
#include <optional>
#include <set>
#include <string>
#include <thread>
#include <tuple>
#include <vector>

#include "common/clock.h"
#include "scheduler/scheduler.h"
#include "server/commands.h"
#include "store/store.h"

namespace rsv::server {

// Who is calling: the operator (admin) or one tenant.
struct Caller {
  bool admin = false;
  TenantId tenant;
  std::string tenant_name;
  // A node-scoped token (what an agent holds): it may register and sync this node, nothing else.
  std::string node;
};

struct ServerConfig {
  std::vector<PoolConfig> pools;
  struct NodeDecl {
    std::string name, pool, topology;
    int32_t gpus = 0;
    int64_t gpu_memory_mib = 0;  // each GPU's memory (for shares that ask for memory); 0: unknown
  };
  std::vector<NodeDecl> nodes;
  Duration tick = Duration::Seconds(1);
  // An agent's node that has not synced for this long is down; its jobs are requeued.
  Duration heartbeat_timeout = Duration::Seconds(10);
  // A start the agent has not confirmed after this long is rolled back and requeued.
  Duration start_timeout = Duration::Seconds(30);
  std::string log_dir;  // job output shipped by agents (set by `reservoir server`); empty: none
  // Output kept per attempt; what a job writes beyond it is dropped (with a marker line).
  int64_t max_output_bytes = int64_t{64} << 20;
  // The store may be shared with standbys (PostgreSQL): agents are told, so that a refused
  // connection to this server never counts as "no server leads" (docs/ha.md).
  bool shared_store = false;
  // A finished job's output is removed this long after it finished (within a minute more).
  Duration output_retention = Duration::Hours(24 * 30);
  // The leader snapshots its state (and compacts the log) after this many commands, or after
  // `snapshot_interval` when any were applied since the last snapshot (docs/ha.md,
  // "Snapshots"). 0: never.
  int64_t snapshot_every = 100'000;
  Duration snapshot_interval = Duration::Minutes(10);
  // What one reservation may be, for every tenant ("default") or one tenant by name; checked
  // when it is booked (never on replay). Zero: no limit.
  struct ReservationLimits {
    int32_t max_gpus = 0;
    Duration max_duration = Duration::Hours(24 * 366);
    Money max_total;  // its price for the whole window
  };
  std::map<std::string, ReservationLimits> reservation_limits = {{"default", {}}};
};
// JSON config: {"pools": [...], "nodes": [...], "tick": "1s", "heartbeat_timeout": "10s",
// "start_timeout": "30s", "max_output_mib": 64, "output_retention": "30d",
// "snapshot_every": 100000, "snapshot_interval": "10m",
// "reservation_limits": {"default": {"max_gpus": 64, "max_duration": "30d", "max_total":
// "100000"}, "TENANT": {...}}}; errors name the field.
Result<ServerConfig> ParseServerConfig(const std::string& json_text);

// A non-negative integer query parameter in [lo, hi], or `def` when absent; errors name it.
Result<int64_t> QueryInt(const std::map<std::string, std::string>& query, const std::string& k,
                         int64_t lo, int64_t hi, int64_t def = 0);

// A reply body (JSON) and HTTP status; errors are rendered by the API layer.
struct Reply {
  int status = 200;
  std::string body;
};

class ControlPlane {
 public:
  ControlPlane(ServerConfig config, std::unique_ptr<Store> store, const Clock* clock);
  ~ControlPlane();

  // Loads pools and nodes from the config, replays the command log and leads: one server alone
  // on its store (tests). `reservoir server` runs Load, then Lead once it holds the lease.
  Status Start();

  // --- High availability (docs/ha.md) ---
  // Loads the config, then the newest snapshot and the log after it, without leading: a
  // standby. `use_snapshot` false: replays the whole log (tests compare the two).
  Status Load(bool use_snapshot = true);
  // Applies what was appended to the log since (a standby follows the leader's writes).
  Status CatchUp();
  // Takes over: applies the log's tail, gives every agent a fresh heartbeat timeout and starts
  // accepting writes. The caller holds the lease (its store appends under the lease's epoch).
  Status Lead();
  // Whether this server accepts writes: it leads and has not stepped down.
  bool leading() const { return leading_.load(); }
  // Stops accepting writes for good (the lease was lost, or an append failed): the applied
  // state may hold commands that never became durable, so only a restart may serve again.
  // Runs the OnStepDown callback once.
  void StepDown(const std::string& why);
  // Stops accepting writes, waits until every queued one is answered (durable, or refused after
  // a step-down) and answers every parked long-poll: a clean stop, or a step-down, while the
  // HTTP server can still send the replies. Then the lease can be handed over.
  void Quiesce();
  void OnStepDown(std::function<void(const std::string& why)> fn) { on_step_down_ = std::move(fn); }
  bool stepped_down() const { return stepped_down_.load(); }
  int64_t applied_seq() const { return applied_seq_.load(); }
  // The leader's API address and lease epoch, as this server last learned them.
  void SetLeader(std::string address, int64_t epoch);
  std::pair<std::string, int64_t> Leader() const;
  Store* store() { return store_.get(); }

  // Applies a command now and calls `done` with what it made (JSON) once it is durable, or with
  // why it was refused (nothing changed).
  void Execute(Cmd command, std::function<void(Result<std::string>)> done);
  // The same from the log's form: its kind and JSON body (tests).
  void Execute(const std::string& kind, const std::string& body,
               std::function<void(Result<std::string>)> done);
  // One scheduling cycle at the clock's now; logged if it decided anything.
  void Tick();

  // Tokens: the caller a bearer token belongs to, if any.
  std::optional<Caller> Authenticate(const std::string& token);
  bool HasAdmin();

  // Reads (JSON text), scoped to the caller.
  // A list read one page long sets `next` to the cursor of the page after it (empty: last).
  Result<std::string> Read(const std::string& what, const Caller& caller,
                           const std::map<std::string, std::string>& query,
                           std::string* next = nullptr);
  // Events after `since` visible to the caller, as a JSON array, and the last seq.
  // `job`: only that job's events (0: all).
  std::string EventsSince(int64_t since, const Caller& caller, int64_t* last, uint32_t job = 0);
  // Long-poll: calls `reply` (once) with the events after `since` as soon as there are any the
  // caller may see, or with none at `deadline`.
  void WaitForEvents(int64_t since, const Caller& caller, Timestamp deadline, uint32_t job,
                     std::function<void(std::string events, int64_t last)> reply);
  std::string Metrics();

  // --- Agents (docs/agent.md) ---
  // One reconciliation round for `node`: applies the agent's report (JSON: jobs, health, logs),
  // then replies with the node's desired set, at once when it differs from the version the
  // agent last saw (`known`) or anything was reported, otherwise when it changes or at
  // `deadline`. The reply follows the durability of every command the report caused.
  void Sync(const std::string& node, const std::string& report, Timestamp deadline,
            std::function<void(Result<Reply>)> done);
  // Output of one attempt of a job from `offset` (JSON: data, next_offset, complete); with a
  // deadline, waits for more output until then.
  // `node`: a multi-node job's member on that node (empty: the first node's, rank 0).
  void Logs(const Caller& caller, int64_t job, int32_t attempt, const std::string& node,
            int64_t offset, Timestamp deadline, std::function<void(Result<Reply>)> done);

  // --- Snapshots (docs/ha.md, "Snapshots") ---
  // The applied state as a snapshot holds it: equal bytes for equal states. The snapshot test
  // compares a start from a snapshot and the log's tail with a full replay this way.
  std::string StateBytes();
  // The next tick takes a snapshot whatever the thresholds (tests, benchmarks).
  void SnapshotSoon();
  // Waits until no snapshot is pending or being written; the last one's outcome: the seq the
  // log was compacted through (0: none).
  Result<int64_t> WaitForSnapshot();
  // The seq of the snapshot Load started from (0: none).
  int64_t loaded_snapshot() const { return loaded_snapshot_; }

  // Called by the API layer to build commands: resolves names under the lock.
  std::optional<TenantId> FindTenant(const std::string& name);
  int64_t commands_replayed() const { return replayed_; }
  // The scheduler's invariants (docs/invariants.md) at the clock's now: empty when they hold.
  std::vector<std::string> CheckInvariants();

 private:
  // Snapshots: the header and every field of the state below, in one list for both directions.
  template <class Ar>
  Status StateIoLocked(Ar& ar);
  // Why `data` cannot be loaded here (empty: it can): not a snapshot, or another format.
  std::string SnapshotUnusable(const std::string& data) const;
  // A snapshot is due (Tick): a child process forked now writes the state as of now (its
  // copy-on-write image) to a pipe; the writer thread stores what it reads once every command
  // the snapshot holds is durable (WriteSnapshotLocked).
  void MaybeSnapshotLocked(Timestamp now);
  void WriteSnapshotLocked(int64_t seq);
  // A snapshot that will never be durable (this server stepped down, or stops): its child is
  // ended.
  void AbandonSnapshotLocked();
  // The config's pools and nodes the state lacks or holds otherwise, as a "config" command's
  // body (null when they agree). Pools and nodes declared in the config are part of the state
  // (snapshots carry them): a change is logged by the leader when it takes over, so every
  // server applies it at the same point of the log. A node the config declares with another
  // pool, size or topology than the state's is an error.
  Result<std::optional<cmd::Config>> ConfigChangesLocked() const;
  static PoolConfig PoolConfigOf(const cmd::ConfigPool& c);
  int64_t loaded_snapshot_ = 0;
  int64_t since_snapshot_ = 0;  // commands applied since the last snapshot (or the start)
  Timestamp last_snapshot_;     // when the last was taken, or this server began leading
  bool snapshot_soon_ = false;
  bool snapshot_busy_ = false;     // taken, not yet written
  bool snapshot_waiting_ = false;  // taken, waiting for its commands to be durable
  int64_t snapshot_count_ = 0;     // written once this many of queued_ are durable
  int snapshot_child_ = 0;         // the process writing it (a pid)
  int snapshot_pipe_ = -1;         // what it writes, to be read by the writer thread
  std::string snapshot_image_;     // the image itself where there is no child (sanitizers)
  std::thread snapshot_writer_;    // stores one snapshot at a time
  std::condition_variable snapshot_cv_;
  Result<int64_t> snapshot_result_ = int64_t{0};
  int64_t snapshots_written_ = 0;
  int64_t snapshot_seq_ = 0;  // the newest written (or loaded)
  int64_t snapshot_bytes_ = 0;
  int64_t snapshot_pause_ns_ = 0;  // how long the last one held the lock (the fork)

  // The applier: one command, live or replayed (`replay`: limits that only bind new requests
  // are not checked). Returns the JSON body of what it made.
  // `render`: what it made is rendered as JSON for a reply (false where none is read: on
  // replay, and for commands built here).
  Result<std::string> Apply(const Cmd& c, Timestamp now, bool replay, bool render = true);
  std::string Made(JobId id) const;  // the job's JSON, when rendering
  bool render_ = true;
  Result<std::string> On(const cmd::Cycle& c, Timestamp now, bool replay);
  Result<std::string> On(const cmd::Config& c, Timestamp now, bool replay);
  Result<std::string> On(const cmd::AddTenant& c, Timestamp now, bool replay);
  Result<std::string> On(const cmd::DeleteTenant& c, Timestamp now, bool replay);
  Result<std::string> On(const cmd::AddToken& c, Timestamp now, bool replay);
  Result<std::string> On(const cmd::Revoke& c, Timestamp now, bool replay);
  Result<std::string> On(const cmd::AddNode& c, Timestamp now, bool replay);
  Result<std::string> On(const cmd::Register& c, Timestamp now, bool replay);
  Result<std::string> On(const cmd::NodeStateChange& c, Timestamp now, bool replay);
  Result<std::string> On(const cmd::Started& c, Timestamp now, bool replay);
  Result<std::string> On(const cmd::StartFailed& c, Timestamp now, bool replay);
  Result<std::string> On(const cmd::AgentExit& c, Timestamp now, bool replay);
  Result<std::string> On(const cmd::Checkpoint& c, Timestamp now, bool replay);
  Result<std::string> On(const cmd::ResizeAck& c, Timestamp now, bool replay);
  Result<std::string> On(const cmd::Reserve& c, Timestamp now, bool replay);
  Result<std::string> On(const cmd::Return& c, Timestamp now, bool replay);
  Result<std::string> On(const cmd::Submit& c, Timestamp now, bool replay);
  Result<std::string> On(const cmd::Cancel& c, Timestamp now, bool replay);
  Result<std::string> On(const cmd::Release& c, Timestamp now, bool replay);
  Result<std::string> On(const cmd::Exit& c, Timestamp now, bool replay);
  // Names and ids in commands, resolved (errors name the field).
  Result<PoolId> PoolOf(const std::string& name) const;
  Result<TenantId> TenantOf(const std::string& name) const;
  Result<JobId> JobOf(int64_t id, TenantId caller) const;  // another tenant's: not found
  Result<JobId> JobActionOf(const cmd::JobAction& c) const;
  // Applies one command read back from the log (replay and following); an error means the
  // log and the code disagree.
  Status ApplyLoggedLocked(const Command& c);
  // Queues one applied command for the log; `then` runs on the committer's thread with the
  // append's status (not ok: this server stepped down and the command was not recorded).
  void PersistLocked(Command c, std::function<void(Status)> then);
  // Agents are shown only durable state (docs/ha.md, "Taking over"): a reply built from the
  // applied state waits until every command applied before it is durable. `reply(true)`: send
  // it; `reply(false)`: this server stepped down first (refuse). Returns what the caller runs
  // after unlocking (a no-op when the reply waits).
  std::function<void()> WhenDurableLocked(std::function<void(bool ok)> reply);
  int64_t queued_ = 0;   // commands queued for the log
  int64_t durable_ = 0;  // of them, answered by the committer (durable, or failed)
  std::deque<std::pair<int64_t, std::function<void(bool)>>> after_durable_;
  std::atomic<bool> leading_{false};
  Timestamp start_grace_from_;  // when this server began leading: starts are timed from then
  std::atomic<bool> stepped_down_{false};
  std::atomic<int64_t> applied_seq_{0};
  std::function<void(const std::string&)> on_step_down_;
  mutable std::mutex leader_mu_;
  std::string leader_address_;
  int64_t leader_epoch_ = 0;
  // The configured limits on one reservation (ServerConfig::reservation_limits).
  Status WithinLimits(const ReservationRequest& r, Timestamp now);
  void DrainEvents();
  std::string EventsLocked(int64_t since, const Caller& caller, uint32_t job, int64_t* last,
                           bool* any) const;
  // Waiters whose answer is ready or whose time ran out; the caller runs them after unlocking.
  std::vector<std::function<void()>> TakeReadyWaiters(Timestamp now);
  void RunReadyWaiters();
  // A parked long-poll: `poll` runs under the lock after every change; it returns the reply to
  // send (run after unlocking) once there is one, or empty to keep waiting.
  struct Waiter {
    Timestamp deadline;
    std::function<std::function<void()>(bool timed_out)> poll;
    std::function<void()> refuse;  // how Quiesce answers it; empty: as if its time ran out
  };
  std::vector<Waiter> waiters_;
  // Parked agents, by node: polled only when a change touched their node or when one's time
  // ran out (`park_deadlines_`), and all of them every kNetTicks ticks.
  std::map<uint32_t, std::vector<Waiter>> node_waiters_;
  std::set<std::pair<int64_t, uint32_t>> park_deadlines_;  // (deadline µs, node) of each park
  // Nodes whose desired sets a change since the last poll may have touched: the nodes of the
  // jobs and nodes its events name. Every kNetTicks ticks every parked agent is polled anyway
  // (`poll_all_`): a net, so that a change no event names reaches its agent within that many
  // ticks, not only at its long-poll's deadline. None is known: the net costs one key per
  // parked agent, a tenth of a tick's worth at each tick.
  void MarkTouchedLocked(const Event& e);
  std::vector<uint8_t> touched_;  // by node id
  std::vector<uint32_t> touched_list_;
  bool poll_all_ = false;
  int64_t ticks_ = 0;
  static constexpr int64_t kNetTicks = 10;

  // What the server knows of the agent running a node. Not journaled except registration:
  // after a restart every registered agent gets a fresh heartbeat timeout.
  struct AgentLink {
    Timestamp last_seen;
    std::string probe;      // "nvml" or "fake"
    std::string cgroups;    // "applied" or why not
    std::string inventory;  // JSON array of the node's GPUs (uuid, name, memory, utilization)
    std::string registered_inventory;  // as of its registration (the log's; snapshots hold it)
    std::string health;                // empty when healthy
    std::string address;  // where the node's peers reach it (gangs' MASTER_ADDR, RESERVOIR_NODES)
  };
  std::map<uint32_t, AgentLink> agents_;  // by node id
  // The members of attempts whose output they ship: (job, attempt, node id) -> the node's output
  // file suffix (empty for the first node, rank 0; ".NODE" for the others).
  std::map<std::tuple<uint32_t, int32_t, uint32_t>, std::string> ran_on_;
  // The newest checkpoint marker (its modification time, µs) reported per job: the same marker
  // seen by another member of a gang is not a new checkpoint.
  std::map<uint32_t, int64_t> checkpoint_markers_;
  // The node's desired set (JSON) and its version.
  std::string DesiredLocked(NodeId node, std::string* version) const;
  static std::string VersionOf(const std::string& key);  // a desired set's version, from its key
  // What the node's desired set depends on, as a string (its version is this key's hash);
  // `visit` sees each job it holds (the attempt's GPUs, whether this member is joining).
  using DesiredVisit = std::function<void(const Job&, const Placement& all, bool joining)>;
  std::string DesiredKeyLocked(NodeId node, const DesiredVisit& visit = {}) const;
  // What the member of `j` on node `here` needs to join its gang (rank, peers, port), for the
  // GPUs `all` (the attempt's, or a resize's target).
  nlohmann::json GangLocked(const Job& j, const Placement& all, NodeId here) const;
  // Signal mode: the resize generation the member on `here` is to take in (docs/agent.md,
  // "Elastic jobs").
  nlohmann::json ResizeLocked(const Job& j, NodeId here) const;
  static constexpr int64_t kGangPortBase = 29500;  // MASTER_PORT: base + 16 × GPU + attempt % 16
  static constexpr int64_t kPortsPerGpu = 16;
  // Applies a command built here (not by a client) and adds it to `log` (for QueueLocked).
  Result<std::string> ApplyInternal(const Cmd& c, std::vector<Command>* log);
  // Queues `log` for the command log, in order, while the caller holds mu_ (so the log's order
  // is the order commands were applied in); `then` runs on the committer's thread once all are
  // durable. False (and `then` not run) when `log` is empty: the caller runs it after unlocking.
  // `then` gets the first failure, if any (this server stepped down; nothing more was recorded).
  bool QueueLocked(std::vector<Command>* log, std::function<void(Status)> then);
  // Heartbeat and start timeouts, at each tick.
  void CheckAgentsLocked(Timestamp now, std::vector<Command>* log);
  std::string LogPathOf(uint32_t job, int32_t attempt, const std::string& suffix = "") const;
  // Appends an attempt's output at `offset` (idempotent); returns the size the agent should
  // continue from. `dropped`: the agent dropped what followed (its output cap).
  int64_t AppendLog(const std::string& path, int64_t offset, const std::string& data, bool dropped);

  ServerConfig config_;
  std::unique_ptr<Store> store_;
  const Clock* clock_;
  std::unique_ptr<GroupCommitter> committer_;
  std::mutex mu_;
  Scheduler sched_;
  std::map<std::string, Caller> tokens_;                 // sha256 hex → caller
  std::vector<std::string> events_;                      // JSON per event; events_[i] has seq i + 1
  std::vector<std::pair<TenantId, JobId>> event_owner_;  // tenant of each event's job
  std::map<uint32_t, std::vector<std::pair<int64_t, int64_t>>> price_history_;  // pool → (t, µ)
  // Each pool's GPUs by state after every cycle that changed them: pool → (time µs, usage), the
  // last kUsagePoints.
  std::map<uint32_t, std::deque<std::pair<int64_t, PoolUsage>>> usage_history_;
  static constexpr size_t kUsagePoints = 20000;
  void SampleUsageLocked();
  // Jobs not finished yet, by id, and how many finished in each state: reads of active jobs,
  // the market and /metrics walk these, never the whole history.
  void RefreshUnfinishedLocked();
  std::set<uint32_t> unfinished_;
  // Finished jobs whose output is still kept, by when they finished (µs): a tick removes the
  // output of those past ServerConfig::output_retention.
  std::set<std::pair<int64_t, uint32_t>> output_kept_;
  void RemoveExpiredOutputLocked(Timestamp now);
  Timestamp next_output_sweep_;  // Tick removes expired output once a minute
  size_t jobs_indexed_ = 0;      // jobs ever seen by RefreshUnfinishedLocked
  std::map<std::string, int64_t> finished_;
  Result<std::string> JobsLocked(const Caller& caller, const std::map<std::string, std::string>& q,
                                 std::string* next);
  int64_t preemptions_ = 0;
  std::atomic<int64_t> replayed_{0};
  int64_t cycles_ = 0;
  std::vector<int64_t> cycle_ns_buckets_;  // histogram counts
  int64_t cycle_ns_sum_ = 0;
  SteadyTicker ticker_;
};

}  // namespace rsv::server
