// DtlsServer: per-peer mbedTLS contexts demultiplexed by address, pooled, put to sleep by
// serialization. Ownership: Impl owns every Context (in `all`); a Context is either in `free`,
// the shared `verifier`, or bound to exactly one Session (Session::ctx). Sessions are in exactly
// one recency list for their state: `handshakes` (kHandshake) or `established` (kLive, kSleeping);
// live ones are also in `live`, and `fresh` ones (established, no record from the client yet) in
// `fresh`. Lists are ordered most recent first. A fresh session cannot sleep (mbedTLS keeps its last
// flight until the client's first record), so it counts against max_handshakes, not max_live: the
// contexts in use never exceed max_live + max_handshakes + 1.
#include "device_proto/dtls_server.h"
#include "device_proto/dtls_record.h"
#include "device_proto/source_rate_limiter.h"

#include <mbedtls/ctr_drbg.h>
#include <mbedtls/entropy.h>
#include <mbedtls/platform_util.h>
#include <mbedtls/ssl.h>
#include <mbedtls/ssl_cookie.h>

#include <algorithm>
#include <array>
#include <list>
#include <stdexcept>
#include <unordered_map>
#include <vector>

namespace tether::coap {
namespace {

// Server preference order: CoAP's mandatory suite first (RFC 7252 §9.1.3.1), AEAD before CBC.
const int kCiphersuites[] = {MBEDTLS_TLS_PSK_WITH_AES_128_CCM_8, MBEDTLS_TLS_PSK_WITH_AES_128_CCM,
                             MBEDTLS_TLS_PSK_WITH_AES_128_GCM_SHA256, MBEDTLS_TLS_PSK_WITH_AES_128_CBC_SHA256, 0};
constexpr int kHandshakeTimeoutMinMs = 1000;

// The key handshake places are shared by: the source IP.
Address SourceIp(Address a) {
  a.port = 0;
  return a;
}

enum class State : uint8_t { kHandshake, kLive, kSleeping };

}  // namespace

struct Context {
  mbedtls_ssl_context ssl;
  DtlsServer::Impl* server = nullptr;
  Address peer;
  std::span<const uint8_t> input;  // the datagram being processed; consumed by the first read
  uint64_t int_at = 0, fin_at = 0;  // mbedTLS timer deadlines; fin_at 0 = cancelled
  uint64_t timer_token = 0;
  std::string identity;  // accepted by the PSK callback during this context's handshake
};

struct Session {
  State state = State::kHandshake;
  bool busy = false;           // its datagram is being processed: never evicted meanwhile
  bool fresh = false;          // established, nothing received since (see `fresh` above)
  Context* ctx = nullptr;      // kHandshake, kLive
  std::string blob;            // kSleeping: the serialized connection
  std::string identity;        // kLive, kSleeping
  uint64_t last_active_ms = 0;
  uint64_t since_ms = 0;               // the handshake began, or (fresh) it finished
  std::list<Address>::iterator order;  // in handshakes or established
  std::list<Address>::iterator live;   // kLive only
  std::list<Address>::iterator fresh_at;  // fresh only
};

struct DtlsServer::Impl {
  Impl(Link& l, DtlsOptions o, PskLookup p) : link(l), opt(o), psk(std::move(p)), hellos(o.hellos_per_second) {}

  Link& link;
  DtlsOptions opt;
  PskLookup psk;
  mbedtls_entropy_context entropy;
  mbedtls_ctr_drbg_context drbg;
  mbedtls_ssl_config conf;
  mbedtls_ssl_cookie_ctx cookies;
  std::vector<std::unique_ptr<Context>> all;
  std::vector<Context*> free;
  Context* verifier = nullptr;  // answers cookie-less ClientHellos; reset after each
  Context* current = nullptr;   // the context mbedTLS is running on (for the PSK callback)
  std::unordered_map<Address, Session, AddressHash> sessions;
  std::list<Address> handshakes, established, live, fresh;
  std::unordered_map<uint64_t, Context*> timers;  // token -> context whose timer it is
  uint64_t next_token = 0;
  SourceRateLimiter hellos;  // per source IP (opt.hellos_per_second)
  DtlsCounters stats;
  std::vector<uint8_t> plain = std::vector<uint8_t>(MBEDTLS_SSL_IN_CONTENT_LEN);
  std::vector<uint8_t> save_buf = std::vector<uint8_t>(1024);

