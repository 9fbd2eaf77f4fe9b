// common/clock: the only way Reservoir code learns the time. Decision code takes `now` as an
// argument; processes hold a Clock (SystemClock in servers and agents, ManualClock in the
// simulator and tests). Only clock.cc may read the system clock.
#pragma once

#include "common/units.h"

namespace rsv {

class Clock {
 public:
  virtual ~Clock() = default;
  virtual Timestamp Now() const = 0;
};

class SystemClock final : public Clock {
 public:
  Timestamp Now() const override;
};

// Time that moves only when told to. Never goes backwards.
class ManualClock final : public Clock {
 public:
  explicit ManualClock(Timestamp start = Timestamp()) : now_(start) {}
  Timestamp Now() const override { return now_; }
  void Advance(Duration d) {
    if (d > Duration()) now_ = now_ + d;
  }
  void AdvanceTo(Timestamp t) {
    if (t > now_) now_ = t;
  }

 private:
  Timestamp now_;
};

// A monotonic nanosecond counter for measuring how long work takes (stage timings, benchmarks).
// Never feeds a decision; code that times itself takes a `const Ticker*` and may be given none.
class Ticker {
 public:
  virtual ~Ticker() = default;
  virtual int64_t Nanos() const = 0;
};

class SteadyTicker final : public Ticker {
 public:
  int64_t Nanos() const override;
};

// Waits `d` of real time. For retry loops against real servers (a client going round its
// servers, a standby's poll), never in a decision.
void SleepFor(Duration d);

}  // namespace rsv
