// CloudLink: the whole cloud side of one tetherd, as one object (docs/architecture.md, "Cloud").
//
// Built from the configuration's `upstream` section, it owns what talks to the cloud and what
// joins it to the gateway:
// - HttpClient and Credentials (the secret, access-token or service-account file);
// - CloudBridge: the store's write queue served to the uploader, timestamps in cloud time;
// - upstream::Drainer: uploads each route's queue in order;
// - upstream::CloudClock: the presence node and the cloud clock estimate;
// - one upstream::SyncStream per sync root, and upstream::WatchSet for the paths devices observe
//   outside them.
// Its members are the hooks between them; each cloud event has one handler here:
// - OnReachable(bool): any request's outcome (uploads, presence, streams, reads) -> the bridge
//   (and through it the device side's CloudLinkListener), the clock, the drainer;
// - OnClockChanged(): a new estimate or problem -> the bridge's clock;
// - OnSyncEvent(root, event): a sync root's stream -> LocalCopy::OnSyncData;
// - ReadCloud(...): a device read the tree cannot answer -> a REST read, for LocalCopy;
// - OnObserved(path, bool): a path's first observer / last one gone -> KeepCached + WatchSet;
// - OnQueued(route), OnSettled(route), OnClockReady(): -> the drainer.
// The acknowledgement path is Drainer -> CloudBridge -> Store commit -> OnSettled -> Drainer.
//
// Thread: the loop thread only. Ownership: the daemon owns it; the loop, the store, the local
// copy and the listener outlive it. What it registers with them (the local copy's cloud reader,
// the bridge's hooks) lasts as long as it does (util::Subscription); callbacks arriving after its
// destruction do nothing (util::CallbackScope). Failure: the constructor throws
// std::runtime_error naming the credentials file when it cannot be read or used (tetherd does
// not start); every failure after that is the cloud's, retried and shown in health, never fatal.
//
// Invariants:
// - No cloud request goes out before Start()'s first credential refresh completed (or failed).
// - After Stop() no new cloud request starts except the best-effort "offline" presence write.
// - A route removed from the file keeps draining its backlog (to the paths it was accepted for).
#pragma once

#include <uv.h>

#include <cstddef>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "gateway/cloud/cloud_bridge.h"
#include "gateway/config/config.h"
#include "gateway/config/route_table.h"
#include "gateway/device/cloud_link_listener.h"
#include "gateway/device/local_copy.h"
#include "store/store.h"
#include "upstream/cloud_clock.h"
#include "upstream/credentials.h"
#include "upstream/drainer.h"
#include "upstream/http_client.h"
#include "upstream/sse_parser.h"
#include "upstream/sync_stream.h"
#include "upstream/watch_set.h"
#include "util/callback_scope.h"

namespace tether {

class CloudLink {
 public:
  // config.upstream must be set; sync_roots are the cloud paths streamed into the local copy.
  CloudLink(uv_loop_t* loop, const Config& config, std::set<std::string> sync_roots, store::Store& store,
            LocalCopy& local, CloudLinkListener& listener);
  ~CloudLink();  // the loop must run once more to close the timers
  CloudLink(const CloudLink&) = delete;
  CloudLink& operator=(const CloudLink&) = delete;

  void Start();  // uploads, the clock and the streams start once the first credential is there
  void Stop();   // no new requests; writes the "offline" presence, best effort
  // Reload: the bridge maps queue entries with the new table, the drainer gets new routes at
  // once; a route gone from the table keeps draining its backlog.
  void SetRoutes(std::shared_ptr<const RouteTable> routes);

  // Hooks from the device side (the daemon registers them with DeviceApi).
  void OnQueued(const std::string& route);                  // writes committed to its queue
  void OnObserved(const std::string& cloud_path, bool observed);  // first observer / last gone

  // For health (tetherctl, /metrics, /readyz).
  std::map<std::string, upstream::RouteUploadStats> UploadStats() const { return drainer_->stats(); }
  const upstream::CloudClock& clock() const { return *clock_; }
  const CloudBridge& bridge() const { return *bridge_; }
  struct StreamCounts {
    size_t streaming = 0, polling = 0, connecting = 0;
  };
  StreamCounts Streams() const;  // sync roots and watched paths

 private:
  void OnReachable(bool reachable);       // any request on the link answered (or not)
  void OnClockReachable(bool reachable);  // the clock's own requests
  void OnClockChanged();
  void OnSyncEvent(const std::string& root, const upstream::FirebaseEvent& e, bool full_resync);
  void OnSettled(const std::string& route) { drainer_->Notify(route); }
  void OnClockReady();
  void ReadCloud(const std::string& path, const std::string& query, std::function<void(std::optional<Json>)> done);

  uv_loop_t* loop_;
  store::Store& store_;
  LocalCopy& local_;
  const std::string url_;
  const std::string presence_path_;
  const std::vector<std::string> sync_roots_;
  std::shared_ptr<const RouteTable> routes_;  // in force (a reload replaces it)
  std::string clock_error_;                   // the clock's problem last logged
  size_t upload_routes_ = 0;                  // routes drained from the start (incl. removed ones' backlogs)
  bool stopped_ = false;
  // Construction order: each part only uses the ones above it; destruction runs backwards.
  std::unique_ptr<upstream::HttpClient> http_;
  std::unique_ptr<upstream::Credentials> credentials_;
  std::unique_ptr<CloudBridge> bridge_;
  std::unique_ptr<upstream::Drainer> drainer_;
  std::unique_ptr<upstream::CloudClock> clock_;
  std::vector<std::unique_ptr<upstream::SyncStream>> streams_;
  std::unique_ptr<upstream::WatchSet> watches_;  // observed paths outside the sync roots
  std::vector<util::Subscription> subscriptions_;  // the bridge's hooks, the local copy's reader
  util::CallbackScope scope_;
};

}  // namespace tether
