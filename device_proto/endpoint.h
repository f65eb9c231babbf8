// A CoAP (RFC 7252/7641/7959) server endpoint on a caller's libuv loop.
// Knows nothing about the application: requests go up through Handler,
// answers come back through Respond()/RespondObserve()/Notify().
// All calls must be made on the loop's thread. Work per datagram is O(1):
// peers, exchanges, duplicates and observers live in hash maps, and every
// timer is an entry in one heap driven by one uv_timer.
//
// Hostile LAN rules (docs/operations.md, "Security model"):
// - The peer table holds at most max_peers addresses. A peer is *verified* once it proved it
//   receives what is sent to it: a DTLS peer (its handshake did), or a peer the handler vouches
//   for with VerifyPeer() (tetherd: a request carrying a session token from the session's
//   address). A new address that finds the table full evicts the least recently active
//   unverified peer with nothing pending; verified peers are never pushed out by unverified ones.
// - Notifications: at most one confirmable notification outstanding per peer (NSTART = 1).
//   While it is, each observation's newest state waits and rides the retransmission timer in
//   place of the older one (RFC 7641 §4.5.2), so a dead observer gets at most
//   con_notify_every - 1 NONs, then 1 + max_retransmit copies, and the observation ends
//   (DropReason::kTimeout). A peer not heard from for probe_after_ms gets its next
//   notification as a CON (a probe), so NONs to a silent peer stop until it answers.
#pragma once

#include <uv.h>

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <span>
#include <string_view>
#include <vector>

#include "device_proto/address.h"
#include "device_proto/dtls_server.h"
#include "device_proto/message.h"

namespace tether::coap {

using ExchangeId = uint64_t;  // 0 is never a valid id
using ObserverId = uint64_t;  // 0 is never a valid id

struct EndpointOptions {
  size_t max_datagram = 1280;            // nothing larger is ever sent
  uint32_t ack_timeout_ms = 2000;
  double ack_random_factor = 1.5;
  unsigned max_retransmit = 4;
  uint32_t exchange_lifetime_ms = 247000;  // duplicate window; idle peers evicted after it
  uint32_t non_lifetime_ms = 145000;
  uint32_t separate_ack_after_ms = 1000;   // unanswered CON: empty ACK, then CON response
  uint32_t response_timeout_ms = 60000;    // unanswered exchanges are forgotten after this
  size_t max_peers = 200000;              // addresses; unverified ones are evicted first (above)
  unsigned con_notify_every = 20;          // every Nth notification is CON ...
  uint32_t con_notify_interval_ms = 60000; // ... and at least one per interval ...
  uint32_t probe_after_ms = 10000;         // ... and every one to a peer silent this long
  size_t max_block1_body = 64 * 1024;
  size_t dedup_max_entries = 400000;
  size_t dedup_max_bytes = 64u << 20;
  size_t block_cache_max_bytes = 16u << 20;
  uint32_t block_cache_lifetime_ms = 60000;
};

struct Counters {
  uint64_t datagrams_in = 0, datagrams_out = 0, bytes_in = 0, bytes_out = 0;
  uint64_t requests = 0, malformed = 0, duplicates = 0, retransmissions = 0;
  uint64_t con_timeouts = 0, resets_in = 0, send_errors = 0;
  uint64_t peers_rejected = 0;  // datagrams dropped: table full and no unverified peer could go
  uint64_t peers_evicted = 0;   // unverified peers forgotten to make room for a new address
  uint64_t too_large = 0;  // 4.13 sent instead of blocks the client did not ask for
  uint64_t notifications = 0;             // notification datagrams sent (first transmissions)
  uint64_t notifications_superseded = 0;  // states replaced by a newer one before they were sent
  uint64_t observers_timed_out = 0;       // observations ended: a CON notification never acknowledged
  uint64_t peers = 0, peers_verified = 0, observers = 0, exchanges = 0, dedup_entries = 0;  // gauges
  // The kernel's side of the sockets (SO_MEMINFO), read when counters() is called:
  // - receive_dropped: datagrams the kernel dropped because a socket's receive queue was full, i.e.
  //   the loop read slower than they came. Nothing else sees them: not the engine, not a handler.
  // - receive_buffer_bytes: the receive buffers' size as the kernel granted it (net.core.rmem_max
  //   caps what OpenSocket asks for).
  uint64_t receive_dropped = 0, receive_buffer_bytes = 0;
};

struct Request {
  ExchangeId id;
  const Address& peer;
  const Message& message;             // valid only during OnRequest
  std::span<const uint8_t> payload;   // whole body (Block1 reassembled)
  std::string_view identity;          // DTLS PSK identity (peer.secure); empty over plain UDP
  bool peer_verified = false;         // see Endpoint::VerifyPeer (always true over DTLS)

