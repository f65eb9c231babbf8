// SessionTable: the live device sessions of one gateway, indexed for every request.
//
// Lookups by id, short token (every request carries .cs=), long token (/.rst), bound address (any
// datagram is a sign of life) and device identity (a device re-opening its session) are O(1).
// Liveness: Touch() only stamps last_seen; a heap of deadlines is re-checked lazily in Expired(),
// so a busy session costs one heap move per timeout period, not one per datagram.
// Owned and used by the loop thread only. Times are the loop's clock (uv_now) in ms.
//
// Memory (what an idle device costs, docs/operations.md "Sizing"): each session is one heap
// object; the five indexes are SessionIndex tables of pointers keyed by views into it (no key
// copies), and the deadline heap holds one 16-byte entry per session.
//
// Invariants:
// - A session is in the deadline heap at most once; its entry's time is never later than its
//   deadline max(last_seen + timeout, expire_not_before) (Touch and ShiftForStall leave it early;
//   Expired() moves it to the real deadline when it comes up). A session Expired() reported is
//   not in the heap until it is removed.
// - Sessions of anonymous devices (no stable id) are not in the identity index.
// - A session's id, tokens, app, device and anonymous flag do not change after Add(); its
//   address changes only through Rebind().
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "device_proto/address.h"
#include "gateway/device/session_index.h"
#include "gateway/device/session_tokens.h"

namespace tether {

struct Session {
  std::string id;           // store key; random, never reused
  std::string app;
  std::string device;
  // Short token: 8 chars, carried as .cs= on every request. Long token: 32 chars, proves
  // ownership for /.rst. Credential: DeviceAuthenticator::Fingerprint of the auth token that
  // opened it (empty over DTLS, and for restored sessions of apps other than hmac): a reload ends
  // the session when it no longer opens. One heap block for the three (memory per idle device).
  SessionTokens tokens;
  coap::Address addr;       // replies and liveness are tied to this address
  int64_t created_wall_ms = 0;
  int64_t last_seen_ms = 0;  // loop clock; a loop stall is given back (ShiftForStall)
  // Loop clock of the device's previous ping, carried over from its earlier sessions (the SDK's
  // ping timer runs across them); 0: none known.
  int64_t last_ping_ms = 0;
  // Restored after a restart: not declared gone before this (loop clock), whatever last_seen
  // says; 0: no floor. The first datagram clears it.
  int64_t expire_not_before_ms = 0;
  // The last ping its store record holds (0: none); the record gets the first one at once.
  int64_t checkpointed_ping_ms = 0;
  // onDisconnect operations up to this store order came from the sessions it continued; a new
  // registration at a path replaces those at and below it (a rebooted device registers again).
  uint64_t carried_through_order = 0;
  // The first of its observations (a coap::ObserverId; 0: none); ObserverRegistry links the rest
  // through them. The registry's, not part of the session's record.
  uint64_t first_observer = 0;
  uint32_t notified_since_checkpoint = 0;  // notifications since its record was last written
  uint32_t liveness_slot = UINT32_MAX;  // in the LivenessFile; UINT32_MAX: none
  bool anonymous = false;   // the device gave no usable id: `device` is generated ("anon-...")
  // False from a POST /.cs over plain UDP until its device uses it (a request with its token from
  // its address, or /.rst with its long token): a spoofed source never does. Such a session is
  // kept in memory only (no store record, no liveness slot, no onDisconnect operations) and the
  // oldest go first beyond device.max_unconfirmed_sessions (docs/operations.md, "Security model").
  bool confirmed = true;
};

class SessionTable {
 public:
  explicit SessionTable(int64_t timeout_ms) : timeout_ms_(timeout_ms) {}
  ~SessionTable();
  SessionTable(const SessionTable&) = delete;
  SessionTable& operator=(const SessionTable&) = delete;

  // Adds a session (its tokens must be unused).
  Session& Add(Session s);
  void Reserve(size_t n);  // room for n sessions without rehashing (restoring after a restart)
  void Remove(const std::string& id);
  void Rebind(Session& s, const coap::Address& addr);

