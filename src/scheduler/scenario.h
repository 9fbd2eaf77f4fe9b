// scheduler/scenario: a small text format that drives a Scheduler in virtual time and asserts on
// what it decides. Shared by the test suite (tests/scenarios/*.scn), `reservoir scenario FILE`
// and benchmarks. The format is documented in docs/scenarios.md.
#pragma once

#include <string>
#include <vector>

#include "common/status.h"

namespace rsv {

struct ScenarioOutcome {
  int32_t expectations = 0;             // expect lines checked
  std::vector<std::string> events;      // every decision, formatted, in order
  std::vector<std::string> violations;  // invariant violations seen (must be empty)
};

// Runs the scenario. Fails with the file name and line of the first failed expectation or
// malformed line; the events up to there are still in `outcome` when it is given.
Result<ScenarioOutcome> RunScenario(const std::string& text, const std::string& name,
                                    ScenarioOutcome* partial = nullptr);

}  // namespace rsv
