// ExpiringMap: expiry order, the entry and byte caps, the never-evict-what-was-just-written rule,
// stale FIFO records, and whether bytes() is an honest account of the memory it holds (checked
// against a counting allocator).
#include "device_proto/expiring_map.h"

#include <gtest/gtest.h>

#include <array>
#include <cstdio>
#include <string>

namespace tether::coap {
namespace {

struct IntHash {
  size_t operator()(int k) const { return std::hash<int>{}(k); }
};
using Map = ExpiringMap<int, std::string, IntHash>;

TEST(ExpiringMap, EntriesExpireInInsertionOrder) {
  Map m(100, SIZE_MAX, 100);
  m.Insert(1, "a", 0, 0);
  m.Insert(2, "b", 0, 50);
  m.Expire(99);
  EXPECT_EQ(m.size(), 2u);
  m.Expire(100);
  EXPECT_EQ(m.Find(1), nullptr);
  ASSERT_NE(m.Find(2), nullptr);
  EXPECT_EQ(*m.Find(2), "b");
  m.Expire(150);
  EXPECT_EQ(m.size(), 0u);
  EXPECT_EQ(m.evictions(), 0u) << "expiry is not eviction";
}

TEST(ExpiringMap, ReplacingRestartsTheLifetimeAndSkipsTheOldRecord) {
  Map m(100, SIZE_MAX, 100);
  m.Insert(1, "old", 0, 0);
  m.Insert(1, "new", 0, 60);
  m.Expire(100);  // the first record is stale: the entry lives on
  ASSERT_NE(m.Find(1), nullptr);
  EXPECT_EQ(*m.Find(1), "new");
  m.Expire(160);
  EXPECT_EQ(m.Find(1), nullptr);
}

TEST(ExpiringMap, EntryCapEvictsTheOldest) {
  Map m(3, SIZE_MAX, 1000);
  for (int k = 0; k < 5; ++k) m.Insert(k, "v", 0, k);
  EXPECT_EQ(m.size(), 3u);
  EXPECT_EQ(m.Find(0), nullptr);
  EXPECT_EQ(m.Find(1), nullptr);
  for (int k = 2; k < 5; ++k) EXPECT_NE(m.Find(k), nullptr) << k;
  EXPECT_EQ(m.evictions(), 2u);
}

TEST(ExpiringMap, ByteCapCountsNodesRecordsAndOutOfLineBytes) {
  const size_t per_entry = Map::kNodeBytes + Map::kRecordBytes;
  Map m(1000, 3 * per_entry + 3 * 100, 1000);
  for (int k = 0; k < 3; ++k) m.Insert(k, "v", 100, k);
  EXPECT_EQ(m.size(), 3u);
  EXPECT_EQ(m.bytes(), 3 * per_entry + 300);
  m.Insert(3, "v", 100, 3);  // one entry too many bytes: the oldest goes
  EXPECT_EQ(m.size(), 3u);
  EXPECT_EQ(m.Find(0), nullptr);
  EXPECT_LE(m.bytes(), 3 * per_entry + 300);
  m.Insert(4, "v", 250, 4);  // needs the room of two more
  EXPECT_EQ(m.Find(1), nullptr);
  EXPECT_EQ(m.Find(2), nullptr);
  EXPECT_NE(m.Find(3), nullptr);
  EXPECT_NE(m.Find(4), nullptr);
  EXPECT_EQ(m.evictions(), 3u);
  m.Erase(4);
  EXPECT_EQ(m.bytes(), Map::kNodeBytes + 2 * Map::kRecordBytes + 100) << "erase gives back node and extra";
}

TEST(ExpiringMap, WhatWasJustWrittenIsNeverEvicted) {
  Map m(1000, 4 * (Map::kNodeBytes + Map::kRecordBytes), 1000);
  m.Insert(1, "a", 0, 0);
  m.Insert(2, "b", 0, 1);
  // Larger than the whole budget on its own: everything else goes, it stays.
  m.Insert(3, "huge", 1 << 20, 2);
  EXPECT_EQ(m.size(), 1u);
  ASSERT_NE(m.Find(3), nullptr);
  // Growing the oldest entry evicts newer ones, never itself; it keeps its place in expiry order.
  Map g(1000, 3 * (Map::kNodeBytes + Map::kRecordBytes) + 50, 100);
  g.Insert(10, "oldest", 0, 0);
  g.Insert(11, "x", 0, 10);
  g.Insert(12, "y", 0, 20);
  g.SetExtra(10, 50 + Map::kNodeBytes);
  EXPECT_NE(g.Find(10), nullptr);
  EXPECT_EQ(g.Find(11), nullptr);
  EXPECT_NE(g.Find(12), nullptr);
  g.Expire(100);
  EXPECT_EQ(g.Find(10), nullptr) << "still expires first";
  EXPECT_NE(g.Find(12), nullptr);
}

TEST(ExpiringMap, StaleRecordsOfAReplacedKeyStayBounded) {
  Map m(1000, SIZE_MAX, 1000);
  for (int i = 0; i < 10000; ++i) m.Insert(7, "v", 0, 0);
  EXPECT_EQ(m.size(), 1u);
  EXPECT_LE(m.bytes(), Map::kNodeBytes + 70 * Map::kRecordBytes);
}

// Counts what the containers allocate.
template <typename T>
struct Counting {
  using value_type = T;
  size_t* live;
  explicit Counting(size_t* l) : live(l) {}
  template <typename U>
  Counting(const Counting<U>& o) : live(o.live) {}
  T* allocate(size_t n) {
    *live += n * sizeof(T);
    return std::allocator<T>().allocate(n);
  }
  void deallocate(T* p, size_t n) {
    *live -= n * sizeof(T);
    std::allocator<T>().deallocate(p, n);
  }
  template <typename U>
  bool operator==(const Counting<U>& o) const { return live == o.live; }
};

struct Key {
  std::array<uint8_t, 20> addr{};
  uint16_t mid = 0;
  bool operator==(const Key&) const = default;
};
struct KeyHash {
  size_t operator()(const Key& k) const { return k.mid * 2654435761u ^ k.addr[0]; }
};
struct NoexceptKeyHash {  // libstdc++ caches no hash code in the node
  size_t operator()(const Key& k) const noexcept { return k.mid * 2654435761u ^ k.addr[0]; }
};
struct Value {
  std::array<uint8_t, 9> token{};
  std::string reply;
  uint64_t pending = 0;
};

template <typename H>
void CheckBytesAccountForWhatTheMapReallyHolds() {
  size_t live = 0;
  using Counted = ExpiringMap<Key, Value, H, Counting<std::byte>>;
  const size_t n = 20000;
  size_t out_of_line = 0;
  {
    Counted m(SIZE_MAX, SIZE_MAX, 1000, Counting<std::byte>(&live));
    for (size_t i = 0; i < n; ++i) {
      Key k;
      k.addr[0] = static_cast<uint8_t>(i >> 16);
      k.addr[1] = static_cast<uint8_t>(i >> 8);
      k.mid = static_cast<uint16_t>(i);
      Value v;
      v.reply.assign(40 + i % 50, 'r');
      const size_t extra = HeapBytes(v.reply);
      out_of_line += extra;
      m.Insert(k, std::move(v), extra, i);
    }
    ASSERT_EQ(m.size(), n);
    const size_t accounted = m.bytes() - out_of_line;
    // The estimate adds malloc's header and rounding, which no allocator hook sees, and counts
    // two bucket slots per entry: it may exceed what the containers asked for by up to 32 bytes
    // per entry, never fall short of it.
    EXPECT_GE(accounted, live) << "per entry: accounted " << accounted / n << " B, allocated " << live / n << " B";
    EXPECT_LE(accounted, live + n * 32 + 4096) << "per entry: accounted " << accounted / n << " B, allocated "
                                               << live / n << " B";
    std::printf("ExpiringMap: %zu B per entry accounted, %zu B allocated by the containers (+ value heap)\n",
                accounted / n, live / n);
  }
  EXPECT_EQ(live, 0u) << "everything given back";
}

TEST(ExpiringMap, BytesAccountForWhatTheMapReallyHolds) { CheckBytesAccountForWhatTheMapReallyHolds<KeyHash>(); }

TEST(ExpiringMap, BytesAccountForANodeWithoutCachedHash) {
  static_assert(ExpiringMap<Key, Value, NoexceptKeyHash>::kNodeBytes < ExpiringMap<Key, Value, KeyHash>::kNodeBytes);
  CheckBytesAccountForWhatTheMapReallyHolds<NoexceptKeyHash>();
}

}  // namespace
}  // namespace tether::coap
