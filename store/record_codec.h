// Record codec: the byte layout of keys and values inside the LMDB databases (internal).
//
// Integers in keys are big-endian so that memcmp order equals numeric order. Values use a
// little tagged-free layout: fixed-width integers and u32-length-prefixed strings, in field order.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "store/queue_entry.h"
#include "store/session_record.h"

namespace tether::store {

void PutBe32(std::string* out, uint32_t v);
void PutBe64(std::string* out, uint64_t v);
uint32_t GetBe32(const char* p);
uint64_t GetBe64(const char* p);

// queue key = route_id (BE32) + seq (BE64): one route's entries are one contiguous key range.
std::string QueueKey(uint32_t route_id, uint64_t seq);
// pending_paths key = the tree key of `tree_path` ("a/b") + '\0' + seq (BE64): the entries at one
// path are one key range, and a subtree's are the ranges "a/b\0..." and "a/b/...". False if the
// path is malformed or the key would pass LMDB's limit (such an entry is not re-applied over
// cloud data).
bool PendingIndexKey(std::string_view tree_path, uint64_t seq, std::string* key);
// on-disconnect key = u16 BE len(session_id) + session_id + order (BE64).
std::string OnDisconnectPrefix(std::string_view session_id);

std::string EncodeEntry(const QueueEntry& e);
bool DecodeEntry(std::string_view in, QueueEntry* e);
std::string EncodeDeadLetter(const DeadLetter& d);
bool DecodeDeadLetter(std::string_view in, DeadLetter* d);
std::string EncodeSession(const SessionRecord& s);
bool DecodeSession(std::string_view in, SessionRecord* s);
std::string EncodeOnDisconnect(const OnDisconnectOp& op);
bool DecodeOnDisconnect(std::string_view in, OnDisconnectOp* op);
std::string EncodeRouteStats(const RouteQueueStats& r);  // route name included
bool DecodeRouteStats(std::string_view in, RouteQueueStats* r);

}  // namespace tether::store
