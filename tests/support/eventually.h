// Eventually: the one polling wait for tests (instead of hand-written sleep loops).
//
//   EXPECT_TRUE(Eventually([&] { return cloud.Get("/a") == "1"; }, 5s)) << "what we waited for";
//
// Polls `done` every `every` until it returns true or `limit` has passed; returns the last result,
// so a wait that timed out fails the assertion that wraps it. `done` is also tried once after the
// deadline so a condition that became true during the last sleep is not reported as a timeout.
// Header-only; any thread.
#pragma once

#include <chrono>
#include <thread>

namespace tether::testing {

template <typename Pred>
bool Eventually(Pred&& done, std::chrono::milliseconds limit,
                std::chrono::milliseconds every = std::chrono::milliseconds(20)) {
  const auto deadline = std::chrono::steady_clock::now() + limit;
  while (std::chrono::steady_clock::now() < deadline) {
    if (done()) return true;
    std::this_thread::sleep_for(every);
  }
  return static_cast<bool>(done());
}

}  // namespace tether::testing
