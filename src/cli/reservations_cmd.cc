// Client subcommands for reservations: reserve, reservations, return.
#include <CLI/CLI.hpp>
#include <iostream>
#include <memory>
#include <nlohmann/json.hpp>

#include "cli/client.h"
#include "cli/commands.h"

namespace rsv::cli {

using json = nlohmann::json;

Action AddReserve(CLI::App& app) {
  struct Flags {
    ClientFlags c;
    std::string pool = "gpu", duration = "1h", tenant;
    int gpus = 0;
    bool quote = false, no_lend = false;
  };
  auto f = std::make_shared<Flags>();
  CLI::App* s = app.add_subcommand("reserve", "Book GPUs of a pool from now for a duration");
  AddClientFlags(s, &f->c);
  s->add_option("--pool", f->pool, "Pool");
  s->add_option("--gpus", f->gpus, "GPUs")->required();
  s->add_option("--for", f->duration, "Duration, with a unit (e.g. 90m, 8h, 2d)")->required();
  s->add_flag("--quote", f->quote, "Only show the price and whether it fits");
  s->add_flag("--no-lend", f->no_lend, "Keep idle reserved GPUs out of the spot market");
  s->add_option("--tenant", f->tenant, "Admin only: the tenant to reserve for");
  return [f] {
    // A bare number is not a duration here: 90 seconds and 90 hours are both plausible.
    if (!f->duration.empty() && f->duration.find_first_not_of("0123456789") == std::string::npos) {
      std::cerr << "error: --for: give a unit, e.g. " << f->duration << "h or " << f->duration
                << "m\n";
      return 2;
    }
    json body = {{"pool", f->pool},
                 {"gpus", f->gpus},
                 {"duration", f->duration},
                 {"lend", !f->no_lend},
                 {"quote_only", f->quote}};
    if (!f->tenant.empty()) body["tenant"] = f->tenant;
    return Print(
        f->c, Call(f->c, "POST", "/v1/reservations", body.dump()), [f](const std::string& b) {
          json j = json::parse(b);
          if (f->quote) {
            std::cout << (j["admitted"].get<bool>() ? "fits" : "does not fit") << " for "
                      << f->duration << ": " << j["price_per_gpu_hour"].get<std::string>()
                      << " per GPU-hour, total " << j["total"].get<std::string>()
                      << " (largest that fits: " << j["largest_fit"] << ")\n";
            return;
          }
          std::cout << "reservation " << j["id"] << ": " << j["gpus"] << " GPUs of "
                    << j["pool"].get<std::string>() << " at "
                    << j["price_per_gpu_hour"].get<std::string>() << " per GPU-hour, charged "
                    << j["charged"].get<std::string>() << "\n";
        });
  };
}

Action AddReservations(CLI::App& app) {
  auto f = std::make_shared<ClientFlags>();
  CLI::App* s = app.add_subcommand("reservations", "List reservations");
  AddClientFlags(s, f.get());
  return [f] {
    return Print(*f, Call(*f, "GET", "/v1/reservations"), [](const std::string& b) {
      std::vector<std::vector<std::string>> rows;
      for (const json& r : json::parse(b)) {
        std::string nodes;  // node:GPUs it holds there
        for (const json& sl : r.value("binding", json::array())) {
          nodes += (nodes.empty() ? "" : ",") + sl["node"].get<std::string>() + ":" +
                   std::to_string(sl["gpus"].size());
        }
        rows.push_back({std::to_string(r["id"].get<int64_t>()), r["tenant"], r["pool"],
                        std::to_string(r["gpus"].get<int>()),
                        LocalTime(r["start_us"].get<int64_t>()),
                        LocalTime(r["end_us"].get<int64_t>()), r["lend"].get<bool>() ? "yes" : "no",
                        r["price_per_gpu_hour"], r["charged"], nodes});
      }
      PrintTable(
          {"ID", "TENANT", "POOL", "GPUS", "START", "END", "LEND", "PRICE", "CHARGED", "NODES"},
          rows);
    });
  };
}

Action AddReturn(CLI::App& app) {
  struct Flags {
    ClientFlags c;
    int64_t id = 0;
  };
  auto f = std::make_shared<Flags>();
  CLI::App* s = app.add_subcommand("return", "Return the rest of a reservation (credited)");
  AddClientFlags(s, &f->c);
  s->add_option("reservation", f->id, "Reservation id")->required();
  return [f] {
    return Print(f->c, Call(f->c, "POST", "/v1/reservations/" + std::to_string(f->id) + "/return"),
                 [](const std::string& b) {
                   json j = json::parse(b);
                   std::cout << "reservation " << j["id"] << " now ends at "
                             << LocalTime(j["end_us"].get<int64_t>()) << "\n";
                 });
  };
}

}  // namespace rsv::cli
