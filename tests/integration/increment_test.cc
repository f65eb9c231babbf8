// Server increments end to end: applied locally at once, uploaded to tests/fakecloud exactly once
// even when the cloud applied a batch whose reply never reached the gateway (lost reply, kill -9).
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <memory>
#include <thread>

#include "tests/integration/sdk_client.h"
#include "tests/integration/tetherd_process.h"
#include "tests/support/eventually.h"
#include "tests/upstream/fakecloud_process.h"

namespace tether::testing {
namespace {

using namespace std::chrono_literals;
using nlohmann::json;
constexpr uint8_t kGet = 1, kPut = 3, kPatch = 6;

std::string Increment(uint64_t n) { return CborMap({{".sv", CborMap({{"increment", CborUint(n)}})}}); }

class Increments : public ::testing::Test {
 protected:
  void StartGateway() {
    if (port_ == 0) {
      port_ = static_cast<uint16_t>(FreePort());
      gw_.WriteConfig("gateway:\n  id: gw-inc\ndevice:\n  listen: \"127.0.0.1:" + std::to_string(port_) +
                      "\"\nadmin:\n  listen: \"127.0.0.1:" + std::to_string(FreePort(false)) +
                      "\"\nstore:\n  path: ${STORE}\nupstream:\n  url: " + cloud_.url() +
                      "\napps:\n  - id: myapp\nroutes:\n"
                      "  - { name: devs, match: \"devices/{device}/**\", cloud: \"fleet/{device}/**\" }\n"
                      "  - { name: shared, match: \"stats/**\", cloud: \"stats/**\" }\n"
                      "  - { name: synced, match: \"counters/**\", cloud: \"counters/**\", sync: [ \"counters\" ] }\n");
    }
    gw_.Start();
    ASSERT_TRUE(gw_.WaitForLog("uploading 3 route(s)", 10s)) << gw_.Log();
  }
  bool WaitConnected(SdkClient& dev) {
    return Eventually([&] { return dev.Request(kGet, ".info/connected", "", {}, {}, {}, 50u).payload == "true"; }, 10s, 100ms);
  }
  // Polls the cloud until pred(value at path) holds; false after `limit`.
  template <typename Pred>
  bool WaitCloud(const std::string& path, Pred pred, std::chrono::milliseconds limit) {
    return Eventually(
        [&] {
          try {
            return static_cast<bool>(pred(cloud_.Get(path)));
          } catch (const std::exception&) {  // the cloud is down
            return false;
          }
        },
        limit, 50ms);
  }
  int MarkReads() {
    int n = 0;
    for (const json& r : cloud_.Control({{"op", "reads"}})) n += r["path"] == "/tether-applied/gw-inc/shared";
    return n;
  }
  void TearDown() override {
    if (!HasFailure()) return;  // gw_ prints its own log
    try {
      std::fprintf(stderr, "---- cloud writes ----\n%s\n---- cloud reads ----\n%s\n",
                   cloud_.Control({{"op", "log"}}).dump().substr(0, 3000).c_str(),
                   cloud_.Control({{"op", "reads"}}).dump().substr(0, 3000).c_str());
    } catch (const std::exception&) {
    }
  }

