// Episode: a span of events with pauses up to pause_ms counted in, and a new one after longer.
#include "util/episode.h"

#include <gtest/gtest.h>

namespace tether::util {
namespace {

TEST(Episode, LastsThroughShortPausesAndStartsAnewAfterALongOne) {
  Episode e(2000);
  EXPECT_FALSE(e.LastedMs(5000)) << "nothing noted";
  e.Note(10000);
  EXPECT_EQ(e.LastedMs(10000), 0u);
  e.Note(11000);
  EXPECT_EQ(e.LastedMs(12500), 2500u) << "a pause within 2 s is part of it";
  EXPECT_EQ(e.LastedMs(13000), 3000u) << "exactly pause_ms after the last event: still on";
  EXPECT_FALSE(e.LastedMs(13001)) << "paused longer: over";
  e.Note(20000);
  EXPECT_EQ(e.LastedMs(20500), 500u) << "a new episode, counted from its own start";
}

}  // namespace
}  // namespace tether::util
