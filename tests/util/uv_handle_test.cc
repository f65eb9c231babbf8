// util::UvHandle: owns a libuv handle; closing it stops its callbacks and frees it on the loop.
#include "util/uv_handle.h"

#include <gtest/gtest.h>

#include "tests/support/uv_loop_test.h"

namespace tether::util {
namespace {

using UvHandleTest = testing::UvLoopTest;

TEST_F(UvHandleTest, TimerRunsWithItsDataAndClosesWithItsOwner) {
  int fired = 0;
  {
    UvHandle<uv_timer_t> timer = UvTimer(&loop_, &fired);
    ASSERT_TRUE(timer);
    uv_timer_start(timer, [](uv_timer_t* t) { ++*static_cast<int*>(t->data); }, 1, 0);
    uv_run(&loop_, UV_RUN_DEFAULT);
    EXPECT_EQ(fired, 1);
  }  // closed here; TearDown's run frees it and uv_loop_close proves nothing is left
}

TEST_F(UvHandleTest, NoCallbackRunsAfterClose) {
  int fired = 0;
  UvHandle<uv_timer_t> timer = UvTimer(&loop_, &fired);
  uv_timer_start(timer, [](uv_timer_t* t) { ++*static_cast<int*>(t->data); }, 0, 1);
  timer.Close();
  timer.Close();  // idempotent
  EXPECT_FALSE(timer);
  uv_run(&loop_, UV_RUN_DEFAULT);
  EXPECT_EQ(fired, 0);
}

TEST_F(UvHandleTest, MovedHandleIsClosedOnceByItsLastOwner) {
  UvHandle<uv_check_t> a(&loop_, nullptr, uv_check_init);
  uv_check_t* raw = a;
  UvHandle<uv_check_t> b = std::move(a);
  EXPECT_FALSE(a);
  EXPECT_EQ(b.get(), raw);
  UvHandle<uv_check_t> c(&loop_, nullptr, uv_check_init);
  c = std::move(b);  // closes c's own handle, takes b's
  EXPECT_EQ(c.get(), raw);
}

TEST_F(UvHandleTest, FailedInitHoldsNothing) {
  UvHandle<uv_poll_t> poll;
  EXPECT_NE(poll.Init(&loop_, nullptr, uv_poll_init, -1), 0) << "-1 is no descriptor";
  EXPECT_FALSE(poll);
}

}  // namespace
}  // namespace tether::util
