// server/web_assets: the dashboard's files (docs/dashboard.md), built into the binary by
// cmake/embed_assets.cmake from web/ and uPlot's distribution.
#pragma once

#include <cstddef>
#include <string_view>

namespace rsv::server {

struct WebAsset {
  const char* name;  // as requested under /assets/ ("index.html" is served at /)
  const char* content_type;
  const unsigned char* data;
  size_t size;
};
extern const WebAsset kWebAssets[];
extern const size_t kWebAssetCount;

inline const WebAsset* FindWebAsset(std::string_view name) {
  for (size_t i = 0; i < kWebAssetCount; ++i) {
    if (name == kWebAssets[i].name) return &kWebAssets[i];
  }
  return nullptr;
}

}  // namespace rsv::server
