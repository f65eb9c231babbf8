// CloudBridge: the gateway's side of the cloud link.
//
// As upstream::Outbox it serves the store's write queue to the uploader: entries in seq order per
// route, each path (queued as the absolute cloud path it was accepted for) made relative to the
// route's current cloud root — or, for an entry outside it (queued before a reload changed the
// pattern or removed the route), to the database root — and the event time of each write turned
// into cloud time. It tells the device side (CloudLinkListener) whether the cloud is reachable and
// hands the cloud's value after a transaction conflict to the local copy (LocalCopy, the one door
// for cloud data into the tree). It knows neither DeviceApi nor the notifier. Loop thread only;
// the store, the local copy and the listener must outlive it (CloudLink owns it). Store commits
// arriving after its destruction do nothing (util::CallbackScope); the clock-ready and settled
// hooks last as long as the util::Subscription they return.
//
// A write holding {".sv":"timestamp"} on an event-time route is handed out only once its event
// time is known in cloud time (EventCloudTimeMs): until the clock has an estimate measured on the
// current link, Peek() stops before it (order within the route is kept; the route is "held") and
// the clock-ready hook runs when it may go. The wait is bounded: once the route has waited
// `clock_wait` while the cloud answers, its writes go with the best estimate there is (one
// measured on an earlier link, else the local clock; counted per route), unless
// configured to hold, in which case it keeps waiting and says why (Holds()). While the cloud does
// not answer the wait does not count: nothing could be uploaded anyway, and the estimate measured
// once it answers is the right one. Arrival-time routes leave the timestamp to the cloud.
#pragma once

#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>

#include "gateway/config/auth_override.h"
#include "gateway/device/cloud_link_listener.h"
#include "gateway/device/local_copy.h"
#include "gateway/config/route_table.h"
#include "store/store.h"
#include "upstream/outbox.h"
#include "util/callback_scope.h"

namespace tether {

// Cloud time of a queued write's event, or nullopt while it cannot be known (wait for an estimate).
// Within the boot that made it: with a current offset, the elapsed CLOCK_BOOTTIME since the event
// is subtracted from the current corrected time (wall-clock jumps and a box that booted without
// RTC or NTP still get it right); without one, the wall time plus the offset saved with the entry
// (both taken at the event, so later wall-clock steps do not matter). Across a reboot: the wall
// time of the event plus the saved offset, else plus the current one.
std::optional<int64_t> EventCloudTimeMs(const store::QueueEntry& e, int64_t wall_now_ms, int64_t boottime_now_ms,
                                        const std::string& boot_id_now, std::optional<int64_t> offset_now_ms);

class CloudBridge : public upstream::Outbox {
 public:
  // Becomes the local copy's source of uploads in flight (IncrementsInFlight) until destroyed.
  // `listener` hears link and clock changes and conflicts.
  CloudBridge(store::Store& store, LocalCopy& local, std::shared_ptr<const RouteTable> routes,
              CloudLinkListener& listener);
  ~CloudBridge() override = default;

  void SetRoutes(std::shared_ptr<const RouteTable> routes) { routes_ = std::move(routes); }
  // Uploads are evaluated by the cloud's rules as the device that made them.
  void SetAuthOverride(AuthOverride tmpl, std::string gateway_id);
  // Runs when writes held back for want of a clock estimate may go (wakes the uploader).
  [[nodiscard]] util::Subscription SetClockReadyHook(std::function<void()> hook) {
    return on_clock_ready_.Set(std::move(hook));
  }
  // Called when a route's settled ops are deleted from the store and Peek() serves it again.
  [[nodiscard]] util::Subscription SetSettledHook(std::function<void(const std::string& route)> hook) {
    return on_settled_.Set(std::move(hook));
  }
  // See the class comment; defaults: 10 s, upload.
  void SetClockWait(int64_t wait_ms, bool upload_after) { clock_wait_ms_ = wait_ms, upload_after_wait_ = upload_after; }
  // Why the clock has no current estimate (its latest problem, "" when none): the held reason.
  void SetClockProblem(std::string why) { clock_problem_ = std::move(why); }
  struct RouteHold {
    std::string reason;
    int64_t waited_ms = 0;                 // while the cloud answered (0 while it does not)
    std::optional<int64_t> oldest_age_ms;  // age of the first held write (nullopt: unknown)
    bool overdue = false;                  // waited past clock_wait and keeps waiting (hold)
  };
  // Routes whose writes are held right now (as found by their latest peek).
  std::map<std::string, RouteHold> Holds() const;
  // Per route: server timestamps uploaded with an estimate not measured on the current link.
  const std::map<std::string, uint64_t>& EstimatedTimestamps() const { return estimated_; }
  std::optional<int64_t> clock_offset_ms() const;  // cloud - local wall clock, now
  bool connected() const { return connected_; }

