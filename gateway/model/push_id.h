// PushIdGenerator: Firebase push ids, chronologically ordered 20-character keys.
//
// 8 characters encode the millisecond timestamp (most significant first) in the alphabet
// -0-9A-Z_a-z (ASCII order, so ids sort by time), 12 random characters follow; when the timestamp
// repeats (or goes backwards) the previous random part is incremented by one instead, so every id
// from one generator sorts after the one before it. Timestamps are the gateway's estimate of
// cloud time, as Firebase clients do.
#pragma once

#include <array>
#include <cstdint>
#include <string>

namespace tether {

class PushIdGenerator {
 public:
  std::string Next(int64_t cloud_now_ms);
  // Milliseconds encoded in the first 8 characters; -1 if id is not a push id.
  static int64_t TimestampOf(const std::string& id);

 private:
  int64_t last_ms_ = -1;
  std::array<uint8_t, 12> last_rand_{};
};

}  // namespace tether
