// Hex text of bytes: the one encoder (lower-case, two digits a byte) and decoder. Used for HMAC
// tokens and derived DTLS keys, 0x keys in the DTLS keys file, the store's instance id and the
// observer records the gateway persists. Stateless: any thread.
#pragma once

#include <optional>
#include <string>
#include <string_view>

namespace tether::util {

std::string HexEncode(std::string_view bytes);
// nullopt unless `hex` is an even number of hex digits (either case).
std::optional<std::string> HexDecode(std::string_view hex);

}  // namespace tether::util
