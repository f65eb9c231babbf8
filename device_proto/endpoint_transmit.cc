// Outgoing path: encoding (with Block2 slicing), sending without allocation
// in the common case, CON retransmission bookkeeping, answering exchanges.
#include "device_proto/endpoint_impl.h"

#include <algorithm>
#include <cerrno>
#include <cstdio>

namespace tether::coap {

void Endpoint::Impl::Send(uint32_t socket, const Address& to, std::span<const uint8_t> bytes) {
  if (bytes.empty() || bytes.size() > MaxMessage(socket)) {
    ++stats.send_errors;  // the encoder never produces these; refuse rather than exceed the limit
    return;
  }
  ++stats.datagrams_out;
  stats.bytes_out += bytes.size();
  if (socket < sockets.size() && sockets[socket]->dtls) {
    if (!sockets[socket]->dtls->Send(to, bytes)) ++stats.send_errors;  // no session (any more)
    return;
  }
  SendRaw(socket, to, bytes);
}

void Endpoint::Impl::SendRaw(uint32_t socket, const Address& to, std::span<const uint8_t> bytes) {
  if (bytes.size() > opt.max_datagram) {
    ++stats.send_errors;
    return;
  }
  if (hook) {
    hook(to, bytes);
    return;
  }
  if (socket >= sockets.size()) return;
  SocketState& s = *sockets[socket];
  SendQueue& q = s.out;
  if (!q.data) q.data.reset(new uint8_t[kSendBatch * opt.max_datagram]);
  if (to.ToSockaddr(q.to[q.count]) == 0) return;
  uint8_t* slot = q.data.get() + q.count * opt.max_datagram;
  std::copy(bytes.begin(), bytes.end(), slot);
  q.iov[q.count] = {slot, bytes.size()};
  mmsghdr& m = q.msgs[q.count];
  m = {};
  m.msg_hdr.msg_name = &q.to[q.count];
  m.msg_hdr.msg_namelen = q.to[q.count].ss_family == AF_INET6 ? sizeof(sockaddr_in6) : sizeof(sockaddr_in);
  m.msg_hdr.msg_iov = &q.iov[q.count];
  m.msg_hdr.msg_iovlen = 1;
  if (++q.count == kSendBatch) Flush(s);
}

void Endpoint::Impl::FlushSends() {
  for (SocketState* s : sockets) {
    if (s->out.count) Flush(*s);
  }
}

void Endpoint::Impl::Flush(SocketState& s) {
  SendQueue& q = s.out;
  size_t done = 0;
  uv_os_fd_t fd;
  if (uv_fileno(reinterpret_cast<uv_handle_t*>(&s.handle), &fd) == 0) {
    while (done < q.count) {
      int n = sendmmsg(fd, q.msgs.data() + done, static_cast<unsigned>(q.count - done), MSG_DONTWAIT);
      if (n > 0) {
        done += static_cast<size_t>(n);
        continue;
      }
      if (errno == EINTR) continue;
      if (errno != EAGAIN && errno != EWOULDBLOCK && errno != ENOBUFS) {
        ++stats.send_errors;  // this datagram cannot be sent (e.g. unreachable): skip it
        ++done;
        continue;
      }
      break;
    }
  }
  // Kernel buffer full: hand the rest to libuv's queue (copies; the only allocating path).
  struct Pending {
    uv_udp_send_t req;
    std::vector<char> data;
  };
  for (; done < q.count; ++done) {
    auto* p = new Pending;
    const iovec& v = q.iov[done];
    p->data.assign(static_cast<char*>(v.iov_base), static_cast<char*>(v.iov_base) + v.iov_len);
    uv_buf_t buf = uv_buf_init(p->data.data(), static_cast<unsigned>(p->data.size()));
    p->req.data = p;
    int r = uv_udp_send(&p->req, &s.handle, &buf, 1, reinterpret_cast<const sockaddr*>(&q.to[done]),
                        [](uv_udp_send_t* req, int) { delete static_cast<Pending*>(req->data); });
    if (r < 0) {
      ++stats.send_errors;
      delete p;
    }
  }
  q.count = 0;
}

void Endpoint::Impl::SendRst(uint32_t socket, const Address& to, uint16_t mid) {
  uint8_t b[4];
  Writer w(b);
  w.Header(Type::kRst, code::kEmpty, mid, {});
  Send(socket, to, {b, w.size()});
}

// Encodes a response into `scratch`, switching to Block2 (RFC 7959) when the
// client asked for a block, or when the body does not fit one datagram and
// unasked_blocks allows it (else returns kNeedsBlocks). Returns 0 if the
// requested block is out of range. The datagram limit is the socket's (smaller under DTLS).
size_t Endpoint::Impl::Encode(uint32_t socket, Type type, uint16_t mid, const Token& token, const CachedBody& meta,
                              std::span<const uint8_t> body, std::optional<uint32_t> observe,
                              std::optional<Block> block2_req, std::optional<Block> block1_echo,
                              const ResourceKey* cache_as, bool unasked_blocks) {
  const std::span<uint8_t> out(scratch.data(), std::min(scratch.size(), MaxMessage(socket)));
  auto write = [&](std::span<const uint8_t> part, std::optional<Block> b2) {
    Writer w(out);
    w.Header(type, meta.code, mid, token.view());
    if (observe) w.OptionUint(opt::kObserve, *observe);
    if (meta.content_format) w.OptionUint(opt::kContentFormat, *meta.content_format);
    if (meta.max_age) w.OptionUint(opt::kMaxAge, *meta.max_age);
    if (b2) w.OptionUint(opt::kBlock2, b2->encode());
    if (block1_echo) w.OptionUint(opt::kBlock1, block1_echo->encode());
    if (b2 && b2->num == 0) w.OptionUint(opt::kSize2, static_cast<uint32_t>(body.size()));
    if (meta.size1) w.OptionUint(opt::kSize1, *meta.size1);
    w.Payload(part);
    return w.size();  // 0 on overflow
  };
  if (!block2_req) {
    if (size_t n = write(body, std::nullopt)) return n;
    if (!unasked_blocks) return kNeedsBlocks;
  }
  Block b{0, false, SzxFor(socket)};
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
    const size_t extra = HeapBytes(c.body);
    bodies.Insert(*cache_as, std::move(c), extra, now());
  }
  return write(body.subspan(offset, len), b);
}

