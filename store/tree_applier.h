// TreeApplier: applies the DataTree's mutations — device writes, cloud data with the queued
// writes laid over it again, complete marks (internal; the model is in data_tree.h and
// pending_overlay.h).
//
// Writer thread only, inside its write txns; a part of BatchApplier, sharing its ApplyContext
// (tree counters, pending index). Invariants, per txn after BatchApplier's Flush():
//   - counters.tree_bytes = the sum of key + value sizes of the tree's leaves, and every change
//     of a unit's bytes is reported to CacheUnits;
//   - counters.tree_version goes up by one per tree write that reached the tree.
// Failures: a Status (kInvalidArgument for paths and values Firebase refuses, kConflict for a
// compare-and-set that does not match); the caller aborts the txn. Nothing here throws.
#pragma once

#include <lmdb.h>

#include <cstdint>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "store/apply_context.h"
#include "store/cache_units.h"
#include "store/write_batch.h"

namespace tether::store {

class TreeApplier {
 public:
  TreeApplier(ApplyContext* ctx, CacheUnits* units)
      : ctx_(ctx), units_(units), unit_depth_(ctx->options.tree_unit_depth) {}

  Status Apply(MDB_txn* txn, const mutation::TreeSet& m, BatchResult* result);
  Status Apply(MDB_txn* txn, const mutation::TreeUpdate& m, BatchResult* result);
  Status Apply(MDB_txn* txn, const mutation::TreeRemove& m, BatchResult* result);
  Status Apply(MDB_txn* txn, const mutation::CloudWrite& m, BatchResult* result);
  Status Apply(MDB_txn* txn, const mutation::MarkComplete& m);
  Status Apply(MDB_txn* txn, const mutation::ForgetComplete& m);

 private:
  // Replaces the subtree at `segs` by `value` (null = remove), as Firebase does.
  Status SetTree(MDB_txn* txn, const std::vector<std::string>& segs, const nlohmann::json& value,
                 BatchResult* result);
  Status ApplyIncrement(MDB_txn* txn, const std::string& key, const mutation::TreeIncrement& inc,
                        nlohmann::json* out);
  Status DeleteTreeRange(MDB_txn* txn, const std::string& key);
  Status DeleteTreeKey(MDB_txn* txn, const std::string& key);
  // Cloud data was written at tree key `key`: re-applies the queued entries overlapping it.
  Status OverlayPending(MDB_txn* txn, const std::string& key, const std::vector<uint64_t>& in_flight,
                        BatchResult* result);
  Status DeleteMarksWithin(MDB_txn* txn, const std::string& key);  // complete marks at key and below

  ApplyContext* ctx_;
  CacheUnits* units_;
  const uint32_t unit_depth_;
};

}  // namespace tether::store
