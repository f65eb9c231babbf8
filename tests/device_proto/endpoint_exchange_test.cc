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
  Start();
  h_.respond_with = [&](const Request& r) { ep_->Respond(r.id, Content("hi")); };
  Send(Build{.mid = 0x1234}.Path("a").Path("b").done());
  auto p = Recv();
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
  Start();
  Send(Build{.mid = 5}.Path("x").done());
  ASSERT_TRUE(PumpUntil(&loop_, [&] { return h_.requests.size() == 1; }, 1000));
  PumpFor(&loop_, 10);
  EXPECT_TRUE(ep_->Respond(h_.requests[0].id, Content("later")));
  auto p = Recv();
  ASSERT_TRUE(p);
  EXPECT_EQ(p->m.type, Type::kAck);
  EXPECT_EQ(p->payload(), "later");
  EXPECT_FALSE(ep_->Respond(h_.requests[0].id, Content("again")));
}

TEST_F(EndpointTest, DelayedAnswerGetsEmptyAckThenConResponse) {
  Start();
  Send(Build{.mid = 77}.Path("slow").done());
  auto ack = Recv();
  ASSERT_TRUE(ack && ack->ok);
  EXPECT_EQ(ack->m.type, Type::kAck);
  EXPECT_EQ(ack->m.code, code::kEmpty);
  EXPECT_EQ(ack->m.mid, 77);
  ASSERT_EQ(h_.requests.size(), 1u);
  // A retransmission of the request now replays the empty ACK, not a second upcall.
  Send(Build{.mid = 77}.Path("slow").done());
  auto again = Recv();
  ASSERT_TRUE(again);
  EXPECT_EQ(again->m.code, code::kEmpty);
  EXPECT_EQ(h_.requests.size(), 1u);

  EXPECT_TRUE(ep_->Respond(h_.requests[0].id, Content("done")));
  auto resp = Recv();
  ASSERT_TRUE(resp && resp->ok);
  EXPECT_EQ(resp->m.type, Type::kCon);
  EXPECT_EQ(resp->m.code, code::kContent);
  EXPECT_EQ(Bytes(resp->m.token.view().begin(), resp->m.token.view().end()), Build{}.token);
  EXPECT_EQ(resp->payload(), "done");
  // Unacknowledged: it is retransmitted with the same MID.
  auto re = Recv(500);
  ASSERT_TRUE(re);
  EXPECT_EQ(re->m.mid, resp->m.mid);
  Send(Build{.type = Type::kAck, .code = code::kEmpty, .mid = resp->m.mid, .token = {}}.done());
  EXPECT_EQ(Recv(300), nullptr);
  EXPECT_TRUE(h_.failed.empty());
  EXPECT_EQ(ep_->counters().duplicates, 1u);
  // Answered: a GET keeps nothing, so a late retransmission is processed again (RFC 7252 §4.5).
  EXPECT_EQ(ep_->counters().dedup_entries, 0u);
  Send(Build{.mid = 77}.Path("slow").done());
  ASSERT_TRUE(PumpUntil(&loop_, [&] { return h_.requests.size() == 2; }, 1000));
  EXPECT_EQ(ep_->counters().duplicates, 1u);
}

TEST_F(EndpointTest, UnacknowledgedSeparateResponseReportsFailure) {
  Start();
  Send(Build{.mid = 78}.done());
  ASSERT_TRUE(Recv());  // empty ACK
  ep_->Respond(h_.requests.at(0).id, Content("x"));
  int copies = 0;
  while (Recv(400)) ++copies;
  EXPECT_EQ(copies, 1 + static_cast<int>(opts_.max_retransmit));
  EXPECT_EQ(h_.failed.size(), 1u);
  EXPECT_EQ(ep_->counters().con_timeouts, 1u);
}

