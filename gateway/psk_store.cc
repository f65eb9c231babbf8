#include "gateway/psk_store.h"

#include <yaml-cpp/yaml.h>

#include "util/firebase_key.h"
#include "util/hex.h"
#include "gateway/device_auth.h"
#include "gateway/secret_file.h"
#include "gateway/yaml_schema.h"

namespace tether {

namespace {

constexpr size_t kMaxIdentityBytes = 128;
constexpr size_t kMaxPskBytes = 32;  // mbedTLS's MBEDTLS_PSK_MAX_LEN
constexpr size_t kMinMasterKeyBytes = 16;

bool ValidIdentity(std::string_view id) { return id.size() <= kMaxIdentityBytes && util::IsFirebaseKey(id); }

// "0x" + hex, else the text itself. Errors never quote the key.
std::string DecodeKey(const YamlField& f) {
  const std::string text = f.AsString();
  std::string key;
  if (text.rfind("0x", 0) == 0) {
    if (text.size() % 2 != 0) f.Fail("a 0x key needs an even number of hexadecimal digits");
    std::optional<std::string> bytes = util::HexDecode(std::string_view(text).substr(2));
    if (!bytes) f.Fail("a 0x key must be hexadecimal digits");
    key = std::move(*bytes);
  } else {
    key = text;
  }
  if (key.empty() || key.size() > kMaxPskBytes) f.Fail("a key must be 1 to 32 bytes");
  return key;
}

}  // namespace

PskStore::PskStore(const DtlsConfig& config) {
  if (!config.keys_file.empty()) {
    const std::string& file = config.keys_file;
    YAML::Node root;
    try {
      root = YAML::Load(ReadSecretFile(file));
    } catch (const SecretFileError& e) {
      throw ConfigError(file, 0, 0, "dtls.keys_file", e.what());
    } catch (const YAML::Exception& e) {
      throw ConfigError(file, e.mark.is_null() ? 0 : e.mark.line + 1, e.mark.is_null() ? 0 : e.mark.column + 1, "",
                        e.msg);
    }
    YamlField top(file, root, "");
    if (!root.IsNull()) {
      if (!root.IsMap()) top.Fail("expected a mapping of identity: key");
      for (auto it = root.begin(); it != root.end(); ++it) {
        const std::string identity = it->first.Scalar();
        YamlField value = top.Required(identity);
        if (!ValidIdentity(identity)) {
          YamlField(file, it->first, identity)
              .Fail("an identity is the device id: at most 128 bytes, none of . $ # [ ] / or control characters");
        }
        keys_[identity] = DecodeKey(value);
      }
      top.Finish();  // duplicate identities
    }
  }
  if (!config.master_key_file.empty()) {
    try {
      master_ = ReadSecretValue(config.master_key_file);
    } catch (const SecretFileError& e) {
      throw ConfigError(config.master_key_file, 0, 0, "dtls.master_key_file", e.what());
    }
    if (master_.size() < kMinMasterKeyBytes) {
      throw ConfigError(config.master_key_file, 0, 0, "dtls.master_key_file",
                        "the master key must be at least 16 bytes");
    }
  }
}

std::optional<std::string> PskStore::KeyFor(std::string_view identity) const {
  if (!ValidIdentity(identity)) return std::nullopt;
  if (auto it = keys_.find(identity); it != keys_.end()) return it->second;
  if (master_.empty()) return std::nullopt;
  return DerivedKey(master_, identity);
}

std::string PskStore::DerivedKey(std::string_view master_key, std::string_view identity) {
  return HmacSha256Hex(master_key, identity).substr(0, kMaxPskBytes);
}

}  // namespace tether
