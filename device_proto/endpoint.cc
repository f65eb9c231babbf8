#include "device_proto/endpoint.h"

#include <algorithm>
#include <cstring>
#include <list>
#include <random>
#include <string>
#include <unordered_map>

#include "device_proto/expiring_map.h"
#include "device_proto/timer_queue.h"

namespace tether::coap {

std::string_view Request::uri_host() const {
  const Option* o = message.find(opt::kUriHost);
  return o ? o->str() : std::string_view{};
}

namespace {

std::vector<std::string_view> collect(const Message& m, uint16_t number) {
  std::vector<std::string_view> out;
  for (const Option& o : m.options)
    if (o.number == number) out.push_back(o.str());
  return out;
}

}  // namespace

std::vector<std::string_view> Request::uri_path() const { return collect(message, opt::kUriPath); }
std::vector<std::string_view> Request::uri_queries() const { return collect(message, opt::kUriQuery); }

namespace {

struct MidKey {
  Address peer;
  uint16_t mid;
  bool operator==(const MidKey&) const = default;
};
struct MidKeyHash {
  size_t operator()(const MidKey& k) const { return AddressHash{}(k.peer) * 31 + k.mid; }
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

ResourceKey resource_key(const Address& peer, const Message& m, bool with_method) {
  uint64_t h = 1469598103934665603ull;
  auto mix = [&](uint8_t b) { h = (h ^ b) * 1099511628211ull; };
  if (with_method) mix(m.code);
  for (const Option& o : m.options) {
    if (o.number != opt::kUriHost && o.number != opt::kUriPath && o.number != opt::kUriQuery) continue;
    mix(static_cast<uint8_t>(o.number));
    mix(static_cast<uint8_t>(o.value.size()));
    for (uint8_t b : o.value) mix(b);
  }
  return ResourceKey{peer, h};
}

constexpr size_t kRecvChunk = 64 * 1024;   // libuv's recvmmsg slot size
constexpr size_t kRecvSlots = 8;           // datagrams per recvmmsg batch
constexpr uint32_t kHousekeepingMs = 1000;

}  // namespace

struct Peer {
  uint32_t socket = 0;
  uint16_t next_mid = 0;
  uint32_t refs = 0;  // exchanges, observers and CONs in flight that name this peer
  uint64_t last_seen_ms = 0;
  std::list<Address>::iterator lru;
};

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
};

struct DedupEntry {
  Token token;
  std::string reply;        // bytes to replay; empty while the exchange is pending
  ExchangeId pending = 0;
};

struct CachedBody {
  std::string body;
  uint8_t code = code::kContent;
  std::optional<uint16_t> content_format;
  std::optional<uint32_t> max_age;
};

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
};

struct Observer {
  Address peer;
  uint32_t socket;
  Token token;
  uint32_t seq;  // last Observe value sent (24 bits)
  unsigned since_con = 0;
  uint64_t last_con_ms;
  uint64_t inflight = 0;  // Outgoing id of the CON notification in flight
  ResourceKey resource;
};

