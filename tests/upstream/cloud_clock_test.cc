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

namespace tether::upstream {
namespace {

using testing::RunUntil;

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
    ASSERT_TRUE(clock.offset_ms());
    EXPECT_LT(std::abs(*clock.offset_ms() - (-73500)), 50) << *clock.offset_ms();
    EXPECT_TRUE(clock.current());
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
    o.presence_path = ".gateways/gw-1";
    o.on_change = [this] { ++changes_; };
    clock_ = std::make_unique<CloudClock>(&loop_, *http_, creds, std::move(o));
    clock_->start();
  }
  uv_loop_t loop_;
  std::unique_ptr<HttpClient> http_;
  std::unique_ptr<CloudClock> clock_;
  int changes_ = 0;
};

TEST_F(ClockTest, FailedPresenceWritesAreRetriedSoAnEstimateFollowsTheLinkComingBack) {
  testing::FakeCloud cloud;
  cloud.control({{"op", "skew"}, {"ms", 5000}});
  cloud.control({{"op", "down"}, {"ms", 1500}});
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
  o.retry_initial_ms = 60000;  // neither the period nor a retry: only link_changed(true)
  Start(cloud, *creds, o);
  ASSERT_TRUE(RunUntil(&loop_, [&] { return clock_->current(); }));
  EXPECT_EQ(clock_->sample_count(), 1u);
  clock_->link_changed(false);  // e.g. an upload timed out
  EXPECT_FALSE(clock_->current());
  EXPECT_TRUE(clock_->has_estimate()) << "kept for local use";
  auto t0 = std::chrono::steady_clock::now();
  clock_->link_changed(true);  // e.g. an upload got an answer
  ASSERT_TRUE(RunUntil(&loop_, [&] { return clock_->current(); }, std::chrono::seconds(3)));
  EXPECT_LT(std::chrono::steady_clock::now() - t0, std::chrono::milliseconds(1000));
  EXPECT_EQ(clock_->sample_count(), 2u);
  clock_->link_changed(true);  // already current: no extra write
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
  cloud.control({{"op", "tokens"}, {"values", {"good"}}});
  std::string path = ::testing::TempDir() + "/clock_token_" + std::to_string(getpid());
  std::ofstream(path) << "stale\n";
  auto creds = MakeAccessTokenFile(path, [](const std::string& p) {  // tetherd reads through ReadSecretFile
    std::ifstream in(p);
    return std::string(std::istreambuf_iterator<char>(in), {});
  });
  CloudClockOptions o;
  o.retry_initial_ms = 50;
  o.retry_max_ms = 100;
  Start(cloud, *creds, o);
  ASSERT_TRUE(RunUntil(&loop_, [&] { return clock_->last_error().find("401") != std::string::npos; }));
  EXPECT_FALSE(clock_->has_estimate());
  usleep(10000);
  std::ofstream(path) << "good\n";  // the agent rotated the token
  ASSERT_TRUE(RunUntil(&loop_, [&] { return clock_->current(); }, std::chrono::seconds(3)));
  EXPECT_TRUE(clock_->last_error().empty());
  unlink(path.c_str());
}

}  // namespace
}  // namespace tether::upstream
