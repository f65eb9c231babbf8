#include "store/store_check.h"

#include <sys/stat.h>

#include <map>

#include "store/lmdb_env.h"
#include "store/pending_index.h"
#include "store/record_codec.h"
#include "store/store_counters.h"
#include "store/tree_path.h"

namespace tether::store {
namespace {

template <typename Fn>
void Scan(MDB_txn* txn, MDB_dbi dbi, Fn&& fn) {
  Cursor c(txn, dbi);
  MDB_val k, v;
  for (int rc = mdb_cursor_get(c.get(), &k, &v, MDB_FIRST); rc == 0;
       rc = mdb_cursor_get(c.get(), &k, &v, MDB_NEXT)) {
    fn(View(k), View(v));
  }
}

}  // namespace

CheckReport RunCheck(const LmdbEnv& env) {
  CheckReport r;
  auto problem = [&](std::string p) {
    r.ok = false;
    if (r.problems.size() < 100) r.problems.push_back(std::move(p));
  };
  ReadTxn txn(env);
  const Databases& db = env.dbs();

  MDB_envinfo info;
  MDB_stat est;
  mdb_env_info(env.env(), &info);
  mdb_env_stat(env.env(), &est);
  r.map_bytes = info.me_mapsize;
  r.page_size = est.ms_psize;
  r.used_bytes = (info.me_last_pgno + 1) * est.ms_psize;
  struct stat st;
  if (stat((env.path() + "/data.mdb").c_str(), &st) == 0) r.file_bytes = st.st_size;

  const std::pair<const char*, MDB_dbi> tables[] = {
      {"meta", db.meta}, {"routes", db.routes}, {"route_stats", db.route_stats}, {"queue", db.queue},
      {"dead", db.dead}, {"tree", db.tree}, {"sessions", db.sessions},
      {"by_short", db.by_short}, {"by_long", db.by_long}, {"on_disconnect", db.on_disconnect}};
  for (auto [name, dbi] : tables) {
    MDB_stat s;
    mdb_stat(txn.get(), dbi, &s);
    r.tables.push_back({name, s.ms_entries, s.ms_branch_pages + s.ms_leaf_pages + s.ms_overflow_pages});
  }
  if (db.has_units) {
    for (auto [name, dbi] : {std::pair{"tree_units", db.tree_units}, std::pair{"tree_lru", db.tree_lru}}) {
      MDB_stat s;
      mdb_stat(txn.get(), dbi, &s);
      r.tables.push_back({name, s.ms_entries, s.ms_branch_pages + s.ms_leaf_pages + s.ms_overflow_pages});
    }
  }

  StoreCounters counters;
  auto cv = txn.Get(db.meta, "counters");
  if (!cv || !DecodeCounters(*cv, &counters)) {
    problem("meta: counters record unreadable");
    return r;
  }

  std::map<uint32_t, std::string> route_names;
  Scan(txn.get(), db.routes, [&](std::string_view k, std::string_view v) {
    if (v.size() != 4) return problem("routes: bad id for '" + std::string(k) + "'");
    route_names[GetBe32(v.data())] = std::string(k);
  });
  std::map<uint32_t, RouteQueueStats> stored;
  Scan(txn.get(), db.route_stats, [&](std::string_view k, std::string_view v) {
    RouteQueueStats rs;
    if (k.size() != 4 || !DecodeRouteStats(v, &rs)) return problem("route_stats: unreadable record");
    stored[GetBe32(k.data())] = rs;
  });

  std::map<uint32_t, RouteQueueStats> actual;
  uint64_t q_entries = 0, q_bytes = 0, max_seq = 0, indexed = 0;
  // Entries after pending_through are indexed in the writer's memory only (store/pending_index.h).
  const uint64_t persisted_through = db.has_pending_paths ? ReadPendingThrough(txn.get(), db) : 0;
  std::map<uint32_t, uint64_t> last_seq;
  Scan(txn.get(), db.queue, [&](std::string_view k, std::string_view v) {
    QueueEntry e;
    if (k.size() != 12 || !DecodeEntry(v, &e)) return problem("queue: unreadable entry");
    uint32_t id = GetBe32(k.data());
    uint64_t seq = GetBe64(k.data() + 4);
    if (seq != e.seq) problem("queue: key seq " + std::to_string(seq) + " != entry seq");
    if (!route_names.count(id)) problem("queue: unknown route id " + std::to_string(id));
    else if (route_names[id] != e.route) problem("queue: entry route name mismatch at seq " + std::to_string(seq));
    actual[id].depth++;
    actual[id].bytes += v.size();
    q_entries++;
    q_bytes += v.size();
    max_seq = std::max(max_seq, seq);
    std::string ik;
    if (seq <= persisted_through && PendingIndexKey(e.path, e.seq, &ik)) {
      auto iv = txn.Get(db.pending_paths, ik);
      if (!iv || iv->size() != 4 || GetBe32(iv->data()) != id) {
        problem("pending_paths: queue entry " + std::to_string(seq) + " not indexed by its path");
      }
      ++indexed;
    }
  });
  if (db.has_pending_paths) {
    MDB_stat ps;
    mdb_stat(txn.get(), db.pending_paths, &ps);
    if (ps.ms_entries != indexed) {
      problem("pending_paths: " + std::to_string(ps.ms_entries) + " index entries for " + std::to_string(indexed) +
              " queued writes up to seq " + std::to_string(persisted_through));
    }
  }
  uint64_t dead = 0;
  std::map<std::string, uint64_t> dead_by_route;
  Scan(txn.get(), db.dead, [&](std::string_view k, std::string_view v) {
    DeadLetter d;
    if (k.size() != 8 || !DecodeDeadLetter(v, &d)) return problem("dead: unreadable entry");
    dead++;
    dead_by_route[d.entry.route]++;
    max_seq = std::max(max_seq, d.entry.seq);
  });
  if (q_entries != counters.queue_entries || q_bytes != counters.queue_bytes) {
    problem("counters: queue holds " + std::to_string(q_entries) + " entries / " + std::to_string(q_bytes) +
            " bytes, counters say " + std::to_string(counters.queue_entries) + " / " +
            std::to_string(counters.queue_bytes));
  }
  if (dead != counters.dead_entries) problem("counters: dead letter count mismatch");
  if (max_seq >= counters.next_seq) problem("counters: next_seq not above every stored seq");
  for (const auto& [id, name] : route_names) {
    const RouteQueueStats& a = actual[id];
    auto it = stored.find(id);
    if (it == stored.end()) {
      problem("route_stats: missing for route '" + name + "'");
      continue;
    }
    if (it->second.depth != a.depth || it->second.bytes != a.bytes) {
      problem("route_stats: '" + name + "' says depth " + std::to_string(it->second.depth) + ", queue holds " +
              std::to_string(a.depth));
    }
    if (it->second.dead_depth != dead_by_route[name]) problem("route_stats: '" + name + "' dead_depth mismatch");
  }

  // The tree, and the cache units describing it (see data_tree.h).
  const uint32_t depth = env.unit_depth();
  uint64_t tree_bytes = 0;
  std::map<std::string, uint64_t> unit_bytes;
  Scan(txn.get(), db.tree, [&](std::string_view k, std::string_view v) {
    tree_bytes += k.size() + v.size();
    if (depth) unit_bytes[std::string(UnitOf(k, depth))] += k.size() + v.size();
  });
  if (tree_bytes != counters.tree_bytes) problem("counters: tree bytes mismatch");
  if (db.has_units && depth == 0) problem("meta: unit depth missing");
  if (db.has_units && depth) {
    std::map<std::string, uint64_t> lru_expected;  // unit -> last_use
    Scan(txn.get(), db.tree_units, [&](std::string_view k, std::string_view v) {
      UnitRecord u;
      if (!DecodeUnit(v, &u)) return problem("tree_units: unreadable record '" + std::string(k) + "'");
      auto it = unit_bytes.find(std::string(k));
      const uint64_t actual_bytes = it == unit_bytes.end() ? 0 : it->second;
      if (u.bytes != actual_bytes) {
        problem("tree_units: '" + std::string(k) + "' counts " + std::to_string(u.bytes) + " bytes, holds " +
                std::to_string(actual_bytes));
      }
      if (it != unit_bytes.end()) unit_bytes.erase(it);
      if (u.last_use > counters.lru_clock) problem("tree_units: '" + std::string(k) + "' used after the LRU clock");
      if (u.bytes && !u.parked) lru_expected[std::string(k)] = u.last_use;
    });
    for (const auto& [unit, bytes] : unit_bytes) problem("tree_units: no record for unit '" + unit + "'");
    Scan(txn.get(), db.tree_lru, [&](std::string_view k, std::string_view) {
      if (k.size() < 8) return problem("tree_lru: short key");
      auto it = lru_expected.find(std::string(k.substr(8)));
      if (it == lru_expected.end() || it->second != GetBe64(k.data())) {
        return problem("tree_lru: stray key for unit '" + std::string(k.substr(8)) + "'");
      }
      lru_expected.erase(it);
    });
    for (const auto& [unit, last_use] : lru_expected) problem("tree_lru: unit '" + unit + "' missing");
  }

  uint64_t sessions = 0;
  Scan(txn.get(), db.sessions, [&](std::string_view k, std::string_view v) {
    SessionRecord s;
    if (!DecodeSession(v, &s) || s.session_id != k) return problem("sessions: unreadable record");
    sessions++;
    auto a = txn.Get(db.by_short, s.short_token), b = txn.Get(db.by_long, s.long_token);
    if (!a || *a != k) problem("by_short: missing index for session '" + s.session_id + "'");
    if (!b || *b != k) problem("by_long: missing index for session '" + s.session_id + "'");
  });
  for (MDB_dbi idx : {db.by_short, db.by_long}) {
    uint64_t n = 0;
    Scan(txn.get(), idx, [&](std::string_view, std::string_view v) {
      n++;
      if (!txn.Get(db.sessions, v)) problem("token index points to missing session '" + std::string(v) + "'");
    });
    if (n != sessions) problem("token index size differs from session count");
  }
  Scan(txn.get(), db.on_disconnect, [&](std::string_view k, std::string_view v) {
    OnDisconnectOp op;
    if (k.size() < 10 || !DecodeOnDisconnect(v, &op)) return problem("on_disconnect: unreadable op");
    size_t len = (static_cast<uint8_t>(k[0]) << 8) | static_cast<uint8_t>(k[1]);
    if (k.size() != 2 + len + 8 || !txn.Get(db.sessions, k.substr(2, len))) {
      problem("on_disconnect: op without session");
    }
  });
  return r;
}

}  // namespace tether::store
