#include "gateway/device/observer_registry.h"

#include <algorithm>
#include <cassert>

namespace tether {

namespace {
void Erase(std::vector<coap::ObserverId>& v, coap::ObserverId id) { v.erase(std::remove(v.begin(), v.end(), id), v.end()); }
}  // namespace

std::vector<coap::ObserverId> ObserverRegistry::Add(Observer o, std::string path) {
  assert(o.session && o.id);
  const coap::ObserverId id = o.id;
  // The engine reuses an id only for the same registration: it keeps its place in the indexes.
  if (auto old = by_id_.find(id); old != by_id_.end() && old->second.path() == path &&
                                  old->second.session == o.session && old->second.device_path == o.device_path) {
    o.path_ = old->second.path_;
    o.next_of_session_ = old->second.next_of_session_;
    old->second = std::move(o);
    return {};
  }
  Remove(id);
  // One registration per session and device path (+ query): a re-observe replaces the old one.
  std::vector<coap::ObserverId> replaced;
  if (const Observer* prior = FindBySessionPath(*o.session, o.device_path)) replaced.push_back(prior->id);
  auto [p, first] = by_path_.try_emplace(std::move(path));
  p->second.push_back(id);
  o.path_ = &p->first;  // map keys stay put until their entry is erased (with its last observer)
  o.next_of_session_ = 0;
  Observer& added = by_id_.emplace(id, std::move(o)).first->second;
  // Appended: the session's list stays in registration order.
  uint64_t* link = &added.session->first_observer;
  while (*link) link = &by_id_.at(*link).next_of_session_;
  *link = id;
  for (coap::ObserverId other : replaced) Remove(other);  // after the add: the path stays observed
  if (first) on_path_(added.path(), true);
  return replaced;
}

void ObserverRegistry::Unlink(const Observer& o) {
  uint64_t* link = &o.session->first_observer;
  while (*link && *link != o.id) link = &by_id_.at(*link).next_of_session_;
  assert(*link == o.id);
  if (*link) *link = o.next_of_session_;
}

void ObserverRegistry::Remove(coap::ObserverId id) {
  auto it = by_id_.find(id);
  if (it == by_id_.end()) return;
  Unlink(it->second);
  auto p = by_path_.find(it->second.path());
  Erase(p->second, id);
  const bool was_last = p->second.empty();
  std::string last;  // the path this observer leaves unobserved
  if (was_last) last = p->first, by_path_.erase(p);  // the observer's path() dangles from here
  by_id_.erase(it);
  if (was_last) on_path_(last, false);
}

Observer* ObserverRegistry::Find(coap::ObserverId id) {
  auto it = by_id_.find(id);
  return it == by_id_.end() ? nullptr : &it->second;
}

Observer* ObserverRegistry::FindBySessionPath(const Session& session, const std::string& device_path) {
  for (coap::ObserverId id = session.first_observer; id;) {
    Observer& o = by_id_.at(id);
    if (o.device_path == device_path) return &o;
    id = o.next_of_session_;
  }
  return nullptr;
}

std::vector<coap::ObserverId> ObserverRegistry::OfSession(const Session& session) const {
  std::vector<coap::ObserverId> out;
  for (coap::ObserverId id = session.first_observer; id; id = by_id_.at(id).next_of_session_) out.push_back(id);
  return out;
}

size_t ObserverRegistry::CountOfSession(const Session& session) const {
  size_t n = 0;
  for (coap::ObserverId id = session.first_observer; id; id = by_id_.at(id).next_of_session_) ++n;
  return n;
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
