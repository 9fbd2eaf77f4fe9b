// Shared-GPU placement: the packer's rules against a brute-force oracle over small pools, the
// resource invariants under random place/release sequences, and FGD's measure by hand.
#include "placement/shared.h"

#include <gtest/gtest.h>

#include <tuple>

#include "common/rng.h"

namespace rsv {
namespace {

SharedNode Node(int32_t gpus, int32_t cpu, int64_t memory, std::string model = "A") {
  return SharedNode{.free_cpu_milli = cpu,
                    .free_memory_mib = memory,
                    .model = std::move(model),
                    .gpu_free_milli = std::vector<int32_t>(gpus, 1000)};
}

PodRequest Pod(int32_t gpus, int32_t milli, int32_t cpu = 0, int64_t memory = 0,
               std::string models = "") {
  return PodRequest{.cpu_milli = cpu,
                    .memory_mib = memory,
                    .gpus = gpus,
                    .gpu_milli = milli,
                    .models = std::move(models)};
}

// Pods drawn from a small menu: shares of several sizes, whole GPUs, gangs, CPU-only.
PodRequest RandomPod(Rng& rng) {
  static const int32_t kShares[] = {100, 250, 300, 470, 500, 650, 810};
  switch (rng.Uniform(6)) {
    case 0:
      return Pod(0, 0, static_cast<int32_t>(rng.Range(1, 8)) * 1000, rng.Range(0, 4) * 1024);
    case 1:
      return Pod(static_cast<int32_t>(rng.Range(2, 4)), 1000,
                 static_cast<int32_t>(rng.Range(0, 8)) * 1000);
    case 2:
      return Pod(1, 1000, static_cast<int32_t>(rng.Range(0, 6)) * 1000, rng.Range(0, 2) * 1024);
    default:
      return Pod(1, kShares[rng.Uniform(7)], static_cast<int32_t>(rng.Range(0, 4)) * 1000,
                 rng.Range(0, 2) * 1024);
  }
}

std::vector<SharedNode> RandomNodes(Rng& rng, int32_t count) {
  std::vector<SharedNode> nodes;
  for (int32_t i = 0; i < count; ++i) {
    nodes.push_back(Node(static_cast<int32_t>(rng.Range(0, 4)),
                         static_cast<int32_t>(rng.Range(4, 16)) * 1000, rng.Range(4, 12) * 1024));
  }
  return nodes;
}

WorkloadMix RandomMix(Rng& rng) {
  WorkloadMix mix;
  for (int i = 0; i < 12; ++i) mix.Add(RandomPod(rng), rng.Range(1, 5));
  return mix;
}

// Every way the pod could go now: (node, GPUs), a share on each GPU with room.
std::vector<SharedPlacement> AllChoices(const std::vector<SharedNode>& nodes,
                                        const PodRequest& pod) {
  std::vector<SharedPlacement> out;
  for (int32_t i = 0; i < static_cast<int32_t>(nodes.size()); ++i) {
    const SharedNode& n = nodes[i];
    if (n.free_cpu_milli < pod.cpu_milli || n.free_memory_mib < pod.memory_mib) continue;
    if (pod.gpus > 0 && !ModelAllowed(pod.models, n.model)) continue;
    if (pod.gpus == 0) {
      out.push_back({i, {}});
    } else if (pod.Share()) {
      for (int32_t g = 0; g < static_cast<int32_t>(n.gpu_free_milli.size()); ++g) {
        if (n.gpu_free_milli[g] >= pod.gpu_milli) out.push_back({i, {g}});
      }
    } else {
      std::vector<int32_t> whole;
      for (int32_t g = 0; g < static_cast<int32_t>(n.gpu_free_milli.size()); ++g) {
        if (n.gpu_free_milli[g] == 1000 && static_cast<int32_t>(whole.size()) < pod.gpus) {
          whole.push_back(g);
        }
      }
      if (static_cast<int32_t>(whole.size()) == pod.gpus) out.push_back({i, whole});
    }
  }
  return out;
}

int64_t FreeGpu(const SharedNode& n) {
  int64_t sum = 0;
  for (int32_t f : n.gpu_free_milli) sum += f;
  return sum;
}

// The oracle: each choice scored from scratch (a fresh packer measures the node after it), the
// documented order applied: least rise, then least GPU left on the node (for a CPU-only pod:
// nodes without GPUs first), then least CPU left, then the node; on the node the fullest GPU, then
// the lowest.
std::optional<SharedPlacement> Oracle(const std::vector<SharedNode>& nodes, const WorkloadMix& mix,
                                      SharePolicy policy, const PodRequest& pod) {
  SharePacker now(nodes, mix, policy);
  std::optional<SharedPlacement> best;
  std::tuple<int64_t, int64_t, int64_t, int32_t, int32_t, int32_t> best_key{};
  for (const SharedPlacement& c : AllChoices(nodes, pod)) {
    std::vector<SharedNode> after = nodes;
    ApplyShared(after, pod, c);
    SharePacker then(after, mix, policy);
    const SharedNode& n = nodes[c.node];
    const int64_t delta = then.Stranding(c.node) - now.Stranding(c.node);
    const int64_t gpu_left =
        pod.gpus == 0 ? (n.gpu_free_milli.empty() ? 0 : 1) : FreeGpu(n) - pod.Demand();
    const int32_t gpu_free = pod.Share() ? n.gpu_free_milli[c.gpus[0]] : 0;
    const int32_t gpu = pod.Share() ? c.gpus[0] : 0;
    auto key = std::make_tuple(delta, gpu_left, int64_t{n.free_cpu_milli - pod.cpu_milli}, c.node,
                               gpu_free, gpu);
    if (!best || key < best_key) {
      best = c;
      best_key = key;
    }
  }
  return best;
}

TEST(SharePacker, EveryRuleMatchesTheOracleOnSmallPools) {
  int64_t placed = 0, refused = 0;
  for (SharePolicy policy : {SharePolicy::kBestFit, SharePolicy::kFgd, SharePolicy::kLookahead}) {
    for (uint64_t seed = 1; seed <= 40; ++seed) {
      Rng rng(seed);
      std::vector<SharedNode> nodes = RandomNodes(rng, static_cast<int32_t>(rng.Range(1, 5)));
      WorkloadMix mix = RandomMix(rng);
      SharePacker packer(nodes, mix, policy);
      std::vector<std::pair<PodRequest, SharedPlacement>> running;
      for (int step = 0; step < 30; ++step) {
        if (!running.empty() && rng.Chance(1, 4)) {
          size_t k = rng.Uniform(running.size());
          packer.Release(running[k].first, running[k].second);
          running.erase(running.begin() + static_cast<std::ptrdiff_t>(k));
          continue;
        }
        PodRequest pod = RandomPod(rng);
        std::optional<SharedPlacement> want = Oracle(packer.nodes(), mix, policy, pod);
        std::optional<SharedPlacement> got = packer.Place(pod);
        ASSERT_EQ(got.has_value(), want.has_value())
            << SharePolicyName(policy) << " seed " << seed << " step " << step;
        if (!got) {
          ++refused;
          continue;
        }
        ASSERT_EQ(got->node, want->node) << SharePolicyName(policy) << " seed " << seed;
        ASSERT_EQ(got->gpus, want->gpus) << SharePolicyName(policy) << " seed " << seed;
        packer.Apply(pod, *got);
        running.emplace_back(pod, *got);
        ++placed;
      }
    }
  }
  EXPECT_GT(placed, 1000);
  EXPECT_GT(refused, 100);
}

TEST(SharePacker, NothingIsOverCommittedAndReleaseRestores) {
  for (SharePolicy policy : {SharePolicy::kBestFit, SharePolicy::kFgd, SharePolicy::kLookahead}) {
    Rng rng(7);
    const std::vector<SharedNode> empty = RandomNodes(rng, 12);
    SharePacker packer(empty, RandomMix(rng), policy);
    std::vector<std::pair<PodRequest, SharedPlacement>> running;
    for (int step = 0; step < 2000; ++step) {
      if (!running.empty() && rng.Chance(2, 5)) {
        size_t k = rng.Uniform(running.size());
        packer.Release(running[k].first, running[k].second);
        running.erase(running.begin() + static_cast<std::ptrdiff_t>(k));
      } else {
        PodRequest pod = RandomPod(rng);
        if (std::optional<SharedPlacement> p = packer.Place(pod)) {
          packer.Apply(pod, *p);
          running.emplace_back(pod, *p);
        }
      }
      for (const SharedNode& n : packer.nodes()) {
        ASSERT_GE(n.free_cpu_milli, 0);
        ASSERT_GE(n.free_memory_mib, 0);
        for (int32_t f : n.gpu_free_milli) ASSERT_TRUE(f >= 0 && f <= 1000) << f;
      }
    }
    for (auto& [pod, p] : running) packer.Release(pod, p);
    for (size_t i = 0; i < empty.size(); ++i) {
      EXPECT_EQ(packer.nodes()[i].free_cpu_milli, empty[i].free_cpu_milli);
      EXPECT_EQ(packer.nodes()[i].free_memory_mib, empty[i].free_memory_mib);
      EXPECT_EQ(packer.nodes()[i].gpu_free_milli, empty[i].gpu_free_milli);
    }
  }
}

TEST(SharePacker, SameInputsSameChoices) {
  Rng setup(5);
  const std::vector<SharedNode> nodes = RandomNodes(setup, 30);
  const WorkloadMix mix = RandomMix(setup);
  std::vector<std::pair<int32_t, std::vector<int32_t>>> runs[2];
  for (auto& run : runs) {
    Rng rng(9);
    SharePacker packer(nodes, mix, SharePolicy::kLookahead);
    for (int step = 0; step < 300; ++step) {
      PodRequest pod = RandomPod(rng);
      std::optional<SharedPlacement> p = packer.Place(pod);
      run.emplace_back(p ? p->node : -1, p ? p->gpus : std::vector<int32_t>{});
      if (p) packer.Apply(pod, *p);
    }
  }
  EXPECT_EQ(runs[0], runs[1]);
}

TEST(SharePacker, BestFitIsPlaceShared) {
  Rng rng(11);
  std::vector<SharedNode> nodes = RandomNodes(rng, 20);
  SharePacker packer(nodes, WorkloadMix(), SharePolicy::kBestFit);
  for (int step = 0; step < 500; ++step) {
    PodRequest pod = RandomPod(rng);
    std::optional<SharedPlacement> a = PlaceShared(nodes, pod);
    std::optional<SharedPlacement> b = packer.Place(pod);
    ASSERT_EQ(a.has_value(), b.has_value());
    if (!a) continue;
    ASSERT_EQ(a->node, b->node);
    ASSERT_EQ(a->gpus, b->gpus);
    ApplyShared(nodes, pod, *a);
    packer.Apply(pod, *b);
  }
}

TEST(FgdFragmentation, CountsWhatEachShapeCannotUse) {
  // Two GPUs with 700 and 300 milli free, 8 cores free.
  SharedNode n = Node(2, 8000, 0);
  n.gpu_free_milli = {700, 300};
  WorkloadMix mix;
  mix.Add(Pod(1, 500), 2);             // fits the 700 GPU: the 300 is stranded for it -> 2 × 300
  mix.Add(Pod(1, 1000), 1);            // fits nowhere: everything -> 1 × 1000
  mix.Add(Pod(1, 200, 9000), 3);       // needs 9 cores: everything -> 3 × 1000
  mix.Add(Pod(1, 200, 0, 0, "B"), 4);  // another model: everything -> 4 × 1000
  mix.Add(Pod(0, 0, 1000), 5);         // CPU only: no GPU preference, not counted
  EXPECT_EQ(FgdFragmentation(n, mix), 2 * 300 + 1000 + 3 * 1000 + 4 * 1000);
  n.gpu_free_milli = {1000, 1000};
  mix = WorkloadMix();
  mix.Add(Pod(2, 1000), 1);  // a gang of two fits: nothing stranded
  EXPECT_EQ(FgdFragmentation(n, mix), 0);
}

TEST(SharePacker, LookaheadKeepsConstrainedModelsForThePodsThatNeedThem) {
  // Node 0 (model B) is the tighter fit, node 1 (model A) empty and bigger. Half the mix may run
  // on B only: an unconstrained pod goes to A under the look-ahead; best fit takes B.
  std::vector<SharedNode> nodes = {Node(1, 8000, 8192, "B"), Node(4, 32000, 8192, "A")};
  WorkloadMix mix;
  mix.Add(Pod(1, 1000, 1000, 0, "B"), 10);
  mix.Add(Pod(1, 500, 1000), 10);
  SharePacker look(nodes, mix, SharePolicy::kLookahead);
  SharePacker fit(nodes, mix, SharePolicy::kBestFit);
  EXPECT_EQ(look.Place(Pod(1, 500, 1000))->node, 1);
  EXPECT_EQ(fit.Place(Pod(1, 500, 1000))->node, 0);
  // A pod for B only still goes to B.
  EXPECT_EQ(look.Place(Pod(1, 1000, 1000, 0, "B"))->node, 0);
}

TEST(SharePacker, LookaheadKeepsWholeNodesForGangs) {
  // Two empty 4-GPU nodes; the mix has 4-GPU gangs. A whole-GPU pod after a first one goes to
  // the node already in use, so the other stays whole.
  std::vector<SharedNode> nodes = {Node(4, 64000, 65536), Node(4, 64000, 65536)};
  WorkloadMix mix;
  mix.Add(Pod(4, 1000, 8000), 2);
  mix.Add(Pod(1, 1000, 4000), 10);
  SharePacker look(nodes, mix, SharePolicy::kLookahead);
  for (int i = 0; i < 3; ++i) {
    std::optional<SharedPlacement> p = look.Place(Pod(1, 1000, 4000));
    ASSERT_TRUE(p);
    look.Apply(Pod(1, 1000, 4000), *p);
  }
  int used = 0;
  for (const SharedNode& n : look.nodes()) used += FreeGpu(n) < 4000;
  EXPECT_EQ(used, 1);
  EXPECT_TRUE(look.Place(Pod(4, 1000, 8000)).has_value());
}

TEST(SharePolicy, NamesRoundTrip) {
  for (SharePolicy p : {SharePolicy::kBestFit, SharePolicy::kFgd, SharePolicy::kLookahead}) {
    EXPECT_EQ(ParseSharePolicy(SharePolicyName(p)), p);
  }
  EXPECT_FALSE(ParseSharePolicy("firstfit").has_value());
}

}  // namespace
}  // namespace rsv