// RFC 7252 §4.5: a retransmitted GET may be processed again instead of answered from a cache.
// The engine keeps no reply for a GET once it is answered, so an idle device costs no cached ping.
TEST_F(EndpointTest, RetransmittedGetAfterItsAnswerIsAnsweredAfresh) {
  Start();
  int n = 0;
  h_.respond_with = [&](const Request& r) { ep_->Respond(r.id, Content(std::to_string(++n))); };
  const Bytes req = Build{.mid = 9}.Path("c").done();
  Send(req);
  auto a = Recv();
  Send(req);
  auto b = Recv();
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
  Start();
  int n = 0;
  h_.respond_with = [&](const Request& r) {
    if (r.uri_path().at(0) == "late") {
      ep_->Respond(r.id, Response{.code = code::kUnauthorized});
    } else if (r.uri_path().at(0) == "drop") {
      ep_->Ignore(r.id);
    } else {
      ep_->Respond(r.id, Content(std::to_string(++n)));
    }
  };
  const Bytes non = Build{.type = Type::kNon, .mid = 10}.Path("c").done();
  Send(non);
  auto a = Recv();
  Send(non);
  auto b = Recv();
  ASSERT_TRUE(a && b);
  EXPECT_EQ(a->payload(), "1");
  EXPECT_EQ(b->payload(), "2");
  EXPECT_EQ(ep_->counters().dedup_entries, 0u);
  const Bytes late = Build{.mid = 11}.Path("late").done();  // refused by the handler
  const Bytes bad = Build{.mid = 12}.Opt(9, BytesOf("?")).done();  // by the engine: unrecognized critical option 9
  for (const Bytes& req : {late, bad}) {
    Send(req);
    auto c = Recv();
    Send(req);
    auto d = Recv();
    ASSERT_TRUE(c && d);
    EXPECT_EQ(code::Cls(c->m.code), 4);
    EXPECT_EQ(d->bytes, c->bytes);
  }
  Send(Build{.mid = 13}.Path("drop").done());  // ignored: its retransmission is silent, not handed up
  PumpFor(&loop_, 20);
  Send(Build{.mid = 13}.Path("drop").done());
  EXPECT_EQ(Recv(200), nullptr);
  EXPECT_EQ(h_.requests.size(), 4u);  // c twice, late and drop once, bad never
  EXPECT_EQ(ep_->counters().duplicates, 3u);
  EXPECT_EQ(ep_->counters().dedup_entries, 3u);
}

// Requests that are not safe keep their reply for EXCHANGE_LIFETIME: a retransmission gets the
// same bytes and is never handed up twice (a repeated write could undo a later one).
TEST_F(EndpointTest, RetransmittedWriteReplaysCachedReply) {
  Start();
  int n = 0;
  h_.respond_with = [&](const Request& r) { ep_->Respond(r.id, Content(std::to_string(++n))); };
  uint16_t mid = 20;
  for (uint8_t method : {code::kPost, code::kPut, code::kDelete}) {
    const Bytes req = Build{.code = method, .mid = mid++}.Path("c").done();
    Send(req);
    auto a = Recv();
    Send(req);
    auto b = Recv();
    ASSERT_TRUE(a && b) << int(method);
    EXPECT_EQ(a->bytes, b->bytes) << int(method);
  }
  EXPECT_EQ(n, 3);
  EXPECT_EQ(h_.requests.size(), 3u);
  EXPECT_EQ(ep_->counters().duplicates, 3u);
  EXPECT_EQ(ep_->counters().dedup_entries, 3u);
}

TEST_F(EndpointTest, SameMidNewTokenIsNewRequest) {
  Start();
  int n = 0;
  h_.respond_with = [&](const Request& r) { ep_->Respond(r.id, Content(std::to_string(++n))); };
  Send(Build{.mid = 9, .token = {1, 1, 1, 1}}.done());
  auto a = Recv();
  Send(Build{.mid = 9, .token = {2, 2, 2, 2}}.done());
  auto b = Recv();
  ASSERT_TRUE(a && b);
  EXPECT_EQ(a->payload(), "1");
  EXPECT_EQ(b->payload(), "2");
  EXPECT_EQ(b->m.token.bytes[0], 2);
  EXPECT_EQ(ep_->counters().duplicates, 0u);
}

TEST_F(EndpointTest, SameMidFromNewSourcePortIsNewPeer) {
  Start();
  h_.respond_with = [&](const Request& r) { ep_->Respond(r.id, Content(r.peer.to_string())); };
  UdpSocket other;
  const Bytes req = Build{.mid = 300}.done();
  Send(req);
  auto a = Recv();
  Send(req, &other);
  auto b = Recv(1000, &other);
  ASSERT_TRUE(a && b);
  EXPECT_NE(a->payload(), b->payload());
  EXPECT_EQ(h_.requests.size(), 2u);
  EXPECT_EQ(ep_->counters().peers, 2u);
}

