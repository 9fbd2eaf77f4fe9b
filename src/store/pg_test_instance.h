// Test helper: a real PostgreSQL server, started for the tests that need one. initdb makes a
// cluster in a temporary directory and postgres listens only on a Unix socket inside it (no TCP
// port to collide on). PostgreSQL refuses to run as root, so when the tests run as root the
// cluster belongs to `nobody`. The binaries are found through `pg_config --bindir` (Debian's
// libpq-dev) or under /usr/lib/postgresql; scripts/setup installs postgresql-15.
#pragma once

#include <fcntl.h>
#include <grp.h>
#include <pwd.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <string>
#include <vector>

namespace rsv::testing {

class PostgresInstance {
 public:
  PostgresInstance() = default;
  PostgresInstance(const PostgresInstance&) = delete;
  PostgresInstance& operator=(const PostgresInstance&) = delete;
  ~PostgresInstance() { Stop(); }

  // Creates and starts the cluster; false with `error` set when it cannot.
  bool Start(std::string* error) {
    bin_ = BinDir();
    if (bin_.empty()) {
      *error =
          "PostgreSQL's binaries were not found (pg_config --bindir, /usr/lib/postgresql); "
          "scripts/setup installs postgresql-15";
      return false;
    }
    char tmpl[] = "/tmp/rsv_pg_XXXXXX";
    if (!::mkdtemp(tmpl)) {
      *error = "mkdtemp failed";
      return false;
    }
    dir_ = tmpl;
    if (::geteuid() == 0) {
      passwd* pw = ::getpwnam("nobody");
      if (!pw) {
        *error = "running as root and there is no user 'nobody' to run PostgreSQL as";
        return false;
      }
      uid_ = static_cast<int>(pw->pw_uid);
      gid_ = static_cast<int>(pw->pw_gid);
      if (::chown(dir_.c_str(), pw->pw_uid, pw->pw_gid) != 0) {
        *error = "chown of " + dir_ + " failed";
        return false;
      }
    }
    ::chmod(dir_.c_str(), 0755);  // the tests (root) reach the socket inside
    const std::string data = dir_ + "/data";
    if (Run({bin_ + "/initdb", "-D", data, "-U", "reservoir", "-A", "trust", "--no-sync", "-E",
             "UTF8", "--locale=C"}) != 0) {
      *error = "initdb failed; see " + dir_ + "/log";
      return false;
    }
    // fsync off: the tests kill servers, never the machine. The benchmark keeps it on.
    if (Run({bin_ + "/pg_ctl", "-D", data, "-l", dir_ + "/server.log", "-w", "-t", "60", "-o",
             "-k " + dir_ + " -c listen_addresses= -c fsync=off -c max_connections=200",
             "start"}) != 0) {
      *error = "pg_ctl start failed; see " + dir_ + "/server.log";
      return false;
    }
    started_ = true;
    return true;
  }

  void Stop() {
    if (started_) Run({bin_ + "/pg_ctl", "-D", dir_ + "/data", "-m", "immediate", "-w", "stop"});
    started_ = false;
    if (!dir_.empty() && !std::getenv("RSV_KEEP_PG")) {
      std::error_code ec;
      std::filesystem::remove_all(dir_, ec);
    }
    dir_.clear();
  }

  // Stops the server abruptly (as a crash would) and starts it again, its data kept.
  bool Halt() {
    return Run({bin_ + "/pg_ctl", "-D", dir_ + "/data", "-m", "immediate", "-w", "stop"}) == 0;
  }
  bool Resume() {
    return Run({bin_ + "/pg_ctl", "-D", dir_ + "/data", "-l", dir_ + "/server.log", "-w", "-t",
                "60", "-o",
                "-k " + dir_ + " -c listen_addresses= -c fsync=off -c max_connections=200",
                "start"}) == 0;
  }

  // A libpq URI for database `db` of this cluster.
  std::string Url(const std::string& db = "postgres") const {
    return "postgresql://reservoir@/" + db + "?host=" + dir_;
  }
  // Creates database `db` (through psql); false when that fails.
  bool CreateDatabase(const std::string& db) {
    return Run({bin_ + "/psql", "-q", "-h", dir_, "-U", "reservoir", "-d", "postgres", "-c",
                "CREATE DATABASE " + db}) == 0;
  }
  const std::string& dir() const { return dir_; }

 private:
  static std::string BinDir() {
    std::string out;
    if (FILE* p = ::popen("pg_config --bindir 2>/dev/null", "r")) {
      char buf[512];
      while (std::fgets(buf, sizeof buf, p)) out += buf;
      ::pclose(p);
    }
    while (!out.empty() && (out.back() == '\n' || out.back() == ' ')) out.pop_back();
    if (!out.empty() && std::filesystem::exists(out + "/initdb")) return out;
    std::error_code ec;
    std::string best;
    for (const auto& e : std::filesystem::directory_iterator("/usr/lib/postgresql", ec)) {
      const std::string b = e.path().string() + "/bin";
      if (std::filesystem::exists(b + "/initdb") && b > best) best = b;
    }
    return best;
  }

  // Runs argv (as the cluster's user when root), output appended to DIR/log; the exit status.
  int Run(const std::vector<std::string>& argv) const {
    pid_t pid = ::fork();
    if (pid == 0) {
      int fd = ::open((dir_ + "/log").c_str(), O_WRONLY | O_CREAT | O_APPEND, 0644);
      if (fd >= 0) {
        ::dup2(fd, 1);
        ::dup2(fd, 2);
      }
      if (::chdir(dir_.c_str()) != 0) _exit(125);
      if (uid_ >= 0) {
        if (::setgroups(0, nullptr) != 0 || ::setgid(gid_) != 0 || ::setuid(uid_) != 0) _exit(126);
      }
      std::vector<char*> args;
      for (const std::string& a : argv) args.push_back(const_cast<char*>(a.c_str()));
      args.push_back(nullptr);
      ::execv(args[0], args.data());
      _exit(127);
    }
    int status = 0;
    ::waitpid(pid, &status, 0);
    return WIFEXITED(status) ? WEXITSTATUS(status) : 128;
  }

  std::string bin_, dir_;
  int uid_ = -1, gid_ = -1;
  bool started_ = false;
};

// One server for the whole test binary, started on first use and stopped at exit; null (and the
// reason on stderr) when it cannot start. Each test makes a database of its own in it.
inline PostgresInstance* SharedPostgres() {
  static PostgresInstance* pg = [] {
    auto* p = new PostgresInstance();
    std::string error;
    if (!p->Start(&error)) {
      std::fprintf(stderr, "PostgreSQL for the tests: %s\n", error.c_str());
      delete p;
      return static_cast<PostgresInstance*>(nullptr);
    }
    std::atexit([] { delete SharedPostgres(); });
    return p;
  }();
  return pg;
}

}  // namespace rsv::testing
