// Endpoint behaviour over real UDP on 127.0.0.1 / ::1 ephemeral ports.
// Designated initializers name only the fields a case changes.
#pragma GCC diagnostic ignored "-Wmissing-field-initializers"
#include "device_proto/endpoint.h"

#include <gtest/gtest.h>

#include <chrono>
#include <map>
#include <set>

#include "tests/device_proto/udp_harness.h"

using namespace tether::coap;
using namespace tether::coap::test;

namespace {

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

  void on_request(const Request& r) override {
    std::string path;
    for (auto seg : r.uri_path()) path += "/" + std::string(seg);
    auto tok = r.message.token.view();
    requests.push_back({r.id, r.method(), path, Bytes(tok.begin(), tok.end()),
                        std::string(r.payload.begin(), r.payload.end()), r.observe()});
    if (respond_with) respond_with(r);
  }
  void on_activity(const Address&) override { ++activity; }
  void on_observer_dropped(ObserverId id, DropReason why) override { dropped.emplace_back(id, why); }
  void on_response_failed(ExchangeId id) override { failed.push_back(id); }
};

EndpointOptions fast_options() {
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

  void start(EndpointOptions o = fast_options(), const char* ip = "127.0.0.1") {
    opts_ = o;
    ep_ = std::make_unique<Endpoint>(&loop_, h_, o);
    ASSERT_EQ(ep_->listen(ip, 0), 0);
    server_ = {};
    server_.family = std::string(ip).find(':') == std::string::npos ? AF_INET : AF_INET6;
    if (server_.family == AF_INET) {
      server_.ip[0] = 127, server_.ip[3] = 1;
    } else {
      server_.ip[15] = 1;
    }
    server_.port = ep_->local_port();
    client_ = std::make_unique<UdpSocket>(server_.family);
  }

  void send(const Bytes& b, UdpSocket* via = nullptr) { (via ? via : client_.get())->send_to(server_, b); }

  // Next datagram to the client within timeout_ms, or nullptr.
  std::unique_ptr<Packet> recv(int timeout_ms = 1000, UdpSocket* via = nullptr) {
    UdpSocket* s = via ? via : client_.get();
    std::optional<std::pair<Bytes, Address>> got;
    pump_until(&loop_, [&] { return (got = s->try_recv()).has_value(); }, timeout_ms);
    if (!got) return nullptr;
    EXPECT_LE(got->first.size(), opts_.max_datagram) << "oversize datagram sent";
    EXPECT_EQ(got->second.port, server_.port) << "reply from another port";
    return make_packet(std::move(got->first), got->second);
  }

  uv_loop_t loop_;
  TestHandler h_;
  EndpointOptions opts_;
  std::unique_ptr<Endpoint> ep_;
  Address server_;
  std::unique_ptr<UdpSocket> client_;
};

Response content(std::string_view body) {
  Response r;
  r.payload = {reinterpret_cast<const uint8_t*>(body.data()), body.size()};
  return r;
}



TEST_F(EndpointTest, PiggybackedResponse) {
  start();
  h_.respond_with = [&](const Request& r) { ep_->respond(r.id, content("hi")); };
  send(Build{.mid = 0x1234}.path("a").path("b").done());
  auto p = recv();
  ASSERT_TRUE(p && p->ok);
  EXPECT_EQ(p->m.type, Type::kAck);
  EXPECT_EQ(p->m.code, code::kContent);
  EXPECT_EQ(p->m.mid, 0x1234);
  EXPECT_EQ(p->m.token.len, 4);
  EXPECT_EQ(p->payload(), "hi");
  ASSERT_EQ(h_.requests.size(), 1u);
  EXPECT_EQ(h_.requests[0].path, "/a/b");
  EXPECT_EQ(h_.activity, 1u);
  EXPECT_EQ(ep_->counters().requests, 1u);
}

TEST_F(EndpointTest, AsyncAnswerBeforeDeadlineIsPiggybacked) {
  start();
  send(Build{.mid = 5}.path("x").done());
  ASSERT_TRUE(pump_until(&loop_, [&] { return h_.requests.size() == 1; }, 1000));
  pump_for(&loop_, 10);
  EXPECT_TRUE(ep_->respond(h_.requests[0].id, content("later")));
  auto p = recv();
  ASSERT_TRUE(p);
  EXPECT_EQ(p->m.type, Type::kAck);
  EXPECT_EQ(p->payload(), "later");
  EXPECT_FALSE(ep_->respond(h_.requests[0].id, content("again")));
}

TEST_F(EndpointTest, DelayedAnswerGetsEmptyAckThenConResponse) {
  start();
  send(Build{.mid = 77}.path("slow").done());
  auto ack = recv();
  ASSERT_TRUE(ack && ack->ok);
  EXPECT_EQ(ack->m.type, Type::kAck);
  EXPECT_EQ(ack->m.code, code::kEmpty);
  EXPECT_EQ(ack->m.mid, 77);
  ASSERT_EQ(h_.requests.size(), 1u);
  // A retransmission of the request now replays the empty ACK, not a second upcall.
  send(Build{.mid = 77}.path("slow").done());
  auto again = recv();
  ASSERT_TRUE(again);
  EXPECT_EQ(again->m.code, code::kEmpty);
  EXPECT_EQ(h_.requests.size(), 1u);

  EXPECT_TRUE(ep_->respond(h_.requests[0].id, content("done")));
  auto resp = recv();
  ASSERT_TRUE(resp && resp->ok);
  EXPECT_EQ(resp->m.type, Type::kCon);
  EXPECT_EQ(resp->m.code, code::kContent);
  EXPECT_EQ(Bytes(resp->m.token.view().begin(), resp->m.token.view().end()), Build{}.token);
  EXPECT_EQ(resp->payload(), "done");
  // Unacknowledged: it is retransmitted with the same MID.
  auto re = recv(500);
  ASSERT_TRUE(re);
  EXPECT_EQ(re->m.mid, resp->m.mid);
  send(Build{.type = Type::kAck, .code = code::kEmpty, .mid = resp->m.mid, .token = {}}.done());
  EXPECT_EQ(recv(300), nullptr);
  EXPECT_TRUE(h_.failed.empty());
}

