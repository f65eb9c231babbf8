// Query: parsing of the Uri-Query vocabulary, Firebase ordering and limits, table-driven.
#include "gateway/model/query.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <string>
#include <vector>

#include "tests/support/diagnostic_text.h"

namespace tether {
namespace {

std::vector<std::string_view> Params(const std::vector<std::string>& v) {
  return std::vector<std::string_view>(v.begin(), v.end());
}

// Children of every type, with ties, integer-like keys and missing children.
const Json kMixed = Json::parse(R"({
  "b": {"h": 3, "v": 3},
  "a": {"h": 3, "v": "x"},
  "10": {"h": "tall", "v": true},
  "9": {"h": false, "v": false},
  "-1": {"v": null, "h": true},
  "z": {"h": {"deep": 1}, "v": 2.5},
  "y": {"h": "short", "v": {"o": 1}},
  "c": {"v": -7},
  "x": {"h": 2.5, "v": 3}
})");

// The same children as plain values (for $value): null members vanish in Firebase's model.
const Json kFlat = Json::parse(R"({"b":3,"a":"x","10":true,"9":false,"z":2.5,"y":{"o":1},"c":-7,"x":3})");

struct Case {
  const char* name;
  std::vector<std::string> params;
  std::vector<std::string> want;  // keys in query order
  bool flat = false;              // run against kFlat instead of kMixed
};

class QueryTable : public ::testing::TestWithParam<Case> {};

TEST_P(QueryTable, SelectsAndOrders) {
  const Case& c = GetParam();
  Query q;
  ASSERT_EQ(MessageOf(ParseQuery(Params(c.params), &q)), "") << c.name;
  const Json& data = c.flat ? kFlat : kMixed;
  EXPECT_EQ(QueryKeys(data, q), c.want) << c.name;
  Json result = ApplyQuery(data, q);
  ASSERT_EQ(result.is_null() ? 0u : result.size(), c.want.size()) << c.name;
  for (const auto& k : c.want) EXPECT_EQ(result.at(k), data.at(k)) << c.name << " key " << k;
}

INSTANTIATE_TEST_SUITE_P(
    Firebase, QueryTable,
    ::testing::Values(
        // $key: integer keys numerically first (-1 < 9 < 10), then byte order.
        Case{"key", {"orderBy=$key"}, {"-1", "9", "10", "a", "b", "c", "x", "y", "z"}},
        Case{"key quoted", {"orderBy=\"$key\""}, {"-1", "9", "10", "a", "b", "c", "x", "y", "z"}},
        Case{"key first 2", {"orderBy=$key", "limitToFirst=2"}, {"-1", "9"}},
        Case{"key last 2", {"orderBy=$key", "limitToLast=2"}, {"y", "z"}},
        Case{"key range", {"orderBy=$key", "startAt=\"b\"", "endAt=\"x\""}, {"b", "c", "x"}},
        Case{"key range of ints", {"orderBy=$key", "startAt=\"9\"", "endAt=\"a\""}, {"9", "10", "a"}},
        Case{"key equal", {"orderBy=$key", "equalTo=\"c\""}, {"c"}},
        // child h: missing (null) < false < true < numbers < strings < objects; ties by key.
        Case{"child", {"orderBy=h"}, {"c", "9", "-1", "x", "a", "b", "y", "10", "z"}},
        Case{"child quoted", {"orderBy=\"h\""}, {"c", "9", "-1", "x", "a", "b", "y", "10", "z"}},
        Case{"child tie 3", {"orderBy=h", "equalTo=3"}, {"a", "b"}},
        Case{"child numbers", {"orderBy=h", "startAt=0", "endAt=100"}, {"x", "a", "b"}},
        Case{"child strings", {"orderBy=h", "startAt=\"s\""}, {"y", "10", "z"}},
        Case{"child booleans", {"orderBy=h", "startAt=false", "endAt=true"}, {"9", "-1"}},
        Case{"child null", {"orderBy=h", "equalTo=null"}, {"c"}},
        Case{"child last 3", {"orderBy=h", "limitToLast=3"}, {"y", "10", "z"}},
        Case{"child start+first", {"orderBy=h", "startAt=true", "limitToFirst=3"}, {"-1", "x", "a"}},
        Case{"child end+last", {"orderBy=h", "endAt=3", "limitToLast=2"}, {"a", "b"}},
        Case{"child limit over size", {"orderBy=h", "limitToFirst=50"}, {"c", "9", "-1", "x", "a", "b", "y", "10", "z"}},
        // $value: false < true < -7 < 2.5 < 3 = 3 (tie by key) < "x" < object.
        Case{"value", {"orderBy=$value"}, {"9", "10", "c", "z", "b", "x", "a", "y"}, true},
        Case{"value first 3", {"orderBy=$value", "limitToFirst=3"}, {"9", "10", "c"}, true},
        Case{"value ties", {"orderBy=$value", "equalTo=3"}, {"b", "x"}, true},
        Case{"value int vs float", {"orderBy=$value", "startAt=2.5", "endAt=3.0"}, {"z", "b", "x"}, true},
        Case{"value objects last", {"orderBy=$value", "startAt=\"y\""}, {"y"}, true},
        Case{"value empty range", {"orderBy=$value", "startAt=\"zz\"", "endAt=\"zzz\""}, {}, true},
        // $value over objects: every child ties, so key order decides.
        Case{"value of objects", {"orderBy=$value", "limitToFirst=4"}, {"-1", "9", "10", "a"}}));

TEST(QueryRows, Mixed_deep_child_path_and_leaf_values) {
  Json v = Json::parse(R"({"p":{"m":{"t":2}},"q":{"m":{"t":1}},"r":5})");
  Query q;
  ASSERT_EQ(MessageOf(ParseQuery(Params({"orderBy=m/t"}), &q)), "");
  EXPECT_EQ(QueryKeys(v, q), (std::vector<std::string>{"r", "q", "p"}));  // r has no m/t: null first
  EXPECT_EQ(ApplyQuery(Json(42), q), Json(42));  // a leaf has no children
  EXPECT_TRUE(ApplyQuery(Json(), q).is_null());
  // Firebase REST answers integer-keyed children as an array (holes are null).
  Query by_value;
  ASSERT_EQ(MessageOf(ParseQuery(Params({"orderBy=$value", "limitToLast=2"}), &by_value)), "");
  EXPECT_EQ(ApplyQuery(Json::parse("[7, null, 3, 9]"), by_value), Json::parse(R"({"0":7,"3":9})"));
}

// Numbers compare exactly however they are stored: JSON parses non-negative integers as uint64,
// negative ones as int64 and the rest as double.
TEST(QueryOrder, NumbersOfEveryWidthCompareExactly) {
  struct Row {
    const char* a;
    const char* b;
    int want;
  };
  const Row rows[] = {
      {"18446744073709551615", "1", 1},                      // uint64 max is not -1
      {"9223372036854775808", "-1", 1},                      // 2^63 as uint64 vs int64
      {"-9223372036854775808", "9223372036854775807", -1},   // int64 min vs max
      {"9007199254740993", "9007199254740992.0", 1},         // 2^53 + 1 vs the double 2^53
      {"9007199254740992", "9007199254740992.0", 0},         // equal across int and double
      {"18446744073709551615", "1.8446744073709552e19", -1},  // the double is 2^64
      {"-1", "-0.5", -1},
      {"3", "2.5", 1},
      {"0", "-0.0", 0},
  };
  for (const Row& r : rows) {
    Json a = Json::parse(r.a), b = Json::parse(r.b);
    EXPECT_EQ(CompareValues(a, b), r.want) << r.a << " vs " << r.b;
    EXPECT_EQ(CompareValues(b, a), -r.want) << r.b << " vs " << r.a;
  }
  Json big = Json::parse(R"({"a":18446744073709551615,"b":-1,"c":9223372036854775808,"d":1e19,
                             "e":9007199254740993,"f":9007199254740992.0})");
  Query q;
  ASSERT_EQ(MessageOf(ParseQuery(Params({"orderBy=$value"}), &q)), "");
  EXPECT_EQ(QueryKeys(big, q), (std::vector<std::string>{"b", "f", "e", "c", "d", "a"}));
  ASSERT_EQ(MessageOf(ParseQuery(Params({"orderBy=$value", "startAt=9223372036854775808"}), &q)), "");
  EXPECT_EQ(QueryKeys(big, q), (std::vector<std::string>{"c", "d", "a"}));
}

