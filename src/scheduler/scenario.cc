#include "scheduler/scenario.h"

#include <map>
#include <sstream>

#include "scheduler/scheduler.h"

namespace rsv {
namespace {

struct Line {
  int number = 0;
  std::string verb;
  std::vector<std::string> args;          // positional
  std::map<std::string, std::string> kv;  // key=value
};

Line Tokenize(const std::string& raw, int number) {
  Line l;
  l.number = number;
  std::string text = raw.substr(0, raw.find('#'));
  std::istringstream in(text);
  std::string tok;
  while (in >> tok) {
    if (l.verb.empty()) {
      l.verb = tok;
      continue;
    }
    size_t eq = tok.find('=');
    if (eq != std::string::npos && eq > 0) {
      l.kv[tok.substr(0, eq)] = tok.substr(eq + 1);
    } else {
      l.args.push_back(tok);
    }
  }
  return l;
}

class Runner {
 public:
  Runner(std::string name, ScenarioOutcome* out) : name_(std::move(name)), out_(out) {}

  Status Run(const std::string& text) {
    std::istringstream in(text);
    std::string raw;
    int number = 0;
    while (std::getline(in, raw)) {
      ++number;
      Line l = Tokenize(raw, number);
      if (l.verb.empty()) continue;
      line_ = number;
      if (!rejected_.empty() &&
          !(l.verb == "expect" && !l.args.empty() && l.args[0] == "rejected")) {
        return Fail("reservation " + rejected_ + " was rejected: " + rejected_msg_);
      }
      if (l.verb != "expect") window_ = log_size();
      Status s = Apply(l);
      Collect();
      if (!s.ok()) return Fail(s.ToString());
    }
    if (!rejected_.empty())
      return Fail("reservation " + rejected_ + " was rejected: " + rejected_msg_);
    Collect();
    return Status::Ok();
  }

 private:
  size_t log_size() const { return events_.size(); }

  Status Fail(const std::string& msg) {
    return InvalidArgument(name_ + ":" + std::to_string(line_), msg);
  }

  void Collect() {
    for (Event& e : sched_.DrainEvents()) {
      out_->events.push_back(FormatEvent(e, sched_.state()));
      events_.push_back(std::move(e));
    }
    for (size_t i = seen_violations_; i < sched_.violations().size(); ++i) {
      out_->violations.push_back(sched_.violations()[i]);
    }
    seen_violations_ = sched_.violations().size();
  }

  Result<std::string> Need(const Line& l, const std::string& key) {
    auto it = l.kv.find(key);
    if (it == l.kv.end()) return InvalidArgument(key, "is required by '" + l.verb + "'");
    return it->second;
  }
  Result<std::string> Arg(const Line& l, size_t i, const std::string& what) {
    if (l.args.size() <= i) return InvalidArgument(what, "is required by '" + l.verb + "'");
    return l.args[i];
  }
  static Result<int32_t> Int(const std::string& field, const std::string& s) {
    if (s.empty() || s.size() > 9) return InvalidArgument(field, "'" + s + "' is not a number");
    int32_t v = 0;
    bool neg = s[0] == '-';
    for (size_t i = neg ? 1 : 0; i < s.size(); ++i) {
      if (s[i] < '0' || s[i] > '9') return InvalidArgument(field, "'" + s + "' is not a number");
      v = v * 10 + (s[i] - '0');
    }
    return neg ? -v : v;
  }
  static Result<Money> Amount(const std::string& field, const std::string& s) {
    Result<Money> m = Money::Parse(s);
    if (!m.ok()) return InvalidArgument(field, m.status().message());
    return m;
  }
  static Result<Duration> Dur(const std::string& field, const std::string& s) {
    Result<Duration> d = Duration::Parse(s);
    if (!d.ok()) return InvalidArgument(field, d.status().message());
    return d;
  }
  // "10%" or "250bp".
  static Result<BasisPoints> Share(const std::string& field, const std::string& s) {
    if (s.size() > 1 && s.back() == '%') {
      RSV_ASSIGN_OR_RETURN(int32_t p, Int(field, s.substr(0, s.size() - 1)));
      return static_cast<BasisPoints>(p) * 100;
    }
    if (s.size() > 2 && s.substr(s.size() - 2) == "bp") {
      RSV_ASSIGN_OR_RETURN(int32_t p, Int(field, s.substr(0, s.size() - 2)));
      return static_cast<BasisPoints>(p);
    }
    return InvalidArgument(field, "'" + s + "' is not a share (examples: 10%, 250bp)");
  }
  static Timestamp At(Duration d) { return Timestamp::FromMicros(d.micros()); }

