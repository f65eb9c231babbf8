// Device queries end to end: tetherd answering Firebase queries from the cloud (tests/fakecloud),
// remembering the results, and serving them offline after a restart.
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <csignal>
#include <optional>
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

constexpr const char* kRoutes =
    "  - { name: devs, match: \"devices/{device}/**\", cloud: \"fleet/{device}/**\" }\n"
    "  - { name: cfg, match: \"config/**\", write: none, sync: [ \"config\" ] }\n"
    "  - { name: boxes, match: \"boxes/{device}/**\", cloud: \"box/{device}/**\", sync: [ \"box\" ] }\n";

class Queries : public ::testing::Test {
 protected:
  // upstream = false: local-only mode (no cloud configured).
  void StartGateway(bool upstream = true) {
    if (port_ == 0) {
      port_ = static_cast<uint16_t>(FreePort());
      gw_.WriteConfig("gateway:\n  id: gw-query\ndevice:\n  listen: \"127.0.0.1:" + std::to_string(port_) +
                      "\"\nadmin:\n  listen: \"127.0.0.1:" + std::to_string(FreePort(false)) +
                      "\"\nstore:\n  path: ${STORE}\n" + (upstream ? "upstream:\n  url: " + cloud_.url() + "\n" : "") +
                      "apps:\n  - id: myapp\nroutes:\n" + kRoutes);
    }
    gw_.Start();
    ASSERT_TRUE(gw_.WaitForLog(upstream ? "uploading 3 route(s)" : "local-only mode", 10s)) << gw_.Log();
  }
  void StopGateway() {
    gw_.Signal(SIGTERM);
    ASSERT_EQ(gw_.WaitExit(10s), 0);
  }
  bool WaitConnected(SdkClient& dev, bool want) {
    return Eventually([&] { return (dev.Request(kGet, ".info/connected", "", {}, {}, {}, 50u).payload == "true") == want; },
                      15s, 100ms);
  }
  // A query answered in JSON (Accept 50).
  CoapReply Query(SdkClient& dev, const std::string& path, const std::vector<std::string>& params) {
    return dev.Request(kGet, path, "", params, {}, {}, 50u);
  }
  CoapReply Read(SdkClient& dev, const std::string& path) { return dev.Request(kGet, path, "", {}, {}, {}, 50u); }
  // Polls a JSON read until it answers `want` (2.05); false after `limit`.
  bool WaitRead(SdkClient& dev, const std::string& path, const json& want, std::chrono::milliseconds limit) {
    return Eventually(
        [&] {
          CoapReply r = Read(dev, path);
          return r.CodeString() == "2.05" && json::parse(r.payload, nullptr, false) == want;
        },
        limit, 100ms);
  }
  void CloudPut(const std::string& path, const std::string& json_text) {
    ASSERT_EQ(Shell("curl -sf -X PUT -d '" + json_text + "' " + cloud_.url() + "/" + path + ".json").status, 0);
  }
  // Another writer changes the cloud (also while the gateway cannot reach it).
  void CloudSet(const std::string& path, const json& value) {
    cloud_.Control({{"op", "set"}, {"path", path}, {"value", value}});
  }
  int Reads(const std::string& path) {
    int n = 0;
    for (const json& r : cloud_.Control({{"op", "reads"}})) n += r["path"] == path;
    return n;
  }
  size_t LogCount(const std::string& text) {
    std::string log = gw_.Log();
    size_t n = 0;
    for (size_t at = log.find(text); at != std::string::npos; at = log.find(text, at + 1)) ++n;
    return n;
  }
  // Cuts the gateway off the cloud; a queued write makes it notice at once.
  void CutCloud(SdkClient& dev) {
    cloud_.Control({{"op", "drop"}, {"on", true}});
    ASSERT_EQ(dev.Put("devices/" + device_ + "/poke", CborUint(1)).CodeString(), "2.05");
    ASSERT_TRUE(WaitConnected(dev, false));
  }
  upstream::testing::FakeCloud cloud_;
  TetherdProcess gw_;
  uint16_t port_ = 0;
  std::string device_ = "dev1";
};

