// scheduler/events: the typed decisions a scheduling step produces. The server journals and
// streams them, the simulator counts them, scenario files assert on them.
#pragma once

#include <cstdint>
#include <optional>
#include <string>

#include "common/ids.h"
#include "common/units.h"

namespace rsv {

class ClusterState;

enum class EventType {
  kJobSubmitted,
  kJobStarted,  // placed: running at once, or starting until the node's agent confirms
  kJobRunning,  // the agent confirmed the start (nodes with an agent only)
  kNoticeSent,
  kJobPreempted,  // stopped after notice (or released early); back to pending
  kJobRequeued,   // lost without notice (node down) or failed with restarts left
  kJobConverted,  // reserved-tier job continues as spot after its reservation ended
  kJobSucceeded,
  kJobFailed,
  kJobCancelled,
  kPriceChanged,
  kReservationConfirmed,
  kReservationActivated,
  kReservationEnded,
  kReservationReturned,
  kNodeStateChanged,
  kReservationMoved,  // part of a reservation's GPUs moved off a node that left service
  kJobCheckpointed,   // the job reported a completed checkpoint (work before it is safe)
  kJobResized,        // an elastic job's next attempt started at a new size (restart mode)
};
std::string_view EventTypeName(EventType t);

struct Event {
  int64_t seq = 0;
  Timestamp at;
  EventType type = EventType::kJobSubmitted;
  JobId job;
  PoolId pool;
  ReservationId reservation;
  NodeId node;
  Money price;         // PriceChanged: new price; NoticeSent: price at notice
  Money old_price;     // PriceChanged
  Timestamp deadline;  // NoticeSent
  int32_t attempt = 0;
  JobId beneficiary;  // NoticeSent: the job the GPUs are wanted for (none for "supply")
  // JobStarted of a reserved-tier attempt: when it began to fit its reservation's free room
  // (the owner's wait, invariant 7, runs from here).
  std::optional<Timestamp> fits_since;
  std::string detail;  // reason, state, or placement
};

// One line, stable, for logs, scenario expectations and golden files.
std::string FormatEvent(const Event& e, const ClusterState& state);

}  // namespace rsv