  upstream::testing::FakeCloud cloud_;
  TetherdProcess gw_;
  uint16_t port_ = 0;
};

TEST_F(Increments, FiftyDevicesDuringAnOutageAddUpExactlyOnce) {
  constexpr int kDevices = 50, kEach = 3;
  ASSERT_EQ(Shell("curl -sf -X PUT -d '1000' " + cloud_.url() + "/stats/total.json").status, 0);
  StartGateway();
  std::vector<std::unique_ptr<SdkClient>> devs;
  for (int d = 0; d < kDevices; ++d) {
    devs.push_back(std::make_unique<SdkClient>(port_));
    ASSERT_TRUE(devs.back()->Open("dev" + std::to_string(d)));
  }
  ASSERT_TRUE(WaitConnected(*devs[0]));
  // Replies lost after the cloud applied the batch: two dropped connections, two 503s.
  cloud_.Control({{"op", "lose_replies"}, {"count", 2}, {"status", 0}, {"path", "stats/total"}});
  cloud_.Control({{"op", "lose_replies"}, {"count", 2}, {"status", 503}, {"path", "stats/total"}});
  cloud_.Control({{"op", "down"}, {"ms", 3000}});
  auto t0 = std::chrono::steady_clock::now();
  for (int k = 0; k < kEach; ++k) {
    std::vector<std::string> toks;
    for (int d = 0; d < kDevices; ++d) {
      toks.push_back(devs[d]->Send(kPut, "stats/total", Increment(1)));
    }
    for (int d = 0; d < kDevices; ++d) ASSERT_EQ(devs[d]->Await(toks[d]).CodeString(), "2.05");
  }
  for (int d = 0; d < kDevices; ++d) {  // an increment inside an update, per device
    std::string tok = devs[d]->Send(kPatch, "devices/dev" + std::to_string(d),
                                    CborMap({{"count", Increment(2)}, {"name", CborText("n" + std::to_string(d))}}));
    ASSERT_EQ(devs[d]->Await(tok).CodeString(), "2.05");
  }
  ASSERT_LT(std::chrono::steady_clock::now() - t0, 3000ms) << "the writes were not made offline";
  // Applied locally at once: the gateway's copy counts from what it holds (nothing: 0).
  EXPECT_EQ(devs[0]->Request(kGet, "stats/total", "", {}, {}, {}, 50u).payload, std::to_string(kDevices * kEach));
  EXPECT_EQ(devs[7]->Request(kGet, "devices/dev7/count", "", {}, {}, {}, 50u).payload, "2");

  const int want = 1000 + kDevices * kEach;
  ASSERT_TRUE(WaitCloud("/stats/total", [&](const json& v) { return v.is_number() && v.get<int>() >= want; }, 20s))
      << cloud_.Get("/stats/total").dump();
  ASSERT_TRUE(WaitCloud("/fleet", [&](const json& v) { return v.is_object() && v.size() == kDevices; }, 10s));
  std::this_thread::sleep_for(1s);  // anything sent twice would land now
  EXPECT_EQ(cloud_.Get("/stats/total"), want);
  json fleet = cloud_.Get("/fleet");
  for (int d = 0; d < kDevices; ++d) {
    EXPECT_EQ(fleet["dev" + std::to_string(d)], (json{{"count", 2}, {"name", "n" + std::to_string(d)}})) << d;
  }
  EXPECT_GE(MarkReads(), 2) << "each lost reply made the gateway read its applied mark";
  json mark = cloud_.Get("/tether-applied/gw-inc/shared");
  EXPECT_TRUE(mark.contains("seq") && mark.contains("queue")) << mark.dump();
  std::printf("increments: %d devices x %d during an outage, 4 replies lost after commit, cloud total %d "
              "(exact), %d mark reads\n", kDevices, kEach, cloud_.Get("/stats/total").get<int>(), MarkReads());
}

TEST_F(Increments, KilledAfterTheCloudAppliedButBeforeTheQueueForgotIt) {
  StartGateway();
  SdkClient dev(port_);
  ASSERT_TRUE(dev.Open("d1"));
  ASSERT_TRUE(WaitConnected(dev));
  ASSERT_EQ(dev.Put("stats/hits", Increment(10)).CodeString(), "2.05");  // the mark is known now
  ASSERT_TRUE(WaitCloud("/stats/hits", [](const json& v) { return v == 10; }, 5s));
  // The cloud commits the next increment, the reply is lost, and reading the mark fails for a
  // while: the entry is still queued on disk when the gateway is killed.
  cloud_.Control({{"op", "lose_replies"}, {"count", 1}, {"status", 0}, {"path", "stats/hits"}});
  cloud_.Control({{"op", "fail"}, {"status", 503}, {"count", 4}, {"path", "tether-applied"}});
  ASSERT_EQ(dev.Put("stats/hits", Increment(5)).CodeString(), "2.05");
  ASSERT_TRUE(WaitCloud("/stats/hits", [](const json& v) { return v == 15; }, 5s));
  gw_.Kill9();
  StartGateway();
  SdkClient again(port_);
  ASSERT_TRUE(again.Open("d1"));
  ASSERT_EQ(again.Put("stats/hits", Increment(1)).CodeString(), "2.05");  // queued behind the first
  ASSERT_TRUE(WaitCloud("/stats/hits", [](const json& v) { return v.is_number() && v.get<int>() >= 16; }, 15s))
      << cloud_.Get("/stats/hits").dump();
  std::this_thread::sleep_for(500ms);
  EXPECT_EQ(cloud_.Get("/stats/hits"), 16) << "the increment applied before the kill was not sent again";
  int patches = 0;
  for (const json& w : cloud_.Control({{"op", "log"}})) patches += w["method"] == "PATCH";
  EXPECT_EQ(patches, 3) << "one upload per increment, none repeated";
  EXPECT_GE(MarkReads(), 1);
}

// Under a sync root the stream brings each upload's effect back while the write may still be
// queued: the local copy must count every increment exactly once too (an increment being uploaded
// is not applied again on top of cloud data that may already hold it).
TEST_F(Increments, SyncedCounterLocallyEqualsTheCloudsTotal) {
  constexpr int kDevices = 10, kEach = 5;
  ASSERT_EQ(Shell("curl -sf -X PUT -d '100' " + cloud_.url() + "/counters/total.json").status, 0);
  StartGateway();
  std::vector<std::unique_ptr<SdkClient>> devs;
  for (int d = 0; d < kDevices; ++d) {
    devs.push_back(std::make_unique<SdkClient>(port_));
    ASSERT_TRUE(devs.back()->Open("dev" + std::to_string(d)));
  }
  ASSERT_TRUE(WaitConnected(*devs[0]));
  auto local = [&] { return devs[0]->Request(kGet, "counters/total", "", {}, {}, {}, 50u).payload; };
  Eventually([&] { return local() == "100"; }, 5s, 100ms);
  ASSERT_EQ(local(), "100");
  auto burst = [&] {
    for (int k = 0; k < kEach; ++k) {
      std::vector<std::string> toks;
      for (int d = 0; d < kDevices; ++d) toks.push_back(devs[d]->Send(kPut, "counters/total", Increment(1)));
      for (int d = 0; d < kDevices; ++d) ASSERT_EQ(devs[d]->Await(toks[d]).CodeString(), "2.05");
      std::this_thread::sleep_for(20ms);  // let uploads and their echoes interleave with new writes
    }
  };
  burst();  // online
  cloud_.Control({{"op", "drop"}, {"on", true}});
  burst();  // offline: the stream's full resync afterwards meets queued increments
  cloud_.Control({{"op", "drop"}, {"on", false}});
  const int want = 100 + 2 * kDevices * kEach;
  ASSERT_TRUE(WaitCloud("/counters/total", [&](const json& v) { return v == want; }, 20s))
      << cloud_.Get("/counters/total").dump();
  Eventually([&] { return local() == std::to_string(want); }, 10s, 100ms);
  EXPECT_EQ(local(), std::to_string(want));
  std::this_thread::sleep_for(1s);
  EXPECT_EQ(local(), std::to_string(want)) << "settled";
  EXPECT_EQ(cloud_.Get("/counters/total"), want);
}

}  // namespace
}  // namespace tether::testing
