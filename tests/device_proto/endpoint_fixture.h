// EndpointTest: one coap::Endpoint on a real UDP socket (127.0.0.1 or ::1, ephemeral port) and a
// client socket, for the endpoint_*_test.cc files (one binary, device_proto_endpoint_test).
// - TestHandler records every request, activity, dropped observer and failed response; a test
//   answers through `respond_with` (synchronously) or later through ep_.
// - FastOptions(): short ACK timeouts so retransmission cases take milliseconds.
// Single-threaded: the test drives the loop (PumpUntil in Recv()); TearDown runs the loop until
// the endpoint's handles are closed and fails if any is left.
#pragma once

#include <gtest/gtest.h>

#include <chrono>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "device_proto/endpoint.h"
#include "tests/device_proto/udp_harness.h"

namespace tether::coap::test {

struct Recorded {
  ExchangeId id;
  uint8_t method;
  std::string path;
  Bytes token;
  std::string payload;
  std::optional<uint32_t> observe;
};

class TestHandler : public Handler {
 public:
  std::function<void(const Request&)> respond_with;  // may answer synchronously
  std::vector<Recorded> requests;
  std::vector<std::pair<ObserverId, DropReason>> dropped;
  std::vector<ExchangeId> failed;
  size_t activity = 0;

  void OnRequest(const Request& r) override {
    std::string path;
    for (auto seg : r.uri_path()) path += "/" + std::string(seg);
    auto tok = r.message.token.view();
    requests.push_back({r.id, r.method(), path, Bytes(tok.begin(), tok.end()),
                        std::string(r.payload.begin(), r.payload.end()), r.observe()});
    if (respond_with) respond_with(r);
  }
  void OnActivity(const Address&) override { ++activity; }
  void OnObserverDropped(ObserverId id, DropReason why) override { dropped.emplace_back(id, why); }
  void OnResponseFailed(ExchangeId id) override { failed.push_back(id); }
};

inline EndpointOptions FastOptions() {
  EndpointOptions o;
  o.ack_timeout_ms = 40;
  o.ack_random_factor = 1.0;
  o.max_retransmit = 2;
  o.separate_ack_after_ms = 60;
  o.con_notify_every = 3;
  return o;
}

class EndpointTest : public ::testing::Test {
 protected:
  void SetUp() override { uv_loop_init(&loop_); }
  void TearDown() override {
    ep_.reset();
    uv_run(&loop_, UV_RUN_DEFAULT);
    EXPECT_EQ(uv_loop_close(&loop_), 0);
  }

  void Start(EndpointOptions o = FastOptions(), const char* ip = "127.0.0.1") {
    opts_ = o;
    ep_ = std::make_unique<Endpoint>(&loop_, h_, o);
    ASSERT_EQ(ep_->Listen(ip, 0), 0);
    server_ = {};
    server_.family = std::string(ip).find(':') == std::string::npos ? AF_INET : AF_INET6;
    if (server_.family == AF_INET) {
      server_.ip[0] = 127, server_.ip[3] = 1;
    } else {
      server_.ip[15] = 1;
    }
    server_.port = ep_->LocalPort();
    client_ = std::make_unique<UdpSocket>(server_.family);
  }

  void Send(const Bytes& b, UdpSocket* via = nullptr) { (via ? via : client_.get())->SendTo(server_, b); }

  // Next datagram to the client within timeout_ms, or nullptr.
  std::unique_ptr<Packet> Recv(int timeout_ms = 1000, UdpSocket* via = nullptr) {
    UdpSocket* s = via ? via : client_.get();
    std::optional<std::pair<Bytes, Address>> got;
    PumpUntil(&loop_, [&] { return (got = s->TryRecv()).has_value(); }, timeout_ms);
    if (!got) return nullptr;
    EXPECT_LE(got->first.size(), opts_.max_datagram) << "oversize datagram sent";
    EXPECT_EQ(got->second.port, server_.port) << "reply from another port";
    return MakePacket(std::move(got->first), got->second);
  }

  uv_loop_t loop_;
  TestHandler h_;
  EndpointOptions opts_;
  std::unique_ptr<Endpoint> ep_;
  Address server_;
  std::unique_ptr<UdpSocket> client_;
};

inline Response Content(std::string_view body) {
  Response r;
  r.payload = {reinterpret_cast<const uint8_t*>(body.data()), body.size()};
  return r;
}

}  // namespace tether::coap::test
