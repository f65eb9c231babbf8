// PskStore: the keys file (text and 0x keys, errors with file:line), derivation from a master key
// (a known answer computed with openssl), and identity rules.
#include "gateway/config/psk_store.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdlib>
#include <fstream>

namespace tether {
namespace {

class PskStoreTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/psk-test-XXXXXX";
    dir_ = mkdtemp(tmpl);
  }
  void TearDown() override { std::system(("rm -rf " + dir_).c_str()); }
  std::string Write(const std::string& name, const std::string& text) {
    const std::string path = dir_ + "/" + name;
    std::ofstream(path) << text;
    return path;
  }
  std::string ErrorOf(const DtlsConfig& c) {
    try {
      PskStore s(c);
    } catch (const ConfigError& e) {
      return e.what();
    }
    return "";
  }
  std::string dir_;
};

TEST_F(PskStoreTest, ListedKeysInTextOrHex) {
  DtlsConfig c;
  c.keys_file = Write("keys.yaml", "sensor-1: key-one-secret\nsensor-2: \"0x6b65792d74776f\"\n");
  PskStore s(c);
  EXPECT_EQ(s.listed(), 2u);
  EXPECT_EQ(s.KeyFor("sensor-1"), "key-one-secret");
  EXPECT_EQ(s.KeyFor("sensor-2"), "key-two");
  EXPECT_EQ(s.KeyFor("sensor-3"), std::nullopt) << "no master key: unlisted identities are refused";
}

TEST_F(PskStoreTest, DerivedKeyIsTheFirst32HexDigitsOfTheHmac) {
  // printf sensor-9 | openssl dgst -sha256 -hmac master-key-of-the-fleet-0123456789 | cut -c..32
  EXPECT_EQ(PskStore::DerivedKey("master-key-of-the-fleet-0123456789", "sensor-9"), "38241c54cb35a868e790e49cfb123ca0");
  DtlsConfig c;
  c.keys_file = Write("keys.yaml", "sensor-1: listed-wins\n");
  c.master_key_file = Write("master.key", "master-key-of-the-fleet-0123456789\n");
  PskStore s(c);
  EXPECT_EQ(s.KeyFor("sensor-9"), "38241c54cb35a868e790e49cfb123ca0");
  EXPECT_EQ(s.KeyFor("sensor-1"), "listed-wins");
}

TEST_F(PskStoreTest, IdentitiesMustBeDeviceIds) {
  DtlsConfig c;
  c.master_key_file = Write("master.key", "master-key-of-the-fleet-0123456789");
  PskStore s(c);
  EXPECT_EQ(s.KeyFor("a/b"), std::nullopt);
  EXPECT_EQ(s.KeyFor("a.b"), std::nullopt);
  EXPECT_EQ(s.KeyFor(""), std::nullopt);
  EXPECT_EQ(s.KeyFor(std::string(129, 'x')), std::nullopt);
  EXPECT_TRUE(s.KeyFor(std::string(128, 'x')).has_value());
}

TEST_F(PskStoreTest, BadFilesAreConfigErrorsWithPositionAndNoKeyText) {
  DtlsConfig c;
  c.keys_file = Write("k1.yaml", "sensor-1: ok-key\nsensor-2: \"0xabc\"\n");
  EXPECT_EQ(ErrorOf(c), c.keys_file + ":2:11: sensor-2: a 0x key needs an even number of hexadecimal digits");
  c.keys_file = Write("k2.yaml", "sensor-1: \"0xzz\"\n");
  EXPECT_EQ(ErrorOf(c), c.keys_file + ":1:11: sensor-1: a 0x key must be hexadecimal digits");
  c.keys_file = Write("k3.yaml", "sensor-1: " + std::string(33, 'k') + "\n");
  EXPECT_EQ(ErrorOf(c), c.keys_file + ":1:11: sensor-1: a key must be 1 to 32 bytes");
  c.keys_file = Write("k4.yaml", "ok: key\nbad/id: key\n");
  EXPECT_NE(ErrorOf(c).find(":2:1: bad/id: an identity is the device id"), std::string::npos) << ErrorOf(c);
  c.keys_file = Write("k5.yaml", "a: one\na: two\n");
  EXPECT_NE(ErrorOf(c).find("duplicate key"), std::string::npos) << ErrorOf(c);
  c.keys_file = Write("k6.yaml", "- a\n- b\n");
  EXPECT_NE(ErrorOf(c).find("expected a mapping of identity: key"), std::string::npos) << ErrorOf(c);
  c.keys_file = dir_ + "/missing.yaml";
  EXPECT_EQ(ErrorOf(c), c.keys_file + ": dtls.keys_file: cannot read " + c.keys_file + ": No such file or directory");
  c.keys_file.clear();
  c.master_key_file = Write("short.key", "short\n");
  EXPECT_EQ(ErrorOf(c), c.master_key_file + ": dtls.master_key_file: the master key must be at least 16 bytes");
  c.keys_file = Write("k7.yaml", "sensor-1: secret-value-xyz\nsensor-2: \"0x1\"\n");
  c.master_key_file.clear();
  EXPECT_EQ(ErrorOf(c).find("secret-value-xyz"), std::string::npos) << "errors never quote a key";
}

}  // namespace
}  // namespace tether
