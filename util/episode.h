// Episode: how long something has been going on (writes shed, datagrams dropped by the kernel),
// counting pauses up to `pause_ms` as part of it. /readyz and tetherctl status report such spans.
//
// Thread: none; one owner on one thread (in tetherd: the loop thread).
// Clock: one monotonic millisecond clock (uv_now), whose readings are never 0.
// Invariants:
// - LastedMs(now) is nullopt iff nothing was noted, or the last Note was over pause_ms before now.
// - Otherwise it is now minus the first Note after the last pause longer than pause_ms.
#pragma once

#include <cstdint>
#include <optional>

namespace tether::util {

class Episode {
 public:
  explicit constexpr Episode(uint64_t pause_ms) : pause_ms_(pause_ms) {}

  // It happened at `now`: the episode goes on, or a new one starts after a longer pause.
  void Note(uint64_t now) {
    if (!Ongoing(now)) first_ms_ = now;
    last_ms_ = now;
  }
  std::optional<uint64_t> LastedMs(uint64_t now) const {
    if (!Ongoing(now)) return std::nullopt;
    return now - first_ms_;
  }

 private:
  bool Ongoing(uint64_t now) const { return last_ms_ != 0 && now - last_ms_ <= pause_ms_; }

  uint64_t pause_ms_;
  uint64_t first_ms_ = 0, last_ms_ = 0;  // 0: never noted
};

}  // namespace tether::util
