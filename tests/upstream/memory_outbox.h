// MemoryOutbox: an in-memory Outbox for tests; records confirmations and dead letters.
#pragma once
#include <deque>
#include <map>
#include <string>
#include <vector>

#include "upstream/outbox.h"

namespace tether::upstream::testing {

class MemoryOutbox : public Outbox {
 public:
  void Add(OutboundOp op) {
    op.seq = ++last_seq_[op.route];
    queues_[op.route].push_back(std::move(op));
  }
  std::vector<OutboundOp> Peek(const std::string& route, size_t max) override {
    auto& q = queues_[route];
    return {q.begin(), q.begin() + static_cast<long>(std::min(max, q.size()))};
  }
  void Confirmed(const std::string& route, uint64_t up_to) override {
    auto& q = queues_[route];
    while (!q.empty() && q.front().seq <= up_to) q.pop_front();
  }
  void DeadLetter(const OutboundOp& op, int status, std::string) override {
    auto& q = queues_[op.route];
    for (auto it = q.begin(); it != q.end(); ++it)
      if (it->seq == op.seq) {
        dead.push_back({op, status});
        q.erase(it);
        return;
      }
  }
  void Conflict(const OutboundOp& op, const std::string& cloud_value) override {
    conflicts.push_back({op, cloud_value});
    Confirmed(op.route, op.seq);
  }
  std::vector<std::pair<OutboundOp, std::string>> conflicts;
  size_t pending() const {
    size_t n = 0;
    for (auto& [r, q] : queues_) n += q.size();
    return n;
  }
  size_t Pending(const std::string& route) const {
    auto it = queues_.find(route);
    return it == queues_.end() ? 0 : it->second.size();
  }
  std::vector<std::pair<OutboundOp, int>> dead;

 private:
  std::map<std::string, std::deque<OutboundOp>> queues_;
  std::map<std::string, uint64_t> last_seq_;
};

}  // namespace tether::upstream::testing
