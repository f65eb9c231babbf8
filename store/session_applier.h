// SessionApplier: applies the SessionTable's mutations — session records, their token indexes and
// their onDisconnect operations (internal; the read side is session_table.h).
//
// Writer thread only, inside its write txns; a part of BatchApplier, sharing its ApplyContext
// (it takes onDisconnect orders from counters.next_op_order). Invariants, per txn:
//   - by_short and by_long map each session's tokens to its id, and no token to two sessions;
//   - a session's onDisconnect ops are keyed by OnDisconnectPrefix(id) + order, in the order they
//     were registered, and go with the session.
// Failures: a Status (kNotFound, kConflict, kInvalidArgument as write_batch.h states); the caller
// aborts the txn. Nothing here throws.
#pragma once

#include <lmdb.h>

#include <cstdint>
#include <string>

#include "store/apply_context.h"
#include "store/write_batch.h"

namespace tether::store {

class SessionApplier {
 public:
  explicit SessionApplier(ApplyContext* ctx) : ctx_(ctx) {}

  Status Apply(MDB_txn* txn, const mutation::PutSession& m);
  Status Apply(MDB_txn* txn, const mutation::TouchSession& m);
  Status Apply(MDB_txn* txn, const mutation::RemoveSession& m);
  Status Apply(MDB_txn* txn, const mutation::AddOnDisconnect& m);
  Status Apply(MDB_txn* txn, const mutation::CancelOnDisconnect& m);

 private:
  // Deletes the session's onDisconnect ops (only those at/below `under` if given, up to an order).
  Status DeleteSessionOps(MDB_txn* txn, const std::string& session_id, const std::string* under,
                          uint64_t up_to_order = UINT64_MAX);

  ApplyContext* ctx_;
};

}  // namespace tether::store
