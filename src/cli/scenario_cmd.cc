#include <CLI/CLI.hpp>
#include <fstream>
#include <iostream>
#include <memory>
#include <sstream>

#include "cli/commands.h"
#include "scheduler/scenario.h"

namespace rsv::cli {

Action AddScenario(CLI::App& app) {
  auto files = std::make_shared<std::vector<std::string>>();
  auto quiet = std::make_shared<bool>(false);
  CLI::App* sub = app.add_subcommand(
      "scenario", "Run scenario files (.scn) through the scheduler and print its decisions");
  sub->add_option("files", *files, "Scenario files")->required()->check(CLI::ExistingFile);
  sub->add_flag("-q,--quiet", *quiet, "Print only the verdict per file");
  return [files, quiet] {
    int failed = 0;
    for (const std::string& path : *files) {
      std::ifstream in(path);
      std::stringstream text;
      text << in.rdbuf();
      ScenarioOutcome partial;
      Result<ScenarioOutcome> r = RunScenario(text.str(), path, &partial);
      const ScenarioOutcome& out = r.ok() ? *r : partial;
      if (!*quiet) {
        for (const std::string& e : out.events) std::cout << "  " << e << "\n";
      }
      if (r.ok()) {
        std::cout << "PASS " << path << " (" << r->expectations << " expectations)\n";
      } else {
        std::cout << "FAIL " << r.status().ToString() << "\n";
        ++failed;
      }
    }
    return failed ? 1 : 0;
  };
}

}  // namespace rsv::cli
