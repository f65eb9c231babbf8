// StoreCheck: integrity and size report for `tetherctl store check` (read-only, one snapshot).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace tether::store {

class LmdbEnv;

struct TableSize {
  std::string name;
  uint64_t entries = 0;
  uint64_t pages = 0;  // branch + leaf + overflow pages
};

struct CheckReport {
  bool ok = true;
  std::vector<std::string> problems;  // empty iff ok
  uint64_t file_bytes = 0;            // data.mdb size on disk (apparent)
  uint64_t map_bytes = 0;             // current map size
  uint64_t used_bytes = 0;            // (last used page + 1) * page size
  uint64_t page_size = 0;
  std::vector<TableSize> tables;
};

// Verifies: persisted counters equal the table contents (queue/dead/tree totals, per-route
// stats, per-root counters), token indexes and sessions agree both ways, every onDisconnect op
// belongs to a session, every queue entry's route id is known.
CheckReport RunCheck(const LmdbEnv& env);

// Opens the store in `dir` read-only (safe while tetherd runs) and runs RunCheck on it, without
// a loop: what `tetherctl store check` needs, so tetherctl links neither libuv nor the writer.
// Throws StoreError when the store is missing, unreadable or incompatible.
CheckReport CheckStoreAt(const std::string& dir);

}  // namespace tether::store
