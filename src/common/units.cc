#include "common/units.h"

#include <cctype>
#include <cstdlib>

namespace rsv {
namespace {

// Parses a non-negative decimal integer; false on empty, non-digits or overflow.
bool ParseDigits(std::string_view s, int64_t* out) {
  if (s.empty() || s.size() > 18) return false;
  int64_t v = 0;
  for (char c : s) {
    if (!std::isdigit(static_cast<unsigned char>(c))) return false;
    v = v * 10 + (c - '0');
  }
  *out = v;
  return true;
}

}  // namespace

Result<Duration> Duration::Parse(std::string_view text) {
  if (text.empty()) return InvalidArgument("duration", "is empty");
  int64_t total = 0;
  std::string_view rest = text;
  bool any = false;
  while (!rest.empty()) {
    size_t digits = 0;
    while (digits < rest.size() && std::isdigit(static_cast<unsigned char>(rest[digits]))) {
      ++digits;
    }
    int64_t n = 0;
    if (!ParseDigits(rest.substr(0, digits), &n)) {
      return InvalidArgument("duration", "'" + std::string(text) +
                                             "' is not a duration (examples: 30s, 5m, 2h, 1h30m)");
    }
    rest.remove_prefix(digits);
    size_t unit_len = 0;
    while (unit_len < rest.size() && std::isalpha(static_cast<unsigned char>(rest[unit_len]))) {
      ++unit_len;
    }
    std::string_view unit = rest.substr(0, unit_len);
    rest.remove_prefix(unit_len);
    int64_t scale = 0;
    if (unit.empty() || unit == "s") {
      scale = 1'000'000;
    } else if (unit == "ms") {
      scale = 1000;
    } else if (unit == "us") {
      scale = 1;
    } else if (unit == "m") {
      scale = 60'000'000;
    } else if (unit == "h") {
      scale = 3'600'000'000;
    } else if (unit == "d") {
      scale = 86'400'000'000;
    } else {
      return InvalidArgument("duration", "unknown unit '" + std::string(unit) + "' in '" +
                                             std::string(text) + "' (use us, ms, s, m, h, d)");
    }
    if (unit.empty() && (any || !rest.empty())) {
      return InvalidArgument("duration", "'" + std::string(text) + "' is not a duration");
    }
    if (n > std::numeric_limits<int64_t>::max() / scale / 4) {
      return InvalidArgument("duration", "'" + std::string(text) + "' is too large");
    }
    total += n * scale;
    any = true;
  }
  if (!any) return InvalidArgument("duration", "is empty");
  return Duration::Micros(total);
}

std::string Duration::ToString() const {
  int64_t us = us_;
  std::string sign;
  if (us < 0) {
    sign = "-";
    us = -us;
  }
  struct Unit {
    int64_t scale;
    const char* name;
  };
  static constexpr Unit kUnits[] = {{86'400'000'000, "d"}, {3'600'000'000, "h"}, {60'000'000, "m"},
                                    {1'000'000, "s"},      {1000, "ms"},         {1, "us"}};
  if (us == 0) return "0s";
  for (const Unit& u : kUnits) {
    if (us % u.scale == 0) return sign + std::to_string(us / u.scale) + u.name;
  }
  return sign + std::to_string(us) + "us";
}

Result<Money> Money::Parse(std::string_view text) {
  std::string_view s = text;
  bool negative = false;
  if (!s.empty() && (s[0] == '-' || s[0] == '+')) {
    negative = s[0] == '-';
    s.remove_prefix(1);
  }
  auto bad = [&] {
    return InvalidArgument(
        "money", "'" + std::string(text) + "' is not an amount (examples: 3, 2.5, 0.000001)");
  };
  size_t dot = s.find('.');
  std::string_view whole = s.substr(0, dot);
  std::string_view frac = dot == std::string_view::npos ? std::string_view() : s.substr(dot + 1);
  if (whole.empty() && frac.empty()) return bad();
  int64_t w = 0;
  if (!whole.empty() && !ParseDigits(whole, &w)) return bad();
  if (dot != std::string_view::npos && frac.empty()) return bad();
  if (frac.size() > 6) {
    return InvalidArgument("money", "'" + std::string(text) + "' has more than six decimals");
  }
  int64_t f = 0;
  if (!frac.empty() && !ParseDigits(frac, &f)) return bad();
  for (size_t i = frac.size(); i < 6; ++i) f *= 10;
  if (w > std::numeric_limits<int64_t>::max() / kMicrosPerUnit / 2) {
    return InvalidArgument("money", "'" + std::string(text) + "' is too large");
  }
  int64_t m = w * kMicrosPerUnit + f;
  return Money::Micros(negative ? -m : m);
}

std::string Money::ToString() const {
  int64_t m = m_;
  std::string out;
  if (m < 0) {
    out = "-";
    m = -m;
  }
  std::string frac = std::to_string(m % kMicrosPerUnit);
  out += std::to_string(m / kMicrosPerUnit) + "." + std::string(6 - frac.size(), '0') + frac;
  return out;
}

}  // namespace rsv
