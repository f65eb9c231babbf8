// DeviceAuthenticator: turns the raw token a device sends with POST /.cs into a device id.
//
//   open   any token; the device id is the token when it is a valid key not starting with
//          "anon-" (the prefix of generated ids), else a generated id
//   tokens the token must be listed; its entry names the device
//   hmac   token = "<device>:" + lowercase hex HMAC-SHA256(app secret, device), compared in
//          constant time; provisioning needs only the secret, not a list
#pragma once

#include <string>
#include <string_view>

#include "gateway/config/config.h"

namespace tether {

struct AuthOutcome {
  bool ok = false;
  std::string device;  // empty with ok=true: open app, no usable id in the token
};

// Lowercase hex of HMAC-SHA256(key, message) (mbedTLS).
std::string HmacSha256Hex(std::string_view key, std::string_view message);

class DeviceAuthenticator {
 public:
  // Reads the HMAC secret file for hmac apps; throws ConfigError when it cannot.
  explicit DeviceAuthenticator(const AppConfig& app);

  AuthOutcome Authenticate(std::string_view token) const;

  // What a session keeps of the token that opened it: SHA-256 of the token (never the token).
  static std::string Fingerprint(std::string_view token);
  // Reload: whether a session of `device` opened with the token of this fingerprint would be
  // opened by this configuration, i.e. its credential is still valid. An empty fingerprint (a
  // session restored after a restart, which keeps none) is judged by its device: a `tokens` app
  // must still list a token for it, an hmac app by RestoredFingerprint.
  bool StillAccepts(std::string_view device, bool anonymous, const std::string& fingerprint) const;
  // The fingerprint a restored session of `device` gets: that of the token this configuration
  // expects of it in an hmac app (so a later change of the secret revokes it), else empty.
  std::string RestoredFingerprint(std::string_view device) const;

  // The token a device with this id must present to an hmac app (for provisioning tools and tests).
  static std::string HmacToken(std::string_view secret, std::string_view device);

 private:
  AppAuth auth_;
  std::string secret_;
};

}  // namespace tether