struct SocketState {
  uv_udp_t handle;
  Endpoint::Impl* impl;
  uint32_t index;
  std::unique_ptr<char[]> buf;
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
    timer = new uv_timer_t;
    uv_timer_init(loop, timer);
    timer->data = this;
    uv_unref(reinterpret_cast<uv_handle_t*>(timer));
    timers.schedule(now() + kHousekeepingMs, TimerKind::kHousekeeping, 0);
    arm_timer();
  }

  ~Impl() {
    for (SocketState* s : sockets) {
      uv_udp_recv_stop(&s->handle);
      uv_close(reinterpret_cast<uv_handle_t*>(&s->handle),
               [](uv_handle_t* h) { delete static_cast<SocketState*>(h->data); });
    }
    uv_close(reinterpret_cast<uv_handle_t*>(timer), [](uv_handle_t* h) { delete reinterpret_cast<uv_timer_t*>(h); });
  }

  uint64_t now() const { return uv_now(loop); }

  // ---- transmit ----
  void send(uint32_t socket, const Address& to, std::span<const uint8_t> bytes);
  void send_rst(uint32_t socket, const Address& to, uint16_t mid);
  size_t encode(Type type, uint16_t mid, const Token& token, const CachedBody& meta,
                std::span<const uint8_t> body, std::optional<uint32_t> observe,
                std::optional<Block> block2_req, std::optional<Block> block1_echo, const ResourceKey* cache_as);
  void reply_direct(uint32_t socket, const Address& from, const Message& req, uint8_t code, std::string_view diag,
                    std::optional<Block> block1 = {}, std::optional<uint32_t> size1 = {}, bool cache = true);
  void start_con(Outgoing::Kind kind, uint64_t owner, const Address& peer, uint32_t socket, uint16_t mid,
                 std::span<const uint8_t> bytes, const Outgoing* inherit);
  bool deliver(ExchangeId id, const Response& r, std::optional<uint32_t> observe);

  // ---- receive ----
  void on_datagram(uint32_t socket, const Address& from, std::span<const uint8_t> bytes);
  void on_request(uint32_t socket, const Address& from, Peer& peer);
  void on_ack_or_reset(const Address& from, bool reset);
  bool handle_block1(uint32_t socket, const Address& from, std::string& body, std::optional<Block>& echo);

  // ---- state ----
  Peer* touch_peer(const Address& from, uint32_t socket);
  void unref_peer(const Address& a);
  uint16_t next_mid(const Address& a);
  void drop_observer(ObserverId id, std::optional<DropReason> reason);
  void finish_exchange(ExchangeId id);

  // ---- timers ----
  void arm_timer();
  void run_timers();
  bool housekeeping();  // true if eviction stopped at its budget
  void on_retransmit(uint64_t out_id, uint64_t when);

  uv_loop_t* loop;
  Handler& handler;
  EndpointOptions opt;
  uint8_t max_szx;
  std::vector<SocketState*> sockets;
  uv_timer_t* timer;
  bool timer_armed = false;
  uint64_t armed_at = 0;
  TimerQueue timers;
  TransmitHook hook;
  Counters stats;

  std::unordered_map<Address, Peer, AddressHash> peers;
  std::list<Address> lru;  // front = most recently active
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
  std::minstd_rand rng;

  Message msg;                   // scratch: the datagram being handled
  std::vector<uint8_t> scratch;  // scratch: the datagram being built
};

// ---------------------------------------------------------------- transmit

void Endpoint::Impl::send(uint32_t socket, const Address& to, std::span<const uint8_t> bytes) {
  if (bytes.empty() || bytes.size() > opt.max_datagram) {
    ++stats.send_errors;  // the encoder never produces these; refuse rather than exceed the limit
    return;
  }
  ++stats.datagrams_out;
  stats.bytes_out += bytes.size();
  if (hook) {
    hook(to, bytes);
    return;
  }
  if (socket >= sockets.size()) return;
  sockaddr_storage ss;
  if (to.to_sockaddr(ss) == 0) return;
  uv_udp_t* h = &sockets[socket]->handle;
  uv_buf_t buf = uv_buf_init(const_cast<char*>(reinterpret_cast<const char*>(bytes.data())),
                             static_cast<unsigned>(bytes.size()));
  int r = uv_udp_try_send(h, &buf, 1, reinterpret_cast<const sockaddr*>(&ss));
  if (r >= 0) return;
  if (r != UV_EAGAIN && r != UV_ENOBUFS) {
    ++stats.send_errors;
    return;
  }
  // Kernel buffer full: queue a copy (the only allocating send path).
  struct Pending {
    uv_udp_send_t req;
    std::vector<char> data;
  };
  auto* p = new Pending;
  p->data.assign(bytes.begin(), bytes.end());
  buf = uv_buf_init(p->data.data(), static_cast<unsigned>(p->data.size()));
  p->req.data = p;
  r = uv_udp_send(&p->req, h, &buf, 1, reinterpret_cast<const sockaddr*>(&ss),
                  [](uv_udp_send_t* req, int) { delete static_cast<Pending*>(req->data); });
  if (r < 0) {
    ++stats.send_errors;
    delete p;
  }
}

void Endpoint::Impl::send_rst(uint32_t socket, const Address& to, uint16_t mid) {
  uint8_t b[4];
  Writer w(b);
  w.header(Type::kRst, code::kEmpty, mid, {});
  send(socket, to, {b, w.size()});
}