TEST_F(EndpointTest, UnacknowledgedSeparateResponseReportsFailure) {
  start();
  send(Build{.mid = 78}.done());
  ASSERT_TRUE(recv());  // empty ACK
  ep_->respond(h_.requests.at(0).id, content("x"));
  int copies = 0;
  while (recv(400)) ++copies;
  EXPECT_EQ(copies, 1 + static_cast<int>(opts_.max_retransmit));
  EXPECT_EQ(h_.failed.size(), 1u);
  EXPECT_EQ(ep_->counters().con_timeouts, 1u);
}

TEST_F(EndpointTest, DuplicateReplaysCachedReply) {
  start();
  int n = 0;
  h_.respond_with = [&](const Request& r) { ep_->respond(r.id, content(std::to_string(++n))); };
  const Bytes req = Build{.mid = 9}.path("c").done();
  send(req);
  auto a = recv();
  send(req);
  auto b = recv();
  ASSERT_TRUE(a && b);
  EXPECT_EQ(a->bytes, b->bytes);
  EXPECT_EQ(n, 1);
  EXPECT_EQ(ep_->counters().duplicates, 1u);
}

TEST_F(EndpointTest, SameMidNewTokenIsNewRequest) {
  start();
  int n = 0;
  h_.respond_with = [&](const Request& r) { ep_->respond(r.id, content(std::to_string(++n))); };
  send(Build{.mid = 9, .token = {1, 1, 1, 1}}.done());
  auto a = recv();
  send(Build{.mid = 9, .token = {2, 2, 2, 2}}.done());
  auto b = recv();
  ASSERT_TRUE(a && b);
  EXPECT_EQ(a->payload(), "1");
  EXPECT_EQ(b->payload(), "2");
  EXPECT_EQ(b->m.token.bytes[0], 2);
  EXPECT_EQ(ep_->counters().duplicates, 0u);
}

TEST_F(EndpointTest, SameMidFromNewSourcePortIsNewPeer) {
  start();
  h_.respond_with = [&](const Request& r) { ep_->respond(r.id, content(r.peer.to_string())); };
  UdpSocket other;
  const Bytes req = Build{.mid = 300}.done();
  send(req);
  auto a = recv();
  send(req, &other);
  auto b = recv(1000, &other);
  ASSERT_TRUE(a && b);
  EXPECT_NE(a->payload(), b->payload());
  EXPECT_EQ(h_.requests.size(), 2u);
  EXPECT_EQ(ep_->counters().peers, 2u);
}

TEST_F(EndpointTest, PingGetsReset) {
  start();
  send(Build{.code = code::kEmpty, .mid = 0xBEEF, .token = {}}.done());
  auto p = recv();
  ASSERT_TRUE(p && p->ok);
  EXPECT_EQ(p->m.type, Type::kRst);
  EXPECT_EQ(p->m.mid, 0xBEEF);
  EXPECT_TRUE(h_.requests.empty());
  EXPECT_EQ(h_.activity, 1u);
}

TEST_F(EndpointTest, Ipv6) {
  start(fast_options(), "::1");
  h_.respond_with = [&](const Request& r) { ep_->respond(r.id, content("six")); };
  send(Build{.mid = 6}.done());
  auto p = recv();
  ASSERT_TRUE(p);
  EXPECT_EQ(p->payload(), "six");
}

// RFC 7252 §4.2: a CON with a message format error is rejected with a matching RST, wherever
// the error is (4.00 is for well-formed requests the server will not act on).
TEST_F(EndpointTest, MalformedInput) {
  start();
  // Truncated option in a CON request.
  send({0x44, 0x01, 0x00, 0x10, 1, 2, 3, 4, 0xB4, 'a'});
  auto p = recv();
  ASSERT_TRUE(p && p->ok);
  EXPECT_EQ(p->m.type, Type::kRst);
  EXPECT_EQ(p->m.code, code::kEmpty);
  EXPECT_EQ(p->m.mid, 0x10);
  EXPECT_EQ(p->bytes.size(), 4u);
  // Token length 9.
  send({0x49, 0x01, 0x00, 0x11, 1, 2, 3, 4, 5, 6, 7, 8, 9});
  p = recv();
  ASSERT_TRUE(p);
  EXPECT_EQ(p->m.type, Type::kRst);
  EXPECT_EQ(p->m.mid, 0x11);
  // Payload marker without payload.
  send({0x40, 0x01, 0x00, 0x12, 0xFF});
  p = recv();
  ASSERT_TRUE(p);
  EXPECT_EQ(p->m.type, Type::kRst);
  EXPECT_EQ(p->m.mid, 0x12);
  // Option nibble 15 in a CON.
  send({0x40, 0x01, 0x00, 0x16, 0xF1, 0x00});
  p = recv();
  ASSERT_TRUE(p);
  EXPECT_EQ(p->m.type, Type::kRst);
  EXPECT_EQ(p->m.mid, 0x16);
  EXPECT_EQ(ep_->counters().peers, 0u) << "no state for a rejected message";
  // Malformed NON: silence.
  send({0x54, 0x01, 0x00, 0x13, 1, 2, 3, 4, 0xF0});
  EXPECT_EQ(recv(100), nullptr);
  // Unrecognized critical option in a CON request: 4.02.
  send(Build{.mid = 0x14}.opt(2049, {1}).done());
  p = recv();
  ASSERT_TRUE(p);
  EXPECT_EQ(p->m.code, code::kBadOption);
  // Unrecognized elective option: ignored, request goes up.
  send(Build{.mid = 0x15}.opt(2048, {1}).done());
  ASSERT_TRUE(pump_until(&loop_, [&] { return h_.requests.size() == 1; }, 1000));
  // Garbage and short datagrams: nothing, no crash.
  send({0x01});
  send({0xFF, 0xFF, 0xFF, 0xFF});
  p = recv(500);  // the separate ACK for the unanswered request 0x15
  ASSERT_TRUE(p);
  EXPECT_EQ(p->m.code, code::kEmpty);
  EXPECT_GE(ep_->counters().malformed, 5u);
}

