#include "placement/placement.h"

#include <gtest/gtest.h>

#include "common/rng.h"

namespace rsv {
namespace {

// Builds a pool whose nodes have the given sizes and used GPUs (lowest indices busy).
struct Fixture {
  ClusterState s;
  PoolId pool;
  Fixture() {
    PoolConfig c;
    c.name = "p";
    pool = *s.AddPool(c);
  }
  NodeId Add(int32_t gpus, int32_t used, std::string topo = "z/r") {
    NodeId id = *s.AddNode("n" + std::to_string(s.nodes().size() + 1), pool, gpus, topo);
    for (int32_t g = 0; g < used; ++g) s.node(id).gpu_job[g] = JobId(999);
    return id;
  }
};

TEST(ScoreNode, ArithmeticFromTheHeader) {
  // In use, 6 free of 8, place 4: 1000 + (64 - 2) = 1062.
  EXPECT_EQ(ScoreNode(6, 8, 4), 1062);
  // Untouched 8 of 8, place 4: 0 + (64 - 4) = 60.
  EXPECT_EQ(ScoreNode(8, 8, 4), 60);
  // In use, exact fit: 1000 + 64 = 1064, the best possible.
  EXPECT_EQ(ScoreNode(4, 8, 4), 1064);
}

TEST(FreeMap, SingleNodeTable) {
  struct Case {
    const char* name;
    std::vector<std::pair<int32_t, int32_t>> nodes;  // (gpus, used)
    int32_t gpus;
    PlaceOutcome outcome;
    int32_t node;  // 1-based expected node, 0 if none
  } cases[] = {
      // n1 untouched scores 60, n2 (6 free, in use) scores 1000 + 64 - 2 = 1062: n2.
      {"prefers node in use", {{8, 0}, {8, 2}}, 4, PlaceOutcome::kPlaced, 2},
      // n1: 1000 + 64 - 3 = 1061; n2: 1000 + 64 - 1 = 1063: tighter n2.
      {"best fit among used", {{8, 1}, {8, 3}}, 4, PlaceOutcome::kPlaced, 2},
      // Both untouched: ties go to the lowest id.
      {"tie lowest id", {{8, 0}, {8, 0}}, 8, PlaceOutcome::kPlaced, 1},
      // Untouched 4-GPU node (64 - 0 = 64) beats untouched 8 (64 - 4 = 60).
      {"smallest whole node", {{8, 0}, {4, 0}}, 4, PlaceOutcome::kPlaced, 2},
      {"no room now", {{8, 6}, {8, 5}}, 4, PlaceOutcome::kWait, 0},
      {"larger than any node", {{8, 0}, {4, 0}}, 12, PlaceOutcome::kInfeasible, 0},
  };
  for (const Case& c : cases) {
    Fixture f;
    for (auto [g, u] : c.nodes) f.Add(g, u);
    FreeMap m(f.s, f.pool);
    PlaceResult r = m.Place(c.gpus);
    EXPECT_EQ(r.outcome, c.outcome) << c.name << ": " << r.reason;
    if (c.node) {
      ASSERT_EQ(r.placement.slices.size(), 1u) << c.name;
      EXPECT_EQ(r.placement.slices[0].node, NodeId(c.node)) << c.name;
      EXPECT_EQ(r.placement.GpuCount(), c.gpus) << c.name;
    }
  }
}

TEST(FreeMap, MultiNodeUsesWholeNodesInOneRack) {
  Fixture f;
  f.Add(8, 0, "z1/r1");  // n1
  f.Add(8, 1, "z1/r1");  // n2: not whole
  f.Add(8, 0, "z1/r2");  // n3
  f.Add(8, 0, "z1/r2");  // n4
  f.Add(8, 0, "z1/r2");  // n5
  FreeMap m(f.s, f.pool);
  // r1 has one whole node, r2 three: 16 GPUs go to r2's first two.
  PlaceResult r = m.Place(16);
  ASSERT_EQ(r.outcome, PlaceOutcome::kPlaced);
  ASSERT_EQ(r.placement.slices.size(), 2u);
  EXPECT_EQ(r.placement.slices[0].node, NodeId(3));
  EXPECT_EQ(r.placement.slices[1].node, NodeId(4));
  // 32 GPUs = 4 whole nodes; only 4 are whole (n1, n3-n5): spans racks.
  r = m.Place(32);
  ASSERT_EQ(r.outcome, PlaceOutcome::kPlaced);
  EXPECT_EQ(r.placement.slices.size(), 4u);
  // 40 = 5 nodes: exists in the pool (5 ready) but not whole now: wait, not infeasible.
  EXPECT_EQ(m.Place(40).outcome, PlaceOutcome::kWait);
  EXPECT_EQ(m.Place(48).outcome, PlaceOutcome::kInfeasible);
  EXPECT_EQ(m.Place(12).outcome, PlaceOutcome::kInfeasible);  // not whole nodes
}

TEST(FreeMap, OccupyReleaseAndReadiness) {
  Fixture f;
  NodeId a = f.Add(8, 0);
  f.Add(8, 0);
  FreeMap m(f.s, f.pool);
  EXPECT_EQ(m.free_gpus(), 16);
  PlaceResult r = m.Place(3);
  m.Occupy(r.placement);
  EXPECT_EQ(m.free_gpus(), 13);
  EXPECT_EQ(m.free_mask(a), 0b11111000u);
  m.SetReady(a, false);
  EXPECT_EQ(m.free_gpus(), 8);
  EXPECT_EQ(m.Place(6).placement.slices[0].node, NodeId(2));
  m.SetReady(a, true);
  m.Release(r.placement);
  EXPECT_EQ(m.free_gpus(), 16);
}

// Oracle: on thousands of random pools, the index picks exactly what scoring every node picks.
TEST(FreeMap, MatchesBruteForceScoringOnRandomPools) {
  Rng rng(20261121);
  int placed = 0;
  for (int trial = 0; trial < 3000; ++trial) {
    Fixture f;
    int nodes = static_cast<int>(rng.Range(1, 12));
    for (int i = 0; i < nodes; ++i) {
      int32_t gpus = rng.Chance(3, 4) ? 8 : static_cast<int32_t>(rng.Range(1, 16));
      NodeId id = f.Add(
          gpus, 0, "z" + std::to_string(rng.Range(0, 1)) + "/r" + std::to_string(rng.Range(0, 2)));
      for (int32_t g = 0; g < gpus; ++g) {
        if (rng.Chance(1, 3)) f.s.node(id).gpu_job[g] = JobId(7);
      }
      if (rng.Chance(1, 10)) f.s.node(id).state = NodeState::kDraining;
    }
    FreeMap m(f.s, f.pool);
    for (int q = 0; q < 4; ++q) {
      int32_t want = static_cast<int32_t>(rng.Range(1, 17));
      PlaceResult fast = m.Place(want);
      PlaceResult slow = PlaceBruteForce(f.s, f.pool, want);
      ASSERT_EQ(fast.outcome, slow.outcome) << "trial " << trial << " gpus " << want;
      ASSERT_EQ(fast.placement, slow.placement) << "trial " << trial << " gpus " << want;
      if (fast.outcome == PlaceOutcome::kPlaced) {
        ++placed;
        for (const NodeSlice& s : fast.placement.slices) {
          for (int g = 0; g < 64; ++g) {
            if ((s.gpu_mask >> g) & 1) f.s.node(s.node).gpu_job[g] = JobId(8);
          }
        }
        m.Occupy(fast.placement);
      }
    }
  }
  EXPECT_GT(placed, 3000);  // the oracle compared real placements, not only refusals
}

TEST(DenseSets, FindsMembersAcrossSummaryWordsAndKeepsSetsApart) {
  DenseSets s;
  s.Resize(3, 100000);
  EXPECT_EQ(s.First(1), -1);
  for (int32_t v : {99999, 4096, 70000, 5}) s.Insert(1, v);
  s.Insert(0, 7);
  s.Insert(2, 99998);
  EXPECT_EQ(s.First(1), 5);
  EXPECT_EQ(s.NextFrom(1, 6), 4096);
  EXPECT_EQ(s.NextFrom(1, 4097), 70000);
  EXPECT_EQ(s.NextFrom(1, 70001), 99999);
  s.Erase(1, 4096);
  EXPECT_EQ(s.NextFrom(1, 6), 70000);
  EXPECT_EQ(s.size(1), 3);
  EXPECT_EQ(s.First(0), 7);
  EXPECT_EQ(s.NextFrom(0, 8), -1);
  EXPECT_EQ(s.First(2), 99998);
  EXPECT_TRUE(s.Contains(1, 70000));
  EXPECT_FALSE(s.Contains(0, 70000));
}

}  // namespace
}  // namespace rsv
