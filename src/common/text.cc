#include "common/text.h"

namespace rsv {

std::string Printable(std::string_view s, size_t max) {
  std::string out;
  const bool cut = s.size() > max;
  if (cut) s = s.substr(0, max);
  out.reserve(s.size());
  static const char* hex = "0123456789abcdef";
  for (char ch : s) {
    unsigned char c = static_cast<unsigned char>(ch);
    if (c == '\\') {
      out += "\\\\";
    } else if (c < 0x20 || c == 0x7f) {
      out += "\\x";
      out += hex[c >> 4];
      out += hex[c & 15];
    } else {
      out += ch;
    }
  }
  if (cut) out += "...";
  return out;
}

}  // namespace rsv
