// Endpoint body sizes over real UDP: Block2 and Block1 (RFC 7959), the datagram limit, and 4.13
// for clients that did not ask for blocks.
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

TEST_F(EndpointTest, Block2LargeResponseAndLargeNotification) {
  Start();
  std::string big(3000, 0);
  for (size_t i = 0; i < big.size(); ++i) big[i] = static_cast<char>('a' + i % 26);
  ObserverId oid = 0;
  h_.respond_with = [&](const Request& r) {
    ep_->AllowUnaskedBlocks(r.id);  // a client known to reassemble blocks
    if (r.observe() == 0u) oid = ep_->RespondObserve(r.id, Content(big));
    else ep_->Respond(r.id, Content(big));
  };
  uint16_t mid = 100;  // never reused: a reused MID+token would be a duplicate
  auto fetch_all = [&](uint8_t szx, std::string first_payload, Block first) {
    std::string got = first_payload;
    uint32_t num = first.num + 1;
    bool more = first.more;
    while (more) {
      Send(Build{.mid = mid++}.Path("big").OptUint(opt::kBlock2, Block{num, false, szx}.encode()).done());
      auto p = Recv();
      if (!p) return std::string("timeout");
      auto b = p->m.BlockOption(opt::kBlock2);
      if (!b || b->num != num) return std::string("bad block");
      got += p->payload();
      more = b->more;
      ++num;
    }
    return got;
  };
  // Server-chosen block size.
  Send(Build{.mid = 1}.Path("big").done());
  auto p = Recv();
  ASSERT_TRUE(p && p->ok);
  auto b = p->m.BlockOption(opt::kBlock2);
  ASSERT_TRUE(b);
  EXPECT_EQ(b->num, 0u);
  EXPECT_TRUE(b->more);
  EXPECT_EQ(b->size(), 1024u);
  EXPECT_EQ(*p->m.UintOption(opt::kSize2), 3000u);
  const size_t upcalls = h_.requests.size();
  EXPECT_EQ(fetch_all(6, p->payload(), *b), big);
  EXPECT_EQ(h_.requests.size(), upcalls) << "later blocks come from the block cache";
  // Client-chosen block size (szx 2 = 64 bytes) from the first block on.
  Send(Build{.mid = 2, .token = {9}}.Path("big").OptUint(opt::kBlock2, Block{0, false, 2}.encode()).done());
  p = Recv();
  ASSERT_TRUE(p);
  b = p->m.BlockOption(opt::kBlock2);
  ASSERT_TRUE(b);
  EXPECT_EQ(b->size(), 64u);
  EXPECT_EQ(p->payload().size(), 64u);
  EXPECT_EQ(fetch_all(2, p->payload(), *b), big);
  // A notification larger than a datagram carries block 0; the rest is fetched (RFC 7959 §2.6).
  Send(Build{.mid = 3, .token = {7}}.OptUint(opt::kObserve, 0).Path("big").done());
  p = Recv();
  ASSERT_TRUE(p && oid);
  ASSERT_TRUE(p->m.UintOption(opt::kObserve));
  big[0] = 'Z';
  ep_->Notify(oid, Content(big));
  p = Recv();
  ASSERT_TRUE(p);
  ASSERT_TRUE(p->m.UintOption(opt::kObserve));
  b = p->m.BlockOption(opt::kBlock2);
  ASSERT_TRUE(b && b->more);
  EXPECT_EQ(fetch_all(b->szx, p->payload(), *b), big);
}

TEST_F(EndpointTest, Block1Reassembly) {
  auto o = FastOptions();
  o.max_block1_body = 200;
  Start(o);
  h_.respond_with = [&](const Request& r) { ep_->Respond(r.id, Response{.code = code::kChanged}); };
  std::string body(160, 'q');
  body[159] = '!';
  for (uint32_t num = 0; num < 3; ++num) {
    const bool more = num < 2;
    Build req{.code = code::kPut, .mid = static_cast<uint16_t>(10 + num)};
    req.Path("up").OptUint(opt::kBlock1, Block{num, more, 2}.encode());
    req.payload = BytesOf(std::string_view(body).substr(num * 64, 64));
    Send(req.done());
    auto p = Recv();
    ASSERT_TRUE(p && p->ok);
    auto echo = p->m.BlockOption(opt::kBlock1);
    ASSERT_TRUE(echo);
    EXPECT_EQ(echo->num, num);
    EXPECT_EQ(p->m.code, more ? code::kContinue : code::kChanged);
  }
  ASSERT_EQ(h_.requests.size(), 1u);
  EXPECT_EQ(h_.requests[0].payload, body);
  // A later block without its predecessors: 4.08.
  Build gap{.code = code::kPut, .mid = 20};
  gap.Path("up2").OptUint(opt::kBlock1, Block{1, true, 2}.encode());
  gap.payload = Bytes(64, 'x');
  Send(gap.done());
  auto p = Recv();
  ASSERT_TRUE(p);
  EXPECT_EQ(p->m.code, code::kRequestEntityIncomplete);
  // Over the limit: 4.13 with Size1.
  for (uint32_t num = 0; num < 4; ++num) {
    Build req{.code = code::kPut, .mid = static_cast<uint16_t>(30 + num)};
    req.Path("up3").OptUint(opt::kBlock1, Block{num, true, 2}.encode());
    req.payload = Bytes(64, 'y');
    Send(req.done());
    p = Recv();
    ASSERT_TRUE(p);
    if (p->m.code == code::kRequestEntityTooLarge) break;
  }
  EXPECT_EQ(p->m.code, code::kRequestEntityTooLarge);
  EXPECT_EQ(*p->m.UintOption(opt::kSize1), 200u);
}

