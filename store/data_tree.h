// DataTree: read side of the local copy of device-visible data (Firebase JSON model).
//
// Leaves are stored flat (see tree_path.h), so reading a subtree is one key-range scan. Values
// follow Firebase: no arrays (stored as objects keyed "0","1",...), null = absent, empty objects
// vanish. Mutations are WriteBatch::TreeSet / TreeUpdate / TreeRemove.
//
// Cache bound (StoreOptions::tree_cache_bytes, bytes = keys + values). The tree is divided into
// UNITS: the subtree at the first tree_unit_depth segments of a path ("/fleet/d1" at depth 2; a
// leaf shallower than that is a unit by itself). Every unit has a last-use stamp, persisted (so
// recency survives a restart), renewed when the unit is written or read (reads are stamped at the
// next commit). After each group commit, while the tree is over the bound, the least recently
// used unit is evicted, except its PROTECTED subtrees:
//   - a sync root (tree_pinned_roots): exactly its subtree, not its siblings or its unit;
//   - a subtree held by Store::KeepCached (observed paths);
//   - the target of a queued write (its path and below; dead letters protect nothing).
// Protection above the unit (a queued write at "/fleet", a sync root "/fleet") keeps all of it.
// A unit whose remainder is all protected is parked (left out until it is written again, or its
// last queued write leaves the queue, or the hold that protected it is released), so each commit
// costs what it evicts, not what it skips. Units used by the commit being made are not evicted
// by it. So after a commit:
//   bytes <= tree_cache_bytes + protected bytes + what that commit wrote or read,
// where "protected" also counts data whose queued writes were uploaded while other writes into
// the same unit are still queued (released when that unit's queue part drains or it is written).
// Evicting data drops every complete mark at or above an evicted leaf, any query (HoldsComplete
// then says no); marks of subtrees left whole stay. Eviction is no data change: nothing is
// reported in changed_paths and observers are not notified.
#pragma once

#include <cstdint>
#include <string_view>

#include <nlohmann/json.hpp>

#include "store/status.h"

namespace tether::store {

class LmdbEnv;
class CacheUse;

class DataTree {
 public:
  DataTree(const LmdbEnv& env, CacheUse* use) : env_(env), use_(use) {}

  // *out = the value at path, null if absent. kInvalidArgument for a malformed path.
  Status Get(std::string_view path, nlohmann::json* out) const;
  nlohmann::json Get(std::string_view path) const;  // null if absent or malformed
  // True if the tree holds the complete result of `query` at path (WriteBatch::TreeMarkComplete),
  // or the whole value at path or an ancestor, and no eviction or ForgetComplete dropped the mark
  // since (evicting anything at or below a mark's path drops it).
  bool HoldsComplete(std::string_view path, std::string_view query) const;
  uint64_t Version() const;        // +1 per applied tree mutation
  uint64_t Bytes() const;          // current cached size
  uint64_t Evictions() const;      // units the bound evicted data from, so far

 private:
  const LmdbEnv& env_;
  CacheUse* use_;
};

}  // namespace tether::store
