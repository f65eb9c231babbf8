#include "store/batch_applier.h"

#include <algorithm>
#include <cerrno>

#include "store/entry_age.h"
#include "store/pending_overlay.h"
#include "store/record_codec.h"
#include "store/store_error.h"
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

std::string Be32Key(uint32_t v) {
  std::string k;
  PutBe32(&k, v);
  return k;
}

std::string Be64Key(uint64_t v) {
  std::string k;
  PutBe64(&k, v);
  return k;
}

// LMDB's compile-time key limit (mdb_env_get_maxkeysize() == 511 in Debian's build).
constexpr size_t kMaxKeyBytes = 511;

Status Invalid(std::string msg) { return Status::Error(StatusCode::kInvalidArgument, std::move(msg)); }
Status NotFound(std::string msg) { return Status::Error(StatusCode::kNotFound, std::move(msg)); }

// Mutations that can need more pages than they free.
bool MayGrow(const WriteBatch& batch) {
  for (const mutation::Mutation& m : batch.mutations()) {
    if (std::holds_alternative<mutation::Append>(m) || std::holds_alternative<mutation::TreeUpdate>(m) ||
        std::holds_alternative<mutation::PutSession>(m) || std::holds_alternative<mutation::AddOnDisconnect>(m) ||
        std::holds_alternative<mutation::RetryDead>(m) || std::holds_alternative<mutation::MoveToDead>(m)) {
      return true;
    }
    if (auto* set = std::get_if<mutation::TreeSet>(&m); set && !set->value.is_null()) return true;
    if (std::holds_alternative<mutation::CloudWrite>(m) || std::holds_alternative<mutation::MarkComplete>(m)) {
      return true;
    }
  }
  return false;
}

}  // namespace

BatchApplier::BatchApplier(const LmdbEnv& env, const StoreOptions& options, CacheUse* use)
    : env_(env),
      options_(options),
      db_(env.dbs()),
      use_(use),
      unit_depth_(options.tree_unit_depth),
      pending_(env.dbs()),
      route_limits_(options.route_limits) {
  for (const std::string& p : options.tree_pinned_roots) {
    std::string key;
    if (!TreeKeyOf(p, &key)) continue;  // not a path the tree can hold: pins nothing
    if (key.empty()) pin_all_ = true;
    pinned_.insert(std::move(key));
  }
}

Status BatchApplier::Mdb(int rc, const char* what) {
  if (rc == MDB_MAP_FULL || rc == MDB_TXN_FULL || rc == ENOSPC) {
    exhausted_ = true;
    return Status::Error(StatusCode::kFull, std::string(what) + ": " + mdb_strerror(rc));
  }
  return Status::Error(StatusCode::kIoError, std::string(what) + ": " + mdb_strerror(rc));
}

void BatchApplier::SetRouteLimits(std::map<std::string, QueueLimits> limits) {
  std::lock_guard lock(limits_mu_);
  route_limits_ = std::move(limits);
}

QueueLimits BatchApplier::LimitsFor(const std::string& route) const {
  std::lock_guard lock(limits_mu_);
  auto it = route_limits_.find(route);
  return it == route_limits_.end() ? options_.default_route_limits : it->second;
}

RouteStats& BatchApplier::Route(uint32_t id) {
  dirty_routes_.insert(id);
  touched_ = true;
  return routes_[id];
}

void BatchApplier::UnitBytes(std::string_view unit, int64_t delta, bool used) {
  UnitChange& c = unit_changes_[std::string(unit)];
  c.bytes += delta;
  c.used |= used;
  touched_ = true;
}

void BatchApplier::Released(const std::string& path) {
  std::string key;
  if (!TreeKeyOf(path, &key)) return;
  if (KeyDepth(key) >= unit_depth_) {
    released_units_.emplace(UnitOf(key, unit_depth_));
  } else {
    released_shallow_.insert(std::move(key));
  }
  touched_ = true;
}

void BatchApplier::Load(MDB_txn* txn, bool at_last_commit) {
  counters_ = StoreCounters{};
  route_ids_.clear();
  routes_.clear();
  dirty_routes_.clear();
  unit_changes_.clear();
  released_units_.clear();
  released_shallow_.clear();
  ttl_scans_.clear();
  counters_dirty_ = false;
  touched_ = false;
  MDB_val k = Val("counters"), v;
  int rc = mdb_get(txn, db_.meta, &k, &v);
  if (rc || !DecodeCounters(View(v), &counters_)) {
    throw StoreError(env_.path() + ": corrupt store: unreadable counters record");
  }
  {
    Cursor c(txn, db_.routes);
    for (rc = mdb_cursor_get(c.get(), &k, &v, MDB_FIRST); rc == 0;
         rc = mdb_cursor_get(c.get(), &k, &v, MDB_NEXT)) {
      if (v.mv_size != 4) throw StoreError(env_.path() + ": corrupt store: bad route id");
      route_ids_[std::string(View(k))] = GetBe32(static_cast<const char*>(v.mv_data));
    }
  }
  {
    Cursor c(txn, db_.route_stats);
    for (rc = mdb_cursor_get(c.get(), &k, &v, MDB_FIRST); rc == 0;
         rc = mdb_cursor_get(c.get(), &k, &v, MDB_NEXT)) {
      RouteStats rs;
      if (k.mv_size != 4 || !DecodeRouteStats(View(v), &rs)) {
        throw StoreError(env_.path() + ": corrupt store: bad route stats");
      }
      routes_[GetBe32(static_cast<const char*>(k.mv_data))] = rs;
    }
  }
  if (int prc = pending_.Load(txn, at_last_commit)) {
    throw StoreError(env_.path() + ": cannot read the queue for its path index: " + mdb_strerror(prc));
  }
  if (!spare_set_) {
    spare_after_ = counters_.lru_clock;
    spare_set_ = true;
  }
}