  // upstream::Outbox. Confirmed and dead-lettered ops are deleted by a store batch that commits
  // a little later; until then Peek() skips them (acked_through_, dead_pending_). While a
  // confirmation of a route is not yet committed, Peek() returns nothing for it: the next batch
  // leaves only after the store forgot the previous one, so after a crash the uploader resends at
  // most its latest batch (values the cloud already holds as newest) and the cloud never sees an
  // older value of a path after a newer one.
  std::vector<upstream::OutboundOp> Peek(const std::string& route, size_t max) override;
  void Confirmed(const std::string& route, uint64_t up_to_seq) override;
  void DeadLetter(const upstream::OutboundOp& op, int http_status, std::string reason) override;
  // The local copy takes the cloud's value with the later queued writes on top (observers hear
  // it) and the listener counts it.
  void Conflict(const upstream::OutboundOp& op, const std::string& cloud_value_json) override;
  // Queue seqs of increments handed to the uploader and not yet settled: cloud data arriving
  // meanwhile may already count them, so they are not applied again on top of it.
  std::vector<uint64_t> IncrementsInFlight() const;

  // Cloud events.
  void OnLinkChanged(bool connected);
  // The clock's estimate as cloud - CLOCK_BOOTTIME (nullopt: none) and whether it was measured on
  // the current link.
  void OnClockEstimate(std::optional<int64_t> boot_offset_ms, int64_t rtt_ms, bool current);
  std::string RootOf(const std::string& route) const;

 private:
  void Settle(const std::string& route, store::WriteBatch batch, std::function<void(const store::BatchResult&)> done);

  std::map<std::string, uint64_t> acked_through_;
  std::map<std::string, int> settling_;  // route -> confirmations submitted, not yet committed
  util::Hook<void(const std::string&)> on_settled_;
  std::set<uint64_t> dead_pending_;
  std::map<uint64_t, std::string> increments_out_;  // seq -> route, see IncrementsInFlight

  store::Store& store_;
  LocalCopy& local_;
  CloudLinkListener& listener_;
  std::shared_ptr<const RouteTable> routes_;
  bool connected_ = false;
  // Cloud time - CLOCK_BOOTTIME: unlike an offset to the wall clock it survives wall clock steps.
  std::optional<int64_t> boot_offset_ms_;         // best estimate (devices, saved with new writes)
  std::optional<int64_t> upload_boot_offset_ms_;  // set only while measured on the current link
  bool held_for_clock_ = false;                   // a peek stopped before a write needing the offset
  // A route whose latest peek met a write needing the offset without a current one.
  struct ClockWait {
    int64_t since_ms = 0;      // CLOCK_BOOTTIME when the cloud was first seen answering meanwhile; 0: not yet
    bool holding = false;      // the peek stopped there (else: it went with a fallback estimate)
    bool told = false;         // the fallback was logged
    uint64_t counted_through = 0;  // seqs counted in estimated_ (a retried batch is peeked again)
    store::QueueEntry first;   // clocks of the write it stopped at
  };
  std::map<std::string, ClockWait> clock_waits_;
  std::map<std::string, uint64_t> estimated_;
  int64_t clock_wait_ms_ = 10'000;
  bool upload_after_wait_ = true;
  std::string clock_problem_;
  util::Hook<void()> on_clock_ready_;
  std::optional<AuthOverride> auth_override_;
  std::string gateway_id_;
  // Last rendered override (writes come in runs from one device).
  std::string last_device_, last_app_, last_override_;
  util::Subscription in_flight_source_;  // local_'s uploads-in-flight source
  util::CallbackScope scope_;            // guards store commits after destruction
};

}  // namespace tether
