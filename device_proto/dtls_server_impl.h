// Internal state of DtlsServer, shared by its three files. Not a public header: the contract is
// dtls_server.h. Loop thread only.
//  - dtls_server.cc: the entry points (datagrams, sends, timers, housekeeping) and mbedTLS set-up.
//  - dtls_handshake.cc: mbedTLS driven for a peer — its I/O and timer callbacks, the PSK lookup,
//    cookie-less hellos answered by the shared verifier, the fair share of handshake places,
//    handshakes and the records of established sessions.
//  - dtls_session_table.cc: the context pool and the session table — recency lists, sleep
//    (serialization) and wake, the max_live and max_sessions caps.
//
// Per-peer mbedTLS contexts demultiplexed by address, pooled, put to sleep by
// serialization. Ownership: Impl owns every Context (in `all`); a Context is either in `free`,
// the shared `verifier`, or bound to exactly one Session (Session::ctx). Sessions are in exactly
// one recency list for their state: `handshakes` (kHandshake) or `established` (kLive, kSleeping);
// live ones are also in `live`, and `fresh` ones (established, no record from the client yet) in
// `fresh`. Lists are ordered most recent first. A fresh session cannot sleep (mbedTLS keeps its last
// flight until the client's first record), so it counts against max_handshakes, not max_live: the
// contexts in use never exceed max_live + max_handshakes + 1.
#pragma once

#include <mbedtls/ctr_drbg.h>
#include <mbedtls/entropy.h>
#include <mbedtls/ssl.h>
#include <mbedtls/ssl_cookie.h>

#include <cstdint>
#include <list>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <unordered_map>
#include <vector>

#include "device_proto/dtls_server.h"
#include "device_proto/source_rate_limiter.h"

namespace tether::coap {

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
  enum class State : uint8_t { kHandshake, kLive, kSleeping };
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
  using State = Session::State;

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

  // ---- mbedTLS callbacks (dtls_handshake.cc) ----
  static int Send(void* p, const unsigned char* buf, size_t len);
  static int Recv(void* p, unsigned char* buf, size_t len);
  static void SetTimer(void* p, uint32_t int_ms, uint32_t fin_ms);
  static int GetTimer(void* p);
  static int Psk(void* p, mbedtls_ssl_context* ssl, const unsigned char* id, size_t len);

  // ---- contexts (dtls_session_table.cc) ----
  void Bind(Context* c);
  bool Setup(Context* c);
  Context* Acquire();
  void CancelTimer(Context* c);
  // Ready for a new connection (rebuilt if the reset cannot allocate). False if it is unusable.
  bool Reset(Context* c);
  void Release(Context* c);
  // HelloVerify cookies and ClientHello reconnects are bound to the peer's address.
  void SetTransportId(Context* c);

  // ---- sessions (dtls_session_table.cc) ----
  Session* Find(const Address& a);
  void Touch(Session& s);
  void Erase(const Address& a);
  void CloseAndErase(const Address& a);
  // Serializes a live session. False (it stays live) for CBC suites or pending data.
  bool Sleep(Session& s);
  // Sleeps least recently active live sessions until at most `keep` are live; when none of them
  // can sleep (CBC suite, or no data since the handshake: mbedTLS keeps its last flight until the
  // client's first record), closes the oldest. Busy sessions are never chosen.
  void ShrinkLive(size_t keep);
  Context* AcquireForLive();
  bool Wake(const Address& a, Session& s);
  void Established(const Address& a, Session& s);

  // ---- driving mbedTLS (dtls_handshake.cc) ----
  // Runs the handshake on the datagram in the context. True once it is established.
  bool StepHandshake(const Address& a);
  void ReadRecords(const Address& a);
  void OnNewPeer(const Address& from, std::span<const uint8_t> bytes);
  // The oldest unfinished handshake of the source IP holding the most places (handshakes and
  // fresh sessions), if that is at least two more than `from`'s IP holds: taking it leaves the
  // busiest source still at least as well served as `from`. O(max_handshakes), only when full.
  std::optional<Address> FairShareVictim(const Address& from);
  bool RateOk(const Address& a) { return hellos.Take(a, link.now_ms()); }
};

}  // namespace tether::coap