  Session* ById(const std::string& id);
  Session* ByShortToken(std::string_view token);
  Session* ByLongToken(std::string_view token);
  bool ShortTokenInUse(std::string_view t) const { return by_short_.Find(t) != nullptr; }
  // Sessions bound to addr / of a device with a stable id (empty when none).
  std::vector<Session*> ByAddress(const coap::Address& addr) const;
  std::vector<Session*> ByIdentity(const std::string& app, const std::string& device) const;

  // Every session bound to addr counts the datagram as a sign of life. Returns them (null: none);
  // the list is valid until the next call of Touch(addr, ...).
  const std::vector<Session*>* Touch(const coap::Address& addr, int64_t now_ms);
  void Touch(Session& s, int64_t now_ms);  // a sign of life that names the session (its token)

  // The loop did not run for stalled_ms: that time does not count as anyone's silence (deadlines
  // move; last pings do not, see the .cc).
  void ShiftForStall(int64_t stalled_ms);

  // Whether some deadline may have passed at now_ms (cheap; Expired() decides).
  bool MaybeDue(int64_t now_ms) const { return !heap_.empty() && heap_.front().at_ms <= now_ms; }
  // Ids of sessions whose deadline passed at now_ms. They stay in the table until Remove();
  // calling again before that does not report them twice.
  std::vector<std::string> Expired(int64_t now_ms);

  size_t size() const { return by_id_.size(); }
  int64_t timeout_ms() const { return timeout_ms_; }
  void ForEach(const std::function<void(const Session&)>& fn) const;
  void ForEachMutable(const std::function<void(Session&)>& fn);

 private:
  // A session and its place in the deadline heap (Session's tail padding has room for it).
  struct Node : Session {
    explicit Node(Session&& s) : Session(std::move(s)) {}
    static constexpr uint32_t kNotQueued = UINT32_MAX;
    uint32_t heap_pos = kNotQueued;
  };
  struct Deadline {
    int64_t at_ms;
    Node* node;
  };
  struct IdKey {
    using Key = std::string_view;
    static Key KeyOf(const Session& s) { return s.id; }
    static size_t Hash(Key k) { return std::hash<std::string_view>{}(k); }
  };
  struct ShortKey : IdKey {
    static Key KeyOf(const Session& s) { return s.tokens.short_token(); }
  };
  struct LongKey : IdKey {
    static Key KeyOf(const Session& s) { return s.tokens.long_token(); }
  };
  struct AddrKey {
    using Key = coap::Address;
    static const Key& KeyOf(const Session& s) { return s.addr; }
    static size_t Hash(const Key& k) { return coap::AddressHash{}(k); }
  };
  struct IdentityKey {
    using Key = std::pair<std::string_view, std::string_view>;  // app, device
    static Key KeyOf(const Session& s) { return {s.app, s.device}; }
    static size_t Hash(const Key& k) {
      const size_t a = std::hash<std::string_view>{}(k.first);
      return a ^ (std::hash<std::string_view>{}(k.second) + 0x9E3779B97F4A7C15ull + (a << 6) + (a >> 2));
    }
  };

  int64_t DeadlineOf(const Session& s) const;
  // The deadline heap: a binary min-heap by at_ms whose entries know their node (heap_pos).
  void HeapPush(Node* n, int64_t at_ms);
  void HeapErase(Node* n);
  void HeapSet(size_t pos, Deadline d);
  void SiftUp(size_t pos);
  void SiftDown(size_t pos);

  int64_t timeout_ms_;
  SessionIndex<IdKey> by_id_;  // owns the nodes
  SessionIndex<ShortKey> by_short_;
  SessionIndex<LongKey> by_long_;
  SessionIndex<AddrKey> by_addr_;
  SessionIndex<IdentityKey> by_identity_;
  std::vector<Deadline> heap_;
  std::vector<Session*> touched_;  // Touch(addr)'s answer
};

}  // namespace tether
