// EntryAge: how long ago a queued write was made, from the clocks recorded with it.
//
// Rule (TTL sweeps and queue ages use it):
// - Same boot (the entry's boot id is non-empty and equals now's, and CLOCK_BOOTTIME is not
//   behind the entry's): age = now.boottime - entry.boottime. Wall-clock steps in between (NTP
//   setting an RTC-less box from 1970, a manual `date`, a backward step) do not change it.
// - Another boot (CLOCK_BOOTTIME restarted): age = now.wall - entry.wall, but only when both wall
//   readings are plausible (at or after kPlausibleWallMs) and now.wall is not before entry.wall.
// - Otherwise the age is unknown. Nothing may be decided on an unknown age: the TTL keeps such an
//   entry (and counts it) and uploads it like any other.
// `settled`: an unknown age stays unknown whatever later clocks say (the entry's wall reading is
// implausible and its boot is over); otherwise a later plausible wall clock can resolve it.
#pragma once

#include <cstdint>
#include <optional>

#include "store/boot_clock.h"
#include "store/queue_entry.h"

namespace tether::store {

inline constexpr int64_t kPlausibleWallMs = 1'704'067'200'000;  // 2024-01-01T00:00:00Z

inline bool PlausibleWall(int64_t wall_ms) { return wall_ms >= kPlausibleWallMs; }

struct EntryAge {
  std::optional<int64_t> ms;  // nullopt: the age cannot be trusted
  bool settled = false;       // meaningful when ms is nullopt; see above
};

EntryAge AgeOf(const QueueEntry& e, const ClockReading& now);
// The same rule for any recorded reading (a session's liveness checkpoint).
EntryAge AgeOf(const ClockReading& then, const ClockReading& now);

}  // namespace tether::store
