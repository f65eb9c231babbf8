#include "store/pending_index.h"

#include <algorithm>

#include "store/record_codec.h"
#include "store/tree_path.h"

namespace tether::store {
namespace {

std::string Prefix(const std::string& key, bool below) {
  std::string prefix = key;
  if (below) {
    if (!prefix.empty()) prefix += '/';
  } else {
    prefix += '\0';
  }
  return prefix;
}

bool Starts(std::string_view s, std::string_view prefix) { return s.substr(0, prefix.size()) == prefix; }

}  // namespace

uint64_t ReadPendingThrough(MDB_txn* txn, const Databases& dbs) {
  MDB_val k = Val("pending_through"), v;
  if (mdb_get(txn, dbs.meta, &k, &v) != 0 || v.mv_size != 8) return UINT64_MAX;
  return GetBe64(static_cast<const char*>(v.mv_data));
}

int WritePendingThrough(MDB_txn* txn, const Databases& dbs, uint64_t through) {
  std::string b;
  PutBe64(&b, through);
  MDB_val k = Val("pending_through"), v = Val(b);
  return mdb_put(txn, dbs.meta, &k, &v, 0);
}

void PendingIndex::Committed() {
  undo_.clear();
  undo_exact_ = true;
  last_added_at_commit_ = last_added_;
}

int PendingIndex::Load(MDB_txn* txn, bool at_last_commit) {
  added_ = false;
  if (at_last_commit && undo_exact_) {
    for (auto it = undo_.rbegin(); it != undo_.rend(); ++it) {
      if (it->added) recent_.erase(it->key);
      else recent_[it->key] = it->route_id;
    }
    undo_.clear();
    last_added_ = last_added_at_commit_;
    return 0;
  }
  undo_.clear();
  undo_exact_ = false;
  recent_.clear();
  through_ = dbs_.has_pending_paths ? ReadPendingThrough(txn, dbs_) : UINT64_MAX;
  last_added_ = through_;
  if (through_ == UINT64_MAX) return 0;
  Cursor c(txn, dbs_.queue);
  if (c.rc()) return c.rc();
  // Per route (queue key = route + seq), the entries after through_: jump over the rest.
  std::string start = QueueKey(0, through_ + 1);
  MDB_val k = Val(start), v;
  int rc = mdb_cursor_get(c.get(), &k, &v, MDB_SET_RANGE);
  while (rc == 0) {
    if (k.mv_size != 12) {  // Check() reports it
      rc = mdb_cursor_get(c.get(), &k, &v, MDB_NEXT);
      continue;
    }
    const char* kp = static_cast<const char*>(k.mv_data);
    const uint32_t route = GetBe32(kp);
    const uint64_t seq = GetBe64(kp + 4);
    if (seq <= through_) {
      start = QueueKey(route, through_ + 1);
      k = Val(start);
      rc = mdb_cursor_get(c.get(), &k, &v, MDB_SET_RANGE);
      continue;
    }
    QueueEntry e;
    if (DecodeEntry(View(v), &e)) Add(e.path, seq, route);
    rc = mdb_cursor_get(c.get(), &k, &v, MDB_NEXT);
  }
  added_ = false;  // what the txn already holds
  undo_.clear();
  if (rc != MDB_NOTFOUND) return rc;
  if (at_last_commit) Committed();
  return 0;
}

void PendingIndex::Add(std::string_view tree_path, uint64_t seq, uint32_t route_id) {
  std::string key;
  if (!PendingIndexKey(tree_path, seq, &key)) return;
  undo_.push_back({key, route_id, true});
  recent_[std::move(key)] = route_id;
  last_added_ = std::max(last_added_, seq);
  added_ = true;
}

int PendingIndex::Remove(MDB_txn* txn, std::string_view tree_path, uint64_t seq) {
  std::string key;
  if (!PendingIndexKey(tree_path, seq, &key)) return 0;
  if (seq > through_) {
    auto it = recent_.find(key);
    if (it != recent_.end()) {
      undo_.push_back({key, it->second, false});
      recent_.erase(it);
    }
    return 0;
  }
  MDB_val k = Val(key);
  int rc = mdb_del(txn, dbs_.pending_paths, &k, nullptr);
  return rc == MDB_NOTFOUND ? 0 : rc;
}

int PendingIndex::Persist(MDB_txn* txn) {
  const bool added = added_;
  added_ = false;
  if (!added || recent_.size() < kPersistAt) return 0;
  for (const auto& [key, route] : recent_) {
    std::string rv;
    PutBe32(&rv, route);
    MDB_val k = Val(key), v = Val(rv);
    if (int rc = mdb_put(txn, dbs_.pending_paths, &k, &v, 0)) return rc;
  }
  // Every queued entry up to last_added_ is in LMDB now: the ones after the old through_ were here.
  if (int rc = WritePendingThrough(txn, dbs_, last_added_)) return rc;
  through_ = last_added_;
  recent_.clear();
  undo_exact_ = false;  // an abort now needs the scan
  return 0;
}

void PendingIndex::Collect(MDB_txn* txn, const std::string& key, bool below, std::vector<PendingRef>* out) const {
  const std::string prefix = Prefix(key, below);
  auto take = [&](std::string_view found, uint32_t route) {
    if (found.size() < prefix.size() + 8) return;
    if (!below && found.size() != prefix.size() + 8) return;
    out->push_back({GetBe64(found.data() + found.size() - 8), route});
  };
  for (auto it = recent_.lower_bound(prefix); it != recent_.end() && Starts(it->first, prefix); ++it) {
    take(it->first, it->second);
  }
  if (!dbs_.has_pending_paths) return;
  Cursor c(txn, dbs_.pending_paths);
  if (c.rc()) return;
  MDB_val k = Val(prefix), v;
  int rc = prefix.empty() ? mdb_cursor_get(c.get(), &k, &v, MDB_FIRST) : mdb_cursor_get(c.get(), &k, &v, MDB_SET_RANGE);
  for (; rc == 0 && Starts(View(k), prefix); rc = mdb_cursor_get(c.get(), &k, &v, MDB_NEXT)) {
    if (v.mv_size == 4) take(View(k), GetBe32(static_cast<const char*>(v.mv_data)));
  }
}

bool PendingIndex::Any(MDB_txn* txn, const std::string& key, bool below) const {
  const std::string prefix = Prefix(key, below);
  auto it = recent_.lower_bound(prefix);
  if (it != recent_.end() && Starts(it->first, prefix)) return true;
  if (!dbs_.has_pending_paths) return false;
  Cursor c(txn, dbs_.pending_paths);
  if (c.rc()) return true;
  MDB_val k = Val(prefix), v;
  int rc = prefix.empty() ? mdb_cursor_get(c.get(), &k, &v, MDB_FIRST) : mdb_cursor_get(c.get(), &k, &v, MDB_SET_RANGE);
  if (rc == MDB_NOTFOUND) return false;
  return rc != 0 || Starts(View(k), prefix);
}

std::vector<PendingRef> PendingIndex::Overlapping(MDB_txn* txn, const std::string& key) const {
  std::vector<PendingRef> out;
  std::vector<std::string> segs;
  std::string error;
  ParseTreePath(key, &segs, &error);  // a tree key is a valid path
  for (size_t depth = 0; depth < segs.size(); ++depth) Collect(txn, JoinKey(segs, depth), false, &out);
  Collect(txn, key, false, &out);
  Collect(txn, key, true, &out);
  std::sort(out.begin(), out.end(), [](const PendingRef& a, const PendingRef& b) { return a.seq < b.seq; });
  out.erase(std::unique(out.begin(), out.end(), [](const PendingRef& a, const PendingRef& b) { return a.seq == b.seq; }),
            out.end());
  return out;
}

}  // namespace tether::store
