// store: durable storage of the control plane's command log and of its leadership lease. Every
// state change the server accepts is a Command appended here before it is acknowledged; on
// restart the log is replayed through the scheduler, which rebuilds the whole state
// deterministically, and a standby tails it to keep the same state warm. The lease (docs/ha.md)
// lets one server of several lead; its epoch fences every append. The Store interface is what
// SQLite and PostgreSQL implement; store_contract_test.cc is the suite both pass. Depends on
// common/ only; never on scheduler/ or server/.
#pragma once

#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
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

// The leadership lease: one row, held by one server until it expires by the store's clock (so
// the servers' own clocks may disagree). Each takeover increments the epoch, the fencing token
// the holder's appends are checked against (docs/ha.md).
struct Lease {
  int64_t epoch = 0;    // 0: never taken
  std::string holder;   // the holding process's id
  std::string address;  // where its API is reached (its advertised URL)
  bool live = false;    // held and not expired, now
};

class Store {
 public:
  virtual ~Store() = default;
  // Appends the commands in one transaction and assigns their seqs (the next after the log's
  // last); returns once they are durable. On error nothing was appended. Once this store took
  // the lease (TakeLease), an append whose epoch is no longer the lease's fails with Deposed()
  // and appends nothing: the check and the insert are one transaction.
  virtual Status Append(std::vector<Command>& commands) = 0;
  // Calls fn for every command with seq > `after`, in seq order; stops at the first error fn
  // returns.
  virtual Status ForEachAfter(int64_t after,
                              const std::function<Status(const Command&)>& fn) const = 0;
  Status ForEach(const std::function<Status(const Command&)>& fn) const {
    return ForEachAfter(0, fn);
  }
  virtual Result<int64_t> LastSeq() const = 0;

  virtual Result<Lease> ReadLease() const = 0;
  // Takes the lease for `ttl` when it is free or expired (or already `holder`'s): returns the new
  // epoch, which fences this store's appends from now on; 0 when another holder's lease is live.
  virtual Result<int64_t> TakeLease(const std::string& holder, const std::string& address,
                                    Duration ttl) = 0;
  // Extends the lease of `epoch` by `ttl` from now; false when the lease has another epoch (this
  // holder was deposed).
  virtual Result<bool> RenewLease(int64_t epoch, Duration ttl) = 0;
  // Waits up to `timeout` for a hint that another process appended (PostgreSQL: NOTIFY; SQLite:
  // none, it sleeps). Only a hint: a follower reads the log after it either way.
  virtual void WaitForAppend(Duration timeout) = 0;

  // --- Snapshots (docs/ha.md, "Snapshots") ---
  // Stores part `part` of the snapshot of the state after command `seq`, keyed by this store's
  // lease epoch too (two leaders' parts never mix). Each part is its own transaction, so appends
  // go on between parts; nothing reads them before CommitSnapshot. AlreadyExists when a
  // snapshot of `seq` is committed: it is never written again.
  virtual Status SaveSnapshotPart(int64_t seq, int32_t part, std::string_view data) = 0;
  // Makes the snapshot of `seq` (this epoch's parts 0 .. parts-1) the newest, in one transaction
  // fenced like Append, dropping the snapshots older than the previous newest. Then compacts in
  // short transactions: the commands up to the previous newest snapshot's seq and the parts no
  // snapshot uses are deleted. The log so always reaches back to the older of the two snapshots
  // kept, and a standby behind the newest one still follows. Returns the seq the log was
  // compacted through (0: nothing was deleted).
  virtual Result<int64_t> CommitSnapshot(int64_t seq, int32_t parts) = 0;
  // The newest committed snapshot into `data`; returns its seq (0: there is none).
  virtual Result<int64_t> LatestSnapshot(std::string* data) const = 0;
};

// Snapshots are stored in parts of about this many bytes: small enough that an append waits
// little behind one.
inline constexpr size_t kSnapshotPartBytes = size_t{1} << 20;

// The error an append of a deposed leader fails with (its epoch is no longer the lease's).
Status DeposedError(int64_t epoch, int64_t current);
bool Deposed(const Status& s);

// SQLite in WAL mode with synchronous=FULL: a committed append survives a crash of the process
// or the machine. Creates the file and schema if missing. Several processes may open one file
// (on one host): the lease picks which of them writes.
Result<std::unique_ptr<Store>> OpenSqliteStore(const std::string& path);
// PostgreSQL through libpq: `url` is a libpq connection URI ("postgresql://user@host/db",
// "postgresql:///db?host=/run/postgresql"). Creates the schema if missing. A lost connection is
// re-established at the next call.
Result<std::unique_ptr<Store>> OpenPostgresStore(const std::string& url);
// PostgreSQL for a "postgresql://" or "postgres://" URL, otherwise SQLite at that path.
Result<std::unique_ptr<Store>> OpenStore(const std::string& db);
bool IsPostgresUrl(const std::string& db);

// Batches appends from many threads into one transaction (one fsync for many requests). Submit
// returns at once; `done` runs on the committer thread after the batch is durable (or failed).
// Once an append failed, every later command fails with the same error, unwritten.
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
  Status failed_;  // the first failed append's error (committer thread only)
  std::thread thread_;
};

}  // namespace rsv
