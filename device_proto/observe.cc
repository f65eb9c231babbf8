// RFC 7641 observers: registration, notifications (NON, with a CON every N
// or every interval to detect dead observers), cancellation, and the
// handler's hooks for moving one to a new address or re-creating one after a
// restart.
#include "device_proto/endpoint_impl.h"

namespace tether::coap {

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
  auto old = m.observer_by_token.find(tk);
  if (old != m.observer_by_token.end()) seq = (m.observers[old->second].seq + 1) & 0xFFFFFF;  // stays fresh
  const CachedBody meta{{}, response.code, response.content_format, response.max_age, response.size1};
  if (m.encode(x.socket, Type::kAck, x.mid, x.token, meta, response.payload, seq, x.block2, x.block1_echo, nullptr,
               x.unasked_blocks) == kNeedsBlocks) {
    m.deliver(id, response, std::nullopt);  // answered 4.13: nothing registers
    return 0;
  }
  if (old != m.observer_by_token.end()) m.drop_observer(old->second, DropReason::kReplaced);
  const ObserverId oid = ++m.last_id;
  Observer ob{x.peer, x.socket, x.token, seq, 0, m.now(), 0, x.resource, x.unasked_blocks};
  if (Peer* p = m.peers.count(x.peer) ? &m.peers[x.peer] : nullptr) ++p->refs;
  m.observers.emplace(oid, std::move(ob));
  m.observer_by_token[tk] = oid;
  m.deliver(id, response, seq, oid);
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
  CachedBody meta{{}, r.code, r.content_format, r.max_age, r.size1};
  // The final (error) notification goes out once as NON; the observation ends with it.
  size_t n = m.encode(ob.socket, con && !final ? Type::kCon : Type::kNon, mid, ob.token, meta, r.payload,
                      final ? std::nullopt : std::optional<uint32_t>(ob.seq), {}, {}, &ob.resource, ob.unasked_blocks);
  const bool too_large = n == kNeedsBlocks;
  if (too_large) {
    ++m.stats.too_large;
    n = m.encode_too_large(ob.socket, Type::kNon, mid, ob.token, r.payload.size());
  }
  const std::span<const uint8_t> bytes(m.scratch.data(), n);
  if (final || too_large) {  // RFC 7641 §3.2: an error response ends the observation
    const Address peer = ob.peer;
    const uint32_t socket = ob.socket;
    m.drop_observer(id, too_large ? std::optional(DropReason::kTooLarge) : std::nullopt);
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
    m.non_notifications.insert(MidKey{ob.peer, mid}, id, 0, t);
    m.send(ob.socket, ob.peer, bytes);
  }
  return true;
}

void Endpoint::cancel_observer(ObserverId id) { impl_->drop_observer(id, std::nullopt); }

std::optional<ObserverState> Endpoint::observer_state(ObserverId id) const {
  auto it = impl_->observers.find(id);
  if (it == impl_->observers.end()) return std::nullopt;
  const Observer& ob = it->second;
  return ObserverState{ob.peer, ob.socket, ob.token, ob.seq, ob.resource.uri_hash, ob.unasked_blocks};
}

ObserverId Endpoint::restore_observer(const ObserverState& st) {
  Impl& m = *impl_;
  const uint32_t socket = st.socket < m.sockets.size() ? st.socket : 0;
  const TokenKey tk{st.peer, st.token};
  if (auto old = m.observer_by_token.find(tk); old != m.observer_by_token.end()) m.drop_observer(old->second, std::nullopt);
  Peer* p = m.touch_peer(st.peer, socket);
  if (p) ++p->refs;
  const ObserverId oid = ++m.last_id;
  m.observers.emplace(oid, Observer{st.peer, socket, st.token, st.seq & 0xFFFFFF, 0, m.now(), 0,
                                    ResourceKey{st.peer, st.resource}, st.unasked_blocks});
  m.observer_by_token[tk] = oid;
  return oid;
}

bool Endpoint::move_observer(ObserverId id, const Address& to) {
  Impl& m = *impl_;
  auto it = m.observers.find(id);
  if (it == m.observers.end()) return false;
  if (it->second.peer == to) return true;
  const Address from = it->second.peer;
  // The peer `to` normally exists (the rebinding request came from it) and keeps its socket.
  auto known = m.peers.find(to);
  Peer* np = known != m.peers.end() ? &known->second : m.touch_peer(to, it->second.socket);
  if (!np) return false;  // peer table full: the observer stays where it was
  const TokenKey tk{to, it->second.token};
  if (auto clash = m.observer_by_token.find(tk); clash != m.observer_by_token.end() && clash->second != id) {
    m.drop_observer(clash->second, DropReason::kReplaced);
  }
  Observer& ob = m.observers.at(id);  // drop_observer may have rehashed the map
  if (auto t = m.observer_by_token.find(TokenKey{from, ob.token}); t != m.observer_by_token.end() && t->second == id)
    m.observer_by_token.erase(t);
  m.observer_by_token[tk] = id;
  Peer& target = m.peers.at(to);
  ob.peer = to;
  ob.socket = target.socket;
  ob.resource.peer = to;
  m.unref_peer(from);
  ++target.refs;
  if (ob.inflight) {  // the CON in flight is retransmitted to the new address
    if (auto o = m.outgoing.find(ob.inflight); o != m.outgoing.end()) {
      m.outgoing_by_mid.erase(MidKey{o->second.peer, o->second.mid});
      o->second.peer = to;
      o->second.socket = target.socket;
      m.outgoing_by_mid[MidKey{to, o->second.mid}] = ob.inflight;
      m.unref_peer(from);
      ++target.refs;
    }
  }
  return true;
}

}  // namespace tether::coap
