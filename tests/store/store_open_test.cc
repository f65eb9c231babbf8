#include <fcntl.h>
#include <sys/stat.h>
#include <lmdb.h>
#include <unistd.h>

#include <fstream>
#include <thread>

#include <gtest/gtest.h>

#include "store/store.h"
#include "store/store_error.h"
#include "tests/store/store_test_util.h"

namespace tether::store {
namespace {

using testing::Entry;
using testing::TempDir;

// Writes key=value into named database `dbname` of a raw LMDB environment at dir.
void RawPut(const std::string& dir, const char* dbname, const std::string& key, const std::string& value) {
  MDB_env* env;
  ASSERT_EQ(mdb_env_create(&env), 0);
  mdb_env_set_maxdbs(env, 16);
  ASSERT_EQ(mdb_env_open(env, dir.c_str(), 0, 0640), 0);
  MDB_txn* txn;
  MDB_dbi dbi;
  ASSERT_EQ(mdb_txn_begin(env, nullptr, 0, &txn), 0);
  ASSERT_EQ(mdb_dbi_open(txn, dbname, MDB_CREATE, &dbi), 0);
  MDB_val k{key.size(), const_cast<char*>(key.data())}, v{value.size(), const_cast<char*>(value.data())};
  ASSERT_EQ(mdb_put(txn, dbi, &k, &v, 0), 0);
  ASSERT_EQ(mdb_txn_commit(txn), 0);
  mdb_env_close(env);
}

void ExpectOpenFails(const std::string& dir, const std::string& needle) {
  try {
    Store::Open(dir, StoreOptions{}, nullptr);
    FAIL() << "open succeeded";
  } catch (const StoreError& e) {
    std::string what = e.what();
    EXPECT_NE(what.find(dir), std::string::npos) << what;
    EXPECT_NE(what.find(needle), std::string::npos) << what;
  }
}

TEST(StoreOpenTest, WrongFormatIdIsAClearErrorAndNothingIsWiped) {
  TempDir dir;
  const std::string db = dir.Sub("db");
  { Store::Open(db, StoreOptions{}, nullptr); }
  RawPut(db, "meta", "format", "something-else");
  ExpectOpenFails(db, "incompatible");
  ExpectOpenFails(db, "incompatible");  // still there: nothing was rewritten
}

TEST(StoreOpenTest, NewerSchemaVersionIsRefused) {
  TempDir dir;
  const std::string db = dir.Sub("db");
  { Store::Open(db, StoreOptions{}, nullptr); }
  RawPut(db, "meta", "schema", std::string("\0\0\0\x09", 4));
  ExpectOpenFails(db, "schema version 9");
}

// The map is address space (options.h). Runs natively and, under make cross-test, as armhf: there a
// store maps its maximum at open (a later remap could fail in a fragmented 32-bit address space)
// and the default map of 1 GiB fits; a map beyond the address space is refused before mmap.
TEST(StoreOpenTest, MapFitsTheAddressSpace) {
  TempDir dir;
  StoreOptions o;
  o.map_size = 4 << 20;
  o.map_max = 64 << 20;
  {
    auto s = Store::Open(dir.Sub("small"), o, nullptr);
    EXPECT_EQ(s->map_size(), kAddressSpace32 ? 64u << 20 : 4u << 20);
  }
  StoreOptions defaults;
  defaults.map_max = kDefaultMapMax;  // what tetherd runs with when store.map_* are not set
  {
    auto s = Store::Open(dir.Sub("default"), defaults, nullptr);
    EXPECT_EQ(s->map_size(), kAddressSpace32 ? kDefaultMapMax : kDefaultMapSize);
    WriteBatch b;
    b.Append(Entry("r", "/a", "1"));
    EXPECT_EQ(s->CommitBlocking(std::move(b)).status.code, StatusCode::kOk);
  }
  EXPECT_EQ(kDefaultMapMax, kAddressSpace32 ? 1ull << 30 : 8ull << 30);
  o.map_size = kMaxMapBytes + (1 << 20);
  o.map_max = 0;
  const std::string big = dir.Sub("big");
  try {
    Store::Open(big, o, nullptr);
    FAIL() << "a map over " << kMaxMapBytes << " bytes was accepted";
  } catch (const StoreError& e) {
    EXPECT_NE(std::string(e.what()).find("does not fit this build's"), std::string::npos) << e.what();
  }
}

TEST(StoreOpenTest, ForeignLmdbAndGarbageFilesAreRefused) {
  TempDir dir;
  const std::string foreign = dir.Sub("foreign");
  mkdir(foreign.c_str(), 0750);
  RawPut(foreign, nullptr, "hello", "world");
  ExpectOpenFails(foreign, "not a tether store");

  const std::string garbage = dir.Sub("garbage");
  mkdir(garbage.c_str(), 0750);
  std::ofstream(garbage + "/data.mdb") << std::string(64 * 1024, 'Z');
  ExpectOpenFails(garbage, "cannot open");
  std::ifstream in(garbage + "/data.mdb");
  std::string first(4, '\0');
  in.read(first.data(), 4);
  EXPECT_EQ(first, "ZZZZ");
}

TEST(StoreOpenTest, SubmitRunsCallbacksOnTheLoopThreadAndGroupsCommits) {
  TempDir dir;
  uv_loop_t loop;
  uv_loop_init(&loop);
  auto s = Store::Open(dir.Sub("db"), StoreOptions{}, &loop);
  const auto loop_thread = std::this_thread::get_id();
  int done = 0;
  uint64_t last_seq = 0;
  bool in_order = true, on_loop = true;
  for (int i = 0; i < 500; ++i) {
    WriteBatch b;
    b.Append(Entry("r", "/x", std::to_string(i)));
    s->Submit(std::move(b), [&](const BatchResult& r) {
      on_loop &= std::this_thread::get_id() == loop_thread;
      ASSERT_TRUE(r.status.ok());
      in_order &= r.seqs[0] > last_seq;
      last_seq = r.seqs[0];
      done++;
    });
  }
  uv_run(&loop, UV_RUN_DEFAULT);  // returns once every callback ran
  EXPECT_EQ(done, 500);
  EXPECT_TRUE(on_loop);
  EXPECT_TRUE(in_order);
  EXPECT_EQ(s->queue().Totals().entries, 500u);
  s->Close();
  int late = 0;
  s->Submit(WriteBatch{}, [&](const BatchResult& r) { late += r.status.code == StatusCode::kClosed; });
  EXPECT_EQ(late, 1);
  s.reset();
  uv_run(&loop, UV_RUN_DEFAULT);
  EXPECT_EQ(uv_loop_close(&loop), 0);
}

TEST(StoreOpenTest, SecondWriterIsRefusedButReadOnlyToolsWork) {
  TempDir dir;
  const std::string db = dir.Sub("db");
  auto s = Store::Open(db, StoreOptions{}, nullptr);
  WriteBatch b;
  b.Append(Entry("r", "/x", "1"));
  ASSERT_TRUE(s->CommitBlocking(std::move(b)).status.ok());
  ExpectOpenFails(db, "in use");
  StoreOptions ro;
  ro.read_only = true;
  auto tool = Store::Open(db, ro, nullptr);
  EXPECT_EQ(tool->queue().Totals().entries, 1u);
  EXPECT_TRUE(tool->Check().ok);
  WriteBatch w;
  w.Append(Entry("r", "/x", "2"));
  EXPECT_EQ(tool->CommitBlocking(std::move(w)).status.code, StatusCode::kClosed);
  s.reset();  // lock released: a writer may open again
  EXPECT_NO_THROW(Store::Open(db, StoreOptions{}, nullptr));
  try {
    Store::Open(dir.Sub("missing"), ro, nullptr);
    FAIL() << "read-only open of a missing store succeeded";
  } catch (const StoreError& e) {
    EXPECT_NE(std::string(e.what()).find(dir.Sub("missing")), std::string::npos);
  }
}

TEST(StoreOpenTest, CheckReportsSizesAndCountsTables) {
  TempDir dir;
  auto s = Store::Open(dir.Sub("db"), StoreOptions{}, nullptr);
  WriteBatch b;
  for (int i = 0; i < 10; ++i) b.Append(Entry("r", "/x", "1"));
  b.TreeSet("/x", 1);
  s->CommitBlocking(std::move(b));
  CheckReport r = s->Check();
  EXPECT_TRUE(r.ok);
  EXPECT_GT(r.file_bytes, 0u);
  EXPECT_GT(r.used_bytes, 0u);
  EXPECT_EQ(r.page_size, 4096u);
  bool found = false;
  for (const auto& t : r.tables) {
    if (t.name == "queue") {
      found = true;
      EXPECT_EQ(t.entries, 10u);
    }
  }
  EXPECT_TRUE(found);
}

TEST(StoreOpenTest, CheckDetectsCounterMismatch) {
  TempDir dir;
  const std::string db = dir.Sub("db");
  {
    auto s = Store::Open(db, StoreOptions{}, nullptr);
    WriteBatch b;
    b.Append(Entry("r", "/x", "1"));
    s->CommitBlocking(std::move(b));
  }
  RawPut(db, "sessions", "orphan", "garbage");
  auto s = Store::Open(db, StoreOptions{}, nullptr);
  CheckReport r = s->Check();
  EXPECT_FALSE(r.ok);
  EXPECT_FALSE(r.problems.empty());
}

}  // namespace
}  // namespace tether::store
