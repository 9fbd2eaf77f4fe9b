#include <spdlog/sinks/stdout_sinks.h>
#include <spdlog/spdlog.h>
#include <sys/stat.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <atomic>
#include <condition_variable>
#include <csignal>
#include <cstdio>
#include <fstream>
#include <future>
#include <iostream>
#include <memory>
#include <mutex>
#include <sstream>
#include <thread>

#include "cli/commands.h"
#include "common/clock.h"
#include "common/http_client.h"
#include "common/sha256.h"
#include "server/api.h"
#include "server/control.h"
#include "server/http.h"
#include "server/leadership.h"

namespace rsv::cli {
namespace {

struct ServerFlags {
  std::string listen = "127.0.0.1:8080";
  std::string db = "./reservoir.db";
  std::string advertise;  // default: http://LISTEN (the host name for a wildcard address)
  std::string name;       // default: the host name
  std::string lease = "5s";
  std::string config;
  std::string port_file;
  std::string log_dir;
  int threads = 2;
  server::HttpLimits limits;
};

// RunServer's result when the server stepped down: run it again, as a standby.
constexpr int kStartAgain = -1;

// `again`: started again after a step-down (it then waits for an unreachable store).
int RunServer(const ServerFlags& f, int* bound_port, bool again) {
  ::umask(077);  // the database and jobs' output are readable by this user only
  server::ServerConfig config;
  if (!f.config.empty()) {
    std::ifstream in(f.config);
    if (!in) {
      std::cerr << "reservoir server: cannot read config '" << f.config << "'\n";
      return 2;
    }
    std::stringstream text;
    text << in.rdbuf();
    Result<server::ServerConfig> c = server::ParseServerConfig(text.str());
    if (!c.ok()) {
      std::cerr << "reservoir server: config " << f.config << ": " << c.status().field() << ": "
                << c.status().message() << "\n";
      return 2;
    }
    config = std::move(*c);
  } else {
    config = *server::ParseServerConfig("{}");
  }
  // Job output beside the SQLite file; for a PostgreSQL URL (never a path: it may hold a
  // password), reservoir.logs in the working directory.
  config.log_dir = !f.log_dir.empty()    ? f.log_dir
                   : IsPostgresUrl(f.db) ? std::string("reservoir.logs")
                                         : f.db + ".logs";
  if (f.limits.max_connections < 16 || f.limits.max_connections > 1'000'000) {
    std::cerr << "reservoir server: --max-connections must be 16-1000000\n";
    return 2;
  }
  if (f.limits.request_timeout_s < 1 || f.limits.request_timeout_s > 3600) {
    std::cerr << "reservoir server: --request-timeout must be 1-3600 seconds\n";
    return 2;
  }
  if (f.threads < 1 || f.threads > 64) {
    std::cerr << "reservoir server: --threads must be 1-64\n";
    return 2;
  }
  config.shared_store = IsPostgresUrl(f.db);
  Result<Duration> lease = Duration::Parse(f.lease);
  if (!lease.ok() || *lease < Duration::Seconds(1) || *lease > Duration::Minutes(10)) {
    std::cerr << "reservoir server: --lease must be a duration from 1s to 10m (e.g. 5s)\n";
    return 2;
  }
  if (!f.advertise.empty() &&
      (f.advertise.find(',') != std::string::npos || !BadServerUrls(f.advertise).empty())) {
    std::cerr << "reservoir server: --advertise must be one http://HOST[:PORT] URL"
              << (f.advertise.find(',') != std::string::npos
                      ? ""
                      : " (" + BadServerUrls(f.advertise) + ")")
              << "\n";
    return 2;
  }
  // SIGINT/SIGTERM end the server cleanly: block them here, wait for them on one thread.
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGINT);
  sigaddset(&signals, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);
  Result<std::unique_ptr<Store>> store = OpenStore(f.db);
  // After a step-down (a database that went away, say) the server waits for the store to come
  // back, trying every second; a signal still ends it. At first start it says what is wrong.
  for (bool said = false; !store.ok() && again; store = OpenStore(f.db)) {
    if (!said)
      std::cerr << "reservoir server: waiting for the store: " << store.status().ToString() << "\n";
    said = true;
    const timespec second{1, 0};
    if (sigtimedwait(&signals, nullptr, &second) > 0) return 0;
  }
  if (!store.ok()) {
    std::cerr << "reservoir server: " << store.status().ToString() << "\n";
    return 1;
  }
  SystemClock clock;
  server::ControlPlane control(config, std::move(*store), &clock);
  Status loaded = control.Load();
  if (!loaded.ok()) {
    std::cerr << "reservoir server: " << loaded.ToString() << "\n";
    return 1;
  }
  // Structured logs: one JSON object per line on stderr, with the request id.
  auto log =
      spdlog::get("reservoir") ? spdlog::get("reservoir") : spdlog::stderr_logger_mt("reservoir");
  log->set_pattern(R"({"ts":"%Y-%m-%dT%H:%M:%S.%fZ","level":"%l",%v})",
                   spdlog::pattern_time_type::utc);
  SteadyTicker ticker;
  server::Api api(&control, &clock, &ticker,
                  [log](int64_t id, const std::string& method, const std::string& path, int status,
                        int64_t ns) {
                    log->info(
                        R"("request_id":{},"method":"{}","path":"{}","status":{},"ms":{:.3f})", id,
                        method, path, status, ns / 1e6);
                  });
  server::HttpServer http;
  Result<int> port = http.Listen(f.listen, &api, f.limits);
  if (!port.ok()) {
    std::cerr << "reservoir server: " << port.status().ToString() << "\n";
    return 1;
  }
  const std::string host = f.listen.substr(0, f.listen.rfind(':'));
  *bound_port = *port;