TEST_F(EndpointTest, ObserveSequenceConEveryNAndResetDrops) {
  start();
  ObserverId oid = 0;
  h_.respond_with = [&](const Request& r) {
    if (r.observe() == 0u) oid = ep_->respond_observe(r.id, content("v0"));
  };
  send(Build{.mid = 1}.opt_uint(opt::kObserve, 0).path("counter").done());
  auto first = recv();
  ASSERT_TRUE(first && oid);
  EXPECT_EQ(first->m.type, Type::kAck);
  uint32_t last = *first->m.uint_option(opt::kObserve);
  std::vector<Type> types;
  for (int i = 1; i <= 6; ++i) {
    ASSERT_TRUE(ep_->notify(oid, content("v" + std::to_string(i))));
    auto n = recv();
    ASSERT_TRUE(n && n->ok);
    EXPECT_EQ(n->m.token.len, 4);
    const uint32_t seq = *n->m.uint_option(opt::kObserve);
    EXPECT_GT(seq, last);
    last = seq;
    types.push_back(n->m.type);
    if (n->m.type == Type::kCon) {  // the SDK's ACK: empty but carrying the token
      Bytes ack = {0x64, 0x00, static_cast<uint8_t>(n->m.mid >> 8), static_cast<uint8_t>(n->m.mid), 0xA1, 0xB2, 0xC3, 0xD4};
      send(ack);
      pump_for(&loop_, 20);
    }
  }
  EXPECT_EQ(types, (std::vector<Type>{Type::kNon, Type::kNon, Type::kCon, Type::kNon, Type::kNon, Type::kCon}));
  EXPECT_EQ(recv(200), nullptr) << "the token-carrying empty ACK must stop retransmission";
  EXPECT_EQ(ep_->counters().retransmissions, 0u);
  // RST to a NON notification cancels the observation.
  ASSERT_TRUE(ep_->notify(oid, content("v7")));
  auto n = recv();
  ASSERT_TRUE(n);
  ASSERT_EQ(n->m.type, Type::kNon);
  send(Build{.type = Type::kRst, .code = code::kEmpty, .mid = n->m.mid, .token = {}}.done());
  ASSERT_TRUE(pump_until(&loop_, [&] { return !h_.dropped.empty(); }, 1000));
  EXPECT_EQ(h_.dropped[0], std::make_pair(oid, DropReason::kReset));
  EXPECT_FALSE(ep_->notify(oid, content("v8")));
  EXPECT_EQ(ep_->counters().observers, 0u);
}

TEST_F(EndpointTest, ObserverDroppedWhenConNotificationTimesOut) {
  auto o = fast_options();
  o.con_notify_every = 1;
  start(o);
  ObserverId oid = 0;
  h_.respond_with = [&](const Request& r) { oid = ep_->respond_observe(r.id, content("a")); };
  send(Build{.mid = 1}.opt_uint(opt::kObserve, 0).done());
  ASSERT_TRUE(recv());
  ep_->notify(oid, content("b"));
  int copies = 0;
  while (auto p = recv(400)) {
    EXPECT_EQ(p->m.type, Type::kCon);
    ++copies;
  }
  EXPECT_EQ(copies, 3);
  ASSERT_EQ(h_.dropped.size(), 1u);
  EXPECT_EQ(h_.dropped[0].second, DropReason::kTimeout);
}

TEST_F(EndpointTest, ConNotificationAtLeastEveryInterval) {
  auto o = fast_options();
  o.con_notify_every = 1000;
  o.con_notify_interval_ms = 150;
  start(o);
  ObserverId oid = 0;
  h_.respond_with = [&](const Request& r) { oid = ep_->respond_observe(r.id, content("a")); };
  send(Build{.mid = 1}.opt_uint(opt::kObserve, 0).done());
  ASSERT_TRUE(recv());
  ep_->notify(oid, content("b"));
  auto first = recv();
  ASSERT_TRUE(first);
  EXPECT_EQ(first->m.type, Type::kNon);
  pump_for(&loop_, 200);
  ep_->notify(oid, content("c"));
  auto second = recv();
  ASSERT_TRUE(second);
  EXPECT_EQ(second->m.type, Type::kCon);
}

TEST_F(EndpointTest, ErrorAnswerToObserveDoesNotRegister) {
  start();
  ObserverId oid = 1;
  h_.respond_with = [&](const Request& r) { oid = ep_->respond_observe(r.id, Response{.code = code::kUnauthorized}); };
  send(Build{.mid = 1}.opt_uint(opt::kObserve, 0).done());
  auto p = recv();
  ASSERT_TRUE(p);
  EXPECT_EQ(p->m.code, code::kUnauthorized);
  EXPECT_FALSE(p->m.uint_option(opt::kObserve));
  EXPECT_EQ(oid, 0u);
  EXPECT_EQ(ep_->counters().observers, 0u);
}

