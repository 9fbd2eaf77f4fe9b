#include <sqlite3.h>

#include <initializer_list>

#include "common/clock.h"
#include "store/store.h"

namespace rsv {
namespace {

Status SqliteError(sqlite3* db, const std::string& what) {
  return Status(Code::kUnavailable, what + ": " + (db ? sqlite3_errmsg(db) : "no database"));
}

// The store's clock for the lease, in µs since the epoch (julianday is exact to the ms).
constexpr char kNowUs[] = "CAST(ROUND((julianday('now') - 2440587.5) * 86400000000.0) AS INTEGER)";

class SqliteStore final : public Store {
 public:
  explicit SqliteStore(sqlite3* db) : db_(db) {}
  ~SqliteStore() override {
    if (insert_) sqlite3_finalize(insert_);
    sqlite3_close(db_);
  }

  Status Init() {
    const char* schema =
        "PRAGMA journal_mode=WAL;"
        "PRAGMA synchronous=FULL;"
        "CREATE TABLE IF NOT EXISTS commands ("
        "  seq INTEGER PRIMARY KEY,"
        "  at_us INTEGER NOT NULL,"
        "  kind TEXT NOT NULL,"
        "  body TEXT NOT NULL);"
        "CREATE TABLE IF NOT EXISTS lease ("
        "  id INTEGER PRIMARY KEY CHECK (id = 1),"
        "  epoch INTEGER NOT NULL,"
        "  holder TEXT NOT NULL,"
        "  address TEXT NOT NULL,"
        "  expires_us INTEGER NOT NULL);"
        "INSERT OR IGNORE INTO lease VALUES (1, 0, '', '', 0);"
        "CREATE TABLE IF NOT EXISTS snapshots ("
        "  seq INTEGER PRIMARY KEY,"
        "  parts INTEGER NOT NULL,"
        "  epoch INTEGER NOT NULL,"
        "  taken_us INTEGER NOT NULL);"
        "CREATE TABLE IF NOT EXISTS snapshot_parts ("
        "  seq INTEGER NOT NULL,"
        "  epoch INTEGER NOT NULL,"
        "  part INTEGER NOT NULL,"
        "  data BLOB NOT NULL,"
        "  PRIMARY KEY (seq, epoch, part));";
    char* err = nullptr;
    if (sqlite3_exec(db_, schema, nullptr, nullptr, &err) != SQLITE_OK) {
      std::string msg = err ? err : "unknown";
      sqlite3_free(err);
      return Status(Code::kUnavailable, "creating the schema: " + msg);
    }
    if (sqlite3_prepare_v2(db_, "INSERT INTO commands(seq, at_us, kind, body) VALUES(?,?,?,?)", -1,
                           &insert_, nullptr) != SQLITE_OK) {
      return SqliteError(db_, "preparing insert");
    }
    return Status::Ok();
  }

  Status Append(std::vector<Command>& commands) override {
    if (commands.empty()) return Status::Ok();
    std::lock_guard<std::mutex> lock(mu_);
    // IMMEDIATE takes the write lock first: the lease and the last seq cannot change under us.
    if (sqlite3_exec(db_, "BEGIN IMMEDIATE", nullptr, nullptr, nullptr) != SQLITE_OK) {
      return SqliteError(db_, "begin");
    }
    auto fail = [&](Status s) {
      sqlite3_exec(db_, "ROLLBACK", nullptr, nullptr, nullptr);
      for (Command& r : commands) r.seq = 0;
      return s;
    };
    if (fence_ > 0) {
      Result<int64_t> epoch = Int("SELECT epoch FROM lease WHERE id = 1");
      if (!epoch.ok()) return fail(epoch.status());
      if (*epoch != fence_) return fail(DeposedError(fence_, *epoch));
    }
    Result<int64_t> last = Int("SELECT COALESCE(MAX(seq), 0) FROM commands");
    if (!last.ok()) return fail(last.status());
    int64_t seq = *last;
    for (Command& c : commands) {
      c.seq = ++seq;
      sqlite3_reset(insert_);
      sqlite3_bind_int64(insert_, 1, c.seq);
      sqlite3_bind_int64(insert_, 2, c.at.micros());
      sqlite3_bind_text(insert_, 3, c.kind.data(), static_cast<int>(c.kind.size()), SQLITE_STATIC);
      sqlite3_bind_text(insert_, 4, c.body.data(), static_cast<int>(c.body.size()), SQLITE_STATIC);
      if (sqlite3_step(insert_) != SQLITE_DONE) return fail(SqliteError(db_, "insert"));
    }
    if (sqlite3_exec(db_, "COMMIT", nullptr, nullptr, nullptr) != SQLITE_OK) {
      return fail(SqliteError(db_, "commit"));
    }
    return Status::Ok();
  }

