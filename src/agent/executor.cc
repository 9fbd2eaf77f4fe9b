#include "agent/executor.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>

namespace rsv::agent {
namespace {

std::string JobDir(const std::string& state_dir, uint32_t job) {
  return state_dir + "/jobs/" + std::to_string(job);
}

}  // namespace

std::string Executor::LogPath(const std::string& state_dir, uint32_t job, int32_t attempt) {
  return JobDir(state_dir, job) + "/attempt-" + std::to_string(attempt) + ".log";
}

std::string Executor::NoticePath(const std::string& state_dir, uint32_t job) {
  return JobDir(state_dir, job) + "/notice.json";
}

Executor::~Executor() {
  for (auto& [job, c] : running_) {
    ::kill(-c.pid, SIGKILL);
    ::waitpid(c.pid, nullptr, 0);
  }
}

Result<pid_t> Executor::Start(const LaunchSpec& spec) {
  if (running_.count(spec.job)) {
    return FailedPrecondition("job " + std::to_string(spec.job) + " is already running here");
  }
  const std::string dir = JobDir(spec.state_dir, spec.job);
  const std::string ckpt = dir + "/checkpoint";
  std::error_code ec;
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
  pid_t pid = ::fork();
  if (pid < 0) {
    ::close(log_fd);
    return Status(Code::kUnavailable, std::string("fork failed: ") + std::strerror(errno));
  }
  if (pid == 0) {
    ::setpgid(0, 0);
    ::dup2(log_fd, 1);
    ::dup2(log_fd, 2);
    int devnull = ::open("/dev/null", O_RDONLY);
    if (devnull >= 0) ::dup2(devnull, 0);
    if (::chdir(workdir.c_str()) != 0) {
      ::dprintf(2, "reservoir: cannot chdir to %s: %s\n", workdir.c_str(), std::strerror(errno));
      ::_exit(126);
    }
    char sh[] = "/bin/sh", c[] = "-c";
    char* argv[] = {sh, c, cmd.data(), nullptr};
    ::execve("/bin/sh", argv, envp.data());
    ::_exit(127);
  }
  ::setpgid(pid, pid);  // also here: no race with an early Notify
  ::close(log_fd);
  running_[spec.job] = Child{pid, spec.attempt, spec.state_dir};
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
  while (!running_.empty()) {
    int status = 0;
    pid_t pid = ::waitpid(-1, &status, (block && out.empty()) ? 0 : WNOHANG);
    if (pid <= 0) break;
    for (auto it = running_.begin(); it != running_.end(); ++it) {
      if (it->second.pid != pid) continue;
      ExitStatus e;
      e.job = it->first;
      e.attempt = it->second.attempt;
      e.signaled = WIFSIGNALED(status);
      e.code = e.signaled ? WTERMSIG(status) : WEXITSTATUS(status);
      // Whatever the job left behind in its group goes with it.
      ::kill(-pid, SIGKILL);
      running_.erase(it);
      out.push_back(e);
      break;
    }
  }
  return out;
}

}  // namespace rsv::agent
