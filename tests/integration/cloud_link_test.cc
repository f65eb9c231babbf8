// The gateway and its cloud: tetherd uploading to tests/fakecloud over real HTTP.
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <map>
#include <memory>
#include <thread>

#include "tests/integration/sdk_client.h"
#include "tests/integration/tetherd_process.h"
#include "tests/upstream/fakecloud_process.h"

namespace tether::testing {
namespace {

using namespace std::chrono_literals;
using nlohmann::json;
constexpr uint8_t kPost = 2;

int64_t WallMs() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::system_clock::now().time_since_epoch()).count();
}

class CloudLink : public ::testing::Test {
 protected:
  void StartGateway() {
    port_ = static_cast<uint16_t>(FreePort());
    gw_.WriteConfig("gateway:\n  id: gw-test\ndevice:\n  listen: \"127.0.0.1:" + std::to_string(port_) +
                    "\"\nadmin:\n  listen: \"127.0.0.1:" + std::to_string(FreePort(false)) +
                    "\"\nstore:\n  path: ${STORE}\nupstream:\n  url: " + cloud_.url() +
                    "\napps:\n  - id: myapp\nroutes:\n"
                    "  - { name: devs, match: \"devices/{device}/**\", cloud: \"fleet/{device}/**\" }\n"
                    "  - { name: cfg, match: \"config/**\", write: none, sync: [ \"config\" ] }\n");
    gw_.Start();
    ASSERT_TRUE(gw_.WaitForLog("uploading 2 route(s)", 10s)) << gw_.Log();
  }
  void TearDown() override {
    if (HasFailure()) std::fprintf(stderr, "---- tetherd log ----\n%s\n", gw_.Log().c_str());
  }

  upstream::testing::FakeCloud cloud_;
  TetherdProcess gw_;
  uint16_t port_ = 0;
};

TEST_F(CloudLink, WanOutageEveryAcknowledgedWriteArrivesOnceInOrderWithEventTime) {
  const bool soak = std::getenv("TETHER_SOAK") != nullptr;
  const int outage_ms = soak ? 60'000 : 4'000;
  const int kDevices = 100, kWrites = 5;
  StartGateway();
  std::vector<std::unique_ptr<SdkClient>> devs;
  for (int d = 0; d < kDevices; ++d) {
    devs.push_back(std::make_unique<SdkClient>(port_));
    ASSERT_TRUE(devs.back()->Open("dev" + std::to_string(d)));
  }
  cloud_.control({{"op", "down"}, {"ms", outage_ms}});
  // Every device writes while the cloud is unreachable; each write is acknowledged locally.
  std::map<std::string, int64_t> event_ms;  // push key -> when the device got its 2.05
  std::map<std::string, std::vector<std::string>> keys;  // device -> keys in write order
  auto t0 = std::chrono::steady_clock::now();
  for (int k = 0; k < kWrites; ++k) {
    std::vector<std::string> toks;
    for (int d = 0; d < kDevices; ++d) {
      toks.push_back(devs[d]->Send(kPost, "devices/dev" + std::to_string(d) + "/log",
                                   CborMap({{"k", CborUint(k)}, {"at", CborMap({{".sv", CborText("timestamp")}})}})));
    }
    for (int d = 0; d < kDevices; ++d) {
      CoapReply r = devs[d]->Await(toks[d]);
      ASSERT_EQ(r.CodeString(), "2.05") << "writes are acknowledged while the cloud is down";
      event_ms[r.payload] = WallMs();
      keys["dev" + std::to_string(d)].push_back(r.payload);
    }
  }
  ASSERT_LT(std::chrono::steady_clock::now() - t0, std::chrono::milliseconds(outage_ms)) << "writes were not offline";
  EXPECT_EQ(devs[0]->Request(1, ".info/connected", "", {}, {}, {}, 50u).payload, "false");

  // After the outage everything arrives (bounded wait).
  json fleet;
  for (int i = 0; i < 300; ++i) {
    try {
      fleet = cloud_.get("/fleet");
    } catch (const std::exception&) {  // the cloud is still down
      std::this_thread::sleep_for(200ms);
      continue;
    }
    size_t n = 0;
    if (fleet.is_object()) {
      for (auto& [dev, v] : fleet.items()) n += v.contains("log") ? v["log"].size() : 0;
    }
    if (n == static_cast<size_t>(kDevices * kWrites)) break;
    std::this_thread::sleep_for(200ms);
  }
  size_t late = 0, checked = 0;
  for (const auto& [dev, ks] : keys) {
    for (size_t k = 0; k < ks.size(); ++k) {
      const json& v = fleet[dev]["log"][ks[k]];
      ASSERT_TRUE(v.is_object()) << dev << " write " << k << " missing in the cloud";
      EXPECT_EQ(v["k"], k);
      int64_t at = v["at"].get<int64_t>();
      late += std::llabs(at - event_ms[ks[k]]) > 50;
      ++checked;
    }
  }
  EXPECT_EQ(checked, static_cast<size_t>(kDevices * kWrites));
  EXPECT_EQ(late, 0u) << "server timestamps are the event time, not the upload time";

  // Exactly once and in order: each key is in exactly one upload, and one device's keys are
  // uploaded in the order they were written.
  json log = cloud_.control({{"op", "log"}});
  std::map<std::string, std::vector<size_t>> seen;  // key -> indexes of requests carrying it
  for (size_t i = 0; i < log.size(); ++i) {
    if (log[i]["method"] != "PATCH") continue;
    std::string body = log[i]["body"].is_string() ? log[i]["body"].get<std::string>() : log[i]["body"].dump();
    for (const auto& [key, t] : event_ms) {
      if (body.find(key) != std::string::npos) seen[key].push_back(i);
    }
  }
  for (const auto& [dev, ks] : keys) {
    size_t prev = 0;
    for (const auto& key : ks) {
      ASSERT_EQ(seen[key].size(), 1u) << key << " uploaded " << seen[key].size() << " times";
      EXPECT_GE(seen[key][0], prev) << dev << ": uploads out of order";
      prev = seen[key][0];
    }
  }
  // The link is reported up again.
  bool up = false;
  for (int i = 0; i < 50 && !up; ++i) {
    up = devs[0]->Request(1, ".info/connected", "", {}, {}, {}, 50u).payload == "true";
    if (!up) std::this_thread::sleep_for(200ms);
  }
  EXPECT_TRUE(up);
  std::printf("wan outage: %d ms down, %d writes acknowledged offline, all uploaded once, in order, "
              "timestamps within 50 ms of the event\n", outage_ms, kDevices * kWrites);
}

