// BatchApplier: applies a WriteBatch's mutations inside the writer's txn and keeps the store's
// counters in step with them (internal).
//
// Writer thread only, except SetRouteLimits (any thread). Owns the in-memory state the batches
// change — StoreCounters and the pending index (ApplyContext), route stats (QueueApplier), the
// cache-unit changes (CacheUnits) — and writes it in the same txn as the change (Flush). Each
// mutation goes to the part that owns its tables: QueueApplier, TreeApplier, SessionApplier;
// CacheUnits bounds the tree once per group (EvictTree).
// Failures: Apply reports in Applied; the caller then aborts the txn and, if Applied::touched,
// calls Load() on the enclosing txn, so the in-memory state always equals what the enclosing txn
// sees. Load throws StoreError on unreadable counters.
#pragma once

#include <lmdb.h>

#include <cstddef>
#include <cstdint>
#include <map>
#include <string>

#include "store/apply_context.h"
#include "store/cache_units.h"
#include "store/cache_use.h"
#include "store/lmdb_env.h"
#include "store/options.h"
#include "store/queue_applier.h"
#include "store/session_applier.h"
#include "store/tree_applier.h"
#include "store/write_batch.h"

namespace tether::store {

// How one Apply may change the store (chosen per transaction by GroupCommitter).
struct ApplyMode {
  bool space_low = false;        // batches that can grow the store fail with kFull (deletes still apply)
  size_t ack_budget = SIZE_MAX;  // at most this many acknowledged entries are deleted
  bool flush = true;             // false: changed counters wait for one FlushCounters() after several batches
};

// What one Apply did, beside the batch's BatchResult.
struct Applied {
  Status status;
  bool touched = false;    // in-memory state changed: after a failure, Load() the enclosing txn
  bool exhausted = false;  // the failure was MDB_MAP_FULL / MDB_TXN_FULL / ENOSPC
  bool cut_short = false;  // stopped at ApplyMode::ack_budget: a prefix applied; apply it again
  bool ok() const { return status.ok(); }
};

class BatchApplier {
 public:
  BatchApplier(const LmdbEnv& env, const StoreOptions& options, CacheUse* use);

  // Throws StoreError on unreadable counters. at_last_commit: `txn` reads what the last commit
  // left (after an aborted group), so the pending index can undo instead of rescanning.
  void Load(MDB_txn* txn, bool at_last_commit = false);
  void Committed() { ctx_.pending.Committed(); }  // the group's txn committed
  // On failure the batch is undone only once the caller aborts `txn` (see Applied).
  Applied Apply(MDB_txn* txn, const WriteBatch& batch, const ApplyMode& mode, BatchResult* result);
  Status FlushCounters(MDB_txn* txn) { return Flush(txn); }
  // After a kRejected batch was rolled back: persist +1 on its route's rejected counter.
  Status CountRejected(MDB_txn* txn);
  // Once per group, after its batches: stamps the units read since the last call, re-admits what
  // released holds protected, then enforces options.tree_cache_bytes as data_tree.h states.
  Status EvictTree(MDB_txn* txn);

  // Any thread: replaces StoreOptions::route_limits for every batch applied from now on.
  void SetRouteLimits(std::map<std::string, QueueLimits> limits) { queue_.SetRouteLimits(std::move(limits)); }

 private:
  struct Dispatch;  // which part applies which mutation type

  Status Flush(MDB_txn* txn);  // everything changed in memory since the last Flush

  ApplyContext ctx_;
  CacheUnits units_;
  QueueApplier queue_;
  TreeApplier tree_;
  SessionApplier sessions_;
};

}  // namespace tether::store
