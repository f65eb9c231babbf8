#include "gateway/model/push_id.h"

#include <sys/random.h>

#include <cstring>

namespace tether {

namespace {
constexpr char kAlphabet[] = "-0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ_abcdefghijklmnopqrstuvwxyz";
}

std::string PushIdGenerator::Next(int64_t cloud_now_ms) {
  if (cloud_now_ms > last_ms_) {
    uint8_t buf[12];
    if (getrandom(buf, sizeof buf, 0) != static_cast<ssize_t>(sizeof buf)) std::memset(buf, 0, sizeof buf);
    for (size_t i = 0; i < 12; ++i) last_rand_[i] = buf[i] & 63;
    last_ms_ = cloud_now_ms;
  } else {
    // Same (or earlier) millisecond: keep the timestamp and count the random part up.
    int i = 11;
    while (i >= 0 && last_rand_[i] == 63) last_rand_[i--] = 0;
    if (i >= 0) ++last_rand_[i];
  }
  std::string id(20, ' ');
  int64_t t = last_ms_;
  for (int i = 7; i >= 0; --i) {
    id[i] = kAlphabet[t % 64];
    t /= 64;
  }
  for (size_t i = 0; i < 12; ++i) id[8 + i] = kAlphabet[last_rand_[i]];
  return id;
}

int64_t PushIdGenerator::TimestampOf(const std::string& id) {
  if (id.size() != 20) return -1;
  int64_t t = 0;
  for (int i = 0; i < 8; ++i) {
    const char* p = std::strchr(kAlphabet, id[i]);
    if (!p || !*p) return -1;
    t = t * 64 + (p - kAlphabet);
  }
  return t;
}

}  // namespace tether
