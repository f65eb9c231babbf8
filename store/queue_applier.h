// QueueApplier: applies the WriteQueue's mutations (append, acknowledge, dead letters, TTL sweep)
// and keeps the per-route RouteQueueStats (internal).
//
// Writer thread only, inside its write txns; a part of BatchApplier, sharing its ApplyContext
// (queue counters, pending index). SetRouteLimits is the one call from another thread (the loop);
// a mutex guards the limits. Invariants, per txn after Flush():
//   - counters.queue_entries/queue_bytes and each route's depth/bytes equal the queue's contents;
//   - every entry that leaves the queue leaves the pending index and tells CacheUnits (Released).
// Route stats change in memory and are written by Flush(). Failures: a Status (a limit refusing
// an Append is kRejected, remembered for CountRejected); the caller aborts the txn and Load()
// re-reads the routes. Load throws StoreError on unreadable route records.
#pragma once

#include <lmdb.h>

#include <cstddef>
#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <unordered_set>

#include "store/apply_context.h"
#include "store/cache_units.h"
#include "store/entry_age.h"
#include "util/mutex.h"
#include "store/write_batch.h"

namespace tether::store {

// How many acknowledged entries one Apply may still delete (ApplyMode::ack_budget), counted down.
struct AckBudget {
  size_t left = SIZE_MAX;  // SIZE_MAX: no limit
  bool cut_short = false;  // an acknowledged entry stayed for want of budget
};

class QueueApplier {
 public:
  QueueApplier(ApplyContext* ctx, CacheUnits* units);

  void Load(MDB_txn* txn);      // re-reads routes and route stats; throws StoreError
  Status Flush(MDB_txn* txn);  // writes the route stats changed since the last Flush

  // Any thread: replaces StoreOptions::route_limits for every batch applied from now on.
  void SetRouteLimits(std::map<std::string, QueueLimits> limits);

  Status Apply(MDB_txn* txn, const mutation::Append& m, BatchResult* result);
  Status Apply(MDB_txn* txn, const mutation::AckThrough& m, AckBudget* acks);
  Status Apply(MDB_txn* txn, const mutation::AckSeqs& m, AckBudget* acks);
  Status Apply(MDB_txn* txn, const mutation::MoveToDead& m);
  Status Apply(MDB_txn* txn, const mutation::RetryDead& m, BatchResult* result);
  Status Apply(MDB_txn* txn, const mutation::DropDead& m);
  Status Apply(MDB_txn* txn, const mutation::SweepExpired& m);

  // After a kRejected batch was rolled back: +1 on the rejected counter of the route whose limit
  // refused it (in memory; the caller flushes). False if there is no such route.
  bool CountRejected();

 private:
  // Takes dead letter `seq` out of the dead-letter table into *d and off its route's counts.
  Status TakeDead(MDB_txn* txn, uint64_t seq, DeadLetter* d);
  enum class Removal { kAck, kDropOldest, kExpired, kDropDead };

  Status AppendEntry(MDB_txn* txn, QueueEntry e, BatchResult* result);
  Status RemoveQueued(MDB_txn* txn, uint32_t route_id, uint64_t seq, std::string_view value,
                      Removal why);
  // Removes head entries of a route while seq <= up_to_seq, at most max_count of them, and for
  // kAck at most acks->left.
  Status RemoveHeadWhile(MDB_txn* txn, uint32_t route_id, Removal why, uint64_t up_to_seq, size_t max_count,
                         AckBudget* acks);
  Status SweepRoute(MDB_txn* txn, uint32_t route_id, int64_t ttl_ms, const ClockReading& now);
  void ForgetSwept(uint32_t route_id, uint64_t seq);
  QueueLimits LimitsFor(const std::string& route) const;
  RouteQueueStats& Route(uint32_t id);  // for a change: marks it dirty and the Apply touched

  ApplyContext* ctx_;
  CacheUnits* units_;
  std::unordered_map<std::string, uint32_t> route_ids_;
  std::unordered_map<uint32_t, RouteQueueStats> routes_;
  std::unordered_set<uint32_t> dirty_routes_;
  // Per route: the head run a TTL sweep already passed, whose entries still queued are all of
  // unknown age; the next sweep starts after it. In memory only (rebuilt by the next sweep).
  struct TtlScan {
    uint64_t through_seq = 0;
    uint64_t unknown = 0;  // entries with seq <= through_seq still queued
    std::optional<int64_t> resolvable_at_wall_ms;  // a plausible wall clock at or past this can tell some
  };
  static constexpr size_t kSweepScanLimit = 20'000;  // entries examined per route per sweep
  std::unordered_map<uint32_t, TtlScan> ttl_scans_;
  std::string rejected_route_;  // of the last Append a limit refused
  mutable util::Mutex limits_mu_;  // the loop thread replaces the limits while the writer reads them
  std::map<std::string, QueueLimits> route_limits_ GUARDED_BY(limits_mu_);
};

}  // namespace tether::store
