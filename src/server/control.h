// server/control: the control plane's state behind the HTTP API. Owns the Scheduler, the
// tenants' tokens, the event history and price history, and the durable command log: a
// mutation is applied to the scheduler, appended to the Store (group-committed) and only then
// acknowledged; restart replays the log through the same Apply. Reads run under the same lock.
// Knows nothing of HTTP; JSON appears only as strings at this boundary.
#pragma once

#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "common/clock.h"
#include "scheduler/scheduler.h"
#include "store/store.h"

namespace rsv::server {

// Who is calling: the operator (admin) or one tenant.
struct Caller {
  bool admin = false;
  TenantId tenant;
  std::string tenant_name;
};

struct ServerConfig {
  std::vector<PoolConfig> pools;
  struct NodeDecl {
    std::string name, pool, topology;
    int32_t gpus = 0;
  };
  std::vector<NodeDecl> nodes;
  Duration tick = Duration::Seconds(1);
};
// JSON config: {"pools": [...], "nodes": [...], "tick": "1s"}; errors name the field.
Result<ServerConfig> ParseServerConfig(const std::string& json_text);

// A reply body (JSON) and HTTP status; errors are rendered by the API layer.
struct Reply {
  int status = 200;
  std::string body;
};

class ControlPlane {
 public:
  ControlPlane(ServerConfig config, std::unique_ptr<Store> store, const Clock* clock);
  ~ControlPlane();

  // Loads pools and nodes from the config, then replays the command log.
  Status Start();

  // Applies a mutation now and calls `done` once it is durable (or refused: nothing changes).
  void Execute(const std::string& kind, const std::string& body,
               std::function<void(Result<Reply>)> done);
  // One scheduling cycle at the clock's now; logged if it decided anything.
  void Tick();

  // Tokens: the caller a bearer token belongs to, if any.
  std::optional<Caller> Authenticate(const std::string& token);
  bool HasAdmin();

  // Reads (JSON text), scoped to the caller.
  Result<std::string> Read(const std::string& what, const Caller& caller,
                           const std::map<std::string, std::string>& query);
  // Events after `since` visible to the caller, as a JSON array, and the last seq.
  std::string EventsSince(int64_t since, const Caller& caller, int64_t* last);
  // Long-poll: calls `reply` (once) with the events after `since` as soon as there are any the
  // caller may see, or with none at `deadline`.
  void WaitForEvents(int64_t since, const Caller& caller, Timestamp deadline,
                     std::function<void(std::string events, int64_t last)> reply);
  std::string Metrics();

  // Called by the API layer to build commands: resolves names under the lock.
  std::optional<TenantId> FindTenant(const std::string& name);
  int64_t commands_replayed() const { return replayed_; }

 private:
  Result<Reply> Apply(const Command& c, bool replay);
  void DrainEvents();
  std::string EventsLocked(int64_t since, const Caller& caller, int64_t* last, bool* any) const;
  // Waiters whose events arrived or whose time ran out; the caller runs them after unlocking.
  std::vector<std::function<void()>> TakeReadyWaiters(Timestamp now);
  struct Waiter {
    int64_t since;
    Caller caller;
    Timestamp deadline;
    std::function<void(std::string, int64_t)> reply;
  };
  std::vector<Waiter> waiters_;

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
  int64_t preemptions_ = 0;
  int64_t replayed_ = 0;
  int64_t cycles_ = 0;
  std::vector<int64_t> cycle_ns_buckets_;  // histogram counts
  int64_t cycle_ns_sum_ = 0;
  SteadyTicker ticker_;
};

}  // namespace rsv::server