// Strings (values and keys) order by UTF-16 code units as Firebase does: a character above
// U+FFFF (a surrogate pair, 0xD83D...) sorts before U+E000..U+FFFF, unlike UTF-8 byte order.
TEST(QueryOrder, StringsCompareByUtf16CodeUnits) {
  const std::string smile = "\xF0\x9F\x98\x80", priv = "\xEE\x80\x80", last = "\xEF\xBF\xBF", e_acute = "\xC3\xA9";
  EXPECT_LT(CompareStrings(smile, priv), 0);
  EXPECT_LT(CompareStrings(smile, last), 0);
  EXPECT_LT(CompareStrings("z", e_acute), 0);
  EXPECT_LT(CompareStrings(e_acute, smile), 0);
  EXPECT_LT(CompareStrings("ab", "abc"), 0);
  EXPECT_EQ(CompareStrings(smile, smile), 0);
  EXPECT_LT(CompareStrings(smile, smile + "a"), 0);
  EXPECT_GT(CompareStrings(smile + "b", smile + "a"), 0);
  EXPECT_NE(CompareStrings("\xFF", "\xFE"), 0) << "malformed UTF-8 still orders";
  Json v = {{"k1", last}, {"k2", smile}, {"k3", "z"}, {"k4", priv}};
  Query q;
  ASSERT_EQ(MessageOf(ParseQuery(Params({"orderBy=$value"}), &q)), "");
  EXPECT_EQ(QueryKeys(v, q), (std::vector<std::string>{"k3", "k2", "k4", "k1"}));
  Json keys = {{last, 1}, {smile, 1}, {"z", 1}, {"5", 1}};
  ASSERT_EQ(MessageOf(ParseQuery(Params({"orderBy=$key"}), &q)), "");
  EXPECT_EQ(QueryKeys(keys, q), (std::vector<std::string>{"5", "z", smile, last}));
}

