#include "upstream/batch_builder.h"

#include <gtest/gtest.h>

#include <vector>

#include "upstream/db_url.h"

namespace tether::upstream {
namespace {

using K = OutboundOp::Kind;
OutboundOp Op(uint64_t seq, K kind, std::string path, std::string json = "null", int64_t t = 0) {
  return {seq, "r", kind, std::move(path), std::move(json), t};
}

TEST(BatchBuilder, PathsOverlap) {
  EXPECT_TRUE(PathsOverlap("a/b", "a"));
  EXPECT_TRUE(PathsOverlap("a", "a/b/c"));
  EXPECT_TRUE(PathsOverlap("a/b", "a/b"));
  EXPECT_FALSE(PathsOverlap("a/b", "a/bc"));
  EXPECT_FALSE(PathsOverlap("a/b", "a/c"));
  EXPECT_TRUE(PathsOverlap("", "x"));
}

TEST(BatchBuilder, Shapes) {
  std::vector<OutboundOp> ops = {
      Op(1, K::Set, "dev/1/temp", "21.5"),
      Op(2, K::Update, "dev/2", R"({"a":1,"b":{"c":2}})"),
      Op(3, K::Remove, "dev/3"),
      Op(4, K::Push, "log/-Nabc", R"({"t":{".sv":"timestamp"}})", 1234),
  };
  Batch b = BuildBatch(ops, {});
  EXPECT_EQ(b.op_count, 4u);
  EXPECT_EQ(b.last_seq, 4u);
  EXPECT_EQ(b.body, nlohmann::json::parse(
                        R"({"dev/1/temp":21.5,"dev/2/a":1,"dev/2/b":{"c":2},"dev/3":null,
                            "log/-Nabc":{"t":1234}})"));
}

TEST(BatchBuilder, OverlapEndsBatch) {
  std::vector<OutboundOp> ops = {Op(1, K::Set, "a/b", "1"), Op(2, K::Set, "c", "2"),
                                 Op(3, K::Set, "a", "3"), Op(4, K::Set, "d", "4")};
  Batch b = BuildBatch(ops, {});
  EXPECT_EQ(b.op_count, 2u);
  EXPECT_EQ(b.last_seq, 2u);
  Batch b2 = BuildBatch(std::span(ops).subspan(2), {});
  EXPECT_EQ(b2.op_count, 2u);
  // Same path twice also ends the batch (the later write must win).
  std::vector<OutboundOp> same = {Op(1, K::Set, "x", "1"), Op(2, K::Set, "x", "2")};
  EXPECT_EQ(BuildBatch(same, {}).op_count, 1u);
  // A descendant after its ancestor.
  std::vector<OutboundOp> desc = {Op(1, K::Update, "x", R"({"y":1})"), Op(2, K::Set, "x/y/z", "2")};
  EXPECT_EQ(BuildBatch(desc, {}).op_count, 1u);
}

TEST(BatchBuilder, WriteOfTheRouteRootIsAPutOfItsOwn) {
  // A set of the root replaces the whole route subtree: it cannot share a multi-path PATCH
  // (there is no key for "this location itself"), so it travels alone as a PUT.
  std::vector<OutboundOp> ops = {Op(1, K::Set, "a", "1"), Op(2, K::Set, "", R"({"x":{".sv":"timestamp"}})", 77),
                                 Op(3, K::Remove, "/"), Op(4, K::Update, "", R"({"p":1,"q":2})")};
  Batch b1 = BuildBatch(ops, {});
  EXPECT_EQ(b1.op_count, 1u);
  EXPECT_FALSE(b1.replace_root);
  Batch b2 = BuildBatch(std::span(ops).subspan(1), {});
  EXPECT_EQ(b2.op_count, 1u);
  EXPECT_TRUE(b2.replace_root);
  EXPECT_EQ(b2.body, nlohmann::json::parse(R"({"x":77})"));
  Batch b3 = BuildBatch(std::span(ops).subspan(2), {});
  EXPECT_EQ(b3.op_count, 1u);
  EXPECT_TRUE(b3.replace_root);
  EXPECT_TRUE(b3.body.is_null()) << "PUT null removes the root";
  Batch b4 = BuildBatch(std::span(ops).subspan(3), {});  // an update of the root names its children
  EXPECT_FALSE(b4.replace_root);
  EXPECT_EQ(b4.body, nlohmann::json::parse(R"({"p":1,"q":2})"));
}

TEST(BatchBuilder, Limits) {
  std::vector<OutboundOp> ops;
  for (int i = 0; i < 100; ++i) ops.push_back(Op(i + 1, K::Set, "k" + std::to_string(i), "12345"));
  EXPECT_EQ(BuildBatch(ops, {.max_ops = 10}).op_count, 10u);
  size_t n = BuildBatch(ops, {.max_ops = 1000, .max_bytes = 100}).op_count;
  EXPECT_GE(n, 1u);
  EXPECT_LT(n, 10u);
  EXPECT_EQ(BuildBatch(ops, {.max_ops = 1000, .max_bytes = 1}).op_count, 1u);  // never empty
}

TEST(BatchBuilder, MalformedPayload) {
  std::vector<OutboundOp> ops = {Op(1, K::Set, "a", "1"), Op(2, K::Set, "b", "{bad"),
                                 Op(3, K::Set, "c", "3")};
  Batch b = BuildBatch(ops, {});
  EXPECT_EQ(b.op_count, 1u);
  EXPECT_EQ(b.bad_op, 1);
  EXPECT_EQ(BuildBatch(std::span(ops).subspan(1), {}).bad_op, 0);
}

TEST(BatchBuilder, ServerTimestampsNested) {
  auto v = nlohmann::json::parse(R"({"a":[{".sv":"timestamp"}],"b":{".sv":{"increment":1}}})");
  ResolveServerTimestamps(v, 99);
  EXPECT_EQ(v["a"][0], 99);
  EXPECT_TRUE(v["b"].contains(".sv"));
}

TEST(BatchBuilder, ABatchNeverMixesIdentities) {
  // Writes of two devices uploaded with auth_variable_override: one request is evaluated as one
  // identity, so the batch ends where the device changes, even though the paths do not overlap.
  std::vector<OutboundOp> ops = {Op(1, K::Set, "d1/a", "1"), Op(2, K::Set, "d1/b", "2"),
                                 Op(3, K::Set, "d2/a", "3"), Op(4, K::Set, "d1/c", "4")};
  ops[0].auth_override = ops[1].auth_override = ops[3].auth_override = R"({"uid":"d1"})";
  ops[2].auth_override = R"({"uid":"d2"})";
  Batch b = BuildBatch(ops, {});
  EXPECT_EQ(b.op_count, 2u);
  EXPECT_EQ(b.last_seq, 2u);
  Batch second = BuildBatch(std::span(ops).subspan(2), {});
  EXPECT_EQ(second.op_count, 1u);
  for (auto& op : ops) op.auth_override.clear();
  EXPECT_EQ(BuildBatch(ops, {}).op_count, 4u) << "without overrides they share a batch";
}

TEST(BatchBuilder, TimestampsWithoutAnEventTimeAreLeftToTheCloud) {
  std::vector<OutboundOp> ops = {Op(1, K::Set, "a", R"({"t":{".sv":"timestamp"}})"),
                                 Op(2, K::Set, "b", R"({"t":{".sv":"timestamp"}})", 99)};
  ops[0].event_time_ms = std::nullopt;  // arrival-time route
  Batch b = BuildBatch(ops, {});
  EXPECT_EQ(b.body, nlohmann::json::parse(R"({"a":{"t":{".sv":"timestamp"}},"b":{"t":99}})"));
}

TEST(DatabaseUrl, EncodesEverySegmentOnce) {
  EXPECT_EQ(DatabaseUrl("http://h:1", ""), "http://h:1/.json");
  EXPECT_EQ(DatabaseUrl("http://h:1", "/a/b/", "print=silent"), "http://h:1/a/b.json?print=silent");
  EXPECT_EQ(DatabaseUrl("http://h:1", "a b/q?x/amp&y/pct%41/plus+z"),
            "http://h:1/a%20b/q%3Fx/amp%26y/pct%2541/plus%2Bz.json");
  EXPECT_EQ(EncodeDatabasePath("\xc3\xbc/\xe6\x97\xa5"), "%C3%BC/%E6%97%A5");  // UTF-8 bytes
  EXPECT_EQ(EncodeDatabasePath("a//b"), "a/b");
  EXPECT_EQ(EncodeDatabasePath("-Nab_c~1"), "-Nab_c~1") << "unreserved characters stay";
}

}  // namespace
}  // namespace tether::upstream
