#include "util/base64.h"

#include <mbedtls/base64.h>

namespace tether::util {

namespace {
const unsigned char* Bytes(std::string_view s) { return reinterpret_cast<const unsigned char*>(s.data()); }
}  // namespace

std::string Base64Encode(std::string_view bytes) {
  size_t len = 0;
  mbedtls_base64_encode(nullptr, 0, &len, Bytes(bytes), bytes.size());  // len: the size needed
  std::string out(len, '\0');
  mbedtls_base64_encode(reinterpret_cast<unsigned char*>(out.data()), out.size(), &len, Bytes(bytes), bytes.size());
  out.resize(len);  // without the NUL mbedTLS counts in the size needed
  return out;
}

std::optional<std::string> Base64Decode(std::string_view text) {
  size_t len = 0;
  int rc = mbedtls_base64_decode(nullptr, 0, &len, Bytes(text), text.size());
  if (rc == MBEDTLS_ERR_BASE64_INVALID_CHARACTER) return std::nullopt;
  std::string out(len, '\0');
  if (mbedtls_base64_decode(reinterpret_cast<unsigned char*>(out.data()), out.size(), &len, Bytes(text),
                            text.size()) != 0) {
    return std::nullopt;
  }
  out.resize(len);
  return out;
}

std::string Base64UrlEncode(std::string_view bytes) {
  std::string out = Base64Encode(bytes);
  while (!out.empty() && out.back() == '=') out.pop_back();
  for (char& c : out) c = c == '+' ? '-' : c == '/' ? '_' : c;
  return out;
}

std::optional<std::string> Base64UrlDecode(std::string_view text) {
  std::string standard(text);
  for (char& c : standard) {
    if (c == '+' || c == '/') return std::nullopt;  // the other alphabet
    c = c == '-' ? '+' : c == '_' ? '/' : c;
  }
  while (standard.size() % 4 != 0) standard.push_back('=');
  return Base64Decode(standard);
}

}  // namespace tether::util
