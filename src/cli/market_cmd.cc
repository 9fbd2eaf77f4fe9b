// Client subcommands to look around: market, ledger, nodes, tenants, token.
#include <CLI/CLI.hpp>
#include <iostream>
#include <memory>
#include <nlohmann/json.hpp>

#include "cli/client.h"
#include "cli/commands.h"
#include "common/text.h"

namespace rsv::cli {

using json = nlohmann::json;

Action AddMarket(CLI::App& app) {
  auto f = std::make_shared<ClientFlags>();
  CLI::App* s = app.add_subcommand("market", "Spot price, supply, demand and order book per pool");
  AddClientFlags(s, f.get());
  return [f] {
    return Print(*f, Call(*f, "GET", "/v1/market"), [](const std::string& b) {
      for (const json& p : json::parse(b)) {
        std::cout << p["pool"].get<std::string>() << ": price " << p["price"].get<std::string>()
                  << " (reserve " << p["reserve_price"].get<std::string>() << "), supply "
                  << p["supply_gpus"] << " GPUs, spot used " << p["spot_used_gpus"]
                  << ", reserved used " << p["reserved_used_gpus"] << ", waiting "
                  << p["demand_pending_bids"] << " bids / " << p["demand_pending_gpus"]
                  << " GPUs\n";
        std::vector<std::vector<std::string>> rows;
        for (const json& l : p["order_book"])
          rows.push_back(
              {"  " + l["limit_price"].get<std::string>(), std::to_string(l["gpus"].get<int>())});
        if (!rows.empty()) PrintTable({"  LIMIT", "GPUS"}, rows);
      }
    });
  };
}

Action AddLedger(CLI::App& app) {
  struct Flags {
    ClientFlags c;
    std::string tenant;
    std::string by;
  };
  auto f = std::make_shared<Flags>();
  CLI::App* s = app.add_subcommand("ledger", "Your charges, credits and balance");
  AddClientFlags(s, &f->c);
  s->add_option("--tenant", f->tenant, "Admin only: this tenant's ledger");
  s->add_option("--by", f->by, "Roll entries up: hour or job (default: the last 20 entries)")
      ->check(CLI::IsMember({"hour", "job"}));
  return [f] {
    std::string q = "/v1/ledger?";
    if (!f->tenant.empty()) q += "tenant=" + f->tenant + "&";
    q += f->by.empty() ? "order=desc&limit=20" : "group=" + f->by;
    return Print(f->c, Call(f->c, "GET", q), [f](const std::string& b) {
      json l = json::parse(b);
      std::cout << l["account"].get<std::string>() << ": balance "
                << l["balance"].get<std::string>() << " (charges "
                << l["charges"].get<std::string>() << ", credits "
                << l["credits"].get<std::string>() << ")\n";
      std::vector<std::vector<std::string>> rows;
      const json& e = l["entries"];
      auto target = [](const json& r) {
        // Spot money is posted per pool and step, for all its jobs at once.
        return r.contains("job")           ? "job " + r["job"].dump()
               : r.contains("reservation") ? "reservation " + r["reservation"].dump()
                                           : std::string("spot, all jobs");
      };
      for (size_t k = 0; k < e.size(); ++k) {
        // The newest 20 come newest first: print them oldest first, like the roll-ups.
        const json& r = f->by.empty() ? e[e.size() - 1 - k] : e[k];
        if (f->by == "hour") {
          rows.push_back({LocalTime(r["hour_us"]), r["what"], r["pool"],
                          std::to_string(r["entries"].get<int64_t>()), r["amount"]});
        } else if (f->by == "job") {
          rows.push_back({target(r), r["what"], LocalTime(r["from_us"]), LocalTime(r["to_us"]),
                          std::to_string(r["entries"].get<int64_t>()), r["amount"]});
        } else {
          rows.push_back({LocalTime(r["at_us"]), r["what"], r["amount"], target(r)});
        }
      }
      if (rows.empty()) return;
      if (f->by == "hour") {
        PrintTable({"HOUR", "WHAT", "POOL", "ENTRIES", "AMOUNT"}, rows);
      } else if (f->by == "job") {
        PrintTable({"FOR", "WHAT", "FROM", "TO", "ENTRIES", "AMOUNT"}, rows);
      } else {
        PrintTable({"TIME", "WHAT", "AMOUNT", "FOR"}, rows);
      }
    });
  };
}

Action AddWaste(CLI::App& app) {
  auto c = std::make_shared<ClientFlags>();
  CLI::App* s = app.add_subcommand(
      "waste", "Reserved GPU-hours by what became of them, per tenant and pool, and unmet demand");
  AddClientFlags(s, c.get());
  return [c] {
    return Print(*c, Call(*c, "GET", "/v1/waste"), [](const std::string& b) {
      json w = json::parse(b);
      auto hours = [](double s) {
        char buf[32];
        std::snprintf(buf, sizeof buf, "%.2f", s / 3600);
        return std::string(buf);
      };
      auto part = [&](const json& r, const char* k) {
        double total = r["reserved_gpu_s"].get<double>(), v = r[k].get<double>();
        char buf[16];
        std::snprintf(buf, sizeof buf, " (%.0f%%)", total > 0 ? 100 * v / total : 0.0);
        return hours(v) + buf;
      };
      std::vector<std::vector<std::string>> rows;
      for (const json& r : w["reserved"]) {
        rows.push_back({r["tenant"], r["pool"], hours(r["reserved_gpu_s"].get<double>()),
                        part(r, "owner_used_gpu_s"), part(r, "lent_sold_gpu_s"),
                        part(r, "idle_unsold_gpu_s"), part(r, "not_lendable_gpu_s")});
      }
      std::cout << "Reserved GPU-hours:\n";
      PrintTable(
          {"TENANT", "POOL", "RESERVED", "OWNER USED", "LENT+SOLD", "IDLE UNSOLD", "NOT LENDABLE"},
          rows);
      std::cout << "Unmet spot demand (GPU-hours bids waited):";
      for (const auto& [pool, s] : w["unmet_spot_gpu_s"].items()) {
        std::cout << " " << pool << " " << hours(s.get<double>());
      }
      std::cout << "\n";
    });
  };
}

Action AddNodes(CLI::App& app) {
  struct Flags {
    ClientFlags c;
    std::vector<std::string> args;
  };
  auto f = std::make_shared<Flags>();
  CLI::App* s = app.add_subcommand("nodes", "List nodes; `nodes drain|undrain NODE` (admin)");
  AddClientFlags(s, &f->c);
  s->add_option("args", f->args, "drain NODE | undrain NODE");
  return [f] {
    if (!f->args.empty()) {
      if (f->args.size() != 2 || (f->args[0] != "drain" && f->args[0] != "undrain")) {
        std::cerr << "usage: reservoir nodes [drain|undrain NODE]\n";
        return 2;
      }
      return Print(f->c, Call(f->c, "POST", "/v1/nodes/" + f->args[1] + "/" + f->args[0]),
                   [](const std::string& b) { std::cout << b << "\n"; });
    }
    return Print(f->c, Call(f->c, "GET", "/v1/nodes"), [](const std::string& b) {
      std::vector<std::vector<std::string>> rows;
      for (const json& n : json::parse(b)) {
        // Who runs it: an agent with real (nvml) or fake GPUs, or nobody (declared in config).
        std::string agent = "-", note;
        if (n.contains("agent")) {
          const json& a = n["agent"];
          agent = a.value("probe", "") == "fake" ? "agent (FAKE GPUs)" : "agent (nvml)";
          if (!a.value("health", "").empty()) note = a.value("health", "");
        }
        rows.push_back(
            {n["name"], n["pool"], n["state"],
             std::to_string(n["used"].get<int>()) + "/" + std::to_string(n["gpus"].get<int>()),
             n["topology"], agent, note});
      }
      PrintTable({"NODE", "POOL", "STATE", "GPUS USED", "TOPOLOGY", "RUN BY", "NOTE"}, rows);
    });
  };
}

Action AddTenants(CLI::App& app) {
  struct Flags {
    ClientFlags c;
    std::string create, remove;
  };
  auto f = std::make_shared<Flags>();
  CLI::App* s = app.add_subcommand("tenants", "List tenants; --create NAME, --delete NAME (admin)");
  AddClientFlags(s, &f->c);
  s->add_option("--create", f->create, "Create a tenant");
  s->add_option("--delete", f->remove,
                "Delete a tenant with no unfinished job or reservation (its tokens are revoked)");
  return [f] {
    if (!f->create.empty() && !f->remove.empty()) {
      std::cerr << "usage: reservoir tenants [--create NAME | --delete NAME]\n";
      return 2;
    }
    if (!f->remove.empty()) {
      return Print(f->c, Call(f->c, "DELETE", "/v1/tenants/" + f->remove),
                   [](const std::string& b) {
                     json r = json::parse(b);
                     std::cout << "tenant " << Printable(r["name"].get<std::string>())
                               << " deleted (" << r["tokens_revoked"] << " tokens revoked)\n";
                   });
    }
    if (!f->create.empty()) {
      return Print(f->c, Call(f->c, "POST", "/v1/tenants", json{{"name", f->create}}.dump()),
                   [](const std::string& b) {
                     std::cout << "tenant " << Printable(json::parse(b)["name"].get<std::string>())
                               << " created\n";
                   });
    }
    return Print(f->c, Call(f->c, "GET", "/v1/tenants"), [](const std::string& b) {
      std::vector<std::vector<std::string>> rows;
      for (const json& t : json::parse(b))
        rows.push_back({std::to_string(t["id"].get<int64_t>()), t["name"]});
      PrintTable({"ID", "NAME"}, rows);
    });
  };
}

Action AddToken(CLI::App& app) {
  struct Flags {
    ClientFlags c;
    std::string tenant, node, revoke;
    bool admin = false, list = false;
  };
  auto f = std::make_shared<Flags>();
  CLI::App* s = app.add_subcommand(
      "token", "Create an API token (tenant, node or admin), list or revoke tokens (admin)");
  AddClientFlags(s, &f->c);
  s->add_option("--tenant", f->tenant, "Tenant the token acts for");
  s->add_option("--node", f->node,
                "A node's token for its agent: registers and syncs that node, nothing else");
  s->add_flag("--admin", f->admin, "An admin token instead");
  s->add_flag("--list", f->list, "List tokens (their ids and what they may do; never the token)");
  s->add_option("--revoke", f->revoke, "Revoke a token: its id (from --list) or the token itself");
  return [f] {
    int modes = int(!f->tenant.empty()) + int(!f->node.empty()) + int(f->admin) + int(f->list) +
                int(!f->revoke.empty());
    if (modes != 1) {
      std::cerr << "usage: reservoir token --tenant NAME | --node NAME | --admin | --list | "
                   "--revoke ID|TOKEN\n";
      return 2;
    }
    if (f->list) {
      return Print(f->c, Call(f->c, "GET", "/v1/tokens"), [](const std::string& b) {
        std::vector<std::vector<std::string>> rows;
        for (const json& t : json::parse(b)) {
          std::string scope = t.value("admin", false) ? "admin"
                              : t.contains("node")    ? "node " + t["node"].get<std::string>()
                                                      : "tenant " + t.value("tenant", "");
          rows.push_back({t["id"], scope});
        }
        PrintTable({"ID", "SCOPE"}, rows);
      });
    }
    if (!f->revoke.empty()) {
      // An id is 12 hex digits; anything else is taken to be the token itself.
      bool id = f->revoke.size() == 12 &&
                f->revoke.find_first_not_of("0123456789abcdef") == std::string::npos;
      json body = id ? json{{"id", f->revoke}} : json{{"token", f->revoke}};
      return Print(
          f->c, Call(f->c, "POST", "/v1/tokens/revoke", body.dump()), [](const std::string& b) {
            std::cout << "token " << json::parse(b)["id"].get<std::string>() << " revoked\n";
          });
    }
    json body = f->admin           ? json{{"admin", true}}
                : !f->node.empty() ? json{{"node", f->node}}
                                   : json{{"tenant", f->tenant}};
    return Print(f->c, Call(f->c, "POST", "/v1/tokens", body.dump()), [](const std::string& b) {
      std::cout << json::parse(b)["token"].get<std::string>() << "\n";
    });
  };
}

}  // namespace rsv::cli
