// RFC 7641 observers: registration, notifications (NON, with a CON every N, every interval
// and to a peer silent for probe_after_ms, to detect dead observers), congestion control (one
// CON notification outstanding per peer; newer states wait and replace older ones),
// cancellation, and the handler's hooks for moving one to a new address or re-creating one
// after a restart.
#include "device_proto/endpoint_impl.h"

#include <algorithm>

namespace tether::coap {

void Endpoint::Impl::EraseOutgoing(uint64_t out_id) {
  auto o = outgoing.find(out_id);
  if (o == outgoing.end()) return;
  const Outgoing& out = o->second;
  for (std::optional<uint16_t> mid : {std::optional<uint16_t>(out.mid), out.prev_mid}) {
    if (!mid) continue;
    auto m = outgoing_by_mid.find(MidKey{out.peer, *mid});
    if (m != outgoing_by_mid.end() && m->second == out_id) outgoing_by_mid.erase(m);
  }
  if (auto slot = slots.find(out.peer); slot != slots.end() && slot->second.con == out_id) {
    slot->second.con = 0;
    if (slot->second.waiting.empty()) slots.erase(slot);
  }
  const Address peer = out.peer;
  outgoing.erase(o);
  UnrefPeer(peer);
}

void Endpoint::Impl::StopWaiting(ObserverId id, Observer& ob) {
  if (!ob.waiting) return;
  ob.waiting = false;
  ob.pending.clear();
  auto slot = slots.find(ob.peer);
  if (slot == slots.end()) return;
  std::vector<ObserverId>& w = slot->second.waiting;
  w.erase(std::remove(w.begin(), w.end(), id), w.end());
  if (w.empty() && slot->second.con == 0) slots.erase(slot);
}

void Endpoint::Impl::TransmitNotification(ObserverId id, Observer& ob, std::span<uint8_t> bytes) {
  const uint64_t t = now();
  auto p = peers.find(ob.peer);
  // A peer not heard from lately may be gone: ask it to acknowledge before sending it more.
  const bool silent = p == peers.end() || t - p->second.last_seen_ms >= opt.probe_after_ms;
  ++ob.since_con;
  const bool con = silent || ob.since_con >= opt.con_notify_every || t - ob.last_con_ms >= opt.con_notify_interval_ms;
  const uint16_t mid = p == peers.end() ? static_cast<uint16_t>(rng()) : p->second.next_mid++;
  Stamp(bytes, con ? Type::kCon : Type::kNon, mid);
  ++stats.notifications;
  if (!con) {
    non_notifications.Insert(MidKey{ob.peer, mid}, id, 0, t);
    Send(ob.socket, ob.peer, bytes);
    return;
  }
  StartCon(Outgoing::Kind::kNotification, id, ob.peer, ob.socket, mid, bytes);
  ob.inflight = last_id;
  ob.since_con = 0;
  ob.last_con_ms = t;
  PeerSlot& slot = slots[ob.peer];
  if (slot.con == 0) slot.con = ob.inflight;
}

void Endpoint::Impl::DrainSlot(const Address& peer) {
  auto it = slots.find(peer);
  while (it != slots.end() && it->second.con == 0) {
    // Observers waiting for their own CON (it went out while another held the slot) stay.
    std::vector<ObserverId>& w = it->second.waiting;
    auto next = std::find_if(w.begin(), w.end(), [&](ObserverId id) {
      auto ob = observers.find(id);
      return ob != observers.end() && ob->second.inflight == 0;
    });
    if (next == w.end()) {
      if (w.empty()) slots.erase(it);
      return;
    }
    const ObserverId id = *next;
    w.erase(next);
    Observer& ob = observers.at(id);
    ob.waiting = false;
    TransmitNotification(id, ob, {reinterpret_cast<uint8_t*>(ob.pending.data()), ob.pending.size()});
    ob.pending.clear();  // keeps its capacity for the next state that has to wait
    it = slots.find(peer);  // transmit may have created or filled the slot
  }
}

void Endpoint::Impl::PeerTimedOut(const Address& peer, ObserverId owner) {
  std::vector<ObserverId> ended{owner};
  if (auto slot = slots.find(peer); slot != slots.end()) {
    ended.insert(ended.end(), slot->second.waiting.begin(), slot->second.waiting.end());
    for (ObserverId id : slot->second.waiting) {
      if (auto ob = observers.find(id); ob != observers.end()) {
        ob->second.waiting = false;
        ob->second.pending.clear();
      }
    }
    slot->second.waiting.clear();
    if (slot->second.con == 0) slots.erase(slot);
  }
  for (ObserverId id : ended) {
    if (!observers.count(id)) continue;
    ++stats.observers_timed_out;
    DropObserver(id, DropReason::kTimeout);
  }
}

void Endpoint::Impl::DropObserver(ObserverId id, std::optional<DropReason> reason) {
  auto it = observers.find(id);
  if (it == observers.end()) return;
  Observer& ob = it->second;
  const Address peer = ob.peer;
  StopWaiting(id, ob);
  if (ob.inflight) EraseOutgoing(ob.inflight);
  auto t = observer_by_token.find(TokenKey{ob.peer, ob.token});
  if (t != observer_by_token.end() && t->second == id) observer_by_token.erase(t);
  UnrefPeer(ob.peer);
  observers.erase(it);
  DrainSlot(peer);  // a CON it had outstanding no longer holds the others back
  if (reason) handler.OnObserverDropped(id, *reason);
}

ObserverId Endpoint::RespondObserve(ExchangeId id, const Response& response) {
  Impl& m = *impl_;
  auto it = m.exchanges.find(id);
  if (it == m.exchanges.end()) return 0;
  if (code::Cls(response.code) != 2) {  // RFC 7641 §4.1: an error response does not register
    m.Deliver(id, response, std::nullopt);
    return 0;
  }
  const Exchange& x = it->second;
  const TokenKey tk{x.peer, x.token};
  uint32_t seq = 1;
  auto old = m.observer_by_token.find(tk);
  if (old != m.observer_by_token.end()) seq = (m.observers[old->second].seq + 1) & 0xFFFFFF;  // stays fresh
  const CachedBody meta{{}, response.code, response.content_format, response.max_age, response.size1};
  if (m.Encode(x.socket, Type::kAck, x.mid, x.token, meta, response.payload, seq, x.block2, x.block1_echo, nullptr,
               x.unasked_blocks) == kNeedsBlocks) {
    m.Deliver(id, response, std::nullopt);  // answered 4.13: nothing registers
    return 0;
  }
  if (old != m.observer_by_token.end()) m.DropObserver(old->second, DropReason::kReplaced);
  const ObserverId oid = ++m.last_id;
  Observer ob{x.peer, x.socket, x.token, seq, 0, m.now(), 0, x.resource, x.unasked_blocks, false, {}};
  if (Peer* p = m.peers.count(x.peer) ? &m.peers[x.peer] : nullptr) ++p->refs;
  m.observers.emplace(oid, std::move(ob));
  m.observer_by_token[tk] = oid;
  m.Deliver(id, response, seq, oid);
  return oid;
}

bool Endpoint::Notify(ObserverId id, const Response& r) {
  Impl& m = *impl_;
  auto it = m.observers.find(id);
  if (it == m.observers.end()) return false;
  Observer& ob = it->second;
  const bool final = code::Cls(r.code) != 2;
  ob.seq = (ob.seq + 1) & 0xFFFFFF;
  CachedBody meta{{}, r.code, r.content_format, r.max_age, r.size1};
  // Encoded once; the type and message ID are set when it leaves (now or later).
  size_t n = m.Encode(ob.socket, Type::kNon, 0, ob.token, meta, r.payload,
                      final ? std::nullopt : std::optional<uint32_t>(ob.seq), {}, {}, &ob.resource, ob.unasked_blocks);
  const bool too_large = n == kNeedsBlocks;
  if (too_large) {
    ++m.stats.too_large;
    n = m.EncodeTooLarge(ob.socket, Type::kNon, 0, ob.token, r.payload.size());
  }
  if (n < 4) {  // the encoder never fails for a notification; refuse rather than send garbage
    ++m.stats.send_errors;
    return false;
  }
  const std::span<uint8_t> bytes(m.scratch.data(), n);
  if (final || too_large) {  // RFC 7641 §3.2: an error response ends the observation
    // It goes out once as NON, at once: it ends the observation, whatever else is waiting.
    Stamp(bytes, Type::kNon, m.NextMid(ob.peer));
    ++m.stats.notifications;
    m.Send(ob.socket, ob.peer, bytes);  // before the drop: its callback may reuse the scratch buffer
    m.DropObserver(id, too_large ? std::optional(DropReason::kTooLarge) : std::nullopt);
    return true;
  }
  // NSTART = 1: while a CON notification to this peer is outstanding, the newest state waits
  // (replacing one that waited) and leaves with the retransmission or the acknowledgement.
  auto slot = m.slots.find(ob.peer);
  if (ob.inflight || (slot != m.slots.end() && slot->second.con != 0)) {
    if (ob.waiting) {
      ++m.stats.notifications_superseded;
    } else {
      ob.waiting = true;
      m.slots[ob.peer].waiting.push_back(id);
    }
    ob.pending.assign(bytes.begin(), bytes.end());
    return true;
  }
  m.TransmitNotification(id, ob, bytes);
  return true;
}

void Endpoint::CancelObserver(ObserverId id) { impl_->DropObserver(id, std::nullopt); }

std::optional<ObserverState> Endpoint::ObserverStateOf(ObserverId id) const {
  auto it = impl_->observers.find(id);
  if (it == impl_->observers.end()) return std::nullopt;
  const Observer& ob = it->second;
  return ObserverState{ob.peer, ob.socket, ob.token, ob.seq, ob.resource.uri_hash, ob.unasked_blocks};
}

ObserverId Endpoint::RestoreObserver(const ObserverState& st) {
  Impl& m = *impl_;
  const uint32_t socket = st.socket < m.sockets.size() ? st.socket : 0;
  const TokenKey tk{st.peer, st.token};
  if (auto old = m.observer_by_token.find(tk); old != m.observer_by_token.end()) m.DropObserver(old->second, std::nullopt);
  Peer* p = m.TouchPeer(st.peer, socket);
  if (p) ++p->refs;
  const ObserverId oid = ++m.last_id;
  m.observers.emplace(oid, Observer{st.peer, socket, st.token, st.seq & 0xFFFFFF, 0, m.now(), 0,
                                    ResourceKey{st.peer, st.resource}, st.unasked_blocks, false, {}});
  m.observer_by_token[tk] = oid;
  return oid;
}

bool Endpoint::MoveObserver(ObserverId id, const Address& to) {
  Impl& m = *impl_;
  auto it = m.observers.find(id);
  if (it == m.observers.end()) return false;
  if (it->second.peer == to) return true;
  const Address from = it->second.peer;
  // The peer `to` normally exists (the rebinding request came from it) and keeps its socket.
  auto known = m.peers.find(to);
  Peer* np = known != m.peers.end() ? &known->second : m.TouchPeer(to, it->second.socket);
  if (!np) return false;  // peer table full: the observer stays where it was
  const TokenKey tk{to, it->second.token};
  if (auto clash = m.observer_by_token.find(tk); clash != m.observer_by_token.end() && clash->second != id) {
    m.DropObserver(clash->second, DropReason::kReplaced);
  }
  Observer& ob = m.observers.at(id);  // DropObserver may have rehashed the map
  // A waiting state follows the observer; it is sent from the new address's turn.
  std::string pending = ob.waiting ? std::move(ob.pending) : std::string();
  m.StopWaiting(id, ob);
  if (auto t = m.observer_by_token.find(TokenKey{from, ob.token}); t != m.observer_by_token.end() && t->second == id)
    m.observer_by_token.erase(t);
  m.observer_by_token[tk] = id;
  Peer& target = m.peers.at(to);
  ob.peer = to;
  ob.socket = target.socket;
  ob.resource.peer = to;
  m.UnrefPeer(from);
  ++target.refs;
  if (ob.inflight) {  // the CON in flight is retransmitted to the new address, holding its slot there
    if (auto o = m.outgoing.find(ob.inflight); o != m.outgoing.end()) {
      m.outgoing_by_mid.erase(MidKey{o->second.peer, o->second.mid});
      if (o->second.prev_mid) m.outgoing_by_mid.erase(MidKey{o->second.peer, *o->second.prev_mid});
      o->second.prev_mid.reset();
      if (auto s = m.slots.find(from); s != m.slots.end() && s->second.con == ob.inflight) {
        s->second.con = 0;
        if (s->second.waiting.empty()) m.slots.erase(s);
      }
      o->second.peer = to;
      o->second.socket = target.socket;
      m.outgoing_by_mid[MidKey{to, o->second.mid}] = ob.inflight;
      PeerSlot& slot = m.slots[to];
      if (slot.con == 0) slot.con = ob.inflight;
      m.UnrefPeer(from);
      ++target.refs;
    }
  }
  if (!pending.empty()) {
    ob.waiting = true;
    ob.pending = std::move(pending);
    m.slots[to].waiting.push_back(id);
  }
  m.DrainSlot(from);
  m.DrainSlot(to);
  return true;
}

}  // namespace tether::coap