TEST_F(EndpointTest, ReRegistrationWithSameTokenReplaces) {
  start();
  std::vector<ObserverId> ids;
  h_.respond_with = [&](const Request& r) { ids.push_back(ep_->respond_observe(r.id, content("a"))); };
  send(Build{.mid = 1}.opt_uint(opt::kObserve, 0).done());
  auto a = recv();
  send(Build{.mid = 2}.opt_uint(opt::kObserve, 0).done());
  auto b = recv();
  ASSERT_TRUE(a && b && ids.size() == 2);
  EXPECT_GT(*b->m.uint_option(opt::kObserve), *a->m.uint_option(opt::kObserve));
  ASSERT_EQ(h_.dropped.size(), 1u);
  EXPECT_EQ(h_.dropped[0], std::make_pair(ids[0], DropReason::kReplaced));
  EXPECT_EQ(ep_->counters().observers, 1u);
}

TEST_F(EndpointTest, Block2LargeResponseAndLargeNotification) {
  start();
  std::string big(3000, 0);
  for (size_t i = 0; i < big.size(); ++i) big[i] = static_cast<char>('a' + i % 26);
  ObserverId oid = 0;
  h_.respond_with = [&](const Request& r) {
    ep_->allow_unasked_blocks(r.id);  // a client known to reassemble blocks
    if (r.observe() == 0u) oid = ep_->respond_observe(r.id, content(big));
    else ep_->respond(r.id, content(big));
  };
  uint16_t mid = 100;  // never reused: a reused MID+token would be a duplicate
  auto fetch_all = [&](uint8_t szx, std::string first_payload, Block first) {
    std::string got = first_payload;
    uint32_t num = first.num + 1;
    bool more = first.more;
    while (more) {
      send(Build{.mid = mid++}.path("big").opt_uint(opt::kBlock2, Block{num, false, szx}.encode()).done());
      auto p = recv();
      if (!p) return std::string("timeout");
      auto b = p->m.block_option(opt::kBlock2);
      if (!b || b->num != num) return std::string("bad block");
      got += p->payload();
      more = b->more;
      ++num;
    }
    return got;
  };
  // Server-chosen block size.
  send(Build{.mid = 1}.path("big").done());
  auto p = recv();
  ASSERT_TRUE(p && p->ok);
  auto b = p->m.block_option(opt::kBlock2);
  ASSERT_TRUE(b);
  EXPECT_EQ(b->num, 0u);
  EXPECT_TRUE(b->more);
  EXPECT_EQ(b->size(), 1024u);
  EXPECT_EQ(*p->m.uint_option(opt::kSize2), 3000u);
  const size_t upcalls = h_.requests.size();
  EXPECT_EQ(fetch_all(6, p->payload(), *b), big);
  EXPECT_EQ(h_.requests.size(), upcalls) << "later blocks come from the block cache";
  // Client-chosen block size (szx 2 = 64 bytes) from the first block on.
  send(Build{.mid = 2, .token = {9}}.path("big").opt_uint(opt::kBlock2, Block{0, false, 2}.encode()).done());
  p = recv();
  ASSERT_TRUE(p);
  b = p->m.block_option(opt::kBlock2);
  ASSERT_TRUE(b);
  EXPECT_EQ(b->size(), 64u);
  EXPECT_EQ(p->payload().size(), 64u);
  EXPECT_EQ(fetch_all(2, p->payload(), *b), big);
  // A notification larger than a datagram carries block 0; the rest is fetched (RFC 7959 §2.6).
  send(Build{.mid = 3, .token = {7}}.opt_uint(opt::kObserve, 0).path("big").done());
  p = recv();
  ASSERT_TRUE(p && oid);
  ASSERT_TRUE(p->m.uint_option(opt::kObserve));
  big[0] = 'Z';
  ep_->notify(oid, content(big));
  p = recv();
  ASSERT_TRUE(p);
  ASSERT_TRUE(p->m.uint_option(opt::kObserve));
  b = p->m.block_option(opt::kBlock2);
  ASSERT_TRUE(b && b->more);
  EXPECT_EQ(fetch_all(b->szx, p->payload(), *b), big);
}

TEST_F(EndpointTest, Block1Reassembly) {
  auto o = fast_options();
  o.max_block1_body = 200;
  start(o);
  h_.respond_with = [&](const Request& r) { ep_->respond(r.id, Response{.code = code::kChanged}); };
  std::string body(160, 'q');
  body[159] = '!';
  for (uint32_t num = 0; num < 3; ++num) {
    const bool more = num < 2;
    Build req{.code = code::kPut, .mid = static_cast<uint16_t>(10 + num)};
    req.path("up").opt_uint(opt::kBlock1, Block{num, more, 2}.encode());
    req.payload = bytes_of(std::string_view(body).substr(num * 64, 64));
    send(req.done());
    auto p = recv();
    ASSERT_TRUE(p && p->ok);
    auto echo = p->m.block_option(opt::kBlock1);
    ASSERT_TRUE(echo);
    EXPECT_EQ(echo->num, num);
    EXPECT_EQ(p->m.code, more ? code::kContinue : code::kChanged);
  }
  ASSERT_EQ(h_.requests.size(), 1u);
  EXPECT_EQ(h_.requests[0].payload, body);
  // A later block without its predecessors: 4.08.
  Build gap{.code = code::kPut, .mid = 20};
  gap.path("up2").opt_uint(opt::kBlock1, Block{1, true, 2}.encode());
  gap.payload = Bytes(64, 'x');
  send(gap.done());
  auto p = recv();
  ASSERT_TRUE(p);
  EXPECT_EQ(p->m.code, code::kRequestEntityIncomplete);
  // Over the limit: 4.13 with Size1.
  for (uint32_t num = 0; num < 4; ++num) {
    Build req{.code = code::kPut, .mid = static_cast<uint16_t>(30 + num)};
    req.path("up3").opt_uint(opt::kBlock1, Block{num, true, 2}.encode());
    req.payload = Bytes(64, 'y');
    send(req.done());
    p = recv();
    ASSERT_TRUE(p);
    if (p->m.code == code::kRequestEntityTooLarge) break;
  }
  EXPECT_EQ(p->m.code, code::kRequestEntityTooLarge);
  EXPECT_EQ(*p->m.uint_option(opt::kSize1), 200u);
}