  Result<PoolId> PoolOf(const std::string& name) {
    auto p = sched_.state().FindPool(name);
    if (!p) return InvalidArgument("pool", "unknown pool '" + name + "'");
    return *p;
  }
  Result<TenantId> TenantOf(const std::string& name) {
    auto t = sched_.state().FindTenant(name);
    if (!t) return InvalidArgument("tenant", "unknown tenant '" + name + "'");
    return *t;
  }
  Result<JobId> JobOf(const std::string& name) {
    auto it = jobs_.find(name);
    if (it == jobs_.end()) return InvalidArgument("job", "unknown job '" + name + "'");
    return it->second;
  }

  // Moves time to `to`, running a cycle at every wakeup on the way and at `to`.
  void AdvanceTo(Timestamp to) {
    while (true) {
      std::optional<Timestamp> w = sched_.NextWakeup(now_);
      if (!w || *w >= to) break;
      now_ = *w;
      sched_.RunCycle(now_);
    }
    if (to > now_) now_ = to;
    sched_.RunCycle(now_);
  }

  Status Apply(const Line& l) {
    const std::string& v = l.verb;
    if (v == "pool") return DoPool(l);
    if (v == "node" || v == "nodes") return DoNodes(l);
    if (v == "tenant") {
      RSV_ASSIGN_OR_RETURN(std::string name, Arg(l, 0, "name"));
      RSV_RETURN_IF_ERROR(sched_.AddTenant(name).status());
      return Status::Ok();
    }
    if (v == "at") {
      RSV_ASSIGN_OR_RETURN(std::string t, Arg(l, 0, "time"));
      RSV_ASSIGN_OR_RETURN(Duration d, Dur("time", t));
      if (At(d) < now_) return InvalidArgument("time", "goes backwards");
      AdvanceTo(At(d));
      return Status::Ok();
    }
    if (v == "advance") {
      RSV_ASSIGN_OR_RETURN(std::string t, Arg(l, 0, "duration"));
      RSV_ASSIGN_OR_RETURN(Duration d, Dur("duration", t));
      AdvanceTo(now_ + d);
      return Status::Ok();
    }
    if (v == "cycle") {
      sched_.RunCycle(now_);
      return Status::Ok();
    }
    if (v == "reserve") return DoReserve(l);
    if (v == "return") {
      RSV_ASSIGN_OR_RETURN(std::string name, Arg(l, 0, "reservation"));
      auto it = reservations_.find(name);
      if (it == reservations_.end())
        return InvalidArgument("reservation", "unknown '" + name + "'");
      RSV_RETURN_IF_ERROR(sched_.ReturnReservation(it->second, TenantId(), now_));
      sched_.RunCycle(now_);
      return Status::Ok();
    }
    if (v == "submit") return DoSubmit(l);
    if (v == "finish" || v == "release" || v == "cancel" || v == "checkpoint") {
      RSV_ASSIGN_OR_RETURN(std::string name, Arg(l, 0, "job"));
      RSV_ASSIGN_OR_RETURN(JobId id, JobOf(name));
      if (v == "finish") {
        RSV_ASSIGN_OR_RETURN(std::string how, Arg(l, 1, "ok|fail"));
        if (how != "ok" && how != "fail") return InvalidArgument("result", "must be ok or fail");
        RSV_RETURN_IF_ERROR(sched_.JobExited(id, how == "ok", now_));
      } else if (v == "release") {
        RSV_RETURN_IF_ERROR(sched_.Release(id, now_));
      } else if (v == "cancel") {
        RSV_RETURN_IF_ERROR(sched_.Cancel(id, now_));
      } else {
        RSV_RETURN_IF_ERROR(sched_.Checkpointed(id, now_));
        return Status::Ok();
      }
      sched_.RunCycle(now_);
      return Status::Ok();
    }
    if (v == "ack") {
      RSV_ASSIGN_OR_RETURN(std::string name, Arg(l, 0, "job"));
      RSV_ASSIGN_OR_RETURN(JobId id, JobOf(name));
      RSV_ASSIGN_OR_RETURN(std::string g, Arg(l, 1, "generation"));
      RSV_ASSIGN_OR_RETURN(int32_t gen, Int("generation", g));
      RSV_RETURN_IF_ERROR(sched_.ResizeAcked(id, sched_.state().job(id).attempt, gen, now_));
      sched_.RunCycle(now_);
      return Status::Ok();
    }
    if (v == "node-state") {
      RSV_ASSIGN_OR_RETURN(std::string name, Arg(l, 0, "node"));
      RSV_ASSIGN_OR_RETURN(std::string st, Arg(l, 1, "state"));
      auto node = sched_.state().FindNode(name);
      if (!node) return InvalidArgument("node", "unknown node '" + name + "'");
      NodeState to;
      if (st == "ready") {
        to = NodeState::kReady;
      } else if (st == "draining") {
        to = NodeState::kDraining;
      } else if (st == "down") {
        to = NodeState::kDown;
      } else {
        return InvalidArgument("state", "'" + st + "' is not ready, draining or down");
      }
      RSV_RETURN_IF_ERROR(sched_.SetNodeState(*node, to, now_));
      sched_.RunCycle(now_);
      return Status::Ok();
    }
    if (v == "expect") return DoExpect(l);
    return InvalidArgument("command", "unknown command '" + v + "'");
  }

