// DeviceApiCounters: what the device side counts, read by the admin API (/metrics, tetherctl).
// One instance, owned by DeviceApi; DeviceApi, the session keeper and the notifier each write
// their own fields on the loop thread; DeviceApi::counters() hands out a copy.
#pragma once

#include <cstdint>
#include <map>
#include <string>

namespace tether {

struct DeviceApiCounters {
  uint64_t sessions_opened = 0, sessions_ended = 0, detections = 0, go_offline = 0;
  uint64_t heartbeats = 0, steered_pings = 0, ondisconnect_fired = 0, ondisconnect_denied = 0;
  uint64_t writes = 0, writes_rejected = 0, notifications = 0, auth_failures = 0;
  // Compare-and-set writes refused locally (4.12) / found conflicting in the cloud at upload.
  uint64_t cas_refused = 0, transaction_conflicts = 0;
  uint64_t writes_refused_store_full = 0;  // requests answered 5.03 because the store is full
  uint64_t writes_shed = 0;  // writes answered 5.03 because commits were late (device.max_write_wait)
  // Separate (CON) responses the device never acknowledged; observations restored at startup;
  // snapshot reads / encodings done for notifications (one per observed path / distinct view).
  uint64_t responses_failed = 0, observers_restored = 0, notify_reads = 0, notify_encodes = 0;
  // Sessions a device's new session continued (its onDisconnect operations moved on, none ran);
  // loop stalls noticed and their total length (given back to every session's timeout).
  uint64_t sessions_continued = 0, loop_stalls = 0, loop_stalled_ms = 0;
  // Per-session caps: registrations refused (4.03) by device.max_observers_per_session,
  // max_ondisconnect_per_session and max_ondisconnect_bytes_per_session.
  uint64_t observers_refused = 0, ondisconnect_refused_count = 0, ondisconnect_refused_bytes = 0;
  // Reloads: sessions ended because their credential is gone (their onDisconnect operations
  // discarded, not run), and observations ended with 4.03 because the routes no longer allow them.
  uint64_t sessions_revoked = 0, ondisconnect_discarded = 0, observations_revoked = 0;
  std::map<std::string, uint64_t> requests;  // "GET 2.05" -> count (DeviceApi::counters() fills it)
  // Token refusals (4.01/4.00 for a token the request cannot use), by TokenRefusal; [0] answered,
  // [1] dropped unanswered over device.auth_failures_per_second for the source IP.
  uint64_t token_refusals[4][2] = {};
  // POST /.cs left unanswered: over device.opens_per_second for the source IP / another open of the
  // same device already waiting. Unconfirmed sessions (Session::confirmed) dropped: evicted for
  // room / silent past the session timeout.
  uint64_t opens_rate_limited = 0, opens_busy = 0, unconfirmed_evicted = 0, unconfirmed_expired = 0;
  uint64_t auth_log_suppressed = 0;  // failed-authentication log lines folded into a count
};

// Why a request's token was refused (the index of DeviceApiCounters::token_refusals).
enum class TokenRefusal { kUnknownSession, kBoundElsewhere, kBadAuthToken, kUnknownLongToken };

}  // namespace tether
