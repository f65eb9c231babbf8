#include "upstream/push_id.h"

#include <gtest/gtest.h>

namespace tether::upstream {
namespace {

TEST(PushId, ShapeAndOrder) {
  PushId gen;
  std::string prev;
  for (int i = 0; i < 10000; ++i) {
    std::string id = gen.next(1700000000000 + i / 100);  // 100 ids per millisecond
    ASSERT_EQ(id.size(), 20u);
    ASSERT_LT(prev, id) << i;
    prev = id;
  }
}

TEST(PushId, TimestampPrefix) {
  PushId gen;
  EXPECT_EQ(gen.next(0).substr(0, 8), "--------");
  PushId g2;
  EXPECT_EQ(g2.next(64).substr(0, 8), "------0-");  // 64 = 1*64 + 0
  PushId g3;
  EXPECT_LT(g3.next(1000), PushId().next(1001));
}

}  // namespace
}  // namespace tether::upstream
