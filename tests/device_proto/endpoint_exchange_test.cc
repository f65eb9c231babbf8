// Endpoint exchanges over real UDP: piggybacked and separate answers, duplicates, pings, IPv6,
// and malformed or oddly optioned requests.
// Designated initializers name only the fields a case changes.
#pragma GCC diagnostic ignored "-Wmissing-field-initializers"
#include <gtest/gtest.h>

#include <chrono>
#include <map>
#include <set>

#include "tests/device_proto/endpoint_fixture.h"

using namespace tether::coap;
using namespace tether::coap::test;

namespace {

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
  EXPECT_EQ(ep_->counters().duplicates, 1u);
  // Answered: a GET keeps nothing, so a late retransmission is processed again (RFC 7252 §4.5).
  EXPECT_EQ(ep_->counters().dedup_entries, 0u);
  send(Build{.mid = 77}.path("slow").done());
  ASSERT_TRUE(pump_until(&loop_, [&] { return h_.requests.size() == 2; }, 1000));
  EXPECT_EQ(ep_->counters().duplicates, 1u);
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

// RFC 7252 §4.5: a retransmitted GET may be processed again instead of answered from a cache.
// The engine keeps no reply for a GET once it is answered, so an idle device costs no cached ping.
TEST_F(EndpointTest, RetransmittedGetAfterItsAnswerIsAnsweredAfresh) {
  start();
  int n = 0;
  h_.respond_with = [&](const Request& r) { ep_->respond(r.id, content(std::to_string(++n))); };
  const Bytes req = Build{.mid = 9}.path("c").done();
  send(req);
  auto a = recv();
  send(req);
  auto b = recv();
  ASSERT_TRUE(a && b);
  EXPECT_EQ(a->payload(), "1");
  EXPECT_EQ(b->payload(), "2");
  EXPECT_EQ(b->m.mid, 9);
  EXPECT_EQ(b->m.token, a->m.token);
  EXPECT_EQ(n, 2);
  EXPECT_EQ(h_.requests.size(), 2u);
  EXPECT_EQ(ep_->counters().duplicates, 0u);
  EXPECT_EQ(ep_->counters().dedup_entries, 0u);
}

// A NON GET is answered afresh too. A GET answered with an error keeps its reply: the error may
// hang on state the request changed (a ping steered for being late is on time 2 s later).
TEST_F(EndpointTest, RetransmittedNonGetIsAnsweredAfreshRefusedGetIsReplayed) {
  start();
  int n = 0;
  h_.respond_with = [&](const Request& r) {
    if (r.uri_path().at(0) == "late") {
      ep_->respond(r.id, Response{.code = code::kUnauthorized});
    } else if (r.uri_path().at(0) == "drop") {
      ep_->ignore(r.id);
    } else {
      ep_->respond(r.id, content(std::to_string(++n)));
    }
  };
  const Bytes non = Build{.type = Type::kNon, .mid = 10}.path("c").done();
  send(non);
  auto a = recv();
  send(non);
  auto b = recv();
  ASSERT_TRUE(a && b);
  EXPECT_EQ(a->payload(), "1");
  EXPECT_EQ(b->payload(), "2");
  EXPECT_EQ(ep_->counters().dedup_entries, 0u);
  const Bytes late = Build{.mid = 11}.path("late").done();  // refused by the handler
  const Bytes bad = Build{.mid = 12}.opt(9, bytes_of("?")).done();  // by the engine: unrecognized critical option 9
  for (const Bytes& req : {late, bad}) {
    send(req);
    auto c = recv();
    send(req);
    auto d = recv();
    ASSERT_TRUE(c && d);
    EXPECT_EQ(code::cls(c->m.code), 4);
    EXPECT_EQ(d->bytes, c->bytes);
  }
  send(Build{.mid = 13}.path("drop").done());  // ignored: its retransmission is silent, not handed up
  pump_for(&loop_, 20);
  send(Build{.mid = 13}.path("drop").done());
  EXPECT_EQ(recv(200), nullptr);
  EXPECT_EQ(h_.requests.size(), 4u);  // c twice, late and drop once, bad never
  EXPECT_EQ(ep_->counters().duplicates, 3u);
  EXPECT_EQ(ep_->counters().dedup_entries, 3u);
}

// Requests that are not safe keep their reply for EXCHANGE_LIFETIME: a retransmission gets the
// same bytes and is never handed up twice (a repeated write could undo a later one).
TEST_F(EndpointTest, RetransmittedWriteReplaysCachedReply) {
  start();
  int n = 0;
  h_.respond_with = [&](const Request& r) { ep_->respond(r.id, content(std::to_string(++n))); };
  uint16_t mid = 20;
  for (uint8_t method : {code::kPost, code::kPut, code::kDelete}) {
    const Bytes req = Build{.code = method, .mid = mid++}.path("c").done();
    send(req);
    auto a = recv();
    send(req);
    auto b = recv();
    ASSERT_TRUE(a && b) << int(method);
    EXPECT_EQ(a->bytes, b->bytes) << int(method);
  }
  EXPECT_EQ(n, 3);
  EXPECT_EQ(h_.requests.size(), 3u);
  EXPECT_EQ(ep_->counters().duplicates, 3u);
  EXPECT_EQ(ep_->counters().dedup_entries, 3u);
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
  // A write: its reply is kept (a GET's is not, and would be answered afresh anyway).
  const Bytes old_request = Build{.code = code::kPut, .mid = 512, .token = {2, 0x45, 0x8b, 0x6b}}.path("a").done();
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

// The reply to the request that opened a binding (a session's POST /.cs) is kept only until the
// peer's next new request in that binding: a client sends that request only once it has the
// reply (the SDK pings right after opening), so no retransmission of the opener can follow, and
// an idle device does not hold a cached reply for EXCHANGE_LIFETIME. Until then a retransmission
// of the opener gets the same bytes; a stale copy arriving after that is a new request.
TEST_F(EndpointTest, BindingOpenerReplyIsKeptUntilThePeersNextRequest) {
  start();
  int n = 0;
  h_.respond_with = [&](const Request& r) {
    if (!r.uri_path().empty() && r.uri_path()[0] == ".cs") ep_->new_binding(r.id);
    ep_->respond(r.id, content(std::to_string(++n)));
  };
  const Bytes open = Build{.code = code::kPost, .mid = 7, .token = {4, 1, 2, 3}}.path(".cs").done();
  send(open);
  auto opened = recv();
  ASSERT_TRUE(opened);
  EXPECT_EQ(opened->payload(), "1");
  // The SDK's retransmissions (+2 s, +6 s): the same bytes, never handed up again.
  for (int i = 0; i < 2; ++i) {
    send(open);
    auto again = recv();
    ASSERT_TRUE(again);
    EXPECT_EQ(again->bytes, opened->bytes);
  }
  EXPECT_EQ(h_.requests.size(), 1u);
  EXPECT_EQ(ep_->counters().dedup_entries, 1u);
  // Another peer's request does not release it.
  UdpSocket other;
  send(Build{.mid = 8}.path(".ping").done(), &other);
  ASSERT_TRUE(recv(1000, &other));
  send(open);
  auto still = recv();
  ASSERT_TRUE(still);
  EXPECT_EQ(still->bytes, opened->bytes);
  EXPECT_EQ(ep_->counters().dedup_entries, 1u);
  // A write of the opening peer: the opener's entry goes, the write keeps its own.
  const Bytes write = Build{.code = code::kPut, .mid = 9}.path("a").done();
  send(write);
  auto written = recv();
  ASSERT_TRUE(written);
  EXPECT_EQ(written->payload(), "3");
  EXPECT_EQ(ep_->counters().dedup_entries, 1u);
  send(write);
  auto rewritten = recv();
  ASSERT_TRUE(rewritten);
  EXPECT_EQ(rewritten->bytes, written->bytes);
  // A stale copy of the opener now is a new request (a new binding, a new answer).
  send(open);
  auto reopened = recv();
  ASSERT_TRUE(reopened);
  EXPECT_EQ(reopened->payload(), "4");
  EXPECT_EQ(h_.requests.size(), 4u);
  EXPECT_EQ(ep_->counters().duplicates, 4u);
}

// An opener still being answered (a separate response pending) keeps its entry when the peer
// sends something else meanwhile: its retransmission then gets the answer.
TEST_F(EndpointTest, PendingBindingOpenerKeepsItsEntry) {
  EndpointOptions o = fast_options();
  o.separate_ack_after_ms = 5000;  // the answer below piggybacks
  start(o);
  ExchangeId opener = 0;
  h_.respond_with = [&](const Request& r) {
    if (!r.uri_path().empty() && r.uri_path()[0] == ".cs") {
      opener = r.id;
      ep_->new_binding(r.id);
      return;  // answered later
    }
    ep_->respond(r.id, content("x"));
  };
  const Bytes open = Build{.code = code::kPost, .mid = 70, .token = {4, 9, 9, 9}}.path(".cs").done();
  send(open);
  EXPECT_EQ(recv(200), nullptr);
  ASSERT_NE(opener, 0u);
  send(Build{.mid = 71}.path(".ping").done());
  ASSERT_TRUE(recv());
  ASSERT_TRUE(ep_->respond(opener, content("opened")));
  auto opened = recv();
  ASSERT_TRUE(opened);
  EXPECT_EQ(opened->payload(), "opened");
  send(open);  // its retransmission: the cached answer
  auto again = recv();
  ASSERT_TRUE(again);
  EXPECT_EQ(again->bytes, opened->bytes);
  EXPECT_EQ(h_.requests.size(), 2u);
}

}  // namespace
