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

#include "gateway/config.h"

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

  // The token a device with this id must present to an hmac app (for provisioning tools and tests).
  static std::string HmacToken(std::string_view secret, std::string_view device);

 private:
  AppAuth auth_;
  std::string secret_;
};

}  // namespace tether
