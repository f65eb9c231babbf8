// StoreCounters / RootCounters: totals kept in meta so opening never scans the data (internal).
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
  uint64_t evicted_roots = 0;   // DataTree LRU evictions (ever)
};

// Per first path segment of the DataTree ("/devices/x/y" -> "devices").
struct RootCounters {
  uint64_t bytes = 0;    // tree bytes under this root
  uint64_t pending = 0;  // queue + dead-letter entries whose path is under this root
};

std::string EncodeCounters(const StoreCounters& c);
bool DecodeCounters(std::string_view in, StoreCounters* c);
std::string EncodeRoot(const RootCounters& r);
bool DecodeRoot(std::string_view in, RootCounters* r);

}  // namespace tether::store
