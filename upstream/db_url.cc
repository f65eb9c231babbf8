#include "upstream/db_url.h"

#include "util/percent_encoding.h"

namespace tether::upstream {

std::string EncodeDatabasePath(std::string_view path) {
  std::string out;
  while (!path.empty()) {
    size_t slash = path.find('/');
    std::string_view seg = path.substr(0, slash);
    path = slash == std::string_view::npos ? std::string_view() : path.substr(slash + 1);
    if (seg.empty()) continue;
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
