// Cloud data written into the local copy keeps the writes still queued for upload on top
// (store/pending_overlay.h): table-driven over entry kinds, positions and server values.
#include <gtest/gtest.h>
#include <lmdb.h>

#include <algorithm>

#include "store/store.h"
#include "tests/store/store_fixture.h"

namespace tether::store {
namespace {

using nlohmann::json;
using testing::TempDir;

struct Pending {
  const char* route;
  OpKind kind;
  const char* path;
  const char* payload;
  bool in_flight = false;  // handed to the uploader: the cloud's data may already hold it
};

struct Case {
  const char* name;
  std::vector<Pending> pending;
  const char* cloud_path;
  const char* cloud_value;  // JSON
  bool patch;
  const char* read_path;
  const char* want;  // JSON at read_path afterwards
};

QueueEntry EntryOf(const Pending& p) {
  QueueEntry e = testing::Entry(p.route, p.path, p.payload, 1'000'000);
  e.kind = p.kind;
  e.cloud_offset_ms = 5;
  return e;
}

class OverlayTable : public ::testing::TestWithParam<Case> {};

TEST_P(OverlayTable, CloudDataPlusPendingWrites) {
  const Case& c = GetParam();
  TempDir dir;
  auto store = Store::Open(dir.Sub("db"), StoreOptions{}, nullptr);
  std::vector<uint64_t> in_flight;
  for (const Pending& p : c.pending) {
    WriteBatch b;
    b.Append(EntryOf(p));
    BatchResult r = store->CommitBlocking(std::move(b));
    ASSERT_TRUE(r.status.ok()) << r.status.ToString();
    if (p.in_flight) in_flight.push_back(r.seqs.at(0));
  }
  WriteBatch cloud;
  if (c.patch) cloud.TreeUpdateFromCloud(c.cloud_path, json::parse(c.cloud_value), in_flight);
  else cloud.TreeSetFromCloud(c.cloud_path, json::parse(c.cloud_value), in_flight);
  BatchResult r = store->CommitBlocking(std::move(cloud));
  ASSERT_TRUE(r.status.ok()) << r.status.ToString();
  EXPECT_EQ(store->tree().Get(c.read_path), json::parse(c.want)) << c.name;
  CheckReport check = store->Check();
  EXPECT_TRUE(check.ok) << (check.problems.empty() ? "" : check.problems.front());
}

constexpr OpKind kSet = OpKind::kSet, kUpdate = OpKind::kUpdate, kRemove = OpKind::kRemove,
                 kCas = OpKind::kConditionalSet, kPush = OpKind::kPush;

INSTANTIATE_TEST_SUITE_P(
    Kinds, OverlayTable,
    ::testing::Values(
        Case{"no pending: the cloud's value", {}, "/r/a", R"({"y":2})", false, "/r/a", R"({"y":2})"},
        Case{"set below", {{"q", kSet, "/r/a/x", "1"}}, "/r/a", R"({"y":2})", false, "/r/a", R"({"x":1,"y":2})"},
        Case{"set at", {{"q", kSet, "/r/a", "5"}}, "/r/a", R"({"y":2})", false, "/r/a", "5"},
        Case{"push below", {{"q", kPush, "/r/a/-Nk1", R"({"t":1})"}}, "/r/a", R"({"y":2})", false, "/r/a",
             R"({"-Nk1":{"t":1},"y":2})"},
        Case{"set above: its part at the path", {{"q", kSet, "/r", R"({"a":{"z":3},"b":1})"}}, "/r/a", R"({"y":2})",
             false, "/r", R"({"a":{"z":3}})"},
        Case{"set above without a part there", {{"q", kSet, "/r", "7"}}, "/r/a", R"({"y":2})", false, "/r", "7"},
        Case{"remove below", {{"q", kRemove, "/r/a/y", "null"}}, "/r/a", R"({"y":2,"w":1})", false, "/r/a",
             R"({"w":1})"},
        Case{"remove above", {{"q", kRemove, "/r", "null"}}, "/r/a", R"({"y":2})", false, "/r", "null"},
        Case{"update child inside", {{"q", kUpdate, "/r", R"({"a/x":1,"b":2})"}}, "/r/a", R"({"y":2})", false, "/r",
             R"({"a":{"x":1,"y":2}})"},
        Case{"update child above", {{"q", kUpdate, "/", R"({"r":{"a":{"q":1}}})"}}, "/r/a", R"({"y":2})", false, "/r/a",
             R"({"q":1})"},
        Case{"update elsewhere", {{"q", kUpdate, "/r", R"({"b":2})"}}, "/r/a", R"({"y":2})", false, "/r",
             R"({"a":{"y":2}})"},
        Case{"sibling with a common prefix", {{"q", kSet, "/r/ab", "1"}, {"q", kSet, "/r/a-b", "1"}}, "/r/a",
             R"({"y":2})", false, "/r", R"({"a":{"y":2}})"},
        Case{"queue order across routes", {{"q", kSet, "/r/a/x", "1"}, {"p", kSet, "/r/a/x", "2"}}, "/r/a",
             R"({"y":2})", false, "/r/a/x", "2"},
        Case{"increments add to the cloud's number",
             {{"q", kSet, "/r/a/n", R"({".sv":{"increment":2}})"}, {"p", kUpdate, "/r/a", R"({"n":{".sv":{"increment":3}}})"}},
             "/r/a", R"({"n":10})", false, "/r/a/n", "15"},
        Case{"an increment in flight is not counted twice",
             {{"q", kSet, "/r/a/n", R"({".sv":{"increment":2}})", true}, {"q", kSet, "/r/a/n", R"({".sv":{"increment":3}})"}},
             "/r/a", R"({"n":12})", false, "/r/a/n", "15"},
        Case{"an increment over a non-number counts from 0", {{"q", kSet, "/r/a/n", R"({".sv":{"increment":2}})"}},
             "/r/a", R"({"n":"x"})", false, "/r/a/n", "2"},
        Case{"an increment past int64 becomes a double", {{"q", kSet, "/r/a/n", R"({".sv":{"increment":1}})"}},
             "/r/a", R"({"n":9223372036854775807})", false, "/r/a/n", "9.223372036854775808e18"},
        Case{"an increment with no finite result leaves the cloud's number",
             {{"q", kSet, "/r/a/n", R"({".sv":{"increment":1e308}})"}}, "/r/a", R"({"n":1e308,"m":1})", false, "/r/a",
             R"({"n":1e308,"m":1})"},
        Case{"remove below a leaf leaves the leaf", {{"q", kRemove, "/r/a/y/z", "null"}}, "/r/a", R"({"y":2,"w":1})",
             false, "/r/a", R"({"y":2,"w":1})"},
        Case{"update with null members removes them", {{"q", kUpdate, "/r/a", R"({"y":null,"v/u":null,"x":1})"}},
             "/r/a", R"({"y":2,"v":{"u":1,"t":2},"w":1})", false, "/r/a", R"({"v":{"t":2},"w":1,"x":1})"},
        Case{"update null member below a leaf", {{"q", kUpdate, "/r", R"({"a/y/z":null})"}}, "/r/a", R"({"y":2})",
             false, "/r/a", R"({"y":2})"},
        Case{"timestamp is the event time", {{"q", kSet, "/r/a/t", R"({".sv":"timestamp"})"}}, "/r/a", "null", false,
             "/r/a/t", "1000005"},
        Case{"compare-and-set that still matches", {{"q", kCas, "/r/a", R"({"expect":{"y":2},"value":{"y":3}})"}},
             "/r/a", R"({"y":2})", false, "/r/a", R"({"y":3})"},
        Case{"compare-and-set that will conflict", {{"q", kCas, "/r/a", R"({"expect":{"y":2},"value":{"y":3}})"}},
             "/r/a", R"({"y":7})", false, "/r/a", R"({"y":7})"},
        Case{"compare-and-set after an earlier pending write",
             {{"q", kSet, "/r/a", R"({"y":2})"}, {"q", kCas, "/r/a", R"({"expect":{"y":2},"value":null})"}}, "/r/a",
             R"({"y":9})", false, "/r/a", "null"},
        Case{"patch: each child with its pending writes",
             {{"q", kSet, "/r/a/x/deep", "1"}, {"q", kSet, "/r/c/k", "2"}, {"q", kSet, "/r/d", "3"}}, "/r",
             R"({"a/x":5,"c":{"j":1}})", true, "/r", R"({"a":{"x":{"deep":1}},"c":{"j":1,"k":2}})"},
        Case{"whole tree", {{"q", kSet, "/r/b", "2"}, {"q", kSet, "/", R"({"r":{"z":1}})"}}, "/",
             R"({"r":{"a":1},"s":1})", false, "/", R"({"r":{"z":1}})"},
        Case{"whole tree, pending below", {{"q", kSet, "/r/b", "2"}}, "/", R"({"r":{"a":1}})", false, "/",
             R"({"r":{"a":1,"b":2}})"}));

class Overlay : public testing::StoreFixture {};

TEST_F(Overlay, UploadedAndDeadLetteredWritesAreNotReapplied) {
  uint64_t a = Write("q", "/r/a", "1");
  uint64_t b = Write("q", "/r/b", "2");
  Write("q", "/r/c", "3");
  WriteBatch settle;
  settle.AckThrough("q", a);
  settle.MoveToDeadLetters("q", b, "refused", 403, 0);
  ASSERT_TRUE(store_->CommitBlocking(std::move(settle)).status.ok());
  Cloud("/r", R"({"a":10,"x":1})");
  EXPECT_EQ(store_->tree().Get("/r"), json::parse(R"({"a":10,"c":3,"x":1})"));
  WriteBatch retry;  // retried from tetherctl: queued again, so shown again over the next cloud data
  retry.RetryDeadLetter(b);
  ASSERT_TRUE(store_->CommitBlocking(std::move(retry)).status.ok());
  Cloud("/r", R"({"a":10})");
  EXPECT_EQ(store_->tree().Get("/r"), json::parse(R"({"a":10,"b":2,"c":3})"));
  ExpectHealthy();
}

TEST_F(Overlay, ChangedPathsNameWhatTheOverlayWrote) {
  Write("q", "/r/a/x", "1");
  Write("q", "/other", "1");
  WriteBatch b;
  b.TreeSetFromCloud("/r", json::parse(R"({"y":1})"));
  BatchResult res = store_->CommitBlocking(std::move(b));
  ASSERT_TRUE(res.status.ok());
  EXPECT_EQ(res.changed_paths, (std::vector<std::string>{"/r", "/r/a/x"}));
}

// A store written before the index existed gets it built from its queue when first opened.
TEST_F(Overlay, IndexIsBuiltForAStoreThatHadNone) {
  Write("q", "/r/a", "1");
  Write("p", "/r/b/c", "2");
  store_.reset();
  testing::RawEdit(dir_.Sub("db"), [](MDB_txn* txn) {
    MDB_dbi dbi;
    ASSERT_EQ(mdb_dbi_open(txn, "pending_paths", 0, &dbi), 0);
    ASSERT_EQ(mdb_drop(txn, dbi, 1), 0);  // as an older build left it: no such database
  });
  StoreOptions ro;
  ro.read_only = true;
  {
    auto reader = Store::Open(dir_.Sub("db"), ro, nullptr);  // read-only: works without it
    EXPECT_TRUE(reader->Check().ok);
  }
  Open();
  ExpectHealthy();
  Cloud("/r", "null");
  EXPECT_EQ(store_->tree().Get("/r"), json::parse(R"({"a":1,"b":{"c":2}})"));
}

TEST_F(Overlay, ConflictPathAcksTheLostWriteAndKeepsTheLaterOnes) {
  // As CloudBridge::conflict: the compare-and-set is settled and the cloud's value goes in.
  WriteBatch cas;
  cas.TreeSetIf("/lock", nullptr, json{{"owner", "me"}});
  QueueEntry e = testing::Entry("q", "/lock", R"({"expect":null,"value":{"owner":"me"}})");
  e.kind = OpKind::kConditionalSet;
  cas.Append(e);
  BatchResult r = store_->CommitBlocking(std::move(cas));
  ASSERT_TRUE(r.status.ok());
  Write("q", "/lock/note", "\"later\"");
  WriteBatch conflict;
  conflict.AckThrough("q", r.seqs[0]);
  conflict.TreeSetFromCloud("/lock", json{{"owner", "other"}});
  ASSERT_TRUE(store_->CommitBlocking(std::move(conflict)).status.ok());
  EXPECT_EQ(store_->tree().Get("/lock"), json::parse(R"({"owner":"other","note":"later"})"));
  EXPECT_EQ(store_->queue().Peek("q", 10).size(), 1u);
  ExpectHealthy();
}

TEST_F(Overlay, ForgetCompleteDropsMarksAtAndBelowAndWholeValueMarksAbove) {
  WriteBatch b;
  b.TreeSet("/a/b/c", 1);
  b.TreeMarkComplete("/a", "");
  b.TreeMarkComplete("/a", "orderBy=\"$key\"");
  b.TreeMarkComplete("/a/b", "orderBy=\"$key\"");
  b.TreeMarkComplete("/a/b/c", "");
  b.TreeMarkComplete("/a/bc", "");
  b.TreeMarkComplete("/x", "");
  ASSERT_TRUE(store_->CommitBlocking(std::move(b)).status.ok());
  WriteBatch f;
  f.TreeForgetComplete("/a/b");
  ASSERT_TRUE(store_->CommitBlocking(std::move(f)).status.ok());
  const DataTree& t = store_->tree();
  EXPECT_FALSE(t.HoldsComplete("/a", ""));
  EXPECT_TRUE(t.HoldsComplete("/a", "orderBy=\"$key\"")) << "another query of the ancestor";
  EXPECT_FALSE(t.HoldsComplete("/a/b", "orderBy=\"$key\""));
  EXPECT_FALSE(t.HoldsComplete("/a/b/c", ""));
  EXPECT_TRUE(t.HoldsComplete("/a/bc", "")) << "a sibling sharing a prefix";
  EXPECT_TRUE(t.HoldsComplete("/x", ""));
}

}  // namespace
}  // namespace tether::store
