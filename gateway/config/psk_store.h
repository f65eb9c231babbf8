// PskStore: the DTLS pre-shared keys of the fleet, for the `dtls` section of the configuration.
//
// A device's key is its entry in keys_file; failing that, with a master key, it is derived:
// the first 32 characters of hex(HMAC-SHA256(master key, identity)), used as 32 ASCII bytes, so
// provisioning needs only the master key and the key is printable for tools that take keys as
// text (`tetherctl psk <identity>` prints it). The identity becomes the device id, so it must be a
// valid Firebase key of at most 128 bytes. Immutable after construction; any thread.
#pragma once

#include <map>
#include <optional>
#include <string>
#include <string_view>

#include "gateway/config/config.h"

namespace tether {

class PskStore {
 public:
  // Reads keys_file and master_key_file; throws ConfigError naming file:line and the key.
  explicit PskStore(const DtlsConfig& config);

  std::optional<std::string> KeyFor(std::string_view identity) const;
  static std::string DerivedKey(std::string_view master_key, std::string_view identity);
  size_t listed() const { return keys_.size(); }

 private:
  std::map<std::string, std::string, std::less<>> keys_;
  std::string master_;
};

}  // namespace tether
