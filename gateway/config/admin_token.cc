#include "gateway/config/admin_token.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <stdexcept>

#include "gateway/config/random_token.h"

extern "C" {  // mbedTLS 2.28's constant_time.h lacks the C++ guard its other headers have
#include <mbedtls/constant_time.h>
}
#include "gateway/config/secret_file.h"

namespace tether {

namespace {
constexpr size_t kTokenChars = 43;  // [A-Za-z0-9]^43: 256 bits

[[noreturn]] void Fail(const std::string& path, const std::string& why) {
  throw std::runtime_error("admin: cannot write the admin token to " + path + ": " + why +
                           " (admin.token_file; the unit's RuntimeDirectory=tether provides /run/tether)");
}
}  // namespace

std::string NewAdminToken() { return RandomToken(kTokenChars); }

void WriteAdminToken(const std::string& path, const std::string& token) {
  const std::filesystem::path dir = std::filesystem::path(path).parent_path();
  if (!dir.empty() && mkdir(dir.c_str(), 0750) != 0 && errno != EEXIST) Fail(path, std::strerror(errno));
  const std::string tmp = path + ".new";
  unlink(tmp.c_str());  // left by a crash between open and rename
  int fd = open(tmp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0640);
  if (fd < 0) Fail(path, std::strerror(errno));
  // fchmod: the unit's UMask=0077 would otherwise hide the file from group tether.
  bool ok = fchmod(fd, 0640) == 0 && ::write(fd, token.data(), token.size()) == static_cast<ssize_t>(token.size()) &&
            ::write(fd, "\n", 1) == 1;
  int err = errno;
  ok = close(fd) == 0 && ok;
  if (!ok || rename(tmp.c_str(), path.c_str()) != 0) {
    if (ok) err = errno;
    unlink(tmp.c_str());
    Fail(path, std::strerror(err));
  }
}

void RemoveAdminToken(const std::string& path, const std::string& token) {
  try {
    if (ReadSecretFile(path) == token + "\n") unlink(path.c_str());
  } catch (const SecretFileError&) {  // gone or replaced: not ours to remove
  }
}

bool SameAdminToken(std::string_view a, std::string_view b) {
  return a.size() == b.size() && mbedtls_ct_memcmp(a.data(), b.data(), a.size()) == 0;
}

}  // namespace tether
