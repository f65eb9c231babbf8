#include "store/entry_age.h"

namespace tether::store {

EntryAge AgeOf(const QueueEntry& e, const ClockReading& now) {
  return AgeOf(ClockReading{e.wall_ms, e.boottime_ms, e.boot_id}, now);
}

EntryAge AgeOf(const ClockReading& then, const ClockReading& now) {
  if (!then.boot_id.empty() && then.boot_id == now.boot_id && now.boottime_ms >= then.boottime_ms) {
    return EntryAge{now.boottime_ms - then.boottime_ms, false};
  }
  if (!PlausibleWall(then.wall_ms)) return EntryAge{std::nullopt, true};
  if (!PlausibleWall(now.wall_ms) || now.wall_ms < then.wall_ms) return EntryAge{std::nullopt, false};
  return EntryAge{now.wall_ms - then.wall_ms, false};
}

}  // namespace tether::store
