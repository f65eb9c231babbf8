// Mutation: one change inside a WriteBatch. Plain data; applied by the writer thread only.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <variant>
#include <vector>

#include <nlohmann/json.hpp>

#include "store/boot_clock.h"
#include "store/queue_entry.h"
#include "store/session_record.h"

namespace tether::store::mutation {

struct Append { QueueEntry entry; };                        // seq assigned at apply
struct AckThrough { std::string route; uint64_t up_to_seq; };  // delete seq <= up_to_seq
struct AckSeqs { std::string route; std::vector<uint64_t> seqs; };  // missing seqs are ignored
struct MoveToDead { std::string route; uint64_t seq; std::string reason; int http_status; int64_t now_ms; };
struct RetryDead { uint64_t seq; };
struct DropDead { uint64_t seq; };
struct SweepExpired { ClockReading now; };
// A server increment inside a tree write: the number at rel_path (relative to the write's path) is
// replaced by Firebase's sum of the numeric leaf there before this write (or 0) and by
// (pending_overlay.h, IncrementSum), read inside the write txn so concurrent increments never lose
// one another. A sum that is not a finite number fails the batch (kInvalidArgument) with
// refuse_non_finite, else leaves the number there as it was.
struct TreeIncrement {
  std::string rel_path;
  nlohmann::json by;
  bool refuse_non_finite = false;
};
// expect set: the batch fails with kConflict unless the tree holds exactly that at path (null =
// absent) when it is applied.
struct TreeSet {
  std::string path;
  nlohmann::json value;
  std::vector<TreeIncrement> increments;
  std::optional<nlohmann::json> expect;
};
struct TreeUpdate { std::string path; nlohmann::json children; std::vector<TreeIncrement> increments; };
struct TreeRemove { std::string path; };
struct PutSession { SessionRecord record; };
struct TouchSession {  // the record's liveness checkpoint fields
  std::string session_id;
  int64_t last_seen_ms, last_seen_boottime_ms;
  std::string boot_id;
  int64_t last_ping_ms;
};
struct RemoveSession { std::string session_id; bool must_exist; uint64_t ops_through; };
struct AddOnDisconnect { std::string session_id; OnDisconnectOp op; };
struct CancelOnDisconnect { std::string session_id; std::string path; uint64_t up_to_order; };
struct MarkComplete { std::string path; std::string query; };
struct ForgetComplete { std::string path; };
// The cloud's data: like TreeSet (patch = false) or TreeUpdate (patch = true), then every queued
// entry overlapping a written path is applied again on top (see pending_overlay.h), except the
// seqs in `in_flight` (sorted), whose effect the cloud's data may already hold.
struct CloudWrite {
  std::string path;
  nlohmann::json value;
  bool patch = false;
  std::vector<uint64_t> in_flight;
};

using Mutation = std::variant<Append, AckThrough, AckSeqs, MoveToDead, RetryDead, DropDead,
                              SweepExpired, TreeSet, TreeUpdate, TreeRemove, PutSession,
                              TouchSession, RemoveSession, AddOnDisconnect, CancelOnDisconnect,
                              MarkComplete, ForgetComplete, CloudWrite>;

}  // namespace tether::store::mutation
