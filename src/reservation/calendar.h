// reservation: the capacity calendar of one pool. Owns the booked-GPUs-over-time step function,
// admission (never over reservable capacity at any instant), the answer to a rejection (the
// largest count that fits, the earliest start for the full count), pricing and return.
// Depends on common/ only; capacity is passed in, so the calendar never reads cluster state.
#pragma once

#include <cstdint>
#include <map>
#include <optional>

#include "common/units.h"

namespace rsv {

struct Admission {
  bool admitted = false;
  int32_t largest_fit = 0;                  // most GPUs that fit over the whole window
  std::optional<Timestamp> earliest_start;  // first start >= asked at which all GPUs fit
  int32_t peak_booked = 0;                  // booked GPUs at the window's busiest instant
};

class Calendar {
 public:
  // Booked GPUs at instant t.
  int32_t BookedAt(Timestamp t) const;
  // Highest booked count at any instant of [start, end).
  int32_t PeakBooked(Timestamp start, Timestamp end) const;
  // Whether `gpus` over [start, end) fits under `capacity` (reservable GPUs: ready − holdback).
  Admission Check(int32_t capacity, int32_t gpus, Timestamp start, Timestamp end) const;
  // Earliest t >= from such that `gpus` fit over [t, t + length); nullopt if gpus > capacity.
  std::optional<Timestamp> EarliestStart(int32_t capacity, int32_t gpus, Duration length,
                                         Timestamp from) const;

  void Book(int32_t gpus, Timestamp start, Timestamp end);
  void Unbook(int32_t gpus, Timestamp start, Timestamp end);

 private:
  friend struct StateIo;                // snapshots (scheduler/state_io.cc)
  std::map<Timestamp, int32_t> delta_;  // booked count changes by delta at each instant
};

// Price per GPU-hour of a new reservation: base raised by `surge` times the fraction of the
// reservable capacity already booked at the window's peak.
//   price = base * (10000 * capacity + surge * peak_booked) / (10000 * capacity)
Money ReservationPrice(Money base, BasisPoints surge, int32_t capacity, int32_t peak_booked);

// price * gpus * length / 1h, rounded down to a micro-unit.
Money CostOf(Money price_per_gpu_hour, int32_t gpus, Duration length);

}  // namespace rsv
