#include "store/session_table.h"

#include "store/lmdb_env.h"
#include "store/record_codec.h"
#include "store/store_error.h"

namespace tether::store {

std::optional<SessionRecord> SessionTable::Get(std::string_view session_id) const {
  ReadTxn txn(env_);
  auto v = txn.Get(env_.dbs().sessions, session_id);
  if (!v) return std::nullopt;
  SessionRecord r;
  if (!DecodeSession(*v, &r)) throw StoreError(env_.path() + ": corrupt session record");
  return r;
}

std::optional<SessionRecord> SessionTable::FindBy(unsigned dbi, std::string_view token) const {
  ReadTxn txn(env_);
  auto id = txn.Get(dbi, token);
  if (!id) return std::nullopt;
  auto v = txn.Get(env_.dbs().sessions, *id);
  if (!v) return std::nullopt;
  SessionRecord r;
  if (!DecodeSession(*v, &r)) throw StoreError(env_.path() + ": corrupt session record");
  return r;
}

std::optional<SessionRecord> SessionTable::FindByShortToken(std::string_view token) const {
  return FindBy(env_.dbs().by_short, token);
}

std::optional<SessionRecord> SessionTable::FindByLongToken(std::string_view token) const {
  return FindBy(env_.dbs().by_long, token);
}

std::vector<SessionRecord> SessionTable::ListAll() const {
  ReadTxn txn(env_);
  MDB_stat st;
  mdb_stat(txn.get(), env_.dbs().sessions, &st);
  std::vector<SessionRecord> out;
  out.reserve(st.ms_entries);
  Cursor c(txn.get(), env_.dbs().sessions);
  MDB_val k, v;
  for (int rc = mdb_cursor_get(c.get(), &k, &v, MDB_FIRST); rc == 0;
       rc = mdb_cursor_get(c.get(), &k, &v, MDB_NEXT)) {
    out.emplace_back();
    if (!DecodeSession(View(v), &out.back())) throw StoreError(env_.path() + ": corrupt session record");
  }
  return out;
}

size_t SessionTable::Count() const {
  ReadTxn txn(env_);
  MDB_stat st;
  mdb_stat(txn.get(), env_.dbs().sessions, &st);
  return st.ms_entries;
}

std::vector<OnDisconnectOp> SessionTable::OnDisconnectOps(std::string_view session_id) const {
  std::vector<OnDisconnectOp> out;
  ReadTxn txn(env_);
  const std::string prefix = OnDisconnectPrefix(session_id);
  Cursor c(txn.get(), env_.dbs().on_disconnect);
  MDB_val k = Val(prefix), v;
  for (int rc = mdb_cursor_get(c.get(), &k, &v, MDB_SET_RANGE); rc == 0;
       rc = mdb_cursor_get(c.get(), &k, &v, MDB_NEXT)) {
    if (View(k).substr(0, prefix.size()) != prefix) break;
    out.emplace_back();
    if (!DecodeOnDisconnect(View(v), &out.back())) throw StoreError(env_.path() + ": corrupt op");
  }
  return out;
}

}  // namespace tether::store