size_t Endpoint::Impl::EncodeTooLarge(uint32_t socket, Type type, uint16_t mid, const Token& token, size_t size) {
  char diag[160];
  const int len = std::snprintf(diag, sizeof diag,
                                "response of %zu bytes exceeds the %zu-byte datagram; ask with Block2 or read a smaller "
                                "resource", size, MaxMessage(socket));
  const CachedBody meta{{}, code::kRequestEntityTooLarge, {}, {}, {}};
  return Encode(socket, type, mid, token, meta,
                {reinterpret_cast<const uint8_t*>(diag), static_cast<size_t>(std::max(len, 0))}, {}, {}, {}, nullptr);
}

void Endpoint::Impl::ReplyDirect(uint32_t socket, const Address& from, const Message& req, uint8_t code,
                                  std::string_view diag, std::optional<Block> block1, std::optional<uint32_t> size1,
                                  bool cache) {
  const bool con = req.type == Type::kCon;
  const uint16_t mid = con ? req.mid : NextMid(from);
  Writer w(std::span<uint8_t>(scratch.data(), std::min(scratch.size(), MaxMessage(socket))));
  w.Header(con ? Type::kAck : Type::kNon, code, mid, req.token.view());
  if (block1) w.OptionUint(opt::kBlock1, block1->encode());
  if (size1) w.OptionUint(opt::kSize1, *size1);
  w.Payload({reinterpret_cast<const uint8_t*>(diag.data()), diag.size()});
  const std::span<const uint8_t> bytes(scratch.data(), w.size());
  Send(socket, from, bytes);
  if (cache) {
    auto p = peers.find(from);
    DedupEntry e{std::string(bytes.begin(), bytes.end()), 0, p == peers.end() ? 0 : p->second.binding, req.token};
    const size_t extra = HeapBytes(e.reply);
    dedup.Insert(MidKey{from, req.mid}, std::move(e), extra, now());
  }
}

