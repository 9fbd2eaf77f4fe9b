// The command log and the lease on PostgreSQL (libpq). One connection serves appends, reads and
// the lease (a mutex keeps one transaction at a time on it); a second one, opened on first use,
// LISTENs for the NOTIFY every append sends. The lease expires by the database's clock.
#include <libpq-fe.h>
#include <poll.h>

#include <cstdlib>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "store/store.h"

namespace rsv {
namespace {

struct ResultDeleter {
  void operator()(PGresult* r) const { PQclear(r); }
};
using PgResult = std::unique_ptr<PGresult, ResultDeleter>;

constexpr int kRowsPerInsert = 5000;  // 4 parameters a row, under libpq's 65,535
constexpr int kRowsPerRead = 10000;   // a follower reads the log in pages of this many

// Connects with timeouts, so a database that stops answering (its host gone, a dropped link)
// fails calls within seconds instead of the TCP stack's minutes: the leader then steps down
// before its lease could be taken over (docs/ha.md). Settings in the URL win.
PGconn* Connect(const std::string& url) {
  const char* keys[] = {"connect_timeout",     "tcp_user_timeout", "keepalives", "keepalives_idle",
                        "keepalives_interval", "keepalives_count", "dbname",     nullptr};
  const char* values[] = {"5", "5000", "1", "5", "2", "2", url.c_str(), nullptr};
  return PQconnectdbParams(keys, values, /*expand_dbname=*/1);
}

class PostgresStore final : public Store {
 public:
  explicit PostgresStore(std::string url) : url_(std::move(url)) {}
  ~PostgresStore() override {
    if (conn_) PQfinish(conn_);
    if (listen_) PQfinish(listen_);
  }

  Status Init() {
    std::lock_guard<std::mutex> lock(mu_);
    RSV_RETURN_IF_ERROR(ConnectLocked());
    // Two servers starting on an empty database at once: the advisory lock (held to the commit)
    // makes one create the schema while the other waits (CREATE ... IF NOT EXISTS alone can
    // still collide).
    return Exec(
        "BEGIN;"
        "SELECT pg_advisory_xact_lock(7428577);"
        "CREATE TABLE IF NOT EXISTS commands ("
        "  seq BIGINT PRIMARY KEY,"
        "  at_us BIGINT NOT NULL,"
        "  kind TEXT NOT NULL,"
        "  body TEXT NOT NULL);"
        "CREATE TABLE IF NOT EXISTS lease ("
        "  id INT PRIMARY KEY CHECK (id = 1),"
        "  epoch BIGINT NOT NULL,"
        "  holder TEXT NOT NULL,"
        "  address TEXT NOT NULL,"
        "  expires TIMESTAMPTZ NOT NULL);"
        "INSERT INTO lease VALUES (1, 0, '', '', '-infinity') ON CONFLICT DO NOTHING;"
        "CREATE TABLE IF NOT EXISTS snapshots ("
        "  seq BIGINT PRIMARY KEY,"
        "  parts INT NOT NULL,"
        "  epoch BIGINT NOT NULL,"
        "  taken TIMESTAMPTZ NOT NULL);"
        "CREATE TABLE IF NOT EXISTS snapshot_parts ("
        "  seq BIGINT NOT NULL,"
        "  epoch BIGINT NOT NULL,"
        "  part INT NOT NULL,"
        "  data BYTEA NOT NULL,"
        "  PRIMARY KEY (seq, epoch, part));"
        "COMMIT;",
        "creating the schema");
  }

