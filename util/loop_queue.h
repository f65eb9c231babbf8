// LoopQueue: hands work from other threads to one libuv loop's thread — a queue under a mutex
// and one uv_async_t that wakes the loop to run it. The one loop hop: the store's writer hands
// its results back through it, the admin server its API calls (as LoopCaller).
//
// Threads: construct, RunPending, KeepLoopAlive, Shutdown and destroy on the loop's thread. Post
//   and Call from any thread (Post from the loop thread too: the work runs at a later wake-up;
//   Call from the loop thread would wait for itself until its timeout).
// Order: work runs on the loop thread in the order it was posted. Each wake-up runs what was
//   queued when it began; work posted meanwhile runs at the next one (uv_async_send coalesces
//   wake-ups, never loses one).
// Ownership: posted work belongs to the queue until it has run, or until Shutdown destroys it
//   unrun (on the loop thread, outside the lock: a dropped Call's promise breaks, so its caller
//   gets nullopt at once instead of at its timeout).
// Failure: Post refuses (returns false, the work is destroyed) after Shutdown and while
//   `max_queued` posts wait. Nothing runs after Shutdown: its handle's callback never runs again.
//   An exception thrown by posted work leaves through the libuv callback (Call catches its own).
// Loop liveness: the async handle keeps uv_run going, as any referenced handle does, unless
//   KeepLoopAlive(false) (a queue that should hold the loop only while results are owed).
#pragma once

#include <uv.h>

#include <chrono>
#include <cstddef>
#include <functional>
#include <future>
#include <limits>
#include <memory>
#include <optional>
#include <type_traits>
#include <vector>

#include "util/mutex.h"
#include "util/uv_handle.h"

namespace tether::util {

class LoopQueue {
 public:
  using Work = std::function<void()>;
  static constexpr size_t kUnbounded = std::numeric_limits<size_t>::max();

  explicit LoopQueue(uv_loop_t* loop, size_t max_queued = kUnbounded);
  ~LoopQueue();  // Shutdown()
  LoopQueue(const LoopQueue&) = delete;  // the async handle points at this object
  LoopQueue& operator=(const LoopQueue&) = delete;

  // Queues `work` for the loop thread; false (and `work` destroyed) once shut down or full.
  bool Post(Work work) EXCLUDES(mu_);
  // Runs `fn` on the loop thread and waits for its result. nullopt: refused, dropped at
  // Shutdown, or no answer within `timeout`. An exception thrown by fn is rethrown here.
  template <class F>
  auto Call(F fn, std::chrono::milliseconds timeout) -> std::optional<std::invoke_result_t<F&>>;

  // Loop thread: runs what is queued now, without waiting for the wake-up (a closing owner
  // collecting its last results). Nothing after Shutdown.
  void RunPending() EXCLUDES(mu_);
  // Loop thread: whether the queue alone keeps uv_run from returning (uv_ref / uv_unref).
  void KeepLoopAlive(bool keep);
  // Loop thread: refuses further posts, destroys queued work unrun and closes the async handle.
  // Idempotent.
  void Shutdown() EXCLUDES(mu_);

 private:
  const size_t max_queued_;
  UvHandle<uv_async_t> async_;  // loop thread; uv_async_send'ed under mu_ while !closed_
  Mutex mu_;
  std::vector<Work> queue_ GUARDED_BY(mu_);
  bool closed_ GUARDED_BY(mu_) = false;
};

template <class F>
auto LoopQueue::Call(F fn, std::chrono::milliseconds timeout) -> std::optional<std::invoke_result_t<F&>> {
  using T = std::invoke_result_t<F&>;
  auto promise = std::make_shared<std::promise<T>>();
  std::future<T> future = promise->get_future();
  // The work holds the only reference: dropped unrun, it breaks the promise and wakes the wait.
  bool posted = Post([promise = std::move(promise), fn = std::move(fn)]() mutable {
    try {
      promise->set_value(fn());
    } catch (...) {
      promise->set_exception(std::current_exception());
    }
  });
  if (!posted || future.wait_for(timeout) != std::future_status::ready) return std::nullopt;
  try {
    return future.get();
  } catch (const std::future_error&) {  // broken promise: dropped at Shutdown
    return std::nullopt;
  }
}

}  // namespace tether::util