  Status ForEachAfter(int64_t after,
                      const std::function<Status(const Command&)>& fn) const override {
    std::lock_guard<std::mutex> lock(mu_);
    sqlite3_stmt* st = nullptr;
    if (sqlite3_prepare_v2(db_,
                           "SELECT seq, at_us, kind, body FROM commands WHERE seq > ? ORDER BY seq",
                           -1, &st, nullptr) != SQLITE_OK) {
      return SqliteError(db_, "preparing select");
    }
    sqlite3_bind_int64(st, 1, after);
    Status out;
    int rc;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
      Command c;
      c.seq = sqlite3_column_int64(st, 0);
      c.at = Timestamp::FromMicros(sqlite3_column_int64(st, 1));
      c.kind = reinterpret_cast<const char*>(sqlite3_column_text(st, 2));
      const unsigned char* body = sqlite3_column_text(st, 3);
      c.body.assign(reinterpret_cast<const char*>(body), sqlite3_column_bytes(st, 3));
      out = fn(c);
      if (!out.ok()) break;
    }
    if (out.ok() && rc != SQLITE_DONE && rc != SQLITE_ROW) out = SqliteError(db_, "select");
    sqlite3_finalize(st);
    return out;
  }

  Result<int64_t> LastSeq() const override {
    std::lock_guard<std::mutex> lock(mu_);
    return Int("SELECT COALESCE(MAX(seq), 0) FROM commands");
  }

  Result<Lease> ReadLease() const override {
    std::lock_guard<std::mutex> lock(mu_);
    sqlite3_stmt* st = nullptr;
    const std::string q =
        std::string("SELECT epoch, holder, address, expires_us > ") + kNowUs + " FROM lease";
    if (sqlite3_prepare_v2(db_, q.c_str(), -1, &st, nullptr) != SQLITE_OK) {
      return SqliteError(db_, "preparing lease read");
    }
    Lease l;
    if (sqlite3_step(st) == SQLITE_ROW) {
      l.epoch = sqlite3_column_int64(st, 0);
      l.holder = reinterpret_cast<const char*>(sqlite3_column_text(st, 1));
      l.address = reinterpret_cast<const char*>(sqlite3_column_text(st, 2));
      l.live = sqlite3_column_int64(st, 3) != 0;
    }
    sqlite3_finalize(st);
    return l;
  }

  Result<int64_t> TakeLease(const std::string& holder, const std::string& address,
                            Duration ttl) override {
    std::lock_guard<std::mutex> lock(mu_);
    const std::string q = std::string(
                              "UPDATE lease SET epoch = epoch + 1, holder = ?, address = ?, "
                              "expires_us = ") +
                          kNowUs + " + ? WHERE id = 1 AND (expires_us <= " + kNowUs +
                          " OR holder = ?) RETURNING epoch";
    sqlite3_stmt* st = nullptr;
    if (sqlite3_prepare_v2(db_, q.c_str(), -1, &st, nullptr) != SQLITE_OK) {
      return SqliteError(db_, "preparing the lease update");
    }
    sqlite3_bind_text(st, 1, holder.data(), static_cast<int>(holder.size()), SQLITE_STATIC);
    sqlite3_bind_text(st, 2, address.data(), static_cast<int>(address.size()), SQLITE_STATIC);
    sqlite3_bind_int64(st, 3, ttl.micros());
    sqlite3_bind_text(st, 4, holder.data(), static_cast<int>(holder.size()), SQLITE_STATIC);
    const int rc = sqlite3_step(st);
    const int64_t epoch = rc == SQLITE_ROW ? sqlite3_column_int64(st, 0) : 0;
    sqlite3_finalize(st);
    if (rc != SQLITE_ROW && rc != SQLITE_DONE) return SqliteError(db_, "taking the lease");
    if (epoch > 0) fence_ = epoch;  // 0: another holder's lease is live
    return epoch;
  }

  Result<bool> RenewLease(int64_t epoch, Duration ttl) override {
    std::lock_guard<std::mutex> lock(mu_);
    const std::string q = std::string("UPDATE lease SET expires_us = ") + kNowUs +
                          " + ? WHERE id = 1 AND epoch = ? RETURNING epoch";
    sqlite3_stmt* st = nullptr;
    if (sqlite3_prepare_v2(db_, q.c_str(), -1, &st, nullptr) != SQLITE_OK) {
      return SqliteError(db_, "preparing lease renewal");
    }
    sqlite3_bind_int64(st, 1, ttl.micros());
    sqlite3_bind_int64(st, 2, epoch);
    int rc = sqlite3_step(st);
    sqlite3_finalize(st);
    if (rc != SQLITE_ROW && rc != SQLITE_DONE) return SqliteError(db_, "renewing the lease");
    return rc == SQLITE_ROW;
  }

  void WaitForAppend(Duration timeout) override { SleepFor(timeout); }

