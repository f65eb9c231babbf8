#include "store/data_tree.h"

#include "store/lmdb_env.h"
#include "store/record_codec.h"
#include "store/store_counters.h"
#include "store/store_error.h"
#include "store/tree_path.h"
#include "store/cache_use.h"

namespace tether::store {
namespace {

StoreCounters ReadCounters(const LmdbEnv& env) {
  ReadTxn txn(env);
  StoreCounters c;
  auto v = txn.Get(env.dbs().meta, "counters");
  if (!v || !DecodeCounters(*v, &c)) throw StoreError(env.path() + ": corrupt counters");
  return c;
}

}  // namespace

Status DataTree::Get(std::string_view path, nlohmann::json* out) const {
  std::vector<std::string> segs;
  std::string error;
  *out = nullptr;
  if (!ParseTreePath(path, &segs, &error)) return Status::Error(StatusCode::kInvalidArgument, error);
  const std::string key = JoinKey(segs, segs.size());
  ReadTxn txn(env_);
  const MDB_dbi tree = env_.dbs().tree;
  if (!key.empty()) {
    if (auto leaf = txn.Get(tree, key)) {
      *out = DecodeLeaf(*leaf);
      use_->TouchRead(UnitOf(key, use_->unit_depth()));
      return Status::Ok();
    }
  }
  const std::string prefix = key.empty() ? std::string() : key + "/";
  // A path at or below the unit depth lies in one unit; above it, every unit read is touched.
  const uint32_t depth = use_->unit_depth();
  const bool one_unit = KeyDepth(key) >= depth;
  std::string_view last_unit;
  Cursor c(txn.get(), tree);
  MDB_val k = Val(prefix), v;
  int rc = prefix.empty() ? mdb_cursor_get(c.get(), &k, &v, MDB_FIRST)
                          : mdb_cursor_get(c.get(), &k, &v, MDB_SET_RANGE);
  for (; rc == 0; rc = mdb_cursor_get(c.get(), &k, &v, MDB_NEXT)) {
    std::string_view found = View(k);
    if (found.substr(0, prefix.size()) != prefix) break;
    if (out->is_null()) *out = nlohmann::json::object();
    InsertLeaf(out, found.substr(prefix.size()), DecodeLeaf(View(v)));
    if (!one_unit && UnitOf(found, depth) != last_unit) {
      last_unit = UnitOf(found, depth);  // points into the txn's pages, valid while it lives
      use_->TouchRead(last_unit);
    }
  }
  if (one_unit && !out->is_null()) use_->TouchRead(UnitOf(key, depth));  // only units holding data
  return Status::Ok();
}

nlohmann::json DataTree::Get(std::string_view path) const {
  nlohmann::json out;
  Get(path, &out);
  return out;
}

bool DataTree::HoldsComplete(std::string_view path, std::string_view query) const {
  std::vector<std::string> segs;
  std::string error;
  if (!env_.dbs().has_query_marks || !ParseTreePath(path, &segs, &error)) return false;
  ReadTxn txn(env_);
  auto v = txn.Get(env_.dbs().meta, "counters");
  StoreCounters c;
  if (!v || !DecodeCounters(*v, &c)) return false;
  auto marked = [&](size_t depth, std::string_view q) {
    std::string key = JoinKey(segs, depth);
    key += '\0';
    key += q;
    auto m = txn.Get(env_.dbs().query_marks, key);
    // Current marks are deleted when what they cover is evicted; marks of older builds are valid
    // while no root was evicted since.
    return m && (m->empty() || (m->size() == 8 && GetBe64(m->data()) == c.evictions));
  };
  if (!query.empty() && marked(segs.size(), query)) return true;
  for (size_t depth = segs.size() + 1; depth-- > 0;) {
    if (marked(depth, "")) return true;
  }
  return false;
}

uint64_t DataTree::Version() const { return ReadCounters(env_).tree_version; }
uint64_t DataTree::Bytes() const { return ReadCounters(env_).tree_bytes; }
uint64_t DataTree::Evictions() const { return ReadCounters(env_).evictions; }

}  // namespace tether::store
