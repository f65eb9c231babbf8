// host:port text: the one parser and formatter for a host and port in one string — listen
// addresses in the configuration, tetherctl's --admin, the admin API's Host header, and the
// device addresses the store keeps (device_proto/address.h).
//
// Forms: "host", "host:port", "[ipv6]", "[ipv6]:port". Unbracketed text with more than one ':' is
// a bare IPv6 literal: all host, no port (as in an HTTP Host header). What a missing or empty
// host or port means is the caller's rule. Stateless: any thread.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace tether::util {

struct HostPortText {
  std::string host;                 // without the brackets
  std::optional<std::string> port;  // the text after the separating ':' ("" for "host:"); nullopt: none
};

// nullopt: a '[' without its ']', or a ']' followed by anything but ":port".
std::optional<HostPortText> SplitHostPort(std::string_view text);
// 1 to 5 decimal digits and nothing else, at most 65535 (0 included).
std::optional<uint16_t> ParsePort(std::string_view digits);
// "host:port", or "[host]:port" when the host holds a ':' (an IPv6 literal).
std::string FormatHostPort(std::string_view host, uint16_t port);

}  // namespace tether::util
