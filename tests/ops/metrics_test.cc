// MetricsRegistry renders valid Prometheus text 0.0.4: a small parser written here reads it
// back and every sample, label and HELP/TYPE line must round-trip.
#include <gtest/gtest.h>

#include <cmath>
#include <map>
#include <stdexcept>
#include <string>
#include <vector>

#include "gateway/admin/metrics.h"

namespace tether {
namespace {

struct Sample {
  std::string name;
  std::map<std::string, std::string> labels;
  double value = 0;
};
struct Exposition {
  std::map<std::string, std::string> help, type;
  std::vector<Sample> samples;
};

// Parses the subset of the text format the registry emits; throws on anything malformed.
Exposition Parse(const std::string& text) {
  Exposition e;
  size_t pos = 0;
  auto is_name_char = [](char c) { return std::isalnum(static_cast<unsigned char>(c)) || c == '_' || c == ':'; };
  while (pos < text.size()) {
    size_t eol = text.find('\n', pos);
    if (eol == std::string::npos) throw std::runtime_error("last line not newline-terminated");
    std::string line = text.substr(pos, eol - pos);
    pos = eol + 1;
    if (line.rfind("# HELP ", 0) == 0 || line.rfind("# TYPE ", 0) == 0) {
      std::string rest = line.substr(7);
      size_t sp = rest.find(' ');
      if (sp == std::string::npos) throw std::runtime_error("bad comment: " + line);
      std::string name = rest.substr(0, sp), body;
      for (size_t i = sp + 1; i < rest.size(); ++i) {
        if (rest[i] == '\\' && i + 1 < rest.size()) {
          char n = rest[++i];
          body += n == 'n' ? '\n' : n;
        } else {
          body += rest[i];
        }
      }
      (line[2] == 'H' ? e.help : e.type)[name] = body;
      continue;
    }
    if (line.empty() || line[0] == '#') throw std::runtime_error("unexpected line: " + line);
    Sample s;
    size_t i = 0;
    while (i < line.size() && is_name_char(line[i])) s.name += line[i++];
    if (i < line.size() && line[i] == '{') {
      ++i;
      while (line.at(i) != '}') {
        std::string key;
        while (is_name_char(line.at(i))) key += line[i++];
        if (line.at(i++) != '=' || line.at(i++) != '"') throw std::runtime_error("bad label: " + line);
        std::string val;
        while (line.at(i) != '"') {
          if (line[i] == '\\') {
            char n = line.at(++i);
            if (n != '\\' && n != '"' && n != 'n') throw std::runtime_error("bad escape: " + line);
            val += n == 'n' ? '\n' : n;
            ++i;
          } else {
            val += line[i++];
          }
        }
        ++i;
        if (!s.labels.emplace(key, val).second) throw std::runtime_error("duplicate label: " + line);
        if (line.at(i) == ',') ++i;
      }
      ++i;
    }
    if (line.at(i++) != ' ') throw std::runtime_error("no space before value: " + line);
    std::string v = line.substr(i);
    s.value = v == "+Inf" ? INFINITY : v == "-Inf" ? -INFINITY : v == "NaN" ? NAN : std::stod(v);
    if (!e.type.count(s.name)) throw std::runtime_error("sample before its TYPE line: " + line);
    e.samples.push_back(s);
  }
  return e;
}

const Sample* Find(const Exposition& e, const std::string& name, const std::map<std::string, std::string>& labels) {
  for (const auto& s : e.samples) {
    if (s.name == name && s.labels == labels) return &s;
  }
  return nullptr;
}

TEST(MetricsTest, CounterAndGaugeRender) {
  MetricsRegistry r;
  auto& req = r.Counter("tether_requests_total", "CoAP requests.", {"method", "code"});
  req.With({"GET", "2.05"}).Inc();
  req.With({"GET", "2.05"}).Inc(2);
  req.With({"PUT", "4.01"}).Inc();
  r.Gauge("tether_upstream_up", "Up.")().Set(1);
  std::string text = r.Render();
  EXPECT_NE(text.find("# HELP tether_requests_total CoAP requests.\n# TYPE tether_requests_total counter\n"),
            std::string::npos)
      << text;
  EXPECT_NE(text.find("tether_requests_total{method=\"GET\",code=\"2.05\"} 3\n"), std::string::npos) << text;
  EXPECT_NE(text.find("# TYPE tether_upstream_up gauge\ntether_upstream_up 1\n"), std::string::npos) << text;
  EXPECT_EQ(r.Render(), text) << "rendering is deterministic";
}

TEST(MetricsTest, LabelAndHelpEscapingRoundTrip) {
  MetricsRegistry r;
  r.Gauge("tether_sessions", "Sessions by app\\state,\nsecond line.", {"app", "state"})
      .With({"we\"ird\\app\nx", "active"})
      .Set(4);
  Exposition e = Parse(r.Render());
  EXPECT_EQ(e.help["tether_sessions"], "Sessions by app\\state,\nsecond line.");
  const Sample* s = Find(e, "tether_sessions", {{"app", "we\"ird\\app\nx"}, {"state", "active"}});
  ASSERT_NE(s, nullptr);
  EXPECT_EQ(s->value, 4);
}

TEST(MetricsTest, ValueFormatting) {
  EXPECT_EQ(FormatMetricValue(0), "0");
  EXPECT_EQ(FormatMetricValue(-3), "-3");
  EXPECT_EQ(FormatMetricValue(12345678901234.0), "12345678901234");
  EXPECT_EQ(FormatMetricValue(0.25), "0.25");
  EXPECT_EQ(FormatMetricValue(INFINITY), "+Inf");
  EXPECT_EQ(FormatMetricValue(-INFINITY), "-Inf");
  EXPECT_EQ(FormatMetricValue(NAN), "NaN");
  EXPECT_EQ(std::stod(FormatMetricValue(0.1 + 0.2)), 0.1 + 0.2);
  EXPECT_EQ(std::stod(FormatMetricValue(1e300)), 1e300);
}

TEST(MetricsTest, Validation) {
  MetricsRegistry r;
  EXPECT_THROW(r.Counter("1bad", "x"), std::invalid_argument);
  EXPECT_THROW(r.Counter("bad-name", "x"), std::invalid_argument);
  EXPECT_THROW(r.Counter("ok", "x", {"__reserved"}), std::invalid_argument);
  EXPECT_THROW(r.Counter("ok2", "x", {"a:b"}), std::invalid_argument);
  auto& c = r.Counter("tether_x_total", "x", {"route"});
  EXPECT_EQ(&r.Counter("tether_x_total", "x", {"route"}), &c) << "redeclaring returns the same family";
  EXPECT_THROW(r.Gauge("tether_x_total", "x", {"route"}), std::invalid_argument);
  EXPECT_THROW(r.Counter("tether_x_total", "x", {"other"}), std::invalid_argument);
  EXPECT_THROW(c.With({}), std::invalid_argument);
  EXPECT_THROW(c.With({"a"}).Inc(-1), std::invalid_argument);
  EXPECT_THROW(c.With({"a"}).Dec(), std::invalid_argument);
}

TEST(MetricsTest, RemoveAndClear) {
  MetricsRegistry r;
  auto& g = r.Gauge("tether_queue_depth", "d", {"route"});
  g.With({"a"}).Set(1);
  g.With({"b"}).Set(2);
  g.Remove({"a"});
  Exposition e = Parse(r.Render());
  EXPECT_EQ(Find(e, "tether_queue_depth", {{"route", "a"}}), nullptr);
  ASSERT_NE(Find(e, "tether_queue_depth", {{"route", "b"}}), nullptr);
  g.Clear();
  e = Parse(r.Render());
  EXPECT_TRUE(e.samples.empty());
  EXPECT_EQ(e.type["tether_queue_depth"], "gauge") << "an empty family still renders HELP/TYPE";
}

// The full catalog: every family parses, has HELP and the right TYPE, and every series written
// by the modules reads back with its labels and value.
TEST(MetricsTest, TetherCatalogRoundTrip) {
  MetricsRegistry r;
  TetherMetrics m(r);
  m.sessions.With({"myapp", "active"}).Set(12);
  m.requests_total.With({"POST", "2.04"}).Inc(7);
  m.heartbeats_total().Inc(100);
  m.detections_total().Inc();
  m.ondisconnect_fired_total().Inc(2);
  m.queue_depth.With({"devices"}).Set(42);
  m.queue_bytes.With({"devices"}).Set(4096);
  m.queue_oldest_age_seconds.With({"devices"}).Set(61.5);
  m.drained_ops_total.With({"devices"}).Inc(900);
  m.dead_letters.With({"devices"}).Set(1);
  m.upstream_up().Set(1);
  m.upstream_errors_total.With({"timeout"}).Inc(3);
  m.cloud_clock_offset_ms().Set(-12.25);
  m.cloud_rtt_ms().Set(48);
  m.dtls_handshakes_total.With({"ok"}).Inc(5);
  m.store_bytes().Set(1 << 20);
  m.transaction_conflicts_total.With({"cloud"}).Inc(4);
  m.dtls_sessions.With({"sleeping"}).Set(900);
  m.dtls_sleeping_bytes().Set(250000);
  m.dtls_wakes_total().Inc(3);
  m.queue_dropped_total.With({"devices", "expired"}).Inc(6);
  m.writes_refused_total.With({"store_full"}).Inc(2);
  m.device_events_total.With({"ondisconnect_denied"}).Inc(6);
  m.loop_stalled_seconds_total().Inc(3.5);
  m.coap_peers.With({"verified"}).Set(10);
  m.coap_peers_dropped_total.With({"evicted"}).Inc(8);
  m.coap_receive_dropped_total.With({}).Inc(17);
  m.coap_receive_buffer_bytes.With({}).Set(425984);
  m.notifications_total.With({"superseded"}).Inc(9);
  m.upload_state.With({"devices", "held"}).Set(1);
  m.queue_held_age_seconds.With({"devices"}).Set(12.5);
  m.timestamps_estimated_total.With({"devices"}).Inc(5);
  m.cloud_clock_uncertainty_ms().Set(400);
  m.cloud_clock_current().Set(1);
  m.cloud_streams.With({"polling"}).Set(2);
  m.auth_failures_total.With({"unknown_session", "dropped"}).Inc(11);
  m.session_opens_refused_total.With({"rate_limited"}).Inc(13);
  m.sessions_unconfirmed.With({}).Set(14);
  m.session_records_waiting.With({}).Set(16);
  m.unconfirmed_sessions_dropped_total.With({"evicted"}).Inc(15);
  m.admin_refused_total.With({"unauthorized"}).Inc(2);
  m.admin_dropped_total.With({"timeout"}).Inc(8);
  m.session_limit_refused_total.With({"observers"}).Inc(3);
  m.revocations_total.With({"session"}).Inc(4);

  Exposition e = Parse(r.Render());
  const std::map<std::string, std::string> types = {
      {"tether_sessions", "gauge"},          {"tether_requests_total", "counter"},
      {"tether_heartbeats_total", "counter"}, {"tether_detections_total", "counter"},
      {"tether_ondisconnect_fired_total", "counter"}, {"tether_queue_depth", "gauge"},
      {"tether_queue_bytes", "gauge"},       {"tether_queue_oldest_age_seconds", "gauge"},
      {"tether_drained_ops_total", "counter"}, {"tether_dead_letters", "gauge"},
      {"tether_upstream_up", "gauge"},       {"tether_upstream_errors_total", "counter"},
      {"tether_cloud_clock_offset_ms", "gauge"}, {"tether_cloud_rtt_ms", "gauge"},
      {"tether_dtls_handshakes_total", "counter"}, {"tether_store_bytes", "gauge"},
      {"tether_transaction_conflicts_total", "counter"}, {"tether_dtls_sessions", "gauge"},
      {"tether_dtls_sleeping_bytes", "gauge"}, {"tether_dtls_wakes_total", "counter"},
      {"tether_queue_dropped_total", "counter"}, {"tether_writes_refused_total", "counter"},
      {"tether_device_events_total", "counter"}, {"tether_loop_stalled_seconds_total", "counter"},
      {"tether_coap_peers", "gauge"},
      {"tether_coap_peers_dropped_total", "counter"}, {"tether_notifications_total", "counter"},
      {"tether_coap_receive_dropped_total", "counter"}, {"tether_coap_receive_buffer_bytes", "gauge"},
      {"tether_upload_state", "gauge"},      {"tether_queue_held_age_seconds", "gauge"},
      {"tether_timestamps_estimated_total", "counter"}, {"tether_cloud_clock_uncertainty_ms", "gauge"},
      {"tether_cloud_clock_current", "gauge"}, {"tether_cloud_streams", "gauge"},
      {"tether_auth_failures_total", "counter"}, {"tether_session_opens_refused_total", "counter"},
      {"tether_sessions_unconfirmed", "gauge"}, {"tether_unconfirmed_sessions_dropped_total", "counter"},
      {"tether_session_records_waiting", "gauge"},
      {"tether_admin_refused_total", "counter"}, {"tether_admin_dropped_total", "counter"},
      {"tether_session_limit_refused_total", "counter"}, {"tether_revocations_total", "counter"}};
  EXPECT_EQ(e.type, types);
  for (const auto& [name, type] : types) EXPECT_FALSE(e.help[name].empty()) << name;

  struct Want {
    std::string name;
    std::map<std::string, std::string> labels;
    double value;
  };
  for (const Want& w : std::vector<Want>{
           {"tether_sessions", {{"app", "myapp"}, {"state", "active"}}, 12},
           {"tether_requests_total", {{"method", "POST"}, {"code", "2.04"}}, 7},
           {"tether_heartbeats_total", {}, 100},
           {"tether_detections_total", {}, 1},
           {"tether_ondisconnect_fired_total", {}, 2},
           {"tether_queue_depth", {{"route", "devices"}}, 42},
           {"tether_queue_bytes", {{"route", "devices"}}, 4096},
           {"tether_queue_oldest_age_seconds", {{"route", "devices"}}, 61.5},
           {"tether_drained_ops_total", {{"route", "devices"}}, 900},
           {"tether_dead_letters", {{"route", "devices"}}, 1},
           {"tether_upstream_up", {}, 1},
           {"tether_upstream_errors_total", {{"class", "timeout"}}, 3},
           {"tether_cloud_clock_offset_ms", {}, -12.25},
           {"tether_cloud_rtt_ms", {}, 48},
           {"tether_dtls_handshakes_total", {{"result", "ok"}}, 5},
           {"tether_transaction_conflicts_total", {{"where", "cloud"}}, 4},
           {"tether_dtls_sessions", {{"state", "sleeping"}}, 900},
           {"tether_dtls_sleeping_bytes", {}, 250000},
           {"tether_dtls_wakes_total", {}, 3},
           {"tether_queue_dropped_total", {{"route", "devices"}, {"reason", "expired"}}, 6},
           {"tether_writes_refused_total", {{"reason", "store_full"}}, 2},
           {"tether_device_events_total", {{"event", "ondisconnect_denied"}}, 6},
           {"tether_loop_stalled_seconds_total", {}, 3.5},
           {"tether_store_bytes", {}, 1 << 20},
           {"tether_coap_peers", {{"state", "verified"}}, 10},
           {"tether_coap_peers_dropped_total", {{"reason", "evicted"}}, 8},
           {"tether_coap_receive_dropped_total", {}, 17},
           {"tether_coap_receive_buffer_bytes", {}, 425984},
           {"tether_notifications_total", {{"outcome", "superseded"}}, 9},
           {"tether_upload_state", {{"route", "devices"}, {"state", "held"}}, 1},
           {"tether_queue_held_age_seconds", {{"route", "devices"}}, 12.5},
           {"tether_timestamps_estimated_total", {{"route", "devices"}}, 5},
           {"tether_cloud_clock_uncertainty_ms", {}, 400},
           {"tether_cloud_clock_current", {}, 1},
           {"tether_cloud_streams", {{"state", "polling"}}, 2},
           {"tether_auth_failures_total", {{"kind", "unknown_session"}, {"answer", "dropped"}}, 11},
           {"tether_session_opens_refused_total", {{"reason", "rate_limited"}}, 13},
           {"tether_sessions_unconfirmed", {}, 14},
           {"tether_session_records_waiting", {}, 16},
           {"tether_unconfirmed_sessions_dropped_total", {{"reason", "evicted"}}, 15},
           {"tether_admin_refused_total", {{"reason", "unauthorized"}}, 2},
           {"tether_admin_dropped_total", {{"reason", "timeout"}}, 8},
           {"tether_session_limit_refused_total", {{"limit", "observers"}}, 3},
           {"tether_revocations_total", {{"what", "session"}}, 4}}) {
    const Sample* s = Find(e, w.name, w.labels);
    ASSERT_NE(s, nullptr) << w.name;
    EXPECT_EQ(s->value, w.value) << w.name;
  }
  EXPECT_EQ(e.samples.size(), 44u);
}

}  // namespace
}  // namespace tether
