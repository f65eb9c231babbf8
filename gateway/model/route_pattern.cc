#include "gateway/model/route_pattern.h"

#include <algorithm>
#include <climits>
#include <unordered_map>

#include "util/firebase_key.h"

namespace tether {

Expected<RoutePattern> RoutePattern::Parse(const std::string& text) {
  RoutePattern p;
  p.text_ = text;
  auto segs = SplitPath(text);
  for (size_t i = 0; i < segs.size(); ++i) {
    const std::string& s = segs[i];
    if (s == "**") {
      if (i + 1 != segs.size()) {
        return Diagnostic::Invalid("'**' may only be the last segment");
      }
      p.rest_ = true;
      continue;
    }
    if (s.front() == '{') {
      if (s.size() < 3 || s.back() != '}' || s.find_first_of("{}", 1) != s.size() - 1) {
        return Diagnostic::Invalid("malformed capture '" + s + "' (use {name})");
      }
      std::string name = s.substr(1, s.size() - 2);
      if (p.HasCapture(name)) {
        return Diagnostic::Invalid("capture {" + name + "} appears twice");
      }
      p.segments_.push_back({true, name});
      continue;
    }
    // A literal is a Firebase key (util/firebase_key.h) that is not pattern syntax either.
    if (std::any_of(s.begin(), s.end(), [](unsigned char c) {
          return util::IsForbiddenKeyByte(c) || c == '{' || c == '}' || c == '*';
        })) {
      return Diagnostic::Invalid("segment '" + s +
                                 "' contains a character not allowed in a key (. $ # [ ] { } * or a control character)");
    }
    if (s.size() > util::kMaxFirebaseKeyBytes) {
      return Diagnostic::Invalid("segment '" + s.substr(0, 40) + "...' is longer than a key may be (768 bytes)");
    }
    p.segments_.push_back({false, s});
  }
  if (segs.empty()) p.rest_ = true;  // "" matches everything
  return p;
}

bool RoutePattern::Match(const std::vector<std::string>& segments, Captures* captures,
                         std::vector<std::string>* rest) const {
  if (segments.size() < segments_.size()) return false;
  if (!rest_ && segments.size() != segments_.size()) return false;
  Captures caps;
  for (size_t i = 0; i < segments_.size(); ++i) {
    if (segments_[i].capture) {
      caps[segments_[i].text] = segments[i];
    } else if (segments_[i].text != segments[i]) {
      return false;
    }
  }
  if (captures) *captures = std::move(caps);
  if (rest) rest->assign(segments.begin() + segments_.size(), segments.end());
  return true;
}

std::optional<std::vector<std::string>> RoutePattern::Expand(const Captures& captures,
                                                             const std::vector<std::string>& rest) const {
  std::vector<std::string> out;
  for (const auto& s : segments_) {
    if (!s.capture) {
      out.push_back(s.text);
      continue;
    }
    auto it = captures.find(s.text);
    if (it == captures.end()) return std::nullopt;
    out.push_back(it->second);
  }
  if (rest_) out.insert(out.end(), rest.begin(), rest.end());
  return out;
}

bool RoutePattern::Overlaps(const RoutePattern& other) const {
  size_t n = std::min(segments_.size(), other.segments_.size());
  for (size_t i = 0; i < n; ++i) {
    const Segment& a = segments_[i];
    const Segment& b = other.segments_[i];
    if (!a.capture && !b.capture && a.text != b.text) return false;
  }
  if (segments_.size() == other.segments_.size()) return true;
  // The shorter pattern must absorb the longer one's extra segments with "**".
  return segments_.size() < other.segments_.size() ? rest_ : other.rest_;
}

// Invariants: a node at depth d stands for the first d segments of the patterns through it
// (captures as one wildcard); `min_below` is the smallest id ending at or below the node.
struct PatternOverlapIndex::Node {
  std::unordered_map<std::string, std::unique_ptr<Node>> literal;
  std::unique_ptr<Node> capture;
  int ends_exact = INT_MAX;  // smallest id of a pattern ending here without "**"
  int ends_rest = INT_MAX;   // smallest id of a pattern ending here with "**"
  int min_below = INT_MAX;
};

PatternOverlapIndex::PatternOverlapIndex() : root_(std::make_unique<Node>()) {}
PatternOverlapIndex::~PatternOverlapIndex() = default;

void PatternOverlapIndex::Add(const RoutePattern& p, int id) {
  Node* n = root_.get();
  n->min_below = std::min(n->min_below, id);
  for (const auto& s : p.segments_) {
    std::unique_ptr<Node>& next = s.capture ? n->capture : n->literal[s.text];
    if (!next) next = std::make_unique<Node>();
    n = next.get();
    n->min_below = std::min(n->min_below, id);
  }
  int& end = p.rest_ ? n->ends_rest : n->ends_exact;
  end = std::min(end, id);
}

int PatternOverlapIndex::FindOverlap(const RoutePattern& p) const {
  // Mirrors Overlaps(): compatible segments up to the shorter length, then equal lengths or a
  // "**" on the shorter side.
  const auto& segs = p.segments_;
  int best = INT_MAX;
  auto visit = [&](auto&& self, const Node* n, size_t depth) -> void {
    if (!n || n->min_below >= best) return;
    best = std::min(best, n->ends_rest);  // shorter (or equal) and ends in "**"
    if (depth == segs.size()) {
      best = std::min(best, n->ends_exact);        // equal length
      if (p.rest_) best = std::min(best, n->min_below);  // p absorbs every longer one
      return;
    }
    self(self, n->capture.get(), depth + 1);
    if (segs[depth].capture) {
      for (const auto& [text, child] : n->literal) self(self, child.get(), depth + 1);
    } else if (auto it = n->literal.find(segs[depth].text); it != n->literal.end()) {
      self(self, it->second.get(), depth + 1);
    }
  };
  visit(visit, root_.get(), 0);
  return best == INT_MAX ? -1 : best;
}

std::vector<std::string> RoutePattern::LiteralPrefix() const {
  std::vector<std::string> out;
  for (const auto& s : segments_) {
    if (s.capture) break;
    out.push_back(s.text);
  }
  return out;
}

std::vector<std::string> RoutePattern::CaptureNames() const {
  std::vector<std::string> out;
  for (const auto& s : segments_) {
    if (s.capture) out.push_back(s.text);
  }
  return out;
}

bool RoutePattern::HasCapture(const std::string& name) const {
  for (const auto& s : segments_) {
    if (s.capture && s.text == name) return true;
  }
  return false;
}

}  // namespace tether