TEST_F(Queries, CloudResultsAreRememberedAndServedOfflineAfterARestart) {
  CloudPut("fleet/dev1/scores", R"({"a":5,"b":1,"c":9,"d":3,"e":"x"})");
  CloudPut("fleet/dev1/rooms", R"({"x":{"n":2},"y":{"n":1},"z":{"n":3}})");
  // Firebase answers a query ordered by value or by a child only with an index in its rules.
  cloud_.Control({{"op", "index"}, {"path", "/fleet/dev1/scores"}, {"on", {".value"}}});
  StartGateway();
  SdkClient dev(port_);
  ASSERT_TRUE(dev.Open("dev1"));
  ASSERT_TRUE(WaitConnected(dev, true));

  // Online: asked from the cloud with REST query parameters.
  CoapReply r = Query(dev, "devices/dev1/scores", {"orderBy=$value", "limitToFirst=2"});
  ASSERT_EQ(r.CodeString(), "2.05") << r.payload;
  EXPECT_EQ(json::parse(r.payload), json::parse(R"({"b":1,"d":3})"));
  bool asked = false;
  for (const json& read : cloud_.Control({{"op", "reads"}})) {
    asked = asked || (read["path"] == "/fleet/dev1/scores" &&
                      read["query"].get<std::string>().find("orderBy=%22%24value%22&limitToFirst=2") == 0);
  }
  EXPECT_TRUE(asked) << cloud_.Control({{"op", "reads"}}).dump();
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
  cloud_.Control({{"op", "down"}, {"ms", 8000}});
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
  Eventually([&] { return dev.Get("config/b").payload == CborUint(2); }, 5s, 100ms);
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
  cloud_.Control({{"op", "down"}, {"ms", 3000}});
  r = dev.Request(kGet, "config", "", {"orderBy=$value", "endAt=1"}, {}, {}, 50u);
  ASSERT_EQ(r.CodeString(), "2.05");
  EXPECT_EQ(json::parse(r.payload), json::parse(R"({"a":0})"));
  EXPECT_EQ(dev.Request(kGet, "config", "", {"orderBy=$value", "limitToLast=1"}, 1u).CodeString(), "2.05");
}

// The stream reconnects while a device write under the sync root is still waiting to upload: the
// full resync replaces the subtree with the cloud's copy, and the write stays on top of it.
TEST_F(Queries, SyncResyncKeepsWritesNotYetUploaded) {
  CloudPut("box/dev1", R"({"a":1})");
  StartGateway();
  SdkClient dev(port_);
  ASSERT_TRUE(dev.Open("dev1"));
  ASSERT_TRUE(WaitRead(dev, "boxes/dev1", json{{"a", 1}}, 5s));
  cloud_.Control({{"op", "fail"}, {"status", 503}, {"count", 100000}, {"path", "/box.json"}, {"method", "PATCH"}});
  ASSERT_EQ(dev.Request(kPut, "boxes/dev1/b", CborUint(2)).CodeString(), "2.05");
  EXPECT_EQ(json::parse(Read(dev, "boxes/dev1").payload), (json{{"a", 1}, {"b", 2}}));
  // The cloud changes while the stream hears nothing, then the stream is cut: only the full
  // resync after the reconnect can bring c.
  const size_t resyncs = LogCount("sync root /box resynced from the cloud");
  cloud_.Control({{"op", "silence_streams"}, {"on", true}});
  std::this_thread::sleep_for(200ms);
  CloudSet("box/dev1/c", 3);
  std::this_thread::sleep_for(200ms);
  cloud_.Control({{"op", "cut_streams"}});
  cloud_.Control({{"op", "silence_streams"}, {"on", false}});
  Eventually([&] { return LogCount("sync root /box resynced from the cloud") != resyncs; }, 10s, 100ms);
  ASSERT_GT(LogCount("sync root /box resynced from the cloud"), resyncs);
  json local;
  Eventually([&] { return (local = json::parse(Read(dev, "boxes/dev1").payload, nullptr, false)).contains("c"); }, 5s, 100ms);
  EXPECT_EQ(local, (json{{"a", 1}, {"b", 2}, {"c", 3}})) << "the resync must not hide the queued write";
  cloud_.Control({{"op", "clear_faults"}});
  Eventually([&] { return cloud_.Get("/box/dev1") == json{{"a", 1}, {"b", 2}, {"c", 3}}; }, 10s, 100ms);
  EXPECT_EQ(cloud_.Get("/box/dev1"), (json{{"a", 1}, {"b", 2}, {"c", 3}}));
  EXPECT_EQ(json::parse(Read(dev, "boxes/dev1").payload), (json{{"a", 1}, {"b", 2}, {"c", 3}}));
}

