// The 2038 boundary wherever tetherd keeps time: the queue TTL (entry ages, the sweep, the clocks
// stored with a write), cloud-time estimates, event times of queued writes, push ids. These run
// natively and, under `make cross-test`, as armhf binaries: Debian 12 armhf has a 32-bit time_t,
// so a time in seconds overflows at 2038-01-19T03:14:08Z (2^31 s) and one in milliseconds kept
// in 32 bits already at 2^31 ms (24.8 days, e.g. CLOCK_BOOTTIME of a box up for a month).
// tetherd keeps every time as int64 milliseconds and reads the clocks through a 64-bit timespec
// (store/boot_clock.cc), so each figure below must come out exact on both sides of the boundary.
#include <time.h>

#include <gtest/gtest.h>

#include <chrono>
#include <climits>
#include <cstdint>

#include "gateway/cloud/cloud_bridge.h"
#include "gateway/model/push_id.h"
#include "store/boot_clock.h"
#include "store/entry_age.h"
#include "store/store.h"
#include "tests/store/store_test_util.h"
#include "tests/upstream/fakecloud_process.h"
#include "tests/upstream/run_until.h"
#include "upstream/cloud_clock.h"

namespace tether {
namespace {

constexpr int64_t kRollover = (int64_t{1} << 31) * 1000;  // 2038-01-19T03:14:08Z in ms
constexpr int64_t kUptimeMonth = 30LL * 86'400'000;        // CLOCK_BOOTTIME past 2^31 ms
constexpr int64_t k2106 = (int64_t{1} << 32) * 1000;      // where an unsigned 32-bit time_t ends
static_assert(kUptimeMonth > INT32_MAX);

store::ClockReading At(int64_t wall, int64_t boottime, const std::string& boot) {
  return store::ClockReading{wall, boottime, boot};
}

TEST(Y2038, ClocksAreReadAsInt64Milliseconds) {
  const int64_t wall = store::WallClockMs();
  const int64_t by_time = static_cast<int64_t>(::time(nullptr)) * 1000;
  EXPECT_GT(wall, int64_t{INT32_MAX}) << "milliseconds since 1970 do not fit 32 bits";
  EXPECT_LE(std::abs(wall - by_time), 2000) << wall << " vs time() " << by_time;
  EXPECT_GE(store::BootTimeMs(), 0);
}

TEST(Y2038, QueueAgeAcrossTheBoundary) {
  // Written 30 s before the rollover after a month of uptime; read 60 s after it.
  store::QueueEntry e = store::testing::EntryAt("t", "1", At(kRollover - 30'000, kUptimeMonth, "a"));
  EXPECT_EQ(store::AgeOf(e, At(kRollover + 60'000, kUptimeMonth + 90'000, "a")).ms, 90'000) << "same boot";
  EXPECT_EQ(store::AgeOf(e, At(kRollover + 60'000, 5'000, "b")).ms, 90'000) << "after a reboot: wall clocks";
  EXPECT_EQ(store::AgeOf(e, At(k2106 + 1, 5'000, "b")).ms, k2106 + 1 - (kRollover - 30'000));
  EXPECT_TRUE(store::PlausibleWall(kRollover));
}

TEST(Y2038, TtlSweepAndStoredClocksAcrossTheBoundary) {
  store::testing::TempDir dir;
  store::StoreOptions o;
  o.route_limits["t"] = store::QueueLimits{0, 0, store::OverflowPolicy::kReject, /*ttl_ms=*/60'000};
  auto s = store::Store::Open(dir.Sub("db"), o, nullptr);
  store::WriteBatch b;
  b.Append(store::testing::EntryAt("t", "before", At(kRollover - 50'000, kUptimeMonth, "a")));
  b.Append(store::testing::EntryAt("t", "after", At(kRollover + 10'000, kUptimeMonth + 60'000, "a")));
  ASSERT_TRUE(s->CommitBlocking(std::move(b)).status.ok());
  s.reset();
  s = store::Store::Open(dir.Sub("db"), o, nullptr);  // the clocks come back from disk intact
  auto queued = s->queue().Peek("t", 10);
  ASSERT_EQ(queued.size(), 2u);
  EXPECT_EQ(queued[0].wall_ms, kRollover - 50'000);
  EXPECT_EQ(queued[1].wall_ms, kRollover + 10'000);
  EXPECT_EQ(queued[1].boottime_ms, kUptimeMonth + 60'000);
  store::WriteBatch sweep;  // 20 s after the rollover: "before" is 70 s old, "after" 10 s
  sweep.SweepExpired(At(kRollover + 20'000, kUptimeMonth + 70'000, "a"));
  ASSERT_TRUE(s->CommitBlocking(std::move(sweep)).status.ok());
  queued = s->queue().Peek("t", 10);
  ASSERT_EQ(queued.size(), 1u);
  EXPECT_EQ(queued[0].payload, "after");
  EXPECT_EQ(s->queue().Stats("t")->expired, 1u);
  EXPECT_EQ(s->queue().Stats("t")->ttl_age_unknown, 0u);
}

TEST(Y2038, EventCloudTimeAcrossTheBoundary) {
  // A write 10 s before the rollover, uploaded 50 s later with the cloud 2.5 s ahead.
  store::QueueEntry e;
  e.wall_ms = kRollover - 10'000;
  e.boottime_ms = kUptimeMonth;
  e.boot_id = "a";
  EXPECT_EQ(EventCloudTimeMs(e, kRollover + 40'000, kUptimeMonth + 50'000, "a", 2'500), kRollover - 7'500);
  EXPECT_EQ(EventCloudTimeMs(e, kRollover + 40'000, 1'000, "b", 2'500), kRollover - 7'500) << "after a reboot";
  e.cloud_offset_ms = -1'000;
  EXPECT_EQ(EventCloudTimeMs(e, k2106, 1'000, "b", std::nullopt), kRollover - 11'000);
}

TEST(Y2038, PushIdsEncodeAndSortAcrossTheBoundary) {
  PushIdGenerator g;
  std::string prev;
  for (int64_t t : {kRollover - 1, kRollover, kRollover + 1, k2106 - 1, k2106, k2106 + 1}) {
    std::string id = g.Next(t);
    EXPECT_EQ(PushIdGenerator::TimestampOf(id), t);
    EXPECT_LT(prev, id) << t;
    prev = id;
  }
}

// The estimate of cloud time against fakecloud whose clock reads 2038 + a few seconds, with the
// local wall clock (injected) 4 s behind it: the offset and the cloud's own timestamps stay exact.
TEST(Y2038, CloudClockEstimatesPastTheBoundary) {
  using namespace std::chrono;
  const int64_t real_now = duration_cast<milliseconds>(system_clock::now().time_since_epoch()).count();
  const int64_t shift = kRollover + 3'000 - real_now;  // the cloud's clock: 3 s past the rollover
  upstream::testing::FakeCloud cloud;
  cloud.Control({{"op", "skew"}, {"ms", shift}});
  uv_loop_t loop;
  uv_loop_init(&loop);
  {
    upstream::HttpClient http(&loop);
    auto creds = upstream::MakeNoCredentials();
    upstream::CloudClockOptions o;
    o.base_url = cloud.url();
    o.presence_path = "tether-gateways/gw-2038";
    o.interval_ms = 50;
    o.wall_clock_ms = [shift] {
      return duration_cast<milliseconds>(system_clock::now().time_since_epoch()).count() + shift - 4'000;
    };
    upstream::CloudClock clock(&loop, http, *creds, o);
    clock.Start();
    ASSERT_TRUE(upstream::testing::RunUntil(&loop, [&] { return clock.sample_count() >= 3; }));
    ASSERT_TRUE(clock.offset_ms());
    EXPECT_LT(std::abs(*clock.offset_ms() - 4'000), 50) << *clock.offset_ms();
    const int64_t cloud_now = store::BootTimeMs() + *clock.boot_offset_ms();
    EXPECT_GT(cloud_now, kRollover);
    EXPECT_LT(cloud_now, kRollover + 60'000);
    auto presence = cloud.Control({{"op", "dump"}})["tether-gateways"]["gw-2038"];
    ASSERT_TRUE(presence["last_seen"].is_number()) << presence.dump();
    EXPECT_GT(presence["last_seen"].get<int64_t>(), kRollover);
    bool done = false;
    clock.Shutdown([&] { done = true; });
    ASSERT_TRUE(upstream::testing::RunUntil(&loop, [&] { return done; }));
  }
  uv_run(&loop, UV_RUN_NOWAIT);
  EXPECT_EQ(uv_loop_close(&loop), 0);
}

}  // namespace
}  // namespace tether
