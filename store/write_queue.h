// WriteQueue: read side of the durable upload queue (mutations go through WriteBatch).
//
// Entries of one route are read in seq order and deleted only by an explicit ack
// (WriteBatch::AckThrough / Ack) after the cloud confirmed them. Reads use their own read-only
// snapshot and never wait for the writer thread.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "store/queue_entry.h"

namespace tether::store {

class LmdbEnv;

struct QueueTotals {
  uint64_t entries = 0;
  uint64_t bytes = 0;
  uint64_t dead_entries = 0;
  uint64_t next_seq = 0;
};

class WriteQueue {
 public:
  explicit WriteQueue(const LmdbEnv& env) : env_(env) {}

  // Up to max_n entries of `route` with seq > after_seq, oldest first.
  std::vector<QueueEntry> Peek(std::string_view route, size_t max_n, uint64_t after_seq = 0) const;
  std::optional<RouteQueueStats> Stats(std::string_view route) const;  // nullopt: route never used
  std::vector<RouteQueueStats> AllStats() const;
  QueueTotals Totals() const;
  // Dead letters with seq > after_seq, in seq order.
  std::vector<DeadLetter> DeadLetters(size_t max_n, uint64_t after_seq = 0) const;

 private:
  const LmdbEnv& env_;
};

}  // namespace tether::store
