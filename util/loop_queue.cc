#include "util/loop_queue.h"

namespace tether::util {

LoopQueue::LoopQueue(uv_loop_t* loop, size_t max_queued) : max_queued_(max_queued) {
  async_ = UvHandle<uv_async_t>(loop, this, uv_async_init,
                                [](uv_async_t* a) { static_cast<LoopQueue*>(a->data)->RunPending(); });
}

LoopQueue::~LoopQueue() { Shutdown(); }

bool LoopQueue::Post(Work work) {
  MutexLock lock(&mu_);
  if (closed_ || queue_.size() >= max_queued_) return false;
  queue_.push_back(std::move(work));
  uv_async_send(async_);  // under mu_: never races with Shutdown()'s close
  return true;
}

void LoopQueue::RunPending() {
  std::vector<Work> work;
  {
    MutexLock lock(&mu_);
    if (closed_) return;
    work.swap(queue_);
  }
  for (Work& w : work) w();
}

void LoopQueue::KeepLoopAlive(bool keep) {
  if (!async_) return;
  if (keep) {
    uv_ref(async_.handle());
  } else {
    uv_unref(async_.handle());
  }
}

void LoopQueue::Shutdown() {
  std::vector<Work> dropped;  // destroyed outside the lock, after it: a promise breaks there
  {
    MutexLock lock(&mu_);
    if (closed_) return;
    closed_ = true;
    dropped.swap(queue_);
  }
  async_.Close();  // its callback does not run after this
}

}  // namespace tether::util
