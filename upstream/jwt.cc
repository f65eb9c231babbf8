#include "upstream/jwt.h"

#include <mbedtls/ctr_drbg.h>
#include <mbedtls/entropy.h>
#include <mbedtls/pk.h>
#include <mbedtls/sha256.h>

#include <vector>

#include "util/base64.h"

namespace tether::upstream {

std::optional<std::string> SignJwtRs256(const nlohmann::json& claims, std::string_view pem,
                                        std::string* error) {
  auto fail = [&](const char* why) -> std::optional<std::string> {
    if (error) *error = why;
    return std::nullopt;
  };
  std::string input = util::Base64UrlEncode(R"({"alg":"RS256","typ":"JWT"})") + "." + util::Base64UrlEncode(claims.dump());
  unsigned char hash[32];
  mbedtls_sha256_ret(reinterpret_cast<const unsigned char*>(input.data()), input.size(), hash, 0);

  std::string key(pem);  // PEM parsing needs the terminating NUL counted in the length
  mbedtls_pk_context pk;
  mbedtls_entropy_context entropy;
  mbedtls_ctr_drbg_context drbg;
  mbedtls_pk_init(&pk);
  mbedtls_entropy_init(&entropy);
  mbedtls_ctr_drbg_init(&drbg);
  std::optional<std::string> out;
  std::vector<unsigned char> sig(MBEDTLS_PK_SIGNATURE_MAX_SIZE);
  size_t sig_len = 0;
  if (mbedtls_pk_parse_key(&pk, reinterpret_cast<const unsigned char*>(key.c_str()), key.size() + 1,
                           nullptr, 0) != 0) {
    out = fail("private key is not a parseable PEM key");
  } else if (!mbedtls_pk_can_do(&pk, MBEDTLS_PK_RSA)) {
    out = fail("private key is not RSA");
  } else if (mbedtls_ctr_drbg_seed(&drbg, mbedtls_entropy_func, &entropy, nullptr, 0) != 0) {
    out = fail("cannot seed the random generator");
  } else if (mbedtls_pk_sign(&pk, MBEDTLS_MD_SHA256, hash, sizeof hash, sig.data(), &sig_len,
                             mbedtls_ctr_drbg_random, &drbg) != 0) {
    out = fail("RSA signing failed");
  } else {
    out = input + "." + util::Base64UrlEncode(std::string_view(reinterpret_cast<char*>(sig.data()), sig_len));
  }
  mbedtls_ctr_drbg_free(&drbg);
  mbedtls_entropy_free(&entropy);
  mbedtls_pk_free(&pk);
  std::fill(key.begin(), key.end(), '\0');
  return out;
}

}  // namespace tether::upstream