// Keys matching ^-?(0*)\d{1,10}$ within the 32-bit range are integers to the official client
// (firebase 7.24 nameCompare), leading zeros and all; equal integers go to the shorter key. The
// expected order below is what that client answered for these keys (tests/peers).
TEST(QueryOrder, IntegerLikeKeysSortAsTheOfficialClientSortsThem) {
  const std::vector<std::string> sdk_order = {
      "-2147483648", "-10", "-01", "-0000000001", "00", "1", "01", "0001", "007", "8", "9", "10", "12",
      "0000000000012", "2147483647", "-2147483649", "2147483648", "Z", "_", "a", "~"};
  Json keys = Json::object();
  for (size_t i = 0; i < sdk_order.size(); ++i) keys[sdk_order[i]] = static_cast<int>(i);
  Query q;
  ASSERT_EQ(MessageOf(ParseQuery(Params({"orderBy=$key"}), &q)), "");
  EXPECT_EQ(QueryKeys(keys, q), sdk_order);
  EXPECT_LT(CompareKeys("1", "01"), 0);
  EXPECT_LT(CompareKeys("0", "-0"), 0);
  EXPECT_NE(CompareKeys("-0", "00"), 0) << "the official client ties these; a total order may not";
  // Bounds compare the same way: "00" is 0, below "1"; "01" equals only itself.
  ASSERT_EQ(MessageOf(ParseQuery(Params({"orderBy=$key", "startAt=\"00\""}), &q)), "");
  EXPECT_EQ(QueryKeys(Json({{"1", 1}}), q), (std::vector<std::string>{"1"}));
  ASSERT_EQ(MessageOf(ParseQuery(Params({"orderBy=$key", "startAt=\"00\"", "endAt=\"01\""}), &q)), "");
  EXPECT_EQ(QueryKeys(keys, q), (std::vector<std::string>{"00", "1", "01"}));
  ASSERT_EQ(MessageOf(ParseQuery(Params({"orderBy=$key", "equalTo=\"01\""}), &q)), "");
  EXPECT_EQ(ApplyQuery(keys, q), Json({{"01", 6}}));
  ASSERT_EQ(MessageOf(ParseQuery(Params({"orderBy=$key", "limitToFirst=1"}), &q)), "");
  EXPECT_EQ(ApplyQuery(Json({{"007", 1}, {"8", 1}}), q), Json({{"007", 1}}));
  // Ties of an ordered child are broken the same way.
  Json tied = Json::parse(R"({"8":{"h":1},"007":{"h":1},"b":{"h":1},"07":{"h":1}})");
  ASSERT_EQ(MessageOf(ParseQuery(Params({"orderBy=h"}), &q)), "");
  EXPECT_EQ(QueryKeys(tied, q), (std::vector<std::string>{"07", "007", "8", "b"}));
}