// Encodes a response into `scratch`, switching to Block2 (RFC 7959) when the
// body does not fit one datagram or the client asked for a block. Returns 0
// if the requested block is out of range.
size_t Endpoint::Impl::encode(Type type, uint16_t mid, const Token& token, const CachedBody& meta,
                              std::span<const uint8_t> body, std::optional<uint32_t> observe,
                              std::optional<Block> block2_req, std::optional<Block> block1_echo,
                              const ResourceKey* cache_as) {
  auto write = [&](std::span<const uint8_t> part, std::optional<Block> b2) {
    Writer w(scratch);
    w.header(type, meta.code, mid, token.view());
    if (observe) w.option_uint(opt::kObserve, *observe);
    if (meta.content_format) w.option_uint(opt::kContentFormat, *meta.content_format);
    if (meta.max_age) w.option_uint(opt::kMaxAge, *meta.max_age);
    if (b2) w.option_uint(opt::kBlock2, b2->encode());
    if (block1_echo) w.option_uint(opt::kBlock1, block1_echo->encode());
    if (b2 && b2->num == 0) w.option_uint(opt::kSize2, static_cast<uint32_t>(body.size()));
    w.payload(part);
    return w.size();  // 0 on overflow
  };
  if (!block2_req) {
    if (size_t n = write(body, std::nullopt)) return n;
  }
  Block b{0, false, max_szx};
  if (block2_req) {
    b.szx = std::min(b.szx, block2_req->szx);
    b.num = block2_req->num;
  }
  const uint64_t offset = uint64_t{b.num} * b.size();
  if (offset > 0 && offset >= body.size()) return 0;
  const size_t len = std::min<uint64_t>(b.size(), body.size() - offset);
  b.more = offset + len < body.size();
  if (cache_as && b.num == 0 && b.more) {
    CachedBody c = meta;
    c.body.assign(reinterpret_cast<const char*>(body.data()), body.size());
    bodies.insert(*cache_as, std::move(c), body.size() + 128, now());
  }
  return write(body.subspan(offset, len), b);
}

void Endpoint::Impl::reply_direct(uint32_t socket, const Address& from, const Message& req, uint8_t code,
                                  std::string_view diag, std::optional<Block> block1, std::optional<uint32_t> size1,
                                  bool cache) {
  const bool con = req.type == Type::kCon;
  const uint16_t mid = con ? req.mid : next_mid(from);
  Writer w(scratch);
  w.header(con ? Type::kAck : Type::kNon, code, mid, req.token.view());
  if (block1) w.option_uint(opt::kBlock1, block1->encode());
  if (size1) w.option_uint(opt::kSize1, *size1);
  w.payload({reinterpret_cast<const uint8_t*>(diag.data()), diag.size()});
  const std::span<const uint8_t> bytes(scratch.data(), w.size());
  send(socket, from, bytes);
  if (cache) {
    DedupEntry e{req.token, std::string(bytes.begin(), bytes.end()), 0};
    dedup.insert(MidKey{from, req.mid}, std::move(e), bytes.size() + 96, now());
  }
}

static uint64_t jitter_timeout(const EndpointOptions& o, std::minstd_rand& rng) {
  std::uniform_real_distribution<double> d(1.0, std::max(1.0, o.ack_random_factor));
  return static_cast<uint64_t>(o.ack_timeout_ms * d(rng));
}

void Endpoint::Impl::start_con(Outgoing::Kind kind, uint64_t owner, const Address& peer, uint32_t socket,
                               uint16_t mid, std::span<const uint8_t> bytes, const Outgoing* inherit) {
  const uint64_t id = ++last_id;
  Outgoing o{kind, owner, peer, socket, mid, 0, 0, 0, std::string(bytes.begin(), bytes.end())};
  o.timeout_ms = jitter_timeout(opt, rng);
  if (inherit) {  // RFC 7641 §4.5.2: a newer notification takes over the retransmission state
    o.attempts = inherit->attempts;
    o.timeout_ms = inherit->timeout_ms;
  }
  o.next_at_ms = now() + o.timeout_ms;
  timers.schedule(o.next_at_ms, TimerKind::kRetransmit, id);
  outgoing_by_mid[MidKey{peer, mid}] = id;
  outgoing.emplace(id, std::move(o));
  if (Peer* p = peers.count(peer) ? &peers[peer] : nullptr) ++p->refs;
  send(socket, peer, bytes);
  arm_timer();
}

bool Endpoint::Impl::deliver(ExchangeId id, const Response& r, std::optional<uint32_t> observe) {
  auto it = exchanges.find(id);
  if (it == exchanges.end()) return false;
  Exchange& x = it->second;
  Type type = Type::kNon;
  uint16_t mid;
  if (x.con && !x.ack_sent) {
    type = Type::kAck;
    mid = x.mid;
  } else {
    type = x.con ? Type::kCon : Type::kNon;
    mid = next_mid(x.peer);
  }
  CachedBody meta{{}, r.code, r.content_format, r.max_age};
  size_t n = encode(type, mid, x.token, meta, r.payload, observe, x.block2, x.block1_echo, &x.resource);
  if (n == 0) {
    meta = CachedBody{{}, code::kBadOption, {}, {}};
    static constexpr char kDiag[] = "block out of range";
    n = encode(type, mid, x.token, meta, {reinterpret_cast<const uint8_t*>(kDiag), sizeof kDiag - 1}, {}, {},
               {}, nullptr);
  }
  const std::span<const uint8_t> bytes(scratch.data(), n);
  if (type == Type::kCon) {
    start_con(Outgoing::Kind::kResponse, id, x.peer, x.socket, mid, bytes, nullptr);
  } else {
    send(x.socket, x.peer, bytes);
  }
  const MidKey key{x.peer, x.mid};
  if (DedupEntry* e = dedup.find(key); e && e->pending == id) {
    e->pending = 0;
    if (type != Type::kCon) {  // a separate CON response is retransmitted by its own timer
      e->reply.assign(bytes.begin(), bytes.end());
      dedup.set_cost(key, e->reply.size() + 96);
    }
  }
  finish_exchange(id);
  return true;
}

