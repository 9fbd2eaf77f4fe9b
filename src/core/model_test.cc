#include "core/model.h"

#include <gtest/gtest.h>

namespace rsv {
namespace {

TEST(ClusterState, AddsAndFindsByName) {
  ClusterState s;
  PoolConfig c;
  c.name = "h100";
  PoolId p = *s.AddPool(c);
  NodeId n = *s.AddNode("n1", p, 8, "zone-a/rack-1");
  TenantId t = *s.AddTenant("team-a");
  EXPECT_EQ(*s.FindPool("h100"), p);
  EXPECT_EQ(*s.FindNode("n1"), n);
  EXPECT_EQ(*s.FindTenant("team-a"), t);
  EXPECT_FALSE(s.FindNode("n2").has_value());
  EXPECT_EQ(s.ReadyGpus(p), 8);
  s.node(n).state = NodeState::kDown;
  EXPECT_EQ(s.ReadyGpus(p), 0);
}

TEST(ClusterState, RejectsBadInputNamingTheField) {
  ClusterState s;
  PoolConfig c;
  c.name = "bad name";
  EXPECT_EQ(s.AddPool(c).status().field(), "name");
  c.name = "p";
  c.operator_share = 20000;
  EXPECT_EQ(s.AddPool(c).status().field(), "operator_share");
  c.operator_share = 0;
  c.reserve_price = Money::Micros(-1);
  EXPECT_EQ(s.AddPool(c).status().field(), "reserve_price");
  c.reserve_price = Money();
  PoolId p = *s.AddPool(c);
  EXPECT_EQ(s.AddPool(c).status().code(), Code::kAlreadyExists);
  EXPECT_EQ(s.AddNode("n", p, 0, "").status().field(), "gpus");
  EXPECT_EQ(s.AddNode("n", p, 65, "").status().field(), "gpus");
  EXPECT_EQ(s.AddNode("n", PoolId(9), 8, "").status().field(), "pool");
  EXPECT_TRUE(s.AddNode("n", p, 8, "").ok());
  EXPECT_EQ(s.AddNode("n", p, 8, "").status().code(), Code::kAlreadyExists);
}

TEST(ClusterState, InternsTopologyRacksAndZones) {
  ClusterState s;
  PoolConfig c;
  c.name = "p";
  PoolId p = *s.AddPool(c);
  NodeId a = *s.AddNode("a", p, 8, "z1/r1");
  NodeId b = *s.AddNode("b", p, 8, "z1/r1");
  NodeId d = *s.AddNode("d", p, 8, "z1/r2");
  NodeId e = *s.AddNode("e", p, 8, "z2/r1");
  EXPECT_EQ(s.node(a).rack, s.node(b).rack);
  EXPECT_NE(s.node(a).rack, s.node(d).rack);
  EXPECT_EQ(s.node(a).zone, s.node(d).zone);
  EXPECT_NE(s.node(a).rack, s.node(e).rack);  // same rack name, other zone: another rack
  EXPECT_NE(s.node(a).zone, s.node(e).zone);
}

TEST(Tier, ParsesNamesAndRejectsOthers) {
  EXPECT_EQ(*ParseTier("auto"), Tier::kAuto);
  EXPECT_EQ(ParseTier("gold").status().field(), "tier");
}

}  // namespace
}  // namespace rsv
