// Internal state of Endpoint, shared by endpoint*.cc and observe.cc. Not a
// public header: the contract is endpoint.h. All state is owned by Impl and
// touched only on the loop thread. Invariants:
// - A peer's `refs` counts the exchanges, observers and CONs in flight that name it; only
//   peers with refs == 0 are evicted (idle, or unverified to make room).
// - Every peer is in exactly one recency list: `lru_verified` or `lru_unverified`.
// - `slots` holds an entry for a peer only while a CON notification to it is outstanding or an
//   observer of it has a state waiting; an observer is in its peer's `waiting` iff its
//   `waiting` flag is set, and then `pending` holds the state to send.
#pragma once

#include <sys/socket.h>

#include <array>
#include <list>
#include <optional>
#include <random>
#include <string>
#include <unordered_map>

#include "device_proto/endpoint.h"
#include "device_proto/expiring_map.h"
#include "device_proto/timer_queue.h"
#include "util/episode.h"
#include "util/uv_handle.h"

namespace tether::coap {

struct MidKey {
  Address peer;
  uint16_t mid;
  bool operator==(const MidKey&) const = default;
};
// noexcept: libstdc++ then stores no hash code in each node (8 bytes per dedup entry); rehashing
// recomputes it instead, which is cheap for 22 bytes of key.
struct MidKeyHash {
  size_t operator()(const MidKey& k) const noexcept { return AddressHash{}(k.peer) * 31 + k.mid; }
};

struct TokenKey {
  Address peer;
  Token token;
  bool operator==(const TokenKey&) const = default;
};
struct TokenKeyHash {
  size_t operator()(const TokenKey& k) const {
    size_t h = AddressHash{}(k.peer);
    for (uint8_t i = 0; i < k.token.len; ++i) h = h * 131 + k.token.bytes[i];
    return h;
  }
};

// Identifies a resource as seen by one peer: address + a 64-bit hash of
// Uri-Host/Path/Query (+ method for Block1 uploads). Finds cached Block2
// bodies and Block1 uploads without allocating per request.
struct ResourceKey {
  Address peer;
  uint64_t uri_hash = 0;
  bool operator==(const ResourceKey&) const = default;
};
struct ResourceKeyHash {
  size_t operator()(const ResourceKey& k) const {
    return AddressHash{}(k.peer) ^ static_cast<size_t>(k.uri_hash * 0x9E3779B97F4A7C15ull);
  }
};

ResourceKey ResourceKeyOf(const Address& peer, const Message& m, bool with_method);

// Sets the type and message ID of an encoded message in place (a notification is encoded
// before it is known when, and so as what, it leaves).
inline void Stamp(std::span<uint8_t> bytes, Type type, uint16_t mid) {
  bytes[0] = static_cast<uint8_t>((bytes[0] & 0xCF) | (static_cast<uint8_t>(type) << 4));
  bytes[2] = static_cast<uint8_t>(mid >> 8);
  bytes[3] = static_cast<uint8_t>(mid);
}

constexpr size_t kRecvChunk = 64 * 1024;   // libuv's recvmmsg slot size
constexpr size_t kRecvSlots = 8;           // datagrams per recvmmsg batch
constexpr size_t kRecvBufferBytes = 4u << 20;  // asked of SO_RCVBUF; the kernel may grant less
constexpr uint32_t kHousekeepingMs = 1000;

struct Peer {
  uint16_t socket = 0;    // index into the endpoint's sockets (it binds a handful)
  uint16_t next_mid = 0;
  // The request that opened the peer's current binding (NewBinding) while its reply may still be
  // cached: the peer's next new request releases that reply (see ForgetOpener).
  uint16_t opener_mid = 0;
  bool opener_cached = false;
  bool verified = false;  // DTLS, or vouched for by the handler: never evicted to make room
  uint32_t refs = 0;      // exchanges, observers and CONs in flight that name this peer
  uint32_t binding = 0;   // bumped by NewBinding(): older dedup entries no longer match
  uint64_t last_seen_ms = 0;
  std::list<Address>::iterator lru;  // in lru_verified or lru_unverified
};

static_assert(sizeof(Peer) == 32, "a peer per device: keep it small");

// Looked at from the least recently active end when a new address finds the table full: the
// first unverified peer with refs == 0 goes; busy ones are moved to the front. Bounded so a
// table of busy peers costs a new address little.
constexpr int kEvictScan = 16;

struct Exchange {
  Address peer;
  uint32_t socket;
  uint16_t mid;
  Token token;
  bool con;
  bool ack_sent = false;
  std::optional<Block> block2;        // requested by the client
  std::optional<Block> block1_echo;   // final Block1 of a reassembled body
  ResourceKey resource;               // for caching Block2 bodies
  bool unasked_blocks = false;        // may start Block2 without a Block2 request
  bool answered_afresh = false;       // a GET: see AnsweredAfresh()
  bool has_dedup = false;             // its dedup entry was made (a GET's only if it outlived the upcall)
};

// RFC 7252 §4.5: a retransmitted GET may be processed again rather than answered from a cache.
// - Such a request keeps a dedup entry only while it is pending (a retransmission then gets the
//   empty ACK, never a second upcall); one answered in its upcall never makes one.
// - Answered 2.xx, it keeps nothing: a device's pings and reads cost no cached replies.
// - Answered otherwise, its reply is kept as any other: an error may hang on state the request
//   itself changed (a ping steered 4.01 for being late would, processed again 2 s later, be on
//   time), and errors are rare.
// - Every other method, and a GET with Block1 (its upload state is not idempotent), keeps its
//   reply for EXCHANGE_LIFETIME: a repeated write could undo a later one.
// - Except the request that opened its peer's binding (NewBinding: a session's POST /.cs): its
//   answered reply goes at the peer's next new request in that binding. A client sends that only
//   once it has the reply (no session without it: the SDK pings right after opening), so it never
//   retransmits the opener after; an idle device then holds no cached reply. A stale copy of the
//   opener arriving later is a new request (the handler opens anew).
inline bool AnsweredAfresh(const Message& m) { return m.code == code::kGet && !m.Find(opt::kBlock1); }

// Largest members first: 56 bytes, not 64 with the token in front.
struct DedupEntry {
  std::string reply;        // bytes to replay; empty while the exchange is pending
  ExchangeId pending = 0;
  uint32_t binding = 0;     // the peer's binding when the request arrived
  Token token;
};

struct CachedBody {
  std::string body;
  uint8_t code = code::kContent;
  std::optional<uint16_t> content_format;
  std::optional<uint32_t> max_age;
  std::optional<uint32_t> size1;
};

// Encode() result when the body needs blocks that the client did not ask for
// and is not known to reassemble (Endpoint::AllowUnaskedBlocks).
constexpr size_t kNeedsBlocks = SIZE_MAX;

struct Upload {
  std::string body;  // bytes of blocks 0..k received in order
};

struct Outgoing {  // a CON we sent and retransmit until ACK/RST/give-up
  enum class Kind : uint8_t { kResponse, kNotification } kind;
  uint64_t owner;  // ExchangeId or ObserverId
  Address peer;
  uint32_t socket;
  uint16_t mid;
  unsigned attempts = 0;
  uint64_t timeout_ms;
  uint64_t next_at_ms;
  std::string bytes;
  // A notification whose newer state replaced these bytes at a retransmission still accepts an
  // ACK or RST for the message ID it had before (RFC 7641 §4.5.2).
  std::optional<uint16_t> prev_mid = std::nullopt;
};

struct Observer {
  Address peer;
  uint32_t socket;
  Token token;
  uint32_t seq;  // last Observe value assigned (24 bits)
  unsigned since_con = 0;  // transmissions since the last CON
  uint64_t last_con_ms;
  uint64_t inflight = 0;  // Outgoing id of the CON notification in flight
  ResourceKey resource;
  bool unasked_blocks = false;
  bool waiting = false;  // in slots[peer].waiting, with `pending` set
  std::string pending;   // the newest state, not sent yet: type and MID are set when it leaves
};

// NSTART = 1 for notifications (RFC 7252 §4.7, RFC 7641 §4.5.1): what one peer is waiting for.
struct PeerSlot {
  uint64_t con = 0;                 // Outgoing id of the CON notification outstanding; 0: none
  std::vector<ObserverId> waiting;  // observers with a state to send, oldest first
};

// Datagrams sent during one loop phase are queued per socket and leave in one sendmmsg(2) when
// the phase ends (uv_prepare before the loop may block, uv_check after I/O), or when the queue is
// full. The bytes are copied into `data`; nothing waits longer than the current loop iteration.
constexpr size_t kSendBatch = 32;

struct SendQueue {
  std::unique_ptr<uint8_t[]> data;  // kSendBatch slots of max_datagram bytes
  std::array<sockaddr_storage, kSendBatch> to;
  std::array<iovec, kSendBatch> iov;
  std::array<mmsghdr, kSendBatch> msgs;
  size_t count = 0;
};

// Connects a socket's DtlsServer to the endpoint: ciphertext to the socket, plaintext to the
// CoAP layer, timers into the endpoint's heap.
struct DtlsLink final : DtlsServer::Link {
  Endpoint::Impl* impl = nullptr;
  uint32_t socket = 0;
  void SendDatagram(const Address& to, std::span<const uint8_t> ciphertext) override;
  void OnPlaintext(const Address& from, std::string_view identity, std::span<const uint8_t> bytes) override;
  void Schedule(uint64_t when_ms, uint64_t token) override;
  uint64_t now_ms() const override;
};

struct SocketState {
  uv_udp_t handle;
  Endpoint::Impl* impl;
  uint32_t index;
  std::unique_ptr<char[]> buf;
  SendQueue out;
  size_t max_message = 0;  // largest CoAP message on this socket (smaller under DTLS)
  uint8_t max_szx = 0;     // largest Block2 size exponent that fits max_message
  std::unique_ptr<DtlsLink> dtls_link;  // set on a DTLS socket, with the server it feeds
  std::unique_ptr<DtlsServer> dtls;
};

struct Endpoint::Impl {
  Impl(uv_loop_t* l, Handler& h, EndpointOptions o)
      : loop(l), handler(h), opt(o),
        dedup(o.dedup_max_entries, o.dedup_max_bytes, o.exchange_lifetime_ms),
        bodies(1u << 20, o.block_cache_max_bytes, o.block_cache_lifetime_ms),
        uploads(1u << 20, o.block_cache_max_bytes, o.exchange_lifetime_ms),
        non_notifications(1u << 20, SIZE_MAX, o.non_lifetime_ms),
        rng(static_cast<uint32_t>(uv_hrtime())),
        scratch(o.max_datagram) {
    opt.max_datagram = std::max<size_t>(opt.max_datagram, 64);
    scratch.resize(opt.max_datagram);
    max_szx = 0;
    while (max_szx < 6 && (size_t{32} << max_szx) + 48 <= opt.max_datagram) ++max_szx;
    timer = util::UvTimer(loop, this);
    uv_unref(timer.handle());
    timers.Schedule(now() + kHousekeepingMs, TimerKind::kHousekeeping, 0);
    ArmTimer();
    flush_before_poll = util::UvHandle<uv_prepare_t>(loop, this, uv_prepare_init);
    flush_after_io = util::UvHandle<uv_check_t>(loop, this, uv_check_init);
    uv_prepare_start(flush_before_poll, [](uv_prepare_t* h) { static_cast<Impl*>(h->data)->FlushSends(); });
    uv_check_start(flush_after_io, [](uv_check_t* h) { static_cast<Impl*>(h->data)->FlushSends(); });
    uv_unref(flush_before_poll.handle());
    uv_unref(flush_after_io.handle());
  }

