// Test harness: one gateway in process — the real engine (no sockets: datagrams in through
// HandleDatagram, out through the transmit hook), the real store in a temp directory, a DeviceApi
// on a private loop — and SDK-shaped packets. Every wait is bounded.
#pragma once

#include <chrono>
#include <functional>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "gateway/device/device_api.h"
#include "tests/device_proto/udp_harness.h"
#include "tests/store/store_test_util.h"

namespace tether::testing {

using coap::Address;
using coap::test::Build;
using coap::test::Bytes;
using coap::test::BytesOf;
using coap::test::Packet;

inline constexpr uint8_t kForbidden = coap::code::Make(4, 3);
inline constexpr const char* kConfig =
    "device:\n  heartbeat_target: 20s\n  session_timeout: 60s\n"
    "apps:\n  - id: myapp\n    default: true\n"
    "routes:\n  - { name: all, app: myapp, match: \"**\" }\n";

inline Address Peer(uint32_t n) {
  Address a;
  a.family = AF_INET;
  a.ip = {10, static_cast<uint8_t>(n >> 16), static_cast<uint8_t>(n >> 8), static_cast<uint8_t>(n)};
  a.port = 5683;
  return a;
}

struct Sent {
  Address to;
  std::unique_ptr<Packet> p;
};

// One gateway: store + DeviceApi + endpoint on a private loop. Reopen() simulates a restart on
// the same store directory (optionally with another config).
class Gateway {
 public:
  explicit Gateway(coap::EndpointOptions eo = {}, const char* config = kConfig) : eo_(eo), config_(config) {
    uv_loop_init(&loop_);
    Open();
  }
  ~Gateway() {
    Shut();
    uv_loop_close(&loop_);
  }

  void Reopen(const char* config = kConfig) {
    Shut();
    config_ = config;
    Open();
  }

  // Sends a datagram and pumps the loop until `done` (bounded by 5 s).
  bool Send(const Address& from, const Bytes& bytes, const std::function<bool()>& done) {
    ep_->HandleDatagram(0, from, bytes);
    return Pump(done);
  }
  bool Pump(const std::function<bool()>& done, int timeout_ms = 5000) {
    auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms);
    while (std::chrono::steady_clock::now() < deadline) {
      uv_run(&loop_, UV_RUN_NOWAIT);
      if (done()) return true;
      std::this_thread::sleep_for(std::chrono::microseconds(200));
    }
    return done();
  }
  // The reply to `token` sent to `to` after index `from`, or nullptr.
  const Packet* ReplyTo(const Address& to, const Bytes& token, size_t from = 0) const {
    for (size_t i = from; i < sent_.size(); ++i) {
      const Packet& p = *sent_[i].p;
      if (sent_[i].to == to && p.ok && Bytes(p.m.token.view().begin(), p.m.token.view().end()) == token &&
          p.m.type == coap::Type::kAck && p.m.code != coap::code::kEmpty) {
        return &p;
      }
    }
    return nullptr;
  }
  // Answer to an SDK request: waits for it.
  const Packet* Ask(const Address& from, const Build& b) {
    const size_t mark = sent_.size();
    const Packet* got = nullptr;
    Send(from, b.done(), [&] { return (got = ReplyTo(from, b.token, mark)) != nullptr; });
    return got;
  }
  // POST /.cs; returns the short token ("" on failure).
  std::string Open(const Address& from, uint16_t mid) {
    const Packet* r = Ask(from, Build{.code = coap::code::kPost, .mid = mid, .token = Token(mid)}.Path(".cs"));
    if (!r || r->m.code != coap::code::kContent) return "";
    return ShortToken(r->payload());
  }
  // {"l": <32 chars>, "s": <8 chars>} as the gateway encodes it (keys sorted, definite lengths).
  static std::string ShortToken(const std::string& cbor) {
    const std::string head = "\xa2\x61l\x78\x20";
    if (cbor.size() != head.size() + 32 + 3 + 8 || cbor.compare(0, head.size(), head) != 0 ||
        cbor.compare(head.size() + 32, 3, "\x61s\x68") != 0) {
      return "";
    }
    return cbor.substr(head.size() + 35, 8);
  }
  static Bytes Token(uint32_t n) {
    return {static_cast<uint8_t>(n), static_cast<uint8_t>(n >> 8), static_cast<uint8_t>(n >> 16), 0x6b};
  }

  DeviceApi& api() { return *api_; }
  coap::Endpoint& endpoint() { return *ep_; }
  store::Store& store() { return *store_; }
  std::vector<Sent>& sent() { return sent_; }
  void Record(bool on) { record_ = on; }

 private:
  void Open() {
    store_ = store::Store::Open(dir_.Sub("db"), store::StoreOptions{}, &loop_);
    local_ = std::make_unique<LocalCopy>(&loop_, *store_);
    api_ = std::make_unique<DeviceApi>(&loop_, *store_, *local_,
                                       std::make_shared<const RouteTable>(Config::Parse(config_, "t.yaml")));
    api_->RestoreSessions();
    ep_ = std::make_unique<coap::Endpoint>(&loop_, *api_, eo_);
    ep_->set_transmit_hook([this](const Address& to, std::span<const uint8_t> b) {
      if (record_) sent_.push_back({to, coap::test::MakePacket(Bytes(b.begin(), b.end()), to)});
    });
    api_->AttachEndpoint(ep_.get());
  }
  void Shut() {
    if (!api_) return;
    api_->Close();
    ep_.reset();
    store_->Close();
    uv_run(&loop_, UV_RUN_DEFAULT);
    api_.reset();
    local_.reset();
    store_.reset();
    uv_run(&loop_, UV_RUN_DEFAULT);
  }

  coap::EndpointOptions eo_;
  const char* config_ = kConfig;
  uv_loop_t loop_;
  store::testing::TempDir dir_;
  std::unique_ptr<store::Store> store_;
  std::unique_ptr<LocalCopy> local_;
  std::unique_ptr<DeviceApi> api_;
  std::unique_ptr<coap::Endpoint> ep_;
  std::vector<Sent> sent_;
  bool record_ = true;
};

inline Build Request(uint8_t method, const std::string& path, const std::string& cs, uint16_t mid) {
  Build b{.code = method, .mid = mid, .token = Gateway::Token(mid)};
  if (path.empty()) b.Path("");
  for (size_t i = 0; i <= path.size() && !path.empty();) {
    size_t j = path.find('/', i);
    if (j == std::string::npos) j = path.size();
    b.Path(path.substr(i, j - i));
    i = j + 1;
  }
  b.Opt(coap::opt::kUriQuery, BytesOf(".cs=" + cs));
  return b;
}

}  // namespace tether::testing
