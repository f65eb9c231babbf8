// Incoming path: parse, classify, deduplicate, reassemble Block1, dispatch.
#include "device_proto/endpoint_impl.h"

namespace tether::coap {

ResourceKey ResourceKeyOf(const Address& peer, const Message& m, bool with_method) {
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


void Endpoint::Impl::OnDatagram(uint32_t socket, const Address& from, std::span<const uint8_t> bytes) {
  ++stats.datagrams_in;
  stats.bytes_in += bytes.size();
  const ParseResult pr = Parse(bytes, msg);
  if (!pr.ok()) {
    // Wilddog SDK quirk: empty ACK that still carries the token (64 00 mid token).
    const bool sdk_ack = pr.error == ParseError::kEmptyWithData && msg.type == Type::kAck &&
                         bytes.size() == 4u + msg.token.len;
    if (!sdk_ack) {
      ++stats.malformed;
      // RFC 7252 §4.2: a CON the receiver lacks context to process, a message format error
      // included, is rejected with a matching RST (no state is kept for it).
      if (pr.status == ParseStatus::kMalformed && msg.type == Type::kCon) SendRst(socket, from, msg.mid);
      return;
    }
  }
  Peer* peer = TouchPeer(from, socket);
  if (!peer) return;  // counted in peers_rejected
  handler.OnActivity(from);
  switch (msg.type) {
    case Type::kAck:
    case Type::kRst:
      OnAckOrReset(from, msg.type == Type::kRst);
      return;
    case Type::kCon:
    case Type::kNon:
      if (msg.is_empty()) {
        if (msg.type == Type::kCon) SendRst(socket, from, msg.mid);  // CoAP ping
        return;
      }
      if (!msg.is_request()) {  // we never send requests, so responses are unexpected
        if (msg.type == Type::kCon) SendRst(socket, from, msg.mid);
        return;
      }
      OnRequest(socket, from, *peer);
      return;
  }
}

// The peer has the answer to the request that opened its binding (it sends another): that
// answer is no longer kept. One still being processed keeps its entry (and the peer its mark).
void Endpoint::Impl::ForgetOpener(const Address& from, Peer& peer) {
  const MidKey key{from, peer.opener_mid};
  DedupEntry* d = dedup.Find(key);
  if (d && d->binding == peer.binding && exchanges.count(d->pending)) return;  // pending
  peer.opener_cached = false;
  if (d && d->binding == peer.binding) dedup.Erase(key);
}

void Endpoint::Impl::OnRequest(uint32_t socket, const Address& from, Peer& peer) {
  const MidKey key{from, msg.mid};
  // A duplicate is the same MID and token within the peer's current binding.
  if (DedupEntry* e = dedup.Find(key); e && e->token == msg.token && e->binding == peer.binding) {
    ++stats.duplicates;
    if (!e->reply.empty()) {
      Send(socket, from, {reinterpret_cast<const uint8_t*>(e->reply.data()), e->reply.size()});
    } else if (auto x = exchanges.find(e->pending); x != exchanges.end() && x->second.con) {
      // The client is retransmitting: stop it with an empty ACK; the answer follows as a CON.
      uint8_t b[4];
      Writer w(b);
      w.Header(Type::kAck, code::kEmpty, msg.mid, {});
      x->second.ack_sent = true;
      e->reply.assign(b, b + 4);
      Send(socket, from, {b, 4});
    }
    return;
  }
  // A new request, including a reused MID with a different token (SDK quirk).
  if (peer.opener_cached) ForgetOpener(from, peer);
  // RFC 7252 §5.4.5: a supernumerary occurrence of a non-repeatable option is
  // unrecognized: critical -> 4.02, elective -> ignored (Find() reads the first).
  uint16_t previous = 0;
  for (const Option& o : msg.options) {
    const bool repeated = o.number == previous && !IsRepeatable(o.number);
    previous = o.number;
    if (IsCritical(o.number) && (repeated || !IsRecognized(o.number, o.value.size()))) {
      if (msg.type == Type::kCon) {
        std::string diag = (repeated ? "repeated critical option " : "unrecognized critical option ") +
                           std::to_string(o.number);
        ReplyDirect(socket, from, msg, code::kBadOption, diag);
      }
      return;
    }
  }
  const Option* b2opt = msg.Find(opt::kBlock2);
  std::optional<Block> block2 = b2opt ? Block::Decode(b2opt->value) : std::nullopt;
  const bool bad_block = (b2opt && !block2) || (msg.Find(opt::kBlock1) && !msg.BlockOption(opt::kBlock1));
  if (bad_block) {
    if (msg.type == Type::kCon) ReplyDirect(socket, from, msg, code::kBadOption, "bad block option");
    return;
  }
  const ResourceKey resource = ResourceKeyOf(from, msg, false);
  if (block2 && block2->num > 0 && msg.code == code::kGet) {
    if (CachedBody* c = bodies.Find(resource)) {
      const bool con = msg.type == Type::kCon;
      const uint16_t mid = con ? msg.mid : NextMid(from);
      size_t n = Encode(socket, con ? Type::kAck : Type::kNon, mid, msg.token, *c,
                        {reinterpret_cast<const uint8_t*>(c->body.data()), c->body.size()}, {}, block2, {}, nullptr);
      if (n == 0) {
        ReplyDirect(socket, from, msg, code::kBadOption, "block out of range");
        return;
      }
      Send(socket, from, std::span<const uint8_t>(scratch.data(), n));  // a GET: nothing kept
      return;
    }
  }
  std::string body;
  std::optional<Block> block1_echo;
  if (msg.Find(opt::kBlock1)) {
    if (!HandleBlock1(socket, from, body, block1_echo)) return;
  }

  const ExchangeId id = ++last_id;
  const bool afresh = AnsweredAfresh(msg);
  Exchange x{from, socket, msg.mid, msg.token, msg.type == Type::kCon, false, block2, block1_echo, resource, false,
             afresh, !afresh};
  exchanges.emplace(id, std::move(x));
  ++peer.refs;
  // A GET's entry is made only if it is still pending after the upcall: no datagram arrives
  // during it, and one answered at once leaves no entry (nor a FIFO record) behind.
  if (!afresh) dedup.Insert(key, DedupEntry{{}, id, peer.binding, msg.token}, 0, now());
  ++stats.requests;
  const std::span<const uint8_t> payload =
      block1_echo ? std::span<const uint8_t>(reinterpret_cast<const uint8_t*>(body.data()), body.size()) : msg.payload;
  handler.OnRequest(Request{id, from, msg, payload, identity, peer.verified});
  if (!exchanges.count(id)) return;  // answered synchronously: no timers needed
  if (afresh) {
    dedup.Insert(key, DedupEntry{{}, id, peer.binding, msg.token}, 0, now());
    exchanges.at(id).has_dedup = true;
  }
  // One timer entry per pending exchange: a CON's expiry is scheduled when its empty ACK goes out.
  if (msg.type == Type::kCon) {
    timers.Schedule(now() + opt.separate_ack_after_ms, TimerKind::kSeparateAck, id);
  } else {
    timers.Schedule(now() + opt.response_timeout_ms, TimerKind::kExchangeExpiry, id);
  }
  ArmTimer();
}

// Reassembles a Block1 upload (RFC 7959 §2.5). Returns true with the whole
// body when the last block arrived; otherwise it has replied itself.
bool Endpoint::Impl::HandleBlock1(uint32_t socket, const Address& from, std::string& body,
                                   std::optional<Block>& echo) {
  const Block b = *msg.BlockOption(opt::kBlock1);
  const ResourceKey key = ResourceKeyOf(from, msg, true);
  const uint32_t max = static_cast<uint32_t>(opt.max_block1_body);
  Upload* up = nullptr;
  if (b.num == 0) {
    if (auto size1 = msg.UintOption(opt::kSize1); size1 && *size1 > max) {
      ReplyDirect(socket, from, msg, code::kRequestEntityTooLarge, "body too large", {}, max);
      return false;
    }
    up = &uploads.Insert(key, Upload{}, 0, now());
  } else {
    up = uploads.Find(key);
    if (!up || up->body.size() != uint64_t{b.num} * b.size()) {
      uploads.Erase(key);
      ReplyDirect(socket, from, msg, code::kRequestEntityIncomplete, "missing earlier blocks");
      return false;
    }
  }
  if (b.more && msg.payload.size() != b.size()) {
    uploads.Erase(key);
    ReplyDirect(socket, from, msg, code::kBadRequest, "block size mismatch");
    return false;
  }
  if (up->body.size() + msg.payload.size() > max) {
    uploads.Erase(key);
    ReplyDirect(socket, from, msg, code::kRequestEntityTooLarge, "body too large", {}, max);
    return false;
  }
  up->body.append(reinterpret_cast<const char*>(msg.payload.data()), msg.payload.size());
  if (b.more) {
    uploads.SetExtra(key, HeapBytes(up->body));
    ReplyDirect(socket, from, msg, code::kContinue, {}, b);
    return false;
  }
  body = std::move(up->body);
  uploads.Erase(key);
  echo = b;
  return true;
}

void Endpoint::Impl::OnAckOrReset(const Address& from, bool reset) {
  const MidKey key{from, msg.mid};
  if (reset) ++stats.resets_in;
  if (auto it = outgoing_by_mid.find(key); it != outgoing_by_mid.end()) {
    const uint64_t out_id = it->second;
    auto o = outgoing.find(out_id);
    if (o == outgoing.end()) {
      outgoing_by_mid.erase(it);
      return;
    }
    if (!reset && o->second.mid != msg.mid) {
      // The ACK of the transmission a newer state replaced: the peer is alive, the newer one is
      // on its way. It starts its retransmissions afresh.
      outgoing_by_mid.erase(it);
      o->second.prev_mid.reset();
      o->second.attempts = 0;
      return;
    }
    const Outgoing::Kind kind = o->second.kind;
    const uint64_t owner = o->second.owner;
    EraseOutgoing(out_id);
    if (kind == Outgoing::Kind::kNotification) {
      auto ob = observers.find(owner);
      if (ob != observers.end() && reset) {
        DropObserver(owner, DropReason::kReset);
        return;
      }
      if (ob != observers.end() && ob->second.inflight == out_id) ob->second.inflight = 0;
      DrainSlot(from);  // the peer answered: what waited for it goes now
    } else if (reset) {
      handler.OnResponseFailed(owner);
    }
    return;
  }
  if (reset) {
    if (ObserverId* ob = non_notifications.Find(key)) {
      const ObserverId id = *ob;
      non_notifications.Erase(key);
      if (observers.count(id)) DropObserver(id, DropReason::kReset);
    }
  }
}

}  // namespace tether::coap
