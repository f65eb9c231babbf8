// Query: Firebase's query vocabulary on device GETs, and its ordering of children.
//
// Uri-Query parameters (docs/device-protocol.md): orderBy=$key|$value|<child path> (bare or
// JSON-quoted), startAt / endAt / equalTo = a JSON scalar, limitToFirst / limitToLast = a positive
// integer. Ordering (Firebase): children without the ordered value (null) first, then false, true,
// numbers ascending (exactly, whatever mix of 64-bit integers and doubles), strings by UTF-16 code
// units (as JavaScript and the Firebase server compare them), objects; ties by key. Keys that the
// official client takes for 32-bit integers (^-?(0*)\d{1,10}$ in range, so "007" and "-01" too)
// order first, numerically, equal integers shorter key first; then the rest as strings. A query
// selects children; the result is the object of the selected children (unordered, as Firebase
// REST answers), null at a plain value once it has a range or a limit. Pure functions.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "gateway/model/diagnostic.h"
#include "gateway/model/value_codec.h"

namespace tether {

struct Query {
  enum class Order { kNone, kKey, kValue, kChild };
  Order order = Order::kNone;
  std::vector<std::string> child;  // kChild: the path below each child
  std::optional<Json> start_at, end_at;  // equalTo sets both
  bool equal_to = false;
  std::optional<uint32_t> limit_first, limit_last;

  bool empty() const { return order == Order::kNone; }
  // A range (startAt, endAt, equalTo) or a limit: more than an order.
  bool filters() const { return start_at || end_at || limit_first || limit_last; }
  // Stable text naming the query (parameter order fixed, values as JSON), e.g.
  // orderBy="$key"&startAt="b"&limitToFirst=2. Empty for no query. Used as its cache identity.
  std::string Canonical() const;
  // The same parameters URL-encoded for the Firebase REST API (no leading '&').
  std::string RestParams() const;
};

// Parses the query parameters among `params` ("name=value"); names starting with '.' (.cs, .dis)
// belong to the session layer and are skipped. A malformed query: a kInvalid Diagnostic (4.00).
Expected<void> ParseQuery(const std::vector<std::string_view>& params, Query* query);

// Firebase ordering: <0, 0, >0.
int CompareKeys(std::string_view a, std::string_view b);
int CompareValues(const Json& a, const Json& b);
int CompareStrings(std::string_view a, std::string_view b);  // UTF-8 text by UTF-16 code units

// The children of `value` that `query` selects, as an object (null when none). A non-object value
// has no children: null for a query with a range or a limit, else the value unchanged; an empty
// query returns the value unchanged. An array
// (Firebase REST's form of children keyed 0..n) counts as the object of its non-null elements.
Json ApplyQuery(const Json& value, const Query& query);
// The selected child keys in query order (for tests and diagnostics).
std::vector<std::string> QueryKeys(const Json& value, const Query& query);
// The children of `local` that `cloud_result` (the cloud's answer to `query` at the same path)
// proves gone: inside the query's bounds, not in the result, and, when a limit is filled by the
// result, not beyond its last child (limitToFirst) or before its first (limitToLast), where the
// cloud may hold children the result left out. Children are placed by their local values.
std::vector<std::string> StaleKeys(const Json& local, const Json& cloud_result, const Query& query);

}  // namespace tether