  ~Impl() {
    FlushSends();
    flush_before_poll.Close();
    flush_after_io.Close();
    for (SocketState* s : sockets) {
      uv_udp_recv_stop(&s->handle);
      uv_close(reinterpret_cast<uv_handle_t*>(&s->handle),
               [](uv_handle_t* h) { delete static_cast<SocketState*>(h->data); });
    }
    timer.Close();
  }

  uint64_t now() const { return clock ? clock() : uv_now(loop); }
  size_t MaxMessage(uint32_t socket) const {
    return socket < sockets.size() ? sockets[socket]->max_message : opt.max_datagram;
  }
  uint8_t SzxFor(uint32_t socket) const { return socket < sockets.size() ? sockets[socket]->max_szx : max_szx; }
  int OpenSocket(const char* ip, uint16_t port, SocketState*& out);

  // ---- transmit ----
  void Send(uint32_t socket, const Address& to, std::span<const uint8_t> bytes);  // a CoAP message
  void SendRaw(uint32_t socket, const Address& to, std::span<const uint8_t> bytes);  // a datagram
  void SendRst(uint32_t socket, const Address& to, uint16_t mid);
  void FlushSends();                       // every socket's SendQueue
  void Flush(SocketState& s);
  size_t Encode(uint32_t socket, Type type, uint16_t mid, const Token& token, const CachedBody& meta,
                std::span<const uint8_t> body, std::optional<uint32_t> observe,
                std::optional<Block> block2_req, std::optional<Block> block1_echo, const ResourceKey* cache_as,
                bool unasked_blocks = true);
  // The 4.13 sent instead of a body of `size` bytes that needs unasked-for blocks.
  size_t EncodeTooLarge(uint32_t socket, Type type, uint16_t mid, const Token& token, size_t size);
  void ReplyDirect(uint32_t socket, const Address& from, const Message& req, uint8_t code, std::string_view diag,
                    std::optional<Block> block1 = {}, std::optional<uint32_t> size1 = {}, bool cache = true);
  void StartCon(Outgoing::Kind kind, uint64_t owner, const Address& peer, uint32_t socket, uint16_t mid,
                 std::span<const uint8_t> bytes);
  // `registering`: the observer this answer registers (its CON, if any, is the observer's).
  bool Deliver(ExchangeId id, const Response& r, std::optional<uint32_t> observe, ObserverId registering = 0);

