#include "upstream/sse_parser.h"

#include <gtest/gtest.h>

#include <vector>

namespace tether::upstream {
namespace {

std::vector<SseEvent> Parse(std::string_view in, size_t chunk = 1000) {
  std::vector<SseEvent> out;
  SseParser p([&](const SseEvent& e) { out.push_back(e); });
  for (size_t i = 0; i < in.size(); i += chunk) p.Feed(in.substr(i, chunk));
  return out;
}

TEST(SseParser, Table) {
  struct Case {
    std::string in;
    std::vector<std::pair<std::string, std::string>> want;  // (type, data)
  } cases[] = {
      {"event: put\ndata: {}\n\n", {{"put", "{}"}}},
      {"event: put\r\ndata: a\r\n\r\n", {{"put", "a"}}},
      {"event: put\rdata: a\r\r", {{"put", "a"}}},
      {"data: a\ndata: b\n\n", {{"message", "a\nb"}}},
      {": comment\ndata:x\n\n", {{"message", "x"}}},
      {"\xEF\xBB\xBF" "data: bom\n\n", {{"message", "bom"}}},
      {"data\n\n", {{"message", ""}}},
      {"event: put\n\n", {}},                 // no data: nothing dispatched
      {"data: partial", {}},                  // not terminated
      {"data:  two spaces\n\n", {{"message", " two spaces"}}},
      {"event: a\ndata: 1\n\nevent: b\ndata: 2\n\n", {{"a", "1"}, {"b", "2"}}},
  };
  for (const auto& c : cases) {
    for (size_t chunk : {1, 2, 3, 1000}) {
      auto got = Parse(c.in, chunk);
      ASSERT_EQ(got.size(), c.want.size()) << c.in << " chunk " << chunk;
      for (size_t i = 0; i < got.size(); ++i) {
        EXPECT_EQ(got[i].type, c.want[i].first) << c.in;
        EXPECT_EQ(got[i].data, c.want[i].second) << c.in;
      }
    }
  }
}

TEST(SseParser, FirebaseDecode) {
  auto put = DecodeFirebaseEvent({"put", R"({"path":"/a","data":{"b":1}})", ""});
  EXPECT_EQ(put.kind, FirebaseEvent::Kind::Put);
  EXPECT_EQ(put.path, "/a");
  EXPECT_EQ(put.data["b"], 1);
  auto patch = DecodeFirebaseEvent({"patch", R"({"path":"/","data":{"x":null}})", ""});
  EXPECT_EQ(patch.kind, FirebaseEvent::Kind::Patch);
  EXPECT_TRUE(patch.data["x"].is_null());
  EXPECT_EQ(DecodeFirebaseEvent({"keep-alive", "null", ""}).kind, FirebaseEvent::Kind::KeepAlive);
  EXPECT_EQ(DecodeFirebaseEvent({"cancel", "null", ""}).kind, FirebaseEvent::Kind::Cancel);
  auto rev = DecodeFirebaseEvent({"auth_revoked", "credential is no longer valid", ""});
  EXPECT_EQ(rev.kind, FirebaseEvent::Kind::AuthRevoked);
  EXPECT_EQ(DecodeFirebaseEvent({"put", "not json", ""}).kind, FirebaseEvent::Kind::Unknown);
  EXPECT_EQ(DecodeFirebaseEvent({"put", R"({"data":1})", ""}).kind, FirebaseEvent::Kind::Unknown);
}

}  // namespace
}  // namespace tether::upstream
