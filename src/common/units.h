// common/units: integer time and money. Nothing that decides or bills uses floating point.
// Timestamp and Duration are microseconds; Money is micro-units (1 unit = 1,000,000).
#pragma once

#include <compare>
#include <cstdint>
#include <limits>
#include <string>
#include <string_view>

#include "common/status.h"

namespace rsv {

class Duration {
 public:
  constexpr Duration() = default;
  static constexpr Duration Micros(int64_t us) { return Duration(us); }
  static constexpr Duration Millis(int64_t ms) { return Duration(ms * 1000); }
  static constexpr Duration Seconds(int64_t s) { return Duration(s * 1'000'000); }
  static constexpr Duration Minutes(int64_t m) { return Seconds(m * 60); }
  static constexpr Duration Hours(int64_t h) { return Seconds(h * 3600); }
  static constexpr Duration Max() { return Duration(std::numeric_limits<int64_t>::max()); }

  constexpr int64_t micros() const { return us_; }
  constexpr int64_t seconds() const { return us_ / 1'000'000; }

  constexpr auto operator<=>(const Duration&) const = default;
  constexpr Duration operator+(Duration o) const { return Duration(us_ + o.us_); }
  constexpr Duration operator-(Duration o) const { return Duration(us_ - o.us_); }
  constexpr Duration operator*(int64_t k) const { return Duration(us_ * k); }

  // "90s", "2h30m", "1.5h" is not accepted: units are s, m, h, d, ms, us; a bare number is seconds.
  static Result<Duration> Parse(std::string_view text);
  // The shortest exact form: "2h", "90s", "1500ms".
  std::string ToString() const;

 private:
  constexpr explicit Duration(int64_t us) : us_(us) {}
  int64_t us_ = 0;
};

class Timestamp {
 public:
  constexpr Timestamp() = default;
  static constexpr Timestamp FromMicros(int64_t us) { return Timestamp(us); }
  static constexpr Timestamp Max() { return Timestamp(std::numeric_limits<int64_t>::max()); }

  constexpr int64_t micros() const { return us_; }

  constexpr auto operator<=>(const Timestamp&) const = default;
  constexpr Timestamp operator+(Duration d) const { return Timestamp(us_ + d.micros()); }
  constexpr Timestamp operator-(Duration d) const { return Timestamp(us_ - d.micros()); }
  constexpr Duration operator-(Timestamp o) const { return Duration::Micros(us_ - o.us_); }

 private:
  constexpr explicit Timestamp(int64_t us) : us_(us) {}
  int64_t us_ = 0;
};

class Money {
 public:
  static constexpr int64_t kMicrosPerUnit = 1'000'000;

  constexpr Money() = default;
  static constexpr Money Micros(int64_t m) { return Money(m); }
  static constexpr Money Units(int64_t u) { return Money(u * kMicrosPerUnit); }
  static constexpr Money Max() { return Money(std::numeric_limits<int64_t>::max()); }

  constexpr int64_t micros() const { return m_; }

  constexpr auto operator<=>(const Money&) const = default;
  constexpr Money operator+(Money o) const { return Money(m_ + o.m_); }
  constexpr Money operator-(Money o) const { return Money(m_ - o.m_); }
  constexpr Money operator-() const { return Money(-m_); }
  Money& operator+=(Money o) {
    m_ += o.m_;
    return *this;
  }
  Money& operator-=(Money o) {
    m_ -= o.m_;
    return *this;
  }

  // "3", "3.5", "-0.000001"; at most six decimals.
  static Result<Money> Parse(std::string_view text);
  // Always six decimals: "3.500000".
  std::string ToString() const;

 private:
  constexpr explicit Money(int64_t m) : m_(m) {}
  int64_t m_ = 0;
};

// Prices are per GPU-hour; a charge for G GPUs held for D microseconds at price P is
// P * G * D / kMicrosPerHour micro-units (the ledger carries the remainder so nothing is lost).
inline constexpr int64_t kMicrosPerHour = 3'600'000'000;
// The same per thousandth of a GPU (a share of one GPU pays its thousandths of the price).
inline constexpr int64_t kMilliGpuMicrosPerHour = kMicrosPerHour * 1000;

// Basis points: 10000 = 100%. Used for shares and rates.
using BasisPoints = int64_t;
inline constexpr BasisPoints kFullBasisPoints = 10000;

}  // namespace rsv
