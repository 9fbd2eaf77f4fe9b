#include "agent/agent.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "common/http_client.h"

namespace rsv::agent {
namespace {

using json = nlohmann::json;

// Output bytes per attempt, and in all, per sync: even fully escaped (6 bytes of JSON per byte
// of binary output) a report stays under the server's 1 MiB body limit.
constexpr int64_t kLogChunk = 64 * 1024;
constexpr int64_t kLogBudget = 128 * 1024;

std::string Dump(const json& j) { return j.dump(-1, ' ', false, json::error_handler_t::replace); }

// Bytes of `path` from `offset`, at most kLogChunk.
std::string ReadFrom(const std::string& path, int64_t offset) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return "";
  in.seekg(offset);
  std::string data(kLogChunk, '\0');
  in.read(data.data(), kLogChunk);
  data.resize(static_cast<size_t>(std::max<std::streamsize>(in.gcount(), 0)));
  return data;
}

// The GPUs as the server records them (index, uuid, model, memory, utilization, health).
json Inventory(const std::vector<GpuInfo>& gpus) {
  json out = json::array();
  for (const GpuInfo& g : gpus) {
    json one = {{"index", g.index},
                {"uuid", g.uuid},
                {"name", g.name},
                {"memory_mib", g.memory_mib},
                {"utilization_pct", g.utilization_pct},
                {"healthy", g.healthy}};
    if (!g.parent_uuid.empty()) one["mig_parent_uuid"] = g.parent_uuid;
    out.push_back(std::move(one));
  }
  return out;
}

std::vector<std::string> DeviceIds(const std::vector<GpuInfo>& gpus) {
  std::vector<std::string> out;
  for (const GpuInfo& g : gpus) out.push_back(DeviceId(g));
  return out;
}

// What is wrong with which GPU; empty when all are healthy.
std::string Health(const std::vector<GpuInfo>& gpus) {
  std::string out;
  for (const GpuInfo& g : gpus) {
    if (g.healthy) continue;
    if (!out.empty()) out += "; ";
    out += "GPU " + std::to_string(g.index) + " (" + g.uuid + "): " + g.health_detail;
  }
  return out;
}

}  // namespace

Agent::Agent(AgentConfig config, std::unique_ptr<GpuProbe> probe, const Clock* clock)
    : config_(std::move(config)),
      probe_(std::move(probe)),
      clock_(clock),
      servers_(config_.server, /*patience_ms=*/0) {  // the sync loop retries itself
  if (::pipe2(wake_, O_CLOEXEC | O_NONBLOCK) != 0) wake_[0] = wake_[1] = -1;
}

Agent::~Agent() {
  for (int fd : wake_) {
    if (fd >= 0) ::close(fd);
  }
}

void Agent::Log(const std::string& line) {
  std::fprintf(stderr, "{\"ts_us\":%lld,\"node\":\"%s\",\"msg\":%s}\n",
               static_cast<long long>(clock_->Now().micros()), config_.node.c_str(),
               Dump(json(line)).c_str());
}

bool Agent::ServerIsLocal() const {
  // Given standbys, or a server on a shared store (standbys this agent was not told of may lead),
  // a refusal proves nothing: another server may lead and count this node's heartbeat.
  if (servers_.urls().size() > 1 || shared_store_) return false;
  for (std::string host : servers_.urls()) {
    if (host.rfind("http://", 0) == 0) host = host.substr(7);
    if (host.rfind("[::1]", 0) == 0) continue;
    host = host.substr(0, host.find_first_of(":/"));
    if (host != "localhost" && host.rfind("127.", 0) != 0) return false;
  }
  return true;
}

