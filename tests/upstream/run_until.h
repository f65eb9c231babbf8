// RunUntil: turns a libuv loop until `done()` holds or `limit` passes (tests/upstream helper).
// A 10 ms tick bounds each turn, so the limit holds even when the code under test only has
// timers minutes away, and a wait for "nothing happens" (done = false) lasts exactly `limit`.
#pragma once

#include <uv.h>

#include <chrono>
#include <functional>

namespace tether::upstream::testing {

inline bool RunUntil(uv_loop_t* loop, const std::function<bool()>& done,
                     std::chrono::milliseconds limit = std::chrono::seconds(20)) {
  const auto end = std::chrono::steady_clock::now() + limit;
  uv_timer_t tick;
  uv_timer_init(loop, &tick);
  uv_timer_start(&tick, [](uv_timer_t*) {}, 10, 10);
  while (!done() && std::chrono::steady_clock::now() < end) uv_run(loop, UV_RUN_ONCE);
  uv_close(reinterpret_cast<uv_handle_t*>(&tick), nullptr);
  uv_run(loop, UV_RUN_NOWAIT);
  return done();
}

}  // namespace tether::upstream::testing