// ---------------------------------------------------------------- receive

void Endpoint::Impl::on_datagram(uint32_t socket, const Address& from, std::span<const uint8_t> bytes) {
  ++stats.datagrams_in;
  stats.bytes_in += bytes.size();
  const ParseResult pr = parse(bytes, msg);
  if (!pr.ok()) {
    // Wilddog SDK quirk: empty ACK that still carries the token (64 00 mid token).
    const bool sdk_ack = pr.error == ParseError::kEmptyWithData && msg.type == Type::kAck &&
                         bytes.size() == 4u + msg.token.len;
    if (!sdk_ack) {
      ++stats.malformed;
      if (pr.status == ParseStatus::kMalformed && msg.type == Type::kCon) {
        const bool option_error = pr.token_readable && msg.is_request() &&
                                  pr.error != ParseError::kReservedCode && pr.error != ParseError::kEmptyWithData;
        if (option_error) {
          reply_direct(socket, from, msg, code::kBadRequest, describe(pr.error), {}, {}, false);
        } else {
          send_rst(socket, from, msg.mid);
        }
      }
      return;
    }
  }
  Peer* peer = touch_peer(from, socket);
  if (!peer) {
    ++stats.peers_rejected;
    return;
  }
  handler.on_activity(from);
  switch (msg.type) {
    case Type::kAck:
    case Type::kRst:
      on_ack_or_reset(from, msg.type == Type::kRst);
      return;
    case Type::kCon:
    case Type::kNon:
      if (msg.is_empty()) {
        if (msg.type == Type::kCon) send_rst(socket, from, msg.mid);  // CoAP ping
        return;
      }
      if (!msg.is_request()) {  // we never send requests, so responses are unexpected
        if (msg.type == Type::kCon) send_rst(socket, from, msg.mid);
        return;
      }
      on_request(socket, from, *peer);
      return;
  }
}

void Endpoint::Impl::on_request(uint32_t socket, const Address& from, Peer& peer) {
  const MidKey key{from, msg.mid};
  if (DedupEntry* e = dedup.find(key); e && e->token == msg.token) {
    ++stats.duplicates;
    if (!e->reply.empty()) {
      send(socket, from, {reinterpret_cast<const uint8_t*>(e->reply.data()), e->reply.size()});
    } else if (auto x = exchanges.find(e->pending); x != exchanges.end() && x->second.con) {
      // The client is retransmitting: stop it with an empty ACK; the answer follows as a CON.
      uint8_t b[4];
      Writer w(b);
      w.header(Type::kAck, code::kEmpty, msg.mid, {});
      x->second.ack_sent = true;
      e->reply.assign(b, b + 4);
      send(socket, from, {b, 4});
    }
    return;
  }
  // A new request, including a reused MID with a different token (SDK quirk).
  for (const Option& o : msg.options) {
    if (is_critical(o.number) && !is_recognized(o.number, o.value.size())) {
      if (msg.type == Type::kCon) {
        std::string diag = "unrecognized critical option " + std::to_string(o.number);
        reply_direct(socket, from, msg, code::kBadOption, diag);
      }
      return;
    }
  }
  const Option* b2opt = msg.find(opt::kBlock2);
  std::optional<Block> block2 = b2opt ? Block::decode(b2opt->value) : std::nullopt;
  const bool bad_block = (b2opt && !block2) || (msg.find(opt::kBlock1) && !msg.block_option(opt::kBlock1));
  if (bad_block) {
    if (msg.type == Type::kCon) reply_direct(socket, from, msg, code::kBadOption, "bad block option");
    return;
  }
  const ResourceKey resource = resource_key(from, msg, false);
  if (block2 && block2->num > 0 && msg.code == code::kGet) {
    if (CachedBody* c = bodies.find(resource)) {
      const bool con = msg.type == Type::kCon;
      const uint16_t mid = con ? msg.mid : next_mid(from);
      size_t n = encode(con ? Type::kAck : Type::kNon, mid, msg.token, *c,
                        {reinterpret_cast<const uint8_t*>(c->body.data()), c->body.size()}, {}, block2, {}, nullptr);
      if (n == 0) {
        reply_direct(socket, from, msg, code::kBadOption, "block out of range");
        return;
      }
      const std::span<const uint8_t> bytes(scratch.data(), n);
      send(socket, from, bytes);
      dedup.insert(key, DedupEntry{msg.token, std::string(bytes.begin(), bytes.end()), 0}, n + 96, now());
      return;
    }
  }
  std::string body;
  std::optional<Block> block1_echo;
  if (msg.find(opt::kBlock1)) {
    if (!handle_block1(socket, from, body, block1_echo)) return;
  }

  const ExchangeId id = ++last_id;
  Exchange x{from, socket, msg.mid, msg.token, msg.type == Type::kCon, false, block2, block1_echo, resource};
  exchanges.emplace(id, std::move(x));
  ++peer.refs;
  dedup.insert(key, DedupEntry{msg.token, {}, id}, 96, now());
  ++stats.requests;
  const std::span<const uint8_t> payload =
      block1_echo ? std::span<const uint8_t>(reinterpret_cast<const uint8_t*>(body.data()), body.size()) : msg.payload;
  handler.on_request(Request{id, from, msg, payload});
  if (!exchanges.count(id)) return;  // answered synchronously: no timers needed
  // One timer entry per pending exchange: a CON's expiry is scheduled when its empty ACK goes out.
  if (msg.type == Type::kCon) {
    timers.schedule(now() + opt.separate_ack_after_ms, TimerKind::kSeparateAck, id);
  } else {
    timers.schedule(now() + opt.response_timeout_ms, TimerKind::kExchangeExpiry, id);
  }
  arm_timer();
}