  Status Append(std::vector<Command>& commands) override {
    if (commands.empty()) return Status::Ok();
    std::lock_guard<std::mutex> lock(mu_);
    RSV_RETURN_IF_ERROR(ConnectLocked());
    auto fail = [&](Status s) {
      PgResult(PQexec(conn_, "ROLLBACK"));
      for (Command& r : commands) r.seq = 0;
      return s;
    };
    RSV_RETURN_IF_ERROR(Exec("BEGIN", "begin"));
    // FOR SHARE: a takeover's update of the lease waits for this transaction, so an append
    // checked against the old epoch is committed before the new leader reads the log's tail.
    PgResult r(PQexec(conn_,
                      "SELECT epoch, (SELECT COALESCE(MAX(seq), 0) FROM commands) FROM lease "
                      "WHERE id = 1 FOR SHARE"));
    if (PQresultStatus(r.get()) != PGRES_TUPLES_OK || PQntuples(r.get()) != 1) {
      return fail(Error("reading the lease", r.get()));
    }
    const int64_t epoch = std::atoll(PQgetvalue(r.get(), 0, 0));
    int64_t seq = std::atoll(PQgetvalue(r.get(), 0, 1));
    if (fence_ > 0 && epoch != fence_) return fail(DeposedError(fence_, epoch));
    std::vector<std::string> text;
    for (size_t first = 0; first < commands.size(); first += kRowsPerInsert) {
      const size_t n = std::min(commands.size() - first, static_cast<size_t>(kRowsPerInsert));
      std::string q = "INSERT INTO commands(seq, at_us, kind, body) VALUES ";
      text.clear();
      text.reserve(n * 2);
      std::vector<const char*> values;
      values.reserve(n * 4);
      for (size_t i = 0; i < n; ++i) {
        Command& c = commands[first + i];
        c.seq = ++seq;
        const int p = static_cast<int>(i) * 4;
        q += (i ? ",($" : "($") + std::to_string(p + 1) + ",$" + std::to_string(p + 2) + ",$" +
             std::to_string(p + 3) + ",$" + std::to_string(p + 4) + ")";
        text.push_back(std::to_string(c.seq));
        text.push_back(std::to_string(c.at.micros()));
      }
      for (size_t i = 0; i < n; ++i) {
        const Command& c = commands[first + i];
        values.push_back(text[2 * i].c_str());
        values.push_back(text[2 * i + 1].c_str());
        values.push_back(c.kind.c_str());
        values.push_back(c.body.c_str());
      }
      PgResult ins(PQexecParams(conn_, q.c_str(), static_cast<int>(values.size()), nullptr,
                                values.data(), nullptr, nullptr, 0));
      if (PQresultStatus(ins.get()) != PGRES_COMMAND_OK) {
        return fail(Error("inserting commands", ins.get()));
      }
    }
    // The NOTIFY is delivered at the commit, to every follower listening.
    PgResult done(PQexec(conn_, "NOTIFY reservoir_log; COMMIT"));
    if (PQresultStatus(done.get()) != PGRES_COMMAND_OK) {
      return fail(Error("committing", done.get()));
    }
    return Status::Ok();
  }

  Status ForEachAfter(int64_t after,
                      const std::function<Status(const Command&)>& fn) const override {
    // In pages, so the connection is free between them (the lease is renewed on it).
    while (true) {
      PgResult page;
      {
        std::lock_guard<std::mutex> lock(mu_);
        RSV_RETURN_IF_ERROR(ConnectLocked());
        const std::string from = std::to_string(after);
        const std::string limit = std::to_string(kRowsPerRead);
        const char* params[] = {from.c_str(), limit.c_str()};
        page.reset(PQexecParams(conn_,
                                "SELECT seq, at_us, kind, body FROM commands WHERE seq > $1 "
                                "ORDER BY seq LIMIT $2",
                                2, nullptr, params, nullptr, nullptr, 0));
        if (PQresultStatus(page.get()) != PGRES_TUPLES_OK) {
          return Error("reading the log", page.get());
        }
      }
      const int rows = PQntuples(page.get());
      for (int i = 0; i < rows; ++i) {
        Command c;
        c.seq = std::atoll(PQgetvalue(page.get(), i, 0));
        c.at = Timestamp::FromMicros(std::atoll(PQgetvalue(page.get(), i, 1)));
        c.kind = PQgetvalue(page.get(), i, 2);
        c.body.assign(PQgetvalue(page.get(), i, 3), PQgetlength(page.get(), i, 3));
        RSV_RETURN_IF_ERROR(fn(c));
        after = c.seq;
      }
      if (rows < kRowsPerRead) return Status::Ok();
    }
  }

  Result<int64_t> LastSeq() const override {
    std::lock_guard<std::mutex> lock(mu_);
    RSV_RETURN_IF_ERROR(ConnectLocked());
    PgResult r(PQexec(conn_, "SELECT COALESCE(MAX(seq), 0) FROM commands"));
    if (PQresultStatus(r.get()) != PGRES_TUPLES_OK) return Error("reading the last seq", r.get());
    return static_cast<int64_t>(std::atoll(PQgetvalue(r.get(), 0, 0)));
  }

