#include "gateway/device/session_continuity.h"

#include <algorithm>

namespace tether {

namespace {
constexpr size_t kMaxBytes = 16u << 20;  // per map; entries are ~100-200 bytes
}

SessionContinuity::SessionContinuity()
    : pings_(kMaxRemembered, kMaxBytes, kRememberMs),
      evidence_(kMaxEvidence, kMaxBytes, kEvidenceMs),
      host_evidence_(kMaxEvidence, kMaxBytes, kEvidenceMs) {}

std::string SessionContinuity::Key(const std::string& app, const std::string& device, bool anonymous,
                                   const coap::Address& addr) {
  // An anonymous device's generated id is new with every session: its address is all that stays.
  // (Appended piecewise: GCC 12 at -O3 reads `"@" + std::string&&` as an overlapping memcpy and
  // -Werror=restrict stops the Release build.)
  std::string key = app;
  key += '\0';
  if (anonymous) {
    key += '@';
    key += addr.to_string();
  } else {
    key += device;
  }
  return key;
}

void SessionContinuity::NoteTokenFrom(SessionTable& table, const Session& s, const coap::Address& from,
                                      int64_t now_ms) {
  const uint64_t now = static_cast<uint64_t>(now_ms);
  evidence_.Expire(now);
  host_evidence_.Expire(now);
  if (std::string* id = evidence_.Find(from); !id || *id != s.id) {
    evidence_.Insert(from, s.id, coap::HeapBytes(s.id), now);
  }
  HostEvidence* host = host_evidence_.Find(Host(from));
  if (!host) {
    host_evidence_.Insert(Host(from), HostEvidence{s.id, false}, coap::HeapBytes(s.id), now);
  } else if (host->session_id != s.id && !host->ambiguous) {
    // Another live session's token came from this IP too: two devices there, or two sessions of
    // one; either way the IP no longer says which. (The first may have been continued: then not.)
    const bool both_live = table.ById(host->session_id) != nullptr;
    HostEvidence next{both_live ? host->session_id : s.id, both_live};  // renewed for a whole window
    host_evidence_.Insert(Host(from), std::move(next), coap::HeapBytes(s.id), now);
  }
}

void SessionContinuity::NoteEnded(const Session& s, int64_t now_ms) {
  if (!s.last_ping_ms) return;
  pings_.Expire(static_cast<uint64_t>(now_ms));
  std::string key = Key(s.app, s.device, s.anonymous, s.addr);
  const size_t extra = coap::HeapBytes(key);
  pings_.Insert(key, s.last_ping_ms, extra, static_cast<uint64_t>(now_ms));
}

std::vector<Session*> SessionContinuity::Predecessors(SessionTable& table, const std::string& app,
                                                      const std::string& device, bool anonymous,
                                                      const coap::Address& from, int64_t now_ms) {
  std::vector<Session*> out;
  auto same_kind = [&](const Session* s) {
    return s->app == app && s->addr.secure == from.secure && s->anonymous == anonymous;
  };
  if (!anonymous) {
    for (Session* s : table.ByIdentity(app, device)) {
      if (same_kind(s)) out.push_back(s);
    }
    return out;
  }
  for (Session* s : table.ByAddress(from)) {
    if (same_kind(s)) out.push_back(s);
  }
  // Beyond the same address only while devices may be re-authenticating because the gateway did
  // not answer them: otherwise a short-lived client that gets a port another one used (ephemeral
  // ports are reused within seconds) or shares the IP would take a session over.
  if (!out.empty() || now_ms > host_links_until_ms_) return out;
  evidence_.Expire(static_cast<uint64_t>(now_ms));
  host_evidence_.Expire(static_cast<uint64_t>(now_ms));
  Session* seen = nullptr;
  if (const std::string* id = evidence_.Find(from)) {
    seen = table.ById(*id);
  } else if (const HostEvidence* host = host_evidence_.Find(Host(from)); host && !host->ambiguous) {
    seen = table.ById(host->session_id);
  }
  if (seen && same_kind(seen)) out.push_back(seen);
  return out;
}

int64_t SessionContinuity::RememberedPing(const std::string& app, const std::string& device, bool anonymous,
                                          const coap::Address& from, int64_t now_ms) {
  pings_.Expire(static_cast<uint64_t>(now_ms));
  const int64_t* at = pings_.Find(Key(app, device, anonymous, from));
  return at ? *at : 0;
}

}  // namespace tether