  Status DoPool(const Line& l) {
    PoolConfig c;
    RSV_ASSIGN_OR_RETURN(c.name, Arg(l, 0, "name"));
    for (const auto& [k, val] : l.kv) {
      if (k == "reserve") {
        RSV_ASSIGN_OR_RETURN(c.reserve_price, Amount(k, val));
      } else if (k == "increment") {
        RSV_ASSIGN_OR_RETURN(c.min_increment, Amount(k, val));
      } else if (k == "max_notice") {
        RSV_ASSIGN_OR_RETURN(c.max_notice, Dur(k, val));
      } else if (k == "base") {
        RSV_ASSIGN_OR_RETURN(c.reservation_base_price, Amount(k, val));
      } else if (k == "surge") {
        RSV_ASSIGN_OR_RETURN(c.reservation_surge, Share(k, val));
      } else if (k == "return_rate") {
        RSV_ASSIGN_OR_RETURN(c.return_rate, Share(k, val));
      } else if (k == "operator_share") {
        RSV_ASSIGN_OR_RETURN(c.operator_share, Share(k, val));
      } else if (k == "holdback") {
        RSV_ASSIGN_OR_RETURN(c.holdback_gpus, Int(k, val));
      } else if (k == "model") {
        c.gpu_model = val;
      } else {
        return InvalidArgument(k, "unknown pool setting");
      }
    }
    return sched_.AddPool(std::move(c)).status();
  }

  Status DoNodes(const Line& l) {
    RSV_ASSIGN_OR_RETURN(std::string name, Arg(l, 0, "name"));
    RSV_ASSIGN_OR_RETURN(std::string pool_name, Need(l, "pool"));
    RSV_ASSIGN_OR_RETURN(PoolId pool, PoolOf(pool_name));
    RSV_ASSIGN_OR_RETURN(std::string g, Need(l, "gpus"));
    RSV_ASSIGN_OR_RETURN(int32_t gpus, Int("gpus", g));
    std::string topo = l.kv.count("topology") ? l.kv.at("topology") : "";
    int64_t gpu_memory = 0;
    if (l.kv.count("gpu_memory")) {
      RSV_ASSIGN_OR_RETURN(gpu_memory, ParseMebibytes("gpu_memory", l.kv.at("gpu_memory")));
    }
    int32_t count = 1;
    if (l.verb == "nodes") {
      RSV_ASSIGN_OR_RETURN(std::string c, Need(l, "count"));
      RSV_ASSIGN_OR_RETURN(count, Int("count", c));
      if (count < 1 || count > 100000) return InvalidArgument("count", "must be 1-100000");
    }
    for (int32_t i = 1; i <= count; ++i) {
      std::string n = l.verb == "nodes" ? name + std::to_string(i) : name;
      RSV_ASSIGN_OR_RETURN(NodeId id, sched_.AddNode(n, pool, gpus, topo));
      sched_.SetGpuMemory(id, gpu_memory);
    }
    return Status::Ok();
  }

