// Endpoint send path and time over real UDP: bursts, sends from timers, idle peers, and the fake
// clock seam.
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

TEST_F(EndpointTest, BurstLargerThanOneSendBatchIsAnsweredCompletely) {
  Start();
  h_.respond_with = [&](const Request& r) { ep_->Respond(r.id, Content("ok")); };
  constexpr int kBurst = 200;  // several sendmmsg batches within one loop iteration
  for (int i = 0; i < kBurst; ++i) Send(Build{.mid = static_cast<uint16_t>(i + 1)}.done());
  std::set<uint16_t> mids;
  while (mids.size() < kBurst) {
    auto p = Recv(2000);
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
  auto o = FastOptions();
  o.separate_ack_after_ms = 5000;  // no engine timer due soon that would wake the loop anyway
  Start(o);
  Send(Build{.mid = 9}.Path("late").done());
  ASSERT_TRUE(PumpUntil(&loop_, [&] { return h_.requests.size() == 1; }, 1000));
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
  Bytes req = Build{.type = Type::kNon, .mid = 10, .token = {7}}.Path("late").done();
  uv_buf_t b = uv_buf_init(reinterpret_cast<char*>(req.data()), static_cast<unsigned>(req.size()));
  ASSERT_GE(uv_udp_try_send(&ctx.client, &b, 1, reinterpret_cast<const sockaddr*>(&srv)), 0);
  ASSERT_TRUE(PumpUntil(&loop_, [&] { return h_.requests.size() == 2; }, 1000));
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
    c->ep->Respond(c->exchange, Content("from a timer"));
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
  auto o = FastOptions();
  o.exchange_lifetime_ms = 100;
  Start(o);
  Send(Build{.code = code::kEmpty, .mid = 1, .token = {}}.done());
  ASSERT_TRUE(Recv());
  EXPECT_EQ(ep_->counters().peers, 1u);
  EXPECT_TRUE(PumpUntil(&loop_, [&] { return ep_->counters().peers == 0; }, 3000));
}

// The clock seam: time is whatever the test says; timers fire when RunTimers() sees them due.
TEST_F(EndpointTest, FakeClockDrivesRetransmissionAndExpiry) {
  auto o = FastOptions();
  o.exchange_lifetime_ms = 10000;
  Start(o);
  uint64_t now_ms = uv_now(&loop_);  // timers scheduled before the switch stay meaningful
  ep_->SetClock([&] { return now_ms; });
  std::vector<Bytes> out;
  ep_->set_transmit_hook([&](const Address&, std::span<const uint8_t> b) { out.emplace_back(b.begin(), b.end()); });
  Address peer;
  peer.family = AF_INET;
  peer.ip = {10, 0, 0, 1};
  peer.port = 5683;
  const Bytes req = Build{.code = code::kPost, .mid = 1}.Path("slow").done();  // a write keeps its record
  ep_->HandleDatagram(0, peer, req);
  ASSERT_EQ(h_.requests.size(), 1u);
  ep_->RunTimers();
  EXPECT_TRUE(out.empty()) << "nothing due yet";
  now_ms += o.separate_ack_after_ms;
  ep_->RunTimers();
  ASSERT_EQ(out.size(), 1u) << "empty ACK once the separate-ACK delay passed";
  ep_->Respond(h_.requests[0].id, Content("x"));
  ASSERT_EQ(out.size(), 2u);
  for (unsigned i = 0; i < o.max_retransmit; ++i) {
    now_ms += o.ack_timeout_ms << (i + 1);
    ep_->RunTimers();
  }
  EXPECT_EQ(out.size(), 2u + o.max_retransmit);
  now_ms += o.ack_timeout_ms << (o.max_retransmit + 1);
  ep_->RunTimers();
  EXPECT_EQ(h_.failed.size(), 1u);
  EXPECT_EQ(ep_->counters().dedup_entries, 1u);
  now_ms += o.exchange_lifetime_ms + 2000;  // housekeeping expires the duplicate record
  ep_->RunTimers();
  EXPECT_EQ(ep_->counters().dedup_entries, 0u);
}

}  // namespace
