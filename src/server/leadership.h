// server/leadership: which of the servers on one store leads (docs/ha.md). Each server runs one
// loop: a standby follows the log (woken by the store's append hint, polling as the guarantee)
// and takes the lease once it is free or expired, then leads; the leader renews the lease and
// steps down when it finds another epoch, or when it could not renew for a whole lease.
#pragma once

#include <atomic>
#include <condition_variable>
#include <functional>
#include <mutex>
#include <string>
#include <thread>

#include "common/clock.h"
#include "server/control.h"

namespace rsv::server {

struct LeadershipOptions {
  std::string holder;   // this server's id among those on the store (a restart keeps it)
  std::string address;  // its API's URL, given to clients and agents that reach a standby
  Duration lease = Duration::Seconds(5);
  Duration renew_every = Duration::Seconds(1);
  Duration poll = Duration::Millis(200);  // a standby reads the log at least this often
};

class Leadership {
 public:
  // `say` gets one line per change of role (stderr in `reservoir server`).
  Leadership(ControlPlane* control, LeadershipOptions options, const Clock* clock,
             std::function<void(const std::string&)> say);
  // Stops the loop and the control plane's writes (each queued one is answered); a leader then
  // lets its lease go so another may take over at once. Before the HTTP server goes.
  ~Leadership();

  // Tries for the lease once: leads at once when it is free (or this holder's, from a process
  // that is gone). Then starts the loop on a thread of its own. Fails, starting nothing, when
  // another live server leads under this server's name.
  Status Start();
  void Stop();
  // The epoch of the lease this server last took (0: never).
  int64_t epoch() const { return epoch_.load(); }

 private:
  void Run();
  bool TryToLead();
  std::string duplicate_;  // set when another live server leads under this one's name

  ControlPlane* control_;
  LeadershipOptions options_;
  const Clock* clock_;
  std::function<void(const std::string&)> say_;
  std::atomic<int64_t> epoch_{0};
  Timestamp renewed_;  // when the last renewal that succeeded was made
  std::mutex mu_;
  std::condition_variable cv_;
  bool stopping_ = false;
  std::thread thread_;
};

}  // namespace rsv::server
