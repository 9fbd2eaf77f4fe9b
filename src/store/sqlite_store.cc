#include <sqlite3.h>

#include "store/store.h"

namespace rsv {
namespace {

Status SqliteError(sqlite3* db, const std::string& what) {
  return Status(Code::kUnavailable, what + ": " + (db ? sqlite3_errmsg(db) : "no database"));
}

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
        "  body TEXT NOT NULL);";
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
    Result<int64_t> last = LastSeq();
    if (!last.ok()) return last.status();
    last_seq_ = *last;
    return Status::Ok();
  }

  Status Append(std::vector<Command>& commands) override {
    if (commands.empty()) return Status::Ok();
    if (sqlite3_exec(db_, "BEGIN IMMEDIATE", nullptr, nullptr, nullptr) != SQLITE_OK) {
      return SqliteError(db_, "begin");
    }
    int64_t seq = last_seq_;
    for (Command& c : commands) {
      c.seq = ++seq;
      sqlite3_reset(insert_);
      sqlite3_bind_int64(insert_, 1, c.seq);
      sqlite3_bind_int64(insert_, 2, c.at.micros());
      sqlite3_bind_text(insert_, 3, c.kind.data(), static_cast<int>(c.kind.size()), SQLITE_STATIC);
      sqlite3_bind_text(insert_, 4, c.body.data(), static_cast<int>(c.body.size()), SQLITE_STATIC);
      if (sqlite3_step(insert_) != SQLITE_DONE) {
        Status s = SqliteError(db_, "insert");
        sqlite3_exec(db_, "ROLLBACK", nullptr, nullptr, nullptr);
        for (Command& r : commands) r.seq = 0;
        return s;
      }
    }
    if (sqlite3_exec(db_, "COMMIT", nullptr, nullptr, nullptr) != SQLITE_OK) {
      Status s = SqliteError(db_, "commit");
      sqlite3_exec(db_, "ROLLBACK", nullptr, nullptr, nullptr);
      for (Command& r : commands) r.seq = 0;
      return s;
    }
    last_seq_ = seq;
    return Status::Ok();
  }

  Status ForEach(const std::function<Status(const Command&)>& fn) const override {
    sqlite3_stmt* st = nullptr;
    if (sqlite3_prepare_v2(db_, "SELECT seq, at_us, kind, body FROM commands ORDER BY seq", -1, &st,
                           nullptr) != SQLITE_OK) {
      return SqliteError(db_, "preparing select");
    }
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
    sqlite3_stmt* st = nullptr;
    if (sqlite3_prepare_v2(db_, "SELECT COALESCE(MAX(seq), 0) FROM commands", -1, &st, nullptr) !=
        SQLITE_OK) {
      return SqliteError(db_, "preparing max");
    }
    int64_t v = 0;
    if (sqlite3_step(st) == SQLITE_ROW) v = sqlite3_column_int64(st, 0);
    sqlite3_finalize(st);
    return v;
  }

 private:
  sqlite3* db_;
  sqlite3_stmt* insert_ = nullptr;
  int64_t last_seq_ = 0;
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

GroupCommitter::GroupCommitter(Store* store) : store_(store), thread_([this] { Run(); }) {}

GroupCommitter::~GroupCommitter() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stopping_ = true;
  }
  cv_.notify_all();
  thread_.join();
}

void GroupCommitter::Submit(Command command, std::function<void(Status, int64_t)> done) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    queue_.push_back(Pending{std::move(command), std::move(done)});
  }
  cv_.notify_one();
}

void GroupCommitter::Run() {
  while (true) {
    std::deque<Pending> batch;
    {
      std::unique_lock<std::mutex> lock(mu_);
      cv_.wait(lock, [&] { return stopping_ || !queue_.empty(); });
      if (queue_.empty() && stopping_) return;
      batch.swap(queue_);
    }
    std::vector<Command> commands;
    commands.reserve(batch.size());
    for (Pending& p : batch) commands.push_back(std::move(p.command));
    Status s = store_->Append(commands);
    ++batches_;
    for (size_t i = 0; i < batch.size(); ++i) {
      if (batch[i].done) batch[i].done(s, commands[i].seq);
    }
  }
}

}  // namespace rsv
