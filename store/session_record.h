// SessionRecord / OnDisconnectOp: persisted device session state. The gateway owns the meaning.
#pragma once

#include <cstdint>
#include <string>

namespace tether::store {

struct SessionRecord {
  std::string session_id;
  std::string app_id;
  std::string device_id;
  std::string short_token;  // 8 chars; unique across sessions (secondary index)
  std::string long_token;   // 32 chars; unique across sessions (secondary index)
  std::string bound_address;
  int64_t created_ms = 0;
  int64_t heartbeat_timeout_ms = 0;
  // Liveness checkpoint (the live values are kept in memory by the gateway and written every few
  // seconds): the wall clock and CLOCK_BOOTTIME of the last datagram, the boot those belong to,
  // and the wall clock of the last ping (0: none yet). Fields added after `observers` read back
  // as 0 / empty from records of older versions.
  int64_t last_seen_ms = 0;
  // The session's observations in the gateway's own encoding (empty: none). Opaque to the store;
  // records written before this field existed read back with it empty.
  std::string observers;
  int64_t last_seen_boottime_ms = 0;
  std::string boot_id;
  int64_t last_ping_ms = 0;
};

// A write registered to run when its session ends. Kept in registration order.
struct OnDisconnectOp {
  enum class Kind : uint8_t { kSet = 1, kPush = 2, kUpdate = 3, kRemove = 4 };
  Kind kind = Kind::kSet;
  std::string path;
  std::string payload;  // JSON text
  uint64_t order = 0;   // assigned by the store; registration order across the whole store
};

}  // namespace tether::store
