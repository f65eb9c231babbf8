// The local copy's write and read semantics are Firebase's (issue 21, issue 16 item 9), checked
// through the real DeviceApi and store in process (tests/gateway/device_api_harness.h, local-only
// mode). Each expectation is what the official client (firebase 7.24 against firebase-server,
// tests/peers) answers for the same operations; tests/peers/differential.js compares the two at
// random, these are the cases it found, kept as fixed regressions.
#pragma GCC diagnostic ignored "-Wmissing-field-initializers"
#include <gtest/gtest.h>

#include <fmt/format.h>

#include <optional>
#include <string>
#include <tuple>
#include <vector>

#include "tests/gateway/device_api_harness.h"

namespace tether::testing {
namespace {

constexpr uint8_t kGet = coap::code::kGet, kPut = coap::code::kPut, kPost = coap::code::kPost,
                  kDelete = coap::code::kDelete, kPatch = coap::code::kPatch;

struct Answer {
  std::string code;
  std::string payload;
  std::optional<uint32_t> content_format;
  Json json() const { return Json::parse(payload, nullptr, false); }
};

class Data : public ::testing::Test {
 protected:
  void SetUp() override {
    cs_ = gw_.Open(Peer(1), 1);
    ASSERT_EQ(cs_.size(), 8u);
  }

  // A native request: JSON body (Content-Format 50) when `body` is set, Accept `accept` if set.
  Answer Ask(uint8_t method, const std::string& path, std::optional<std::string> body = std::nullopt,
             const std::vector<std::string>& query = {}, std::optional<uint32_t> accept = 50u) {
    Build b = Request(method, path, cs_, ++mid_);
    for (const auto& q : query) b.Opt(coap::opt::kUriQuery, BytesOf(q));
    if (body) {
      b.OptUint(coap::opt::kContentFormat, 50);
      b.payload = BytesOf(*body);
    }
    if (accept) b.OptUint(coap::opt::kAccept, *accept);
    return Send(b);
  }
  // An SDK-shaped request: CBOR bytes, no Content-Format or Accept.
  Answer AskCbor(uint8_t method, const std::string& path, const Bytes& cbor) {
    Build b = Request(method, path, cs_, ++mid_);
    b.payload = cbor;
    return Send(b);
  }
  Answer Send(const Build& b) {
    const Packet* p = gw_.Ask(Peer(1), b);
    if (!p) return {"no reply", "", std::nullopt};
    return {fmt::format("{}.{:02d}", p->m.code >> 5, p->m.code & 31), p->payload(),
            p->m.UintOption(coap::opt::kContentFormat)};
  }
  Json Read(const std::string& path) {
    Answer a = Ask(kGet, path);
    EXPECT_EQ(a.code, "2.05") << path << ": " << a.payload;
    return a.json();
  }
  void Write(uint8_t method, const std::string& path, const std::string& body) {
    Answer a = Ask(method, path, body);
    ASSERT_EQ(a.code, "2.05") << path << " " << body << ": " << a.payload;
  }
  // The payloads queued for upload, oldest first.
  std::vector<std::string> Queued() {
    std::vector<std::string> out;
    for (const auto& e : gw_.store().queue().Peek("all", 1000)) out.push_back(e.payload);
    return out;
  }

