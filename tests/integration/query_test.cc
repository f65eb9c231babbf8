// Device queries end to end: tetherd answering Firebase queries from the cloud (tests/fakecloud),
// remembering the results, and serving them offline after a restart.
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <csignal>
#include <thread>

#include "tests/integration/sdk_client.h"
#include "tests/integration/tetherd_process.h"
#include "tests/upstream/fakecloud_process.h"

namespace tether::testing {
namespace {

using namespace std::chrono_literals;
using nlohmann::json;
constexpr uint8_t kGet = 1, kPut = 3;

class Queries : public ::testing::Test {
 protected:
  void StartGateway() {
    if (port_ == 0) {
      port_ = static_cast<uint16_t>(FreePort());
      gw_.WriteConfig("gateway:\n  id: gw-query\ndevice:\n  listen: \"127.0.0.1:" + std::to_string(port_) +
                      "\"\nadmin:\n  listen: \"127.0.0.1:" + std::to_string(FreePort(false)) +
                      "\"\nstore:\n  path: ${STORE}\nupstream:\n  url: " + cloud_.url() +
                      "\napps:\n  - id: myapp\nroutes:\n"
                      "  - { name: devs, match: \"devices/{device}/**\", cloud: \"fleet/{device}/**\" }\n"
                      "  - { name: cfg, match: \"config/**\", write: none, sync: [ \"config\" ] }\n");
    }
    gw_.Start();
    ASSERT_TRUE(gw_.WaitForLog("uploading 2 route(s)", 10s)) << gw_.Log();
  }
  void StopGateway() {
    gw_.Signal(SIGTERM);
    ASSERT_EQ(gw_.WaitExit(10s), 0);
  }
  bool WaitConnected(SdkClient& dev, bool want) {
    for (int i = 0; i < 100; ++i) {
      if ((dev.Request(kGet, ".info/connected", "", {}, {}, {}, 50u).payload == "true") == want) return true;
      std::this_thread::sleep_for(100ms);
    }
    return false;
  }
  // A query answered in JSON (Accept 50).
  CoapReply Query(SdkClient& dev, const std::string& path, const std::vector<std::string>& params) {
    return dev.Request(kGet, path, "", params, {}, {}, 50u);
  }
  void CloudPut(const std::string& path, const std::string& json_text) {
    ASSERT_EQ(Shell("curl -sf -X PUT -d '" + json_text + "' " + cloud_.url() + "/" + path + ".json").status, 0);
  }
  void TearDown() override {
    if (HasFailure()) std::fprintf(stderr, "---- tetherd log ----\n%s\n", gw_.Log().c_str());
  }

