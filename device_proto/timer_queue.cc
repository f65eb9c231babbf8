#include "device_proto/timer_queue.h"

#include <algorithm>

namespace tether::coap {

namespace {
bool Later(const TimerEntry& a, const TimerEntry& b) { return a.when_ms > b.when_ms; }
}  // namespace

void TimerQueue::Schedule(uint64_t when_ms, TimerKind kind, uint64_t id) {
  heap_.push_back(TimerEntry{when_ms, id, kind});
  std::push_heap(heap_.begin(), heap_.end(), Later);
}

bool TimerQueue::PopDue(uint64_t now_ms, TimerEntry& out) {
  if (heap_.empty() || heap_.front().when_ms > now_ms) return false;
  std::pop_heap(heap_.begin(), heap_.end(), Later);
  out = heap_.back();
  heap_.pop_back();
  return true;
}

}  // namespace tether::coap