TEST_F(EndpointTest, OversizeNeverSent) {
  auto o = fast_options();
  o.max_datagram = 300;
  start(o);
  const std::string body(5000, 'z');
  h_.respond_with = [&](const Request& r) {
    ep_->allow_unasked_blocks(r.id);
    ep_->respond(r.id, content(body));
  };
  send(Build{.mid = 1}.done());
  auto p = recv();  // recv() asserts the size limit
  ASSERT_TRUE(p);
  EXPECT_LE(p->bytes.size(), 300u);
  EXPECT_TRUE(p->m.block_option(opt::kBlock2)->more);
}

// A client that did not ask for blocks and is not known to reassemble them (the Wilddog SDK)
// never gets a truncated body: a large answer becomes 4.13 with a diagnostic, a large observe
// registration registers nothing, and a notification that grew too large ends the observation.
TEST_F(EndpointTest, LargeBodyWithoutBlocksIs413ForClientsThatDidNotAsk) {
  start();
  std::string big(3000, 'q');
  ObserverId oid = 0;
  std::vector<ObserverId> registered;
  h_.respond_with = [&](const Request& r) {
    if (r.observe() == 0u) registered.push_back(oid = ep_->respond_observe(r.id, content(r.uri_path().empty() ? "s" : big)));
    else ep_->respond(r.id, content(big));
  };
  send(Build{.mid = 1}.path("big").done());
  auto p = recv();
  ASSERT_TRUE(p && p->ok);
  EXPECT_EQ(p->m.type, Type::kAck);
  EXPECT_EQ(p->m.code, code::kRequestEntityTooLarge);
  EXPECT_FALSE(p->m.block_option(opt::kBlock2));
  EXPECT_EQ(p->payload(), "response of 3000 bytes exceeds the 1280-byte datagram; ask with Block2 or read a smaller "
                          "resource");
  // The same client asking with Block2 (early negotiation, RFC 7959 §2.4) gets blocks.
  send(Build{.mid = 2, .token = {2}}.path("big").opt_uint(opt::kBlock2, Block{0, false, 6}.encode()).done());
  p = recv();
  ASSERT_TRUE(p && p->ok);
  EXPECT_EQ(p->m.code, code::kContent);
  ASSERT_TRUE(p->m.block_option(opt::kBlock2));
  EXPECT_TRUE(p->m.block_option(opt::kBlock2)->more);
  // An observe registration of a large snapshot: 4.13, nothing registered.
  send(Build{.mid = 3, .token = {3}}.opt_uint(opt::kObserve, 0).path("big").done());
  p = recv();
  ASSERT_TRUE(p && p->ok);
  EXPECT_EQ(p->m.code, code::kRequestEntityTooLarge);
  EXPECT_FALSE(p->m.uint_option(opt::kObserve));
  ASSERT_EQ(registered.size(), 1u);
  EXPECT_EQ(registered[0], 0u);
  EXPECT_EQ(ep_->counters().observers, 0u);
  // A small snapshot registers; when it grows past one datagram the observation ends with 4.13.
  send(Build{.mid = 4, .token = {4}}.opt_uint(opt::kObserve, 0).done());
  p = recv();
  ASSERT_TRUE(p && p->ok && oid);
  EXPECT_EQ(p->m.code, code::kContent);
  EXPECT_TRUE(ep_->notify(oid, content(big)));
  p = recv();
  ASSERT_TRUE(p && p->ok);
  EXPECT_EQ(p->m.code, code::kRequestEntityTooLarge);
  EXPECT_EQ(p->m.token.len, 1);
  EXPECT_FALSE(p->m.uint_option(opt::kObserve)) << "an error notification ends the observation";
  ASSERT_EQ(h_.dropped.size(), 1u);
  EXPECT_EQ(h_.dropped[0], std::make_pair(oid, DropReason::kTooLarge));
  EXPECT_FALSE(ep_->notify(oid, content("x")));
  EXPECT_EQ(ep_->counters().too_large, 3u);
}

TEST_F(EndpointTest, Size1TravelsOnA413) {
  start();
  h_.respond_with = [&](const Request& r) {
    ep_->respond(r.id, Response{.code = code::kRequestEntityTooLarge, .size1 = 2048u});
  };
  send(Build{.mid = 1}.done());
  auto p = recv();
  ASSERT_TRUE(p && p->ok);
  EXPECT_EQ(p->m.code, code::kRequestEntityTooLarge);
  EXPECT_EQ(p->m.uint_option(opt::kSize1), 2048u);
}

// RFC 7252 §5.4.5: a repeated non-repeatable option is unrecognized; critical -> 4.02, elective ->
// ignored (the first occurrence counts).
TEST_F(EndpointTest, RepeatedNonRepeatableOptions) {
  start();
  h_.respond_with = [&](const Request& r) { ep_->respond(r.id, content(std::string(r.uri_host()))); };
  send(Build{.mid = 1}.opt(opt::kUriHost, bytes_of("a.example")).opt(opt::kUriHost, bytes_of("b.example")).done());
  auto p = recv();
  ASSERT_TRUE(p && p->ok);
  EXPECT_EQ(p->m.code, code::kBadOption);
  EXPECT_EQ(p->payload(), "repeated critical option 3");
  EXPECT_TRUE(h_.requests.empty());
  send(Build{.mid = 2}.opt_uint(opt::kAccept, 50).opt_uint(opt::kAccept, 60).done());
  p = recv();
  ASSERT_TRUE(p && p->ok);
  EXPECT_EQ(p->m.code, code::kBadOption);
  EXPECT_EQ(p->payload(), "repeated critical option 17");
  // A NON request with one is rejected silently.
  send(Build{.type = Type::kNon, .mid = 3}.opt(opt::kUriHost, bytes_of("a")).opt(opt::kUriHost, bytes_of("b")).done());
  EXPECT_EQ(recv(200), nullptr);
  // Elective repeats (Content-Format, Observe) are ignored: the request goes up with the first.
  send(Build{.mid = 4}.opt(opt::kUriHost, bytes_of("h")).opt_uint(opt::kContentFormat, 50)
           .opt_uint(opt::kContentFormat, 60).path("x").path("y").opt(opt::kUriQuery, bytes_of("a=1"))
           .opt(opt::kUriQuery, bytes_of("b=2")).done());
  p = recv();
  ASSERT_TRUE(p && p->ok);
  EXPECT_EQ(p->m.code, code::kContent);
  ASSERT_EQ(h_.requests.size(), 1u);
  EXPECT_EQ(h_.requests[0].path, "/x/y") << "Uri-Path and Uri-Query repeat by definition";
  EXPECT_EQ(ep_->counters().requests, 1u);
}

