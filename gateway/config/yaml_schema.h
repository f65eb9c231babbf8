// YamlField: strict, position-aware reading of one YAML node against a schema.
//
// Every map read through YamlField must name each key it accepts (Get/Optional); Finish() then
// rejects any key nobody asked for, so typos are errors, never silently ignored. All errors are
// ConfigError with the file, the node's 1-based line:column and the dotted key path.
// Cost: a map's keys are indexed at its first Optional/Required, so reading all n keys of a map
// (gateway.variables, a DTLS keys file) is O(n), not O(n^2).
#pragma once

#include <yaml-cpp/yaml.h>

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <unordered_map>
#include <unordered_set>
#include <vector>

#include "gateway/config/config_error.h"

namespace tether {

class YamlField {
 public:
  YamlField(std::string file, YAML::Node node, std::string key_path);

  bool IsNull() const { return !node_ || node_.IsNull(); }
  bool IsMap() const { return node_.IsMap(); }
  bool IsSequence() const { return node_.IsSequence(); }
  const std::string& key_path() const { return key_path_; }
  int line() const;    // 1-based; 0 when unknown
  int column() const;

  // Map access. Optional() returns nullopt for an absent or null key.
  std::optional<YamlField> Optional(const std::string& key);
  YamlField Required(const std::string& key);
  // Rejects keys not read through Optional/Required. Call once per map.
  void Finish() const;

  std::vector<YamlField> Items() const;  // sequence elements, key path "parent[i]"

  std::string AsString() const;
  bool AsBool() const;
  int64_t AsInt(int64_t min, int64_t max) const;
  // "250ms", "20s", "5m", "1h", "2d" or a bare integer of seconds.
  std::chrono::milliseconds AsDuration(std::chrono::milliseconds min, std::chrono::milliseconds max) const;
  // "512", "64KiB", "10MB", "1GiB" (KB/MB/GB are powers of 1000, KiB/MiB/GiB of 1024).
  uint64_t AsBytes(uint64_t min, uint64_t max) const;
  std::string AsEnum(const std::vector<std::string>& allowed) const;

  [[noreturn]] void Fail(const std::string& what) const;

 private:
  void RequireMap() const;
  std::string Scalar(const char* expected) const;

  using KeyIndex = std::unordered_map<std::string, YAML::Node>;  // key -> value (first if duplicated)

  std::string file_;
  YAML::Node node_;
  std::string key_path_;
  std::unordered_set<std::string> read_keys_;
  std::shared_ptr<const KeyIndex> index_;  // built by the first Optional(); shared by copies
};

}  // namespace tether
