// Event times of queued writes, corrected to cloud time at upload.
#include <gtest/gtest.h>

#include "gateway/cloud/cloud_bridge.h"

namespace tether {
namespace {

store::QueueEntry Entry(int64_t wall, int64_t boottime, const std::string& boot, std::optional<int64_t> offset) {
  store::QueueEntry e;
  e.wall_ms = wall;
  e.boottime_ms = boottime;
  e.boot_id = boot;
  e.cloud_offset_ms = offset;
  return e;
}

TEST(EventCloudTime, SameBootUsesElapsedBootTimeSoWallClockJumpsDoNotMatter) {
  // Written at boottime 10 s; the wall clock then jumped back an hour; 5 s later the cloud is
  // reachable and says the local wall clock is 1 h behind (offset +3.6e6).
  const int64_t real_event = 1'700'000'000'000;
  store::QueueEntry e = Entry(real_event, 10'000, "boot-a", std::nullopt);
  int64_t wall_now = real_event + 5'000 - 3'600'000;  // jumped back 1 h
  EXPECT_EQ(EventCloudTimeMs(e, wall_now, 15'000, "boot-a", 3'600'000), real_event);
}

TEST(EventCloudTime, OfflineBootWithoutRtcGetsTheRightTimeOnceTheCloudIsReached) {
  // A box with no RTC boots at 1970 + a few seconds, queues a write at boottime 20 s, and reaches
  // the cloud at boottime 80 s, which reveals its wall clock is off by `skew`.
  const int64_t skew = 1'700'000'000'000;
  store::QueueEntry e = Entry(20'000, 20'000, "boot-b", std::nullopt);
  EXPECT_EQ(EventCloudTimeMs(e, /*wall_now=*/80'000, /*boottime_now=*/80'000, "boot-b", skew), skew + 20'000);
  // Until the cloud was reached there is no way to know: the write waits.
  EXPECT_EQ(EventCloudTimeMs(e, 80'000, 80'000, "boot-b", std::nullopt), std::nullopt);
}

TEST(EventCloudTime, AfterARebootFallsBackToTheWallTimeAndOffsetOfTheEvent) {
  store::QueueEntry e = Entry(1'000'000, 50, "old-boot", 250);
  EXPECT_EQ(EventCloudTimeMs(e, 9'000'000, 10, "new-boot", 999), 1'000'250);
  store::QueueEntry unknown = Entry(1'000'000, 50, "old-boot", std::nullopt);
  EXPECT_EQ(EventCloudTimeMs(unknown, 9'000'000, 10, "new-boot", 999), 1'000'999) << "best estimate known now";
  EXPECT_EQ(EventCloudTimeMs(unknown, 9'000'000, 10, "new-boot", std::nullopt), std::nullopt);
}

TEST(EventCloudTime, SameBootWithoutACurrentEstimateUsesTheOffsetSavedWithTheWrite) {
  // The write was made while an estimate existed (offset 400); the link has since been lost, and
  // the wall clock was stepped by 10 s afterwards. Wall time and offset were both taken at the
  // event, so the step after it does not matter.
  store::QueueEntry e = Entry(5'000'000, 1'000, "boot-c", 400);
  EXPECT_EQ(EventCloudTimeMs(e, 5'000'000 + 2'000 + 10'000, 3'000, "boot-c", std::nullopt), 5'000'400);
  // A current estimate measured after the step is preferred: elapsed boot time, then corrected.
  EXPECT_EQ(EventCloudTimeMs(e, 5'012'000, 3'000, "boot-c", 400 - 10'000), 5'000'400);
}

TEST(EventCloudTime, SameBootBeforeTheFirstEstimateUsesTheOffsetKnownAtTheEvent) {
  // Queued while the offset 250 was known; tetherd restarted (same boot) and has no estimate yet.
  store::QueueEntry e = Entry(1'000'000, 50'000, "boot-a", 250);
  EXPECT_EQ(EventCloudTimeMs(e, 1'004'000, 54'000, "boot-a", std::nullopt), 1'000'250);
  store::QueueEntry unknown = Entry(1'000'000, 50'000, "boot-a", std::nullopt);
  EXPECT_EQ(EventCloudTimeMs(unknown, 1'004'000, 54'000, "boot-a", std::nullopt), std::nullopt)
      << "no offset then or now: the write waits for an estimate";
}

}  // namespace
}  // namespace tether