  upstream::testing::FakeCloud cloud_;
  TetherdProcess gw_;
  uint16_t port_ = 0;
};

TEST_F(Queries, CloudResultsAreRememberedAndServedOfflineAfterARestart) {
  CloudPut("fleet/dev1/scores", R"({"a":5,"b":1,"c":9,"d":3,"e":"x"})");
  CloudPut("fleet/dev1/rooms", R"({"x":{"n":2},"y":{"n":1},"z":{"n":3}})");
  StartGateway();
  SdkClient dev(port_);
  ASSERT_TRUE(dev.Open("dev1"));
  ASSERT_TRUE(WaitConnected(dev, true));

  // Online: asked from the cloud with REST query parameters.
  CoapReply r = Query(dev, "devices/dev1/scores", {"orderBy=$value", "limitToFirst=2"});
  ASSERT_EQ(r.CodeString(), "2.05") << r.payload;
  EXPECT_EQ(json::parse(r.payload), json::parse(R"({"b":1,"d":3})"));
  bool asked = false;
  for (const json& read : cloud_.control({{"op", "reads"}})) {
    asked = asked || (read["path"] == "/fleet/dev1/scores" &&
                      read["query"].get<std::string>().find("orderBy=%22%24value%22&limitToFirst=2") == 0);
  }
  EXPECT_TRUE(asked) << cloud_.control({{"op", "reads"}}).dump();
  // A plain read remembers the whole value: any query below it can be answered offline.
  ASSERT_EQ(dev.Request(kGet, "devices/dev1/rooms", "", {}, {}, {}, 50u).CodeString(), "2.05");
  // Bad parameters: a clear 4.00.
  r = Query(dev, "devices/dev1/scores", {"limitToFirst=2"});
  EXPECT_EQ(r.CodeString(), "4.00");
  EXPECT_EQ(r.payload, "orderBy is required with startAt, endAt, equalTo and limits");
  r = Query(dev, "devices/dev1/scores", {"orderBy=$key", "limitToLast=zero"});
  EXPECT_EQ(r.CodeString(), "4.00");
  EXPECT_EQ(r.payload, "limitToLast must be a positive integer");

  // The gateway restarts while the WAN is down.
  StopGateway();
  cloud_.control({{"op", "down"}, {"ms", 8000}});
  StartGateway();
  SdkClient again(port_);
  ASSERT_TRUE(again.Open("dev1"));
  EXPECT_EQ(again.Request(kGet, ".info/connected", "", {}, {}, {}, 50u).payload, "false");
  r = Query(again, "devices/dev1/scores", {"orderBy=\"$value\"", "limitToFirst=2"});  // same query, quoted
  ASSERT_EQ(r.CodeString(), "2.05") << r.payload;
  EXPECT_EQ(json::parse(r.payload), json::parse(R"({"b":1,"d":3})"));
  r = Query(again, "devices/dev1/rooms", {"orderBy=n", "limitToLast=2"});
  ASSERT_EQ(r.CodeString(), "2.05") << r.payload;
  EXPECT_EQ(json::parse(r.payload), json::parse(R"({"x":{"n":2},"z":{"n":3}})"));
  // A query whose result the gateway never held cannot be answered honestly offline.
  r = Query(again, "devices/dev1/scores", {"orderBy=$key", "limitToFirst=1"});
  EXPECT_EQ(r.CodeString(), "5.03");
  EXPECT_EQ(r.payload, "query result not held offline");
  EXPECT_EQ(r.max_age, 5u);
  // An offline write changes the remembered result at once.
  ASSERT_EQ(again.Request(kPut, "devices/dev1/scores/f", CborUint(0)).CodeString(), "2.05");
  r = Query(again, "devices/dev1/scores", {"orderBy=$value", "limitToFirst=2"});
  EXPECT_EQ(json::parse(r.payload), json::parse(R"({"b":1,"f":0})"));
}

TEST_F(Queries, ObservedQueryIsNotifiedOnlyWhenItsResultChanges) {
  CloudPut("config", R"({"a":1,"b":2})");
  StartGateway();
  SdkClient dev(port_);
  ASSERT_TRUE(dev.Open("d1"));
  ASSERT_TRUE(WaitConnected(dev, true));
  for (int i = 0; i < 50 && dev.Get("config/b").payload != CborUint(2); ++i) std::this_thread::sleep_for(100ms);
  CoapReply r = dev.Request(kGet, "config", "", {"orderBy=$value", "limitToLast=1"}, 0u, {}, 50u);
  ASSERT_EQ(r.CodeString(), "2.05");
  ASSERT_TRUE(r.observe.has_value());
  EXPECT_EQ(json::parse(r.payload), json::parse(R"({"b":2})"));
  // The cloud changes a value outside the result: no notification. Then one inside it.
  CloudPut("config/a", "0");
  CloudPut("config/c", "7");
  auto n = dev.WaitNotification(5s);
  ASSERT_TRUE(n);
  EXPECT_EQ(json::parse(n->payload), json::parse(R"({"c":7})")) << "the first notification is the changed result";
  // Offline the synced data still answers queries, and unobserving by path + query works.
  cloud_.control({{"op", "down"}, {"ms", 3000}});
  r = dev.Request(kGet, "config", "", {"orderBy=$value", "endAt=1"}, {}, {}, 50u);
  ASSERT_EQ(r.CodeString(), "2.05");
  EXPECT_EQ(json::parse(r.payload), json::parse(R"({"a":0})"));
  EXPECT_EQ(dev.Request(kGet, "config", "", {"orderBy=$value", "limitToLast=1"}, 1u).CodeString(), "2.05");
}

}  // namespace
}  // namespace tether::testing
