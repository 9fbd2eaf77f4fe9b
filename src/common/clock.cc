#include "common/clock.h"

#include <chrono>
#include <thread>

namespace rsv {

Timestamp SystemClock::Now() const {
  auto since_epoch = std::chrono::system_clock::now().time_since_epoch();
  return Timestamp::FromMicros(
      std::chrono::duration_cast<std::chrono::microseconds>(since_epoch).count());
}

void SleepFor(Duration d) {
  if (d > Duration()) std::this_thread::sleep_for(std::chrono::microseconds(d.micros()));
}

int64_t SteadyTicker::Nanos() const {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

}  // namespace rsv
