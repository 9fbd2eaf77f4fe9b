// Runs every tests/scenarios/*.scn through the scheduler. Each file carries its own
// expectations; a failure names the file and line.
#include "scheduler/scenario.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <sstream>

namespace rsv {
namespace {

std::vector<std::string> ScenarioFiles() {
  std::vector<std::string> out;
  for (const auto& e : std::filesystem::directory_iterator("tests/scenarios")) {
    if (e.path().extension() == ".scn") out.push_back(e.path().string());
  }
  std::sort(out.begin(), out.end());
  return out;
}

class ScenarioTest : public testing::TestWithParam<std::string> {};

TEST_P(ScenarioTest, Passes) {
  std::ifstream in(GetParam());
  std::stringstream text;
  text << in.rdbuf();
  ScenarioOutcome partial;
  Result<ScenarioOutcome> r = RunScenario(text.str(), GetParam(), &partial);
  std::string log;
  for (const std::string& e : (r.ok() ? r->events : partial.events)) log += "  " + e + "\n";
  ASSERT_TRUE(r.ok()) << r.status().ToString() << "\nevents:\n" << log;
  EXPECT_GT(r->expectations, 0);
  EXPECT_TRUE(r->violations.empty());
}

INSTANTIATE_TEST_SUITE_P(Files, ScenarioTest, testing::ValuesIn(ScenarioFiles()),
                         [](const testing::TestParamInfo<std::string>& info) {
                           std::string n = std::filesystem::path(info.param).stem().string();
                           std::replace(n.begin(), n.end(), '-', '_');
                           return n;
                         });

TEST(ScenarioSuite, HasAtLeastTwelveScenarios) { EXPECT_GE(ScenarioFiles().size(), 12u); }

TEST(ScenarioFormat, BadLinesNameTheLineAndField) {
  Result<ScenarioOutcome> r = RunScenario("pool p\nnode n1 pool=p gpus=eight\n", "x.scn");
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().ToString().find("x.scn:2"), std::string::npos) << r.status().ToString();
  EXPECT_NE(r.status().message().find("gpus"), std::string::npos) << r.status().ToString();
  r = RunScenario("frobnicate\n", "y.scn");
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("unknown command"), std::string::npos);
}

TEST(ScenarioFormat, FailedExpectationFails) {
  Result<ScenarioOutcome> r = RunScenario(
      "pool p\nnode n1 pool=p gpus=8\ntenant t\n"
      "submit a tenant=t pool=p gpus=8 tier=spot limit=2\nexpect state a pending\n",
      "z.scn");
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("got a running"), std::string::npos) << r.status().ToString();
}

}  // namespace
}  // namespace rsv
