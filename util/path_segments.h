// Database paths as segments: "/a//b/" is the segments "a", "b" (empty segments — leading,
// trailing or doubled '/' — are dropped, as Firebase drops them). The one splitter: route
// patterns and the gateway's paths, tree paths (store/tree_path.h), database URLs and watched
// paths (upstream/) all cut a path here. What a segment may hold is another rule
// (util/firebase_key.h); these functions accept any bytes but '/'.
//
// Pure functions, any thread; nothing fails.
#pragma once

#include <string>
#include <string_view>
#include <vector>

namespace tether::util {

// Cuts the next non-empty segment off the front of *rest into *segment; false when none is left.
//   for (std::string_view seg; util::NextSegment(&path, &seg);) ...
bool NextSegment(std::string_view* rest, std::string_view* segment);

// "a//b/" -> {"a", "b"}; "" and "/" -> {}.
std::vector<std::string> SplitPath(std::string_view path);
// {"a", "b"} -> "a/b"; {} -> "" (no leading '/').
std::string JoinPath(const std::vector<std::string>& segments);

}  // namespace tether::util