  // ---- receive ----
  void Receive(uint32_t socket, Address from, std::span<const uint8_t> bytes);  // from a socket
  void OnDatagram(uint32_t socket, const Address& from, std::span<const uint8_t> bytes);
  void OnRequest(uint32_t socket, const Address& from, Peer& peer);
  void ForgetOpener(const Address& from, Peer& peer);  // the peer sent a new request
  void OnAckOrReset(const Address& from, bool reset);
  bool HandleBlock1(uint32_t socket, const Address& from, std::string& body, std::optional<Block>& echo);

  // ---- state ----
  Peer* TouchPeer(const Address& from, uint32_t socket);  // nullptr: table full (counted)
  bool EvictUnverified();                                  // makes room for one peer
  void set_verified(Peer& p);
  void UnrefPeer(const Address& a);
  uint16_t NextMid(const Address& a);
  void DropObserver(ObserverId id, std::optional<DropReason> reason);
  void FinishExchange(ExchangeId id);

  // ---- notifications (observe.cc) ----
  // Sends `bytes` (an encoded notification; its type and MID are set here) as CON or NON.
  void TransmitNotification(ObserverId id, Observer& ob, std::span<uint8_t> bytes);
  // Forgets an Outgoing and its message IDs; frees the peer's slot if it held it.
  void EraseOutgoing(uint64_t out_id);
  // Sends waiting states to `peer` while no CON notification to it is outstanding.
  void DrainSlot(const Address& peer);
  void StopWaiting(ObserverId id, Observer& ob);  // leaves its peer's waiting list
  // A CON notification to `peer` was never acknowledged: its observer and every observer of the
  // peer with a state waiting end (kTimeout).
  void PeerTimedOut(const Address& peer, ObserverId owner);

