#include "gateway/cloud_bridge.h"

#include <spdlog/spdlog.h>

#include "store/boot_clock.h"

namespace tether {

int64_t EventCloudTimeMs(const store::QueueEntry& e, int64_t wall_now_ms, int64_t boottime_now_ms,
                         const std::string& boot_id_now, std::optional<int64_t> offset_now_ms) {
  if (!e.boot_id.empty() && e.boot_id == boot_id_now && boottime_now_ms >= e.boottime_ms &&
      (offset_now_ms || !e.cloud_offset_ms)) {
    return wall_now_ms - (boottime_now_ms - e.boottime_ms) + offset_now_ms.value_or(0);
  }
  return e.wall_ms + e.cloud_offset_ms.value_or(offset_now_ms.value_or(0));
}

CloudBridge::CloudBridge(store::Store& store, DeviceApi& devices, std::shared_ptr<const RouteTable> routes)
    : store_(store), devices_(devices), routes_(std::move(routes)) {}

std::string CloudBridge::RootOf(const std::string& route) const {
  const auto& rs = routes_->routes();
  for (size_t i = 0; i < rs.size(); ++i) {
    if (rs[i].name == route) return JoinPath(routes_->CloudRoot(static_cast<int>(i)));
  }
  return "";  // a route removed by a reload: its backlog drains relative to the cloud root
}

std::optional<int64_t> CloudBridge::clock_offset_ms() const {
  if (!boot_offset_ms_) return std::nullopt;
  return *boot_offset_ms_ - (store::WallClockMs() - store::BootTimeMs());
}

std::vector<upstream::OutboundOp> CloudBridge::peek(const std::string& route, size_t max) {
  if (settling_[route] > 0) return {};  // on_settled_ tells the uploader when to come back
  const std::string root = RootOf(route);
  const int64_t wall = store::WallClockMs(), boot = store::BootTimeMs();
  const std::optional<int64_t> offset = clock_offset_ms();
  RouteConfig::Timestamps timestamps = RouteConfig::Timestamps::kEventTime;
  for (const auto& r : routes_->routes()) {
    if (r.name == route) timestamps = r.timestamps;
  }
  std::vector<upstream::OutboundOp> out;
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
    std::string path = JoinPath(SplitPath(e.path));
    if (!root.empty()) {
      path = path == root ? "" : path.compare(0, root.size() + 1, root + "/") == 0 ? path.substr(root.size() + 1) : path;
    }
    op.path = path;
    op.json = e.payload;
    // Server increments are not idempotent: uploaded with the applied mark (exactly once).
    op.exactly_once = e.payload.find("\".sv\":{\"increment\"") != std::string::npos;
    op.event_time_ms = timestamps == RouteConfig::Timestamps::kArrival
                           ? wall + offset.value_or(0)
                           : EventCloudTimeMs(e, wall, boot, store::BootId(), offset);
    out.push_back(std::move(op));
  }
  return out;
}

void CloudBridge::confirmed(const std::string& route, uint64_t up_to_seq) {
  uint64_t& through = acked_through_[route];
  through = std::max(through, up_to_seq);
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
  auto alive = alive_;
  store_.Submit(std::move(batch), [this, alive, route, done = std::move(done)](const store::BatchResult& r) {
    if (!*alive) return;
    done(r);
    if (--settling_[route] == 0 && on_settled_) on_settled_(route);
  });
}

void CloudBridge::dead_letter(const upstream::OutboundOp& op, int http_status, std::string reason) {
  spdlog::warn("cloud refused write seq {} of route '{}' ({}: {}); kept as a dead letter (tetherctl deadletters)",
               op.seq, op.route, http_status, reason);
  dead_pending_.insert(op.seq);
  store::WriteBatch b;
  b.MoveToDeadLetters(op.route, op.seq, std::move(reason), http_status, store::WallClockMs());
  auto alive = alive_;
  store_.Submit(std::move(b), [this, alive, seq = op.seq](const store::BatchResult& r) {
    if (!*alive) return;
    if (!r.status.ok() && r.status.code != store::StatusCode::kNotFound) {
      spdlog::error("moving write seq {} to dead letters failed: {}", seq, r.status.ToString());
    }
    dead_pending_.erase(seq);
  });
}

void CloudBridge::conflict(const upstream::OutboundOp& op, const std::string& cloud_value_json) {
  const std::string root = RootOf(op.route);
  std::string tree_path(1, '/');
  tree_path += root;
  if (!op.path.empty()) tree_path += (root.empty() ? "" : "/") + op.path;
  spdlog::warn("transaction conflict at {}: the cloud holds another value than the device's write "
               "expected; the device's write is dropped and the local copy takes the cloud's value",
               tree_path);
  uint64_t& through = acked_through_[op.route];
  through = std::max(through, op.seq);
  auto cloud = Json::parse(cloud_value_json, nullptr, false);
  store::WriteBatch b;
  b.AckThrough(op.route, op.seq);
  if (!cloud.is_discarded()) b.TreeSet(tree_path, cloud);
  devices_.OnTransactionConflict();
  Settle(op.route, std::move(b), [this](const store::BatchResult& r) {
    if (!r.status.ok()) {
      spdlog::error("recording a transaction conflict failed: {}", r.status.ToString());
      return;
    }
    devices_.OnTreeChanged(r.changed_paths);
  });
}

void CloudBridge::OnLinkChanged(bool connected) {
  if (connected != connected_) spdlog::info("cloud link {}", connected ? "up" : "down");
  connected_ = connected;
  devices_.SetCloudLink(connected_, clock_offset_ms());
}

void CloudBridge::OnClockOffset(int64_t offset_ms, int64_t rtt_ms) {
  std::optional<int64_t> before = clock_offset_ms();
  if (!before || std::llabs(*before - offset_ms) > 100) {
    spdlog::info("cloud clock offset {} ms (rtt {} ms)", offset_ms, rtt_ms);
  }
  boot_offset_ms_ = offset_ms + (store::WallClockMs() - store::BootTimeMs());
  devices_.SetCloudLink(connected_, offset_ms);
}

void CloudBridge::OnSyncData(const std::string& path, const nlohmann::json& value, bool is_patch) {
  store::WriteBatch b;
  std::string tree_path(1, '/');  // not "/" + ...: GCC 12 -O3 reports a false -Wrestrict there
  tree_path += JoinPath(SplitPath(path));
  if (is_patch) b.TreeUpdate(tree_path, value);
  else b.TreeSet(tree_path, value);
  auto alive = alive_;
  store_.Submit(std::move(b), [this, alive](const store::BatchResult& r) {
    if (!*alive) return;
    if (!r.status.ok()) {
      spdlog::warn("cloud data not stored locally: {}", r.status.ToString());
      return;
    }
    devices_.OnTreeChanged(r.changed_paths);
  });
}


}  // namespace tether
