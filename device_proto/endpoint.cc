// Endpoint lifecycle, sockets (recvmmsg batches), the peer table with its
// LRU eviction, and the single timer heap that drives every deadline.
#include "device_proto/endpoint.h"

#include <linux/sock_diag.h>

#include "device_proto/endpoint_impl.h"

namespace tether::coap {

std::string_view Request::uri_host() const {
  const Option* o = message.Find(opt::kUriHost);
  return o ? o->str() : std::string_view{};
}

namespace {

std::vector<std::string_view> Collect(const Message& m, uint16_t number) {
  std::vector<std::string_view> out;
  for (const Option& o : m.options)
    if (o.number == number) out.push_back(o.str());
  return out;
}

}  // namespace

std::vector<std::string_view> Request::uri_path() const { return Collect(message, opt::kUriPath); }
std::vector<std::string_view> Request::uri_queries() const { return Collect(message, opt::kUriQuery); }

// ---------------------------------------------------------------- state

Peer* Endpoint::Impl::TouchPeer(const Address& from, uint32_t socket) {
  auto it = peers.find(from);
  if (it == peers.end()) {
    if (peers.size() >= opt.max_peers && !EvictUnverified()) {
      ++stats.peers_rejected;
      return nullptr;
    }
    it = peers.emplace(from, Peer{}).first;
    Peer& p = it->second;
    p.next_mid = static_cast<uint16_t>(rng());
    p.verified = from.secure;  // a DTLS peer completed a handshake with a cookie and a key
    std::list<Address>& list = p.verified ? lru_verified : lru_unverified;
    list.push_front(from);
    p.lru = list.begin();
    verified_count += p.verified;
  } else {
    std::list<Address>& list = it->second.verified ? lru_verified : lru_unverified;
    if (it->second.lru != list.begin()) list.splice(list.begin(), list, it->second.lru);
  }
  it->second.socket = socket;
  it->second.last_seen_ms = now();
  return &it->second;
}

bool Endpoint::Impl::EvictUnverified() {
  for (int i = 0; i < kEvictScan && !lru_unverified.empty(); ++i) {
    auto it = peers.find(lru_unverified.back());
    if (it->second.refs > 0) {  // an exchange or observer still names it: look at it later
      lru_unverified.splice(lru_unverified.begin(), lru_unverified, it->second.lru);
      continue;
    }
    lru_unverified.pop_back();
    peers.erase(it);
    ++stats.peers_evicted;
    return true;
  }
  return false;
}

void Endpoint::Impl::set_verified(Peer& p) {
  if (p.verified) return;
  p.verified = true;
  ++verified_count;
  lru_verified.splice(lru_verified.begin(), lru_unverified, p.lru);
}

void Endpoint::Impl::UnrefPeer(const Address& a) {
  auto it = peers.find(a);
  if (it != peers.end() && it->second.refs > 0) --it->second.refs;
}

uint16_t Endpoint::Impl::NextMid(const Address& a) {
  auto it = peers.find(a);
  if (it == peers.end()) return static_cast<uint16_t>(rng());
  return it->second.next_mid++;
}

void Endpoint::Impl::FinishExchange(ExchangeId id) {
  auto it = exchanges.find(id);
  if (it == exchanges.end()) return;
  UnrefPeer(it->second.peer);
  exchanges.erase(it);
}

// ---------------------------------------------------------------- timers

void Endpoint::Impl::ArmTimer() {
  if (timers.empty()) return;
  const uint64_t next = timers.next_deadline();
  if (timer_armed && next >= armed_at) return;
  const uint64_t t = now();
  uv_timer_start(
      timer,
      [](uv_timer_t* h) {
        auto* self = static_cast<Impl*>(h->data);
        self->timer_armed = false;
        self->RunTimers();
      },
      next > t ? next - t : 0, 0);
  timer_armed = true;
  armed_at = next;
}

void Endpoint::Impl::RunTimers() {
  TimerEntry e;
  const uint64_t t = now();
  while (timers.PopDue(t, e)) {
    switch (e.kind) {
      case TimerKind::kSeparateAck: {
        auto it = exchanges.find(e.id);
        if (it == exchanges.end()) break;
        const uint32_t rest = opt.response_timeout_ms > opt.separate_ack_after_ms
                                  ? opt.response_timeout_ms - opt.separate_ack_after_ms : 0;
        timers.Schedule(t + rest, TimerKind::kExchangeExpiry, e.id);
        Exchange& x = it->second;
        if (x.ack_sent) break;  // a duplicate request already triggered the empty ACK
        uint8_t b[4];
        Writer w(b);
        w.Header(Type::kAck, code::kEmpty, x.mid, {});
        x.ack_sent = true;
        if (DedupEntry* d = dedup.Find(MidKey{x.peer, x.mid}); d && d->pending == e.id) d->reply.assign(b, b + 4);
        Send(x.socket, x.peer, {b, 4});
        break;
      }
      case TimerKind::kExchangeExpiry:
        if (auto it = exchanges.find(e.id); it != exchanges.end()) {
          if (DedupEntry* d = dedup.Find(MidKey{it->second.peer, it->second.mid}); d && d->pending == e.id)
            d->pending = 0;
          FinishExchange(e.id);
        }
        break;
      case TimerKind::kRetransmit:
        OnRetransmit(e.id, e.when_ms);
        break;
      case TimerKind::kDtls:
        if (const uint64_t socket = e.id >> 48; socket < sockets.size() && sockets[socket]->dtls)
          sockets[socket]->dtls->OnTimer(e.id & ((uint64_t{1} << 48) - 1));
        break;
      case TimerKind::kHousekeeping:
        // Resume soon if the eviction budget ran out, so a mass expiry drains in slices.
        timers.Schedule(t + (Housekeeping() ? 10 : kHousekeepingMs), TimerKind::kHousekeeping, 0);
        break;
    }
  }
  timer_armed = false;
  ArmTimer();
}

void Endpoint::Impl::OnRetransmit(uint64_t out_id, uint64_t when) {
  auto it = outgoing.find(out_id);
  if (it == outgoing.end() || it->second.next_at_ms != when) return;
  Outgoing& o = it->second;
  if (o.attempts >= opt.max_retransmit) {
    ++stats.con_timeouts;
    const Outgoing::Kind kind = o.kind;
    const uint64_t owner = o.owner;
    const Address peer = o.peer;
    EraseOutgoing(out_id);
    if (kind == Outgoing::Kind::kNotification) {
      if (auto ob = observers.find(owner); ob != observers.end() && ob->second.inflight == out_id) {
        ob->second.inflight = 0;
        PeerTimedOut(peer, owner);
      } else {
        DrainSlot(peer);  // it held the peer's slot for an observer that moved on
      }
    } else {
      handler.OnResponseFailed(owner);
    }
    return;
  }
  if (o.kind == Outgoing::Kind::kNotification) {
    // RFC 7641 §4.5.2: a newer state takes the place of the one being retransmitted, with its
    // retransmission counter and timeout, so new states never push the give-up time back.
    auto ob = observers.find(o.owner);
    if (ob != observers.end() && ob->second.inflight == out_id && ob->second.waiting) {
      Observer& w = ob->second;
      if (o.prev_mid) outgoing_by_mid.erase(MidKey{o.peer, *o.prev_mid});
      o.prev_mid = o.mid;
      o.mid = NextMid(o.peer);
      o.bytes = std::move(w.pending);
      Stamp({reinterpret_cast<uint8_t*>(o.bytes.data()), o.bytes.size()}, Type::kCon, o.mid);
      outgoing_by_mid[MidKey{o.peer, o.mid}] = out_id;
      StopWaiting(o.owner, w);
      w.since_con = 0;
      w.last_con_ms = now();
      ++stats.notifications;
    }
  }
  ++o.attempts;
  ++stats.retransmissions;
  o.timeout_ms *= 2;
  o.next_at_ms = now() + o.timeout_ms;
  timers.Schedule(o.next_at_ms, TimerKind::kRetransmit, out_id);
  Send(o.socket, o.peer, {reinterpret_cast<const uint8_t*>(o.bytes.data()), o.bytes.size()});
}

bool Endpoint::Impl::Housekeeping() {
  const uint64_t t = now();
  WatchReceiveDrops(t);
  for (SocketState* s : sockets)
    if (s->dtls) s->dtls->Housekeeping();
  dedup.Expire(t);
  bodies.Expire(t);
  uploads.Expire(t);
  non_notifications.Expire(t);
  // Evict peers idle for EXCHANGE_LIFETIME with nothing pending. Peers with
  // state are moved to the front and looked at again later. Bounded per tick.
  int budget = 10000;
  for (std::list<Address>* list : {&lru_unverified, &lru_verified}) {
    for (; !list->empty(); --budget) {
      if (budget == 0) return true;
      auto it = peers.find(list->back());
      if (t - it->second.last_seen_ms < opt.exchange_lifetime_ms) break;
      if (it->second.refs > 0) {
        it->second.last_seen_ms = t;
        list->splice(list->begin(), *list, it->second.lru);
        continue;
      }
      verified_count -= it->second.verified;
      list->pop_back();
      peers.erase(it);
    }
  }
  return false;
}

Endpoint::Impl::ReceiveQueues Endpoint::Impl::ReadReceiveQueues() const {
  ReceiveQueues q;
  for (SocketState* s : sockets) {
    uv_os_fd_t fd;
    uint32_t info[SK_MEMINFO_VARS] = {};
    socklen_t len = sizeof info;
    if (uv_fileno(reinterpret_cast<const uv_handle_t*>(&s->handle), &fd) != 0 ||
        getsockopt(fd, SOL_SOCKET, SO_MEMINFO, info, &len) != 0 || len <= SK_MEMINFO_DROPS * sizeof info[0])
      continue;  // a closed socket, or a kernel without SK_MEMINFO_DROPS (before 4.18): nothing to add
    q.dropped += info[SK_MEMINFO_DROPS];  // the kernel counts in 32 bits: wraps at 4 G
    q.buffer_bytes += info[SK_MEMINFO_RCVBUF];
  }
  return q;
}

void Endpoint::Impl::WatchReceiveDrops(uint64_t t) {
  if (drops_read_ms != 0 && t - drops_read_ms < kHousekeepingMs) return;
  drops_read_ms = t;
  const uint64_t dropped = ReadReceiveQueues().dropped;
  if (dropped == drops_seen) return;
  drops_seen = dropped;
  dropping.Note(t);
}

// ---------------------------------------------------------------- public API

Endpoint::Endpoint(uv_loop_t* loop, Handler& handler, EndpointOptions options)
    : impl_(std::make_unique<Impl>(loop, handler, options)) {}

Endpoint::~Endpoint() = default;

// ---------------------------------------------------------------- DTLS link

void DtlsLink::SendDatagram(const Address& to, std::span<const uint8_t> ciphertext) {
  impl->SendRaw(socket, to, ciphertext);
}

void DtlsLink::OnPlaintext(const Address& from, std::string_view identity, std::span<const uint8_t> bytes) {
  impl->identity = identity;
  impl->OnDatagram(socket, from, bytes);
  impl->identity = {};
}

void DtlsLink::Schedule(uint64_t when_ms, uint64_t token) {
  impl->timers.Schedule(when_ms, TimerKind::kDtls, uint64_t{socket} << 48 | token);
  impl->ArmTimer();
}

uint64_t DtlsLink::now_ms() const { return impl->now(); }

void Endpoint::Impl::Receive(uint32_t socket, Address from, std::span<const uint8_t> bytes) {
  if (socket < sockets.size() && sockets[socket]->dtls) {
    from.secure = 1;
    sockets[socket]->dtls->OnDatagram(from, bytes);
    return;
  }
  OnDatagram(socket, from, bytes);
}

int Endpoint::Listen(const char* ip, uint16_t port) {
  SocketState* s = nullptr;
  return impl_->OpenSocket(ip, port, s);
}

int Endpoint::ListenDtls(const char* ip, uint16_t port, DtlsOptions options, PskLookup psk) {
  // The server exists before the socket does, so a setup failure never leaves a plaintext socket.
  auto link = std::make_unique<DtlsLink>();
  link->impl = impl_.get();
  link->socket = static_cast<uint32_t>(impl_->sockets.size());
  options.max_datagram = impl_->opt.max_datagram;
  auto server = std::make_unique<DtlsServer>(*link, options, std::move(psk));
  SocketState* s = nullptr;
  if (int r = impl_->OpenSocket(ip, port, s); r != 0) return r;
  s->dtls_link = std::move(link);
  s->dtls = std::move(server);
  s->max_message = s->dtls->max_plaintext();
  s->max_szx = 0;
  while (s->max_szx < 6 && (size_t{32} << s->max_szx) + 48 <= s->max_message) ++s->max_szx;
  return 0;
}

int Endpoint::Impl::OpenSocket(const char* ip, uint16_t port, SocketState*& out) {
  sockaddr_storage ss{};
  unsigned family = AF_INET;
  if (uv_ip4_addr(ip, port, reinterpret_cast<sockaddr_in*>(&ss)) != 0) {
    if (int r = uv_ip6_addr(ip, port, reinterpret_cast<sockaddr_in6*>(&ss)); r != 0) return r;
    family = AF_INET6;
  }
  auto* s = new SocketState;
  s->impl = this;
  s->index = static_cast<uint32_t>(sockets.size());
  s->buf.reset(new char[kRecvChunk * kRecvSlots]);
  s->handle.data = s;
  s->max_message = opt.max_datagram;
  s->max_szx = max_szx;
  if (int r = uv_udp_init_ex(loop, &s->handle, family | UV_UDP_RECVMMSG); r != 0) {
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
  // Room for a burst while the loop is busy. The kernel caps it at net.core.rmem_max (208 KiB by
  // default, so 416 KiB granted): counters().receive_buffer_bytes says what it gave.
  int rcvbuf = static_cast<int>(kRecvBufferBytes);
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
        const Address from = Address::FromSockaddr(addr);
        if (from.family == 0) return;
        st->impl->Receive(st->index, from, {reinterpret_cast<const uint8_t*>(buf->base), static_cast<size_t>(nread)});
      });
  if (r != 0) return fail(r);
  sockets.push_back(s);
  out = s;
  return 0;
}

