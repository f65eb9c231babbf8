#include "gateway/device/local_copy.h"

#include <spdlog/spdlog.h>

#include "gateway/model/route_pattern.h"

namespace tether {

namespace {
// A remembered (non-sync-root) result answered from the local copy is re-read from the cloud in
// the background at most this often per path and query.
constexpr uint64_t kRefreshIntervalMs = 30'000;
}  // namespace

LocalCopy::LocalCopy(uv_loop_t* loop, store::Store& store) : loop_(loop), store_(store) {}

LocalCopy::~LocalCopy() { Close(); }

util::Subscription LocalCopy::SetCloudReader(CloudReader reader, std::vector<std::string> sync_roots) {
  sync_roots_ = std::move(sync_roots);
  return reader_.Set(std::move(reader));
}

bool LocalCopy::InSyncRoot(const std::string& cloud_path) const {
  for (const auto& root : sync_roots_) {
    if (cloud_path == root || cloud_path.compare(0, root.size() + 1, root + "/") == 0 || root.empty()) return true;
  }
  return false;
}

bool LocalCopy::Holds(const std::string& cloud_path, const std::string& query) const {
  return store_.tree().HoldsComplete("/" + cloud_path, query);
}

bool LocalCopy::RefreshDue(const std::string& cloud_path, const std::string& query) {
  const uint64_t now = uv_now(loop_);
  const std::string key = cloud_path + '?' + query;
  auto it = refreshed_ms_.find(key);
  if (it != refreshed_ms_.end() && now - it->second < kRefreshIntervalMs) return false;
  if (refreshed_ms_.size() >= 4096) {  // bounded: forget what is due anyway
    std::erase_if(refreshed_ms_, [&](const auto& kv) { return now - kv.second >= kRefreshIntervalMs; });
  }
  refreshed_ms_[key] = now;  // from the ask on: concurrent GETs ask once
  return true;
}

void LocalCopy::NoteRefreshed(const std::string& cloud_path, const std::string& query) {
  refreshed_ms_[cloud_path + '?' + query] = uv_now(loop_);
}

std::vector<uint64_t> LocalCopy::InFlight() const { return in_flight_(); }

void LocalCopy::Committed(const std::vector<std::string>& changed_paths) {
  on_changed_(changed_paths);
}

void LocalCopy::FetchValue(const std::string& cloud, Answer done) {
  reader_(cloud, std::string(), scope_.Guard([this, cloud, done = std::move(done)](std::optional<Json> fresh) {
    if (!fresh) return done(std::nullopt);
    const std::string tree_path = "/" + cloud;
    NoteRefreshed(cloud, "");
    // A sync root's stream delivered its full value meanwhile: that copy is at least as new.
    if (InSyncRoot(cloud) && Holds(cloud, "")) return done(store_.tree().Get(tree_path));
    store::WriteBatch b;  // remembered for offline reads (the cache bound evicts it eventually)
    b.TreeSetFromCloud(tree_path, *fresh, InFlight());
    b.TreeMarkComplete(tree_path, "");  // queries at or below can be answered from it
    store_.Submit(std::move(b), scope_.Guard([this, tree_path, fresh = std::move(*fresh), done](const store::BatchResult& r) {
      if (!r.status.ok()) {
        spdlog::warn("cloud value of {} not stored locally: {}", tree_path, r.status.ToString());
        return done(fresh);
      }
      done(store_.tree().Get(tree_path));  // the cloud's value with the pending writes on top
      Committed(r.changed_paths);
    }));
  }));
}

void LocalCopy::FetchQuery(const std::string& cloud, std::shared_ptr<const Query> q, Answer done) {
  reader_(cloud, q->RestParams(), scope_.Guard([this, cloud, q, done = std::move(done)](std::optional<Json> fresh) {
    if (!fresh) return done(std::nullopt);
    const std::string tree_path = "/" + cloud;
    NoteRefreshed(cloud, q->Canonical());
    if (InSyncRoot(cloud) && Holds(cloud, "")) return done(ApplyQuery(store_.tree().Get(tree_path), *q));
    Json result = ApplyQuery(*fresh, *q);  // also turns Firebase's array form into children
    store::WriteBatch b;
    if (result.is_object() || result.is_null()) {
      // Merged, not replaced: children outside the result stay (other queries may hold them).
      // Local children inside the range the result covers that it lacks are gone from the cloud.
      Json children = result.is_object() ? result : Json::object();
      std::vector<std::string> stale = StaleKeys(store_.tree().Get(tree_path), result, *q);
      for (const std::string& k : stale) children[k] = nullptr;
      if (!children.empty()) b.TreeUpdateFromCloud(tree_path, std::move(children), InFlight());
      // Ordered by value, a missing child may have moved out of the range rather than gone: what
      // other remembered results claimed about this path is not certain any more.
      if (!stale.empty() && q->order != Query::Order::kKey) b.TreeForgetComplete(tree_path);
    } else {
      b.TreeSetFromCloud(tree_path, result, InFlight());  // a plain value: no children to select
    }
    b.TreeMarkComplete(tree_path, q->Canonical());
    store_.Submit(std::move(b), scope_.Guard([this, tree_path, q, result, done](const store::BatchResult& r) {
      if (!r.status.ok()) {
        spdlog::warn("cloud query result at {} not stored locally: {}", tree_path, r.status.ToString());
        return done(result);
      }
      done(ApplyQuery(store_.tree().Get(tree_path), *q));  // with the pending writes on top
      Committed(r.changed_paths);
    }));
  }));
}

void LocalCopy::OnSyncData(const std::string& path, const Json& value, bool is_patch) {
  store::WriteBatch b;
  std::string tree_path(1, '/');  // not "/" + ...: GCC 12 -O3 reports a false -Wrestrict there
  tree_path += JoinPath(SplitPath(path));
  if (is_patch) {
    b.TreeUpdateFromCloud(tree_path, value, InFlight());
  } else {
    b.TreeSetFromCloud(tree_path, value, InFlight());
    // A put is the cloud's whole value there: held, also offline (a sync root counts as complete
    // from its first full sync on, not before).
    if (!store_.tree().HoldsComplete(tree_path, "")) b.TreeMarkComplete(tree_path, "");
  }
  store_.Submit(std::move(b), scope_.Guard([this](const store::BatchResult& r) {
    if (!r.status.ok()) {
      spdlog::warn("cloud data not stored locally: {}", r.status.ToString());
      return;
    }
    Committed(r.changed_paths);
  }));
}

void LocalCopy::AddCloudValue(store::WriteBatch* b, const std::string& tree_path, const Json& value) const {
  b->TreeSetFromCloud(tree_path, value, InFlight());
}

}  // namespace tether
