// util::LoopQueue: work posted from other threads runs on the loop thread in posting order;
// after Shutdown nothing runs, posts are refused and queued work is destroyed unrun.
#include "util/loop_queue.h"

#include <gtest/gtest.h>

#include <atomic>
#include <memory>
#include <stdexcept>
#include <thread>
#include <vector>

#include "tests/support/uv_loop_test.h"

namespace tether::util {
namespace {

// The test's own thread is the loop thread: it builds the queue, runs the loop and shuts down.
using LoopQueueTest = testing::UvLoopTest;

TEST_F(LoopQueueTest, PostedWorkRunsOnTheLoopThreadInPostingOrder) {
  LoopQueue q(&loop_);
  const std::thread::id loop_thread = std::this_thread::get_id();
  constexpr int kPosts = 2000;
  std::vector<int> ran;
  std::atomic<int> refused{0};
  std::thread poster([&] {
    for (int i = 0; i < kPosts; ++i) {
      bool ok = q.Post([&, i] {
        EXPECT_EQ(std::this_thread::get_id(), loop_thread);
        ran.push_back(i);
        if (i == kPosts - 1) q.Shutdown();  // the async handle was all that kept uv_run going
      });
      if (!ok) ++refused;
    }
  });
  uv_run(&loop_, UV_RUN_DEFAULT);
  poster.join();
  EXPECT_EQ(refused.load(), 0);
  ASSERT_EQ(ran.size(), size_t{kPosts});
  for (int i = 0; i < kPosts; ++i) ASSERT_EQ(ran[i], i) << "out of order at " << i;
}

TEST_F(LoopQueueTest, AfterShutdownPostsAreRefusedAndQueuedWorkIsDroppedUnrun) {
  LoopQueue q(&loop_);
  int ran = 0;
  auto token = std::make_shared<int>(0);
  std::weak_ptr<int> queued = token;
  ASSERT_TRUE(q.Post([&ran, token] { ++ran; }));
  token.reset();
  EXPECT_FALSE(queued.expired()) << "the queue holds the work until it runs or is dropped";
  q.Shutdown();
  EXPECT_TRUE(queued.expired()) << "Shutdown destroys queued work";
  auto late = std::make_shared<int>(0);
  std::weak_ptr<int> refused = late;
  EXPECT_FALSE(q.Post([&ran, late] { ++ran; }));
  late.reset();
  EXPECT_TRUE(refused.expired()) << "refused work is destroyed, not kept";
  q.Shutdown();  // idempotent
  q.RunPending();
  uv_run(&loop_, UV_RUN_DEFAULT);
  EXPECT_EQ(ran, 0);
}

TEST_F(LoopQueueTest, BoundRefusesPostsWhileFullOnly) {
  LoopQueue q(&loop_, 2);
  int ran = 0;
  EXPECT_TRUE(q.Post([&] { ++ran; }));
  EXPECT_TRUE(q.Post([&] { ++ran; }));
  EXPECT_FALSE(q.Post([&] { ran += 100; }));
  q.RunPending();  // what a closing owner does instead of waiting for the wake-up
  EXPECT_EQ(ran, 2);
  EXPECT_TRUE(q.Post([&] { ++ran; })) << "room again once the queue ran";
  q.RunPending();
  EXPECT_EQ(ran, 3);
}

TEST_F(LoopQueueTest, CallAnswersFromTheLoopAndRethrows) {
  LoopQueue q(&loop_);
  std::optional<std::thread::id> id;
  bool threw = false;
  std::thread caller([&] {
    id = q.Call([] { return std::this_thread::get_id(); }, std::chrono::seconds(10));
    try {
      q.Call([]() -> int { throw std::runtime_error("boom"); }, std::chrono::seconds(10));
    } catch (const std::runtime_error&) {
      threw = true;
    }
    q.Post([&q] { q.Shutdown(); });
  });
  uv_run(&loop_, UV_RUN_DEFAULT);
  caller.join();
  ASSERT_TRUE(id);
  EXPECT_EQ(*id, std::this_thread::get_id());
  EXPECT_TRUE(threw);
}

TEST_F(LoopQueueTest, CallRefusedOrDroppedAtShutdownAnswersNulloptWithoutWaiting) {
  LoopQueue q(&loop_);
  std::optional<int> answer = 1;
  std::chrono::steady_clock::duration waited{};
  std::thread caller([&] {
    auto start = std::chrono::steady_clock::now();
    answer = q.Call([] { return 7; }, std::chrono::seconds(60));
    waited = std::chrono::steady_clock::now() - start;
  });
  std::this_thread::sleep_for(std::chrono::milliseconds(50));  // either order ends the same way
  q.Shutdown();  // the loop never ran: the call is dropped, or refused if it came later
  caller.join();
  EXPECT_FALSE(answer);
  EXPECT_LT(waited, std::chrono::seconds(30)) << "answered long before the call's 60 s timeout";
}

TEST_F(LoopQueueTest, KeepLoopAliveFalseLetsTheLoopEndWhileTheQueueIsOpen) {
  LoopQueue q(&loop_);
  q.KeepLoopAlive(false);
  EXPECT_EQ(uv_run(&loop_, UV_RUN_DEFAULT), 0) << "returns at once: nothing else is active";
  q.KeepLoopAlive(true);
  int ran = 0;
  std::thread poster([&] { q.Post([&] { ++ran; q.Shutdown(); }); });
  uv_run(&loop_, UV_RUN_DEFAULT);  // held open by the queue until its work shuts it down
  poster.join();
  EXPECT_EQ(ran, 1);
}

}  // namespace
}  // namespace tether::util
