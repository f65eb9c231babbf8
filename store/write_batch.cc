#include "store/write_batch.h"

#include <algorithm>

namespace tether::store {

void WriteBatch::Append(QueueEntry entry) { mutations_.emplace_back(mutation::Append{std::move(entry)}); }

void WriteBatch::AckThrough(std::string route, uint64_t up_to_seq) {
  mutations_.emplace_back(mutation::AckThrough{std::move(route), up_to_seq});
}

bool WriteBatch::only_acks() const {
  return !mutations_.empty() && std::all_of(mutations_.begin(), mutations_.end(), [](const mutation::Mutation& m) {
           return std::holds_alternative<mutation::AckThrough>(m) || std::holds_alternative<mutation::AckSeqs>(m);
         });
}

void WriteBatch::Ack(std::string route, std::vector<uint64_t> seqs) {
  mutations_.emplace_back(mutation::AckSeqs{std::move(route), std::move(seqs)});
}

void WriteBatch::MoveToDeadLetters(std::string route, uint64_t seq, std::string reason,
                                   int http_status, int64_t now_ms) {
  mutations_.emplace_back(
      mutation::MoveToDead{std::move(route), seq, std::move(reason), http_status, now_ms});
}

void WriteBatch::RetryDeadLetter(uint64_t seq) { mutations_.emplace_back(mutation::RetryDead{seq}); }
void WriteBatch::DropDeadLetter(uint64_t seq) { mutations_.emplace_back(mutation::DropDead{seq}); }
void WriteBatch::SweepExpired(ClockReading now) {
  mutations_.emplace_back(mutation::SweepExpired{std::move(now)});
}

void WriteBatch::TreeSet(std::string path, nlohmann::json value, std::vector<mutation::TreeIncrement> increments) {
  mutations_.emplace_back(mutation::TreeSet{std::move(path), std::move(value), std::move(increments), std::nullopt});
}

void WriteBatch::TreeSetIf(std::string path, nlohmann::json expect, nlohmann::json value) {
  mutations_.emplace_back(mutation::TreeSet{std::move(path), std::move(value), {}, std::move(expect)});
}

void WriteBatch::TreeUpdate(std::string path, nlohmann::json children,
                            std::vector<mutation::TreeIncrement> increments) {
  mutations_.emplace_back(mutation::TreeUpdate{std::move(path), std::move(children), std::move(increments)});
}

void WriteBatch::TreeRemove(std::string path) {
  mutations_.emplace_back(mutation::TreeRemove{std::move(path)});
}

void WriteBatch::TreeMarkComplete(std::string path, std::string query) {
  mutations_.emplace_back(mutation::MarkComplete{std::move(path), std::move(query)});
}

void WriteBatch::TreeForgetComplete(std::string path) {
  mutations_.emplace_back(mutation::ForgetComplete{std::move(path)});
}

void WriteBatch::TreeSetFromCloud(std::string path, nlohmann::json value, std::vector<uint64_t> in_flight) {
  std::sort(in_flight.begin(), in_flight.end());
  mutations_.emplace_back(mutation::CloudWrite{std::move(path), std::move(value), false, std::move(in_flight)});
}

void WriteBatch::TreeUpdateFromCloud(std::string path, nlohmann::json children, std::vector<uint64_t> in_flight) {
  std::sort(in_flight.begin(), in_flight.end());
  mutations_.emplace_back(mutation::CloudWrite{std::move(path), std::move(children), true, std::move(in_flight)});
}

void WriteBatch::PutSession(SessionRecord record) {
  mutations_.emplace_back(mutation::PutSession{std::move(record)});
}

void WriteBatch::TouchSession(std::string session_id, int64_t last_seen_ms, int64_t last_seen_boottime_ms,
                              std::string boot_id, int64_t last_ping_ms) {
  mutations_.emplace_back(
      mutation::TouchSession{std::move(session_id), last_seen_ms, last_seen_boottime_ms, std::move(boot_id), last_ping_ms});
}

void WriteBatch::RemoveSession(std::string session_id, bool must_exist, uint64_t ops_through) {
  mutations_.emplace_back(mutation::RemoveSession{std::move(session_id), must_exist, ops_through});
}

void WriteBatch::AddOnDisconnect(std::string session_id, OnDisconnectOp op) {
  mutations_.emplace_back(mutation::AddOnDisconnect{std::move(session_id), std::move(op)});
}

void WriteBatch::CancelOnDisconnect(std::string session_id, std::string path, uint64_t up_to_order) {
  mutations_.emplace_back(mutation::CancelOnDisconnect{std::move(session_id), std::move(path), up_to_order});
}

}  // namespace tether::store
