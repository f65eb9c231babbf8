#include "device_proto/option.h"

namespace tether::coap {

bool IsRecognized(uint16_t number, size_t length) {
  switch (number) {
    case opt::kUriHost: return length >= 1 && length <= 255;
    case opt::kObserve: return length <= 3;
    case opt::kUriPort: return length <= 2;
    case opt::kUriPath: return length <= 255;
    case opt::kContentFormat: return length <= 2;
    case opt::kMaxAge: return length <= 4;
    case opt::kUriQuery: return length <= 255;
    case opt::kAccept: return length <= 2;
    case opt::kBlock2:
    case opt::kBlock1: return length <= 3;
    case opt::kSize2:
    case opt::kSize1: return length <= 4;
    default: return false;
  }
}

std::optional<uint32_t> DecodeUint(std::span<const uint8_t> value) {
  if (value.size() > 4) return std::nullopt;
  uint32_t v = 0;
  for (uint8_t b : value) v = (v << 8) | b;
  return v;
}

size_t EncodeUint(uint32_t v, uint8_t out[4]) {
  size_t n = v > 0xFFFFFF ? 4 : v > 0xFFFF ? 3 : v > 0xFF ? 2 : v > 0 ? 1 : 0;
  for (size_t i = 0; i < n; ++i) out[i] = static_cast<uint8_t>(v >> (8 * (n - 1 - i)));
  return n;
}

std::optional<Block> Block::Decode(std::span<const uint8_t> value) {
  if (value.size() > 3) return std::nullopt;
  uint32_t v = *DecodeUint(value);
  Block b;
  b.szx = v & 7;
  if (b.szx == 7) return std::nullopt;
  b.more = (v & 8) != 0;
  b.num = v >> 4;
  return b;
}

}  // namespace tether::coap