TEST_F(EndpointTest, BurstLargerThanOneSendBatchIsAnsweredCompletely) {
  start();
  h_.respond_with = [&](const Request& r) { ep_->respond(r.id, content("ok")); };
  constexpr int kBurst = 200;  // several sendmmsg batches within one loop iteration
  for (int i = 0; i < kBurst; ++i) send(Build{.mid = static_cast<uint16_t>(i + 1)}.done());
  std::set<uint16_t> mids;
  while (mids.size() < kBurst) {
    auto p = recv(2000);
    if (!p) break;
    ASSERT_TRUE(p->ok);
    EXPECT_EQ(p->payload(), "ok");
    mids.insert(p->m.mid);
  }
  EXPECT_EQ(mids.size(), static_cast<size_t>(kBurst));
  EXPECT_EQ(ep_->counters().send_errors, 0u);
}

// Datagrams queued outside I/O (here: from a timer, as retransmissions and late answers are)
// leave before the loop blocks in poll, not when the next unrelated event wakes it.
TEST_F(EndpointTest, SendFromTimerLeavesBeforeTheLoopBlocks) {
  auto o = fast_options();
  o.separate_ack_after_ms = 5000;  // no engine timer due soon that would wake the loop anyway
  start(o);
  send(Build{.mid = 9}.path("late").done());
  ASSERT_TRUE(pump_until(&loop_, [&] { return h_.requests.size() == 1; }, 1000));
  struct Ctx {
    Endpoint* ep;
    ExchangeId exchange;
    std::chrono::steady_clock::time_point answered_at, received_at;
    uv_udp_t client;
    char buf[2048];
  } ctx{ep_.get(), 0, {}, {}, {}, {}};
  // The client on the same loop, so the loop's own poll sees the reply arrive.
  uv_udp_init(&loop_, &ctx.client);
  ctx.client.data = &ctx;
  sockaddr_in any;
  uv_ip4_addr("127.0.0.1", 0, &any);
  ASSERT_EQ(uv_udp_bind(&ctx.client, reinterpret_cast<const sockaddr*>(&any), 0), 0);
  sockaddr_in srv;
  uv_ip4_addr("127.0.0.1", server_.port, &srv);
  // Ask again from the uv client so the answer goes to it: a NON request, answered from a timer.
  Bytes req = Build{.type = Type::kNon, .mid = 10, .token = {7}}.path("late").done();
  uv_buf_t b = uv_buf_init(reinterpret_cast<char*>(req.data()), static_cast<unsigned>(req.size()));
  ASSERT_GE(uv_udp_try_send(&ctx.client, &b, 1, reinterpret_cast<const sockaddr*>(&srv)), 0);
  ASSERT_TRUE(pump_until(&loop_, [&] { return h_.requests.size() == 2; }, 1000));
  ctx.exchange = h_.requests[1].id;
  uv_udp_recv_start(
      &ctx.client, [](uv_handle_t* h, size_t, uv_buf_t* out) { *out = uv_buf_init(static_cast<Ctx*>(h->data)->buf, 2048); },
      [](uv_udp_t* h, ssize_t n, const uv_buf_t*, const sockaddr*, unsigned) {
        if (n <= 0) return;
        auto* c = static_cast<Ctx*>(h->data);
        c->received_at = std::chrono::steady_clock::now();
        uv_stop(h->loop);
      });
  uv_timer_t answer, give_up;
  uv_timer_init(&loop_, &answer);
  uv_timer_init(&loop_, &give_up);
  answer.data = give_up.data = &ctx;
  uv_timer_start(&answer, [](uv_timer_t* t) {
    auto* c = static_cast<Ctx*>(t->data);
    c->answered_at = std::chrono::steady_clock::now();
    c->ep->respond(c->exchange, content("from a timer"));
  }, 20, 0);
  uv_timer_start(&give_up, [](uv_timer_t* t) { uv_stop(t->loop); }, 1000, 0);
  uv_run(&loop_, UV_RUN_DEFAULT);  // blocks in poll between events, as tetherd's loop does
  ASSERT_NE(ctx.received_at, std::chrono::steady_clock::time_point{}) << "answer never arrived";
  EXPECT_LT(ctx.received_at - ctx.answered_at, std::chrono::milliseconds(50));
  uv_close(reinterpret_cast<uv_handle_t*>(&answer), nullptr);
  uv_close(reinterpret_cast<uv_handle_t*>(&give_up), nullptr);
  uv_close(reinterpret_cast<uv_handle_t*>(&ctx.client), nullptr);
  uv_run(&loop_, UV_RUN_NOWAIT);
}

