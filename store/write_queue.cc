#include "store/write_queue.h"

#include "store/entry_age.h"
#include "store/lmdb_env.h"
#include "store/record_codec.h"
#include "store/store_counters.h"
#include "store/store_error.h"

namespace tether::store {
namespace {

std::optional<uint32_t> RouteId(const ReadTxn& txn, const Databases& db, std::string_view route) {
  auto v = txn.Get(db.routes, route);
  if (!v || v->size() != 4) return std::nullopt;
  return GetBe32(v->data());
}

void FillOldest(const ReadTxn& txn, const Databases& db, uint32_t id, RouteQueueStats* rs) {
  Cursor c(txn.get(), db.queue);
  std::string start = QueueKey(id, 0);
  MDB_val k = Val(start), v;
  if (c.get() && mdb_cursor_get(c.get(), &k, &v, MDB_SET_RANGE) == 0 && k.mv_size == 12 &&
      GetBe32(static_cast<const char*>(k.mv_data)) == id) {
    QueueEntry e;
    if (DecodeEntry(View(v), &e)) {
      rs->oldest_wall_ms = e.wall_ms;
      rs->oldest_age_ms = AgeOf(e, ClockNow()).ms;
    }
  }
}

}  // namespace

std::vector<QueueEntry> WriteQueue::Peek(std::string_view route, size_t max_n, uint64_t after_seq) const {
  std::vector<QueueEntry> out;
  ReadTxn txn(env_);
  const Databases& db = env_.dbs();
  auto id = RouteId(txn, db, route);
  if (!id || max_n == 0) return out;
  Cursor c(txn.get(), db.queue);
  if (!c.get()) ThrowLmdb(env_.path(), "cursor", c.rc());
  std::string start = QueueKey(*id, after_seq == UINT64_MAX ? after_seq : after_seq + 1);
  MDB_val k = Val(start), v;
  for (int rc = mdb_cursor_get(c.get(), &k, &v, MDB_SET_RANGE); rc == 0 && out.size() < max_n;
       rc = mdb_cursor_get(c.get(), &k, &v, MDB_NEXT)) {
    if (k.mv_size != 12 || GetBe32(static_cast<const char*>(k.mv_data)) != *id) break;
    QueueEntry e;
    if (!DecodeEntry(View(v), &e)) throw StoreError(env_.path() + ": corrupt queue entry");
    out.push_back(std::move(e));
  }
  return out;
}

std::optional<RouteQueueStats> WriteQueue::Stats(std::string_view route) const {
  ReadTxn txn(env_);
  const Databases& db = env_.dbs();
  auto id = RouteId(txn, db, route);
  if (!id) return std::nullopt;
  std::string key;
  PutBe32(&key, *id);
  auto v = txn.Get(db.route_stats, key);
  RouteQueueStats rs;
  if (!v || !DecodeRouteStats(*v, &rs)) throw StoreError(env_.path() + ": corrupt route stats");
  FillOldest(txn, db, *id, &rs);
  return rs;
}

std::vector<RouteQueueStats> WriteQueue::AllStats() const {
  std::vector<RouteQueueStats> out;
  ReadTxn txn(env_);
  const Databases& db = env_.dbs();
  Cursor c(txn.get(), db.route_stats);
  MDB_val k, v;
  for (int rc = mdb_cursor_get(c.get(), &k, &v, MDB_FIRST); rc == 0;
       rc = mdb_cursor_get(c.get(), &k, &v, MDB_NEXT)) {
    RouteQueueStats rs;
    if (!DecodeRouteStats(View(v), &rs)) throw StoreError(env_.path() + ": corrupt route stats");
    FillOldest(txn, db, GetBe32(static_cast<const char*>(k.mv_data)), &rs);
    out.push_back(std::move(rs));
  }
  return out;
}

QueueTotals WriteQueue::Totals() const {
  ReadTxn txn(env_);
  StoreCounters c;
  auto v = txn.Get(env_.dbs().meta, "counters");
  if (!v || !DecodeCounters(*v, &c)) throw StoreError(env_.path() + ": corrupt counters");
  return QueueTotals{c.queue_entries, c.queue_bytes, c.dead_entries, c.next_seq};
}

std::vector<DeadLetter> WriteQueue::DeadLetters(size_t max_n, uint64_t after_seq) const {
  std::vector<DeadLetter> out;
  if (max_n == 0 || after_seq == UINT64_MAX) return out;
  ReadTxn txn(env_);
  Cursor c(txn.get(), env_.dbs().dead);
  std::string start;
  PutBe64(&start, after_seq + 1);
  MDB_val k = Val(start), v;
  for (int rc = mdb_cursor_get(c.get(), &k, &v, MDB_SET_RANGE); rc == 0 && out.size() < max_n;
       rc = mdb_cursor_get(c.get(), &k, &v, MDB_NEXT)) {
    DeadLetter d;
    if (!DecodeDeadLetter(View(v), &d)) throw StoreError(env_.path() + ": corrupt dead letter");
    out.push_back(std::move(d));
  }
  return out;
}

}  // namespace tether::store
