// MetricsRegistry: counters and gauges with labels, rendered in the Prometheus text format 0.0.4.
//
// Threading: not thread-safe. The registry and every family/series live on the daemon's loop
// thread; /metrics renders it there (the admin server hops to the loop). References returned by
// Counter()/Gauge()/With() stay valid for the registry's lifetime (until Remove()/Clear()).
#pragma once

#include <map>
#include <memory>
#include <string>
#include <vector>

namespace tether {

enum class MetricType { kCounter, kGauge };

// One time series: a family plus one set of label values.
class MetricSeries {
 public:
  explicit MetricSeries(MetricType type) : type_(type) {}
  void Inc(double by = 1);    // counters: by >= 0, else std::invalid_argument
  void Dec(double by = 1);    // gauges only
  void Set(double value);     // gauges; counters only to mirror a monotonic count kept elsewhere
  double Value() const { return value_; }

 private:
  MetricType type_;
  double value_ = 0;
};

class MetricFamily {
 public:
  MetricFamily(std::string name, std::string help, MetricType type, std::vector<std::string> labels);
  // The series for these label values (one per label name, in declaration order), created at 0.
  // Wrong arity throws std::invalid_argument.
  MetricSeries& With(const std::vector<std::string>& label_values);
  MetricSeries& operator()() { return With({}); }  // unlabeled families
  void Remove(const std::vector<std::string>& label_values);
  void Clear();  // drops every series (e.g. gauges recomputed at scrape time)
  void Render(std::string* out) const;

  const std::string& name() const { return name_; }
  MetricType type() const { return type_; }
  const std::vector<std::string>& label_names() const { return labels_; }

 private:
  std::string name_, help_;
  MetricType type_;
  std::vector<std::string> labels_;
  std::map<std::vector<std::string>, MetricSeries> series_;  // sorted: stable output
};

class MetricsRegistry {
 public:
  static constexpr const char* kContentType = "text/plain; version=0.0.4; charset=utf-8";

  // Declares (or returns the already declared) family. Names must match [a-zA-Z_:][a-zA-Z0-9_:]*,
  // label names [a-zA-Z_][a-zA-Z0-9_]* and not start with "__"; redeclaring a name with another
  // type or label set throws std::invalid_argument. Unlabeled families start with one series at 0.
  MetricFamily& Counter(const std::string& name, const std::string& help, std::vector<std::string> labels = {});
  MetricFamily& Gauge(const std::string& name, const std::string& help, std::vector<std::string> labels = {});
  MetricFamily* Find(const std::string& name);

  // The whole exposition: families sorted by name, each with # HELP and # TYPE lines.
  std::string Render() const;

 private:
  MetricFamily& Declare(const std::string& name, const std::string& help, MetricType type,
                        std::vector<std::string> labels);
  std::map<std::string, std::unique_ptr<MetricFamily>> families_;
};

// Formats a sample value as the exposition format wants it: integers without exponent, "+Inf",
// "-Inf", "NaN", otherwise the shortest round-tripping decimal.
std::string FormatMetricValue(double v);
// Escapes a label value (\\, \", \n) or a HELP text (\\, \n).
std::string EscapeLabelValue(const std::string& s);
std::string EscapeHelp(const std::string& s);

// The gateway's metric catalog (docs/operations.md lists it with alert examples). Constructing it
// declares every family in `r`; modules keep a pointer and update series on the loop thread.
struct TetherMetrics {
  explicit TetherMetrics(MetricsRegistry& r);
  MetricFamily& sessions;                // gauge {app,state=active|silent}
  MetricFamily& requests_total;          // counter {method,code}  CoAP requests answered
  MetricFamily& heartbeats_total;        // counter
  MetricFamily& detections_total;        // counter  sessions ended by silence
  MetricFamily& ondisconnect_fired_total;// counter
  MetricFamily& transaction_conflicts_total;  // counter {where=local|cloud}  compare-and-set writes lost
  MetricFamily& device_events_total;     // counter {event}  device-side anomalies (docs/operations.md)
  MetricFamily& loop_stalled_seconds_total;  // counter  time the loop did not run (given back to sessions)
  MetricFamily& queue_depth;             // gauge {route}  entries waiting for the cloud
  MetricFamily& queue_bytes;             // gauge {route}
  MetricFamily& queue_oldest_age_seconds;// gauge {route}
  MetricFamily& queue_dropped_total;     // counter {route,reason=drop_oldest|expired}  acknowledged, never uploaded
  MetricFamily& writes_refused_total;    // counter {reason=queue_limit|store_full|overloaded}  device got 5.03, nothing queued
  MetricFamily& drained_ops_total;       // counter {route}
  MetricFamily& dead_letters;            // gauge {route}
  MetricFamily& upstream_up;             // gauge 0/1
  MetricFamily& upstream_errors_total;   // counter {class}
  MetricFamily& cloud_clock_offset_ms;   // gauge
  MetricFamily& cloud_rtt_ms;            // gauge
  MetricFamily& dtls_handshakes_total;   // counter {result=ok|failed|cookie_sent|rate_limited|over_cap}
  MetricFamily& dtls_sessions;           // gauge {state=live|sleeping|handshaking}
  MetricFamily& dtls_sleeping_bytes;     // gauge  memory held by serialized (sleeping) sessions
  MetricFamily& dtls_wakes_total;        // counter  sleeping sessions restored (many: raise max_live_sessions)
  MetricFamily& store_bytes;             // gauge  size of the LMDB data file (data.mdb)
  MetricFamily& upload_state;            // gauge {route,state}  1 for the route's uploader state, else 0
  MetricFamily& queue_held_age_seconds;  // gauge {route}  age of the oldest write held back (0: none)
  MetricFamily& timestamps_estimated_total;  // counter {route}  timestamps uploaded without a current clock
  MetricFamily& cloud_clock_uncertainty_ms;  // gauge  +- of the clock estimate (NaN: none)
  MetricFamily& cloud_clock_current;     // gauge 0/1  the estimate was measured on the current link
  MetricFamily& cloud_streams;           // gauge {state=streaming|polling|connecting}
  MetricFamily& coap_peers;              // gauge {state=verified|unverified}  the CoAP engine's peer table
  MetricFamily& coap_peers_dropped_total;  // counter {reason=evicted|refused}  peer table full
  MetricFamily& coap_receive_dropped_total;  // counter  datagrams the kernel dropped: receive queue full
  MetricFamily& coap_receive_buffer_bytes;   // gauge  the CoAP sockets' receive buffers as granted
  MetricFamily& notifications_total;     // counter {outcome=sent|superseded}
  // Hostile-LAN guards (docs/operations.md, "Security model").
  MetricFamily& auth_failures_total;     // counter {kind,answer=answered|dropped}  tokens refused
  MetricFamily& session_opens_refused_total;  // counter {reason=rate_limited|busy}  POST /.cs not answered
  MetricFamily& sessions_unconfirmed;    // gauge  opened, not yet used by their device (memory only)
  MetricFamily& session_records_waiting;  // gauge  changed session records waiting for a write slot
  MetricFamily& unconfirmed_sessions_dropped_total;  // counter {reason=evicted|expired}
  MetricFamily& admin_refused_total;     // counter {reason=unauthorized|host|browser}  admin requests refused
  MetricFamily& admin_dropped_total;     // counter {reason=timeout|evicted|too_large|overloaded}  closed unserved
  MetricFamily& session_limit_refused_total;  // counter {limit=observers|ondisconnect_count|ondisconnect_bytes}  4.03
  MetricFamily& revocations_total;       // counter {what=session|observation}  ended by a reload
};

}  // namespace tether