TEST_F(EndpointTest, IdlePeersAreEvicted) {
  auto o = fast_options();
  o.exchange_lifetime_ms = 100;
  start(o);
  send(Build{.code = code::kEmpty, .mid = 1, .token = {}}.done());
  ASSERT_TRUE(recv());
  EXPECT_EQ(ep_->counters().peers, 1u);
  EXPECT_TRUE(pump_until(&loop_, [&] { return ep_->counters().peers == 0; }, 3000));
}

// The SDK reopens its socket and rebinds its session (POST /.rst): move_observer sends later
// notifications, and the CON being retransmitted, to the new address.
TEST_F(EndpointTest, MovedObserverIsNotifiedAtItsNewAddress) {
  auto o = fast_options();
  o.con_notify_every = 1;  // every notification is CON
  o.ack_timeout_ms = 100;
  o.max_retransmit = 3;
  start(o);
  ObserverId oid = 0;
  h_.respond_with = [&](const Request& r) {
    if (r.observe() == 0u) oid = ep_->respond_observe(r.id, content("v0"));
    else ep_->respond(r.id, content("rebound"));
  };
  send(Build{.mid = 1}.opt_uint(opt::kObserve, 0).path("room").done());
  auto reg = recv();
  ASSERT_TRUE(reg && oid);
  const uint32_t seq0 = *reg->m.uint_option(opt::kObserve);
  ASSERT_TRUE(ep_->notify(oid, content("v1")));
  auto lost = recv();  // a CON the old socket will never acknowledge
  ASSERT_TRUE(lost);
  EXPECT_EQ(lost->m.type, Type::kCon);
  // New socket; the request that rebinds comes from it (the test handler answers it).
  UdpSocket fresh;
  send(Build{.mid = 2, .token = {9}}.path(".rst").done(), &fresh);
  ASSERT_TRUE(recv(1000, &fresh));
  ASSERT_TRUE(ep_->move_observer(oid, fresh.address()));
  EXPECT_EQ(ep_->observer_state(oid)->peer, fresh.address());
  pump_for(&loop_, 5);
  while (client_->try_recv()) {}  // retransmissions that left before the move
  // The CON in flight is retransmitted to the new address with its MID.
  auto re = recv(1000, &fresh);
  ASSERT_TRUE(re && re->ok);
  EXPECT_EQ(re->m.mid, lost->m.mid);
  EXPECT_EQ(re->payload(), "v1");
  Bytes ack = {0x64, 0x00, static_cast<uint8_t>(re->m.mid >> 8), static_cast<uint8_t>(re->m.mid), 0xA1, 0xB2, 0xC3,
               0xD4};
  send(ack, &fresh);
  pump_for(&loop_, 20);
  ASSERT_TRUE(ep_->notify(oid, content("v2")));
  auto n = recv(1000, &fresh);
  ASSERT_TRUE(n && n->ok);
  EXPECT_EQ(n->payload(), "v2");
  EXPECT_GT(*n->m.uint_option(opt::kObserve), seq0);
  Bytes ack2 = {0x64, 0x00, static_cast<uint8_t>(n->m.mid >> 8), static_cast<uint8_t>(n->m.mid), 0xA1, 0xB2, 0xC3,
                0xD4};
  send(ack2, &fresh);
  pump_for(&loop_, 400);  // longer than the retransmission timeout
  while (auto stray = recv(50)) ADD_FAILURE() << "the old address got a datagram";
  EXPECT_TRUE(h_.dropped.empty()) << "acknowledged at the new address: the observation lives";
  EXPECT_EQ(ep_->counters().observers, 1u);
  EXPECT_FALSE(ep_->move_observer(oid + 1000, fresh.address()));
}

// After a restart the handler re-creates an observation from its saved state; notifications
// continue on the same token with larger Observe values.
TEST_F(EndpointTest, RestoredObserverContinuesOnItsToken) {
  start();
  ObserverId oid = 0;
  h_.respond_with = [&](const Request& r) { oid = ep_->respond_observe(r.id, content("v0")); };
  send(Build{.mid = 1, .token = {5, 6}}.opt_uint(opt::kObserve, 0).path("room").done());
  ASSERT_TRUE(recv() && oid);
  ASSERT_TRUE(ep_->notify(oid, content("v1")));
  auto before = recv();
  ASSERT_TRUE(before);
  std::optional<ObserverState> saved = ep_->observer_state(oid);
  ASSERT_TRUE(saved);
  EXPECT_EQ(saved->seq, *before->m.uint_option(opt::kObserve));
  EXPECT_EQ(saved->token.len, 2);
  EXPECT_EQ(saved->peer, client_->address());
  EXPECT_FALSE(ep_->observer_state(oid + 1000));

  // "Restart": a new endpoint on a new port; the client keeps its socket.
  std::unique_ptr<UdpSocket> device = std::move(client_);
  ep_.reset();
  uv_run(&loop_, UV_RUN_NOWAIT);
  start();
  client_ = std::move(device);
  ObserverState moved = *saved;
  moved.seq += 1u << 22;  // what the gateway does: ahead of anything sent before
  const ObserverId restored = ep_->restore_observer(moved);
  ASSERT_NE(restored, 0u);
  EXPECT_EQ(ep_->counters().observers, 1u);
  ASSERT_TRUE(ep_->notify(restored, content("v2")));
  auto after = recv();
  ASSERT_TRUE(after && after->ok);
  EXPECT_EQ(Bytes(after->m.token.view().begin(), after->m.token.view().end()), (Bytes{5, 6}));
  EXPECT_EQ(*after->m.uint_option(opt::kObserve), moved.seq + 1);
  EXPECT_EQ(after->payload(), "v2");
  // A second restore with the same peer+token replaces the first (no callback).
  const ObserverId again = ep_->restore_observer(moved);
  EXPECT_NE(again, restored);
  EXPECT_FALSE(ep_->notify(restored, content("x")));
  EXPECT_EQ(ep_->counters().observers, 1u);
  EXPECT_TRUE(h_.dropped.empty());
}

