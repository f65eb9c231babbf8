// SessionTable: read side of persisted sessions and their onDisconnect registry.
//
// Token lookups go through secondary index databases (one B-tree lookup each). ListAll is one
// sequential scan; it is what the gateway calls at startup. Mutations are WriteBatch::*Session
// and *OnDisconnect; firing a session = one batch of RemoveSession(id, must_exist=true) + the
// resulting writes, so a second firing fails with kNotFound instead of running twice.
#pragma once

#include <optional>
#include <string_view>
#include <vector>

#include "store/session_record.h"

namespace tether::store {

class LmdbEnv;

class SessionTable {
 public:
  explicit SessionTable(const LmdbEnv& env) : env_(env) {}

  std::optional<SessionRecord> Get(std::string_view session_id) const;
  std::optional<SessionRecord> FindByShortToken(std::string_view token) const;
  std::optional<SessionRecord> FindByLongToken(std::string_view token) const;
  std::vector<SessionRecord> ListAll() const;
  size_t Count() const;
  // The session's ops in registration order.
  std::vector<OnDisconnectOp> OnDisconnectOps(std::string_view session_id) const;

 private:
  std::optional<SessionRecord> FindBy(unsigned dbi, std::string_view token) const;
  const LmdbEnv& env_;
};

}  // namespace tether::store