// A location holding a plain value has no children: a range or a limit selects none of them
// (null), orderBy alone answers the value (the official client's RangedFilter / LimitedFilter).
TEST(QueryRows, RangeOrLimitOnAPlainValueIsNull) {
  Query q;
  for (const std::vector<std::string>& params :
       {std::vector<std::string>{"orderBy=$value", "limitToFirst=1"}, {"orderBy=$value", "startAt=1"},
        {"orderBy=$key", "endAt=\"z\""}, {"orderBy=h", "equalTo=5"}, {"orderBy=$value", "limitToLast=3"}}) {
    ASSERT_EQ(MessageOf(ParseQuery(Params(params), &q)), "");
    EXPECT_TRUE(ApplyQuery(Json(5), q).is_null()) << q.Canonical();
    EXPECT_TRUE(ApplyQuery(Json("text"), q).is_null()) << q.Canonical();
  }
  ASSERT_EQ(MessageOf(ParseQuery(Params({"orderBy=$value"}), &q)), "");
  EXPECT_EQ(ApplyQuery(Json(5), q), Json(5));
}

// Which local children a cloud result proves gone: only those inside the range the result covers.
struct StaleCase {
  const char* name;
  std::vector<std::string> params;
  const char* local;
  const char* result;  // the cloud's answer to the query
  std::vector<std::string> want;
};

class StaleTable : public ::testing::TestWithParam<StaleCase> {};

TEST_P(StaleTable, OnlyWhatTheResultProves) {
  const StaleCase& c = GetParam();
  Query q;
  ASSERT_EQ(MessageOf(ParseQuery(Params(c.params), &q)), "") << c.name;
  std::vector<std::string> got = StaleKeys(Json::parse(c.local), Json::parse(c.result), q);
  std::sort(got.begin(), got.end());
  EXPECT_EQ(got, c.want) << c.name;
}

constexpr const char* kFive = R"({"a":1,"b":2,"c":3,"d":4,"e":5})";

INSTANTIATE_TEST_SUITE_P(
    Windows, StaleTable,
    ::testing::Values(
        StaleCase{"no limit: every missing child", {"orderBy=$key"}, kFive, R"({"a":1,"c":3,"e":5})", {"b", "d"}},
        StaleCase{"bounds", {"orderBy=$key", "startAt=\"b\"", "endAt=\"d\""}, kFive, R"({"c":3})", {"b", "d"}},
        StaleCase{"first, filled: up to the last child", {"orderBy=$key", "limitToFirst=2"}, kFive, R"({"a":1,"c":3})",
                  {"b"}},
        StaleCase{"first, not filled: the whole range", {"orderBy=$key", "limitToFirst=3"}, kFive, R"({"a":1,"c":3})",
                  {"b", "d", "e"}},
        StaleCase{"last, filled: from the first child", {"orderBy=$key", "limitToLast=2"}, kFive, R"({"c":3,"e":5})",
                  {"d"}},
        StaleCase{"last, filled, nothing missing", {"orderBy=$key", "limitToLast=2"}, kFive, R"({"d":4,"e":5})", {}},
        StaleCase{"empty result with a limit: all in range", {"orderBy=$key", "startAt=\"c\"", "limitToFirst=2"}, kFive,
                  "null", {"c", "d", "e"}},
        StaleCase{"value order, filled", {"orderBy=$value", "limitToFirst=2"}, kFive, R"({"b":2,"c":3})", {"a"}},
        StaleCase{"value order, new child inside", {"orderBy=$value", "limitToFirst=2"}, kFive, R"({"a":1,"x":1.5})",
                  {}},
        StaleCase{"value order, equalTo", {"orderBy=$value", "equalTo=3"}, kFive, "null", {"c"}},
        StaleCase{"value order, ties broken by key at the edge", {"orderBy=$value", "limitToFirst=2"},
                  R"({"a":1,"b":1,"c":1})", R"({"a":1,"c":1})", {"b"}},
        StaleCase{"child order", {"orderBy=h"}, R"({"p":{"h":1},"q":{"h":2},"r":{"x":0}})", R"({"q":{"h":2}})",
                  {"p", "r"}},
        StaleCase{"child order, bounds exclude the missing", {"orderBy=h", "startAt=2"},
                  R"({"p":{"h":1},"q":{"h":2},"r":{"x":0}})", R"({"q":{"h":2}})", {}},
        StaleCase{"array form of the result", {"orderBy=$key"}, R"({"0":"x","1":"y","2":"z"})", R"(["x",null,"z"])",
                  {"1"}},
        StaleCase{"local is a plain value", {"orderBy=$key"}, "7", "null", {}}));

