// WriteBatch: an ordered list of mutations applied atomically (all or none) and durably together.
//
// Built on the loop thread, handed to Store::Submit, applied by the writer thread in order.
// A device write is typically TreeSet + Append in one batch; firing a session's onDisconnect ops
// is RemoveSession(must_exist) + the resulting Append/Tree* in one batch, so they run exactly once.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "store/mutation.h"
#include "store/status.h"

namespace tether::store {

class WriteBatch {
 public:
  // --- WriteQueue ---
  void Append(QueueEntry entry);  // entry.seq ignored; see BatchResult::seqs
  void AckThrough(std::string route, uint64_t up_to_seq);
  void Ack(std::string route, std::vector<uint64_t> seqs);
  void MoveToDeadLetters(std::string route, uint64_t seq, std::string reason, int http_status,
                         int64_t now_ms);  // kNotFound if the entry is not queued
  void RetryDeadLetter(uint64_t seq);      // back to the queue TAIL with a new seq
  void DropDeadLetter(uint64_t seq);
  // TTL: drops (and counts) the entries of every route with a TTL whose age (entry_age.h) at
  // `now` exceeds it; entries whose age cannot be trusted are kept and counted
  // (RouteQueueStats::ttl_age_unknown). Scans each route from its head and stops at the first entry
  // known to be younger than the TTL.
  void SweepExpired(ClockReading now);
  // --- DataTree ---
  // null value = remove. increments: see mutation::TreeIncrement.
  void TreeSet(std::string path, nlohmann::json value, std::vector<mutation::TreeIncrement> increments = {});
  // object: relative path -> value
  void TreeUpdate(std::string path, nlohmann::json children, std::vector<mutation::TreeIncrement> increments = {});
  void TreeRemove(std::string path);
  // Compare-and-set: sets value (null = remove) only if the tree holds `expect` at path when the
  // batch applies; otherwise the whole batch fails with kConflict.
  void TreeSetIf(std::string path, nlohmann::json expect, nlohmann::json value);
  // The tree now holds the complete result of `query` (Query::Canonical, "" = the whole value) at
  // path, e.g. after fetching it from the cloud. Evicting its root (any root, for a mark of the
  // whole tree) or TreeForgetComplete forgets it.
  void TreeMarkComplete(std::string path, std::string query);
  // The tree may no longer hold what earlier marks claimed: drops every mark at path and below,
  // and the whole-value marks of its ancestors.
  void TreeForgetComplete(std::string path);
  // Cloud data arriving (sync stream, cloud read, conflict): the local copy becomes the cloud's
  // value there with the writes still queued for upload applied again on top, in queue order
  // (increments add to the cloud's number, compare-and-sets compare again), so it stays "latest
  // cloud data + pending writes". `in_flight`: seqs being uploaded right now whose effect the
  // cloud's data may already include; they are not applied again (an increment would count twice).
  void TreeSetFromCloud(std::string path, nlohmann::json value, std::vector<uint64_t> in_flight = {});
  // As TreeSetFromCloud, for an object of relative child paths (a patch event, a query result).
  void TreeUpdateFromCloud(std::string path, nlohmann::json children, std::vector<uint64_t> in_flight = {});
  // --- SessionTable ---
  void PutSession(SessionRecord record);  // insert or replace; tokens must be unique (kConflict)
  // Rewrites the liveness checkpoint of the session's record (SessionRecord::last_seen_ms and the
  // fields after it); kNotFound if the session does not exist.
  void TouchSession(std::string session_id, int64_t last_seen_ms, int64_t last_seen_boottime_ms = 0,
                    std::string boot_id = {}, int64_t last_ping_ms = 0);
  // Deletes the session and its onDisconnect ops. kNotFound if absent and must_exist. When firing
  // ops read with SessionTable::OnDisconnectOps, pass the largest order read as ops_through: an op
  // registered meanwhile (order > ops_through) makes the batch fail with kConflict (re-read, retry).
  void RemoveSession(std::string session_id, bool must_exist, uint64_t ops_through = UINT64_MAX);
  void AddOnDisconnect(std::string session_id, OnDisconnectOp op);
  // The session's ops at path and below (only those with order <= up_to_order).
  void CancelOnDisconnect(std::string session_id, std::string path, uint64_t up_to_order = UINT64_MAX);

  bool empty() const { return mutations_.empty(); }
  // Only AckThrough / Ack: when such a batch does not fit a full map it is applied in pieces,
  // each its own durable commit (an acknowledgement stands alone, and deleting is what frees the
  // space); its result comes once all pieces are applied.
  bool only_acks() const;
  size_t size() const { return mutations_.size(); }
  const std::vector<mutation::Mutation>& mutations() const { return mutations_; }

 private:
  std::vector<mutation::Mutation> mutations_;
};

// What a committed (or failed) batch reports back. On failure nothing of the batch was applied.
struct BatchResult {
  Status status;
  std::vector<uint64_t> seqs;               // one per Append / RetryDeadLetter, in batch order
  std::vector<std::string> changed_paths;   // "/a/b" per tree mutation that touched data
  uint64_t tree_version = 0;                // DataTree version after this batch
};

}  // namespace tether::store
