#include "agent/gpu_probe.h"

#include <dlfcn.h>

#include <algorithm>
#include <fstream>
#include <sstream>

namespace rsv::agent {
namespace {

// The few NVML declarations we use, spelled out here so the build needs no NVIDIA headers.
using nvmlReturn_t = int;
using nvmlDevice_t = struct nvmlDevice_st*;
using nvmlEventSet_t = struct nvmlEventSet_st*;
struct nvmlMemory_t {
  unsigned long long total, free, used;
};
struct nvmlUtilization_t {
  unsigned int gpu, memory;
};
struct nvmlEventData_t {
  nvmlDevice_t device;
  unsigned long long eventType;
  unsigned long long eventData;
  unsigned int gpuInstanceId;
  unsigned int computeInstanceId;
};
constexpr nvmlReturn_t kNvmlSuccess = 0;
constexpr int kEccUncorrected = 1;             // NVML_MEMORY_ERROR_TYPE_UNCORRECTED
constexpr int kEccVolatile = 0;                // NVML_VOLATILE_ECC
constexpr unsigned long long kEventXid = 0x8;  // nvmlEventTypeXidCriticalError
constexpr unsigned int kMigEnabled = 1;        // NVML_DEVICE_MIG_ENABLE

class NvmlProbe final : public GpuProbe {
 public:
  explicit NvmlProbe(void* lib) : lib_(lib) {}
  ~NvmlProbe() override {
    if (event_set_free_ && events_) event_set_free_(events_);
    if (shutdown_) shutdown_();
    dlclose(lib_);
  }

  Status Init() {
    auto sym = [&](const char* name, auto** fn) -> bool {
      *fn = reinterpret_cast<std::remove_pointer_t<decltype(fn)>>(dlsym(lib_, name));
      return *fn != nullptr;
    };
    if (!sym("nvmlInit_v2", &init_) || !sym("nvmlShutdown", &shutdown_) ||
        !sym("nvmlDeviceGetCount_v2", &count_) || !sym("nvmlDeviceGetHandleByIndex_v2", &handle_) ||
        !sym("nvmlDeviceGetName", &name_) || !sym("nvmlDeviceGetUUID", &uuid_) ||
        !sym("nvmlDeviceGetMemoryInfo", &memory_) ||
        !sym("nvmlDeviceGetUtilizationRates", &util_) || !sym("nvmlErrorString", &error_)) {
      return Status(Code::kUnavailable, "libnvidia-ml.so.1 lacks a required NVML function");
    }
    sym("nvmlDeviceGetTotalEccErrors", &ecc_);
    sym("nvmlEventSetCreate", &event_set_create_);
    sym("nvmlDeviceRegisterEvents", &register_events_);
    sym("nvmlEventSetWait_v2", &event_wait_);
    sym("nvmlEventSetFree", &event_set_free_);
    sym("nvmlDeviceGetMigMode", &mig_mode_);
    sym("nvmlDeviceGetMaxMigDeviceCount", &mig_count_);
    sym("nvmlDeviceGetMigDeviceHandleByIndex", &mig_handle_);
    if (nvmlReturn_t r = init_(); r != kNvmlSuccess) {
      shutdown_ = nullptr;
      return Status(Code::kUnavailable, std::string("nvmlInit failed: ") + error_(r));
    }
    unsigned int n = 0;
    if (nvmlReturn_t r = count_(&n); r != kNvmlSuccess) {
      return Status(Code::kUnavailable, std::string("nvmlDeviceGetCount failed: ") + error_(r));
    }
    if (n == 0) return Status(Code::kUnavailable, "NVML found no GPUs on this host");
    devices_.resize(n);
    xid_.assign(n, 0);
    for (unsigned int i = 0; i < n; ++i) {
      if (nvmlReturn_t r = handle_(i, &devices_[i]); r != kNvmlSuccess) {
        return Status(Code::kUnavailable, "GPU " + std::to_string(i) + ": " + error_(r));
      }
    }
    // What is offered: each GPU, or its MIG instances where the operator enabled MIG mode
    // (read only: the mode is never changed here). Instances appear in NVML's index order.
    for (unsigned int i = 0; i < n; ++i) {
      unsigned int current = 0, pending = 0, max = 0;
      if (mig_mode_ && mig_count_ && mig_handle_ &&
          mig_mode_(devices_[i], &current, &pending) == kNvmlSuccess && current == kMigEnabled &&
          mig_count_(devices_[i], &max) == kNvmlSuccess) {
        for (unsigned int m = 0; m < max; ++m) {
          nvmlDevice_t mig = nullptr;
          if (mig_handle_(devices_[i], m, &mig) == kNvmlSuccess) offered_.push_back({mig, i});
        }
        continue;  // a GPU in MIG mode with no instance offers nothing
      }
      offered_.push_back({devices_[i], i});
    }
    if (offered_.empty()) {
      return Status(Code::kUnavailable,
                    "every GPU is in MIG mode with no MIG instance: create instances first");
    }
    // XID errors arrive as events; where they are not supported, ECC counters still are.
    if (event_set_create_ && register_events_ && event_wait_ &&
        event_set_create_(&events_) == kNvmlSuccess) {
      for (nvmlDevice_t d : devices_) register_events_(d, kEventXid, events_);
    }
    return Status::Ok();
  }

