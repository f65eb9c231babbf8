#include "store/session_applier.h"

#include <cerrno>
#include <utility>
#include <vector>

#include "store/record_codec.h"
#include "store/tree_path.h"

namespace tether::store {

Status SessionApplier::Apply(MDB_txn* txn, const mutation::PutSession& m) {
  const SessionRecord& r = m.record;
  if (r.session_id.empty() || r.short_token.empty() || r.long_token.empty()) {
    return Invalid("session needs id, short token and long token");
  }
  if (r.session_id.size() > kMaxLmdbKeyBytes - 10 || r.short_token.size() > kMaxLmdbKeyBytes ||
      r.long_token.size() > kMaxLmdbKeyBytes) {
    return Invalid("session id or token too long");
  }
  for (auto [dbi, token] : {std::pair{ctx_->db.by_short, &r.short_token}, std::pair{ctx_->db.by_long, &r.long_token}}) {
    MDB_val mk = Val(*token), mv;
    int rc = mdb_get(txn, dbi, &mk, &mv);
    if (rc == 0 && View(mv) != r.session_id) return Status::Error(StatusCode::kConflict, "token already bound to another session");
    if (rc && rc != MDB_NOTFOUND) return ctx_->Mdb(rc, "token index");
  }
  MDB_val mk = Val(r.session_id), mv;
  int rc = mdb_get(txn, ctx_->db.sessions, &mk, &mv);
  if (rc == 0) {
    SessionRecord old;
    if (!DecodeSession(View(mv), &old)) return Status::Error(StatusCode::kIoError, "corrupt session");
    MDB_val ok = Val(old.short_token), ol = Val(old.long_token);
    if (old.short_token != r.short_token && (rc = mdb_del(txn, ctx_->db.by_short, &ok, nullptr)) && rc != MDB_NOTFOUND) return ctx_->Mdb(rc, "token index");
    if (old.long_token != r.long_token && (rc = mdb_del(txn, ctx_->db.by_long, &ol, nullptr)) && rc != MDB_NOTFOUND) return ctx_->Mdb(rc, "token index");
  } else if (rc != MDB_NOTFOUND) {
    return ctx_->Mdb(rc, "session get");
  }
  std::string v = EncodeSession(r);
  MDB_val sv = Val(v), id = Val(r.session_id), sk = Val(r.short_token), lk = Val(r.long_token);
  if ((rc = mdb_put(txn, ctx_->db.sessions, &mk, &sv, 0)) || (rc = mdb_put(txn, ctx_->db.by_short, &sk, &id, 0)) ||
      (rc = mdb_put(txn, ctx_->db.by_long, &lk, &id, 0))) {
    return ctx_->Mdb(rc, "session put");
  }
  return Status::Ok();
}

Status SessionApplier::Apply(MDB_txn* txn, const mutation::TouchSession& m) {
  MDB_val mk = Val(m.session_id), mv;
  int rc = mdb_get(txn, ctx_->db.sessions, &mk, &mv);
  if (rc == MDB_NOTFOUND) return NotFound("no session '" + m.session_id + "'");
  if (rc) return ctx_->Mdb(rc, "session get");
  SessionRecord r;
  if (!DecodeSession(View(mv), &r)) return Status::Error(StatusCode::kIoError, "corrupt session");
  r.last_seen_ms = m.last_seen_ms;
  r.last_seen_boottime_ms = m.last_seen_boottime_ms;
  r.boot_id = m.boot_id;
  r.last_ping_ms = m.last_ping_ms;
  std::string v = EncodeSession(r);
  MDB_val sv = Val(v);
  if ((rc = mdb_put(txn, ctx_->db.sessions, &mk, &sv, 0))) return ctx_->Mdb(rc, "session put");
  return Status::Ok();
}

Status SessionApplier::DeleteSessionOps(MDB_txn* txn, const std::string& session_id, const std::string* under,
                                      uint64_t up_to_order) {
  const std::string prefix = OnDisconnectPrefix(session_id);
  Cursor c(txn, ctx_->db.on_disconnect);
  if (c.rc()) return ctx_->Mdb(c.rc(), "cursor");
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
      if ((rc = mdb_cursor_del(c.get(), 0))) return ctx_->Mdb(rc, "op delete");
      rc = mdb_cursor_get(c.get(), &k, &v, MDB_GET_CURRENT);
      if (rc == EINVAL) rc = MDB_NOTFOUND;  // deleted the last record
    } else {
      rc = mdb_cursor_get(c.get(), &k, &v, MDB_NEXT);
    }
  }
  if (rc && rc != MDB_NOTFOUND) return ctx_->Mdb(rc, "op scan");
  return Status::Ok();
}

