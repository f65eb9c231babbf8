// Pending overlay: the local copy is "latest cloud data + the writes still queued for upload"
// (internal; writer thread, inside the write txn).
//
// When cloud data replaces the subtree at tree key K, every queued entry whose target overlaps K
// is applied again, in seq order (all routes), restricted to K: an entry at or below K applies
// whole; an entry above K (a set, remove, or an update's child above K) applies the part of its
// value that lies at K. Server values resolve as the cloud will resolve them at upload:
// {".sv":"timestamp"} = the event time (wall_ms + the cloud offset known then), an increment adds
// to the number the tree holds there now (the cloud's, plus earlier pending increments); a
// compare-and-set applies only if the tree holds its "expect" value at its path now (otherwise its
// upload will conflict and the cloud's value is what the device will see). Dead letters are not
// re-applied: the cloud refused them.
#pragma once

#include <lmdb.h>

#include <cstdint>
#include <functional>
#include <optional>
#include <string>

#include <nlohmann/json.hpp>

#include "store/queue_entry.h"
#include "store/status.h"

namespace tether::store {

// Writes `value` (null = remove) at tree key `key`, replacing what is there.
using TreeSetter = std::function<Status(const std::string& key, const nlohmann::json& value)>;
// Applies entry `e` again, restricted to the subtree at `key`, through `set`.
Status ReapplyWithin(MDB_txn* txn, MDB_dbi tree, const QueueEntry& e, const std::string& key,
                     const TreeSetter& set);

// The value at `key` as of this txn (null if absent), as DataTree::Get reads it.
nlohmann::json ReadSubtree(MDB_txn* txn, MDB_dbi tree, const std::string& key);
// The leaf (scalar) at `key` as of this txn; null if there is none (absent, or an object).
nlohmann::json LeafAt(MDB_txn* txn, MDB_dbi tree, const std::string& key);
// What Firebase leaves after adding the increment `by` to `current`: `by` itself when current is
// not a number; integers added as 64-bit integers while the sum fits; otherwise (an overflow, a
// double on either side, an integer beyond int64, which Firebase holds as a double) doubles.
// nullopt when that sum is not a finite number (Firebase refuses it).
std::optional<nlohmann::json> IncrementSum(const nlohmann::json& current, const nlohmann::json& by);

}  // namespace tether::store