static uint64_t JitterTimeout(const EndpointOptions& o, std::minstd_rand& rng) {
  std::uniform_real_distribution<double> d(1.0, std::max(1.0, o.ack_random_factor));
  return static_cast<uint64_t>(o.ack_timeout_ms * d(rng));
}

void Endpoint::Impl::StartCon(Outgoing::Kind kind, uint64_t owner, const Address& peer, uint32_t socket,
                               uint16_t mid, std::span<const uint8_t> bytes) {
  const uint64_t id = ++last_id;
  Outgoing o{kind, owner, peer, socket, mid, 0, 0, 0, std::string(bytes.begin(), bytes.end())};
  o.timeout_ms = JitterTimeout(opt, rng);
  o.next_at_ms = now() + o.timeout_ms;
  timers.Schedule(o.next_at_ms, TimerKind::kRetransmit, id);
  outgoing_by_mid[MidKey{peer, mid}] = id;
  outgoing.emplace(id, std::move(o));
  if (Peer* p = peers.count(peer) ? &peers[peer] : nullptr) ++p->refs;
  Send(socket, peer, bytes);
  ArmTimer();
}

bool Endpoint::Impl::Deliver(ExchangeId id, const Response& r, std::optional<uint32_t> observe,
                             ObserverId registering) {
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
    mid = NextMid(x.peer);
  }
  CachedBody meta{{}, r.code, r.content_format, r.max_age, r.size1};
  size_t n = Encode(x.socket, type, mid, x.token, meta, r.payload, observe, x.block2, x.block1_echo, &x.resource,
                    x.unasked_blocks);
  if (n == kNeedsBlocks) {
    ++stats.too_large;
    n = EncodeTooLarge(x.socket, type, mid, x.token, r.payload.size());
  } else if (n == 0) {
    meta = CachedBody{{}, code::kBadOption, {}, {}, {}};
    static constexpr char kDiag[] = "block out of range";
    n = Encode(x.socket, type, mid, x.token, meta, {reinterpret_cast<const uint8_t*>(kDiag), sizeof kDiag - 1}, {}, {},
               {}, nullptr);
  }
  const std::span<const uint8_t> bytes(scratch.data(), n);
  if (type == Type::kCon && registering) {  // the observer's first notification, in effect
    StartCon(Outgoing::Kind::kNotification, registering, x.peer, x.socket, mid, bytes);
    if (auto ob = observers.find(registering); ob != observers.end()) {
      ob->second.inflight = last_id;
      PeerSlot& slot = slots[x.peer];  // an answer is not held back, but later notifications are
      if (slot.con == 0) slot.con = last_id;
    }
  } else if (type == Type::kCon) {
    StartCon(Outgoing::Kind::kResponse, id, x.peer, x.socket, mid, bytes);
  } else {
    Send(x.socket, x.peer, bytes);
  }
  const MidKey key{x.peer, x.mid};
  // The code that went out (bytes[1]): a 4.13 or 4.02 may have replaced the handler's 2.05.
  const bool keep = !(x.answered_afresh && code::Cls(bytes[1]) == 2);  // see AnsweredAfresh()
  DedupEntry* e = x.has_dedup ? dedup.Find(key) : nullptr;
  if (!x.has_dedup && keep) {  // a GET refused in its upcall: its reply is kept after all
    auto p = peers.find(x.peer);
    DedupEntry made{std::string(bytes.begin(), bytes.end()), 0, p == peers.end() ? 0 : p->second.binding, x.token};
    const size_t extra = HeapBytes(made.reply);
    dedup.Insert(key, std::move(made), extra, now());
  } else if (e && e->pending == id && !keep) {
    dedup.Erase(key);  // answered: a retransmission is processed again
  } else if (e && e->pending == id) {
    e->pending = 0;
    if (type != Type::kCon) {  // a separate CON response is retransmitted by its own timer
      e->reply.assign(bytes.begin(), bytes.end());
      dedup.SetExtra(key, HeapBytes(e->reply));
    }
  }
  FinishExchange(id);
  return true;
}

}  // namespace tether::coap
