// DeviceApi: the Wilddog-compatible device protocol (docs/device-protocol.md) on the CoAP engine.
//
// Sessions (.cs/.ping/.rst/.off), liveness, onDisconnect, data operations and observe. Writes are
// acknowledged (2.05) only after the store committed them durably; every committed tree change is
// turned into notifications for the observers it concerns. Loop thread only; the endpoint and the
// store must outlive this object.
#pragma once

#include <uv.h>

#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>

#include "device_proto/endpoint.h"
#include "gateway/device_auth.h"
#include "gateway/heartbeat_policy.h"
#include "gateway/observer_registry.h"
#include "gateway/route_table.h"
#include "gateway/session_table.h"
#include "gateway/value_codec.h"
#include "store/store.h"
#include "gateway/push_id.h"
#include "gateway/query.h"

namespace tether {

struct DeviceApiCounters {
  uint64_t sessions_opened = 0, sessions_ended = 0, detections = 0, go_offline = 0;
  uint64_t heartbeats = 0, steered_pings = 0, ondisconnect_fired = 0, ondisconnect_denied = 0;
  uint64_t writes = 0, writes_rejected = 0, notifications = 0, auth_failures = 0;
  // Compare-and-set writes refused locally (4.12) / found conflicting in the cloud at upload.
  uint64_t cas_refused = 0, transaction_conflicts = 0;
  std::map<std::string, uint64_t> requests;  // "GET 2.05" -> count
};

class DeviceApi : public coap::Handler {
 public:
  DeviceApi(uv_loop_t* loop, store::Store& store, std::shared_ptr<const RouteTable> routes);
  ~DeviceApi() override;

  void AttachEndpoint(coap::Endpoint* endpoint) { endpoint_ = endpoint; }
  // Reads a cloud path from the cloud (rest_query: Query::RestParams, may be empty); done(nullopt)
  // on failure or timeout. With a reader set, a GET outside every sync root whose route has no
  // pending uploads is answered from the cloud (and the local copy refreshed), falling back to the
  // local copy when the cloud does not answer. Queries: see HandleQuery.
  using CloudReader = std::function<void(const std::string& cloud_path, const std::string& rest_query,
                                         std::function<void(std::optional<Json>)> done)>;
  void SetCloudReader(CloudReader reader, std::vector<std::string> sync_roots) {
    cloud_reader_ = std::move(reader);
    sync_roots_ = std::move(sync_roots);
  }
  // Called with the route name after writes to that route's queue committed (wakes the uploader).
  void SetQueuedHook(std::function<void(const std::string& route)> hook) { on_queued_ = std::move(hook); }
  // Loads persisted sessions: each gets a full timeout from now to come back.
  void RestoreSessions();
  void SetRoutes(std::shared_ptr<const RouteTable> routes);  // reload: applies to new requests
  // Cloud link state and clock estimate (cloud ms - local wall ms); notifies .info observers.
  void SetCloudLink(bool connected, std::optional<int64_t> offset_ms);
  // The uploader found a compare-and-set write conflicting with the cloud (counted).
  void OnTransactionConflict() { ++counters_.transaction_conflicts; }
  // Committed tree changes from elsewhere (cloud sync) reach observers through here.
  void OnTreeChanged(const std::vector<std::string>& changed_paths);
  // Ends a session as if it timed out (tetherctl kick). False if unknown.
  bool Kick(const std::string& device_or_session);
  void Close();

  const SessionTable& sessions() const { return sessions_; }
  const DeviceApiCounters& counters() const { return counters_; }
  int64_t CloudNowMs() const;
  bool cloud_connected() const { return cloud_connected_; }
  std::optional<int64_t> cloud_offset_ms() const;  // cloud - local wall clock, now

  // coap::Handler
  void on_request(const coap::Request& request) override;
  void on_activity(const coap::Address& peer) override;
  void on_observer_dropped(coap::ObserverId id, coap::DropReason reason) override;

 private:
  struct Call;  // one request being answered
  enum class EndCause { kTimeout, kGoOffline, kReplaced, kKicked };

