#include "store/cache_units.h"

#include <optional>
#include <vector>

#include "store/record_codec.h"
#include "store/tree_path.h"

namespace tether::store {
namespace {

// The tree key of a path ("/a/b" -> "a/b"); false if malformed.
bool TreeKeyOf(std::string_view path, std::string* key) {
  std::vector<std::string> segs;
  std::string error;
  if (!ParseTreePath(path, &segs, &error)) return false;
  *key = JoinKey(segs, segs.size());
  return true;
}

// True if any key of `keys` lies strictly below `key`.
bool AnyBelow(const std::set<std::string>& keys, const std::string& key) {
  if (key.empty()) return keys.size() > keys.count(key);
  const std::string prefix = key + "/";
  auto it = keys.lower_bound(prefix);
  return it != keys.end() && it->compare(0, prefix.size(), prefix) == 0;
}

}  // namespace

CacheUnits::CacheUnits(ApplyContext* ctx, CacheUse* use)
    : ctx_(ctx), use_(use), unit_depth_(ctx->options.tree_unit_depth) {
  for (const std::string& p : ctx->options.tree_pinned_roots) {
    std::string key;
    if (!TreeKeyOf(p, &key)) continue;  // not a path the tree can hold: pins nothing
    if (key.empty()) pin_all_ = true;
    pinned_.insert(std::move(key));
  }
}

void CacheUnits::Loaded() {
  unit_changes_.clear();
  released_units_.clear();
  released_shallow_.clear();
  if (!spare_set_) {
    spare_after_ = ctx_->counters.lru_clock;
    spare_set_ = true;
  }
}

void CacheUnits::Change(std::string_view unit, int64_t delta, bool used) {
  UnitChange& c = unit_changes_[std::string(unit)];
  c.bytes += delta;
  c.used |= used;
  ctx_->touched = true;
}

void CacheUnits::Released(const std::string& path) {
  std::string key;
  if (!TreeKeyOf(path, &key)) return;
  if (KeyDepth(key) >= unit_depth_) {
    released_units_.emplace(UnitOf(key, unit_depth_));
  } else {
    released_shallow_.insert(std::move(key));
  }
  ctx_->touched = true;
}

Status CacheUnits::GetUnit(MDB_txn* txn, const std::string& unit, UnitRecord* rec, bool* found) {
  MDB_val k = Val(unit), v;
  int rc = mdb_get(txn, ctx_->db.tree_units, &k, &v);
  *found = rc == 0;
  *rec = UnitRecord{};
  if (rc == MDB_NOTFOUND) return Status::Ok();
  if (rc) return ctx_->Mdb(rc, "unit get");
  if (!DecodeUnit(View(v), rec)) return Status::Error(StatusCode::kIoError, "corrupt cache unit record");
  return Status::Ok();
}

// Writes `now` for `unit` (deleting it when it holds nothing) and keeps tree_lru in step: a unit
// is in the LRU index exactly when it holds data and is not parked.
Status CacheUnits::PutUnit(MDB_txn* txn, const std::string& unit, const UnitRecord* old, const UnitRecord& now) {
  auto in_lru = [](const UnitRecord& r) { return r.bytes > 0 && !r.parked; };
  const bool was = old && in_lru(*old), is = in_lru(now);
  if (was && (!is || old->last_use != now.last_use)) {
    std::string lk = LruKey(old->last_use, unit);
    MDB_val k = Val(lk);
    int rc = mdb_del(txn, ctx_->db.tree_lru, &k, nullptr);
    if (rc && rc != MDB_NOTFOUND) return ctx_->Mdb(rc, "lru delete");
  }
  MDB_val k = Val(unit);
  if (now.bytes == 0) {
    int rc = mdb_del(txn, ctx_->db.tree_units, &k, nullptr);
    if (rc && rc != MDB_NOTFOUND) return ctx_->Mdb(rc, "unit delete");
    return Status::Ok();
  }
  std::string value = EncodeUnit(now);
  MDB_val v = Val(value);
  if (int rc = mdb_put(txn, ctx_->db.tree_units, &k, &v, 0)) return ctx_->Mdb(rc, "unit put");
  if (is && (!was || old->last_use != now.last_use)) {
    std::string lk = LruKey(now.last_use, unit);
    MDB_val key = Val(lk), empty{0, nullptr};
    if (int rc = mdb_put(txn, ctx_->db.tree_lru, &key, &empty, 0)) return ctx_->Mdb(rc, "lru put");
  }
  return Status::Ok();
}

Status CacheUnits::Unpark(MDB_txn* txn, const std::string& unit) {
  UnitRecord rec;
  bool found = false;
  if (Status s = GetUnit(txn, unit, &rec, &found); !s.ok() || !found || !rec.parked) return s;
  UnitRecord now = rec;
  now.parked = false;
  return PutUnit(txn, unit, &rec, now);
}

// Every parked unit at or below `key` (a key above unit depth) goes back into the LRU index.
Status CacheUnits::UnparkWithin(MDB_txn* txn, const std::string& key) {
  std::vector<std::string> parked;
  {
    Cursor c(txn, ctx_->db.tree_units);
    if (c.rc()) return ctx_->Mdb(c.rc(), "cursor");
    const std::string prefix = key.empty() ? std::string() : key + "/";
    MDB_val k, v;
    if (!key.empty()) {
      k = Val(key);
      if (mdb_get(txn, ctx_->db.tree_units, &k, &v) == 0) parked.push_back(key);
    }
    k = Val(prefix);
    int rc = prefix.empty() ? mdb_cursor_get(c.get(), &k, &v, MDB_FIRST) : mdb_cursor_get(c.get(), &k, &v, MDB_SET_RANGE);
    for (; rc == 0 && View(k).substr(0, prefix.size()) == prefix; rc = mdb_cursor_get(c.get(), &k, &v, MDB_NEXT)) {
      UnitRecord rec;
      if (DecodeUnit(View(v), &rec) && rec.parked) parked.emplace_back(View(k));
    }
    if (rc && rc != MDB_NOTFOUND) return ctx_->Mdb(rc, "unit scan");
  }
  for (const std::string& unit : parked) {
    if (Status s = Unpark(txn, unit); !s.ok()) return s;
  }
  return Status::Ok();
}

// Writes the unit changes of the batches applied since the last flush: byte deltas, a new use
// stamp (one per flush) for units written, and parked units whose queued writes all left.
Status CacheUnits::Flush(MDB_txn* txn) {
  if (unit_changes_.empty() && released_units_.empty() && released_shallow_.empty()) return Status::Ok();
  uint64_t stamp = 0;
  for (const auto& [unit, change] : unit_changes_) {
    if (change.bytes == 0 && !change.used) continue;
    UnitRecord rec;
    bool found = false;
    if (Status s = GetUnit(txn, unit, &rec, &found); !s.ok()) return s;
    UnitRecord now = rec;
    // Never below zero, even on an inconsistent record (Store::Check() reports those).
    const uint64_t minus = change.bytes < 0 ? static_cast<uint64_t>(-change.bytes) : 0;
    now.bytes = minus ? (minus > now.bytes ? 0 : now.bytes - minus) : now.bytes + static_cast<uint64_t>(change.bytes);
    if (change.used) {
      if (!stamp) stamp = ++ctx_->counters.lru_clock;
      now.last_use = stamp;
      now.parked = false;  // new data in it is not protected until an eviction finds it so
    }
    if (Status s = PutUnit(txn, unit, found ? &rec : nullptr, now); !s.ok()) return s;
  }
  if (stamp) ctx_->counters_dirty = true;
  unit_changes_.clear();
  for (const std::string& unit : released_units_) {
    if (ctx_->pending.Any(txn, unit, false) || ctx_->pending.Any(txn, unit, true)) continue;  // still protected there
    if (Status s = Unpark(txn, unit); !s.ok()) return s;
  }
  released_units_.clear();
  for (const std::string& key : released_shallow_) {
    if (ctx_->pending.Any(txn, key, false)) continue;
    if (Status s = UnparkWithin(txn, key); !s.ok()) return s;
  }
  released_shallow_.clear();
  return Status::Ok();
}

// Complete marks (any query) at `key` and at each of its ancestors, each prefix once per pass.
Status CacheUnits::DropMarksAbove(MDB_txn* txn, std::string_view key, std::unordered_set<std::string>* done) {
  for (size_t end = key.size();;) {
    std::string prefix(key.substr(0, end));
    if (!done->insert(prefix).second) return Status::Ok();  // its ancestors were done with it
    prefix += '\0';
    if (Status s = ctx_->DeleteKeysFrom(txn, ctx_->db.query_marks, prefix); !s.ok()) return s;
    if (end == 0) return Status::Ok();
    size_t slash = key.rfind('/', end - 1);
    end = slash == std::string_view::npos ? 0 : slash;
  }
}

// Evicts what `unit` holds except the protected subtrees: kept paths (sync roots, held paths)
// and targets of queued writes, at, above or below the unit. What stays parks the unit.
Status CacheUnits::EvictUnit(MDB_txn* txn, const std::string& unit, uint64_t last_use, bool has_marks,
                               std::unordered_set<std::string>* marks_done) {
  UnitRecord rec;
  bool found = false;
  if (Status s = GetUnit(txn, unit, &rec, &found); !s.ok()) return s;
  if (!found || rec.bytes == 0 || rec.parked || rec.last_use != last_use) {
    // A key the index should not hold (Store::Check() reports it): dropped, so eviction goes on.
    std::string lk = LruKey(last_use, unit);
    MDB_val k = Val(lk);
    int rc = mdb_del(txn, ctx_->db.tree_lru, &k, nullptr);
    return rc && rc != MDB_NOTFOUND ? ctx_->Mdb(rc, "lru delete") : Status::Ok();
  }
  UnitRecord now = rec;
  auto protects = [&](const std::string& key) {
    return pinned_.count(key) || use_->Held(key) || ctx_->pending.Any(txn, key, false);
  };
  bool whole = false;
  for (size_t end = 0; !whole;) {  // the unit and its ancestors, "" first
    whole = protects(unit.substr(0, end));
    if (end == unit.size()) break;
    size_t slash = unit.find('/', end + (end ? 1 : 0));
    end = slash == std::string::npos ? unit.size() : slash;
  }
  if (!whole) {
    const bool inner = AnyBelow(pinned_, unit) || use_->HeldBelow(unit) || ctx_->pending.Any(txn, unit, true);
    std::unordered_map<std::string, bool> memo;  // protection of keys strictly below the unit
    auto protected_at = [&](const std::string& key) {
      auto [it, fresh] = memo.try_emplace(key);
      if (fresh) it->second = protects(key);
      return it->second;
    };
    uint64_t freed = 0;
    auto evict = [&](MDB_cursor* c, const std::string& key, size_t value_size) -> Status {
      if (int rc = mdb_cursor_del(c, 0)) return ctx_->Mdb(rc, "tree delete");
      freed += key.size() + value_size;
      return has_marks ? DropMarksAbove(txn, key, marks_done) : Status::Ok();
    };
    Cursor c(txn, ctx_->db.tree);
    if (c.rc()) return ctx_->Mdb(c.rc(), "cursor");
    MDB_val k = Val(unit), v;
    int rc = mdb_cursor_get(c.get(), &k, &v, MDB_SET);  // a leaf at the unit itself
    if (rc == 0) {
      if (Status s = evict(c.get(), unit, v.mv_size); !s.ok()) return s;
    } else if (rc != MDB_NOTFOUND) {
      return ctx_->Mdb(rc, "tree get");
    }
    const std::string prefix = unit + "/";
    std::string next = prefix;
    while (true) {
      k = Val(next);
      rc = mdb_cursor_get(c.get(), &k, &v, MDB_SET_RANGE);
      if (rc == MDB_NOTFOUND) break;
      if (rc) return ctx_->Mdb(rc, "tree scan");
      std::string key(View(k));
      if (key.compare(0, prefix.size(), prefix) != 0) break;
      std::optional<std::string> skip;  // the shallowest protected key at or above this leaf
      for (size_t end = key.find('/', prefix.size()); inner && !skip; end = key.find('/', end + 1)) {
        std::string at = key.substr(0, end == std::string::npos ? key.size() : end);
        if (protected_at(at)) skip = std::move(at);
        if (end == std::string::npos) break;
      }
      if (skip) {  // past its subtree ('0' follows '/'); past the leaf itself if it is the leaf
        next = *skip == key ? key + std::string(1, '\0') : *skip + '0';
        continue;
      }
      if (Status s = evict(c.get(), key, v.mv_size); !s.ok()) return s;
      next = std::move(key);
    }
    now.bytes = freed > now.bytes ? 0 : now.bytes - freed;
    ctx_->counters.tree_bytes -= freed;
    if (freed) ctx_->counters.evictions++;
    ctx_->counters_dirty = true;
  }
  now.parked = now.bytes > 0;  // what is left is protected
  return PutUnit(txn, unit, &rec, now);
}

Status CacheUnits::Evict(MDB_txn* txn) {
  if (Status s = Flush(txn); !s.ok()) return s;
  std::vector<std::string> reads = use_->TakeReads();
  if (!reads.empty()) {
    const uint64_t stamp = ++ctx_->counters.lru_clock;
    ctx_->counters_dirty = true;
    for (const std::string& unit : reads) {
      UnitRecord rec;
      bool found = false;
      if (Status s = GetUnit(txn, unit, &rec, &found); !s.ok()) return s;
      if (!found) continue;  // evicted since it was read
      UnitRecord now = rec;
      now.last_use = stamp;
      if (Status s = PutUnit(txn, unit, &rec, now); !s.ok()) return s;
    }
  }
  for (const std::string& key : use_->TakeReleased()) {
    Status s = KeyDepth(key) >= unit_depth_ ? Unpark(txn, std::string(UnitOf(key, unit_depth_))) : UnparkWithin(txn, key);
    if (!s.ok()) return s;
  }
  if (ctx_->options.tree_cache_bytes && ctx_->counters.tree_bytes > ctx_->options.tree_cache_bytes && !pin_all_) {
    MDB_stat ms;
    const bool has_marks = mdb_stat(txn, ctx_->db.query_marks, &ms) != 0 || ms.ms_entries > 0;
    std::unordered_set<std::string> marks_done;
    while (ctx_->counters.tree_bytes > ctx_->options.tree_cache_bytes) {
      std::string unit;
      uint64_t last_use = 0;
      {
        Cursor c(txn, ctx_->db.tree_lru);
        if (c.rc()) return ctx_->Mdb(c.rc(), "cursor");
        MDB_val k, v;
        int rc = mdb_cursor_get(c.get(), &k, &v, MDB_FIRST);
        if (rc == MDB_NOTFOUND) break;  // everything left is protected
        if (rc) return ctx_->Mdb(rc, "lru scan");
        if (k.mv_size < 8) return Status::Error(StatusCode::kIoError, "corrupt cache LRU key");
        // Units used by the group being committed stay (a read of what it just wrote must find
        // it); the next commit may evict them.
        last_use = GetBe64(static_cast<const char*>(k.mv_data));
        if (last_use > spare_after_) break;
        unit.assign(static_cast<const char*>(k.mv_data) + 8, k.mv_size - 8);
      }
      if (Status s = EvictUnit(txn, unit, last_use, has_marks, &marks_done); !s.ok()) return s;
    }
  }
  spare_after_ = ctx_->counters.lru_clock;
  return Status::Ok();
}

}  // namespace tether::store
