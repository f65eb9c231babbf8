// Devices hearing the cloud: observed paths outside the sync roots, stream cuts, and the link
// state at .info/connected, end to end through tetherd and fakecloud.
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <thread>

#include "tests/integration/cloud_fixture.h"

namespace tether::testing {
namespace {

using namespace std::chrono_literals;
using nlohmann::json;

class CloudObserve : public CloudFixture {
 protected:
  // Observes `path` with JSON payloads; returns the registration reply.
  static CoapReply ObserveJson(SdkClient& dev, const std::string& path) {
    return dev.Request(kGet, path, "", {}, 0u, {}, 50u);
  }
  // Waits for a notification whose payload is `want` (others are skipped), bounded.
  static bool WaitFor(SdkClient& dev, const std::string& want, std::chrono::milliseconds limit) {
    auto end = std::chrono::steady_clock::now() + limit;
    while (std::chrono::steady_clock::now() < end) {
      auto n = dev.WaitNotification(200ms);
      if (n && n->payload == want) return true;
    }
    return false;
  }
  json Streams() const { return cloud_.Control({{"op", "streams"}}); }
};

TEST_F(CloudObserve, APathObservedOutsideTheSyncRootsHearsCloudChanges) {
  cloud_.Control({{"op", "keepalive"}, {"ms", 200}});  // the cloud notices closed streams soon
  CloudPut("fleet/dev1/cmd", R"({"led":"off"})");
  StartGateway();
  SdkClient dev(port_);
  ASSERT_TRUE(dev.Open("dev1"));
  ASSERT_TRUE(WaitConnected(dev, true));
  ASSERT_EQ(ObserveJson(dev, "devices/dev1/cmd").CodeString(), "2.05");
  // The gateway opens a stream for it and brings the cloud's value into the local copy.
  ASSERT_TRUE(WaitFor(dev, R"({"led":"off"})", 5s));
  EXPECT_EQ(Streams(), json::parse(R"({"/config":1,"/fleet/dev1/cmd":1})"));
  // The cloud (an operator, another gateway) changes it: the device is told.
  CloudPut("fleet/dev1/cmd/led", "\"on\"");
  EXPECT_TRUE(WaitFor(dev, R"({"led":"on"})", 5s));
  CloudPut("fleet/dev1/cmd", R"({"led":"blink","hz":2})");
  EXPECT_TRUE(WaitFor(dev, R"({"hz":2,"led":"blink"})", 5s));
  // The last observer goes: the stream closes.
  ASSERT_EQ(dev.Unobserve("devices/dev1/cmd").CodeString(), "2.05");
  EXPECT_TRUE(Eventually([&] { return Streams() == json::parse(R"({"/config":1})"); }, 5s, 100ms)) << Streams().dump();
}

TEST_F(CloudObserve, BeyondTheStreamCapObservedPathsAreReRead) {
  StartGateway(kDefaultRoutes, "  observe_streams: 1\n  observe_poll_interval: 1s\n");
  SdkClient a(port_), b(port_);
  ASSERT_TRUE(a.Open("dev1"));
  ASSERT_TRUE(b.Open("dev2"));
  ASSERT_TRUE(WaitConnected(a, true));
  ASSERT_EQ(ObserveJson(a, "devices/dev1/cmd").CodeString(), "2.05");  // gets the one stream
  ASSERT_EQ(ObserveJson(b, "devices/dev2/cmd").CodeString(), "2.05");  // polled
  std::this_thread::sleep_for(300ms);
  EXPECT_EQ(Streams(), json::parse(R"({"/config":1,"/fleet/dev1/cmd":1})"));
  auto t0 = std::chrono::steady_clock::now();
  CloudPut("fleet/dev2/cmd", "\"reboot\"");
  ASSERT_TRUE(WaitFor(b, "\"reboot\"", 5s));
  EXPECT_LT(std::chrono::steady_clock::now() - t0, 2500ms) << "read again within the poll interval";
  CloudPut("fleet/dev1/cmd", "\"stop\"");
  EXPECT_TRUE(WaitFor(a, "\"stop\"", 5s));
}

// The cloud cuts the sync stream mid-event and changes the data before the gateway is back: the
// reconnect's full resync brings the new value and the observer hears it.
TEST_F(CloudObserve, CutStreamIsResyncedAndTheObserverGetsTheNewValue) {
  CloudPut("config", R"({"rate":1})");
  StartGateway();
  SdkClient dev(port_);
  ASSERT_TRUE(dev.Open("dev1"));
  // The sync root's first put is in the local copy.
  Eventually([&] { return dev.Request(kGet, "config", "", {}, {}, {}, 50u).payload == R"({"rate":1})"; }, 5s, 50ms);
  CoapReply reg = ObserveJson(dev, "config");
  ASSERT_EQ(reg.CodeString(), "2.05");
  ASSERT_EQ(reg.payload, R"({"rate":1})");
  cloud_.Control({{"op", "cut_streams"}});
  CloudPut("config", R"({"rate":7,"mode":"eco"})");  // while no stream is open
  EXPECT_TRUE(WaitFor(dev, R"({"mode":"eco","rate":7})", 10s));
  std::string log = gw_.Log();
  size_t resyncs = 0;
  for (size_t at = log.find("sync root /config resynced"); at != std::string::npos;
       at = log.find("sync root /config resynced", at + 1))
    ++resyncs;
  EXPECT_GE(resyncs, 2u) << "once at start, once after the cut";
  EXPECT_EQ(dev.Request(kGet, "config/rate", "", {}, {}, {}, 50u).payload, "7");
}

TEST_F(CloudObserve, InfoConnectedObserversHearTheCloudGoAndComeBack) {
  StartGateway();
  SdkClient dev(port_);
  ASSERT_TRUE(dev.Open("dev1"));
  ASSERT_TRUE(WaitConnected(dev, true));
  CoapReply reg = ObserveJson(dev, ".info/connected");
  ASSERT_EQ(reg.CodeString(), "2.05");
  EXPECT_EQ(reg.payload, "true");
  cloud_.Control({{"op", "down"}, {"ms", 3000}});  // the sync stream breaks and cannot reconnect
  EXPECT_TRUE(WaitFor(dev, "false", 3s)) << "the observer was not told the cloud is gone";
  EXPECT_TRUE(WaitFor(dev, "true", 10s)) << "the observer was not told the cloud is back";
}

}  // namespace
}  // namespace tether::testing
