// BootClock: the three clocks recorded with every queued write.
#pragma once

#include <cstdint>
#include <string>

namespace tether::store {

int64_t WallClockMs();            // CLOCK_REALTIME
int64_t BootTimeMs();             // CLOCK_BOOTTIME (counts suspend, restarts at boot)
const std::string& BootId();      // /proc/sys/kernel/random/boot_id, read once; "" if unavailable

}  // namespace tether::store
