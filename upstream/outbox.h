// Outbox: the durable queue the uploader drains, one ordered sequence per route.
// The store implements it; upstream never owns the ops. Calls happen on the uploader's loop thread.
#pragma once
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace tether::upstream {

struct OutboundOp {
  // Conditional: json = {"expect": v0, "value": v1}; set v1 only while the cloud holds v0.
  enum class Kind { Set, Update, Push, Remove, Conditional };
  uint64_t seq = 0;            // strictly increasing within a route
  std::string route;           // route name; its cloud root is configured separately
  Kind kind = Kind::Set;
  std::string path;            // relative to the route root, '/'-separated, no leading '/'
  std::string json;            // payload (ignored for Remove); Push: path already ends in the key
  // Cloud time substituted for {".sv":"timestamp"}; nullopt: left for the cloud to resolve
  // (its time on arrival).
  std::optional<int64_t> event_time_ms = 0;
  bool exactly_once = false;   // not idempotent (holds {".sv":{"increment":n}}): see DrainerOptions
  // JSON sent as auth_variable_override (the cloud's rules see it as `auth`, "null" = an
  // unauthenticated client); empty: the gateway's own credential. Ops with different values
  // never share a request.
  std::string auth_override{};
  // Database path `path` is relative to; nullopt: the route's RouteTarget::root. One Peek()
  // returns ops of one root only (e.g. writes accepted under an older cloud pattern go first).
  std::optional<std::string> root = std::nullopt;
};

class Outbox {
 public:
  virtual ~Outbox() = default;
  // Up to `max` oldest unconfirmed ops of `route`, in seq order. Must not return ops already
  // passed to Confirmed() or DeadLetter().
  virtual std::vector<OutboundOp> Peek(const std::string& route, size_t max) = 0;
  // Every op of `route` with seq <= up_to_seq reached the cloud; delete them.
  virtual void Confirmed(const std::string& route, uint64_t up_to_seq) = 0;
  // The cloud rejected `op` permanently; keep it aside and remove it from the queue.
  virtual void DeadLetter(const OutboundOp& op, int http_status, std::string reason) = 0;
  // A Conditional op lost: the cloud holds `cloud_value`, not what the op expected. The op is
  // settled (remove it from the queue); the local copy should take the cloud's value.
  virtual void Conflict(const OutboundOp& op, const std::string& cloud_value_json) = 0;
};

}  // namespace tether::upstream
