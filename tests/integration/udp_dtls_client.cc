#include "tests/integration/udp_dtls_client.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

namespace tether::testing {

UdpDtlsClient::UdpDtlsClient(const std::string& source_ip, uint16_t server_port, const std::string& identity,
                             const std::string& key, std::chrono::milliseconds read_timeout,
                             DtlsFlightTimeouts flights) {
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
  mbedtls_ssl_conf_handshake_timeout(&conf_, static_cast<uint32_t>(flights.first.count()),
                                     static_cast<uint32_t>(flights.total.count()));
  ok_ = mbedtls_ssl_setup(&ssl_, &conf_) == 0;
  mbedtls_ssl_set_bio(&ssl_, &net_, mbedtls_net_send, mbedtls_net_recv, mbedtls_net_recv_timeout);
  mbedtls_ssl_set_timer_cb(&ssl_, &timer_, mbedtls_timing_set_delay, mbedtls_timing_get_delay);
}

UdpDtlsClient::~UdpDtlsClient() {
  mbedtls_ssl_free(&ssl_);
  mbedtls_ssl_config_free(&conf_);
  mbedtls_net_free(&net_);
  mbedtls_ctr_drbg_free(&drbg_);
  mbedtls_entropy_free(&entropy_);
}

void UdpDtlsClient::SendHelloOnly() {
  for (int i = 0; ok_ && i < 4 && ssl_.state != MBEDTLS_SSL_SERVER_HELLO; ++i) mbedtls_ssl_handshake_step(&ssl_);
}

bool UdpDtlsClient::HalfOpen() {
  for (int i = 0; ok_ && i < 12; ++i) {
    if (mbedtls_ssl_handshake_step(&ssl_) != 0) return false;
    if (ssl_.state == MBEDTLS_SSL_SERVER_CERTIFICATE) return true;  // the ServerHello came
  }
  return false;
}

bool UdpDtlsClient::HandshakeOnce() { return ok_ && mbedtls_ssl_handshake(&ssl_) == 0; }

bool UdpDtlsClient::Handshake() {
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);  // mbedTLS gives up first
  while (ok_ && std::chrono::steady_clock::now() < deadline) {
    // A read that timed out makes mbedTLS resend its flight and report WANT_READ; it reports
    // MBEDTLS_ERR_SSL_TIMEOUT once its handshake timeout is spent.
    const int r = mbedtls_ssl_handshake(&ssl_);
    if (r == 0) return true;
    if (r != MBEDTLS_ERR_SSL_WANT_READ && r != MBEDTLS_ERR_SSL_WANT_WRITE) return false;
  }
  return false;
}

bool UdpDtlsClient::Write(const std::string& plaintext) {
  return ok_ && mbedtls_ssl_write(&ssl_, reinterpret_cast<const unsigned char*>(plaintext.data()), plaintext.size()) ==
                    static_cast<int>(plaintext.size());
}

std::optional<std::string> UdpDtlsClient::Read() {
  unsigned char buf[2048];
  const int r = ok_ ? mbedtls_ssl_read(&ssl_, buf, sizeof buf) : -1;
  if (r <= 0) return std::nullopt;
  return std::string(reinterpret_cast<char*>(buf), static_cast<size_t>(r));
}

}  // namespace tether::testing
