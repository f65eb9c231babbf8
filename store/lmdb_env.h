// LmdbEnv: the one LMDB environment of a store directory and its named databases (internal).
//
// Opening validates the meta database (format id + schema version) and throws StoreError naming
// the path on anything incompatible or unreadable; it never deletes or rewrites existing data.
// Thread model: MDB_NOTLS, so read transactions may live on any thread; exactly one thread
// (the writer) ever opens write transactions. Map growth needs no live transactions in this
// process, so readers hold resize_mutex() shared and the writer takes it exclusively to grow.
#pragma once

#include <lmdb.h>

#include <cstddef>
#include <cstdint>
#include <optional>
#include <shared_mutex>
#include <string>
#include <string_view>

#include "store/options.h"

namespace tether::store {

inline constexpr std::string_view kFormatId = "tether-store";
// 2: tree leaves are CBOR. 3: the cache bound works on units (tree_units, tree_lru) instead of
// first path segments (tree_roots). 4: pending_paths holds the queued entries up to meta
// "pending_through" only (store/pending_index.h). Older stores are converted when first opened
// writable.
inline constexpr uint32_t kSchemaVersion = 4;
inline constexpr uint32_t kOldestReadableSchema = 2;

// The longest key LMDB stores: its compile-time MDB_MAXKEYSIZE (mdb_env_get_maxkeysize() == 511
// in Debian's liblmdb). A limit of the storage engine on one LMDB key (a tree path as stored, a
// token index entry, a route name), not Firebase's limit on one key of a database path
// (util::kMaxFirebaseKeyBytes, 768): a valid Firebase path can be too long to be one LMDB key.
inline constexpr size_t kMaxLmdbKeyBytes = 511;

struct Databases {
  MDB_dbi meta;           // "format", "schema", "counters", "instance", "unit_depth", "pending_through"
  MDB_dbi routes;         // route name -> route id (BE32)
  MDB_dbi route_stats;    // route id (BE32) -> RouteQueueStats
  MDB_dbi queue;          // route id (BE32) + seq (BE64) -> QueueEntry
  MDB_dbi dead;           // seq (BE64) -> DeadLetter
  MDB_dbi tree;           // leaf path "a/b/c" -> JSON scalar text
  MDB_dbi tree_units;     // unit key (see UnitRecord) -> UnitRecord, for every unit holding data
  MDB_dbi tree_lru;       // LruKey(last_use, unit) -> "" for every unit with data that is not parked
  MDB_dbi sessions;       // session id -> SessionRecord
  MDB_dbi by_short;       // short token -> session id
  MDB_dbi by_long;        // long token -> session id
  MDB_dbi on_disconnect;  // OnDisconnectPrefix(session) + order (BE64) -> OnDisconnectOp
  // tree key + '\0' + canonical query -> "" (valid until deleted by an eviction of its root or a
  // ForgetComplete), or, written by older builds, StoreCounters::evictions (BE64) at marking.
  MDB_dbi query_marks;
  MDB_dbi pending_paths;  // PendingIndexKey(entry's tree key, seq) -> route id (BE32), see PendingIndex
  bool has_query_marks = true;    // false: a read-only open of a store that never had them
  bool has_pending_paths = true;  // likewise
  bool has_units = true;          // likewise (a schema 2 store opened read-only)
};

class LmdbEnv {
 public:
  LmdbEnv(const std::string& dir, const StoreOptions& options);  // throws StoreError
  ~LmdbEnv();
  LmdbEnv(const LmdbEnv&) = delete;
  LmdbEnv& operator=(const LmdbEnv&) = delete;

  MDB_env* env() const { return env_; }
  const Databases& dbs() const { return dbs_; }
  const std::string& path() const { return path_; }
  // The unit depth the unit tables were built with (meta "unit_depth"; 0 if they do not exist).
  uint32_t unit_depth() const { return unit_depth_; }
  // Random id given to the store when it was created (or first opened writable by a build that
  // has it): names this store's queue sequence space, which a new store starts again.
  const std::string& instance_id() const { return instance_id_; }
  uint64_t map_size() const;
  // Writer thread only, with no write txn open: doubles the map up to `max`. False if at max.
  bool GrowMap(uint64_t max);
  std::shared_mutex& resize_mutex() const { return resize_mutex_; }
  // True when fewer than `times` x max(map/64, 32) pages are left: the unused map tail plus the
  // freelist pages the next commit can reuse. Growth is then refused so deletes (acks) always
  // find pages for copy-on-write: LMDB needs free pages even to delete, so a map filled to the
  // last page could never drain.
  bool SpaceLow(uint32_t times = 1) const;

 private:
  std::string path_;
  std::string instance_id_;
  uint32_t unit_depth_ = 0;
  int lock_fd_ = -1;  // flock'ed <dir>/tether.lock, writable opens only
  MDB_env* env_ = nullptr;
  Databases dbs_{};
  mutable std::shared_mutex resize_mutex_;
};

// A read-only snapshot. Cheap (no I/O, no lock besides the shared resize lock).
class ReadTxn {
 public:
  explicit ReadTxn(const LmdbEnv& env);  // throws StoreError
  ~ReadTxn();
  ReadTxn(const ReadTxn&) = delete;
  ReadTxn& operator=(const ReadTxn&) = delete;
  MDB_txn* get() const { return txn_; }
  // The view is valid while this txn lives.
  std::optional<std::string_view> Get(MDB_dbi dbi, std::string_view key) const;

 private:
  const LmdbEnv& env_;
  std::shared_lock<std::shared_mutex> lock_;
  MDB_txn* txn_ = nullptr;
};

// RAII cursor.
class Cursor {
 public:
  Cursor(MDB_txn* txn, MDB_dbi dbi);
  ~Cursor() { if (c_) mdb_cursor_close(c_); }
  Cursor(const Cursor&) = delete;
  Cursor& operator=(const Cursor&) = delete;
  MDB_cursor* get() const { return c_; }
  int rc() const { return rc_; }  // open result; get() is null if nonzero

 private:
  MDB_cursor* c_ = nullptr;
  int rc_ = 0;
};

inline MDB_val Val(std::string_view s) { return MDB_val{s.size(), const_cast<char*>(s.data())}; }
inline std::string_view View(const MDB_val& v) {
  return std::string_view(static_cast<const char*>(v.mv_data), v.mv_size);
}

}  // namespace tether::store
