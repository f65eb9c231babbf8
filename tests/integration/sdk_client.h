// SdkClient: a device that speaks exactly like the Wilddog C SDK 2.x on the wire.
//
// Packets are built byte by byte as in shared/protocol/traces: CON requests, 4-byte tokens whose
// first byte counts up, message IDs written in host byte order (256, 512, ...), Uri-Host
// "<app>.wilddogio.com", `.cs=` on every request. Replies are matched by token only. Blocking UDP
// on 127.0.0.1 with bounded waits; used by integration tests against a running tetherd.
#pragma once

#include <chrono>
#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

namespace tether::testing {

struct CoapReply {
  uint8_t type = 0;   // 0 CON, 1 NON, 2 ACK, 3 RST
  uint8_t code = 0;   // e.g. 0x45 = 2.05
  uint16_t mid = 0;
  std::string token;
  std::optional<uint32_t> observe;
  std::optional<uint32_t> max_age;
  std::optional<uint32_t> content_format;
  std::optional<uint32_t> block2;  // raw Block2 option value (NUM << 4 | M << 3 | SZX)
  std::optional<uint32_t> size1;
  std::string payload;
  std::string CodeString() const;  // "2.05"
};

class SdkClient {
 public:
  SdkClient(uint16_t gateway_port, std::string app = "myapp");
  ~SdkClient();

  // Session control. Open returns true on 2.05 and stores the short/long tokens.
  bool Open(const std::string& auth_token = "");
  CoapReply OpenRaw(const std::string& auth_token);
  CoapReply Ping();
  CoapReply Rebind();  // POST /.rst with the long token
  CoapReply GoOffline();
  // Reopens the UDP socket: a new source port, as the SDK does after a timeout.
  void NewSourcePort();
  // Sends from this loopback address from now on (each device its own IP, as on a real LAN).
  void SetSourceIp(const std::string& ip);

  // Data. value_cbor is the raw CBOR payload; query adds e.g. ".dis=add".
  CoapReply Request(uint8_t method, const std::string& path, const std::string& payload = "",
                    const std::vector<std::string>& extra_queries = {}, std::optional<uint32_t> observe = {},
                    std::optional<uint32_t> content_format = {}, std::optional<uint32_t> accept = {},
                    std::optional<uint32_t> block2 = {});
  CoapReply Get(const std::string& path) { return Request(1, path); }
  CoapReply Put(const std::string& path, const std::string& cbor) { return Request(3, path, cbor); }
  CoapReply Post(const std::string& path, const std::string& cbor) { return Request(2, path, cbor); }
  CoapReply Delete(const std::string& path) { return Request(4, path); }
  CoapReply Observe(const std::string& path) { return Request(1, path, "", {}, 0u); }
  CoapReply Unobserve(const std::string& path) { return Request(1, path, "", {}, 1u); }
  // GET as a native client would: follows Block2 (RFC 7959) to read snapshots larger than one
  // datagram; the payload is the whole body. (The SDK itself never asks for blocks.)
  CoapReply GetWhole(const std::string& path, std::optional<uint32_t> accept = 50u);

  // Pipelining for fleets: Send returns the token to Await; many devices can have requests in
  // flight at once (each device still has one outstanding request at a time).
  std::string Send(uint8_t method, const std::string& path, const std::string& payload = "",
                   const std::vector<std::string>& extra_queries = {});
  std::string SendOpen(const std::string& auth_token = "");
  CoapReply Await(const std::string& token);
  bool AcceptOpen(const CoapReply& r);  // stores the tokens of a 2.05 open reply

  // Waits for a server-initiated message (notification); ACKs a CON one with the SDK's quirky
  // empty ACK that still carries the token.
  std::optional<CoapReply> WaitNotification(std::chrono::milliseconds timeout);
  // As the SDK's observe layer: waits for a notification on `token` whose Observe value is newer
  // (IsObserveNew) than the last one accepted on it (registration reply included); older ones are
  // dropped as the SDK drops them and counted in stale_notifications().
  std::optional<CoapReply> WaitFreshNotification(const std::string& token, std::chrono::milliseconds timeout);
  size_t stale_notifications() const { return stale_; }
  // The SDK's test (RFC 7641 §3.4 without the 128 s rule): V2 is newer than V1.
  static bool IsObserveNew(uint32_t v1, uint32_t v2);

