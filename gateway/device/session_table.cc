#include "gateway/device/session_table.h"

#include <algorithm>

namespace tether {

SessionTable::~SessionTable() {
  by_id_.ForEach([](Session* s) { delete static_cast<Node*>(s); });
}

int64_t SessionTable::DeadlineOf(const Session& s) const {
  return std::max(s.last_seen_ms + timeout_ms_, s.expire_not_before_ms);
}

Session& SessionTable::Add(Session s) {
  Node* n = new Node(std::move(s));
  n->first_observer = 0;  // a copy of a session that had observations: they ended with it
  by_id_.Insert(n);
  by_short_.Insert(n);
  by_long_.Insert(n);
  by_addr_.Insert(n);
  if (!n->anonymous) by_identity_.Insert(n);
  HeapPush(n, DeadlineOf(*n));
  return *n;
}

void SessionTable::Reserve(size_t n) {
  by_id_.Reserve(n);
  by_short_.Reserve(n);
  by_long_.Reserve(n);
  by_addr_.Reserve(n);
  by_identity_.Reserve(n);
  heap_.reserve(n);
}

void SessionTable::Remove(const std::string& id) {
  // `id` may be the session's own: it is not used once the node is found.
  auto* n = static_cast<Node*>(by_id_.Find(id));
  if (!n) return;
  by_short_.Erase(n);
  by_long_.Erase(n);
  by_addr_.Erase(n);
  if (!n->anonymous) by_identity_.Erase(n);
  HeapErase(n);
  by_id_.Erase(n);
  delete n;
}

void SessionTable::Rebind(Session& s, const coap::Address& addr) {
  if (s.addr == addr) return;
  by_addr_.Erase(&s);
  s.addr = addr;
  by_addr_.Insert(&s);
}

Session* SessionTable::ById(const std::string& id) { return by_id_.Find(id); }

Session* SessionTable::ByShortToken(std::string_view token) { return by_short_.Find(token); }

Session* SessionTable::ByLongToken(std::string_view token) { return by_long_.Find(token); }

std::vector<Session*> SessionTable::ByAddress(const coap::Address& addr) const {
  std::vector<Session*> out;
  by_addr_.ForEachMatch(addr, [&](Session* s) {
    out.push_back(s);
    return true;
  });
  return out;
}

std::vector<Session*> SessionTable::ByIdentity(const std::string& app, const std::string& device) const {
  std::vector<Session*> out;
  by_identity_.ForEachMatch({app, device}, [&](Session* s) {
    out.push_back(s);
    return true;
  });
  return out;
}

const std::vector<Session*>* SessionTable::Touch(const coap::Address& addr, int64_t now_ms) {
  touched_.clear();
  by_addr_.ForEachMatch(addr, [&](Session* s) {
    touched_.push_back(s);
    return true;
  });
  if (touched_.empty()) return nullptr;
  for (Session* s : touched_) Touch(*s, now_ms);
  return &touched_;
}

void SessionTable::Touch(Session& s, int64_t now_ms) {
  s.last_seen_ms = std::max(s.last_seen_ms, now_ms);
  s.expire_not_before_ms = 0;  // heard from: the usual timeout applies again
}

void SessionTable::ShiftForStall(int64_t stalled_ms) {
  if (stalled_ms <= 0) return;
  // Not last_ping: the device's ping timer did not stop. Judged against the unshifted ping, the
  // first ping after a stall looks late and is steered, which is safe; shifted, it could look on
  // time and its 2.05 grow the SDK's interval past the timeout.
  by_id_.ForEach([&](Session* s) {
    s->last_seen_ms += stalled_ms;
    if (s->expire_not_before_ms) s->expire_not_before_ms += stalled_ms;
  });
  // Heap entries are now early: Expired() moves each to its real deadline when it comes up.
}

std::vector<std::string> SessionTable::Expired(int64_t now_ms) {
  std::vector<std::string> out;
  while (!heap_.empty() && heap_.front().at_ms <= now_ms) {
    Node* n = heap_.front().node;
    const int64_t real = DeadlineOf(*n);
    if (real <= now_ms) {
      HeapErase(n);  // out of the heap: reported once
      out.push_back(n->id);
    } else {
      heap_.front().at_ms = real;  // later than before: only down
      SiftDown(0);
    }
  }
  return out;
}

void SessionTable::ForEach(const std::function<void(const Session&)>& fn) const {
  by_id_.ForEach([&](Session* s) { fn(*s); });
}

void SessionTable::ForEachMutable(const std::function<void(Session&)>& fn) {
  by_id_.ForEach([&](Session* s) { fn(*s); });
}

// ---- deadline heap ----

void SessionTable::HeapSet(size_t pos, Deadline d) {
  heap_[pos] = d;
  d.node->heap_pos = static_cast<uint32_t>(pos);
}

void SessionTable::HeapPush(Node* n, int64_t at_ms) {
  heap_.push_back({at_ms, n});
  n->heap_pos = static_cast<uint32_t>(heap_.size() - 1);
  SiftUp(heap_.size() - 1);
}

void SessionTable::HeapErase(Node* n) {
  if (n->heap_pos == Node::kNotQueued) return;
  const size_t pos = n->heap_pos;
  n->heap_pos = Node::kNotQueued;
  const Deadline last = heap_.back();
  heap_.pop_back();
  if (pos == heap_.size()) return;  // it was the last entry
  HeapSet(pos, last);
  SiftUp(pos);
  SiftDown(last.node->heap_pos);
}

void SessionTable::SiftUp(size_t pos) {
  const Deadline d = heap_[pos];
  while (pos > 0) {
    const size_t parent = (pos - 1) / 2;
    if (heap_[parent].at_ms <= d.at_ms) break;
    HeapSet(pos, heap_[parent]);
    pos = parent;
  }
  HeapSet(pos, d);
}

void SessionTable::SiftDown(size_t pos) {
  const Deadline d = heap_[pos];
  const size_t n = heap_.size();
  for (;;) {
    size_t child = 2 * pos + 1;
    if (child >= n) break;
    if (child + 1 < n && heap_[child + 1].at_ms < heap_[child].at_ms) ++child;
    if (d.at_ms <= heap_[child].at_ms) break;
    HeapSet(pos, heap_[child]);
    pos = child;
  }
  HeapSet(pos, d);
}

}  // namespace tether
