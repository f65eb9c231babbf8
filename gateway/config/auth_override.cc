#include "gateway/config/auth_override.h"

namespace tether {
namespace {

constexpr const char* kNames[] = {"device", "app", "gateway"};

// Replaces {device}/{app}/{gateway} in s; returns false (and the name) for another {name}.
bool Fill(std::string& s, const std::string* values, std::string* unknown) {
  std::string out;
  size_t i = 0;
  while (i < s.size()) {
    size_t open = s.find('{', i), close = open == std::string::npos ? open : s.find('}', open);
    if (close == std::string::npos) break;
    std::string name = s.substr(open + 1, close - open - 1);
    bool word = !name.empty() && name.find_first_not_of("abcdefghijklmnopqrstuvwxyz_") == std::string::npos;
    out.append(s, i, open - i);
    if (!word) {  // not a placeholder: literal text
      out.push_back('{');
      i = open + 1;
      continue;
    }
    int k = 0;
    while (k < 3 && name != kNames[k]) ++k;
    if (k == 3) {
      if (unknown) *unknown = name;
      return false;
    }
    out += values[k];
    i = close + 1;
  }
  out.append(s, i, std::string::npos);
  s = std::move(out);
  return true;
}

bool FillAll(nlohmann::json& v, const std::string* values, std::string* unknown) {
  if (v.is_string()) {
    std::string s = v.get<std::string>();
    if (!Fill(s, values, unknown)) return false;
    v = std::move(s);
  } else if (v.is_structured()) {
    for (auto& child : v) {
      if (!FillAll(child, values, unknown)) return false;
    }
  }
  return true;
}

}  // namespace

std::optional<AuthOverride> AuthOverride::Parse(const std::string& json_text, std::string* error) {
  auto v = nlohmann::json::parse(json_text, nullptr, false);
  if (v.is_discarded() || !v.is_object()) {
    if (error) *error = "must be true, false or a JSON object (e.g. {\"uid\":\"{device}\"})";
    return std::nullopt;
  }
  nlohmann::json probe = v;
  const std::string values[3] = {"d", "a", "g"};
  std::string unknown;
  if (!FillAll(probe, values, &unknown)) {
    if (error) *error = "unknown placeholder {" + unknown + "} (known: {device}, {app}, {gateway})";
    return std::nullopt;
  }
  AuthOverride a;
  a.template_ = std::move(v);
  return a;
}

std::string AuthOverride::Render(const std::string& device, const std::string& app, const std::string& gateway) const {
  if (device.empty()) return "null";
  nlohmann::json v = template_;
  const std::string values[3] = {device, app, gateway};
  FillAll(v, values, nullptr);  // Parse checked every placeholder
  return v.dump();
}

}  // namespace tether
