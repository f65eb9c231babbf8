// A hash map whose entries expire a fixed time after insertion, bounded by an
// entry count and a byte budget; the oldest entries are evicted first.
// Every entry has the same lifetime, so insertion order is expiry order and a
// FIFO of (key, seq) suffices; FIFO records of replaced entries are skipped.
// The caller reports each entry's byte cost (cost()) so memory stays bounded.
#pragma once

#include <cstddef>
#include <cstdint>
#include <deque>
#include <unordered_map>
#include <utility>

namespace tether::coap {

template <typename K, typename V, typename Hash>
class ExpiringMap {
 public:
  ExpiringMap(size_t max_entries, size_t max_bytes, uint64_t lifetime_ms)
      : max_entries_(max_entries), max_bytes_(max_bytes), lifetime_ms_(lifetime_ms) {}

  V* find(const K& key) {
    auto it = map_.find(key);
    return it == map_.end() ? nullptr : &it->second.value;
  }

  // Inserts or replaces; the entry's lifetime starts now.
  V& insert(const K& key, V value, size_t cost, uint64_t now_ms) {
    erase(key);
    const uint64_t seq = ++seq_;
    auto& slot = map_[key];
    slot = Slot{std::move(value), seq, cost};
    bytes_ += cost;
    fifo_.push_back(Record{key, now_ms + lifetime_ms_, seq});
    enforce_bounds(key);  // never evicts `key`; references survive other erasures
    return slot.value;
  }

  // Updates the cost of an existing entry (e.g. after attaching a reply).
  void set_cost(const K& key, size_t cost) {
    auto it = map_.find(key);
    if (it == map_.end()) return;
    bytes_ = bytes_ - it->second.cost + cost;
    it->second.cost = cost;
    enforce_bounds(key);
  }

  void erase(const K& key) {
    auto it = map_.find(key);
    if (it == map_.end()) return;
    bytes_ -= it->second.cost;
    map_.erase(it);
  }

  void expire(uint64_t now_ms) {
    while (!fifo_.empty() && fifo_.front().expires_ms <= now_ms) pop_front();
  }

  size_t size() const { return map_.size(); }
  size_t bytes() const { return bytes_; }
  uint64_t evictions() const { return evictions_; }

 private:
  struct Slot {
    V value;
    uint64_t seq;
    size_t cost;
  };
  struct Record {
    K key;
    uint64_t expires_ms;
    uint64_t seq;
  };

  void pop_front() {
    const Record& r = fifo_.front();
    auto it = map_.find(r.key);
    if (it != map_.end() && it->second.seq == r.seq) {
      bytes_ -= it->second.cost;
      map_.erase(it);
    }
    fifo_.pop_front();
  }

  // Evicts the oldest entries, never `keep` (just written), until within bounds.
  void enforce_bounds(const K& keep) {
    while ((map_.size() > max_entries_ || bytes_ > max_bytes_) && !fifo_.empty()) {
      const Record& r = fifo_.front();
      auto it = map_.find(r.key);
      const bool live = it != map_.end() && it->second.seq == r.seq;
      if (live && r.key == keep) break;
      if (live) ++evictions_;
      pop_front();
    }
    // Stale FIFO records (from replaced/erased entries) are bounded by trimming.
    while (fifo_.size() > 2 * map_.size() + 64 && !fifo_.empty()) {
      auto it = map_.find(fifo_.front().key);
      if (it != map_.end() && it->second.seq == fifo_.front().seq) break;
      fifo_.pop_front();
    }
  }

  std::unordered_map<K, Slot, Hash> map_;
  std::deque<Record> fifo_;
  size_t max_entries_, max_bytes_;
  uint64_t lifetime_ms_;
  uint64_t seq_ = 0;
  size_t bytes_ = 0;
  uint64_t evictions_ = 0;
};

}  // namespace tether::coap