TEST(QueryParse, SessionParamsAreSkippedAndNoQueryIsEmpty) {
  Query q;
  ASSERT_EQ(MessageOf(ParseQuery(Params({".cs=abcdefgh", ".dis=add"}), &q)), "");
  EXPECT_TRUE(q.empty());
  EXPECT_EQ(q.Canonical(), "");
}

TEST(QueryParse, CanonicalAndRestForms) {
  Query q;
  ASSERT_EQ(MessageOf(ParseQuery(Params({"limitToLast=2", "startAt=\"a b\"", "orderBy=$key"}), &q)), "");
  EXPECT_EQ(q.Canonical(), "orderBy=\"$key\"&startAt=\"a b\"&limitToLast=2");
  EXPECT_EQ(q.RestParams(), "orderBy=%22%24key%22&startAt=%22a%20b%22&limitToLast=2");
  Query same;
  ASSERT_EQ(MessageOf(ParseQuery(Params({"orderBy=\"$key\"", "startAt=\"a b\"", "limitToLast=2"}), &same)), "");
  EXPECT_EQ(same.Canonical(), q.Canonical());
  ASSERT_EQ(MessageOf(ParseQuery(Params({"orderBy=h", "equalTo=3"}), &q)), "");
  EXPECT_EQ(q.Canonical(), "orderBy=\"h\"&equalTo=3");
}

struct BadCase {
  std::vector<std::string> params;
  const char* diagnostic_contains;
};

class QueryErrors : public ::testing::TestWithParam<BadCase> {};

TEST_P(QueryErrors, ClearDiagnostic) {
  Query q;
  auto r = ParseQuery(Params(GetParam().params), &q);
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, ErrorCode::kInvalid);
  std::string e = r.error().message;
  EXPECT_NE(e.find(GetParam().diagnostic_contains), std::string::npos) << "got: " << e;
  EXPECT_LE(e.size(), 120u);
}

INSTANTIATE_TEST_SUITE_P(
    Bad, QueryErrors,
    ::testing::Values(BadCase{{"limitToFirst=2"}, "orderBy is required"},
                      BadCase{{"orderBy=$key", "limitToFirst=0"}, "positive integer"},
                      BadCase{{"orderBy=$key", "limitToFirst=-3"}, "positive integer"},
                      BadCase{{"orderBy=$key", "limitToLast=x"}, "positive integer"},
                      BadCase{{"orderBy=$key", "limitToFirst=1", "limitToLast=1"}, "not both"},
                      BadCase{{"orderBy=h", "startAt=abc"}, "JSON scalar"},
                      BadCase{{"orderBy=h", "startAt={\"a\":1}"}, "JSON scalar"},
                      BadCase{{"orderBy=h", "equalTo=1", "startAt=0"}, "equalTo cannot"},
                      BadCase{{"orderBy=$key", "startAt=3"}, "string bounds"},
                      BadCase{{"orderBy=$priority"}, "not supported"},
                      BadCase{{"orderBy=a.b"}, "contains one of"},
                      BadCase{{"orderBy="}, "needs $key"},
                      BadCase{{"orderBy=$key", "orderBy=$value"}, "twice"},
                      BadCase{{"orderBy"}, "needs a value"},
                      BadCase{{"shallow=true"}, "unknown query parameter 'shallow'"}));

}  // namespace
}  // namespace tether
