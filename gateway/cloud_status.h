// CloudStatus: what the device side knows of the cloud — whether it answers, and the estimate of
// its clock — and the push ids made from that clock.
//
// Thread: loop thread only. Ownership: DeviceApi owns it; the notifier (.info) and the session
// keeper (onDisconnect operations fired) read it. No failure paths: without an estimate, cloud
// time is the local wall clock.
//
// Invariants:
// - The offset is kept against CLOCK_BOOTTIME, so wall clock steps leave cloud time right.
// - Estimates within 2 ms of the one held are the same estimate (the two clocks read one after
//   the other jitter by a millisecond): Set() reports no change for them.
#pragma once

#include <cstdint>
#include <optional>
#include <string>

#include "gateway/push_id.h"

namespace tether {

class CloudStatus {
 public:
  struct Change {
    bool changed = false;    // connected or the estimate differ from before
    bool came_back = false;  // the cloud answers again
  };
  // Link state and clock estimate (cloud ms - local wall ms; nullopt: none).
  Change Set(bool connected, std::optional<int64_t> offset_ms);

  bool connected() const { return connected_; }
  int64_t CloudNowMs() const;
  std::optional<int64_t> offset_ms() const;  // cloud - local wall clock, now
  // A push id for cloud time cloud_now_ms (one generator: ids sort in the order they were made).
  std::string NextPushId(int64_t cloud_now_ms) { return push_ids_.Next(cloud_now_ms); }

 private:
  bool connected_ = false;
  std::optional<int64_t> boot_offset_ms_;  // cloud - CLOCK_BOOTTIME
  int64_t wall_anchor_ms_ = 0;             // wall - CLOCK_BOOTTIME when it was last set
  PushIdGenerator push_ids_;
};

}  // namespace tether