  void HandleOpen(Call& c);
  void HandlePing(Call& c, Session* s);
  void HandleRebind(Call& c);
  void HandleOffline(Call& c, Session* s);
  void HandleInfo(Call& c, const std::vector<std::string>& path);
  void HandleRead(Call& c, Session& s, const std::vector<std::string>& path);
  bool ReadsFromCloud(const std::string& cloud_path, const std::string& route) const;
  bool InSyncRoot(const std::string& cloud_path) const;
  // A GET with a query: from the local tree when it holds the result completely (sync root,
  // remembered cloud result, or no cloud configured), else from the cloud (then remembered).
  void HandleQuery(Call& c, Session& s, const std::string& cloud, const std::string& dev_path,
                   const std::string& route, std::shared_ptr<const Query> q);
  void AnswerQuery(Call& c, Session& s, const std::string& cloud, const std::string& dev_path,
                   const std::string& route, std::shared_ptr<const Query> q, const Json& result);
  // Asks the cloud for the query's result, merges it into the local tree and marks it complete
  // (only while the route has no pending uploads, which are newer than the cloud); observers are
  // notified through the tree change. done(nullopt) when the cloud did not answer.
  void FetchQuery(const std::string& cloud, const std::string& route, std::shared_ptr<const Query> q,
                  std::function<void(std::optional<Json>)> done);
  void HandleWrite(Call& c, Session& s, const std::vector<std::string>& path);
  void HandleOnDisconnect(Call& c, Session& s, const std::vector<std::string>& path, bool cancel);

  // Takes the id by value: callers often pass Session::id of the session this removes.
  void EndSession(std::string session_id, EndCause cause, std::function<void()> done = {});
  // Runs the ended session's onDisconnect operations; retries when an operation registered just
  // before the end was still being committed (the store refuses to drop it).
  void FireOnDisconnect(Session s, std::function<void()> done, int attempt);
  void Reply(Call& c, uint8_t code, std::string payload = {}, std::optional<uint32_t> max_age = {});
  void ReplyError(Call& c, uint8_t code, const std::string& diagnostic, std::optional<uint32_t> max_age = {});
  void ReplyStoreStatus(Call& c, const store::Status& st);
  // Submits the batch; answers 2.05 once it is durable, or the store's refusal.
  void CommitThenReply(Call& c, store::WriteBatch batch);
  bool DecodePayload(Call& c, Json* value);  // false: a 4.00 was sent
  void Unobserve(Call& c, const Session& s, const std::string& device_path);
  void RefreshObservedQueries();  // the cloud came back: re-read what observers of queries see
  store::QueueEntry QueueEntryFor(const std::string& route, const std::string& device, store::OpKind kind,
                                  const std::string& tree_path, const Json& value, int64_t wall_ms) const;
  std::string Encode(const Json& v, bool json) const;
  void NotifyPaths(const std::vector<std::string>& cloud_paths);
  void NotifyInfo();
  Json InfoValue(const std::string& leaf) const;
  static void OnLivenessTick(uv_timer_t* t);

  uv_loop_t* loop_;
  store::Store& store_;
  coap::Endpoint* endpoint_ = nullptr;
  std::shared_ptr<const RouteTable> routes_;
  std::map<std::string, std::unique_ptr<DeviceAuthenticator>> auth_;
  SessionTable sessions_;
  ObserverRegistry observers_;
  HeartbeatPolicy heartbeat_;
  PushIdGenerator push_ids_;
  bool cloud_connected_ = false;
  std::optional<int64_t> cloud_boot_offset_ms_;  // cloud - CLOCK_BOOTTIME: wall clock steps leave it right
  uv_timer_t liveness_;
  DeviceApiCounters counters_;
  std::function<void(const std::string& route)> on_queued_;
  CloudReader cloud_reader_;
  std::vector<std::string> sync_roots_;
  std::shared_ptr<bool> alive_ = std::make_shared<bool>(true);  // guards store callbacks after Close
};

}  // namespace tether
