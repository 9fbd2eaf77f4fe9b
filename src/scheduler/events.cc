#include "scheduler/events.h"

#include "core/model.h"

namespace rsv {

std::string_view EventTypeName(EventType t) {
  switch (t) {
    case EventType::kJobSubmitted:
      return "JobSubmitted";
    case EventType::kJobStarted:
      return "JobStarted";
    case EventType::kJobRunning:
      return "JobRunning";
    case EventType::kJobCheckpointed:
      return "JobCheckpointed";
    case EventType::kJobResized:
      return "JobResized";
    case EventType::kNoticeSent:
      return "NoticeSent";
    case EventType::kJobPreempted:
      return "JobPreempted";
    case EventType::kJobRequeued:
      return "JobRequeued";
    case EventType::kJobConverted:
      return "JobConverted";
    case EventType::kJobSucceeded:
      return "JobSucceeded";
    case EventType::kJobFailed:
      return "JobFailed";
    case EventType::kJobCancelled:
      return "JobCancelled";
    case EventType::kPriceChanged:
      return "PriceChanged";
    case EventType::kReservationConfirmed:
      return "ReservationConfirmed";
    case EventType::kReservationActivated:
      return "ReservationActivated";
    case EventType::kReservationEnded:
      return "ReservationEnded";
    case EventType::kReservationReturned:
      return "ReservationReturned";
    case EventType::kNodeStateChanged:
      return "NodeStateChanged";
    case EventType::kReservationMoved:
      return "ReservationMoved";
  }
  return "?";
}

std::string FormatEvent(const Event& e, const ClusterState& s) {
  std::string out =
      "t=" + Duration::Micros(e.at.micros()).ToString() + " " + std::string(EventTypeName(e.type));
  if (e.job.valid()) {
    const Job& j = s.job(e.job);
    out += " job=" + (j.spec.name.empty() ? e.job.ToString() : j.spec.name);
    out += " attempt=" + std::to_string(e.attempt);
  }
  if (e.reservation.valid()) out += " reservation=" + e.reservation.ToString();
  if (e.node.valid()) out += " node=" + s.node(e.node).name;
  if (e.pool.valid()) out += " pool=" + s.pool(e.pool).config.name;
  switch (e.type) {
    case EventType::kPriceChanged:
      out += " from=" + e.old_price.ToString() + " to=" + e.price.ToString();
      break;
    case EventType::kNoticeSent:
      out += " deadline=" + Duration::Micros(e.deadline.micros()).ToString() +
             " price=" + e.price.ToString();
      break;
    case EventType::kJobStarted:
    case EventType::kReservationConfirmed:
    case EventType::kJobConverted:
      out += " price=" + e.price.ToString();
      break;
    case EventType::kReservationReturned:
      out += " credit=" + e.price.ToString();
      break;
    default:
      break;
  }
  if (!e.detail.empty()) out += " (" + e.detail + ")";
  return out;
}

}  // namespace rsv