  Result<Lease> ReadLease() const override {
    std::lock_guard<std::mutex> lock(mu_);
    RSV_RETURN_IF_ERROR(ConnectLocked());
    PgResult r(PQexec(conn_, "SELECT epoch, holder, address, expires > now() FROM lease"));
    if (PQresultStatus(r.get()) != PGRES_TUPLES_OK || PQntuples(r.get()) != 1) {
      return Error("reading the lease", r.get());
    }
    Lease l;
    l.epoch = std::atoll(PQgetvalue(r.get(), 0, 0));
    l.holder = PQgetvalue(r.get(), 0, 1);
    l.address = PQgetvalue(r.get(), 0, 2);
    l.live = PQgetvalue(r.get(), 0, 3)[0] == 't';
    return l;
  }

  Result<int64_t> TakeLease(const std::string& holder, const std::string& address,
                            Duration ttl) override {
    std::lock_guard<std::mutex> lock(mu_);
    RSV_RETURN_IF_ERROR(ConnectLocked());
    const std::string us = std::to_string(ttl.micros());
    const char* params[] = {holder.c_str(), address.c_str(), us.c_str()};
    // clock_timestamp(), not now(): now() is the transaction's start, and the row lock may have
    // been waited for.
    PgResult r(PQexecParams(
        conn_,
        "UPDATE lease SET epoch = epoch + 1, holder = $1, address = $2, "
        "expires = clock_timestamp() + make_interval(secs => $3::bigint / 1e6) "
        "WHERE id = 1 AND (expires <= clock_timestamp() OR holder = $1) RETURNING epoch",
        3, nullptr, params, nullptr, nullptr, 0));
    if (PQresultStatus(r.get()) != PGRES_TUPLES_OK) return Error("taking the lease", r.get());
    if (PQntuples(r.get()) == 0) return int64_t{0};
    fence_ = std::atoll(PQgetvalue(r.get(), 0, 0));
    return fence_;
  }

  Result<bool> RenewLease(int64_t epoch, Duration ttl) override {
    std::lock_guard<std::mutex> lock(mu_);
    RSV_RETURN_IF_ERROR(ConnectLocked());
    const std::string us = std::to_string(ttl.micros());
    const std::string e = std::to_string(epoch);
    const char* params[] = {us.c_str(), e.c_str()};
    PgResult r(PQexecParams(conn_,
                            "UPDATE lease SET expires = clock_timestamp() + "
                            "make_interval(secs => $1::bigint / 1e6) WHERE id = 1 AND epoch = $2",
                            2, nullptr, params, nullptr, nullptr, 0));
    if (PQresultStatus(r.get()) != PGRES_COMMAND_OK) return Error("renewing the lease", r.get());
    return std::string(PQcmdTuples(r.get())) == "1";
  }

  void WaitForAppend(Duration timeout) override {
    std::lock_guard<std::mutex> lock(listen_mu_);
    if (!listen_ || PQstatus(listen_) != CONNECTION_OK) {
      if (listen_) PQfinish(listen_);
      listen_ = Connect(url_);
      if (PQstatus(listen_) == CONNECTION_OK) {
        PgResult(PQexec(listen_, "LISTEN reservoir_log"));
      }
    }
    const int ms = static_cast<int>(timeout.micros() / 1000);
    if (PQstatus(listen_) != CONNECTION_OK) {  // no hint to wait for: the poll interval it is
      ::poll(nullptr, 0, ms);
      return;
    }
    if (Drain()) return;  // a notice arrived already
    pollfd p{PQsocket(listen_), POLLIN, 0};
    ::poll(&p, 1, ms);
    Drain();
  }

  Status SaveSnapshotPart(int64_t seq, int32_t part, std::string_view data) override {
    std::lock_guard<std::mutex> lock(mu_);
    RSV_RETURN_IF_ERROR(ConnectLocked());
    const std::string s = std::to_string(seq), e = std::to_string(fence_), p = std::to_string(part);
    const char* values[] = {s.c_str(), e.c_str(), p.c_str(), data.data()};
    const int lengths[] = {0, 0, 0, static_cast<int>(data.size())};
    const int formats[] = {0, 0, 0, 1};  // the data is sent as binary
    // Keyed by the writer's epoch too, so two leaders' parts never mix; a committed snapshot's
    // parts are never written again.
    PgResult r(PQexecParams(conn_,
                            "INSERT INTO snapshot_parts SELECT $1::bigint, $2::bigint, $3::int, "
                            "$4::bytea WHERE NOT EXISTS "
                            "(SELECT 1 FROM snapshots WHERE seq = $1) ON CONFLICT (seq, epoch, "
                            "part) DO UPDATE SET data = EXCLUDED.data",
                            4, nullptr, values, lengths, formats, 0));
    if (PQresultStatus(r.get()) != PGRES_COMMAND_OK) {
      return Error("writing a snapshot part", r.get());
    }
    if (std::string(PQcmdTuples(r.get())) == "0") {
      return AlreadyExists("a snapshot of seq " + s + " is stored already");
    }
    return Status::Ok();
  }

