#include "gateway/device/stored_session.h"

#include <algorithm>
#include <climits>

#include "gateway/device/session_liveness.h"
#include "store/entry_age.h"

namespace tether {

store::SessionRecord ToRecord(const Session& s, int64_t timeout_ms, int64_t now) {
  store::SessionRecord r;
  r.session_id = s.id;
  r.app_id = s.app;
  r.device_id = s.device;
  r.short_token = s.tokens.short_token();
  r.long_token = s.tokens.long_token();
  r.bound_address = s.addr.to_string();
  r.created_ms = s.created_wall_ms;
  r.heartbeat_timeout_ms = timeout_ms;
  SetCheckpoint(&r, s, now, store::ClockNow());
  return r;
}

Session FromRecord(const store::SessionRecord& r, int64_t now, const store::ClockReading& clock,
                   const RestoredCredential& credential_of) {
  Session s;
  s.id = r.session_id;
  s.app = r.app_id;
  s.device = r.device_id;
  if (coap::Address addr = coap::Address::Parse(r.bound_address); addr.family != 0) s.addr = addr;
  s.anonymous = AnonymousId(r.device_id);
  s.tokens = SessionTokens(r.short_token, r.long_token, credential_of(s));
  s.created_wall_ms = r.created_ms;
  s.last_seen_ms = now;  // undated: a full timeout to come back after the gateway restart
  // The last ping the store recorded (the session's first, or all at a graceful stop): an older
  // one only makes the first ping after the restart look later (steered: harmless).
  if (r.last_ping_ms) {
    store::EntryAge seen = store::AgeOf(store::ClockReading{r.last_seen_ms, r.last_seen_boottime_ms, r.boot_id}, clock);
    const int64_t ping_age = seen.ms ? *seen.ms + std::max<int64_t>(0, r.last_seen_ms - r.last_ping_ms) : INT64_MAX / 4;
    s.last_ping_ms = std::max<int64_t>(1, now - ping_age);  // undatable: long ago
  }
  s.checkpointed_ping_ms = r.last_ping_ms;
  return s;
}

bool AnonymousId(const std::string& device) { return device.rfind("anon-", 0) == 0; }

}  // namespace tether
