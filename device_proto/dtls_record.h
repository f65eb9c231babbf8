// What DtlsServer reads from a raw DTLS 1.2 record (RFC 6347) before any mbedTLS context is
// spent on its sender: whether it is a ClientHello, and whether that hello may carry a cookie;
// and the most a record of the offered suites adds to its plaintext. Internal to device_proto.
// Stateless and allocation-free: any thread. Truncated or odd input gives the cautious answer
// (not a hello; may carry a cookie), never a read past the span.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>

namespace tether::coap {

// The largest record overhead of DtlsServer's suites (CCM_8, CCM, GCM, CBC-SHA256):
// header 13 + CBC IV 16 + HMAC-SHA256 32 + padding 16.
inline constexpr size_t kMaxRecordExpansion = 13 + 16 + 32 + 16;

// A DTLS record carrying a ClientHello in epoch 0: the only thing an unknown peer may send.
inline bool LooksLikeClientHello(std::span<const uint8_t> b) {
  return b.size() >= 25 && b[0] == 22 /* handshake */ && b[1] == 0xFE && b[3] == 0 && b[4] == 0 &&
         b[13] == 1 /* client_hello */;
}

// False only for a whole ClientHello with an empty cookie (RFC 6347 §4.2.1), which is answered
// statelessly; anything else may start a handshake and so needs a place.
inline bool MayCarryCookie(std::span<const uint8_t> b) {
  constexpr size_t kBody = 13 + 12;                 // record header, handshake header
  constexpr size_t kSessionIdLen = kBody + 2 + 32;  // after client_version and random
  const bool whole = b.size() > 24 && b[19] == 0 && b[20] == 0 && b[21] == 0;  // fragment_offset 0
  if (!whole || b.size() <= kSessionIdLen) return true;
  const size_t cookie_len = kSessionIdLen + 1 + b[kSessionIdLen];
  return cookie_len >= b.size() || b[cookie_len] != 0;
}

}  // namespace tether::coap
