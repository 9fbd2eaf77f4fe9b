#include "agent/executor.h"

#include <fcntl.h>
#include <grp.h>
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

volatile sig_atomic_t g_term = 0;    // the supervisor was sent a notice (SIGTERM)
volatile sig_atomic_t g_kill = 0;    // the supervisor was told to kill the job (SIGUSR1)
volatile sig_atomic_t g_resize = 0;  // a resize to pass on as SIGUSR1 (SIGUSR2)
void OnTerm(int) { g_term = 1; }
void OnKill(int) { g_kill = 1; }
void OnResize(int) { g_resize = 1; }
void OnAlarm(int) {}

// When `heartbeat` was last touched (0: never, or no such file).
int64_t TouchedMicros(const std::string& heartbeat) {
  struct stat sb {};
  if (::stat(heartbeat.c_str(), &sb) != 0) return 0;
  return int64_t{sb.st_mtim.tv_sec} * 1'000'000 + sb.st_mtim.tv_nsec / 1000;
}

// Kills every process below this one until none is left, then reaps them all. A process forked
// between a scan and the kills is orphaned to us (a subreaper) and found by the next scan.
// Zombies are included: a process whose main thread exited shows as a zombie while its other
// threads run, and a SIGKILL to it ends them. Bounded (a process stuck in the kernel cannot be
// killed at all): after 10 s it gives up, reaping what it can.
void KillTree() {
  for (int round = 0; round < 5000; ++round) {
    std::vector<pid_t> tree = Descendants(::getpid(), /*with_zombies=*/true);
    if (tree.empty()) break;
    for (pid_t p : tree) ::kill(p, SIGKILL);
    while (::waitpid(-1, nullptr, WNOHANG) > 0) {
    }
    timespec pause{0, 2'000'000};
    ::nanosleep(&pause, nullptr);
  }
  while (::waitpid(-1, nullptr, WNOHANG) > 0) {
  }
}

struct JobUser {
  int64_t uid = -1;
  int64_t gid = -1;
};

