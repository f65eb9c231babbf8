#include "store/lmdb_env.h"

#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <algorithm>
#include <cstring>
#include <random>
#include <mutex>

#include "store/pending_index.h"
#include "store/record_codec.h"
#include "store/store_counters.h"
#include "store/store_error.h"
#include "store/tree_path.h"
#include "util/hex.h"

namespace tether::store {

void ThrowLmdb(const std::string& path, const char* what, int rc) {
  throw StoreError(path + ": " + what + ": " + mdb_strerror(rc));
}

namespace {

struct DbSpec {
  const char* name;
  MDB_dbi Databases::*member;
};

constexpr DbSpec kDbSpecs[] = {
    {"meta", &Databases::meta},
    {"routes", &Databases::routes},
    {"route_stats", &Databases::route_stats},
    {"queue", &Databases::queue},
    {"dead", &Databases::dead},
    {"tree", &Databases::tree},
    {"tree_units", &Databases::tree_units},  // added by schema 3: built from the tree then
    {"tree_lru", &Databases::tree_lru},
    {"sessions", &Databases::sessions},
    {"by_short", &Databases::by_short},
    {"by_long", &Databases::by_long},
    {"on_disconnect", &Databases::on_disconnect},
    {"query_marks", &Databases::query_marks},  // added later: created on the first writable open
    {"pending_paths", &Databases::pending_paths},  // added later: built from the queue then
};

bool AddedLater(MDB_dbi Databases::*member) {
  return member == &Databases::query_marks || member == &Databases::pending_paths ||
         member == &Databases::tree_units || member == &Databases::tree_lru;
}

bool* PresenceFlag(Databases* dbs, MDB_dbi Databases::*member) {
  if (member == &Databases::query_marks) return &dbs->has_query_marks;
  if (member == &Databases::pending_paths) return &dbs->has_pending_paths;
  return &dbs->has_units;
}

// (Re)builds the unit tables from the tree, all units equally old (a schema 2 store, or one
// built with another unit depth). One pass over the tree.
int BuildUnits(MDB_txn* txn, const Databases& dbs, uint32_t depth) {
  int rc;
  if ((rc = mdb_drop(txn, dbs.tree_units, 0)) || (rc = mdb_drop(txn, dbs.tree_lru, 0))) return rc;
  std::string unit;
  UnitRecord rec;
  auto put = [&]() -> int {
    if (unit.empty()) return 0;
    MDB_val k = Val(unit), v;
    UnitRecord total = rec;
    if (mdb_get(txn, dbs.tree_units, &k, &v) == 0 && DecodeUnit(View(v), &total)) total.bytes += rec.bytes;
    std::string value = EncodeUnit(total), lru = LruKey(0, unit);
    MDB_val mv = Val(value), lk = Val(lru), empty{0, nullptr};
    int r = mdb_put(txn, dbs.tree_units, &k, &mv, 0);
    return r ? r : mdb_put(txn, dbs.tree_lru, &lk, &empty, 0);
  };
  Cursor c(txn, dbs.tree);
  if (c.rc()) return c.rc();
  MDB_val k, v;
  for (rc = mdb_cursor_get(c.get(), &k, &v, MDB_FIRST); rc == 0; rc = mdb_cursor_get(c.get(), &k, &v, MDB_NEXT)) {
    std::string_view u = UnitOf(View(k), depth);
    if (u != unit) {
      if (int r = put()) return r;
      unit = std::string(u);
      rec = UnitRecord{};
    }
    rec.bytes += k.mv_size + v.mv_size;
  }
  if (rc != MDB_NOTFOUND) return rc;
  if ((rc = put())) return rc;
  std::string d;
  PutBe32(&d, depth);
  MDB_val mk = Val("unit_depth"), mv = Val(d);
  return mdb_put(txn, dbs.meta, &mk, &mv, 0);
}

// Fills the pending_paths index from the queue (a store written by a build without it).
int BuildPendingIndex(MDB_txn* txn, const Databases& dbs) {
  Cursor c(txn, dbs.queue);
  if (c.rc()) return c.rc();
  MDB_val k, v;
  int rc;
  for (rc = mdb_cursor_get(c.get(), &k, &v, MDB_FIRST); rc == 0; rc = mdb_cursor_get(c.get(), &k, &v, MDB_NEXT)) {
    QueueEntry e;
    if (k.mv_size != 12 || !DecodeEntry(View(v), &e)) continue;  // Check() reports such entries
    std::string key;
    if (!PendingIndexKey(e.path, e.seq, &key)) continue;
    MDB_val ik = Val(key), iv = {4, k.mv_data};
    if ((rc = mdb_put(txn, dbs.pending_paths, &ik, &iv, 0))) return rc;
  }
  return rc == MDB_NOTFOUND ? 0 : rc;
}

std::string RandomHex(size_t bytes) {
  std::random_device rd;
  std::string random(bytes, '\0');
  for (char& b : random) b = static_cast<char>(rd() & 0xff);
  return util::HexEncode(random);
}

std::string ReadMeta(MDB_txn* txn, MDB_dbi meta, const char* key, bool* found) {
  MDB_val k = Val(key), v;
  int rc = mdb_get(txn, meta, &k, &v);
  *found = rc == 0;
  return rc == 0 ? std::string(View(v)) : std::string();
}

}  // namespace

LmdbEnv::LmdbEnv(const std::string& dir, const StoreOptions& options) : path_(dir) {
  const bool ro = options.read_only;
  if (options.tree_unit_depth < 1) throw StoreError(dir + ": tree_unit_depth must be at least 1");
  if (!ro) {
    if (mkdir(dir.c_str(), 0750) != 0 && errno != EEXIST) {
      throw StoreError(dir + ": cannot create store directory: " + std::strerror(errno));
    }
    lock_fd_ = open((dir + "/tether.lock").c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0640);
    if (lock_fd_ < 0) throw StoreError(dir + ": cannot open tether.lock: " + std::strerror(errno));
    if (flock(lock_fd_, LOCK_EX | LOCK_NB) != 0) {
      int err = errno;
      close(lock_fd_);
      lock_fd_ = -1;
      throw StoreError(dir + ": store is in use by another writer (tether.lock): " + std::strerror(err));
    }
  }
  int rc = mdb_env_create(&env_);
  if (rc) {
    if (lock_fd_ >= 0) close(lock_fd_);
    ThrowLmdb(path_, "mdb_env_create", rc);
  }
  try {
    if ((rc = mdb_env_set_maxdbs(env_, 16))) ThrowLmdb(path_, "mdb_env_set_maxdbs", rc);
    // A 32-bit build maps its maximum at once and never remaps (options.h).
    const uint64_t map = kAddressSpace32 ? std::max(options.map_size, options.map_max) : options.map_size;
    if (map > kMaxMapBytes) {
      throw StoreError(path_ + ": a map of " + std::to_string(map) + " bytes does not fit this build's " +
                       (kAddressSpace32 ? "32-bit" : "64-bit") + " address space (at most " +
                       std::to_string(kMaxMapBytes) + ")");
    }
    if ((rc = mdb_env_set_mapsize(env_, static_cast<size_t>(map)))) ThrowLmdb(path_, "mdb_env_set_mapsize", rc);
    unsigned flags = MDB_NOTLS | (ro ? MDB_RDONLY : 0);
    if (options.durability == Durability::kOsBuffered) flags |= MDB_NOSYNC;
    if ((rc = mdb_env_open(env_, dir.c_str(), flags, 0640))) {
      if (rc == ENOMEM) {
        throw StoreError(path_ + ": cannot map " + std::to_string(map >> 20) + " MiB of address space for the "
                         "store: " + mdb_strerror(rc) + " (lower the map size)");
      }
      ThrowLmdb(path_, "cannot open LMDB store", rc);
    }
    int dead = 0;
    mdb_reader_check(env_, &dead);  // clear reader slots of crashed processes

    MDB_txn* txn = nullptr;
    if ((rc = mdb_txn_begin(env_, nullptr, ro ? MDB_RDONLY : 0, &txn))) ThrowLmdb(path_, "mdb_txn_begin", rc);
    // Refuse foreign stores before creating anything: a store without our meta db must be empty.
    MDB_dbi meta;
    rc = mdb_dbi_open(txn, "meta", 0, &meta);
    bool fresh = false;
    if (rc == MDB_NOTFOUND) {
      MDB_dbi main_db;
      MDB_stat st;
      if ((rc = mdb_dbi_open(txn, nullptr, 0, &main_db)) || (rc = mdb_stat(txn, main_db, &st))) {
        mdb_txn_abort(txn);
        ThrowLmdb(path_, "reading main database", rc);
      }
      if (st.ms_entries != 0 || ro) {
        mdb_txn_abort(txn);
        throw StoreError(path_ + ": not a tether store (LMDB file without tether meta database); "
                         "refusing to modify it");
      }
      fresh = true;
    } else if (rc) {
      mdb_txn_abort(txn);
      ThrowLmdb(path_, "opening meta database", rc);
    }
    bool build_pending_index = false, build_units = false;
    for (const DbSpec& spec : kDbSpecs) {
      rc = mdb_dbi_open(txn, spec.name, 0, &(dbs_.*spec.member));
      if (rc == MDB_NOTFOUND && AddedLater(spec.member)) {
        if (ro) {
          *PresenceFlag(&dbs_, spec.member) = false;
          continue;
        }
        build_pending_index |= spec.member == &Databases::pending_paths && !fresh;
        build_units |= spec.member == &Databases::tree_units;
      }
      if (rc == MDB_NOTFOUND && !ro) rc = mdb_dbi_open(txn, spec.name, MDB_CREATE, &(dbs_.*spec.member));
      if (rc) {
        mdb_txn_abort(txn);
        ThrowLmdb(path_, "opening database", rc);
      }
    }
    if (build_pending_index && (rc = BuildPendingIndex(txn, dbs_))) {
      mdb_txn_abort(txn);
      ThrowLmdb(path_, "indexing queued writes by path", rc);
    }
    if (dbs_.has_units) {
      bool found = false;
      std::string d = ReadMeta(txn, dbs_.meta, "unit_depth", &found);
      unit_depth_ = d.size() == 4 ? GetBe32(d.data()) : 0;
      build_units |= unit_depth_ != options.tree_unit_depth;
    }
    if (!ro && build_units) {
      if ((rc = BuildUnits(txn, dbs_, options.tree_unit_depth))) {
        mdb_txn_abort(txn);
        ThrowLmdb(path_, "building the cache units", rc);
      }
      unit_depth_ = options.tree_unit_depth;
      MDB_dbi old_roots;  // schema 2's per-root counters: replaced by the units
      if (mdb_dbi_open(txn, "tree_roots", 0, &old_roots) == 0 && (rc = mdb_drop(txn, old_roots, 1))) {
        mdb_txn_abort(txn);
        ThrowLmdb(path_, "dropping tree_roots", rc);
      }
    }
    uint64_t next_seq = 1;
    if (fresh) {
      std::string schema;
      PutBe32(&schema, kSchemaVersion);
      std::string counters = EncodeCounters(StoreCounters{});
      MDB_val k1 = Val("format"), v1 = Val(kFormatId), k2 = Val("schema"), v2 = Val(schema),
              k3 = Val("counters"), v3 = Val(counters);
      if ((rc = mdb_put(txn, dbs_.meta, &k1, &v1, 0)) || (rc = mdb_put(txn, dbs_.meta, &k2, &v2, 0)) ||
          (rc = mdb_put(txn, dbs_.meta, &k3, &v3, 0))) {
        mdb_txn_abort(txn);
        ThrowLmdb(path_, "initializing meta", rc);
      }
    } else {
      bool found = false;
      std::string format = ReadMeta(txn, dbs_.meta, "format", &found);
      if (!found || format != kFormatId) {
        mdb_txn_abort(txn);
        throw StoreError(path_ + ": incompatible store: format id '" + format + "', expected '" +
                         std::string(kFormatId) + "'");
      }
      std::string schema = ReadMeta(txn, dbs_.meta, "schema", &found);
      uint32_t version = schema.size() == 4 ? GetBe32(schema.data()) : 0;
      if (version < kOldestReadableSchema || version > kSchemaVersion) {
        mdb_txn_abort(txn);
        throw StoreError(path_ + ": incompatible store: schema version " + std::to_string(version) +
                         ", this build reads version " + std::to_string(kSchemaVersion));
      }
      StoreCounters c;
      if (!DecodeCounters(ReadMeta(txn, dbs_.meta, "counters", &found), &c)) {
        mdb_txn_abort(txn);
        throw StoreError(path_ + ": corrupt store: unreadable counters record");
      }
      next_seq = c.next_seq;
      if (version != kSchemaVersion && !ro) {  // converted above (units built, tree_roots gone)
        std::string v = EncodeCounters(c), s;
        PutBe32(&s, kSchemaVersion);
        MDB_val ck = Val("counters"), cv = Val(v), sk = Val("schema"), sv = Val(s);
        if ((rc = mdb_put(txn, dbs_.meta, &ck, &cv, 0)) || (rc = mdb_put(txn, dbs_.meta, &sk, &sv, 0))) {
          mdb_txn_abort(txn);
          ThrowLmdb(path_, "converting the store to the current schema", rc);
        }
      }
    }
    // A new store, a built index or a schema 3 store: every queued entry is in pending_paths.
    if (!ro && (fresh || build_pending_index || ReadPendingThrough(txn, dbs_) == UINT64_MAX) &&
        (rc = WritePendingThrough(txn, dbs_, next_seq - 1))) {
      mdb_txn_abort(txn);
      ThrowLmdb(path_, "writing the pending index mark", rc);
    }
    bool has_id = false;
    instance_id_ = ReadMeta(txn, dbs_.meta, "instance", &has_id);
    if (!has_id && !ro) {
      instance_id_ = RandomHex(8);
      MDB_val k = Val("instance"), v = Val(instance_id_);
      if ((rc = mdb_put(txn, dbs_.meta, &k, &v, 0))) {
        mdb_txn_abort(txn);
        ThrowLmdb(path_, "writing the store instance id", rc);
      }
    }
    if ((rc = mdb_txn_commit(txn))) ThrowLmdb(path_, "committing open", rc);
  } catch (...) {
    mdb_env_close(env_);
    env_ = nullptr;
    if (lock_fd_ >= 0) close(lock_fd_);
    throw;
  }
}

LmdbEnv::~LmdbEnv() {
  if (env_) mdb_env_close(env_);
  if (lock_fd_ >= 0) close(lock_fd_);  // releases the flock
}

uint64_t LmdbEnv::map_size() const {
  MDB_envinfo info;
  mdb_env_info(env_, &info);
  return info.me_mapsize;
}

bool LmdbEnv::GrowMap(uint64_t max) {
  uint64_t cur = map_size();
  if (max == 0 || cur >= max) return false;
  uint64_t next = std::min<uint64_t>(cur * 2, max);
  std::unique_lock lock(resize_mutex_);
  return mdb_env_set_mapsize(env_, next) == 0;
}

bool LmdbEnv::SpaceLow(uint32_t times) const {
  MDB_envinfo info;
  MDB_stat st;
  mdb_env_info(env_, &info);
  mdb_env_stat(env_, &st);
  const uint64_t total = info.me_mapsize / st.ms_psize;
  const uint64_t reserve = std::max<uint64_t>(total / 64, 32) * times;
  const uint64_t tail = total > info.me_last_pgno + 1 ? total - info.me_last_pgno - 1 : 0;
  if (tail >= reserve) return false;
  // Count freelist pages the way mdb_stat -f does: FREE_DBI (0) values are page-number lists
  // whose first word is their length; the key is the txn that freed them. The pages the last
  // commit freed do not count: LMDB hands them out only from the commit after the next one.
  ReadTxn txn(*this);
  Cursor c(txn.get(), 0);
  uint64_t free_pages = 0;
  MDB_val k, v;
  for (int rc = mdb_cursor_get(c.get(), &k, &v, MDB_FIRST); rc == 0 && tail + free_pages < reserve;
       rc = mdb_cursor_get(c.get(), &k, &v, MDB_NEXT)) {
    if (k.mv_size == sizeof(size_t) && *static_cast<const size_t*>(k.mv_data) >= info.me_last_txnid) break;
    free_pages += *static_cast<const size_t*>(v.mv_data);
  }
  return tail + free_pages < reserve;
}

ReadTxn::ReadTxn(const LmdbEnv& env) : env_(env), lock_(env.resize_mutex()) {
  int rc = mdb_txn_begin(env.env(), nullptr, MDB_RDONLY, &txn_);
  if (rc) ThrowLmdb(env.path(), "read txn", rc);
}

ReadTxn::~ReadTxn() {
  if (txn_) mdb_txn_abort(txn_);
}

std::optional<std::string_view> ReadTxn::Get(MDB_dbi dbi, std::string_view key) const {
  MDB_val k = Val(key), v;
  int rc = mdb_get(txn_, dbi, &k, &v);
  if (rc == MDB_NOTFOUND) return std::nullopt;
  if (rc) ThrowLmdb(env_.path(), "mdb_get", rc);
  return View(v);
}

Cursor::Cursor(MDB_txn* txn, MDB_dbi dbi) {
  rc_ = mdb_cursor_open(txn, dbi, &c_);
  if (rc_) c_ = nullptr;
}

}  // namespace tether::store
