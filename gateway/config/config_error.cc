#include "gateway/config/config_error.h"

#include <fmt/format.h>

namespace tether {

namespace {
std::string Format(const std::string& file, int line, int column, const std::string& key,
                   const std::string& what) {
  std::string where = line > 0 ? fmt::format("{}:{}:{}", file, line, column) : file;
  return key.empty() ? fmt::format("{}: {}", where, what) : fmt::format("{}: {}: {}", where, key, what);
}
}  // namespace

ConfigError::ConfigError(std::string file, int line, int column, std::string key_path, std::string what)
    : std::runtime_error(Format(file, line, column, key_path, what)),
      file_(std::move(file)),
      line_(line),
      column_(column),
      key_path_(std::move(key_path)) {}

}  // namespace tether
