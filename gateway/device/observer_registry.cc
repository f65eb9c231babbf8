#include "gateway/device/observer_registry.h"

#include <algorithm>

namespace tether {

namespace {
void Erase(std::vector<coap::ObserverId>& v, coap::ObserverId id) { v.erase(std::remove(v.begin(), v.end(), id), v.end()); }
}  // namespace

std::vector<coap::ObserverId> ObserverRegistry::Add(Observer o) {
  coap::ObserverId id = o.id;
  // The engine reuses an id only for the same registration.
  if (auto old = by_id_.find(id); old != by_id_.end() && old->second.path == o.path &&
                                  old->second.session_id == o.session_id &&
                                  old->second.device_path == o.device_path) {
    old->second = std::move(o);
    return {};
  }
  Remove(id);
  // One registration per session and device path (+ query): a re-observe replaces the old one.
  std::vector<coap::ObserverId> replaced;
  if (const Observer* prior = FindBySessionPath(o.session_id, o.device_path)) replaced.push_back(prior->id);
  by_session_[o.session_id].push_back(id);
  const std::string path = o.path;
  auto [p, first] = by_path_.try_emplace(path);
  p->second.push_back(id);
  by_id_[id] = std::move(o);
  for (coap::ObserverId other : replaced) Remove(other);  // after the add: the path stays observed
  if (first) on_path_(path, true);
  return replaced;
}

void ObserverRegistry::Remove(coap::ObserverId id) {
  auto it = by_id_.find(id);
  if (it == by_id_.end()) return;
  std::string last;  // the path this observer leaves unobserved
  auto p = by_path_.find(it->second.path);
  Erase(p->second, id);
  bool was_last = p->second.empty();
  if (was_last) last = p->first, by_path_.erase(p);
  if (auto s = by_session_.find(it->second.session_id); s != by_session_.end()) {
    Erase(s->second, id);
    if (s->second.empty()) by_session_.erase(s);
  }
  by_id_.erase(it);
  if (was_last) on_path_(last, false);
}

Observer* ObserverRegistry::Find(coap::ObserverId id) {
  auto it = by_id_.find(id);
  return it == by_id_.end() ? nullptr : &it->second;
}

Observer* ObserverRegistry::FindBySessionPath(const std::string& session_id, const std::string& device_path) {
  auto s = by_session_.find(session_id);
  if (s == by_session_.end()) return nullptr;
  for (coap::ObserverId id : s->second) {
    Observer& o = by_id_.at(id);
    if (o.device_path == device_path) return &o;
  }
  return nullptr;
}

std::vector<coap::ObserverId> ObserverRegistry::OfSession(const std::string& session_id) const {
  auto s = by_session_.find(session_id);
  return s == by_session_.end() ? std::vector<coap::ObserverId>() : s->second;
}

size_t ObserverRegistry::CountOfSession(const std::string& session_id) const {
  auto s = by_session_.find(session_id);
  return s == by_session_.end() ? 0 : s->second.size();
}

std::map<std::string, std::vector<coap::ObserverId>> ObserverRegistry::Affected(const std::string& changed) const {
  std::map<std::string, std::vector<coap::ObserverId>> out;
  // Ancestors and the path itself: "", "a", "a/b", ... "a/b/c".
  for (size_t i = 0;; ) {
    std::string prefix = changed.substr(0, i);
    if (auto it = by_path_.find(prefix); it != by_path_.end()) out[prefix] = it->second;
    if (i >= changed.size()) break;
    size_t next = changed.find('/', i + 1);
    i = next == std::string::npos ? changed.size() : next;
  }
  // Descendants: paths starting with "changed/" (everything when changed is the root).
  std::string lo = changed.empty() ? "" : changed + "/";
  for (auto it = by_path_.lower_bound(lo); it != by_path_.end(); ++it) {
    if (!changed.empty() && it->first.compare(0, lo.size(), lo) != 0) break;
    if (it->first != changed) out[it->first] = it->second;
  }
  return out;
}

std::map<std::string, std::vector<coap::ObserverId>> ObserverRegistry::All() const {
  return {by_path_.begin(), by_path_.end()};
}

uint64_t SnapshotDigest(const std::string& bytes) {
  uint64_t h = 1469598103934665603ull;
  for (unsigned char c : bytes) {
    h ^= c;
    h *= 1099511628211ull;
  }
  return h;
}

}  // namespace tether
