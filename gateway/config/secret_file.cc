#include "gateway/config/secret_file.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include <cerrno>
#include <climits>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <mutex>
#include <set>
#include <utility>

namespace tether {

namespace {

constexpr size_t kMaxSecretBytes = 64u << 20;  // a keys file for a large fleet, with room to spare

[[noreturn]] void Refuse(const std::string& path, const std::string& why) {
  throw SecretFileError(path + ": " + why);
}

// Refuses when `dir` lets every user create and rename files in it (no sticky bit to stop them).
void CheckDirectory(const std::string& path, const std::filesystem::path& dir) {
  const std::string d = dir.empty() ? "." : dir.string();
  struct stat st {};
  if (stat(d.c_str(), &st) != 0) return;  // the open below reports a missing path
  if ((st.st_mode & S_IWOTH) && !(st.st_mode & S_ISVTX)) {
    Refuse(path, fmt::format("its directory {} is writable by every user (mode {:04o}, no sticky bit): anyone "
                             "could put another file in its place; keep secrets in a directory only root "
                             "can change, e.g. /etc/tether",
                             d, st.st_mode & 07777));
  }
}

// Warns once per (path, mode): a reload re-reads the same files, and one line says it all.
void WarnReadable(const std::string& path, mode_t mode) {
  static std::mutex mu;
  static std::set<std::pair<std::string, mode_t>> warned;
  {
    std::lock_guard<std::mutex> lock(mu);
    if (!warned.insert({path, mode}).second) return;
  }
  spdlog::warn("{}: readable by every user (mode {:04o}); a secret should not be: chmod o-r {} (recommended: "
               "owner root, group tether, mode 0640)",
               path, mode & 07777, path);
}

}  // namespace

std::string ReadSecretFile(const std::string& path) {
  CheckDirectory(path, std::filesystem::path(path).parent_path());
  if (char* real = realpath(path.c_str(), nullptr)) {
    std::string target = real;
    std::free(real);
    if (target != path) CheckDirectory(path, std::filesystem::path(target).parent_path());
  }
  int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);
  if (fd < 0) throw SecretFileError(fmt::format("cannot read {}: {}", path, std::strerror(errno)));
  struct Closer {
    int fd;
    ~Closer() { close(fd); }
  } closer{fd};
  struct stat st {};
  if (fstat(fd, &st) != 0) throw SecretFileError(fmt::format("cannot read {}: {}", path, std::strerror(errno)));
  if (!S_ISREG(st.st_mode)) Refuse(path, "not a regular file");
  if (st.st_mode & S_IWOTH) {
    Refuse(path, fmt::format("writable by every user (mode {:04o}): anyone could replace the secret; "
                             "chmod o-w {} (recommended: owner root, group tether, mode 0640)",
                             st.st_mode & 07777, path));
  }
  if (static_cast<uint64_t>(st.st_size) > kMaxSecretBytes) {
    Refuse(path, fmt::format("{} bytes is larger than a secret file may be ({} bytes)", st.st_size, kMaxSecretBytes));
  }
  if (st.st_mode & S_IROTH) WarnReadable(path, st.st_mode);
  std::string content;
  content.reserve(static_cast<size_t>(st.st_size));
  char buf[8192];
  for (;;) {
    ssize_t n = read(fd, buf, sizeof buf);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) throw SecretFileError(fmt::format("cannot read {}: {}", path, std::strerror(errno)));
    if (n == 0) break;
    content.append(buf, static_cast<size_t>(n));
    if (content.size() > kMaxSecretBytes) Refuse(path, "grew past the size a secret file may have while read");
  }
  return content;
}

std::string ReadSecretValue(const std::string& path) {
  std::string value = ReadSecretFile(path);
  while (!value.empty() && (value.back() == '\n' || value.back() == '\r')) value.pop_back();
  return value;
}

std::string ReadCredentialFile(const std::string& path) {
  std::string s = ReadSecretFile(path);
  while (!s.empty() && (s.back() == '\n' || s.back() == '\r' || s.back() == ' ')) s.pop_back();
  if (s.empty()) throw SecretFileError("credentials file " + path + " is empty");
  return s;
}

}  // namespace tether
