// DaemonAdmin: the running daemon seen through the admin API (metrics, status, tetherctl actions).
// Every call but StoreCheck runs on the loop thread (AdminServer hops there), so it reads module
// state directly; StoreCheck reads its own store snapshot on the admin thread.
#pragma once

#include <uv.h>

#include <chrono>
#include <functional>
#include <map>
#include <optional>
#include <string>

#include "device_proto/endpoint.h"
#include "gateway/admin_server.h"
#include "gateway/cloud_bridge.h"
#include "gateway/config.h"
#include "gateway/device_api.h"
#include "store/store.h"
#include "upstream/drainer.h"

namespace tether {

// What the uploader and the cloud clock report (metrics, status, queue, readiness).
struct UpstreamView {
  std::map<std::string, upstream::RouteUploadStats> routes;  // by route name
  std::optional<int64_t> rtt_ms;                       // round trip of the clock sample in use
  std::optional<int64_t> clock_uncertainty_ms;         // nullopt: no estimate
  std::string clock_source = "none";                   // upstream::CloudClock::SourceName
  bool clock_current = false;                          // measured on the current link
  std::string clock_error;                             // the clock's latest problem
  std::map<std::string, CloudBridge::RouteHold> holds; // routes holding writes back, by name
  std::map<std::string, uint64_t> estimated;           // CloudBridge::EstimatedTimestamps
  size_t streams_streaming = 0, streams_polling = 0, streams_connecting = 0;
};

// A route held this long while the cloud answers makes /readyz fail: long enough for the clock
// sample that follows every reconnect, short enough to be seen at once.
inline constexpr int64_t kHeldNotReadyMs = 2000;
// Writes shed this long (DeviceApi::shedding_for_ms) make /readyz fail: a burst of the fleet sheds
// for a moment; past the SDK's 2 s retransmission, its retries are refused again: sustained.
inline constexpr uint64_t kShedNotReadyMs = 2000;

class DaemonAdmin : public AdminBackend {
 public:
  struct Parts {
    uv_loop_t* loop = nullptr;                       // its clock stamps Session::last_seen_ms
    const Config* config = nullptr;
    store::Store* store = nullptr;
    DeviceApi* devices = nullptr;
    coap::Endpoint* endpoint = nullptr;
    std::function<void(std::function<void(AdminResult)>)> reload;  // re-reads the config file
    std::function<UpstreamView()> upstream;          // null in local-only mode
    std::function<AdminServer::Counters()> admin;    // refusals of the admin API itself
  };
  explicit DaemonAdmin(Parts parts) : p_(std::move(parts)), started_(std::chrono::steady_clock::now()) {}

  std::string MetricsText() override;
  bool Ready() override;
  std::string NotReadyReason() override;
  nlohmann::json Status() override;
  nlohmann::json Sessions(const std::optional<std::string>& app) override;
  AdminResult Kick(const std::string& device) override;
  nlohmann::json Queue() override;
  nlohmann::json DeadLetters() override;
  void RetryDeadLetter(const std::optional<std::string>& id, std::function<void(AdminResult)> done) override;
  void DropDeadLetter(const std::optional<std::string>& id, std::function<void(AdminResult)> done) override;
  void Reload(std::function<void(AdminResult)> done) override { p_.reload(std::move(done)); }
  nlohmann::json StoreCheck() override;

 private:
  void ChangeDeadLetters(const std::optional<std::string>& id, bool retry, std::function<void(AdminResult)> done);
  // "active": heard from within the heartbeat target; "silent": not since, detection pending.
  const char* SessionState(const Session& s) const;
  nlohmann::json GuardStatus() const;  // the device-side limits' refusals (Status)
  Parts p_;
  std::chrono::steady_clock::time_point started_;
};

}  // namespace tether
