// Client subcommands for jobs: submit (also Slurm batch scripts), jobs, job, cancel, release.
#include <CLI/CLI.hpp>
#include <fstream>
#include <iostream>
#include <memory>
#include <nlohmann/json.hpp>
#include <sstream>

#include "cli/client.h"
#include "cli/commands.h"
#include "cli/slurm.h"
#include "common/text.h"
#include "core/model.h"

namespace rsv::cli {
namespace {

using json = nlohmann::json;

// A word for sh: as is when it has nothing the shell would read, else in single quotes.
std::string ShellQuote(const std::string& w) {
  if (!w.empty() && w.find_first_not_of("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
                                        "0123456789_./:=@%+,-") == std::string::npos) {
    return w;
  }
  std::string out = "'";
  for (char c : w) out += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return out + "'";
}

std::string Nodes(const json& j) {
  std::string out;
  for (const json& p : j.value("placement", json::array())) {
    out += (out.empty() ? "" : ",") + p.value("node", "");
  }
  if (out.empty()) {  // a job no longer running: where its last attempt ran, in parentheses
    for (const json& p : j.value("last_placement", json::array())) {
      out += (out.empty() ? "" : ",") + p.value("node", "");
    }
    if (!out.empty()) out = "(" + out + ")";
  }
  return out.empty() ? "-" : out;
}

void PrintJob(const json& j) {
  for (const auto& [k, v] : j.items()) {
    // Instants as local times ("submitted: 2026-11-30 08:30"); --json keeps the microseconds.
    if (k.size() > 3 && k.compare(k.size() - 3, 3, "_us") == 0 && v.is_number_integer()) {
      std::cout << k.substr(0, k.size() - 3) << ": " << LocalTime(v.get<int64_t>()) << "\n";
      continue;
    }
    std::cout << k << ": " << Printable(v.is_string() ? v.get<std::string>() : v.dump()) << "\n";
  }
}

}  // namespace

Action AddSubmit(CLI::App& app) {
  struct Flags {
    ClientFlags c;
    std::string pool, tier = "spot", limit, fallback, notice, name, tenant, workdir;
    std::vector<std::string> after, env, command;
    std::string gpus, resize_mode, resize_cooldown, gpu_memory;
    int max_restarts = 0;
    int64_t cpu_millis = 0, memory_mib = 0;
    std::string time_limit;
  };
  auto f = std::make_shared<Flags>();
  CLI::App* s = app.add_subcommand("submit", "Submit a job (a command, or a Slurm batch script)");
  AddClientFlags(s, &f->c);
  s->add_option("--pool", f->pool, "Pool (default: the script's --partition, else gpu)");
  s->add_option("--gpus", f->gpus,
                "GPUs (a gang: all or nothing); MIN:MAX[:STEP] for an elastic spot job; 0.25 "
                "for a share of one GPU (spot, to a thousandth)");
  s->add_option("--resize-mode", f->resize_mode,
                "Elastic jobs: restart (default; the next attempt runs at the new size) or "
                "signal (in place: $RESERVOIR_RESIZE_FILE and SIGUSR1)");
  s->add_option("--resize-cooldown", f->resize_cooldown,
                "Elastic jobs: no regrowth for this long after a shrink (default 5m)");
  s->add_option("--tier", f->tier, "reserved | spot | auto");
  s->add_option("--limit", f->limit, "Limit price per GPU-hour (spot, auto)");
  s->add_option("--fallback", f->fallback, "Reserved jobs: continue as spot at this limit");
  s->add_option("--notice", f->notice, "Time the job needs to checkpoint (e.g. 60s)");
  s->add_option("--name", f->name, "Job name");
  s->add_option("--max-restarts", f->max_restarts, "Failed attempts requeued (-1: always)");
  s->add_option("--after", f->after, "afterok:ID or afterany:ID (repeatable)");
  s->add_option("--env", f->env, "NAME=value (repeatable)");
  s->add_option("--workdir", f->workdir, "Working directory on the node");
  s->add_option("--cpu-millis", f->cpu_millis, "CPU limit in thousandths of a core (cgroup v2)");
  s->add_option("--memory-mib", f->memory_mib, "Memory limit in MiB (cgroup v2)");
  s->add_option("--gpu-memory", f->gpu_memory,
                "With a share of one GPU (--gpus 0.25): the GPU memory it needs, e.g. 20GiB");
  s->add_option("--time-limit", f->time_limit,
                "Wall-clock limit of each attempt (e.g. 2h); the agent stops it then (exit 124)");
  s->add_option("--tenant", f->tenant, "Admin only: the tenant to submit for");
  s->add_option("command", f->command, "Command, or the path of a Slurm batch script")->required();
  return [f] {
    json body = {{"tier", f->tier}};
    std::string cmd;
    // One word is a command line as written (`-- "python a.py | tee log"`); several are argv,
    // quoted for the job's shell so that `-- sh -c 'echo a; echo b'` runs as typed.
    for (const std::string& w : f->command) {
      cmd += (cmd.empty() ? "" : " ") + (f->command.size() == 1 ? w : ShellQuote(w));
    }
    GpuRange gpus;
    if (!f->gpus.empty()) {
      Result<GpuRange> r = ParseGpuRange(f->gpus);
      if (!r.ok()) {
        std::cerr << "error: --gpus: " << r.status().message() << "\n";
        return 2;
      }
      gpus = *r;
    }
    std::string name = f->name;
    std::vector<std::string> after = f->after;
    int restarts = f->max_restarts;
    std::string pool = f->pool, time_limit = f->time_limit;
    int64_t cpu_millis = f->cpu_millis, memory_mib = f->memory_mib;
    std::vector<std::string> env = f->env;
    if (f->command.size() == 1) {
      std::ifstream in(f->command[0]);
      std::stringstream text;
      if (in) text << in.rdbuf();
      if (in && text.str().find("#SBATCH") != std::string::npos) {
        auto sb = ParseSlurmScript(text.str());
        if (!sb.ok()) {
          std::cerr << "error: " << f->command[0] << ": " << sb.status().field() << ": "
                    << sb.status().message() << "\n";
          return 2;
        }
        for (const std::string& u : sb->unsupported) {
          std::cerr << "warning: " << f->command[0]
                    << ": unsupported #SBATCH directive ignored: " << u << "\n";
        }
        // Flags given on the command line win over the script's directives, as with sbatch.
        if (gpus.min == 0) gpus.min = sb->gpus;
        if (name.empty()) name = sb->name;
        if (pool.empty()) pool = sb->partition;
        if (time_limit.empty() && sb->time_limit_s > 0)
          time_limit = std::to_string(sb->time_limit_s) + "s";
        if (cpu_millis == 0) cpu_millis = sb->cpu_millis;
        if (memory_mib == 0) memory_mib = sb->memory_mib;
        for (const auto& [kind, id] : sb->dependencies)
          after.push_back(kind + ":" + std::to_string(id));
        if (sb->requeue && restarts == 0) restarts = -1;
        // The script travels verbatim in the job's environment and runs with its interpreter.
        env.push_back("RESERVOIR_BATCH_SCRIPT=" + text.str());
        cmd = "exec " + sb->interpreter + " -c \"$RESERVOIR_BATCH_SCRIPT\" reservoir-batch";
      }
    }
    if (gpus.min <= 0) {
      std::cerr << "error: --gpus: give a GPU count (or #SBATCH --gpus / --gres=gpu:N)\n";
      return 2;
    }
    body["pool"] = pool.empty() ? "gpu" : pool;
    body["gpus"] = gpus.min;
    if (gpus.milli < kMilliPerGpu) body["gpus"] = gpus.milli / 1000.0;  // a share of one GPU
    if (!f->gpu_memory.empty()) {
      Result<int64_t> mib = ParseMebibytes("--gpu-memory", f->gpu_memory);
      if (!mib.ok()) {
        std::cerr << "error: " << mib.status().field() << ": " << mib.status().message() << "\n";
        return 2;
      }
      body["gpu_memory_mib"] = *mib;
    }
    if (gpus.max > 0) {
      body["gpus"] = {{"min", gpus.min}, {"max", gpus.max}};
      if (gpus.step > 0) body["gpus"]["step"] = gpus.step;
    }
    if (!f->resize_mode.empty()) body["resize_mode"] = f->resize_mode;
    if (!f->resize_cooldown.empty()) body["resize_cooldown"] = f->resize_cooldown;
    body["command"] = cmd;
    body["max_restarts"] = restarts;
    if (!name.empty()) body["name"] = name;
    if (!f->limit.empty()) body["limit_price"] = f->limit;
    if (!f->fallback.empty()) body["fallback_limit"] = f->fallback;
    if (!f->notice.empty()) body["notice"] = f->notice;
    if (!f->workdir.empty()) body["workdir"] = f->workdir;
    if (cpu_millis != 0) body["cpu_millis"] = cpu_millis;
    if (memory_mib != 0) body["memory_mib"] = memory_mib;
    if (!time_limit.empty()) body["time_limit"] = time_limit;
    if (!f->tenant.empty()) body["tenant"] = f->tenant;
    if (!env.empty()) body["env"] = env;
    json deps = json::array();
    for (const std::string& a : after) {
      size_t colon = a.find(':');
      if (colon == std::string::npos) {
        std::cerr << "error: --after: '" << a << "' is not afterok:ID or afterany:ID\n";
        return 2;
      }
      deps.push_back({{"kind", a.substr(0, colon)}, {"job", std::atoll(a.c_str() + colon + 1)}});
    }
    if (!deps.empty()) body["dependencies"] = deps;
    return Print(f->c, Call(f->c, "POST", "/v1/jobs", body.dump()), [](const std::string& b) {
      json j = json::parse(b);
      std::cout << "job " << j["id"] << " " << j["state"].get<std::string>();
      if (j["state"] == "running")
        std::cout << " on " << Nodes(j) << " as " << j["running_as"].get<std::string>();
      if (j.contains("gpus_held")) std::cout << " with " << j["gpus_held"] << " GPUs";
      std::cout << "\n";
    });
  };
}

Action AddJobs(CLI::App& app) {
  struct Flags {
    ClientFlags c;
    std::string state, tier, pool, tenant;
    bool all = false;
  };
  auto f = std::make_shared<Flags>();
  CLI::App* s = app.add_subcommand("jobs", "List jobs (those not ended, unless --all or --state)");
  AddClientFlags(s, &f->c);
  s->add_option("--state", f->state, "Only jobs in this state (or active: not ended)");
  s->add_flag("--all", f->all, "Every job, ended ones too");
  s->add_option("--tier", f->tier, "Only this tier");
  s->add_option("--pool", f->pool, "Only this pool");
  s->add_option("--tenant", f->tenant, "Only this tenant's (admin)");
  return [f] {
    std::string q = "/v1/jobs?limit=1000";
    if (!f->state.empty()) {
      q += "&state=" + f->state;
    } else if (!f->all) {
      q += "&state=active";
    }
    if (!f->tenant.empty()) q += "&tenant=" + f->tenant;
    if (!f->tier.empty()) q += "&tier=" + f->tier;
    if (!f->pool.empty()) q += "&pool=" + f->pool;
    // Page by page (the API's cursor is the last id seen), into one list.
    CallResult all;
    all.status = 200;
    json merged = json::array();
    for (int64_t after = 0;;) {
      CallResult page = Call(f->c, "GET", q + "&after=" + std::to_string(after));
      if (page.status != 200) {
        all = page;
        break;
      }
      json rows = json::parse(page.body, nullptr, false);
      if (!rows.is_array() || rows.empty()) break;
      for (json& r : rows) merged.push_back(std::move(r));
      if (rows.size() < 1000) break;
      after = merged.back()["id"].get<int64_t>();
    }
    if (all.status == 200) all.body = merged.dump();
    return Print(f->c, all, [](const std::string& b) {
      std::vector<std::vector<std::string>> rows;
      for (const json& j : json::parse(b)) {
        std::string gpus = std::to_string(j["gpus"].get<int>());
        if (j.contains("gpu_milli")) {  // a share of one GPU
          char share[16];
          std::snprintf(share, sizeof share, "0.%03d", j["gpu_milli"].get<int>());
          gpus = share;
        }
        if (j.contains("elastic")) {  // held now (min:max)
          gpus = std::to_string(j.value("gpus_held", 0)) + " (" + gpus + ":" +
                 std::to_string(j["elastic"]["max"].get<int>()) + ")";
        }
        if (j.contains("unit_of")) {
          gpus += " (unit " + std::to_string(j["unit"].get<int>()) + " of " +
                  std::to_string(j["unit_of"].get<int64_t>()) + ")";
        }
        rows.push_back(
            {std::to_string(j["id"].get<int64_t>()), j.value("name", ""), j["tenant"], j["tier"],
             j["state"], gpus,
             j["tier"] == "reserved" ? std::string("-") : j["limit_price"].get<std::string>(),
             std::to_string(j["attempt"].get<int>()), Nodes(j), j.value("reason", "")});
      }
      PrintTable(
          {"ID", "NAME", "TENANT", "TIER", "STATE", "GPUS", "LIMIT", "ATTEMPT", "NODES", "REASON"},
          rows);
    });
  };
}

namespace {
Action JobAction(CLI::App& app, const std::string& verb, const std::string& help) {
  struct Flags {
    ClientFlags c;
    int64_t id = 0;
  };
  auto f = std::make_shared<Flags>();
  CLI::App* s = app.add_subcommand(verb, help);
  AddClientFlags(s, &f->c);
  s->add_option("job", f->id, "Job id")->required();
  return [f, verb] {
    std::string path = "/v1/jobs/" + std::to_string(f->id);
    CallResult r = verb == "job" ? Call(f->c, "GET", path) : Call(f->c, "POST", path + "/" + verb);
    return Print(f->c, r, [verb](const std::string& b) {
      json j = json::parse(b);
      if (verb == "job") return PrintJob(j);
      // cancel, release: what happened, not the whole job (`reservoir job ID` shows it).
      std::cout << "job " << j["id"] << " " << j["state"].get<std::string>() << "\n";
    });
  };
}
}  // namespace

Action AddJob(CLI::App& app) { return JobAction(app, "job", "Show one job"); }

Action AddWhy(CLI::App& app) {
  struct Flags {
    ClientFlags c;
    int64_t id = 0;
  };
  auto f = std::make_shared<Flags>();
  CLI::App* s = app.add_subcommand("why", "Why a pending job is not running, and its place");
  AddClientFlags(s, &f->c);
  s->add_option("job", f->id, "Job id")->required();
  return [f] {
    return Print(f->c, Call(f->c, "GET", "/v1/jobs/" + std::to_string(f->id) + "/why"),
                 [](const std::string& b) {
                   json w = json::parse(b);
                   std::cout << "job " << w["job"]
                             << " is pending: " << w["reason"].get<std::string>() << "\n  "
                             << Printable(w["detail"].get<std::string>()) << "\n";
                   if (w["position"].get<int>() > 0) {
                     std::cout << "  position " << w["position"] << " of " << w["bids"]
                               << " bids in its pool (price " << w["price"].get<std::string>()
                               << ", its limit " << w["limit"].get<std::string>() << ")\n";
                   }
                   if (w.contains("runs_at_price")) {
                     std::cout << "  it would run at a limit of "
                               << w["runs_at_price"].get<std::string>() << "\n";
                   }
                 });
  };
}
Action AddCancel(CLI::App& app) { return JobAction(app, "cancel", "Cancel a job"); }
Action AddRelease(CLI::App& app) {
  return JobAction(app, "release", "Give back the GPUs of a job under notice now");
}

}  // namespace rsv::cli
