#include "store/store.h"

#include <string>

namespace rsv {

Status DeposedError(int64_t epoch, int64_t current) {
  return Status(Code::kFailedPrecondition,
                "deposed: this server's lease epoch " + std::to_string(epoch) +
                    " is no longer the lease's (" + std::to_string(current) +
                    "); another server leads",
                "lease");
}

bool Deposed(const Status& s) {
  return s.code() == Code::kFailedPrecondition && s.field() == "lease";
}

bool IsPostgresUrl(const std::string& db) {
  return db.rfind("postgresql://", 0) == 0 || db.rfind("postgres://", 0) == 0;
}

Result<std::unique_ptr<Store>> OpenStore(const std::string& db) {
  return IsPostgresUrl(db) ? OpenPostgresStore(db) : OpenSqliteStore(db);
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
    // After a failed append nothing more is written: the log must never hold a command applied
    // after one it lacks (replay would apply it to a state it was not decided on).
    Status s = failed_.ok() ? store_->Append(commands) : failed_;
    if (!s.ok() && failed_.ok()) failed_ = s;
    ++batches_;
    for (size_t i = 0; i < batch.size(); ++i) {
      if (batch[i].done) batch[i].done(s, commands[i].seq);
    }
  }
}

}  // namespace rsv
