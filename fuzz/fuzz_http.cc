// HTTP request framing as a connection does it (pipelining, chunked bodies, the limits): every
// request gets exactly one outcome, a request to serve or a 400/414/431, and nothing follows a
// request that closes the connection. "@@" in the input stands for 8 KiB of 'a' so that the
// fuzzer reaches the size limits.
#include <cstdint>
#include <cstdlib>
#include <string>

#include "server/http.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string in(reinterpret_cast<const char*>(data), size);
  for (size_t at = in.find("@@"); at != std::string::npos; at = in.find("@@", at + (8 << 10))) {
    in.replace(at, 2, std::string(8 << 10, 'a'));
  }
  auto framed = rsv::server::FrameRequests(in);
  for (size_t i = 0; i < framed.size(); ++i) {
    const auto& f = framed[i];
    bool last = i + 1 == framed.size();
    if (!f.keep_alive && !last) std::abort();  // a closing request ends the connection
    if (f.error) {
      int s = f.error->status;
      if ((s != 400 && s != 414 && s != 431) || f.keep_alive || f.error->body.empty()) std::abort();
      continue;
    }
    if (f.request.method.empty() || f.request.target.empty()) std::abort();
    if (f.request.target.size() > rsv::server::HttpLimits::kMaxTargetBytes) std::abort();
    if (f.request.body.size() > rsv::server::Api::kMaxBodyBytes) std::abort();
  }
  return 0;
}
