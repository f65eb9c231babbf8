// util base64 (RFC 4648 test vectors) and base64url round trips.
#include "util/base64.h"

#include <gtest/gtest.h>

#include <string>

namespace tether::util {
namespace {

TEST(Base64Test, Rfc4648Vectors) {
  const char* vectors[][2] = {{"", ""},           {"f", "Zg=="},         {"fo", "Zm8="},
                              {"foo", "Zm9v"},    {"foob", "Zm9vYg=="},  {"fooba", "Zm9vYmE="},
                              {"foobar", "Zm9vYmFy"}};
  for (const auto& v : vectors) {
    EXPECT_EQ(Base64Encode(v[0]), v[1]);
    EXPECT_EQ(Base64Decode(v[1]), std::string(v[0]));
  }
}

TEST(Base64Test, UrlAlphabetHasNoPlusSlashOrPadding) {
  const std::string bytes("\xfb\xff\xbf", 3);  // encodes to the last two letters of each alphabet
  EXPECT_EQ(Base64Encode(bytes), "+/+/");
  EXPECT_EQ(Base64UrlEncode(bytes), "-_-_");
  EXPECT_EQ(Base64UrlEncode("f"), "Zg");
  EXPECT_EQ(Base64UrlDecode("Zg"), std::string("f"));
  EXPECT_EQ(Base64UrlDecode("Zg=="), std::string("f")) << "padding is optional";
}

TEST(Base64Test, EveryByteAndLengthRoundTrips) {
  std::string bytes;
  for (int i = 0; i < 300; ++i) {
    EXPECT_EQ(Base64Decode(Base64Encode(bytes)), bytes) << "length " << i;
    EXPECT_EQ(Base64UrlDecode(Base64UrlEncode(bytes)), bytes) << "length " << i;
    bytes.push_back(static_cast<char>(i * 37 + 11));
  }
}

TEST(Base64Test, RefusesTextOfTheOtherKind) {
  EXPECT_EQ(Base64Decode("Zm9v!"), std::nullopt);
  EXPECT_EQ(Base64Decode("-_-_"), std::nullopt) << "base64url is not base64";
  EXPECT_EQ(Base64UrlDecode("+/+/"), std::nullopt) << "base64 is not base64url";
  EXPECT_EQ(Base64UrlDecode("Z"), std::nullopt) << "one character is not a whole byte";
}

}  // namespace
}  // namespace tether::util
