// TreeRecency: in-memory LRU clock of DataTree roots, shared by the loop and the writer thread.
//
// Not persisted: after a restart all roots are equally old (ties broken by name). Reads
// (DataTree::Get) and writes both touch the root they use.
#pragma once

#include <cstdint>
#include <mutex>
#include <string>
#include <string_view>
#include <unordered_map>

namespace tether::store {

class TreeRecency {
 public:
  void Touch(std::string_view root) {
    std::lock_guard lock(mu_);
    last_use_[std::string(root)] = ++clock_;
  }
  uint64_t LastUse(const std::string& root) const {
    std::lock_guard lock(mu_);
    auto it = last_use_.find(root);
    return it == last_use_.end() ? 0 : it->second;
  }
  void Forget(const std::string& root) {
    std::lock_guard lock(mu_);
    last_use_.erase(root);
  }

 private:
  mutable std::mutex mu_;
  uint64_t clock_ = 0;
  std::unordered_map<std::string, uint64_t> last_use_;
};

}  // namespace tether::store