  uint8_t method() const { return message.code; }
  std::string_view uri_host() const;  // empty if absent
  std::vector<std::string_view> uri_path() const;
  std::vector<std::string_view> uri_queries() const;
  std::optional<uint32_t> observe() const { return message.UintOption(opt::kObserve); }
  std::optional<uint32_t> content_format() const { return message.UintOption(opt::kContentFormat); }
  std::optional<uint32_t> accept() const { return message.UintOption(opt::kAccept); }
};

struct Response {
  uint8_t code = code::kContent;
  std::span<const uint8_t> payload;  // copied by the engine
  std::optional<uint16_t> content_format;
  std::optional<uint32_t> max_age;
  std::optional<uint32_t> size1 = std::nullopt;  // e.g. the accepted body size on a 4.13 (RFC 7959 §2.9.3)
};

// Why the engine ended an observation on its own (CancelObserver and error
// notifications end it without a callback). kTooLarge: a notification did not
// fit one datagram and the client cannot take blocks; it got a 4.13 instead.
enum class DropReason { kReset, kTimeout, kReplaced, kTooLarge };

// An observation as the wire knows it. RestoreObserver() re-creates one from
// it, e.g. after a restart; `resource` is opaque (it matches the client's
// later Block2 requests for the same resource).
struct ObserverState {
  Address peer;
  uint32_t socket = 0;
  Token token;
  uint32_t seq = 0;  // last Observe value sent (24 bits)
  uint64_t resource = 0;
  bool unasked_blocks = false;  // see Endpoint::AllowUnaskedBlocks
};

class Handler {
 public:
  virtual ~Handler() = default;
  virtual void OnRequest(const Request& request) = 0;
  virtual void OnActivity(const Address&) {}  // every well-formed datagram; keep it cheap
  virtual void OnObserverDropped(ObserverId, DropReason) {}
  // A separate CON response was never acknowledged (or was reset). An observation it was
  // registering is dropped and reported through OnObserverDropped instead.
  virtual void OnResponseFailed(ExchangeId) {}
};

class Endpoint {
 public:
  Endpoint(uv_loop_t* loop, Handler& handler, EndpointOptions options = {});
  // Closes sockets and the timer; run the loop once more to release them.
  ~Endpoint();
  Endpoint(const Endpoint&) = delete;
  Endpoint& operator=(const Endpoint&) = delete;

  // Binds a numeric IPv4 or IPv6 address; port 0 picks one. 0 or a uv error.
  int Listen(const char* ip, uint16_t port);
  // The same, for CoAP over DTLS 1.2 PSK (RFC 7252 §9): peers on this socket have
  // Address::secure set and their requests carry the PSK identity. max_datagram is the endpoint's.
  // Throws std::runtime_error when mbedTLS cannot be set up.
  int ListenDtls(const char* ip, uint16_t port, DtlsOptions options, PskLookup psk);
  uint16_t LocalPort(size_t socket_index = 0) const;

