// TTL and the clocks: an entry's age comes from CLOCK_BOOTTIME within its boot and from the wall
// clock across boots only when both readings are plausible; an age that cannot be trusted never
// drops an acknowledged write. All clocks are injected (entries carry theirs, the sweep takes now).
#include <gtest/gtest.h>

#include "store/entry_age.h"
#include "store/store.h"
#include "tests/store/store_test_util.h"

namespace tether::store {
namespace {

using testing::EntryAt;
using testing::TempDir;

constexpr int64_t kHour = 3'600'000;
constexpr int64_t kTtl = 60'000;
constexpr int64_t k2025 = 1'750'000'000'000;  // a plausible wall clock
constexpr int64_t k1970 = 42'000;              // an RTC-less box right after boot

ClockReading At(int64_t wall, int64_t boottime, const std::string& boot) { return ClockReading{wall, boottime, boot}; }

TEST(EntryAgeTest, SameBootCountsBootTimeWhateverTheWallClockDoes) {
  QueueEntry e = EntryAt("t", "1", At(k2025, 10'000, "a"));
  EXPECT_EQ(AgeOf(e, At(k2025 + kHour + 5'000, 15'000, "a")).ms, 5'000) << "wall stepped +1 h";
  EXPECT_EQ(AgeOf(e, At(k2025 - kHour + 5'000, 15'000, "a")).ms, 5'000) << "wall stepped -1 h";
  QueueEntry early = EntryAt("t", "1", At(k1970, 10'000, "a"));
  EXPECT_EQ(AgeOf(early, At(k2025, 70'000, "a")).ms, 60'000) << "NTP set the clock from 1970";
}

TEST(EntryAgeTest, AcrossBootsOnlyPlausibleWallClocksTell) {
  QueueEntry e = EntryAt("t", "1", At(k2025, 10'000, "a"));
  EXPECT_EQ(AgeOf(e, At(k2025 + kHour, 1'000, "b")).ms, kHour);
  EntryAge now_1970 = AgeOf(e, At(k1970, 1'000, "b"));  // rebooted, no RTC, no NTP yet
  EXPECT_FALSE(now_1970.ms);
  EXPECT_FALSE(now_1970.settled) << "a plausible clock later can tell";
  EXPECT_FALSE(AgeOf(e, At(k2025 - 1, 1'000, "b")).ms) << "now before the entry";
  QueueEntry from_1970 = EntryAt("t", "1", At(k1970, 10'000, "a"));
  EntryAge lost = AgeOf(from_1970, At(k2025, 1'000, "b"));
  EXPECT_FALSE(lost.ms);
  EXPECT_TRUE(lost.settled) << "the boot that could tell is over";
  QueueEntry no_boot_id = EntryAt("t", "1", At(k2025, 10'000, ""));
  EXPECT_EQ(AgeOf(no_boot_id, At(k2025 + 7, 10'000, "")).ms, 7) << "unknown boot: wall rule";
  QueueEntry behind = EntryAt("t", "1", At(k2025, 10'000, "a"));  // boot id equal, boottime behind
  EXPECT_EQ(AgeOf(behind, At(k2025 + 9, 5'000, "a")).ms, 9);
}

class TtlSweepTest : public ::testing::Test {
 protected:
  void SetUp() override { Open(); }
  void Open() {
    store_.reset();
    StoreOptions o;
    o.route_limits["t"] = QueueLimits{0, 0, OverflowPolicy::kReject, kTtl};
    store_ = Store::Open(dir_.Sub("db"), o, nullptr);
  }
  void Queue(const std::vector<std::pair<std::string, ClockReading>>& entries) {
    WriteBatch b;
    for (const auto& [payload, at] : entries) b.Append(EntryAt("t", payload, at));
    ASSERT_TRUE(store_->CommitBlocking(std::move(b)).status.ok());
  }
  void Sweep(const ClockReading& now) {
    WriteBatch b;
    b.SweepExpired(now);
    ASSERT_TRUE(store_->CommitBlocking(std::move(b)).status.ok());
  }
  std::vector<std::string> Left() {
    std::vector<std::string> out;
    for (const QueueEntry& e : store_->queue().Peek("t", 100'000)) out.push_back(e.payload);
    return out;
  }
  RouteQueueStats Stats() { return *store_->queue().Stats("t"); }
  void ExpectHealthy() {
    CheckReport r = store_->Check();
    EXPECT_TRUE(r.ok) << (r.problems.empty() ? "" : r.problems.front());
  }

  TempDir dir_;
  std::unique_ptr<Store> store_;
};

TEST_F(TtlSweepTest, WallStepForwardWithinTheBootDropsNothingYoung) {
  Queue({{"a", At(k2025, 100'000, "b1")}, {"b", At(k2025 + 1'000, 101'000, "b1")}});
  Sweep(At(k2025 + kHour + 10'000, 110'000, "b1"));  // NTP stepped +1 h; 10 s really passed
  EXPECT_EQ(Left(), (std::vector<std::string>{"a", "b"}));
  EXPECT_EQ(Stats().expired, 0u);
  Sweep(At(k2025 + kHour + 60'500, 160'500, "b1"));  // 60.5 s: only "a" is past the TTL
  EXPECT_EQ(Left(), (std::vector<std::string>{"b"}));
  EXPECT_EQ(Stats().expired, 1u);
  ExpectHealthy();
}

TEST_F(TtlSweepTest, WallStepBackwardWithinTheBootStillExpires) {
  Queue({{"a", At(k2025, 100'000, "b1")}});
  Sweep(At(k2025 - kHour + 90'000, 190'000, "b1"));  // 90 s passed, the wall clock went back 1 h
  EXPECT_TRUE(Left().empty());
  EXPECT_EQ(Stats().expired, 1u);
  ExpectHealthy();
}

TEST_F(TtlSweepTest, WritesQueuedWith1970ClockSurviveTheNtpStep) {
  // An RTC-less box boots at 1970, queues offline, then NTP sets the clock.
  Queue({{"a", At(k1970, 42'000, "b1")}, {"b", At(k1970 + 20'000, 62'000, "b1")}});
  Sweep(At(k2025, 92'000, "b1"));  // 50 s and 30 s old
  EXPECT_EQ(Left(), (std::vector<std::string>{"a", "b"}));
  Sweep(At(k2025 + 15'000, 107'000, "b1"));  // 65 s and 45 s old
  EXPECT_EQ(Left(), (std::vector<std::string>{"b"}));
  EXPECT_EQ(Stats().expired, 1u);
  EXPECT_EQ(Stats().ttl_age_unknown, 0u);
  ExpectHealthy();
}

TEST_F(TtlSweepTest, AnotherBootUsesPlausibleWallClocksAndKeepsWhatItCannotDate) {
  Queue({{"old-1970", At(k1970, 42'000, "b1")},          // its boot is over: age unknown for good
         {"old-dated", At(k2025, 50'000, "b1")},         // plausible wall: datable after the reboot
         {"young-dated", At(k2025 + 3 * kHour, 60'000, "b1")}});
  Queue({{"this-boot-old", At(k1970 + 1'000, 5'000, "b2")},
         {"this-boot-new", At(k1970 + 50'000, 54'000, "b2")}});
  // Rebooted, the wall clock is not set yet (1970 again): nothing from boot b1 can be dated.
  Sweep(At(k1970 + 20'000, 70'000, "b2"));
  EXPECT_EQ(Left(), (std::vector<std::string>{"old-1970", "old-dated", "young-dated", "this-boot-new"}))
      << "this boot's own expired entry goes even behind undatable ones";
  EXPECT_EQ(Stats().ttl_age_unknown, 3u);
  EXPECT_EQ(Stats().expired, 1u);
  // NTP sets the clock: b1's plausible entries are dated by wall clock, the 1970 one stays.
  Sweep(At(k2025 + 3 * kHour + 30'000, 71'000, "b2"));
  EXPECT_EQ(Left(), (std::vector<std::string>{"old-1970", "young-dated", "this-boot-new"}));
  EXPECT_EQ(Stats().ttl_age_unknown, 1u);
  EXPECT_EQ(Stats().expired, 2u);
  // Uploading the undatable entry takes it out of the count.
  WriteBatch ack;
  ack.Ack("t", {store_->queue().Peek("t", 1)[0].seq});
  ASSERT_TRUE(store_->CommitBlocking(std::move(ack)).status.ok());
  EXPECT_EQ(Stats().ttl_age_unknown, 0u);
  EXPECT_EQ(Left(), (std::vector<std::string>{"young-dated", "this-boot-new"}));
  ExpectHealthy();
}

TEST_F(TtlSweepTest, ALongUndatableBacklogIsPassedOnceAndCountedAcrossReopen) {
  std::vector<std::pair<std::string, ClockReading>> old;
  for (int i = 0; i < 25'000; ++i) old.emplace_back("u" + std::to_string(i), At(k1970 + i, 42'000 + i, "b1"));
  Queue(old);
  Queue({{"expired-here", At(k2025, 1'000, "b2")}, {"fresh", At(k2025 + 100'000, 101'000, "b2")}});
  const ClockReading now = At(k2025 + 110'000, 111'000, "b2");
  Sweep(now);  // examines a bounded number of entries per sweep...
  EXPECT_EQ(Stats().expired, 0u);
  EXPECT_GT(Stats().ttl_age_unknown, 0u);
  Sweep(now);  // ...and the next one continues where it stopped
  EXPECT_EQ(Stats().expired, 1u);
  EXPECT_EQ(Stats().ttl_age_unknown, 25'000u);
  EXPECT_EQ(Stats().depth, 25'001u);
  Open();  // the passed run is in memory only: a reopened store counts it again
  Sweep(now);
  Sweep(now);
  EXPECT_EQ(Stats().ttl_age_unknown, 25'000u);
  EXPECT_EQ(Stats().expired, 1u);
  EXPECT_EQ(Left().back(), "fresh");
  ExpectHealthy();
}

}  // namespace
}  // namespace tether::store
