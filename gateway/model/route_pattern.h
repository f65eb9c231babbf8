// RoutePattern: a path template such as "devices/{device}/**".
//
// Grammar: segments separated by '/'. A segment is a literal key, a capture "{name}" that matches
// exactly one segment, or "**" (last segment only) that matches zero or more remaining segments.
// "" or "**" alone matches every path. Patterns are immutable after Parse().
#pragma once

#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "gateway/model/diagnostic.h"
#include "util/path_segments.h"

namespace tether {

using Captures = std::map<std::string, std::string>;

class RoutePattern {
 public:
  // A malformed template: a kInvalid Diagnostic (the configuration loader throws it as a
  // ConfigError with the key's position).
  static Expected<RoutePattern> Parse(const std::string& text);

  // segments: the request path split on '/' with empty root segment removed.
  // On a match fills captures and the remainder matched by "**" (possibly empty).
  bool Match(const std::vector<std::string>& segments, Captures* captures,
             std::vector<std::string>* rest) const;

  // Fills the template with captures (every capture name must be bound) and appends rest at "**".
  // Returns nullopt if a capture is unbound.
  std::optional<std::vector<std::string>> Expand(const Captures& captures,
                                                 const std::vector<std::string>& rest) const;

  // True when some path matches both patterns.
  bool Overlaps(const RoutePattern& other) const;

  // Literal segments before the first capture or "**".
  std::vector<std::string> LiteralPrefix() const;
  std::vector<std::string> CaptureNames() const;
  bool HasCapture(const std::string& name) const;
  bool HasRest() const { return rest_; }
  const std::string& text() const { return text_; }

 private:
  friend class PatternOverlapIndex;
  struct Segment {
    bool capture = false;
    std::string text;  // literal key or capture name
  };
  std::string text_;
  std::vector<Segment> segments_;
  bool rest_ = false;  // ends in "**"
};

// PatternOverlapIndex: which of the patterns added so far overlaps a new one, without comparing
// it with each (config validation stays linear in the number of routes for the usual layouts).
// A trie of segments: a literal segment of the new pattern follows the same literal and the
// capture branch; a capture follows every branch, so only captures facing many distinct
// literals at the same depth cost more than the pattern's length.
class PatternOverlapIndex {
 public:
  PatternOverlapIndex();
  ~PatternOverlapIndex();
  // The smallest id of an added pattern that Overlaps(p), or -1.
  int FindOverlap(const RoutePattern& p) const;
  void Add(const RoutePattern& p, int id);

 private:
  struct Node;
  std::unique_ptr<Node> root_;
};

// The gateway's paths are cut and joined by the one splitter (util/path_segments.h).
using util::JoinPath;
using util::SplitPath;

}  // namespace tether