  // ---- mbedTLS callbacks ----
  static int Send(void* p, const unsigned char* buf, size_t len) {
    auto* c = static_cast<Context*>(p);
    c->server->link.send_datagram(c->peer, {buf, len});
    return static_cast<int>(len);
  }
  static int Recv(void* p, unsigned char* buf, size_t len) {
    auto* c = static_cast<Context*>(p);
    if (c->input.empty()) return MBEDTLS_ERR_SSL_WANT_READ;
    const size_t n = std::min(len, c->input.size());  // a longer datagram is truncated: its records fail
    std::copy_n(c->input.begin(), n, buf);
    c->input = {};
    return static_cast<int>(n);
  }
  static void SetTimer(void* p, uint32_t int_ms, uint32_t fin_ms) {
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
    s.link.schedule(c->fin_at, c->timer_token);
  }
  static int GetTimer(void* p) {
    auto* c = static_cast<Context*>(p);
    if (c->fin_at == 0) return -1;
    const uint64_t now = c->server->link.now_ms();
    return now >= c->fin_at ? 2 : now >= c->int_at ? 1 : 0;
  }
  static int Psk(void* p, mbedtls_ssl_context* ssl, const unsigned char* id, size_t len) {
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

  // ---- contexts ----
  void Bind(Context* c) {
    mbedtls_ssl_set_bio(&c->ssl, c, Send, Recv, nullptr);
    mbedtls_ssl_set_timer_cb(&c->ssl, c, SetTimer, GetTimer);
    mbedtls_ssl_set_mtu(&c->ssl, static_cast<uint16_t>(opt.max_datagram));
  }
  bool Setup(Context* c) {
    mbedtls_ssl_init(&c->ssl);
    if (mbedtls_ssl_setup(&c->ssl, &conf) != 0) return false;
    Bind(c);
    return true;
  }
  Context* Acquire() {
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
  void CancelTimer(Context* c) {
    if (c->timer_token) timers.erase(c->timer_token);
    c->timer_token = 0;
    c->fin_at = 0;
  }
  // Ready for a new connection (rebuilt if the reset cannot allocate). False if it is unusable.
  bool Reset(Context* c) {
    CancelTimer(c);
    c->input = {};
    c->identity.clear();
    if (mbedtls_ssl_session_reset(&c->ssl) == 0) return true;
    mbedtls_ssl_free(&c->ssl);
    return Setup(c);
  }
  void Release(Context* c) {
    if (Reset(c)) free.push_back(c);  // else it leaves the pool: memory is short anyway
  }
  // HelloVerify cookies and ClientHello reconnects are bound to the peer's address.
  void SetTransportId(Context* c) {
    std::array<unsigned char, 19> id{};
    std::copy(c->peer.ip.begin(), c->peer.ip.end(), id.begin());
    id[16] = static_cast<unsigned char>(c->peer.port >> 8);
    id[17] = static_cast<unsigned char>(c->peer.port);
    id[18] = c->peer.family;
    mbedtls_ssl_set_client_transport_id(&c->ssl, id.data(), id.size());
  }

  // ---- sessions ----
  Session* Find(const Address& a) {
    auto it = sessions.find(a);
    return it == sessions.end() ? nullptr : &it->second;
  }
  void Touch(Session& s) {
    s.last_active_ms = link.now_ms();
    std::list<Address>& order = s.state == State::kHandshake ? handshakes : established;
    if (s.order != order.begin()) order.splice(order.begin(), order, s.order);
    if (s.state == State::kLive && s.live != live.begin()) live.splice(live.begin(), live, s.live);
  }
  void Erase(const Address& a) {
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
  void CloseAndErase(const Address& a) {
    if (Session* s = Find(a); s && s->ctx && s->state == State::kLive) mbedtls_ssl_close_notify(&s->ctx->ssl);
    Erase(a);
  }

  // Serializes a live session. False (it stays live) for CBC suites or pending data.
  bool Sleep(Session& s) {
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
  // Sleeps least recently active live sessions until at most `keep` are live; when none of them
  // can sleep (CBC suite, or no data since the handshake: mbedTLS keeps its last flight until the
  // client's first record), closes the oldest. Busy sessions are never chosen.
  void ShrinkLive(size_t keep) {
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
  Context* AcquireForLive() {
    ShrinkLive(opt.max_live - 1);
    return Acquire();
  }
  bool Wake(const Address& a, Session& s) {
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
  void Established(const Address& a, Session& s) {
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

  // ---- driving mbedTLS ----
  // Runs the handshake on the datagram in the context. True once it is established.
  bool StepHandshake(const Address& a) {
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
  void ReadRecords(const Address& a) {
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
        link.on_plaintext(a, identity, {plain.data(), static_cast<size_t>(r)});
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
  void OnNewPeer(const Address& from, std::span<const uint8_t> bytes) {
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
  // The oldest unfinished handshake of the source IP holding the most places (handshakes and
  // fresh sessions), if that is at least two more than `from`'s IP holds: taking it leaves the
  // busiest source still at least as well served as `from`. O(max_handshakes), only when full.
  std::optional<Address> FairShareVictim(const Address& from) {
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
  bool RateOk(const Address& a) { return hellos.Take(a, link.now_ms()); }
};

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

void DtlsServer::on_datagram(const Address& from, std::span<const uint8_t> bytes) {
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

bool DtlsServer::send(const Address& to, std::span<const uint8_t> plaintext) {
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

void DtlsServer::on_timer(uint64_t token) {
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

void DtlsServer::housekeeping() {
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

bool DtlsServer::close(const Address& peer) {
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

std::optional<std::string> DtlsServer::identity(const Address& peer) const {
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
