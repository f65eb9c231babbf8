// PendingIndex: the queued entries by tree path (internal; writer thread, inside its write txns).
//
// Invariant, per txn: every queued entry with seq <= through() is in LMDB db pending_paths
// (PendingIndexKey(path, seq) -> route id); every queued entry with seq > through() is in memory
// only. meta "pending_through" (BE64) holds through() and moves in the txn that persists the
// in-memory part. So an append costs no LMDB write: in the usual case the cloud confirms an entry
// long before kPersistAt others are queued, and the persisted index never changes. Only a backlog
// is written out, kPersistAt entries per write, whose keys share pages (an entry per device path).
//
// Load() rebuilds the in-memory part from the queue tail of a txn (seq > through: at most
// kPersistAt plus one group of appends), so after an aborted txn or a crash it is exact again.
// After an aborted group (the common case on a full disk) an undo log of the in-memory changes
// since the last commit restores it without that scan, unless the group wrote the part out.
// An entry whose path has no index key (malformed, too long) is in neither part.
#pragma once

#include <lmdb.h>

#include <cstdint>
#include <map>
#include <string>
#include <string_view>
#include <vector>

#include "store/lmdb_env.h"

namespace tether::store {

struct PendingRef {
  uint64_t seq;
  uint32_t route_id;
};

class PendingIndex {
 public:
  static constexpr size_t kPersistAt = 8192;  // in-memory entries that trigger Persist's write

  explicit PendingIndex(const Databases& dbs) : dbs_(dbs) {}

  // These return an LMDB result code (0 = done).
  // at_last_commit: `txn` reads the state of the last Committed(); the in-memory part is then
  // restored from an undo log when it can be (no Persist since), instead of a queue scan.
  int Load(MDB_txn* txn, bool at_last_commit = false);
  void Committed();  // the writer's txn committed: what memory holds is what the file holds
  void Add(std::string_view tree_path, uint64_t seq, uint32_t route_id);
  int Remove(MDB_txn* txn, std::string_view tree_path, uint64_t seq);
  // Once per txn that may have appended: writes the in-memory part to LMDB if that txn added to
  // it and it holds kPersistAt entries or more. A txn that only deletes never writes here, so
  // acknowledgements still commit in a map too full for the index's pages.
  int Persist(MDB_txn* txn);

  // Queued entries at tree key `key` exactly (below = false) or strictly below it.
  void Collect(MDB_txn* txn, const std::string& key, bool below, std::vector<PendingRef>* out) const;
  // Whether Collect would find one; an LMDB error counts as yes (keeps data rather than evict it).
  bool Any(MDB_txn* txn, const std::string& key, bool below) const;
  // Queued entries whose path is `key`, below it or above it, in seq order.
  std::vector<PendingRef> Overlapping(MDB_txn* txn, const std::string& key) const;

 private:
  const Databases& dbs_;
  uint64_t through_ = 0;
  uint64_t last_added_ = 0;  // highest seq Add() saw since through_ (or through_)
  bool added_ = false;       // Add() since the last Persist() or Load()
  struct Undo {
    std::string key;
    uint32_t route_id;
    bool added;  // else removed
  };
  std::vector<Undo> undo_;  // in-memory changes since the last Committed()
  bool undo_exact_ = false;  // undo_ alone leads back to the last Committed()
  uint64_t last_added_at_commit_ = 0;
  std::map<std::string, uint32_t> recent_;  // PendingIndexKey -> route id, seq > through_
};

// meta "pending_through" as a txn holds it; absent (a store of schema 3 or older) = every queued
// entry is persisted, returned as UINT64_MAX.
uint64_t ReadPendingThrough(MDB_txn* txn, const Databases& dbs);
int WritePendingThrough(MDB_txn* txn, const Databases& dbs, uint64_t through);

}  // namespace tether::store
