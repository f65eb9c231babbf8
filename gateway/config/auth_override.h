// AuthOverride: the template of upstream.auth_variable_override. A JSON object whose string
// values may hold {device}, {app} and {gateway}; each queued write is uploaded with the template
// filled in for the device that made it, and the cloud's security rules see the result as `auth`.
// A write without a device id is sent as auth_variable_override=null (an unauthenticated client),
// never with the gateway's own privileges.
#pragma once

#include <nlohmann/json.hpp>

#include <optional>
#include <string>

namespace tether {

class AuthOverride {
 public:
  // What `auth_variable_override: true` means.
  static constexpr const char* kDefault = R"({"uid":"{device}","app":"{app}","gateway":"{gateway}"})";
  // nullopt and *error when the text is not a JSON object or names an unknown {placeholder}.
  static std::optional<AuthOverride> Parse(const std::string& json_text, std::string* error);

  // Compact JSON text to send; "null" when device is empty.
  std::string Render(const std::string& device, const std::string& app, const std::string& gateway) const;

 private:
  nlohmann::json template_;
};

}  // namespace tether
