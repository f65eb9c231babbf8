// BatchBuilder: turns consecutive outbox ops into one multi-path PATCH body at a route's root.
// A batch holds ops whose paths do not overlap (no path is a segment-wise prefix of another), so
// applying them at once equals applying them in seq order, and that share one auth_override (one
// request is evaluated as one identity).
#pragma once
#include <cstdint>
#include <span>
#include <string>
#include <string_view>

#include <nlohmann/json.hpp>

#include "upstream/outbox.h"

namespace tether::upstream {

struct BatchLimits {
  size_t max_ops = 2000;
  size_t max_bytes = 4 << 20;  // serialized body estimate
};

struct Batch {
  size_t op_count = 0;          // ops[0..op_count) of the input are in the batch
  uint64_t last_seq = 0;        // seq of the last op included
  nlohmann::json body = nlohmann::json::object();  // multi-path PATCH body, or see replace_root
  bool replace_root = false;    // a set/remove of the route root itself (always alone in its
                                // batch): body is the root's new value, to be sent as a PUT
  size_t bytes = 0;             // approximate size of body
  int bad_op = -1;              // index of an op whose payload is not valid JSON (batch stops before it)
};

// True when one of the '/'-separated paths is a segment-wise prefix of (or equal to) the other.
bool PathsOverlap(std::string_view a, std::string_view b);

// Replaces every {".sv":"timestamp"} in `v` with `time_ms`. Other server values are left alone.
void ResolveServerTimestamps(nlohmann::json& v, int64_t time_ms);

// Builds the longest batch from the front of `ops` (always >= 1 op unless ops[0] is malformed,
// in which case op_count == 0 and bad_op == 0).
Batch BuildBatch(std::span<const OutboundOp> ops, const BatchLimits& limits);

}  // namespace tether::upstream
