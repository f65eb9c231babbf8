#include <gtest/gtest.h>

#include "store/store.h"
#include "tests/store/store_test_util.h"

namespace tether::store {
namespace {

using nlohmann::json;
using testing::Entry;
using testing::TempDir;

class DataTreeTest : public ::testing::Test {
 protected:
  void Open(StoreOptions o = {}) {
    store_.reset();
    store_ = Store::Open(dir_.Sub("db"), o, nullptr);
  }
  void SetUp() override { Open(); }
  BatchResult Set(const std::string& path, json v) {
    WriteBatch b;
    b.TreeSet(path, std::move(v));
    return store_->CommitBlocking(std::move(b));
  }
  json Get(const std::string& path) { return store_->tree().Get(path); }
  void ExpectHealthy() {
    CheckReport r = store_->Check();
    EXPECT_TRUE(r.ok) << (r.problems.empty() ? "" : r.problems.front());
  }

  TempDir dir_;
  std::unique_ptr<Store> store_;
};

TEST_F(DataTreeTest, SetGetSubtreesAndLeaves) {
  ASSERT_TRUE(Set("/a", json{{"b", 1}, {"c", {{"d", "x"}, {"e", true}}}}).status.ok());
  EXPECT_EQ(Get("/a/b"), 1);
  EXPECT_EQ(Get("a/c/d"), "x");
  EXPECT_EQ(Get("/a/c"), (json{{"d", "x"}, {"e", true}}));
  EXPECT_EQ(Get("/"), (json{{"a", {{"b", 1}, {"c", {{"d", "x"}, {"e", true}}}}}}));
  EXPECT_TRUE(Get("/a/zz").is_null());
  ExpectHealthy();
}

TEST_F(DataTreeTest, SetReplacesSubtreeAndAncestorLeaf) {
  Set("/a/b", 1);
  ASSERT_TRUE(Set("/a/b/c", 2).status.ok());  // the leaf at /a/b becomes an object
  EXPECT_EQ(Get("/a"), (json{{"b", {{"c", 2}}}}));
  Set("/a/b", json{{"x", 1}});
  EXPECT_EQ(Get("/a/b"), (json{{"x", 1}}));  // /a/b/c is gone
  Set("/a/b", 5);
  EXPECT_EQ(Get("/a"), (json{{"b", 5}}));
  ExpectHealthy();
}

TEST_F(DataTreeTest, SiblingWithCommonPrefixDoesNotCollide) {
  Set("/a/b", json{{"x", 1}});
  Set("/a/bc", 2);
  Set("/a/b-c", 3);
  Set("/a/b", nullptr);
  EXPECT_EQ(Get("/a"), (json{{"bc", 2}, {"b-c", 3}}));
  ExpectHealthy();
}

TEST_F(DataTreeTest, FirebaseNormalisation) {
  Set("/l", json::array({"x", "y", nullptr, json::object()}));
  EXPECT_EQ(Get("/l"), (json{{"0", "x"}, {"1", "y"}}));
  Set("/e", json::object());
  EXPECT_TRUE(Get("/e").is_null());
  Set("/n", json{{"k", nullptr}});
  EXPECT_TRUE(Get("/n").is_null());
  EXPECT_EQ(Set("/bad.key", 1).status.code, StatusCode::kInvalidArgument);
  EXPECT_EQ(Set("/ok", json{{"in$valid", 1}}).status.code, StatusCode::kInvalidArgument);
  EXPECT_EQ(Set("/", 5).status.code, StatusCode::kInvalidArgument);
  EXPECT_EQ(Set("/" + std::string(600, 'k'), 1).status.code, StatusCode::kInvalidArgument);
  EXPECT_EQ(Set("/long", json{{std::string(600, 'k'), 1}}).status.code, StatusCode::kInvalidArgument);
  ExpectHealthy();
}

TEST_F(DataTreeTest, MultiPathUpdateAndRemove) {
  Set("/u", json{{"a", 1}, {"b", {{"c", 2}, {"d", 3}}}});
  WriteBatch b;
  b.TreeUpdate("/u", json{{"a", nullptr}, {"b/c", 20}, {"e/f", "new"}});
  BatchResult r = store_->CommitBlocking(std::move(b));
  ASSERT_TRUE(r.status.ok());
  EXPECT_EQ(Get("/u"), (json{{"b", {{"c", 20}, {"d", 3}}}, {"e", {{"f", "new"}}}}));
  EXPECT_EQ(r.changed_paths, (std::vector<std::string>{"/u/a", "/u/b/c", "/u/e/f"}));
  WriteBatch rm;
  rm.TreeRemove("/u/b");
  BatchResult r2 = store_->CommitBlocking(std::move(rm));
  EXPECT_EQ(r2.changed_paths, std::vector<std::string>{"/u/b"});
  EXPECT_GT(r2.tree_version, r.tree_version);
  EXPECT_EQ(store_->tree().Version(), r2.tree_version);
  EXPECT_EQ(Get("/u"), (json{{"e", {{"f", "new"}}}}));
  ExpectHealthy();
}

TEST_F(DataTreeTest, DeviceWriteIsTreeAndQueueAtomically) {
  WriteBatch b;
  b.TreeSet("/d/x", 1);
  b.Append(Entry("r", "/d/x", "1"));
  b.TouchSession("no-such-session", 1);  // fails -> nothing of the batch applies
  EXPECT_EQ(store_->CommitBlocking(std::move(b)).status.code, StatusCode::kNotFound);
  EXPECT_TRUE(Get("/d/x").is_null());
  EXPECT_TRUE(store_->queue().Peek("r", 10).empty());
  ExpectHealthy();
}

// Units as coarse as first segments (tree_unit_depth 1): least recently used goes first, reads
// count as use, and only protected subtrees stay of a unit (tests/store/cache_bound_test.cc has
// the finer cases).
TEST_F(DataTreeTest, LruEvictsLeastRecentlyUsedUnitsButNotPinnedOrPending) {
  StoreOptions o;
  o.tree_cache_bytes = 22'000;
  o.tree_unit_depth = 1;
  o.tree_pinned_roots = {"/pinned"};
  Open(o);
  const std::string big(1000, 'v');
  auto fill = [&](const std::string& root) {
    json obj;
    for (int i = 0; i < 5; ++i) obj["k" + std::to_string(i)] = big;
    ASSERT_TRUE(Set("/" + root, obj).status.ok());
  };
  fill("pinned");  // 5 KB, a sync root
  {
    WriteBatch b;  // a device write not uploaded yet, inside 5 KB of other data
    json obj;
    for (int i = 0; i < 5; ++i) obj["k" + std::to_string(i)] = big;
    b.TreeSet("/pending", obj);
    b.Append(Entry("r", "/pending/k0", "1"));
    ASSERT_TRUE(store_->CommitBlocking(std::move(b)).status.ok());
  }
  fill("old");
  fill("mid");
  Get("/old/k0");  // reading makes "old" recently used: "mid" is now older (reads are use too)
  // 25 KB > 22 KB: the oldest units give way, except what is protected in them.
  fill("new");
  EXPECT_LE(store_->tree().Bytes(), 22'000u);
  EXPECT_EQ(store_->tree().Evictions(), 1u);  // "pending" minus its queued write's target
  fill("more");
  EXPECT_TRUE(Get("/mid").is_null());
  EXPECT_TRUE(Get("/pending/k1").is_null());
  EXPECT_FALSE(Get("/pending/k0").is_null());
  EXPECT_FALSE(Get("/pinned").is_null());
  EXPECT_FALSE(Get("/old").is_null());
  EXPECT_FALSE(Get("/new").is_null());
  EXPECT_FALSE(Get("/more").is_null());
  // Once uploaded (acked), the pending write's data becomes evictable.
  WriteBatch ack;
  ack.AckThrough("r", UINT64_MAX);
  store_->CommitBlocking(std::move(ack));
  for (int i = 0; i < 5; ++i) fill("last" + std::to_string(i));
  EXPECT_TRUE(Get("/pending").is_null());
  EXPECT_FALSE(Get("/pinned").is_null());
  ExpectHealthy();
}

}  // namespace
}  // namespace tether::store

namespace tether::store {
namespace {

// A write at the root path queues an entry whose root is the whole tree; its counter must persist
// (LMDB refuses empty keys) and survive a reopen.
TEST_F(DataTreeTest, WriteAtRootPathIsQueuedAndSurvivesReopen) {
  WriteBatch b;
  b.TreeSet("/", json{{"L1", {{"L2", true}}}});
  b.Append(testing::Entry("r", "/", "{\"L1\":{\"L2\":true}}"));
  ASSERT_TRUE(store_->CommitBlocking(std::move(b)).status.ok());
  Open();
  EXPECT_EQ(Get("/"), (json{{"L1", {{"L2", true}}}}));
  EXPECT_EQ(store_->queue().Peek("r", 10).size(), 1u);
  WriteBatch ack;
  ack.AckThrough("r", UINT64_MAX);
  ASSERT_TRUE(store_->CommitBlocking(std::move(ack)).status.ok());
  Open();
  EXPECT_TRUE(store_->queue().Peek("r", 10).empty());
  ExpectHealthy();
}

TEST_F(DataTreeTest, CompleteMarksSurviveReopenAndDieWithTheirData) {
  StoreOptions o;
  o.tree_cache_bytes = 12'000;
  o.tree_pinned_roots = {"/synced"};
  Open(o);
  {
    WriteBatch b;  // a cloud query result merged in and remembered as complete
    b.TreeUpdate("/scores", json{{"a", 1}, {"b", 2}});
    b.TreeMarkComplete("/scores", "orderBy=\"$value\"&limitToFirst=2");
    b.TreeSet("/whole/x", json{{"y", 1}});
    b.TreeMarkComplete("/whole", "");  // a plain fetch: complete for every query at or below
    b.TreeSet("/synced", json{{"rate", 5}});
    b.TreeMarkComplete("/synced", "");  // a sync root after its first full sync
    Status st = store_->CommitBlocking(std::move(b)).status;
    ASSERT_TRUE(st.ok()) << st.ToString();
  }
  Open(o);  // marks are durable
  EXPECT_TRUE(store_->tree().HoldsComplete("/scores", "orderBy=\"$value\"&limitToFirst=2"));
  EXPECT_FALSE(store_->tree().HoldsComplete("/scores", "orderBy=\"$value\"&limitToFirst=3"));
  EXPECT_FALSE(store_->tree().HoldsComplete("/scores", ""));
  EXPECT_FALSE(store_->tree().HoldsComplete("/scores/a", ""));
  EXPECT_TRUE(store_->tree().HoldsComplete("/whole", "orderBy=\"$key\""));
  EXPECT_TRUE(store_->tree().HoldsComplete("/whole/x/y", ""));
  EXPECT_FALSE(store_->tree().HoldsComplete("/", ""));
  {
    WriteBatch b;
    b.TreeMarkComplete("/", "orderBy=\"$key\"");
    ASSERT_TRUE(store_->CommitBlocking(std::move(b)).status.ok());
  }
  // Filling the cache evicts the least recently used units: the marks over them go with their
  // data, as does any mark of an ancestor (the whole tree's); the pinned root's mark stays.
  const std::string big(1000, 'v');
  for (const char* root : {"/f1", "/f2", "/f3"}) {
    json obj;
    for (int i = 0; i < 5; ++i) obj["k" + std::to_string(i)] = big;
    ASSERT_TRUE(Set(root, obj).status.ok());
  }
  ASSERT_GE(store_->tree().Evictions(), 1u);
  ASSERT_TRUE(Get("/scores").is_null());
  EXPECT_FALSE(store_->tree().HoldsComplete("/scores", "orderBy=\"$value\"&limitToFirst=2"));
  EXPECT_FALSE(store_->tree().HoldsComplete("/whole", ""));
  EXPECT_FALSE(store_->tree().HoldsComplete("/", "orderBy=\"$key\""));
  EXPECT_TRUE(store_->tree().HoldsComplete("/synced", ""));
  EXPECT_EQ(Get("/synced/rate"), 5);
  ExpectHealthy();
}

TEST_F(DataTreeTest, IncrementsAddToWhatTheCommitSeesNotWhatTheWriterRead) {
  // Both batches were built before either committed: each must still count.
  WriteBatch a, b;
  a.TreeSet("/c/n", 1, {{"", 1}});
  b.TreeSet("/c/n", 1, {{"", 1}});
  ASSERT_TRUE(store_->CommitBlocking(std::move(a)).status.ok());
  ASSERT_TRUE(store_->CommitBlocking(std::move(b)).status.ok());
  EXPECT_EQ(Get("/c/n"), 2);
  WriteBatch nested;  // inside a set value, and inside an update's child paths
  nested.TreeSet("/c", json{{"n", 5}, {"tag", "x"}}, {{"n", 5}});
  nested.TreeUpdate("/c", json{{"m/k", 2.5}, {"z", json{{"q", 3}}}}, {{"m/k", 2.5}, {"z/q", 3}});
  ASSERT_TRUE(store_->CommitBlocking(std::move(nested)).status.ok());
  EXPECT_EQ(Get("/c"), (json{{"n", 7}, {"tag", "x"}, {"m", {{"k", 2.5}}}, {"z", {{"q", 3}}}}));
  WriteBatch again;
  again.TreeUpdate("/c", json{{"z", json{{"q", 3}}}}, {{"z/q", 3}});
  again.TreeSet("/c/tag", 1, {{"", 1}});  // not a number before: counts from 0
  ASSERT_TRUE(store_->CommitBlocking(std::move(again)).status.ok());
  EXPECT_EQ(Get("/c/z/q"), 6);
  EXPECT_EQ(Get("/c/tag"), 1);
  EXPECT_TRUE(Get("/c/n").is_number_integer());
  ExpectHealthy();
}

TEST_F(DataTreeTest, CompareAndSetFailsTheWholeBatchWhenTheValueChanged) {
  Set("/lock", json{{"n", 1}});
  WriteBatch first, second;  // both built against {"n":1}: only the first may win
  first.TreeSetIf("/lock", json{{"n", 1}}, json{{"n", 2}});
  first.Append(Entry("r", "/lock", "2"));
  second.TreeSetIf("/lock", json{{"n", 1}}, json{{"n", 3}});
  second.Append(Entry("r", "/lock", "3"));
  ASSERT_TRUE(store_->CommitBlocking(std::move(first)).status.ok());
  EXPECT_EQ(store_->CommitBlocking(std::move(second)).status.code, StatusCode::kConflict);
  EXPECT_EQ(Get("/lock"), (json{{"n", 2}}));
  EXPECT_EQ(store_->queue().Peek("r", 10).size(), 1u) << "the refused batch queued nothing";
  WriteBatch absent;  // expecting nothing at a path that holds nothing
  absent.TreeSetIf("/free", nullptr, "mine");
  ASSERT_TRUE(store_->CommitBlocking(std::move(absent)).status.ok());
  EXPECT_EQ(Get("/free"), "mine");
  ExpectHealthy();
}

}  // namespace
}  // namespace tether::store
