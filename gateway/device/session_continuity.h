// SessionContinuity: which live sessions a newly opened session continues, and the heartbeat
// history a device carries from one session to the next.
//
// Why: the Wilddog SDK keeps its ping timer running across re-authentication, goOffline/goOnline
// and /.rst, so the first ping of a new session can come a whole interval after the previous one.
// Steering (HeartbeatPolicy) must judge it against that previous ping: answered 2.05, a late ping
// grows the SDK's interval past the session timeout and a live device is declared gone. And a
// device that re-authenticates is alive: the onDisconnect operations of the session it leaves
// behind must move to the new one, not run (the SDK never registers them again by itself).
//
// Who continues whom (same app, same transport):
// - a device with a stable id (listed token, HMAC token, DTLS identity, open-mode token that is a
//   valid key): its live sessions, wherever they are bound;
// - an anonymous device: the anonymous sessions bound to the address the new session comes from;
//   and, only within kEvidenceMs after the gateway itself did not answer (a stall of its loop, a
//   restart: HostLinksUntil), which is when the SDK re-authenticates after 3 unanswered requests:
//   the one whose short token a request from that address carried within kEvidenceMs while the
//   session was bound elsewhere (after 10 s without answers the SDK moves to a new source port and
//   keeps sending its old .cs), else the one session whose token came from another port of the
//   same IP in that time, if only one did (the SDK may open the new session from yet another
//   port; two or more: nothing is linked). Outside that window a short-lived client that gets a
//   port another one used, or shares its IP, must not take a session over. Knowing the token is
//   the proof; a forged source address alone proves nothing for a device with a stable id.
//   Anonymous devices that share an IP (NAT, several SDK processes on one host) can be linked
//   wrongly in that window: devices that need exact presence should present auth tokens.
// Never across identities: a POST /.cs as another device leaves a session alone.
//
// Memory: the last ping of each ended session (by device id; anonymous ones by address) for the
// device's next session; at most kMaxRemembered entries, the oldest go first, each forgotten after
// kRememberMs. Loop thread only; times are the loop clock in ms.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "device_proto/address.h"
#include "device_proto/expiring_map.h"
#include "gateway/device/session_table.h"

namespace tether {

class SessionContinuity {
 public:
  static constexpr int64_t kEvidenceMs = 60'000;
  static constexpr int64_t kRememberMs = 24 * 3'600'000LL;
  static constexpr size_t kMaxRemembered = 65'536, kMaxEvidence = 65'536;

  SessionContinuity();

  // A request from `from` carried the short token of `s`, which is bound to another address.
  void NoteTokenFrom(SessionTable& table, const Session& s, const coap::Address& from, int64_t now_ms);
  // `s` ended (timeout, goOffline, kick): its device's next session inherits its last ping.
  void NoteEnded(const Session& s, int64_t now_ms);

  // The gateway did not answer for a while (stall, restart): until `until_ms`, an anonymous device
  // may be followed by the token it showed from another port (see above).
  void HostLinksUntil(int64_t until_ms) { host_links_until_ms_ = until_ms; }
  // The live sessions in `table` that a new session of (app, device) opened from `from` continues.
  std::vector<Session*> Predecessors(SessionTable& table, const std::string& app, const std::string& device,
                                     bool anonymous, const coap::Address& from, int64_t now_ms);
  // The last ping of that device's most recent ended session; 0 if none is remembered.
  int64_t RememberedPing(const std::string& app, const std::string& device, bool anonymous,
                         const coap::Address& from, int64_t now_ms);

  size_t remembered() const { return pings_.size(); }
  uint64_t evictions() const { return pings_.evictions() + evidence_.evictions() + host_evidence_.evictions(); }

 private:
  static std::string Key(const std::string& app, const std::string& device, bool anonymous,
                         const coap::Address& addr);
  struct HostEvidence {
    std::string session_id;
    bool ambiguous = false;  // tokens of two sessions came from this IP
  };
  static coap::Address Host(coap::Address a) { return a.port = 0, a; }
  coap::ExpiringMap<std::string, int64_t, std::hash<std::string>> pings_;
  coap::ExpiringMap<coap::Address, std::string, coap::AddressHash> evidence_;  // ip:port -> session id
  coap::ExpiringMap<coap::Address, HostEvidence, coap::AddressHash> host_evidence_;  // ip -> session
  int64_t host_links_until_ms_ = 0;
};

}  // namespace tether
