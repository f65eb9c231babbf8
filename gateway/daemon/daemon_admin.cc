#include "gateway/daemon/daemon_admin.h"

#include <fmt/format.h>
#include <spdlog/spdlog.h>
#include <uv.h>

#include <cmath>
#include <filesystem>

#include "gateway/device/heartbeat_policy.h"
#include "store/boot_clock.h"
#include "gateway/admin/metrics.h"
#include "tether_version.h"

namespace tether {

namespace {
int64_t AgeSeconds(std::optional<int64_t> wall_ms) {
  return wall_ms ? std::max<int64_t>(0, (store::WallClockMs() - *wall_ms) / 1000) : 0;
}

const char* UploadStateName(upstream::RouteUploadStats::State s) {
  using S = upstream::RouteUploadStats::State;
  switch (s) {
    case S::Idle: return "idle";
    case S::Uploading: return "uploading";
    case S::Backoff: return "backoff";
    case S::AuthPaused: return "auth_paused";
    case S::Stopped: return "stopped";
  }
  return "unknown";
}
}  // namespace

bool DaemonAdmin::Ready() { return p_.store && p_.devices && p_.endpoint; }

std::string DaemonAdmin::NotReadyReason() {
  std::string why;
  if (auto shed = p_.devices->shedding_for_ms(); shed && *shed >= kShedNotReadyMs) {
    why = fmt::format("writes shed for {} s: commits wait longer than device.max_write_wait ({} ms), more writes "
                      "arrive than the store commits",
                      *shed / 1000, p_.config->device.max_write_wait.count());
  }
  if (auto dropping = p_.endpoint->receive_dropping_for_ms(); dropping && *dropping >= kShedNotReadyMs) {
    why += fmt::format("{}datagrams dropped by the kernel for {} s: the CoAP receive queue is full, devices send "
                       "faster than tetherd reads",
                       why.empty() ? "" : "; ", *dropping / 1000);
  }
  if (!p_.upstream) return why;
  for (const auto& [route, h] : p_.upstream().holds) {
    if (h.waited_ms < kHeldNotReadyMs) continue;
    why += fmt::format("{}route '{}' holds its uploads for {} s: {}", why.empty() ? "" : "; ", route,
                       h.waited_ms / 1000, h.reason);
  }
  return why;
}

const char* DaemonAdmin::SessionState(const Session& s) const {
  const int64_t quiet_ms = static_cast<int64_t>(uv_now(p_.loop)) - s.last_seen_ms;
  return quiet_ms > p_.config->device.heartbeat_target.count() + HeartbeatPolicy{}.tolerance_ms ? "silent" : "active";
}

std::string DaemonAdmin::MetricsText() {
  MetricsRegistry r;
  TetherMetrics m(r);
  for (const auto& app : p_.config->apps) {
    for (const char* state : {"active", "silent"}) m.sessions.With({app.id, state});
  }
  p_.devices->sessions().ForEach([&](const Session& s) { m.sessions.With({s.app, SessionState(s)}).Inc(); });
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
  m.device_events_total.With({"ondisconnect_discarded"}).Set(static_cast<double>(c.ondisconnect_discarded));
  m.session_limit_refused_total.With({"observers"}).Set(static_cast<double>(c.observers_refused));
  m.session_limit_refused_total.With({"ondisconnect_count"}).Set(static_cast<double>(c.ondisconnect_refused_count));
  m.session_limit_refused_total.With({"ondisconnect_bytes"}).Set(static_cast<double>(c.ondisconnect_refused_bytes));
  m.revocations_total.With({"session"}).Set(static_cast<double>(c.sessions_revoked));
  m.revocations_total.With({"observation"}).Set(static_cast<double>(c.observations_revoked));
  const coap::Counters e = p_.endpoint->counters();
  m.device_events_total.With({"too_large"}).Set(static_cast<double>(e.too_large));
  m.device_events_total.With({"observe_timeout"}).Set(static_cast<double>(e.observers_timed_out));
  m.device_events_total.With({"session_continued"}).Set(static_cast<double>(c.sessions_continued));
  m.device_events_total.With({"loop_stall"}).Set(static_cast<double>(c.loop_stalls));
  m.device_events_total.With({"continuity_evicted"}).Set(static_cast<double>(p_.devices->continuity_evictions()));
  m.loop_stalled_seconds_total.With({}).Set(static_cast<double>(c.loop_stalled_ms) / 1000.0);
  m.coap_peers.With({"verified"}).Set(static_cast<double>(e.peers_verified));
  m.coap_peers.With({"unverified"}).Set(static_cast<double>(e.peers - e.peers_verified));
  m.coap_peers_dropped_total.With({"evicted"}).Set(static_cast<double>(e.peers_evicted));
  m.coap_peers_dropped_total.With({"refused"}).Set(static_cast<double>(e.peers_rejected));
  m.coap_receive_dropped_total.With({}).Set(static_cast<double>(e.receive_dropped));
  m.coap_receive_buffer_bytes.With({}).Set(static_cast<double>(e.receive_buffer_bytes));
  static const char* kRefusal[] = {"unknown_session", "bound_elsewhere", "auth_token", "long_token"};
  for (int k = 0; k < 4; ++k) {
    m.auth_failures_total.With({kRefusal[k], "answered"}).Set(static_cast<double>(c.token_refusals[k][0]));
    m.auth_failures_total.With({kRefusal[k], "dropped"}).Set(static_cast<double>(c.token_refusals[k][1]));
  }
  m.session_opens_refused_total.With({"rate_limited"}).Set(static_cast<double>(c.opens_rate_limited));
  m.session_opens_refused_total.With({"busy"}).Set(static_cast<double>(c.opens_busy));
  m.sessions_unconfirmed.With({}).Set(static_cast<double>(p_.devices->unconfirmed_sessions()));
  m.session_records_waiting.With({}).Set(static_cast<double>(p_.devices->session_records_waiting()));
  m.unconfirmed_sessions_dropped_total.With({"evicted"}).Set(static_cast<double>(c.unconfirmed_evicted));
  m.unconfirmed_sessions_dropped_total.With({"expired"}).Set(static_cast<double>(c.unconfirmed_expired));
  m.notifications_total.With({"sent"}).Set(static_cast<double>(e.notifications));
  m.notifications_total.With({"superseded"}).Set(static_cast<double>(e.notifications_superseded));
  // Persisted per-route counters: cheap (no table scan), whatever the backlog.
  uint64_t refused_by_limit = 0;
  for (const store::RouteQueueStats& rs : p_.store->queue().AllStats()) {
    m.queue_depth.With({rs.route}).Set(static_cast<double>(rs.depth));
    m.queue_bytes.With({rs.route}).Set(static_cast<double>(rs.bytes));
    m.queue_oldest_age_seconds.With({rs.route}).Set(static_cast<double>(AgeSeconds(rs.oldest_wall_ms)));
    m.dead_letters.With({rs.route}).Set(static_cast<double>(rs.dead_depth));
    m.queue_dropped_total.With({rs.route, "drop_oldest"}).Set(static_cast<double>(rs.dropped_oldest));
    m.queue_dropped_total.With({rs.route, "expired"}).Set(static_cast<double>(rs.expired));
    refused_by_limit += rs.rejected;
  }
  m.writes_refused_total.With({"queue_limit"}).Set(static_cast<double>(refused_by_limit));
  m.writes_refused_total.With({"store_full"}).Set(static_cast<double>(c.writes_refused_store_full));
  m.writes_refused_total.With({"overloaded"}).Set(static_cast<double>(c.writes_shed));
  m.upstream_up.With({}).Set(p_.devices->cloud_connected() ? 1 : 0);
  // NaN (not 0) without an estimate: 0 would claim a clock in perfect agreement.
  auto off = p_.devices->cloud_offset_ms();
  m.cloud_clock_offset_ms.With({}).Set(off ? static_cast<double>(*off) : std::nan(""));
  if (p_.config->dtls) {
    const coap::DtlsCounters d = p_.endpoint->dtls_counters();
    for (auto [result, n] : {std::pair{"ok", d.handshakes_ok}, {"failed", d.handshakes_failed},
                             {"cookie_sent", d.hello_verify_sent}, {"rate_limited", d.hellos_rate_limited},
                             {"over_cap", d.hellos_over_cap}, {"evicted", d.handshakes_evicted}})
      m.dtls_handshakes_total.With({result}).Set(static_cast<double>(n));
    m.dtls_sessions.With({"live"}).Set(static_cast<double>(d.live));
    m.dtls_sessions.With({"sleeping"}).Set(static_cast<double>(d.sleeping));
    m.dtls_sessions.With({"handshaking"}).Set(static_cast<double>(d.handshaking));
    m.dtls_sleeping_bytes.With({}).Set(static_cast<double>(d.sleeping_bytes));
    m.dtls_wakes_total.With({}).Set(static_cast<double>(d.sessions_woken));
  }
  if (p_.upstream) {
    UpstreamView up = p_.upstream();
    uint64_t auth = 0, rejected = 0, retryable = 0, network = 0;
    for (const auto& [route, st] : up.routes) {
      m.drained_ops_total.With({route}).Set(static_cast<double>(st.uploaded_ops));
      auth += st.auth_errors;
      rejected += st.rejected_errors;
      retryable += st.retryable_errors;
      network += st.network_errors;
    }
    m.upstream_errors_total.With({"auth"}).Set(static_cast<double>(auth));
    m.upstream_errors_total.With({"rejected"}).Set(static_cast<double>(rejected));
    m.upstream_errors_total.With({"retryable"}).Set(static_cast<double>(retryable));
    m.upstream_errors_total.With({"network"}).Set(static_cast<double>(network));
    m.cloud_rtt_ms.With({}).Set(up.rtt_ms ? static_cast<double>(*up.rtt_ms) : std::nan(""));
    m.cloud_clock_uncertainty_ms.With({}).Set(up.clock_uncertainty_ms ? static_cast<double>(*up.clock_uncertainty_ms)
                                                                      : std::nan(""));
    m.cloud_clock_current.With({}).Set(up.clock_current ? 1 : 0);
    for (const auto& [route, st] : up.routes) {
      auto hold = up.holds.find(route);
      const std::string state = hold != up.holds.end() ? "held" : UploadStateName(st.state);
      for (const char* s : {"idle", "uploading", "backoff", "auth_paused", "held", "stopped"}) {
        m.upload_state.With({route, s}).Set(state == s ? 1 : 0);
      }
      double held_age = hold != up.holds.end() && hold->second.oldest_age_ms ? *hold->second.oldest_age_ms / 1000.0 : 0;
      m.queue_held_age_seconds.With({route}).Set(std::floor(held_age));
      auto est = up.estimated.find(route);
      m.timestamps_estimated_total.With({route}).Set(est == up.estimated.end() ? 0 : static_cast<double>(est->second));
    }
    m.cloud_streams.With({"streaming"}).Set(static_cast<double>(up.streams_streaming));
    m.cloud_streams.With({"polling"}).Set(static_cast<double>(up.streams_polling));
    m.cloud_streams.With({"connecting"}).Set(static_cast<double>(up.streams_connecting));
  }
  if (p_.admin) {
    const AdminServer::Counters a = p_.admin();
    for (auto [reason, n] : {std::pair{"unauthorized", a.unauthorized}, {"host", a.wrong_host}, {"browser", a.browser}})
      m.admin_refused_total.With({reason}).Set(static_cast<double>(n));
    for (auto [reason, n] : {std::pair{"timeout", a.timed_out}, {"evicted", a.evicted}, {"too_large", a.too_large},
                             {"overloaded", a.overloaded}})
      m.admin_dropped_total.With({reason}).Set(static_cast<double>(n));
  }
  std::error_code ec;
  uintmax_t file = std::filesystem::file_size(p_.store->path() + "/data.mdb", ec);
  m.store_bytes.With({}).Set(ec ? 0 : static_cast<double>(file));
  return r.Render();
}

nlohmann::json DaemonAdmin::GuardStatus() const {
  // What the hostile-LAN limits refused since the start (docs/operations.md, "Security model"):
  // the gateway keeps serving through all of it, so none of it makes /readyz fail.
  const DeviceApiCounters& c = p_.devices->counters();
  uint64_t dropped = 0, answered = 0;
  for (const auto& kind : c.token_refusals) answered += kind[0], dropped += kind[1];
  return {{"unconfirmed_sessions", p_.devices->unconfirmed_sessions()},
          {"unconfirmed_evicted", c.unconfirmed_evicted},
          {"opens_refused", c.opens_rate_limited + c.opens_busy},
          {"token_refusals_answered", answered},
          {"token_refusals_dropped", dropped}};
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
      {"listen", HostPort{p_.config->device.listen.host, p_.endpoint->LocalPort()}.ToString()},
      {"sessions", p_.devices->sessions().size()},
      {"session_records_waiting", p_.devices->session_records_waiting()},
      {"device_guard", GuardStatus()},
      {"queue", {{"entries", t.entries}, {"bytes", t.bytes}, {"oldest_age_s", AgeSeconds(oldest)}}},
      {"dead_letters", t.dead_entries}};
  // null: no write shed lately (device.max_write_wait).
  auto shed = p_.devices->shedding_for_ms();
  j["overload"] = {{"writes_shed", p_.devices->counters().writes_shed},
                   {"shedding_for_s", shed ? nlohmann::json(*shed / 1000) : nlohmann::json()}};
  // null: the kernel dropped no datagram lately (receive queue full).
  auto dropping = p_.endpoint->receive_dropping_for_ms();
  const coap::Counters e = p_.endpoint->counters();
  j["overload"]["receive_dropped"] = e.receive_dropped;
  j["overload"]["receive_dropping_for_s"] = dropping ? nlohmann::json(*dropping / 1000) : nlohmann::json();
  j["overload"]["receive_buffer_bytes"] = e.receive_buffer_bytes;
  if (p_.config->upstream) {
    j["upstream"] = {{"url", p_.config->upstream->url}, {"up", p_.devices->cloud_connected()}};
    auto off = p_.devices->cloud_offset_ms();
    j["upstream"]["clock_offset_ms"] = off ? nlohmann::json(*off) : nlohmann::json();  // null: no estimate
    if (p_.upstream) {
      UpstreamView up = p_.upstream();
      if (up.rtt_ms) j["upstream"]["rtt_ms"] = *up.rtt_ms;
      nlohmann::json clock = {{"source", up.clock_source}, {"current", up.clock_current}};
      if (up.clock_uncertainty_ms) clock["uncertainty_ms"] = *up.clock_uncertainty_ms;
      if (!up.clock_error.empty()) clock["error"] = up.clock_error;
      j["upstream"]["clock"] = std::move(clock);
      j["upstream"]["held_routes"] = up.holds.size();
      j["upstream"]["streams"] = {{"streaming", up.streams_streaming}, {"polling", up.streams_polling},
                                  {"connecting", up.streams_connecting}};
    }
  }
  return j;
}

