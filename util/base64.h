// Base64 (RFC 4648 section 4, padded) and base64url (section 5, unpadded, as JWTs use it), by
// mbedTLS (mbedtls_base64_encode/decode); base64url is the same code with the alphabet's two last
// characters swapped ('+' '/' <-> '-' '_') around it. The one base64: binary values on their way
// to the cloud (gateway/value_codec.h) and JWT parts (upstream/jwt.h).
// Stateless: any thread. Encoding cannot fail (throws std::bad_alloc only); decoding returns
// nullopt on text that is not base64 of its kind.
#pragma once

#include <optional>
#include <string>
#include <string_view>

namespace tether::util {

std::string Base64Encode(std::string_view bytes);                 // with '=' padding
std::optional<std::string> Base64Decode(std::string_view text);   // padding required
std::string Base64UrlEncode(std::string_view bytes);              // '-' '_', no padding
std::optional<std::string> Base64UrlDecode(std::string_view text);  // padding optional

}  // namespace tether::util
