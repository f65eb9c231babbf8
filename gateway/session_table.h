// SessionTable: the live device sessions of one gateway, indexed for every request.
//
// Lookups by short token (every request carries .cs=), long token (/.rst) and bound address (any
// datagram is a sign of life) are O(1). Liveness: Touch() only stamps last_seen; a heap of
// deadlines is re-checked lazily in Expired(), so a busy session costs one heap push per timeout
// period, not one per datagram. Owned and used by the loop thread only.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <queue>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "device_proto/address.h"

namespace tether {

struct Session {
  std::string id;           // store key; random, never reused
  std::string app;
  std::string device;
  std::string short_token;  // 8 chars, carried as .cs= on every request
  std::string long_token;   // 32 chars, proves ownership for /.rst
  coap::Address addr;       // replies and liveness are tied to this address
  int64_t created_wall_ms = 0;
  int64_t last_seen_ms = 0;  // monotonic
  int64_t last_ping_ms = 0;  // monotonic; 0 before the first ping
  uint32_t notified_since_checkpoint = 0;  // notifications since its record was last written
};

class SessionTable {
 public:
  explicit SessionTable(int64_t timeout_ms) : timeout_ms_(timeout_ms) {}

  // Adds a session (its tokens must be unused); its deadline is last_seen_ms + timeout.
  Session& Add(Session s);
  void Reserve(size_t n);  // room for n sessions without rehashing (restoring after a restart)
  void Remove(const std::string& id);
  void Rebind(Session& s, const coap::Address& addr);

  Session* ById(const std::string& id);
  Session* ByShortToken(std::string_view token);
  Session* ByLongToken(std::string_view token);
  bool ShortTokenInUse(std::string_view t) const { return by_short_.count(std::string(t)) > 0; }

  // Ids of the sessions bound to addr (O(1) in the number of sessions).
  std::vector<std::string> IdsAt(const coap::Address& addr) const;
  // Every session bound to addr counts the datagram as a sign of life.
  void Touch(const coap::Address& addr, int64_t now_ms);

  // Ids of sessions silent for at least the timeout at now_ms. They stay in the table until
  // Remove(); calling again before that does not report them twice.
  std::vector<std::string> Expired(int64_t now_ms);

  size_t size() const { return by_id_.size(); }
  int64_t timeout_ms() const { return timeout_ms_; }
  void ForEach(const std::function<void(const Session&)>& fn) const;

 private:
  struct Deadline {
    int64_t at_ms;
    std::string id;
    bool operator>(const Deadline& o) const { return at_ms > o.at_ms; }
  };
  int64_t timeout_ms_;
  std::unordered_map<std::string, std::unique_ptr<Session>> by_id_;
  std::unordered_map<std::string, Session*> by_short_;
  std::unordered_map<std::string, Session*> by_long_;
  std::unordered_map<coap::Address, std::vector<Session*>, coap::AddressHash> by_addr_;
  std::priority_queue<Deadline, std::vector<Deadline>, std::greater<>> deadlines_;
};

}  // namespace tether