Status BatchApplier::Flush(MDB_txn* txn) {
  for (uint32_t id : dirty_routes_) {
    std::string k = Be32Key(id), v = EncodeRouteStats(routes_[id]);
    MDB_val mk = Val(k), mv = Val(v);
    if (int rc = mdb_put(txn, db_.route_stats, &mk, &mv, 0)) return Mdb(rc, "route stats");
  }
  dirty_routes_.clear();
  if (int rc = pending_.Persist(txn)) return Mdb(rc, "pending index");
  if (Status s = FlushUnits(txn); !s.ok()) return s;
  if (counters_dirty_) {
    std::string v = EncodeCounters(counters_);
    MDB_val mk = Val("counters"), mv = Val(v);
    if (int rc = mdb_put(txn, db_.meta, &mk, &mv, 0)) return Mdb(rc, "counters");
    counters_dirty_ = false;
  }
  return Status::Ok();
}

// ---------------------------------------------------------------- WriteQueue

Status BatchApplier::AppendEntry(MDB_txn* txn, QueueEntry e, BatchResult* result) {
  if (e.route.empty() || e.route.size() > kMaxKeyBytes) return Invalid("queue entry route empty or too long");
  const QueueLimits lim = LimitsFor(e.route);
  e.seq = counters_.next_seq;
  std::string value = EncodeEntry(e);
  const uint64_t size = value.size();
  if ((lim.max_bytes && size > lim.max_bytes) ||
      (options_.global_max_bytes && size > options_.global_max_bytes)) {
    return Invalid("queue entry of " + std::to_string(size) + " bytes exceeds the byte limit");
  }
  auto id_it = route_ids_.find(e.route);
  uint32_t id = id_it == route_ids_.end() ? 0 : id_it->second;
  auto over = [&] {
    const RouteStats* rs = id ? &routes_[id] : nullptr;
    uint64_t depth = rs ? rs->depth : 0, bytes = rs ? rs->bytes : 0;
    return (lim.max_entries && depth + 1 > lim.max_entries) ||
           (lim.max_bytes && bytes + size > lim.max_bytes) ||
           (options_.global_max_entries && counters_.queue_entries + 1 > options_.global_max_entries) ||
           (options_.global_max_bytes && counters_.queue_bytes + size > options_.global_max_bytes);
  };
  while (over()) {
    if (lim.policy == OverflowPolicy::kDropOldest && id && routes_[id].depth > 0) {
      Status s = RemoveHeadWhile(txn, id, Removal::kDropOldest, UINT64_MAX, 1);
      if (!s.ok()) return s;
      continue;
    }
    rejected_route_ = e.route;
    return Status::Error(StatusCode::kRejected, "queue limit reached for route '" + e.route + "'");
  }
  if (!id) {
    id = counters_.next_route_id++;
    std::string idv = Be32Key(id);
    MDB_val mk = Val(e.route), mv = Val(idv);
    if (int rc = mdb_put(txn, db_.routes, &mk, &mv, MDB_NOOVERWRITE)) return Mdb(rc, "route id");
    route_ids_[e.route] = id;
    Route(id).route = e.route;
  }
  counters_.next_seq++;
  counters_dirty_ = true;
  touched_ = true;
  std::string key = QueueKey(id, e.seq);
  MDB_val mk = Val(key), mv = Val(value);
  if (int rc = mdb_put(txn, db_.queue, &mk, &mv, 0)) return Mdb(rc, "queue append");
  pending_.Add(e.path, e.seq, id);
  RouteStats& rs = Route(id);
  rs.depth++;
  rs.bytes += size;
  counters_.queue_entries++;
  counters_.queue_bytes += size;
  result->seqs.push_back(e.seq);
  return Status::Ok();
}

Status BatchApplier::RemoveQueued(MDB_txn* txn, uint32_t route_id, uint64_t seq,
                                  std::string_view value, Removal why) {
  QueueEntry e;
  if (!DecodeEntry(value, &e)) return Status::Error(StatusCode::kIoError, "corrupt queue entry");
  const uint64_t size = value.size();
  std::string key = QueueKey(route_id, seq);
  MDB_val mk = Val(key);
  if (int rc = mdb_del(txn, db_.queue, &mk, nullptr)) return Mdb(rc, "queue delete");
  if (int rc = pending_.Remove(txn, e.path, e.seq)) return Mdb(rc, "pending index");
  if (why == Removal::kAck && acks_left_ != SIZE_MAX) acks_left_--;
  ForgetSwept(route_id, seq);
  RouteStats& rs = Route(route_id);
  rs.depth--;
  rs.bytes -= size;
  if (why == Removal::kDropOldest) rs.dropped_oldest++;
  if (why == Removal::kExpired) rs.expired++;
  counters_.queue_entries--;
  counters_.queue_bytes -= size;
  counters_dirty_ = true;
  Released(e.path);
  return Status::Ok();
}

// Removes head entries of a route while seq <= up_to_seq, at most max_count of them.
Status BatchApplier::RemoveHeadWhile(MDB_txn* txn, uint32_t route_id, Removal why, uint64_t up_to_seq,
                                     size_t max_count) {
  Cursor c(txn, db_.queue);
  if (c.rc()) return Mdb(c.rc(), "cursor");
  std::string start = QueueKey(route_id, 0);
  for (size_t n = 0; n < max_count; ++n) {
    MDB_val k = Val(start), v;
    int rc = mdb_cursor_get(c.get(), &k, &v, MDB_SET_RANGE);
    if (rc == MDB_NOTFOUND) return Status::Ok();
    if (rc) return Mdb(rc, "queue scan");
    if (k.mv_size != 12 || GetBe32(static_cast<const char*>(k.mv_data)) != route_id) return Status::Ok();
    uint64_t seq = GetBe64(static_cast<const char*>(k.mv_data) + 4);
    if (seq > up_to_seq) return Status::Ok();
    if (why == Removal::kAck && acks_left_ == 0) {
      cut_short_ = true;
      return Status::Ok();
    }
    Status s = RemoveQueued(txn, route_id, seq, View(v), why);
    if (!s.ok()) return s;
  }
  return Status::Ok();
}

