// DtlsServer's mbedTLS side (dtls_server_impl.h): the callbacks mbedTLS calls for a peer, new
// peers answered by the shared verifier until they return a valid cookie, the fair share of
// handshake places between source IPs, handshakes and the records of established sessions.
#include <mbedtls/platform_util.h>

#include <algorithm>

#include "device_proto/dtls_record.h"
#include "device_proto/dtls_server_impl.h"

namespace tether::coap {
namespace {

// The key handshake places are shared by: the source IP.
Address SourceIp(Address a) {
  a.port = 0;
  return a;
}

}  // namespace

int DtlsServer::Impl::Send(void* p, const unsigned char* buf, size_t len) {
  auto* c = static_cast<Context*>(p);
  c->server->link.SendDatagram(c->peer, {buf, len});
  return static_cast<int>(len);
}

int DtlsServer::Impl::Recv(void* p, unsigned char* buf, size_t len) {
  auto* c = static_cast<Context*>(p);
  if (c->input.empty()) return MBEDTLS_ERR_SSL_WANT_READ;
  const size_t n = std::min(len, c->input.size());  // a longer datagram is truncated: its records fail
  std::copy_n(c->input.begin(), n, buf);
  c->input = {};
  return static_cast<int>(n);
}

void DtlsServer::Impl::SetTimer(void* p, uint32_t int_ms, uint32_t fin_ms) {
  auto* c = static_cast<Context*>(p);
  Impl& s = *c->server;
  if (c->timer_token) s.timers.erase(c->timer_token);
  c->timer_token = 0;
  c->fin_at = 0;
  if (fin_ms == 0) return;
  const uint64_t now = s.link.now_ms();
  c->int_at = now + int_ms;
  c->fin_at = now + fin_ms;
  c->timer_token = ++s.next_token;
  s.timers[c->timer_token] = c;
  s.link.Schedule(c->fin_at, c->timer_token);
}

int DtlsServer::Impl::GetTimer(void* p) {
  auto* c = static_cast<Context*>(p);
  if (c->fin_at == 0) return -1;
  const uint64_t now = c->server->link.now_ms();
  return now >= c->fin_at ? 2 : now >= c->int_at ? 1 : 0;
}

int DtlsServer::Impl::Psk(void* p, mbedtls_ssl_context* ssl, const unsigned char* id, size_t len) {
  auto* s = static_cast<Impl*>(p);
  if (!s->current || !s->psk) return -1;
  const std::string_view identity(reinterpret_cast<const char*>(id), len);
  std::optional<std::string> key = s->psk(identity);
  if (!key || key->empty()) return -1;
  const int r = mbedtls_ssl_set_hs_psk(ssl, reinterpret_cast<const unsigned char*>(key->data()), key->size());
  mbedtls_platform_zeroize(key->data(), key->size());
  if (r != 0) return r;
  s->current->identity.assign(identity);
  return 0;
}

bool DtlsServer::Impl::StepHandshake(const Address& a) {
  Session* s = Find(a);
  Context* c = s->ctx;
  current = c;
  int r = mbedtls_ssl_handshake(&c->ssl);
  // An expired timer is reported before the datagram is read: resend, then read it.
  for (int i = 0; i < 2 && r == MBEDTLS_ERR_SSL_WANT_READ && !c->input.empty(); ++i)
    r = mbedtls_ssl_handshake(&c->ssl);
  current = nullptr;
  if (r == 0) {
    Established(a, *s);
    return true;
  }
  if (r == MBEDTLS_ERR_SSL_WANT_READ || r == MBEDTLS_ERR_SSL_WANT_WRITE) return false;
  ++stats.handshakes_failed;  // bad key, unknown identity, timeout, protocol error
  Erase(a);
  return false;
}

void DtlsServer::Impl::ReadRecords(const Address& a) {
  for (;;) {
    Session* s = Find(a);
    if (!s || s->state != State::kLive) return;
    Context* c = s->ctx;
    current = c;
    int r = mbedtls_ssl_read(&c->ssl, plain.data(), plain.size());
    current = nullptr;
    if (r > 0) {
      ++stats.plaintexts_in;
      if (s->fresh) {  // mbedTLS has let go of the handshake: the session counts as live now
        s->fresh = false;
        fresh.erase(s->fresh_at);
        ShrinkLive(opt.max_live);
      }
      const std::string identity = s->identity;  // the session may change during the upcall
      link.OnPlaintext(a, identity, {plain.data(), static_cast<size_t>(r)});
      continue;
    }
    if (r == MBEDTLS_ERR_SSL_WANT_READ || r == MBEDTLS_ERR_SSL_WANT_WRITE) {
      if (!c->input.empty()) continue;  // a timer check came first; the datagram is still unread
      return;
    }
    if (r == MBEDTLS_ERR_SSL_CLIENT_RECONNECT) {
      // A fresh ClientHello with a valid cookie from the same address: a new connection on this
      // context (reset by mbedTLS, the hello kept); its identity is checked anew.
      established.erase(s->order);
      live.erase(s->live);
      if (s->fresh) fresh.erase(s->fresh_at);
      s->fresh = false;
      s->since_ms = link.now_ms();
      s->state = State::kHandshake;
      s->identity.clear();
      c->identity.clear();
      handshakes.push_front(a);
      s->order = handshakes.begin();
      StepHandshake(a);
      return;
    }
    if (r == MBEDTLS_ERR_SSL_PEER_CLOSE_NOTIFY) {
      ++stats.close_notify_in;
      CloseAndErase(a);
      return;
    }
    Erase(a);  // fatal alert or protocol error: the connection is over
    return;
  }
}

void DtlsServer::Impl::OnNewPeer(const Address& from, std::span<const uint8_t> bytes) {
  if (!LooksLikeClientHello(bytes)) {
    ++stats.records_dropped;
    return;
  }
  if (!RateOk(from)) {
    ++stats.hellos_rate_limited;
    return;
  }
  // All places taken: only a hello that may carry a cookie needs one, and it gets one only if
  // a busier source can give one up.
  std::optional<Address> victim;
  if (handshakes.size() + fresh.size() >= opt.max_handshakes && MayCarryCookie(bytes)) {
    victim = FairShareVictim(from);
    if (!victim) {
      ++stats.hellos_over_cap;
      return;
    }
  }
  if (!verifier && !(verifier = Acquire())) {
    ++stats.hellos_over_cap;
    return;
  }
  Context* v = verifier;
  v->peer = from;
  SetTransportId(v);
  v->input = bytes;
  current = v;
  const int r = mbedtls_ssl_handshake(&v->ssl);
  current = nullptr;
  if (r == MBEDTLS_ERR_SSL_WANT_READ || r == MBEDTLS_ERR_SSL_WANT_WRITE) {
    // The cookie was valid and the server's flight is out: the context now belongs to the peer.
    verifier = nullptr;
    Session& s = sessions[from];
    s.ctx = v;
    s.state = State::kHandshake;
    s.last_active_ms = s.since_ms = link.now_ms();
    handshakes.push_front(from);
    s.order = handshakes.begin();
    if (victim) {  // only now: a hello with a forged or stale cookie must not cost anyone a place
      ++stats.handshakes_evicted;
      Erase(*victim);
    }
    return;
  }
  if (r == MBEDTLS_ERR_SSL_HELLO_VERIFY_REQUIRED) ++stats.hello_verify_sent;
  else ++stats.handshakes_failed;
  if (!Reset(v)) verifier = nullptr;  // no state is kept for this peer
}

std::optional<Address> DtlsServer::Impl::FairShareVictim(const Address& from) {
  std::unordered_map<Address, uint32_t, AddressHash> held;
  for (const std::list<Address>* list : {&handshakes, &fresh})
    for (const Address& a : *list) ++held[SourceIp(a)];
  const auto mine = held.find(SourceIp(from));
  const uint32_t own = mine == held.end() ? 0 : mine->second;
  std::optional<Address> victim;
  uint32_t most = own + 1;
  for (auto it = handshakes.rbegin(); it != handshakes.rend(); ++it) {  // oldest first
    const uint32_t n = held[SourceIp(*it)];
    if (n > most) {
      most = n;
      victim = *it;
    }
  }
  return victim;
}

}  // namespace tether::coap
