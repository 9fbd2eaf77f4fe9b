// common/rng: seeded, portable pseudo-randomness. Every random choice in Reservoir comes from an
// Rng built from an explicit seed and passed in; the same seed gives the same sequence on every
// platform (splitmix64 + xoshiro256**, no std::distribution whose output varies by library).
#pragma once

#include <cstdint>

namespace rsv {

class Rng {
 public:
  explicit Rng(uint64_t seed);

  uint64_t Next();
  // Uniform in [0, n); n > 0. Lemire's multiply-shift with rejection: unbiased.
  uint64_t Uniform(uint64_t n);
  // Uniform in [lo, hi], lo <= hi.
  int64_t Range(int64_t lo, int64_t hi);
  // True with probability num/den.
  bool Chance(uint64_t num, uint64_t den) { return Uniform(den) < num; }

 private:
  uint64_t s_[4];
};

}  // namespace rsv