// Duplicate detection is scoped to a binding: once the handler declares a new binding for an
// address (a fresh session), a request with an old MID and token is new, not the old reply.
TEST_F(EndpointTest, NewBindingForgetsEarlierDuplicates) {
  start();
  int n = 0;
  ExchangeId opener = 0;
  h_.respond_with = [&](const Request& r) {
    if (!r.uri_path().empty() && r.uri_path()[0] == ".cs") {
      opener = r.id;
      ep_->new_binding(r.id);
    }
    ep_->respond(r.id, content(std::to_string(++n)));
  };
  const Bytes old_request = Build{.mid = 512, .token = {2, 0x45, 0x8b, 0x6b}}.opt_uint(opt::kObserve, 0).path("a").done();
  send(old_request);
  auto first = recv();
  ASSERT_TRUE(first);
  EXPECT_EQ(first->payload(), "1");
  send(old_request);  // a plain retransmission: the cached reply
  auto dup = recv();
  ASSERT_TRUE(dup);
  EXPECT_EQ(dup->bytes, first->bytes);
  EXPECT_EQ(ep_->counters().duplicates, 1u);
  // Re-authentication from the same port opens a new binding ...
  const Bytes open = Build{.code = code::kPost, .mid = 1536, .token = {6, 0xac, 0x4d, 0x70}}.path(".cs").done();
  send(open);
  auto opened = recv();
  ASSERT_TRUE(opened && opener);
  EXPECT_EQ(opened->payload(), "2");
  send(open);  // ... whose own retransmission is still recognised
  auto opened_again = recv();
  ASSERT_TRUE(opened_again);
  EXPECT_EQ(opened_again->bytes, opened->bytes);
  EXPECT_EQ(ep_->counters().duplicates, 2u);
  // The SDK now resends its old request with the same MID and token: answered afresh.
  send(old_request);
  auto fresh = recv();
  ASSERT_TRUE(fresh);
  EXPECT_EQ(fresh->payload(), "3");
  EXPECT_EQ(h_.requests.size(), 3u);
  // Other peers keep their duplicates.
  UdpSocket other;
  send(old_request, &other);
  auto o1 = recv(1000, &other);
  send(old_request, &other);
  auto o2 = recv(1000, &other);
  ASSERT_TRUE(o1 && o2);
  EXPECT_EQ(o1->bytes, o2->bytes);
  ep_->new_binding(opener);  // already answered: unknown exchange, no effect, no crash
}

// A registration answered late goes out as a separate CON; if the client never acknowledges it,
// the observation it created is dropped (not left registered with nobody listening).
TEST_F(EndpointTest, UnacknowledgedLateRegistrationDropsTheObserver) {
  start();
  send(Build{.mid = 7}.opt_uint(opt::kObserve, 0).path("slow").done());
  auto ack = recv();
  ASSERT_TRUE(ack);
  EXPECT_EQ(ack->m.code, code::kEmpty);
  const ObserverId oid = ep_->respond_observe(h_.requests.at(0).id, content("late"));
  ASSERT_NE(oid, 0u);
  int copies = 0;
  while (auto p = recv(400)) {
    EXPECT_EQ(p->m.type, Type::kCon);
    EXPECT_TRUE(p->m.uint_option(opt::kObserve));
    ++copies;
  }
  EXPECT_EQ(copies, 1 + static_cast<int>(opts_.max_retransmit));
  ASSERT_EQ(h_.dropped.size(), 1u);
  EXPECT_EQ(h_.dropped[0], std::make_pair(oid, DropReason::kTimeout));
  EXPECT_TRUE(h_.failed.empty()) << "reported as a dropped observer, not a failed response";
  EXPECT_EQ(ep_->counters().observers, 0u);
}

// The clock seam: time is whatever the test says; timers fire when run_timers() sees them due.
TEST_F(EndpointTest, FakeClockDrivesRetransmissionAndExpiry) {
  auto o = fast_options();
  o.exchange_lifetime_ms = 10000;
  start(o);
  uint64_t now_ms = uv_now(&loop_);  // timers scheduled before the switch stay meaningful
  ep_->set_clock([&] { return now_ms; });
  std::vector<Bytes> out;
  ep_->set_transmit_hook([&](const Address&, std::span<const uint8_t> b) { out.emplace_back(b.begin(), b.end()); });
  Address peer;
  peer.family = AF_INET;
  peer.ip = {10, 0, 0, 1};
  peer.port = 5683;
  const Bytes req = Build{.mid = 1}.path("slow").done();
  ep_->handle_datagram(0, peer, req);
  ASSERT_EQ(h_.requests.size(), 1u);
  ep_->run_timers();
  EXPECT_TRUE(out.empty()) << "nothing due yet";
  now_ms += o.separate_ack_after_ms;
  ep_->run_timers();
  ASSERT_EQ(out.size(), 1u) << "empty ACK once the separate-ACK delay passed";
  ep_->respond(h_.requests[0].id, content("x"));
  ASSERT_EQ(out.size(), 2u);
  for (unsigned i = 0; i < o.max_retransmit; ++i) {
    now_ms += o.ack_timeout_ms << (i + 1);
    ep_->run_timers();
  }
  EXPECT_EQ(out.size(), 2u + o.max_retransmit);
  now_ms += o.ack_timeout_ms << (o.max_retransmit + 1);
  ep_->run_timers();
  EXPECT_EQ(h_.failed.size(), 1u);
  EXPECT_EQ(ep_->counters().dedup_entries, 1u);
  now_ms += o.exchange_lifetime_ms + 2000;  // housekeeping expires the duplicate record
  ep_->run_timers();
  EXPECT_EQ(ep_->counters().dedup_entries, 0u);
}

}  // namespace
