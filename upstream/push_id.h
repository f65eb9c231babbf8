// PushId: Firebase-style 20-char ids ordered by time, then by generation order.
// Not thread-safe: one generator per writer thread.
#pragma once
#include <array>
#include <cstdint>
#include <random>
#include <string>

namespace tether::upstream {

class PushId {
 public:
  PushId();
  // Id for `now_ms` (cloud time). Ids from one generator sort strictly increasing when now_ms
  // does not go backwards; a repeated (or older) timestamp increments the random tail.
  std::string next(int64_t now_ms);

 private:
  int64_t last_ms_ = -1;
  std::array<uint8_t, 12> tail_{};  // indices into the alphabet
  std::mt19937_64 rng_;
};

}  // namespace tether::upstream
