// cli: the `reservoir` binary's subcommands, one file each. main.cc only dispatches; every
// subcommand registers its flags on the CLI11 app and returns a process exit code
// (0 ok, 1 the work failed, 2 usage).
#pragma once

#include <functional>

namespace CLI {
class App;
}

namespace rsv::cli {

// Adds the subcommand to `app` and returns the action to run when it was chosen.
using Action = std::function<int()>;
Action AddVersion(CLI::App& app);
Action AddScenario(CLI::App& app);
Action AddSim(CLI::App& app);
Action AddServer(CLI::App& app);
Action AddSubmit(CLI::App& app);
Action AddJobs(CLI::App& app);
Action AddJob(CLI::App& app);
Action AddWhy(CLI::App& app);
Action AddCancel(CLI::App& app);
Action AddRelease(CLI::App& app);
Action AddReserve(CLI::App& app);
Action AddReservations(CLI::App& app);
Action AddReturn(CLI::App& app);
Action AddMarket(CLI::App& app);
Action AddLedger(CLI::App& app);
Action AddWaste(CLI::App& app);
Action AddNodes(CLI::App& app);
Action AddTenants(CLI::App& app);
Action AddToken(CLI::App& app);
Action AddAgent(CLI::App& app);
Action AddUp(CLI::App& app);
Action AddLogs(CLI::App& app);

}  // namespace rsv::cli