  // The bytes of the last request built (to resend later, as the SDK does after re-authenticating).
  const std::string& last_request() const { return last_request_; }
  // Resends an earlier request with the SAME message ID and token, its `.cs=` rewritten to the
  // current short token in place (the SDK's retransmit after re-auth), and waits for the reply.
  CoapReply Resend(std::string packet);
  // Sends raw bytes (fuzz-ish tests) and returns the reply, if any.
  std::optional<CoapReply> SendRaw(const std::string& bytes, std::chrono::milliseconds timeout);

  const std::string& short_token() const { return short_token_; }
  const std::string& long_token() const { return long_token_; }
  void set_short_token(const std::string& s) { short_token_ = s; }
  uint16_t local_port() const;
  // How long a request waits for its reply (default 5 s).
  void set_timeout(std::chrono::milliseconds t) { timeout_ = t; }
  // CoAP retransmission for lossy links: an unanswered request is sent again (same message ID and
  // token) after `first`, the wait doubling each time, at most `max_retransmit` times; the reply
  // timeout becomes the whole window. Off (0) by default: loopback tests wait once.
  void SetRetransmit(std::chrono::milliseconds first, int max_retransmit);

  // Non-blocking use (SdkDevice drives many devices from one poll loop): the socket, a request
  // built with the current `.cs` (not sent), the SDK's session-control packets, raw sends, one
  // datagram if one is waiting, and the SDK's empty ACK for a CON message.
  int fd() const { return fd_; }
  std::string Prepare(uint8_t method, const std::string& path, const std::string& payload = "",
                      const std::vector<std::string>& extra_queries = {}, std::optional<uint32_t> observe = {});
  std::string PrepareOpen(const std::string& auth_token);  // POST /.cs?v=2
  std::string PrepareRebind();                             // POST /.rst with the long token
  // `packet` with its `.cs=` rewritten to the current short token (the SDK's resend after re-auth).
  std::string WithCurrentSession(std::string packet) const;
  void SendBytes(const std::string& bytes);
  std::optional<CoapReply> ReceiveNow();
  void Acknowledge(const CoapReply& r) { AckIfCon(r); }
  void ForgetSession() { short_token_.clear(), long_token_.clear(); }

  // Builds the SDK's packet (exposed for trace comparisons).
  std::string Build(uint8_t method, const std::vector<std::string>& path, const std::vector<std::string>& queries,
                    const std::string& payload, std::optional<uint32_t> observe, std::optional<uint32_t> content_format,
                    std::optional<uint32_t> accept, std::optional<uint32_t> block2 = {});

 private:
  CoapReply Exchange(const std::string& packet, const std::string& token);
  std::vector<std::string> WithSession(std::vector<std::string> queries) const;  // adds .cs=
  std::optional<CoapReply> Receive(std::chrono::milliseconds timeout);
  void AckIfCon(const CoapReply& r);
  void OpenSocket();

  uint16_t port_;
  std::string host_;
  std::string source_ip_;  // empty: the kernel's choice
  int fd_ = -1;
  uint16_t counter_ = 0;
  std::string short_token_, long_token_;
  std::vector<CoapReply> pending_;  // notifications that arrived while waiting for a reply
  // Replies to other requests in flight that arrived while one was awaited (bounded; a reply
  // left over from an abandoned request is dropped when its token is reused).
  std::vector<CoapReply> stash_;
  struct Outstanding {
    std::string packet;
    std::chrono::steady_clock::time_point next_send;
    std::chrono::milliseconds wait;
    int retransmits_left;
  };
  std::map<std::string, Outstanding> outstanding_;  // by token, while retransmitting
  std::chrono::milliseconds timeout_{5000};
  std::string last_request_;
  std::map<std::string, uint32_t> observe_last_;  // token -> last accepted Observe value
  size_t stale_ = 0;
  std::chrono::milliseconds retransmit_first_{0};
  int max_retransmit_ = 0;
  void Transmit(const std::string& packet, const std::string& token);
};

// Minimal CBOR for tests: text string, unsigned int, indefinite map of text->text (as the SDK).
std::string CborText(const std::string& s);
std::string CborUint(uint64_t v);
std::string CborMap(const std::vector<std::pair<std::string, std::string>>& kv_cbor);  // indefinite, like the SDK
std::string Hex(const std::string& bytes);
std::string Unhex(const std::string& hex);

}  // namespace tether::testing
