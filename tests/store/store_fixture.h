// A store test with one open Store in a temp directory, and raw LMDB access to its file.
#pragma once

#include <gtest/gtest.h>
#include <lmdb.h>

#include <functional>
#include <memory>
#include <string>

#include "store/store.h"
#include "tests/store/store_test_util.h"

namespace tether::store::testing {

class StoreFixture : public ::testing::Test {
 protected:
  void SetUp() override { Open(); }
  void Open() {
    store_.reset();
    store_ = Store::Open(dir_.Sub("db"), StoreOptions{}, nullptr);
  }
  void Close() { store_.reset(); }
  // A device write: the tree and the queue; returns its seq.
  uint64_t Write(const std::string& route, const std::string& path, const std::string& payload) {
    WriteBatch b;
    b.TreeSet(path, nlohmann::json::parse(payload));
    b.Append(Entry(route, path, payload));
    BatchResult r = store_->CommitBlocking(std::move(b));
    EXPECT_TRUE(r.status.ok()) << r.status.ToString();
    return r.seqs.empty() ? 0 : r.seqs[0];
  }
  // Cloud data replacing the subtree at `path`.
  void Cloud(const std::string& path, const std::string& value) {
    WriteBatch b;
    b.TreeSetFromCloud(path, nlohmann::json::parse(value));
    ASSERT_TRUE(store_->CommitBlocking(std::move(b)).status.ok());
  }
  void ExpectHealthy() {
    CheckReport r = store_->Check();
    EXPECT_TRUE(r.ok) << (r.problems.empty() ? "" : r.problems.front());
  }

  TempDir dir_;
  std::unique_ptr<Store> store_;
};

// Runs `edit` in one write txn on the store file at `dir` (the Store must be closed).
inline void RawEdit(const std::string& dir, const std::function<void(MDB_txn*)>& edit) {
  MDB_env* env = nullptr;
  ASSERT_EQ(mdb_env_create(&env), 0);
  mdb_env_set_maxdbs(env, 16);
  ASSERT_EQ(mdb_env_open(env, dir.c_str(), 0, 0640), 0);
  MDB_txn* txn = nullptr;
  ASSERT_EQ(mdb_txn_begin(env, nullptr, 0, &txn), 0);
  edit(txn);
  ASSERT_EQ(mdb_txn_commit(txn), 0);
  mdb_env_close(env);
}

}  // namespace tether::store::testing
