// CborReader: the minimal CBOR reading sdk_fleet needs of what the servers it measures answer
// (maps of text keys, text, unsigned integers, floats), without allocating per datagram.
// `ok` turns false on malformed input; definite-length text and byte strings only.
// Single-threaded value type over a borrowed buffer.
#pragma once

#include <cstdint>
#include <cstring>
#include <optional>
#include <span>
#include <string>
#include <string_view>

namespace tether::bench {

struct CborReader {
  std::span<const uint8_t> b;
  size_t i = 0;
  bool ok = true;
  // Reads an item's head: major type and argument; false at the end or on a break (0xFF).
  bool Head(uint8_t* major, uint64_t* arg, bool* indefinite) {
    if (i >= b.size() || b[i] == 0xFF) return false;
    const uint8_t ib = b[i++];
    *major = ib >> 5;
    const uint8_t info = ib & 31;
    *indefinite = info == 31;
    *arg = 0;
    if (info < 24 || info == 31) {
      *arg = info;
      return true;
    }
    const size_t n = info == 24 ? 1 : info == 25 ? 2 : info == 26 ? 4 : info == 27 ? 8 : 0;
    if (n == 0 || i + n > b.size()) return ok = false;
    for (size_t k = 0; k < n; ++k) *arg = *arg << 8 | b[i++];
    return true;
  }
  bool Skip() {
    uint8_t major;
    uint64_t arg;
    bool indef;
    if (!Head(&major, &arg, &indef)) return false;
    switch (major) {
      case 2:
      case 3:
        if (indef) return ok = false;  // never sent by the servers measured here
        if (i + arg > b.size()) return ok = false;
        i += arg;
        return true;
      case 4:
      case 5: {
        const uint64_t items = major == 5 ? 2 * arg : arg;
        if (indef) {
          while (Skip()) {}
          return ok && i < b.size() && b[i++] == 0xFF;
        }
        for (uint64_t k = 0; k < items; ++k)
          if (!Skip()) return false;
        return true;
      }
      case 6: return Skip();
      default: return true;  // uints, negative ints, simple values and floats: the head is all
    }
  }
  // The value of text key `key` in the top-level map: where it starts (index), or nullopt.
  std::optional<size_t> Find(std::string_view key) {
    uint8_t major;
    uint64_t arg;
    bool indef;
    i = 0;
    if (!Head(&major, &arg, &indef) || major != 5) return std::nullopt;
    for (uint64_t k = 0; indef || k < arg; ++k) {
      uint8_t km;
      uint64_t klen;
      bool kindef;
      if (!Head(&km, &klen, &kindef)) return std::nullopt;
      if (km != 3 || kindef || i + klen > b.size()) return std::nullopt;
      const std::string_view name(reinterpret_cast<const char*>(b.data() + i), klen);
      i += klen;
      if (name == key) return i;
      if (!Skip()) return std::nullopt;
    }
    return std::nullopt;
  }
  std::optional<uint64_t> FindUint(std::string_view key) {
    if (!Find(key)) return std::nullopt;
    uint8_t major;
    uint64_t arg;
    bool indef;
    if (!Head(&major, &arg, &indef) || major != 0) return std::nullopt;
    return arg;
  }
  std::optional<std::string> FindText(std::string_view key) {
    if (!Find(key)) return std::nullopt;
    uint8_t major;
    uint64_t arg;
    bool indef;
    if (!Head(&major, &arg, &indef) || major != 3 || indef || i + arg > b.size()) return std::nullopt;
    return std::string(reinterpret_cast<const char*>(b.data() + i), arg);
  }
};

}  // namespace tether::bench
