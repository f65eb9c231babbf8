#include "gateway/model/data_rules.h"

#include <set>
#include <string_view>

#include "gateway/model/route_pattern.h"

namespace tether {

namespace {

bool IsTimestampPlaceholder(const Json& v) {
  return v.is_object() && v.size() == 1 && v.contains(".sv") && v[".sv"] == "timestamp";
}

bool IsIncrementPlaceholder(const Json& v) {
  if (!v.is_object() || v.size() != 1 || !v.contains(".sv")) return false;
  const Json& sv = v[".sv"];
  return sv.is_object() && sv.size() == 1 && sv.contains("increment") && sv["increment"].is_number();
}

// util's key rule answers "" or why not (util/ is below the gateway's vocabulary).
Expected<void> CheckKey(std::string_view key) {
  if (std::string e = util::CheckFirebaseKey(key); !e.empty()) return Diagnostic::Invalid(std::move(e));
  return {};
}

Expected<void> CheckValueAt(const Json& v, size_t depth) {
  if (depth > kMaxDepth) return Diagnostic::Invalid("value is nested deeper than 32 levels");
  if (!v.is_object()) return {};
  if (v.contains(".sv")) {
    if (IsTimestampPlaceholder(v) || IsIncrementPlaceholder(v)) return {};
    return Diagnostic::Invalid("invalid server value (use {\".sv\":\"timestamp\"} or {\".sv\":{\"increment\":n}})");
  }
  for (const auto& [k, child] : v.items()) {
    if (auto r = CheckKey(k); !r) return r;
    if (auto r = CheckValueAt(child, depth + 1); !r) return r;
  }
  return {};
}

}  // namespace

Expected<void> CheckPath(const std::vector<std::string>& segments) {
  if (segments.size() > kMaxDepth) return Diagnostic::Invalid("path deeper than 32 levels");
  for (const auto& s : segments) {
    if (auto r = CheckKey(s); !r) return r;
  }
  return {};
}

Expected<void> CheckValue(const Json& value, size_t path_depth) { return CheckValueAt(value, path_depth); }

Expected<void> CheckUpdate(const Json& value, size_t path_depth) {
  if (!value.is_object()) return Diagnostic::Invalid("update needs a map of child paths to values");
  std::set<std::string, std::less<>> paths;
  for (const auto& [k, child] : value.items()) {
    auto segs = SplitPath(k);
    if (segs.empty()) return Diagnostic::Invalid("update has an empty child path");
    if (auto r = CheckPath(segs); !r) return r;
    if (auto r = CheckValueAt(child, path_depth + segs.size()); !r) return r;
    paths.insert(JoinPath(segs));
  }
  // Firebase applies an update's children as one write and refuses paths that overlap ("a" and
  // "a/b", or "a/b" twice as "a//b"): the result would depend on the order they are applied in.
  if (paths.size() != value.size()) return Diagnostic::Invalid("update paths overlap (the same path twice)");
  for (const std::string& p : paths) {
    for (size_t slash = p.find('/'); slash != std::string::npos; slash = p.find('/', slash + 1)) {
      auto above = paths.find(std::string_view(p).substr(0, slash));
      if (above != paths.end()) {
        return Diagnostic::Invalid("update paths overlap: '" + (*above + "' and '" + p).substr(0, 80) + "'");
      }
    }
  }
  return {};
}

bool HasServerValues(const Json& value) {
  if (!value.is_object()) return false;
  if (value.contains(".sv")) return true;
  for (const auto& c : value) {
    if (HasServerValues(c)) return true;
  }
  return false;
}

namespace {
void ExtractAt(Json* v, const std::string& rel, std::vector<std::pair<std::string, Json>>* out) {
  if (IsIncrementPlaceholder(*v)) {
    Json by = (*v)[".sv"]["increment"];
    *v = by;
    out->emplace_back(rel, std::move(by));
    return;
  }
  if (!v->is_object()) return;
  for (auto& [k, child] : v->items()) ExtractAt(&child, rel.empty() ? k : rel + "/" + k, out);
}
}  // namespace

std::vector<std::pair<std::string, Json>> ExtractIncrements(Json* value) {
  std::vector<std::pair<std::string, Json>> out;
  ExtractAt(value, "", &out);
  return out;
}

void ResolveTimestamps(Json* value, int64_t timestamp_ms) {
  if (IsTimestampPlaceholder(*value)) {
    *value = timestamp_ms;
    return;
  }
  if (!value->is_object()) return;
  for (auto& [k, child] : value->items()) ResolveTimestamps(&child, timestamp_ms);
}

}  // namespace tether
