#include "gateway/config/yaml_schema.h"

#include <fmt/format.h>

#include <cctype>
#include <charconv>

namespace tether {

YamlField::YamlField(std::string file, YAML::Node node, std::string key_path)
    : file_(std::move(file)), node_(std::move(node)), key_path_(std::move(key_path)) {}

int YamlField::line() const {
  YAML::Mark m = node_ ? node_.Mark() : YAML::Mark::null_mark();
  return m.is_null() ? 0 : m.line + 1;
}

int YamlField::column() const {
  YAML::Mark m = node_ ? node_.Mark() : YAML::Mark::null_mark();
  return m.is_null() ? 0 : m.column + 1;
}

void YamlField::Fail(const std::string& what) const { throw ConfigError(file_, line(), column(), key_path_, what); }

void YamlField::RequireMap() const {
  if (!node_.IsMap()) Fail("expected a mapping");
}

std::optional<YamlField> YamlField::Optional(const std::string& key) {
  RequireMap();
  read_keys_.insert(key);
  if (!index_) {
    auto index = std::make_shared<KeyIndex>();
    index->reserve(node_.size());
    for (auto it = node_.begin(); it != node_.end(); ++it) index->emplace(it->first.Scalar(), it->second);
    index_ = std::move(index);
  }
  auto found = index_->find(key);
  if (found == index_->end() || found->second.IsNull()) return std::nullopt;
  return YamlField(file_, found->second, key_path_.empty() ? key : key_path_ + "." + key);
}

YamlField YamlField::Required(const std::string& key) {
  auto f = Optional(key);
  if (!f) {
    std::string path = key_path_.empty() ? key : key_path_ + "." + key;
    YamlField(file_, node_, path).Fail("required key is missing");
  }
  return *f;
}

void YamlField::Finish() const {
  if (IsNull()) return;
  RequireMap();
  std::unordered_set<std::string> seen;
  seen.reserve(node_.size());
  for (auto it = node_.begin(); it != node_.end(); ++it) {
    const std::string key = it->first.Scalar();
    std::string path = key_path_.empty() ? key : key_path_ + "." + key;
    YamlField at(file_, it->first, path);
    if (!seen.insert(key).second) at.Fail("duplicate key");
    if (!read_keys_.count(key)) at.Fail("unknown key");
  }
}

std::vector<YamlField> YamlField::Items() const {
  if (!node_.IsSequence()) Fail("expected a list");
  std::vector<YamlField> out;
  for (size_t i = 0; i < node_.size(); ++i) {
    out.emplace_back(file_, node_[i], fmt::format("{}[{}]", key_path_, i));
  }
  return out;
}

std::string YamlField::Scalar(const char* expected) const {
  if (!node_.IsScalar()) Fail(fmt::format("expected {}", expected));
  return node_.Scalar();
}

std::string YamlField::AsString() const { return Scalar("a string"); }

bool YamlField::AsBool() const {
  std::string s = Scalar("true or false");
  if (s == "true" || s == "yes" || s == "on") return true;
  if (s == "false" || s == "no" || s == "off") return false;
  Fail(fmt::format("expected true or false, got '{}'", s));
}

namespace {
bool ParseInt(const std::string& s, int64_t* out) {
  if (s.empty()) return false;
  auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), *out);
  return ec == std::errc() && p == s.data() + s.size();
}

// Splits "123unit" into number and unit; false when there is no leading integer.
bool SplitNumberUnit(const std::string& s, int64_t* n, std::string* unit) {
  size_t i = 0;
  while (i < s.size() && std::isdigit(static_cast<unsigned char>(s[i]))) ++i;
  if (i == 0 || !ParseInt(s.substr(0, i), n)) return false;
  *unit = s.substr(i);
  while (!unit->empty() && unit->front() == ' ') unit->erase(0, 1);
  return true;
}
}  // namespace

int64_t YamlField::AsInt(int64_t min, int64_t max) const {
  std::string s = Scalar("an integer");
  int64_t v;
  if (!ParseInt(s, &v)) Fail(fmt::format("expected an integer, got '{}'", s));
  if (v < min || v > max) Fail(fmt::format("{} is out of range [{}, {}]", v, min, max));
  return v;
}

std::chrono::milliseconds YamlField::AsDuration(std::chrono::milliseconds min,
                                                std::chrono::milliseconds max) const {
  std::string s = Scalar("a duration");
  int64_t n;
  std::string unit;
  if (!SplitNumberUnit(s, &n, &unit)) Fail(fmt::format("expected a duration like 20s or 500ms, got '{}'", s));
  int64_t mult;
  if (unit == "ms") mult = 1;
  else if (unit.empty() || unit == "s") mult = 1000;
  else if (unit == "m") mult = 60'000;
  else if (unit == "h") mult = 3'600'000;
  else if (unit == "d") mult = 86'400'000;
  else Fail(fmt::format("unknown duration unit '{}' (use ms, s, m, h or d)", unit));
  if (n > INT64_MAX / mult) Fail("duration is too large");
  std::chrono::milliseconds v(n * mult);
  if (v < min || v > max) {
    Fail(fmt::format("{} is out of range [{}ms, {}ms]", s, min.count(), max.count()));
  }
  return v;
}

uint64_t YamlField::AsBytes(uint64_t min, uint64_t max) const {
  std::string s = Scalar("a size");
  int64_t n;
  std::string unit;
  if (!SplitNumberUnit(s, &n, &unit)) Fail(fmt::format("expected a size like 10MB or 64KiB, got '{}'", s));
  uint64_t mult;
  if (unit.empty() || unit == "B") mult = 1;
  else if (unit == "KB") mult = 1000;
  else if (unit == "MB") mult = 1000'000;
  else if (unit == "GB") mult = 1000'000'000;
  else if (unit == "KiB") mult = 1ull << 10;
  else if (unit == "MiB") mult = 1ull << 20;
  else if (unit == "GiB") mult = 1ull << 30;
  else Fail(fmt::format("unknown size unit '{}' (use B, KB, MB, GB, KiB, MiB or GiB)", unit));
  if (static_cast<uint64_t>(n) > UINT64_MAX / mult) Fail("size is too large");
  uint64_t v = static_cast<uint64_t>(n) * mult;
  if (v < min || v > max) Fail(fmt::format("{} is out of range [{}, {}] bytes", s, min, max));
  return v;
}

std::string YamlField::AsEnum(const std::vector<std::string>& allowed) const {
  std::string s = Scalar("a string");
  for (const auto& a : allowed) {
    if (s == a) return s;
  }
  Fail(fmt::format("'{}' is not one of: {}", s, fmt::join(allowed, ", ")));
}

}  // namespace tether
