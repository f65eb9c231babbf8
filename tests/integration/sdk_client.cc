#include "tests/integration/sdk_client.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstdio>
#include <stdexcept>

namespace tether::testing {

namespace {

void PutOption(std::string* out, uint16_t* last, uint16_t number, const std::string& value) {
  uint16_t delta = number - *last;
  *last = number;
  auto nibble = [](size_t v, std::string* ext) -> uint8_t {
    if (v < 13) return static_cast<uint8_t>(v);
    if (v < 269) {
      ext->push_back(static_cast<char>(v - 13));
      return 13;
    }
    ext->push_back(static_cast<char>((v - 269) >> 8));
    ext->push_back(static_cast<char>((v - 269) & 0xff));
    return 14;
  };
  std::string ext_delta, ext_len;
  uint8_t d = nibble(delta, &ext_delta);
  uint8_t l = nibble(value.size(), &ext_len);
  out->push_back(static_cast<char>(d << 4 | l));
  *out += ext_delta + ext_len + value;
}

std::string Uint(uint32_t v) {
  std::string s;
  for (int shift = 24; shift >= 0; shift -= 8) {
    if ((v >> shift) || !s.empty()) s.push_back(static_cast<char>(v >> shift & 0xff));
  }
  return s;
}

std::vector<std::string> Segments(const std::string& path) {
  std::vector<std::string> segs;
  for (size_t i = 0; i <= path.size();) {
    size_t j = path.find('/', i);
    if (j == std::string::npos) j = path.size();
    if (j > i) segs.push_back(path.substr(i, j - i));
    i = j + 1;
  }
  return segs;
}

uint32_t ReadUint(const std::string& s) {
  uint32_t v = 0;
  for (unsigned char c : s) v = v << 8 | c;
  return v;
}

std::optional<CoapReply> Parse(const std::string& d) {
  if (d.size() < 4 || (static_cast<uint8_t>(d[0]) >> 6) != 1) return std::nullopt;
  CoapReply r;
  r.type = (static_cast<uint8_t>(d[0]) >> 4) & 3;
  size_t tkl = static_cast<uint8_t>(d[0]) & 15;
  r.code = static_cast<uint8_t>(d[1]);
  r.mid = static_cast<uint16_t>(static_cast<uint8_t>(d[2]) << 8 | static_cast<uint8_t>(d[3]));
  if (tkl > 8 || d.size() < 4 + tkl) return std::nullopt;
  r.token = d.substr(4, tkl);
  size_t i = 4 + tkl;
  uint32_t number = 0;
  while (i < d.size()) {
    uint8_t b = static_cast<uint8_t>(d[i++]);
    if (b == 0xff) {
      r.payload = d.substr(i);
      break;
    }
    auto ext = [&](uint32_t n) -> uint32_t {
      if (n == 13 && i < d.size()) return 13 + static_cast<uint8_t>(d[i++]);
      if (n == 14 && i + 1 < d.size()) {
        uint32_t v = 269 + (static_cast<uint8_t>(d[i]) << 8 | static_cast<uint8_t>(d[i + 1]));
        i += 2;
        return v;
      }
      return n;
    };
    number += ext(b >> 4);
    uint32_t len = ext(b & 15);
    if (i + len > d.size()) return std::nullopt;
    std::string v = d.substr(i, len);
    i += len;
    if (number == 6) r.observe = ReadUint(v);
    if (number == 14) r.max_age = ReadUint(v);
    if (number == 12) r.content_format = ReadUint(v);
    if (number == 23) r.block2 = ReadUint(v);
    if (number == 60) r.size1 = ReadUint(v);
  }
  return r;
}

}  // namespace

std::string CoapReply::CodeString() const {
  char buf[8];
  std::snprintf(buf, sizeof buf, "%u.%02u", code >> 5, code & 31);
  return buf;
}

SdkClient::SdkClient(uint16_t gateway_port, std::string app)
    : port_(gateway_port), host_(app.empty() ? "" : app + ".wilddogio.com") {
  OpenSocket();
}

SdkClient::~SdkClient() {
  if (fd_ >= 0) close(fd_);
}

void SdkClient::OpenSocket() {
  if (fd_ >= 0) close(fd_);
  fd_ = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  if (fd_ < 0) throw std::runtime_error("socket failed");
  if (!source_ip_.empty()) {
    sockaddr_in src{};
    src.sin_family = AF_INET;
    if (inet_pton(AF_INET, source_ip_.c_str(), &src.sin_addr) != 1 ||
        bind(fd_, reinterpret_cast<sockaddr*>(&src), sizeof src) != 0) {
      throw std::runtime_error("cannot bind to " + source_ip_);
    }
  }
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(port_);
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (connect(fd_, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) throw std::runtime_error("connect failed");
}

void SdkClient::NewSourcePort() { OpenSocket(); }

void SdkClient::SetSourceIp(const std::string& ip) {
  source_ip_ = ip;
  OpenSocket();
}

uint16_t SdkClient::local_port() const {
  sockaddr_in a{};
  socklen_t len = sizeof a;
  getsockname(fd_, reinterpret_cast<sockaddr*>(&a), &len);
  return ntohs(a.sin_port);
}

std::vector<std::string> SdkClient::WithSession(std::vector<std::string> queries) const {
  if (!short_token_.empty()) queries.push_back(".cs=" + short_token_);
  return queries;
}

std::string SdkClient::Build(uint8_t method, const std::vector<std::string>& path,
                             const std::vector<std::string>& queries, const std::string& payload,
                             std::optional<uint32_t> observe, std::optional<uint32_t> content_format,
                             std::optional<uint32_t> accept, std::optional<uint32_t> block2) {
  ++counter_;
  std::string token = {static_cast<char>(counter_ & 0xff), '\x45', '\x8b', '\x6b'};
  std::string out;
  out.push_back(0x44);  // ver 1, CON, TKL 4
  out.push_back(static_cast<char>(method));
  out.push_back(static_cast<char>(counter_ & 0xff));  // host (little-endian) order on the wire
  out.push_back(static_cast<char>(counter_ >> 8));
  out += token;
  uint16_t last = 0;
  if (!host_.empty()) PutOption(&out, &last, 3, host_);
  if (observe) PutOption(&out, &last, 6, Uint(*observe));
  if (path.empty()) PutOption(&out, &last, 11, "");  // the root is one empty segment
  for (const auto& seg : path) PutOption(&out, &last, 11, seg);
  if (content_format) PutOption(&out, &last, 12, Uint(*content_format));
  for (const auto& q : queries) PutOption(&out, &last, 15, q);
  if (accept) PutOption(&out, &last, 17, Uint(*accept));
  if (block2) PutOption(&out, &last, 23, Uint(*block2));
  if (!payload.empty()) out += '\xff' + payload;
  last_request_ = out;
  return out;
}

std::optional<CoapReply> SdkClient::Receive(std::chrono::milliseconds timeout) {
  pollfd p{fd_, POLLIN, 0};
  if (poll(&p, 1, static_cast<int>(timeout.count())) <= 0) return std::nullopt;
  char buf[2048];
  ssize_t n = recv(fd_, buf, sizeof buf, 0);
  if (n <= 0) return std::nullopt;
  return Parse(std::string(buf, n));
}

CoapReply SdkClient::Exchange(const std::string& packet, const std::string& token) {
  // The SDK retransmits at +2 s and +6 s; tests on loopback wait once, long enough.
  Transmit(packet, token);
  return Await(token);
}

void SdkClient::SetRetransmit(std::chrono::milliseconds first, int max_retransmit) {
  retransmit_first_ = first;
  max_retransmit_ = max_retransmit;
  std::chrono::milliseconds window{0};
  for (int i = 0; i <= max_retransmit; ++i) window += first * (1 << i);
  if (max_retransmit > 0) timeout_ = window;
}

void SdkClient::Transmit(const std::string& packet, const std::string& token) {
  std::erase_if(stash_, [&](const CoapReply& r) { return r.token == token; });  // a stale reply
  send(fd_, packet.data(), packet.size(), 0);
  if (max_retransmit_ > 0) {
    outstanding_[token] = Outstanding{packet, std::chrono::steady_clock::now() + retransmit_first_, retransmit_first_,
                                      max_retransmit_};
  }
}

CoapReply SdkClient::Await(const std::string& token) {
  for (auto it = stash_.begin(); it != stash_.end(); ++it) {
    if (it->token == token) {
      CoapReply r = *it;
      stash_.erase(it);
      outstanding_.erase(token);
      return r;
    }
  }
  auto deadline = std::chrono::steady_clock::now() + timeout_;
  while (true) {
    auto now = std::chrono::steady_clock::now();
    auto out = outstanding_.find(token);
    if (out != outstanding_.end() && out->second.retransmits_left > 0 && now >= out->second.next_send) {
      send(fd_, out->second.packet.data(), out->second.packet.size(), 0);  // same message ID and token
      out->second.wait *= 2;
      out->second.next_send = now + out->second.wait;
      out->second.retransmits_left--;
    }
    if (now >= deadline) break;
    auto wake = deadline;
    if (out != outstanding_.end() && out->second.retransmits_left > 0) wake = std::min(wake, out->second.next_send);
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(wake - now) + std::chrono::milliseconds(1);
    auto r = Receive(left);
    if (!r) {
      if (out == outstanding_.end() && std::chrono::steady_clock::now() < deadline) break;  // an error (refused)
      continue;
    }
    if (r->type == 2 && r->code == 0) {  // empty ACK: the answer follows as a CON, stop retransmitting
      for (auto& [tok, o] : outstanding_) {
        if ((static_cast<uint8_t>(o.packet[2]) << 8 | static_cast<uint8_t>(o.packet[3])) == r->mid) o.retransmits_left = 0;
      }
      continue;
    }
    const bool separate = r->type == 0 && r->code >= 0x40 && (r->token == token || !r->observe);
    if (separate) {  // a separate response: acknowledged like a notification
      std::string ack = {static_cast<char>(0x60 | r->token.size()), 0, static_cast<char>(r->mid >> 8),
                         static_cast<char>(r->mid & 0xff)};
      ack += r->token;
      send(fd_, ack.data(), ack.size(), 0);
    }
    if (r->token == token && (r->type != 0 || separate)) {  // matched by token only, as the SDK does
      outstanding_.erase(token);
      if (r->observe && r->code == 0x45) observe_last_[token] = *r->observe;
      return *r;
    }
    if (!separate && (r->type == 0 || r->type == 1)) {  // a notification meanwhile: acknowledged now, read later
      AckIfCon(*r);
      pending_.push_back(*r);
    } else if (!r->token.empty()) {
      stash_.push_back(*r);  // the reply to another request in flight
      if (stash_.size() > 256) stash_.erase(stash_.begin());
    }
  }
  outstanding_.erase(token);
  CoapReply timeout;
  timeout.code = 0xff;
  return timeout;
}

CoapReply SdkClient::Request(uint8_t method, const std::string& path, const std::string& payload,
                             const std::vector<std::string>& extra_queries, std::optional<uint32_t> observe,
                             std::optional<uint32_t> content_format, std::optional<uint32_t> accept,
                             std::optional<uint32_t> block2) {
  std::vector<std::string> segs = Segments(path);
  std::vector<std::string> q = WithSession(extra_queries);
  std::string pkt = Build(method, segs, q, payload, observe, content_format, accept, block2);
  return Exchange(pkt, pkt.substr(4, 4));
}

CoapReply SdkClient::GetWhole(const std::string& path, std::optional<uint32_t> accept) {
  CoapReply whole = Request(1, path, "", {}, {}, {}, accept);
  for (uint32_t num = 1; whole.block2 && (*whole.block2 & 8) && num < 4096; ++num) {
    uint32_t szx = *whole.block2 & 7;
    CoapReply next = Request(1, path, "", {}, {}, {}, accept, num << 4 | szx);
    if (next.code != 0x45) return next;
    whole.payload += next.payload;
    whole.block2 = next.block2;
  }
  return whole;
}

CoapReply SdkClient::OpenRaw(const std::string& auth_token) { return Await(SendOpen(auth_token)); }

std::string SdkClient::SendOpen(const std::string& auth_token) {
  std::string pkt = Build(2, {".cs"}, {"v=2"}, auth_token, {}, {}, {});
  Transmit(pkt, pkt.substr(4, 4));
  return pkt.substr(4, 4);
}

std::string SdkClient::Send(uint8_t method, const std::string& path, const std::string& payload,
                            const std::vector<std::string>& extra_queries) {
  std::vector<std::string> segs = Segments(path);
  std::vector<std::string> q = WithSession(extra_queries);
  std::string pkt = Build(method, segs, q, payload, {}, {}, {});
  Transmit(pkt, pkt.substr(4, 4));
  return pkt.substr(4, 4);
}

bool SdkClient::Open(const std::string& auth_token) { return AcceptOpen(OpenRaw(auth_token)); }

bool SdkClient::AcceptOpen(const CoapReply& r) {
  if (r.code != 0x45) return false;
  // {"s": <8 chars>, "l": <32 chars>}: a definite CBOR map of short text keys and values.
  const std::string& p = r.payload;
  if (p.empty() || static_cast<uint8_t>(p[0]) != 0xa2) return false;
  size_t i = 1;
  auto text = [&](std::string* out) {
    if (i >= p.size()) return false;
    uint8_t h = static_cast<uint8_t>(p[i++]);
    size_t len;
    if (h >= 0x60 && h < 0x78) {
      len = h - 0x60;
    } else if (h == 0x78 && i < p.size()) {
      len = static_cast<uint8_t>(p[i++]);
    } else {
      return false;
    }
    if (i + len > p.size()) return false;
    *out = p.substr(i, len);
    i += len;
    return true;
  };
  for (int pair = 0; pair < 2; ++pair) {
    std::string k, v;
    if (!text(&k) || !text(&v)) return false;
    (k == "s" ? short_token_ : long_token_) = v;
  }
  return short_token_.size() == 8 && long_token_.size() == 32;
}

CoapReply SdkClient::Ping() { return Request(1, ".ping"); }
CoapReply SdkClient::GoOffline() { return Request(1, ".off"); }

CoapReply SdkClient::Rebind() {
  std::string pkt = Build(2, {".rst"}, {}, long_token_, {}, {}, {});
  return Exchange(pkt, pkt.substr(4, 4));
}

void SdkClient::AckIfCon(const CoapReply& r) {
  if (r.type != 0) return;  // CON: the SDK's empty ACK that still carries the token
  std::string ack = {static_cast<char>(0x60 | r.token.size()), 0, static_cast<char>(r.mid >> 8),
                     static_cast<char>(r.mid & 0xff)};
  ack += r.token;
  send(fd_, ack.data(), ack.size(), 0);
}

std::optional<CoapReply> SdkClient::WaitNotification(std::chrono::milliseconds timeout) {
  if (!pending_.empty()) {
    CoapReply r = pending_.front();
    pending_.erase(pending_.begin());
    return r;
  }
  std::optional<CoapReply> r = Receive(timeout);
  if (r) AckIfCon(*r);
  return r;
}

bool SdkClient::IsObserveNew(uint32_t v1, uint32_t v2) {
  return (v1 < v2 && v2 - v1 < (1u << 23)) || (v1 > v2 && v1 - v2 > (1u << 23));
}

std::optional<CoapReply> SdkClient::WaitFreshNotification(const std::string& token,
                                                          std::chrono::milliseconds timeout) {
  auto accept = [&](const CoapReply& n) {
    if (!n.observe) return true;  // an error notification ends the observation
    auto last = observe_last_.find(token);
    if (last != observe_last_.end() && !IsObserveNew(last->second, *n.observe)) {
      ++stale_;
      return false;
    }
    observe_last_[token] = *n.observe;
    return true;
  };
  for (auto it = pending_.begin(); it != pending_.end();) {
    if (it->token != token) {
      ++it;
      continue;
    }
    CoapReply n = *it;
    it = pending_.erase(it);
    if (accept(n)) return n;
  }
  auto deadline = std::chrono::steady_clock::now() + timeout;
  while (true) {
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
    if (left.count() <= 0) return std::nullopt;
    std::optional<CoapReply> n = Receive(left);
    if (!n) return std::nullopt;
    AckIfCon(*n);
    if (n->type != 0 && n->type != 1) continue;  // a late reply to an earlier request
    if (n->token != token) {
      pending_.push_back(*n);  // another observation's: kept for its reader
      continue;
    }
    if (accept(*n)) return n;
  }
}

CoapReply SdkClient::Resend(std::string packet) {
  packet = WithCurrentSession(std::move(packet));
  send(fd_, packet.data(), packet.size(), 0);
  return Await(packet.substr(4, 4));
}

std::string SdkClient::Prepare(uint8_t method, const std::string& path, const std::string& payload,
                               const std::vector<std::string>& extra_queries, std::optional<uint32_t> observe) {
  return Build(method, Segments(path), WithSession(extra_queries), payload, observe, {}, {});
}

std::string SdkClient::PrepareOpen(const std::string& auth_token) {
  return Build(2, {".cs"}, {"v=2"}, auth_token, {}, {}, {});
}

std::string SdkClient::PrepareRebind() { return Build(2, {".rst"}, {}, long_token_, {}, {}, {}); }

std::string SdkClient::WithCurrentSession(std::string packet) const {
  const size_t cs = packet.find(".cs=");
  if (cs != std::string::npos && cs + 4 + short_token_.size() <= packet.size()) {
    packet.replace(cs + 4, short_token_.size(), short_token_);
  }
  return packet;
}

void SdkClient::SendBytes(const std::string& bytes) { send(fd_, bytes.data(), bytes.size(), 0); }

std::optional<CoapReply> SdkClient::ReceiveNow() {
  char buf[2048];
  ssize_t n = recv(fd_, buf, sizeof buf, MSG_DONTWAIT);
  if (n <= 0) return std::nullopt;
  return Parse(std::string(buf, n));
}

std::optional<CoapReply> SdkClient::SendRaw(const std::string& bytes, std::chrono::milliseconds timeout) {
  send(fd_, bytes.data(), bytes.size(), 0);
  return Receive(timeout);
}

std::string CborText(const std::string& s) {
  std::string out;
  if (s.size() < 24) {
    out.push_back(static_cast<char>(0x60 + s.size()));
  } else if (s.size() < 256) {
    out.push_back(0x78);
    out.push_back(static_cast<char>(s.size()));
  } else {
    out.push_back(0x79);
    out.push_back(static_cast<char>(s.size() >> 8));
    out.push_back(static_cast<char>(s.size() & 0xff));
  }
  return out + s;
}

std::string CborUint(uint64_t v) {
  std::string out;
  if (v < 24) return std::string(1, static_cast<char>(v));
  int bytes = v < 256 ? 1 : v < 65536 ? 2 : v < (1ull << 32) ? 4 : 8;
  out.push_back(static_cast<char>(bytes == 1 ? 0x18 : bytes == 2 ? 0x19 : bytes == 4 ? 0x1a : 0x1b));
  for (int i = bytes - 1; i >= 0; --i) out.push_back(static_cast<char>(v >> (8 * i) & 0xff));
  return out;
}

std::string CborMap(const std::vector<std::pair<std::string, std::string>>& kv) {
  std::string out = "\xbf";
  for (const auto& [k, v] : kv) out += CborText(k) + v;
  return out + "\xff";
}

std::string Hex(const std::string& bytes) {
  static const char* k = "0123456789abcdef";
  std::string out;
  for (unsigned char c : bytes) {
    out += k[c >> 4];
    out += k[c & 15];
  }
  return out;
}

std::string Unhex(const std::string& hex) {
  std::string out;
  for (size_t i = 0; i + 1 < hex.size(); i += 2) out.push_back(static_cast<char>(std::stoi(hex.substr(i, 2), nullptr, 16)));
  return out;
}

}  // namespace tether::testing
