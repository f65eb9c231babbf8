#include "gateway/admin/metrics.h"

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <stdexcept>

namespace tether {

namespace {

bool ValidName(const std::string& s, bool allow_colon) {
  if (s.empty()) return false;
  for (size_t i = 0; i < s.size(); ++i) {
    char c = s[i];
    bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' || (allow_colon && c == ':') ||
              (i > 0 && c >= '0' && c <= '9');
    if (!ok) return false;
  }
  return true;
}

const char* TypeName(MetricType t) { return t == MetricType::kCounter ? "counter" : "gauge"; }

}  // namespace

void MetricSeries::Inc(double by) {
  if (type_ == MetricType::kCounter && !(by >= 0)) throw std::invalid_argument("counter increment must be >= 0");
  value_ += by;
}

void MetricSeries::Dec(double by) {
  if (type_ == MetricType::kCounter) throw std::invalid_argument("a counter cannot decrease");
  value_ -= by;
}

void MetricSeries::Set(double value) { value_ = value; }

MetricFamily::MetricFamily(std::string name, std::string help, MetricType type, std::vector<std::string> labels)
    : name_(std::move(name)), help_(std::move(help)), type_(type), labels_(std::move(labels)) {}

MetricSeries& MetricFamily::With(const std::vector<std::string>& label_values) {
  if (label_values.size() != labels_.size()) {
    throw std::invalid_argument(name_ + ": expected " + std::to_string(labels_.size()) + " label value(s), got " +
                                std::to_string(label_values.size()));
  }
  return series_.try_emplace(label_values, type_).first->second;
}

void MetricFamily::Remove(const std::vector<std::string>& label_values) { series_.erase(label_values); }

void MetricFamily::Clear() { series_.clear(); }

void MetricFamily::Render(std::string* out) const {
  *out += "# HELP " + name_ + " " + EscapeHelp(help_) + "\n";
  *out += "# TYPE " + name_ + " " + TypeName(type_) + "\n";
  for (const auto& [values, series] : series_) {
    *out += name_;
    if (!labels_.empty()) {
      *out += '{';
      for (size_t i = 0; i < labels_.size(); ++i) {
        if (i) *out += ',';
        *out += labels_[i] + "=\"" + EscapeLabelValue(values[i]) + "\"";
      }
      *out += '}';
    }
    *out += ' ' + FormatMetricValue(series.Value()) + '\n';
  }
}

MetricFamily& MetricsRegistry::Counter(const std::string& name, const std::string& help,
                                       std::vector<std::string> labels) {
  return Declare(name, help, MetricType::kCounter, std::move(labels));
}

MetricFamily& MetricsRegistry::Gauge(const std::string& name, const std::string& help,
                                     std::vector<std::string> labels) {
  return Declare(name, help, MetricType::kGauge, std::move(labels));
}

MetricFamily* MetricsRegistry::Find(const std::string& name) {
  auto it = families_.find(name);
  return it == families_.end() ? nullptr : it->second.get();
}

MetricFamily& MetricsRegistry::Declare(const std::string& name, const std::string& help, MetricType type,
                                       std::vector<std::string> labels) {
  if (!ValidName(name, true)) throw std::invalid_argument("invalid metric name '" + name + "'");
  for (const auto& l : labels) {
    if (!ValidName(l, false) || l.rfind("__", 0) == 0) {
      throw std::invalid_argument(name + ": invalid label name '" + l + "'");
    }
  }
  if (auto* f = Find(name)) {
    if (f->type() != type || f->label_names() != labels) {
      throw std::invalid_argument("metric '" + name + "' already declared with another type or labels");
    }
    return *f;
  }
  auto family = std::make_unique<MetricFamily>(name, help, type, std::move(labels));
  if (family->label_names().empty()) family->With({});
  return *families_.emplace(name, std::move(family)).first->second;
}

std::string MetricsRegistry::Render() const {
  std::string out;
  for (const auto& [name, family] : families_) family->Render(&out);
  return out;
}

std::string FormatMetricValue(double v) {
  if (std::isnan(v)) return "NaN";
  if (std::isinf(v)) return v > 0 ? "+Inf" : "-Inf";
  char buf[32];
  if (v == std::trunc(v) && std::fabs(v) < 1e15) {
    std::snprintf(buf, sizeof buf, "%.0f", v);
    return buf;
  }
  for (int precision = 6; precision <= 17; ++precision) {
    std::snprintf(buf, sizeof buf, "%.*g", precision, v);
    if (std::strtod(buf, nullptr) == v) break;
  }
  return buf;
}

std::string EscapeLabelValue(const std::string& s) {
  std::string out;
  out.reserve(s.size());
  for (char c : s) {
    if (c == '\\') out += "\\\\";
    else if (c == '"') out += "\\\"";
    else if (c == '\n') out += "\\n";
    else out += c;
  }
  return out;
}

std::string EscapeHelp(const std::string& s) {
  std::string out;
  out.reserve(s.size());
  for (char c : s) {
    if (c == '\\') out += "\\\\";
    else if (c == '\n') out += "\\n";
    else out += c;
  }
  return out;
}

TetherMetrics::TetherMetrics(MetricsRegistry& r)
    : sessions(r.Gauge("tether_sessions",
                              "Device sessions by app and state (active: heard within the heartbeat target; silent: not since).",
                              {"app", "state"})),
      requests_total(r.Counter("tether_requests_total", "CoAP requests answered, by method and response code.",
                               {"method", "code"})),
      heartbeats_total(r.Counter("tether_heartbeats_total", "Device heartbeats received.")),
      detections_total(r.Counter("tether_detections_total", "Sessions ended because the device went silent.")),
      ondisconnect_fired_total(r.Counter("tether_ondisconnect_fired_total", "onDisconnect operations executed.")),
      transaction_conflicts_total(r.Counter("tether_transaction_conflicts_total",
                                            "Compare-and-set writes refused: locally (4.12) or by the cloud at upload.",
                                            {"where"})),
      device_events_total(r.Counter("tether_device_events_total",
                                    "Device-side anomalies: onDisconnect operations denied at firing, responses "
                                    "never acknowledged, answers too large for a device without Block-wise.",
                                    {"event"})),
      loop_stalled_seconds_total(r.Counter("tether_loop_stalled_seconds_total",
                                           "Time the event loop did not run in stalls over 1 s (stopped, paused or "
                                           "starved); it counts as no device's silence.")),
      queue_depth(r.Gauge("tether_queue_depth", "Writes queued for the cloud, by route.", {"route"})),
      queue_bytes(r.Gauge("tether_queue_bytes", "Bytes queued for the cloud, by route.", {"route"})),
      queue_oldest_age_seconds(r.Gauge("tether_queue_oldest_age_seconds",
                                       "Age of the oldest queued write, by route (0 when empty).", {"route"})),
      queue_dropped_total(r.Counter("tether_queue_dropped_total",
                                    "Acknowledged writes deleted before upload: by the drop-oldest policy or the TTL.",
                                    {"route", "reason"})),
      writes_refused_total(r.Counter("tether_writes_refused_total",
                                     "Device writes refused with 5.03: a queue limit (policy reject), a full store, or commits "
                                     "later than device.max_write_wait (overloaded).",
                                     {"reason"})),
      drained_ops_total(r.Counter("tether_drained_ops_total", "Queued writes delivered to the cloud, by route.",
                                  {"route"})),
      dead_letters(r.Gauge("tether_dead_letters", "Writes the cloud rejected permanently, by route.", {"route"})),
      upstream_up(r.Gauge("tether_upstream_up", "1 when the cloud connection is healthy, else 0.")),
      upstream_errors_total(r.Counter("tether_upstream_errors_total", "Cloud request failures, by error class.",
                                      {"class"})),
      cloud_clock_offset_ms(r.Gauge("tether_cloud_clock_offset_ms", "Cloud clock minus local clock, milliseconds.")),
      cloud_rtt_ms(r.Gauge("tether_cloud_rtt_ms", "Round trip of the cloud clock sample in use, milliseconds.")),
      dtls_handshakes_total(r.Counter("tether_dtls_handshakes_total", "DTLS handshakes, by result.", {"result"})),
      dtls_sessions(r.Gauge("tether_dtls_sessions", "DTLS sessions by state.", {"state"})),
      dtls_sleeping_bytes(r.Gauge("tether_dtls_sleeping_bytes", "Bytes of serialized (sleeping) DTLS sessions.")),
      dtls_wakes_total(r.Counter("tether_dtls_wakes_total", "Sleeping DTLS sessions restored for a datagram.")),
      store_bytes(r.Gauge("tether_store_bytes", "Size of the LMDB data file (data.mdb) in bytes.")),
      upload_state(r.Gauge("tether_upload_state",
                           "1 for each route's uploader state (idle, uploading, backoff, auth_paused, held, stopped), "
                           "else 0.",
                           {"route", "state"})),
      queue_held_age_seconds(r.Gauge("tether_queue_held_age_seconds",
                                     "Age of the oldest write a route holds back (waiting for a cloud clock "
                                     "estimate), 0 when it holds none.",
                                     {"route"})),
      timestamps_estimated_total(r.Counter("tether_timestamps_estimated_total",
                                           "Server timestamps uploaded with a clock estimate not measured on the "
                                           "current link (after upstream.clock_wait), by route.",
                                           {"route"})),
      cloud_clock_uncertainty_ms(r.Gauge("tether_cloud_clock_uncertainty_ms",
                                         "The cloud clock estimate is within +- this many ms; NaN without one.")),
      cloud_clock_current(r.Gauge("tether_cloud_clock_current",
                                  "1 when the cloud clock estimate was measured on the current link.")),
      cloud_streams(r.Gauge("tether_cloud_streams",
                            "Cloud streams (sync roots, observed paths) by state: streaming, polling (the server "
                            "does not stream: read periodically), connecting.",
                            {"state"})),
      coap_peers(r.Gauge("tether_coap_peers",
                         "Addresses in the CoAP engine's peer table: verified (DTLS, or a session token "
                         "used from its own address) or not.",
                         {"state"})),
      coap_peers_dropped_total(r.Counter("tether_coap_peers_dropped_total",
                                         "Peer table full: unverified peers evicted for a new address, or datagrams "
                                         "refused because no unverified peer could go.",
                                         {"reason"})),
      coap_receive_dropped_total(r.Counter("tether_coap_receive_dropped_total",
                                           "Datagrams the kernel dropped before tetherd read them: a CoAP socket's "
                                           "receive queue was full (the loop reads slower than they arrive).")),
      coap_receive_buffer_bytes(r.Gauge("tether_coap_receive_buffer_bytes",
                                        "The CoAP sockets' receive buffers as the kernel granted them (4 MiB asked; "
                                        "net.core.rmem_max caps it).")),
      notifications_total(r.Counter("tether_notifications_total",
                                    "Observe notifications sent, or superseded by a newer state while their "
                                    "device had a confirmable notification outstanding.",
                                    {"outcome"})),
      auth_failures_total(r.Counter("tether_auth_failures_total",
                                    "Requests refused for their token (unknown_session, bound_elsewhere: a session "
                                    "token from another address than the session's, auth_token, long_token), "
                                    "answered or dropped over device.auth_failures_per_second.",
                                    {"kind", "answer"})),
      session_opens_refused_total(r.Counter("tether_session_opens_refused_total",
                                            "POST /.cs left unanswered: over device.opens_per_second for its source "
                                            "IP (rate_limited), or another open of the same device waiting (busy).",
                                            {"reason"})),
      sessions_unconfirmed(r.Gauge("tether_sessions_unconfirmed",
                                   "Sessions opened over plain CoAP that their device has not used yet (kept in "
                                   "memory only, at most device.max_unconfirmed_sessions).")),
      session_records_waiting(r.Gauge("tether_session_records_waiting",
                                      "Sessions whose changed record (observations) waits for the store: at most 1024 "
                                      "record writes are in flight, the others wait their turn.")),
      unconfirmed_sessions_dropped_total(r.Counter("tether_unconfirmed_sessions_dropped_total",
                                                   "Unconfirmed sessions dropped: evicted for a newer one at "
                                                   "device.max_unconfirmed_sessions, or expired unused.",
                                                   {"reason"})),
      admin_refused_total(r.Counter("tether_admin_refused_total",
                                    "Admin API requests refused: no admin token, a Host naming another server, "
                                    "or made by a web page.", {"reason"})),
      admin_dropped_total(r.Counter("tether_admin_dropped_total",
                                    "Admin API connections closed before their request was served.", {"reason"})),
      session_limit_refused_total(r.Counter("tether_session_limit_refused_total",
                                            "Registrations refused with 4.03 by a per-session cap: observations, "
                                            "onDisconnect operations (count) or their bytes.",
                                            {"limit"})),
      revocations_total(r.Counter("tether_revocations_total",
                                  "Ended by a reload: sessions whose credentials are gone (onDisconnect discarded), "
                                  "observations the routes no longer allow (4.03).",
                                  {"what"})) {}

}  // namespace tether