  // High availability (docs/ha.md): every server on one store runs the same loop; the one that
  // holds the lease leads, the others follow the log and take over when it lapses.
  char hostname[256] = {};
  ::gethostname(hostname, sizeof hostname - 1);
  server::LeadershipOptions ha;
  ha.holder = f.name.empty() ? std::string(hostname) : f.name;
  const bool wildcard = host == "0.0.0.0" || host == "[::]" || host == "::";
  ha.address = f.advertise.empty() ? "http://" + (wildcard ? std::string(hostname) : host) + ":" +
                                         std::to_string(*port)
                                   : f.advertise;
  ha.lease = *lease;
  ha.renew_every = Duration::Micros(std::max<int64_t>(lease->micros() / 5, 200'000));
  // Stopping (a signal, or a step-down) runs on a thread of its own: writes in flight are
  // answered and parked long-polls released while the HTTP server can still send the replies,
  // then it stops.
  std::mutex stop_mu;
  std::condition_variable stop_cv;
  bool stop = false, signalled = false, exiting = false;
  std::atomic<bool> stepped_down{false};
  auto request_stop = [&](bool by_signal) {
    std::lock_guard<std::mutex> lock(stop_mu);
    stop = true;
    signalled = signalled || by_signal;
    stop_cv.notify_all();
  };
  control.OnStepDown([&](const std::string&) {
    stepped_down = true;
    request_stop(false);  // and start again as a standby (RunServer's caller)
  });
  server::Leadership leadership(
      &control, ha, &clock, [log](const std::string& line) { log->info(R"("ha":"{}")", line); });
  if (Status s = leadership.Start(); !s.ok()) {
    std::cerr << "reservoir server: " << s.message() << "\n";
    return 1;
  }
  if (control.leading() && !control.HasAdmin()) {
    const char* env = std::getenv("RESERVOIR_ADMIN_TOKEN");
    std::string token = env && *env ? env : server::RandomToken("rsv_admin_");
    std::promise<Status> done;
    server::cmd::AddToken admin;
    admin.admin = true;
    admin.hash = Sha256Hex(token);
    control.Execute(admin, [&](Result<std::string> r) { done.set_value(r.status()); });
    Status s = done.get_future().get();
    if (!s.ok()) {
      std::cerr << "reservoir server: creating the admin token: " << s.ToString() << "\n";
      return 1;
    }
    if (!(env && *env)) std::cout << "admin token (shown once): " << token << std::endl;
  }
  std::cout << "reservoir server listening on http://" << host << ":" << *port << " ("
            << (IsPostgresUrl(f.db) ? "PostgreSQL" : "db " + f.db) << ", "
            << (control.loaded_snapshot() > 0
                    ? "snapshot at seq " + std::to_string(control.loaded_snapshot()) + " and "
                    : std::string())
            << control.commands_replayed() << " commands replayed, "
            << (control.leading() ? "leading" : "standby of " + control.Leader().first)
            << "); the dashboard is at / on the same address" << std::endl;
  if (!f.port_file.empty()) {
    std::ofstream(f.port_file + ".tmp") << *port << "\n";
    std::rename((f.port_file + ".tmp").c_str(), f.port_file.c_str());
  }
  http.Every(static_cast<int>(config.tick.micros() / 1000), [&] { control.Tick(); });
  std::thread waiter([&] {
    int sig = 0;
    sigwait(&signals, &sig);
    std::lock_guard<std::mutex> lock(stop_mu);
    if (exiting) return;  // woken below to end
    std::cout << "reservoir server: stopping" << std::endl;
    stop = signalled = true;
    stop_cv.notify_all();
  });
  std::thread stopper([&] {
    {
      std::unique_lock<std::mutex> lock(stop_mu);
      stop_cv.wait(lock, [&] { return stop; });
    }
    leadership.Stop();
    http.Stop();
  });
  http.Run(f.threads);
  request_stop(false);  // the HTTP server ended by itself
  stopper.join();
  {
    std::lock_guard<std::mutex> lock(stop_mu);
    exiting = true;
  }
  pthread_kill(waiter.native_handle(), SIGTERM);
  waiter.join();
  if (signalled) return 0;  // a signal ends the server, stepped down or not
  if (stepped_down) {
    // Deposed by a server of the same name: two servers share one (a restart takes its own
    // lease back at once), and restarting would depose that one in turn, back and forth.
    Result<Lease> now = control.store()->ReadLease();
    if (now.ok() && now->live && now->holder == ha.holder && now->epoch != leadership.epoch()) {
      std::cerr << "reservoir server: another server on this database runs as '" << ha.holder
                << "'; give each server its own --name\n";
      return 1;
    }
    // What this process applied may hold commands that never became durable: it starts again
    // from the log, as a standby of whoever leads now.
    std::cout << "reservoir server: stepped down; starting again as a standby" << std::endl;
    return kStartAgain;
  }
  return 0;
}

}  // namespace

Action AddServer(CLI::App& app) {
  auto f = std::make_shared<ServerFlags>();
  CLI::App* s = app.add_subcommand("server", "Run the control plane (REST API, scheduler, store)");
  s->add_option("--listen", f->listen, "HOST:PORT to listen on (port 0 picks one)");
  s->add_option("--db", f->db,
                "SQLite database file, or a PostgreSQL URL (postgresql://USER@HOST/DB): several "
                "servers on one database make one leader and its standbys (docs/ha.md)");
  s->add_option("--advertise", f->advertise,
                "This server's URL as clients and agents reach it, handed out by standbys "
                "(default http://LISTEN)");
  s->add_option("--name", f->name,
                "This server's name among the servers on one database, one per server; a "
                "restart under the same name takes its lease back at once (default: the host "
                "name)");
  s->add_option("--lease", f->lease,
                "How long the leader's lease lasts without renewal (renewed every fifth of it; "
                "a standby takes over after it lapses)");
  s->add_option("--config", f->config,
                "Config file (JSON: pools, nodes, tick, heartbeat_timeout, start_timeout)");
  s->add_option("--threads", f->threads, "HTTP threads");
  s->add_option("--max-connections", f->limits.max_connections,
                "Open connections at most (beyond it the longest-idle one is closed; default "
                "4096, kept below the open-file limit)");
  s->add_option("--request-timeout", f->limits.request_timeout_s,
                "Seconds a client has to send each whole request (idle connections close then)");
  s->add_option("--log-dir", f->log_dir,
                "Where job output shipped by agents is kept (default DB.logs; with PostgreSQL, "
                "reservoir.logs)");
  s->add_option("--port-file", f->port_file, "Write the bound port to this file");
  return [f] {
    ServerFlags flags = *f;
    int port = 0;
    int rc;
    bool again = false;
    while ((rc = RunServer(flags, &port, again)) == kStartAgain) {
      again = true;
      flags.listen = flags.listen.substr(0, flags.listen.rfind(':') + 1) + std::to_string(port);
    }
    return rc;
  };
}

}  // namespace rsv::cli
