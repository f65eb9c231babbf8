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

AttackGateway::~AttackGateway() {
  if (::testing::Test::HasFailure()) {
    const std::string log = gw_.Log();
    std::fprintf(stderr, "---- tetherd log (tail) ----\n%s\n", log.substr(log.size() > 6000 ? log.size() - 6000 : 0).c_str());
  }
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

// ---- SourcedDtlsClient ----

SourcedDtlsClient::SourcedDtlsClient(const std::string& source_ip, uint16_t server_port, const std::string& identity,
                                     const std::string& key, std::chrono::milliseconds read_timeout) {
  mbedtls_net_init(&net_);
  mbedtls_ssl_init(&ssl_);
  mbedtls_ssl_config_init(&conf_);
  mbedtls_ctr_drbg_init(&drbg_);
  mbedtls_entropy_init(&entropy_);
  const int fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  sockaddr_in src{}, dst{};
  src.sin_family = dst.sin_family = AF_INET;
  inet_pton(AF_INET, source_ip.c_str(), &src.sin_addr);
  dst.sin_port = htons(server_port);
  dst.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (fd < 0 || bind(fd, reinterpret_cast<sockaddr*>(&src), sizeof src) != 0 ||
      connect(fd, reinterpret_cast<sockaddr*>(&dst), sizeof dst) != 0) {
    if (fd >= 0) close(fd);
    return;
  }
  net_.fd = fd;
  ok_ = mbedtls_ctr_drbg_seed(&drbg_, mbedtls_entropy_func, &entropy_, nullptr, 0) == 0 &&
        mbedtls_ssl_config_defaults(&conf_, MBEDTLS_SSL_IS_CLIENT, MBEDTLS_SSL_TRANSPORT_DATAGRAM,
                                    MBEDTLS_SSL_PRESET_DEFAULT) == 0;
  if (!ok_) return;
  mbedtls_ssl_conf_rng(&conf_, mbedtls_ctr_drbg_random, &drbg_);
  mbedtls_ssl_conf_psk(&conf_, reinterpret_cast<const unsigned char*>(key.data()), key.size(),
                       reinterpret_cast<const unsigned char*>(identity.data()), identity.size());
  mbedtls_ssl_conf_read_timeout(&conf_, static_cast<uint32_t>(read_timeout.count()));
  mbedtls_ssl_conf_handshake_timeout(&conf_, 500, 2000);  // flights at 0, 0.5, 1.5 s; gives up at ~3.5 s
  ok_ = mbedtls_ssl_setup(&ssl_, &conf_) == 0;
  mbedtls_ssl_set_bio(&ssl_, &net_, mbedtls_net_send, mbedtls_net_recv, mbedtls_net_recv_timeout);
  mbedtls_ssl_set_timer_cb(&ssl_, &timer_, mbedtls_timing_set_delay, mbedtls_timing_get_delay);
}

SourcedDtlsClient::~SourcedDtlsClient() {
  mbedtls_ssl_free(&ssl_);
  mbedtls_ssl_config_free(&conf_);
  mbedtls_net_free(&net_);
  mbedtls_ctr_drbg_free(&drbg_);
  mbedtls_entropy_free(&entropy_);
}

bool SourcedDtlsClient::HalfOpen() {
  for (int i = 0; ok_ && i < 12; ++i) {
    if (mbedtls_ssl_handshake_step(&ssl_) != 0) return false;
    if (ssl_.state == MBEDTLS_SSL_SERVER_CERTIFICATE) return true;  // the ServerHello came
  }
  return false;
}

bool SourcedDtlsClient::Handshake() {
  const auto deadline = std::chrono::steady_clock::now() + 10s;  // mbedTLS gives up well before
  while (ok_ && std::chrono::steady_clock::now() < deadline) {
    // A read that timed out makes mbedTLS resend its flight and report WANT_READ; it reports
    // MBEDTLS_ERR_SSL_TIMEOUT once its handshake timeout is spent.
    const int r = mbedtls_ssl_handshake(&ssl_);
    if (r == 0) return true;
    if (r != MBEDTLS_ERR_SSL_WANT_READ && r != MBEDTLS_ERR_SSL_WANT_WRITE) return false;
  }
  return false;
}

bool SourcedDtlsClient::Write(const std::string& plaintext) {
  return ok_ && mbedtls_ssl_write(&ssl_, reinterpret_cast<const unsigned char*>(plaintext.data()), plaintext.size()) ==
                    static_cast<int>(plaintext.size());
}

std::optional<std::string> SourcedDtlsClient::Read() {
  unsigned char buf[2048];
  const int r = ok_ ? mbedtls_ssl_read(&ssl_, buf, sizeof buf) : -1;
  if (r <= 0) return std::nullopt;
  return std::string(reinterpret_cast<char*>(buf), static_cast<size_t>(r));
}

// ---- CoAP ----

std::string CoapRequest(uint8_t method, uint16_t mid, const std::string& token, const std::vector<std::string>& path,
                        const std::vector<std::string>& queries, const std::string& payload) {
  uint8_t buf[1280];
  coap::Writer w(buf);
  w.header(coap::Type::kCon, method, mid,
           {reinterpret_cast<const uint8_t*>(token.data()), std::min<size_t>(token.size(), 8)});
  for (const std::string& seg : path) w.option(coap::opt::kUriPath, seg);
  for (const std::string& q : queries) w.option(coap::opt::kUriQuery, q);
  w.payload({reinterpret_cast<const uint8_t*>(payload.data()), payload.size()});
  return std::string(reinterpret_cast<char*>(buf), w.size());
}

}  // namespace tether::testing
