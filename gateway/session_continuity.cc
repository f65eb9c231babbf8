#include "gateway/session_continuity.h"

#include <algorithm>

namespace tether {

namespace {
constexpr size_t kMaxBytes = 16u << 20;  // per map; entries are ~100-200 bytes
}

SessionContinuity::SessionContinuity()
    : pings_(kMaxRemembered, kMaxBytes, kRememberMs), evidence_(kMaxEvidence, kMaxBytes, kEvidenceMs) {}

std::string SessionContinuity::Key(const std::string& app, const std::string& device, bool anonymous,
                                   const coap::Address& addr) {
  // An anonymous device's generated id is new with every session: its address is all that stays.
  return app + '\0' + (anonymous ? "@" + addr.to_string() : device);
}

void SessionContinuity::NoteTokenFrom(const Session& s, const coap::Address& from, int64_t now_ms) {
  evidence_.expire(static_cast<uint64_t>(now_ms));
  if (std::string* id = evidence_.find(from); id && *id == s.id) return;  // already noted
  evidence_.insert(from, s.id, coap::heap_bytes(s.id), static_cast<uint64_t>(now_ms));
}

void SessionContinuity::NoteEnded(const Session& s, int64_t now_ms) {
  if (!s.last_ping_ms) return;
  pings_.expire(static_cast<uint64_t>(now_ms));
  std::string key = Key(s.app, s.device, s.anonymous, s.addr);
  const size_t extra = coap::heap_bytes(key);
  pings_.insert(key, s.last_ping_ms, extra, static_cast<uint64_t>(now_ms));
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
  evidence_.expire(static_cast<uint64_t>(now_ms));
  if (const std::string* id = evidence_.find(from)) {
    Session* s = table.ById(*id);
    if (s && same_kind(s) && std::find(out.begin(), out.end(), s) == out.end()) out.push_back(s);
  }
  return out;
}

int64_t SessionContinuity::RememberedPing(const std::string& app, const std::string& device, bool anonymous,
                                          const coap::Address& from, int64_t now_ms) {
  pings_.expire(static_cast<uint64_t>(now_ms));
  const int64_t* at = pings_.find(Key(app, device, anonymous, from));
  return at ? *at : 0;
}

}  // namespace tether
