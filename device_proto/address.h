// A compact UDP peer address (IPv4 or IPv6 + port), hashable, 20 bytes.
// IPv4 addresses are stored in the first 4 bytes of `ip`. `secure` marks a peer
// reached through a DTLS session: it never shares engine or session state with
// a plaintext peer at the same ip:port.
#pragma once

#include <netinet/in.h>
#include <sys/socket.h>

#include <array>
#include <cstdint>
#include <string>
#include <string_view>

namespace tether::coap {

struct Address {
  std::array<uint8_t, 16> ip{};
  uint16_t port = 0;  // host byte order
  uint8_t family = 0;  // AF_INET or AF_INET6
  uint8_t secure = 0;  // 1: datagrams are carried by a DTLS session

  static Address FromSockaddr(const sockaddr* sa);  // family 0 if unsupported
  // Fills `out`; returns its length (0 if family is unset).
  socklen_t ToSockaddr(sockaddr_storage& out) const;
  std::string to_string() const;  // "1.2.3.4:5683", "[::1]:5683"; "dtls:" prefix if secure
  // Inverse of to_string(); family 0 if `s` is not one of its forms.
  static Address Parse(std::string_view s);
  bool operator==(const Address&) const = default;
};

struct AddressHash {
  size_t operator()(const Address& a) const;
};

}  // namespace tether::coap
