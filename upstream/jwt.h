// RS256 JSON Web Tokens for the OAuth2 service-account flow (RFC 7519 / 7515), signed with mbedTLS.
#pragma once
#include <optional>
#include <string>
#include <string_view>

#include <nlohmann/json.hpp>

namespace tether::upstream {

// `header.claims.signature`, header {"alg":"RS256","typ":"JWT"}; nullopt when the PEM private
// key cannot be parsed or signing fails. `error` (optional) gets a reason, never key material.
std::optional<std::string> SignJwtRs256(const nlohmann::json& claims, std::string_view private_key_pem,
                                        std::string* error = nullptr);

}  // namespace tether::upstream
