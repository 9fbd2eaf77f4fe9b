#include <CLI/CLI.hpp>
#include <iostream>

#include "cli/commands.h"

namespace rsv::cli {

Action AddVersion(CLI::App& app) {
  app.add_subcommand("version", "Print the version");
  return [] {
    std::cout << "reservoir " << RESERVOIR_VERSION << "\n";
    return 0;
  };
}

}  // namespace rsv::cli
