// Mutation: one change inside a WriteBatch. Plain data; applied by the writer thread only.
#pragma once

#include <cstdint>
#include <string>
#include <variant>
#include <vector>

#include <nlohmann/json.hpp>

#include "store/queue_entry.h"
#include "store/session_record.h"

namespace tether::store::mutation {

struct Append { QueueEntry entry; };                        // seq assigned at apply
struct AckThrough { std::string route; uint64_t up_to_seq; };  // delete seq <= up_to_seq
struct AckSeqs { std::string route; std::vector<uint64_t> seqs; };  // missing seqs are ignored
struct MoveToDead { std::string route; uint64_t seq; std::string reason; int http_status; int64_t now_ms; };
struct RetryDead { uint64_t seq; };
struct DropDead { uint64_t seq; };
struct SweepExpired { int64_t now_wall_ms; };
struct TreeSet { std::string path; nlohmann::json value; };
struct TreeUpdate { std::string path; nlohmann::json children; };
struct TreeRemove { std::string path; };
struct PutSession { SessionRecord record; };
struct TouchSession { std::string session_id; int64_t last_seen_ms; };
struct RemoveSession { std::string session_id; bool must_exist; uint64_t ops_through; };
struct AddOnDisconnect { std::string session_id; OnDisconnectOp op; };
struct CancelOnDisconnect { std::string session_id; std::string path; };
struct MarkComplete { std::string path; std::string query; };

using Mutation = std::variant<Append, AckThrough, AckSeqs, MoveToDead, RetryDead, DropDead,
                              SweepExpired, TreeSet, TreeUpdate, TreeRemove, PutSession,
                              TouchSession, RemoveSession, AddOnDisconnect, CancelOnDisconnect,
                              MarkComplete>;

}  // namespace tether::store::mutation