uint16_t Endpoint::LocalPort(size_t socket_index) const {
  if (socket_index >= impl_->sockets.size()) return 0;
  sockaddr_storage ss;
  int len = sizeof ss;
  if (uv_udp_getsockname(&impl_->sockets[socket_index]->handle, reinterpret_cast<sockaddr*>(&ss), &len) != 0)
    return 0;
  return Address::FromSockaddr(reinterpret_cast<sockaddr*>(&ss)).port;
}

bool Endpoint::Respond(ExchangeId id, const Response& response) { return impl_->Deliver(id, response, std::nullopt); }

void Endpoint::Ignore(ExchangeId id) {
  auto it = impl_->exchanges.find(id);
  if (it == impl_->exchanges.end()) return;
  // The dedup entry stays (a retransmission is a duplicate) but points at no exchange: silence.
  // A GET ignored in its upcall has none yet: it gets one, so its retransmissions are silent too.
  Impl& m = *impl_;
  const Exchange& x = it->second;
  const MidKey key{x.peer, x.mid};
  if (!x.has_dedup) {
    auto p = m.peers.find(x.peer);
    m.dedup.Insert(key, DedupEntry{{}, 0, p == m.peers.end() ? 0 : p->second.binding, x.token}, 0, m.now());
  } else if (DedupEntry* d = m.dedup.Find(key); d && d->pending == id) {
    d->pending = 0;
  }
  impl_->FinishExchange(id);  // its timers find nothing and do nothing
}

