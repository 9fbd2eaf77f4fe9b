#include "market/clearing.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <map>
#include <set>

#include "common/rng.h"

namespace rsv {
namespace {

Timestamp T(int64_t s) { return Timestamp::FromMicros(s * 1'000'000); }
Money M(double units) { return Money::Micros(static_cast<int64_t>(units * 1e6 + 0.5)); }

// A random small market: nodes, running and preempting spot jobs placed on them, pending bids.
struct Market {
  ClusterState s;
  PoolId pool;
  std::vector<Placement> placements;  // owned storage for running bids
  std::vector<Bid> book;
  Timestamp now = T(10000);

  void Mark(ClusterState& st, const Placement& p, JobId j) {
    for (const NodeSlice& sl : p.slices) {
      for (int g = 0; g < 64; ++g) {
        if ((sl.gpu_mask >> g) & 1) st.node(sl.node).gpu_job[g] = j;
      }
    }
  }

  Market(Rng& rng, int max_nodes, bool multi_node_bids) {
    PoolConfig c;
    c.name = "p";
    pool = *s.AddPool(c);
    int nodes = static_cast<int>(rng.Range(1, max_nodes));
    for (int i = 0; i < nodes; ++i) {
      (void)s.AddNode("n" + std::to_string(i), pool, 8,
                      "z" + std::to_string(i % 2) + "/r" + std::to_string(i % 3));
    }
    placements.reserve(64);
    uint32_t next = 1;
    // Running jobs: place random gangs while they fit.
    int running = static_cast<int>(rng.Range(0, 6));
    for (int i = 0; i < running; ++i) {
      int32_t g = static_cast<int32_t>(rng.Range(1, 8));
      FreeMap fm(s, pool);
      PlaceResult r = fm.Place(g);
      if (r.outcome != PlaceOutcome::kPlaced) continue;
      placements.push_back(r.placement);
      JobId id(next++);
      Mark(s, placements.back(), id);
      Bid b;
      b.job = id;
      b.limit = M(1 + static_cast<double>(rng.Range(0, 4)));
      b.submitted = T(rng.Range(0, 100));
      b.gpus = g;
      b.preempting = rng.Chance(1, 6);
      b.running = !b.preempting;
      b.placement = &placements.back();
      b.started = T(rng.Range(100, 5000));
      b.last_checkpoint = rng.Chance(1, 2) ? T(rng.Range(5000, 9000)) : Timestamp();
      // Some are units of an elastic job (docs/market.md, "Elastic jobs"), ranked and stopped
      // as such.
      if (rng.Chance(1, 3)) {
        b.unit = static_cast<int32_t>(rng.Range(1, 3));
        b.parent = JobId(100 + static_cast<uint32_t>(rng.Range(0, 2)));
      }
      book.push_back(b);
    }
    int pending = static_cast<int>(rng.Range(0, 7));
    for (int i = 0; i < pending; ++i) {
      Bid b;
      b.job = JobId(next++);
      b.limit = M(1 + 0.5 * static_cast<double>(rng.Range(0, 10)));
      b.submitted = T(rng.Range(0, 200));
      b.gpus = static_cast<int32_t>(rng.Range(1, 8));
      if (rng.Chance(1, 12)) b.gpus = 12;  // never fits 8-GPU nodes whole
      if (multi_node_bids && rng.Chance(1, 5)) b.gpus = 16;
      // A pending unit: its job runs already, or is one of the bids before it (it may start in
      // this clearing), or does not run.
      if (i > 0 && rng.Chance(1, 3)) {
        b.unit = static_cast<int32_t>(rng.Range(1, 3));
        b.parent_ready = rng.Chance(1, 3);
        b.parent = rng.Chance(1, 2) ? book[rng.Uniform(book.size())].job : JobId(200);
      }
      book.push_back(b);
    }
    SortByRank(book);
  }

