// `reservoir agent` (the per-host reconciliation loop), `reservoir up` (a server and a local
// agent in one process tree, for trying Reservoir on one machine) and `reservoir logs`.
#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <atomic>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <nlohmann/json.hpp>
#include <thread>

#include "agent/agent.h"
#include "agent/gpu_probe.h"
#include "cli/client.h"
#include "cli/commands.h"
#include "common/clock.h"
#include "common/http_client.h"
#include "common/text.h"
#include "core/model.h"
#include "server/api.h"

namespace rsv::cli {
namespace {

using json = nlohmann::json;

std::atomic<bool> g_stop{false};
int g_wake_fd = -1;

void OnSignal(int sig) {
  if (sig != SIGCHLD) g_stop.store(true);
  if (g_wake_fd >= 0) {
    char b = 1;
    (void)!::write(g_wake_fd, &b, 1);
  }
}

std::string HostName() {
  char buf[256] = {0};
  if (::gethostname(buf, sizeof buf - 1) != 0 || !buf[0]) return "localhost";
  return buf;
}

struct AgentFlags {
  std::string server, token, token_file, pool, node, topology, state_dir, address,
      nvml = "libnvidia-ml.so.1";
  std::string fault_file, checkpoint_root;
  std::vector<std::string> run_as, pass_env;
  int64_t uid_base = 2'000'000;
  int64_t max_output_mib = 64;
  int fake_gpus = 0;
  int fake_mig = 0;
  std::string mps_pipe;
  int wait = 5;
  bool stop_jobs = false;
};

// The token in `path` (its first line). The file must not be readable by anyone but its owner.
Result<std::string> ReadTokenFile(const std::string& path) {
  struct stat sb {};
  if (::stat(path.c_str(), &sb) != 0) {
    return InvalidArgument("--token-file", "cannot read " + path + ": " + std::strerror(errno));
  }
  if (sb.st_mode & 077) {
    return InvalidArgument("--token-file", path + " is readable by others: chmod 600 " + path);
  }
  std::ifstream in(path);
  std::string token;
  std::getline(in, token);
  while (!token.empty() && (token.back() == '\r' || token.back() == ' ')) token.pop_back();
  if (token.empty()) return InvalidArgument("--token-file", path + " holds no token");
  return token;
}

// Whether uids [lo, hi] are all mapped in this process's user namespace.
bool UidsMapped(int64_t lo, int64_t hi) {
  std::ifstream in("/proc/self/uid_map");
  int64_t inside = 0, outside = 0, count = 0;
  while (in >> inside >> outside >> count) {
    if (lo >= inside && hi < inside + count) return true;
  }
  return false;
}

// `--run-as TENANT=UID:GID` entries, or an error naming the bad one.
Result<std::map<std::string, std::pair<int64_t, int64_t>>> ParseRunAs(
    const std::vector<std::string>& entries) {
  std::map<std::string, std::pair<int64_t, int64_t>> out;
  for (const std::string& e : entries) {
    size_t eq = e.find('='), colon = e.find(':', eq == std::string::npos ? 0 : eq);
    auto number = [](const std::string& s) -> int64_t {
      if (s.empty() || s.size() > 10 || s.find_first_not_of("0123456789") != std::string::npos)
        return -1;
      int64_t v = std::stoll(s);
      return v > 0 && v < 4'294'967'295 ? v : -1;  // never root, never (uid_t)-1
    };
    if (eq == std::string::npos || eq == 0 || colon == std::string::npos) {
      return InvalidArgument("--run-as", "'" + e + "' is not TENANT=UID:GID");
    }
    int64_t uid = number(e.substr(eq + 1, colon - eq - 1)), gid = number(e.substr(colon + 1));
    if (uid < 0 || gid < 0) {
      return InvalidArgument("--run-as", "'" + e + "': UID and GID must be numbers above 0");
    }
    out[e.substr(0, eq)] = {uid, gid};
  }
  return out;
}

int RunAgent(AgentFlags f) {
  if (f.server.empty() && std::getenv("RESERVOIR_URL")) f.server = std::getenv("RESERVOIR_URL");
  if (f.server.empty()) f.server = "http://127.0.0.1:8080";
  if (std::string bad = BadServerUrls(f.server); !bad.empty()) {
    std::cerr << "reservoir agent: --server: " << bad << " (give http://HOST:PORT, or several "
              << "separated by commas)\n";
    return 2;
  }
  if (!f.token.empty()) {
    std::cerr << "reservoir agent: --token would show the token to every process on this host "
                 "(/proc/*/cmdline); use --token-file FILE (mode 600) or $RESERVOIR_TOKEN\n";
    return 2;
  }
  if (!f.token_file.empty()) {
    Result<std::string> t = ReadTokenFile(f.token_file);
    if (!t.ok()) {
      std::cerr << "reservoir agent: " << t.status().field() << ": " << t.status().message()
                << "\n";
      return 2;
    }
    f.token = *t;
  } else if (std::getenv("RESERVOIR_TOKEN")) {
    f.token = std::getenv("RESERVOIR_TOKEN");
  }
  if (f.token.empty()) {
    std::cerr << "reservoir agent: --token-file (or $RESERVOIR_TOKEN) is required: the node's "
                 "token (reservoir token --node NAME)\n";
    return 2;
  }
  auto run_as = ParseRunAs(f.run_as);
  if (!run_as.ok()) {
    std::cerr << "reservoir agent: " << run_as.status().field() << ": " << run_as.status().message()
              << "\n";
    return 2;
  }
  for (const std::string& name : f.pass_env) {
    if (name.empty() || name.rfind("RESERVOIR_", 0) == 0 || name.find('=') != std::string::npos) {
      std::cerr << "reservoir agent: --pass-env: '" << name
                << "' cannot be passed to jobs (RESERVOIR_* names never are)\n";
      return 2;
    }
  }
  if (f.max_output_mib < 1 || f.max_output_mib > (int64_t{1} << 20)) {
    std::cerr << "reservoir agent: --max-output-mib must be 1-1048576\n";
    return 2;
  }
  if (f.uid_base < 1000 || f.uid_base > 4'000'000'000) {
    std::cerr << "reservoir agent: --job-uid-base must be 1000-4000000000\n";
    return 2;
  }
  agent::JobUsers users;
  users.map = std::move(*run_as);
  users.uid_base = f.uid_base;
  users.switch_users = ::geteuid() == 0;
  if (!users.switch_users && !users.map.empty()) {
    std::cerr << "reservoir agent: --run-as needs the agent to run as root\n";
    return 2;
  }
  if (users.switch_users && !UidsMapped(users.uid_base, users.uid_base + 65535)) {
    std::cerr << "reservoir agent: uids " << users.uid_base << "+ are not mapped in this user "
              << "namespace (see /proc/self/uid_map): set --job-uid-base to a mapped range\n";
    return 2;
  }
  if (f.node.empty()) f.node = HostName();
  if (f.node.empty() || f.node.size() > 64 ||
      f.node.find_first_not_of(
          "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-") !=
          std::string::npos) {
    std::cerr << "reservoir agent: --node-id must be 1-64 of A-Z a-z 0-9 . _ - (got '" << f.node
              << "')\n";
    return 2;
  }
  if (f.address.empty()) {
    // The address this host reaches the server from: on the same network, its peers reach it
    // there too. (A loopback server gives 127.0.0.1: a one-host fleet.)
    f.address = LocalAddressToward(f.server.substr(0, f.server.find(',')));
    if (f.address.empty()) f.address = f.node;
  }
  if (!server::ValidAddress(f.address)) {
    std::cerr << "reservoir agent: --advertise-address " << server::kAddressRule << " (got '"
              << Printable(f.address) << "')\n";
    return 2;
  }
  if (f.fake_gpus < 0 || f.fake_gpus > kMaxGpusPerNode) {
    std::cerr << "reservoir agent: --fake-gpus must be 1-" << kMaxGpusPerNode << "\n";
    return 2;
  }
  if (f.fake_mig < 0 || f.fake_mig > 7 || (f.fake_mig > 0 && f.fake_gpus == 0) ||
      f.fake_gpus * std::max(f.fake_mig, 1) > kMaxGpusPerNode) {
    std::cerr << "reservoir agent: --fake-mig must be 1-7 instances per GPU, with --fake-gpus, "
              << "and at most " << kMaxGpusPerNode << " devices in all\n";
    return 2;
  }
  if (f.wait < 1 || f.wait > 60) {
    std::cerr << "reservoir agent: --wait must be 1-60 seconds\n";
    return 2;
  }
  if (f.state_dir.empty()) {
    const char* home = std::getenv("HOME");
    f.state_dir =
        std::string(home && *home ? home : ".") + "/.local/state/reservoir/agent-" + f.node;
  }
  std::unique_ptr<agent::GpuProbe> probe;
  if (f.fake_gpus > 0) {
    auto fake = std::make_unique<agent::FakeProbe>(f.fake_gpus, f.node, 81920, f.fake_mig);
    if (!f.fault_file.empty()) fake->SetFaultFile(f.fault_file);
    probe = std::move(fake);
  } else {
    Result<std::unique_ptr<agent::GpuProbe>> nvml = agent::OpenNvmlProbe(f.nvml);
    if (!nvml.ok()) {
      std::cerr << "reservoir agent: " << nvml.status().message() << "\n";
      return 1;
    }
    probe = std::move(*nvml);
  }
  SystemClock clock;
  agent::AgentConfig config{f.server,          f.token,   f.pool,      f.node,
                            f.topology,        f.address, f.state_dir, f.wait,
                            f.checkpoint_root, users,     f.pass_env,  f.max_output_mib << 20,
                            f.mps_pipe};
  agent::Agent a(config, std::move(probe), &clock);
  g_wake_fd = a.wake_fd();
  struct sigaction sa {};
  sa.sa_handler = OnSignal;
  sigemptyset(&sa.sa_mask);
  sa.sa_flags = SA_RESTART;
  sigset_t mine;
  sigemptyset(&mine);
  for (int sig : {SIGINT, SIGTERM, SIGCHLD}) {
    ::sigaction(sig, &sa, nullptr);
    sigaddset(&mine, sig);
  }
  ::sigprocmask(SIG_UNBLOCK, &mine, nullptr);
  int code = a.Run(&g_stop, f.stop_jobs);
  g_wake_fd = -1;
  return code;
}

// --- reservoir up ---

struct UpFlags {
  std::string listen = "127.0.0.1:8080";
  std::string dir = "./reservoir-data";
  std::string config;
  int fake_gpus = 0;
  int fake_mig = 0;
  std::string mps_pipe;
};

// A child running `reservoir ARGS...`: stderr to `log` (or to `stderr_fd`), stdout to
// `stdout_fd` when given.
pid_t Spawn(const std::vector<std::string>& args, const std::string& log, int stdout_fd,
            int stderr_fd, const std::vector<std::string>& env) {
  pid_t pid = ::fork();
  if (pid != 0) return pid;
  sigset_t none;
  sigemptyset(&none);
  ::sigprocmask(SIG_SETMASK, &none, nullptr);  // `up` blocks signals; the children must not
  ::setpgid(0, 0);  // Ctrl-C reaches `up`, which stops the children in order
  int fd = stderr_fd >= 0 ? stderr_fd
                          : ::open(log.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
  if (fd >= 0) ::dup2(fd, 2);
  if (stdout_fd >= 0) ::dup2(stdout_fd, 1);
  for (const std::string& e : env) ::putenv(const_cast<char*>(e.c_str()));
  std::vector<char*> argv;
  for (const std::string& a : args) argv.push_back(const_cast<char*>(a.c_str()));
  argv.push_back(nullptr);
  ::execv("/proc/self/exe", argv.data());
  ::_exit(127);
}

// Writes `line` and a newline to `path`, readable by this user only, replacing it atomically.
bool WritePrivateFile(const std::string& path, const std::string& line) {
  int fd = ::open((path + ".tmp").c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (fd < 0) return false;
  const std::string text = line + "\n";
  bool ok = ::write(fd, text.data(), text.size()) == static_cast<ssize_t>(text.size());
  ok = ::close(fd) == 0 && ok;
  return ok && ::rename((path + ".tmp").c_str(), path.c_str()) == 0;
}

void Stop(pid_t pid) {
  if (pid <= 0) return;
  ::kill(pid, SIGTERM);
  ::waitpid(pid, nullptr, 0);
}

int RunUp(const UpFlags& f) {
  // The database, logs and tokens are this user's alone; jobs pass through --dir (0711) to the
  // agent's state directory and their own checkpoints only.
  ::umask(077);
  std::error_code ec;
  std::filesystem::create_directories(f.dir, ec);
  if (!ec) std::filesystem::permissions(f.dir, std::filesystem::perms(0711), ec);
  if (ec) {
    std::cerr << "reservoir up: cannot create " << f.dir << ": " << ec.message() << "\n";
    return 1;
  }
  const std::string dir = std::filesystem::absolute(f.dir).lexically_normal().string();
  // The admin token is made once and kept (0600) so restarts keep working with it.
  std::string token;
  {
    std::ifstream in(dir + "/admin-token");
    std::getline(in, token);
  }
  if (token.empty()) {
    token = server::RandomToken("rsv_admin_");
    if (!WritePrivateFile(dir + "/admin-token", token)) {
      std::cerr << "reservoir up: cannot write " << dir << "/admin-token\n";
      return 1;
    }
  }
  // Real GPUs when NVML finds them, otherwise clearly labelled fake ones.
  int fake = f.fake_gpus;
  std::string gpus_line;
  if (fake == 0) {
    Result<std::unique_ptr<agent::GpuProbe>> nvml = agent::OpenNvmlProbe();
    if (nvml.ok()) {
      Result<std::vector<agent::GpuInfo>> g = (*nvml)->Poll();
      gpus_line = std::to_string(g.ok() ? g->size() : 0) + " real GPUs (NVML)";
    } else {
      fake = 8;
    }
  }
  if (fake > 0) gpus_line = std::to_string(fake) + " FAKE GPUs (no NVML on this host)";

  sigset_t signals;
  sigemptyset(&signals);
  for (int sig : {SIGINT, SIGTERM, SIGCHLD}) sigaddset(&signals, sig);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);

  int out[2];
  if (::pipe2(out, O_CLOEXEC) != 0) return 1;
  std::vector<std::string> server_args = {"reservoir", "server", "--listen",
                                          f.listen,    "--db",   dir + "/reservoir.db"};
  if (!f.config.empty()) {
    server_args.push_back("--config");
    server_args.push_back(f.config);
  }
  pid_t server =
      Spawn(server_args, dir + "/server.log", out[1], -1, {"RESERVOIR_ADMIN_TOKEN=" + token});
  ::close(out[1]);
  FILE* server_out = ::fdopen(out[0], "r");
  std::string url;
  char line[1024];
  while (url.empty() && std::fgets(line, sizeof line, server_out)) {
    const char* at = std::strstr(line, "http://");
    if (at) url = std::string(at, std::strcspn(at, " \n"));
  }
  if (url.empty()) {
    std::cerr << "reservoir up: the server did not start; see " << dir << "/server.log\n";
    Stop(server);
    return 1;
  }
  std::thread copy([server_out] {  // the server's later lines ("stopping")
    char l[1024];
    while (std::fgets(l, sizeof l, server_out)) std::fputs(l, stdout);
  });
  // The pool the agent joins: the config's first pool, or the default one.
  std::string pool = "gpu";
  if (!f.config.empty()) {
    std::ifstream in(f.config);
    json c = json::parse(in, nullptr, false);
    if (!c.is_discarded() && c.contains("pools") && c["pools"].is_array() && !c["pools"].empty())
      pool = c["pools"][0].value("name", pool);
  }
  // The agent gets a token for its node only (not the admin token), in a file only this user
  // reads; the one from the previous run is revoked.
  const std::string node = HostName();
  const std::string token_file = dir + "/agent-token";
  {
    std::ifstream old(token_file);
    std::string previous;
    if (std::getline(old, previous) && !previous.empty()) {
      (void)HttpCall(url, "POST", "/v1/tokens/revoke", token, json{{"token", previous}}.dump());
    }
  }
  HttpReply minted = HttpCall(url, "POST", "/v1/tokens", token, json{{"node", node}}.dump());
  json minted_body = json::parse(minted.body, nullptr, false);
  std::string node_token =
      minted.status == 201 && !minted_body.is_discarded() ? minted_body.value("token", "") : "";
  if (node_token.empty() || !WritePrivateFile(token_file, node_token)) {
    std::cerr << "reservoir up: cannot make the agent's token (" << minted.status << " "
              << minted.body << minted.error << ")\n";
    Stop(server);
    copy.join();
    return 1;
  }
  std::vector<std::string> agent_args = {
      "reservoir",    "agent",       "--server",           url,         "--pool",
      pool,           "--state-dir", dir + "/agent",       "--node-id", node,
      "--token-file", token_file,    "--stop-jobs-on-exit"};
  if (fake > 0) {
    agent_args.push_back("--fake-gpus");
    agent_args.push_back(std::to_string(fake));
  }
  // The agent's log passes through here: "up" is up once the agent has registered its node.
  int err[2];
  if (::pipe2(err, O_CLOEXEC) != 0) return 1;
  pid_t agent = Spawn(agent_args, "", -1, err[1], {});
  ::close(err[1]);
  FILE* agent_err = ::fdopen(err[0], "r");
  FILE* agent_log = std::fopen((dir + "/agent.log").c_str(), "a");
  bool registered = false;
  while (!registered && std::fgets(line, sizeof line, agent_err)) {
    if (agent_log) std::fputs(line, agent_log);
    registered = std::strstr(line, "registered with") != nullptr;
  }
  if (agent_log) std::fflush(agent_log);
  std::thread copy_agent([agent_err, agent_log] {
    char l[4096];
    while (std::fgets(l, sizeof l, agent_err)) {
      if (agent_log) {
        std::fputs(l, agent_log);
        std::fflush(agent_log);
      }
    }
  });
  if (!registered) {
    std::cerr << "reservoir up: the agent did not start; see " << dir << "/agent.log\n";
    Stop(agent);
    Stop(server);
    copy_agent.join();
    copy.join();
    return 1;
  }
  std::cout << "Reservoir is up: server " << url << ", one local agent with " << gpus_line
            << " in pool " << pool << ".\n"
            << "  admin token: " << token << "   (kept in " << dir << "/admin-token)\n"
            << "  dashboard:   " << url << "/   (sign in with the admin token)\n"
            << "  logs: " << dir << "/server.log, " << dir << "/agent.log\n\n"
            << "In another shell:\n"
            << "  export RESERVOIR_URL=" << url << " RESERVOIR_TOKEN=" << token << "\n"
            << "  reservoir nodes\n\n"
            << "Ctrl-C stops the agent (and its jobs), then the server." << std::endl;
  int code = 0;
  while (true) {
    int sig = 0;
    sigwait(&signals, &sig);
    if (sig != SIGCHLD) break;
    int status = 0;
    pid_t gone = ::waitpid(-1, &status, WNOHANG);
    if (gone == server || gone == agent) {
      std::cerr << "reservoir up: the " << (gone == server ? "server" : "agent")
                << " exited; stopping (see " << dir
                << (gone == server ? "/server.log" : "/agent.log") << ")\n";
      if (gone == server) server = -1;
      if (gone == agent) agent = -1;
      code = 1;
      break;
    }
  }
  std::cout << "reservoir up: stopping" << std::endl;
  Stop(agent);
  Stop(server);
  copy.join();
  copy_agent.join();
  std::fclose(server_out);
  std::fclose(agent_err);
  if (agent_log) std::fclose(agent_log);
  return code;
}

}  // namespace

Action AddAgent(CLI::App& app) {
  auto f = std::make_shared<AgentFlags>();
  CLI::App* s = app.add_subcommand("agent", "Run the agent of one GPU host");
  s->add_option("--server", f->server,
                "Server URL, or several separated by commas: a leader and its standbys (default "
                "$RESERVOIR_URL)");
  s->add_option("--token", f->token, "Refused: a token on the command line is visible to all");
  s->add_option("--token-file", f->token_file,
                "File (mode 600) holding the node's token (default: $RESERVOIR_TOKEN)");
  s->add_option("--run-as", f->run_as,
                "TENANT=UID:GID: run this tenant's jobs as this user (repeatable; root only)");
  s->add_option("--job-uid-base", f->uid_base,
                "Tenants not in --run-as run as uid = gid = this + tenant id (default 2000000)");
  s->add_option("--max-output-mib", f->max_output_mib,
                "Output kept per attempt; the rest is dropped (default 64)");
  s->add_option("--pass-env", f->pass_env,
                "Also pass this variable of the agent's environment to jobs (repeatable)");
  s->add_option("--pool", f->pool, "Pool this node's GPUs belong to")->required();
  s->add_option("--node-id", f->node, "Node id (default: the host name)");
  s->add_option("--topology", f->topology, "Topology path of the node's parents: zone/rack");
  s->add_option("--advertise-address", f->address,
                "Address the node's peers reach it at: a multi-node job's MASTER_ADDR and "
                "RESERVOIR_NODES (default: this host's address toward the server)");
  s->add_option("--fake-gpus", f->fake_gpus, "Run with N fake GPUs instead of NVML");
  s->add_option("--fake-mig", f->fake_mig,
                "With --fake-gpus: each fake GPU is in MIG mode with N instances (1-7)");
  s->add_option("--mps-pipe", f->mps_pipe,
                "The MPS control daemon's pipe directory (default: $CUDA_MPS_PIPE_DIRECTORY, "
                "else /tmp/nvidia-mps); GPU shares are limited through MPS where it runs");
  s->add_option("--fake-faults", f->fault_file,
                "With --fake-gpus: file of 'INDEX DETAIL' lines marking fake GPUs unhealthy");
  s->add_option("--state-dir", f->state_dir,
                "Checkpoints, logs and agent.json (default ~/.local/state/reservoir/agent-NODE)");
  s->add_option("--checkpoint-root", f->checkpoint_root,
                "Checkpoint directories live here, one per job (shared storage lets an attempt "
                "resume on any node; default: under --state-dir)");
  s->add_option("--nvml-library", f->nvml, "NVML library to load");
  s->add_option("--wait", f->wait, "Long-poll seconds when idle (1-60)");
  s->add_flag("--stop-jobs-on-exit", f->stop_jobs,
              "Kill running attempts when the agent stops (default: leave them to be found "
              "again by the next agent)");
  return [f] { return RunAgent(*f); };
}

Action AddUp(CLI::App& app) {
  auto f = std::make_shared<UpFlags>();
  CLI::App* s = app.add_subcommand(
      "up", "Start a server and a local agent (real GPUs, or labelled fake ones) together");
  s->add_option("--listen", f->listen, "HOST:PORT for the server");
  s->add_option("--dir", f->dir, "Where the database, logs, token and agent state live");
  s->add_option("--config", f->config, "Server config file (JSON); the agent joins its first pool");
  s->add_option("--fake-gpus", f->fake_gpus, "Use N fake GPUs even if NVML is present");
  return [f] { return RunUp(*f); };
}

Action AddLogs(CLI::App& app) {
  struct Flags {
    ClientFlags c;
    int64_t job = 0;
    int attempt = 0;
    bool follow = false;
    std::string node;
  };
  auto f = std::make_shared<Flags>();
  CLI::App* s = app.add_subcommand("logs", "Print a job's output (stdout and stderr)");
  AddClientFlags(s, &f->c);
  s->add_option("job", f->job, "Job id")->required();
  s->add_option("--attempt", f->attempt, "Attempt (default: the latest)");
  s->add_option("--node", f->node,
                "Output of a multi-node job's member on this node, other than its first "
                "(default: the first node's, rank 0)");
  s->add_flag("-f,--follow", f->follow, "Keep printing output as it arrives, until it ends");
  return [f] {
    int64_t offset = 0;
    int attempt = f->attempt;
    while (true) {
      std::string path = "/v1/jobs/" + std::to_string(f->job) +
                         "/logs?offset=" + std::to_string(offset) + (f->follow ? "&wait=10" : "");
      if (attempt > 0) path += "&attempt=" + std::to_string(attempt);
      if (!f->node.empty()) path += "&node=" + f->node;
      CallResult r = Call(f->c, "GET", path);
      if (r.status != 200) return Print(f->c, r, [](const std::string&) {});
      json b = json::parse(r.body, nullptr, false);
      if (b.is_discarded()) return 1;
      std::string data = b.value("data", "");
      if (f->c.json) {
        std::cout << r.body << "\n" << std::flush;  // one reply per line, as the server sent it
      } else {
        std::cout << data << std::flush;
      }
      attempt = b.value("attempt", attempt);
      offset = b.value("next_offset", offset);
      if (b.value("expired", false) && offset == 0 && !f->c.json) {
        std::cerr << "job " << f->job << ": its output was removed (the server keeps a finished "
                  << "job's output for its output_retention)\n";
      }
      if (b.value("complete", false)) return 0;
      if (data.empty() && !f->follow) return 0;
    }
  };
}

}  // namespace rsv::cli
