#include "store/store.h"

#include <cstdint>
#include <deque>
#include <future>
#include <vector>

#include "store/batch_applier.h"
#include "store/boot_clock.h"
#include "store/group_committer.h"
#include "store/lmdb_env.h"
#include "store/cache_use.h"
#include "store/tree_path.h"
#include "util/loop_queue.h"
#include "util/uv_handle.h"

namespace tether::store {
namespace {

// The loop thread's side of the writer (store.h "Threads"). Batches submitted during one loop
// iteration go to the writer together, when the iteration's I/O callbacks are done (uv_check) or
// before the loop may block (uv_prepare): one lock and at most one wake-up per iteration, not per
// request. Results come back once per group (GroupCommitter's handback), posted to `results`
// (util::LoopQueue) and delivered in order, at most kCallbacksPerIteration per loop iteration;
// the batches and callbacks are freed on the loop thread, which built them.
// Why a budget: a group holds up to max_group_batches (4096) results, ≈ 6 µs of loop time each
// on the CI machine (the reply, freeing the batch: docs/benchmarks.md, "Where the time goes"; a
// Raspberry Pi is 3-4x slower). Run at once, one group kept the loop from its sockets for
// ≈ 25 ms, several queued groups for longer: a default receive buffer (416 KiB, ≈ 400 small
// datagrams) overflows in that time at 16k requests/s, and devices retransmit after 2 s.
// 256 per iteration keeps answering in step with reading (libuv reads at most 256 datagrams per
// socket per poll: 32 recvmmsg calls of kRecvSlots = 8).
constexpr size_t kCallbacksPerIteration = 256;

// Owned by Store::Impl (a raw pointer: it is built before the Impl that holds it); deleted by
// Close once the writer has stopped and its last results are delivered, its handles closing with
// it (their callbacks never run after that).
struct LoopChannel {
  explicit LoopChannel(uv_loop_t* loop)
      : results(loop),
        before_poll(loop, this, uv_prepare_init),
        after_io(loop, this, uv_check_init),
        more_results(loop, this, uv_idle_init) {
    uv_prepare_start(before_poll, [](uv_prepare_t* h) { static_cast<LoopChannel*>(h->data)->Flush(); });
    uv_check_start(after_io, [](uv_check_t* h) { static_cast<LoopChannel*>(h->data)->Flush(); });
    results.KeepLoopAlive(false);  // kept alive only while callbacks are owed (Deliver)
    uv_unref(before_poll.handle());
    uv_unref(after_io.handle());
  }

  util::LoopQueue results;  // writer thread -> loop thread: groups of results, in commit order
  util::UvHandle<uv_prepare_t> before_poll;
  util::UvHandle<uv_check_t> after_io;
  util::UvHandle<uv_idle_t> more_results;  // active while `delivering` holds results: next iteration
  // Loop thread only.
  GroupCommitter* committer = nullptr;
  std::vector<GroupCommitter::Request> outbox;  // submitted, not yet handed to the writer
  std::deque<uint64_t> submitted_ms;  // uv_now at Submit of each batch whose callback is owed
  size_t outstanding = 0;             // submitted, callback not yet run
  // Committed groups whose callbacks have not all run, in commit order; the front one's first
  // `delivered` have run.
  std::deque<std::vector<GroupCommitter::Done>> delivering;
  size_t delivered = 0;

