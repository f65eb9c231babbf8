// A device session as the store keeps it (store::SessionRecord), both ways: the record written
// when a session is confirmed or its observations change, and the Session rebuilt from it at a
// restart (SessionKeeper::RestoreSessions).
//
// Pure functions of their arguments; loop thread (they read no shared state). Nothing fails: an
// unreadable stored address leaves the session unbound (family 0) until it shows its token, and
// a last ping that cannot be dated is taken as long ago.
#pragma once

#include <cstdint>
#include <functional>
#include <string>

#include "gateway/device/session_table.h"
#include "store/boot_clock.h"
#include "store/session_record.h"

namespace tether {

// The record of s as of `now` (loop clock), without observations (SessionKeeper adds them).
store::SessionRecord ToRecord(const Session& s, int64_t timeout_ms, int64_t now);

// The credential fingerprint a restored session's tokens carry, asked of the caller with the
// session's ids, address and anonymity filled in (the record does not keep one).
using RestoredCredential = std::function<std::string(const Session&)>;

// The session a record describes as of `now` (loop clock) = `clock`: ids, tokens (with
// credential_of's fingerprint), address, whether it is anonymous, creation time, and its last
// ping dated through the record's clocks. Its last datagram is taken as `now` (a full timeout to
// come back); the caller dates it better when it can (the liveness file).
Session FromRecord(const store::SessionRecord& r, int64_t now, const store::ClockReading& clock,
                   const RestoredCredential& credential_of);

// Anonymous devices get generated ids with this prefix (open apps never take it from a token).
bool AnonymousId(const std::string& device);

}  // namespace tether
