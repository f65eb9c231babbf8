// DtlsServer: DTLS 1.2 PSK sessions (mbedTLS 2.28) for many peers on one UDP socket.
//
// Ciphertext comes in through OnDatagram() and plaintext goes up through Link; plaintext goes
// down through Send() and ciphertext leaves through Link. No state is kept for a peer before it
// returned a valid HelloVerifyRequest cookie: cookie-less ClientHellos are answered from one
// shared context that is reset after each. The max_handshakes places for handshakes in flight
// are shared fairly between source IPs: when they are all taken, a ClientHello with a valid cookie
// from an IP holding at least two fewer places than the busiest IP takes the place of that IP's
// oldest unfinished handshake, so one source (or a few) flooding half-open handshakes cannot
// keep others out. Established sessions idle for `sleep_after_ms` (or
// pushed out by the `max_live` cap) are serialized with mbedtls_ssl_context_save and restored on
// their next datagram, so a sleeping session costs a few hundred bytes. Only AEAD suites (CCM_8,
// CCM, GCM) can sleep; a CBC session stays live and is closed (close_notify) when evicted.
// Loop thread only; timers go through Link::Schedule and come back as OnTimer(token).
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>

#include "device_proto/address.h"

namespace tether::coap {

struct DtlsOptions {
  size_t max_datagram = 1280;              // no datagram sent is larger (handshakes are fragmented)
  size_t max_sessions = 200000;            // established sessions, live + sleeping; LRU beyond
  size_t max_live = 256;                   // contexts in memory (~35 KB each)
  size_t max_handshakes = 64;              // handshakes in flight, shared fairly between source IPs
  uint32_t sleep_after_ms = 10000;         // idle established sessions are serialized after this
  uint32_t session_timeout_ms = 86400000;  // a session silent this long is forgotten
  uint32_t handshake_timeout_ms = 30000;   // a handshake not finished by then is abandoned
  double hellos_per_second = 20;           // per source IP (token bucket; burst = 2 s worth)
};

struct DtlsCounters {
  uint64_t handshakes_ok = 0, handshakes_failed = 0, hello_verify_sent = 0;
  uint64_t hellos_rate_limited = 0, hellos_over_cap = 0, records_dropped = 0;
  uint64_t handshakes_evicted = 0;  // unfinished handshakes given up for a source holding fewer
  uint64_t sessions_slept = 0, sessions_woken = 0, sessions_expired = 0, sessions_evicted = 0;
  uint64_t close_notify_in = 0, plaintexts_in = 0, plaintexts_out = 0;
  uint64_t live = 0, sleeping = 0, handshaking = 0, sleeping_bytes = 0;  // gauges
};

// The key for a PSK identity; nullopt refuses the identity (unknown_psk_identity alert).
using PskLookup = std::function<std::optional<std::string>(std::string_view identity)>;

class DtlsServer {
 public:
  class Link {  // the owner's side; every call is made on the loop thread
   public:
    virtual ~Link() = default;
    virtual void SendDatagram(const Address& to, std::span<const uint8_t> ciphertext) = 0;
    virtual void OnPlaintext(const Address& from, std::string_view identity, std::span<const uint8_t> bytes) = 0;
    virtual void Schedule(uint64_t when_ms, uint64_t token) = 0;  // OnTimer(token) at or after when_ms
    virtual uint64_t now_ms() const = 0;
  };

  // Throws std::runtime_error when mbedTLS cannot be set up (no entropy, ...).
  DtlsServer(Link& link, DtlsOptions options, PskLookup psk);
  ~DtlsServer();
  DtlsServer(const DtlsServer&) = delete;
  DtlsServer& operator=(const DtlsServer&) = delete;

  void OnDatagram(const Address& from, std::span<const uint8_t> bytes);
  // Encrypts one plaintext datagram to an established session (waking it if asleep). False if
  // there is none or the plaintext is longer than max_plaintext().
  bool Send(const Address& to, std::span<const uint8_t> plaintext);
  void OnTimer(uint64_t token);
  void Housekeeping();  // sleeps idle sessions, expires silent ones and stale handshakes (~1/s)
  // Ends the session with `peer` (close_notify). False if there is none.
  bool Close(const Address& peer);

  size_t max_plaintext() const;  // the largest plaintext that fits one datagram with any suite
  std::optional<std::string> Identity(const Address& peer) const;  // of an established session
  DtlsCounters counters() const;

  struct Impl;

 private:
  std::unique_ptr<Impl> impl_;
};

}  // namespace tether::coap