  Status SaveSnapshotPart(int64_t seq, int32_t part, std::string_view data) override {
    std::lock_guard<std::mutex> lock(mu_);
    sqlite3_stmt* st = nullptr;
    // Keyed by the writer's epoch too, so two leaders' parts never mix; a committed snapshot's
    // parts are never written again.
    if (sqlite3_prepare_v2(db_,
                           "INSERT OR REPLACE INTO snapshot_parts SELECT ?1, ?2, ?3, ?4 "
                           "WHERE NOT EXISTS (SELECT 1 FROM snapshots WHERE seq = ?1)",
                           -1, &st, nullptr) != SQLITE_OK) {
      return SqliteError(db_, "preparing a snapshot write");
    }
    sqlite3_bind_int64(st, 1, seq);
    sqlite3_bind_int64(st, 2, fence_);
    sqlite3_bind_int64(st, 3, part);
    sqlite3_bind_blob64(st, 4, data.data(), data.size(), SQLITE_STATIC);
    const int rc = sqlite3_step(st);
    sqlite3_finalize(st);
    if (rc != SQLITE_DONE) return SqliteError(db_, "writing a snapshot part");
    if (sqlite3_changes(db_) == 0) {
      return AlreadyExists("a snapshot of seq " + std::to_string(seq) + " is stored already");
    }
    // Copies the part into the database file now: otherwise the WAL grows by the whole snapshot
    // and the append whose commit crosses the checkpoint threshold copies it all, waiting.
    sqlite3_wal_checkpoint_v2(db_, nullptr, SQLITE_CHECKPOINT_PASSIVE, nullptr, nullptr);
    return Status::Ok();
  }

  Result<int64_t> CommitSnapshot(int64_t seq, int32_t parts) override {
    Result<int64_t> prev = MakeNewest(seq, parts);
    if (!prev.ok()) return prev;
    // Then the old log and parts go, a little at a time: each batch is a short transaction, so
    // appends wait behind none of them for long (deleting a part reads its whole chain of
    // pages). What a crash leaves undeleted goes at the next compaction.
    auto batch = [&](const char* q, int64_t arg) -> Result<int64_t> {
      std::lock_guard<std::mutex> lock(mu_);
      Result<int64_t> r = Int(q, {arg});
      if (!r.ok()) return r.status();
      const int64_t n = sqlite3_changes(db_);
      sqlite3_wal_checkpoint_v2(db_, nullptr, SQLITE_CHECKPOINT_PASSIVE, nullptr, nullptr);
      return n;
    };
    for (const auto& [q, arg] :
         {std::pair{"DELETE FROM commands WHERE seq IN (SELECT seq FROM commands WHERE seq <= ?1 "
                    "ORDER BY seq LIMIT 10000)",
                    *prev},
          std::pair{
              "DELETE FROM snapshot_parts WHERE rowid IN (SELECT p.rowid FROM snapshot_parts p "
              "WHERE NOT EXISTS (SELECT 1 FROM snapshots s WHERE s.seq = p.seq AND "
              "s.epoch = p.epoch) LIMIT 4)",
              seq}}) {
      Result<int64_t> n = int64_t{1};
      while (n.ok() && *n > 0) n = batch(q, arg);
      if (!n.ok()) return n.status();
    }
    return prev;
  }

 private:
  // The snapshot of `seq` becomes the newest (fenced); returns the previous newest's seq.
  Result<int64_t> MakeNewest(int64_t seq, int32_t parts) {
    std::lock_guard<std::mutex> lock(mu_);
    if (sqlite3_exec(db_, "BEGIN IMMEDIATE", nullptr, nullptr, nullptr) != SQLITE_OK) {
      return SqliteError(db_, "begin");
    }
    auto fail = [&](Status s) {
      sqlite3_exec(db_, "ROLLBACK", nullptr, nullptr, nullptr);
      return s;
    };
    if (fence_ > 0) {
      Result<int64_t> epoch = Int("SELECT epoch FROM lease WHERE id = 1");
      if (!epoch.ok()) return fail(epoch.status());
      if (*epoch != fence_) return fail(DeposedError(fence_, *epoch));
    }
    Result<int64_t> stored =
        Int("SELECT COUNT(*) FROM snapshot_parts WHERE seq = ?1 AND epoch = ?2", {seq, fence_});
    Result<int64_t> last = Int("SELECT COALESCE(MAX(seq), 0) FROM commands");
    Result<int64_t> prev = Int("SELECT COALESCE(MAX(seq), 0) FROM snapshots WHERE seq < ?", {seq});
    for (const auto* r : {&stored, &last, &prev}) {
      if (!r->ok()) return fail(r->status());
    }
    if (*stored != parts || seq > *last) {
      return fail(Internal("snapshot " + std::to_string(seq) + ": " + std::to_string(*stored) +
                           " of " + std::to_string(parts) + " parts stored, the log ends at " +
                           std::to_string(*last)));
    }
    const std::string now = std::string("(") + kNowUs + ")";
    for (const std::string& q : {"INSERT INTO snapshots VALUES(?1, ?2, ?4, " + now + ")",
                                 std::string("DELETE FROM snapshots WHERE seq < ?3")}) {
      Result<int64_t> r = Int(q.c_str(), {seq, parts, *prev, fence_});
      if (!r.ok()) return fail(r.status());
    }
    if (sqlite3_exec(db_, "COMMIT", nullptr, nullptr, nullptr) != SQLITE_OK) {
      return fail(SqliteError(db_, "commit"));
    }
    return *prev;
  }