// Reassembles a Block1 upload (RFC 7959 §2.5). Returns true with the whole
// body when the last block arrived; otherwise it has replied itself.
bool Endpoint::Impl::handle_block1(uint32_t socket, const Address& from, std::string& body,
                                   std::optional<Block>& echo) {
  const Block b = *msg.block_option(opt::kBlock1);
  const ResourceKey key = resource_key(from, msg, true);
  const uint32_t max = static_cast<uint32_t>(opt.max_block1_body);
  Upload* up = nullptr;
  if (b.num == 0) {
    if (auto size1 = msg.uint_option(opt::kSize1); size1 && *size1 > max) {
      reply_direct(socket, from, msg, code::kRequestEntityTooLarge, "body too large", {}, max);
      return false;
    }
    up = &uploads.insert(key, Upload{}, 128, now());
  } else {
    up = uploads.find(key);
    if (!up || up->body.size() != uint64_t{b.num} * b.size()) {
      uploads.erase(key);
      reply_direct(socket, from, msg, code::kRequestEntityIncomplete, "missing earlier blocks");
      return false;
    }
  }
  if (b.more && msg.payload.size() != b.size()) {
    uploads.erase(key);
    reply_direct(socket, from, msg, code::kBadRequest, "block size mismatch");
    return false;
  }
  if (up->body.size() + msg.payload.size() > max) {
    uploads.erase(key);
    reply_direct(socket, from, msg, code::kRequestEntityTooLarge, "body too large", {}, max);
    return false;
  }
  up->body.append(reinterpret_cast<const char*>(msg.payload.data()), msg.payload.size());
  if (b.more) {
    uploads.set_cost(key, 128 + up->body.size());
    reply_direct(socket, from, msg, code::kContinue, {}, b);
    return false;
  }
  body = std::move(up->body);
  uploads.erase(key);
  echo = b;
  return true;
}

void Endpoint::Impl::on_ack_or_reset(const Address& from, bool reset) {
  const MidKey key{from, msg.mid};
  if (reset) ++stats.resets_in;
  if (auto it = outgoing_by_mid.find(key); it != outgoing_by_mid.end()) {
    const uint64_t out_id = it->second;
    outgoing_by_mid.erase(it);
    auto o = outgoing.find(out_id);
    if (o == outgoing.end()) return;
    const Outgoing::Kind kind = o->second.kind;
    const uint64_t owner = o->second.owner;
    outgoing.erase(o);
    unref_peer(from);
    if (kind == Outgoing::Kind::kNotification) {
      auto ob = observers.find(owner);
      if (ob == observers.end()) return;
      if (reset) {
        drop_observer(owner, DropReason::kReset);
      } else if (ob->second.inflight == out_id) {
        ob->second.inflight = 0;
      }
    } else if (reset) {
      handler.on_response_failed(owner);
    }
    return;
  }
  if (reset) {
    if (ObserverId* ob = non_notifications.find(key)) {
      const ObserverId id = *ob;
      non_notifications.erase(key);
      if (observers.count(id)) drop_observer(id, DropReason::kReset);
    }
  }
}

