// util::PercentEncode: every byte but RFC 3986's unreserved characters becomes %XX.
#include "util/percent_encoding.h"

#include <gtest/gtest.h>

#include <cstdio>
#include <string>

namespace tether::util {
namespace {

TEST(PercentEncodingTest, UnreservedCharactersStayAsTheyAre) {
  const std::string unreserved = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~";
  EXPECT_EQ(PercentEncode(unreserved), unreserved);
  EXPECT_EQ(PercentEncode(""), "");
}

TEST(PercentEncodingTest, ReservedCharactersAreEncodedInUpperCaseHex) {
  EXPECT_EQ(PercentEncode("a/b?c&d=e"), "a%2Fb%3Fc%26d%3De");
  EXPECT_EQ(PercentEncode("100% + 1"), "100%25%20%2B%201");
  EXPECT_EQ(PercentEncode(":@!$'()*,;#[]"), "%3A%40%21%24%27%28%29%2A%2C%3B%23%5B%5D");
  EXPECT_EQ(PercentEncode("\"{}\\"), "%22%7B%7D%5C");
}

TEST(PercentEncodingTest, EveryByteOfUtf8AndControlsIsEncoded) {
  EXPECT_EQ(PercentEncode("caf\xc3\xa9"), "caf%C3%A9");
  EXPECT_EQ(PercentEncode("\xe2\x82\xac"), "%E2%82%AC");  // the euro sign
  EXPECT_EQ(PercentEncode(std::string("a\0b", 3)), "a%00b") << "a NUL inside is one byte like any other";
  EXPECT_EQ(PercentEncode("\r\n\x7f\xff"), "%0D%0A%7F%FF");
}

TEST(PercentEncodingTest, EachByteIsItselfOrThreeCharacters) {
  for (int b = 0; b < 256; ++b) {
    const char c = static_cast<char>(b);
    const bool unreserved = (b >= 'A' && b <= 'Z') || (b >= 'a' && b <= 'z') || (b >= '0' && b <= '9') || c == '-' ||
                            c == '.' || c == '_' || c == '~';
    char hex[4];
    std::snprintf(hex, sizeof hex, "%%%02X", b);
    EXPECT_EQ(PercentEncode(std::string(1, c)), unreserved ? std::string(1, c) : std::string(hex)) << "byte " << b;
  }
}

}  // namespace
}  // namespace tether::util