DtlsCounters Endpoint::dtls_counters() const {
  DtlsCounters sum;
  for (const SocketState* s : impl_->sockets) {
    if (!s->dtls) continue;
    const DtlsCounters c = s->dtls->counters();
    sum.handshakes_ok += c.handshakes_ok;
    sum.handshakes_failed += c.handshakes_failed;
    sum.hello_verify_sent += c.hello_verify_sent;
    sum.hellos_rate_limited += c.hellos_rate_limited;
    sum.hellos_over_cap += c.hellos_over_cap;
    sum.handshakes_evicted += c.handshakes_evicted;
    sum.records_dropped += c.records_dropped;
    sum.sessions_slept += c.sessions_slept;
    sum.sessions_woken += c.sessions_woken;
    sum.sessions_expired += c.sessions_expired;
    sum.sessions_evicted += c.sessions_evicted;
    sum.close_notify_in += c.close_notify_in;
    sum.plaintexts_in += c.plaintexts_in;
    sum.plaintexts_out += c.plaintexts_out;
    sum.live += c.live;
    sum.sleeping += c.sleeping;
    sum.handshaking += c.handshaking;
    sum.sleeping_bytes += c.sleeping_bytes;
  }
  return sum;
}

void Endpoint::AllowUnaskedBlocks(ExchangeId id) {
  if (auto x = impl_->exchanges.find(id); x != impl_->exchanges.end()) x->second.unasked_blocks = true;
}

