// BatchApplier: turns WriteBatch mutations into LMDB writes and keeps the counters (internal).
//
// Writer thread only. Owns the in-memory copy of the persisted counters (StoreCounters, per-route
// RouteStats) and the cache-unit changes of the batches applied since the last flush (byte
// deltas, uses, queued writes that left), and writes all of them inside the same txn as the
// change. If Apply fails the caller aborts that txn and calls Load() on the enclosing txn, so the
// in-memory state always equals what the enclosing txn sees.
#pragma once

#include <lmdb.h>

#include <map>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <unordered_map>
#include <unordered_set>
#include <vector>

#include "store/lmdb_env.h"
#include "store/options.h"
#include "store/pending_index.h"
#include "store/store_counters.h"
#include "store/cache_use.h"
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
  void Committed() { pending_.Committed(); }  // the group's txn committed
  // On failure nothing of the batch is in `txn` only once the caller aborts it (see Applied).
  Applied Apply(MDB_txn* txn, const WriteBatch& batch, const ApplyMode& mode, BatchResult* result);
  Status FlushCounters(MDB_txn* txn) { return Flush(txn); }
  // After a kRejected batch was rolled back: persist +1 on its route's rejected counter.
  Status CountRejected(MDB_txn* txn);
  // Once per group, after its batches: stamps the units read since the last call, re-admits what
  // released holds protected, then enforces options.tree_cache_bytes as data_tree.h states.
  Status EvictTree(MDB_txn* txn);

  // Any thread: replaces StoreOptions::route_limits for every batch applied from now on.
  void SetRouteLimits(std::map<std::string, QueueLimits> limits);


 private:
  enum class Removal { kAck, kDropOldest, kExpired, kDropDead };

  // One overload per mutation type (mutation.h).
  Status Do(MDB_txn* txn, const mutation::Append& m, BatchResult* result);
  Status Do(MDB_txn* txn, const mutation::AckThrough& m, BatchResult* result);
  Status Do(MDB_txn* txn, const mutation::AckSeqs& m, BatchResult* result);
  Status Do(MDB_txn* txn, const mutation::MoveToDead& m, BatchResult* result);
  Status Do(MDB_txn* txn, const mutation::RetryDead& m, BatchResult* result);
  Status Do(MDB_txn* txn, const mutation::DropDead& m, BatchResult* result);
  Status Do(MDB_txn* txn, const mutation::SweepExpired& m, BatchResult* result);
  Status Do(MDB_txn* txn, const mutation::TreeSet& m, BatchResult* result);
  Status Do(MDB_txn* txn, const mutation::TreeUpdate& m, BatchResult* result);
  Status Do(MDB_txn* txn, const mutation::TreeRemove& m, BatchResult* result);
  Status Do(MDB_txn* txn, const mutation::PutSession& m, BatchResult* result);
  Status Do(MDB_txn* txn, const mutation::TouchSession& m, BatchResult* result);
  Status Do(MDB_txn* txn, const mutation::RemoveSession& m, BatchResult* result);
  Status Do(MDB_txn* txn, const mutation::AddOnDisconnect& m, BatchResult* result);
  Status Do(MDB_txn* txn, const mutation::CancelOnDisconnect& m, BatchResult* result);
  Status Do(MDB_txn* txn, const mutation::MarkComplete& m, BatchResult* result);
  Status Do(MDB_txn* txn, const mutation::ForgetComplete& m, BatchResult* result);
  Status Do(MDB_txn* txn, const mutation::CloudWrite& m, BatchResult* result);
  Status AppendEntry(MDB_txn* txn, QueueEntry e, BatchResult* result);
  Status RemoveQueued(MDB_txn* txn, uint32_t route_id, uint64_t seq, std::string_view value,
                      Removal why);
  Status RemoveHeadWhile(MDB_txn* txn, uint32_t route_id, Removal why, uint64_t up_to_seq, size_t max_count);
  Status SweepRoute(MDB_txn* txn, uint32_t route_id, int64_t ttl_ms, const ClockReading& now);
  void ForgetSwept(uint32_t route_id, uint64_t seq);
  Status SetTree(MDB_txn* txn, const std::vector<std::string>& segs, const nlohmann::json& value,
                 BatchResult* result);
  Status ApplyIncrement(MDB_txn* txn, const std::string& key, const mutation::TreeIncrement& inc,
                        nlohmann::json* out);
  Status DeleteTreeRange(MDB_txn* txn, const std::string& key);
  Status DeleteTreeKey(MDB_txn* txn, const std::string& key);
  // Cloud data was written at tree key `key`: re-applies the queued entries overlapping it.
  Status OverlayPending(MDB_txn* txn, const std::string& key, const std::vector<uint64_t>& in_flight,
                        BatchResult* result);
  Status DeleteKeysFrom(MDB_txn* txn, MDB_dbi dbi, const std::string& prefix);
  Status DeleteMarksWithin(MDB_txn* txn, const std::string& key);  // complete marks at key and below
  Status DeleteSessionOps(MDB_txn* txn, const std::string& session_id, const std::string* under,
                          uint64_t up_to_order = UINT64_MAX);
  // Cache units (see data_tree.h).
  void UnitBytes(std::string_view unit, int64_t delta, bool used);
  void Released(const std::string& path);  // a queued write at path left the queue
  Status FlushUnits(MDB_txn* txn);
  Status GetUnit(MDB_txn* txn, const std::string& unit, UnitRecord* rec, bool* found);
  Status PutUnit(MDB_txn* txn, const std::string& unit, const UnitRecord* old, const UnitRecord& now);
  Status Unpark(MDB_txn* txn, const std::string& unit);
  Status UnparkWithin(MDB_txn* txn, const std::string& key);
  Status DropMarksAbove(MDB_txn* txn, std::string_view key, std::unordered_set<std::string>* done);
  Status EvictUnit(MDB_txn* txn, const std::string& unit, uint64_t last_use, bool has_marks,
                   std::unordered_set<std::string>* marks_done);
  Status Flush(MDB_txn* txn);
  Status Mdb(int rc, const char* what);
  QueueLimits LimitsFor(const std::string& route) const;
  RouteStats& Route(uint32_t id);

  const LmdbEnv& env_;
  const StoreOptions& options_;
  const Databases& db_;
  CacheUse* use_;
  const uint32_t unit_depth_;
  std::set<std::string> pinned_;  // tree keys of options.tree_pinned_roots
  bool pin_all_ = false;

  PendingIndex pending_;  // queued entries by path; in step with counters_ (Load, Flush)
  StoreCounters counters_;
  std::unordered_map<std::string, uint32_t> route_ids_;
  std::unordered_map<uint32_t, RouteStats> routes_;
  std::unordered_set<uint32_t> dirty_routes_;
  struct UnitChange {
    int64_t bytes = 0;
    bool used = false;  // written: gets a new last-use stamp
  };
  std::unordered_map<std::string, UnitChange> unit_changes_;
  std::unordered_set<std::string> released_units_;    // units where a queued write left the queue
  std::unordered_set<std::string> released_shallow_;  // such writes' keys above the unit depth
  uint64_t spare_after_ = 0;  // units stamped later were used by the group being committed
  bool spare_set_ = false;
  // Per route: the head run a TTL sweep already passed, whose entries still queued are all of
  // unknown age; the next sweep starts after it. In memory only (rebuilt by the next sweep).
  struct TtlScan {
    uint64_t through_seq = 0;
    uint64_t unknown = 0;  // entries with seq <= through_seq still queued
    std::optional<int64_t> resolvable_at_wall_ms;  // a plausible wall clock at or past this can tell some
  };
  static constexpr size_t kSweepScanLimit = 20'000;  // entries examined per route per sweep
  std::unordered_map<uint32_t, TtlScan> ttl_scans_;
  bool counters_dirty_ = false;
  bool touched_ = false;
  bool exhausted_ = false;
  size_t acks_left_ = SIZE_MAX;  // of ApplyMode::ack_budget, in the current Apply
  bool cut_short_ = false;
  std::string rejected_route_;
  mutable std::mutex limits_mu_;  // the loop thread replaces the limits while the writer reads them
  std::map<std::string, QueueLimits> route_limits_;  // guarded by limits_mu_
};

}  // namespace tether::store
