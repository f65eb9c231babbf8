// All engine timers in one binary min-heap, driven by a single uv_timer.
// Entries are never removed early: an owner cancels by forgetting the key,
// and a fired entry whose owner no longer matches is ignored (lazy deletion).
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

namespace tether::coap {

enum class TimerKind : uint8_t { kSeparateAck, kExchangeExpiry, kRetransmit, kHousekeeping, kDtls };

struct TimerEntry {
  uint64_t when_ms;
  uint64_t id;  // owner key within `kind`
  TimerKind kind;
};

class TimerQueue {
 public:
  void Schedule(uint64_t when_ms, TimerKind kind, uint64_t id);
  bool empty() const { return heap_.empty(); }
  uint64_t next_deadline() const { return heap_.front().when_ms; }  // requires !empty()
  // Removes and returns the earliest entry due at or before now_ms.
  bool PopDue(uint64_t now_ms, TimerEntry& out);
  size_t size() const { return heap_.size(); }

 private:
  std::vector<TimerEntry> heap_;
};

}  // namespace tether::coap
