// DtlsServer's session table (dtls_server_impl.h): the pool of mbedTLS contexts, sessions in
// their recency lists, sleep (mbedtls_ssl_context_save) and wake, and the live and session caps.
#include <mbedtls/platform_util.h>

#include <algorithm>
#include <array>

#include "device_proto/dtls_server_impl.h"

namespace tether::coap {

void DtlsServer::Impl::Bind(Context* c) {
  mbedtls_ssl_set_bio(&c->ssl, c, Send, Recv, nullptr);
  mbedtls_ssl_set_timer_cb(&c->ssl, c, SetTimer, GetTimer);
  mbedtls_ssl_set_mtu(&c->ssl, static_cast<uint16_t>(opt.max_datagram));
}

bool DtlsServer::Impl::Setup(Context* c) {
  mbedtls_ssl_init(&c->ssl);
  if (mbedtls_ssl_setup(&c->ssl, &conf) != 0) return false;
  Bind(c);
  return true;
}

Context* DtlsServer::Impl::Acquire() {
  if (!free.empty()) {
    Context* c = free.back();
    free.pop_back();
    return c;
  }
  auto c = std::make_unique<Context>();
  c->server = this;
  if (!Setup(c.get())) {
    mbedtls_ssl_free(&c->ssl);
    return nullptr;
  }
  all.push_back(std::move(c));
  return all.back().get();
}

void DtlsServer::Impl::CancelTimer(Context* c) {
  if (c->timer_token) timers.erase(c->timer_token);
  c->timer_token = 0;
  c->fin_at = 0;
}

bool DtlsServer::Impl::Reset(Context* c) {
  CancelTimer(c);
  c->input = {};
  c->identity.clear();
  if (mbedtls_ssl_session_reset(&c->ssl) == 0) return true;
  mbedtls_ssl_free(&c->ssl);
  return Setup(c);
}

void DtlsServer::Impl::Release(Context* c) {
  if (Reset(c)) free.push_back(c);  // else it leaves the pool: memory is short anyway
}

void DtlsServer::Impl::SetTransportId(Context* c) {
  std::array<unsigned char, 19> id{};
  std::copy(c->peer.ip.begin(), c->peer.ip.end(), id.begin());
  id[16] = static_cast<unsigned char>(c->peer.port >> 8);
  id[17] = static_cast<unsigned char>(c->peer.port);
  id[18] = c->peer.family;
  mbedtls_ssl_set_client_transport_id(&c->ssl, id.data(), id.size());
}

Session* DtlsServer::Impl::Find(const Address& a) {
  auto it = sessions.find(a);
  return it == sessions.end() ? nullptr : &it->second;
}

void DtlsServer::Impl::Touch(Session& s) {
  s.last_active_ms = link.now_ms();
  std::list<Address>& order = s.state == State::kHandshake ? handshakes : established;
  if (s.order != order.begin()) order.splice(order.begin(), order, s.order);
  if (s.state == State::kLive && s.live != live.begin()) live.splice(live.begin(), live, s.live);
}

void DtlsServer::Impl::Erase(const Address& a) {
  auto it = sessions.find(a);
  if (it == sessions.end()) return;
  Session& s = it->second;
  if (s.ctx) Release(s.ctx);
  (s.state == State::kHandshake ? handshakes : established).erase(s.order);
  if (s.state == State::kLive) live.erase(s.live);
  if (s.fresh) fresh.erase(s.fresh_at);
  if (s.state == State::kSleeping) {
    stats.sleeping_bytes -= s.blob.size();
    mbedtls_platform_zeroize(s.blob.data(), s.blob.size());
  }
  sessions.erase(it);
}

void DtlsServer::Impl::CloseAndErase(const Address& a) {
  if (Session* s = Find(a); s && s->ctx && s->state == State::kLive) mbedtls_ssl_close_notify(&s->ctx->ssl);
  Erase(a);
}

bool DtlsServer::Impl::Sleep(Session& s) {
  Context* c = s.ctx;
  size_t olen = 0;
  int r = mbedtls_ssl_context_save(&c->ssl, save_buf.data(), save_buf.size(), &olen);
  if (r == MBEDTLS_ERR_SSL_BUFFER_TOO_SMALL) {
    save_buf.resize(olen);
    r = mbedtls_ssl_context_save(&c->ssl, save_buf.data(), save_buf.size(), &olen);
  }
  if (r != 0) return false;
  s.blob.assign(reinterpret_cast<const char*>(save_buf.data()), olen);
  mbedtls_platform_zeroize(save_buf.data(), olen);
  s.ctx = nullptr;
  CancelTimer(c);
  c->input = {};
  c->identity.clear();
  free.push_back(c);  // context_save reset it
  live.erase(s.live);
  s.state = State::kSleeping;
  ++stats.sessions_slept;
  stats.sleeping_bytes += s.blob.size();
  return true;
}

void DtlsServer::Impl::ShrinkLive(size_t keep) {
  while (live.size() - fresh.size() > keep) {
    bool slept = false;
    for (auto it = live.rbegin(); it != live.rend() && !slept; ++it) {
      Session& v = sessions.at(*it);
      if (!v.busy && !v.fresh) slept = Sleep(v);  // on success `it` is gone: the loop ends at once
    }
    if (slept) continue;
    auto it = std::find_if(live.rbegin(), live.rend(), [&](const Address& a) {
      const Session& v = sessions.at(a);
      return !v.busy && !v.fresh;
    });
    if (it == live.rend()) return;  // all in use: go over the cap briefly
    const Address victim = *it;
    ++stats.sessions_evicted;
    CloseAndErase(victim);
  }
}

Context* DtlsServer::Impl::AcquireForLive() {
  ShrinkLive(opt.max_live - 1);
  return Acquire();
}

bool DtlsServer::Impl::Wake(const Address& a, Session& s) {
  Context* c = AcquireForLive();
  if (!c) return false;
  const int r = mbedtls_ssl_context_load(&c->ssl, reinterpret_cast<const unsigned char*>(s.blob.data()),
                                         s.blob.size());
  // The same serialized state must never be loaded twice.
  stats.sleeping_bytes -= s.blob.size();
  mbedtls_platform_zeroize(s.blob.data(), s.blob.size());
  s.blob = std::string();
  if (r != 0) {  // load freed the context: rebuild it for the pool; the session is lost
    if (Setup(c)) free.push_back(c);
    return false;
  }
  c->peer = a;
  c->identity = s.identity;
  Bind(c);
  SetTransportId(c);
  s.ctx = c;
  s.state = State::kLive;
  live.push_front(a);
  s.live = live.begin();
  ++stats.sessions_woken;
  return true;
}

void DtlsServer::Impl::Established(const Address& a, Session& s) {
  ++stats.handshakes_ok;
  handshakes.erase(s.order);
  s.identity = s.ctx->identity;
  s.state = State::kLive;
  established.push_front(a);
  s.order = established.begin();
  live.push_front(a);
  s.live = live.begin();
  s.last_active_ms = s.since_ms = link.now_ms();
  s.fresh = true;
  fresh.push_front(a);
  s.fresh_at = fresh.begin();
  const bool was_busy = s.busy;
  s.busy = true;  // the caps below must not pick the session that was just made
  while (established.size() > opt.max_sessions) {
    ++stats.sessions_evicted;
    CloseAndErase(established.back());
  }
  ShrinkLive(opt.max_live);
  s.busy = was_busy;
}

}  // namespace tether::coap
