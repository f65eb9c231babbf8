// Tree paths: how Firebase paths map onto DataTree keys (internal).
//
// A leaf at /a/b/c is stored under key "a/b/c". Firebase keys cannot contain '/', so the subtree
// of "a/b" is exactly: key "a/b" itself, or keys starting with "a/b/" ("a/bc" is outside both).
// The root path "/" has key "" and its subtree is every key.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

namespace tether::store {

// Splits "/a//b/" into {"a","b"}. False (with *error set) on a segment Firebase forbids
// (". $ # [ ]", control characters, longer than 768 bytes).
bool ParseTreePath(std::string_view path, std::vector<std::string>* segments, std::string* error);
std::string JoinKey(const std::vector<std::string>& segments, size_t count);
std::string_view RootOf(std::string_view key);  // first segment of a key ("" for the root key)
// The cache unit of a key: its first `depth` segments (all of them if it has fewer).
std::string_view UnitOf(std::string_view key, uint32_t depth);
size_t KeyDepth(std::string_view key);  // number of segments ("" has none)
// True if `key` is `prefix` or lies below it (prefix "" contains everything).
bool KeyWithin(std::string_view key, std::string_view prefix);

// A leaf's stored bytes: the scalar as CBOR, so byte strings (json::binary) keep their type.
inline std::string EncodeLeaf(const nlohmann::json& scalar) {
  std::vector<uint8_t> b = nlohmann::json::to_cbor(scalar);
  return std::string(b.begin(), b.end());
}
inline nlohmann::json DecodeLeaf(std::string_view bytes) {
  return nlohmann::json::from_cbor(bytes.begin(), bytes.end());
}

// Firebase normalisation: arrays become objects keyed "0","1",...; nulls and empty objects vanish.
// Calls leaf(key, EncodeLeaf(scalar)) for each scalar under `base`.
template <typename LeafFn>
void FlattenJson(const nlohmann::json& value, const std::string& base, LeafFn&& leaf) {
  if (value.is_null()) return;
  if (value.is_object() || value.is_array()) {
    size_t index = 0;
    for (auto it = value.begin(); it != value.end(); ++it, ++index) {
      std::string child = value.is_object() ? it.key() : std::to_string(index);
      FlattenJson(*it, base.empty() ? child : base + "/" + child, leaf);
    }
    return;
  }
  leaf(base, EncodeLeaf(value));
}

// True if `value` holds at least one scalar (null, {} and maps of nothing but those hold none):
// whether writing it puts any leaf into the tree.
bool HoldsData(const nlohmann::json& value);

// False (with *error) if any object key inside `value` is not a valid Firebase key.
bool ValidTreeValue(const nlohmann::json& value, std::string* error);

// Places `leaf_value` at relative key `rel` ("x/y") inside object `out`.
void InsertLeaf(nlohmann::json* out, std::string_view rel, nlohmann::json leaf_value);

}  // namespace tether::store
