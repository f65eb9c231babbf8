// In-memory DTLS test rig: a DtlsServer whose Link delivers straight into mbedTLS test clients, on a
// fake clock, so handshakes, sleeping, caps and timeouts run deterministically.
#pragma once

#include <mbedtls/ctr_drbg.h>
#include <mbedtls/entropy.h>
#include <mbedtls/ssl.h>

#include <deque>
#include <map>
#include <memory>
#include <string>
#include <unordered_map>
#include <vector>

#include "device_proto/dtls_server.h"

namespace tether::coap::testing {

class DtlsRig;

class DtlsClient {
 public:
  DtlsClient(DtlsRig& rig, Address addr, std::string identity, std::string key, int suite = 0);
  ~DtlsClient();

  // Runs the handshake until it finishes or stalls (no datagram to read). 0 or the mbedTLS error.
  int Handshake();
  // One mbedtls_ssl_handshake call, then what it sent reaches the server (whose answers wait in
  // inbox() for the next call): the first Step sends the ClientHello and gets the cookie back.
  int Step();
  bool Write(const std::string& plaintext);  // delivered (and handled) before it returns
  // Reads one record from the datagrams the server sent; empty if none.
  std::string Read();
  int CloseNotify();
  int suite() const;

  const Address& addr() const { return addr_; }
  std::deque<std::string>& inbox() { return inbox_; }
  std::vector<std::string>& sent() { return sent_; }  // every datagram this client sent
  bool drop_next_incoming = false;  // loses the next datagram from the server

 private:
  friend class DtlsRig;
  static int Send(void* p, const unsigned char* buf, size_t len);
  static int Recv(void* p, unsigned char* buf, size_t len);
  static void SetTimer(void* p, uint32_t int_ms, uint32_t fin_ms);
  static int GetTimer(void* p);

  DtlsRig& rig_;
  Address addr_;
  std::string identity_, key_;
  int suites_[2];
  mbedtls_ssl_config conf_;
  mbedtls_ssl_context ssl_;
  void Flush();  // delivers outbox_ to the server
  std::deque<std::string> inbox_, outbox_;
  std::vector<std::string> sent_;
  uint64_t int_at_ = 0, fin_at_ = 0;
};

class DtlsRig : public DtlsServer::Link {
 public:
  explicit DtlsRig(DtlsOptions options = {}, std::map<std::string, std::string> keys = {{"dev1", "secret-key-1"}});
  ~DtlsRig() override;

  DtlsServer& server() { return *server_; }
  // Advances the fake clock and fires the server timers that became due.
  void Advance(uint64_t ms);
  uint64_t now() const { return now_; }
  void Attach(DtlsClient* c) { clients_[c->addr()] = c; }
  void Detach(DtlsClient* c);

  struct Plain {
    Address from;
    std::string identity, bytes;
  };
  std::vector<Plain> received;                  // plaintexts the server handed up
  std::vector<std::pair<Address, size_t>> sizes;  // every datagram the server sent (to, length)
  mbedtls_ctr_drbg_context* drbg() { return &drbg_; }

  // DtlsServer::Link
  void SendDatagram(const Address& to, std::span<const uint8_t> ciphertext) override;
  void OnPlaintext(const Address& from, std::string_view identity, std::span<const uint8_t> bytes) override;
  void Schedule(uint64_t when_ms, uint64_t token) override { timers_.emplace(when_ms, token); }
  uint64_t now_ms() const override { return now_; }

 private:
  mbedtls_entropy_context entropy_;
  mbedtls_ctr_drbg_context drbg_;
  uint64_t now_ = 1'000'000;
  std::multimap<uint64_t, uint64_t> timers_;
  std::map<std::string, std::string> keys_;
  std::unordered_map<Address, DtlsClient*, AddressHash> clients_;
  std::unique_ptr<DtlsServer> server_;
};

Address TestAddress(uint8_t host, uint16_t port);

}  // namespace tether::coap::testing
