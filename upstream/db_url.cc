#include "upstream/db_url.h"

#include "util/path_segments.h"
#include "util/percent_encoding.h"

namespace tether::upstream {

std::string EncodeDatabasePath(std::string_view path) {
  std::string out;
  for (std::string_view seg; util::NextSegment(&path, &seg);) {
    if (!out.empty()) out.push_back('/');
    out += util::PercentEncode(seg);
  }
  return out;
}

std::string DatabaseUrl(std::string_view base_url, std::string_view path, std::string_view query) {
  std::string url(base_url);
  url += '/';
  url += EncodeDatabasePath(path);
  url += ".json";
  if (!query.empty()) {
    url += '?';
    url += query;
  }
  return url;
}

}  // namespace tether::upstream
