// CloudBridge: the gateway's side of the cloud link.
//
// As upstream::Outbox it serves the store's write queue to the uploader: entries in seq order per
// route, paths made relative to the route's cloud root, and the event time of each write turned
// into cloud time. As upstream::CloudListener it writes synced cloud data into the local copy and
// tells DeviceApi what changed and whether the cloud is reachable. Loop thread only.
#pragma once

#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>

#include "gateway/device_api.h"
#include "gateway/route_table.h"
#include "store/store.h"
#include "upstream/outbox.h"

namespace tether {

// Cloud time of a queued write's event. Within the boot that made it, the elapsed CLOCK_BOOTTIME
// since the event is subtracted from the current (corrected) time, so wall-clock jumps and a box
// that booted without RTC or NTP still get it right; across a reboot, or while no offset is
// known now (just after a restart), the wall time and the offset known at the event are the
// best evidence left.
int64_t EventCloudTimeMs(const store::QueueEntry& e, int64_t wall_now_ms, int64_t boottime_now_ms,
                         const std::string& boot_id_now, std::optional<int64_t> offset_now_ms);

class CloudBridge : public upstream::Outbox {
 public:
  CloudBridge(store::Store& store, DeviceApi& devices, std::shared_ptr<const RouteTable> routes);

  void SetRoutes(std::shared_ptr<const RouteTable> routes) { routes_ = std::move(routes); }
  // Called when a route's settled ops are deleted from the store and peek() serves it again.
  void SetSettledHook(std::function<void(const std::string& route)> hook) { on_settled_ = std::move(hook); }
  std::optional<int64_t> clock_offset_ms() const;  // cloud - local wall clock, now
  bool connected() const { return connected_; }

  // upstream::Outbox. Confirmed and dead-lettered ops are deleted by a store batch that commits
  // a little later; until then peek() skips them (acked_through_, dead_pending_). While a
  // confirmation of a route is not yet committed, peek() returns nothing for it: the next batch
  // leaves only after the store forgot the previous one, so after a crash the uploader resends at
  // most its latest batch (values the cloud already holds as newest) and the cloud never sees an
  // older value of a path after a newer one.
  std::vector<upstream::OutboundOp> peek(const std::string& route, size_t max) override;
  void confirmed(const std::string& route, uint64_t up_to_seq) override;
  void dead_letter(const upstream::OutboundOp& op, int http_status, std::string reason) override;
  // The local copy takes the cloud's value (observers hear it) and the device API counts it.
  void conflict(const upstream::OutboundOp& op, const std::string& cloud_value_json) override;

  // Cloud events.
  void OnLinkChanged(bool connected);
  void OnClockOffset(int64_t offset_ms, int64_t rtt_ms);
  // Cloud data under a sync root: path is absolute; a patch merges an object of relative paths.
  void OnSyncData(const std::string& path, const nlohmann::json& value, bool is_patch);

  std::string RootOf(const std::string& route) const;

 private:
  void Settle(const std::string& route, store::WriteBatch batch, std::function<void(const store::BatchResult&)> done);

  std::map<std::string, uint64_t> acked_through_;
  std::map<std::string, int> settling_;  // route -> confirmations submitted, not yet committed
  std::function<void(const std::string&)> on_settled_;
  std::set<uint64_t> dead_pending_;

  store::Store& store_;
  DeviceApi& devices_;
  std::shared_ptr<const RouteTable> routes_;
  bool connected_ = false;
  // Cloud time - CLOCK_BOOTTIME: unlike an offset to the wall clock it survives wall clock steps.
  std::optional<int64_t> boot_offset_ms_;
  std::shared_ptr<bool> alive_ = std::make_shared<bool>(true);
};

}  // namespace tether
