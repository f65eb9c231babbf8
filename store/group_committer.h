// GroupCommitter: the single writer thread. Applies every pending WriteBatch in one transaction.
//
// Fast path: all batches are applied straight into the group's transaction. If one fails, the
// group is redone with each batch in a nested LMDB transaction, so a failing batch is rolled back
// alone while the rest commits (atomic per batch, one fsync per group); after such a failure the
// next groups start nested directly, so sustained rejections do not double the work.
// On MDB_MAP_FULL the map grows (up to options.map_max) and the group is retried; if it cannot
// grow, each batch is retried in its own transaction and those that still do not fit get kFull
// (acks and deletes still succeed, which is how a full store recovers by itself; an acks-only
// batch too large for the pages left commits in pieces, see WriteBatch::only_acks). A full disk
// (ENOSPC, or EIO with the filesystem out of space) is kFull the same way.
// Hand-offs: Submit's `deliver` runs ON THE WRITER THREAD after the commit is durable. SubmitAll
// hands over a whole loop iteration's batches under one lock, and after each commit gives them
// back whole (batch, deliver, result) to `handback`, once per group: the loop thread that built
// a batch and its callback also frees them. (glibc frees a chunk into the arena it came from,
// under that arena's lock: batches freed on the writer had the two threads contending for the
// loop's arena on every request.)
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <span>
#include <thread>
#include <vector>

#include "store/batch_applier.h"
#include "store/lmdb_env.h"
#include "util/mutex.h"

namespace tether::store {

class GroupCommitter {
 public:
  using Deliver = std::function<void(const BatchResult&)>;  // the same type as Store::Callback
  struct Request {
    WriteBatch batch;
    Deliver deliver;
    bool hand_back = false;  // SubmitAll: goes to the handback with its result, not to deliver
  };
  struct Done {  // a handed-back batch after its group committed
    WriteBatch batch;
    Deliver deliver;
    BatchResult result;
  };
  // Writer thread, once per committed group that holds SubmitAll batches, in submission order.
  using Handback = std::function<void(std::vector<Done>&&)>;

  GroupCommitter(LmdbEnv* env, BatchApplier* applier, const StoreOptions& options, Handback handback = {});
  ~GroupCommitter();  // Stop()

  void Submit(WriteBatch batch, Deliver deliver);  // any thread; after Stop() delivers kClosed
  // Any thread: queues every request of *requests (*requests is left empty); with a handback
  // they go to it, after Stop() at once with kClosed.
  void SubmitAll(std::vector<Request>* requests);
  void Stop();  // commits everything already submitted, then joins the thread

  uint64_t groups_committed() const { return groups_; }  // writer thread's view; for benches

 private:
  enum class Outcome {
    kDone,        // committed (or every result holds the error that stopped it)
    kCutShort,    // committed, but a batch stopped at ApplyMode::ack_budget: apply it again
    kExhausted,   // aborted: the map or the disk is full
    kNeedNested,  // aborted: a batch failed; redo the group with a nested txn per batch
  };

  void Run();
  void CommitGroup(std::span<Request> group);
  // One write txn over the group, each batch applied in `mode` (nested: each in its own child txn).
  Outcome TryGroup(std::span<Request> group, std::vector<BatchResult>* results, bool nested, const ApplyMode& mode);
  bool SpaceLow(uint32_t times);  // env_->SpaceLow(times) after growing the map while it is
  void Reload();
  bool AckInPieces(std::span<Request> one, std::vector<BatchResult>* r);

  LmdbEnv* env_;
  BatchApplier* applier_;
  const StoreOptions& options_;
  Handback handback_;
  util::Mutex mu_;
  util::CondVar cv_;
  std::vector<Request> pending_ GUARDED_BY(mu_);
  bool stopping_ GUARDED_BY(mu_) = false;
  bool waiting_ GUARDED_BY(mu_) = false;  // the writer sleeps on cv_
  std::atomic<uint64_t> groups_{0};
  int nested_groups_left_ = 0;  // writer thread only
  std::thread thread_;
};

}  // namespace tether::store
