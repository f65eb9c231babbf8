#include "store/boot_clock.h"

#include <time.h>

#include <fstream>

namespace tether::store {
namespace {

int64_t ClockMs(clockid_t id) {
  timespec ts{};
  clock_gettime(id, &ts);
  return static_cast<int64_t>(ts.tv_sec) * 1000 + ts.tv_nsec / 1'000'000;
}

}  // namespace

int64_t WallClockMs() { return ClockMs(CLOCK_REALTIME); }
int64_t BootTimeMs() { return ClockMs(CLOCK_BOOTTIME); }

ClockReading ClockNow() { return ClockReading{WallClockMs(), BootTimeMs(), BootId()}; }

const std::string& BootId() {
  static const std::string id = [] {
    std::ifstream in("/proc/sys/kernel/random/boot_id");
    std::string s;
    std::getline(in, s);
    return s;
  }();
  return id;
}

}  // namespace tether::store