TEST_F(EndpointTest, OversizeNeverSent) {
  auto o = FastOptions();
  o.max_datagram = 300;
  Start(o);
  const std::string body(5000, 'z');
  h_.respond_with = [&](const Request& r) {
    ep_->AllowUnaskedBlocks(r.id);
    ep_->Respond(r.id, Content(body));
  };
  Send(Build{.mid = 1}.done());
  auto p = Recv();  // Recv() asserts the size limit
  ASSERT_TRUE(p);
  EXPECT_LE(p->bytes.size(), 300u);
  EXPECT_TRUE(p->m.BlockOption(opt::kBlock2)->more);
}

// A client that did not ask for blocks and is not known to reassemble them (the Wilddog SDK)
// never gets a truncated body: a large answer becomes 4.13 with a diagnostic, a large observe
// registration registers nothing, and a notification that grew too large ends the observation.
TEST_F(EndpointTest, LargeBodyWithoutBlocksIs413ForClientsThatDidNotAsk) {
  Start();
  std::string big(3000, 'q');
  ObserverId oid = 0;
  std::vector<ObserverId> registered;
  h_.respond_with = [&](const Request& r) {
    if (r.observe() == 0u) registered.push_back(oid = ep_->RespondObserve(r.id, Content(r.uri_path().empty() ? "s" : big)));
    else ep_->Respond(r.id, Content(big));
  };
  Send(Build{.mid = 1}.Path("big").done());
  auto p = Recv();
  ASSERT_TRUE(p && p->ok);
  EXPECT_EQ(p->m.type, Type::kAck);
  EXPECT_EQ(p->m.code, code::kRequestEntityTooLarge);
  EXPECT_FALSE(p->m.BlockOption(opt::kBlock2));
  EXPECT_EQ(p->payload(), "response of 3000 bytes exceeds the 1280-byte datagram; ask with Block2 or read a smaller "
                          "resource");
  // The same client asking with Block2 (early negotiation, RFC 7959 §2.4) gets blocks.
  Send(Build{.mid = 2, .token = {2}}.Path("big").OptUint(opt::kBlock2, Block{0, false, 6}.encode()).done());
  p = Recv();
  ASSERT_TRUE(p && p->ok);
  EXPECT_EQ(p->m.code, code::kContent);
  ASSERT_TRUE(p->m.BlockOption(opt::kBlock2));
  EXPECT_TRUE(p->m.BlockOption(opt::kBlock2)->more);
  // An observe registration of a large snapshot: 4.13, nothing registered.
  Send(Build{.mid = 3, .token = {3}}.OptUint(opt::kObserve, 0).Path("big").done());
  p = Recv();
  ASSERT_TRUE(p && p->ok);
  EXPECT_EQ(p->m.code, code::kRequestEntityTooLarge);
  EXPECT_FALSE(p->m.UintOption(opt::kObserve));
  ASSERT_EQ(registered.size(), 1u);
  EXPECT_EQ(registered[0], 0u);
  EXPECT_EQ(ep_->counters().observers, 0u);
  // A small snapshot registers; when it grows past one datagram the observation ends with 4.13.
  Send(Build{.mid = 4, .token = {4}}.OptUint(opt::kObserve, 0).done());
  p = Recv();
  ASSERT_TRUE(p && p->ok && oid);
  EXPECT_EQ(p->m.code, code::kContent);
  EXPECT_TRUE(ep_->Notify(oid, Content(big)));
  p = Recv();
  ASSERT_TRUE(p && p->ok);
  EXPECT_EQ(p->m.code, code::kRequestEntityTooLarge);
  EXPECT_EQ(p->m.token.len, 1);
  EXPECT_FALSE(p->m.UintOption(opt::kObserve)) << "an error notification ends the observation";
  ASSERT_EQ(h_.dropped.size(), 1u);
  EXPECT_EQ(h_.dropped[0], std::make_pair(oid, DropReason::kTooLarge));
  EXPECT_FALSE(ep_->Notify(oid, Content("x")));
  EXPECT_EQ(ep_->counters().too_large, 3u);
}

TEST_F(EndpointTest, Size1TravelsOnA413) {
  Start();
  h_.respond_with = [&](const Request& r) {
    ep_->Respond(r.id, Response{.code = code::kRequestEntityTooLarge, .size1 = 2048u});
  };
  Send(Build{.mid = 1}.done());
  auto p = Recv();
  ASSERT_TRUE(p && p->ok);
  EXPECT_EQ(p->m.code, code::kRequestEntityTooLarge);
  EXPECT_EQ(p->m.UintOption(opt::kSize1), 2048u);
}

}  // namespace
