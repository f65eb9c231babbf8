// The Firebase key rule (util/firebase_key.h) and the places that ask it: device writes
// (gateway/model/data_rules.h), tree paths (store/tree_path.h), route patterns and the presence key
// (gateway/config/config.h) must agree on every byte.
#include "util/firebase_key.h"

#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "gateway/config/config.h"
#include "gateway/model/data_rules.h"
#include "gateway/model/route_pattern.h"
#include "store/tree_path.h"

namespace tether {
namespace {

TEST(FirebaseKeyTest, ForbiddenBytesAreDotDollarHashBracketsSlashAndControls) {
  for (int b = 0; b < 256; ++b) {
    const bool forbidden = b < 0x20 || b == 0x7f || std::string(".$#[]/").find(static_cast<char>(b)) != std::string::npos;
    EXPECT_EQ(util::IsForbiddenKeyByte(static_cast<unsigned char>(b)), forbidden) << "byte " << b;
    EXPECT_EQ(util::IsFirebaseKey(std::string("a") + static_cast<char>(b) + "z"), !forbidden) << "byte " << b;
  }
}

TEST(FirebaseKeyTest, DiagnosticsNameTheFirstFault) {
  EXPECT_EQ(util::CheckFirebaseKey(""), "empty key");
  EXPECT_EQ(util::CheckFirebaseKey("a.b\x01"), "key 'a.b\x01' contains one of . $ # [ ] /");
  EXPECT_EQ(util::CheckFirebaseKey("a\x01.b"), "key contains a control character");
  EXPECT_EQ(util::CheckFirebaseKey(std::string(41, 'x') + "$"),
            "key '" + std::string(40, 'x') + "' contains one of . $ # [ ] /");
}

TEST(FirebaseKeyTest, LengthIsCountedInUtf8Bytes) {
  const std::string e_acute = "\xc3\xa9";  // two bytes, one character
  EXPECT_TRUE(util::IsFirebaseKey("caf" + e_acute)) << "UTF-8 is allowed as it is";
  EXPECT_TRUE(util::IsFirebaseKey(std::string(768, 'k')));
  EXPECT_EQ(util::CheckFirebaseKey(std::string(769, 'k')), "key longer than 768 bytes");
  std::string wide;
  for (int i = 0; i < 384; ++i) wide += e_acute;  // 384 characters, 768 bytes
  EXPECT_TRUE(util::IsFirebaseKey(wide));
  EXPECT_FALSE(util::IsFirebaseKey(wide + "k")) << "769 bytes though 385 characters";
}

// Every module's check of one segment gives the same verdict as the rule, byte by byte.
TEST(FirebaseKeyTest, GatewayStoreAndConfigAgree) {
  for (int b = 1; b < 256; ++b) {
    if (b == '/') continue;  // separates segments in a path: not one segment's byte
    const std::string key = std::string("k") + static_cast<char>(b);
    const bool valid = util::IsFirebaseKey(key);
    EXPECT_EQ(CheckPath({key}).ok(), valid) << "gateway data rules, byte " << b;
    std::vector<std::string> segs;
    std::string error;
    EXPECT_EQ(store::ParseTreePath("/a/" + key, &segs, &error), valid) << "store tree path, byte " << b;
    if (b != '{' && b != '}' && b != '*') {
      EXPECT_EQ(RoutePattern::Parse("a/" + key).ok(), valid) << "route pattern, byte " << b;
    }
    EXPECT_EQ(PresenceKey(key) == key, valid) << "presence key, byte " << b;
  }
  std::vector<std::string> segs;
  std::string error;
  EXPECT_TRUE(store::ParseTreePath("/" + std::string(768, 'k'), &segs, &error));
  EXPECT_FALSE(store::ParseTreePath("/" + std::string(769, 'k'), &segs, &error));
  EXPECT_TRUE(RoutePattern::Parse(std::string(768, 'k')).ok());
  EXPECT_FALSE(RoutePattern::Parse(std::string(769, 'k')).ok());
}

}  // namespace
}  // namespace tether
