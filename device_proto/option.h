// CoAP option numbers (RFC 7252 §5.10, RFC 7641, RFC 7959) and the value
// formats the engine needs: uint (minimal big-endian) and Block1/Block2.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>

namespace tether::coap {

namespace opt {
inline constexpr uint16_t kIfMatch = 1;
inline constexpr uint16_t kUriHost = 3;
inline constexpr uint16_t kETag = 4;
inline constexpr uint16_t kIfNoneMatch = 5;
inline constexpr uint16_t kObserve = 6;
inline constexpr uint16_t kUriPort = 7;
inline constexpr uint16_t kUriPath = 11;
inline constexpr uint16_t kContentFormat = 12;
inline constexpr uint16_t kMaxAge = 14;
inline constexpr uint16_t kUriQuery = 15;
inline constexpr uint16_t kAccept = 17;
inline constexpr uint16_t kBlock2 = 23;
inline constexpr uint16_t kBlock1 = 27;
inline constexpr uint16_t kSize2 = 28;
inline constexpr uint16_t kSize1 = 60;
}  // namespace opt

// Odd option numbers are critical (RFC 7252 §5.4.1).
constexpr bool IsCritical(uint16_t number) { return (number & 1) != 0; }

// Options that may occur more than once (RFC 7252 Table 4: If-Match, ETag,
// Location-Path, Uri-Path, Uri-Query, Location-Query).
constexpr bool IsRepeatable(uint16_t number) {
  return number == 1 || number == 4 || number == 8 || number == 11 || number == 15 || number == 20;
}

// True if the engine understands `number` and `length` is within the option's
// defined range (RFC 7252 §5.4.3: a bad length makes the option unrecognized).
bool IsRecognized(uint16_t number, size_t length);

// Decodes a uint option value (leading zeros allowed); nullopt if longer than 4 bytes.
std::optional<uint32_t> DecodeUint(std::span<const uint8_t> value);
// Writes `v` in the minimal number of bytes into out[0..4); returns the length (0 for v == 0).
size_t EncodeUint(uint32_t v, uint8_t out[4]);

// Block1/Block2 value (RFC 7959 §2.2). Block size = 16 << szx, szx in 0..6.
struct Block {
  uint32_t num = 0;  // < 2^20
  bool more = false;
  uint8_t szx = 6;

  size_t size() const { return size_t{16} << szx; }
  uint32_t encode() const { return (num << 4) | (more ? 8u : 0u) | szx; }
  // nullopt for szx 7 (reserved) or a value longer than 3 bytes.
  static std::optional<Block> Decode(std::span<const uint8_t> value);
};

}  // namespace tether::coap