// ---------------------------------------------------------------- state

Peer* Endpoint::Impl::touch_peer(const Address& from, uint32_t socket) {
  auto it = peers.find(from);
  if (it == peers.end()) {
    if (peers.size() >= opt.max_peers) return nullptr;
    it = peers.emplace(from, Peer{}).first;
    it->second.next_mid = static_cast<uint16_t>(rng());
    lru.push_front(from);
    it->second.lru = lru.begin();
  } else if (it->second.lru != lru.begin()) {
    lru.splice(lru.begin(), lru, it->second.lru);
  }
  it->second.socket = socket;
  it->second.last_seen_ms = now();
  return &it->second;
}

void Endpoint::Impl::unref_peer(const Address& a) {
  auto it = peers.find(a);
  if (it != peers.end() && it->second.refs > 0) --it->second.refs;
}

uint16_t Endpoint::Impl::next_mid(const Address& a) {
  auto it = peers.find(a);
  if (it == peers.end()) return static_cast<uint16_t>(rng());
  return it->second.next_mid++;
}

void Endpoint::Impl::finish_exchange(ExchangeId id) {
  auto it = exchanges.find(id);
  if (it == exchanges.end()) return;
  unref_peer(it->second.peer);
  exchanges.erase(it);
}

void Endpoint::Impl::drop_observer(ObserverId id, std::optional<DropReason> reason) {
  auto it = observers.find(id);
  if (it == observers.end()) return;
  Observer& ob = it->second;
  if (ob.inflight) {
    if (auto o = outgoing.find(ob.inflight); o != outgoing.end()) {
      outgoing_by_mid.erase(MidKey{o->second.peer, o->second.mid});
      outgoing.erase(o);
      unref_peer(ob.peer);
    }
  }
  auto t = observer_by_token.find(TokenKey{ob.peer, ob.token});
  if (t != observer_by_token.end() && t->second == id) observer_by_token.erase(t);
  unref_peer(ob.peer);
  observers.erase(it);
  if (reason) handler.on_observer_dropped(id, *reason);
}

// ---------------------------------------------------------------- timers

void Endpoint::Impl::arm_timer() {
  if (timers.empty()) return;
  const uint64_t next = timers.next_deadline();
  if (timer_armed && next >= armed_at) return;
  const uint64_t t = now();
  uv_timer_start(
      timer,
      [](uv_timer_t* h) {
        auto* self = static_cast<Impl*>(h->data);
        self->timer_armed = false;
        self->run_timers();
      },
      next > t ? next - t : 0, 0);
  timer_armed = true;
  armed_at = next;
}

void Endpoint::Impl::run_timers() {
  TimerEntry e;
  const uint64_t t = now();
  while (timers.pop_due(t, e)) {
    switch (e.kind) {
      case TimerKind::kSeparateAck: {
        auto it = exchanges.find(e.id);
        if (it == exchanges.end()) break;
        const uint32_t rest = opt.response_timeout_ms > opt.separate_ack_after_ms
                                  ? opt.response_timeout_ms - opt.separate_ack_after_ms : 0;
        timers.schedule(t + rest, TimerKind::kExchangeExpiry, e.id);
        Exchange& x = it->second;
        if (x.ack_sent) break;  // a duplicate request already triggered the empty ACK
        uint8_t b[4];
        Writer w(b);
        w.header(Type::kAck, code::kEmpty, x.mid, {});
        x.ack_sent = true;
        if (DedupEntry* d = dedup.find(MidKey{x.peer, x.mid}); d && d->pending == e.id) d->reply.assign(b, b + 4);
        send(x.socket, x.peer, {b, 4});
        break;
      }
      case TimerKind::kExchangeExpiry:
        if (auto it = exchanges.find(e.id); it != exchanges.end()) {
          if (DedupEntry* d = dedup.find(MidKey{it->second.peer, it->second.mid}); d && d->pending == e.id)
            d->pending = 0;
          finish_exchange(e.id);
        }
        break;
      case TimerKind::kRetransmit:
        on_retransmit(e.id, e.when_ms);
        break;
      case TimerKind::kHousekeeping:
        // Resume soon if the eviction budget ran out, so a mass expiry drains in slices.
        timers.schedule(t + (housekeeping() ? 10 : kHousekeepingMs), TimerKind::kHousekeeping, 0);
        break;
    }
  }
  timer_armed = false;
  arm_timer();
}

