// CloudClock against fakecloud with an injected clock skew; presence node contents.
#include "upstream/cloud_clock.h"

#include <gtest/gtest.h>

#include <chrono>
#include <cstdlib>
#include <atomic>
#include <fstream>
#include <functional>
#include <iterator>
#include <unistd.h>

#include "tests/upstream/fakecloud_process.h"
#include "tests/upstream/run_until.h"
#include "tests/upstream/token_file_credentials.h"

namespace tether::upstream {
namespace {

using testing::RunUntil;

TEST(CloudClock, EstimatesInjectedSkewAndWritesPresence) {
  testing::FakeCloud cloud;
  cloud.Control({{"op", "skew"}, {"ms", -73500}});
  uv_loop_t loop;
  uv_loop_init(&loop);
  {
    HttpClient http(&loop);
    auto creds = MakeNoCredentials();
    int link_up = 0;
    CloudClock clock(&loop, http, *creds,
                     {cloud.url(), "tether-gateways/gw-1", 50, 8, 5000, [&](bool up) { link_up += up; }});
    EXPECT_FALSE(clock.has_estimate());
    clock.Start();
    ASSERT_TRUE(RunUntil(&loop, [&] { return clock.sample_count() >= 5; }));
    EXPECT_TRUE(clock.has_estimate());
    ASSERT_TRUE(clock.offset_ms());
    EXPECT_LT(std::abs(*clock.offset_ms() - (-73500)), 50) << *clock.offset_ms();
    EXPECT_TRUE(clock.current());
    EXPECT_GE(link_up, 5);
    auto presence = cloud.Control({{"op", "dump"}})["tether-gateways"]["gw-1"];
    EXPECT_EQ(presence["status"], "online");
    EXPECT_TRUE(presence["last_seen"].is_number());
    bool done = false;
    clock.Shutdown([&] { done = true; });
    ASSERT_TRUE(RunUntil(&loop, [&] { return done; }));
    EXPECT_EQ(cloud.Control({{"op", "dump"}})["tether-gateways"]["gw-1"]["status"], "offline");
  }
  uv_run(&loop, UV_RUN_NOWAIT);
  EXPECT_EQ(uv_loop_close(&loop), 0);
}

class ClockTest : public ::testing::Test {
 protected:
  void SetUp() override { uv_loop_init(&loop_); }
  void TearDown() override {
    clock_.reset();
    http_.reset();
    uv_run(&loop_, UV_RUN_NOWAIT);
    EXPECT_EQ(uv_loop_close(&loop_), 0);
  }
  void Start(const testing::FakeCloud& cloud, Credentials& creds, CloudClockOptions o) {
    http_ = std::make_unique<HttpClient>(&loop_);
    o.base_url = cloud.url();
    o.presence_path = "tether-gateways/gw-1";
    o.on_change = [this] { ++changes_; };
    clock_ = std::make_unique<CloudClock>(&loop_, *http_, creds, std::move(o));
    clock_->Start();
  }
  uv_loop_t loop_;
  std::unique_ptr<HttpClient> http_;
  std::unique_ptr<CloudClock> clock_;
  int changes_ = 0;
};

TEST_F(ClockTest, FailedPresenceWritesAreRetriedSoAnEstimateFollowsTheLinkComingBack) {
  testing::FakeCloud cloud;
  cloud.Control({{"op", "skew"}, {"ms", 5000}});
  cloud.Control({{"op", "down"}, {"ms", 1500}});
  auto creds = MakeNoCredentials();
  CloudClockOptions o;
  o.interval_ms = 600000;  // only retries can bring the first sample
  o.retry_initial_ms = 100;
  o.retry_max_ms = 300;
  auto t0 = std::chrono::steady_clock::now();
  Start(cloud, *creds, o);
  ASSERT_TRUE(RunUntil(&loop_, [&] { return clock_->current(); }, std::chrono::seconds(5)));
  auto took = std::chrono::steady_clock::now() - t0;
  EXPECT_GE(took, std::chrono::milliseconds(1300)) << "the cloud was down";
  EXPECT_LT(took, std::chrono::milliseconds(2500)) << "retried, not left to the 10 min period";
  EXPECT_TRUE(clock_->last_error().empty()) << "cleared by the success";
  EXPECT_LT(std::abs(*clock_->offset_ms() - 5000), 50);
}

TEST_F(ClockTest, ALostLinkNeedsAFreshSampleWhichIsTakenAtLinkUp) {
  testing::FakeCloud cloud;
  auto creds = MakeNoCredentials();
  CloudClockOptions o;
  o.interval_ms = 600000;
  o.retry_initial_ms = 60000;  // neither the period nor a retry: only LinkChanged(true)
  Start(cloud, *creds, o);
  ASSERT_TRUE(RunUntil(&loop_, [&] { return clock_->current(); }));
  EXPECT_EQ(clock_->sample_count(), 1u);
  clock_->LinkChanged(false);  // e.g. an upload timed out
  EXPECT_FALSE(clock_->current());
  EXPECT_TRUE(clock_->has_estimate()) << "kept for local use";
  auto t0 = std::chrono::steady_clock::now();
  clock_->LinkChanged(true);  // e.g. an upload got an answer
  ASSERT_TRUE(RunUntil(&loop_, [&] { return clock_->current(); }, std::chrono::seconds(3)));
  EXPECT_LT(std::chrono::steady_clock::now() - t0, std::chrono::milliseconds(1000));
  EXPECT_EQ(clock_->sample_count(), 2u);
  clock_->LinkChanged(true);  // already current: no extra write
  RunUntil(&loop_, [] { return false; }, std::chrono::milliseconds(300));
  EXPECT_EQ(clock_->sample_count(), 2u);
}

TEST_F(ClockTest, AWallClockStepMovesTheOffsetAtOnceWithoutANewSample) {
  testing::FakeCloud cloud;
  auto creds = MakeNoCredentials();
  static std::atomic<int64_t> step{0};
  step = 0;
  CloudClockOptions o;
  o.interval_ms = 600000;
  o.wall_clock_ms = [] {
    return std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::system_clock::now().time_since_epoch())
               .count() + step.load();
  };
  Start(cloud, *creds, o);
  ASSERT_TRUE(RunUntil(&loop_, [&] { return clock_->current(); }));
  EXPECT_LT(std::abs(*clock_->offset_ms()), 50);
  const int64_t boot_offset = *clock_->boot_offset_ms();
  step = 7000;  // NTP stepped the wall clock 7 s ahead (e.g. while the cloud is unreachable)
  EXPECT_LT(std::abs(*clock_->offset_ms() - (-7000)), 50) << "follows the step at once";
  EXPECT_EQ(*clock_->boot_offset_ms(), boot_offset);
  EXPECT_EQ(clock_->sample_count(), 1u) << "no new measurement was needed";
  EXPECT_TRUE(clock_->current());
}

TEST_F(ClockTest, UnauthorizedPresenceWriteRefreshesTheCredentialAndRetries) {
  testing::FakeCloud cloud;
  cloud.Control({{"op", "tokens"}, {"values", {"good"}}});
  std::string path = ::testing::TempDir() + "/clock_token_" + std::to_string(getpid());
  std::ofstream(path) << "stale\n";
  auto creds = testing::TestTokenFile(path);
  CloudClockOptions o;
  o.retry_initial_ms = 50;
  o.retry_max_ms = 100;
  Start(cloud, *creds, o);
  ASSERT_TRUE(RunUntil(&loop_, [&] { return clock_->last_error().find("401") != std::string::npos; }));
  // The refused write still told the server's time: its Date header, whole seconds.
  EXPECT_TRUE(clock_->current());
  EXPECT_EQ(clock_->source(), CloudClock::Source::kDateHeader);
  EXPECT_GE(clock_->uncertainty_ms(), 500);
  usleep(10000);
  std::ofstream(path) << "good\n";  // the agent rotated the token
  ASSERT_TRUE(RunUntil(&loop_, [&] { return clock_->source() == CloudClock::Source::kWriteAnswer; },
                       std::chrono::seconds(3)));
  EXPECT_TRUE(clock_->last_error().empty());
  EXPECT_LT(clock_->uncertainty_ms(), 50);
  unlink(path.c_str());
}

// A server that echoes the write as sent (npm firebase-server): the stored value was resolved
// while the PUT was in flight, so reading it back bounds it by the PUT's round trip.
TEST_F(ClockTest, AnEchoedServerValueIsReadBack) {
  testing::FakeCloud cloud;
  cloud.Control({{"op", "skew"}, {"ms", -4200}});
  cloud.Control({{"op", "echo_sv"}, {"on", true}});
  auto creds = MakeNoCredentials();
  Start(cloud, *creds, {});
  ASSERT_TRUE(RunUntil(&loop_, [&] { return clock_->current(); }));
  EXPECT_EQ(clock_->source(), CloudClock::Source::kReadBack);
  EXPECT_LT(std::abs(*clock_->offset_ms() + 4200), 50) << *clock_->offset_ms();
  EXPECT_LT(clock_->uncertainty_ms(), 50);
  EXPECT_TRUE(clock_->last_error().empty());
  int reads = 0;
  for (auto& r : cloud.Control({{"op", "reads"}})) reads += r["path"] == "/tether-gateways/gw-1/last_seen";
  EXPECT_EQ(reads, 1);
}

// Security rules refuse the presence path: every refused write still carries the server's Date,
// whole seconds; successive round trips straddle second boundaries at different moments, so
// their intersection narrows the estimate below a second. Its error is never understated.
TEST_F(ClockTest, ARefusedPresenceWriteFallsBackToTheDateHeader) {
  testing::FakeCloud cloud;
  cloud.Control({{"op", "skew"}, {"ms", 90'000}});
  cloud.Control({{"op", "fail"}, {"status", 403}, {"count", 1000000}, {"path", "tether-gateways"}});
  auto creds = MakeNoCredentials();
  CloudClockOptions o;
  o.retry_initial_ms = 70;
  o.retry_max_ms = 130;
  o.samples = 16;
  Start(cloud, *creds, o);
  ASSERT_TRUE(RunUntil(&loop_, [&] { return clock_->current(); }));
  EXPECT_EQ(clock_->source(), CloudClock::Source::kDateHeader);
  EXPECT_NE(clock_->last_error().find("403"), std::string::npos) << "the presence write still failed: said so";
  int64_t first = clock_->uncertainty_ms();
  EXPECT_GE(first, 500);
  EXPECT_LE(first, 1100);
  EXPECT_LE(std::abs(*clock_->offset_ms() - 90'000), first + 5);
  ASSERT_TRUE(RunUntil(&loop_, [&] { return clock_->sample_count() >= 16; }));
  EXPECT_LT(clock_->uncertainty_ms(), 400) << "narrowed by the intersection";
  EXPECT_LE(std::abs(*clock_->offset_ms() - 90'000), clock_->uncertainty_ms() + 5) << *clock_->offset_ms();
}

// A server that answers without any time (no resolved value, nothing to read back, no Date):
// no estimate, the reason said, and other requests' answers do not trigger extra writes (only
// a lost link does), so the writes keep to the backoff.
TEST_F(ClockTest, WithoutAnyTimeSourceTheWritesKeepToTheirBackoff) {
  testing::FakeCloud cloud;
  cloud.Control({{"op", "fail"}, {"status", 400}, {"count", 1000000}, {"path", "tether-gateways"}});
  cloud.Control({{"op", "no_date"}, {"on", true}});
  auto creds = MakeNoCredentials();
  CloudClockOptions o;
  o.retry_initial_ms = 200;
  o.retry_max_ms = 400;
  Start(cloud, *creds, o);
  auto t0 = std::chrono::steady_clock::now();
  // Another request gets an answer every 10 ms (a stream reconnecting, uploads...).
  while (std::chrono::steady_clock::now() - t0 < std::chrono::seconds(2)) {
    clock_->LinkChanged(true);
    RunUntil(&loop_, [] { return false; }, std::chrono::milliseconds(10));
  }
  EXPECT_FALSE(clock_->has_estimate());
  EXPECT_NE(clock_->last_error().find("no Date header"), std::string::npos) << clock_->last_error();
  int writes = 0;
  for (auto& a : cloud.Control({{"op", "attempts"}})) writes += a["method"] == "PUT";
  EXPECT_GE(writes, 4);
  EXPECT_LE(writes, 8) << "200, 400, 400... ms apart, not one per answered request";
}

}  // namespace
}  // namespace tether::upstream