// One route's TTL sweep: from the head (or after the run of unknown-age entries an earlier sweep
// already passed), drops entries older than ttl_ms, keeps those of unknown age, and stops at the
// first entry known to be younger (later entries were written after it).
Status BatchApplier::SweepRoute(MDB_txn* txn, uint32_t route_id, int64_t ttl_ms, const ClockReading& now) {
  TtlScan& scan = ttl_scans_[route_id];
  if (scan.resolvable_at_wall_ms && PlausibleWall(now.wall_ms) && now.wall_ms >= *scan.resolvable_at_wall_ms) {
    scan = TtlScan{};  // the wall clock can now tell the ages it could not: look again
  }
  Cursor c(txn, db_.queue);
  if (c.rc()) return Mdb(c.rc(), "cursor");
  for (size_t examined = 0; examined < kSweepScanLimit && scan.through_seq < UINT64_MAX; ++examined) {
    std::string start = QueueKey(route_id, scan.through_seq + 1);
    MDB_val k = Val(start), v;
    int rc = mdb_cursor_get(c.get(), &k, &v, MDB_SET_RANGE);
    if (rc == MDB_NOTFOUND) break;
    if (rc) return Mdb(rc, "queue scan");
    if (k.mv_size != 12 || GetBe32(static_cast<const char*>(k.mv_data)) != route_id) break;
    const uint64_t seq = GetBe64(static_cast<const char*>(k.mv_data) + 4);
    QueueEntry e;
    if (!DecodeEntry(View(v), &e)) return Status::Error(StatusCode::kIoError, "corrupt queue entry");
    const EntryAge age = AgeOf(e, now);
    if (age.ms && *age.ms <= ttl_ms) break;
    if (age.ms) {
      Status s = RemoveQueued(txn, route_id, seq, View(v), Removal::kExpired);
      if (!s.ok()) return s;
    } else {
      scan.unknown++;
      if (!age.settled) scan.resolvable_at_wall_ms = std::max(scan.resolvable_at_wall_ms.value_or(e.wall_ms), e.wall_ms);
    }
    scan.through_seq = seq;
  }
  if (routes_[route_id].ttl_age_unknown != scan.unknown) Route(route_id).ttl_age_unknown = scan.unknown;
  return Status::Ok();
}

// An entry left the queue: if an earlier sweep counted it as of unknown age, it no longer is.
void BatchApplier::ForgetSwept(uint32_t route_id, uint64_t seq) {
  auto it = ttl_scans_.find(route_id);
  if (it == ttl_scans_.end() || seq > it->second.through_seq || it->second.unknown == 0) return;
  Route(route_id).ttl_age_unknown = --it->second.unknown;
}

Status BatchApplier::Do(MDB_txn* txn, const mutation::Append& m, BatchResult* result) {
  return AppendEntry(txn, m.entry, result);
}

Status BatchApplier::Do(MDB_txn* txn, const mutation::AckThrough& m, BatchResult*) {
  auto it = route_ids_.find(m.route);
  if (it == route_ids_.end()) return Status::Ok();
  return RemoveHeadWhile(txn, it->second, Removal::kAck, m.up_to_seq, SIZE_MAX);
}

Status BatchApplier::Do(MDB_txn* txn, const mutation::AckSeqs& m, BatchResult*) {
  auto it = route_ids_.find(m.route);
  if (it == route_ids_.end()) return Status::Ok();
  for (uint64_t seq : m.seqs) {
    std::string key = QueueKey(it->second, seq);
    MDB_val mk = Val(key), mv;
    int rc = mdb_get(txn, db_.queue, &mk, &mv);
    if (rc == MDB_NOTFOUND) continue;
    if (rc) return Mdb(rc, "queue get");
    if (acks_left_ == 0) {
      cut_short_ = true;
      return Status::Ok();
    }
    Status s = RemoveQueued(txn, it->second, seq, std::string(View(mv)), Removal::kAck);
    if (!s.ok()) return s;
  }
  return Status::Ok();
}

Status BatchApplier::Do(MDB_txn* txn, const mutation::MoveToDead& m, BatchResult*) {
  auto it = route_ids_.find(m.route);
  if (it == route_ids_.end()) return NotFound("no route '" + m.route + "'");
  std::string key = QueueKey(it->second, m.seq);
  MDB_val mk = Val(key), mv;
  int rc = mdb_get(txn, db_.queue, &mk, &mv);
  if (rc == MDB_NOTFOUND) return NotFound("queue entry " + std::to_string(m.seq) + " not queued");
  if (rc) return Mdb(rc, "queue get");
  DeadLetter d;
  const uint64_t size = mv.mv_size;
  if (!DecodeEntry(View(mv), &d.entry)) return Status::Error(StatusCode::kIoError, "corrupt queue entry");
  d.reason = m.reason;
  d.http_status = m.http_status;
  d.dead_at_ms = m.now_ms;
  if ((rc = mdb_del(txn, db_.queue, &mk, nullptr))) return Mdb(rc, "queue delete");
  if ((rc = pending_.Remove(txn, d.entry.path, d.entry.seq))) return Mdb(rc, "pending index");
  ForgetSwept(it->second, m.seq);
  Released(d.entry.path);  // a dead letter does not hold its data in the cache
  std::string dk = Be64Key(m.seq), dv = EncodeDeadLetter(d);
  MDB_val dmk = Val(dk), dmv = Val(dv);
  if ((rc = mdb_put(txn, db_.dead, &dmk, &dmv, 0))) return Mdb(rc, "dead letter put");
  RouteStats& rs = Route(it->second);
  rs.depth--;
  rs.bytes -= size;
  rs.dead_lettered++;
  rs.dead_depth++;
  counters_.queue_entries--;
  counters_.queue_bytes -= size;
  counters_.dead_entries++;
  counters_dirty_ = true;
  return Status::Ok();
}

// Removes a dead letter; its root's pending count and route dead_depth go down.
static Status TakeDead(MDB_txn* txn, MDB_dbi dead, uint64_t seq, DeadLetter* d, int* rc_out) {
  std::string dk = Be64Key(seq);
  MDB_val mk = Val(dk), mv;
  int rc = mdb_get(txn, dead, &mk, &mv);
  if (rc == MDB_NOTFOUND) return NotFound("no dead letter " + std::to_string(seq));
  if (rc == 0 && !DecodeDeadLetter(View(mv), d)) return Status::Error(StatusCode::kIoError, "corrupt dead letter");
  if (rc == 0) rc = mdb_del(txn, dead, &mk, nullptr);
  *rc_out = rc;
  return Status::Ok();
}

