#include <CLI/CLI.hpp>
#include <iostream>
#include <vector>

#include "cli/commands.h"

int main(int argc, char** argv) {
  CLI::App app{"reservoir: GPU capacity control plane (reservations + spot market)"};
  app.require_subcommand(1);
  // Every option's help shows its default (subcommands copy this when they are made).
  app.option_defaults()->always_capture_default();
  std::vector<std::pair<CLI::App*, rsv::cli::Action>> actions;
  auto add = [&](rsv::cli::Action (*adder)(CLI::App&)) {
    size_t before = app.get_subcommands({}).size();
    rsv::cli::Action action = adder(app);
    actions.emplace_back(app.get_subcommands({})[before], std::move(action));
  };
  add(rsv::cli::AddVersion);
  add(rsv::cli::AddScenario);
  add(rsv::cli::AddSim);
  add(rsv::cli::AddServer);
  add(rsv::cli::AddAgent);
  add(rsv::cli::AddUp);
  for (auto adder :
       {rsv::cli::AddSubmit, rsv::cli::AddJobs, rsv::cli::AddJob, rsv::cli::AddWhy,
        rsv::cli::AddCancel, rsv::cli::AddRelease, rsv::cli::AddLogs, rsv::cli::AddReserve,
        rsv::cli::AddReservations, rsv::cli::AddReturn, rsv::cli::AddMarket, rsv::cli::AddLedger,
        rsv::cli::AddWaste, rsv::cli::AddNodes, rsv::cli::AddTenants, rsv::cli::AddToken}) {
    add(adder);
  }
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    int code = app.exit(e);
    return code == 0 ? 0 : 2;
  }
  for (auto& [sub, action] : actions) {
    if (sub->parsed()) return action();
  }
  return 2;
}
