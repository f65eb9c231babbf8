// LocalCopy: the one door for cloud data into the data tree (docs/architecture.md, "The local
// copy").
//
// Every cloud value the gateway learns goes into the tree through here: sync-stream and watch
// events (OnSyncData), cloud reads and query results a device read asked for (FetchValue,
// FetchQuery), and the cloud's value after a transaction conflict (AddCloudValue, inside the
// uploader's acknowledgement batch). Each is written with the queued writes laid on top
// (store::WriteBatch::TreeSetFromCloud), leaving out the increments being uploaded right now
// (the uploads-in-flight source), and every committed change is handed to the changed hook (the
// device side's notifier).
//
// Thread: the loop thread only. Ownership: the daemon owns it; the store must outlive it. A
// store or reader callback arriving after Close() or destruction does nothing. Failure: a cloud
// read that fails answers nullopt; a tree write the store refuses is logged, and the read is
// answered with the cloud's value as read (nothing is remembered offline).
//
// Invariants:
// - A sync root is complete from its first full sync (a put at or above it) on, not before.
// - A sync root that got its full sync while a read was in flight is not overwritten by the
//   read's result (the stream's copy is as new).
// - A query's result merges into the tree (children outside it stay); local children it proves
//   gone are removed (StaleKeys).
#pragma once

#include <uv.h>

#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "gateway/model/query.h"
#include "gateway/model/value_codec.h"
#include "store/store.h"
#include "util/callback_scope.h"

namespace tether {

class LocalCopy {
 public:
  // Reads a cloud path from the cloud (rest_query: Query::RestParams, may be empty); done(nullopt)
  // on failure or timeout.
  using CloudReader = std::function<void(const std::string& cloud_path, const std::string& rest_query,
                                         std::function<void(std::optional<Json>)> done)>;
  using Answer = std::function<void(std::optional<Json>)>;
  using ChangedHook = std::function<void(const std::vector<std::string>& changed_paths)>;

  LocalCopy(uv_loop_t* loop, store::Store& store);
  ~LocalCopy();
  LocalCopy(const LocalCopy&) = delete;
  LocalCopy& operator=(const LocalCopy&) = delete;
  // Stopping: reads and writes in flight end without touching the tree or running their done.
  void Close() { scope_.Close(); }

  // Without a reader (local-only mode, or once the subscription is gone) the tree is
  // authoritative: has_cloud() is false.
  [[nodiscard]] util::Subscription SetCloudReader(CloudReader reader, std::vector<std::string> sync_roots);
  // Queue seqs of increments being uploaded whose effect cloud data may already include; none
  // without a source.
  [[nodiscard]] util::Subscription SetUploadsInFlight(std::function<std::vector<uint64_t>()> source) {
    return in_flight_.Set(std::move(source));
  }
  // Runs with the paths every committed cloud write changed.
  [[nodiscard]] util::Subscription SetChangedHook(ChangedHook hook) { return on_changed_.Set(std::move(hook)); }

  bool has_cloud() const { return static_cast<bool>(reader_); }
  bool InSyncRoot(const std::string& cloud_path) const;
  // The tree holds path (+ query) completely (a sync root after its full sync, a remembered result).
  bool Holds(const std::string& cloud_path, const std::string& query) const;
  // True (and noted) when the held result of path + query was not read from the cloud within
  // kRefreshIntervalMs.
  bool RefreshDue(const std::string& cloud_path, const std::string& query);
  // Notes path + query as read from the cloud now (a read is on its way).
  void NoteRefreshed(const std::string& cloud_path, const std::string& query);

  // Reads the value (FetchValue) or the query's result (FetchQuery) from the cloud, writes it into
  // the tree with the pending writes on top and marks it complete. done(what the tree now
  // answers), done(nullopt) when the cloud did not answer. Requires has_cloud().
  void FetchValue(const std::string& cloud_path, Answer done);
  void FetchQuery(const std::string& cloud_path, std::shared_ptr<const Query> q, Answer done);
  // Cloud data under a sync root or a watched path: path is absolute; a patch merges an object of
  // relative paths. A put makes the path complete (held offline).
  void OnSyncData(const std::string& path, const Json& value, bool is_patch);
  // Adds the cloud's value at tree_path to b (committed with the caller's other mutations);
  // the caller hands the batch's changed paths to Committed().
  void AddCloudValue(store::WriteBatch* b, const std::string& tree_path, const Json& value) const;
  void Committed(const std::vector<std::string>& changed_paths);

 private:
  std::vector<uint64_t> InFlight() const;

  uv_loop_t* loop_;
  store::Store& store_;
  util::Hook<void(const std::string&, const std::string&, std::function<void(std::optional<Json>)>)> reader_;
  std::vector<std::string> sync_roots_;
  util::Hook<std::vector<uint64_t>()> in_flight_;
  util::Hook<void(const std::vector<std::string>&)> on_changed_;
  std::map<std::string, uint64_t> refreshed_ms_;  // path + '?' + query -> uv_now of the last cloud read
  util::CallbackScope scope_;  // guards store and reader callbacks
};

}  // namespace tether
