// AdminClient: tetherctl's side of the admin HTTP API (see gateway/admin_server.h).
//
// Every call either returns the server's response (any status) or throws AdminUnreachable when
// no HTTP exchange happened; its what() names the address and the reason. With a token, every
// request carries "Authorization: Bearer <token>" (the admin token, gateway/admin_token.h).
#pragma once

#include <chrono>
#include <cstdint>
#include <stdexcept>
#include <string>
#include <string_view>

#include <nlohmann/json.hpp>

namespace tether {

struct AdminAddress {
  std::string host = "127.0.0.1";
  uint16_t port = 8790;
  // "HOST:PORT", "[v6]:PORT" or "HOST" (port 8790); throws std::invalid_argument.
  static AdminAddress Parse(const std::string& text);
  std::string ToString() const;
};

class AdminUnreachable : public std::runtime_error {
 public:
  // what(): "cannot reach tetherd at <addr> (<reason>)"
  AdminUnreachable(const AdminAddress& addr, const std::string& reason);
  const std::string& reason() const { return reason_; }

 private:
  std::string reason_;
};

struct AdminResponse {
  int status = 0;
  std::string body;
  bool ok() const { return status >= 200 && status < 300; }
  nlohmann::json Json() const;  // parsed body; a non-JSON body becomes {"error": body}
};

class AdminClient {
 public:
  explicit AdminClient(AdminAddress addr, std::string token = {},
                       std::chrono::milliseconds timeout = std::chrono::seconds(10));
  AdminResponse Get(const std::string& path) const;
  AdminResponse Post(const std::string& path, const nlohmann::json& body) const;
  const AdminAddress& address() const { return addr_; }

 private:
  AdminAddress addr_;
  std::string token_;
  std::chrono::milliseconds timeout_;
};


}  // namespace tether