  Supply MakeSupply(int32_t budget, Money reserve, Money inc) const {
    Supply sp;
    sp.state = &s;
    sp.pool = pool;
    sp.free = FreeMap(s, pool);
    sp.soon = sp.free;
    for (const Bid& b : book) {
      if (b.preempting) sp.soon.Release(*b.placement);
    }
    sp.budget = budget;
    sp.params = MarketParams{reserve, inc};
    return sp;
  }
};

// The clearing rules of docs/market.md written plainly: full scans, subset enumeration, no skips.
ClearingResult Reference(const Market& mk, int32_t budget, Money reserve, Money inc) {
  ClearingResult r;
  std::vector<Bid> book = mk.book;
  SortByRank(book);
  ClusterState free = mk.s;  // holders as they are
  ClusterState soon = mk.s;  // with GPUs under notice released
  auto clear = [](ClusterState& st, const Placement& p) {
    for (const NodeSlice& sl : p.slices) {
      for (int g = 0; g < 64; ++g) {
        if ((sl.gpu_mask >> g) & 1) st.node(sl.node).gpu_job[g] = JobId();
      }
    }
  };
  auto mark_if_free = [](ClusterState& st, const Placement& p, JobId j) {
    for (const NodeSlice& sl : p.slices) {
      for (int g = 0; g < 64; ++g) {
        if (((sl.gpu_mask >> g) & 1) && !st.node(sl.node).gpu_job[g].valid()) {
          st.node(sl.node).gpu_job[g] = j;
        }
      }
    }
  };
  int32_t committed = 0, held = 0;
  std::optional<Money> lowest;
  std::set<uint32_t> noticed;
  for (const Bid& b : book) {
    if (b.preempting) clear(soon, *b.placement);
    if (b.running || b.preempting) {
      held += b.gpus;
      lowest = lowest ? std::min(*lowest, b.limit) : b.limit;
    }
    if (b.running) committed += b.gpus;
  }
  for (auto it = book.rbegin(); it != book.rend() && committed > budget; ++it) {
    if (!it->running) continue;
    noticed.insert(it->job.value());
    committed -= it->gpus;
    clear(soon, *it->placement);
    r.notices.push_back(Notice{it->job, JobId(), "supply"});
  }
  auto free_count = [&](const ClusterState& st) {
    int n = 0;
    for (const Node& nd : st.nodes()) {
      for (JobId j : nd.gpu_job) n += !j.valid();
    }
    return n;
  };
  for (const Bid& b : book) {
    if (b.running || b.preempting) continue;
    if (b.unit > 0 && !b.parent_ready &&
        std::none_of(r.starts.begin(), r.starts.end(),
                     [&](const Start& s) { return s.job == b.parent; })) {
      continue;  // a unit whose job does not run
    }
    std::string why;
    if (!FreeMap(free, mk.pool).Feasible(b.gpus, &why)) {
      r.infeasible.push_back(b.job);
      continue;
    }
    if (b.limit < reserve) {
      r.unplaced.push_back(b.job);
      continue;
    }
    if (committed + b.gpus <= budget) {
      PlaceResult pr = PlaceBruteForce(free, mk.pool, b.gpus);
      if (pr.outcome == PlaceOutcome::kPlaced && held + b.gpus <= budget) {
        mark_if_free(free, pr.placement, b.job);
        mark_if_free(soon, pr.placement, b.job);
        committed += b.gpus;
        held += b.gpus;
        lowest = lowest ? std::min(*lowest, b.limit) : b.limit;
        r.starts.push_back(Start{b.job, pr.placement});
        continue;
      }
      if (free_count(soon) > free_count(free)) {
        PlaceResult later = PlaceBruteForce(soon, mk.pool, b.gpus);
        if (later.outcome == PlaceOutcome::kPlaced) {
          mark_if_free(soon, later.placement, b.job);
          mark_if_free(free, later.placement, b.job);
          committed += b.gpus;
          r.waiting.push_back(b.job);
          continue;
        }
      }
    }
    std::vector<Bid> candidates;
    for (const Bid& v : book) {
      if (v.running && !noticed.count(v.job.value()) && Outbids(b.limit, v.limit, inc)) {
        candidates.push_back(v);
      }
    }
    if (!candidates.empty()) {
      std::optional<VictimChoice> vc =
          FindVictimsBruteForce(soon, FreeMap(soon, mk.pool), candidates, b.gpus,
                                std::max(0, committed + b.gpus - budget), mk.now);
      if (vc) {
        for (JobId v : vc->victims) {
          for (const Bid& c : candidates) {
            if (c.job == v) {
              noticed.insert(v.value());
              committed -= c.gpus;
              clear(soon, *c.placement);
            }
          }
          r.notices.push_back(Notice{v, b.job, "outbid"});
        }
        mark_if_free(soon, vc->placement, b.job);
        mark_if_free(free, vc->placement, b.job);
        committed += b.gpus;
        r.waiting.push_back(b.job);
        continue;
      }
    }
    r.unplaced.push_back(b.job);
    if (!r.highest_unplaced) r.highest_unplaced = b.limit;
  }
  r.price = ClearingPrice(reserve, r.highest_unplaced, lowest);
  return r;
}

std::string Describe(const ClearingResult& r) {
  std::string out = "price=" + r.price.ToString() + " starts=";
  for (const Start& s : r.starts) {
    out += s.job.ToString() + "@";
    for (const NodeSlice& sl : s.placement.slices) {
      out += sl.node.ToString() + ":" + std::to_string(sl.gpu_mask) + ";";
    }
    out += " ";
  }
  out += " waiting=";
  for (JobId j : r.waiting) out += j.ToString() + " ";
  out += " notices=";
  for (const Notice& n : r.notices)
    out += n.victim.ToString() + ">" + n.beneficiary.ToString() + " ";
  out += " unplaced=";
  for (JobId j : r.unplaced) out += j.ToString() + " ";
  out += " infeasible=";
  for (JobId j : r.infeasible) out += j.ToString() + " ";
  return out;
}

TEST(Rank, LimitThenHolderThenSubmissionThenId) {
  auto bid = [](uint32_t id, Money limit, Timestamp at, bool running) {
    Bid b;
    b.job = JobId(id);
    b.limit = limit;
    b.submitted = at;
    b.gpus = 1;
    b.running = running;
    return b;
  };
  Bid a = bid(1, M(3), T(5), false);
  Bid b = bid(2, M(4), T(9), false);
  EXPECT_TRUE(RanksAhead(b, a));  // higher limit
  Bid c = bid(3, M(3), T(1), false);
  EXPECT_TRUE(RanksAhead(c, a));  // earlier submission
  Bid d = bid(4, M(3), T(7), true);
  EXPECT_TRUE(RanksAhead(d, c));  // running ahead of pending at the same price
  Bid e = bid(5, M(3), T(5), false);
  EXPECT_TRUE(RanksAhead(a, e));  // same everything: lower id
}

TEST(Outbids, NeedsTheIncrementAndStrictlyMore) {
  EXPECT_TRUE(Outbids(M(4), M(3), M(1)));
  EXPECT_FALSE(Outbids(M(3.5), M(3), M(1)));
  EXPECT_FALSE(Outbids(M(3), M(3), M(0)));
  EXPECT_TRUE(Outbids(M(3.000001), M(3), M(0)));
}

TEST(ClearingPrice, ReserveHighestLeftOutCappedByLowestHolder) {
  EXPECT_EQ(ClearingPrice(M(1), std::nullopt, std::nullopt), M(1));
  EXPECT_EQ(ClearingPrice(M(1), M(2.5), M(3)), M(2.5));
  EXPECT_EQ(ClearingPrice(M(1), M(5), M(3)), M(3));
  EXPECT_EQ(ClearingPrice(M(1), M(0.5), std::nullopt), M(1));
}

TEST(VictimOrder, LowestLimitThenLeastLostWork) {
  Timestamp now = T(1000);
  Bid cheap{JobId(1), M(1), T(0), 1, true, false, nullptr, T(100), T(0)};
  Bid dear{JobId(2), M(2), T(0), 1, true, false, nullptr, T(900), T(0)};
  EXPECT_TRUE(VictimBefore(cheap, dear, now));
  // Same limit: checkpointed at 990 loses 10s; started at 500 without checkpoint loses 500s.
  Bid fresh_ckpt{JobId(3), M(1), T(0), 1, true, false, nullptr, T(100), T(990)};
  Bid no_ckpt{JobId(4), M(1), T(0), 1, true, false, nullptr, T(500), T(0)};
  EXPECT_EQ(LostWork(fresh_ckpt, now), Duration::Seconds(10));
  EXPECT_TRUE(VictimBefore(fresh_ckpt, no_ckpt, now));
}

// Oracle: the per-node victim search picks what enumerating every subset picks.
TEST(FindVictims, MatchesSubsetEnumeration) {
  Rng rng(5150);
  int found = 0;
  for (int trial = 0; trial < 3000; ++trial) {
    Market mk(rng, 4, false);
    std::vector<Bid> candidates;
    for (const Bid& b : mk.book) {
      if (b.running && rng.Chance(4, 5)) candidates.push_back(b);
    }
    if (candidates.size() > 10) continue;
    FreeMap base(mk.s, mk.pool);
    int32_t gpus = static_cast<int32_t>(rng.Range(1, 8));
    int32_t budget_needed = rng.Chance(1, 4) ? static_cast<int32_t>(rng.Range(0, 8)) : 0;
    auto fast = FindVictims(mk.s, base, candidates, gpus, budget_needed, mk.now);
    auto slow = FindVictimsBruteForce(mk.s, base, candidates, gpus, budget_needed, mk.now);
    ASSERT_EQ(fast.has_value(), slow.has_value()) << "trial " << trial;
    if (!fast) continue;
    ++found;
    ASSERT_EQ(fast->victims, slow->victims) << "trial " << trial;
    ASSERT_EQ(fast->placement, slow->placement) << "trial " << trial;
  }
  EXPECT_GT(found, 500);
}

// Oracle: Clear (indexes, skips, per-node search) equals the plain reference on small markets.
TEST(Clear, MatchesReferenceOnSmallMarkets) {
  Rng rng(777);
  int with_notices = 0, with_starts = 0, stopped_early = 0;
  for (int trial = 0; trial < 4000; ++trial) {
    Market mk(rng, 4, false);
    int32_t budget = rng.Chance(3, 4) ? 1000 : static_cast<int32_t>(rng.Range(0, 32));
    Money reserve = M(1 + 0.5 * static_cast<double>(rng.Range(0, 2)));
    Money inc = M(0.5 * static_cast<double>(rng.Range(0, 3)));
    ClearingResult fast = Clear(mk.book, mk.MakeSupply(budget, reserve, inc), mk.now);
    ClearingResult slow = Reference(mk, budget, reserve, inc);
    if (fast.rest_left_out) {
      // Clear stopped reading where no later bid could start, claim or preempt: the reference
      // left every later bid out too, and lists the examined ones exactly as Clear does.
      ++stopped_early;
      std::set<uint32_t> examined;
      for (const Bid& b : mk.book) {
        if (b.running || b.preempting) continue;
        if (static_cast<int32_t>(examined.size()) == fast.examined) break;
        if (b.unit > 0 && !b.parent_ready &&
            std::none_of(fast.starts.begin(), fast.starts.end(),
                         [&](const Start& st) { return st.job == b.parent; })) {
          continue;  // a unit whose job does not run is skipped, not examined
        }
        examined.insert(b.job.value());
      }
      auto keep = [&](std::vector<JobId>& v) {
        std::erase_if(v, [&](JobId j) { return !examined.count(j.value()); });
      };
      keep(slow.unplaced);
      keep(slow.infeasible);
    }
    ASSERT_EQ(Describe(fast), Describe(slow)) << "trial " << trial;
    ASSERT_EQ(fast.highest_unplaced, slow.highest_unplaced) << "trial " << trial;
    with_notices += !fast.notices.empty();
    with_starts += !fast.starts.empty();
  }
  EXPECT_GT(with_notices, 300);
  EXPECT_GT(with_starts, 1000);
  EXPECT_GT(stopped_early, 500);
}

// docs/market.md, "GPU shares": once whole bids are done and a share as small as the smallest
// asked for finds no room, the rest of the book is left unread. Reading it all (the stop
// disabled) decides exactly the same starts, claims, notices and price.
TEST(Clear, StopAfterTheSmallestShareDecidesAsReadingEveryBid) {
  Rng rng(4242);
  int stopped = 0, share_starts = 0;
  const int32_t menu[] = {100, 250, 250, 333, 500, 500, 750, 999};
  for (int trial = 0; trial < 3000; ++trial) {
    Market mk(rng, 4, false);
    // Some free GPUs hold shares already (with room left): the GPUs of shares.
    std::vector<Supply::ShareHost> hosts;
    uint32_t next = 500;
    for (const Node& n : mk.s.nodes()) {
      Node& nd = mk.s.node(n.id);
      nd.gpu_memory_mib = 81920;
      for (int g = 0; g < nd.gpus; ++g) {
        if (!nd.GpuFree(g) || !rng.Chance(1, 3)) continue;
        const int32_t used = menu[4 + rng.Uniform(4)];  // half full or more
        const int64_t memory = rng.Chance(1, 2) ? 0 : 10240 * rng.Range(1, 6);
        nd.gpu_shares[g].push_back(JobId(next++));
        nd.share_milli[g] = used;
        nd.share_memory_mib[g] = memory;
        if (used < kMilliPerGpu) {
          hosts.push_back(Supply::ShareHost{nd.id, g, kMilliPerGpu - used, 81920 - memory});
        }
      }
    }
    // Pending shares among the bids.
    int32_t min_milli = kMilliPerGpu;
    int64_t min_memory = INT64_MAX;
    const int shares = static_cast<int>(rng.Range(0, 10));
    for (int i = 0; i < shares; ++i) {
      Bid b;
      b.job = JobId(next++);
      b.limit = M(1 + 0.5 * static_cast<double>(rng.Range(0, 10)));
      b.submitted = T(rng.Range(0, 200));
      b.gpus = 1;
      b.milli = menu[rng.Uniform(8)];
      b.gpu_memory_mib = rng.Chance(1, 2) ? 0 : 10240 * rng.Range(1, 9);
      min_milli = std::min(min_milli, b.milli);
      min_memory = std::min(min_memory, b.gpu_memory_mib);
      mk.book.push_back(b);
    }
    SortByRank(mk.book);
    const int32_t budget = static_cast<int32_t>(rng.Range(0, 12));
    const Money reserve = M(1), inc = M(0.5 * static_cast<double>(rng.Range(0, 2)));
    auto supply = [&](int32_t smallest, int64_t least_memory) {
      Supply sp = mk.MakeSupply(budget, reserve, inc);
      sp.share_hosts = hosts;
      sp.max_gpu_memory_mib = 81920;
      sp.share_min_milli = smallest;
      sp.share_min_memory_mib = least_memory;
      return sp;
    };
    ClearingResult fast = Clear(mk.book, supply(min_milli, min_memory), mk.now);
    ClearingResult all = Clear(mk.book, supply(1, 0), mk.now);  // no share is that small
    auto decided = [](const ClearingResult& r) {
      ClearingResult d = r;
      d.unplaced.clear();
      d.infeasible.clear();
      return Describe(d);
    };
    ASSERT_EQ(decided(fast), decided(all)) << "trial " << trial;
    ASSERT_EQ(fast.highest_unplaced, all.highest_unplaced) << "trial " << trial;
    stopped += fast.examined < all.examined;
    for (const Start& st : fast.starts) share_starts += st.job.value() >= 500;
  }
  EXPECT_GT(stopped, 50);  // the stop did cut reading short (81 times)
  EXPECT_GT(share_starts, 300);
}

// A share whose memory no GPU of the pool has can never run: it sets no price, also when it is
// the first bid read after no bid can start, claim or preempt any more.
TEST(Clear, AShareNoGpuHasTheMemoryForSetsNoPrice) {
  ClusterState st;
  PoolConfig c;
  c.name = "p";
  const PoolId pool = *st.AddPool(c);
  const NodeId n = *st.AddNode("n0", pool, 1, "z/r");
  st.node(n).gpu_memory_mib = 40960;
  const Placement on_gpu0{{NodeSlice{n, 1}}};
  st.node(n).gpu_job[0] = JobId(1);
  Bid holder;
  holder.job = JobId(1);
  holder.limit = M(5);
  holder.gpus = 1;
  holder.running = true;
  holder.placement = &on_gpu0;
  Bid share;  // below the holder: it cannot stop it
  share.job = JobId(2);
  share.limit = M(4);
  share.gpus = 1;
  share.milli = 500;
  share.gpu_memory_mib = 81920;
  Bid whole;
  whole.job = JobId(3);
  whole.limit = M(3);
  whole.gpus = 1;
  std::vector<Bid> book{holder, share, whole};
  SortByRank(book);
  Supply sp;
  sp.state = &st;
  sp.pool = pool;
  sp.free = FreeMap(st, pool);
  sp.soon = sp.free;
  sp.budget = 1;
  sp.params = MarketParams{M(1), M(0)};
  sp.max_gpu_memory_mib = 40960;
  sp.share_min_milli = 500;
  ClearingResult r = Clear(book, sp, T(0));
  EXPECT_TRUE(r.starts.empty());
  EXPECT_TRUE(r.notices.empty());
  ASSERT_TRUE(r.highest_unplaced);
  EXPECT_EQ(*r.highest_unplaced, M(3));  // the whole-GPU bid's, not the share's 4
  EXPECT_EQ(r.price, M(3));
}

// Properties (invariants 1, 3 and supply) on larger random markets with multi-node
// gangs, where no reference is cheap enough.
TEST(Clear, InvariantsHoldOnRandomMarkets) {
  Rng rng(4242);
  for (int trial = 0; trial < 3000; ++trial) {
    Market mk(rng, 10, true);
    int32_t budget = rng.Chance(3, 4) ? 1000 : static_cast<int32_t>(rng.Range(0, 80));
    Money reserve = M(1);
    Money inc = M(0.5 * static_cast<double>(rng.Range(0, 2)));
    ClearingResult r = Clear(mk.book, mk.MakeSupply(budget, reserve, inc), mk.now);
    std::map<uint32_t, const Bid*> by_id;
    for (const Bid& b : mk.book) by_id[b.job.value()] = &b;
    // 1. Starts use GPUs free before the cycle, and no GPU twice.
    std::set<std::pair<uint32_t, int>> used;
    int32_t started = 0;
    for (const Start& s : r.starts) {
      ASSERT_EQ(s.placement.GpuCount(), by_id[s.job.value()]->gpus);
      started += by_id[s.job.value()]->gpus;
      for (const NodeSlice& sl : s.placement.slices) {
        for (int g = 0; g < 8; ++g) {
          if (!((sl.gpu_mask >> g) & 1)) continue;
          ASSERT_FALSE(mk.s.node(sl.node).gpu_job[g].valid()) << "trial " << trial;
          ASSERT_TRUE(used.insert({sl.node.value(), g}).second) << "trial " << trial;
        }
      }
    }
    // 3. Everyone holding GPUs after the cycle has a limit at or above the price.
    int32_t held = started;
    for (const Bid& b : mk.book) {
      if (b.running || b.preempting) {
        held += b.gpus;
        ASSERT_GE(b.limit, r.price) << "trial " << trial;
      }
    }
    for (const Start& s : r.starts) ASSERT_GE(by_id[s.job.value()]->limit, r.price);
    ASSERT_GE(r.price, reserve);
    // Outbid victims were beaten by the increment.
    for (const Notice& n : r.notices) {
      const Bid* v = by_id[n.victim.value()];
      ASSERT_TRUE(v->running);
      if (n.beneficiary.valid()) {
        ASSERT_TRUE(Outbids(by_id[n.beneficiary.value()]->limit, v->limit, inc));
      }
    }
    // Supply: new starts never push spot holdings over the budget.
    if (!r.starts.empty()) {
      ASSERT_LE(held, std::max(budget, held - started));
    }
    // Rank order: a bid left out never sees a lower-ranked bid of the same or larger size start.
    for (JobId u : r.unplaced) {
      const Bid* ub = by_id[u.value()];
      for (const Start& s : r.starts) {
        const Bid* sb = by_id[s.job.value()];
        if (RanksAhead(*ub, *sb) && ub->limit >= reserve) {
          ASSERT_LT(sb->gpus, ub->gpus) << "trial " << trial;
        }
      }
    }
  }
}

}  // namespace
}  // namespace rsv
