#include "gateway/clock.h"

#include <sys/random.h>
#include <time.h>

#include <fstream>
#include <stdexcept>

namespace tether {

namespace {
int64_t Ms(clockid_t id) {
  timespec ts;
  clock_gettime(id, &ts);
  return static_cast<int64_t>(ts.tv_sec) * 1000 + ts.tv_nsec / 1'000'000;
}
}  // namespace

int64_t WallNowMs() { return Ms(CLOCK_REALTIME); }
int64_t BootTimeNowMs() { return Ms(CLOCK_BOOTTIME); }

const std::string& BootId() {
  static const std::string id = [] {
    std::ifstream in("/proc/sys/kernel/random/boot_id");
    std::string s;
    std::getline(in, s);
    return s;
  }();
  return id;
}

std::string RandomToken(size_t n) {
  static const char kAlpha[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
  std::string out;
  while (out.size() < n) {
    unsigned char buf[64];
    ssize_t got = getrandom(buf, sizeof buf, 0);
    if (got <= 0) throw std::runtime_error("getrandom failed");
    for (ssize_t i = 0; i < got && out.size() < n; ++i) {
      if (buf[i] < 248) out += kAlpha[buf[i] % 62];  // 248 = 4 * 62: no modulo bias
    }
  }
  return out;
}

}  // namespace tether
