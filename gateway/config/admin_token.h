// The admin token: the credential the admin API asks for on /api/ (status, sessions, kick, queue,
// dead letters, reload, store check).
//
// tetherd draws a new random token (256 bits) at every start and writes it to admin.token_file
// (default /run/tether/admin.token: the directory systemd creates for the unit, owner tether,
// mode 0750) with mode 0640, so root and members of group tether can read it and nobody else.
// tetherctl reads it (through ReadSecretFile) and sends "Authorization: Bearer <token>". The file
// is replaced atomically and removed at a clean stop; a stolen copy dies with the process.
#pragma once

#include <string>
#include <string_view>

namespace tether {

inline constexpr const char* kDefaultAdminTokenFile = "/run/tether/admin.token";

// A new token: 43 characters of [A-Za-z0-9] from getrandom(2), 256 bits.
std::string NewAdminToken();
// Writes `token` to `path`, replacing it atomically (its directory is created, mode 0750, when
// missing). Throws std::runtime_error naming the file and the reason.
void WriteAdminToken(const std::string& path, const std::string& token);
// Removes `path` if it still holds `token` (it may belong to a newer tetherd by now).
void RemoveAdminToken(const std::string& path, const std::string& token);
// Compares in time independent of where they differ.
bool SameAdminToken(std::string_view a, std::string_view b);

}  // namespace tether
