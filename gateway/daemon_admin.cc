#include "gateway/daemon_admin.h"

#include <fmt/format.h>
#include <spdlog/spdlog.h>
#include <uv.h>

#include "store/boot_clock.h"
#include "gateway/metrics.h"
#include "tether_version.h"

namespace tether {

namespace {
int64_t AgeSeconds(std::optional<int64_t> wall_ms) {
  return wall_ms ? std::max<int64_t>(0, (store::WallClockMs() - *wall_ms) / 1000) : 0;
}
}  // namespace

bool DaemonAdmin::Ready() { return p_.store && p_.devices && p_.endpoint; }

std::string DaemonAdmin::MetricsText() {
  MetricsRegistry r;
  TetherMetrics m(r);
  std::map<std::string, int> per_app;
  p_.devices->sessions().ForEach([&](const Session& s) { ++per_app[s.app]; });
  for (const auto& app : p_.config->apps) m.sessions.With({app.id, "active"}).Set(per_app[app.id]);
  const DeviceApiCounters& c = p_.devices->counters();
  for (const auto& [key, n] : c.requests) {
    size_t sp = key.find(' ');
    m.requests_total.With({key.substr(0, sp), key.substr(sp + 1)}).Set(static_cast<double>(n));
  }
  m.heartbeats_total.With({}).Set(static_cast<double>(c.heartbeats));
  m.detections_total.With({}).Set(static_cast<double>(c.detections));
  m.ondisconnect_fired_total.With({}).Set(static_cast<double>(c.ondisconnect_fired));
  m.transaction_conflicts_total.With({"local"}).Set(static_cast<double>(c.cas_refused));
  m.transaction_conflicts_total.With({"cloud"}).Set(static_cast<double>(c.transaction_conflicts));
  m.device_events_total.With({"ondisconnect_denied"}).Set(static_cast<double>(c.ondisconnect_denied));
  m.device_events_total.With({"response_failed"}).Set(static_cast<double>(c.responses_failed));
  m.device_events_total.With({"too_large"}).Set(static_cast<double>(p_.endpoint->counters().too_large));
  for (const store::RouteStats& rs : p_.store->queue().AllStats()) {
    m.queue_depth.With({rs.route}).Set(static_cast<double>(rs.depth));
    m.queue_bytes.With({rs.route}).Set(static_cast<double>(rs.bytes));
    m.queue_oldest_age_seconds.With({rs.route}).Set(static_cast<double>(AgeSeconds(rs.oldest_wall_ms)));
    m.dead_letters.With({rs.route}).Set(static_cast<double>(rs.dead_depth));
  }
  m.upstream_up.With({}).Set(p_.devices->cloud_connected() ? 1 : 0);
  if (auto off = p_.devices->cloud_offset_ms()) m.cloud_clock_offset_ms.With({}).Set(static_cast<double>(*off));
  m.store_bytes.With({}).Set(static_cast<double>(p_.store->Check().used_bytes));
  return r.Render();
}

nlohmann::json DaemonAdmin::Status() {
  store::QueueTotals t = p_.store->queue().Totals();
  std::optional<int64_t> oldest;
  for (const auto& rs : p_.store->queue().AllStats()) {
    if (rs.oldest_wall_ms && (!oldest || *rs.oldest_wall_ms < *oldest)) oldest = rs.oldest_wall_ms;
  }
  nlohmann::json j = {
      {"version", TETHER_VERSION},
      {"gateway_id", p_.config->gateway_id},
      {"uptime_s", std::chrono::duration_cast<std::chrono::seconds>(std::chrono::steady_clock::now() - started_).count()},
      {"mode", p_.config->upstream ? "upstream" : "local-only"},
      {"listen", HostPort{p_.config->device.listen.host, p_.endpoint->local_port()}.ToString()},
      {"sessions", p_.devices->sessions().size()},
      {"queue", {{"entries", t.entries}, {"bytes", t.bytes}, {"oldest_age_s", AgeSeconds(oldest)}}},
      {"dead_letters", t.dead_entries}};
  if (p_.config->upstream) {
    j["upstream"] = {{"url", p_.config->upstream->url}, {"up", p_.devices->cloud_connected()}};
    if (auto off = p_.devices->cloud_offset_ms()) j["upstream"]["clock_offset_ms"] = *off;
  }
  return j;
}

nlohmann::json DaemonAdmin::Sessions(const std::optional<std::string>& app) {
  nlohmann::json out = nlohmann::json::array();
  p_.devices->sessions().ForEach([&](const Session& s) {
    if (app && s.app != *app) return;
    out.push_back({{"device", s.device},
                   {"app", s.app},
                   {"state", "active"},
                   {"address", s.addr.to_string()},
                   {"since_s", AgeSeconds(s.created_wall_ms)}});
  });
  return {{"sessions", out}};
}

AdminResult DaemonAdmin::Kick(const std::string& device) {
  if (!p_.devices->Kick(device)) {
    return AdminResult::Error(AdminResult::Code::kNotFound, "no session for device '" + device + "'");
  }
  return AdminResult::Ok("session of '" + device + "' ended; its onDisconnect operations run now", {{"device", device}});
}

nlohmann::json DaemonAdmin::Queue() {
  nlohmann::json routes = nlohmann::json::array();
  for (const auto& rs : p_.store->queue().AllStats()) {
    routes.push_back({{"route", rs.route},
                      {"entries", rs.depth},
                      {"bytes", rs.bytes},
                      {"oldest_age_s", AgeSeconds(rs.oldest_wall_ms)},
                      {"dead_letters", rs.dead_depth},
                      {"dropped_oldest", rs.dropped_oldest},
                      {"expired", rs.expired},
                      {"rejected", rs.rejected}});
  }
  return {{"routes", routes}};
}

nlohmann::json DaemonAdmin::DeadLetters() {
  nlohmann::json out = nlohmann::json::array();
  for (const store::DeadLetter& d : p_.store->queue().DeadLetters(1000)) {
    out.push_back({{"id", std::to_string(d.entry.seq)},
                   {"route", d.entry.route},
                   {"path", d.entry.path},
                   {"device", d.entry.device_id},
                   {"error", fmt::format("{} {}", d.http_status, d.reason)},
                   {"age_s", AgeSeconds(d.dead_at_ms)}});
  }
  return {{"dead_letters", out}};
}

AdminResult DaemonAdmin::ChangeDeadLetters(const std::optional<std::string>& id, bool retry) {
  std::vector<uint64_t> seqs;
  if (id) {
    uint64_t seq = 0;
    try {
      seq = std::stoull(*id);
    } catch (const std::exception&) {
      return AdminResult::Error(AdminResult::Code::kInvalid, "dead letter ids are numbers");
    }
    bool known = false;
    for (const auto& d : p_.store->queue().DeadLetters(SIZE_MAX)) known |= d.entry.seq == seq;
    if (!known) return AdminResult::Error(AdminResult::Code::kNotFound, "no dead letter " + *id);
    seqs.push_back(seq);
  } else {
    for (const auto& d : p_.store->queue().DeadLetters(SIZE_MAX)) seqs.push_back(d.entry.seq);
  }
  store::WriteBatch b;
  for (uint64_t s : seqs) retry ? b.RetryDeadLetter(s) : b.DropDeadLetter(s);
  if (!b.empty()) {
    p_.store->Submit(std::move(b), [retry](const store::BatchResult& r) {
      if (!r.status.ok()) spdlog::error("dead letter {} failed: {}", retry ? "retry" : "drop", r.status.ToString());
    });
  }
  return AdminResult::Ok(fmt::format("{} dead letter(s) {}", seqs.size(), retry ? "requeued" : "dropped"),
                         {{"count", seqs.size()}});
}

AdminResult DaemonAdmin::RetryDeadLetter(const std::optional<std::string>& id) { return ChangeDeadLetters(id, true); }
AdminResult DaemonAdmin::DropDeadLetter(const std::optional<std::string>& id) { return ChangeDeadLetters(id, false); }

nlohmann::json DaemonAdmin::StoreCheck() {
  store::CheckReport r = p_.store->Check();
  nlohmann::json tables = nlohmann::json::array();
  for (const auto& t : r.tables) tables.push_back({{"name", t.name}, {"entries", t.entries}, {"pages", t.pages}});
  return {{"ok", r.ok},
          {"path", p_.store->path()},
          {"problems", r.problems},
          {"file_bytes", r.file_bytes},
          {"map_bytes", r.map_bytes},
          {"used_bytes", r.used_bytes},
          {"tables", tables}};
}

}  // namespace tether
