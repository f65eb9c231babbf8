// Store: the gateway's durable state — WriteQueue, DataTree, SessionTable — in one LMDB directory.
//
// Threads: constructed, used and closed on ONE libuv loop thread. Reads (queue(), tree(),
// sessions(), Check()) run on the caller's thread against a read-only snapshot and never block on
// writes. Every mutation is a WriteBatch handed to Submit(); the store's writer thread applies
// all pending batches in one transaction (group commit), fsyncs (Durability::kFsync), then runs
// each batch's callback back on the loop thread, in submission order, at most 256 per loop
// iteration (a large group's results are spread so the loop reads its sockets in between). The
// loop never waits for fsync.
// A batch is atomic: all of its mutations are applied or none. A callback with status ok means
// the batch is durable according to StoreOptions::durability.
#pragma once

#include <uv.h>

#include <functional>
#include <map>
#include <memory>
#include <string>
#include <string_view>

#include "store/data_tree.h"
#include "store/options.h"
#include "store/session_table.h"
#include "store/store_check.h"
#include "store/write_batch.h"
#include "store/write_queue.h"

namespace tether::store {

class Store {
 public:
  using Callback = std::function<void(const BatchResult&)>;

  // Opens (or creates) the store in directory `dir`. Throws StoreError naming the path if the
  // store is incompatible or unreadable; never wipes. Does not scan the queue (counters are
  // persisted). `loop` may be null for tools: then only CommitBlocking() can write.
  static std::unique_ptr<Store> Open(const std::string& dir, const StoreOptions& options,
                                     uv_loop_t* loop);
  ~Store();  // Close()

  // Loop thread. `done` runs later on the loop thread (also on failure, also during Close()).
  // Batches submitted during one loop iteration reach the writer together at its end.
  void Submit(WriteBatch batch, Callback done);
  // Loop thread: how long the oldest batch submitted from the loop has waited for its commit
  // (ms of loop time); 0 when none waits. What a batch submitted now would wait, roughly.
  uint64_t CommitWaitMs() const;
  // Any thread but the loop's: waits for the batch to be committed. For tools, tests and benches.
  BatchResult CommitBlocking(WriteBatch batch);
  // Loop thread: commits what was submitted, runs the remaining callbacks, releases loop handles
  // (the loop must run once more to finish closing them). Idempotent.
  void Close();

  // Loop thread: replaces StoreOptions::route_limits (bounds, overflow policy, TTL) for every
  // batch applied from now on; entries already queued stay until the next append or TTL sweep
  // finds them over the new bounds.
  void SetQueueLimits(std::map<std::string, QueueLimits> route_limits);
  // Any thread. While kept (counted: as many false as true calls), the subtree at path is not
  // evicted by the cache bound (data_tree.h), e.g. a path devices observe, so a later change
  // notifies them with the whole value and not the part left after an eviction.
  void KeepCached(std::string_view path, bool keep);

  const WriteQueue& queue() const;
  const DataTree& tree() const;
  const SessionTable& sessions() const;
  CheckReport Check() const;
  const std::string& path() const;
  const std::string& instance_id() const;  // see LmdbEnv::instance_id
  uint64_t map_size() const;
  uint64_t GroupsCommitted() const;  // write transactions so far (batches / groups = group size)

  struct Impl;

 private:
  explicit Store(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace tether::store
