// Drives DtlsServer with hostile datagrams. Input framing:
//   op < 0xF0: datagram from peer (op & 3), 2-byte big-endian length, bytes
//   0xF0 t     advance the clock by t*100 ms, fire due timers, housekeeping
//   0xF1 p n.. a genuine ClientHello from peer p with n bytes XOR-ed into it (n, then pos/value pairs)
//   0xF2 p     a complete honest handshake from peer p (an in-process mbedTLS client)
//   0xF3 p n   the server sends n bytes of plaintext to peer p
// Invariants: no crash or sanitizer report; no datagram is larger than max_datagram; plaintext is
// delivered only from peers that completed a handshake.
#include <mbedtls/ctr_drbg.h>
#include <mbedtls/entropy.h>
#include <mbedtls/ssl.h>

#include <cstdlib>
#include <deque>
#include <map>
#include <set>
#include <string>

#include "device_proto/dtls_server.h"

using namespace tether::coap;

namespace {

constexpr size_t kMaxDatagram = 512;

struct Rig : DtlsServer::Link {
  uint64_t now = 1'000'000;
  std::multimap<uint64_t, uint64_t> timers;
  std::map<Address, std::deque<std::string>, bool (*)(const Address&, const Address&)> to_client{
      [](const Address& a, const Address& b) { return a.port < b.port; }};
  std::set<uint16_t> honest;  // peers whose handshake an honest client completed
  DtlsServer* server = nullptr;
  void SendDatagram(const Address& to, std::span<const uint8_t> c) override {
    if (c.size() > kMaxDatagram) std::abort();
    to_client[to].emplace_back(reinterpret_cast<const char*>(c.data()), c.size());
    if (to_client[to].size() > 64) to_client[to].pop_front();
  }
  void OnPlaintext(const Address& from, std::string_view, std::span<const uint8_t>) override {
    if (!honest.count(from.port)) std::abort();  // decrypted data from a peer that never keyed
  }
  void Schedule(uint64_t when, uint64_t token) override { timers.emplace(when, token); }
  uint64_t now_ms() const override { return now; }
};

struct Globals {
  mbedtls_entropy_context entropy;
  mbedtls_ctr_drbg_context drbg;
  mbedtls_ssl_config client_conf;
  std::string client_hello;
  Globals() {
    mbedtls_entropy_init(&entropy);
    mbedtls_ctr_drbg_init(&drbg);
    mbedtls_ssl_config_init(&client_conf);
    mbedtls_ctr_drbg_seed(&drbg, mbedtls_entropy_func, &entropy, nullptr, 0);
    mbedtls_ssl_config_defaults(&client_conf, MBEDTLS_SSL_IS_CLIENT, MBEDTLS_SSL_TRANSPORT_DATAGRAM,
                                MBEDTLS_SSL_PRESET_DEFAULT);
    mbedtls_ssl_conf_rng(&client_conf, mbedtls_ctr_drbg_random, &drbg);
    static const char kId[] = "dev", kKey[] = "fuzz-key";
    mbedtls_ssl_conf_psk(&client_conf, reinterpret_cast<const unsigned char*>(kKey), sizeof kKey - 1,
                         reinterpret_cast<const unsigned char*>(kId), sizeof kId - 1);
  }
};
Globals& G() {
  static Globals g;
  return g;
}

Address Peer(uint8_t i) {
  Address a;
  a.family = AF_INET;
  a.ip[0] = 127;
  a.ip[3] = 1;
  a.port = static_cast<uint16_t>(1000 + (i & 3));
  a.secure = 1;
  return a;
}

// An honest client that completes a handshake with the server through the rig.
struct Client {
  Rig& rig;
  Address addr;
  std::deque<std::string> out;
  mbedtls_ssl_context ssl;
  static int Send(void* p, const unsigned char* b, size_t n) {
    static_cast<Client*>(p)->out.emplace_back(reinterpret_cast<const char*>(b), n);
    return static_cast<int>(n);
  }
  static int Recv(void* p, unsigned char* b, size_t n) {
    auto* c = static_cast<Client*>(p);
    auto& q = c->rig.to_client[c->addr];
    if (q.empty()) return MBEDTLS_ERR_SSL_WANT_READ;
    const size_t k = std::min(n, q.front().size());
    std::copy_n(q.front().data(), k, b);
    q.pop_front();
    return static_cast<int>(k);
  }
  Client(Rig& r, Address a) : rig(r), addr(a) {
    mbedtls_ssl_init(&ssl);
    mbedtls_ssl_setup(&ssl, &G().client_conf);
    mbedtls_ssl_set_bio(&ssl, this, Send, Recv, nullptr);
    mbedtls_ssl_set_mtu(&ssl, kMaxDatagram);
  }
  ~Client() { mbedtls_ssl_free(&ssl); }
  void Flush() {
    while (!out.empty()) {
      std::string d = std::move(out.front());
      out.pop_front();
      rig.server->OnDatagram(addr, {reinterpret_cast<const uint8_t*>(d.data()), d.size()});
    }
  }
  bool Handshake() {
    rig.to_client[addr].clear();
    for (int i = 0; i < 32; ++i) {
      const int r = mbedtls_ssl_handshake(&ssl);
      Flush();
      if (r == 0) return true;
      if (r != MBEDTLS_ERR_SSL_WANT_READ) return false;
    }
    return false;
  }
};

const std::string& ClientHello() {
  Globals& g = G();
  if (g.client_hello.empty()) {
    Rig r;
    Client c(r, Peer(0));
    mbedtls_ssl_handshake(&c.ssl);
    if (!c.out.empty()) g.client_hello = c.out.front();
  }
  return g.client_hello;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  Rig rig;
  DtlsOptions o;
  o.max_datagram = kMaxDatagram;
  o.max_live = 2;
  o.max_handshakes = 3;
  o.sleep_after_ms = 500;
  o.handshake_timeout_ms = 3000;
  o.hellos_per_second = 50;
  DtlsServer server(rig, o, [](std::string_view id) -> std::optional<std::string> {
    if (id == "dev") return std::string("fuzz-key");
    return std::nullopt;
  });
  rig.server = &server;
  size_t i = 0;
  auto byte = [&]() -> uint8_t { return i < size ? data[i++] : 0; };
  while (i < size) {
    const uint8_t op = byte();
    if (op < 0xF0) {
      const size_t len = std::min<size_t>(static_cast<size_t>(byte()) << 8 | byte(), size - i);
      server.OnDatagram(Peer(op), {data + i, len});
      i += len;
    } else if (op == 0xF0) {
      rig.now += uint64_t{byte()} * 100;
      while (!rig.timers.empty() && rig.timers.begin()->first <= rig.now) {
        const uint64_t token = rig.timers.begin()->second;
        rig.timers.erase(rig.timers.begin());
        server.OnTimer(token);
      }
      server.Housekeeping();
    } else if (op == 0xF1) {
      const Address peer = Peer(byte());
      std::string hello = ClientHello();
      for (uint8_t n = byte(); n > 0 && i < size; --n) {
        const uint8_t pos = byte();
        if (!hello.empty()) hello[pos % hello.size()] ^= static_cast<char>(byte());
      }
      server.OnDatagram(peer, {reinterpret_cast<const uint8_t*>(hello.data()), hello.size()});
    } else if (op == 0xF2) {
      const Address peer = Peer(byte());
      rig.honest.insert(peer.port);
      Client c(rig, peer);
      if (c.Handshake()) {
        static const unsigned char kMsg[] = "fuzz";
        mbedtls_ssl_write(&c.ssl, kMsg, sizeof kMsg);
        c.Flush();
      }
    } else if (op == 0xF3) {
      const Address peer = Peer(byte());
      const std::string plain(byte(), 'p');
      server.Send(peer, {reinterpret_cast<const uint8_t*>(plain.data()), plain.size()});
    }
  }
  return 0;
}
