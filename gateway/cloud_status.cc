#include "gateway/cloud_status.h"

#include <cstdlib>

#include "store/boot_clock.h"

namespace tether {

CloudStatus::Change CloudStatus::Set(bool connected, std::optional<int64_t> offset_ms) {
  const int64_t anchor = store::WallClockMs() - store::BootTimeMs();
  std::optional<int64_t> boot_offset;
  if (offset_ms) boot_offset = *offset_ms + anchor;
  // The same estimate read again differs by the rounding of the two clocks: not a change.
  if (boot_offset && boot_offset_ms_ && std::llabs(*boot_offset - *boot_offset_ms_) <= 2) {
    boot_offset = boot_offset_ms_;
  }
  Change c;
  c.changed = connected != connected_ || boot_offset != boot_offset_ms_;
  c.came_back = connected && !connected_;
  connected_ = connected;
  if (boot_offset != boot_offset_ms_) wall_anchor_ms_ = anchor;
  boot_offset_ms_ = boot_offset;
  return c;
}

int64_t CloudStatus::CloudNowMs() const {
  return boot_offset_ms_ ? store::BootTimeMs() + *boot_offset_ms_ : store::WallClockMs();
}

std::optional<int64_t> CloudStatus::offset_ms() const {
  if (!boot_offset_ms_) return std::nullopt;
  int64_t anchor = store::WallClockMs() - store::BootTimeMs();
  // Reading the two clocks one after the other jitters by a millisecond: only a step counts.
  if (std::llabs(anchor - wall_anchor_ms_) <= 2) anchor = wall_anchor_ms_;
  return *boot_offset_ms_ - anchor;
}

}  // namespace tether