Status SessionApplier::Apply(MDB_txn* txn, const mutation::RemoveSession& m) {
  MDB_val mk = Val(m.session_id), mv;
  int rc = mdb_get(txn, ctx_->db.sessions, &mk, &mv);
  if (rc == MDB_NOTFOUND) {
    return m.must_exist ? NotFound("no session '" + m.session_id + "'") : Status::Ok();
  }
  if (rc) return ctx_->Mdb(rc, "session get");
  SessionRecord r;
  if (!DecodeSession(View(mv), &r)) return Status::Error(StatusCode::kIoError, "corrupt session");
  if (m.ops_through != UINT64_MAX) {
    const std::string prefix = OnDisconnectPrefix(m.session_id);
    Cursor c(txn, ctx_->db.on_disconnect);
    if (c.rc()) return ctx_->Mdb(c.rc(), "cursor");
    MDB_val k = Val(prefix), v;
    for (rc = mdb_cursor_get(c.get(), &k, &v, MDB_SET_RANGE); rc == 0 && View(k).substr(0, prefix.size()) == prefix;
         rc = mdb_cursor_get(c.get(), &k, &v, MDB_NEXT)) {
      if (k.mv_size == prefix.size() + 8 && GetBe64(static_cast<const char*>(k.mv_data) + prefix.size()) > m.ops_through) {
        return Status::Error(StatusCode::kConflict, "onDisconnect op registered after the ones being fired");
      }
    }
  }
  MDB_val sk = Val(r.short_token), lk = Val(r.long_token);
  if ((rc = mdb_del(txn, ctx_->db.sessions, &mk, nullptr))) return ctx_->Mdb(rc, "session delete");
  if ((rc = mdb_del(txn, ctx_->db.by_short, &sk, nullptr)) && rc != MDB_NOTFOUND) return ctx_->Mdb(rc, "token index");
  if ((rc = mdb_del(txn, ctx_->db.by_long, &lk, nullptr)) && rc != MDB_NOTFOUND) return ctx_->Mdb(rc, "token index");
  return DeleteSessionOps(txn, m.session_id, nullptr);
}

Status SessionApplier::Apply(MDB_txn* txn, const mutation::AddOnDisconnect& m) {
  MDB_val mk = Val(m.session_id), mv;
  int rc = mdb_get(txn, ctx_->db.sessions, &mk, &mv);
  if (rc == MDB_NOTFOUND) return NotFound("no session '" + m.session_id + "'");
  if (rc) return ctx_->Mdb(rc, "session get");
  std::vector<std::string> segs;
  std::string error;
  if (!ParseTreePath(m.op.path, &segs, &error)) return Invalid(error);
  OnDisconnectOp op = m.op;
  op.order = ctx_->counters.next_op_order++;
  ctx_->counters_dirty = true;
  ctx_->touched = true;
  std::string key = OnDisconnectPrefix(m.session_id);
  PutBe64(&key, op.order);
  std::string v = EncodeOnDisconnect(op);
  MDB_val ok = Val(key), ov = Val(v);
  if ((rc = mdb_put(txn, ctx_->db.on_disconnect, &ok, &ov, 0))) return ctx_->Mdb(rc, "op put");
  return Status::Ok();
}

Status SessionApplier::Apply(MDB_txn* txn, const mutation::CancelOnDisconnect& m) {
  std::vector<std::string> segs;
  std::string error;
  if (!ParseTreePath(m.path, &segs, &error)) return Invalid(error);
  const std::string under = JoinKey(segs, segs.size());
  return DeleteSessionOps(txn, m.session_id, &under, m.up_to_order);
}

}  // namespace tether::store
