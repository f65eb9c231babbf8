// Firebase data rules for what devices may write: keys, paths, depth and server values.
// Each check returns ok when valid, else a kInvalid Diagnostic (gateway/model/diagnostic.h): a
// device sees it as 4.00 with the message as the payload.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "gateway/model/diagnostic.h"
#include "gateway/model/value_codec.h"
#include "util/firebase_key.h"

namespace tether {

constexpr size_t kMaxDepth = 32;

// Keys: util::CheckFirebaseKey (util/firebase_key.h). A path: each segment a key, at most kMaxDepth.
Expected<void> CheckPath(const std::vector<std::string>& segments);
// value is written at a path of path_depth segments. Server-value placeholders
// ({".sv":"timestamp"}, {".sv":{"increment":n}}) are the only keys allowed to start with '.'.
Expected<void> CheckValue(const Json& value, size_t path_depth);
// PATCH body: an object whose keys are relative child paths ("a/b"), each checked as a path, none
// of them the same as or below another (Firebase refuses overlapping update paths).
Expected<void> CheckUpdate(const Json& value, size_t path_depth);

bool HasServerValues(const Json& value);
// Replaces each {".sv":{"increment":n}} in *value by n and returns where each was ("a/b" relative
// to the value; "" = the value itself) with its n, for the store to add the number held there when
// it applies the write (so concurrent increments all count). In an update, keys are child paths.
std::vector<std::pair<std::string, Json>> ExtractIncrements(Json* value);
// Replaces each {".sv":"timestamp"} in *value with timestamp_ms. (Increments are added by the store
// inside its commit: store/pending_overlay.h, IncrementSum.)
void ResolveTimestamps(Json* value, int64_t timestamp_ms);

}  // namespace tether
