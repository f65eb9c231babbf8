#include "gateway/cloud/cloud_bridge.h"

#include <spdlog/spdlog.h>

#include "store/boot_clock.h"
#include "store/entry_age.h"

namespace tether {

std::optional<int64_t> EventCloudTimeMs(const store::QueueEntry& e, int64_t wall_now_ms, int64_t boottime_now_ms,
                                        const std::string& boot_id_now, std::optional<int64_t> offset_now_ms) {
  bool same_boot = !e.boot_id.empty() && e.boot_id == boot_id_now && boottime_now_ms >= e.boottime_ms;
  if (same_boot && offset_now_ms) return wall_now_ms - (boottime_now_ms - e.boottime_ms) + *offset_now_ms;
  if (e.cloud_offset_ms) return e.wall_ms + *e.cloud_offset_ms;
  if (!same_boot && offset_now_ms) return e.wall_ms + *offset_now_ms;
  return std::nullopt;
}

CloudBridge::CloudBridge(store::Store& store, LocalCopy& local, std::shared_ptr<const RouteTable> routes,
                         CloudLinkListener& listener)
    : store_(store), local_(local), listener_(listener), routes_(std::move(routes)) {
  in_flight_source_ = local_.SetUploadsInFlight([this] { return IncrementsInFlight(); });
}

std::vector<uint64_t> CloudBridge::IncrementsInFlight() const {
  std::vector<uint64_t> out;
  out.reserve(increments_out_.size());
  for (const auto& [seq, route] : increments_out_) out.push_back(seq);
  return out;
}

void CloudBridge::SetAuthOverride(AuthOverride tmpl, std::string gateway_id) {
  auth_override_ = std::move(tmpl);
  gateway_id_ = std::move(gateway_id);
  last_device_.clear();
  last_app_.clear();
  last_override_.clear();
}

std::string CloudBridge::RootOf(const std::string& route) const {
  const auto& rs = routes_->routes();
  for (size_t i = 0; i < rs.size(); ++i) {
    if (rs[i].name == route) return JoinPath(routes_->CloudRoot(static_cast<int>(i)));
  }
  return "";  // a route removed by a reload: its backlog drains relative to the cloud root
}

namespace {
bool IsUnder(const std::string& path, const std::string& root) {
  return root.empty() || path == root || path.compare(0, root.size() + 1, root + "/") == 0;
}
std::optional<int64_t> WallOffset(std::optional<int64_t> boot_offset_ms) {
  if (!boot_offset_ms) return std::nullopt;
  return *boot_offset_ms - (store::WallClockMs() - store::BootTimeMs());
}
}  // namespace

std::optional<int64_t> CloudBridge::clock_offset_ms() const { return WallOffset(boot_offset_ms_); }

std::vector<upstream::OutboundOp> CloudBridge::Peek(const std::string& route, size_t max) {
  if (settling_[route] > 0) return {};  // on_settled_ tells the uploader when to come back
  const std::string root = RootOf(route);
  const int64_t wall = store::WallClockMs(), boot = store::BootTimeMs();
  const std::optional<int64_t> upload_offset = WallOffset(upload_boot_offset_ms_);
  RouteConfig::Timestamps timestamps = RouteConfig::Timestamps::kEventTime;
  std::string app;
  for (const auto& r : routes_->routes()) {
    if (r.name == route) timestamps = r.timestamps, app = r.app;
  }
  std::vector<upstream::OutboundOp> out;
  bool waiting = false;  // met a write needing a clock estimate there is not
  // Runs on every return below: a route no longer waiting forgets its wait.
  struct Forget {
    std::map<std::string, ClockWait>& waits;
    const std::string& route;
    const bool& waiting;
    ~Forget() {
      if (!waiting) waits.erase(route);
    }
  } forget{clock_waits_, route, waiting};
  for (const store::QueueEntry& e : store_.queue().Peek(route, max + dead_pending_.size(), acked_through_[route])) {
    if (out.size() == max) break;
    if (dead_pending_.count(e.seq)) continue;
    upstream::OutboundOp op;
    op.seq = e.seq;
    op.route = route;
    switch (e.kind) {
      case store::OpKind::kSet: op.kind = upstream::OutboundOp::Kind::Set; break;
      case store::OpKind::kPush: op.kind = upstream::OutboundOp::Kind::Push; break;
      case store::OpKind::kUpdate:
      case store::OpKind::kIncrementUpdate: op.kind = upstream::OutboundOp::Kind::Update; break;
      case store::OpKind::kRemove: op.kind = upstream::OutboundOp::Kind::Remove; break;
      case store::OpKind::kConditionalSet: op.kind = upstream::OutboundOp::Kind::Conditional; break;
    }
    // Queue entries hold the absolute cloud path they were accepted for. One written before a
    // reload changed the route's cloud pattern (or removed the route) is not under the current
    // root: it goes to the database root with its absolute path, in a batch of its own kind.
    std::string path = JoinPath(SplitPath(e.path));
    std::string op_root = IsUnder(path, root) ? root : "";
    if (!out.empty() && op_root != *out.front().root) break;
    if (!op_root.empty()) path = path == op_root ? "" : path.substr(op_root.size() + 1);
    op.root = op_root;
    op.path = path;
    op.json = e.payload;
    // Server increments are not idempotent: uploaded with the applied mark (exactly once).
    op.exactly_once = e.payload.find("\".sv\":{\"increment\"") != std::string::npos;
    if (e.payload.find(R"(".sv":"timestamp")") == std::string::npos) {
      op.event_time_ms = 0;  // nothing to resolve
    } else if (timestamps == RouteConfig::Timestamps::kArrival) {
      op.event_time_ms = std::nullopt;  // the cloud's time when the write arrives
    } else {
      op.event_time_ms = EventCloudTimeMs(e, wall, boot, store::BootId(), upload_offset);
      if (!op.event_time_ms) {  // this and later writes of the route wait for the clock...
        waiting = true;
        auto [w, fresh] = clock_waits_.try_emplace(route);
        if (fresh) {
          w->second.first = e;
          spdlog::info("route '{}': writes with server timestamps wait for a cloud clock estimate", route);
        }
        if (connected_ && w->second.since_ms == 0) w->second.since_ms = boot;
        bool expired = w->second.since_ms != 0 && boot - w->second.since_ms >= clock_wait_ms_;
        if (!expired || !upload_after_wait_) {
          w->second.holding = true;
          held_for_clock_ = true;
          break;
        }
        // ... at most clock_wait while the cloud answers: then the best estimate there is.
        std::optional<int64_t> stale = WallOffset(boot_offset_ms_);
        op.event_time_ms = EventCloudTimeMs(e, wall, boot, store::BootId(), stale ? stale : std::optional<int64_t>(0));
        if (e.seq > w->second.counted_through) ++estimated_[route], w->second.counted_through = e.seq;
        if (!w->second.told) {
          w->second.told = true;
          spdlog::warn("route '{}': no cloud clock estimate after {} ms of the cloud answering ({}); uploading server "
                       "timestamps with {}", route, clock_wait_ms_, clock_problem_.empty() ? "measuring" : clock_problem_,
                       stale ? "the previous link's estimate" : "the local clock");
        }
        w->second.holding = false;
      }
    }
    if (auth_override_) {
      if (last_override_.empty() || e.device_id != last_device_ || app != last_app_) {
        last_device_ = e.device_id;
        last_app_ = app;
        last_override_ = auth_override_->Render(e.device_id, app, gateway_id_);
      }
      op.auth_override = last_override_;
    }
    if (op.exactly_once) increments_out_.emplace(e.seq, route);
    out.push_back(std::move(op));
  }
  return out;
}

void CloudBridge::Confirmed(const std::string& route, uint64_t up_to_seq) {
  uint64_t& through = acked_through_[route];
  through = std::max(through, up_to_seq);
  for (auto it = increments_out_.begin(); it != increments_out_.end() && it->first <= up_to_seq;) {
    it = it->second == route ? increments_out_.erase(it) : std::next(it);
  }
  store::WriteBatch b;
  b.AckThrough(route, up_to_seq);
  Settle(route, std::move(b), [route](const store::BatchResult& r) {
    // On failure the entries stay queued on disk and are uploaded again after a restart
    // (uploads are idempotent), never lost.
    if (!r.status.ok()) spdlog::error("deleting uploaded writes of route '{}' failed: {}", route, r.status.ToString());
  });
}

void CloudBridge::Settle(const std::string& route, store::WriteBatch batch,
                         std::function<void(const store::BatchResult&)> done) {
  ++settling_[route];
  store_.Submit(std::move(batch), scope_.Guard([this, route, done = std::move(done)](const store::BatchResult& r) {
    done(r);
    if (--settling_[route] == 0) on_settled_(route);
  }));
}

void CloudBridge::DeadLetter(const upstream::OutboundOp& op, int http_status, std::string reason) {
  spdlog::warn("cloud refused write seq {} of route '{}' ({}: {}); kept as a dead letter (tetherctl deadletters)",
               op.seq, op.route, http_status, reason);
  dead_pending_.insert(op.seq);
  increments_out_.erase(op.seq);
  store::WriteBatch b;
  b.MoveToDeadLetters(op.route, op.seq, std::move(reason), http_status, store::WallClockMs());
  store_.Submit(std::move(b), scope_.Guard([this, seq = op.seq](const store::BatchResult& r) {
    if (!r.status.ok() && r.status.code != store::StatusCode::kNotFound) {
      spdlog::error("moving write seq {} to dead letters failed: {}", seq, r.status.ToString());
    }
    dead_pending_.erase(seq);
  }));
}

void CloudBridge::Conflict(const upstream::OutboundOp& op, const std::string& cloud_value_json) {
  const std::string root = op.root.value_or(RootOf(op.route));
  std::string tree_path(1, '/');
  tree_path += root;
  if (!op.path.empty()) tree_path += (root.empty() ? "" : "/") + op.path;
  spdlog::warn("transaction conflict at {}: the cloud holds another value than the device's write "
               "expected; the device's write is dropped and the local copy takes the cloud's value",
               tree_path);
  uint64_t& through = acked_through_[op.route];
  through = std::max(through, op.seq);
  for (auto it = increments_out_.begin(); it != increments_out_.end() && it->first <= op.seq;) {
    it = it->second == op.route ? increments_out_.erase(it) : std::next(it);
  }
  auto cloud = Json::parse(cloud_value_json, nullptr, false);
  store::WriteBatch b;
  b.AckThrough(op.route, op.seq);
  // The writes queued after the lost one still upload: the local copy shows them on top.
  if (!cloud.is_discarded()) local_.AddCloudValue(&b, tree_path, cloud);
  listener_.OnTransactionConflict();
  Settle(op.route, std::move(b), [this](const store::BatchResult& r) {
    if (!r.status.ok()) {
      spdlog::error("recording a transaction conflict failed: {}", r.status.ToString());
      return;
    }
    local_.Committed(r.changed_paths);
  });
}

void CloudBridge::OnLinkChanged(bool connected) {
  if (connected != connected_) spdlog::info("cloud link {}", connected ? "up" : "down");
  connected_ = connected;
  if (!connected) {
    for (auto& [route, w] : clock_waits_) w.since_ms = 0;  // the wait counts only while the cloud answers
  }
  listener_.SetCloudLink(connected_, clock_offset_ms());
}

void CloudBridge::OnClockEstimate(std::optional<int64_t> boot_offset_ms, int64_t rtt_ms, bool current) {
  std::optional<int64_t> before = clock_offset_ms();
  boot_offset_ms_ = boot_offset_ms;
  upload_boot_offset_ms_ = current ? boot_offset_ms : std::nullopt;
  std::optional<int64_t> offset = clock_offset_ms();
  if (offset && (!before || std::llabs(*before - *offset) > 100)) {
    spdlog::info("cloud clock offset {} ms (rtt {} ms)", *offset, rtt_ms);
  }
  listener_.SetCloudLink(connected_, offset);
  if (upload_boot_offset_ms_ && held_for_clock_) {
    held_for_clock_ = false;
    on_clock_ready_();
  }
}

std::map<std::string, CloudBridge::RouteHold> CloudBridge::Holds() const {
  std::map<std::string, RouteHold> out;
  const store::ClockReading now = store::ClockNow();
  for (const auto& [route, w] : clock_waits_) {
    if (!w.holding) continue;
    RouteHold h;
    h.waited_ms = w.since_ms ? now.boottime_ms - w.since_ms : 0;
    h.oldest_age_ms = store::AgeOf(w.first, now).ms;
    h.overdue = !upload_after_wait_ && w.since_ms && h.waited_ms >= clock_wait_ms_;
    if (!connected_) {
      h.reason = "cloud unreachable; writes with server timestamps then wait for a cloud clock estimate";
    } else {
      h.reason = "waiting for a cloud clock estimate (" + (clock_problem_.empty() ? "measuring" : clock_problem_) + ")";
      if (h.overdue) h.reason += "; on_clock_timeout: hold keeps them waiting";
    }
    out.emplace(route, std::move(h));
  }
  return out;
}

}  // namespace tether
