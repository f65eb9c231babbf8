// ApplyContext: what the parts of BatchApplier share inside the writer's txn (internal).
//
// Writer thread only; owned by BatchApplier, lent to its parts (QueueApplier, TreeApplier,
// CacheUnits, SessionApplier), which keep a pointer and never outlive it. Holds:
//   - the in-memory copy of the persisted StoreCounters and the queue's PendingIndex, in step
//     with the enclosing txn (BatchApplier::Load rebuilds both after an abort);
//   - two marks of the current Apply, which BatchApplier resets before a batch and reports in
//     Applied: `touched` (in-memory state changed, so a failed batch needs a Load of its parent
//     txn) and `exhausted` (an LMDB call failed for want of space).
// Failures: LMDB result codes become a Status through Mdb() (kFull for space, else kIoError);
// nothing here throws.
#pragma once

#include <lmdb.h>

#include <cstddef>
#include <string>

#include "store/lmdb_env.h"
#include "store/options.h"
#include "store/pending_index.h"
#include "store/status.h"
#include "store/store_counters.h"

namespace tether::store {

inline Status Invalid(std::string msg) { return Status::Error(StatusCode::kInvalidArgument, std::move(msg)); }
inline Status NotFound(std::string msg) { return Status::Error(StatusCode::kNotFound, std::move(msg)); }

struct ApplyContext {
  ApplyContext(const LmdbEnv& env, const StoreOptions& options)
      : env(env), options(options), db(env.dbs()), pending(env.dbs()) {}
  ApplyContext(const ApplyContext&) = delete;
  ApplyContext& operator=(const ApplyContext&) = delete;

  // MDB_MAP_FULL, MDB_TXN_FULL and ENOSPC: kFull, and sets `exhausted`; any other code kIoError.
  Status Mdb(int rc, const char* what);
  // Deletes every key of `dbi` that starts with `prefix` ("" = all of them).
  Status DeleteKeysFrom(MDB_txn* txn, MDB_dbi dbi, const std::string& prefix);

  const LmdbEnv& env;
  const StoreOptions& options;
  const Databases& db;
  StoreCounters counters;
  PendingIndex pending;         // queued entries by path; in step with counters (Load, Flush)
  bool counters_dirty = false;  // counters differ from what the txn holds
  bool touched = false;         // current Apply: in-memory state changed
  bool exhausted = false;       // current Apply: the last failure was for want of space
};

}  // namespace tether::store
