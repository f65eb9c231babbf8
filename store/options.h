// StoreOptions: everything configurable about the store, fixed for the lifetime of a Store.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

namespace tether::store {

enum class Durability {
  // Default. A batch completes only after its transaction is fsync'ed: an acknowledged write
  // survives process crash AND power loss.
  kFsync,
  // MDB_NOSYNC: commits go to OS buffers without fsync. Acknowledged writes survive a process
  // crash (kill -9) but MAY BE LOST ON POWER LOSS or kernel crash. Never corrupts the store.
  kOsBuffered,
};

enum class OverflowPolicy {
  kReject,      // the append's batch fails with StatusCode::kRejected; nothing is dropped
  kDropOldest,  // the route's oldest entries are deleted (counted in RouteQueueStats::dropped_oldest)
};

// Bounds for one route's queue. 0 means unlimited.
struct QueueLimits {
  uint64_t max_entries = 0;
  uint64_t max_bytes = 0;  // sum of encoded entry sizes
  OverflowPolicy policy = OverflowPolicy::kReject;
  int64_t ttl_ms = 0;  // entries older than this (entry_age.h) are dropped by SweepExpired; 0 = none
};

// The LMDB map is one contiguous mapping of the whole map size (address space; the file grows only
// as data is written). A 64-bit process has address space to spare. A 32-bit one (armhf) has
// 3 GiB at most (2 GiB under a 2G/2G kernel split, 4 GiB on a 64-bit kernel), shared with the
// heap, thread stacks and libraries; and growing the map remaps it: LMDB unmaps the old map
// first, so a failed mmap in a fragmented address space leaves the store with no map at all.
// Hence on a 32-bit build:
// - a map is at most kMaxMapBytes (2 GiB), refused by the configuration and by Store::Open;
// - the store maps max(map_size, map_max) when it opens and never grows it afterwards, so an
//   address space that cannot hold the map fails at start-up with a clear error, not later;
// - the default map is 1 GiB: it fits next to a 256 MB process under each of those splits.
inline constexpr bool kAddressSpace32 = sizeof(void*) < 8;
inline constexpr uint64_t kMaxMapBytes = kAddressSpace32 ? 2ull << 30 : 1ull << 40;
inline constexpr uint64_t kDefaultMapSize = 1ull << 30;
inline constexpr uint64_t kDefaultMapMax = kAddressSpace32 ? 1ull << 30 : 8ull << 30;

struct StoreOptions {
  // For tools (`tetherctl store check`): MDB_RDONLY, no writer thread, no exclusive lock, so it
  // works while tetherd runs; every write fails with kClosed. Writable opens take an exclusive
  // flock on <dir>/tether.lock: a second writable Store on the same directory (in any process)
  // is refused, because the writer keeps the counters in memory.
  bool read_only = false;
  Durability durability = Durability::kFsync;
  uint64_t map_size = kDefaultMapSize;  // initial LMDB map size (file grows lazily, sparse)
  uint64_t map_max = 0;  // on MDB_MAP_FULL the map doubles up to this; 0 = never grow (32-bit: see above)

  QueueLimits default_route_limits;                   // for routes not listed below
  std::map<std::string, QueueLimits> route_limits;    // by route name
  uint64_t global_max_entries = 0;                    // over all routes; 0 = unlimited
  uint64_t global_max_bytes = 0;

  uint64_t tree_cache_bytes = 10'000'000;       // LRU bound of the DataTree (keys + values); 0 = none
  std::vector<std::string> tree_pinned_roots;   // sync roots: never evicted ("" pins everything)
  // Depth of the cache units the bound evicts (see data_tree.h), e.g. 2 makes "fleet/d1" one
  // unit. Changing it rebuilds the unit tables at open (one pass over the tree, recency lost).
  uint32_t tree_unit_depth = 2;

  uint32_t ttl_sweep_interval_ms = 60'000;  // loop timer queuing SweepExpired; 0 = off
  // Batches applied per group-commit transaction. 1,024 was tried to bound LMDB's cache of dirty
  // pages and raised memory per device instead (docs/benchmarks.md, "Memory per device").
  uint32_t max_group_batches = 4096;
};

}  // namespace tether::store
