// StoreCounters / UnitRecord: totals kept in the store so opening never scans the data (internal).
//
// Invariant: every transaction that changes a table also writes the counters describing it, so
// the persisted counters always equal the contents (verified by Store::Check()).
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

namespace tether::store {

struct StoreCounters {
  uint64_t next_seq = 1;        // next queue seq to assign (seqs are never reused)
  uint64_t next_op_order = 1;   // next onDisconnect registration order
  uint32_t next_route_id = 1;
  uint64_t queue_entries = 0;
  uint64_t queue_bytes = 0;
  uint64_t dead_entries = 0;
  uint64_t tree_bytes = 0;      // sum over tree leaves of key size + value size
  uint64_t tree_version = 0;    // +1 per tree mutation that changed data
  uint64_t evictions = 0;       // cache units the LRU bound evicted data from (ever)
  uint64_t lru_clock = 0;       // last use stamp handed out (UnitRecord::last_use)
};

// One cache unit of the DataTree: the subtree at the first StoreOptions::tree_unit_depth
// segments of its keys ("fleet/d1" for "fleet/d1/temp" at depth 2; a shallower leaf is its own
// unit). Kept for every unit holding data.
struct UnitRecord {
  uint64_t bytes = 0;     // tree bytes of its leaves
  uint64_t last_use = 0;  // StoreCounters::lru_clock when last written or read
  // Everything left in it is protected (pinned, held, or a queued write's target): out of the
  // LRU index until it is written again or what protected it goes.
  bool parked = false;
};

std::string EncodeCounters(const StoreCounters& c);
bool DecodeCounters(std::string_view in, StoreCounters* c);  // also schema 2's (without lru_clock)
std::string EncodeUnit(const UnitRecord& u);
bool DecodeUnit(std::string_view in, UnitRecord* u);
// tree_lru key: last_use (BE64) + unit key, so the first key is the least recently used unit.
std::string LruKey(uint64_t last_use, std::string_view unit);

}  // namespace tether::store
