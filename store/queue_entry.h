// QueueEntry: one device write waiting to be uploaded to the cloud, and its dead-letter form.
#pragma once

#include <cstdint>
#include <optional>
#include <string>

namespace tether::store {

// kConditionalSet: payload {"expect": value the device based it on, "value": new value (null =
// remove)}; uploaded only while the cloud still holds "expect" (ETag / if-match).
enum class OpKind : uint8_t {
  kSet = 1, kUpdate = 2, kPush = 3, kRemove = 4, kIncrementUpdate = 5, kConditionalSet = 6
};

struct QueueEntry {
  uint64_t seq = 0;       // assigned by the store at commit: global, strictly increasing, never reused
  std::string route;      // upload route name; per-route order is seq order
  std::string device_id;
  OpKind kind = OpKind::kSet;
  std::string path;       // data path the write targets (its first segment pins the DataTree root)
  std::string payload;    // opaque JSON text
  int64_t wall_ms = 0;    // CLOCK_REALTIME at the device write (see entry_age.h for how age is told)
  int64_t boottime_ms = 0;  // CLOCK_BOOTTIME at the device write
  std::string boot_id;      // /proc/sys/kernel/random/boot_id of that boot
  std::optional<int64_t> cloud_offset_ms;  // estimated cloud clock - wall clock, if known
};

// An entry moved out of its queue because the cloud refused it for good.
struct DeadLetter {
  QueueEntry entry;      // entry.seq is its original queue seq; dead letters are keyed by it
  std::string reason;
  int http_status = 0;
  int64_t dead_at_ms = 0;
};

// Per-route counters, persisted in the same transaction as the change they count.
struct RouteQueueStats {
  std::string route;
  uint64_t depth = 0;           // entries queued
  uint64_t bytes = 0;           // sum of encoded entry sizes
  uint64_t dropped_oldest = 0;  // deleted by the kDropOldest policy
  uint64_t expired = 0;         // deleted by TTL sweeps
  uint64_t ttl_age_unknown = 0; // kept by the latest TTL sweep because their age cannot be trusted
  uint64_t rejected = 0;        // appends refused by the kReject policy
  uint64_t dead_lettered = 0;   // moved to dead letters (ever)
  uint64_t dead_depth = 0;      // dead letters currently held for this route
  std::optional<int64_t> oldest_wall_ms;  // wall_ms of the head entry (filled by Stats())
  std::optional<int64_t> oldest_age_ms;   // its age now (entry_age.h); nullopt if empty or unknown
};

}  // namespace tether::store