// Online, with a write still queued on the route: the cloud's result is merged into the local
// copy and the answer comes from there, so it includes what the device wrote.
TEST_F(Queries, CloudAnswersIncludeTheDevicesQueuedWrites) {
  CloudPut("fleet/dev1/scores", R"({"a":5,"b":1,"c":9})");
  cloud_.Control({{"op", "index"}, {"path", "/fleet/dev1/scores"}, {"on", {".value"}}});
  StartGateway();
  SdkClient dev(port_);
  ASSERT_TRUE(dev.Open("dev1"));
  ASSERT_TRUE(WaitConnected(dev, true));
  cloud_.Control({{"op", "fail"}, {"status", 503}, {"count", 100000}, {"path", "/fleet.json"}, {"method", "PATCH"}});
  ASSERT_EQ(dev.Request(kPut, "devices/dev1/scores/z", CborUint(0)).CodeString(), "2.05");
  CoapReply r = Query(dev, "devices/dev1/scores", {"orderBy=$value", "limitToFirst=2"});
  ASSERT_EQ(r.CodeString(), "2.05") << r.payload;
  EXPECT_EQ(json::parse(r.payload), (json{{"z", 0}, {"b", 1}}));
  r = Read(dev, "devices/dev1/scores");  // a plain read too: the cloud's value, the write on top
  ASSERT_EQ(r.CodeString(), "2.05");
  EXPECT_EQ(json::parse(r.payload), (json{{"a", 5}, {"b", 1}, {"c", 9}, {"z", 0}}));
  EXPECT_EQ(Reads("/fleet/dev1/scores"), 2) << "both were asked from the cloud";
  cloud_.Control({{"op", "clear_faults"}});
  Eventually([&] { return cloud_.Get("/fleet/dev1/scores").contains("z"); }, 10s, 100ms);
  EXPECT_EQ(cloud_.Get("/fleet/dev1/scores"), (json{{"a", 5}, {"b", 1}, {"c", 9}, {"z", 0}}));
}

// A device observes a remembered query (outside sync roots); the cloud changes during an outage;
// when the link comes back the query is read again, the child the cloud deleted leaves the local
// copy and the observer hears the new result.
TEST_F(Queries, AfterAnOutageObservedQueriesRefreshAndDeletedChildrenGo) {
  CloudPut("fleet/dev1/scores", R"({"a":1,"b":2,"c":3,"d":4,"e":5})");
  StartGateway();
  SdkClient dev(port_);
  ASSERT_TRUE(dev.Open("dev1"));
  ASSERT_TRUE(WaitConnected(dev, true));
  const std::vector<std::string> first3 = {"orderBy=$key", "limitToFirst=3"};
  CoapReply r = Query(dev, "devices/dev1/scores", first3);
  ASSERT_EQ(r.CodeString(), "2.05");
  ASSERT_EQ(json::parse(r.payload), (json{{"a", 1}, {"b", 2}, {"c", 3}}));
  r = dev.Request(kGet, "devices/dev1/scores", "", first3, 0u, {}, 50u);
  ASSERT_EQ(r.CodeString(), "2.05");
  ASSERT_TRUE(r.observe.has_value());
  EXPECT_EQ(Reads("/fleet/dev1/scores"), 1) << "held: answered locally, refreshed at most every 30 s";

  CutCloud(dev);
  CloudSet("fleet/dev1/scores/b", nullptr);
  CloudSet("fleet/dev1/scores/aa", 9);
  r = Query(dev, "devices/dev1/scores", first3);  // offline: what the gateway remembered
  ASSERT_EQ(r.CodeString(), "2.05");
  EXPECT_EQ(json::parse(r.payload), (json{{"a", 1}, {"b", 2}, {"c", 3}}));

  cloud_.Control({{"op", "drop"}, {"on", false}});
  const json want = {{"a", 1}, {"aa", 9}, {"c", 3}};
  std::optional<CoapReply> n;
  for (int i = 0; i < 5; ++i) {
    n = dev.WaitNotification(10s);
    if (!n || json::parse(n->payload, nullptr, false) == want) break;
  }
  ASSERT_TRUE(n) << "no notification after the link came back";
  EXPECT_EQ(json::parse(n->payload), want);
  r = Query(dev, "devices/dev1/scores", first3);
  EXPECT_EQ(json::parse(r.payload), want) << "b was deleted in the cloud: it must not come back offline";
  EXPECT_EQ(json::parse(Read(dev, "devices/dev1/scores/b").payload, nullptr, false), nullptr);
}