  Gateway gw_;
  std::string cs_;
  uint16_t mid_ = 100;
};

// Removing a child that does not exist is a no-op, also when a plain value stands above it.
TEST_F(Data, RemovingBelowALeafLeavesTheLeaf) {
  const Json start = Json::parse(R"({"k":{"a":2},"m":1})");
  Write(kPut, "r", start.dump());
  Write(kDelete, "r/k/a/b", "");
  EXPECT_EQ(Read("r"), start) << "DELETE below a leaf";
  Write(kPut, "r/k/a/b/c", "null");
  EXPECT_EQ(Read("r"), start) << "PUT null below a leaf";
  Write(kPut, "r/m/x", R"({"y":null})");
  EXPECT_EQ(Read("r"), start) << "PUT of a value that normalizes to null below a leaf";
  Write(kPatch, "r/k", R"({"a/b":null})");
  EXPECT_EQ(Read("r"), start) << "PATCH null below a leaf";
  // A value below a leaf replaces the leaf (the leaf's place becomes an object).
  Write(kPut, "r/m/x", "1");
  EXPECT_EQ(Read("r"), Json::parse(R"({"k":{"a":2},"m":{"x":1}})"));
}

// Null members of an update remove their child, whatever else the update holds.
TEST_F(Data, UpdateNullMembersRemove) {
  Write(kPut, "r", R"({"k":1,"m":2,"n":{"x":1,"y":2},"o":{"p":1}})");
  Write(kPatch, "r", R"({"k":null,"m":3})");
  EXPECT_EQ(Read("r"), Json::parse(R"({"m":3,"n":{"x":1,"y":2},"o":{"p":1}})"));
  Write(kPatch, "r", R"({"n/x":null})");
  EXPECT_EQ(Read("r/n"), Json::parse(R"({"y":2})"));
  Write(kPatch, "r", R"({"o":{"p":null}})");  // the child's new value is empty: it goes
  EXPECT_EQ(Read("r"), Json::parse(R"({"m":3,"n":{"y":2}})"));
  Write(kPatch, "r", R"({"m":null})");  // only nulls
  EXPECT_EQ(Read("r"), Json::parse(R"({"n":{"y":2}})"));
  // What is uploaded says the same: the nulls are in the queued update.
  std::vector<std::string> queued = Queued();
  ASSERT_GE(queued.size(), 2u);
  EXPECT_EQ(Json::parse(queued[1]), Json::parse(R"({"k":null,"m":3})"));
  EXPECT_EQ(Json::parse(queued.back()), Json::parse(R"({"m":null})"));
  // The SDK's CBOR: a definite map {"n": null} and an indefinite-length map {"q": null}.
  Write(kPut, "s", R"({"n":1,"q":2,"z":3})");
  ASSERT_EQ(AskCbor(kPatch, "s", {0xa1, 0x61, 'n', 0xf6}).code, "2.05");
  ASSERT_EQ(AskCbor(kPatch, "s", {0xbf, 0x61, 'q', 0xf6, 0xff}).code, "2.05");
  EXPECT_EQ(Read("s"), Json::parse(R"({"z":3})"));
  // An empty update changes nothing.
  Write(kPatch, "s", "{}");
  EXPECT_EQ(Read("s"), Json::parse(R"({"z":3})"));
}

// Firebase refuses an update whose paths overlap (one is another's ancestor): so does the gateway,
// rather than queue an upload the cloud would refuse.
TEST_F(Data, OverlappingUpdatePathsAreRefused) {
  Answer a = Ask(kPatch, "r", R"({"a":1,"a/b":2})");
  EXPECT_EQ(a.code, "4.00");
  EXPECT_NE(a.payload.find("overlap"), std::string::npos) << a.payload;
  EXPECT_EQ(Ask(kPatch, "r", R"({"a/b":1,"a//b/":2})").code, "4.00");
  EXPECT_EQ(Ask(kPatch, "r", R"({"a/b":1,"a/c":2,"ab":3})").code, "2.05");
  EXPECT_EQ(Read("r"), Json::parse(R"({"a":{"b":1,"c":2},"ab":3})"));
}

TEST_F(Data, RangeOrLimitQueryOnAPlainValueIsNull) {
  Write(kPut, "r", "5");
  Answer a = Ask(kGet, "r", std::nullopt, {"orderBy=$value", "limitToFirst=1"});
  EXPECT_EQ(a.code, "2.05");
  EXPECT_EQ(a.payload, "null");
  EXPECT_EQ(Ask(kGet, "r", std::nullopt, {"orderBy=$value", "startAt=1"}).payload, "null");
  EXPECT_EQ(Ask(kGet, "r", std::nullopt, {"orderBy=$value"}).payload, "5") << "orderBy alone: the value";
}

TEST_F(Data, IntegerLikeKeysSortAsIntegers) {
  Write(kPut, "r", R"({"007":1,"8":1})");
  EXPECT_EQ(Ask(kGet, "r", std::nullopt, {"orderBy=$key", "limitToFirst=1"}).json(), Json::parse(R"({"007":1})"));
  Write(kPut, "r", R"({"1":1})");
  EXPECT_EQ(Ask(kGet, "r", std::nullopt, {"orderBy=$key", "startAt=\"00\""}).json(), Json::parse(R"({"1":1})"));
  Write(kPut, "r", R"({"8":{"h":1},"007":{"h":1}})");
  EXPECT_EQ(Ask(kGet, "r", std::nullopt, {"orderBy=h", "limitToLast=1"}).json(), Json::parse(R"({"8":{"h":1}})"));
}

// A native client that asked with Accept (or sent Content-Format) is told the format of every data
// payload; a diagnostic (RFC 7252 §5.5.2) and an empty payload carry none, the push key is text.
TEST_F(Data, NativeRepliesNameTheirContentFormat) {
  Write(kPut, "r", R"({"a":1})");
  Answer a = Ask(kGet, "r");
  EXPECT_EQ(a.content_format, 50u);
  EXPECT_EQ(a.json(), Json::parse(R"({"a":1})"));
  EXPECT_EQ(Ask(kGet, "r", std::nullopt, {}, 60u).content_format, 60u);
  EXPECT_EQ(Ask(kGet, "r", std::nullopt, {"orderBy=$key", "limitToFirst=1"}).content_format, 50u);
  EXPECT_EQ(Ask(kGet, "nothing").content_format, 50u) << "null is data too";
  Answer cas = Ask(kPut, "r", R"({".cas":{"expect":{"a":2},"value":3}})");
  EXPECT_EQ(cas.code, "4.12");
  EXPECT_EQ(cas.content_format, 50u);
  EXPECT_EQ(cas.json(), Json::parse(R"({"a":1})"));
  Answer push = Ask(kPost, "r", "1");
  EXPECT_EQ(push.code, "2.05");
  EXPECT_EQ(push.payload.size(), 20u);
  EXPECT_EQ(push.content_format, 0u) << "the key as text/plain";
  Answer written = Ask(kPut, "r/b", "2");
  EXPECT_TRUE(written.payload.empty());
  EXPECT_FALSE(written.content_format.has_value());
  Answer bad = Ask(kPut, "r/b", "{");
  EXPECT_EQ(bad.code, "4.00");
  EXPECT_FALSE(bad.content_format.has_value()) << "a diagnostic is not data";
  // SDK requests (neither option) get no Content-Format, as in the traces.
  Build sdk = Request(kGet, "r", cs_, ++mid_);
  Answer plain = Send(sdk);
  EXPECT_EQ(plain.code, "2.05");
  EXPECT_FALSE(plain.content_format.has_value());
}

// Issue 16 item 9: an increment is Firebase's sum. Integers add as 64-bit integers while the sum
// fits; an overflow, or an integer beyond int64 (a double in Firebase), gives a double; a result
// that is not a finite number is refused with 4.00 and changes nothing.
TEST_F(Data, IncrementsGiveFirebasesResult) {
  struct Row {
    const char* start;
    const char* by;
    const char* want;  // JSON, compared by type and value
  };
  const Row rows[] = {
      {"5", "2", "7"},
      {"5", "-7", "-2"},
      {"9223372036854775806", "1", "9223372036854775807"},
      {"9223372036854775807", "1", "9.223372036854775808e18"},
      {"-9223372036854775808", "-1", "-9.223372036854775808e18"},
      {"18446744073709551615", "1", "1.8446744073709552e19"},
      {"1", "18446744073709551615", "1.8446744073709552e19"},
      {"2.5", "1", "3.5"},
      {"\"text\"", "3", "3"},
      {"{\"x\":1}", "3", "3"},
  };
  for (const Row& r : rows) {
    Write(kPut, "n", r.start);
    Write(kPut, "n", fmt::format(R"({{".sv":{{"increment":{}}}}})", r.by));
    Json got = Read("n"), want = Json::parse(r.want);
    EXPECT_EQ(got, want) << r.start << " + " << r.by;
    EXPECT_EQ(got.is_number_float(), want.is_number_float()) << r.start << " + " << r.by << " = " << got.dump();
  }
  for (const char* write : {R"({".sv":{"increment":1e308}})", R"({"x":{".sv":{"increment":1e308}}})"}) {
    Write(kPut, "big", R"({"x":1e308})");
    const std::string path = std::string(write).find("\"x\"") != std::string::npos ? "big" : "big/x";
    Answer a = Ask(kPut, path, write);
    EXPECT_EQ(a.code, "4.00") << write;
    EXPECT_NE(a.payload.find("finite"), std::string::npos) << a.payload;
    EXPECT_EQ(Read("big"), Json::parse(R"({"x":1e308})")) << write;
  }
  Answer a = Ask(kPatch, "big", R"({"x":{".sv":{"increment":-1e308}},"y":{".sv":{"increment":-1e308}}})");
  EXPECT_EQ(a.code, "2.05") << a.payload;
  EXPECT_EQ(Read("big"), Json::parse(R"({"x":0.0,"y":-1e308})"));
  a = Ask(kPatch, "big", R"({"y":{".sv":{"increment":-1e308}},"z":1})");
  EXPECT_EQ(a.code, "4.00") << a.payload;
  EXPECT_EQ(Read("big"), Json::parse(R"({"x":0.0,"y":-1e308})")) << "a refused update changes nothing";
  // Nothing refused was queued for upload.
  for (const std::string& p : Queued()) EXPECT_EQ(p.find("\"z\""), std::string::npos) << p;
}

// The same rules when a session's onDisconnect operations fire: an update's nulls remove, and an
// increment whose sum is not finite (nobody to tell by then) leaves the number as it was without
// holding up the operations after it.
TEST_F(Data, OnDisconnectOperationsFollowTheSameRules) {
  Write(kPut, "r", R"({"k":1,"m":2,"big":1e308})");
  for (const auto& [method, path, body] : std::vector<std::tuple<uint8_t, std::string, std::string>>{
           {kPatch, "r", R"({"k":null,"m":3})"},
           {kPut, "r/big", R"({".sv":{"increment":1e308}})"},
           {kPut, "r/gone", "true"}}) {
    Build b = Request(method, path, cs_, ++mid_);
    b.Opt(coap::opt::kUriQuery, BytesOf(".dis=add"));
    b.OptUint(coap::opt::kContentFormat, 50);
    b.payload = BytesOf(body);
    ASSERT_EQ(Send(b).code, "2.05") << path << " " << body;
  }
  ASSERT_EQ(Send(Request(kGet, ".off", cs_, ++mid_)).code, "2.05");
  cs_ = gw_.Open(Peer(1), ++mid_);
  ASSERT_EQ(cs_.size(), 8u);
  EXPECT_EQ(Read("r"), Json::parse(R"({"m":3,"big":1e308,"gone":true})"));
}

}  // namespace
}  // namespace tether::testing
