#include "reservation/calendar.h"

#include <algorithm>

namespace rsv {

int32_t Calendar::BookedAt(Timestamp t) const {
  int32_t booked = 0;
  for (auto it = delta_.begin(); it != delta_.end() && it->first <= t; ++it) booked += it->second;
  return booked;
}

int32_t Calendar::PeakBooked(Timestamp start, Timestamp end) const {
  if (!(start < end)) return 0;
  int32_t booked = 0;
  auto it = delta_.begin();
  for (; it != delta_.end() && it->first <= start; ++it) booked += it->second;
  int32_t peak = booked;
  for (; it != delta_.end() && it->first < end; ++it) {
    booked += it->second;
    peak = std::max(peak, booked);
  }
  return peak;
}

Admission Calendar::Check(int32_t capacity, int32_t gpus, Timestamp start, Timestamp end) const {
  Admission a;
  a.peak_booked = PeakBooked(start, end);
  a.largest_fit = std::max(0, capacity - a.peak_booked);
  a.admitted = gpus <= a.largest_fit;
  a.earliest_start = a.admitted ? std::optional<Timestamp>(start)
                                : EarliestStart(capacity, gpus, end - start, start);
  return a;
}

std::optional<Timestamp> Calendar::EarliestStart(int32_t capacity, int32_t gpus, Duration length,
                                                 Timestamp from) const {
  if (gpus > capacity) return std::nullopt;
  // The booked count only drops at change points, so the answer is `from` or one of them.
  if (PeakBooked(from, from + length) + gpus <= capacity) return from;
  for (auto it = delta_.upper_bound(from); it != delta_.end(); ++it) {
    if (it->second >= 0) continue;
    if (PeakBooked(it->first, it->first + length) + gpus <= capacity) return it->first;
  }
  return std::nullopt;  // unreachable: after the last change nothing is booked
}

void Calendar::Book(int32_t gpus, Timestamp start, Timestamp end) {
  if (!(start < end) || gpus == 0) return;
  delta_[start] += gpus;
  delta_[end] -= gpus;
  for (Timestamp t : {start, end}) {
    auto it = delta_.find(t);
    if (it != delta_.end() && it->second == 0) delta_.erase(it);
  }
}

void Calendar::Unbook(int32_t gpus, Timestamp start, Timestamp end) { Book(-gpus, start, end); }

Money ReservationPrice(Money base, BasisPoints surge, int32_t capacity, int32_t peak_booked) {
  if (capacity <= 0) return base;
  __int128 num =
      static_cast<__int128>(base.micros()) * (static_cast<__int128>(kFullBasisPoints) * capacity +
                                              static_cast<__int128>(surge) * peak_booked);
  __int128 den = static_cast<__int128>(kFullBasisPoints) * capacity;
  return Money::Micros(static_cast<int64_t>(num / den));
}

Money CostOf(Money price_per_gpu_hour, int32_t gpus, Duration length) {
  __int128 num = static_cast<__int128>(price_per_gpu_hour.micros()) * gpus * length.micros();
  return Money::Micros(static_cast<int64_t>(num / kMicrosPerHour));
}

}  // namespace rsv
