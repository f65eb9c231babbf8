// DataTree: read side of the local copy of device-visible data (Firebase JSON model).
//
// Leaves are stored flat (see tree_path.h), so reading a subtree is one key-range scan. Values
// follow Firebase: no arrays (stored as objects keyed "0","1",...), null = absent, empty objects
// vanish. Mutations are WriteBatch::TreeSet / TreeUpdate / TreeRemove.
//
// Cache bound (StoreOptions::tree_cache_bytes, bytes = keys + values): after each group commit,
// whole ROOTS (the first path segment, e.g. everything under "/devices") are evicted, least
// recently read or written first. Never evicted: roots named by tree_pinned_roots, and roots with
// any queued or dead-lettered entry whose path lies under them (not yet uploaded).
#pragma once

#include <cstdint>
#include <string_view>

#include <nlohmann/json.hpp>

#include "store/status.h"

namespace tether::store {

class LmdbEnv;
class TreeRecency;

class DataTree {
 public:
  DataTree(const LmdbEnv& env, TreeRecency* recency) : env_(env), recency_(recency) {}

  // *out = the value at path, null if absent. kInvalidArgument for a malformed path.
  Status Get(std::string_view path, nlohmann::json* out) const;
  nlohmann::json Get(std::string_view path) const;  // null if absent or malformed
  // True if the tree holds the complete result of `query` at path (WriteBatch::TreeMarkComplete),
  // or the whole value at path or an ancestor, and no eviction or ForgetComplete dropped the mark
  // since (evicting a root drops the marks inside it and those of the whole tree).
  bool HoldsComplete(std::string_view path, std::string_view query) const;
  uint64_t Version() const;        // +1 per applied tree mutation
  uint64_t Bytes() const;          // current cached size
  uint64_t EvictedRoots() const;   // evictions so far

 private:
  const LmdbEnv& env_;
  TreeRecency* recency_;
};

}  // namespace tether::store