TEST_F(CloudLink, SyncRootIsServedOfflineAndFollowsCloudChanges) {
  cloud_.control({{"op", "reset"}});
  StartGateway();
  SdkClient dev(port_);
  ASSERT_TRUE(dev.Open("d1"));
  // The cloud writes config; the gateway's stream brings it into the local copy and notifies.
  ASSERT_EQ(dev.Observe("config").CodeString(), "2.05");
  ShellResult put = Shell("curl -sf -X PUT -d '{\"rate\":5}' " + cloud_.url() + "/config.json");
  ASSERT_EQ(put.status, 0);
  auto n = dev.WaitNotification(5s);
  ASSERT_TRUE(n) << gw_.Log();
  EXPECT_EQ(n->payload, "\xa1" + CborText("rate") + CborUint(5));
  // Cloud down: the device still reads the synced value.
  cloud_.control({{"op", "down"}, {"ms", 3000}});
  EXPECT_EQ(dev.Get("config/rate").payload, CborUint(5));
  EXPECT_EQ(dev.Put("config/rate", CborUint(9)).CodeString(), "4.03") << "route write: none";
}

TEST_F(CloudLink, ReadOutsideSyncRootsAsksTheCloudThenFallsBackToTheLocalCopy) {
  StartGateway();
  SdkClient dev(port_);
  ASSERT_TRUE(dev.Open("dev1"));
  ASSERT_EQ(Shell("curl -sf -X PUT -d '\"from-cloud\"' " + cloud_.url() + "/fleet/dev1/info.json").status, 0);
  // Wait until the gateway has seen the link up (its first upload or presence write).
  bool up = false;
  for (int i = 0; i < 50 && !up; ++i) {
    up = dev.Request(1, ".info/connected", "", {}, {}, {}, 50u).payload == "true";
    if (!up) std::this_thread::sleep_for(100ms);
  }
  ASSERT_TRUE(up);
  EXPECT_EQ(dev.Request(1, "devices/dev1/info", "", {}, {}, {}, 50u).payload, "\"from-cloud\"");
  cloud_.control({{"op", "down"}, {"ms", 4000}});
  // The cloud is gone: the copy remembered from the last read answers.
  EXPECT_EQ(dev.Request(1, "devices/dev1/info", "", {}, {}, {}, 50u).payload, "\"from-cloud\"");
}

}  // namespace
}  // namespace tether::testing