TEST_F(Queries, HeldQueryIsNotReadFromTheCloudOnEveryRequest) {
  CloudPut("fleet/dev1/t", R"({"x":1,"y":2})");
  StartGateway();
  SdkClient dev(port_);
  ASSERT_TRUE(dev.Open("dev1"));
  ASSERT_TRUE(WaitConnected(dev, true));
  for (int i = 0; i < 4; ++i) {
    CoapReply r = Query(dev, "devices/dev1/t", {"orderBy=$key", "limitToFirst=1"});
    ASSERT_EQ(r.CodeString(), "2.05");
    EXPECT_EQ(json::parse(r.payload), (json{{"x", 1}}));
  }
  std::this_thread::sleep_for(300ms);  // a background refresh would have been asked by now
  EXPECT_EQ(Reads("/fleet/dev1/t"), 1);
}

// A fresh gateway that never reached the cloud holds nothing: it says so (5.03 + Max-Age) rather
// than answering null as if the cloud held nothing, until it has synced or read the data.
TEST_F(Queries, NothingHeldOfflineIsUnavailableNotNull) {
  cloud_.Control({{"op", "drop"}, {"on", true}});
  CloudSet("config", json{{"rate", 5}});
  CloudSet("fleet/dev1/info", json{{"fw", "1.2"}});
  StartGateway();
  SdkClient dev(port_);
  ASSERT_TRUE(dev.Open("dev1"));
  EXPECT_EQ(Read(dev, ".info/connected").payload, "false");
  CoapReply r = Read(dev, "config");
  EXPECT_EQ(r.CodeString(), "5.03") << "a sync root before its first sync";
  EXPECT_EQ(r.payload, "value not held offline");
  EXPECT_EQ(r.max_age, 5u);
  r = Query(dev, "config", {"orderBy=$key"});
  EXPECT_EQ(r.CodeString(), "5.03");
  EXPECT_EQ(r.payload, "query result not held offline");
  r = Read(dev, "devices/dev1/info");
  EXPECT_EQ(r.CodeString(), "5.03");
  EXPECT_EQ(r.max_age, 5u);
  // What the device wrote is held: that is answered.
  ASSERT_EQ(dev.Request(kPut, "devices/dev1/info/note", CborText("n")).CodeString(), "2.05");
  r = Read(dev, "devices/dev1/info");
  ASSERT_EQ(r.CodeString(), "2.05");
  EXPECT_EQ(json::parse(r.payload), (json{{"note", "n"}}));

  cloud_.Control({{"op", "drop"}, {"on", false}});
  ASSERT_TRUE(WaitRead(dev, "config", json{{"rate", 5}}, 10s)) << "synced once the cloud is back";
  ASSERT_TRUE(WaitConnected(dev, true));
  ASSERT_TRUE(WaitRead(dev, "devices/dev1/info", json{{"fw", "1.2"}, {"note", "n"}}, 10s));

  // The first full sync and the read are remembered durably: a restart offline still answers.
  StopGateway();
  cloud_.Control({{"op", "drop"}, {"on", true}});
  StartGateway();
  SdkClient again(port_);
  ASSERT_TRUE(again.Open("dev1"));
  r = Read(again, "config");
  ASSERT_EQ(r.CodeString(), "2.05");
  EXPECT_EQ(json::parse(r.payload), (json{{"rate", 5}}));
  r = Read(again, "devices/dev1/info");
  ASSERT_EQ(r.CodeString(), "2.05");
  EXPECT_EQ(json::parse(r.payload), (json{{"fw", "1.2"}, {"note", "n"}}));
  EXPECT_EQ(Read(again, "devices/dev1/elsewhere").CodeString(), "5.03");
}

// Without a cloud the local copy is all there is: it answers, null included.
TEST_F(Queries, LocalOnlyModeAnswersFromTheLocalCopy) {
  StartGateway(/*upstream=*/false);
  SdkClient dev(port_);
  ASSERT_TRUE(dev.Open("dev1"));
  CoapReply r = Read(dev, "devices/dev1/none");
  ASSERT_EQ(r.CodeString(), "2.05");
  EXPECT_EQ(r.payload, "null");
  r = Query(dev, "config", {"orderBy=$key", "limitToFirst=1"});
  ASSERT_EQ(r.CodeString(), "2.05");
  EXPECT_EQ(r.payload, "null");
  ASSERT_EQ(dev.Request(kPut, "devices/dev1/s", CborUint(4)).CodeString(), "2.05");
  r = Query(dev, "devices/dev1", {"orderBy=$value", "equalTo=4"});
  ASSERT_EQ(r.CodeString(), "2.05");
  EXPECT_EQ(json::parse(r.payload), (json{{"s", 4}}));
}

}  // namespace
}  // namespace tether::testing
