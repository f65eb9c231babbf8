// Compare-and-set writes ("transactions") end to end: checked against the local copy at once,
// replayed to tests/fakecloud with ETag / if-match, and a cloud that changed meanwhile reported
// back to the device (notification, later GET) and counted.
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <thread>

#include "tests/integration/sdk_client.h"
#include "tests/integration/tetherd_process.h"
#include "tests/upstream/fakecloud_process.h"

namespace tether::testing {
namespace {

using namespace std::chrono_literals;
using nlohmann::json;
constexpr uint8_t kGet = 1, kPut = 3;

class Transactions : public ::testing::Test {
 protected:
  void StartGateway() {
    port_ = static_cast<uint16_t>(FreePort());
    admin_ = FreePort(false);
    gw_.WriteConfig("gateway:\n  id: gw-cas\ndevice:\n  listen: \"127.0.0.1:" + std::to_string(port_) +
                    "\"\nadmin:\n  listen: \"127.0.0.1:" + std::to_string(admin_) +
                    "\"\nstore:\n  path: ${STORE}\nupstream:\n  url: " + cloud_.url() +
                    "\napps:\n  - id: myapp\nroutes:\n"
                    "  - { name: devs, match: \"devices/{device}/**\", cloud: \"fleet/{device}/**\" }\n");
    gw_.Start();
    ASSERT_TRUE(gw_.WaitForLog("uploading 1 route(s)", 10s)) << gw_.Log();
  }
  bool WaitConnected(SdkClient& dev) {
    for (int i = 0; i < 100; ++i) {
      if (dev.Request(kGet, ".info/connected", "", {}, {}, {}, 50u).payload == "true") return true;
      std::this_thread::sleep_for(100ms);
    }
    return false;
  }
  CoapReply Cas(SdkClient& dev, const std::string& path, const std::string& expect, const std::string& value) {
    return dev.Request(kPut, path, R"({".cas":{"expect":)" + expect + R"(,"value":)" + value + "}}", {}, {}, 50u, 50u);
  }
  std::string Metric(const std::string& line_prefix) {
    std::string text = Shell("curl -sf http://127.0.0.1:" + std::to_string(admin_) + "/metrics").out;
    size_t at = text.find(line_prefix);
    if (at == std::string::npos) return "";
    size_t end = text.find('\n', at);
    return text.substr(at + line_prefix.size(), end - at - line_prefix.size());
  }
  void TearDown() override {
    if (HasFailure()) std::fprintf(stderr, "---- tetherd log ----\n%s\n", gw_.Log().c_str());
  }

  upstream::testing::FakeCloud cloud_;
  TetherdProcess gw_;
  uint16_t port_ = 0;
  int admin_ = 0;
};

TEST_F(Transactions, CloudChangedUnderAPendingCompareAndSetIsReportedAndCounted) {
  ASSERT_EQ(Shell("curl -sf -X PUT -d '\"free\"' " + cloud_.url() + "/fleet/dev1/slot.json").status, 0);
  StartGateway();
  SdkClient dev(port_);
  ASSERT_TRUE(dev.Open("dev1"));
  ASSERT_TRUE(WaitConnected(dev));
  ASSERT_EQ(dev.Request(kGet, "devices/dev1/slot", "", {}, {}, {}, 50u).payload, "\"free\"");  // from the cloud

  // Against the local copy at once: a stale expectation is refused with the current value.
  CoapReply r = Cas(dev, "devices/dev1/slot", "\"taken\"", "\"x\"");
  EXPECT_EQ(r.CodeString(), "4.12");
  EXPECT_EQ(r.payload, "\"free\"");
  r = dev.Request(kPut, "devices/dev1/slot", R"({".cas":{"value":1,"other":2}})", {}, {}, 50u, 50u);
  EXPECT_EQ(r.CodeString(), "4.00");
  CoapReply obs = dev.Request(kGet, "devices/dev1/slot", "", {}, 0u, {}, 50u);
  ASSERT_EQ(obs.payload, "\"free\"");

  // The upload is held up (two 503s) while another writer changes the cloud.
  // Only the upload's PUT: the device's observe also streams /fleet/dev1/slot.
  cloud_.control({{"op", "fail"}, {"status", 503}, {"count", 2}, {"path", "/fleet/dev1/slot"}, {"method", "PUT"}});
  r = Cas(dev, "devices/dev1/slot", "\"free\"", "\"dev1\"");
  ASSERT_EQ(r.CodeString(), "2.05");
  ASSERT_EQ(Shell("curl -sf -X PATCH -d '{\"slot\":\"other\"}' " + cloud_.url() + "/fleet/dev1.json").status, 0);

  // The device saw its own write, then hears that the cloud kept the other value.
  std::vector<std::string> seen;
  for (int i = 0; i < 4 && (seen.empty() || seen.back() != "\"other\""); ++i) {
    auto n = dev.WaitNotification(5s);
    if (!n) break;
    seen.push_back(n->payload);
  }
  ASSERT_FALSE(seen.empty());
  EXPECT_EQ(seen.front(), "\"dev1\"");
  EXPECT_EQ(seen.back(), "\"other\"");
  EXPECT_EQ(dev.Request(kGet, "devices/dev1/slot", "", {}, {}, {}, 50u).payload, "\"other\"");
  // The observed path's stream may bring the cloud's value before the upload finds the conflict.
  EXPECT_TRUE(gw_.WaitForLog("transaction conflict at /fleet/dev1/slot", 10s));
  EXPECT_EQ(cloud_.get("/fleet/dev1/slot"), "other") << "the lost write was not forced on the cloud";
  EXPECT_EQ(Metric("tether_transaction_conflicts_total{where=\"cloud\"} "), "1");
  EXPECT_EQ(Metric("tether_transaction_conflicts_total{where=\"local\"} "), "1");
}

TEST_F(Transactions, MatchingCompareAndSetReachesTheCloudWithIfMatch) {
  ASSERT_EQ(Shell("curl -sf -X PUT -d '{\"n\":1}' " + cloud_.url() + "/fleet/dev1/lock.json").status, 0);
  StartGateway();
  SdkClient dev(port_);
  ASSERT_TRUE(dev.Open("dev1"));
  ASSERT_TRUE(WaitConnected(dev));
  ASSERT_EQ(dev.Request(kGet, "devices/dev1/lock", "", {}, {}, {}, 50u).payload, R"({"n":1})");
  ASSERT_EQ(Cas(dev, "devices/dev1/lock", R"({"n":1})", R"({"n":2,"by":"dev1"})").CodeString(), "2.05");
  ASSERT_EQ(Cas(dev, "devices/dev1/lock", R"({"n":2,"by":"dev1"})", "null").CodeString(), "2.05");  // then release
  for (int i = 0; i < 100; ++i) {
    json log = cloud_.control({{"op", "log"}});
    if (log.size() >= 3 && cloud_.get("/fleet/dev1/lock").is_null()) break;
    std::this_thread::sleep_for(50ms);
  }
  EXPECT_TRUE(cloud_.get("/fleet/dev1/lock").is_null());
  std::vector<std::string> methods;
  for (const json& w : cloud_.control({{"op", "log"}})) {
    if (w["path"] == "/fleet/dev1/lock") methods.push_back(w["method"]);
  }
  EXPECT_EQ(methods, (std::vector<std::string>{"PUT", "PUT", "DELETE"})) << "test setup, then the two writes";
  EXPECT_EQ(Metric("tether_transaction_conflicts_total{where=\"cloud\"} "), "0");
}

}  // namespace
}  // namespace tether::testing