void Endpoint::NewBinding(ExchangeId id) {
  Impl& m = *impl_;
  auto x = m.exchanges.find(id);
  if (x == m.exchanges.end()) return;
  auto p = m.peers.find(x->second.peer);
  if (p == m.peers.end()) return;
  p->second.binding = ++m.last_binding;
  p->second.opener_cached = false;
  if (DedupEntry* d = m.dedup.Find(MidKey{x->second.peer, x->second.mid}); d && d->pending == id) {
    d->binding = p->second.binding;
    p->second.opener_mid = x->second.mid;
    p->second.opener_cached = true;
  }
}

void Endpoint::VerifyPeer(const Address& peer) {
  if (auto it = impl_->peers.find(peer); it != impl_->peers.end()) impl_->set_verified(it->second);
}

Counters Endpoint::counters() const {
  Counters c = impl_->stats;
  c.peers = impl_->peers.size();
  c.peers_verified = impl_->verified_count;
  c.observers = impl_->observers.size();
  c.exchanges = impl_->exchanges.size();
  c.dedup_entries = impl_->dedup.size();
  const Impl::ReceiveQueues q = impl_->ReadReceiveQueues();
  c.receive_dropped = q.dropped;
  c.receive_buffer_bytes = q.buffer_bytes;
  return c;
}

std::optional<uint64_t> Endpoint::receive_dropping_for_ms() const {
  return impl_->dropping.LastedMs(impl_->now());
}

void Endpoint::HandleDatagram(size_t socket_index, const Address& from, std::span<const uint8_t> bytes) {
  impl_->Receive(static_cast<uint32_t>(socket_index), from, bytes);
}

void Endpoint::set_transmit_hook(TransmitHook hook) { impl_->hook = std::move(hook); }

void Endpoint::SetClock(std::function<uint64_t()> clock) { impl_->clock = std::move(clock); }

void Endpoint::RunTimers() { impl_->RunTimers(); }

}  // namespace tether::coap
