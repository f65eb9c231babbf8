#include "gateway/device_auth.h"

#include <mbedtls/md.h>
#include <mbedtls/sha256.h>

#include "util/firebase_key.h"
#include "util/hex.h"
#include "gateway/secret_file.h"

namespace tether {

namespace {
bool ConstantTimeEqual(std::string_view a, std::string_view b) {
  if (a.size() != b.size()) return false;
  unsigned char diff = 0;
  for (size_t i = 0; i < a.size(); ++i) diff |= static_cast<unsigned char>(a[i] ^ b[i]);
  return diff == 0;
}
}  // namespace

DeviceAuthenticator::DeviceAuthenticator(const AppConfig& app) : auth_(app.auth) {
  if (auth_.mode != AppAuth::Mode::kHmac) return;
  try {
    secret_ = ReadSecretValue(auth_.secret_file);
  } catch (const SecretFileError& e) {
    throw ConfigError(auth_.secret_file, 0, 0, "apps." + app.id + ".auth.secret_file", e.what());
  }
  if (secret_.size() < 16) {
    throw ConfigError(auth_.secret_file, 0, 0, "apps." + app.id + ".auth.secret_file",
                      "the secret must be at least 16 bytes");
  }
}

std::string HmacSha256Hex(std::string_view key, std::string_view message) {
  unsigned char mac[32];
  mbedtls_md_hmac(mbedtls_md_info_from_type(MBEDTLS_MD_SHA256), reinterpret_cast<const unsigned char*>(key.data()),
                  key.size(), reinterpret_cast<const unsigned char*>(message.data()), message.size(), mac);
  return util::HexEncode({reinterpret_cast<const char*>(mac), sizeof mac});
}

std::string DeviceAuthenticator::HmacToken(std::string_view secret, std::string_view device) {
  return std::string(device) + ":" + HmacSha256Hex(secret, device);
}

AuthOutcome DeviceAuthenticator::Authenticate(std::string_view token) const {
  switch (auth_.mode) {
    case AppAuth::Mode::kOpen: {
      std::string t(token);
      // "anon-" names the ids generated for devices without one: a token cannot claim it.
      return {true, util::IsFirebaseKey(t) && t.rfind("anon-", 0) != 0 ? t : std::string()};
    }
    case AppAuth::Mode::kTokens: {
      bool found = false;
      std::string device;
      for (const auto& t : auth_.tokens) {  // scan all entries: timing does not reveal which matched
        if (ConstantTimeEqual(t.token, token) && !found) {
          found = true;
          device = t.device;
        }
      }
      return {found, device};
    }
    case AppAuth::Mode::kHmac: {
      size_t colon = token.rfind(':');
      if (colon == std::string_view::npos || colon == 0) return {};
      std::string_view device = token.substr(0, colon);
      if (!util::IsFirebaseKey(device)) return {};
      if (!ConstantTimeEqual(HmacToken(secret_, device), token)) return {};
      return {true, std::string(device)};
    }
  }
  return {};
}

std::string DeviceAuthenticator::Fingerprint(std::string_view token) {
  unsigned char hash[32];
  mbedtls_sha256_ret(reinterpret_cast<const unsigned char*>(token.data()), token.size(), hash, 0);
  return std::string(reinterpret_cast<const char*>(hash), sizeof hash);
}

bool DeviceAuthenticator::StillAccepts(std::string_view device, bool anonymous, const std::string& fingerprint) const {
  switch (auth_.mode) {
    case AppAuth::Mode::kOpen: return true;  // any token opens a session (the id it names is only a claim)
    case AppAuth::Mode::kTokens: {
      if (anonymous) return false;  // a listed token always names a device
      for (const auto& t : auth_.tokens) {
        if (t.device == device && (fingerprint.empty() || ConstantTimeEqual(Fingerprint(t.token), fingerprint))) {
          return true;
        }
      }
      return false;
    }
    case AppAuth::Mode::kHmac:
      if (anonymous || fingerprint.empty()) return false;
      return ConstantTimeEqual(Fingerprint(HmacToken(secret_, device)), fingerprint);
  }
  return false;
}

std::string DeviceAuthenticator::RestoredFingerprint(std::string_view device) const {
  return auth_.mode == AppAuth::Mode::kHmac ? Fingerprint(HmacToken(secret_, device)) : std::string();
}

}  // namespace tether