  Result<std::vector<GpuInfo>> Poll() override {
    if (events_) {
      nvmlEventData_t ev{};
      while (event_wait_(events_, &ev, 0) == kNvmlSuccess) {
        auto it = std::find(devices_.begin(), devices_.end(), ev.device);
        if (it != devices_.end()) xid_[it - devices_.begin()] = ev.eventData;
      }
    }
    std::vector<GpuInfo> out;
    for (size_t i = 0; i < offered_.size(); ++i) {
      const nvmlDevice_t dev = offered_[i].device;
      const nvmlDevice_t gpu = devices_[offered_[i].gpu];
      GpuInfo g;
      g.index = static_cast<int32_t>(i);
      g.gpu_index = static_cast<int32_t>(offered_[i].gpu);
      char buf[96] = {0};
      if (name_(dev, buf, sizeof buf) == kNvmlSuccess) g.name = buf;
      char id[96] = {0};
      if (uuid_(dev, id, sizeof id) == kNvmlSuccess) g.uuid = id;
      if (dev != gpu) {
        char parent[96] = {0};
        if (uuid_(gpu, parent, sizeof parent) == kNvmlSuccess) g.parent_uuid = parent;
        if (g.parent_uuid.empty()) g.parent_uuid = "GPU " + std::to_string(offered_[i].gpu);
      }
      nvmlMemory_t mem{};
      if (memory_(dev, &mem) == kNvmlSuccess) {
        g.memory_mib = static_cast<int64_t>(mem.total / (1024 * 1024));
      }
      nvmlUtilization_t u{};  // not supported on MIG instances: 0 there
      if (util_(dev, &u) == kNvmlSuccess) g.utilization_pct = static_cast<int32_t>(u.gpu);
      // Health is the GPU's: an instance is as healthy as the GPU it is carved from.
      unsigned long long ecc = 0;
      if (ecc_ && ecc_(gpu, kEccUncorrected, kEccVolatile, &ecc) == kNvmlSuccess && ecc > 0) {
        g.healthy = false;
        g.health_detail = std::to_string(ecc) + " uncorrected ECC errors";
      }
      if (const unsigned long long xid = xid_[offered_[i].gpu]; xid != 0) {
        g.healthy = false;
        g.health_detail +=
            (g.health_detail.empty() ? "" : "; ") + std::string("XID ") + std::to_string(xid);
      }
      out.push_back(std::move(g));
    }
    return out;
  }

  std::string kind() const override { return "nvml"; }

