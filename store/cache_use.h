// CacheUse: what the loop thread tells the store's writer about use of the local copy (internal).
//
// Reads (DataTree::Get) record the cache units they read; KeepCached holds name subtrees that
// must not be evicted while held (observed paths: their observers are answered from the tree).
// The writer drains both at every group commit (BatchApplier::EvictTree): read units get a new
// last-use stamp, released holds make what they protected evictable again. Thread-safe; nothing
// here is persisted (reads not yet drained when the process stops are not remembered).
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <string_view>
#include <unordered_set>
#include <utility>
#include <vector>

#include "util/mutex.h"

namespace tether::store {

class CacheUse {
 public:
  explicit CacheUse(uint32_t unit_depth) : unit_depth_(unit_depth) {}

  uint32_t unit_depth() const { return unit_depth_; }

  void TouchRead(std::string_view unit) {
    util::MutexLock lock(&mu_);
    reads_.emplace(unit);
  }
  std::vector<std::string> TakeReads() {
    util::MutexLock lock(&mu_);
    std::vector<std::string> out(reads_.begin(), reads_.end());
    reads_.clear();
    return out;
  }

  // Counted: a key held twice is kept until released twice.
  void Hold(const std::string& key) {
    util::MutexLock lock(&mu_);
    ++holds_[key];
  }
  void Release(const std::string& key) {
    util::MutexLock lock(&mu_);
    auto it = holds_.find(key);
    if (it == holds_.end()) return;
    if (--it->second == 0) {
      holds_.erase(it);
      released_.push_back(key);
    }
  }
  bool Held(const std::string& key) const {
    util::MutexLock lock(&mu_);
    return holds_.count(key) > 0;
  }
  bool HeldBelow(const std::string& key) const {  // some held key lies strictly below `key`
    util::MutexLock lock(&mu_);
    if (key.empty()) return holds_.size() > holds_.count(key);
    const std::string prefix = key + "/";
    auto it = holds_.lower_bound(prefix);
    return it != holds_.end() && it->first.compare(0, prefix.size(), prefix) == 0;
  }
  // Keys whose last hold went since the previous call and are not held again.
  std::vector<std::string> TakeReleased() {
    util::MutexLock lock(&mu_);
    std::vector<std::string> out;
    for (std::string& key : released_) {
      if (!holds_.count(key)) out.push_back(std::move(key));
    }
    released_.clear();
    return out;
  }

 private:
  const uint32_t unit_depth_;
  mutable util::Mutex mu_;
  std::unordered_set<std::string> reads_ GUARDED_BY(mu_);
  std::map<std::string, int> holds_ GUARDED_BY(mu_);
  std::vector<std::string> released_ GUARDED_BY(mu_);
};

}  // namespace tether::store