nlohmann::json DaemonAdmin::Sessions(const std::optional<std::string>& app) {
  nlohmann::json out = nlohmann::json::array();
  p_.devices->sessions().ForEach([&](const Session& s) {
    if (app && s.app != *app) return;
    const int64_t quiet_ms = static_cast<int64_t>(uv_now(p_.loop)) - s.last_seen_ms;
    out.push_back({{"device", s.device},
                   {"app", s.app},
                   {"state", s.confirmed ? SessionState(s) : "unconfirmed"},
                   {"address", s.addr.to_string()},
                   {"last_seen_s", std::max<int64_t>(0, quiet_ms / 1000)},
                   {"since_s", AgeSeconds(s.created_wall_ms)}});
  });
  return {{"sessions", out}};
}

AdminResult DaemonAdmin::Kick(const std::string& device) {
  if (!p_.devices->Kick(device)) {
    return Diagnostic(ErrorCode::kNotFound, "no session for device '" + device + "'");
  }
  return AdminReport{"session of '" + device + "' ended; its onDisconnect operations run now", {{"device", device}}};
}

nlohmann::json DaemonAdmin::Queue() {
  UpstreamView up = p_.upstream ? p_.upstream() : UpstreamView{};
  nlohmann::json routes = nlohmann::json::array();
  for (const auto& rs : p_.store->queue().AllStats()) {
    nlohmann::json row = {{"route", rs.route},
                          {"entries", rs.depth},
                          {"bytes", rs.bytes},
                          {"oldest_age_s", AgeSeconds(rs.oldest_wall_ms)},
                          {"dead_letters", rs.dead_depth},
                          {"dropped_oldest", rs.dropped_oldest},
                          {"expired", rs.expired},
                          {"rejected", rs.rejected}};
    if (auto it = up.routes.find(rs.route); it != up.routes.end()) {
      row["uploaded"] = it->second.uploaded_ops;
      row["upload_state"] = UploadStateName(it->second.state);
      if (!it->second.last_error.empty()) row["last_error"] = it->second.last_error;
    }
    if (auto h = up.holds.find(rs.route); h != up.holds.end()) {
      row["upload_state"] = "held";
      row["held_reason"] = h->second.reason;
      row["held_for_s"] = h->second.waited_ms / 1000;
      if (h->second.oldest_age_ms) row["held_oldest_age_s"] = *h->second.oldest_age_ms / 1000;
    }
    if (auto e = up.estimated.find(rs.route); e != up.estimated.end()) row["estimated_timestamps"] = e->second;
    routes.push_back(std::move(row));
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

void DaemonAdmin::ChangeDeadLetters(const std::optional<std::string>& id, bool retry,
                                    std::function<void(AdminResult)> done) {
  std::vector<uint64_t> seqs;
  if (id) {
    uint64_t seq = 0;
    try {
      size_t used = 0;
      seq = std::stoull(*id, &used);
      if (used != id->size()) throw std::invalid_argument(*id);
    } catch (const std::exception&) {
      return done(Diagnostic::Invalid("dead letter ids are numbers"));
    }
    bool known = false;
    for (const auto& d : p_.store->queue().DeadLetters(1, seq - 1)) known |= d.entry.seq == seq;
    if (!known) return done(Diagnostic(ErrorCode::kNotFound, "no dead letter " + *id));
    seqs.push_back(seq);
  } else {
    for (const auto& d : p_.store->queue().DeadLetters(SIZE_MAX)) seqs.push_back(d.entry.seq);
  }
  store::WriteBatch b;
  for (uint64_t s : seqs) retry ? b.RetryDeadLetter(s) : b.DropDeadLetter(s);
  std::string summary = fmt::format("{} dead letter(s) {}", seqs.size(), retry ? "requeued" : "dropped");
  if (b.empty()) return done(AdminReport{summary, {{"count", 0}}});
  p_.store->Submit(std::move(b), [retry, summary, n = seqs.size(), done = std::move(done)](const store::BatchResult& r) {
    if (!r.status.ok()) {
      spdlog::error("dead letter {} failed: {}", retry ? "retry" : "drop", r.status.ToString());
      return done(Diagnostic(r.status.code == store::StatusCode::kNotFound ? ErrorCode::kNotFound : ErrorCode::kInternal,
                             "dead letter " + std::string(retry ? "retry" : "drop") + " failed: " + r.status.ToString()));
    }
    done(AdminReport{summary, {{"count", n}}});
  });
}

void DaemonAdmin::RetryDeadLetter(const std::optional<std::string>& id, std::function<void(AdminResult)> done) {
  ChangeDeadLetters(id, true, std::move(done));
}
void DaemonAdmin::DropDeadLetter(const std::optional<std::string>& id, std::function<void(AdminResult)> done) {
  ChangeDeadLetters(id, false, std::move(done));
}

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
