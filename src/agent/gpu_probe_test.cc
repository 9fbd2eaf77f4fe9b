// One contract for every GpuProbe: the fake always, NVML where the host has a driver.
#include "agent/gpu_probe.h"

#include <gtest/gtest.h>

#include <set>

namespace rsv::agent {
namespace {

void ExpectContract(GpuProbe& probe) {
  Result<std::vector<GpuInfo>> first = probe.Poll();
  ASSERT_TRUE(first.ok()) << first.status().ToString();
  ASSERT_FALSE(first->empty());
  std::set<std::string> uuids;
  for (size_t i = 0; i < first->size(); ++i) {
    const GpuInfo& g = (*first)[i];
    EXPECT_EQ(g.index, static_cast<int32_t>(i));
    EXPECT_FALSE(g.uuid.empty());
    EXPECT_FALSE(g.name.empty());
    EXPECT_GT(g.memory_mib, 0);
    EXPECT_GE(g.utilization_pct, 0);
    EXPECT_LE(g.utilization_pct, 100);
    EXPECT_TRUE(g.healthy || !g.health_detail.empty()) << "unhealthy GPUs say why";
    // A MIG instance is offered as a device of its own, named by its UUID; its GPU is not.
    if (!g.parent_uuid.empty()) {
      EXPECT_EQ(g.uuid.rfind("MIG-", 0), 0u) << g.uuid;
      EXPECT_EQ(DeviceId(g), g.uuid);
      for (const GpuInfo& other : *first) EXPECT_NE(other.uuid, g.parent_uuid);
    } else {
      EXPECT_EQ(DeviceId(g), std::to_string(g.gpu_index));
    }
    uuids.insert(g.uuid);
  }
  EXPECT_EQ(uuids.size(), first->size()) << "UUIDs are unique";
  Result<std::vector<GpuInfo>> again = probe.Poll();
  ASSERT_TRUE(again.ok());
  ASSERT_EQ(again->size(), first->size());
  for (size_t i = 0; i < first->size(); ++i) EXPECT_EQ((*again)[i].uuid, (*first)[i].uuid);
  EXPECT_TRUE(probe.kind() == "nvml" || probe.kind() == "fake");
}

TEST(GpuProbeContract, Fake) {
  FakeProbe fake(8, "host-a");
  ExpectContract(fake);
  EXPECT_EQ(fake.kind(), "fake");
}

TEST(GpuProbeContract, FakeMig) {
  FakeProbe fake(2, "host-m", 81920, 3);
  ExpectContract(fake);
  auto gpus = fake.Poll();
  ASSERT_TRUE(gpus.ok());
  ASSERT_EQ(gpus->size(), 6u);
  EXPECT_EQ((*gpus)[4].uuid, "MIG-fake-host-m-1-1");
  EXPECT_EQ((*gpus)[4].parent_uuid, "GPU-fake-host-m-1");
  EXPECT_EQ((*gpus)[4].memory_mib, 81920 / 3);
}

// The devices offered are numbered in order, but a whole GPU keeps its own index for CUDA.
TEST(FakeProbe, WholeGpusKeepTheirOwnIndex) {
  FakeProbe fake(3, "h");
  auto gpus = fake.Poll();
  ASSERT_TRUE(gpus.ok());
  for (const GpuInfo& g : *gpus) EXPECT_EQ(DeviceId(g), std::to_string(g.gpu_index));
  FakeProbe split(2, "h", 81920, 2);
  auto devices = split.Poll();
  ASSERT_TRUE(devices.ok());
  EXPECT_EQ((*devices)[3].gpu_index, 1);
  EXPECT_EQ(DeviceId((*devices)[3]), "MIG-fake-h-1-1");
}

TEST(GpuProbeContract, NvmlWhereTheHostHasADriver) {
  Result<std::unique_ptr<GpuProbe>> nvml = OpenNvmlProbe();
  if (!nvml.ok()) GTEST_SKIP() << "no NVML on this host: " << nvml.status().message();
  ExpectContract(**nvml);
}

TEST(NvmlProbe, MissingLibrarySaysWhatToDo) {
  Result<std::unique_ptr<GpuProbe>> p = OpenNvmlProbe("libnvidia-ml-does-not-exist.so.1");
  ASSERT_FALSE(p.ok());
  EXPECT_EQ(p.status().code(), Code::kUnavailable);
  EXPECT_NE(p.status().message().find("--fake-gpus"), std::string::npos) << p.status().message();
}

TEST(FakeProbe, FaultInjectionReportsUnhealthyWithReason) {
  FakeProbe fake(2, "h");
  fake.MarkUnhealthy(1, "XID 79");
  fake.SetUtilization(0, 55);
  auto gpus = fake.Poll();
  ASSERT_TRUE(gpus.ok());
  EXPECT_TRUE((*gpus)[0].healthy);
  EXPECT_EQ((*gpus)[0].utilization_pct, 55);
  EXPECT_FALSE((*gpus)[1].healthy);
  EXPECT_EQ((*gpus)[1].health_detail, "XID 79");
  ExpectContract(fake);
}

}  // namespace
}  // namespace rsv::agent
