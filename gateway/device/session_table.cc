#include "gateway/device/session_table.h"

#include <algorithm>

namespace tether {

namespace {
template <typename Map, typename Key>
void EraseFrom(Map& index, const Key& key, Session* p) {
  auto it = index.find(key);
  if (it == index.end()) return;
  auto& v = it->second;
  v.erase(std::remove(v.begin(), v.end(), p), v.end());
  if (v.empty()) index.erase(it);
}
}  // namespace

int64_t SessionTable::DeadlineOf(const Session& s) const {
  return std::max(s.last_seen_ms + timeout_ms_, s.expire_not_before_ms);
}

Session& SessionTable::Add(Session s) {
  auto owned = std::make_unique<Session>(std::move(s));
  Session* p = owned.get();
  by_short_[p->short_token] = p;
  by_long_[p->long_token] = p;
  by_addr_[p->addr].push_back(p);
  if (!p->anonymous) by_identity_[IdentityKey(p->app, p->device)].push_back(p);
  deadlines_.push({DeadlineOf(*p), p->id});
  by_id_[p->id] = std::move(owned);
  return *p;
}

void SessionTable::Reserve(size_t n) {
  by_id_.reserve(n);
  by_short_.reserve(n);
  by_long_.reserve(n);
  by_addr_.reserve(n);
  by_identity_.reserve(n);
}

void SessionTable::Remove(const std::string& id) {
  auto it = by_id_.find(id);
  if (it == by_id_.end()) return;
  Session* p = it->second.get();
  by_short_.erase(p->short_token);
  by_long_.erase(p->long_token);
  EraseFrom(by_addr_, p->addr, p);
  if (!p->anonymous) EraseFrom(by_identity_, IdentityKey(p->app, p->device), p);
  by_id_.erase(it);  // its heap entry is skipped when popped
}

void SessionTable::Rebind(Session& s, const coap::Address& addr) {
  if (s.addr == addr) return;
  EraseFrom(by_addr_, s.addr, &s);
  s.addr = addr;
  by_addr_[addr].push_back(&s);
}

Session* SessionTable::ById(const std::string& id) {
  auto it = by_id_.find(id);
  return it == by_id_.end() ? nullptr : it->second.get();
}

Session* SessionTable::ByShortToken(std::string_view token) {
  auto it = by_short_.find(std::string(token));
  return it == by_short_.end() ? nullptr : it->second;
}

Session* SessionTable::ByLongToken(std::string_view token) {
  auto it = by_long_.find(std::string(token));
  return it == by_long_.end() ? nullptr : it->second;
}

std::vector<Session*> SessionTable::ByAddress(const coap::Address& addr) const {
  auto it = by_addr_.find(addr);
  return it == by_addr_.end() ? std::vector<Session*>{} : it->second;
}

std::vector<Session*> SessionTable::ByIdentity(const std::string& app, const std::string& device) const {
  auto it = by_identity_.find(IdentityKey(app, device));
  return it == by_identity_.end() ? std::vector<Session*>{} : it->second;
}

const std::vector<Session*>* SessionTable::Touch(const coap::Address& addr, int64_t now_ms) {
  auto it = by_addr_.find(addr);
  if (it == by_addr_.end()) return nullptr;
  for (Session* s : it->second) Touch(*s, now_ms);
  return &it->second;
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
  for (auto& [id, s] : by_id_) {
    s->last_seen_ms += stalled_ms;
    if (s->expire_not_before_ms) s->expire_not_before_ms += stalled_ms;
  }
  // Heap entries are now early: Expired() re-pushes each at its real deadline when it pops.
}

std::vector<std::string> SessionTable::Expired(int64_t now_ms) {
  std::vector<std::string> out;
  while (!deadlines_.empty() && deadlines_.top().at_ms <= now_ms) {
    Deadline d = deadlines_.top();
    deadlines_.pop();
    Session* s = ById(d.id);
    if (!s) continue;
    int64_t real = DeadlineOf(*s);
    if (real <= now_ms) {
      out.push_back(d.id);  // no new heap entry: reported once
    } else {
      deadlines_.push({real, d.id});
    }
  }
  return out;
}

void SessionTable::ForEach(const std::function<void(const Session&)>& fn) const {
  for (const auto& [id, s] : by_id_) fn(*s);
}

void SessionTable::ForEachMutable(const std::function<void(Session&)>& fn) {
  for (auto& [id, s] : by_id_) fn(*s);
}

}  // namespace tether
