// The local copy's LRU bound (StoreOptions::tree_cache_bytes) at unit granularity: it holds with
// one big root and a steady backlog, protects exactly the sync roots, held paths and queued
// writes' targets, voids the complete marks over evicted data, and keeps recency across restarts.
#include <lmdb.h>

#include <gtest/gtest.h>

#include "store/store.h"
#include "store/tree_path.h"
#include "tests/store/store_test_util.h"

namespace tether::store {
namespace {

using nlohmann::json;
using testing::Entry;
using testing::TempDir;

// What the tree counts for `value` written at `path`: key + encoded value of every leaf.
uint64_t TreeBytes(const std::string& path, const json& value) {
  std::vector<std::string> segs;
  std::string error;
  EXPECT_TRUE(ParseTreePath(path, &segs, &error));
  uint64_t n = 0;
  FlattenJson(value, JoinKey(segs, segs.size()), [&](const std::string& key, const std::string& text) {
    n += key.size() + text.size();
  });
  return n;
}

std::string Device(int i) {
  char name[16];
  std::snprintf(name, sizeof name, "d%05d", i);
  return name;
}

class CacheBoundTest : public ::testing::Test {
 protected:
  void Open(StoreOptions o) {
    store_.reset();
    o.durability = Durability::kOsBuffered;  // many commits; durability is not what is tested here
    options_ = o;
    store_ = Store::Open(dir_.Sub("db"), o, nullptr);
  }
  BatchResult Commit(WriteBatch b) {
    BatchResult r = store_->CommitBlocking(std::move(b));
    EXPECT_TRUE(r.status.ok()) << r.status.ToString();
    return r;
  }
  BatchResult Set(const std::string& path, json v) {
    WriteBatch b;
    b.TreeSet(path, std::move(v));
    return Commit(std::move(b));
  }
  // A commit that touches no data: the eviction after it may take what the previous one wrote.
  void Settle() {
    WriteBatch b;
    b.AckThrough("no-such-route", 0);
    Commit(std::move(b));
  }
  json Get(const std::string& path) { return store_->tree().Get(path); }
  bool Holds(const std::string& path, const std::string& query = "") {
    return store_->tree().HoldsComplete(path, query);
  }
  void ExpectHealthy() {
    CheckReport r = store_->Check();
    EXPECT_TRUE(r.ok) << (r.problems.empty() ? "" : r.problems.front());
  }

