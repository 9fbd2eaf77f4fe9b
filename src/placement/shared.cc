#include "placement/shared.h"

#include <algorithm>
#include <cstring>

#include "common/rng.h"

namespace rsv {
namespace {

// GPUs the pod would take on this node, or empty if it does not fit.
std::vector<int32_t> ChooseGpus(const SharedNode& n, const PodRequest& pod) {
  std::vector<int32_t> out;
  if (pod.Share()) {
    int32_t best = -1;
    for (int32_t g = 0; g < static_cast<int32_t>(n.gpu_free_milli.size()); ++g) {
      int32_t f = n.gpu_free_milli[g];
      if (f >= pod.gpu_milli && (best < 0 || f < n.gpu_free_milli[best])) best = g;
    }
    if (best >= 0) out.push_back(best);
    return out;
  }
  for (int32_t g = 0; g < static_cast<int32_t>(n.gpu_free_milli.size()) &&
                      static_cast<int32_t>(out.size()) < pod.gpus;
       ++g) {
    if (n.gpu_free_milli[g] == 1000) out.push_back(g);
  }
  if (static_cast<int32_t>(out.size()) < pod.gpus) out.clear();
  return out;
}

int64_t FreeGpuMilli(const SharedNode& n) {
  int64_t sum = 0;
  for (int32_t f : n.gpu_free_milli) sum += f;
  return sum;
}

bool HostFits(const SharedNode& n, const PodRequest& pod) {
  return n.free_cpu_milli >= pod.cpu_milli && n.free_memory_mib >= pod.memory_mib;
}

// FgdFragmentation() with the model test supplied (the packer interns models).
template <typename Allowed>
int64_t FgdWith(const SharedNode& n, const WorkloadMix& mix, Allowed allowed) {
  const int64_t free = FreeGpuMilli(n);
  if (free == 0) return 0;
  int32_t whole = 0, largest = 0;
  for (int32_t f : n.gpu_free_milli) {
    whole += f == 1000;
    largest = std::max(largest, f);
  }
  int64_t frag = 0;
  const auto& shapes = mix.shapes();
  for (size_t s = 0; s < shapes.size(); ++s) {
    const PodRequest& p = shapes[s].pod;
    // A CPU-only shape strands every free GPU on every node alike: it changes no choice.
    if (p.gpus == 0) continue;
    const int64_t count = shapes[s].count;
    const bool fits = allowed(s) && n.free_cpu_milli >= p.cpu_milli &&
                      (p.gpus == 1 ? largest >= p.gpu_milli : whole >= p.gpus);
    if (!fits) {
      frag += count * free;
      continue;
    }
    const int32_t need = p.gpus == 1 ? p.gpu_milli : 1000;
    int64_t small = 0;
    for (int32_t f : n.gpu_free_milli) small += f < need ? f : 0;
    frag += count * small;
  }
  return frag;
}

constexpr size_t kMemoLimit = 1 << 20;
constexpr uint64_t kLookaheadSeed = 0x5eed'0f'f6d;

using ShapeKey = std::tuple<int32_t, int64_t, int32_t, int32_t, std::string>;
ShapeKey KeyOf(const PodRequest& p) {
  return {p.cpu_milli, p.memory_mib, p.gpus, p.gpu_milli, p.models};
}

}  // namespace

bool ModelAllowed(const std::string& models, const std::string& model) {
  if (models.empty()) return true;
  size_t start = 0;
  while (start <= models.size()) {
    size_t end = models.find('|', start);
    if (end == std::string::npos) end = models.size();
    if (models.compare(start, end - start, model) == 0) return true;
    start = end + 1;
  }
  return false;
}

std::optional<SharedPlacement> PlaceShared(const std::vector<SharedNode>& nodes,
                                           const PodRequest& pod) {
  std::optional<SharedPlacement> best;
  std::tuple<int64_t, int64_t, int32_t> best_score{};
  for (int32_t i = 0; i < static_cast<int32_t>(nodes.size()); ++i) {
    const SharedNode& n = nodes[i];
    if (!HostFits(n, pod)) continue;
    int64_t gpu_left = FreeGpuMilli(n);
    std::vector<int32_t> gpus;
    std::tuple<int64_t, int64_t, int32_t> score;
    if (pod.gpus > 0) {
      if (!ModelAllowed(pod.models, n.model)) continue;
      gpus = ChooseGpus(n, pod);
      if (gpus.empty()) continue;
      score = {gpu_left - pod.Demand(), n.free_cpu_milli - pod.cpu_milli, i};
    } else {
      score = {n.gpu_free_milli.empty() ? 0 : 1, n.free_cpu_milli - pod.cpu_milli, i};
    }
    if (!best || score < best_score) {
      best = SharedPlacement{i, std::move(gpus)};
      best_score = score;
    }
  }
  return best;
}

void ApplyShared(std::vector<SharedNode>& nodes, const PodRequest& pod, const SharedPlacement& p) {
  SharedNode& n = nodes[p.node];
  n.free_cpu_milli -= pod.cpu_milli;
  n.free_memory_mib -= pod.memory_mib;
  for (int32_t g : p.gpus) n.gpu_free_milli[g] -= pod.gpus == 1 ? pod.gpu_milli : 1000;
}

void ReleaseShared(std::vector<SharedNode>& nodes, const PodRequest& pod,
                   const SharedPlacement& p) {
  SharedNode& n = nodes[p.node];
  n.free_cpu_milli += pod.cpu_milli;
  n.free_memory_mib += pod.memory_mib;
  for (int32_t g : p.gpus) n.gpu_free_milli[g] += pod.gpus == 1 ? pod.gpu_milli : 1000;
}

void WorkloadMix::Add(const PodRequest& pod, int64_t count) {
  auto [it, fresh] = index_.try_emplace(KeyOf(pod), shapes_.size());
  if (fresh) shapes_.push_back(Shape{pod, 0});
  shapes_[it->second].count += count;
  total_ += count;
}

int64_t FgdFragmentation(const SharedNode& n, const WorkloadMix& mix) {
  return FgdWith(n, mix,
                 [&](size_t s) { return ModelAllowed(mix.shapes()[s].pod.models, n.model); });
}

std::string_view SharePolicyName(SharePolicy p) {
  switch (p) {
    case SharePolicy::kBestFit:
      return "bestfit";
    case SharePolicy::kFgd:
      return "fgd";
    case SharePolicy::kLookahead:
      return "lookahead";
  }
  return "?";
}

std::optional<SharePolicy> ParseSharePolicy(std::string_view name) {
  for (SharePolicy p : {SharePolicy::kBestFit, SharePolicy::kFgd, SharePolicy::kLookahead}) {
    if (SharePolicyName(p) == name) return p;
  }
  return std::nullopt;
}

SharePacker::SharePacker(std::vector<SharedNode> nodes, WorkloadMix mix, SharePolicy policy)
    : nodes_(std::move(nodes)), mix_(std::move(mix)), policy_(policy) {
  std::map<std::string, int32_t> models;
  for (const SharedNode& n : nodes_) {
    auto [it, fresh] = models.try_emplace(n.model, static_cast<int32_t>(models.size()));
    model_of_.push_back(it->second);
  }
  allowed_.resize(mix_.shapes().size());
  for (size_t s = 0; s < allowed_.size(); ++s) {
    allowed_[s].resize(models.size());
    for (const auto& [name, id] : models) {
      allowed_[s][id] = ModelAllowed(mix_.shapes()[s].pod.models, name);
    }
  }
  if (policy_ == SharePolicy::kLookahead) {
    // Model affinity: the share of each model's capacity that pods allowed on some models only
    // want (a pod allowed on k models counts 1/k on each).
    std::vector<int64_t> cap(models.size()), want(models.size());
    for (size_t i = 0; i < nodes_.size(); ++i) {
      cap[model_of_[i]] += 1000LL * static_cast<int64_t>(nodes_[i].gpu_free_milli.size());
    }
    for (size_t s = 0; s < mix_.shapes().size(); ++s) {
      const PodRequest& p = mix_.shapes()[s].pod;
      if (p.models.empty() || p.gpus == 0) continue;
      int64_t k = 0;
      for (size_t m = 0; m < models.size(); ++m) k += allowed_[s][m] && cap[m] > 0;
      for (size_t m = 0; m < models.size() && k > 0; ++m) {
        if (allowed_[s][m] && cap[m] > 0) want[m] += mix_.shapes()[s].count * p.Demand() / k;
      }
    }
    for (size_t m = 0; m < models.size(); ++m) {
      pressure_.push_back(cap[m] > 0 ? want[m] * 1000 / cap[m] : 0);
    }
    // The futures every node is scored on: GPU pods drawn from the mix by their counts.
    std::vector<int32_t> gpu_shapes;
    std::vector<int64_t> cumulative;
    int64_t total = 0;
    for (size_t s = 0; s < mix_.shapes().size(); ++s) {
      if (mix_.shapes()[s].pod.gpus == 0) continue;
      total += mix_.shapes()[s].count;
      gpu_shapes.push_back(static_cast<int32_t>(s));
      cumulative.push_back(total);
    }
    Rng rng(kLookaheadSeed);
    for (int k = 0; k < kLookaheadSamples && total > 0; ++k) {
      std::vector<int32_t> seq;
      for (int i = 0; i < kLookaheadLength; ++i) {
        const int64_t x = static_cast<int64_t>(rng.Uniform(static_cast<uint64_t>(total)));
        seq.push_back(gpu_shapes[std::upper_bound(cumulative.begin(), cumulative.end(), x) -
                                 cumulative.begin()]);
      }
      samples_.push_back(std::move(seq));
    }
  }
  version_.assign(nodes_.size(), 1);
  frag_.resize(nodes_.size());
  for (int32_t i = 0; i < static_cast<int32_t>(nodes_.size()); ++i)
    frag_[i] = Measure(i, nodes_[i]);
}

int64_t SharePacker::Measure(int32_t node, const SharedNode& n) const {
  switch (policy_) {
    case SharePolicy::kBestFit:
      return 0;
    case SharePolicy::kFgd: {
      const int32_t model = model_of_[node];
      return FgdWith(n, mix_, [&](size_t s) { return allowed_[s][model] != 0; });
    }
    case SharePolicy::kLookahead: {
      // The measure depends only on the node's model, free CPU and memory and the multiset of
      // its GPUs' free shares: nodes in the same state (most of a fleet, early on) share one
      // computation.
      std::string key(sizeof(int32_t) * 2 + sizeof(int64_t), '\0');
      const int32_t head[2] = {model_of_[node], n.free_cpu_milli};
      std::memcpy(key.data(), head, sizeof head);
      std::memcpy(key.data() + sizeof head, &n.free_memory_mib, sizeof(int64_t));
      std::vector<int32_t> gpus = n.gpu_free_milli;
      std::sort(gpus.begin(), gpus.end());
      key.append(reinterpret_cast<const char*>(gpus.data()), gpus.size() * sizeof(int32_t));
      auto it = memo_.find(key);
      if (it != memo_.end()) return it->second;
      if (memo_.size() >= kMemoLimit) memo_.clear();
      const int64_t v = Lookahead(node, n);
      memo_.emplace(std::move(key), v);
      return v;
    }
  }
  return 0;
}

// Σ over the look-ahead sequences of the milli-GPUs left free once each pod of the sequence that
// fits has been placed on a copy of the node (a share on the fullest GPU it fits), times the
// mix's total count; plus, for shapes of several whole GPUs (rare in the sequences but they need
// whole GPUs kept whole), count × the milli-GPUs that repeating the shape on the node would leave,
// times the number of sequences. Both terms are milli-GPU × count × sequences: one scale.
int64_t SharePacker::Lookahead(int32_t node, const SharedNode& n) const {
  const int32_t model = model_of_[node];
  const int32_t gpus = static_cast<int32_t>(n.gpu_free_milli.size());
  const int64_t free = FreeGpuMilli(n);
  if (free == 0) return 0;
  int64_t stranded = 0;
  std::vector<int32_t> g(n.gpu_free_milli.size());
  for (const std::vector<int32_t>& seq : samples_) {
    int64_t cpu = n.free_cpu_milli, memory = n.free_memory_mib;
    std::copy(n.gpu_free_milli.begin(), n.gpu_free_milli.end(), g.begin());
    for (int32_t s : seq) {
      const PodRequest& p = mix_.shapes()[s].pod;
      if (!allowed_[s][model] || p.cpu_milli > cpu || p.memory_mib > memory) continue;
      if (p.gpus == 1) {
        int32_t best = -1;
        for (int32_t i = 0; i < gpus; ++i) {
          if (g[i] >= p.gpu_milli && (best < 0 || g[i] < g[best])) best = i;
        }
        if (best < 0) continue;
        g[best] -= p.gpu_milli;
      } else {
        int32_t whole = 0;
        for (int32_t i = 0; i < gpus; ++i) whole += g[i] == 1000;
        if (whole < p.gpus) continue;
        for (int32_t i = 0, left = p.gpus; i < gpus && left > 0; ++i) {
          if (g[i] == 1000) g[i] = 0, --left;
        }
      }
      cpu -= p.cpu_milli;
      memory -= p.memory_mib;
    }
    for (int32_t i = 0; i < gpus; ++i) stranded += g[i];
  }
  int32_t whole = 0;
  for (int32_t f : n.gpu_free_milli) whole += f == 1000;
  int64_t gangs = 0;
  for (size_t s = 0; s < mix_.shapes().size(); ++s) {
    const PodRequest& p = mix_.shapes()[s].pod;
    if (p.gpus < 2) continue;
    int64_t copies = allowed_[s][model] ? whole / p.gpus : 0;
    if (p.cpu_milli > 0) copies = std::min<int64_t>(copies, n.free_cpu_milli / p.cpu_milli);
    if (p.memory_mib > 0) copies = std::min<int64_t>(copies, n.free_memory_mib / p.memory_mib);
    gangs += mix_.shapes()[s].count * (free - copies * p.Demand());
  }
  return stranded * mix_.total() + gangs * static_cast<int64_t>(samples_.size());
}

SharePacker::Choice SharePacker::Score(int32_t node, const PodRequest& pod) const {
  const SharedNode& n = nodes_[node];
  Choice c;
  if (!HostFits(n, pod)) return c;
  const int64_t free = FreeGpuMilli(n);
  if (pod.gpus == 0) {
    // CPU-only pods: nodes without GPUs first (best fit), else the least stranding.
    SharedNode after = n;
    after.free_cpu_milli -= pod.cpu_milli;
    after.free_memory_mib -= pod.memory_mib;
    c.fits = true;
    c.delta = Measure(node, after) - frag_[node];
    c.gpu_left = n.gpu_free_milli.empty() ? 0 : 1;
    c.cpu_left = after.free_cpu_milli;
    return c;
  }
  if (!ModelAllowed(pod.models, n.model)) return c;
  auto consider = [&](const std::vector<int32_t>& gpus) {
    SharedNode after = n;
    after.free_cpu_milli -= pod.cpu_milli;
    after.free_memory_mib -= pod.memory_mib;
    for (int32_t g : gpus) after.gpu_free_milli[g] -= pod.gpus == 1 ? pod.gpu_milli : 1000;
    const int64_t delta = Measure(node, after) - frag_[node];
    // A share on a GPU with less room left is better at equal rise (best fit on the GPU).
    const int32_t gpu = pod.Share() ? gpus[0] : -1;
    if (!c.fits || delta < c.delta ||
        (delta == c.delta && gpu >= 0 && n.gpu_free_milli[gpu] < n.gpu_free_milli[c.gpu])) {
      c.fits = true;
      c.delta = delta;
      c.gpu = gpu;
    }
  };
  if (pod.Share()) {
    // Every GPU with room; GPUs with the same free share are alike, so each amount once.
    for (int32_t g = 0; g < static_cast<int32_t>(n.gpu_free_milli.size()); ++g) {
      const int32_t f = n.gpu_free_milli[g];
      if (f < pod.gpu_milli) continue;
      bool seen = false;
      for (int32_t h = 0; h < g && !seen; ++h) seen = n.gpu_free_milli[h] == f;
      if (!seen) consider({g});
    }
  } else {
    std::vector<int32_t> gpus = ChooseGpus(n, pod);
    if (!gpus.empty()) consider(gpus);
  }
  if (c.fits) {
    c.gpu_left = free - pod.Demand();
    c.cpu_left = n.free_cpu_milli - pod.cpu_milli;
  }
  return c;
}

int32_t SharePacker::ShapeId(const PodRequest& pod) {
  auto [it, fresh] = shape_ids_.try_emplace(KeyOf(pod), static_cast<int32_t>(cache_.size()));
  if (fresh) cache_.emplace_back(nodes_.size());
  return it->second;
}

std::optional<SharedPlacement> SharePacker::Place(const PodRequest& pod) {
  std::vector<Cached>& cache = cache_[ShapeId(pod)];
  int32_t best = -1;
  for (int32_t i = 0; i < static_cast<int32_t>(nodes_.size()); ++i) {
    Cached& c = cache[i];
    if (c.version != version_[i]) {
      c.choice = Score(i, pod);
      c.version = version_[i];
    }
    if (!c.choice.fits) continue;
    if (best < 0) {
      best = i;
      continue;
    }
    const Choice& a = c.choice;
    const Choice& b = cache[best].choice;
    const int64_t pa = pressure_.empty() ? 0 : pressure_[model_of_[i]];
    const int64_t pb = pressure_.empty() ? 0 : pressure_[model_of_[best]];
    if (std::tie(pa, a.delta, a.gpu_left, a.cpu_left) <
        std::tie(pb, b.delta, b.gpu_left, b.cpu_left)) {
      best = i;
    }
  }
  if (best < 0) return std::nullopt;
  SharedPlacement p{best, {}};
  if (pod.Share()) {
    p.gpus.push_back(cache[best].choice.gpu);
  } else if (pod.gpus > 0) {
    p.gpus = ChooseGpus(nodes_[best], pod);
  }
  return p;
}

void SharePacker::Touch(int32_t node) {
  ++version_[node];
  frag_[node] = Measure(node, nodes_[node]);
}

void SharePacker::Apply(const PodRequest& pod, const SharedPlacement& p) {
  ApplyShared(nodes_, pod, p);
  Touch(p.node);
}

void SharePacker::Release(const PodRequest& pod, const SharedPlacement& p) {
  ReleaseShared(nodes_, pod, p);
  Touch(p.node);
}

}  // namespace rsv
