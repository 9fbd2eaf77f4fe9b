// server/views: how the control plane's objects read as JSON: the bodies of the API's replies
// and of the event history (docs/api/openapi.yaml). Internal to the server's translation units
// that build replies (it brings in nlohmann-json).
#pragma once

#include <nlohmann/json.hpp>
#include <string>

#include "core/model.h"
#include "scheduler/events.h"
#include "server/control.h"

namespace rsv::server {

inline std::string MoneyStr(Money m) { return m.ToString(); }
// JSON text of `j`; client strings that are not UTF-8 come out with U+FFFD in their place.
inline std::string Dump(const nlohmann::json& j) {
  return j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
}
nlohmann::json PlacementJson(const ClusterState& s, const Placement& p);
// A token as listed: its id (the first 12 hex digits of its hash; the token itself is never
// stored) and what it may do.
nlohmann::json TokenJson(const std::string& hash, const Caller& c);
nlohmann::json JobJson(const ClusterState& s, const Job& j);
nlohmann::json ReservationJson(const ClusterState& s, const Reservation& r);
nlohmann::json EventJson(const ClusterState& s, const Event& e);

}  // namespace rsv::server