void Endpoint::Impl::on_retransmit(uint64_t out_id, uint64_t when) {
  auto it = outgoing.find(out_id);
  if (it == outgoing.end() || it->second.next_at_ms != when) return;
  Outgoing& o = it->second;
  if (o.attempts >= opt.max_retransmit) {
    ++stats.con_timeouts;
    const Outgoing::Kind kind = o.kind;
    const uint64_t owner = o.owner;
    const Address peer = o.peer;
    outgoing_by_mid.erase(MidKey{o.peer, o.mid});
    outgoing.erase(it);
    unref_peer(peer);
    if (kind == Outgoing::Kind::kNotification) {
      if (auto ob = observers.find(owner); ob != observers.end() && ob->second.inflight == out_id) {
        ob->second.inflight = 0;
        drop_observer(owner, DropReason::kTimeout);
      }
    } else {
      handler.on_response_failed(owner);
    }
    return;
  }
  ++o.attempts;
  ++stats.retransmissions;
  o.timeout_ms *= 2;
  o.next_at_ms = now() + o.timeout_ms;
  timers.schedule(o.next_at_ms, TimerKind::kRetransmit, out_id);
  send(o.socket, o.peer, {reinterpret_cast<const uint8_t*>(o.bytes.data()), o.bytes.size()});
}

bool Endpoint::Impl::housekeeping() {
  const uint64_t t = now();
  dedup.expire(t);
  bodies.expire(t);
  uploads.expire(t);
  non_notifications.expire(t);
  // Evict peers idle for EXCHANGE_LIFETIME with nothing pending. Peers with
  // state are moved to the front and looked at again later. Bounded per tick.
  for (int budget = 10000; !lru.empty(); --budget) {
    if (budget == 0) return true;
    auto it = peers.find(lru.back());
    if (t - it->second.last_seen_ms < opt.exchange_lifetime_ms) break;
    if (it->second.refs > 0) {
      it->second.last_seen_ms = t;
      lru.splice(lru.begin(), lru, it->second.lru);
      continue;
    }
    lru.pop_back();
    peers.erase(it);
  }
  return false;
}

// ---------------------------------------------------------------- public API

Endpoint::Endpoint(uv_loop_t* loop, Handler& handler, EndpointOptions options)
    : impl_(std::make_unique<Impl>(loop, handler, options)) {}

Endpoint::~Endpoint() = default;

int Endpoint::listen(const char* ip, uint16_t port) {
  sockaddr_storage ss{};
  unsigned family = AF_INET;
  if (uv_ip4_addr(ip, port, reinterpret_cast<sockaddr_in*>(&ss)) != 0) {
    if (int r = uv_ip6_addr(ip, port, reinterpret_cast<sockaddr_in6*>(&ss)); r != 0) return r;
    family = AF_INET6;
  }
  auto* s = new SocketState;
  s->impl = impl_.get();
  s->index = static_cast<uint32_t>(impl_->sockets.size());
  s->buf.reset(new char[kRecvChunk * kRecvSlots]);
  s->handle.data = s;
  if (int r = uv_udp_init_ex(impl_->loop, &s->handle, family | UV_UDP_RECVMMSG); r != 0) {
    delete s;
    return r;
  }
  auto fail = [&](int r) {
    uv_close(reinterpret_cast<uv_handle_t*>(&s->handle),
             [](uv_handle_t* h) { delete static_cast<SocketState*>(h->data); });
    return r;
  };
  if (int r = uv_udp_bind(&s->handle, reinterpret_cast<const sockaddr*>(&ss),
                          family == AF_INET6 ? UV_UDP_IPV6ONLY : 0);
      r != 0)
    return fail(r);
  int rcvbuf = 4 << 20;
  uv_recv_buffer_size(reinterpret_cast<uv_handle_t*>(&s->handle), &rcvbuf);
  int r = uv_udp_recv_start(
      &s->handle,
      [](uv_handle_t* h, size_t, uv_buf_t* buf) {
        auto* st = static_cast<SocketState*>(h->data);
        *buf = uv_buf_init(st->buf.get(), static_cast<unsigned>(kRecvChunk * kRecvSlots));
      },
      [](uv_udp_t* h, ssize_t nread, const uv_buf_t* buf, const sockaddr* addr, unsigned) {
        // The receive buffer belongs to the socket and is reused, never freed here.
        if (nread <= 0 || addr == nullptr) return;
        auto* st = static_cast<SocketState*>(h->data);
        const Address from = Address::from_sockaddr(addr);
        if (from.family == 0) return;
        st->impl->on_datagram(st->index, from,
                              {reinterpret_cast<const uint8_t*>(buf->base), static_cast<size_t>(nread)});
      });
  if (r != 0) return fail(r);
  impl_->sockets.push_back(s);
  return 0;
}

