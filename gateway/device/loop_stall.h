// LoopStallDetector: notices that the event loop did not run for a while (SIGSTOP, a VM pause,
// CPU starvation, a long blocking call) from the gaps between its observations of the loop clock.
//
// The liveness tick observes at least every `period_ms`, so a gap longer than `threshold_ms`
// between two observations means the loop was stalled; the stall is the gap minus one period.
// Used by DeviceApi so that the time a stall lasted counts as nobody's silence. Loop thread only.
#pragma once

#include <cstdint>

namespace tether {

class LoopStallDetector {
 public:
  LoopStallDetector(int64_t period_ms, int64_t threshold_ms) : period_ms_(period_ms), threshold_ms_(threshold_ms) {}

  // Returns the length of the stall that ended at this observation, 0 if none.
  int64_t Observe(int64_t now_ms) {
    int64_t stalled = 0;
    if (observed_ && now_ms - last_ms_ > threshold_ms_) {
      stalled = now_ms - last_ms_ - period_ms_;
      ++stalls_;
      stalled_ms_ += stalled;
    }
    if (!observed_ || now_ms > last_ms_) last_ms_ = now_ms;
    observed_ = true;
    return stalled;
  }
  // Forgets the last observation (after startup work that is not a stall of running service).
  void Reset() { observed_ = false; }

  uint64_t stalls() const { return stalls_; }
  int64_t stalled_ms() const { return stalled_ms_; }

 private:
  int64_t period_ms_, threshold_ms_;
  bool observed_ = false;
  int64_t last_ms_ = 0;
  uint64_t stalls_ = 0;
  int64_t stalled_ms_ = 0;
};

}  // namespace tether
