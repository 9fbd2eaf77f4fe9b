// common/ids: strong integer ids, so a JobId can never be passed where a NodeId is expected.
// Ids are dense small integers assigned by whoever owns the collection; 0 is "none".
#pragma once

#include <compare>
#include <cstdint>
#include <functional>
#include <string>

namespace rsv {

template <typename Tag>
class Id {
 public:
  constexpr Id() = default;
  constexpr explicit Id(uint32_t v) : v_(v) {}
  constexpr uint32_t value() const { return v_; }
  constexpr bool valid() const { return v_ != 0; }
  constexpr auto operator<=>(const Id&) const = default;
  std::string ToString() const { return std::to_string(v_); }

 private:
  uint32_t v_ = 0;
};

using PoolId = Id<struct PoolTag>;
using NodeId = Id<struct NodeTag>;
using TenantId = Id<struct TenantTag>;
using JobId = Id<struct JobTag>;
using ReservationId = Id<struct ReservationTag>;

}  // namespace rsv

template <typename Tag>
struct std::hash<rsv::Id<Tag>> {
  size_t operator()(const rsv::Id<Tag>& id) const { return std::hash<uint32_t>()(id.value()); }
};
