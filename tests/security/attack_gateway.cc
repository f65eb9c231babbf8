#include "tests/security/attack_gateway.h"

#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstdio>
#include <fstream>
#include <stdexcept>

#include "device_proto/message.h"

namespace tether::testing {

using namespace std::chrono_literals;

void AttackGateway::Start(const std::string& device_keys, const std::string& extra, bool dtls,
                          const std::string& keys, const std::string& app_auth) {
  port_ = static_cast<uint16_t>(FreePort());
  admin_port_ = static_cast<uint16_t>(FreePort(false));
  std::string config = "device:\n  listen: \"127.0.0.1:" + std::to_string(port_) + "\"\n" + device_keys +
                       "admin:\n  listen: \"127.0.0.1:" + std::to_string(admin_port_) + "\"\n" +
                       "store:\n  path: ${STORE}\nlog:\n  level: info\n"
                       "apps:\n  - id: myapp\n    default: true\n" +
                       (app_auth.empty() ? std::string() : "    auth: " + app_auth + "\n") +
                       "routes:\n  - { name: all, match: \"**\" }\n";
  if (dtls) {
    dtls_port_ = static_cast<uint16_t>(FreePort());
    std::ofstream(gw_.dir() + "/keys.yaml") << keys;
    config += "dtls:\n  listen: \"127.0.0.1:" + std::to_string(dtls_port_) + "\"\n  keys_file: " + gw_.dir() +
              "/keys.yaml\n";
  }
  gw_.WriteConfig(config + extra);
  gw_.Start();
  ASSERT_TRUE(gw_.WaitForLog(dtls ? "listening for CoAP over DTLS" : "listening for CoAP", 10s)) << gw_.Log();
}

double AttackGateway::Metric(const std::string& series) const {
  ShellResult m = Shell("curl -sf --max-time 5 http://127.0.0.1:" + std::to_string(admin_port_) + "/metrics");
  for (size_t at = 0; (at = m.out.find(series + " ", at)) != std::string::npos; at += series.size()) {
    if (at == 0 || m.out[at - 1] == '\n') return std::stod(m.out.substr(at + series.size() + 1));
  }
  return -1;
}

// ---- Sink ----

Sink::Sink(const std::string& ip, uint16_t port) {
  fd_ = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(port);
  inet_pton(AF_INET, ip.c_str(), &a.sin_addr);
  int big = 4 << 20;
  setsockopt(fd_, SOL_SOCKET, SO_RCVBUFFORCE, &big, sizeof big);
  if (bind(fd_, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) throw std::runtime_error("sink: bind " + ip);
  socklen_t len = sizeof a;
  getsockname(fd_, reinterpret_cast<sockaddr*>(&a), &len);
  port_ = ntohs(a.sin_port);
}

Sink::~Sink() {
  if (fd_ >= 0) close(fd_);
}

std::vector<std::string> Sink::Drain(std::chrono::milliseconds wait) {
  std::vector<std::string> out;
  const auto deadline = std::chrono::steady_clock::now() + wait;
  for (;;) {
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
    pollfd p{fd_, POLLIN, 0};
    if (poll(&p, 1, static_cast<int>(std::max<int64_t>(0, left.count()))) <= 0) return out;
    char buf[2048];
    const ssize_t n = recv(fd_, buf, sizeof buf, 0);
    if (n > 0) out.emplace_back(buf, static_cast<size_t>(n));
  }
}

// ---- CoAP ----

std::string CoapRequest(uint8_t method, uint16_t mid, const std::string& token, const std::vector<std::string>& path,
                        const std::vector<std::string>& queries, const std::string& payload) {
  uint8_t buf[1280];
  coap::Writer w(buf);
  w.Header(coap::Type::kCon, method, mid,
           {reinterpret_cast<const uint8_t*>(token.data()), std::min<size_t>(token.size(), 8)});
  for (const std::string& seg : path) w.Option(coap::opt::kUriPath, seg);
  for (const std::string& q : queries) w.Option(coap::opt::kUriQuery, q);
  w.Payload({reinterpret_cast<const uint8_t*>(payload.data()), payload.size()});
  return std::string(reinterpret_cast<char*>(buf), w.size());
}

}  // namespace tether::testing
