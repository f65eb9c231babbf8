#include "gateway/session_table.h"

#include <algorithm>

namespace tether {

Session& SessionTable::Add(Session s) {
  auto owned = std::make_unique<Session>(std::move(s));
  Session* p = owned.get();
  by_short_[p->short_token] = p;
  by_long_[p->long_token] = p;
  by_addr_[p->addr].push_back(p);
  deadlines_.push({p->last_seen_ms + timeout_ms_, p->id});
  by_id_[p->id] = std::move(owned);
  return *p;
}

void SessionTable::Reserve(size_t n) {
  by_id_.reserve(n);
  by_short_.reserve(n);
  by_long_.reserve(n);
  by_addr_.reserve(n);
}

void SessionTable::Remove(const std::string& id) {
  auto it = by_id_.find(id);
  if (it == by_id_.end()) return;
  Session* p = it->second.get();
  by_short_.erase(p->short_token);
  by_long_.erase(p->long_token);
  auto& v = by_addr_[p->addr];
  v.erase(std::remove(v.begin(), v.end(), p), v.end());
  if (v.empty()) by_addr_.erase(p->addr);
  by_id_.erase(it);  // its heap entry is skipped when popped
}

void SessionTable::Rebind(Session& s, const coap::Address& addr) {
  if (s.addr == addr) return;
  auto& v = by_addr_[s.addr];
  v.erase(std::remove(v.begin(), v.end(), &s), v.end());
  if (v.empty()) by_addr_.erase(s.addr);
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

std::vector<std::string> SessionTable::IdsAt(const coap::Address& addr) const {
  std::vector<std::string> ids;
  if (auto it = by_addr_.find(addr); it != by_addr_.end()) {
    for (const Session* s : it->second) ids.push_back(s->id);
  }
  return ids;
}

void SessionTable::Touch(const coap::Address& addr, int64_t now_ms) {
  auto it = by_addr_.find(addr);
  if (it == by_addr_.end()) return;
  for (Session* s : it->second) s->last_seen_ms = std::max(s->last_seen_ms, now_ms);
}

std::vector<std::string> SessionTable::Expired(int64_t now_ms) {
  std::vector<std::string> out;
  while (!deadlines_.empty() && deadlines_.top().at_ms <= now_ms) {
    Deadline d = deadlines_.top();
    deadlines_.pop();
    Session* s = ById(d.id);
    if (!s) continue;
    int64_t real = s->last_seen_ms + timeout_ms_;
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

}  // namespace tether
