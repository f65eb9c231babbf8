#include "gateway/model/push_id.h"

#include <gtest/gtest.h>

#include <set>

namespace tether {
namespace {

TEST(PushId, EncodesTimeAndSortsChronologically) {
  PushIdGenerator g;
  std::string a = g.Next(1700000000000);
  ASSERT_EQ(a.size(), 20u);
  EXPECT_EQ(PushIdGenerator::TimestampOf(a), 1700000000000);
  std::string prev = a;
  std::set<std::string> seen{a};
  for (int i = 0; i < 10000; ++i) {
    std::string next = g.Next(1700000000000 + i / 100);  // many ids per millisecond
    EXPECT_LT(prev, next) << i;
    EXPECT_TRUE(seen.insert(next).second);
    prev = next;
  }
}

TEST(PushId, ClockGoingBackwardsStillIncreases) {
  PushIdGenerator g;
  std::string a = g.Next(2000);
  std::string b = g.Next(1000);
  EXPECT_LT(a, b);
  EXPECT_EQ(PushIdGenerator::TimestampOf(b), 2000);
}

TEST(PushId, OnlyFirebaseAlphabet) {
  PushIdGenerator g;
  for (int i = 0; i < 100; ++i) {
    for (char ch : g.Next(i)) {
      EXPECT_TRUE(std::isalnum(static_cast<unsigned char>(ch)) || ch == '-' || ch == '_');
    }
  }
  EXPECT_EQ(PushIdGenerator::TimestampOf("short"), -1);
}

}  // namespace
}  // namespace tether
