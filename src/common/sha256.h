// common/sha256: SHA-256 (FIPS 180-4), for storing API tokens only as hashes.
#pragma once

#include <string>
#include <string_view>

namespace rsv {

// Lower-case hex digest of `data`.
std::string Sha256Hex(std::string_view data);

}  // namespace rsv
