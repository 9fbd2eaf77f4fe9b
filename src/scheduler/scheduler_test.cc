#include "scheduler/scheduler.h"

#include <gtest/gtest.h>

namespace rsv {
namespace {

Timestamp T(int64_t s) { return Timestamp::FromMicros(s * 1'000'000); }

struct Fixture {
  Scheduler s;
  PoolId pool;
  TenantId a, b;
  Fixture() {
    PoolConfig c;
    c.name = "h100";
    c.reserve_price = Money::Units(1);
    pool = *s.AddPool(c);
    (void)s.AddNode("n1", pool, 8, "z/r");
    (void)s.AddNode("n2", pool, 8, "z/r");
    a = *s.AddTenant("a");
    b = *s.AddTenant("b");
  }
  JobSpec Spot(int32_t gpus, int64_t limit_units) {
    JobSpec j;
    j.tenant = b;
    j.pool = pool;
    j.gpus = gpus;
    j.tier = Tier::kSpot;
    j.limit_price = Money::Units(limit_units);
    return j;
  }
};

TEST(Scheduler, BadSubmissionsNameTheFieldAndChangeNothing) {
  Fixture f;
  struct Case {
    const char* field;
    std::function<void(JobSpec&)> spoil;
  } cases[] = {
      {"gpus", [](JobSpec& j) { j.gpus = 0; }},
      {"gpus", [](JobSpec& j) { j.gpus = 17; }},
      {"limit_price", [](JobSpec& j) { j.limit_price = Money::Micros(999'999); }},
      {"tenant", [](JobSpec& j) { j.tenant = TenantId(77); }},
      {"pool", [](JobSpec& j) { j.pool = PoolId(9); }},
      {"notice", [](JobSpec& j) { j.notice = Duration::Seconds(-1); }},
      {"dependencies",
       [](JobSpec& j) {
         j.dependencies.push_back({DependencyKind::kAfterOk, JobId(5)});
       }},
      {"fallback_limit", [](JobSpec& j) { j.fallback_limit = Money(); }},
  };
  for (const Case& c : cases) {
    JobSpec j = f.Spot(4, 2);
    c.spoil(j);
    Result<JobId> r = f.s.SubmitAndDecide(j, T(0));
    ASSERT_FALSE(r.ok()) << c.field;
    EXPECT_EQ(r.status().code(), Code::kInvalidArgument) << c.field;
    EXPECT_EQ(r.status().field(), c.field);
  }
  EXPECT_TRUE(f.s.state().jobs().empty());
  EXPECT_TRUE(f.s.DrainEvents().empty());
}

TEST(Scheduler, BadReservationsNameTheField) {
  Fixture f;
  ReservationRequest r{f.a, f.pool, 4, T(100), T(200), true};
  r.gpus = -1;
  EXPECT_EQ(f.s.Reserve(r, T(0)).status().field(), "gpus");
  r.gpus = 4;
  r.end = T(50);
  EXPECT_EQ(f.s.Reserve(r, T(0)).status().field(), "end");
  r.end = T(200);
  EXPECT_EQ(f.s.Reserve(r, T(150)).status().field(), "start");
  r.pool = PoolId(3);
  EXPECT_EQ(f.s.Reserve(r, T(0)).status().field(), "pool");
  EXPECT_TRUE(f.s.state().reservations().empty());
  EXPECT_EQ(f.s.ledger().Balance(Account::Of(f.a)), Money());
}

TEST(Scheduler, RejectionSaysWhatFitsAndChargesNothing) {
  Fixture f;
  ASSERT_TRUE(f.s.Reserve({f.a, f.pool, 12, T(0), T(3600), true}, T(0)).ok());
  Money after_first = f.s.ledger().Balance(Account::Of(f.b));
  Result<ReservationId> r = f.s.Reserve({f.b, f.pool, 8, T(0), T(7200), true}, T(0));
  ASSERT_EQ(r.status().code(), Code::kResourceExhausted);
  EXPECT_NE(r.status().message().find("at most 4 fit"), std::string::npos) << r.status().message();
  EXPECT_NE(r.status().message().find("from 1970-01-01 01:00:00Z"), std::string::npos);
  EXPECT_EQ(f.s.ledger().Balance(Account::Of(f.b)), after_first);
  Result<Quote> q = f.s.QuoteReservation({f.b, f.pool, 8, T(0), T(7200), true}, T(0));
  ASSERT_TRUE(q.ok());
  EXPECT_EQ(q->admission.largest_fit, 4);
}

// docs/market.md, "The waste report": reserved GPU time splits into used by the owner, lent and
// sold, idle and unsold, and not lendable, and the pool's GPUs now into six states.
TEST(Scheduler, ReservedTimeSplitsByWhatBecameOfIt) {
  Fixture f;
  ASSERT_TRUE(f.s.Reserve({f.a, f.pool, 8, T(0), T(7200), true}, T(0)).ok());
  ASSERT_TRUE(f.s.Reserve({f.b, f.pool, 4, T(0), T(7200), false}, T(0)).ok());
  JobSpec own = f.Spot(2, 1);
  own.tenant = f.a;
  own.tier = Tier::kReserved;
  Result<JobId> mine = f.s.SubmitAndDecide(own, T(0));
  ASSERT_TRUE(mine.ok()) << mine.status().ToString();
  Result<JobId> s1 = f.s.SubmitAndDecide(f.Spot(4, 5), T(0));
  Result<JobId> s2 = f.s.SubmitAndDecide(f.Spot(4, 5), T(0));
  Result<JobId> waits = f.s.SubmitAndDecide(f.Spot(4, 2), T(0));
  ASSERT_TRUE(s1.ok() && s2.ok() && waits.ok());
  f.s.RunCycle(T(0));
  for (JobId j : {*mine, *s1, *s2}) ASSERT_TRUE(HoldsGpus(f.s.state().job(j).state));
  ASSERT_EQ(f.s.state().job(*waits).state, JobState::kPending);
  // 16 GPUs: a reserves 8 and lends, b reserves 4 and does not; 4 are unreserved. Spot holds 8:
  // the 4 unreserved first, then 4 of a's 6 idle ones.
  PoolUsage u = f.s.Usage(f.pool);
  EXPECT_EQ(u.reserved_used, 2);
  EXPECT_EQ(u.lent, 4);
  EXPECT_EQ(u.spot_used, 4);
  EXPECT_EQ(u.idle_reserved, 6);  // a's 2 unsold, b's 4 not lendable
  EXPECT_EQ(u.idle, 0);
  EXPECT_EQ(u.down, 0);
  EXPECT_EQ(u.pending_bids, 1);
  EXPECT_EQ(u.pending_bid_gpus, 4);
  std::vector<OwnerNow> owners = f.s.OwnersNow(f.pool);
  ASSERT_EQ(owners.size(), 2u);
  EXPECT_EQ(owners[0].tenant, f.a);
  EXPECT_EQ(owners[0].reserved, 8);
  EXPECT_EQ(owners[0].used, 2);
  EXPECT_EQ(owners[0].lent, 6);
  EXPECT_EQ(owners[0].sold, 4);
  EXPECT_EQ(owners[1].reserved, 4);
  EXPECT_EQ(owners[1].lent + owners[1].sold + owners[1].used, 0);
  f.s.RunCycle(T(3600));
  constexpr int64_t kHourUs = 3'600'000'000;
  const auto& time = f.s.reserved_time();
  const ReservedTime& a = time.at({f.pool.value(), f.a.value()});
  EXPECT_EQ(a.owner_used, 2 * kHourUs);
  EXPECT_EQ(a.lent_sold, 4 * kHourUs);
  EXPECT_EQ(a.idle_unsold, 2 * kHourUs);
  EXPECT_EQ(a.not_lendable, 0);
  const ReservedTime& b = time.at({f.pool.value(), f.b.value()});
  EXPECT_EQ(b.owner_used + b.lent_sold + b.idle_unsold, 0);
  EXPECT_EQ(b.not_lendable, 4 * kHourUs);
  EXPECT_EQ(f.s.UnmetSpotTime(f.pool), 4 * kHourUs);
  // A draining node: its free GPUs are down, what its jobs hold stays theirs; the six states
  // still sum to the GPUs installed.
  const Node& n1 = f.s.state().nodes()[0];
  int32_t free_on_n1 = 0;
  for (JobId j : n1.gpu_job) free_on_n1 += !j.valid();
  ASSERT_TRUE(f.s.SetNodeState(n1.id, NodeState::kDraining, T(3600)).ok());
  u = f.s.Usage(f.pool);
  EXPECT_EQ(u.down, free_on_n1);
  EXPECT_EQ(u.reserved_used + u.lent + u.spot_used + u.idle_reserved + u.idle + u.down, 16);
  // The money follows the same split: a is credited for the GPUs it lent and were sold, and an
  // account's charges and credits sum to its balance.
  const Account acct = Account::Of(f.a);
  EXPECT_GT(f.s.ledger().Credits(acct), Money());
  EXPECT_EQ(f.s.ledger().Charges(acct) + f.s.ledger().Credits(acct), f.s.ledger().Balance(acct));
}

// docs/market.md, "Why a job is pending": a GPU of shares stops only for a bid above the highest
// limit among its shares, so that is the limit a bid is told it would run at, a whole-GPU bid
// and a share alike.
TEST(Scheduler, WhyRunsAtAboveTheHighestShareOfAGpu) {
  Scheduler s;
  PoolConfig c;
  c.name = "h100";
  c.reserve_price = Money::Units(1);
  c.min_increment = Money::Micros(250'000);
  const PoolId pool = *s.AddPool(c);
  (void)s.AddNode("n1", pool, 1, "z/r");
  const TenantId t = *s.AddTenant("t");
  auto bid = [&](int32_t milli, int64_t limit_units) {
    JobSpec j;
    j.tenant = t;
    j.pool = pool;
    j.gpus = 1;
    j.gpu_milli = milli;
    j.tier = Tier::kSpot;
    j.limit_price = Money::Units(limit_units);
    return *s.SubmitAndDecide(j, T(0));
  };
  const JobId high = bid(500, 9), low = bid(500, 2);
  s.RunCycle(T(0));
  ASSERT_EQ(s.state().job(high).state, JobState::kRunning);
  ASSERT_EQ(s.state().job(low).state, JobState::kRunning);
  const JobId whole = bid(kMilliPerGpu, 5), share = bid(500, 5);
  s.RunCycle(T(1));
  EXPECT_EQ(s.state().job(whole).state, JobState::kPending);  // 5 does not beat 9
  Result<PendingWhy> w = s.Why(whole);
  ASSERT_TRUE(w.ok());
  EXPECT_EQ(w->reason, "no_budget");
  ASSERT_TRUE(w->runs_at);
  EXPECT_EQ(*w->runs_at, Money::Micros(9'250'000));  // not 2.25: the cheap share is not alone
  Result<PendingWhy> ws = s.Why(share);
  ASSERT_TRUE(ws.ok());
  ASSERT_TRUE(ws->runs_at) << ws->reason;
  EXPECT_EQ(*ws->runs_at, Money::Micros(9'250'000));
}

// The clearing keeps its holders between cycles (docs/architecture.md, "Holders between cycles"):
// a checkpoint reported between two cycles reaches the next victim choice.
TEST(Scheduler, AVictimChoiceSeesACheckpointReportedBetweenCycles) {
  Fixture f;
  std::vector<JobId> held;
  for (int i = 0; i < 16; ++i) held.push_back(*f.s.Submit(f.Spot(1, 2), T(0)));
  f.s.RunCycle(T(0));
  for (JobId id : held) ASSERT_EQ(f.s.state().job(id).state, JobState::kRunning);
  f.s.RunCycle(T(50));  // the holders are kept from here
  ASSERT_TRUE(f.s.Checkpointed(held[12], T(100)).ok());
  const JobId rich = *f.s.Submit(f.Spot(1, 9), T(200));
  f.s.RunCycle(T(200));
  // Every holder bids 2 and started at 0: the one that loses the least work goes, and only it
  // (without the checkpoint, the lowest id would).
  for (size_t i = 0; i < held.size(); ++i) {
    EXPECT_EQ(f.s.state().job(held[i]).state, i == 12 ? JobState::kPreempting : JobState::kRunning)
        << i;
  }
  EXPECT_EQ(f.s.state().job(rich).state, JobState::kPending);
  EXPECT_TRUE(f.s.CheckInvariants(T(200)).empty());
}

TEST(Scheduler, CycleRunsNamedStagesAndTimesThemWithATicker) {
  struct CountingTicker : Ticker {
    mutable int64_t t = 0;
    int64_t Nanos() const override { return t += 5; }
  } ticker;
  Scheduler s(SchedulerOptions{.checks = InvariantChecks::kPerStage, .ticker = &ticker});
  CycleReport r = s.RunCycle(T(0));
  std::vector<std::string> names;
  for (const StageTiming& st : r.stages) {
    names.push_back(st.name);
    EXPECT_EQ(st.nanos, 5);
  }
  EXPECT_EQ(names, (std::vector<std::string>{"accrue", "reservations", "dependencies", "elastic",
                                             "notices", "reclaim", "clearing", "placement",
                                             "preemption"}));
}

TEST(Scheduler, ReleaseOnlyUnderNoticeAndExitsOnlyWhenRunning) {
  Fixture f;
  JobId j = *f.s.SubmitAndDecide(f.Spot(8, 2), T(0));
  EXPECT_EQ(f.s.state().job(j).state, JobState::kRunning);
  EXPECT_EQ(f.s.Release(j, T(1)).code(), Code::kFailedPrecondition);
  EXPECT_EQ(f.s.Release(JobId(99), T(1)).code(), Code::kNotFound);
  ASSERT_TRUE(f.s.JobExited(j, true, T(2)).ok());
  EXPECT_EQ(f.s.JobExited(j, true, T(3)).code(), Code::kFailedPrecondition);
  EXPECT_EQ(f.s.Cancel(j, T(3)).code(), Code::kFailedPrecondition);
}

TEST(Scheduler, FailedJobsRestartUpToTheirLimit) {
  Fixture f;
  JobSpec spec = f.Spot(8, 2);
  spec.max_restarts = 1;
  JobId j = *f.s.SubmitAndDecide(spec, T(0));
  ASSERT_TRUE(f.s.JobExited(j, false, T(10)).ok());
  f.s.RunCycle(T(10));
  EXPECT_EQ(f.s.state().job(j).state, JobState::kRunning);
  EXPECT_EQ(f.s.state().job(j).attempt, 2);
  ASSERT_TRUE(f.s.JobExited(j, false, T(20)).ok());
  EXPECT_EQ(f.s.state().job(j).state, JobState::kFailed);
}

// A 16-GPU gang over both agent nodes: it runs once both members confirmed; the first member to
// end stops the other with a notice, and the job's fate follows that first end once both ended.
TEST(Scheduler, AGangRunsWhenWholeAndEndsTogether) {
  Fixture f;
  const NodeId n1 = *f.s.state().FindNode("n1"), n2 = *f.s.state().FindNode("n2");
  ASSERT_TRUE(f.s.SetNodeAgent(n1).ok());
  ASSERT_TRUE(f.s.SetNodeAgent(n2).ok());
  JobSpec spec = f.Spot(16, 3);
  spec.max_restarts = 1;
  spec.notice = Duration::Seconds(20);
  JobId j = *f.s.SubmitAndDecide(spec, T(0));
  ASSERT_EQ(f.s.state().job(j).state, JobState::kStarting);
  ASSERT_TRUE(f.s.ConfirmStart(j, 1, T(1), n1).ok());
  EXPECT_EQ(f.s.state().job(j).state, JobState::kStarting);  // half a gang is not running
  ASSERT_TRUE(f.s.ConfirmStart(j, 1, T(1), n1).ok());        // twice changes nothing
  EXPECT_EQ(f.s.state().job(j).state, JobState::kStarting);
  ASSERT_TRUE(f.s.ConfirmStart(j, 1, T(2), n2).ok());
  EXPECT_EQ(f.s.state().job(j).state, JobState::kRunning);

  // n2's member fails: n1's gets a notice (deadline: the job's notice), GPUs stay held.
  ASSERT_TRUE(f.s.MemberEnded(j, 1, n2, Scheduler::MemberEnd::kFailed, "exit 3", T(10)).ok());
  const Job& job = f.s.state().job(j);
  EXPECT_EQ(job.state, JobState::kPreempting);
  EXPECT_EQ(job.notice_deadline, T(30));
  EXPECT_NE(job.preempt_reason.find("exit 3 on node n2"), std::string::npos) << job.preempt_reason;
  EXPECT_EQ(job.placement.slices.size(), 2u);
  EXPECT_TRUE(f.s.CheckInvariants(T(10)).empty());
  // n1's member leaves (cleanly, under the notice): the attempt failed, one restart is spent.
  ASSERT_TRUE(f.s.MemberEnded(j, 1, n1, Scheduler::MemberEnd::kSucceeded, "exit 0", T(12)).ok());
  EXPECT_EQ(job.state, JobState::kPending);
  EXPECT_EQ(job.attempt, 2);
  EXPECT_EQ(job.failures, 1);
  EXPECT_TRUE(job.placement.slices.empty());
  bool requeued = false;
  for (const Event& e : f.s.DrainEvents()) {
    if (e.type == EventType::kJobRequeued) {
      requeued = true;
      EXPECT_NE(e.detail.find("failed (exit 3 on node n2)"), std::string::npos) << e.detail;
    }
  }
  EXPECT_TRUE(requeued);

  // Attempt 2 runs; n1's node dies: n2's member gets a notice, and when it has not left by the
  // deadline the job is requeued as lost, spending no restart.
  f.s.RunCycle(T(13));
  ASSERT_EQ(job.state, JobState::kStarting);
  ASSERT_TRUE(f.s.ConfirmStart(j, 2, T(14), n1).ok());
  ASSERT_TRUE(f.s.ConfirmStart(j, 2, T(14), n2).ok());
  ASSERT_TRUE(f.s.SetNodeState(n1, NodeState::kDown, T(20)).ok());
  EXPECT_EQ(job.state, JobState::kPreempting);
  EXPECT_EQ(job.notice_deadline, T(40));
  f.s.RunCycle(T(39));
  EXPECT_EQ(job.state, JobState::kPreempting);
  f.s.RunCycle(T(40));
  EXPECT_EQ(job.attempt, 3);
  EXPECT_EQ(job.failures, 1);
  EXPECT_TRUE(f.s.CheckInvariants(T(40)).empty());

  // A member's success ends the job as succeeded once the others have left.
  ASSERT_TRUE(f.s.SetNodeState(n1, NodeState::kReady, T(41)).ok());
  f.s.RunCycle(T(41));
  ASSERT_EQ(job.state, JobState::kStarting);
  ASSERT_EQ(job.attempt, 3);
  ASSERT_TRUE(f.s.ConfirmStart(j, 3, T(42), n1).ok());
  ASSERT_TRUE(f.s.ConfirmStart(j, 3, T(42), n2).ok());
  ASSERT_TRUE(f.s.MemberEnded(j, 3, n1, Scheduler::MemberEnd::kSucceeded, "exit 0", T(50)).ok());
  ASSERT_TRUE(f.s.MemberEnded(j, 3, n2, Scheduler::MemberEnd::kFailed, "signal 15", T(51)).ok());
  EXPECT_EQ(job.state, JobState::kSucceeded);
  // Released while stopping after a member's failure: the failure still decides (and a
  // member's failed start then does not undo it either).
  JobSpec once = f.Spot(16, 3);
  once.max_restarts = 0;
  JobId g = *f.s.SubmitAndDecide(once, T(52));
  ASSERT_TRUE(f.s.ConfirmStart(g, 1, T(52), n1).ok());
  ASSERT_TRUE(f.s.ConfirmStart(g, 1, T(52), n2).ok());
  ASSERT_TRUE(f.s.MemberEnded(g, 1, n1, Scheduler::MemberEnd::kFailed, "exit 1", T(53)).ok());
  ASSERT_TRUE(f.s.Release(g, T(54)).ok());
  EXPECT_EQ(f.s.state().job(g).state, JobState::kFailed);
  EXPECT_EQ(f.s.state().job(g).end_reason, "failed (exit 1 on node n1)");
  // A node outside the job is refused.
  JobId other = *f.s.SubmitAndDecide(f.Spot(8, 3), T(55));
  const NodeId where = f.s.state().job(other).placement.slices[0].node;
  const NodeId elsewhere = where == n1 ? n2 : n1;
  EXPECT_EQ(f.s.ConfirmStart(other, 1, T(53), elsewhere).code(), Code::kFailedPrecondition);
  EXPECT_EQ(f.s.MemberEnded(other, 1, elsewhere, Scheduler::MemberEnd::kFailed, "x", T(53)).code(),
            Code::kFailedPrecondition);
}

// Under a notice already (a reclaim), members leave as they finish; the job is requeued as
// preempted when the last one has, not before: the GPUs of the first are not handed out while
// the second still checkpoints.
TEST(Scheduler, AGangUnderNoticeLeavesWhenItsLastMemberHas) {
  Fixture f;
  const NodeId n1 = *f.s.state().FindNode("n1"), n2 = *f.s.state().FindNode("n2");
  ASSERT_TRUE(f.s.SetNodeAgent(n1).ok());
  ASSERT_TRUE(f.s.SetNodeAgent(n2).ok());
  JobId j = *f.s.SubmitAndDecide(f.Spot(16, 2), T(0));
  ASSERT_TRUE(f.s.ConfirmStart(j, 1, T(1), n1).ok());
  ASSERT_TRUE(f.s.ConfirmStart(j, 1, T(1), n2).ok());
  JobId richer = *f.s.SubmitAndDecide(f.Spot(16, 5), T(2));
  const Job& job = f.s.state().job(j);
  ASSERT_EQ(job.state, JobState::kPreempting);
  ASSERT_TRUE(f.s.MemberEnded(j, 1, n1, Scheduler::MemberEnd::kSucceeded, "exit 0", T(3)).ok());
  f.s.RunCycle(T(3));
  EXPECT_EQ(job.state, JobState::kPreempting);
  EXPECT_EQ(f.s.state().job(richer).state, JobState::kPending);
  ASSERT_TRUE(f.s.MemberEnded(j, 1, n2, Scheduler::MemberEnd::kFailed, "signal 15", T(4)).ok());
  EXPECT_EQ(job.state, JobState::kPending);
  EXPECT_EQ(job.failures, 0);  // exits under notice never count
  f.s.RunCycle(T(4));
  EXPECT_EQ(f.s.state().job(richer).state, JobState::kStarting);
  EXPECT_TRUE(f.s.CheckInvariants(T(4)).empty());
}

TEST(Scheduler, NextWakeupIsTheNearestDeadlineOrReservationEdge) {
  Fixture f;
  ASSERT_TRUE(f.s.Reserve({f.a, f.pool, 8, T(100), T(500), true}, T(0)).ok());
  EXPECT_EQ(*f.s.NextWakeup(T(0)), T(100));
  EXPECT_EQ(*f.s.NextWakeup(T(100)), T(500));
  EXPECT_FALSE(f.s.NextWakeup(T(500)).has_value());
}

TEST(Scheduler, AgentNodesStartInTwoPhasesAndRollBackFailedStarts) {
  Fixture f;
  ASSERT_TRUE(f.s.SetNodeAgent(*f.s.state().FindNode("n1")).ok());
  ASSERT_TRUE(f.s.SetNodeAgent(*f.s.state().FindNode("n2")).ok());
  JobId j = *f.s.SubmitAndDecide(f.Spot(8, 3), T(0));
  EXPECT_EQ(f.s.state().job(j).state, JobState::kStarting);
  // A stale attempt is refused; the right one confirms, twice is harmless.
  EXPECT_EQ(f.s.ConfirmStart(j, 2, T(1)).code(), Code::kFailedPrecondition);
  ASSERT_TRUE(f.s.ConfirmStart(j, 1, T(1)).ok());
  EXPECT_EQ(f.s.state().job(j).state, JobState::kRunning);
  ASSERT_TRUE(f.s.ConfirmStart(j, 1, T(2)).ok());
  int running_events = 0;
  for (const Event& e : f.s.DrainEvents()) running_events += e.type == EventType::kJobRunning;
  EXPECT_EQ(running_events, 1);

  // A start that never gets confirmed is rolled back: GPUs freed, attempt + 1, no failure spent.
  JobSpec k = f.Spot(8, 2);
  k.max_restarts = 0;
  JobId second = *f.s.SubmitAndDecide(k, T(3));
  ASSERT_EQ(f.s.state().job(second).state, JobState::kStarting);
  ASSERT_TRUE(f.s.StartFailed(second, 1, "not confirmed", false, T(40)).ok());
  f.s.RunCycle(T(40));
  const Job& again = f.s.state().job(second);
  EXPECT_EQ(again.attempt, 2);
  EXPECT_EQ(again.failures, 0);
  EXPECT_EQ(again.state, JobState::kStarting);  // placed again on the free node
  // A command that cannot start spends its restarts; with none left the job fails.
  ASSERT_TRUE(f.s.StartFailed(second, 2, "exec failed", true, T(41)).ok());
  EXPECT_EQ(f.s.state().job(second).state, JobState::kFailed);
  EXPECT_TRUE(f.s.CheckInvariants(T(41)).empty());
  // Charged only while it held GPUs: 37 s then 1 s at the 1-unit reserve price, on 8 GPUs.
  EXPECT_EQ(f.s.SpotHeld(second), Duration::Seconds(38));
}

}  // namespace
}  // namespace rsv
