// DtlsServer (dtls_server.h): the entry points and the mbedTLS set-up; the state and its
// invariants are in dtls_server_impl.h.
#include "device_proto/dtls_server.h"

#include <mbedtls/platform_util.h>

#include <algorithm>
#include <stdexcept>

#include "device_proto/dtls_record.h"
#include "device_proto/dtls_server_impl.h"

namespace tether::coap {
namespace {

// Server preference order: CoAP's mandatory suite first (RFC 7252 §9.1.3.1), AEAD before CBC.
const int kCiphersuites[] = {MBEDTLS_TLS_PSK_WITH_AES_128_CCM_8, MBEDTLS_TLS_PSK_WITH_AES_128_CCM,
                             MBEDTLS_TLS_PSK_WITH_AES_128_GCM_SHA256, MBEDTLS_TLS_PSK_WITH_AES_128_CBC_SHA256, 0};
constexpr int kHandshakeTimeoutMinMs = 1000;

using State = Session::State;

}  // namespace

DtlsServer::DtlsServer(Link& link, DtlsOptions options, PskLookup psk)
    : impl_(std::make_unique<Impl>(link, options, std::move(psk))) {
  Impl& s = *impl_;
  s.opt.max_live = std::max<size_t>(s.opt.max_live, 1);
  s.opt.max_datagram = std::clamp<size_t>(s.opt.max_datagram, 256, 16384);
  mbedtls_entropy_init(&s.entropy);
  mbedtls_ctr_drbg_init(&s.drbg);
  mbedtls_ssl_config_init(&s.conf);
  mbedtls_ssl_cookie_init(&s.cookies);
  static const char kPers[] = "tether-dtls";
  auto check = [](int r, const char* what) {
    if (r != 0) throw std::runtime_error(std::string("DTLS setup: ") + what + " failed (" + std::to_string(r) + ")");
  };
  check(mbedtls_ctr_drbg_seed(&s.drbg, mbedtls_entropy_func, &s.entropy,
                              reinterpret_cast<const unsigned char*>(kPers), sizeof kPers - 1),
        "random generator");
  check(mbedtls_ssl_config_defaults(&s.conf, MBEDTLS_SSL_IS_SERVER, MBEDTLS_SSL_TRANSPORT_DATAGRAM,
                                    MBEDTLS_SSL_PRESET_DEFAULT),
        "configuration");
  mbedtls_ssl_conf_rng(&s.conf, mbedtls_ctr_drbg_random, &s.drbg);
  mbedtls_ssl_conf_min_version(&s.conf, MBEDTLS_SSL_MAJOR_VERSION_3, MBEDTLS_SSL_MINOR_VERSION_3);
  mbedtls_ssl_conf_ciphersuites(&s.conf, kCiphersuites);
  mbedtls_ssl_conf_psk_cb(&s.conf, Impl::Psk, &s);
  mbedtls_ssl_conf_dtls_anti_replay(&s.conf, MBEDTLS_SSL_ANTI_REPLAY_ENABLED);
  const uint32_t hs_max = std::max<uint32_t>(s.opt.handshake_timeout_ms / 2, kHandshakeTimeoutMinMs);
  mbedtls_ssl_conf_handshake_timeout(&s.conf, kHandshakeTimeoutMinMs, hs_max);
  check(mbedtls_ssl_cookie_setup(&s.cookies, mbedtls_ctr_drbg_random, &s.drbg), "cookies");
  mbedtls_ssl_conf_dtls_cookies(&s.conf, mbedtls_ssl_cookie_write, mbedtls_ssl_cookie_check, &s.cookies);
}

DtlsServer::~DtlsServer() {
  Impl& s = *impl_;
  for (auto& [addr, session] : s.sessions) mbedtls_platform_zeroize(session.blob.data(), session.blob.size());
  for (auto& c : s.all) mbedtls_ssl_free(&c->ssl);
  mbedtls_ssl_cookie_free(&s.cookies);
  mbedtls_ssl_config_free(&s.conf);
  mbedtls_ctr_drbg_free(&s.drbg);
  mbedtls_entropy_free(&s.entropy);
}

void DtlsServer::OnDatagram(const Address& from, std::span<const uint8_t> bytes) {
  Impl& s = *impl_;
  Session* session = s.Find(from);
  if (!session) return s.OnNewPeer(from, bytes);
  if (session->state == State::kSleeping && !s.Wake(from, *session)) {
    s.Erase(from);
    return;
  }
  session->busy = true;
  s.Touch(*session);
  session->ctx->input = bytes;
  const bool established = session->state != State::kHandshake || s.StepHandshake(from);
  if (established) s.ReadRecords(from);
  if (Session* after = s.Find(from)) {
    after->busy = false;
    if (after->ctx) after->ctx->input = {};
  }
}

bool DtlsServer::Send(const Address& to, std::span<const uint8_t> plaintext) {
  Impl& s = *impl_;
  Session* session = s.Find(to);
  if (!session || session->state == State::kHandshake || plaintext.size() > max_plaintext()) return false;
  if (session->state == State::kSleeping && !s.Wake(to, *session)) {
    s.Erase(to);
    return false;
  }
  const int r = mbedtls_ssl_write(&session->ctx->ssl, plaintext.data(), plaintext.size());
  if (r < 0) {
    if (r != MBEDTLS_ERR_SSL_WANT_WRITE && r != MBEDTLS_ERR_SSL_WANT_READ) s.Erase(to);
    return false;
  }
  ++s.stats.plaintexts_out;
  s.Touch(*session);
  return true;
}

void DtlsServer::OnTimer(uint64_t token) {
  Impl& s = *impl_;
  auto it = s.timers.find(token);
  if (it == s.timers.end()) return;
  Context* c = it->second;
  const Address peer = c->peer;
  Session* session = s.Find(peer);
  if (!session || session->ctx != c) return;
  if (session->state == State::kHandshake) {
    if (s.StepHandshake(peer)) s.ReadRecords(peer);
  } else {
    s.ReadRecords(peer);
  }
}

void DtlsServer::Housekeeping() {
  Impl& s = *impl_;
  const uint64_t now = s.link.now_ms();
  // Handshakes not done in time, and sessions that never sent a record after theirs, end.
  auto expire = [&](std::list<Address>& list, uint64_t& counter) {
    for (auto it = list.begin(); it != list.end();) {
      const Address a = *it++;
      if (now - s.sessions.at(a).since_ms < s.opt.handshake_timeout_ms) continue;
      ++counter;
      s.CloseAndErase(a);
    }
  };
  expire(s.handshakes, s.stats.handshakes_failed);
  expire(s.fresh, s.stats.sessions_evicted);
  // Idle live sessions go to sleep; those that cannot (CBC) are looked at again later.
  size_t budget = s.live.size();
  while (!s.live.empty() && budget-- > 0) {
    const Address a = s.live.back();
    Session& session = s.sessions.at(a);
    if (now - session.last_active_ms < s.opt.sleep_after_ms || session.busy) break;
    if (!s.Sleep(session)) s.live.splice(s.live.begin(), s.live, session.live);
  }
  while (!s.established.empty()) {
    const Address a = s.established.back();
    const Session& session = s.sessions.at(a);
    if (now - session.last_active_ms < s.opt.session_timeout_ms && s.established.size() <= s.opt.max_sessions)
      break;
    ++s.stats.sessions_expired;
    s.Erase(a);
  }
}

bool DtlsServer::Close(const Address& peer) {
  Impl& s = *impl_;
  Session* session = s.Find(peer);
  if (!session) return false;
  if (session->state == State::kSleeping && !s.Wake(peer, *session)) {
    s.Erase(peer);
    return true;
  }
  s.CloseAndErase(peer);
  return true;
}

size_t DtlsServer::max_plaintext() const { return impl_->opt.max_datagram - kMaxRecordExpansion; }

std::optional<std::string> DtlsServer::Identity(const Address& peer) const {
  auto it = impl_->sessions.find(peer);
  if (it == impl_->sessions.end() || it->second.state == State::kHandshake) return std::nullopt;
  return it->second.identity;
}

DtlsCounters DtlsServer::counters() const {
  DtlsCounters c = impl_->stats;
  c.live = impl_->live.size();
  c.handshaking = impl_->handshakes.size();
  c.sleeping = impl_->established.size() - impl_->live.size();
  return c;
}

}  // namespace tether::coap