  // Answers an exchange, synchronously inside OnRequest or later. False if
  // the exchange is unknown (already answered or timed out).
  // A body over one datagram goes out as Block2 blocks (RFC 7959) if the client
  // asked for blocks or AllowUnaskedBlocks() was called for the exchange;
  // otherwise the answer is 4.13 with a diagnostic, so a client that cannot
  // reassemble (the Wilddog SDK) never gets a truncated body.
  bool Respond(ExchangeId id, const Response& response);
  // Leaves the exchange unanswered and forgets it: nothing is sent for it, not even the empty ACK
  // of a slow answer, and its retransmissions are ignored like any duplicate. For requests a
  // server refuses to spend an answer on (rate limits: an unverified source gets nothing back).
  void Ignore(ExchangeId id);
  // The client of `id` reassembles Block2 although it did not ask (RFC 7959 §2.2
  // lets the server start blocks). An observation it registers inherits this
  // for its notifications; without it a notification that outgrows one
  // datagram ends the observation with a 4.13 (DropReason::kTooLarge).
  void AllowUnaskedBlocks(ExchangeId id);
  // Answers a GET and registers the peer+token as an observer (replacing any
  // with the same token, which is reported as kReplaced). Returns 0 if the
  // exchange is unknown, if the code is not 2.xx, or if the body needs blocks
  // the client cannot take (4.13, see respond): then it is a plain answer.
  ObserverId RespondObserve(ExchangeId id, const Response& response);
  // Sends a notification; a non-2.xx code ends the observation. False if unknown.
  bool Notify(ObserverId id, const Response& response);
  void CancelObserver(ObserverId id);  // no callback, nothing sent
  std::optional<ObserverState> ObserverStateOf(ObserverId id) const;
  // Registers an observation without a request; its next notification carries
  // Observe seq+1. Replaces one with the same peer+token (no callback).
  ObserverId RestoreObserver(const ObserverState& state);
  // The client moved (NAT rebinding, new socket): notifications and the CON in
  // flight go to `to` from now on. False if the observer is unknown (or `to`
  // is a new peer and the peer table is full).
  bool MoveObserver(ObserverId id, const Address& to);

  // The request `id` starts a new binding of its peer's address (e.g. a fresh
  // session): requests received before it are no longer duplicates, so a
  // client that reuses an old message ID and token is answered afresh.
  // Retransmissions of `id` itself are still recognised.
  void NewBinding(ExchangeId id);

  // `peer` proved it receives what is sent to it (e.g. it used a token sent only to that
  // address): the peer table keeps it when unverified addresses flood in. Costs one lookup;
  // Request::peer_verified says whether it is needed. Idle peers still age out (exchange_lifetime).
  void VerifyPeer(const Address& peer);

  Counters counters() const;
  DtlsCounters dtls_counters() const;  // summed over DTLS sockets
  // How long the kernel has been dropping datagrams for want of room in a receive queue (looked
  // at each second, at housekeeping), without a pause longer than kReceiveDropPauseMs; nullopt when
  // not. It means the loop reads slower than datagrams arrive.
  std::optional<uint64_t> receive_dropping_for_ms() const;
  static constexpr uint64_t kReceiveDropPauseMs = 2000;

  // Test seams. HandleDatagram processes bytes as if received on socket
  // `socket_index` (ciphertext on a DTLS socket); with a transmit hook set, every
  // datagram goes to the hook instead of a socket (ciphertext for DTLS peers).
  // RunTimers fires every timer due now. With a clock set, "now" is its value
  // (ms; it starts at or after uv_now() and never goes back) instead of uv_now().
  void HandleDatagram(size_t socket_index, const Address& from, std::span<const uint8_t> bytes);
  using TransmitHook = std::function<void(const Address&, std::span<const uint8_t>)>;
  void set_transmit_hook(TransmitHook hook);
  void SetClock(std::function<uint64_t()> clock);
  void RunTimers();

  struct Impl;

 private:
  std::unique_ptr<Impl> impl_;
};

}  // namespace tether::coap
