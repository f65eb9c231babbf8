// Hot reload with an upstream: what applies at once (routes, cloud patterns, queue limits), what
// needs a restart (reported, never silently ignored, never crashing), and queued data kept.
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <signal.h>

#include <thread>

#include "tests/integration/sdk_client.h"
#include "tests/integration/tetherd_process.h"
#include "tests/support/eventually.h"
#include "tests/upstream/fakecloud_process.h"

namespace tether::testing {
namespace {

using namespace std::chrono_literals;
using nlohmann::json;

class Reload : public ::testing::Test {
 protected:
  void SetUp() override {
    coap_port_ = static_cast<uint16_t>(FreePort());
    admin_port_ = FreePort(false);
  }
  // The config file: a head (device, admin, store, upstream unless local-only) plus `rest`.
  void Write(const std::string& rest, bool with_upstream = true, const std::string& device_extra = "") {
    gw_.WriteConfig("gateway:\n  id: gw-reload\ndevice:\n  listen: \"127.0.0.1:" + std::to_string(coap_port_) +
                    "\"\n" + device_extra + "admin:\n  listen: \"127.0.0.1:" + std::to_string(admin_port_) +
                    "\"\nstore:\n  path: ${STORE}\n" +
                    (with_upstream ? "upstream:\n  url: " + cloud_.url() + "\n" : std::string()) +
                    "apps:\n  - id: myapp\n" + rest);
  }
  void Start() {
    gw_.Start();
    ASSERT_TRUE(gw_.WaitForLog("admin endpoint on", 10s)) << gw_.Log();
  }
  ShellResult Ctl(const std::string& args) {
    return Shell(TetherdProcess::BinaryPath("tetherctl") + " --admin 127.0.0.1:" + std::to_string(admin_port_) + " " +
                 args);
  }
  json CloudAt(const std::string& path) {
    try {
      return cloud_.Get(path);
    } catch (const std::exception&) {
      return nullptr;  // down
    }
  }