 public:
  Result<int64_t> LatestSnapshot(std::string* data) const override {
    std::lock_guard<std::mutex> lock(mu_);
    data->clear();
    // One read transaction: a compaction committed meanwhile cannot remove parts under us.
    if (sqlite3_exec(db_, "BEGIN", nullptr, nullptr, nullptr) != SQLITE_OK) {
      return SqliteError(db_, "begin");
    }
    auto end = [&](Result<int64_t> r) {
      sqlite3_exec(db_, "COMMIT", nullptr, nullptr, nullptr);
      return r;
    };
    Result<int64_t> seq = Int("SELECT COALESCE(MAX(seq), 0) FROM snapshots");
    if (!seq.ok() || *seq == 0) return end(seq);
    Result<int64_t> parts = Int("SELECT parts FROM snapshots WHERE seq = ?", {*seq});
    Result<int64_t> epoch = Int("SELECT epoch FROM snapshots WHERE seq = ?", {*seq});
    if (!parts.ok()) return end(parts.status());
    if (!epoch.ok()) return end(epoch.status());
    sqlite3_stmt* st = nullptr;
    if (sqlite3_prepare_v2(db_,
                           "SELECT part, data FROM snapshot_parts WHERE seq = ? AND epoch = ? "
                           "ORDER BY part",
                           -1, &st, nullptr) != SQLITE_OK) {
      return end(SqliteError(db_, "preparing a snapshot read"));
    }
    sqlite3_bind_int64(st, 1, *seq);
    sqlite3_bind_int64(st, 2, *epoch);
    int64_t next = 0;
    int rc;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW && sqlite3_column_int64(st, 0) == next) {
      data->append(static_cast<const char*>(sqlite3_column_blob(st, 1)),
                   static_cast<size_t>(sqlite3_column_bytes(st, 1)));
      ++next;
    }
    sqlite3_finalize(st);
    if (rc != SQLITE_DONE || next != *parts) {
      return end(Internal("snapshot " + std::to_string(*seq) +
                          ": parts are missing from the store (delete it, DELETE FROM snapshots "
                          "WHERE seq = " +
                          std::to_string(*seq) + ", to start from the snapshot before it)"));
    }
    return end(seq);
  }

 private:
  // One integer from a query with integer parameters ?1, ?2, ... (0 when it returns no row).
  Result<int64_t> Int(const char* q, std::initializer_list<int64_t> params = {}) const {
    sqlite3_stmt* st = nullptr;
    if (sqlite3_prepare_v2(db_, q, -1, &st, nullptr) != SQLITE_OK) {
      return SqliteError(db_, "preparing a read");
    }
    int i = 0;
    for (int64_t p : params) {
      if (++i <= sqlite3_bind_parameter_count(st)) sqlite3_bind_int64(st, i, p);
    }
    int64_t v = 0;
    int rc = sqlite3_step(st);
    if (rc == SQLITE_ROW) v = sqlite3_column_int64(st, 0);
    sqlite3_finalize(st);
    if (rc != SQLITE_ROW && rc != SQLITE_DONE) return SqliteError(db_, "a read");
    return v;
  }
  mutable std::mutex mu_;  // one connection: one transaction at a time
  sqlite3* db_;
  sqlite3_stmt* insert_ = nullptr;
  int64_t fence_ = 0;  // the epoch this store's appends are checked against (0: none)
};

}  // namespace

Result<std::unique_ptr<Store>> OpenSqliteStore(const std::string& path) {
  sqlite3* db = nullptr;
  if (sqlite3_open_v2(path.c_str(), &db,
                      SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_FULLMUTEX,
                      nullptr) != SQLITE_OK) {
    Status s =
        InvalidArgument("db", "cannot open '" + path + "': " + (db ? sqlite3_errmsg(db) : ""));
    sqlite3_close(db);
    return s;
  }
  sqlite3_busy_timeout(db, 5000);
  auto store = std::make_unique<SqliteStore>(db);
  RSV_RETURN_IF_ERROR(store->Init());
  return std::unique_ptr<Store>(std::move(store));
}

}  // namespace rsv
