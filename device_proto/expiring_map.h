// A hash map whose entries expire a fixed time after insertion, bounded by an
// entry count and a byte budget; the oldest entries are evicted first.
// Every entry has the same lifetime, so insertion order is expiry order and a
// FIFO of (key, seq) suffices; FIFO records of replaced entries are skipped
// and trimmed. bytes() is what the map really holds: each hash node (key,
// value, bookkeeping, next pointer, cached hash, allocator header), its bucket
// slot, every FIFO record, plus the heap bytes each value owns out of line as
// reported by the caller (`extra`). tests/device_proto/expiring_map_test.cc
// checks the estimate against a counting allocator.
#pragma once

#include <cstddef>
#include <cstdint>
#include <deque>
#include <memory>
#include <optional>
#include <string>
#include <type_traits>
#include <unordered_map>
#include <utility>

namespace tether::coap {

// Heap bytes a std::string owns beyond sizeof(std::string) (0 while it fits the SSO buffer).
inline size_t HeapBytes(const std::string& s) {
  return s.capacity() > std::string().capacity() ? s.capacity() + 1 : 0;
}

template <typename K, typename V, typename Hash, typename Alloc = std::allocator<std::byte>>
class ExpiringMap {
  struct Slot {
    V value;
    uint64_t seq;
    size_t extra;
  };
  struct Record {
    K key;
    uint64_t expires_ms;
    uint64_t seq;
  };
  using Node = std::pair<const K, Slot>;
  using MapAlloc = typename std::allocator_traits<Alloc>::template rebind_alloc<Node>;
  using FifoAlloc = typename std::allocator_traits<Alloc>::template rebind_alloc<Record>;

 public:
  // libstdc++ stores the hash code in each node unless the hash is noexcept (its
  // __cache_default); a noexcept hash saves those 8 bytes per entry.
  static constexpr bool kCachesHash = !std::is_nothrow_invocable_v<const Hash&, const K&>;
  // One hash node (the pair, the next pointer and any cached hash, plus
  // malloc's 8-byte chunk header, rounded to its 16-byte granularity) and two
  // bucket pointers (the bucket array holds 1 to 2 slots per entry).
  static constexpr size_t kNodeBytes =
      (sizeof(Node) + (kCachesHash ? 2 : 1) * sizeof(void*) + 8 + 15) / 16 * 16 + 2 * sizeof(void*);
  static constexpr size_t kRecordBytes = sizeof(Record);

  ExpiringMap(size_t max_entries, size_t max_bytes, uint64_t lifetime_ms, const Alloc& alloc = Alloc())
      : map_(16, Hash(), std::equal_to<K>(), MapAlloc(alloc)), fifo_(FifoAlloc(alloc)),
        max_entries_(max_entries), max_bytes_(max_bytes), lifetime_ms_(lifetime_ms) {}

  V* Find(const K& key) {
    auto it = map_.find(key);
    return it == map_.end() ? nullptr : &it->second.value;
  }

  // Inserts or replaces; the entry's lifetime starts now. `extra` = heap bytes
  // the value owns out of line (e.g. HeapBytes() of its strings).
  V& Insert(const K& key, V value, size_t extra, uint64_t now_ms) {
    const uint64_t seq = ++seq_;
    auto [it, fresh] = map_.try_emplace(key);  // one lookup: a replaced entry's record goes stale
    if (!fresh) extra_ -= it->second.extra;
    it->second = Slot{std::move(value), seq, extra};
    extra_ += extra;
    fifo_.push_back(Record{key, now_ms + lifetime_ms_, seq});
    EnforceBounds(key);  // never evicts `key`; references survive other erasures
    return it->second.value;
  }

  // Updates the out-of-line bytes of an existing entry (e.g. after attaching a reply).
  void SetExtra(const K& key, size_t extra) {
    auto it = map_.find(key);
    if (it == map_.end()) return;
    extra_ = extra_ - it->second.extra + extra;
    it->second.extra = extra;
    EnforceBounds(key);
  }

  void Erase(const K& key) {
    auto it = map_.find(key);
    if (it == map_.end()) return;
    extra_ -= it->second.extra;
    map_.erase(it);
  }

  void Expire(uint64_t now_ms) {
    while (!fifo_.empty() && fifo_.front().expires_ms <= now_ms) PopFront();
  }

  size_t size() const { return map_.size(); }
  size_t bytes() const { return map_.size() * kNodeBytes + fifo_.size() * kRecordBytes + extra_; }
  uint64_t evictions() const { return evictions_; }

 private:
  // Drops the oldest record and its entry if the record is still the entry's; true if it was.
  bool PopFront() {
    const Record& r = fifo_.front();
    auto it = map_.find(r.key);
    const bool was_live = it != map_.end() && it->second.seq == r.seq;
    if (was_live) {
      extra_ -= it->second.extra;
      map_.erase(it);
    }
    fifo_.pop_front();
    return was_live;
  }

  bool Live(const Record& r) const {
    auto it = map_.find(r.key);
    return it != map_.end() && it->second.seq == r.seq;
  }

  // Evicts the oldest entries until within bounds, never `keep` (just written):
  // if `keep` is the oldest, newer entries go first and its record stays in front.
  void EnforceBounds(const K& keep) {
    std::optional<Record> kept;
    auto over = [&] {
      const size_t b = bytes() + (kept ? kRecordBytes : 0);
      return map_.size() > max_entries_ || b > max_bytes_;
    };
    while (over() && !fifo_.empty()) {
      const Record& r = fifo_.front();
      if (!kept && r.key == keep && Live(r)) {
        kept = r;
        fifo_.pop_front();
        continue;
      }
      if (PopFront()) ++evictions_;
    }
    if (kept) fifo_.push_front(*kept);
    // Stale FIFO records (from replaced/erased entries) are bounded by trimming.
    while (fifo_.size() > 2 * map_.size() + 64 && !Live(fifo_.front())) fifo_.pop_front();
  }

  std::unordered_map<K, Slot, Hash, std::equal_to<K>, MapAlloc> map_;
  std::deque<Record, FifoAlloc> fifo_;
  size_t max_entries_, max_bytes_;
  uint64_t lifetime_ms_;
  uint64_t seq_ = 0;
  size_t extra_ = 0;
  uint64_t evictions_ = 0;
};

}  // namespace tether::coap