  upstream::testing::FakeCloud cloud_;
  TetherdProcess gw_;
  uint16_t coap_port_ = 0;
  int admin_port_ = 0;
};

const char* kRoutes =
    "routes:\n"
    "  - { name: devs, match: \"devices/{device}/**\", cloud: \"fleet/{device}/**\" }\n";

// Writes accepted under the old cloud pattern go where they were accepted for; new writes follow
// the new pattern; nothing lands at a mixed-up path.
TEST_F(Reload, ChangedCloudPatternKeepsQueuedWritesAtTheirPaths) {
  Write(kRoutes);
  Start();
  SdkClient dev(coap_port_);
  ASSERT_TRUE(dev.Open("d1"));
  cloud_.Control({{"op", "down"}, {"ms", 3000}});
  ASSERT_EQ(dev.Put("devices/d1/a", CborUint(1)).CodeString(), "2.05");
  Write("routes:\n  - { name: devs, match: \"devices/{device}/**\", cloud: \"fleet2/{device}/**\" }\n");
  ShellResult r = Ctl("reload");
  ASSERT_EQ(r.status, 0) << r.out;
  EXPECT_EQ(r.out.find("restart"), std::string::npos) << "a cloud pattern applies without a restart: " << r.out;
  ASSERT_EQ(dev.Put("devices/d1/b", CborUint(2)).CodeString(), "2.05");
  ASSERT_TRUE(Eventually([&] { return CloudAt("/fleet2/d1/b") == 2 && CloudAt("/fleet/d1/a") == 1; }, 20s, 100ms))
      << CloudAt("/").dump();
  json all = CloudAt("/");
  all.erase("tether-gateways");
  EXPECT_EQ(all, json::parse(R"({"fleet":{"d1":{"a":1}},"fleet2":{"d1":{"b":2}}})"));
}

// A route added by a reload drains at once, and new queue limits apply to the next write.
TEST_F(Reload, NewRoutesDrainAtOnceAndQueueLimitsApply) {
  Write(kRoutes);
  Start();
  SdkClient dev(coap_port_);
  ASSERT_TRUE(dev.Open("d1"));
  Write(std::string(kRoutes) +
        "  - { name: extra, match: \"extra/**\", priority: 5, queue: { max_entries: 1, on_full: reject } }\n");
  ShellResult r = Ctl("reload");
  ASSERT_EQ(r.status, 0) << r.out;
  ASSERT_EQ(dev.Put("extra/x", CborUint(5)).CodeString(), "2.05");
  EXPECT_TRUE(Eventually([&] { return CloudAt("/extra/x") == 5; }, 5s, 100ms)) << "the new route waited for a restart";

  cloud_.Control({{"op", "down"}, {"ms", 3000}});
  ASSERT_EQ(dev.Put("extra/y", CborUint(6)).CodeString(), "2.05");
  CoapReply full = dev.Put("extra/z", CborUint(7));
  EXPECT_EQ(full.CodeString(), "5.03") << "the reloaded bound of 1 entry is enforced";
  json q = json::parse(Ctl("--json queue").out);
  bool seen = false;
  for (const auto& row : q["routes"]) {
    if (row["route"] != "extra") continue;
    seen = true;
    EXPECT_EQ(row["rejected"], 1) << row.dump();
  }
  EXPECT_TRUE(seen) << q.dump();
  EXPECT_TRUE(Eventually([&] { return CloudAt("/extra/y") == 6; }, 20s, 100ms)) << "queued writes survive the limit change";
}

// Upstream, sync roots and device timers need a restart: the reload says so, keeps them running as
// they were (the cloud is still used after `upstream` was removed from the file) and never crashes.
TEST_F(Reload, RestartOnlyChangesAreReportedAndTheOldValuesKeepRunning) {
  Write(kRoutes);
  Start();
  SdkClient dev(coap_port_);
  ASSERT_TRUE(dev.Open("d1"));
  ASSERT_TRUE(Eventually([&] { return dev.Request(1, ".info/connected", "", {}, {}, {}, 50u).payload == "true"; }, 10s, 100ms))
      << "link never up";

  Write("routes:\n  - { name: devs, match: \"devices/{device}/**\", cloud: \"fleet/{device}/**\", sync: [ fleet ] }\n",
        /*with_upstream=*/false, "  heartbeat_target: 30s\n");
  ShellResult r = Ctl("--json reload");
  ASSERT_EQ(r.status, 0) << r.out;
  json j = json::parse(r.out);
  EXPECT_EQ(j["restart_required"],
            json::parse(R"j(["device.heartbeat_target", "device.session_timeout", "upstream (removed)", "routes[].sync"])j"))
      << r.out;
  ShellResult human = Ctl("reload");
  EXPECT_NE(human.out.find("needs a restart to take effect: device.heartbeat_target"), std::string::npos) << human.out;
  EXPECT_TRUE(gw_.WaitForLog("take effect only after a restart", 2s));

  // Still uploading, and device reads outside the sync roots still go to the cloud.
  ASSERT_EQ(dev.Put("devices/d1/after", CborUint(3)).CodeString(), "2.05");
  EXPECT_TRUE(Eventually([&] { return CloudAt("/fleet/d1/after") == 3; }, 20s, 100ms)) << "the upstream stopped";
  ASSERT_EQ(Shell("curl -sf -X PUT -d '\"cloud-side\"' " + cloud_.url() + "/fleet/d1/info.json").status, 0);
  EXPECT_EQ(dev.Request(1, "devices/d1/info", "", {}, {}, {}, 50u).payload, "\"cloud-side\"");
  json status = json::parse(Ctl("--json status").out);
  EXPECT_EQ(status["mode"], "upstream");

  // The same through SIGHUP, then a clean stop.
  auto warnings = [&] {
    std::string log = gw_.Log();
    size_t n = 0;
    for (size_t at = log.find("upstream (removed)"); at != std::string::npos; at = log.find("upstream (removed)", at + 1)) ++n;
    return n;
  };
  const size_t before = warnings();
  gw_.Signal(SIGHUP);
  EXPECT_TRUE(Eventually([&] { return warnings() == before + 1; }, 5s, 100ms)) << "SIGHUP did not report the restart-only keys";
  EXPECT_EQ(dev.Ping().CodeString(), "2.05");
  gw_.Signal(SIGTERM);
  EXPECT_EQ(gw_.WaitExit(10s), 0);
}

// Writes queued in local-only mode reach the cloud once an upstream is configured and tetherd restarted.
TEST_F(Reload, LocalOnlyBacklogDrainsAfterRestartWithAnUpstream) {
  Write(kRoutes, /*with_upstream=*/false);
  Start();
  ASSERT_TRUE(gw_.WaitForLog("local-only mode", 5s));
  {
    SdkClient dev(coap_port_);
    ASSERT_TRUE(dev.Open("d7"));
    for (int i = 0; i < 3; ++i) {
      ASSERT_EQ(dev.Put("devices/d7/v" + std::to_string(i), CborUint(10 + i)).CodeString(), "2.05");
    }
  }
  gw_.Signal(SIGTERM);
  ASSERT_EQ(gw_.WaitExit(10s), 0);
  Write(kRoutes);
  Start();
  EXPECT_TRUE(gw_.WaitForLog("uploading 1 route(s)", 5s));
  EXPECT_TRUE(Eventually([&] {
    return CloudAt("/fleet/d7") == json::parse(R"({"v0":10,"v1":11,"v2":12})");
  }, 20s, 100ms)) << CloudAt("/").dump();
  EXPECT_TRUE(Eventually([&] { return json::parse(Ctl("--json status").out)["queue"]["entries"] == 0; }, 20s, 100ms));
}

}  // namespace
}  // namespace tether::testing
