// CacheUnits: the cache bound of the DataTree on the writer's side — unit records, the LRU index,
// eviction (internal; the rules are in data_tree.h).
//
// Writer thread only, inside its write txns; a part of BatchApplier, sharing its ApplyContext.
// Batches report what they did to units (Change, Released); the changes wait in memory and are
// written by Flush() in the txn of the batch (or group) that made them. Once per group Evict()
// stamps the units the loop read (CacheUse), re-admits what released holds protected, then evicts
// least recently used units while the tree is over options.tree_cache_bytes.
// Invariants, per txn after Flush():
//   - tree_units holds a UnitRecord for every unit holding data, its bytes = its leaves' bytes;
//   - a unit is in tree_lru exactly when it holds data and is not parked.
// Failures: LMDB errors are returned as Status (ApplyContext::Mdb); the caller aborts the txn and
// BatchApplier::Load() drops the changes not yet written (Loaded()).
#pragma once

#include <lmdb.h>

#include <cstdint>
#include <set>
#include <string>
#include <string_view>
#include <unordered_map>
#include <unordered_set>

#include "store/apply_context.h"
#include "store/cache_use.h"
#include "store/store_counters.h"

namespace tether::store {

class CacheUnits {
 public:
  CacheUnits(ApplyContext* ctx, CacheUse* use);

  // After BatchApplier::Load re-read the counters: forgets the changes not yet written. The first
  // call also takes the current use stamp as the one the first eviction spares.
  void Loaded();
  // `unit` gained (or lost, delta < 0) bytes; used = it was written (gets a new use stamp).
  void Change(std::string_view unit, int64_t delta, bool used);
  void Released(const std::string& path);  // a queued write at path left the queue
  // Writes the changes since the last Flush: byte deltas, one new use stamp for the units
  // written, and parked units whose queued writes all left.
  Status Flush(MDB_txn* txn);
  // Once per group, after its batches (the caller then writes the counters).
  Status Evict(MDB_txn* txn);

 private:
  Status GetUnit(MDB_txn* txn, const std::string& unit, UnitRecord* rec, bool* found);
  Status PutUnit(MDB_txn* txn, const std::string& unit, const UnitRecord* old, const UnitRecord& now);
  Status Unpark(MDB_txn* txn, const std::string& unit);
  Status UnparkWithin(MDB_txn* txn, const std::string& key);
  Status DropMarksAbove(MDB_txn* txn, std::string_view key, std::unordered_set<std::string>* done);
  Status EvictUnit(MDB_txn* txn, const std::string& unit, uint64_t last_use, bool has_marks,
                   std::unordered_set<std::string>* marks_done);

  ApplyContext* ctx_;
  CacheUse* use_;
  const uint32_t unit_depth_;
  std::set<std::string> pinned_;  // tree keys of options.tree_pinned_roots
  bool pin_all_ = false;
  struct UnitChange {
    int64_t bytes = 0;
    bool used = false;  // written: gets a new last-use stamp
  };
  std::unordered_map<std::string, UnitChange> unit_changes_;
  std::unordered_set<std::string> released_units_;    // units where a queued write left the queue
  std::unordered_set<std::string> released_shallow_;  // such writes' keys above the unit depth
  uint64_t spare_after_ = 0;  // units stamped later were used by the group being committed
  bool spare_set_ = false;
};

}  // namespace tether::store
