// UvLoopTest: a gtest fixture that owns one libuv loop, run by the test's own thread.
// TearDown runs the loop to completion (close callbacks free the handles) and fails the test if
// a handle was left open.
#pragma once

#include <gtest/gtest.h>
#include <uv.h>

namespace tether::testing {

class UvLoopTest : public ::testing::Test {
 protected:
  void SetUp() override { ASSERT_EQ(uv_loop_init(&loop_), 0); }
  void TearDown() override {
    uv_run(&loop_, UV_RUN_DEFAULT);  // runs the close callbacks, which free the handles
    EXPECT_EQ(uv_loop_close(&loop_), 0) << "a handle was left open";
  }
  uv_loop_t loop_;
};

}  // namespace tether::testing
