// The two halves of a device write, as device requests and fired onDisconnect operations both
// make them: the change to the local copy and the queue entry for the uploader. Stateless
// functions; any thread; no I/O (a value the store cannot apply fails its commit, not here).
#pragma once

#include <optional>
#include <string>
#include <vector>

#include "gateway/value_codec.h"
#include "store/store.h"

namespace tether {

// "/" + the joined cloud path: the data tree's key.
std::string TreePath(const std::vector<std::string>& cloud);

// The local-copy side of a device write. Timestamps resolve now (cloud_now_ms); increments are
// resolved by the store inside the commit, against what the tree holds then (pipelined increments
// all count). With refuse_non_finite an increment whose sum is not a finite number fails the
// commit (4.00).
void AddTreeWrite(store::WriteBatch* batch, store::OpKind kind, const std::string& tree_path, Json local,
                  int64_t cloud_now_ms, bool refuse_non_finite = false);

// The queue entry: the value as JSON with server values kept (resolved at upload), the event's
// three clocks and the cloud offset estimate in force (nullopt: none).
store::QueueEntry QueueEntryFor(const std::string& route, const std::string& device, store::OpKind kind,
                                const std::string& tree_path, const Json& value, int64_t wall_ms,
                                std::optional<int64_t> cloud_offset_ms);

}  // namespace tether
