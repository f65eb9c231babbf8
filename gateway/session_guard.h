// SessionGuard: who may open a device session, and how often one source may try.
//
// Holds the apps' authenticators and the DTLS identities' key lookup, the per-source-IP limits on
// opens and on token refusals (device.opens_per_second, device.auth_failures_per_second), and the
// failed-authentication log, folded to one line a second on a LAN under attack.
//
// Thread: loop thread only. Ownership: the session keeper owns it. Failure: SetRoutes throws
// ConfigError for an app secret it cannot read and then changes nothing; everything else answers
// yes or no.
//
// Invariants:
// - Over DTLS the PSK identity is the device id; a reload that removes its key leaves its
//   connection able to open nothing, and ends its session (CredentialValid).
// - A session is valid while the configuration in force would open it again: its app exists and
//   still accepts its credential (for hmac apps, the fingerprint of the token that opened it).
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <string_view>

#include "device_proto/source_rate_limiter.h"
#include "gateway/device_auth.h"
#include "gateway/device_counters.h"
#include "gateway/route_table.h"
#include "gateway/session_table.h"

namespace tether {

class SessionGuard {
 public:
  explicit SessionGuard(DeviceApiCounters& counters) : counters_(counters) {}

  void SetRoutes(const RouteTable& routes);
  void SetPskKnown(std::function<bool(std::string_view identity)> known) { psk_known_ = std::move(known); }
  size_t max_unconfirmed() const { return max_unconfirmed_; }

  // False when the source IP is over its rate (now: the loop clock).
  bool TakeOpen(const coap::Address& peer, int64_t now) { return opens_.Take(peer, now); }
  bool TakeRefusal(const coap::Address& peer, int64_t now) { return refusals_.Take(peer, now); }
  // The device a POST /.cs authenticates (over DTLS: its PSK identity, if it still has a key).
  AuthOutcome Authenticate(const std::string& app, const std::string& payload, const coap::Address& peer,
                           const std::string& identity) const;
  // What a restored session of an hmac app is taken to have been opened with (see device_auth.h).
  std::string RestoredFingerprint(const std::string& app, const std::string& device) const;
  // False when the configuration in force would not open s again.
  bool CredentialValid(const Session& s, const RouteTable& routes) const;
  // At most one line per kAuthLogEveryMs; the rest are counted and summed up in one line.
  void LogAuthFailure(const coap::Address& peer, const std::string& app, int64_t now);
  void FlushAuthLog(int64_t now);  // the summary line, once its second is over

 private:
  DeviceApiCounters& counters_;
  std::map<std::string, std::unique_ptr<DeviceAuthenticator>> auth_;  // app id (or Config::kAnyApp)
  std::function<bool(std::string_view)> psk_known_;
  coap::SourceRateLimiter opens_, refusals_;
  size_t max_unconfirmed_ = 4096;
  int64_t auth_logged_at_ms_ = INT64_MIN / 2;  // loop clock of the last failed-auth line
  uint64_t auth_log_suppressed_ = 0;           // lines not written since
};

}  // namespace tether
