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

#include "store/record_codec.h"
#include "store/store_counters.h"
#include "store/store_error.h"

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
    {"tree_roots", &Databases::tree_roots},
    {"sessions", &Databases::sessions},
    {"by_short", &Databases::by_short},
    {"by_long", &Databases::by_long},
    {"on_disconnect", &Databases::on_disconnect},
    {"query_marks", &Databases::query_marks},  // added later: created on the first writable open
    {"pending_paths", &Databases::pending_paths},  // added later: built from the queue then
};

bool AddedLater(MDB_dbi Databases::*member) {
  return member == &Databases::query_marks || member == &Databases::pending_paths;
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
  static const char* hex = "0123456789abcdef";
  std::string out;
  for (size_t i = 0; i < bytes; ++i) {
    unsigned b = rd() & 0xff;
    out += hex[b >> 4];
    out += hex[b & 15];
  }
  return out;
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
    if ((rc = mdb_env_set_mapsize(env_, options.map_size))) ThrowLmdb(path_, "mdb_env_set_mapsize", rc);
    unsigned flags = MDB_NOTLS | (ro ? MDB_RDONLY : 0);
    if (options.durability == Durability::kOsBuffered) flags |= MDB_NOSYNC;
    if ((rc = mdb_env_open(env_, dir.c_str(), flags, 0640))) ThrowLmdb(path_, "cannot open LMDB store", rc);
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
    bool build_pending_index = false;
    for (const DbSpec& spec : kDbSpecs) {
      rc = mdb_dbi_open(txn, spec.name, 0, &(dbs_.*spec.member));
      if (rc == MDB_NOTFOUND && AddedLater(spec.member)) {
        if (ro) {
          (spec.member == &Databases::query_marks ? dbs_.has_query_marks : dbs_.has_pending_paths) = false;
          continue;
        }
        build_pending_index = spec.member == &Databases::pending_paths && !fresh;
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
      if (version != kSchemaVersion) {
        mdb_txn_abort(txn);
        throw StoreError(path_ + ": incompatible store: schema version " + std::to_string(version) +
                         ", this build reads version " + std::to_string(kSchemaVersion));
      }
      StoreCounters c;
      if (!DecodeCounters(ReadMeta(txn, dbs_.meta, "counters", &found), &c)) {
        mdb_txn_abort(txn);
        throw StoreError(path_ + ": corrupt store: unreadable counters record");
      }
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

bool LmdbEnv::SpaceLow() const {
  MDB_envinfo info;
  MDB_stat st;
  mdb_env_info(env_, &info);
  mdb_env_stat(env_, &st);
  const uint64_t total = info.me_mapsize / st.ms_psize;
  const uint64_t reserve = std::max<uint64_t>(total / 64, 32);
  const uint64_t tail = total > info.me_last_pgno + 1 ? total - info.me_last_pgno - 1 : 0;
  if (tail >= reserve) return false;
  // Count freelist pages the way mdb_stat -f does: FREE_DBI (0) values are page-number lists
  // whose first word is their length.
  ReadTxn txn(*this);
  Cursor c(txn.get(), 0);
  uint64_t free_pages = 0;
  MDB_val k, v;
  for (int rc = mdb_cursor_get(c.get(), &k, &v, MDB_FIRST); rc == 0 && tail + free_pages < reserve;
       rc = mdb_cursor_get(c.get(), &k, &v, MDB_NEXT)) {
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
