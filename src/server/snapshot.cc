// The control plane's snapshots (docs/ha.md, "Snapshots"): the applied state in one binary
// image, so that a start (restart or standby) loads the newest one and replays only the log
// after it, and the log before the previous snapshot can be deleted.
//
// What a snapshot holds is the replicated state: what the log alone determines. State an agent's
// syncs keep in the leader's memory only (when each agent was last seen, the GPUs it reports
// between registrations, which attempts' output it shipped) is left out, as a restart from the
// log would lose it too; a new leader gives every agent a fresh heartbeat timeout anyway.
#include <fcntl.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <csignal>
#include <cstdio>
#include <cstring>

#include "common/archive.h"
#include "server/control.h"

namespace rsv {

template <class Ar>
static void Io(Ar& ar, PoolUsage& u) {
  Io(ar, u.reserved_used);
  Io(ar, u.lent);
  Io(ar, u.spot_used);
  Io(ar, u.idle_reserved);
  Io(ar, u.idle);
  Io(ar, u.down);
  Io(ar, u.pending_bids);
  Io(ar, u.pending_bid_gpus);
}

namespace server {

using rsv::Io;

template <class Ar>
static void Io(Ar& ar, Caller& c) {
  Io(ar, c.admin);
  Io(ar, c.tenant);
  Io(ar, c.tenant_name);
  Io(ar, c.node);
}

namespace {
constexpr char kMagic[8] = {'R', 'S', 'V', 'S', 'N', 'A', 'P', '\0'};
// Bumped whenever what a snapshot holds changes: a server never loads another format (it
// replays the whole log instead, when the log still reaches back to its start).
constexpr uint32_t kFormat = 2;  // 2: GPU shares

bool WriteAll(int fd, std::string_view data) {
  while (!data.empty()) {
    const ssize_t n = ::write(fd, data.data(), data.size());
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return false;
    data.remove_prefix(static_cast<size_t>(n));
  }
  return true;
}

std::string MiB(int64_t bytes) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.1f MiB", static_cast<double>(bytes) / (1 << 20));
  return buf;
}
}  // namespace

template <class Ar>
Status ControlPlane::StateIoLocked(Ar& ar) {
  char magic[8];
  std::memcpy(magic, kMagic, sizeof magic);
  ar.Raw(magic, sizeof magic);
  uint32_t format = kFormat;
  Io(ar, format);
  if constexpr (Ar::kReading) {
    if (std::memcmp(magic, kMagic, sizeof magic) != 0 || format != kFormat) {
      return Internal("the snapshot's header does not match this server");
    }
    RSV_RETURN_IF_ERROR(sched_.LoadState(ar));
  } else {
    RefreshUnfinishedLocked();  // a lazily kept index: brought up to date, so equal states
                                // give equal bytes
    sched_.SaveState(ar);
  }
  Io(ar, tokens_);
  Io(ar, events_);
  Io(ar, event_owner_);
  Io(ar, price_history_);
  Io(ar, usage_history_);
  IoMap(ar, agents_, [&](AgentLink& a) {
    Io(ar, a.probe);
    Io(ar, a.cgroups);
    Io(ar, a.registered_inventory);
    Io(ar, a.health);
    Io(ar, a.address);
    if constexpr (Ar::kReading) a.inventory = a.registered_inventory;
  });
  Io(ar, checkpoint_markers_);
  Io(ar, unfinished_);
  Io(ar, output_kept_);
  uint64_t indexed = jobs_indexed_;
  Io(ar, indexed);
  jobs_indexed_ = indexed;
  Io(ar, finished_);
  Io(ar, preemptions_);
  return Status::Ok();
}

template Status ControlPlane::StateIoLocked(ArchiveReader&);
template Status ControlPlane::StateIoLocked(ArchiveWriter&);

std::string ControlPlane::SnapshotUnusable(const std::string& data) const {
  ArchiveReader r(data);
  char magic[8];
  r.Raw(magic, sizeof magic);
  uint32_t format = 0;
  Io(r, format);
  if (r.failed() || std::memcmp(magic, kMagic, sizeof magic) != 0) return "it is not a snapshot";
  if (format != kFormat) {
    return "it is of format " + std::to_string(format) + ", this server reads format " +
           std::to_string(kFormat);
  }
  return "";
}

std::string ControlPlane::StateBytes() {
  std::lock_guard<std::mutex> lock(mu_);
  ArchiveWriter w;
  (void)StateIoLocked(w);
  return std::move(w.out());
}

void ControlPlane::SnapshotSoon() {
  std::lock_guard<std::mutex> lock(mu_);
  snapshot_soon_ = true;
}

Result<int64_t> ControlPlane::WaitForSnapshot() {
  std::unique_lock<std::mutex> lock(mu_);
  snapshot_cv_.wait(lock, [&] { return !snapshot_busy_ && !(snapshot_soon_ && leading_); });
  return snapshot_result_;
}

void ControlPlane::MaybeSnapshotLocked(Timestamp now) {
  if (!leading_ || snapshot_busy_) return;
  const bool due = snapshot_soon_ ||
                   (config_.snapshot_every > 0 &&
                    (since_snapshot_ >= config_.snapshot_every ||
                     (since_snapshot_ > 0 && now - last_snapshot_ >= config_.snapshot_interval)));
  if (!due) return;
  snapshot_soon_ = false;
  snapshot_cv_.notify_all();
  // Nothing since the last snapshot (or an empty log): nothing to take.
  if (durable_ >= queued_ && applied_seq_ <= snapshot_seq_) return;
  since_snapshot_ = 0;
  last_snapshot_ = now;
  int fds[2];
  if (::pipe2(fds, O_CLOEXEC) != 0) {
    std::fprintf(stderr, "reservoir server: no snapshot: pipe: %s\n", std::strerror(errno));
    return;
  }
  // The state is written by a child process: fork() gives it a copy-on-write image of this
  // instant, so writes wait only for the fork, not for the whole state to be written. The
  // child touches nothing but that image, the heap (glibc's malloc is consistent after fork) and
  // the pipe, and never returns into this process's code.
  const int64_t t0 = ticker_.Nanos();
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
  // Sanitizer builds (tests): a forked child that allocates can deadlock on the sanitizer's
  // allocator lock, held by another thread at the fork. The image is written here instead, and
  // writes wait for it.
  {
    ::close(fds[0]);
    ::close(fds[1]);
    ArchiveWriter w;
    (void)StateIoLocked(w);
    snapshot_image_ = std::move(w.out());
    snapshot_pause_ns_ = ticker_.Nanos() - t0;
    snapshot_child_ = 0;
    snapshot_pipe_ = -1;
    snapshot_busy_ = true;
    snapshot_waiting_ = true;
    snapshot_count_ = queued_;
    if (durable_ >= queued_) WriteSnapshotLocked(applied_seq_);
    return;
  }
#endif
  const pid_t pid = ::fork();
  if (pid == 0) {
    ::close(fds[0]);
    ::prctl(PR_SET_PDEATHSIG, SIGKILL);  // never outlives the server
    // Last in line for the CPU: the server's requests come first, the snapshot when it can.
    (void)::setpriority(PRIO_PROCESS, 0, 19);
    ArchiveWriter w([fd = fds[1]](std::string_view piece) { return WriteAll(fd, piece); });
    (void)StateIoLocked(w);
    ::_exit(w.Flush() ? 0 : 1);
  }
  ::close(fds[1]);
  if (pid < 0) {
    ::close(fds[0]);
    std::fprintf(stderr, "reservoir server: no snapshot: fork: %s\n", std::strerror(errno));
    return;
  }
  snapshot_pause_ns_ = ticker_.Nanos() - t0;
  snapshot_child_ = pid;
  snapshot_pipe_ = fds[0];
  snapshot_busy_ = true;
  snapshot_waiting_ = true;
  snapshot_count_ = queued_;
  // Stored once every command it holds is durable: now, or at that command's commit.
  if (durable_ >= queued_) WriteSnapshotLocked(applied_seq_);
}

void ControlPlane::AbandonSnapshotLocked() {
  if (snapshot_child_ > 0) {
    ::kill(snapshot_child_, SIGKILL);
    ::close(snapshot_pipe_);
    ::waitpid(snapshot_child_, nullptr, 0);
  }
  snapshot_image_.clear();
  snapshot_child_ = 0;
  snapshot_pipe_ = -1;
  snapshot_waiting_ = false;
  snapshot_busy_ = false;
  snapshot_cv_.notify_all();
}

void ControlPlane::WriteSnapshotLocked(int64_t seq) {
  if (snapshot_writer_.joinable()) snapshot_writer_.join();  // finished: it left busy unset
  snapshot_waiting_ = false;
  const int64_t pause_ns = snapshot_pause_ns_;
  snapshot_writer_ = std::thread([this, seq, pause_ns, pid = snapshot_child_, fd = snapshot_pipe_,
                                  image = std::move(snapshot_image_)] {
    const int64_t t0 = ticker_.Nanos();
    (void)::setpriority(PRIO_PROCESS, static_cast<id_t>(::gettid()), 10);  // this thread only
    // Parts of kSnapshotPartBytes as they come: the image is never whole in this process.
    Status s;
    int32_t parts = 0;
    int64_t bytes = 0;
    std::string part;
    part.reserve(kSnapshotPartBytes);
    char buf[1 << 16];
    size_t taken = 0;  // of `image`, when there is no child (sanitizer builds)
    while (s.ok()) {
      ssize_t n = 0;
      if (fd < 0) {
        n = static_cast<ssize_t>(std::min(sizeof buf, image.size() - taken));
        if (n > 0) std::memcpy(buf, image.data() + taken, static_cast<size_t>(n));
        taken += static_cast<size_t>(n);
      } else {
        n = ::read(fd, buf, sizeof buf);
      }
      if (n < 0 && errno == EINTR) continue;
      if (n < 0) s = Internal(std::string("reading the snapshot: ") + std::strerror(errno));
      if (n <= 0) break;
      bytes += n;
      part.append(buf, static_cast<size_t>(n));
      if (part.size() >= kSnapshotPartBytes) {
        s = store_->SaveSnapshotPart(seq, parts++, part);
        part.clear();
      }
    }
    if (fd >= 0) ::close(fd);
    if (s.ok() && (!part.empty() || parts == 0)) s = store_->SaveSnapshotPart(seq, parts++, part);
    int status = 0;
    if (pid > 0) ::waitpid(pid, &status, 0);
    if (s.ok() && !(WIFEXITED(status) && WEXITSTATUS(status) == 0)) {
      s = Internal("the process writing it failed (status " + std::to_string(status) + ")");
    }
    if (s.ok() && stepped_down_) s = Status(Code::kUnavailable, "this server stepped down");
    Result<int64_t> compacted = s.ok() ? store_->CommitSnapshot(seq, parts) : Result<int64_t>(s);
    const double write_ms = static_cast<double>(ticker_.Nanos() - t0) / 1e6;
    if (compacted.ok()) {
      const std::string what =
          *compacted > 0 ? "the log through seq " + std::to_string(*compacted) + " is deleted"
                         : "the log is kept whole (the first snapshot)";
      std::fprintf(stderr,
                   "reservoir server: snapshot at seq %lld: %s, writes paused %.1f ms (the "
                   "fork), written in %.0f ms; %s\n",
                   static_cast<long long>(seq), MiB(bytes).c_str(),
                   static_cast<double>(pause_ns) / 1e6, write_ms, what.c_str());
    } else {
      // Not fatal: the log still holds everything since the last snapshot. A deposed leader's
      // snapshot is refused by the fence like its appends.
      std::fprintf(stderr, "reservoir server: snapshot at seq %lld not written: %s\n",
                   static_cast<long long>(seq), compacted.status().ToString().c_str());
    }
    std::lock_guard<std::mutex> lock(mu_);
    snapshot_result_ = compacted;
    if (compacted.ok()) {
      ++snapshots_written_;
      snapshot_seq_ = seq;
      snapshot_bytes_ = bytes;
    }
    snapshot_child_ = 0;
    snapshot_pipe_ = -1;
    snapshot_busy_ = false;
    snapshot_cv_.notify_all();
  });
}

}  // namespace server
}  // namespace rsv