  Status DoReserve(const Line& l) {
    RSV_ASSIGN_OR_RETURN(std::string name, Arg(l, 0, "name"));
    ReservationRequest req;
    RSV_ASSIGN_OR_RETURN(std::string t, Need(l, "tenant"));
    RSV_ASSIGN_OR_RETURN(req.tenant, TenantOf(t));
    RSV_ASSIGN_OR_RETURN(std::string p, Need(l, "pool"));
    RSV_ASSIGN_OR_RETURN(req.pool, PoolOf(p));
    RSV_ASSIGN_OR_RETURN(std::string g, Need(l, "gpus"));
    RSV_ASSIGN_OR_RETURN(req.gpus, Int("gpus", g));
    RSV_ASSIGN_OR_RETURN(std::string s, Need(l, "start"));
    RSV_ASSIGN_OR_RETURN(Duration sd, Dur("start", s));
    RSV_ASSIGN_OR_RETURN(std::string e, Need(l, "end"));
    RSV_ASSIGN_OR_RETURN(Duration ed, Dur("end", e));
    req.start = At(sd);
    req.end = At(ed);
    if (l.kv.count("lend")) req.lend = l.kv.at("lend") != "false";
    Result<ReservationId> r = sched_.Reserve(req, now_);
    if (!r.ok()) {
      if (r.status().code() != Code::kResourceExhausted) return r.status();
      rejected_ = name;
      rejected_msg_ = r.status().message();
      RSV_ASSIGN_OR_RETURN(last_quote_, sched_.QuoteReservation(req, now_));
      return Status::Ok();
    }
    reservations_[name] = *r;
    sched_.RunCycle(now_);
    return Status::Ok();
  }

  Status DoSubmit(const Line& l) {
    RSV_ASSIGN_OR_RETURN(std::string name, Arg(l, 0, "name"));
    if (jobs_.count(name)) return InvalidArgument("name", "job '" + name + "' already exists");
    JobSpec s;
    s.name = name;
    for (const auto& [k, val] : l.kv) {
      if (k == "tenant") {
        RSV_ASSIGN_OR_RETURN(s.tenant, TenantOf(val));
      } else if (k == "pool") {
        RSV_ASSIGN_OR_RETURN(s.pool, PoolOf(val));
      } else if (k == "gpus") {
        RSV_ASSIGN_OR_RETURN(GpuRange g, ParseGpuRange(val));
        s.gpus = g.min;
        s.max_gpus = g.max;
        s.gpu_step = g.step;
        s.gpu_milli = g.milli;
      } else if (k == "gpu_memory") {
        RSV_ASSIGN_OR_RETURN(s.gpu_memory_mib, ParseMebibytes(k, val));
      } else if (k == "mode") {
        RSV_ASSIGN_OR_RETURN(s.resize_mode, ParseResizeMode(val));
      } else if (k == "cooldown") {
        RSV_ASSIGN_OR_RETURN(s.resize_cooldown, Dur(k, val));
      } else if (k == "tier") {
        RSV_ASSIGN_OR_RETURN(s.tier, ParseTier(val));
      } else if (k == "limit") {
        RSV_ASSIGN_OR_RETURN(s.limit_price, Amount(k, val));
      } else if (k == "fallback") {
        RSV_ASSIGN_OR_RETURN(Money m, Amount(k, val));
        s.fallback_limit = m;
      } else if (k == "notice") {
        RSV_ASSIGN_OR_RETURN(s.notice, Dur(k, val));
      } else if (k == "max_restarts") {
        RSV_ASSIGN_OR_RETURN(s.max_restarts, Int(k, val));
      } else if (k == "after") {
        // afterok:a,afterany:b
        std::istringstream deps(val);
        std::string d;
        while (std::getline(deps, d, ',')) {
          size_t colon = d.find(':');
          if (colon == std::string::npos) return InvalidArgument(k, "'" + d + "' is not KIND:JOB");
          std::string kind = d.substr(0, colon);
          Dependency dep;
          if (kind == "afterok") {
            dep.kind = DependencyKind::kAfterOk;
          } else if (kind == "afterany") {
            dep.kind = DependencyKind::kAfterAny;
          } else {
            return InvalidArgument(k, "'" + kind + "' is not afterok or afterany");
          }
          RSV_ASSIGN_OR_RETURN(dep.job, JobOf(d.substr(colon + 1)));
          s.dependencies.push_back(dep);
        }
      } else {
        return InvalidArgument(k, "unknown job setting");
      }
    }
    RSV_ASSIGN_OR_RETURN(JobId id, sched_.SubmitAndDecide(std::move(s), now_));
    jobs_[name] = id;
    for (JobId u : sched_.state().job(id).units) {  // an elastic job's units: NAME+1, NAME+2, ...
      jobs_[name + "+" + std::to_string(sched_.state().job(u).unit)] = u;
    }
    return Status::Ok();
  }

