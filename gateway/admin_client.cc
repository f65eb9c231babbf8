#include "gateway/admin_client.h"

#include <httplib.h>
#include <netdb.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cctype>
#include <cerrno>
#include <cstring>
#include <fcntl.h>

#include "util/host_port.h"

namespace tether {

namespace {

// After a failed HTTP connect: connects once more with a raw socket to learn why (errno), since
// httplib only reports "connection error". Bounded by `timeout`.
std::string ConnectFailureReason(const AdminAddress& a, std::chrono::milliseconds timeout) {
  addrinfo hints{};
  hints.ai_socktype = SOCK_STREAM;
  addrinfo* res = nullptr;
  int gai = getaddrinfo(a.host.c_str(), std::to_string(a.port).c_str(), &hints, &res);
  if (gai != 0) return std::string("cannot resolve host: ") + gai_strerror(gai);
  std::string reason = "connection failed";
  int fd = socket(res->ai_family, res->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC, res->ai_protocol);
  if (fd >= 0) {
    int err = 0;
    if (connect(fd, res->ai_addr, res->ai_addrlen) != 0) {
      err = errno;
      if (err == EINPROGRESS) {
        pollfd p{fd, POLLOUT, 0};
        int n = poll(&p, 1, static_cast<int>(timeout.count()));
        socklen_t len = sizeof err;
        if (n == 0) err = ETIMEDOUT;
        else if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) != 0) err = errno;
      }
    }
    if (err != 0) {
      reason = std::strerror(err);
      if (!reason.empty()) reason[0] = static_cast<char>(std::tolower(static_cast<unsigned char>(reason[0])));
    } else {
      reason = "connected, but the HTTP exchange failed";
    }
    close(fd);
  }
  freeaddrinfo(res);
  return reason;
}

std::string Describe(httplib::Error e) {
  switch (e) {
    case httplib::Error::Read: return "no response (connection closed or read timed out)";
    case httplib::Error::Write: return "could not send the request";
    case httplib::Error::ConnectionTimeout: return "connection timed out";
    default: return "HTTP client error " + httplib::to_string(e);
  }
}

}  // namespace

AdminAddress AdminAddress::Parse(const std::string& text) {
  AdminAddress a;
  std::optional<util::HostPortText> split = util::SplitHostPort(text);
  if (!split) throw std::invalid_argument("bad admin address '" + text + "'");
  a.host = split->host.empty() ? "127.0.0.1" : split->host;
  if (split->port && !split->port->empty()) {  // "host:" keeps the default port
    std::optional<uint16_t> port = util::ParsePort(*split->port);
    if (!port || *port == 0) throw std::invalid_argument("bad port in admin address '" + text + "' (want HOST:PORT)");
    a.port = *port;
  }
  return a;
}

std::string AdminAddress::ToString() const {
  return util::FormatHostPort(host, port);
}

AdminUnreachable::AdminUnreachable(const AdminAddress& addr, const std::string& reason)
    : std::runtime_error("cannot reach tetherd at " + addr.ToString() + " (" + reason + ")"), reason_(reason) {}

nlohmann::json AdminResponse::Json() const {
  nlohmann::json j = nlohmann::json::parse(body, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded()) return {{"error", body}};
  return j;
}

AdminClient::AdminClient(AdminAddress addr, std::string token, std::chrono::milliseconds timeout)
    : addr_(std::move(addr)), token_(std::move(token)), timeout_(timeout) {}

namespace {

template <class Send>
AdminResponse Exchange(const AdminAddress& addr, const std::string& token, std::chrono::milliseconds timeout,
                       Send send) {
  httplib::Client cli(addr.host, addr.port);
  if (!token.empty()) cli.set_bearer_token_auth(token);
  cli.set_connection_timeout(std::chrono::duration_cast<std::chrono::microseconds>(timeout));
  cli.set_read_timeout(std::chrono::duration_cast<std::chrono::microseconds>(timeout));
  cli.set_write_timeout(std::chrono::duration_cast<std::chrono::microseconds>(timeout));
  cli.set_url_encode(false);  // callers percent-encode path segments themselves
  httplib::Result res = send(cli);
  if (!res) {
    if (res.error() == httplib::Error::Connection) {
      throw AdminUnreachable(addr, ConnectFailureReason(addr, std::min(timeout, std::chrono::milliseconds(2000))));
    }
    throw AdminUnreachable(addr, Describe(res.error()));
  }
  return {res->status, res->body};
}

}  // namespace

AdminResponse AdminClient::Get(const std::string& path) const {
  return Exchange(addr_, token_, timeout_, [&](httplib::Client& c) { return c.Get(path.c_str()); });
}

AdminResponse AdminClient::Post(const std::string& path, const nlohmann::json& body) const {
  std::string text = body.is_null() ? "" : body.dump();
  return Exchange(addr_, token_, timeout_,
                  [&](httplib::Client& c) { return c.Post(path.c_str(), text, "application/json"); });
}

}  // namespace tether
