#include "store/queue_applier.h"

#include <algorithm>

#include "store/record_codec.h"
#include "store/store_error.h"

namespace tether::store {
namespace {

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

}  // namespace

QueueApplier::QueueApplier(ApplyContext* ctx, CacheUnits* units)
    : ctx_(ctx), units_(units), route_limits_(ctx->options.route_limits) {}

void QueueApplier::Load(MDB_txn* txn) {
  route_ids_.clear();
  routes_.clear();
  dirty_routes_.clear();
  ttl_scans_.clear();
  MDB_val k, v;
  int rc = 0;
  {
    Cursor c(txn, ctx_->db.routes);
    for (rc = mdb_cursor_get(c.get(), &k, &v, MDB_FIRST); rc == 0;
         rc = mdb_cursor_get(c.get(), &k, &v, MDB_NEXT)) {
      if (v.mv_size != 4) throw StoreError(ctx_->env.path() + ": corrupt store: bad route id");
      route_ids_[std::string(View(k))] = GetBe32(static_cast<const char*>(v.mv_data));
    }
  }
  {
    Cursor c(txn, ctx_->db.route_stats);
    for (rc = mdb_cursor_get(c.get(), &k, &v, MDB_FIRST); rc == 0;
         rc = mdb_cursor_get(c.get(), &k, &v, MDB_NEXT)) {
      RouteQueueStats rs;
      if (k.mv_size != 4 || !DecodeRouteStats(View(v), &rs)) {
        throw StoreError(ctx_->env.path() + ": corrupt store: bad route stats");
      }
      routes_[GetBe32(static_cast<const char*>(k.mv_data))] = rs;
    }
  }
}

Status QueueApplier::Flush(MDB_txn* txn) {
  for (uint32_t id : dirty_routes_) {
    std::string k = Be32Key(id), v = EncodeRouteStats(routes_[id]);
    MDB_val mk = Val(k), mv = Val(v);
    if (int rc = mdb_put(txn, ctx_->db.route_stats, &mk, &mv, 0)) return ctx_->Mdb(rc, "route stats");
  }
  dirty_routes_.clear();
  return Status::Ok();
}

void QueueApplier::SetRouteLimits(std::map<std::string, QueueLimits> limits) {
  util::MutexLock lock(&limits_mu_);
  route_limits_ = std::move(limits);
}

QueueLimits QueueApplier::LimitsFor(const std::string& route) const {
  util::MutexLock lock(&limits_mu_);
  auto it = route_limits_.find(route);
  return it == route_limits_.end() ? ctx_->options.default_route_limits : it->second;
}

RouteQueueStats& QueueApplier::Route(uint32_t id) {
  dirty_routes_.insert(id);
  ctx_->touched = true;
  return routes_[id];
}

Status QueueApplier::AppendEntry(MDB_txn* txn, QueueEntry e, BatchResult* result) {
  if (e.route.empty() || e.route.size() > kMaxLmdbKeyBytes) return Invalid("queue entry route empty or too long");
  const QueueLimits lim = LimitsFor(e.route);
  e.seq = ctx_->counters.next_seq;
  std::string value = EncodeEntry(e);
  const uint64_t size = value.size();
  if ((lim.max_bytes && size > lim.max_bytes) ||
      (ctx_->options.global_max_bytes && size > ctx_->options.global_max_bytes)) {
    return Invalid("queue entry of " + std::to_string(size) + " bytes exceeds the byte limit");
  }
  auto id_it = route_ids_.find(e.route);
  uint32_t id = id_it == route_ids_.end() ? 0 : id_it->second;
  auto over = [&] {
    const RouteQueueStats* rs = id ? &routes_[id] : nullptr;
    uint64_t depth = rs ? rs->depth : 0, bytes = rs ? rs->bytes : 0;
    return (lim.max_entries && depth + 1 > lim.max_entries) ||
           (lim.max_bytes && bytes + size > lim.max_bytes) ||
           (ctx_->options.global_max_entries && ctx_->counters.queue_entries + 1 > ctx_->options.global_max_entries) ||
           (ctx_->options.global_max_bytes && ctx_->counters.queue_bytes + size > ctx_->options.global_max_bytes);
  };
  while (over()) {
    if (lim.policy == OverflowPolicy::kDropOldest && id && routes_[id].depth > 0) {
      Status s = RemoveHeadWhile(txn, id, Removal::kDropOldest, UINT64_MAX, 1, nullptr);
      if (!s.ok()) return s;
      continue;
    }
    rejected_route_ = e.route;
    return Status::Error(StatusCode::kRejected, "queue limit reached for route '" + e.route + "'");
  }
  if (!id) {
    id = ctx_->counters.next_route_id++;
    std::string idv = Be32Key(id);
    MDB_val mk = Val(e.route), mv = Val(idv);
    if (int rc = mdb_put(txn, ctx_->db.routes, &mk, &mv, MDB_NOOVERWRITE)) return ctx_->Mdb(rc, "route id");
    route_ids_[e.route] = id;
    Route(id).route = e.route;
  }
  ctx_->counters.next_seq++;
  ctx_->counters_dirty = true;
  ctx_->touched = true;
  std::string key = QueueKey(id, e.seq);
  MDB_val mk = Val(key), mv = Val(value);
  if (int rc = mdb_put(txn, ctx_->db.queue, &mk, &mv, 0)) return ctx_->Mdb(rc, "queue append");
  ctx_->pending.Add(e.path, e.seq, id);
  RouteQueueStats& rs = Route(id);
  rs.depth++;
  rs.bytes += size;
  ctx_->counters.queue_entries++;
  ctx_->counters.queue_bytes += size;
  result->seqs.push_back(e.seq);
  return Status::Ok();
}

Status QueueApplier::RemoveQueued(MDB_txn* txn, uint32_t route_id, uint64_t seq,
                                  std::string_view value, Removal why) {
  QueueEntry e;
  if (!DecodeEntry(value, &e)) return Status::Error(StatusCode::kIoError, "corrupt queue entry");
  const uint64_t size = value.size();
  std::string key = QueueKey(route_id, seq);
  MDB_val mk = Val(key);
  if (int rc = mdb_del(txn, ctx_->db.queue, &mk, nullptr)) return ctx_->Mdb(rc, "queue delete");
  if (int rc = ctx_->pending.Remove(txn, e.path, e.seq)) return ctx_->Mdb(rc, "pending index");
  ForgetSwept(route_id, seq);
  RouteQueueStats& rs = Route(route_id);
  rs.depth--;
  rs.bytes -= size;
  if (why == Removal::kDropOldest) rs.dropped_oldest++;
  if (why == Removal::kExpired) rs.expired++;
  ctx_->counters.queue_entries--;
  ctx_->counters.queue_bytes -= size;
  ctx_->counters_dirty = true;
  units_->Released(e.path);
  return Status::Ok();
}

Status QueueApplier::RemoveHeadWhile(MDB_txn* txn, uint32_t route_id, Removal why, uint64_t up_to_seq,
                                     size_t max_count, AckBudget* acks) {
  Cursor c(txn, ctx_->db.queue);
  if (c.rc()) return ctx_->Mdb(c.rc(), "cursor");
  std::string start = QueueKey(route_id, 0);
  for (size_t n = 0; n < max_count; ++n) {
    MDB_val k = Val(start), v;
    int rc = mdb_cursor_get(c.get(), &k, &v, MDB_SET_RANGE);
    if (rc == MDB_NOTFOUND) return Status::Ok();
    if (rc) return ctx_->Mdb(rc, "queue scan");
    if (k.mv_size != 12 || GetBe32(static_cast<const char*>(k.mv_data)) != route_id) return Status::Ok();
    uint64_t seq = GetBe64(static_cast<const char*>(k.mv_data) + 4);
    if (seq > up_to_seq) return Status::Ok();
    if (acks && acks->left == 0) {
      acks->cut_short = true;
      return Status::Ok();
    }
    Status s = RemoveQueued(txn, route_id, seq, View(v), why);
    if (!s.ok()) return s;
    if (acks && acks->left != SIZE_MAX) acks->left--;
  }
  return Status::Ok();
}

// One route's TTL sweep: from the head (or after the run of unknown-age entries an earlier sweep
// already passed), drops entries older than ttl_ms, keeps those of unknown age, and stops at the
// first entry known to be younger (later entries were written after it).
Status QueueApplier::SweepRoute(MDB_txn* txn, uint32_t route_id, int64_t ttl_ms, const ClockReading& now) {
  TtlScan& scan = ttl_scans_[route_id];
  if (scan.resolvable_at_wall_ms && PlausibleWall(now.wall_ms) && now.wall_ms >= *scan.resolvable_at_wall_ms) {
    scan = TtlScan{};  // the wall clock can now tell the ages it could not: look again
  }
  Cursor c(txn, ctx_->db.queue);
  if (c.rc()) return ctx_->Mdb(c.rc(), "cursor");
  for (size_t examined = 0; examined < kSweepScanLimit && scan.through_seq < UINT64_MAX; ++examined) {
    std::string start = QueueKey(route_id, scan.through_seq + 1);
    MDB_val k = Val(start), v;
    int rc = mdb_cursor_get(c.get(), &k, &v, MDB_SET_RANGE);
    if (rc == MDB_NOTFOUND) break;
    if (rc) return ctx_->Mdb(rc, "queue scan");
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
void QueueApplier::ForgetSwept(uint32_t route_id, uint64_t seq) {
  auto it = ttl_scans_.find(route_id);
  if (it == ttl_scans_.end() || seq > it->second.through_seq || it->second.unknown == 0) return;
  Route(route_id).ttl_age_unknown = --it->second.unknown;
}

Status QueueApplier::Apply(MDB_txn* txn, const mutation::Append& m, BatchResult* result) {
  return AppendEntry(txn, m.entry, result);
}

Status QueueApplier::Apply(MDB_txn* txn, const mutation::AckThrough& m, AckBudget* acks) {
  auto it = route_ids_.find(m.route);
  if (it == route_ids_.end()) return Status::Ok();
  return RemoveHeadWhile(txn, it->second, Removal::kAck, m.up_to_seq, SIZE_MAX, acks);
}

Status QueueApplier::Apply(MDB_txn* txn, const mutation::AckSeqs& m, AckBudget* acks) {
  auto it = route_ids_.find(m.route);
  if (it == route_ids_.end()) return Status::Ok();
  for (uint64_t seq : m.seqs) {
    std::string key = QueueKey(it->second, seq);
    MDB_val mk = Val(key), mv;
    int rc = mdb_get(txn, ctx_->db.queue, &mk, &mv);
    if (rc == MDB_NOTFOUND) continue;
    if (rc) return ctx_->Mdb(rc, "queue get");
    if (acks->left == 0) {
      acks->cut_short = true;
      return Status::Ok();
    }
    Status s = RemoveQueued(txn, it->second, seq, std::string(View(mv)), Removal::kAck);
    if (!s.ok()) return s;
    if (acks->left != SIZE_MAX) acks->left--;
  }
  return Status::Ok();
}

Status QueueApplier::Apply(MDB_txn* txn, const mutation::MoveToDead& m) {
  auto it = route_ids_.find(m.route);
  if (it == route_ids_.end()) return NotFound("no route '" + m.route + "'");
  std::string key = QueueKey(it->second, m.seq);
  MDB_val mk = Val(key), mv;
  int rc = mdb_get(txn, ctx_->db.queue, &mk, &mv);
  if (rc == MDB_NOTFOUND) return NotFound("queue entry " + std::to_string(m.seq) + " not queued");
  if (rc) return ctx_->Mdb(rc, "queue get");
  DeadLetter d;
  const uint64_t size = mv.mv_size;
  if (!DecodeEntry(View(mv), &d.entry)) return Status::Error(StatusCode::kIoError, "corrupt queue entry");
  d.reason = m.reason;
  d.http_status = m.http_status;
  d.dead_at_ms = m.now_ms;
  if ((rc = mdb_del(txn, ctx_->db.queue, &mk, nullptr))) return ctx_->Mdb(rc, "queue delete");
  if ((rc = ctx_->pending.Remove(txn, d.entry.path, d.entry.seq))) return ctx_->Mdb(rc, "pending index");
  ForgetSwept(it->second, m.seq);
  units_->Released(d.entry.path);  // a dead letter does not hold its data in the cache
  std::string dk = Be64Key(m.seq), dv = EncodeDeadLetter(d);
  MDB_val dmk = Val(dk), dmv = Val(dv);
  if ((rc = mdb_put(txn, ctx_->db.dead, &dmk, &dmv, 0))) return ctx_->Mdb(rc, "dead letter put");
  RouteQueueStats& rs = Route(it->second);
  rs.depth--;
  rs.bytes -= size;
  rs.dead_lettered++;
  rs.dead_depth++;
  ctx_->counters.queue_entries--;
  ctx_->counters.queue_bytes -= size;
  ctx_->counters.dead_entries++;
  ctx_->counters_dirty = true;
  return Status::Ok();
}

Status QueueApplier::TakeDead(MDB_txn* txn, uint64_t seq, DeadLetter* d) {
  std::string dk = Be64Key(seq);
  MDB_val mk = Val(dk), mv;
  int rc = mdb_get(txn, ctx_->db.dead, &mk, &mv);
  if (rc == MDB_NOTFOUND) return NotFound("no dead letter " + std::to_string(seq));
  if (rc == 0 && !DecodeDeadLetter(View(mv), d)) return Status::Error(StatusCode::kIoError, "corrupt dead letter");
  if (rc == 0) rc = mdb_del(txn, ctx_->db.dead, &mk, nullptr);
  if (rc) return ctx_->Mdb(rc, "dead letter take");
  auto it = route_ids_.find(d->entry.route);
  if (it != route_ids_.end()) Route(it->second).dead_depth--;
  ctx_->counters.dead_entries--;
  ctx_->counters_dirty = true;
  return Status::Ok();
}

Status QueueApplier::Apply(MDB_txn* txn, const mutation::RetryDead& m, BatchResult* result) {
  DeadLetter d;
  if (Status s = TakeDead(txn, m.seq, &d); !s.ok()) return s;
  return AppendEntry(txn, std::move(d.entry), result);
}

Status QueueApplier::Apply(MDB_txn* txn, const mutation::DropDead& m) {
  DeadLetter d;
  return TakeDead(txn, m.seq, &d);
}

Status QueueApplier::Apply(MDB_txn* txn, const mutation::SweepExpired& m) {
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

bool QueueApplier::CountRejected() {
  auto it = route_ids_.find(rejected_route_);
  rejected_route_.clear();
  if (it == route_ids_.end()) return false;
  Route(it->second).rejected++;
  return true;
}

}  // namespace tether::store