TEST_F(EndpointTest, PingGetsReset) {
  Start();
  Send(Build{.code = code::kEmpty, .mid = 0xBEEF, .token = {}}.done());
  auto p = Recv();
  ASSERT_TRUE(p && p->ok);
  EXPECT_EQ(p->m.type, Type::kRst);
  EXPECT_EQ(p->m.mid, 0xBEEF);
  EXPECT_TRUE(h_.requests.empty());
  EXPECT_EQ(h_.activity, 1u);
}

TEST_F(EndpointTest, Ipv6) {
  Start(FastOptions(), "::1");
  h_.respond_with = [&](const Request& r) { ep_->Respond(r.id, Content("six")); };
  Send(Build{.mid = 6}.done());
  auto p = Recv();
  ASSERT_TRUE(p);
  EXPECT_EQ(p->payload(), "six");
}

// RFC 7252 §4.2: a CON with a message format error is rejected with a matching RST, wherever
// the error is (4.00 is for well-formed requests the server will not act on).
TEST_F(EndpointTest, MalformedInput) {
  Start();
  // Truncated option in a CON request.
  Send({0x44, 0x01, 0x00, 0x10, 1, 2, 3, 4, 0xB4, 'a'});
  auto p = Recv();
  ASSERT_TRUE(p && p->ok);
  EXPECT_EQ(p->m.type, Type::kRst);
  EXPECT_EQ(p->m.code, code::kEmpty);
  EXPECT_EQ(p->m.mid, 0x10);
  EXPECT_EQ(p->bytes.size(), 4u);
  // Token length 9.
  Send({0x49, 0x01, 0x00, 0x11, 1, 2, 3, 4, 5, 6, 7, 8, 9});
  p = Recv();
  ASSERT_TRUE(p);
  EXPECT_EQ(p->m.type, Type::kRst);
  EXPECT_EQ(p->m.mid, 0x11);
  // Payload marker without payload.
  Send({0x40, 0x01, 0x00, 0x12, 0xFF});
  p = Recv();
  ASSERT_TRUE(p);
  EXPECT_EQ(p->m.type, Type::kRst);
  EXPECT_EQ(p->m.mid, 0x12);
  // Option nibble 15 in a CON.
  Send({0x40, 0x01, 0x00, 0x16, 0xF1, 0x00});
  p = Recv();
  ASSERT_TRUE(p);
  EXPECT_EQ(p->m.type, Type::kRst);
  EXPECT_EQ(p->m.mid, 0x16);
  EXPECT_EQ(ep_->counters().peers, 0u) << "no state for a rejected message";
  // Malformed NON: silence.
  Send({0x54, 0x01, 0x00, 0x13, 1, 2, 3, 4, 0xF0});
  EXPECT_EQ(Recv(100), nullptr);
  // Unrecognized critical option in a CON request: 4.02.
  Send(Build{.mid = 0x14}.Opt(2049, {1}).done());
  p = Recv();
  ASSERT_TRUE(p);
  EXPECT_EQ(p->m.code, code::kBadOption);
  // Unrecognized elective option: ignored, request goes up.
  Send(Build{.mid = 0x15}.Opt(2048, {1}).done());
  ASSERT_TRUE(PumpUntil(&loop_, [&] { return h_.requests.size() == 1; }, 1000));
  // Garbage and short datagrams: nothing, no crash.
  Send({0x01});
  Send({0xFF, 0xFF, 0xFF, 0xFF});
  p = Recv(500);  // the separate ACK for the unanswered request 0x15
  ASSERT_TRUE(p);
  EXPECT_EQ(p->m.code, code::kEmpty);
  EXPECT_GE(ep_->counters().malformed, 5u);
}