  TempDir dir_;
  StoreOptions options_;
  std::unique_ptr<Store> store_;
};

json DeviceValue(int i) {
  return json{{"temp", i}, {"name", "device-" + std::to_string(i)}, {"fw", "1.2.3"},
              {"config", {{"rate", 5}, {"mode", "eco"}}}};
}

// The usual layout: one root, fleet/{device}/..., 10k devices, writes queued for some of them.
TEST_F(CacheBoundTest, OneRootWithTenThousandDevicesStaysWithinTheBound) {
  StoreOptions o;
  o.tree_cache_bytes = 200'000;
  o.tree_unit_depth = 2;
  o.tree_pinned_roots = {"/fleet/d00005/config", "/fleet/d00007"};  // a deep sync root, a device's
  Open(o);
  uint64_t pinned = 0, pending = 0;
  std::vector<int> with_pending;
  for (int batch = 0; batch < 100; ++batch) {
    WriteBatch b;
    uint64_t written = 0;
    for (int i = batch * 100; i < (batch + 1) * 100; ++i) {
      const std::string path = "/fleet/" + Device(i);
      b.TreeSet(path, DeviceValue(i));
      written += TreeBytes(path, DeviceValue(i));
      if (i == 5) pinned += TreeBytes(path + "/config", DeviceValue(i)["config"]);
      if (i == 7) pinned += TreeBytes(path, DeviceValue(i));
      if (i % 50 == 0) {  // a command queued for upload: its target must stay readable offline
        json cmd = {{"op", "reboot"}, {"n", i}};
        b.TreeSet(path + "/cmd", cmd);
        b.Append(Entry("cmds", path + "/cmd", cmd.dump()));
        written += TreeBytes(path + "/cmd", cmd);
        pending += TreeBytes(path + "/cmd", cmd);
        with_pending.push_back(i);
      }
    }
    Commit(std::move(b));
    // The commit's own data is never evicted by that commit; everything older is held to the bound.
    ASSERT_LE(store_->tree().Bytes(), o.tree_cache_bytes + pinned + pending + written) << "batch " << batch;
  }
  Settle();
  const uint64_t bytes = store_->tree().Bytes();
  EXPECT_LE(bytes, o.tree_cache_bytes + pinned + pending);
  EXPECT_GE(bytes, o.tree_cache_bytes - 1'000) << "evicts what the bound needs, not more";
  for (int i : with_pending) {
    ASSERT_EQ(Get("/fleet/" + Device(i) + "/cmd"), (json{{"op", "reboot"}, {"n", i}})) << i;
  }
  EXPECT_TRUE(Get("/fleet/d00000/temp").is_null()) << "a queued write keeps only its own path";
  EXPECT_EQ(Get("/fleet/d00005/config"), DeviceValue(5)["config"]);
  EXPECT_TRUE(Get("/fleet/d00005/temp").is_null()) << "a deep sync root does not pin its siblings";
  EXPECT_TRUE(Get("/fleet/d00006").is_null());
  EXPECT_EQ(Get("/fleet/d00007"), DeviceValue(7));
  EXPECT_EQ(Get("/fleet/d09999"), DeviceValue(9999)) << "the most recent data stays";
  EXPECT_GT(store_->tree().Evictions(), 7'000u);
  ExpectHealthy();

  // Once uploaded, the commands' data is evictable again (just read above: recent, so it takes a
  // cache's worth of new data to push it out).
  WriteBatch ack;
  ack.AckThrough("cmds", UINT64_MAX);
  Commit(std::move(ack));
  for (int batch = 100; batch < 120; ++batch) {
    WriteBatch b;
    for (int i = batch * 100; i < (batch + 1) * 100; ++i) b.TreeSet("/fleet/" + Device(i), DeviceValue(i));
    Commit(std::move(b));
  }
  Settle();
  EXPECT_LE(store_->tree().Bytes(), o.tree_cache_bytes + pinned);
  EXPECT_TRUE(Get("/fleet/d00000/cmd").is_null());
  EXPECT_EQ(Get("/fleet/d00005/config"), DeviceValue(5)["config"]);
  EXPECT_EQ(Get("/fleet/d00007"), DeviceValue(7));
  ExpectHealthy();
}

// Even with units as coarse as first segments, a sync root pins only its own subtree.
TEST_F(CacheBoundTest, ASyncRootDeepInAFirstSegmentDoesNotPinItsSiblings) {
  StoreOptions o;
  o.tree_cache_bytes = 3'000;
  o.tree_unit_depth = 1;
  o.tree_pinned_roots = {"/a/b"};
  Open(o);
  const std::string big(500, 'v');
  Set("/a", json{{"b", {{"x", big}}}, {"c", {{"y", big}}}, {"d", big}});
  Set("/z", json{{"w", big}});
  Set("/new", json{{"k1", big}, {"k2", big}, {"k3", big}});
  Settle();
  EXPECT_EQ(Get("/a/b/x"), big);
  EXPECT_TRUE(Get("/a/c").is_null());
  EXPECT_TRUE(Get("/a/d").is_null());
  EXPECT_LE(store_->tree().Bytes(), 3'000u + TreeBytes("/a/b/x", big));
  ExpectHealthy();
}

TEST_F(CacheBoundTest, EvictionVoidsTheMarksOverEvictedDataAndOnlyThose) {
  StoreOptions o;
  o.tree_cache_bytes = 3'000;
  o.tree_pinned_roots = {"/fleet/c/cfg"};
  Open(o);
  const std::string big(500, 'v');
  {
    WriteBatch b;
    b.TreeSet("/fleet/a", json{{"x", big}, {"y", big}});
    b.TreeSet("/fleet/c", json{{"cfg", {{"r", 1}}}, {"big", big}});
    b.TreeMarkComplete("/", "orderBy=\"$key\"");
    b.TreeMarkComplete("/fleet", "");
    b.TreeMarkComplete("/fleet/a", "");
    b.TreeMarkComplete("/fleet/a", "limitToFirst=1");
    b.TreeMarkComplete("/fleet/a/x", "");
    b.TreeMarkComplete("/fleet/a/never", "");  // known null: nothing there to evict
    b.TreeMarkComplete("/fleet/c", "");
    b.TreeMarkComplete("/fleet/c/cfg", "");
    Commit(std::move(b));
  }
  {
    WriteBatch b;
    b.TreeSet("/fleet/b", json{{"v", big}});
    b.TreeSet("/other/o", json{{"v", big}});
    b.TreeMarkComplete("/fleet/b", "");
    b.TreeMarkComplete("/other/o", "");
    Commit(std::move(b));
  }
  ASSERT_TRUE(Holds("/fleet/a/x/deeper"));
  BatchResult r = Set("/fleet/e", json{{"v", std::string(1'500, 'e')}});  // over the bound
  EXPECT_EQ(r.changed_paths, std::vector<std::string>{"/fleet/e"}) << "eviction is no data change";
  ASSERT_TRUE(Get("/fleet/a").is_null());
  ASSERT_TRUE(Get("/fleet/c/big").is_null());
  ASSERT_EQ(Get("/fleet/c/cfg"), (json{{"r", 1}}));
  ASSERT_FALSE(Get("/fleet/b").is_null());
  // Dropped: every mark at or above an evicted leaf.
  EXPECT_FALSE(Holds("/", "orderBy=\"$key\""));
  EXPECT_FALSE(Holds("/fleet"));
  EXPECT_FALSE(Holds("/fleet/a"));
  EXPECT_FALSE(Holds("/fleet/a", "limitToFirst=1"));
  EXPECT_FALSE(Holds("/fleet/a/x"));
  EXPECT_FALSE(Holds("/fleet/c")) << "part of it was evicted";
  // Kept: marks over data left whole.
  EXPECT_TRUE(Holds("/fleet/c/cfg"));
  EXPECT_TRUE(Holds("/fleet/c/cfg/r"));
  EXPECT_TRUE(Holds("/fleet/b/v"));
  EXPECT_TRUE(Holds("/other/o"));
  EXPECT_TRUE(Holds("/fleet/a/never"));
  ExpectHealthy();
}

TEST_F(CacheBoundTest, RecencySurvivesARestart) {
  StoreOptions o;
  o.tree_cache_bytes = 3'500;
  Open(o);
  const json v = json{{"v", std::string(1'000, 'v')}};
  for (const char* u : {"/r/u1", "/r/u2", "/r/u3"}) Set(u, v);
  EXPECT_FALSE(Get("/r/u1").is_null());  // u1 is now the most recently used
  Settle();                              // reads are stamped at the next commit
  Open(o);
  Set("/r/u4", v);
  Settle();
  EXPECT_FALSE(Get("/r/u1").is_null());
  EXPECT_TRUE(Get("/r/u2").is_null()) << "the least recently used unit before the restart goes first";
  EXPECT_FALSE(Get("/r/u3").is_null());
  EXPECT_FALSE(Get("/r/u4").is_null());
  ExpectHealthy();
}

TEST_F(CacheBoundTest, KeptPathsStayUntilReleased) {
  StoreOptions o;
  o.tree_cache_bytes = 3'500;
  Open(o);
  const json v = json{{"v", std::string(1'000, 'v')}};
  store_->KeepCached("/r/u1", true);  // e.g. devices observe it
  for (const char* u : {"/r/u1", "/r/u2", "/r/u3", "/r/u4"}) Set(u, v);
  Settle();
  // (Reading u1 here would make it recent: its staying is seen in what went instead.)
  EXPECT_TRUE(Get("/r/u2").is_null()) << "the oldest unit not kept";
  store_->KeepCached("/r/u1", true);
  store_->KeepCached("/r/u1", false);  // still kept once
  Set("/r/u5", v);
  Settle();
  EXPECT_TRUE(Get("/r/u3").is_null());
  store_->KeepCached("/r/u1", false);
  Set("/r/u6", v);
  Settle();
  EXPECT_TRUE(Get("/r/u1").is_null()) << "released: the oldest unit again";
  EXPECT_FALSE(Get("/r/u4").is_null());
  EXPECT_FALSE(Get("/r/u5").is_null());
  ExpectHealthy();
}

// A queued write above the unit depth (a whole-root set) protects every unit below it.
TEST_F(CacheBoundTest, AQueuedWriteAboveTheUnitsProtectsAllOfThem) {
  StoreOptions o;
  o.tree_cache_bytes = 2'500;
  Open(o);
  const std::string big(500, 'v');
  {
    WriteBatch b;
    b.TreeSet("/site", json{{"a", {{"v", big}}}, {"b", {{"v", big}}}});
    b.Append(Entry("r", "/site", "{}"));
    Commit(std::move(b));
  }
  for (const char* u : {"/x/1", "/x/2", "/x/3", "/x/4"}) Set(u, json{{"v", big}});
  Settle();
  EXPECT_TRUE(Get("/x/1").is_null()) << "went instead of the older, protected /site units";
  EXPECT_LE(store_->tree().Bytes(), 2'500u + TreeBytes("/site", json{{"a", {{"v", big}}}, {"b", {{"v", big}}}}));
  WriteBatch ack;
  ack.AckThrough("r", UINT64_MAX);
  Commit(std::move(ack));
  Set("/x/5", json{{"v", big}});
  Settle();
  EXPECT_TRUE(Get("/site/a").is_null()) << "uploaded: its units are the oldest";
  EXPECT_FALSE(Get("/site/b").is_null());
  ExpectHealthy();
}

// Raw LMDB access to turn a current store into what a schema 2 build left.
void MakeSchema2(const std::string& dir) {
  MDB_env* env;
  ASSERT_EQ(mdb_env_create(&env), 0);
  mdb_env_set_maxdbs(env, 16);
  ASSERT_EQ(mdb_env_open(env, dir.c_str(), 0, 0640), 0);
  MDB_txn* txn;
  ASSERT_EQ(mdb_txn_begin(env, nullptr, 0, &txn), 0);
  MDB_dbi meta, units, lru, roots;
  ASSERT_EQ(mdb_dbi_open(txn, "meta", 0, &meta), 0);
  ASSERT_EQ(mdb_dbi_open(txn, "tree_units", 0, &units), 0);
  ASSERT_EQ(mdb_dbi_open(txn, "tree_lru", 0, &lru), 0);
  ASSERT_EQ(mdb_drop(txn, units, 1), 0);
  ASSERT_EQ(mdb_drop(txn, lru, 1), 0);
  ASSERT_EQ(mdb_dbi_open(txn, "tree_roots", MDB_CREATE, &roots), 0);
  std::string rk = "fleet", rv(16, '\0');
  MDB_val k{rk.size(), rk.data()}, v{rv.size(), rv.data()};
  ASSERT_EQ(mdb_put(txn, roots, &k, &v, 0), 0);
  std::string schema("\0\0\0\x02", 4);
  k = MDB_val{6, const_cast<char*>("schema")};
  v = MDB_val{schema.size(), schema.data()};
  ASSERT_EQ(mdb_put(txn, meta, &k, &v, 0), 0);
  k = MDB_val{10, const_cast<char*>("unit_depth")};
  ASSERT_EQ(mdb_del(txn, meta, &k, nullptr), 0);
  k = MDB_val{8, const_cast<char*>("counters")};
  ASSERT_EQ(mdb_get(txn, meta, &k, &v), 0);
  std::string counters(static_cast<const char*>(v.mv_data), v.mv_size - 8);  // without lru_clock
  v = MDB_val{counters.size(), counters.data()};
  ASSERT_EQ(mdb_put(txn, meta, &k, &v, 0), 0);
  ASSERT_EQ(mdb_txn_commit(txn), 0);
  mdb_env_close(env);
}

TEST_F(CacheBoundTest, ASchema2StoreIsConvertedAndAUnitDepthChangeRebuildsTheUnits) {
  StoreOptions o;
  o.tree_cache_bytes = 0;  // unbounded while building
  Open(o);
  const std::string big(500, 'v');
  {
    WriteBatch b;
    b.TreeSet("/fleet", json{{"d1", {{"v", big}}}, {"d2", {{"v", big}, {"w", big}}}, {"d3", {{"v", big}}}});
    b.Append(Entry("r", "/fleet/d3/v", "\"v\""));
    Commit(std::move(b));
  }
  store_.reset();
  MakeSchema2(dir_.Sub("db"));
  {
    StoreOptions ro;
    ro.read_only = true;
    auto old = Store::Open(dir_.Sub("db"), ro, nullptr);  // tools read a schema 2 store as is
    EXPECT_EQ(old->tree().Get("/fleet/d1/v"), big);
    CheckReport r = old->Check();
    EXPECT_TRUE(r.ok) << (r.problems.empty() ? "" : r.problems.front());
  }
  o.tree_cache_bytes = 1'500;
  Open(o);  // converted: units built from the tree, all equally old
  ExpectHealthy();
  EXPECT_EQ(store_->queue().Peek("r", 10).size(), 1u);
  Set("/new", json{{"v", big}});
  Settle();
  EXPECT_LE(store_->tree().Bytes(), 1'500u + TreeBytes("/fleet/d3/v", big));
  EXPECT_EQ(Get("/fleet/d3/v"), big) << "a queued write's target survives the conversion";
  EXPECT_TRUE(Get("/fleet/d1").is_null());
  ExpectHealthy();
  o.tree_unit_depth = 1;  // coarser units: rebuilt at open
  Open(o);
  ExpectHealthy();
  Set("/other", json{{"v", big}, {"w", big}});
  Settle();
  EXPECT_EQ(Get("/fleet/d3/v"), big);
  EXPECT_LE(store_->tree().Bytes(), 1'500u + TreeBytes("/fleet/d3/v", big));
  ExpectHealthy();
}

}  // namespace
}  // namespace tether::store
