// The index of queued writes by path (store/pending_index.h): appends stay in memory until a
// backlog builds, the persisted and in-memory parts together answer the overlay and the cache
// bound, and a reopen rebuilds the in-memory part from the queue.
#include <gtest/gtest.h>
#include <lmdb.h>

#include <string>

#include "store/pending_index.h"
#include "store/record_codec.h"
#include "store/store.h"
#include "tests/store/store_fixture.h"

namespace tether::store {
namespace {

using nlohmann::json;

struct RawIndex {
  size_t persisted = 0;     // entries in LMDB db pending_paths
  uint64_t through = 0;     // meta "pending_through"
  bool has_through = false;
};

// The index as the file holds it (the store must be closed).
RawIndex ReadRaw(const std::string& dir) {
  RawIndex out;
  testing::RawEdit(dir, [&](MDB_txn* txn) {
    MDB_dbi paths, meta;
    ASSERT_EQ(mdb_dbi_open(txn, "pending_paths", 0, &paths), 0);
    ASSERT_EQ(mdb_dbi_open(txn, "meta", 0, &meta), 0);
    MDB_stat st;
    ASSERT_EQ(mdb_stat(txn, paths, &st), 0);
    out.persisted = st.ms_entries;
    MDB_val k{15, const_cast<char*>("pending_through")}, v;
    if (mdb_get(txn, meta, &k, &v) == 0 && v.mv_size == 8) {
      out.has_through = true;
      out.through = GetBe64(static_cast<const char*>(v.mv_data));
    }
  });
  return out;
}

class PendingIndexTest : public testing::StoreFixture {
 protected:
  // `n` queued writes at /bulk/d<i % 50>/v, in batches of 1000.
  void Bulk(size_t n) {
    for (size_t done = 0; done < n;) {
      WriteBatch b;
      for (size_t i = 0; i < 1000 && done < n; ++i, ++done) {
        b.Append(testing::Entry("bulk", "/bulk/d" + std::to_string(done % 50) + "/v", std::to_string(done)));
      }
      BatchResult r = store_->CommitBlocking(std::move(b));
      EXPECT_TRUE(r.status.ok()) << r.status.ToString();
    }
  }
  uint64_t Write(const std::string& path, const std::string& payload) { return StoreFixture::Write("q", path, payload); }
};

TEST_F(PendingIndexTest, AppendsCostNoIndexWriteUntilABacklogBuilds) {
  const size_t below = PendingIndex::kPersistAt - 1;
  Bulk(below);
  Write("/r/a", "1");  // the kPersistAt-th entry: persisted with the next Flush that sees it
  Close();
  RawIndex raw = ReadRaw(dir_.Sub("db"));
  ASSERT_TRUE(raw.has_through);
  // Written with the commit of the kPersistAt-th entry, all at once.
  EXPECT_EQ(raw.persisted, PendingIndex::kPersistAt);
  EXPECT_EQ(raw.through, PendingIndex::kPersistAt);
  Open();
  Write("/r/b", "2");
  Bulk(100);
  Close();
  raw = ReadRaw(dir_.Sub("db"));
  EXPECT_EQ(raw.persisted, PendingIndex::kPersistAt);  // the 101 later ones are in memory only
  EXPECT_EQ(raw.through, PendingIndex::kPersistAt);
  Open();
  ExpectHealthy();
}

TEST_F(PendingIndexTest, AFewQueuedWritesNeverReachTheFile) {
  uint64_t a = Write("/r/a", "1");
  Write("/r/b", "2");
  WriteBatch ack;
  ack.AckThrough("q", a);
  ASSERT_TRUE(store_->CommitBlocking(std::move(ack)).status.ok());
  ExpectHealthy();
  Close();
  RawIndex raw = ReadRaw(dir_.Sub("db"));
  EXPECT_EQ(raw.persisted, 0u);
  EXPECT_TRUE(raw.has_through);
  EXPECT_EQ(raw.through, 0u);
}

// Cloud data over a subtree keeps the queued writes on top whichever part indexes them, and a
// reopen (the in-memory part rebuilt from the queue) keeps doing so.
TEST_F(PendingIndexTest, OverlaySeesBothPartsAcrossReopen) {
  uint64_t first = Write("/r/old", "1");   // persisted once the backlog passes kPersistAt
  Bulk(PendingIndex::kPersistAt);
  uint64_t gone = Write("/r/acked", "2");  // in memory, then acknowledged
  Write("/r/new", "3");                     // in memory
  WriteBatch ack;
  ack.Ack("q", {gone});
  ASSERT_TRUE(store_->CommitBlocking(std::move(ack)).status.ok());
  Cloud("/r", R"({"c":9})");
  EXPECT_EQ(store_->tree().Get("/r"), json::parse(R"({"c":9,"old":1,"new":3})"));
  ExpectHealthy();
  Open();
  Cloud("/r", R"({"c":10})");
  EXPECT_EQ(store_->tree().Get("/r"), json::parse(R"({"c":10,"old":1,"new":3})"));
  Cloud("/bulk/d7", R"({"w":1})");  // the last bulk write at d7 is on top again
  EXPECT_TRUE(store_->tree().Get("/bulk/d7/v").is_number());
  // Settled writes leave either part: an ack of a persisted one and of an in-memory one.
  WriteBatch settle;
  settle.Ack("q", {first});
  ASSERT_TRUE(store_->CommitBlocking(std::move(settle)).status.ok());
  Cloud("/r", R"({"c":11})");
  EXPECT_EQ(store_->tree().Get("/r"), json::parse(R"({"c":11,"new":3})"));
  ExpectHealthy();
  WriteBatch drain;
  drain.AckThrough("bulk", UINT64_MAX);
  drain.AckThrough("q", UINT64_MAX);
  ASSERT_TRUE(store_->CommitBlocking(std::move(drain)).status.ok());
  ExpectHealthy();
  Close();
  EXPECT_EQ(ReadRaw(dir_.Sub("db")).persisted, 0u);  // deletes reach the persisted part
}

// A group that does not fit is rolled back as a whole: an acknowledgement inside it is undone in
// the in-memory part too, so the write stays on top of cloud data.
TEST(PendingIndexRollback, AnAbortedGroupKeepsItsAcknowledgedWriteIndexed) {
  testing::TempDir dir;
  StoreOptions o;
  o.map_size = 1 << 20;  // no growth
  auto s = Store::Open(dir.Sub("db"), o, nullptr);
  WriteBatch w;
  w.TreeSet("/r/a", json(1));
  w.Append(testing::Entry("q", "/r/a", "1"));
  BatchResult r = s->CommitBlocking(std::move(w));
  ASSERT_TRUE(r.status.ok());
  WriteBatch too_big;
  too_big.Ack("q", {r.seqs[0]});
  too_big.Append(testing::Entry("q", "/r/b", "\"" + std::string(2 << 20, 'x') + "\""));
  EXPECT_EQ(s->CommitBlocking(std::move(too_big)).status.code, StatusCode::kFull);
  WriteBatch cloud;
  cloud.TreeSetFromCloud("/r", json::parse(R"({"c":1})"));
  ASSERT_TRUE(s->CommitBlocking(std::move(cloud)).status.ok());
  EXPECT_EQ(s->tree().Get("/r"), json::parse(R"({"a":1,"c":1})"));
  CheckReport check = s->Check();
  EXPECT_TRUE(check.ok) << (check.problems.empty() ? "" : check.problems.front());
}

// A schema 3 store indexed every queued entry and has no "pending_through": read as is by tools,
// converted when opened writable.
TEST_F(PendingIndexTest, SchemaThreeStoreIsReadAndConverted) {
  Write("/r/a", "1");
  Write("/r/b/c", "2");
  Close();
  testing::RawEdit(dir_.Sub("db"), [](MDB_txn* txn) {
    MDB_dbi meta, paths;
    ASSERT_EQ(mdb_dbi_open(txn, "meta", 0, &meta), 0);
    ASSERT_EQ(mdb_dbi_open(txn, "pending_paths", 0, &paths), 0);
    MDB_val k{15, const_cast<char*>("pending_through")};
    ASSERT_EQ(mdb_del(txn, meta, &k, nullptr), 0);
    std::string schema("\0\0\0\x03", 4);
    MDB_val sk{6, const_cast<char*>("schema")}, sv{4, schema.data()};
    ASSERT_EQ(mdb_put(txn, meta, &sk, &sv, 0), 0);
    const char* written[] = {"r/a", "r/b/c"};
    for (uint64_t seq = 1; seq <= 2; ++seq) {
      std::string key, route;
      ASSERT_TRUE(PendingIndexKey(written[seq - 1], seq, &key));
      PutBe32(&route, 1);
      MDB_val ik{key.size(), key.data()}, iv{4, route.data()};
      ASSERT_EQ(mdb_put(txn, paths, &ik, &iv, 0), 0);
    }
  });
  StoreOptions ro;
  ro.read_only = true;
  {
    auto reader = Store::Open(dir_.Sub("db"), ro, nullptr);
    CheckReport r = reader->Check();
    EXPECT_TRUE(r.ok) << (r.problems.empty() ? "" : r.problems.front());
  }
  Open();
  ExpectHealthy();
  Write("/r/d", "4");  // in memory: after the converted mark
  Cloud("/r", R"({"x":0})");
  EXPECT_EQ(store_->tree().Get("/r"), json::parse(R"({"a":1,"b":{"c":2},"d":4,"x":0})"));
  Close();
  RawIndex raw = ReadRaw(dir_.Sub("db"));
  EXPECT_TRUE(raw.has_through);
  EXPECT_EQ(raw.through, 2u);
  EXPECT_EQ(raw.persisted, 2u);
}

}  // namespace
}  // namespace tether::store