// RFC 7252 §5.4.5: a repeated non-repeatable option is unrecognized; critical -> 4.02, elective ->
// ignored (the first occurrence counts).
TEST_F(EndpointTest, RepeatedNonRepeatableOptions) {
  Start();
  h_.respond_with = [&](const Request& r) { ep_->Respond(r.id, Content(std::string(r.uri_host()))); };
  Send(Build{.mid = 1}.Opt(opt::kUriHost, BytesOf("a.example")).Opt(opt::kUriHost, BytesOf("b.example")).done());
  auto p = Recv();
  ASSERT_TRUE(p && p->ok);
  EXPECT_EQ(p->m.code, code::kBadOption);
  EXPECT_EQ(p->payload(), "repeated critical option 3");
  EXPECT_TRUE(h_.requests.empty());
  Send(Build{.mid = 2}.OptUint(opt::kAccept, 50).OptUint(opt::kAccept, 60).done());
  p = Recv();
  ASSERT_TRUE(p && p->ok);
  EXPECT_EQ(p->m.code, code::kBadOption);
  EXPECT_EQ(p->payload(), "repeated critical option 17");
  // A NON request with one is rejected silently.
  Send(Build{.type = Type::kNon, .mid = 3}.Opt(opt::kUriHost, BytesOf("a")).Opt(opt::kUriHost, BytesOf("b")).done());
  EXPECT_EQ(Recv(200), nullptr);
  // Elective repeats (Content-Format, Observe) are ignored: the request goes up with the first.
  Send(Build{.mid = 4}.Opt(opt::kUriHost, BytesOf("h")).OptUint(opt::kContentFormat, 50)
           .OptUint(opt::kContentFormat, 60).Path("x").Path("y").Opt(opt::kUriQuery, BytesOf("a=1"))
           .Opt(opt::kUriQuery, BytesOf("b=2")).done());
  p = Recv();
  ASSERT_TRUE(p && p->ok);
  EXPECT_EQ(p->m.code, code::kContent);
  ASSERT_EQ(h_.requests.size(), 1u);
  EXPECT_EQ(h_.requests[0].path, "/x/y") << "Uri-Path and Uri-Query repeat by definition";
  EXPECT_EQ(ep_->counters().requests, 1u);
}

// Duplicate detection is scoped to a binding: once the handler declares a new binding for an
// address (a fresh session), a request with an old MID and token is new, not the old reply.
TEST_F(EndpointTest, NewBindingForgetsEarlierDuplicates) {
  Start();
  int n = 0;
  ExchangeId opener = 0;
  h_.respond_with = [&](const Request& r) {
    if (!r.uri_path().empty() && r.uri_path()[0] == ".cs") {
      opener = r.id;
      ep_->NewBinding(r.id);
    }
    ep_->Respond(r.id, Content(std::to_string(++n)));
  };
  // A write: its reply is kept (a GET's is not, and would be answered afresh anyway).
  const Bytes old_request = Build{.code = code::kPut, .mid = 512, .token = {2, 0x45, 0x8b, 0x6b}}.Path("a").done();
  Send(old_request);
  auto first = Recv();
  ASSERT_TRUE(first);
  EXPECT_EQ(first->payload(), "1");
  Send(old_request);  // a plain retransmission: the cached reply
  auto dup = Recv();
  ASSERT_TRUE(dup);
  EXPECT_EQ(dup->bytes, first->bytes);
  EXPECT_EQ(ep_->counters().duplicates, 1u);
  // Re-authentication from the same port opens a new binding ...
  const Bytes open = Build{.code = code::kPost, .mid = 1536, .token = {6, 0xac, 0x4d, 0x70}}.Path(".cs").done();
  Send(open);
  auto opened = Recv();
  ASSERT_TRUE(opened && opener);
  EXPECT_EQ(opened->payload(), "2");
  Send(open);  // ... whose own retransmission is still recognised
  auto opened_again = Recv();
  ASSERT_TRUE(opened_again);
  EXPECT_EQ(opened_again->bytes, opened->bytes);
  EXPECT_EQ(ep_->counters().duplicates, 2u);
  // The SDK now resends its old request with the same MID and token: answered afresh.
  Send(old_request);
  auto fresh = Recv();
  ASSERT_TRUE(fresh);
  EXPECT_EQ(fresh->payload(), "3");
  EXPECT_EQ(h_.requests.size(), 3u);
  // Other peers keep their duplicates.
  UdpSocket other;
  Send(old_request, &other);
  auto o1 = Recv(1000, &other);
  Send(old_request, &other);
  auto o2 = Recv(1000, &other);
  ASSERT_TRUE(o1 && o2);
  EXPECT_EQ(o1->bytes, o2->bytes);
  ep_->NewBinding(opener);  // already answered: unknown exchange, no effect, no crash
}

