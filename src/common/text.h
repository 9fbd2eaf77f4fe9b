// common/text: text from users made safe to print (terminals, logs, error messages).
#pragma once

#include <cstddef>
#include <string>
#include <string_view>

namespace rsv {

// `s` with control characters (below 0x20, and 0x7f) written as \xNN and a backslash as \\, so
// that a name cannot move the cursor, recolour a terminal or forge a log line; cut to `max`
// bytes of input with "..." appended when longer.
std::string Printable(std::string_view s, size_t max = std::string::npos);

}  // namespace rsv
