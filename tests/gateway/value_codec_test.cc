#include "gateway/model/value_codec.h"

#include <gtest/gtest.h>

#include "gateway/model/data_rules.h"
#include "tests/support/diagnostic_text.h"

namespace tether {
namespace {

std::string Hex(const std::string& h) {
  std::string out;
  for (size_t i = 0; i + 1 < h.size(); i += 2) out += static_cast<char>(std::stoi(h.substr(i, 2), nullptr, 16));
  return out;
}

Json Cbor(const std::string& hex) {
  auto v = DecodeCbor(Hex(hex));
  EXPECT_TRUE(v) << hex << ": " << MessageOf(v);
  return v ? *v : Json("<error>");
}

TEST(ValueCodec, DecodesSdkPayloadsFromTraces) {
  EXPECT_EQ(Cbor("bf61626178ff"), Json({{"b", "x"}}));           // set.log, indefinite map
  EXPECT_EQ(Cbor("bf666f6e6c696e65626e6fff"), Json({{"online", "no"}}));
  EXPECT_EQ(Cbor("676f66666c696e65"), Json("offline"));
  EXPECT_EQ(Cbor("f6"), Json());
  EXPECT_EQ(Cbor("bf61321904d2ff"), Json({{"2", 1234}}));
  // t_test_step.log: nested indefinite maps, float64, bool, null, byte-string key and value.
  Json v = Cbor(
      "bf644c316332bf644c326333f5ff644c316331bf644c326332bf644c336335bf644c34633566737472696e67644c346334f4ff644c336334f6"
      "644c336333bf644c346333fb4002666666666666644c34633239163cffff644c326331bf644c336332bf644c34633119036bff444c33633145"
      "f60c000006ffffff");
  EXPECT_EQ(v["L1c2"]["L2c3"], true);
  EXPECT_EQ(v["L1c1"]["L2c2"]["L3c5"]["L4c5"], "string");
  EXPECT_EQ(v["L1c1"]["L2c2"]["L3c5"]["L4c4"], false);
  EXPECT_FALSE(v["L1c1"]["L2c2"].contains("L3c4")) << "null children vanish";
  EXPECT_DOUBLE_EQ(v["L1c1"]["L2c2"]["L3c3"]["L4c3"].get<double>(), 2.3);
  EXPECT_EQ(v["L1c1"]["L2c2"]["L3c3"]["L4c2"], -5693);
  EXPECT_EQ(v["L1c1"]["L2c1"]["L3c2"]["L4c1"], 875);
  ASSERT_TRUE(v["L1c1"]["L2c1"]["L3c1"].is_binary());
  EXPECT_EQ(v["L1c1"]["L2c1"]["L3c1"].get_binary().size(), 5u);
}

TEST(ValueCodec, EncodesWhatTheSdkReadsBack) {
  // get of a byte-string value must return the same bytes (t_test_step.log reply).
  Json v = Cbor("a1644c33633145f60c000006");
  EXPECT_EQ(EncodeCbor(v), Hex("a1644c33633145f60c000006"));
  EXPECT_EQ(EncodeCbor(Json()), Hex("f6"));
  EXPECT_EQ(EncodeCbor(Json({{"a", 1}, {"b", -2}, {"c", 2.5}})), Hex("a36161016162216163fb4004000000000000"));
  EXPECT_EQ(EncodeCbor(Json(3.0)), Hex("03"));
}

TEST(ValueCodec, RoundTripsThroughCborAndJson) {
  Json v = {{"s", "text"}, {"n", 12}, {"neg", -7}, {"f", 0.5}, {"t", true}, {"o", {{"x", "y"}}}};
  EXPECT_EQ(*DecodeCbor(EncodeCbor(v)), v);
  EXPECT_EQ(*DecodeJson(EncodeJson(v)), v);
}

TEST(ValueCodec, ArraysBecomeIndexKeyedMaps) {
  EXPECT_EQ(*DecodeJson("[\"a\", null, \"c\"]"), Json({{"0", "a"}, {"2", "c"}}));

  EXPECT_EQ(Cbor("8261616162"), Json({{"0", "a"}, {"1", "b"}}));
}

TEST(ValueCodec, BinaryGoesToTheCloudAsBase64) {
  Json v = {{"b", Json::binary({0xf6, 0x0c, 0x00})}};
  EXPECT_EQ(EncodeJson(v), "{\"b\":\"9gwA\"}");
}

struct Malformed {
  const char* hex;
  const char* error;
};

class CborRejects : public testing::TestWithParam<Malformed> {};

TEST_P(CborRejects, WithDiagnostic) {
  auto v = DecodeCbor(Hex(GetParam().hex));
  EXPECT_FALSE(v);
  EXPECT_EQ(MessageOf(v), GetParam().error);
}

INSTANTIATE_TEST_SUITE_P(Table, CborRejects,
                         testing::Values(Malformed{"bf6162", "malformed CBOR"},          // truncated
                                         Malformed{"1b00", "malformed CBOR"},            // short uint64
                                         Malformed{"f6f6", "trailing bytes after the CBOR value"},
                                         Malformed{"a1f5f5", "map keys must be strings"},
                                         Malformed{"a2616101616102", "duplicate map key 'a'"},
                                         Malformed{"a142c32801", "map key is not valid UTF-8"},
                                         Malformed{"f97e00", "NaN and infinity are not valid values"}));

TEST(ValueCodec, HugeDeclaredSizesAreRejectedBeforeAllocating) {
  // Found by fuzz_value_codec: an array header claiming 2.5e9 elements made libcbor preallocate it.
  EXPECT_FALSE(DecodeCbor(Hex("bff93a629a9940be62666678ff")));
  EXPECT_EQ(MessageOf(DecodeCbor(Hex("bff93a629a9940be62666678ff"))),
            "malformed CBOR (declared size exceeds the payload)");
  EXPECT_FALSE(DecodeCbor(Hex("bb00000000ffffffff")));  // map of 2^32-1 pairs in 9 bytes
  EXPECT_EQ(MessageOf(DecodeCbor(Hex("bb00000000ffffffff"))), "malformed CBOR (declared size exceeds the payload)");
  EXPECT_FALSE(DecodeCbor(Hex("9b7fffffffffffffff01")));
  // Honest sizes still decode.
  EXPECT_TRUE(DecodeCbor(Hex("83010203")));
  EXPECT_TRUE(DecodeCbor(Hex("a2616101616202")));
  EXPECT_EQ(MessageOf(DecodeCbor(Hex("c1a1616101"))), "");                  // tagged map
  EXPECT_EQ(MessageOf(DecodeCbor(Hex("bf61619f0102ff7f6162ff02ff"))), "");  // indefinite map/array/string
}

TEST(ValueCodec, DeepNestingIsRejectedNotRecursedForever) {
  std::string deep;
  for (int i = 0; i < 200; ++i) deep += "\xa1\x61\x61";
  deep += "\x01";
  EXPECT_FALSE(DecodeCbor(deep));
  EXPECT_EQ(MessageOf(DecodeCbor(deep)), "value nested too deeply");
  std::string jdeep(200, '[');
  EXPECT_FALSE(DecodeJson(jdeep + std::string(200, ']')));
  EXPECT_FALSE(DecodeJson("{\"a\":"));
  EXPECT_EQ(MessageOf(DecodeJson("{\"a\":")), "malformed JSON");
}

TEST(DataRules, KeysPathsAndValues) {
  EXPECT_EQ(util::CheckFirebaseKey("ok-key_1"), "");
  EXPECT_EQ(util::CheckFirebaseKey("a.b"), "key 'a.b' contains one of . $ # [ ] /");
  EXPECT_EQ(util::CheckFirebaseKey(std::string("a\x01", 2)), "key contains a control character");
  EXPECT_EQ(util::CheckFirebaseKey(std::string(769, 'k')), "key longer than 768 bytes");
  EXPECT_EQ(MessageOf(CheckPath(std::vector<std::string>(33, "k"))), "path deeper than 32 levels");
  EXPECT_EQ(MessageOf(CheckValue(Json({{"a", {{"$b", 1}}}}), 1)), "key '$b' contains one of . $ # [ ] /");
  EXPECT_EQ(MessageOf(CheckValue(Json({{"t", {{".sv", "timestamp"}}}}), 1)), "");
  EXPECT_NE(MessageOf(CheckValue(Json({{"t", {{".sv", "now"}}}}), 1)), "");
  EXPECT_EQ(MessageOf(CheckValue(Json({{"x", 1}}), 32)), "value is nested deeper than 32 levels");
  EXPECT_EQ(MessageOf(CheckUpdate(Json({{"a/b", 1}, {"c", nullptr}}), 0)), "");
  EXPECT_EQ(MessageOf(CheckUpdate(Json(1), 0)), "update needs a map of child paths to values");
  EXPECT_EQ(MessageOf(CheckUpdate(Json({{"a/#", 1}}), 0)), "key '#' contains one of . $ # [ ] /");
}

// Increments are taken out for the store to add (inside its commit); timestamps resolve here.
TEST(DataRules, ResolvesServerValues) {
  Json v = {{"last", {{".sv", "timestamp"}}}, {"n", {{".sv", {{"increment", 2}}}}}, {"keep", "x"}};
  EXPECT_TRUE(HasServerValues(v));
  auto incs = ExtractIncrements(&v);
  ASSERT_EQ(incs.size(), 1u);
  EXPECT_EQ(incs[0].first, "n");
  EXPECT_EQ(incs[0].second, Json(2));
  ResolveTimestamps(&v, 1700000000123);
  EXPECT_EQ(v, Json({{"last", 1700000000123}, {"n", 2}, {"keep", "x"}}));
  EXPECT_FALSE(HasServerValues(v));
  Json inc = {{".sv", {{"increment", 1.5}}}};
  incs = ExtractIncrements(&inc);
  ASSERT_EQ(incs.size(), 1u);
  EXPECT_EQ(incs[0].first, "");
  EXPECT_EQ(inc, Json(1.5));
}

// An update's map keeps its null members (they remove); deeper nulls and empty maps vanish.
TEST(ValueCodec, UpdateMembersKeepTheirNulls) {
  EXPECT_EQ(*DecodeJson(R"({"k":null,"m":{"x":null},"n":{"y":1,"z":null}})", true),
            Json::parse(R"({"k":null,"m":null,"n":{"y":1}})"));
  EXPECT_EQ(*DecodeJson("{}", true), Json::object());
  EXPECT_TRUE(DecodeJson(R"({"k":null})")->is_null()) << "not an update: null members vanish";
  const std::string definite = "\xa2\x61k\xf6\x61m\x03", indefinite = "\xbf\x61k\xf6\x61m\x03\xff";
  for (const std::string& cbor : {definite, indefinite}) {
    EXPECT_EQ(*DecodeCbor(cbor, true), Json::parse(R"({"k":null,"m":3})"));
    EXPECT_EQ(*DecodeCbor(cbor), Json::parse(R"({"m":3})"));
  }
  EXPECT_EQ(*DecodeCbor("\xa0", true), Json::object());
}

TEST(DataRules, OverlappingUpdatePaths) {
  EXPECT_EQ(MessageOf(CheckUpdate(Json({{"a", 1}, {"a-b", 1}, {"ab/c", 1}}), 0)), "");
  EXPECT_EQ(MessageOf(CheckUpdate(Json::object(), 0)), "");
  EXPECT_EQ(MessageOf(CheckUpdate(Json({{"a", 1}, {"a/b", nullptr}}), 0)), "update paths overlap: 'a' and 'a/b'");
  EXPECT_EQ(MessageOf(CheckUpdate(Json({{"x/a", 1}, {"a-b", 1}, {"x/a/b/c", 1}}), 0)),
            "update paths overlap: 'x/a' and 'x/a/b/c'");
  EXPECT_EQ(MessageOf(CheckUpdate(Json({{"a/b", 1}, {"/a//b", 2}}), 0)),
            "update paths overlap (the same path twice)");
}

}  // namespace
}  // namespace tether
