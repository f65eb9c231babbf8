// Compare-and-set writes ("transactions") end to end: checked against the local copy at once,
// replayed to tests/fakecloud with ETag / if-match, and a cloud that changed meanwhile reported
// back to the device (notification, later GET) and counted.
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <thread>

#include "tests/integration/sdk_client.h"
#include "tests/integration/tetherd_process.h"
#include "tests/support/eventually.h"
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
  bool WaitConnected(SdkClient& dev, bool want) {
    return Eventually([&] { return (dev.Request(kGet, ".info/connected", "", {}, {}, {}, 50u).payload == "true") == want; },
                      15s, 100ms);
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
  upstream::testing::FakeCloud cloud_;
  TetherdProcess gw_;
  uint16_t port_ = 0;
  int admin_ = 0;
};

// Deterministic: the cloud is unreachable while the device writes, another writer changes the
// cloud meanwhile, and only then does the cloud come back.
TEST_F(Transactions, CloudChangedUnderAPendingCompareAndSetIsReportedAndCounted) {
  ASSERT_EQ(Shell("curl -sf -X PUT -d '\"free\"' " + cloud_.url() + "/fleet/dev1/slot.json").status, 0);
  StartGateway();
  SdkClient dev(port_);
  ASSERT_TRUE(dev.Open("dev1"));
  ASSERT_TRUE(WaitConnected(dev, true));
  ASSERT_EQ(dev.Request(kGet, "devices/dev1/slot", "", {}, {}, {}, 50u).payload, "\"free\"");  // from the cloud

  // Against the local copy at once: a stale expectation is refused with the current value.
  CoapReply r = Cas(dev, "devices/dev1/slot", "\"taken\"", "\"x\"");
  EXPECT_EQ(r.CodeString(), "4.12");
  EXPECT_EQ(r.payload, "\"free\"");
  r = dev.Request(kPut, "devices/dev1/slot", R"({".cas":{"value":1,"other":2}})", {}, {}, 50u, 50u);
  EXPECT_EQ(r.CodeString(), "4.00");
  CoapReply obs = dev.Request(kGet, "devices/dev1/slot", "", {}, 0u, {}, 50u);
  ASSERT_EQ(obs.payload, "\"free\"");

  cloud_.Control({{"op", "drop"}, {"on", true}});
  r = Cas(dev, "devices/dev1/slot", "\"free\"", "\"dev1\"");
  ASSERT_EQ(r.CodeString(), "2.05");
  ASSERT_TRUE(WaitConnected(dev, false));
  cloud_.Control({{"op", "set"}, {"path", "fleet/dev1/slot"}, {"value", "other"}});
  cloud_.Control({{"op", "drop"}, {"on", false}});

  // The device saw its own write, then hears that the cloud kept the other value.
  std::vector<std::string> seen;
  for (int i = 0; i < 4 && (seen.empty() || seen.back() != "\"other\""); ++i) {
    auto n = dev.WaitNotification(15s);
    if (!n) break;
    seen.push_back(n->payload);
  }
  ASSERT_FALSE(seen.empty());
  EXPECT_EQ(seen.front(), "\"dev1\"");
  EXPECT_EQ(seen.back(), "\"other\"");
  ASSERT_TRUE(gw_.WaitForLog("transaction conflict at /fleet/dev1/slot", 10s));
  EXPECT_EQ(dev.Request(kGet, "devices/dev1/slot", "", {}, {}, {}, 50u).payload, "\"other\"");
  // The observed path's stream may bring the cloud's value before the upload finds the conflict.
  EXPECT_TRUE(gw_.WaitForLog("transaction conflict at /fleet/dev1/slot", 10s));
  EXPECT_EQ(cloud_.Get("/fleet/dev1/slot"), "other") << "the lost write was not forced on the cloud";
  int writes = 0;
  for (const json& w : cloud_.Control({{"op", "log"}})) writes += w["path"] == "/fleet/dev1/slot";
  EXPECT_EQ(writes, 1) << "only the test's setup: the gateway never wrote there";
  EXPECT_EQ(Metric("tether_transaction_conflicts_total{where=\"cloud\"} "), "1");
  EXPECT_EQ(Metric("tether_transaction_conflicts_total{where=\"local\"} "), "1");
}

