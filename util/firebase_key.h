// The Firebase key rule: what one key (one segment of a database path) may be. The one copy of
// the rule; the gateway (device writes, configuration, route patterns) and the store (tree paths)
// both ask it.
//
// Rule (docs/device-protocol.md, /work/shared/protocol/firebase-rest.md): not empty; at most
// kMaxFirebaseKeyBytes bytes of UTF-8; none of . $ # [ ] / nor an ASCII control character
// (0x00-0x1f, 0x7f). Bytes >= 0x80 (UTF-8) are allowed as they are.
// Stateless: any thread. No allocation except for a diagnostic.
#pragma once

#include <cstddef>
#include <string>
#include <string_view>

namespace tether::util {

// Firebase's limit on one key, in bytes (UTF-8). Not LMDB's key limit (store/apply_context.h).
inline constexpr size_t kMaxFirebaseKeyBytes = 768;

// True for a byte no key may hold: . $ # [ ] / and the ASCII control characters.
constexpr bool IsForbiddenKeyByte(unsigned char c) {
  return c < 0x20 || c == 0x7f || c == '.' || c == '$' || c == '#' || c == '[' || c == ']' || c == '/';
}

// "" when `key` is a valid key, else a short diagnostic for a 4.00 payload or a config error
// ("empty key", "key longer than 768 bytes", "key contains a control character",
// "key '<first 40 bytes>' contains one of . $ # [ ] /"), naming the first fault found.
std::string CheckFirebaseKey(std::string_view key);
inline bool IsFirebaseKey(std::string_view key) { return CheckFirebaseKey(key).empty(); }

}  // namespace tether::util
