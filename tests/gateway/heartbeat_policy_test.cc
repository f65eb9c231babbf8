// Proves that answering late pings with 4.01 keeps an unmodified Wilddog SDK device within the
// heartbeat target, using the SDK's documented policy (shared/protocol/device-protocol.md).
#include "gateway/heartbeat_policy.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <vector>

namespace tether {
namespace {

// The SDK's ping scheduler, in seconds, exactly as documented.
struct SdkPingModel {
  int64_t interval = 19, delta = 8;
  void On205ToPing() {
    interval += delta;
    if (interval >= 165) interval = 165, delta = 0;
  }
  void On401ToPing() {
    if (delta == 0) {
      interval = 19, delta = 8;
    } else {
      interval -= delta;
      delta /= 2;
    }
  }
  void On205ToRst() { interval += delta; }
};

// Runs a device for `seconds`; returns the gaps between consecutive pings as the gateway saw them.
std::vector<int64_t> Simulate(const HeartbeatPolicy* policy, int64_t seconds) {
  SdkPingModel sdk;
  std::vector<int64_t> gaps;
  int64_t now = 1'000'000, prev = 0;  // prev 0 = no ping yet
  // First ping right after auth. Times are ms for the policy, seconds for the model.
  const int64_t end = now + seconds * 1000;
  while (now < end) {
    bool steer = policy && policy->ShouldSteerDown(prev, now);
    if (prev) gaps.push_back((now - prev) / 1000);
    prev = now;
    if (steer) {
      sdk.On401ToPing();
      sdk.On205ToRst();  // the gateway accepts the immediate /.rst with the long token
    } else {
      sdk.On205ToPing();
    }
    now += sdk.interval * 1000;
  }
  return gaps;
}

TEST(HeartbeatPolicy, UnsteeredSdkDriftsToThreeMinutes) {
  auto gaps = Simulate(nullptr, 3600);
  EXPECT_EQ(*std::max_element(gaps.begin(), gaps.end()), 165);
}

TEST(HeartbeatPolicy, SteeredSdkStaysWithinTargetAfterConvergence) {
  HeartbeatPolicy p{20'000, 1'000};
  auto gaps = Simulate(&p, 24 * 3600);
  ASSERT_GT(gaps.size(), 3000u);
  // Only the very first intervals may overshoot while the model converges.
  EXPECT_LE(*std::max_element(gaps.begin(), gaps.end()), 27);
  EXPECT_LE(*std::max_element(gaps.begin() + 5, gaps.end()), 23);
  int over_target = std::count_if(gaps.begin() + 10, gaps.end(), [](int64_t g) { return g > 21; });
  EXPECT_EQ(over_target, 0) << "steady state: every ping within target + tolerance";
  // The default session timeout (1.75 x target = 35 s) leaves room for the SDK's own ping
  // retransmissions (+2 s, +6 s) even on the first, longest interval.
  EXPECT_LT(*std::max_element(gaps.begin(), gaps.end()) + 6, 35);
}

TEST(HeartbeatPolicy, NativeClientWithinTargetIsNeverSteered) {
  HeartbeatPolicy p{20'000, 1'000};
  for (int64_t gap : {5'000, 15'000, 20'000, 21'000}) {
    EXPECT_FALSE(p.ShouldSteerDown(100'000, 100'000 + gap)) << gap;
  }
  EXPECT_TRUE(p.ShouldSteerDown(100'000, 121'001));
  EXPECT_FALSE(p.ShouldSteerDown(0, 500'000)) << "first ping of a session";
}

TEST(HeartbeatPolicy, LargerTargetsConvergeToo) {
  for (int64_t target : {30, 60, 120}) {
    HeartbeatPolicy p{target * 1000, 1000};
    auto gaps = Simulate(&p, 24 * 3600);
    int64_t steady_max = *std::max_element(gaps.begin() + 20, gaps.end());
    EXPECT_LE(steady_max, target + 1) << "target " << target;
  }
}

}  // namespace
}  // namespace tether