  void Flush() {
    if (!outbox.empty()) committer->SubmitAll(&outbox);
  }
  void Deliver(std::vector<GroupCommitter::Done>&& group) {
    delivering.push_back(std::move(group));
    RunCallbacks(kCallbacksPerIteration);
  }
  // Runs up to `budget` callbacks in order; what is left runs at the next iteration (more_results).
  void RunCallbacks(size_t budget) {
    while (budget > 0 && !delivering.empty()) {
      std::vector<GroupCommitter::Done>& front = delivering.front();
      for (; delivered < front.size() && budget > 0; ++delivered, --budget) {
        GroupCommitter::Done& d = front[delivered];
        // Keep the loop alive only while callbacks are owed.
        if (--outstanding == 0) results.KeepLoopAlive(false);
        if (!submitted_ms.empty()) submitted_ms.pop_front();  // results come back in submission order
        if (d.deliver) d.deliver(d.result);
      }
      if (delivered < front.size()) break;
      delivering.pop_front();  // frees the group's batches and callbacks
      delivered = 0;
    }
    if (delivering.empty()) {
      uv_idle_stop(more_results);
    } else {
      uv_idle_start(more_results, [](uv_idle_t* h) { static_cast<LoopChannel*>(h->data)->RunCallbacks(kCallbacksPerIteration); });
    }
  }
};

// Queues a batch on the loop thread; its callback runs on the loop once it is durable.
void SubmitOnLoop(LoopChannel* ch, uv_loop_t* loop, WriteBatch batch, Store::Callback done) {
  if (ch->outstanding++ == 0) ch->results.KeepLoopAlive(true);
  ch->submitted_ms.push_back(uv_now(loop));
  ch->outbox.push_back(GroupCommitter::Request{std::move(batch), std::move(done), true});
}

}  // namespace

struct Store::Impl {
  Impl(const std::string& dir, const StoreOptions& opts, LoopChannel* ch)
      : options(opts), use(options.tree_unit_depth), env(dir, options), applier(env, options, &use),
        queue(env), tree(env, &use), sessions(env), channel(ch) {
    if (options.read_only) return;
    GroupCommitter::Handback back;
    if (ch) {
      back = [ch](std::vector<GroupCommitter::Done>&& group) {  // writer thread
        // Unbounded and open until Close has stopped the writer: never refused.
        ch->results.Post([ch, group = std::move(group)]() mutable { ch->Deliver(std::move(group)); });
      };
    }
    committer = std::make_unique<GroupCommitter>(&env, &applier, options, std::move(back));
    if (ch) ch->committer = committer.get();
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
  util::UvHandle<uv_timer_t> sweep_timer;
  uv_loop_t* loop = nullptr;  // null for tools and read-only stores
  bool closed = false;
};

namespace {

// Queues SweepExpired every ttl_sweep_interval_ms (a TTL is configured). Idempotent.
void StartSweepTimer(Store::Impl* impl) {
  if (impl->sweep_timer || !impl->loop || !impl->channel || impl->options.ttl_sweep_interval_ms == 0) return;
  impl->sweep_timer = util::UvTimer(impl->loop, impl);
  uv_timer_start(
      impl->sweep_timer,
      [](uv_timer_t* t) {
        WriteBatch b;
        b.SweepExpired(ClockNow());
        auto* self = static_cast<Store::Impl*>(t->data);
        if (!self->channel) return;
        SubmitOnLoop(self->channel, self->loop, std::move(b), nullptr);
      },
      impl->options.ttl_sweep_interval_ms, impl->options.ttl_sweep_interval_ms);
  uv_unref(impl->sweep_timer.handle());
}

}  // namespace

std::unique_ptr<Store> Store::Open(const std::string& dir, const StoreOptions& options, uv_loop_t* loop) {
  LoopChannel* ch = nullptr;
  if (loop && !options.read_only) {
    ch = new LoopChannel(loop);
  }
  std::unique_ptr<Impl> impl;
  try {
    impl = std::make_unique<Impl>(dir, options, ch);
  } catch (...) {
    delete ch;
    throw;
  }
  if (ch) {
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
  SubmitOnLoop(ch, impl_->loop, std::move(batch), std::move(done));
}

uint64_t Store::CommitWaitMs() const {
  const LoopChannel* ch = impl_->channel;
  if (!ch || ch->submitted_ms.empty()) return 0;
  const uint64_t now = uv_now(impl_->loop), at = ch->submitted_ms.front();
  return now > at ? now - at : 0;
}

BatchResult Store::CommitBlocking(WriteBatch batch) {
  if (!impl_->committer) return BatchResult{Status::Error(StatusCode::kClosed, "store is read-only"), {}, {}, 0};
  std::promise<BatchResult> promise;
  auto future = promise.get_future();
  impl_->committer->Submit(std::move(batch), [&promise](const BatchResult& r) { promise.set_value(r); });
  return future.get();
}

void Store::Close() {
  if (impl_->closed) return;
  impl_->closed = true;
  if (impl_->channel) impl_->channel->Flush();
  if (impl_->committer) impl_->committer->Stop();
  impl_->sweep_timer.Close();
  if (LoopChannel* ch = impl_->channel) {
    impl_->channel = nullptr;
    ch->results.RunPending();  // the writer has stopped: these are the last results
    ch->RunCallbacks(SIZE_MAX);
    ch->committer = nullptr;
    delete ch;
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