 private:
  void* lib_;
  nvmlReturn_t (*init_)() = nullptr;
  nvmlReturn_t (*shutdown_)() = nullptr;
  nvmlReturn_t (*count_)(unsigned int*) = nullptr;
  nvmlReturn_t (*handle_)(unsigned int, nvmlDevice_t*) = nullptr;
  nvmlReturn_t (*name_)(nvmlDevice_t, char*, unsigned int) = nullptr;
  nvmlReturn_t (*uuid_)(nvmlDevice_t, char*, unsigned int) = nullptr;
  nvmlReturn_t (*memory_)(nvmlDevice_t, nvmlMemory_t*) = nullptr;
  nvmlReturn_t (*util_)(nvmlDevice_t, nvmlUtilization_t*) = nullptr;
  nvmlReturn_t (*ecc_)(nvmlDevice_t, int, int, unsigned long long*) = nullptr;
  nvmlReturn_t (*event_set_create_)(nvmlEventSet_t*) = nullptr;
  nvmlReturn_t (*register_events_)(nvmlDevice_t, unsigned long long, nvmlEventSet_t) = nullptr;
  nvmlReturn_t (*event_wait_)(nvmlEventSet_t, nvmlEventData_t*, unsigned int) = nullptr;
  nvmlReturn_t (*event_set_free_)(nvmlEventSet_t) = nullptr;
  nvmlReturn_t (*mig_mode_)(nvmlDevice_t, unsigned int*, unsigned int*) = nullptr;
  nvmlReturn_t (*mig_count_)(nvmlDevice_t, unsigned int*) = nullptr;
  nvmlReturn_t (*mig_handle_)(nvmlDevice_t, unsigned int, nvmlDevice_t*) = nullptr;
  const char* (*error_)(nvmlReturn_t) = nullptr;
  std::vector<nvmlDevice_t> devices_;  // the GPUs
  struct Offered {
    nvmlDevice_t device;  // the GPU, or one of its MIG instances
    unsigned int gpu;     // index into devices_
  };
  std::vector<Offered> offered_;
  std::vector<unsigned long long> xid_;  // last XID per GPU, 0 = none
  nvmlEventSet_t events_ = nullptr;
};

}  // namespace

Result<std::unique_ptr<GpuProbe>> OpenNvmlProbe(const std::string& library) {
  void* lib = dlopen(library.c_str(), RTLD_NOW | RTLD_LOCAL);
  if (!lib) {
    return Status(Code::kUnavailable,
                  "cannot load " + library + " (" + dlerror() +
                      "): this host has no NVIDIA driver; install it, or run the agent with "
                      "--fake-gpus N to serve clearly labelled fake GPUs");
  }
  auto probe = std::make_unique<NvmlProbe>(lib);
  Status s = probe->Init();
  if (!s.ok()) return s;
  return std::unique_ptr<GpuProbe>(std::move(probe));
}

std::string DeviceId(const GpuInfo& g) {
  return g.parent_uuid.empty() ? std::to_string(g.gpu_index) : g.uuid;
}

FakeProbe::FakeProbe(int32_t count, std::string host, int64_t memory_mib, int32_t mig_per_gpu) {
  for (int32_t i = 0; i < count; ++i) {
    const std::string uuid = "GPU-fake-" + host + "-" + std::to_string(i);
    for (int32_t m = 0; m < std::max(mig_per_gpu, 1); ++m) {
      GpuInfo g;
      g.index = static_cast<int32_t>(gpus_.size());
      g.gpu_index = i;
      g.uuid = uuid;
      g.name = "Fake GPU (no NVML)";
      g.memory_mib = memory_mib;
      if (mig_per_gpu > 0) {
        g.uuid = "MIG-fake-" + host + "-" + std::to_string(i) + "-" + std::to_string(m);
        g.name += " MIG " + std::to_string(m + 1) + "/" + std::to_string(mig_per_gpu);
        g.memory_mib = memory_mib / mig_per_gpu;
        g.parent_uuid = uuid;
      }
      gpus_.push_back(std::move(g));
    }
  }
}

Result<std::vector<GpuInfo>> FakeProbe::Poll() {
  if (fault_file_.empty()) return gpus_;
  std::vector<GpuInfo> out = gpus_;
  std::ifstream in(fault_file_);
  std::string line;
  while (std::getline(in, line)) {
    std::istringstream fields(line);
    int32_t index = -1;
    std::string detail;
    if (!(fields >> index) || index < 0 || index >= static_cast<int32_t>(out.size())) continue;
    std::getline(fields >> std::ws, detail);
    out[index].healthy = false;
    out[index].health_detail = detail.empty() ? "fault injected" : detail;
  }
  return out;
}

void FakeProbe::MarkUnhealthy(int32_t index, std::string detail) {
  gpus_.at(index).healthy = false;
  gpus_.at(index).health_detail = std::move(detail);
}

void FakeProbe::SetUtilization(int32_t index, int32_t pct) {
  gpus_.at(index).utilization_pct = pct;
}

}  // namespace rsv::agent
