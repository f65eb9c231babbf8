// BootClock: the three clocks recorded with every queued write.
#pragma once

#include <cstdint>
#include <string>

namespace tether::store {

int64_t WallClockMs();            // CLOCK_REALTIME
int64_t BootTimeMs();             // CLOCK_BOOTTIME (counts suspend, restarts at boot)
const std::string& BootId();      // /proc/sys/kernel/random/boot_id, read once; "" if unavailable

// One reading of all three, as stored with a queue entry and as "now" for the TTL sweep.
struct ClockReading {
  int64_t wall_ms = 0;
  int64_t boottime_ms = 0;
  std::string boot_id;
};
ClockReading ClockNow();

}  // namespace tether::store
