#include "tests/device_proto/dtls_test_client.h"

#include <arpa/inet.h>

#include <algorithm>
#include <cstring>
#include <stdexcept>

namespace tether::coap::testing {

Address TestAddress(uint8_t host, uint16_t port) {
  Address a;
  a.family = AF_INET;
  a.ip[0] = 10;
  a.ip[3] = host;
  a.port = port;
  a.secure = 1;
  return a;
}

// ---- client ----

DtlsClient::DtlsClient(DtlsRig& rig, Address addr, std::string identity, std::string key, int suite)
    : rig_(rig), addr_(addr), identity_(std::move(identity)), key_(std::move(key)), suites_{suite, 0} {
  mbedtls_ssl_config_init(&conf_);
  mbedtls_ssl_init(&ssl_);
  if (mbedtls_ssl_config_defaults(&conf_, MBEDTLS_SSL_IS_CLIENT, MBEDTLS_SSL_TRANSPORT_DATAGRAM,
                                  MBEDTLS_SSL_PRESET_DEFAULT) != 0)
    throw std::runtime_error("client config");
  mbedtls_ssl_conf_rng(&conf_, mbedtls_ctr_drbg_random, rig.drbg());
  mbedtls_ssl_conf_psk(&conf_, reinterpret_cast<const unsigned char*>(key_.data()), key_.size(),
                       reinterpret_cast<const unsigned char*>(identity_.data()), identity_.size());
  if (suite) mbedtls_ssl_conf_ciphersuites(&conf_, suites_);
  mbedtls_ssl_conf_handshake_timeout(&conf_, 1000, 8000);
  if (mbedtls_ssl_setup(&ssl_, &conf_) != 0) throw std::runtime_error("client setup");
  mbedtls_ssl_set_bio(&ssl_, this, Send, Recv, nullptr);
  mbedtls_ssl_set_timer_cb(&ssl_, this, SetTimer, GetTimer);
  rig.Attach(this);
}

DtlsClient::~DtlsClient() {
  rig_.Detach(this);
  mbedtls_ssl_free(&ssl_);
  mbedtls_ssl_config_free(&conf_);
}

int DtlsClient::Send(void* p, const unsigned char* buf, size_t len) {
  auto* c = static_cast<DtlsClient*>(p);
  c->sent_.emplace_back(reinterpret_cast<const char*>(buf), len);
  c->outbox_.emplace_back(reinterpret_cast<const char*>(buf), len);
  return static_cast<int>(len);
}

void DtlsClient::Flush() {
  while (!outbox_.empty()) {
    const std::string d = std::move(outbox_.front());
    outbox_.pop_front();
    rig_.server().OnDatagram(addr_, {reinterpret_cast<const uint8_t*>(d.data()), d.size()});
  }
}

int DtlsClient::CloseNotify() {
  const int r = mbedtls_ssl_close_notify(&ssl_);
  Flush();
  return r;
}

int DtlsClient::Recv(void* p, unsigned char* buf, size_t len) {
  auto* c = static_cast<DtlsClient*>(p);
  if (c->inbox_.empty()) return MBEDTLS_ERR_SSL_WANT_READ;
  std::string d = std::move(c->inbox_.front());
  c->inbox_.pop_front();
  const size_t n = std::min(len, d.size());
  std::memcpy(buf, d.data(), n);
  return static_cast<int>(n);
}

void DtlsClient::SetTimer(void* p, uint32_t int_ms, uint32_t fin_ms) {
  auto* c = static_cast<DtlsClient*>(p);
  c->fin_at_ = fin_ms ? c->rig_.now() + fin_ms : 0;
  c->int_at_ = c->rig_.now() + int_ms;
}

int DtlsClient::GetTimer(void* p) {
  auto* c = static_cast<DtlsClient*>(p);
  if (c->fin_at_ == 0) return -1;
  const uint64_t now = c->rig_.now();
  return now >= c->fin_at_ ? 2 : now >= c->int_at_ ? 1 : 0;
}

int DtlsClient::Step() {
  const int r = mbedtls_ssl_handshake(&ssl_);
  Flush();
  return r;
}

int DtlsClient::Handshake() {
  for (int i = 0; i < 64; ++i) {
    const int r = Step();
    if (r == 0) return 0;
    if (r != MBEDTLS_ERR_SSL_WANT_READ && r != MBEDTLS_ERR_SSL_WANT_WRITE) return r;
    if (inbox_.empty()) return r;
  }
  return MBEDTLS_ERR_SSL_TIMEOUT;
}

bool DtlsClient::Write(const std::string& plaintext) {
  const int r = mbedtls_ssl_write(&ssl_, reinterpret_cast<const unsigned char*>(plaintext.data()), plaintext.size());
  Flush();
  return r == static_cast<int>(plaintext.size());
}

std::string DtlsClient::Read() {
  unsigned char buf[4096];
  while (!inbox_.empty()) {
    const int r = mbedtls_ssl_read(&ssl_, buf, sizeof buf);
    Flush();
    if (r > 0) return std::string(reinterpret_cast<char*>(buf), static_cast<size_t>(r));
    if (r != MBEDTLS_ERR_SSL_WANT_READ) return "<error " + std::to_string(r) + ">";
  }
  return {};
}

int DtlsClient::suite() const {
  const char* name = mbedtls_ssl_get_ciphersuite(&ssl_);
  return name ? mbedtls_ssl_get_ciphersuite_id(name) : 0;
}

// ---- rig ----

DtlsRig::DtlsRig(DtlsOptions options, std::map<std::string, std::string> keys) : keys_(std::move(keys)) {
  mbedtls_entropy_init(&entropy_);
  mbedtls_ctr_drbg_init(&drbg_);
  static const char kPers[] = "dtls-test";
  if (mbedtls_ctr_drbg_seed(&drbg_, mbedtls_entropy_func, &entropy_, reinterpret_cast<const unsigned char*>(kPers),
                            sizeof kPers - 1) != 0)
    throw std::runtime_error("drbg");
  server_ = std::make_unique<DtlsServer>(*this, options, [this](std::string_view id) -> std::optional<std::string> {
    auto it = keys_.find(std::string(id));
    if (it == keys_.end()) return std::nullopt;
    return it->second;
  });
}

DtlsRig::~DtlsRig() {
  server_.reset();
  mbedtls_ctr_drbg_free(&drbg_);
  mbedtls_entropy_free(&entropy_);
}

void DtlsRig::Detach(DtlsClient* c) {
  auto it = clients_.find(c->addr());
  if (it != clients_.end() && it->second == c) clients_.erase(it);
}

void DtlsRig::Advance(uint64_t ms) {
  now_ += ms;
  while (!timers_.empty() && timers_.begin()->first <= now_) {
    const uint64_t token = timers_.begin()->second;
    timers_.erase(timers_.begin());
    server_->OnTimer(token);
  }
}

void DtlsRig::SendDatagram(const Address& to, std::span<const uint8_t> ciphertext) {
  sizes.emplace_back(to, ciphertext.size());
  auto it = clients_.find(to);
  if (it == clients_.end()) return;
  if (it->second->drop_next_incoming) {
    it->second->drop_next_incoming = false;
    return;
  }
  it->second->inbox_.emplace_back(reinterpret_cast<const char*>(ciphertext.data()), ciphertext.size());
}

void DtlsRig::OnPlaintext(const Address& from, std::string_view identity, std::span<const uint8_t> bytes) {
  received.push_back({from, std::string(identity), std::string(reinterpret_cast<const char*>(bytes.data()), bytes.size())});
}

}  // namespace tether::coap::testing
