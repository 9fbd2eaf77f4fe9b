// store: durable storage of the control plane's command log. Every state change the server
// accepts is a Command appended here before it is acknowledged; on restart the log is replayed
// through the scheduler, which rebuilds the whole state deterministically. The Store interface
// is what SQLite (and later PostgreSQL) implement; store_contract_test.cc is the suite every
// implementation must pass. Depends on common/ only; never on scheduler/ or server/.
#pragma once

#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "common/status.h"
#include "common/units.h"

namespace rsv {

struct Command {
  int64_t seq = 0;  // assigned by the store, 1, 2, 3, ... in commit order
  Timestamp at;     // the scheduler time the command was applied at
  std::string kind;
  std::string body;  // JSON
};

class Store {
 public:
  virtual ~Store() = default;
  // Appends the commands in one transaction and assigns their seqs; returns once they are
  // durable. On error nothing was appended.
  virtual Status Append(std::vector<Command>& commands) = 0;
  // Calls fn for every command in seq order; stops at the first error fn returns.
  virtual Status ForEach(const std::function<Status(const Command&)>& fn) const = 0;
  virtual Result<int64_t> LastSeq() const = 0;
};

// SQLite in WAL mode with synchronous=FULL: a committed append survives a crash of the process
// or the machine. Creates the file and schema if missing.
Result<std::unique_ptr<Store>> OpenSqliteStore(const std::string& path);

// Batches appends from many threads into one transaction (one fsync for many requests). Submit
// returns at once; `done` runs on the committer thread after the batch is durable (or failed).
class GroupCommitter {
 public:
  explicit GroupCommitter(Store* store);
  ~GroupCommitter();  // commits what is queued, then stops
  void Submit(Command command, std::function<void(Status, int64_t seq)> done);

 private:
  void Run();
  struct Pending {
    Command command;
    std::function<void(Status, int64_t)> done;
  };
  Store* store_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<Pending> queue_;
  bool stopping_ = false;
  int64_t batches_ = 0;
  std::thread thread_;
};

}  // namespace rsv
