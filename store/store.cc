#include "store/store.h"

#include <future>
#include <mutex>
#include <vector>

#include "store/batch_applier.h"
#include "store/boot_clock.h"
#include "store/group_committer.h"
#include "store/lmdb_env.h"
#include "store/cache_use.h"
#include "store/tree_path.h"

namespace tether::store {
namespace {

// Hands results from the writer thread to the loop thread. Heap-owned by its uv_async_t handle:
// freed in the handle's close callback, so it may outlive the Store by one loop iteration.
struct LoopChannel {
  uv_async_t async;
  std::mutex mu;
  std::vector<std::pair<Store::Callback, BatchResult>> done;  // guarded by mu
  size_t outstanding = 0;  // loop thread only: submitted, callback not yet run

  void Drain() {
    std::vector<std::pair<Store::Callback, BatchResult>> ready;
    {
      std::lock_guard lock(mu);
      ready.swap(done);
    }
    for (auto& [cb, result] : ready) {
      // Keep the loop alive only while callbacks are owed.
      if (--outstanding == 0) uv_unref(reinterpret_cast<uv_handle_t*>(&async));
      if (cb) cb(result);
    }
  }
};

}  // namespace

struct Store::Impl {
  Impl(const std::string& dir, const StoreOptions& opts)
      : options(opts), use(options.tree_unit_depth), env(dir, options), applier(env, options, &use),
        queue(env), tree(env, &use), sessions(env) {
    if (!options.read_only) committer = std::make_unique<GroupCommitter>(&env, &applier, options);
  }

  StoreOptions options;
  CacheUse use;
  LmdbEnv env;
  BatchApplier applier;
  WriteQueue queue;
  DataTree tree;
  SessionTable sessions;
  std::unique_ptr<GroupCommitter> committer;  // null when read-only
  LoopChannel* channel = nullptr;  // null without a loop or after Close()
  uv_timer_t* sweep_timer = nullptr;
  uv_loop_t* loop = nullptr;  // null for tools and read-only stores
  bool closed = false;
};

namespace {

// Queues SweepExpired every ttl_sweep_interval_ms (a TTL is configured). Idempotent.
void StartSweepTimer(Store::Impl* impl) {
  if (impl->sweep_timer || !impl->loop || !impl->channel || impl->options.ttl_sweep_interval_ms == 0) return;
  impl->sweep_timer = new uv_timer_t;
  uv_timer_init(impl->loop, impl->sweep_timer);
  impl->sweep_timer->data = impl;
  uv_timer_start(
      impl->sweep_timer,
      [](uv_timer_t* t) {
        WriteBatch b;
        b.SweepExpired(ClockNow());
        auto* self = static_cast<Store::Impl*>(t->data);
        if (!self->channel) return;
        self->channel->outstanding++;
        uv_ref(reinterpret_cast<uv_handle_t*>(&self->channel->async));
        LoopChannel* ch = self->channel;
        self->committer->Submit(std::move(b), [ch](BatchResult&& r) {
          std::lock_guard lock(ch->mu);
          ch->done.emplace_back(nullptr, std::move(r));
          uv_async_send(&ch->async);
        });
      },
      impl->options.ttl_sweep_interval_ms, impl->options.ttl_sweep_interval_ms);
  uv_unref(reinterpret_cast<uv_handle_t*>(impl->sweep_timer));
}

}  // namespace

std::unique_ptr<Store> Store::Open(const std::string& dir, const StoreOptions& options, uv_loop_t* loop) {
  auto impl = std::make_unique<Impl>(dir, options);
  if (loop && !options.read_only) {
    auto* ch = new LoopChannel;
    ch->async.data = ch;
    uv_async_init(loop, &ch->async, [](uv_async_t* a) { static_cast<LoopChannel*>(a->data)->Drain(); });
    uv_unref(reinterpret_cast<uv_handle_t*>(&ch->async));
    impl->channel = ch;

    impl->loop = loop;
    bool any_ttl = options.default_route_limits.ttl_ms > 0;
    for (const auto& [name, lim] : options.route_limits) any_ttl |= lim.ttl_ms > 0;
    if (any_ttl) StartSweepTimer(impl.get());
  }
  return std::unique_ptr<Store>(new Store(std::move(impl)));
}

Store::Store(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

Store::~Store() { Close(); }

void Store::Submit(WriteBatch batch, Callback done) {
  LoopChannel* ch = impl_->channel;
  if (!ch || !impl_->committer) {
    BatchResult r;
    r.status = Status::Error(StatusCode::kClosed, "store has no loop or is closed");
    if (done) done(r);
    return;
  }
  if (ch->outstanding++ == 0) uv_ref(reinterpret_cast<uv_handle_t*>(&ch->async));
  impl_->committer->Submit(std::move(batch), [ch, cb = std::move(done)](BatchResult&& r) mutable {
    std::lock_guard lock(ch->mu);
    ch->done.emplace_back(std::move(cb), std::move(r));
    uv_async_send(&ch->async);
  });
}

BatchResult Store::CommitBlocking(WriteBatch batch) {
  if (!impl_->committer) return BatchResult{Status::Error(StatusCode::kClosed, "store is read-only"), {}, {}, 0};
  std::promise<BatchResult> promise;
  auto future = promise.get_future();
  impl_->committer->Submit(std::move(batch), [&promise](BatchResult&& r) { promise.set_value(std::move(r)); });
  return future.get();
}

void Store::Close() {
  if (impl_->closed) return;
  impl_->closed = true;
  if (impl_->committer) impl_->committer->Stop();
  if (impl_->sweep_timer) {
    uv_timer_stop(impl_->sweep_timer);
    uv_close(reinterpret_cast<uv_handle_t*>(impl_->sweep_timer),
             [](uv_handle_t* h) { delete reinterpret_cast<uv_timer_t*>(h); });
    impl_->sweep_timer = nullptr;
  }
  if (LoopChannel* ch = impl_->channel) {
    impl_->channel = nullptr;
    ch->Drain();
    uv_close(reinterpret_cast<uv_handle_t*>(&ch->async),
             [](uv_handle_t* h) { delete static_cast<LoopChannel*>(h->data); });
  }
}

void Store::KeepCached(std::string_view path, bool keep) {
  std::vector<std::string> segs;
  std::string error;
  if (!ParseTreePath(path, &segs, &error)) return;  // nothing the tree can hold there
  const std::string key = JoinKey(segs, segs.size());
  if (keep) {
    impl_->use.Hold(key);
  } else {
    impl_->use.Release(key);
  }
}

const WriteQueue& Store::queue() const { return impl_->queue; }
const DataTree& Store::tree() const { return impl_->tree; }
const SessionTable& Store::sessions() const { return impl_->sessions; }
void Store::SetQueueLimits(std::map<std::string, QueueLimits> route_limits) {
  bool any_ttl = impl_->options.default_route_limits.ttl_ms > 0;
  for (const auto& [name, lim] : route_limits) any_ttl |= lim.ttl_ms > 0;
  impl_->applier.SetRouteLimits(std::move(route_limits));
  if (any_ttl && !impl_->closed) StartSweepTimer(impl_.get());
}

CheckReport Store::Check() const { return RunCheck(impl_->env); }
const std::string& Store::path() const { return impl_->env.path(); }
const std::string& Store::instance_id() const { return impl_->env.instance_id(); }
uint64_t Store::map_size() const { return impl_->env.map_size(); }
uint64_t Store::GroupsCommitted() const {
  return impl_->committer ? impl_->committer->groups_committed() : 0;
}

}  // namespace tether::store