  Result<int64_t> CommitSnapshot(int64_t seq, int32_t parts) override {
    Result<int64_t> prev = MakeNewest(seq, parts);
    if (!prev.ok()) return prev;
    // Then the old log and parts go in short transactions, so appends wait behind none for
    // long. What a crash leaves undeleted goes at the next compaction.
    const std::string p = std::to_string(*prev);
    const char* through[] = {p.c_str()};
    auto batches = [&](const char* q, int params) -> Status {
      while (true) {
        std::lock_guard<std::mutex> lock(mu_);
        RSV_RETURN_IF_ERROR(ConnectLocked());
        PgResult r(PQexecParams(conn_, q, params, nullptr, through, nullptr, nullptr, 0));
        if (PQresultStatus(r.get()) != PGRES_COMMAND_OK) return Error("compacting", r.get());
        if (std::string(PQcmdTuples(r.get())) == "0") return Status::Ok();
      }
    };
    RSV_RETURN_IF_ERROR(
        batches("DELETE FROM commands WHERE seq IN (SELECT seq FROM commands "
                "WHERE seq <= $1 ORDER BY seq LIMIT 10000)",
                1));
    RSV_RETURN_IF_ERROR(batches(
        "DELETE FROM snapshot_parts WHERE (seq, epoch, part) IN (SELECT p.seq, p.epoch, p.part "
        "FROM snapshot_parts p WHERE NOT EXISTS (SELECT 1 FROM snapshots s WHERE s.seq = p.seq "
        "AND s.epoch = p.epoch) LIMIT 4)",
        0));
    return prev;
  }

  Result<int64_t> LatestSnapshot(std::string* data) const override {
    data->clear();
    std::lock_guard<std::mutex> lock(mu_);
    RSV_RETURN_IF_ERROR(ConnectLocked());
    // One repeatable-read transaction: a compaction committed meanwhile cannot remove parts
    // under us.
    RSV_RETURN_IF_ERROR(Exec("BEGIN ISOLATION LEVEL REPEATABLE READ", "begin"));
    auto end = [&](Result<int64_t> r) {
      PgResult(PQexec(conn_, "COMMIT"));
      return r;
    };
    PgResult head(
        PQexec(conn_, "SELECT seq, parts, epoch FROM snapshots ORDER BY seq DESC LIMIT 1"));
    if (PQresultStatus(head.get()) != PGRES_TUPLES_OK) {
      return end(Error("reading the snapshots", head.get()));
    }
    if (PQntuples(head.get()) == 0) return end(int64_t{0});
    const std::string seq = PQgetvalue(head.get(), 0, 0);
    const int64_t parts = std::atoll(PQgetvalue(head.get(), 0, 1));
    const std::string epoch = PQgetvalue(head.get(), 0, 2);
    for (int64_t part = 0; part < parts; ++part) {  // one part at a time: bounded memory
      const std::string p = std::to_string(part);
      const char* values[] = {seq.c_str(), epoch.c_str(), p.c_str()};
      PgResult r(PQexecParams(conn_,
                              "SELECT data FROM snapshot_parts WHERE seq = $1 AND epoch = $2 "
                              "AND part = $3",
                              3, nullptr, values, nullptr, nullptr, /*binary=*/1));
      if (PQresultStatus(r.get()) != PGRES_TUPLES_OK) {
        return end(Error("reading a snapshot part", r.get()));
      }
      if (PQntuples(r.get()) != 1) {
        return end(Internal("snapshot " + seq +
                            ": parts are missing from the store (delete it, DELETE FROM "
                            "snapshots WHERE seq = " +
                            seq + ", to start from the snapshot before it)"));
      }
      data->append(PQgetvalue(r.get(), 0, 0), static_cast<size_t>(PQgetlength(r.get(), 0, 0)));
    }
    return end(static_cast<int64_t>(std::atoll(seq.c_str())));
  }

