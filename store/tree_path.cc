#include "store/tree_path.h"

#include "util/firebase_key.h"
#include "util/path_segments.h"

namespace tether::store {

bool ParseTreePath(std::string_view path, std::vector<std::string>* segments, std::string* error) {
  segments->clear();
  for (std::string_view seg; util::NextSegment(&path, &seg);) {
    if (seg.size() > util::kMaxFirebaseKeyBytes) {
      *error = "path segment longer than 768 bytes";
      return false;
    }
    for (char ch : seg) {
      if (util::IsForbiddenKeyByte(static_cast<unsigned char>(ch))) {  // '/' cannot occur here
        *error = "invalid character in path segment '" + std::string(seg) + "'";
        return false;
      }
    }
    segments->emplace_back(seg);
  }
  return true;
}

std::string JoinKey(const std::vector<std::string>& segments, size_t count) {
  std::string key;
  for (size_t i = 0; i < count && i < segments.size(); ++i) {
    if (i) key.push_back('/');
    key += segments[i];
  }
  return key;
}

std::string_view RootOf(std::string_view key) { return key.substr(0, key.find('/')); }

std::string_view UnitOf(std::string_view key, uint32_t depth) {
  size_t end = 0;
  for (uint32_t seen = 0; seen < depth; ++seen) {
    end = key.find('/', end ? end + 1 : 0);
    if (end == std::string_view::npos) return key;
  }
  return key.substr(0, end);
}

size_t KeyDepth(std::string_view key) {
  if (key.empty()) return 0;
  size_t n = 1;
  for (char c : key) n += c == '/';
  return n;
}

bool KeyWithin(std::string_view key, std::string_view prefix) {
  if (prefix.empty()) return true;
  if (key.size() < prefix.size() || key.compare(0, prefix.size(), prefix) != 0) return false;
  return key.size() == prefix.size() || key[prefix.size()] == '/';
}

void InsertLeaf(nlohmann::json* out, std::string_view rel, nlohmann::json leaf_value) {
  nlohmann::json* node = out;
  size_t i = 0;
  while (true) {
    size_t j = rel.find('/', i);
    std::string seg(rel.substr(i, j == std::string_view::npos ? std::string_view::npos : j - i));
    if (j == std::string_view::npos) {
      (*node)[seg] = std::move(leaf_value);
      return;
    }
    nlohmann::json& child = (*node)[seg];
    if (!child.is_object()) child = nlohmann::json::object();
    node = &child;
    i = j + 1;
  }
}

bool HoldsData(const nlohmann::json& value) {
  if (value.is_null()) return false;
  if (!value.is_object() && !value.is_array()) return true;
  for (const auto& child : value) {
    if (HoldsData(child)) return true;
  }
  return false;
}

bool ValidTreeValue(const nlohmann::json& value, std::string* error) {
  if (!value.is_object() && !value.is_array()) return true;
  for (auto it = value.begin(); it != value.end(); ++it) {
    if (value.is_object()) {
      const std::string& k = it.key();
      std::vector<std::string> segs;
      if (k.empty() || k.find('/') != std::string::npos || !ParseTreePath(k, &segs, error)) {
        if (error->empty()) *error = "invalid key '" + k + "'";
        return false;
      }
    }
    if (!ValidTreeValue(*it, error)) return false;
  }
  return true;
}

}  // namespace tether::store