Status BatchApplier::Do(MDB_txn* txn, const mutation::RetryDead& m, BatchResult* result) {
  DeadLetter d;
  int rc = 0;
  Status s = TakeDead(txn, db_.dead, m.seq, &d, &rc);
  if (!s.ok()) return s;
  if (rc) return Mdb(rc, "dead letter take");
  auto it = route_ids_.find(d.entry.route);
  if (it != route_ids_.end()) Route(it->second).dead_depth--;
  counters_.dead_entries--;
  counters_dirty_ = true;
  return AppendEntry(txn, std::move(d.entry), result);
}

Status BatchApplier::Do(MDB_txn* txn, const mutation::DropDead& m, BatchResult*) {
  DeadLetter d;
  int rc = 0;
  Status s = TakeDead(txn, db_.dead, m.seq, &d, &rc);
  if (!s.ok()) return s;
  if (rc) return Mdb(rc, "dead letter take");
  auto it = route_ids_.find(d.entry.route);
  if (it != route_ids_.end()) Route(it->second).dead_depth--;
  counters_.dead_entries--;
  counters_dirty_ = true;
  return Status::Ok();
}

Status BatchApplier::Do(MDB_txn* txn, const mutation::SweepExpired& m, BatchResult*) {
  for (const auto& [name, id] : route_ids_) {
    const QueueLimits lim = LimitsFor(name);
    if (lim.ttl_ms <= 0) {
      if (routes_[id].ttl_age_unknown) Route(id).ttl_age_unknown = 0;
      continue;
    }
    Status s = SweepRoute(txn, id, lim.ttl_ms, m.now);
    if (!s.ok()) return s;
  }
  return Status::Ok();
}

// ---------------------------------------------------------------- DataTree

Status BatchApplier::DeleteTreeKey(MDB_txn* txn, const std::string& key) {
  MDB_val mk = Val(key), mv;
  int rc = mdb_get(txn, db_.tree, &mk, &mv);
  if (rc == MDB_NOTFOUND) return Status::Ok();
  if (rc) return Mdb(rc, "tree get");
  const uint64_t bytes = key.size() + mv.mv_size;
  if ((rc = mdb_del(txn, db_.tree, &mk, nullptr))) return Mdb(rc, "tree delete");
  UnitBytes(UnitOf(key, unit_depth_), -static_cast<int64_t>(bytes), false);
  counters_.tree_bytes -= bytes;
  counters_dirty_ = true;
  return Status::Ok();
}

// Deletes `key` and every key below it ("" = everything).
Status BatchApplier::DeleteTreeRange(MDB_txn* txn, const std::string& key) {
  if (!key.empty()) {
    Status s = DeleteTreeKey(txn, key);
    if (!s.ok()) return s;
  }
  const std::string prefix = key.empty() ? std::string() : key + "/";
  Cursor c(txn, db_.tree);
  if (c.rc()) return Mdb(c.rc(), "cursor");
  while (true) {
    MDB_val k = Val(prefix), v;
    int rc = prefix.empty() ? mdb_cursor_get(c.get(), &k, &v, MDB_FIRST)
                            : mdb_cursor_get(c.get(), &k, &v, MDB_SET_RANGE);
    if (rc == MDB_NOTFOUND) return Status::Ok();
    if (rc) return Mdb(rc, "tree scan");
    std::string_view found = View(k);
    if (found.substr(0, prefix.size()) != prefix) return Status::Ok();
    const uint64_t bytes = k.mv_size + v.mv_size;
    std::string unit(UnitOf(found, unit_depth_));
    if ((rc = mdb_cursor_del(c.get(), 0))) return Mdb(rc, "tree delete");
    UnitBytes(unit, -static_cast<int64_t>(bytes), false);
    counters_.tree_bytes -= bytes;
    counters_dirty_ = true;
  }
}

Status BatchApplier::SetTree(MDB_txn* txn, const std::vector<std::string>& segs,
                             const nlohmann::json& value, BatchResult* result) {
  std::string error;
  if (!ValidTreeValue(value, &error)) return Invalid(error);
  const std::string key = JoinKey(segs, segs.size());
  if (key.size() > kMaxKeyBytes) return Invalid("path longer than " + std::to_string(kMaxKeyBytes) + " bytes");
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
    if (leaf_key.size() > kMaxKeyBytes) {
      s = Invalid("path longer than " + std::to_string(kMaxKeyBytes) + " bytes: /" + leaf_key.substr(0, 64) + "...");
      return;
    }
    MDB_val mk = Val(leaf_key), mv = Val(text);
    if (int rc = mdb_put(txn, db_.tree, &mk, &mv, 0)) {
      s = Mdb(rc, "tree put");
      return;
    }
    const uint64_t bytes = leaf_key.size() + text.size();
    UnitBytes(UnitOf(leaf_key, unit_depth_), static_cast<int64_t>(bytes), true);
    counters_.tree_bytes += bytes;
  });
  if (!s.ok()) return s;
  counters_.tree_version++;
  counters_dirty_ = true;
  touched_ = true;
  result->changed_paths.push_back("/" + key);
  return Status::Ok();
}

namespace {

std::string ChildKey(const std::string& base, const std::string& rel) {
  return base.empty() ? rel : rel.empty() ? base : base + "/" + rel;
}

}  // namespace

// *out = the number an increment leaves at tree key `key`: Firebase's sum of what is there and
// inc.by. A sum that is not a finite number fails the batch when inc.refuse_non_finite (a
// device's write: 4.00), else leaves what is there (the cloud adds to its own number at upload).
Status BatchApplier::ApplyIncrement(MDB_txn* txn, const std::string& key, const mutation::TreeIncrement& inc,
                                    nlohmann::json* out) {
  nlohmann::json current = LeafAt(txn, db_.tree, key);
  std::optional<nlohmann::json> sum = IncrementSum(current, inc.by);
  if (sum) {
    *out = std::move(*sum);
    return Status::Ok();
  }
  if (inc.refuse_non_finite) return Invalid("increment gives a number that is not finite at /" + key.substr(0, 80));
  *out = std::move(current);
  return Status::Ok();
}

