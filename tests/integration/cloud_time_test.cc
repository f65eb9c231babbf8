// Cloud time end to end: tetherd against a fakecloud whose clock differs from the gateway's.
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <map>
#include <thread>

#include "tests/integration/cloud_fixture.h"

namespace tether::testing {
namespace {

using namespace std::chrono_literals;
using nlohmann::json;

class CloudTime : public CloudFixture {};

std::string TimestampedValue(int k) {
  return CborMap({{"k", CborUint(static_cast<uint64_t>(k))}, {"at", CborMap({{".sv", CborText("timestamp")}})}});
}

// A box without RTC boots with its wall clock hours off (here: the cloud is 3 h ahead of it) and
// without network. Devices write server timestamps before the gateway ever reached the cloud;
// once it does, each timestamp in the cloud is the moment of the write in cloud time (not the
// gateway's wrong wall time, not the upload time).
TEST_F(CloudTime, OfflineBootWithAWrongWallClockGetsEventTimesInCloudTime) {
  const int64_t skew = 3 * 3600 * 1000;
  cloud_.Control({{"op", "skew"}, {"ms", skew}});
  cloud_.Control({{"op", "down"}, {"ms", 5000}});
  auto down_at = std::chrono::steady_clock::now();
  StartGateway();
  SdkClient dev(port_);
  ASSERT_TRUE(dev.Open("dev1"));
  EXPECT_EQ(dev.Request(kGet, ".info/connected", "", {}, {}, {}, 50u).payload, "false");
  std::map<std::string, std::pair<int64_t, int64_t>> when;  // push key -> [sent, acked] wall ms
  for (int k = 0; k < 10; ++k) {
    int64_t sent = WallMs();
    CoapReply r = dev.Post("devices/dev1/log", TimestampedValue(k));
    ASSERT_EQ(r.CodeString(), "2.05");
    when[r.payload] = {sent, WallMs()};
    std::this_thread::sleep_for(150ms);  // spread over the offline time
  }
  ASSERT_LT(std::chrono::steady_clock::now() - down_at, 4500ms) << "the writes were not all offline";
  ASSERT_TRUE(WaitCloud("fleet/dev1/log", [&](const json& v) { return v.is_object() && v.size() == when.size(); }, 20s))
      << CloudAt("").dump();
  json log = CloudAt("fleet/dev1/log");
  for (const auto& [key, w] : when) {
    int64_t at = log[key]["at"].get<int64_t>();
    EXPECT_GE(at, w.first + skew - 50) << key;
    EXPECT_LE(at, w.second + skew + 50) << key << ": off by " << at - (w.second + skew) << " ms";
  }
  EXPECT_TRUE(gw_.Log().find("wait for a cloud clock estimate") != std::string::npos) << "held back, not guessed";
}

TEST_F(CloudTime, ServerTimeOffsetIsTheCloudsSkewAndNotifiesItsObservers) {
  cloud_.Control({{"op", "skew"}, {"ms", -90'000}});
  cloud_.Control({{"op", "down"}, {"ms", 2500}});
  StartGateway();
  SdkClient dev(port_);
  ASSERT_TRUE(dev.Open("dev1"));
  // Observed before the gateway ever reached the cloud: no estimate yet.
  CoapReply reg = dev.Request(kGet, ".info/serverTimeOffset", "", {}, 0u, {}, 50u);
  ASSERT_EQ(reg.CodeString(), "2.05");
  EXPECT_EQ(reg.payload, "0");
  std::optional<CoapReply> n;
  auto end = std::chrono::steady_clock::now() + 15s;
  while (std::chrono::steady_clock::now() < end && !n) n = dev.WaitNotification(1s);
  ASSERT_TRUE(n) << "no notification once the cloud was measured";
  int64_t offset = std::stoll(n->payload);
  EXPECT_LT(std::llabs(offset + 90'000), 50) << offset;
  EXPECT_EQ(dev.Request(kGet, ".info/serverTimeOffset", "", {}, {}, {}, 50u).payload, n->payload);
  int64_t server_time = std::stoll(dev.Request(kGet, ".info/serverTime", "", {}, {}, {}, 50u).payload);
  EXPECT_LT(std::llabs(server_time - (WallMs() - 90'000)), 200);
}

// Per-route choice: `timestamps: arrival` gives the cloud's time when the write reaches it, the
// default the time of the event.
TEST_F(CloudTime, ArrivalRoutesGetTheCloudsTimeOnArrivalEventRoutesTheEventTime) {
  const int64_t skew = 60'000;
  cloud_.Control({{"op", "skew"}, {"ms", skew}});
  StartGateway(
      "  - { name: event, match: \"event/**\" }\n"
      "  - { name: arrival, match: \"arrival/**\", timestamps: arrival }\n");
  SdkClient dev(port_);
  ASSERT_TRUE(dev.Open("dev1"));
  ASSERT_TRUE(WaitConnected(dev, true));
  cloud_.Control({{"op", "down"}, {"ms", 2500}});
  int64_t written = WallMs();
  ASSERT_EQ(dev.Put("event/t", TimestampedValue(1)).CodeString(), "2.05");
  ASSERT_EQ(dev.Put("arrival/t", TimestampedValue(2)).CodeString(), "2.05");
  ASSERT_TRUE(WaitCloud("arrival/t", [](const json& v) { return v.is_object(); }, 15s));
  ASSERT_TRUE(WaitCloud("event/t", [](const json& v) { return v.is_object(); }, 15s));
  EXPECT_LT(std::llabs(CloudAt("event/t/at").get<int64_t>() - (written + skew)), 50) << "event time";
  // The arrival route's write went up with the server value left in it, resolved by the cloud.
  int64_t arrived = -1;
  for (auto& e : cloud_.Control({{"op", "log"}})) {
    if (e["body"].dump().find("timestamp") != std::string::npos) arrived = e["t_ms"].get<int64_t>();
  }
  ASSERT_GT(arrived, 0) << "no upload carried {\".sv\":\"timestamp\"}";
  int64_t at = CloudAt("arrival/t/at").get<int64_t>();
  EXPECT_LT(std::llabs(at - arrived), 50) << "the cloud's time on arrival";
  EXPECT_GT(at - (written + skew), 1500) << "not the event time: it arrived after the outage";
}

}  // namespace
}  // namespace tether::testing
