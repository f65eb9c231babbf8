// SessionIndex: an open-addressing hash index of Session pointers, looked up by a key that each
// session holds itself (a token, its address, its identity). Used by SessionTable only.
//
// Why not std::unordered_map<std::string, Session*>: that costs a heap node, a bucket and a copy
// of the key per session and index (~100-180 bytes at 100k sessions, ~540 B for the table's five
// indexes); this costs one pointer and one tag byte per slot (~12 B per session and index at the
// 4/5 maximum load).
//
// Rules:
// - Traits::KeyOf(const Session&) gives the key (a view into the session); Traits::Hash hashes a
//   key; keys compare with ==. A session's key must not change while it is in the index
//   (SessionTable erases and re-inserts it around a change).
// - Several sessions may share a key (ForEachMatch visits all of them); Find returns any one.
// - Linear probing; a slot's tag is 0 when empty, else 0x80 | 7 bits of the hash, so most probes
//   compare a byte, not a key. Erase shifts the rest of the cluster back (no tombstones).
// - Pointers are not owned. Loop thread only (as SessionTable).
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <utility>

namespace tether {

struct Session;  // gateway/session_table.h

template <typename Traits>
class SessionIndex {
 public:
  using Key = typename Traits::Key;

  SessionIndex() = default;
  SessionIndex(const SessionIndex&) = delete;
  SessionIndex& operator=(const SessionIndex&) = delete;

  size_t size() const { return size_; }

  // Room for n sessions without growing.
  void Reserve(size_t n) {
    size_t cap = 16;
    while (cap * kMaxLoadNum < n * kMaxLoadDen) cap *= 2;
    if (cap > cap_) Rehash(cap);
  }

  void Insert(Session* s) {
    if ((size_ + 1) * kMaxLoadDen > cap_ * kMaxLoadNum) Rehash(cap_ ? cap_ * 2 : 16);
    Place(s, Traits::Hash(Traits::KeyOf(*s)));
    ++size_;
  }

  // Removes this session (not another with the same key); false if it is not in the index.
  bool Erase(const Session* s) {
    if (!cap_) return false;
    const size_t h = Traits::Hash(Traits::KeyOf(*s));
    for (size_t i = h & (cap_ - 1);; i = (i + 1) & (cap_ - 1)) {
      if (!tags_[i]) return false;
      if (slots_[i] == s) {
        EraseAt(i);
        return true;
      }
    }
  }

  Session* Find(const Key& k) const {
    Session* found = nullptr;
    ForEachMatch(k, [&](Session* s) {
      found = s;
      return false;
    });
    return found;
  }

  // fn(Session*) for every session with key k, until fn returns false.
  template <typename Fn>
  void ForEachMatch(const Key& k, Fn&& fn) const {
    if (!cap_) return;
    const size_t h = Traits::Hash(k);
    const uint8_t tag = TagOf(h);
    for (size_t i = h & (cap_ - 1); tags_[i]; i = (i + 1) & (cap_ - 1)) {
      if (tags_[i] == tag && Traits::KeyOf(*slots_[i]) == k && !fn(slots_[i])) return;
    }
  }

  // fn(Session*) for every session, in no particular order. fn must not change the index.
  template <typename Fn>
  void ForEach(Fn&& fn) const {
    for (size_t i = 0; i < cap_; ++i) {
      if (tags_[i]) fn(slots_[i]);
    }
  }

 private:
  // Grows at 4/5 full: linear probing stays short (~3 slots per hit) and at 100k sessions the
  // index has 131,072 slots (9 bytes each).
  static constexpr size_t kMaxLoadNum = 4, kMaxLoadDen = 5;

  static uint8_t TagOf(size_t h) { return static_cast<uint8_t>(0x80 | (h >> (sizeof(size_t) * 8 - 7))); }

  void Place(Session* s, size_t h) {
    size_t i = h & (cap_ - 1);
    while (tags_[i]) i = (i + 1) & (cap_ - 1);
    tags_[i] = TagOf(h);
    slots_[i] = s;
  }

  // Backward-shift deletion: later members of the cluster that may live at i move there.
  void EraseAt(size_t i) {
    const size_t mask = cap_ - 1;
    for (size_t j = (i + 1) & mask; tags_[j]; j = (j + 1) & mask) {
      const size_t home = Traits::Hash(Traits::KeyOf(*slots_[j])) & mask;
      if (((j - home) & mask) >= ((j - i) & mask)) {
        tags_[i] = tags_[j];
        slots_[i] = slots_[j];
        i = j;
      }
    }
    tags_[i] = 0;
    slots_[i] = nullptr;
    --size_;
  }

  void Rehash(size_t cap) {
    std::unique_ptr<uint8_t[]> old_tags = std::move(tags_);
    std::unique_ptr<Session*[]> old_slots = std::move(slots_);
    const size_t old_cap = cap_;
    tags_ = std::make_unique<uint8_t[]>(cap);  // zeroed: every slot empty
    slots_ = std::make_unique<Session*[]>(cap);
    cap_ = cap;
    for (size_t i = 0; i < old_cap; ++i) {
      if (old_tags[i]) Place(old_slots[i], Traits::Hash(Traits::KeyOf(*old_slots[i])));
    }
  }

  std::unique_ptr<uint8_t[]> tags_;
  std::unique_ptr<Session*[]> slots_;
  size_t cap_ = 0;  // a power of two, or 0
  size_t size_ = 0;
};

}  // namespace tether