  bool EventMatches(const Event& e, EventType type, const Line& l, size_t first_arg) {
    if (e.type != type) return false;
    for (size_t i = first_arg; i < l.args.size(); ++i) {
      auto it = jobs_.find(l.args[i]);
      if (it != jobs_.end() && e.job != it->second) return false;
    }
    if (l.kv.count("job")) {
      auto it = jobs_.find(l.kv.at("job"));
      if (it == jobs_.end() || e.job != it->second) return false;
    }
    if (l.kv.count("reason") && e.detail.find(l.kv.at("reason")) == std::string::npos) return false;
    return true;
  }

  Result<EventType> EventTypeOf(const std::string& name) {
    for (int t = 0; t <= static_cast<int>(EventType::kJobResized); ++t) {
      if (EventTypeName(static_cast<EventType>(t)) == name) return static_cast<EventType>(t);
    }
    return InvalidArgument("event", "unknown event type '" + name + "'");
  }

  Status DoExpect(const Line& l) {
    out_->expectations++;
    RSV_ASSIGN_OR_RETURN(std::string what, Arg(l, 0, "what"));
    const ClusterState& st = sched_.state();
    auto mismatch = [&](const std::string& got, const std::string& want) {
      return FailedPrecondition("expected " + what + " " + want + ", got " + got);
    };
    if (what == "state" || what == "attempt" || what == "on" || what == "size" ||
        what == "generation" || what == "gpus") {
      RSV_ASSIGN_OR_RETURN(std::string name, Arg(l, 1, "job"));
      RSV_ASSIGN_OR_RETURN(JobId id, JobOf(name));
      RSV_ASSIGN_OR_RETURN(std::string want, Arg(l, 2, "value"));
      const Job& j = st.job(id);
      std::string got;
      if (what == "state") {
        got = std::string(JobStateName(j.state));
      } else if (what == "attempt") {
        got = std::to_string(j.attempt);
      } else if (what == "size") {
        got =
            std::to_string(HoldsGpus(j.state) ? sched_.state().AttemptPlacement(j).GpuCount() : 0);
      } else if (what == "generation") {
        got = std::to_string(j.resize_generation);
      } else if (what == "gpus") {  // NODE/INDEX of each GPU it holds
        for (const NodeSlice& s : j.placement.slices) {
          for (int g = 0; g < 64; ++g) {
            if ((s.gpu_mask >> g) & 1) {
              got += (got.empty() ? "" : ",") + st.node(s.node).name + "/" + std::to_string(g);
            }
          }
        }
        if (got.empty()) got = "-";
      } else {
        for (const NodeSlice& s : j.placement.slices) {
          got += (got.empty() ? "" : ",") + st.node(s.node).name;
        }
        if (got.empty()) got = "-";
      }
      if (got != want) return mismatch(name + " " + got, name + " " + want);
      return Status::Ok();
    }
    if (what == "price") {
      RSV_ASSIGN_OR_RETURN(std::string p, Arg(l, 1, "pool"));
      RSV_ASSIGN_OR_RETURN(PoolId pool, PoolOf(p));
      RSV_ASSIGN_OR_RETURN(std::string a, Arg(l, 2, "amount"));
      RSV_ASSIGN_OR_RETURN(Money want, Amount("amount", a));
      if (sched_.Price(pool) != want)
        return mismatch(sched_.Price(pool).ToString(), want.ToString());
      return Status::Ok();
    }
    if (what == "balance") {
      RSV_ASSIGN_OR_RETURN(std::string who, Arg(l, 1, "account"));
      RSV_ASSIGN_OR_RETURN(std::string a, Arg(l, 2, "amount"));
      RSV_ASSIGN_OR_RETURN(Money want, Amount("amount", a));
      Account acct = Account::Operator();
      if (who != "operator") {
        RSV_ASSIGN_OR_RETURN(TenantId t, TenantOf(who));
        acct = Account::Of(t);
      }
      Money got = sched_.ledger().Balance(acct);
      if (got != want) return mismatch(who + " " + got.ToString(), who + " " + want.ToString());
      return Status::Ok();
    }
    if (what == "charged") {
      RSV_ASSIGN_OR_RETURN(std::string name, Arg(l, 1, "job"));
      RSV_ASSIGN_OR_RETURN(JobId id, JobOf(name));
      RSV_ASSIGN_OR_RETURN(std::string a, Arg(l, 2, "amount"));
      RSV_ASSIGN_OR_RETURN(Money want, Amount("amount", a));
      Money got = sched_.ChargedForJob(id);
      if (got != want) return mismatch(got.ToString(), want.ToString());
      return Status::Ok();
    }
    if (what == "ledger-zero") {
      if (sched_.ledger().Sum() != Money()) return mismatch(sched_.ledger().Sum().ToString(), "0");
      return Status::Ok();
    }
    if (what == "event" || what == "no-event") {
      RSV_ASSIGN_OR_RETURN(std::string type_name, Arg(l, 1, "event"));
      RSV_ASSIGN_OR_RETURN(EventType type, EventTypeOf(type_name));
      int found = 0;
      for (size_t i = window_; i < events_.size(); ++i)
        found += EventMatches(events_[i], type, l, 2);
      if (what == "event" && found == 0) {
        return FailedPrecondition("expected event " + type_name + " after the last command; none");
      }
      if (what == "no-event" && found > 0) {
        return FailedPrecondition("expected no event " + type_name +
                                  " after the last command; got " + std::to_string(found));
      }
      if (l.kv.count("count")) {
        RSV_ASSIGN_OR_RETURN(int32_t want, Int("count", l.kv.at("count")));
        if (found != want) return mismatch(std::to_string(found), std::to_string(want));
      }
      return Status::Ok();
    }
    if (what == "rejected") {
      RSV_ASSIGN_OR_RETURN(std::string name, Arg(l, 1, "reservation"));
      if (rejected_ != name) return FailedPrecondition("reservation " + name + " was not rejected");
      rejected_.clear();
      const Admission& a = last_quote_.admission;
      if (l.kv.count("fit")) {
        RSV_ASSIGN_OR_RETURN(int32_t want, Int("fit", l.kv.at("fit")));
        if (a.largest_fit != want)
          return mismatch(std::to_string(a.largest_fit), std::to_string(want));
      }
      if (l.kv.count("earliest")) {
        std::string got =
            a.earliest_start ? Duration::Micros(a.earliest_start->micros()).ToString() : "never";
        if (got != l.kv.at("earliest")) return mismatch(got, l.kv.at("earliest"));
      }
      return Status::Ok();
    }
    if (what == "reserved-use") {
      RSV_ASSIGN_OR_RETURN(std::string t, Arg(l, 1, "tenant"));
      RSV_ASSIGN_OR_RETURN(TenantId tenant, TenantOf(t));
      RSV_ASSIGN_OR_RETURN(std::string p, Arg(l, 2, "pool"));
      RSV_ASSIGN_OR_RETURN(PoolId pool, PoolOf(p));
      RSV_ASSIGN_OR_RETURN(std::string n, Arg(l, 3, "gpus"));
      RSV_ASSIGN_OR_RETURN(int32_t want, Int("gpus", n));
      int32_t got = sched_.ReservedInUse(tenant, pool);
      if (got != want) return mismatch(std::to_string(got), std::to_string(want));
      return Status::Ok();
    }
    return InvalidArgument("expect", "unknown expectation '" + what + "'");
  }

  std::string name_;
  ScenarioOutcome* out_;
  Scheduler sched_{SchedulerOptions{.checks = InvariantChecks::kPerStage}};
  Timestamp now_;
  int line_ = 0;
  size_t window_ = 0;
  size_t seen_violations_ = 0;
  std::vector<Event> events_;
  std::map<std::string, JobId> jobs_;
  std::map<std::string, ReservationId> reservations_;
  std::string rejected_;
  std::string rejected_msg_;
  Quote last_quote_;
};

}  // namespace

Result<ScenarioOutcome> RunScenario(const std::string& text, const std::string& name,
                                    ScenarioOutcome* partial) {
  ScenarioOutcome out;
  Runner runner(name, &out);
  Status s = runner.Run(text);
  if (!s.ok()) {
    if (partial) *partial = out;
    return s;
  }
  if (!out.violations.empty()) {
    if (partial) *partial = out;
    return Internal(name + ": invariant violated: " + out.violations.front());
  }
  return out;
}

}  // namespace rsv