// The reply to the request that opened a binding (a session's POST /.cs) is kept only until the
// peer's next new request in that binding: a client sends that request only once it has the
// reply (the SDK pings right after opening), so no retransmission of the opener can follow, and
// an idle device does not hold a cached reply for EXCHANGE_LIFETIME. Until then a retransmission
// of the opener gets the same bytes; a stale copy arriving after that is a new request.
TEST_F(EndpointTest, BindingOpenerReplyIsKeptUntilThePeersNextRequest) {
  Start();
  int n = 0;
  h_.respond_with = [&](const Request& r) {
    if (!r.uri_path().empty() && r.uri_path()[0] == ".cs") ep_->NewBinding(r.id);
    ep_->Respond(r.id, Content(std::to_string(++n)));
  };
  const Bytes open = Build{.code = code::kPost, .mid = 7, .token = {4, 1, 2, 3}}.Path(".cs").done();
  Send(open);
  auto opened = Recv();
  ASSERT_TRUE(opened);
  EXPECT_EQ(opened->payload(), "1");
  // The SDK's retransmissions (+2 s, +6 s): the same bytes, never handed up again.
  for (int i = 0; i < 2; ++i) {
    Send(open);
    auto again = Recv();
    ASSERT_TRUE(again);
    EXPECT_EQ(again->bytes, opened->bytes);
  }
  EXPECT_EQ(h_.requests.size(), 1u);
  EXPECT_EQ(ep_->counters().dedup_entries, 1u);
  // Another peer's request does not release it.
  UdpSocket other;
  Send(Build{.mid = 8}.Path(".ping").done(), &other);
  ASSERT_TRUE(Recv(1000, &other));
  Send(open);
  auto still = Recv();
  ASSERT_TRUE(still);
  EXPECT_EQ(still->bytes, opened->bytes);
  EXPECT_EQ(ep_->counters().dedup_entries, 1u);
  // A write of the opening peer: the opener's entry goes, the write keeps its own.
  const Bytes write = Build{.code = code::kPut, .mid = 9}.Path("a").done();
  Send(write);
  auto written = Recv();
  ASSERT_TRUE(written);
  EXPECT_EQ(written->payload(), "3");
  EXPECT_EQ(ep_->counters().dedup_entries, 1u);
  Send(write);
  auto rewritten = Recv();
  ASSERT_TRUE(rewritten);
  EXPECT_EQ(rewritten->bytes, written->bytes);
  // A stale copy of the opener now is a new request (a new binding, a new answer).
  Send(open);
  auto reopened = Recv();
  ASSERT_TRUE(reopened);
  EXPECT_EQ(reopened->payload(), "4");
  EXPECT_EQ(h_.requests.size(), 4u);
  EXPECT_EQ(ep_->counters().duplicates, 4u);
}

// An opener still being answered (a separate response pending) keeps its entry when the peer
// sends something else meanwhile: its retransmission then gets the answer.
TEST_F(EndpointTest, PendingBindingOpenerKeepsItsEntry) {
  EndpointOptions o = FastOptions();
  o.separate_ack_after_ms = 5000;  // the answer below piggybacks
  Start(o);
  ExchangeId opener = 0;
  h_.respond_with = [&](const Request& r) {
    if (!r.uri_path().empty() && r.uri_path()[0] == ".cs") {
      opener = r.id;
      ep_->NewBinding(r.id);
      return;  // answered later
    }
    ep_->Respond(r.id, Content("x"));
  };
  const Bytes open = Build{.code = code::kPost, .mid = 70, .token = {4, 9, 9, 9}}.Path(".cs").done();
  Send(open);
  EXPECT_EQ(Recv(200), nullptr);
  ASSERT_NE(opener, 0u);
  Send(Build{.mid = 71}.Path(".ping").done());
  ASSERT_TRUE(Recv());
  ASSERT_TRUE(ep_->Respond(opener, Content("opened")));
  auto opened = Recv();
  ASSERT_TRUE(opened);
  EXPECT_EQ(opened->payload(), "opened");
  Send(open);  // its retransmission: the cached answer
  auto again = Recv();
  ASSERT_TRUE(again);
  EXPECT_EQ(again->bytes, opened->bytes);
  EXPECT_EQ(h_.requests.size(), 2u);
}

}  // namespace