// The attempt's first process (the pid the agent watches, leader of the attempt's process
// group). It runs the command with /bin/sh -c, as the job's user, and stays until
// every process of the job has exited: as a subreaper, everything the job starts stays below it
// whatever session or group it moves to. A SIGTERM (the notice) is passed to every process of
// the job; SIGUSR1 kills them all, then this process; SIGUSR2 (a resize, docs/agent.md, "Elastic
// jobs") is passed on as SIGUSR1 to every process of the job. Ends with the status of the job's
// last process (re-raising its signal). With a heartbeat file, it fences: once the agent has not
// touched the file for `fence_after_us` (the agent is gone, or cut off from the server), the
// whole attempt is killed, since the server requeues it.
[[noreturn]] void Supervise(std::string& cmd, char** envp, const std::string& workdir, JobUser user,
                            const std::string& heartbeat, int64_t fence_after_us,
                            int64_t time_limit_s) {
  struct sigaction sa {};
  sigemptyset(&sa.sa_mask);
  sa.sa_handler = OnTerm;  // handlers, not SIG_IGN: exec gives the job the defaults back
  ::sigaction(SIGTERM, &sa, nullptr);
  sa.sa_handler = OnKill;
  ::sigaction(SIGUSR1, &sa, nullptr);
  sa.sa_handler = OnResize;
  ::sigaction(SIGUSR2, &sa, nullptr);
  sa.sa_handler = OnAlarm;
  ::sigaction(SIGALRM, &sa, nullptr);  // no SA_RESTART: signals interrupt waitpid
  ::prctl(PR_SET_CHILD_SUBREAPER, 1);
  ::prctl(PR_SET_NAME, "rsv-supervisor");  // not to be taken for the agent in `ps`
  pid_t job = ::fork();
  if (job == 0) {
    ::umask(077);
    if (user.gid >= 0) {
      gid_t g = static_cast<gid_t>(user.gid);
      if (::setgroups(1, &g) != 0 || ::setgid(g) != 0) {
        ::dprintf(2, "reservoir: cannot switch to group %lld: %s\n",
                  static_cast<long long>(user.gid), std::strerror(errno));
        ::_exit(126);
      }
    }
    if (user.uid >= 0 && ::setuid(static_cast<uid_t>(user.uid)) != 0) {
      ::dprintf(2, "reservoir: cannot switch to user %lld: %s\n", static_cast<long long>(user.uid),
                std::strerror(errno));
      ::_exit(126);
    }
    ::prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0);  // no setuid programs to climb back with
    if (::chdir(workdir.c_str()) != 0) {
      ::dprintf(2, "reservoir: cannot chdir to %s: %s\n", workdir.c_str(), std::strerror(errno));
      ::_exit(126);
    }
    char sh[] = "/bin/sh", c[] = "-c";
    char* argv[] = {sh, c, cmd.data(), nullptr};
    ::execve("/bin/sh", argv, envp);
    ::_exit(127);
  }
  if (job < 0) ::_exit(126);
  const bool fencing = !heartbeat.empty() && fence_after_us > 0;
  SystemClock clock;
  const int64_t started_us = clock.Now().micros();
  int last = 0;
  while (true) {
    ::alarm(1);  // a signal just before waitpid blocks is seen within a second
    int status = 0;
    pid_t p = ::waitpid(-1, &status, 0);
    const bool none_left = p <= 0 && errno != EINTR;
    if (p > 0) last = status;
    if (g_kill) {  // before `none_left`: a kill whose children are already gone still kills
      KillTree();
      ::signal(SIGKILL, SIG_DFL);
      ::raise(SIGKILL);
    }
    if (none_left) break;
    if (time_limit_s > 0 && clock.Now().micros() - started_us >= time_limit_s * 1'000'000) {
      ::dprintf(2, "reservoir: the time limit of %llds is reached: stopping\n",
                static_cast<long long>(time_limit_s));
      KillTree();
      ::_exit(124);
    }
    if (g_term) {
      g_term = 0;
      for (pid_t d : Descendants(::getpid())) ::kill(d, SIGTERM);
    }
    if (g_resize) {
      g_resize = 0;
      for (pid_t d : Descendants(::getpid())) ::kill(d, SIGUSR1);
    }
    if (fencing) {
      // A missing file counts as stale: the agent's state is gone, nobody tracks this attempt.
      int64_t touched = TouchedMicros(heartbeat);
      if (clock.Now().micros() - touched > fence_after_us) {
        ::dprintf(2, "reservoir: the agent has not reached the server for %s: stopping\n",
                  touched == 0
                      ? "ever (its state directory is gone)"
                      : (std::to_string((clock.Now().micros() - touched) / 1000) + " ms").c_str());
        KillTree();
        ::raise(SIGKILL);
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

// Writes a file the job reads (its notice, its resize) atomically — the job sees a whole file
// or none — readable by the job's user only (its deadline, reason and price are its business).
Status WriteJobFile(const std::string& path, const std::string& content, JobUser user) {
  {
    std::ofstream out(path + ".tmp", std::ios::trunc);
    out << content;
    if (!out) return Status(Code::kUnavailable, "cannot write " + path);
  }
  ::chmod((path + ".tmp").c_str(), 0600);
  if (user.uid >= 0) {
    (void)!::chown((path + ".tmp").c_str(), static_cast<uid_t>(user.uid),
                   static_cast<gid_t>(user.gid >= 0 ? user.gid : user.uid));
  }
  std::error_code ec;
  std::filesystem::rename(path + ".tmp", path, ec);
  if (ec) return Status(Code::kUnavailable, "cannot write " + path + ": " + ec.message());
  return Status::Ok();
}

// Makes `dir` (and its parents) exist with `mode`, owned by `user` when one is given.
bool MakeDir(const std::string& dir, mode_t mode, JobUser user = {}) {
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  if (ec) return false;
  if (::chmod(dir.c_str(), mode) != 0) return false;
  if (user.uid >= 0 && ::chown(dir.c_str(), static_cast<uid_t>(user.uid),
                               static_cast<gid_t>(user.gid >= 0 ? user.gid : user.uid)) != 0) {
    return false;
  }
  return true;
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

std::vector<pid_t> Descendants(pid_t root, bool with_zombies) {
  std::multimap<pid_t, pid_t> children;  // parent -> child
  std::error_code ec;
  for (const auto& entry : std::filesystem::directory_iterator("/proc", ec)) {
    const std::string name = entry.path().filename().string();
    if (name.empty() || name.find_first_not_of("0123456789") != std::string::npos) continue;
    std::string stat = ReadFile("/proc/" + name + "/stat");
    size_t close = stat.rfind(')');
    if (close == std::string::npos || close + 4 >= stat.size()) continue;
    // After "pid (comm) ": the state, then the parent's pid.
    char state = stat[close + 2];
    pid_t ppid = static_cast<pid_t>(std::atoll(stat.c_str() + close + 4));
    if (state == 'X' || (state == 'Z' && !with_zombies)) continue;
    children.emplace(ppid, static_cast<pid_t>(std::atoll(name.c_str())));
  }
  std::vector<pid_t> out;
  std::vector<pid_t> frontier = {root};
  while (!frontier.empty()) {
    pid_t p = frontier.back();
    frontier.pop_back();
    auto [a, b] = children.equal_range(p);
    for (auto it = a; it != b; ++it) {
      out.push_back(it->second);
      frontier.push_back(it->second);
    }
  }
  return out;
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

std::string Executor::ResizePath(const std::string& state_dir, uint32_t job) {
  return JobDir(state_dir, job) + "/resize.json";
}

std::string Executor::CheckpointDir(const std::string& state_dir,
                                    const std::string& checkpoint_root, uint32_t job) {
  return checkpoint_root.empty() ? JobDir(state_dir, job) + "/checkpoint"
                                 : checkpoint_root + "/" + std::to_string(job);
}

Executor::~Executor() {
  for (auto& [job, c] : running_) {
    KillAttempt(c);
    if (!c.adopted) ::waitpid(c.pid, nullptr, 0);
  }
}

void Executor::KillAttempt(const Child& c) {
  // The supervisor kills the job's whole tree, then itself. Told first, it knows why its
  // children die when the cgroup kills them, and ends killed, not with their last status.
  ::kill(c.pid, SIGUSR1);
  if (!c.cgroup.empty()) WriteFile(c.cgroup + "/cgroup.kill", "1");
}

Result<pid_t> Executor::Start(const LaunchSpec& spec, std::string* limits) {
  if (running_.count(spec.job)) {
    return FailedPrecondition("job " + std::to_string(spec.job) + " is already running here");
  }
  const std::string dir = JobDir(spec.state_dir, spec.job);
  const std::string ckpt = CheckpointDir(spec.state_dir, spec.checkpoint_root, spec.job);
  const JobUser user{spec.uid, spec.gid};
  // Jobs may pass through the agent's directories (0711: no listing) to reach their own; what is
  // theirs (checkpoints, a home) is owned by the job's user and closed to everyone else.
  const std::string home = dir + "/home";
  if (!MakeDir(spec.state_dir, 0711) || !MakeDir(spec.state_dir + "/jobs", 0711) ||
      !MakeDir(dir, 0711) ||
      (!spec.checkpoint_root.empty() && !MakeDir(spec.checkpoint_root, 0711)) ||
      !MakeDir(ckpt, 0700, user) || !MakeDir(home, 0700, user)) {
    return Status(Code::kUnavailable,
                  "cannot prepare " + ckpt + " for the job: " + std::strerror(errno));
  }
  std::error_code ec;
  std::filesystem::remove(NoticePath(spec.state_dir, spec.job), ec);  // a fresh attempt
  std::filesystem::remove(ResizePath(spec.state_dir, spec.job), ec);
  if (!spec.resize_json.empty()) {
    RSV_RETURN_IF_ERROR(
        WriteJobFile(ResizePath(spec.state_dir, spec.job), spec.resize_json + "\n", user));
  }
  const std::string log = LogPath(spec.state_dir, spec.job, spec.attempt);
  int log_fd = ::open(log.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
  if (log_fd < 0)
    return Status(Code::kUnavailable, "cannot open " + log + ": " + std::strerror(errno));
  std::string gpus;
  for (size_t i = 0; i < spec.gpus.size(); ++i) {
    gpus += (gpus.empty() ? "" : ",") +
            (i < spec.devices.size() ? spec.devices[i] : std::to_string(spec.gpus[i]));
  }
  // The job's environment: allow-listed names from ours (never tokens or anything else the
  // agent was given), then the job's own, then what the agent tells it, which the job's own
  // cannot replace (its GPUs, its files) — except the rendezvous defaults, which it may.
  std::vector<std::string> env;
  auto at = [&](const std::string& name) {
    for (size_t i = 0; i < env.size(); ++i) {
      if (env[i].compare(0, name.size() + 1, name + "=") == 0) return static_cast<int>(i);
    }
    return -1;
  };
  auto set = [&](const std::string& name, const std::string& value) {
    int i = at(name);
    if (i >= 0) {
      env[i] = name + "=" + value;
    } else {
      env.push_back(name + "=" + value);
    }
  };
  auto pass = [&](const std::string& name) {
    const char* v = std::getenv(name.c_str());
    if (v) set(name, v);
  };
  for (const char* name : kPassedEnv) pass(name);
  for (const std::string& name : spec.pass_env) pass(name);
  set("HOME", home);
  for (const std::string& e : spec.env) {
    size_t eq = e.find('=');
    if (eq != std::string::npos && eq > 0) set(e.substr(0, eq), e.substr(eq + 1));
  }
  set("CUDA_VISIBLE_DEVICES", gpus);
  set("NVIDIA_VISIBLE_DEVICES", gpus.empty() ? std::string("none") : gpus);
  std::string share_note;
  if (spec.gpu_milli > 0 && spec.gpu_milli < 1000) {  // docs/agent.md, "GPU shares"
    char share[16];
    std::snprintf(share, sizeof share, "0.%03d", spec.gpu_milli);
    set("RESERVOIR_GPU_SHARE", share);
    if (spec.gpu_memory_mib > 0) {
      set("RESERVOIR_GPU_MEMORY_MIB", std::to_string(spec.gpu_memory_mib));
    }
    if (!spec.mps_pipe.empty()) {
      // The client sees its one GPU as device 0. MPS takes whole percents: rounded up.
      const int32_t percent = (spec.gpu_milli + 9) / 10;
      set("CUDA_MPS_PIPE_DIRECTORY", spec.mps_pipe);
      set("CUDA_MPS_ACTIVE_THREAD_PERCENTAGE", std::to_string(percent));
      share_note = "GPU share " + std::string(share) + " through MPS (" + std::to_string(percent) +
                   "% of threads";
      if (spec.gpu_memory_mib > 0) {
        set("CUDA_MPS_PINNED_DEVICE_MEM_LIMIT", "0=" + std::to_string(spec.gpu_memory_mib) + "M");
        share_note += ", " + std::to_string(spec.gpu_memory_mib) + " MiB";
      }
      share_note += ")";
    } else {
      share_note = "GPU share " + std::string(share) +
                   " time-sliced: no MPS control daemon here, the share is not enforced";
    }
  }
  set("RESERVOIR_JOB_ID", std::to_string(spec.job));
  set("RESERVOIR_ATTEMPT", std::to_string(spec.attempt));
  set("RESERVOIR_CHECKPOINT_DIR", ckpt);
  set("RESERVOIR_NOTICE_FILE", NoticePath(spec.state_dir, spec.job));
  if (spec.elastic_signal) {  // docs/agent.md, "Elastic jobs"
    set("RESERVOIR_RESIZE_FILE", ResizePath(spec.state_dir, spec.job));
    set("RESERVOIR_RESIZE_ACK", ckpt + "/.resize-ack");
  }
  if (!spec.gang.nodes.empty()) {
    const LaunchSpec::Gang& g = spec.gang;
    std::string nodes;
    for (const std::string& n : g.nodes) nodes += (nodes.empty() ? "" : ",") + n;
    set("RESERVOIR_NODES", nodes);
    set("RESERVOIR_NODE_RANK", std::to_string(g.rank));
    set("RESERVOIR_NUM_NODES", std::to_string(g.nodes.size()));
    set("RESERVOIR_GPUS_PER_NODE", std::to_string(g.gpus_per_node));
    set("RESERVOIR_GPUS", std::to_string(g.gpus));
    auto fallback = [&](const std::string& name, const std::string& value) {
      if (at(name) < 0) env.push_back(name + "=" + value);
    };
    fallback("MASTER_ADDR", g.nodes.front());
    fallback("MASTER_PORT", std::to_string(g.master_port));
    fallback("NODE_RANK", std::to_string(g.rank));
    // Only where it is true: a single-node job may run one process, and scripts take
    // WORLD_SIZE > 1 to mean a distributed launch.
    if (g.nodes.size() > 1) fallback("WORLD_SIZE", std::to_string(g.gpus));
  }
  std::vector<char*> envp;
  for (std::string& e : env) envp.push_back(e.data());
  envp.push_back(nullptr);
  std::string cmd = spec.command;
  std::string workdir = spec.workdir.empty() ? ckpt : spec.workdir;
  // A cgroup of its own where the host delegates them (its limits, and cgroup.kill), made and
  // filled in before the fork; the child joins it.
  std::string cgroup;
  const bool wants_limits = spec.cpu_millis > 0 || spec.memory_mib > 0;
  std::string note =
      wants_limits ? "not applied: no cgroup v2 delegation on this host" : "none requested";
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
      if (wants_limits) note = "applied in " + cgroup;
    } else {
      note = "not applied: cannot configure " + cgroup;
      std::filesystem::remove(cgroup, ec);
      cgroup.clear();
    }
  }
  if (limits) *limits = share_note.empty() ? note : note + "; " + share_note;
  std::string cgroup_procs = cgroup.empty() ? "" : cgroup + "/cgroup.procs";
  pid_t pid = ::fork();
  if (pid < 0) {
    ::close(log_fd);
    return Status(Code::kUnavailable, std::string("fork failed: ") + std::strerror(errno));
  }
  if (pid == 0) {
    ::setsid();     // its own session and group: no controlling terminal to type into
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
    Supervise(cmd, envp.data(), workdir, user, spec.heartbeat_file, spec.fence_after_us,
              spec.time_limit_s);
  }
  ::setpgid(pid, pid);  // already its own (setsid); harmless, and no race with an early Notify
  ::close(log_fd);
  Child child;
  child.pid = pid;
  child.attempt = spec.attempt;
  child.state_dir = spec.state_dir;
  child.start_ticks = StartTicks(pid);
  child.cgroup = cgroup;
  child.uid = spec.uid;
  child.gid = spec.gid;
  running_[spec.job] = child;
  return pid;
}

Status Executor::Notify(uint32_t job, int64_t deadline_us, const std::string& reason,
                        const std::string& price) {
  auto it = running_.find(job);
  if (it == running_.end()) return NotFound("job " + std::to_string(job) + " is not running here");
  const std::string path = NoticePath(it->second.state_dir, job);
  RSV_RETURN_IF_ERROR(WriteJobFile(path,
                                   "{\"deadline_us\":" + std::to_string(deadline_us) +
                                       ",\"reason\":\"" + reason + "\",\"price\":\"" + price +
                                       "\"}\n",
                                   {it->second.uid, it->second.gid}));
  ::kill(it->second.pid, SIGTERM);  // the supervisor passes it to every process of the job
  return Status::Ok();
}

Status Executor::Resize(uint32_t job, const std::string& content, bool signal) {
  auto it = running_.find(job);
  if (it == running_.end()) return NotFound("job " + std::to_string(job) + " is not running here");
  RSV_RETURN_IF_ERROR(WriteJobFile(ResizePath(it->second.state_dir, job), content + "\n",
                                   {it->second.uid, it->second.gid}));
  if (signal) ::kill(it->second.pid, SIGUSR2);  // the supervisor passes it on as SIGUSR1
  return Status::Ok();
}

Status Executor::Kill(uint32_t job) {
  auto it = running_.find(job);
  if (it == running_.end()) return NotFound("job " + std::to_string(job) + " is not running here");
  KillAttempt(it->second);
  return Status::Ok();
}

std::vector<ExitStatus> Executor::Reap(bool block) {
  std::vector<ExitStatus> out;
  auto finish = [&](std::map<uint32_t, Child>::iterator it, ExitStatus e) {
    e.job = it->first;
    e.attempt = it->second.attempt;
    // The supervisor leaves nothing behind; an attempt's cgroup may still hold what escaped a
    // supervisor that was itself killed.
    if (!it->second.cgroup.empty()) {
      WriteFile(it->second.cgroup + "/cgroup.kill", "1");
      ::rmdir(it->second.cgroup.c_str());
    }
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
