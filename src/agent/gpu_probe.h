// agent/gpu_probe: what GPUs a host has and whether they are healthy. NvmlProbe loads
// libnvidia-ml.so.1 with dlopen at run time (no NVIDIA headers or libraries at build time);
// FakeProbe stands in on hosts without GPUs and in tests, with fault injection. Both pass
// gpu_probe_test.cc's contract suite. Depends on common/ only.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "common/status.h"

namespace rsv::agent {

struct GpuInfo {
  int32_t index = 0;
  std::string uuid;
  std::string name;
  int64_t memory_mib = 0;
  int32_t utilization_pct = 0;  // 0-100, at the last Poll
  bool healthy = true;
  std::string health_detail;  // why not, e.g. "12 uncorrected ECC errors", "XID 79"
  // A MIG instance, offered as a device of its own (docs/agent.md, "GPU shares"): the UUID of
  // the GPU it is carved from. Empty: a whole GPU.
  std::string parent_uuid;
  // The GPU's own index among the host's GPUs (CUDA's numbering), which `index` (the position
  // among the devices offered) is not once a GPU before it is split into MIG instances.
  int32_t gpu_index = 0;
};

// What CUDA_VISIBLE_DEVICES names the device by: a MIG instance by its UUID ("MIG-..."), a GPU
// by its own index (gpu_index).
std::string DeviceId(const GpuInfo& g);

class GpuProbe {
 public:
  virtual ~GpuProbe() = default;
  // The devices with their current utilization and health. Order and UUIDs are stable. A GPU
  // in MIG mode is listed as its MIG instances, never as itself (the agent never changes a
  // GPU's MIG mode: it uses what the operator configured).
  virtual Result<std::vector<GpuInfo>> Poll() = 0;
  // "nvml" or "fake": shown to operators, so a fake fleet is always labelled.
  virtual std::string kind() const = 0;
};

// Loads NVML from `library` and initializes it. Fails with a message that says what to do
// (install the driver, or run with --fake-gpus) when it cannot.
Result<std::unique_ptr<GpuProbe>> OpenNvmlProbe(const std::string& library = "libnvidia-ml.so.1");

class FakeProbe final : public GpuProbe {
 public:
  // `count` GPUs of `memory_mib` each, named "Fake GPU (no NVML)", UUIDs from `host`. With
  // `mig_per_gpu` > 0 each GPU is in MIG mode, split into that many instances of equal memory.
  FakeProbe(int32_t count, std::string host, int64_t memory_mib = 81920, int32_t mig_per_gpu = 0);
  Result<std::vector<GpuInfo>> Poll() override;
  std::string kind() const override { return "fake"; }
  // Faults read from a file at every Poll, one "INDEX DETAIL" line per bad GPU (so a running
  // agent can be given an XID from outside, e.g. `echo "3 XID 79" > FILE`).
  void SetFaultFile(std::string path) { fault_file_ = std::move(path); }
  // Fault injection for tests: the GPU reports as unhealthy with this detail.
  void MarkUnhealthy(int32_t index, std::string detail);
  void SetUtilization(int32_t index, int32_t pct);

 private:
  std::vector<GpuInfo> gpus_;
  std::string fault_file_;
};

}  // namespace rsv::agent
