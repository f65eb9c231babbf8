// RFC 7641 observers: registration, notifications (NON, with a CON every N
// or every interval to detect dead observers), cancellation.
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
  const size_t n = m.encode(ob.socket, con && !final ? Type::kCon : Type::kNon, mid, ob.token, meta, r.payload,
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

}  // namespace tether::coap