Status BatchApplier::Do(MDB_txn* txn, const mutation::TreeSet& m, BatchResult* result) {
  std::vector<std::string> segs;
  std::string error;
  if (!ParseTreePath(m.path, &segs, &error)) return Invalid(error);
  if (m.expect && ReadSubtree(txn, db_.tree, JoinKey(segs, segs.size())) != *m.expect) {
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

Status BatchApplier::Do(MDB_txn* txn, const mutation::TreeRemove& m, BatchResult* result) {
  std::vector<std::string> segs;
  std::string error;
  if (!ParseTreePath(m.path, &segs, &error)) return Invalid(error);
  return SetTree(txn, segs, nullptr, result);
}

Status BatchApplier::Do(MDB_txn* txn, const mutation::TreeUpdate& m, BatchResult* result) {
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

// ---------------------------------------------------------------- Cache units

Status BatchApplier::GetUnit(MDB_txn* txn, const std::string& unit, UnitRecord* rec, bool* found) {
  MDB_val k = Val(unit), v;
  int rc = mdb_get(txn, db_.tree_units, &k, &v);
  *found = rc == 0;
  *rec = UnitRecord{};
  if (rc == MDB_NOTFOUND) return Status::Ok();
  if (rc) return Mdb(rc, "unit get");
  if (!DecodeUnit(View(v), rec)) return Status::Error(StatusCode::kIoError, "corrupt cache unit record");
  return Status::Ok();
}

// Writes `now` for `unit` (deleting it when it holds nothing) and keeps tree_lru in step: a unit
// is in the LRU index exactly when it holds data and is not parked.
Status BatchApplier::PutUnit(MDB_txn* txn, const std::string& unit, const UnitRecord* old, const UnitRecord& now) {
  auto in_lru = [](const UnitRecord& r) { return r.bytes > 0 && !r.parked; };
  const bool was = old && in_lru(*old), is = in_lru(now);
  if (was && (!is || old->last_use != now.last_use)) {
    std::string lk = LruKey(old->last_use, unit);
    MDB_val k = Val(lk);
    int rc = mdb_del(txn, db_.tree_lru, &k, nullptr);
    if (rc && rc != MDB_NOTFOUND) return Mdb(rc, "lru delete");
  }
  MDB_val k = Val(unit);
  if (now.bytes == 0) {
    int rc = mdb_del(txn, db_.tree_units, &k, nullptr);
    if (rc && rc != MDB_NOTFOUND) return Mdb(rc, "unit delete");
    return Status::Ok();
  }
  std::string value = EncodeUnit(now);
  MDB_val v = Val(value);
  if (int rc = mdb_put(txn, db_.tree_units, &k, &v, 0)) return Mdb(rc, "unit put");
  if (is && (!was || old->last_use != now.last_use)) {
    std::string lk = LruKey(now.last_use, unit);
    MDB_val key = Val(lk), empty{0, nullptr};
    if (int rc = mdb_put(txn, db_.tree_lru, &key, &empty, 0)) return Mdb(rc, "lru put");
  }
  return Status::Ok();
}

Status BatchApplier::Unpark(MDB_txn* txn, const std::string& unit) {
  UnitRecord rec;
  bool found = false;
  if (Status s = GetUnit(txn, unit, &rec, &found); !s.ok() || !found || !rec.parked) return s;
  UnitRecord now = rec;
  now.parked = false;
  return PutUnit(txn, unit, &rec, now);
}

// Every parked unit at or below `key` (a key above unit depth) goes back into the LRU index.
Status BatchApplier::UnparkWithin(MDB_txn* txn, const std::string& key) {
  std::vector<std::string> parked;
  {
    Cursor c(txn, db_.tree_units);
    if (c.rc()) return Mdb(c.rc(), "cursor");
    const std::string prefix = key.empty() ? std::string() : key + "/";
    MDB_val k, v;
    if (!key.empty()) {
      k = Val(key);
      if (mdb_get(txn, db_.tree_units, &k, &v) == 0) parked.push_back(key);
    }
    k = Val(prefix);
    int rc = prefix.empty() ? mdb_cursor_get(c.get(), &k, &v, MDB_FIRST) : mdb_cursor_get(c.get(), &k, &v, MDB_SET_RANGE);
    for (; rc == 0 && View(k).substr(0, prefix.size()) == prefix; rc = mdb_cursor_get(c.get(), &k, &v, MDB_NEXT)) {
      UnitRecord rec;
      if (DecodeUnit(View(v), &rec) && rec.parked) parked.emplace_back(View(k));
    }
    if (rc && rc != MDB_NOTFOUND) return Mdb(rc, "unit scan");
  }
  for (const std::string& unit : parked) {
    if (Status s = Unpark(txn, unit); !s.ok()) return s;
  }
  return Status::Ok();
}

// Writes the unit changes of the batches applied since the last flush: byte deltas, a new use
// stamp (one per flush) for units written, and parked units whose queued writes all left.
Status BatchApplier::FlushUnits(MDB_txn* txn) {
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
      if (!stamp) stamp = ++counters_.lru_clock;
      now.last_use = stamp;
      now.parked = false;  // new data in it is not protected until an eviction finds it so
    }
    if (Status s = PutUnit(txn, unit, found ? &rec : nullptr, now); !s.ok()) return s;
  }
  if (stamp) counters_dirty_ = true;
  unit_changes_.clear();
  for (const std::string& unit : released_units_) {
    if (pending_.Any(txn, unit, false) || pending_.Any(txn, unit, true)) continue;  // still protected there
    if (Status s = Unpark(txn, unit); !s.ok()) return s;
  }
  released_units_.clear();
  for (const std::string& key : released_shallow_) {
    if (pending_.Any(txn, key, false)) continue;
    if (Status s = UnparkWithin(txn, key); !s.ok()) return s;
  }
  released_shallow_.clear();
  return Status::Ok();
}

// Complete marks (any query) at `key` and at each of its ancestors, each prefix once per pass.
Status BatchApplier::DropMarksAbove(MDB_txn* txn, std::string_view key, std::unordered_set<std::string>* done) {
  for (size_t end = key.size();;) {
    std::string prefix(key.substr(0, end));
    if (!done->insert(prefix).second) return Status::Ok();  // its ancestors were done with it
    prefix += '\0';
    if (Status s = DeleteKeysFrom(txn, db_.query_marks, prefix); !s.ok()) return s;
    if (end == 0) return Status::Ok();
    size_t slash = key.rfind('/', end - 1);
    end = slash == std::string_view::npos ? 0 : slash;
  }
}

// Evicts what `unit` holds except the protected subtrees: kept paths (sync roots, held paths)
// and targets of queued writes, at, above or below the unit. What stays parks the unit.
Status BatchApplier::EvictUnit(MDB_txn* txn, const std::string& unit, uint64_t last_use, bool has_marks,
                               std::unordered_set<std::string>* marks_done) {
  UnitRecord rec;
  bool found = false;
  if (Status s = GetUnit(txn, unit, &rec, &found); !s.ok()) return s;
  if (!found || rec.bytes == 0 || rec.parked || rec.last_use != last_use) {
    // A key the index should not hold (Store::Check() reports it): dropped, so eviction goes on.
    std::string lk = LruKey(last_use, unit);
    MDB_val k = Val(lk);
    int rc = mdb_del(txn, db_.tree_lru, &k, nullptr);
    return rc && rc != MDB_NOTFOUND ? Mdb(rc, "lru delete") : Status::Ok();
  }
  UnitRecord now = rec;
  auto protects = [&](const std::string& key) {
    return pinned_.count(key) || use_->Held(key) || pending_.Any(txn, key, false);
  };
  bool whole = false;
  for (size_t end = 0; !whole;) {  // the unit and its ancestors, "" first
    whole = protects(unit.substr(0, end));
    if (end == unit.size()) break;
    size_t slash = unit.find('/', end + (end ? 1 : 0));
    end = slash == std::string::npos ? unit.size() : slash;
  }
  if (!whole) {
    const bool inner = AnyBelow(pinned_, unit) || use_->HeldBelow(unit) || pending_.Any(txn, unit, true);
    std::unordered_map<std::string, bool> memo;  // protection of keys strictly below the unit
    auto protected_at = [&](const std::string& key) {
      auto [it, fresh] = memo.try_emplace(key);
      if (fresh) it->second = protects(key);
      return it->second;
    };
    uint64_t freed = 0;
    auto evict = [&](MDB_cursor* c, const std::string& key, size_t value_size) -> Status {
      if (int rc = mdb_cursor_del(c, 0)) return Mdb(rc, "tree delete");
      freed += key.size() + value_size;
      return has_marks ? DropMarksAbove(txn, key, marks_done) : Status::Ok();
    };
    Cursor c(txn, db_.tree);
    if (c.rc()) return Mdb(c.rc(), "cursor");
    MDB_val k = Val(unit), v;
    int rc = mdb_cursor_get(c.get(), &k, &v, MDB_SET);  // a leaf at the unit itself
    if (rc == 0) {
      if (Status s = evict(c.get(), unit, v.mv_size); !s.ok()) return s;
    } else if (rc != MDB_NOTFOUND) {
      return Mdb(rc, "tree get");
    }
    const std::string prefix = unit + "/";
    std::string next = prefix;
    while (true) {
      k = Val(next);
      rc = mdb_cursor_get(c.get(), &k, &v, MDB_SET_RANGE);
      if (rc == MDB_NOTFOUND) break;
      if (rc) return Mdb(rc, "tree scan");
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
    counters_.tree_bytes -= freed;
    if (freed) counters_.evictions++;
    counters_dirty_ = true;
  }
  now.parked = now.bytes > 0;  // what is left is protected
  return PutUnit(txn, unit, &rec, now);
}

Status BatchApplier::EvictTree(MDB_txn* txn) {
  touched_ = false;
  exhausted_ = false;
  if (Status s = FlushUnits(txn); !s.ok()) return s;
  std::vector<std::string> reads = use_->TakeReads();
  if (!reads.empty()) {
    const uint64_t stamp = ++counters_.lru_clock;
    counters_dirty_ = true;
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
  if (options_.tree_cache_bytes && counters_.tree_bytes > options_.tree_cache_bytes && !pin_all_) {
    MDB_stat ms;
    const bool has_marks = mdb_stat(txn, db_.query_marks, &ms) != 0 || ms.ms_entries > 0;
    std::unordered_set<std::string> marks_done;
    while (counters_.tree_bytes > options_.tree_cache_bytes) {
      std::string unit;
      uint64_t last_use = 0;
      {
        Cursor c(txn, db_.tree_lru);
        if (c.rc()) return Mdb(c.rc(), "cursor");
        MDB_val k, v;
        int rc = mdb_cursor_get(c.get(), &k, &v, MDB_FIRST);
        if (rc == MDB_NOTFOUND) break;  // everything left is protected
        if (rc) return Mdb(rc, "lru scan");
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
  spare_after_ = counters_.lru_clock;
  return Flush(txn);
}

// ---------------------------------------------------------------- SessionTable

Status BatchApplier::Do(MDB_txn* txn, const mutation::PutSession& m, BatchResult*) {
  const SessionRecord& r = m.record;
  if (r.session_id.empty() || r.short_token.empty() || r.long_token.empty()) {
    return Invalid("session needs id, short token and long token");
  }
  if (r.session_id.size() > kMaxKeyBytes - 10 || r.short_token.size() > kMaxKeyBytes ||
      r.long_token.size() > kMaxKeyBytes) {
    return Invalid("session id or token too long");
  }
  for (auto [dbi, token] : {std::pair{db_.by_short, &r.short_token}, std::pair{db_.by_long, &r.long_token}}) {
    MDB_val mk = Val(*token), mv;
    int rc = mdb_get(txn, dbi, &mk, &mv);
    if (rc == 0 && View(mv) != r.session_id) return Status::Error(StatusCode::kConflict, "token already bound to another session");
    if (rc && rc != MDB_NOTFOUND) return Mdb(rc, "token index");
  }
  MDB_val mk = Val(r.session_id), mv;
  int rc = mdb_get(txn, db_.sessions, &mk, &mv);
  if (rc == 0) {
    SessionRecord old;
    if (!DecodeSession(View(mv), &old)) return Status::Error(StatusCode::kIoError, "corrupt session");
    MDB_val ok = Val(old.short_token), ol = Val(old.long_token);
    if (old.short_token != r.short_token && (rc = mdb_del(txn, db_.by_short, &ok, nullptr)) && rc != MDB_NOTFOUND) return Mdb(rc, "token index");
    if (old.long_token != r.long_token && (rc = mdb_del(txn, db_.by_long, &ol, nullptr)) && rc != MDB_NOTFOUND) return Mdb(rc, "token index");
  } else if (rc != MDB_NOTFOUND) {
    return Mdb(rc, "session get");
  }
  std::string v = EncodeSession(r);
  MDB_val sv = Val(v), id = Val(r.session_id), sk = Val(r.short_token), lk = Val(r.long_token);
  if ((rc = mdb_put(txn, db_.sessions, &mk, &sv, 0)) || (rc = mdb_put(txn, db_.by_short, &sk, &id, 0)) ||
      (rc = mdb_put(txn, db_.by_long, &lk, &id, 0))) {
    return Mdb(rc, "session put");
  }
  return Status::Ok();
}

Status BatchApplier::Do(MDB_txn* txn, const mutation::TouchSession& m, BatchResult*) {
  MDB_val mk = Val(m.session_id), mv;
  int rc = mdb_get(txn, db_.sessions, &mk, &mv);
  if (rc == MDB_NOTFOUND) return NotFound("no session '" + m.session_id + "'");
  if (rc) return Mdb(rc, "session get");
  SessionRecord r;
  if (!DecodeSession(View(mv), &r)) return Status::Error(StatusCode::kIoError, "corrupt session");
  r.last_seen_ms = m.last_seen_ms;
  r.last_seen_boottime_ms = m.last_seen_boottime_ms;
  r.boot_id = m.boot_id;
  r.last_ping_ms = m.last_ping_ms;
  std::string v = EncodeSession(r);
  MDB_val sv = Val(v);
  if ((rc = mdb_put(txn, db_.sessions, &mk, &sv, 0))) return Mdb(rc, "session put");
  return Status::Ok();
}

// Deletes the session's onDisconnect ops (only those at/below `under` if given).
Status BatchApplier::DeleteSessionOps(MDB_txn* txn, const std::string& session_id, const std::string* under,
                                      uint64_t up_to_order) {
  const std::string prefix = OnDisconnectPrefix(session_id);
  Cursor c(txn, db_.on_disconnect);
  if (c.rc()) return Mdb(c.rc(), "cursor");
  MDB_val k = Val(prefix), v;
  int rc = mdb_cursor_get(c.get(), &k, &v, MDB_SET_RANGE);
  while (rc == 0 && View(k).substr(0, prefix.size()) == prefix) {
    bool del = true;
    if (under) {
      OnDisconnectOp op;
      std::vector<std::string> segs;
      std::string error;
      if (!DecodeOnDisconnect(View(v), &op)) return Status::Error(StatusCode::kIoError, "corrupt op");
      del = op.order <= up_to_order && ParseTreePath(op.path, &segs, &error) &&
            KeyWithin(JoinKey(segs, segs.size()), *under);
    }
    if (del) {
      if ((rc = mdb_cursor_del(c.get(), 0))) return Mdb(rc, "op delete");
      rc = mdb_cursor_get(c.get(), &k, &v, MDB_GET_CURRENT);
      if (rc == EINVAL) rc = MDB_NOTFOUND;  // deleted the last record
    } else {
      rc = mdb_cursor_get(c.get(), &k, &v, MDB_NEXT);
    }
  }
  if (rc && rc != MDB_NOTFOUND) return Mdb(rc, "op scan");
  return Status::Ok();
}

Status BatchApplier::Do(MDB_txn* txn, const mutation::RemoveSession& m, BatchResult*) {
  MDB_val mk = Val(m.session_id), mv;
  int rc = mdb_get(txn, db_.sessions, &mk, &mv);
  if (rc == MDB_NOTFOUND) {
    return m.must_exist ? NotFound("no session '" + m.session_id + "'") : Status::Ok();
  }
  if (rc) return Mdb(rc, "session get");
  SessionRecord r;
  if (!DecodeSession(View(mv), &r)) return Status::Error(StatusCode::kIoError, "corrupt session");
  if (m.ops_through != UINT64_MAX) {
    const std::string prefix = OnDisconnectPrefix(m.session_id);
    Cursor c(txn, db_.on_disconnect);
    if (c.rc()) return Mdb(c.rc(), "cursor");
    MDB_val k = Val(prefix), v;
    for (rc = mdb_cursor_get(c.get(), &k, &v, MDB_SET_RANGE); rc == 0 && View(k).substr(0, prefix.size()) == prefix;
         rc = mdb_cursor_get(c.get(), &k, &v, MDB_NEXT)) {
      if (k.mv_size == prefix.size() + 8 && GetBe64(static_cast<const char*>(k.mv_data) + prefix.size()) > m.ops_through) {
        return Status::Error(StatusCode::kConflict, "onDisconnect op registered after the ones being fired");
      }
    }
  }
  MDB_val sk = Val(r.short_token), lk = Val(r.long_token);
  if ((rc = mdb_del(txn, db_.sessions, &mk, nullptr))) return Mdb(rc, "session delete");
  if ((rc = mdb_del(txn, db_.by_short, &sk, nullptr)) && rc != MDB_NOTFOUND) return Mdb(rc, "token index");
  if ((rc = mdb_del(txn, db_.by_long, &lk, nullptr)) && rc != MDB_NOTFOUND) return Mdb(rc, "token index");
  return DeleteSessionOps(txn, m.session_id, nullptr);
}

Status BatchApplier::Do(MDB_txn* txn, const mutation::AddOnDisconnect& m, BatchResult*) {
  MDB_val mk = Val(m.session_id), mv;
  int rc = mdb_get(txn, db_.sessions, &mk, &mv);
  if (rc == MDB_NOTFOUND) return NotFound("no session '" + m.session_id + "'");
  if (rc) return Mdb(rc, "session get");
  std::vector<std::string> segs;
  std::string error;
  if (!ParseTreePath(m.op.path, &segs, &error)) return Invalid(error);
  OnDisconnectOp op = m.op;
  op.order = counters_.next_op_order++;
  counters_dirty_ = true;
  touched_ = true;
  std::string key = OnDisconnectPrefix(m.session_id);
  PutBe64(&key, op.order);
  std::string v = EncodeOnDisconnect(op);
  MDB_val ok = Val(key), ov = Val(v);
  if ((rc = mdb_put(txn, db_.on_disconnect, &ok, &ov, 0))) return Mdb(rc, "op put");
  return Status::Ok();
}

Status BatchApplier::Do(MDB_txn* txn, const mutation::CancelOnDisconnect& m, BatchResult*) {
  std::vector<std::string> segs;
  std::string error;
  if (!ParseTreePath(m.path, &segs, &error)) return Invalid(error);
  const std::string under = JoinKey(segs, segs.size());
  return DeleteSessionOps(txn, m.session_id, &under, m.up_to_order);
}

Status BatchApplier::Do(MDB_txn* txn, const mutation::MarkComplete& m, BatchResult*) {
  std::vector<std::string> segs;
  std::string error;
  if (!ParseTreePath(m.path, &segs, &error)) return Invalid(error);
  std::string key = JoinKey(segs, segs.size());
  key += '\0';
  key += m.query;
  if (key.size() > kMaxKeyBytes) return Status::Ok();  // over LMDB's key limit: simply not remembered
  MDB_val k = Val(key), v{0, nullptr};
  if (int rc = mdb_put(txn, db_.query_marks, &k, &v, 0)) return Mdb(rc, "marking a query complete");
  return Status::Ok();
}

Status BatchApplier::Do(MDB_txn* txn, const mutation::ForgetComplete& m, BatchResult*) {
  std::vector<std::string> segs;
  std::string error;
  if (!ParseTreePath(m.path, &segs, &error)) return Invalid(error);
  const std::string key = JoinKey(segs, segs.size());
  if (Status s = DeleteMarksWithin(txn, key); !s.ok()) return s;
  for (size_t depth = 0; depth < segs.size(); ++depth) {
    std::string mark = JoinKey(segs, depth);
    mark += '\0';
    MDB_val k = Val(mark);
    int rc = mdb_del(txn, db_.query_marks, &k, nullptr);
    if (rc && rc != MDB_NOTFOUND) return Mdb(rc, "forgetting a complete mark");
  }
  return Status::Ok();
}

Status BatchApplier::DeleteKeysFrom(MDB_txn* txn, MDB_dbi dbi, const std::string& prefix) {
  Cursor c(txn, dbi);
  if (c.rc()) return Mdb(c.rc(), "cursor");
  while (true) {
    MDB_val k = Val(prefix), v;
    int rc = prefix.empty() ? mdb_cursor_get(c.get(), &k, &v, MDB_FIRST)
                            : mdb_cursor_get(c.get(), &k, &v, MDB_SET_RANGE);
    if (rc == MDB_NOTFOUND) return Status::Ok();
    if (rc) return Mdb(rc, "mark scan");
    if (View(k).substr(0, prefix.size()) != prefix) return Status::Ok();
    if ((rc = mdb_cursor_del(c.get(), 0))) return Mdb(rc, "mark delete");
  }
}

Status BatchApplier::DeleteMarksWithin(MDB_txn* txn, const std::string& key) {
  if (key.empty()) return DeleteKeysFrom(txn, db_.query_marks, "");
  Status s = DeleteKeysFrom(txn, db_.query_marks, key + '\0');
  return s.ok() ? DeleteKeysFrom(txn, db_.query_marks, key + '/') : s;
}

Status BatchApplier::Do(MDB_txn* txn, const mutation::CloudWrite& m, BatchResult* result) {
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

Status BatchApplier::OverlayPending(MDB_txn* txn, const std::string& key, const std::vector<uint64_t>& in_flight,
                                    BatchResult* result) {
  for (const PendingRef& p : pending_.Overlapping(txn, key)) {
    if (std::binary_search(in_flight.begin(), in_flight.end(), p.seq)) continue;
    const std::string qk = QueueKey(p.route_id, p.seq);
    MDB_val k = Val(qk), v;
    int rc = mdb_get(txn, db_.queue, &k, &v);
    if (rc == MDB_NOTFOUND) continue;
    if (rc) return Mdb(rc, "queue get");
    QueueEntry e;
    if (!DecodeEntry(View(v), &e)) continue;  // Check() reports it
    Status s = ReapplyWithin(txn, db_.tree, e, key, [&](const std::string& at, const nlohmann::json& value) {
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

Status BatchApplier::CountRejected(MDB_txn* txn) {
  touched_ = false;
  exhausted_ = false;
  auto it = route_ids_.find(rejected_route_);
  if (it == route_ids_.end()) return Status::Ok();
  Route(it->second).rejected++;
  return Flush(txn);
}

Applied BatchApplier::Apply(MDB_txn* txn, const WriteBatch& batch, const ApplyMode& mode, BatchResult* result) {
  touched_ = false;
  exhausted_ = false;
  cut_short_ = false;
  acks_left_ = mode.ack_budget;
  rejected_route_.clear();
  Applied applied;
  if (mode.space_low && MayGrow(batch)) {
    applied.status = Status::Error(StatusCode::kFull, "store is full (map at its maximum or disk full); retry later");
    return applied;
  }
  for (const mutation::Mutation& m : batch.mutations()) {
    applied.status = std::visit([&](const auto& mut) { return Do(txn, mut, result); }, m);
    if (!applied.ok() || cut_short_) break;
  }
  if (applied.ok()) {
    result->tree_version = counters_.tree_version;
    if (mode.flush) applied.status = Flush(txn);
  }
  applied.touched = touched_;
  applied.exhausted = exhausted_;
  applied.cut_short = cut_short_;
  return applied;
}

}  // namespace tether::store
