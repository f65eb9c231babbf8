// CloudClock against fakecloud with an injected clock skew; presence node contents.
#include "upstream/cloud_clock.h"

#include <gtest/gtest.h>

#include <chrono>
#include <cstdlib>
#include <functional>

#include "tests/upstream/fakecloud_process.h"

namespace tether::upstream {
namespace {

bool RunUntil(uv_loop_t* loop, const std::function<bool()>& done,
              std::chrono::milliseconds limit = std::chrono::seconds(15)) {
  auto end = std::chrono::steady_clock::now() + limit;
  while (!done() && std::chrono::steady_clock::now() < end) uv_run(loop, UV_RUN_ONCE);
  return done();
}

TEST(CloudClock, EstimatesInjectedSkewAndWritesPresence) {
  testing::FakeCloud cloud;
  cloud.control({{"op", "skew"}, {"ms", -73500}});
  uv_loop_t loop;
  uv_loop_init(&loop);
  {
    HttpClient http(&loop);
    auto creds = MakeNoCredentials();
    int link_up = 0;
    CloudClock clock(&loop, http, *creds,
                     {cloud.url(), ".gateways/gw-1", 50, 8, 5000, [&](bool up) { link_up += up; }});
    EXPECT_FALSE(clock.has_estimate());
    clock.start();
    ASSERT_TRUE(RunUntil(&loop, [&] { return clock.sample_count() >= 5; }));
    EXPECT_TRUE(clock.has_estimate());
    EXPECT_LT(std::abs(clock.offset_ms() - (-73500)), 50) << clock.offset_ms();
    EXPECT_GE(link_up, 5);
    auto presence = cloud.control({{"op", "dump"}})[".gateways"]["gw-1"];
    EXPECT_EQ(presence["status"], "online");
    EXPECT_TRUE(presence["last_seen"].is_number());
    bool done = false;
    clock.shutdown([&] { done = true; });
    ASSERT_TRUE(RunUntil(&loop, [&] { return done; }));
    EXPECT_EQ(cloud.control({{"op", "dump"}})[".gateways"]["gw-1"]["status"], "offline");
  }
  uv_run(&loop, UV_RUN_NOWAIT);
  EXPECT_EQ(uv_loop_close(&loop), 0);
}

}  // namespace
}  // namespace tether::upstream
