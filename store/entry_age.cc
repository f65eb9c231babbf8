#include "store/entry_age.h"

namespace tether::store {

EntryAge AgeOf(const QueueEntry& e, const ClockReading& now) {
  if (!e.boot_id.empty() && e.boot_id == now.boot_id && now.boottime_ms >= e.boottime_ms) {
    return EntryAge{now.boottime_ms - e.boottime_ms, false};
  }
  if (!PlausibleWall(e.wall_ms)) return EntryAge{std::nullopt, true};
  if (!PlausibleWall(now.wall_ms) || now.wall_ms < e.wall_ms) return EntryAge{std::nullopt, false};
  return EntryAge{now.wall_ms - e.wall_ms, false};
}

}  // namespace tether::store
