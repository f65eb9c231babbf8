#include "store/apply_context.h"

#include <cerrno>

namespace tether::store {

Status ApplyContext::Mdb(int rc, const char* what) {
  if (rc == MDB_MAP_FULL || rc == MDB_TXN_FULL || rc == ENOSPC) {
    exhausted = true;
    return Status::Error(StatusCode::kFull, std::string(what) + ": " + mdb_strerror(rc));
  }
  return Status::Error(StatusCode::kIoError, std::string(what) + ": " + mdb_strerror(rc));
}

Status ApplyContext::DeleteKeysFrom(MDB_txn* txn, MDB_dbi dbi, const std::string& prefix) {
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

}  // namespace tether::store