  // ---- timers ----
  void ArmTimer();
  void RunTimers();
  bool Housekeeping();  // true if eviction stopped at its budget
  // SO_MEMINFO of every socket, summed: the kernel's drops (receive queue full) and buffer sizes.
  struct ReceiveQueues {
    uint64_t dropped = 0, buffer_bytes = 0;
  };
  ReceiveQueues ReadReceiveQueues() const;
  void WatchReceiveDrops(uint64_t t);  // at most once a second: the drop episode below
  void OnRetransmit(uint64_t out_id, uint64_t when);

  uv_loop_t* loop;
  Handler& handler;
  EndpointOptions opt;
  uint8_t max_szx;
  std::vector<SocketState*> sockets;
  util::UvHandle<uv_timer_t> timer;
  util::UvHandle<uv_prepare_t> flush_before_poll;
  util::UvHandle<uv_check_t> flush_after_io;
  bool timer_armed = false;
  uint64_t armed_at = 0;
  TimerQueue timers;
  TransmitHook hook;
  std::function<uint64_t()> clock;  // test seam; uv_now() when empty
  Counters stats;
  // The kernel's drops as last read (drops_seen), when (drops_read_ms: housekeeping may run every
  // 10 ms while it evicts), and the episode of readings that showed new drops.
  uint64_t drops_seen = 0, drops_read_ms = 0;
  util::Episode dropping{Endpoint::kReceiveDropPauseMs};

  std::unordered_map<Address, Peer, AddressHash> peers;
  std::list<Address> lru_verified, lru_unverified;  // front = most recently active
  size_t verified_count = 0;
  std::unordered_map<Address, PeerSlot, AddressHash> slots;
  std::unordered_map<ExchangeId, Exchange> exchanges;
  ExpiringMap<MidKey, DedupEntry, MidKeyHash> dedup;
  ExpiringMap<ResourceKey, CachedBody, ResourceKeyHash> bodies;
  ExpiringMap<ResourceKey, Upload, ResourceKeyHash> uploads;
  std::unordered_map<uint64_t, Outgoing> outgoing;
  std::unordered_map<MidKey, uint64_t, MidKeyHash> outgoing_by_mid;
  ExpiringMap<MidKey, ObserverId, MidKeyHash> non_notifications;
  std::unordered_map<ObserverId, Observer> observers;
  std::unordered_map<TokenKey, ObserverId, TokenKeyHash> observer_by_token;
  uint64_t last_id = 0;
  uint32_t last_binding = 0;
  std::minstd_rand rng;

  std::string_view identity;     // DTLS identity of the datagram being handled
  Message msg;                   // scratch: the datagram being handled
  std::vector<uint8_t> scratch;  // scratch: the datagram being built
};


}  // namespace tether::coap
