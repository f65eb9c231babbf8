// UdpDtlsClient: an mbedTLS DTLS 1.2 PSK client on a real, blocking UDP socket, for tests that
// control a handshake against the running tetherd step by step (the abuse and attack cases).
//
// - The socket is bound to `source_ip` (any 127.0.0.0/8 address: each is its own host to the
//   gateway) and connected to 127.0.0.1:server_port.
// - Reads wait `read_timeout` after the handshake; during it mbedTLS waits per flight, from
//   `flights.first`, doubling, and gives up once `flights.total` is spent.
// - A client that failed to set up (socket, seed, config) answers false / nullopt everywhere.
// One thread; owns its socket and mbedTLS contexts; not copyable.
#pragma once

#include <mbedtls/ctr_drbg.h>
#include <mbedtls/entropy.h>
#include <mbedtls/net_sockets.h>
#include <mbedtls/ssl.h>
#include <mbedtls/timing.h>

#include <chrono>
#include <cstdint>
#include <optional>
#include <string>

namespace tether::testing {

struct DtlsFlightTimeouts {
  std::chrono::milliseconds first, total;
};
// Short flights: an attacker's half-open handshake gives up after ~3.5 s (flights at 0, 0.5, 1.5 s).
inline constexpr DtlsFlightTimeouts kShortDtlsFlights{std::chrono::milliseconds(500), std::chrono::milliseconds(2000)};
// mbedTLS's own defaults (1 s, 60 s).
inline constexpr DtlsFlightTimeouts kDefaultDtlsFlights{std::chrono::milliseconds(MBEDTLS_SSL_DTLS_TIMEOUT_DFL_MIN),
                                                        std::chrono::milliseconds(MBEDTLS_SSL_DTLS_TIMEOUT_DFL_MAX)};

class UdpDtlsClient {
 public:
  UdpDtlsClient(const std::string& source_ip, uint16_t server_port, const std::string& identity,
                const std::string& key, std::chrono::milliseconds read_timeout = std::chrono::milliseconds(400),
                DtlsFlightTimeouts flights = kShortDtlsFlights);
  ~UdpDtlsClient();
  UdpDtlsClient(const UdpDtlsClient&) = delete;
  UdpDtlsClient& operator=(const UdpDtlsClient&) = delete;

  // Sends the first ClientHello and nothing more (no state at a server that answers statelessly).
  void SendHelloOnly();
  // Stops once the server answered the ClientHello that carries its cookie: the server now holds
  // an unfinished handshake for this client. False if it never answered.
  bool HalfOpen();
  // One mbedtls_ssl_handshake call: true if the handshake completed without a flight timing out.
  bool HandshakeOnce();
  // The whole handshake, resending flights as mbedTLS does; false if it failed or the server
  // stayed silent until the flights' total was spent.
  bool Handshake();
  bool Write(const std::string& plaintext);
  std::optional<std::string> Read();  // one record, within the read timeout

 private:
  bool ok_ = false;
  mbedtls_net_context net_;
  mbedtls_ssl_context ssl_;
  mbedtls_ssl_config conf_;
  mbedtls_ctr_drbg_context drbg_;
  mbedtls_entropy_context entropy_;
  mbedtls_timing_delay_context timer_;
};

}  // namespace tether::testing
