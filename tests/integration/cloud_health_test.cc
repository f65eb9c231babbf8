// The cloud side against clouds that do not answer as expected: the default presence node, a
// clock estimate from whatever the cloud answers, a bounded wait for it, held routes shown in
// tetherctl / metrics / readyz, errors that clear, a prompt resume, a server without streaming.
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <cmath>
#include <thread>

#include "tests/integration/cloud_fixture.h"
#include "tests/support/eventually.h"

namespace tether::testing {
namespace {

using namespace std::chrono_literals;
using nlohmann::json;

class CloudHealth : public CloudFixture {
 protected:
  // Given explicitly (it is the default) so that each test checks its own behaviour on builds
  // whose default presence path a strict cloud refuses.
  static constexpr const char* kPresence = "  presence_path: /tether-gateways/gw-test\n";
  static std::string Stamped(int k) {
    return CborMap({{"k", CborUint(static_cast<uint64_t>(k))}, {"at", CborMap({{".sv", CborText("timestamp")}})}});
  }
  json QueueRow(const std::string& route) {
    json q = CtlJson("queue");
    if (q.is_object()) {
      for (const auto& row : q["routes"]) {
        if (row["route"] == route) return row;
      }
    }
    return nullptr;
  }
};

// The documented configuration: the presence node lands at a path Firebase accepts, and the
// clock estimate it gives lets timestamped writes through.
TEST_F(CloudHealth, DefaultPresenceNodeIsAValidPathAndGivesTheClock) {
  StartGateway();
  ASSERT_TRUE(WaitCloud("tether-gateways/gw-test", [](const json& v) {
    return v.is_object() && v["status"] == "online" && v["last_seen"].is_number_integer();
  })) << CloudAt("").dump();
  SdkClient dev(port_);
  ASSERT_TRUE(dev.Open("dev1"));
  int64_t wrote = WallMs();
  ASSERT_EQ(dev.Put("devices/dev1/t", Stamped(1)).CodeString(), "2.05");
  ASSERT_TRUE(WaitCloud("fleet/dev1/t/at", [](const json& v) { return v.is_number_integer(); }));
  EXPECT_LT(std::llabs(CloudAt("fleet/dev1/t/at").get<int64_t>() - wrote), 1000);
  for (const auto& a : cloud_.Control({{"op", "attempts"}})) {
    EXPECT_NE(a["status"], 400) << a.dump() << ": the cloud refused a request";
  }
  json status = CtlJson("status");
  EXPECT_EQ(status["upstream"]["clock"]["source"], "write-answer") << status.dump();
  EXPECT_TRUE(status["upstream"]["clock"]["current"].get<bool>());
  EXPECT_EQ(*Metric("tether_cloud_clock_current"), 1);
}

// No clock source at all (the rules refuse the presence path, answers carry no Date): after
// upstream.clock_wait (default 10 s) of the cloud answering, timestamped writes go with the best
// estimate there is (here the local clock, the same as the cloud's), counted and logged, never
// held silently; meanwhile the route shows as held, with its reason, and the offset as unknown.
TEST_F(CloudHealth, WithoutAClockEstimateTheRouteUploadsAfterTheBoundedWait) {
  cloud_.Control({{"op", "fail"}, {"status", 403}, {"count", 1000000}, {"path", "tether-gateways"}});
  cloud_.Control({{"op", "no_date"}, {"on", true}});
  StartGateway(kDefaultRoutes, kPresence);
  SdkClient dev(port_);
  ASSERT_TRUE(dev.Open("dev1"));
  ASSERT_TRUE(WaitConnected(dev, true));
  int64_t wrote = WallMs();
  auto t0 = std::chrono::steady_clock::now();
  ASSERT_EQ(dev.Put("devices/dev1/t", Stamped(1)).CodeString(), "2.05");
  ASSERT_EQ(dev.Put("devices/dev1/u", CborUint(2)).CodeString(), "2.05");  // behind it in the route
  ASSERT_TRUE(Eventually([&] { return QueueRow("devs")["upload_state"] == "held"; }, 3s, 100ms)) << QueueRow("devs").dump();
  json row = QueueRow("devs");
  EXPECT_NE(row["held_reason"].get<std::string>().find("waiting for a cloud clock estimate"), std::string::npos)
      << row.dump();
  EXPECT_NE(row["held_reason"].get<std::string>().find("403"), std::string::npos) << row.dump();
  EXPECT_EQ(*Metric("tether_upload_state{route=\"devs\",state=\"held\"}"), 1);
  EXPECT_TRUE(std::isnan(*Metric("tether_cloud_clock_offset_ms"))) << "no estimate is not an offset of 0";
  ASSERT_TRUE(WaitCloud("fleet/dev1/u", [](const json& v) { return v == 2; }, 16s)) << gw_.Log();
  auto took = std::chrono::steady_clock::now() - t0;
  EXPECT_GE(took, 9000ms) << "waited for an estimate first";
  EXPECT_LT(took, 13000ms) << "but not much longer than clock_wait";
  EXPECT_LT(std::llabs(CloudAt("fleet/dev1/t/at").get<int64_t>() - wrote), 1000) << "the local clock's time";
  EXPECT_EQ(*Metric("tether_timestamps_estimated_total{route=\"devs\"}"), 1);
  EXPECT_TRUE(gw_.WaitForLog("uploading server timestamps with the local clock", 1s)) << gw_.Log();
  EXPECT_NE(QueueRow("devs")["upload_state"], "held");
}

// on_clock_timeout: hold keeps the writes waiting, and says so everywhere: tetherctl queue,
// /metrics (state gauge, age of the oldest held write), /readyz. Once the cloud gives a time,
// everything drains and health is green again.
TEST_F(CloudHealth, AHeldRouteShowsInTetherctlMetricsAndReadyz) {
  cloud_.Control({{"op", "fail"}, {"status", 403}, {"count", 1000000}, {"path", "tether-gateways"}});
  cloud_.Control({{"op", "no_date"}, {"on", true}});
  StartGateway(kDefaultRoutes, std::string(kPresence) + "  clock_wait: 1s\n  on_clock_timeout: hold\n");
  SdkClient dev(port_);
  ASSERT_TRUE(dev.Open("dev1"));
  ASSERT_TRUE(WaitConnected(dev, true));
  EXPECT_EQ(Admin("/readyz"), "200 ready\n");
  ASSERT_EQ(dev.Put("devices/dev1/t", Stamped(1)).CodeString(), "2.05");
  std::this_thread::sleep_for(4s);
  EXPECT_TRUE(CloudAt("fleet").is_null()) << "held";
  json row = QueueRow("devs");
  EXPECT_EQ(row["upload_state"], "held") << row.dump();
  EXPECT_NE(row["held_reason"].get<std::string>().find("on_clock_timeout: hold"), std::string::npos) << row.dump();
  EXPECT_GE(row["held_for_s"].get<int>(), 2) << row.dump();
  EXPECT_GE(*Metric("tether_queue_held_age_seconds{route=\"devs\"}"), 3);
  EXPECT_EQ(*Metric("tether_upload_state{route=\"devs\",state=\"held\"}"), 1);
  EXPECT_EQ(*Metric("tether_upload_state{route=\"devs\",state=\"idle\"}"), 0);
  EXPECT_EQ(*Metric("tether_upstream_up"), 1) << "the cloud answers: it is the route that is held";
  std::string ready = Admin("/readyz");
  EXPECT_EQ(ready.rfind("503 not ready: route 'devs' holds its uploads for ", 0), 0u) << ready;
  EXPECT_NE(ready.find("waiting for a cloud clock estimate"), std::string::npos) << ready;
  std::string human = Shell(TetherdProcess::BinaryPath("tetherctl") + " --admin 127.0.0.1:" +
                            std::to_string(admin_port_) + " queue").out;
  EXPECT_NE(human.find("held"), std::string::npos) << human;
  EXPECT_NE(human.find("HELD_REASON"), std::string::npos) << human;

  cloud_.Control({{"op", "heal"}});  // the rules were fixed
  cloud_.Control({{"op", "clear_faults"}});
  ASSERT_TRUE(WaitCloud("fleet/dev1/t/at", [](const json& v) { return v.is_number_integer(); }, 15s)) << gw_.Log();
  ASSERT_TRUE(Eventually([&] { return Admin("/readyz") == "200 ready\n"; }, 10s, 100ms));
  EXPECT_EQ(*Metric("tether_queue_held_age_seconds{route=\"devs\"}"), 0);
  EXPECT_FALSE(std::isnan(*Metric("tether_cloud_clock_offset_ms")));
  EXPECT_NE(QueueRow("devs")["upload_state"], "held");
}

// After an outage the route's error describes the past: it is gone once the route drains.
TEST_F(CloudHealth, TheOutagesErrorClearsOnceTheRouteDrains) {
  StartGateway(kDefaultRoutes, kPresence);
  SdkClient dev(port_);
  ASSERT_TRUE(dev.Open("dev1"));
  ASSERT_TRUE(WaitConnected(dev, true));
  cloud_.Control({{"op", "down"}, {"ms", 3000}});
  ASSERT_EQ(dev.Put("devices/dev1/a", CborUint(1)).CodeString(), "2.05");
  ASSERT_TRUE(Eventually([&] { return QueueRow("devs").contains("last_error"); }, 3s, 100ms)) << QueueRow("devs").dump();
  ASSERT_TRUE(WaitCloud("fleet/dev1/a", [](const json& v) { return v == 1; }, 15s));
  ASSERT_TRUE(Eventually([&] { return QueueRow("devs")["entries"] == 0; }, 10s, 100ms));
  json row = QueueRow("devs");
  EXPECT_FALSE(row.contains("last_error")) << row.dump();
  EXPECT_EQ(row["upload_state"], "idle") << row.dump();
}

// The first request the cloud answers after an outage wakes every waiting route: the first
// upload follows within a second, not when the route's own backoff (seconds by then) ends.
TEST_F(CloudHealth, UploadsResumeWithinASecondOfTheCloudAnsweringAgain) {
  StartGateway(kDefaultRoutes, kPresence);
  SdkClient dev(port_);
  ASSERT_TRUE(dev.Open("dev1"));
  ASSERT_TRUE(WaitConnected(dev, true));
  cloud_.Control({{"op", "down"}, {"ms", 7000}});
  int64_t down_at = WallMs();
  for (int k = 0; k < 3; ++k) {
    ASSERT_EQ(dev.Put("devices/dev1/t" + std::to_string(k), Stamped(k)).CodeString(), "2.05");
    std::this_thread::sleep_for(300ms);
  }
  ASSERT_TRUE(WaitCloud("fleet/dev1", [](const json& v) { return v.is_object() && v.size() == 3; }, 30s)) << gw_.Log();
  int64_t answered = 0, uploaded = 0;
  for (const auto& a : cloud_.Control({{"op", "attempts"}})) {
    int64_t t = a["t_ms"].get<int64_t>();
    if (t < down_at + 6000 || !a["status"].is_number()) continue;
    int status = a["status"].get<int>();
    if (!answered && status >= 200 && status < 300) answered = t;
    if (!uploaded && a["method"] == "PATCH" && a["path"] == "/fleet.json") uploaded = t;
  }
  ASSERT_GT(answered, 0);
  ASSERT_GT(uploaded, 0);
  EXPECT_LE(uploaded - answered, 1000) << "first answer at +" << answered - down_at << " ms, first upload at +"
                                       << uploaded - down_at << " ms";
  std::printf("outage: the cloud answered again %lld ms after going down, the first upload followed %lld ms later\n",
              static_cast<long long>(answered - down_at), static_cast<long long>(uploaded - answered));
}

// A server that answers the stream request with plain JSON: the sync root is read every
// observe_poll_interval (and says so), not reconnected three times a second with a presence
// write each time.
TEST_F(CloudHealth, AServerWithoutStreamingIsReadPeriodicallyWithoutAStorm) {
  cloud_.Control({{"op", "no_streaming"}, {"on", true}});
  CloudPut("config", R"({"rate":5})");
  StartGateway(kDefaultRoutes, std::string(kPresence) + "  observe_poll_interval: 2s\n");
  SdkClient dev(port_);
  ASSERT_TRUE(dev.Open("dev1"));
  ASSERT_TRUE(WaitConnected(dev, true));
  ASSERT_TRUE(Eventually([&] { return dev.Get("config/rate").payload == CborUint(5); }, 5s, 100ms));
  CloudPut("config/rate", "6");
  ASSERT_TRUE(Eventually([&] { return dev.Get("config/rate").payload == CborUint(6); }, 5s, 100ms)) << "the next read brought it";
  std::this_thread::sleep_for(4s);
  int gets = 0, puts = 0;
  for (const auto& a : cloud_.Control({{"op", "attempts"}})) {
    gets += a["method"] == "GET" && a["path"] == "/config.json";
    puts += a["method"] == "PUT" && a["path"].get<std::string>().rfind("/tether-gateways/", 0) == 0;
  }
  EXPECT_LE(gets, 7) << "one read per 2 s over ~10 s";
  EXPECT_LE(puts, 3) << "presence writes keep their period";
  EXPECT_TRUE(gw_.WaitForLog("the cloud does not stream /config", 1s)) << gw_.Log();
  json status = CtlJson("status");
  EXPECT_EQ(status["upstream"]["streams"]["polling"], 1) << status.dump();
  EXPECT_EQ(*Metric("tether_cloud_streams{state=\"polling\"}"), 1);
}

}  // namespace
}  // namespace tether::testing
