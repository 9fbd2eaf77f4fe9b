#include "agent/executor.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "common/clock.h"

namespace rsv::agent {
namespace {

std::string JobDir(const std::string& state_dir, uint32_t job) {
  return state_dir + "/jobs/" + std::to_string(job);
}

bool WriteFile(const std::string& path, const std::string& text) {
  int fd = ::open(path.c_str(), O_WRONLY | O_CLOEXEC);
  if (fd < 0) return false;
  bool ok = ::write(fd, text.data(), text.size()) == static_cast<ssize_t>(text.size());
  ::close(fd);
  return ok;
}

std::string ReadFile(const std::string& path) {
  std::ifstream in(path);
  std::string s((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  return s;
}

void IgnoreSignal(int) {}

// When `heartbeat` was last touched (0: never, or no such file).
int64_t TouchedMicros(const std::string& heartbeat) {
  struct stat sb {};
  if (::stat(heartbeat.c_str(), &sb) != 0) return 0;
  return int64_t{sb.st_mtim.tv_sec} * 1'000'000 + sb.st_mtim.tv_nsec / 1000;
}

// The attempt's first process (its group leader, the pid the agent watches). It runs the
// command with /bin/sh -c and stays until every process of the job has exited: a SIGTERM to
// the group reaches the job (which may checkpoint and exit cleanly) but not the supervisor, and
// as a subreaper it outlives a shell that dies at once while the job's real work carries on.
// Ends with the status of the job's last process (re-raising its signal). With a heartbeat
// file, it fences: once the agent has not touched the file for `fence_after_us` (the agent is
// gone, or cut off from the server), the whole attempt is killed, since the server requeues it.
[[noreturn]] void Supervise(std::string& cmd, char** envp, const std::string& heartbeat,
                            int64_t fence_after_us) {
  struct sigaction sa {};
  sa.sa_handler = IgnoreSignal;  // a handler, not SIG_IGN: exec gives the job the default back
  sigemptyset(&sa.sa_mask);
  ::sigaction(SIGTERM, &sa, nullptr);
  ::sigaction(SIGALRM, &sa, nullptr);  // no SA_RESTART: it interrupts waitpid to check
  ::prctl(PR_SET_CHILD_SUBREAPER, 1);
  ::prctl(PR_SET_NAME, "rsv-supervisor");  // not to be taken for the agent in `ps`
  pid_t job = ::fork();
  if (job == 0) {
    char sh[] = "/bin/sh", c[] = "-c";
    char* argv[] = {sh, c, cmd.data(), nullptr};
    ::execve("/bin/sh", argv, envp);
    ::_exit(127);
  }
  if (job < 0) ::_exit(126);
  const bool fencing = !heartbeat.empty() && fence_after_us > 0;
  SystemClock clock;
  int last = 0;
  while (true) {
    if (fencing) ::alarm(1);
    int status = 0;
    pid_t p = ::waitpid(-1, &status, 0);
    if (p > 0) {
      last = status;
    } else if (errno != EINTR) {
      break;  // no children left
    } else if (fencing) {
      // A missing file counts as stale: the agent's state is gone, nobody tracks this attempt.
      int64_t touched = TouchedMicros(heartbeat);
      if (clock.Now().micros() - touched > fence_after_us) {
        ::dprintf(2, "reservoir: the agent has not reached the server for %s: stopping\n",
                  touched == 0
                      ? "ever (its state directory is gone)"
                      : (std::to_string((clock.Now().micros() - touched) / 1000) + " ms").c_str());
        ::kill(0, SIGKILL);  // the group, this process included
      }
    }
  }
  ::alarm(0);
  if (WIFSIGNALED(last)) {
    ::signal(WTERMSIG(last), SIG_DFL);
    ::raise(WTERMSIG(last));
  }
  ::_exit(WIFEXITED(last) ? WEXITSTATUS(last) : 1);
}

}  // namespace

Result<std::string> DetectCgroups() {
  const std::string root = "/sys/fs/cgroup";
  if (!std::filesystem::exists(root + "/cgroup.controllers")) {
    return FailedPrecondition("this host has no cgroup v2 unified hierarchy at " + root);
  }
  // Our own cgroup ("0::/path" in /proc/self/cgroup).
  std::string mine;
  {
    std::ifstream in("/proc/self/cgroup");
    std::string line;
    while (std::getline(in, line)) {
      if (line.rfind("0::", 0) == 0) mine = line.substr(3);
    }
  }
  const std::string base = root + (mine == "/" ? "" : mine);
  const std::string controllers = ReadFile(base + "/cgroup.controllers");
  if (controllers.find("cpu") == std::string::npos ||
      controllers.find("memory") == std::string::npos) {
    return FailedPrecondition("the cpu and memory controllers are not delegated to " + base);
  }
  // No process may sit in a cgroup whose children get controllers: the agent moves itself into
  // a leaf beside the jobs' cgroups.
  std::error_code ec;
  std::filesystem::create_directories(base + "/reservoir-agent", ec);
  if (ec) return FailedPrecondition("cannot create a cgroup under " + base + ": " + ec.message());
  if (!WriteFile(base + "/reservoir-agent/cgroup.procs", std::to_string(::getpid()))) {
    return FailedPrecondition("cannot move the agent into " + base +
                              "/reservoir-agent: " + std::strerror(errno));
  }
  if (!WriteFile(base + "/cgroup.subtree_control", "+cpu +memory")) {
    return FailedPrecondition("cannot enable cpu and memory under " + base + ": " +
                              std::strerror(errno) +
                              " (run the agent in its own delegated cgroup, e.g. systemd "
                              "Delegate=yes)");
  }
  return base;
}

int64_t Executor::StartTicks(pid_t pid) {
  std::string stat = ReadFile("/proc/" + std::to_string(pid) + "/stat");
  size_t close = stat.rfind(')');
  if (close == std::string::npos) return 0;
  // After "pid (comm)": state is field 3, starttime field 22.
  std::istringstream rest(stat.substr(close + 2));
  std::string field;
  std::string state;
  for (int i = 3; i <= 22 && rest >> field; ++i) {
    if (i == 3) state = field;
    if (i == 22) return state == "Z" ? 0 : std::atoll(field.c_str());
  }
  return 0;
}

bool Executor::Adopt(const Attempt& a, const std::string& state_dir) {
  if (a.pid <= 0 || running_.count(a.job) || StartTicks(a.pid) != a.start_ticks) return false;
  Child c;
  c.pid = a.pid;
  c.attempt = a.attempt;
  c.state_dir = state_dir;
  c.start_ticks = a.start_ticks;
  c.adopted = true;
  running_[a.job] = c;
  return true;
}

std::vector<Attempt> Executor::Attempts() const {
  std::vector<Attempt> out;
  for (const auto& [job, c] : running_)
    out.push_back(Attempt{job, c.attempt, c.pid, c.start_ticks});
  return out;
}

std::string Executor::LogPath(const std::string& state_dir, uint32_t job, int32_t attempt) {
  return JobDir(state_dir, job) + "/attempt-" + std::to_string(attempt) + ".log";
}

std::string Executor::NoticePath(const std::string& state_dir, uint32_t job) {
  return JobDir(state_dir, job) + "/notice.json";
}

Executor::~Executor() {
  for (auto& [job, c] : running_) {
    ::kill(-c.pid, SIGKILL);
    if (!c.adopted) ::waitpid(c.pid, nullptr, 0);
  }
}

Result<pid_t> Executor::Start(const LaunchSpec& spec, std::string* limits) {
  if (running_.count(spec.job)) {
    return FailedPrecondition("job " + std::to_string(spec.job) + " is already running here");
  }
  const std::string dir = JobDir(spec.state_dir, spec.job);
  const std::string ckpt = spec.checkpoint_root.empty()
                               ? dir + "/checkpoint"
                               : spec.checkpoint_root + "/" + std::to_string(spec.job);
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  std::filesystem::create_directories(ckpt, ec);
  if (ec) return Status(Code::kUnavailable, "cannot create " + ckpt + ": " + ec.message());
  std::filesystem::remove(NoticePath(spec.state_dir, spec.job), ec);  // a fresh attempt
  const std::string log = LogPath(spec.state_dir, spec.job, spec.attempt);
  int log_fd = ::open(log.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
  if (log_fd < 0)
    return Status(Code::kUnavailable, "cannot open " + log + ": " + std::strerror(errno));
  std::string gpus;
  for (int32_t g : spec.gpus) gpus += (gpus.empty() ? "" : ",") + std::to_string(g);
  std::vector<std::string> env;
  for (char** e = environ; *e; ++e) env.emplace_back(*e);
  for (const std::string& e : spec.env) env.push_back(e);
  env.push_back("CUDA_VISIBLE_DEVICES=" + gpus);
  env.push_back("NVIDIA_VISIBLE_DEVICES=" + (gpus.empty() ? std::string("none") : gpus));
  env.push_back("RESERVOIR_JOB_ID=" + std::to_string(spec.job));
  env.push_back("RESERVOIR_ATTEMPT=" + std::to_string(spec.attempt));
  env.push_back("RESERVOIR_CHECKPOINT_DIR=" + ckpt);
  env.push_back("RESERVOIR_NOTICE_FILE=" + NoticePath(spec.state_dir, spec.job));
  std::vector<char*> envp;
  for (std::string& e : env) envp.push_back(e.data());
  envp.push_back(nullptr);
  std::string cmd = spec.command;
  std::string workdir = spec.workdir.empty() ? ckpt : spec.workdir;
  // Limits: a cgroup of its own, made and filled in before the fork; the child joins it.
  std::string cgroup, note = "none requested";
  if (spec.cpu_millis > 0 || spec.memory_mib > 0) {
    note = "not applied: no cgroup v2 delegation on this host";
    if (!spec.cgroup_parent.empty()) {
      cgroup = spec.cgroup_parent + "/job-" + std::to_string(spec.job) + "-" +
               std::to_string(spec.attempt);
      std::filesystem::create_directories(cgroup, ec);
      bool ok = !ec;
      if (ok && spec.cpu_millis > 0)
        ok = WriteFile(cgroup + "/cpu.max", std::to_string(spec.cpu_millis * 100) + " 100000");
      if (ok && spec.memory_mib > 0)
        ok = WriteFile(cgroup + "/memory.max", std::to_string(spec.memory_mib << 20));
      if (ok) {
        note = "applied in " + cgroup;
      } else {
        note = "not applied: cannot configure " + cgroup;
        std::filesystem::remove(cgroup, ec);
        cgroup.clear();
      }
    }
  }
  if (limits) *limits = note;
  std::string cgroup_procs = cgroup.empty() ? "" : cgroup + "/cgroup.procs";
  pid_t pid = ::fork();
  if (pid < 0) {
    ::close(log_fd);
    return Status(Code::kUnavailable, std::string("fork failed: ") + std::strerror(errno));
  }
  if (pid == 0) {
    ::setpgid(0, 0);
    sigset_t none;  // the job starts with no signal blocked, whatever its agent had
    sigemptyset(&none);
    ::sigprocmask(SIG_SETMASK, &none, nullptr);
    if (!cgroup_procs.empty()) {
      int fd = ::open(cgroup_procs.c_str(), O_WRONLY);
      if (fd < 0 || ::write(fd, "0", 1) != 1) ::dprintf(log_fd, "reservoir: cannot join cgroup\n");
      if (fd >= 0) ::close(fd);
    }
    ::dup2(log_fd, 1);
    ::dup2(log_fd, 2);
    int devnull = ::open("/dev/null", O_RDONLY);
    if (devnull >= 0) ::dup2(devnull, 0);
    if (::chdir(workdir.c_str()) != 0) {
      ::dprintf(2, "reservoir: cannot chdir to %s: %s\n", workdir.c_str(), std::strerror(errno));
      ::_exit(126);
    }
    Supervise(cmd, envp.data(), spec.heartbeat_file, spec.fence_after_us);
  }
  ::setpgid(pid, pid);  // also here: no race with an early Notify
  ::close(log_fd);
  Child child;
  child.pid = pid;
  child.attempt = spec.attempt;
  child.state_dir = spec.state_dir;
  child.start_ticks = StartTicks(pid);
  child.cgroup = cgroup;
  running_[spec.job] = child;
  return pid;
}

Status Executor::Notify(uint32_t job, int64_t deadline_us, const std::string& reason,
                        const std::string& price) {
  auto it = running_.find(job);
  if (it == running_.end()) return NotFound("job " + std::to_string(job) + " is not running here");
  const std::string path = NoticePath(it->second.state_dir, job);
  {
    std::ofstream out(path + ".tmp", std::ios::trunc);
    out << "{\"deadline_us\":" << deadline_us << ",\"reason\":\"" << reason << "\",\"price\":\""
        << price << "\"}\n";
    if (!out) return Status(Code::kUnavailable, "cannot write " + path);
  }
  std::filesystem::rename(path + ".tmp", path);  // the job sees a whole file or none
  ::kill(-it->second.pid, SIGTERM);
  return Status::Ok();
}

Status Executor::Kill(uint32_t job) {
  auto it = running_.find(job);
  if (it == running_.end()) return NotFound("job " + std::to_string(job) + " is not running here");
  ::kill(-it->second.pid, SIGKILL);
  return Status::Ok();
}

std::vector<ExitStatus> Executor::Reap(bool block) {
  std::vector<ExitStatus> out;
  auto finish = [&](std::map<uint32_t, Child>::iterator it, ExitStatus e) {
    e.job = it->first;
    e.attempt = it->second.attempt;
    // Whatever the job left behind in its group goes with it.
    ::kill(-it->second.pid, SIGKILL);
    if (!it->second.cgroup.empty()) ::rmdir(it->second.cgroup.c_str());
    running_.erase(it);
    out.push_back(e);
  };
  // Adopted attempts are not our children: they are gone when their pid is (or was reused).
  for (auto it = running_.begin(); it != running_.end();) {
    auto next = std::next(it);
    if (it->second.adopted && StartTicks(it->second.pid) != it->second.start_ticks) {
      ExitStatus e;
      e.lost = true;
      finish(it, e);
    }
    it = next;
  }
  auto children = [&] {
    return std::any_of(running_.begin(), running_.end(),
                       [](const auto& r) { return !r.second.adopted; });
  };
  while (children()) {
    int status = 0;
    pid_t pid = ::waitpid(-1, &status, (block && out.empty()) ? 0 : WNOHANG);
    if (pid <= 0) break;
    for (auto it = running_.begin(); it != running_.end(); ++it) {
      if (it->second.pid != pid || it->second.adopted) continue;
      ExitStatus e;
      e.signaled = WIFSIGNALED(status);
      e.code = e.signaled ? WTERMSIG(status) : WEXITSTATUS(status);
      finish(it, e);
      break;
    }
  }
  return out;
}

}  // namespace rsv::agent
