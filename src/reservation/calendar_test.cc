#include "reservation/calendar.h"

#include <gtest/gtest.h>

#include <vector>

#include "common/rng.h"

namespace rsv {
namespace {

Timestamp Min(int64_t m) { return Timestamp::FromMicros(m * 60'000'000); }

TEST(Calendar, AdmitsUnderCapacityAndExplainsRejection) {
  Calendar c;
  c.Book(10, Min(0), Min(120));
  // [60,180) of 8 on capacity 14: peak booked 10 → 4 fit; all 8 fit from minute 120.
  Admission a = c.Check(14, 8, Min(60), Min(180));
  EXPECT_FALSE(a.admitted);
  EXPECT_EQ(a.largest_fit, 4);
  ASSERT_TRUE(a.earliest_start.has_value());
  EXPECT_EQ(*a.earliest_start, Min(120));
  EXPECT_TRUE(c.Check(14, 4, Min(60), Min(180)).admitted);
  EXPECT_FALSE(c.Check(14, 15, Min(200), Min(300)).earliest_start.has_value());
  c.Unbook(10, Min(0), Min(120));
  EXPECT_EQ(c.PeakBooked(Min(0), Min(1000)), 0);
}

TEST(ReservationPrice, RisesWithBookedFraction) {
  // base 2, surge 100%, capacity 16, 8 booked: 2 * (10000*16 + 10000*8) / (10000*16) = 3.
  EXPECT_EQ(ReservationPrice(Money::Units(2), 10000, 16, 8), Money::Units(3));
  EXPECT_EQ(ReservationPrice(Money::Units(2), 10000, 16, 0), Money::Units(2));
  // surge 50%, fully booked: 2 * 1.5 = 3.
  EXPECT_EQ(ReservationPrice(Money::Units(2), 5000, 16, 16), Money::Units(3));
}

TEST(CostOf, IsExactPerMicrosecondRoundedDown) {
  // 3 per GPU-hour x 8 GPUs x 30 min = 12.
  EXPECT_EQ(CostOf(Money::Units(3), 8, Duration::Minutes(30)), Money::Units(12));
  // 1 per GPU-hour x 1 GPU x 1 s = 1/3600 unit = 277.77 micro → 277.
  EXPECT_EQ(CostOf(Money::Units(1), 1, Duration::Seconds(1)), Money::Micros(277));
}

// Oracle: booked counts minute by minute in a plain array.
struct Oracle {
  std::vector<int32_t> booked = std::vector<int32_t>(400, 0);
  int32_t Peak(int s, int e) const {
    int32_t p = 0;
    for (int t = s; t < e; ++t) p = std::max(p, booked[t]);
    return p;
  }
  std::optional<int> Earliest(int cap, int gpus, int len, int from) const {
    if (gpus > cap) return std::nullopt;
    for (int t = from; t + len <= 400; ++t) {
      if (Peak(t, t + len) + gpus <= cap) return t;
    }
    return std::nullopt;
  }
};

TEST(Calendar, MatchesMinuteByMinuteOracle) {
  Rng rng(99);
  int admitted = 0, rejected = 0;
  for (int trial = 0; trial < 2000; ++trial) {
    Calendar c;
    Oracle o;
    int32_t cap = static_cast<int32_t>(rng.Range(1, 32));
    std::vector<std::tuple<int32_t, int, int>> booked;
    for (int step = 0; step < 12; ++step) {
      int s = static_cast<int>(rng.Range(0, 150));
      int e = s + static_cast<int>(rng.Range(1, 60));
      int32_t g = static_cast<int32_t>(rng.Range(1, cap + 2));
      Admission a = c.Check(cap, g, Min(s), Min(e));
      int32_t peak = o.Peak(s, e);
      ASSERT_EQ(a.peak_booked, peak);
      ASSERT_EQ(a.largest_fit, std::max(0, cap - peak));
      ASSERT_EQ(a.admitted, peak + g <= cap);
      std::optional<int> want = o.Earliest(cap, g, e - s, s);
      ASSERT_EQ(a.earliest_start.has_value(), want.has_value()) << "trial " << trial;
      if (want) {
        ASSERT_EQ(*a.earliest_start, Min(*want)) << "trial " << trial;
      }
      if (a.admitted) {
        ++admitted;
        c.Book(g, Min(s), Min(e));
        for (int t = s; t < e; ++t) o.booked[t] += g;
        booked.emplace_back(g, s, e);
        for (int t = 0; t < 400; ++t) ASSERT_LE(o.booked[t], cap);  // never over, any instant
      } else {
        ++rejected;
      }
      if (!booked.empty() && rng.Chance(1, 5)) {  // return: shrink the window to end early
        auto& [bg, bs, be] = booked[rng.Uniform(booked.size())];
        int cut = bs + static_cast<int>(rng.Range(0, be - bs));
        c.Unbook(bg, Min(cut), Min(be));
        for (int t = cut; t < be; ++t) o.booked[t] -= bg;
        be = cut;
      }
    }
  }
  EXPECT_GT(admitted, 5000);
  EXPECT_GT(rejected, 2000);
}

}  // namespace
}  // namespace rsv
