#include "store/tree_applier.h"

#include <algorithm>
#include <optional>

#include "store/pending_overlay.h"
#include "store/record_codec.h"
#include "store/tree_path.h"

namespace tether::store {
namespace {

std::string ChildKey(const std::string& base, const std::string& rel) {
  return base.empty() ? rel : rel.empty() ? base : base + "/" + rel;
}

}  // namespace

Status TreeApplier::DeleteTreeKey(MDB_txn* txn, const std::string& key) {
  MDB_val mk = Val(key), mv;
  int rc = mdb_get(txn, ctx_->db.tree, &mk, &mv);
  if (rc == MDB_NOTFOUND) return Status::Ok();
  if (rc) return ctx_->Mdb(rc, "tree get");
  const uint64_t bytes = key.size() + mv.mv_size;
  if ((rc = mdb_del(txn, ctx_->db.tree, &mk, nullptr))) return ctx_->Mdb(rc, "tree delete");
  units_->Change(UnitOf(key, unit_depth_), -static_cast<int64_t>(bytes), false);
  ctx_->counters.tree_bytes -= bytes;
  ctx_->counters_dirty = true;
  return Status::Ok();
}

// Deletes `key` and every key below it ("" = everything).
Status TreeApplier::DeleteTreeRange(MDB_txn* txn, const std::string& key) {
  if (!key.empty()) {
    Status s = DeleteTreeKey(txn, key);
    if (!s.ok()) return s;
  }
  const std::string prefix = key.empty() ? std::string() : key + "/";
  Cursor c(txn, ctx_->db.tree);
  if (c.rc()) return ctx_->Mdb(c.rc(), "cursor");
  while (true) {
    MDB_val k = Val(prefix), v;
    int rc = prefix.empty() ? mdb_cursor_get(c.get(), &k, &v, MDB_FIRST)
                            : mdb_cursor_get(c.get(), &k, &v, MDB_SET_RANGE);
    if (rc == MDB_NOTFOUND) return Status::Ok();
    if (rc) return ctx_->Mdb(rc, "tree scan");
    std::string_view found = View(k);
    if (found.substr(0, prefix.size()) != prefix) return Status::Ok();
    const uint64_t bytes = k.mv_size + v.mv_size;
    std::string unit(UnitOf(found, unit_depth_));
    if ((rc = mdb_cursor_del(c.get(), 0))) return ctx_->Mdb(rc, "tree delete");
    units_->Change(unit, -static_cast<int64_t>(bytes), false);
    ctx_->counters.tree_bytes -= bytes;
    ctx_->counters_dirty = true;
  }
}

Status TreeApplier::SetTree(MDB_txn* txn, const std::vector<std::string>& segs,
                             const nlohmann::json& value, BatchResult* result) {
  std::string error;
  if (!ValidTreeValue(value, &error)) return Invalid(error);
  const std::string key = JoinKey(segs, segs.size());
  if (key.size() > kMaxLmdbKeyBytes) return Invalid("path longer than " + std::to_string(kMaxLmdbKeyBytes) + " bytes");
  if (key.empty() && !value.is_null() && !value.is_object() && !value.is_array()) {
    return Invalid("cannot store a scalar at the root");
  }
  Status s = DeleteTreeRange(txn, key);
  // A plain value above the path gives way only to data: removing (or writing nothing) below a
  // leaf leaves the leaf, as removing a child that does not exist changes nothing in Firebase.
  const bool data = HoldsData(value);
  for (size_t i = 1; s.ok() && data && i < segs.size(); ++i) s = DeleteTreeKey(txn, JoinKey(segs, i));
  if (!s.ok()) return s;
  FlattenJson(value, key, [&](const std::string& leaf_key, const std::string& text) {
    if (!s.ok()) return;
    if (leaf_key.size() > kMaxLmdbKeyBytes) {
      s = Invalid("path longer than " + std::to_string(kMaxLmdbKeyBytes) + " bytes: /" + leaf_key.substr(0, 64) + "...");
      return;
    }
    MDB_val mk = Val(leaf_key), mv = Val(text);
    if (int rc = mdb_put(txn, ctx_->db.tree, &mk, &mv, 0)) {
      s = ctx_->Mdb(rc, "tree put");
      return;
    }
    const uint64_t bytes = leaf_key.size() + text.size();
    units_->Change(UnitOf(leaf_key, unit_depth_), static_cast<int64_t>(bytes), true);
    ctx_->counters.tree_bytes += bytes;
  });
  if (!s.ok()) return s;
  ctx_->counters.tree_version++;
  ctx_->counters_dirty = true;
  ctx_->touched = true;
  result->changed_paths.push_back("/" + key);
  return Status::Ok();
}

// *out = the number an increment leaves at tree key `key`: Firebase's sum of what is there and
// inc.by. A sum that is not a finite number fails the batch when inc.refuse_non_finite (a
// device's write: 4.00), else leaves what is there (the cloud adds to its own number at upload).
Status TreeApplier::ApplyIncrement(MDB_txn* txn, const std::string& key, const mutation::TreeIncrement& inc,
                                    nlohmann::json* out) {
  nlohmann::json current = LeafAt(txn, ctx_->db.tree, key);
  std::optional<nlohmann::json> sum = IncrementSum(current, inc.by);
  if (sum) {
    *out = std::move(*sum);
    return Status::Ok();
  }
  if (inc.refuse_non_finite) return Invalid("increment gives a number that is not finite at /" + key.substr(0, 80));
  *out = std::move(current);
  return Status::Ok();
}

Status TreeApplier::Apply(MDB_txn* txn, const mutation::TreeSet& m, BatchResult* result) {
  std::vector<std::string> segs;
  std::string error;
  if (!ParseTreePath(m.path, &segs, &error)) return Invalid(error);
  if (m.expect && ReadSubtree(txn, ctx_->db.tree, JoinKey(segs, segs.size())) != *m.expect) {
    return Status::Error(StatusCode::kConflict, "compare-and-set: the value at " + m.path + " changed");
  }
  if (m.increments.empty()) return SetTree(txn, segs, m.value, result);
  const std::string base = JoinKey(segs, segs.size());
  nlohmann::json value = m.value;
  for (const auto& inc : m.increments) {
    nlohmann::json n;
    if (Status s = ApplyIncrement(txn, ChildKey(base, inc.rel_path), inc, &n); !s.ok()) return s;
    if (inc.rel_path.empty()) value = std::move(n);
    else if (value.is_object()) InsertLeaf(&value, inc.rel_path, std::move(n));
  }
  return SetTree(txn, segs, value, result);
}

Status TreeApplier::Apply(MDB_txn* txn, const mutation::TreeRemove& m, BatchResult* result) {
  std::vector<std::string> segs;
  std::string error;
  if (!ParseTreePath(m.path, &segs, &error)) return Invalid(error);
  return SetTree(txn, segs, nullptr, result);
}

Status TreeApplier::Apply(MDB_txn* txn, const mutation::TreeUpdate& m, BatchResult* result) {
  if (!m.children.is_object()) return Invalid("update value must be an object");
  std::vector<std::string> base, rel;
  std::string error;
  if (!ParseTreePath(m.path, &base, &error)) return Invalid(error);
  nlohmann::json resolved;
  if (!m.increments.empty()) {  // each increment lies in one child: "k" or below "k/"
    resolved = m.children;
    const std::string base_key = JoinKey(base, base.size());
    for (const auto& inc : m.increments) {
      nlohmann::json n;
      if (Status s = ApplyIncrement(txn, ChildKey(base_key, inc.rel_path), inc, &n); !s.ok()) return s;
      for (auto it = resolved.begin(); it != resolved.end(); ++it) {
        const std::string& k = it.key();
        if (inc.rel_path == k) {
          *it = std::move(n);
          break;
        }
        if (inc.rel_path.compare(0, k.size() + 1, k + "/") == 0 && it->is_object()) {
          InsertLeaf(&*it, std::string_view(inc.rel_path).substr(k.size() + 1), std::move(n));
          break;
        }
      }
    }
  }
  const nlohmann::json& children = m.increments.empty() ? m.children : resolved;
  for (auto it = children.begin(); it != children.end(); ++it) {
    if (!ParseTreePath(it.key(), &rel, &error)) return Invalid(error);
    if (rel.empty()) return Invalid("empty child path in update");
    std::vector<std::string> full = base;
    full.insert(full.end(), rel.begin(), rel.end());
    Status s = SetTree(txn, full, *it, result);
    if (!s.ok()) return s;
  }
  return Status::Ok();
}

Status TreeApplier::Apply(MDB_txn* txn, const mutation::MarkComplete& m) {
  std::vector<std::string> segs;
  std::string error;
  if (!ParseTreePath(m.path, &segs, &error)) return Invalid(error);
  std::string key = JoinKey(segs, segs.size());
  key += '\0';
  key += m.query;
  if (key.size() > kMaxLmdbKeyBytes) return Status::Ok();  // over LMDB's key limit: simply not remembered
  MDB_val k = Val(key), v{0, nullptr};
  if (int rc = mdb_put(txn, ctx_->db.query_marks, &k, &v, 0)) return ctx_->Mdb(rc, "marking a query complete");
  return Status::Ok();
}

Status TreeApplier::Apply(MDB_txn* txn, const mutation::ForgetComplete& m) {
  std::vector<std::string> segs;
  std::string error;
  if (!ParseTreePath(m.path, &segs, &error)) return Invalid(error);
  const std::string key = JoinKey(segs, segs.size());
  if (Status s = DeleteMarksWithin(txn, key); !s.ok()) return s;
  for (size_t depth = 0; depth < segs.size(); ++depth) {
    std::string mark = JoinKey(segs, depth);
    mark += '\0';
    MDB_val k = Val(mark);
    int rc = mdb_del(txn, ctx_->db.query_marks, &k, nullptr);
    if (rc && rc != MDB_NOTFOUND) return ctx_->Mdb(rc, "forgetting a complete mark");
  }
  return Status::Ok();
}

Status TreeApplier::DeleteMarksWithin(MDB_txn* txn, const std::string& key) {
  if (key.empty()) return ctx_->DeleteKeysFrom(txn, ctx_->db.query_marks, "");
  Status s = ctx_->DeleteKeysFrom(txn, ctx_->db.query_marks, key + '\0');
  return s.ok() ? ctx_->DeleteKeysFrom(txn, ctx_->db.query_marks, key + '/') : s;
}

Status TreeApplier::Apply(MDB_txn* txn, const mutation::CloudWrite& m, BatchResult* result) {
  std::vector<std::string> base, rel;
  std::string error;
  if (!ParseTreePath(m.path, &base, &error)) return Invalid(error);
  std::vector<std::string> written;
  if (m.patch) {
    if (!m.value.is_object()) return Invalid("cloud update must be an object");
    for (auto it = m.value.begin(); it != m.value.end(); ++it) {
      if (!ParseTreePath(it.key(), &rel, &error)) return Invalid(error);
      if (rel.empty()) return Invalid("empty child path in cloud update");
      std::vector<std::string> full = base;
      full.insert(full.end(), rel.begin(), rel.end());
      if (Status s = SetTree(txn, full, *it, result); !s.ok()) return s;
      written.push_back(JoinKey(full, full.size()));
    }
  } else {
    if (Status s = SetTree(txn, base, m.value, result); !s.ok()) return s;
    written.push_back(JoinKey(base, base.size()));
  }
  for (const std::string& key : written) {
    if (Status s = OverlayPending(txn, key, m.in_flight, result); !s.ok()) return s;
  }
  return Status::Ok();
}

Status TreeApplier::OverlayPending(MDB_txn* txn, const std::string& key, const std::vector<uint64_t>& in_flight,
                                    BatchResult* result) {
  for (const PendingRef& p : ctx_->pending.Overlapping(txn, key)) {
    if (std::binary_search(in_flight.begin(), in_flight.end(), p.seq)) continue;
    const std::string qk = QueueKey(p.route_id, p.seq);
    MDB_val k = Val(qk), v;
    int rc = mdb_get(txn, ctx_->db.queue, &k, &v);
    if (rc == MDB_NOTFOUND) continue;
    if (rc) return ctx_->Mdb(rc, "queue get");
    QueueEntry e;
    if (!DecodeEntry(View(v), &e)) continue;  // Check() reports it
    Status s = ReapplyWithin(txn, ctx_->db.tree, e, key, [&](const std::string& at, const nlohmann::json& value) {
      std::vector<std::string> segs;
      std::string err;
      ParseTreePath(at, &segs, &err);
      Status st = SetTree(txn, segs, value, result);
      // A queued value the tree cannot hold (it was refused when written) shows the cloud's.
      return st.code == StatusCode::kInvalidArgument ? Status::Ok() : st;
    });
    if (!s.ok()) return s;
  }
  return Status::Ok();
}

}  // namespace tether::store
