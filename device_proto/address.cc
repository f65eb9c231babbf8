#include "device_proto/address.h"

#include <arpa/inet.h>

#include <cstdio>
#include <cstring>

#include "util/host_port.h"

namespace tether::coap {

Address Address::FromSockaddr(const sockaddr* sa) {
  Address a;
  if (sa == nullptr) return a;
  if (sa->sa_family == AF_INET) {
    const auto* in = reinterpret_cast<const sockaddr_in*>(sa);
    std::memcpy(a.ip.data(), &in->sin_addr, 4);
    a.port = ntohs(in->sin_port);
    a.family = AF_INET;
  } else if (sa->sa_family == AF_INET6) {
    const auto* in6 = reinterpret_cast<const sockaddr_in6*>(sa);
    std::memcpy(a.ip.data(), &in6->sin6_addr, 16);
    a.port = ntohs(in6->sin6_port);
    a.family = AF_INET6;
  }
  return a;
}

socklen_t Address::ToSockaddr(sockaddr_storage& out) const {
  std::memset(&out, 0, sizeof out);
  if (family == AF_INET) {
    auto* in = reinterpret_cast<sockaddr_in*>(&out);
    in->sin_family = AF_INET;
    in->sin_port = htons(port);
    std::memcpy(&in->sin_addr, ip.data(), 4);
    return sizeof(sockaddr_in);
  }
  if (family == AF_INET6) {
    auto* in6 = reinterpret_cast<sockaddr_in6*>(&out);
    in6->sin6_family = AF_INET6;
    in6->sin6_port = htons(port);
    std::memcpy(&in6->sin6_addr, ip.data(), 16);
    return sizeof(sockaddr_in6);
  }
  return 0;
}

std::string Address::to_string() const {
  char buf[INET6_ADDRSTRLEN] = "?";
  inet_ntop(family == AF_INET6 ? AF_INET6 : AF_INET, ip.data(), buf, sizeof buf);
  char out[INET6_ADDRSTRLEN + 16];
  std::snprintf(out, sizeof out, family == AF_INET6 ? "%s[%s]:%u" : "%s%s:%u", secure ? "dtls:" : "", buf,
                static_cast<unsigned>(port));
  return out;
}

Address Address::Parse(std::string_view s) {
  Address a;
  const bool secure = s.substr(0, 5) == "dtls:";
  if (secure) s.remove_prefix(5);
  std::optional<tether::util::HostPortText> split = tether::util::SplitHostPort(s);
  if (!split || !split->port) return a;
  std::optional<uint16_t> port = tether::util::ParsePort(*split->port);
  if (!port) return a;
  const std::string& host = split->host;
  if (inet_pton(AF_INET, host.c_str(), a.ip.data()) == 1) {
    a.family = AF_INET;
  } else if (inet_pton(AF_INET6, host.c_str(), a.ip.data()) == 1) {
    a.family = AF_INET6;
  } else {
    return Address{};
  }
  a.port = *port;
  a.secure = secure ? 1 : 0;
  return a;
}

size_t AddressHash::operator()(const Address& a) const {
  // FNV-1a over the significant bytes.
  uint64_t h = 1469598103934665603ull;
  auto mix = [&](uint8_t b) { h = (h ^ b) * 1099511628211ull; };
  const size_t n = a.family == AF_INET6 ? 16 : 4;
  for (size_t i = 0; i < n; ++i) mix(a.ip[i]);
  mix(static_cast<uint8_t>(a.port));
  mix(static_cast<uint8_t>(a.port >> 8));
  mix(a.secure);
  return static_cast<size_t>(h ^ (h >> 32));
}

}  // namespace tether::coap