 private:
  // The snapshot of `seq` becomes the newest (fenced); returns the previous newest's seq.
  Result<int64_t> MakeNewest(int64_t seq, int32_t parts) {
    std::lock_guard<std::mutex> lock(mu_);
    RSV_RETURN_IF_ERROR(ConnectLocked());
    auto fail = [&](Status s) {
      PgResult(PQexec(conn_, "ROLLBACK"));
      return s;
    };
    RSV_RETURN_IF_ERROR(Exec("BEGIN", "begin"));
    const std::string s = std::to_string(seq), e = std::to_string(fence_);
    const char* two[] = {s.c_str(), e.c_str()};
    PgResult r(PQexecParams(conn_,
                            "SELECT epoch, (SELECT COUNT(*) FROM snapshot_parts WHERE seq = $1 "
                            "AND epoch = $2), (SELECT COALESCE(MAX(seq), 0) FROM commands), "
                            "(SELECT COALESCE(MAX(seq), 0) FROM snapshots WHERE seq < $1) "
                            "FROM lease WHERE id = 1 FOR SHARE",
                            2, nullptr, two, nullptr, nullptr, 0));
    if (PQresultStatus(r.get()) != PGRES_TUPLES_OK || PQntuples(r.get()) != 1) {
      return fail(Error("reading the lease", r.get()));
    }
    const int64_t epoch = std::atoll(PQgetvalue(r.get(), 0, 0));
    const int64_t stored = std::atoll(PQgetvalue(r.get(), 0, 1));
    const int64_t last = std::atoll(PQgetvalue(r.get(), 0, 2));
    const int64_t prev = std::atoll(PQgetvalue(r.get(), 0, 3));
    if (fence_ > 0 && epoch != fence_) return fail(DeposedError(fence_, epoch));
    if (stored != parts || seq > last) {
      return fail(Internal("snapshot " + s + ": " + std::to_string(stored) + " of " +
                           std::to_string(parts) + " parts stored, the log ends at " +
                           std::to_string(last)));
    }
    const std::string n = std::to_string(parts), p = std::to_string(prev);
    const char* four[] = {s.c_str(), n.c_str(), p.c_str(), e.c_str()};
    PgResult done(PQexecParams(conn_,
                               "WITH ins AS (INSERT INTO snapshots VALUES ($1, $2, $4, now())) "
                               "DELETE FROM snapshots WHERE seq < $3",
                               4, nullptr, four, nullptr, nullptr, 0));
    if (PQresultStatus(done.get()) != PGRES_COMMAND_OK) {
      return fail(Error("committing a snapshot", done.get()));
    }
    RSV_RETURN_IF_ERROR(Exec("COMMIT", "committing a snapshot"));
    return prev;
  }

 private:
  // Consumes what arrived on the listening connection; whether it held a notification.
  bool Drain() {
    PQconsumeInput(listen_);
    bool any = false;
    while (PGnotify* n = PQnotifies(listen_)) {
      any = true;
      PQfreemem(n);
    }
    return any;
  }

  // (Re)connects when there is no healthy connection.
  Status ConnectLocked() const {
    if (conn_ && PQstatus(conn_) == CONNECTION_OK) return Status::Ok();
    if (conn_) {
      PQreset(conn_);
    } else {
      conn_ = Connect(url_);
    }
    if (PQstatus(conn_) != CONNECTION_OK) {
      return Status(Code::kUnavailable,
                    std::string("connecting to PostgreSQL: ") + PQerrorMessage(conn_), "db");
    }
    PgResult(PQexec(conn_, "SET client_min_messages = warning"));
    return Status::Ok();
  }
  Status Exec(const char* sql, const char* what) const {
    PgResult r(PQexec(conn_, sql));
    const ExecStatusType st = PQresultStatus(r.get());
    if (st != PGRES_COMMAND_OK && st != PGRES_TUPLES_OK) return Error(what, r.get());
    return Status::Ok();
  }
  Status Error(const std::string& what, const PGresult* r) const {
    std::string msg = r ? PQresultErrorMessage(r) : "";
    if (msg.empty()) msg = PQerrorMessage(conn_);
    while (!msg.empty() && (msg.back() == '\n' || msg.back() == ' ')) msg.pop_back();
    return Status(Code::kUnavailable, what + ": " + msg);
  }

  const std::string url_;
  mutable std::mutex mu_;  // one transaction at a time on conn_
  mutable PGconn* conn_ = nullptr;
  int64_t fence_ = 0;  // the epoch this store's appends are checked against (0: none)
  std::mutex listen_mu_;
  PGconn* listen_ = nullptr;
};

}  // namespace

Result<std::unique_ptr<Store>> OpenPostgresStore(const std::string& url) {
  auto store = std::make_unique<PostgresStore>(url);
  Status s = store->Init();
  if (!s.ok()) return Status(s.code(), s.message(), "db");
  return std::unique_ptr<Store>(std::move(store));
}

}  // namespace rsv