Duration Agent::FenceAfter() const {
  // Well inside the server's heartbeat timeout, so attempts are gone before it requeues them.
  return Duration::Micros(heartbeat_s_ * 750'000);
}

void Agent::Touch() {
  // Its modification time is what the attempts' supervisors watch (see LaunchSpec).
  std::ofstream(config_.state_dir + "/heartbeat", std::ios::trunc)
      << clock_->Now().micros() << "\n";
}

void Agent::Drain() {
  char buf[64];
  while (::read(wake_[0], buf, sizeof buf) > 0) {
  }
}

void Agent::SaveState() {
  json attempts = json::array();
  std::map<Key, Attempt> live;
  for (const Attempt& a : exec_.Attempts()) live[{a.job, a.attempt}] = a;
  for (const Key& k : launched_) {
    auto it = live.find(k);
    auto mark = checkpoint_seen_.find(k);
    attempts.push_back({{"job", k.first},
                        {"attempt", k.second},
                        {"pid", it == live.end() ? 0 : it->second.pid},
                        {"start_ticks", it == live.end() ? 0 : it->second.start_ticks},
                        {"checkpoint_us", mark == checkpoint_seen_.end() ? 0 : mark->second}});
  }
  const std::string path = config_.state_dir + "/agent.json";
  {
    std::ofstream out(path + ".tmp", std::ios::trunc);
    out << json{{"node", config_.node}, {"attempts", attempts}}.dump() << "\n";
    out.flush();
    if (!out) {
      Log("cannot write " + path + ".tmp");
      return;
    }
  }
  int fd = ::open((path + ".tmp").c_str(), O_RDONLY | O_CLOEXEC);
  if (fd >= 0) {
    ::fsync(fd);
    ::close(fd);
  }
  std::filesystem::rename(path + ".tmp", path);
}

void Agent::LoadState() {
  std::ifstream in(config_.state_dir + "/agent.json");
  if (!in) return;
  json s = json::parse(in, nullptr, false);
  if (s.is_discarded() || !s.contains("attempts")) {
    Log("ignoring an unreadable agent.json");
    return;
  }
  for (const json& a : s["attempts"]) {
    Attempt at;
    at.job = a.value("job", 0u);
    at.attempt = a.value("attempt", 0);
    at.pid = a.value("pid", 0);
    at.start_ticks = a.value("start_ticks", int64_t{0});
    launched_.insert({at.job, at.attempt});
    // The last checkpoint marker reported (or found at its start): one made while no agent ran
    // is reported at the next sync.
    const json& mark = a.contains("checkpoint_us") ? a["checkpoint_us"] : json();
    if (mark.is_number_integer()) checkpoint_seen_[{at.job, at.attempt}] = mark.get<int64_t>();
    if (exec_.Adopt(at, config_.state_dir)) {
      Log("found job " + std::to_string(at.job) + " attempt " + std::to_string(at.attempt) +
          " still running (pid " + std::to_string(at.pid) + ")");
    } else {
      reports_.push_back(Report{at.job, at.attempt, "lost", false, "ended while no agent ran"});
      Log("job " + std::to_string(at.job) + " attempt " + std::to_string(at.attempt) +
          " ended while no agent ran: reporting it lost");
    }
  }
}

std::string Agent::MpsPipe() const {
  std::string dir = config_.mps_pipe;
  if (dir.empty()) {
    const char* env = std::getenv("CUDA_MPS_PIPE_DIRECTORY");
    dir = env && *env ? env : "/tmp/nvidia-mps";
  }
  struct stat st;
  return ::stat((dir + "/control").c_str(), &st) == 0 ? dir : "";
}

bool Agent::Register() {
  Result<std::vector<GpuInfo>> gpus = probe_->Poll();
  if (!gpus.ok()) {
    Log("GPU discovery failed: " + gpus.status().message());
    return false;
  }
  devices_ = DeviceIds(*gpus);
  json body = {{"pool", config_.pool},         {"gpus", static_cast<int64_t>(gpus->size())},
               {"topology", config_.topology}, {"probe", probe_->kind()},
               {"cgroups", cgroup_note_},      {"inventory", Inventory(*gpus)}};
  if (!config_.address.empty()) body["address"] = config_.address;
  HttpReply r = servers_.Call("POST", "/v1/nodes/" + config_.node + "/register", config_.token,
                              Dump(body), wake_[0], 10'000);
  if (r.status == 200 || r.status == 201) {
    last_heard_ = clock_->Now();
    Touch();
    json reply = json::parse(r.body, nullptr, false);
    if (!reply.is_discarded()) {
      heartbeat_s_ = std::max<int64_t>(1, reply.value("heartbeat_timeout_s", heartbeat_s_));
      shared_store_ = reply.value("shared_store", false);
    }
    Log("registered with " + servers_.current() + ": " + std::to_string(gpus->size()) + " " +
        probe_->kind() + " GPUs in pool " + config_.pool);
    last_error_.clear();
    return true;
  }
  std::string why = r.status == 0 ? r.error : "HTTP " + std::to_string(r.status) + ": " + r.body;
  if (r.status >= 400 && r.status < 500) {  // refused (token, pool, GPU count): retrying won't help
    Log("the server refused to register this node: " + why);
    refused_ = true;
    return false;
  }
  if (why != last_error_) Log("cannot register yet: " + why);
  last_error_ = why;
  return false;
}

void Agent::CollectExits() {
  for (const ExitStatus& e : exec_.Reap(false)) {
    Report r;
    r.job = e.job;
    r.attempt = e.attempt;
    // Killed by its supervisor's fence while this agent was out of touch with the server (see
    // LaunchSpec): it did not fail, it is reported lost, which costs it no restart.
    const bool fenced = e.signaled && e.code == SIGKILL &&
                        (clock_->Now() - last_heard_ > FenceAfter() ||
                         clock_->Now() - fence_gap_ended_ < Duration::Seconds(5));
    r.status = e.lost || fenced ? "lost" : "exited";
    r.success = e.success();
    r.detail = fenced       ? "stopped: no contact with the server"
               : e.lost     ? "ended while no agent watched it"
               : e.signaled ? "signal " + std::to_string(e.code)
                            : "exit " + std::to_string(e.code);
    reports_.push_back(r);
    kill_at_.erase(e.job);
    notified_.erase({e.job, e.attempt});
    resize_sent_.erase(e.job);
    resize_acked_.erase(e.job);
    resize_kill_at_.erase(e.job);
    Log("job " + std::to_string(e.job) + " attempt " + std::to_string(e.attempt) + ": " + r.detail);
  }
  if (!reports_.empty()) SaveState();
}

bool Agent::ResizePending() const {
  return std::any_of(resize_kill_at_.begin(), resize_kill_at_.end(), [&](const auto& k) {
    return exec_.Running(k.first) && ResizeAck(k.first) < k.second.second;
  });
}

int64_t Agent::ResizeAck(uint32_t job) const {
  std::ifstream in(Executor::CheckpointDir(config_.state_dir, config_.checkpoint_root, job) +
                   "/.resize-ack");
  int64_t gen = 0;
  if (!(in >> gen) || gen < 0) return 0;
  return gen;
}

int64_t Agent::CheckpointMark(uint32_t job) const {
  struct stat sb {};
  const std::string marker =
      Executor::CheckpointDir(config_.state_dir, config_.checkpoint_root, job) + "/.checkpoint";
  if (::stat(marker.c_str(), &sb) != 0) return 0;
  return int64_t{sb.st_mtim.tv_sec} * 1'000'000 + sb.st_mtim.tv_nsec / 1'000;
}

bool Agent::Sync(bool urgent) {
  json jobs = json::array();
  std::map<Key, int64_t> checkpoints;  // reported in this sync
  for (const Attempt& a : exec_.Attempts()) {
    jobs.push_back({{"job", a.job}, {"attempt", a.attempt}, {"status", "running"}});
    // The resize generation the job says it has taken in (signal mode), when it is news.
    if (resize_sent_.count(a.job)) {
      const int64_t ack = ResizeAck(a.job);
      if (ack > 0 && ack != resize_acked_[a.job]) jobs.back()["resize_ack"] = ack;
    }
    // A checkpoint the job completed since the last report (docs/agent.md, "Checkpoints").
    const Key key{a.job, a.attempt};
    const int64_t mark = CheckpointMark(a.job);
    auto seen = checkpoint_seen_.find(key);
    if (seen == checkpoint_seen_.end()) {
      checkpoint_seen_[key] = mark;  // adopted after a restart: from now on
    } else if (mark != seen->second && mark != 0) {
      jobs.back()["checkpoint"] = true;
      jobs.back()["checkpoint_us"] = mark;
      checkpoints[key] = mark;
    }
  }
  json logs = json::array();
  std::set<Key> output_pending;
  int64_t budget = kLogBudget;
  for (const Key& k : launched_) {
    if (budget <= 0) {  // the rest waits for the next sync, and so do those attempts' exits
      output_pending.insert(k);
      continue;
    }
    const std::string path = Executor::LogPath(config_.state_dir, k.first, k.second);
    // Output past the cap is dropped here too, so a job cannot fill the host's disk.
    struct stat sb {};
    if (::stat(path.c_str(), &sb) == 0 && sb.st_size > config_.max_output_bytes) {
      if (::truncate(path.c_str(), config_.max_output_bytes) == 0 && capped_.insert(k).second) {
        Log("job " + std::to_string(k.first) + " attempt " + std::to_string(k.second) +
            ": output past " + std::to_string(config_.max_output_bytes >> 20) + " MiB dropped");
      }
    }
    std::string data = ReadFrom(path, shipped_[k]);
    if (shipped_[k] + static_cast<int64_t>(data.size()) > config_.max_output_bytes) {
      data.resize(
          static_cast<size_t>(std::max<int64_t>(0, config_.max_output_bytes - shipped_[k])));
    }
    // A capped attempt says so once its kept output is all shipped (the server adds a marker).
    const bool dropped =
        capped_.count(k) && !marked_.count(k) &&
        shipped_[k] + static_cast<int64_t>(data.size()) >= config_.max_output_bytes;
    if (data.empty() && !dropped) continue;
    budget -= static_cast<int64_t>(data.size());
    if (static_cast<int64_t>(data.size()) == kLogChunk) output_pending.insert(k);
    logs.push_back(
        {{"job", k.first}, {"attempt", k.second}, {"offset", shipped_[k]}, {"data", data}});
    if (dropped) logs.back()["dropped"] = true;
  }
  // An exit is reported once its output is all shipped, so the server's copy is complete.
  std::vector<Report> sent;
  for (const Report& r : reports_) {
    if (output_pending.count({r.job, r.attempt})) continue;
    jobs.push_back({{"job", r.job},
                    {"attempt", r.attempt},
                    {"status", r.status},
                    {"success", r.success},
                    {"detail", r.detail}});
    sent.push_back(r);
  }
  json report = {{"known", known_}, {"jobs", jobs}, {"logs", logs}};
  Result<std::vector<GpuInfo>> gpus = probe_->Poll();
  report["health"] = gpus.ok() ? Health(*gpus) : "GPU discovery failed: " + gpus.status().message();
  if (gpus.ok()) {
    report["gpus"] = Inventory(*gpus);
    devices_ = DeviceIds(*gpus);
  }
  // A shrink waiting for the job's acknowledgement: the server hears of it at once (the GPUs
  // it frees are someone's), so this sync does not park (the loop paces it).
  // Back from a failed or unanswered sync: the answer comes at once, so contact with a new
  // leader counts before the fence (a parked first sync would not).
  urgent = urgent || !sent.empty() || !logs.empty() || ResizePending() || out_of_touch_;
  // With standbys, a quarter of the heartbeat timeout: a frozen leader (it accepts connections
  // and answers nothing) is left for the next server well before this agent fences its jobs.
  const int64_t most = servers_.urls().size() > 1 ? heartbeat_s_ / 4 : heartbeat_s_ / 2;
  int64_t wait_s = urgent ? 0 : std::max<int64_t>(1, std::min<int64_t>(config_.wait_s, most));
  // A server that accepts but does not answer must not keep the agent from fencing (below).
  int64_t timeout_ms = wait_s * 1000 + 2000;
  const int64_t now = clock_->Now().micros();
  for (const auto& [job, deadline] : kill_at_) {
    timeout_ms = std::min(timeout_ms, std::max<int64_t>(1, (deadline - now) / 1000 + 1));
  }
  for (const auto& [job, kill] : resize_kill_at_) {
    timeout_ms = std::min(timeout_ms, std::max<int64_t>(1, (kill.first - now) / 1000 + 1));
  }
  const Timestamp began = clock_->Now();
  HttpReply r =
      servers_.Call("POST", "/v1/nodes/" + config_.node + "/sync?wait=" + std::to_string(wait_s),
                    config_.token, Dump(report), wake_[0], static_cast<int>(timeout_ms));
  if (r.interrupted) return true;  // go round again
  if (r.status == 0 && r.error == "timed out") {
    // No answer in time: the next sync (to the next server) asks for an answer at once.
    out_of_touch_ = true;
    return true;
  }
  if (r.status == 404) {
    Log("the server does not know this node: registering again");
    return Register();
  }
  if (r.status != 200) {
    std::string why = r.status == 0 ? r.error : "HTTP " + std::to_string(r.status) + ": " + r.body;
    if (why != last_error_) Log("sync failed (will retry): " + why);
    last_error_ = why;
    out_of_touch_ = true;
    if (r.refused && ServerIsLocal()) {
      // Nothing listens at the server's address on this very host: the server is not running,
      // so it cannot declare this node down, and a restarted server gives every agent a fresh
      // heartbeat timeout. Jobs keep running through a restart. (A remote refusal proves
      // nothing: a firewall may reject us while the server runs; that fences as a partition.)
      last_heard_ = clock_->Now();
      Touch();
    }
    return false;
  }
  if (!last_error_.empty()) Log("server reachable again");
  last_error_.clear();
  out_of_touch_ = false;
  // Out of touch past the fence until now: an attempt its supervisor killed meanwhile was
  // fenced, even if it is reaped after this contact (CollectExits).
  if (clock_->Now() - last_heard_ > FenceAfter()) fence_gap_ended_ = clock_->Now();
  // The server counts our heartbeat from when it answered (a second of slack for the network),
  // and at least from when the request arrived.
  last_heard_ = std::max(began, clock_->Now() - Duration::Seconds(1));
  Touch();
  json d = json::parse(r.body, nullptr, false);
  if (d.is_discarded()) return false;
  // Acknowledged: reports are done, ended attempts forgotten, output offsets advanced.
  for (const json& j : jobs) {
    if (j.contains("resize_ack")) resize_acked_[j["job"].get<uint32_t>()] = j["resize_ack"];
  }
  for (const auto& [key, mark] : checkpoints) checkpoint_seen_[key] = mark;
  bool forgot = !checkpoints.empty();  // saved below, so a restart does not report them again
  for (const Report& s : sent) {
    reports_.erase(std::remove_if(reports_.begin(), reports_.end(),
                                  [&](const Report& x) {
                                    return x.job == s.job && x.attempt == s.attempt &&
                                           x.status == s.status;
                                  }),
                   reports_.end());
    if (s.status != "start_failed" || !exec_.Running(s.job)) {
      forgot = forgot || launched_.erase({s.job, s.attempt}) > 0;
      checkpoint_seen_.erase({s.job, s.attempt});
      shipped_.erase({s.job, s.attempt});
      capped_.erase({s.job, s.attempt});
      marked_.erase({s.job, s.attempt});
    }
  }
  if (d.contains("logs")) {
    for (const json& a : d["logs"]) {
      Key k{a.value("job", 0u), a.value("attempt", 0)};
      if (launched_.count(k)) shipped_[k] = a.value("size", int64_t{0});
      if (a.value("dropped", false)) marked_.insert(k);
    }
  }
  if (forgot) SaveState();
  Reconcile(r.body);
  return true;
}

void Agent::Reconcile(const std::string& desired_json) {
  json d = json::parse(desired_json, nullptr, false);
  if (d.is_discarded() || !d.contains("jobs")) return;
  known_ = d.value("version", "");
  heartbeat_s_ = std::max<int64_t>(1, d.value("heartbeat_timeout_s", heartbeat_s_));
  shared_store_ = d.value("shared_store", shared_store_);
  std::map<uint32_t, json> want;
  for (const json& e : d["jobs"]) want[e.value("job", 0u)] = e;
  // Stop what this node should no longer run (cancelled, requeued while we were away).
  for (const Attempt& a : exec_.Attempts()) {
    auto it = want.find(a.job);
    if (it == want.end() || it->second.value("attempt", 0) != a.attempt) {
      Log("stopping job " + std::to_string(a.job) + " attempt " + std::to_string(a.attempt) +
          ": no longer assigned to this node");
      (void)exec_.Kill(a.job);
    }
  }
  for (const auto& [job, e] : want) {
    const int32_t attempt = e.value("attempt", 0);
    const Key key{job, attempt};
    const std::string state = e.value("state", "");
    if (exec_.Running(job)) {
      bool same = false;
      for (const Attempt& a : exec_.Attempts())
        same = same || (a.job == job && a.attempt == attempt);
      // A notice: preempted, or (restart mode) told to restart at a new size.
      if (same && !notified_.count(key) && e.contains("notice")) {
        const json& n = e["notice"];
        int64_t deadline = n.value("deadline_us", int64_t{0});
        Status s = exec_.Notify(job, deadline, n.value("reason", ""), n.value("price", ""));
        notified_.insert(key);
        kill_at_[job] = deadline;
        Log("notice to job " + std::to_string(job) + " (" + n.value("reason", "") +
            "): " + (s.ok() ? "SIGTERM sent" : s.message()));
      }
      if (same && e.contains("resize") && e["resize"].is_object()) {
        const int64_t gen = e["resize"].value("generation", int64_t{0});
        if (gen > resize_sent_[job]) {
          Status s = exec_.Resize(job, Dump(e["resize"]), /*signal=*/true);
          resize_sent_[job] = gen;
          if (e["resize"].contains("deadline_us")) {  // a shrink: GPUs go at this deadline
            resize_kill_at_[job] = {e["resize"].value("deadline_us", int64_t{0}), gen};
          }
          Log("resize of job " + std::to_string(job) + " to generation " + std::to_string(gen) +
              " (" + std::to_string(e["resize"].value("total", 0)) +
              " GPUs): " + (s.ok() ? "SIGUSR1 sent" : s.message()));
        }
      }
      continue;
    }
    if (launched_.count(key)) continue;  // ran here already: never twice
    bool reported = false;
    for (const Report& r : reports_) reported = reported || (r.job == job && r.attempt == attempt);
    if (reported) continue;
    if (state != "starting") {
      // Confirmed as running here, but this agent has no record of it.
      reports_.push_back(Report{job, attempt, "lost", false, "not running on this node"});
      continue;
    }
    LaunchSpec spec;
    spec.job = job;
    spec.attempt = attempt;
    spec.command = e.value("command", "");
    spec.env = e.value("env", std::vector<std::string>());
    spec.workdir = e.value("workdir", "");
    spec.gpus = e.value("gpus", std::vector<int32_t>());
    for (int32_t g : spec.gpus) {
      spec.devices.push_back(
          g >= 0 && g < static_cast<int32_t>(devices_.size()) ? devices_[g] : std::to_string(g));
    }
    spec.gpu_milli = e.value("gpu_milli", int32_t{0});
    spec.gpu_memory_mib = e.value("gpu_memory_mib", int64_t{0});
    if (spec.gpu_milli > 0 && spec.gpu_milli < 1000) spec.mps_pipe = MpsPipe();
    spec.state_dir = config_.state_dir;
    spec.checkpoint_root = config_.checkpoint_root;
    spec.cpu_millis = e.value("cpu_millis", int64_t{0});
    spec.memory_mib = e.value("memory_mib", int64_t{0});
    spec.time_limit_s = e.value("time_limit_s", int64_t{0});
    spec.cgroup_parent = cgroup_parent_;
    spec.pass_env = config_.pass_env;
    if (config_.users.switch_users) {
      auto mapped = config_.users.map.find(e.value("tenant", ""));
      if (mapped != config_.users.map.end()) {
        spec.uid = mapped->second.first;
        spec.gid = mapped->second.second;
      } else {
        spec.uid = spec.gid = config_.users.uid_base + e.value("tenant_id", int64_t{0});
      }
    }
    if (e.contains("gang") && e["gang"].is_object()) {
      const json& g = e["gang"];
      spec.gang.rank = g.value("rank", 0);
      spec.gang.nodes = g.value("nodes", std::vector<std::string>());
      spec.gang.gpus_per_node = g.value("gpus_per_node", 0);
      spec.gang.gpus = g.value("gpus", 0);
      spec.gang.master_port = g.value("master_port", int64_t{0});
    }
    spec.elastic_signal = e.contains("resize") && e["resize"].is_object();
    if (spec.elastic_signal) spec.resize_json = Dump(e["resize"]);
    spec.heartbeat_file = config_.state_dir + "/heartbeat";
    spec.fence_after_us = FenceAfter().micros();
    launched_.insert(key);
    checkpoint_seen_[key] = CheckpointMark(job);  // an earlier attempt's marker is not news
    SaveState();  // recorded before it runs: a crash from here on reports it, never reruns it
    std::string limits;
    Result<pid_t> pid = exec_.Start(spec, &limits);
    if (!pid.ok()) {
      reports_.push_back(Report{job, attempt, "start_failed", false, pid.status().message()});
      Log("job " + std::to_string(job) + " attempt " + std::to_string(attempt) +
          " could not start: " + pid.status().message());
      continue;
    }
    SaveState();
    started_ = true;
    if (spec.elastic_signal) {  // its resize file was written before it started
      resize_sent_[job] = e["resize"].value("generation", int64_t{0});
    }
    Log("started job " + std::to_string(job) + " attempt " + std::to_string(attempt) + " (pid " +
        std::to_string(*pid) + ", limits: " + limits + ")");
  }
}

int Agent::Run(const std::atomic<bool>* stop, bool stop_jobs) {
  // What the agent writes (agent.json, the heartbeat, logs) is its own; jobs pass through its
  // directories (0711) to their checkpoint directories and notice files only.
  ::umask(077);
  std::error_code ec;
  std::filesystem::create_directories(config_.state_dir, ec);
  if (ec || ::chmod(config_.state_dir.c_str(), 0711) != 0) {
    Log("cannot create the state directory " + config_.state_dir + ": " +
        (ec ? ec.message() : std::string(std::strerror(errno))));
    return 1;
  }
  if (config_.users.switch_users) {
    Log("jobs run as their tenant's user (mapped, else uid " +
        std::to_string(config_.users.uid_base) + " + tenant id), never as the agent");
  } else {
    Log("WARNING: the agent is not root, so jobs run as its own user (uid " +
        std::to_string(::getuid()) +
        "): they can read its state directory and each other's checkpoints; run the agent as "
        "root for isolation (docs/agent.md)");
  }
  Result<std::string> cg = DetectCgroups();
  if (cg.ok()) {
    cgroup_parent_ = *cg;
    cgroup_note_ = "applied under " + *cg;
  } else {
    cgroup_note_ = "not applied: " + cg.status().message();
  }
  Log("job CPU/memory limits " + cgroup_note_);
  LoadState();
  auto pause = [&](int ms) {
    pollfd p{wake_[0], POLLIN, 0};
    (void)::poll(&p, 1, ms);
    Drain();
  };
  last_heard_ = clock_->Now();
  while (!stop->load() && !Register()) {
    if (refused_) return 1;
    pause(1000);
  }
  while (!stop->load()) {
    Drain();
    CollectExits();
    const int64_t now = clock_->Now().micros();
    for (auto it = kill_at_.begin(); it != kill_at_.end();) {
      if (now >= it->second && exec_.Running(it->first)) {
        Log("notice deadline passed: SIGKILL to job " + std::to_string(it->first));
        (void)exec_.Kill(it->first);
        it = kill_at_.erase(it);
      } else {
        ++it;
      }
    }
    // Signal mode: GPUs a resize takes away are the job's only until the deadline; a job that
    // has not taken the generation in by then is stopped (docs/agent.md, "Elastic jobs").
    for (auto it = resize_kill_at_.begin(); it != resize_kill_at_.end();) {
      const auto [deadline, generation] = it->second;
      if (!exec_.Running(it->first) || ResizeAck(it->first) >= generation) {
        it = resize_kill_at_.erase(it);
      } else if (now >= deadline) {
        Log("resize deadline passed without the job taking in generation " +
            std::to_string(generation) + ": SIGKILL to job " + std::to_string(it->first));
        (void)exec_.Kill(it->first);
        it = resize_kill_at_.erase(it);
      } else {
        ++it;
      }
    }
    // A start just made is confirmed at once (the report says "running").
    bool urgent = started_;
    started_ = false;
    if (!Sync(urgent)) {
      if (refused_) return 1;
      pause(servers_.urls().size() > 1 ? 250 : 1000);  // a takeover is worth looking for
    } else if (ResizePending()) {
      pause(100);  // looking for the job's acknowledgement ten times a second
    }
  }
  if (stop_jobs) {
    for (const Attempt& a : exec_.Attempts()) (void)exec_.Kill(a.job);
    while (!exec_.Attempts().empty()) {
      if (exec_.Reap(true).empty()) break;
    }
    launched_.clear();
    SaveState();
  }
  return 0;
}

}  // namespace rsv::agent
