// SessionTokens: a session's short token, long token and credential fingerprint in one heap block.
//
// Three std::strings cost 96 bytes inline and two heap blocks (a 32-char token and a 32-byte
// fingerprint are past the 15-char inline buffer: 48 + 48 B chunks); this is 16 bytes inline and
// one exact-size block (72 bytes: an 80 B chunk). Every idle device keeps one for hours.
// Used with its Session: loop thread only; a value type (copies copy the block).
//
// Invariants:
// - block_ holds the three parts back to back, lengths in len_; null iff all three are empty.
// - Each part is shorter than 64 KiB: the tokens are LMDB keys (≤ 511 bytes, store/), a
//   fingerprint is a SHA-256 (32 bytes). A longer one throws std::length_error.
#pragma once

#include <cstdint>
#include <cstring>
#include <memory>
#include <stdexcept>
#include <string_view>

namespace tether {

class SessionTokens {
 public:
  SessionTokens() = default;
  SessionTokens(std::string_view short_token, std::string_view long_token, std::string_view credential) {
    const std::string_view parts[3] = {short_token, long_token, credential};
    size_t total = 0;
    for (int i = 0; i < 3; ++i) {
      if (parts[i].size() > UINT16_MAX) throw std::length_error("session token too long");
      len_[i] = static_cast<uint16_t>(parts[i].size());
      total += parts[i].size();
    }
    if (total == 0) return;
    block_.reset(new char[total]);
    char* p = block_.get();
    for (const std::string_view& part : parts) {
      if (!part.empty()) std::memcpy(p, part.data(), part.size());
      p += part.size();
    }
  }
  SessionTokens(const SessionTokens& o) : SessionTokens(o.short_token(), o.long_token(), o.credential()) {}
  SessionTokens& operator=(const SessionTokens& o) {
    if (this != &o) *this = SessionTokens(o);
    return *this;
  }
  SessionTokens(SessionTokens&& o) noexcept : block_(std::move(o.block_)) {
    std::memcpy(len_, o.len_, sizeof len_);
    std::memset(o.len_, 0, sizeof o.len_);
  }
  SessionTokens& operator=(SessionTokens&& o) noexcept {
    block_ = std::move(o.block_);
    std::memcpy(len_, o.len_, sizeof len_);
    std::memset(o.len_, 0, sizeof o.len_);
    return *this;
  }

  std::string_view short_token() const { return {block_.get(), len_[0]}; }
  std::string_view long_token() const { return {block_.get() + len_[0], len_[1]}; }
  std::string_view credential() const { return {block_.get() + len_[0] + len_[1], len_[2]}; }

 private:
  std::unique_ptr<char[]> block_;
  uint16_t len_[3] = {0, 0, 0};
};

}  // namespace tether
