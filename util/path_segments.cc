#include "util/path_segments.h"

namespace tether::util {

bool NextSegment(std::string_view* rest, std::string_view* segment) {
  while (!rest->empty()) {
    const size_t slash = rest->find('/');
    *segment = rest->substr(0, slash);
    rest->remove_prefix(slash == std::string_view::npos ? rest->size() : slash + 1);
    if (!segment->empty()) return true;
  }
  return false;
}

std::vector<std::string> SplitPath(std::string_view path) {
  std::vector<std::string> out;
  for (std::string_view seg; NextSegment(&path, &seg);) out.emplace_back(seg);
  return out;
}

std::string JoinPath(const std::vector<std::string>& segments) {
  std::string out;
  for (const auto& s : segments) {
    if (!out.empty()) out += '/';
    out += s;
  }
  return out;
}

}  // namespace tether::util
