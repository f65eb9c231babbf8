// The clocks are read through a 64-bit timespec even where time_t is 32 bits (Debian 12 armhf):
// glibc >= 2.34 gives a translation unit 64-bit time with _TIME_BITS=64 (which needs
// _FILE_OFFSET_BITS=64), and a 32-bit time_t clock_gettime fails with EOVERFLOW from
// 2038-01-19T03:14:08Z on. The macros stay local to this file: no time_t crosses its interface
// (int64 milliseconds do), and it includes no C++ library header whose layout depends on them.
#define _FILE_OFFSET_BITS 64
#define _TIME_BITS 64

#include "store/boot_clock.h"

#include <fcntl.h>
#include <time.h>
#include <unistd.h>

namespace tether::store {
namespace {

static_assert(sizeof(timespec{}.tv_sec) == 8, "the clocks need a 64-bit time_t here");

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
    std::string s;
    int fd = open("/proc/sys/kernel/random/boot_id", O_RDONLY | O_CLOEXEC);
    if (fd < 0) return s;
    char buf[64];
    ssize_t n = read(fd, buf, sizeof buf);
    close(fd);
    if (n > 0) s.assign(buf, static_cast<size_t>(n));
    while (!s.empty() && (s.back() == '\n' || s.back() == '\r')) s.pop_back();
    return s;
  }();
  return id;
}

}  // namespace tether::store