uint16_t Endpoint::local_port(size_t socket_index) const {
  if (socket_index >= impl_->sockets.size()) return 0;
  sockaddr_storage ss;
  int len = sizeof ss;
  if (uv_udp_getsockname(&impl_->sockets[socket_index]->handle, reinterpret_cast<sockaddr*>(&ss), &len) != 0)
    return 0;
  return Address::from_sockaddr(reinterpret_cast<sockaddr*>(&ss)).port;
}

bool Endpoint::respond(ExchangeId id, const Response& response) { return impl_->deliver(id, response, std::nullopt); }

ObserverId Endpoint::respond_observe(ExchangeId id, const Response& response) {
  Impl& m = *impl_;
  auto it = m.exchanges.find(id);
  if (it == m.exchanges.end()) return 0;
  if (code::cls(response.code) != 2) {  // RFC 7641 §4.1: an error response does not register
    m.deliver(id, response, std::nullopt);
    return 0;
  }
  const Exchange& x = it->second;
  const TokenKey tk{x.peer, x.token};
  uint32_t seq = 1;
  if (auto old = m.observer_by_token.find(tk); old != m.observer_by_token.end()) {
    seq = (m.observers[old->second].seq + 1) & 0xFFFFFF;  // stays fresh for the client
    m.drop_observer(old->second, DropReason::kReplaced);
  }
  const ObserverId oid = ++m.last_id;
  Observer ob{x.peer, x.socket, x.token, seq, 0, m.now(), 0, x.resource};
  if (Peer* p = m.peers.count(x.peer) ? &m.peers[x.peer] : nullptr) ++p->refs;
  m.observers.emplace(oid, std::move(ob));
  m.observer_by_token[tk] = oid;
  m.deliver(id, response, seq);
  return oid;
}

bool Endpoint::notify(ObserverId id, const Response& r) {
  Impl& m = *impl_;
  auto it = m.observers.find(id);
  if (it == m.observers.end()) return false;
  Observer& ob = it->second;
  const bool final = code::cls(r.code) != 2;
  ob.seq = (ob.seq + 1) & 0xFFFFFF;
  ++ob.since_con;
  const uint64_t t = m.now();
  const bool con = final || ob.inflight != 0 || ob.since_con >= m.opt.con_notify_every ||
                   t - ob.last_con_ms >= m.opt.con_notify_interval_ms;
  const uint16_t mid = m.next_mid(ob.peer);
  CachedBody meta{{}, r.code, r.content_format, r.max_age};
  // The final (error) notification goes out once as NON; the observation ends with it.
  const size_t n = m.encode(con && !final ? Type::kCon : Type::kNon, mid, ob.token, meta, r.payload,
                            final ? std::nullopt : std::optional<uint32_t>(ob.seq), {}, {}, &ob.resource);
  const std::span<const uint8_t> bytes(m.scratch.data(), n);
  if (final) {  // RFC 7641 §3.2: an error response ends the observation
    const Address peer = ob.peer;
    const uint32_t socket = ob.socket;
    m.drop_observer(id, std::nullopt);
    m.send(socket, peer, bytes);
    return true;
  }
  if (con) {
    std::optional<Outgoing> previous;
    if (ob.inflight) {
      if (auto o = m.outgoing.find(ob.inflight); o != m.outgoing.end()) {
        previous = std::move(o->second);
        m.outgoing_by_mid.erase(MidKey{previous->peer, previous->mid});
        m.outgoing.erase(o);
        m.unref_peer(ob.peer);
      }
    }
    m.start_con(Outgoing::Kind::kNotification, id, ob.peer, ob.socket, mid, bytes, previous ? &*previous : nullptr);
    ob.inflight = m.last_id;
    ob.since_con = 0;
    ob.last_con_ms = t;
  } else {
    m.non_notifications.insert(MidKey{ob.peer, mid}, id, 64, t);
    m.send(ob.socket, ob.peer, bytes);
  }
  return true;
}

void Endpoint::cancel_observer(ObserverId id) { impl_->drop_observer(id, std::nullopt); }

Counters Endpoint::counters() const {
  Counters c = impl_->stats;
  c.peers = impl_->peers.size();
  c.observers = impl_->observers.size();
  c.exchanges = impl_->exchanges.size();
  c.dedup_entries = impl_->dedup.size();
  return c;
}

void Endpoint::handle_datagram(size_t socket_index, const Address& from, std::span<const uint8_t> bytes) {
  impl_->on_datagram(static_cast<uint32_t>(socket_index), from, bytes);
}

void Endpoint::set_transmit_hook(TransmitHook hook) { impl_->hook = std::move(hook); }

void Endpoint::run_timers() { impl_->run_timers(); }

}  // namespace tether::coap
