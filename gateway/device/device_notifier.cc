#include "gateway/device/device_notifier.h"

#include <spdlog/spdlog.h>

#include <map>
#include <set>

#include "gateway/device/device_reply.h"
#include "gateway/model/route_pattern.h"
#include "gateway/model/value_codec.h"

namespace tether {

namespace {
constexpr uint8_t kForbidden = CoapCodeOf(ErrorCode::kForbidden);  // ends an observation no longer allowed
bool IsInfo(const std::string& path) { return path.rfind(".info", 0) == 0; }
}  // namespace

DeviceNotifier::DeviceNotifier(store::Store& store, ObservationOwner& owner, const CloudStatus& cloud,
                               DeviceApiCounters& counters)
    : store_(store), owner_(owner), cloud_(cloud), counters_(counters) {}

// ---- restart ----

std::vector<PersistedObserver> DeviceNotifier::Restore(const std::string& session_id, const std::string& app,
                                                       const std::string& device,
                                                       std::vector<PersistedObserver> persisted,
                                                       const RouteTable& routes) {
  std::vector<PersistedObserver> kept;
  for (PersistedObserver& o : persisted) {
    o.wire.seq = (o.wire.seq + kSeqRestartJump) & 0xFFFFFF;
    if (!IsInfo(o.device_path)) {
      // The routes in force now decide, as for a new observe: where the path lives, and whether
      // the device may still read it (if not, AttachEndpoint ends the observation with 4.03).
      const std::string plain = o.device_path.substr(0, o.device_path.find('?'));
      auto res = routes.Resolve(app, device, SplitPath(plain));
      if (!res || !res->may_read) {
        restored_denied_.push_back(o.wire);
        continue;
      }
      o.cloud_path = JoinPath(res->cloud_path);
    }
    kept.push_back(std::move(o));
  }
  for (const PersistedObserver& o : kept) restored_.emplace_back(session_id, o);
  return kept;
}

void DeviceNotifier::RestoreCommitted() {
  restore_committed_ = true;
  ReleaseRestored();
}

void DeviceNotifier::AttachEndpoint(coap::Endpoint* endpoint) {
  endpoint_ = endpoint;
  if (!endpoint_) return;
  // An observation the routes no longer allow ends with a final 4.03, so the device does not keep
  // listening on a subscription nothing feeds.
  for (const coap::ObserverState& wire : restored_denied_) {
    static constexpr char kDiag[] = "read not allowed";
    coap::Response end{kForbidden, {reinterpret_cast<const uint8_t*>(kDiag), sizeof kDiag - 1}, std::nullopt, std::nullopt};
    endpoint_->Notify(endpoint_->RestoreObserver(wire), end);
  }
  if (!restored_denied_.empty()) {
    spdlog::warn("{} persisted observation(s) ended with 4.03: the routes no longer allow the read",
                 restored_denied_.size());
  }
  restored_denied_.clear();
  for (auto& [session_id, p] : restored_) {
    Observer o;
    o.id = endpoint_->RestoreObserver(p.wire);
    o.session = owner_.FindSession(session_id);
    if (!o.session) {  // ended before the engine came: so does its observation
      endpoint_->CancelObserver(o.id);
      continue;
    }
    o.device_path = p.device_path;
    o.json = p.json;
    o.native = p.native;
    o.last_digest = 0;  // unknown: the first notification carries the current snapshot
    o.query = p.query;
    restoring_.insert(o.id);
    observers_.Add(std::move(o), p.cloud_path);
  }
  counters_.observers_restored += restored_.size();
  restored_.clear();
  if (restore_committed_) ReleaseRestored();
}

void DeviceNotifier::ReleaseRestored() {
  if (!endpoint_ || restoring_.empty()) return;
  std::vector<std::string> paths;
  bool info = false;
  for (coap::ObserverId id : restoring_) {
    if (Observer* o = observers_.Find(id)) {
      if (IsInfo(o->path())) info = true;
      else paths.push_back(o->path());
    }
  }
  restoring_.clear();
  // The device may have missed changes while the gateway was down: each restored observation
  // hears the current snapshot once (its digest is unknown), others only if theirs changed.
  NotifyPaths(paths);
  if (info) NotifyInfo();
}

// ---- registrations ----

void DeviceNotifier::Add(Observer o, std::string cloud_path) {
  const coap::ObserverId id = o.id;
  const Session& s = *o.session;
  for (coap::ObserverId old : observers_.Add(std::move(o), std::move(cloud_path))) {
    if (old == id) continue;
    restoring_.erase(old);
    if (endpoint_) endpoint_->CancelObserver(old);
  }
  owner_.PersistSession(s.id);
}

void DeviceNotifier::Remove(coap::ObserverId id) {
  Observer* o = observers_.Find(id);
  if (!o) return;
  const Session& s = *o->session;
  observers_.Remove(id);
  restoring_.erase(id);
  owner_.PersistSession(s.id);
}

void DeviceNotifier::OnDropped(coap::ObserverId id, coap::DropReason reason) {
  if (reason == coap::DropReason::kTooLarge) {
    if (Observer* o = observers_.Find(id)) {
      spdlog::info("observation of /{} ended: its snapshot no longer fits one datagram and the device did not "
                   "ask for blocks (it got 4.13)", o->device_path);
    }
  }
  Remove(id);
}

void DeviceNotifier::Unobserve(const Session& s, const std::string& device_path) {
  if (Observer* o = observers_.FindBySessionPath(s, device_path)) {
    const coap::ObserverId id = o->id;
    endpoint_->CancelObserver(id);
    Remove(id);
  }
}

void DeviceNotifier::DropSession(Session& s) {
  for (coap::ObserverId id : observers_.OfSession(s)) {
    if (endpoint_) endpoint_->CancelObserver(id);
    observers_.Remove(id);  // no PersistSession: the record goes with the session
    restoring_.erase(id);
  }
}

void DeviceNotifier::MoveSession(Session& s, const coap::Address& peer) {
  // Including a CON notification being retransmitted.
  if (endpoint_) {
    for (coap::ObserverId id : observers_.OfSession(s)) endpoint_->MoveObserver(id, peer);
  }
  Reencode(s);  // their entries name the old address
}

bool DeviceNotifier::AtCap(const Session& s, const std::string& device_path, uint32_t max) {
  return observers_.CountOfSession(s) >= max && !observers_.FindBySessionPath(s, device_path);
}

std::string DeviceNotifier::ObservationEntries(const Session& s) {
  // - A session with kKeepEntriesFrom observations or more keeps each entry once encoded (until
  //   Reencode): writing its record copies n entries instead of encoding n.
  // - One with fewer encodes them each time: an idle device with one observation would otherwise
  //   hold ~270 B of JSON for its life to save one encode per record write.
  const std::vector<coap::ObserverId> ids = observers_.OfSession(s);
  const bool keep = ids.size() >= kKeepEntriesFrom;
  std::vector<std::string> fresh;
  fresh.reserve(keep ? 0 : ids.size());  // entries points into it: no reallocation
  std::vector<const std::string*> entries;
  for (coap::ObserverId id : ids) {
    Observer* o = observers_.Find(id);
    if (!o) continue;
    if (keep && o->persisted) {
      entries.push_back(o->persisted.get());
      continue;
    }
    o->persisted.reset();  // one kept while the session had more frees its memory
    std::optional<coap::ObserverState> wire = endpoint_ ? endpoint_->ObserverStateOf(id) : std::nullopt;
    if (!wire) continue;
    std::string entry = EncodeObserver({o->device_path, o->path(), o->query, o->json, o->native, *wire});
    if (keep) {
      o->persisted = std::make_unique<std::string>(std::move(entry));
      entries.push_back(o->persisted.get());
    } else {
      entries.push_back(&fresh.emplace_back(std::move(entry)));
    }
  }
  return JoinObservers(entries);
}

std::vector<std::pair<std::string, std::shared_ptr<const Query>>> DeviceNotifier::ObservedReads() {
  std::vector<std::pair<std::string, std::shared_ptr<const Query>>> out;
  std::set<std::string> seen;  // path + '?' + query
  for (const auto& [path, ids] : observers_.All()) {
    if (IsInfo(path)) continue;
    for (coap::ObserverId id : ids) {
      const Observer* o = observers_.Find(id);
      if (!o) continue;
      const std::string canonical = o->query ? o->query->Canonical() : std::string();
      if (seen.insert(path + '?' + canonical).second) out.emplace_back(path, o->query);
    }
  }
  return out;
}

void DeviceNotifier::EndWith403(coap::ObserverId id) {
  static constexpr char kDiag[] = "read not allowed";
  const coap::Response end{kForbidden, {reinterpret_cast<const uint8_t*>(kDiag), sizeof kDiag - 1}, std::nullopt,
                           std::nullopt};
  if (endpoint_) endpoint_->Notify(id, end);  // a final 4.03 without Observe: the device stops listening
  Remove(id);
}

size_t DeviceNotifier::RevokeAfterReload(const RouteTable& routes) {
  // Observations of the sessions that remain, against the new routes (as a restart does).
  std::vector<coap::ObserverId> denied;
  std::vector<std::pair<Observer, std::string>> moved;  // with the cloud path it observes now
  for (const auto& [path, ids] : observers_.All()) {
    for (coap::ObserverId id : ids) {
      const Observer* o = observers_.Find(id);
      if (!o || IsInfo(o->device_path)) continue;
      const Session* s = o->session;
      const std::string plain = o->device_path.substr(0, o->device_path.find('?'));
      auto res = routes.Resolve(s->app, s->device, SplitPath(plain));
      if (!res || !res->may_read) {
        denied.push_back(id);
      } else if (std::string cloud = JoinPath(res->cloud_path); cloud != o->path()) {
        Observer m;  // the path now maps elsewhere: observe that, from its current snapshot
        m.id = o->id;
        m.session = o->session;
        m.device_path = o->device_path;
        m.json = o->json;
        m.native = o->native;
        m.query = o->query;
        moved.emplace_back(std::move(m), std::move(cloud));
      }
    }
  }
  for (coap::ObserverId id : denied) EndWith403(id);
  counters_.observations_revoked += denied.size();
  std::vector<std::string> paths;
  for (auto& [m, cloud] : moved) {
    paths.push_back(cloud);
    Add(std::move(m), std::move(cloud));
  }
  NotifyPaths(paths);
  return denied.size();
}

// ---- checkpoints ----

void DeviceNotifier::CountNotification(Session& s) {
  if (++s.notified_since_checkpoint >= kSeqCheckpointEvery) {
    Reencode(s);  // checkpoints every Observe value
    owner_.PersistSession(s.id);
  }
}

void DeviceNotifier::Reencode(Session& s) {
  for (coap::ObserverId id : observers_.OfSession(s)) {
    if (Observer* o = observers_.Find(id)) o->persisted.reset();
  }
  s.notified_since_checkpoint = 0;
}

// ---- notifications ----

void DeviceNotifier::NotifyPaths(const std::vector<std::string>& changed_paths) {
  if (!endpoint_ || observers_.size() == 0) return;
  std::map<std::string, std::vector<coap::ObserverId>> affected;
  for (const auto& p : changed_paths) {
    std::string path = JoinPath(SplitPath(p));
    for (auto& [obs_path, ids] : observers_.Affected(path)) affected[obs_path] = ids;
  }
  for (const auto& [path, ids] : affected) {
    if (IsInfo(path)) continue;
    // One read per observed path and one encoding per distinct query, however many observers
    // share them. A query observer hears only changes of its query's result.
    Json value = store_.tree().Get("/" + path);
    ++counters_.notify_reads;
    struct View {
      Json value;
      std::string cbor, json;
      uint64_t digest = 0;
    };
    std::map<std::string, View> views;  // by Query::Canonical ("" = the whole snapshot)
    for (coap::ObserverId id : ids) {
      Observer* o = observers_.Find(id);
      if (!o || (!restoring_.empty() && restoring_.count(id))) continue;  // restored: held until durable
      std::string key = o->query ? o->query->Canonical() : std::string();
      auto [it, fresh] = views.try_emplace(key);
      View& v = it->second;
      if (fresh) {
        v.value = o->query ? ApplyQuery(value, *o->query) : value;
        v.cbor = EncodeCbor(v.value);
        v.digest = SnapshotDigest(v.cbor);
        ++counters_.notify_encodes;
      }
      if (o->last_digest == v.digest) continue;  // unchanged snapshot: nothing to send
      o->last_digest = v.digest;
      if (o->json && v.json.empty()) v.json = EncodeJson(v.value);
      const std::string& body = o->json ? v.json : v.cbor;
      std::span<const uint8_t> bytes(reinterpret_cast<const uint8_t*>(body.data()), body.size());
      coap::Response resp{coap::code::kContent, bytes, std::nullopt, std::nullopt};
      if (o->native) resp.content_format = o->json ? kContentFormatJson : kContentFormatCbor;
      ++counters_.notifications;
      Session& s = *o->session;  // outlives a Remove(id) here
      if (endpoint_->Notify(id, resp)) CountNotification(s);
      else Remove(id);
    }
  }
}

Json DeviceNotifier::InfoValue(const std::string& leaf) const {
  if (leaf == "connected") return cloud_.connected();
  if (leaf == "serverTimeOffset") return cloud_.offset_ms().value_or(0);
  return cloud_.CloudNowMs();
}

void DeviceNotifier::NotifyInfo() {
  for (const auto& [path, ids] : observers_.Affected(".info")) {
    std::string leaf = path.substr(path.find('/') + 1);
    if (leaf == "serverTime") continue;  // changes every millisecond: read, don't observe
    Json v = InfoValue(leaf);
    for (coap::ObserverId id : ids) {
      Observer* o = observers_.Find(id);
      if (!o || (!restoring_.empty() && restoring_.count(id))) continue;
      std::string body = o->json ? EncodeJson(v) : EncodeCbor(v);
      uint64_t digest = SnapshotDigest(body);
      if (digest == o->last_digest) continue;
      o->last_digest = digest;
      std::span<const uint8_t> bytes(reinterpret_cast<const uint8_t*>(body.data()), body.size());
      coap::Response resp{coap::code::kContent, bytes, std::nullopt, std::nullopt};
      if (o->native) resp.content_format = o->json ? kContentFormatJson : kContentFormatCbor;
      Session& s = *o->session;  // outlives a Remove(id) here
      if (endpoint_->Notify(id, resp)) CountNotification(s);
      else Remove(id);
      ++counters_.notifications;
    }
  }
}

}  // namespace tether
