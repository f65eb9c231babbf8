// ConfigError: a configuration problem located at file:line:col and a dotted key path.
#pragma once

#include <stdexcept>
#include <string>

namespace tether {

class ConfigError : public std::runtime_error {
 public:
  // line and column are 1-based; 0 means "no position" (e.g. the file could not be read).
  ConfigError(std::string file, int line, int column, std::string key_path, std::string what);

  const std::string& file() const { return file_; }
  int line() const { return line_; }
  int column() const { return column_; }
  const std::string& key_path() const { return key_path_; }

 private:
  std::string file_;
  int line_;
  int column_;
  std::string key_path_;
};

}  // namespace tether
