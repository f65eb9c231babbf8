// util hex: lower-case two digits a byte; the decoder takes either case and refuses anything else.
#include "util/hex.h"

#include <gtest/gtest.h>

#include <string>

namespace tether::util {
namespace {

TEST(HexTest, EncodesLowerCaseTwoDigitsAByte) {
  EXPECT_EQ(HexEncode(""), "");
  EXPECT_EQ(HexEncode(std::string("\x00\x01\xab\xff", 4)), "0001abff");
}

TEST(HexTest, DecodesEitherCaseAndRoundTripsEveryByte) {
  EXPECT_EQ(HexDecode("0001ABff"), std::string("\x00\x01\xab\xff", 4));
  std::string all;
  for (int b = 0; b < 256; ++b) all.push_back(static_cast<char>(b));
  EXPECT_EQ(HexDecode(HexEncode(all)), all);
}

TEST(HexTest, RefusesOddLengthsAndNonDigits) {
  EXPECT_EQ(HexDecode("abc"), std::nullopt);
  EXPECT_EQ(HexDecode("0g"), std::nullopt);
  EXPECT_EQ(HexDecode("0x12"), std::nullopt);
  EXPECT_EQ(HexDecode(" 1"), std::nullopt);
}

}  // namespace
}  // namespace tether::util