// The conflict puts the cloud's value into the local copy; writes the device queued after the lost
// compare-and-set still upload, so the local copy shows them on top (as the cloud will hold them).
TEST_F(Transactions, ConflictKeepsLaterQueuedWritesInTheLocalCopy) {
  StartGateway();
  SdkClient dev(port_);
  ASSERT_TRUE(dev.Open("dev1"));
  ASSERT_TRUE(WaitConnected(dev, true));
  cloud_.Control({{"op", "drop"}, {"on", true}});
  ASSERT_EQ(Cas(dev, "devices/dev1/lock", "null", R"({"owner":"dev1"})").CodeString(), "2.05");
  ASSERT_EQ(dev.Request(kPut, "devices/dev1/lock/note", "\"later\"", {}, {}, 50u, 50u).CodeString(), "2.05");
  ASSERT_TRUE(WaitConnected(dev, false));
  cloud_.Control({{"op", "set"}, {"path", "fleet/dev1/lock"}, {"value", {{"owner", "other"}}}});
  cloud_.Control({{"op", "drop"}, {"on", false}});
  ASSERT_TRUE(gw_.WaitForLog("transaction conflict at /fleet/dev1/lock", 15s));
  const json want = {{"owner", "other"}, {"note", "later"}};
  json cloud;
  Eventually([&] { return (cloud = cloud_.Get("/fleet/dev1/lock")) == want; }, 10s, 100ms);
  EXPECT_EQ(cloud, want);
  // Read the local copy itself (online a GET would ask the cloud): cut the cloud off again.
  cloud_.Control({{"op", "drop"}, {"on", true}});
  ASSERT_EQ(dev.Request(kPut, "devices/dev1/poke", "1", {}, {}, 50u, 50u).CodeString(), "2.05");
  ASSERT_TRUE(WaitConnected(dev, false));
  CoapReply r = dev.Request(kGet, "devices/dev1/lock", "", {}, {}, {}, 50u);
  ASSERT_EQ(r.CodeString(), "2.05");
  EXPECT_EQ(json::parse(r.payload), want) << "the local copy lost the queued note while the cloud got it";
}

TEST_F(Transactions, MatchingCompareAndSetReachesTheCloudWithIfMatch) {
  ASSERT_EQ(Shell("curl -sf -X PUT -d '{\"n\":1}' " + cloud_.url() + "/fleet/dev1/lock.json").status, 0);
  StartGateway();
  SdkClient dev(port_);
  ASSERT_TRUE(dev.Open("dev1"));
  ASSERT_TRUE(WaitConnected(dev, true));
  ASSERT_EQ(dev.Request(kGet, "devices/dev1/lock", "", {}, {}, {}, 50u).payload, R"({"n":1})");
  // The ETag the cloud gives {"n":1}: the upload must carry it as if-match.
  ShellResult head = Shell("curl -sf -D - -o /dev/null -H 'X-Firebase-ETag: true' " + cloud_.url() + "/fleet/dev1/lock.json");
  ASSERT_EQ(head.status, 0);
  std::string etag;
  for (size_t at = 0; at < head.out.size();) {
    size_t end = head.out.find('\n', at);
    std::string line = head.out.substr(at, end == std::string::npos ? std::string::npos : end - at);
    if (line.rfind("ETag: ", 0) == 0) etag = line.substr(6, line.find_last_not_of("\r\n") - 5);
    at = end == std::string::npos ? head.out.size() : end + 1;
  }
  ASSERT_FALSE(etag.empty()) << head.out;
  ASSERT_EQ(Cas(dev, "devices/dev1/lock", R"({"n":1})", R"({"n":2,"by":"dev1"})").CodeString(), "2.05");
  ASSERT_EQ(Cas(dev, "devices/dev1/lock", R"({"n":2,"by":"dev1"})", "null").CodeString(), "2.05");  // then release
  Eventually([&] { return cloud_.Control({{"op", "log"}}).size() >= 3 && cloud_.Get("/fleet/dev1/lock").is_null(); }, 5s, 50ms);
  EXPECT_TRUE(cloud_.Get("/fleet/dev1/lock").is_null());
  std::vector<std::string> methods;
  std::vector<json> if_match;
  for (const json& w : cloud_.Control({{"op", "log"}})) {
    if (w["path"] != "/fleet/dev1/lock") continue;
    methods.push_back(w["method"]);
    if_match.push_back(w["if_match"]);
  }
  EXPECT_EQ(methods, (std::vector<std::string>{"PUT", "PUT", "DELETE"})) << "test setup, then the two writes";
  ASSERT_EQ(if_match.size(), 3u);
  EXPECT_TRUE(if_match[0].is_null()) << "the test's own setup write";
  EXPECT_EQ(if_match[1], etag) << "the compare-and-set named the value it expected";
  EXPECT_TRUE(if_match[2].is_string() && if_match[2] != etag) << if_match[2].dump();
  EXPECT_EQ(Metric("tether_transaction_conflicts_total{where=\"cloud\"} "), "0");
}

}  // namespace
}  // namespace tether::testing
