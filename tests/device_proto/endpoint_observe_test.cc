// Endpoint observations over real UDP: notification sequence and CON pacing, observers dropped,
// re-registered, moved to a new address and restored after a restart.
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

TEST_F(EndpointTest, ObserveSequenceConEveryNAndResetDrops) {
  Start();
  ObserverId oid = 0;
  h_.respond_with = [&](const Request& r) {
    if (r.observe() == 0u) oid = ep_->RespondObserve(r.id, Content("v0"));
  };
  Send(Build{.mid = 1}.OptUint(opt::kObserve, 0).Path("counter").done());
  auto first = Recv();
  ASSERT_TRUE(first && oid);
  EXPECT_EQ(first->m.type, Type::kAck);
  uint32_t last = *first->m.UintOption(opt::kObserve);
  std::vector<Type> types;
  for (int i = 1; i <= 6; ++i) {
    ASSERT_TRUE(ep_->Notify(oid, Content("v" + std::to_string(i))));
    auto n = Recv();
    ASSERT_TRUE(n && n->ok);
    EXPECT_EQ(n->m.token.len, 4);
    const uint32_t seq = *n->m.UintOption(opt::kObserve);
    EXPECT_GT(seq, last);
    last = seq;
    types.push_back(n->m.type);
    if (n->m.type == Type::kCon) {  // the SDK's ACK: empty but carrying the token
      Bytes ack = {0x64, 0x00, static_cast<uint8_t>(n->m.mid >> 8), static_cast<uint8_t>(n->m.mid), 0xA1, 0xB2, 0xC3, 0xD4};
      Send(ack);
      PumpFor(&loop_, 20);
    }
  }
  EXPECT_EQ(types, (std::vector<Type>{Type::kNon, Type::kNon, Type::kCon, Type::kNon, Type::kNon, Type::kCon}));
  EXPECT_EQ(Recv(200), nullptr) << "the token-carrying empty ACK must stop retransmission";
  EXPECT_EQ(ep_->counters().retransmissions, 0u);
  // RST to a NON notification cancels the observation.
  ASSERT_TRUE(ep_->Notify(oid, Content("v7")));
  auto n = Recv();
  ASSERT_TRUE(n);
  ASSERT_EQ(n->m.type, Type::kNon);
  Send(Build{.type = Type::kRst, .code = code::kEmpty, .mid = n->m.mid, .token = {}}.done());
  ASSERT_TRUE(PumpUntil(&loop_, [&] { return !h_.dropped.empty(); }, 1000));
  EXPECT_EQ(h_.dropped[0], std::make_pair(oid, DropReason::kReset));
  EXPECT_FALSE(ep_->Notify(oid, Content("v8")));
  EXPECT_EQ(ep_->counters().observers, 0u);
}

TEST_F(EndpointTest, ObserverDroppedWhenConNotificationTimesOut) {
  auto o = FastOptions();
  o.con_notify_every = 1;
  Start(o);
  ObserverId oid = 0;
  h_.respond_with = [&](const Request& r) { oid = ep_->RespondObserve(r.id, Content("a")); };
  Send(Build{.mid = 1}.OptUint(opt::kObserve, 0).done());
  ASSERT_TRUE(Recv());
  ep_->Notify(oid, Content("b"));
  int copies = 0;
  while (auto p = Recv(400)) {
    EXPECT_EQ(p->m.type, Type::kCon);
    ++copies;
  }
  EXPECT_EQ(copies, 3);
  ASSERT_EQ(h_.dropped.size(), 1u);
  EXPECT_EQ(h_.dropped[0].second, DropReason::kTimeout);
}

TEST_F(EndpointTest, ConNotificationAtLeastEveryInterval) {
  auto o = FastOptions();
  o.con_notify_every = 1000;
  o.con_notify_interval_ms = 150;
  Start(o);
  ObserverId oid = 0;
  h_.respond_with = [&](const Request& r) { oid = ep_->RespondObserve(r.id, Content("a")); };
  Send(Build{.mid = 1}.OptUint(opt::kObserve, 0).done());
  ASSERT_TRUE(Recv());
  ep_->Notify(oid, Content("b"));
  auto first = Recv();
  ASSERT_TRUE(first);
  EXPECT_EQ(first->m.type, Type::kNon);
  PumpFor(&loop_, 200);
  ep_->Notify(oid, Content("c"));
  auto second = Recv();
  ASSERT_TRUE(second);
  EXPECT_EQ(second->m.type, Type::kCon);
}

TEST_F(EndpointTest, ErrorAnswerToObserveDoesNotRegister) {
  Start();
  ObserverId oid = 1;
  h_.respond_with = [&](const Request& r) { oid = ep_->RespondObserve(r.id, Response{.code = code::kUnauthorized}); };
  Send(Build{.mid = 1}.OptUint(opt::kObserve, 0).done());
  auto p = Recv();
  ASSERT_TRUE(p);
  EXPECT_EQ(p->m.code, code::kUnauthorized);
  EXPECT_FALSE(p->m.UintOption(opt::kObserve));
  EXPECT_EQ(oid, 0u);
  EXPECT_EQ(ep_->counters().observers, 0u);
}

TEST_F(EndpointTest, ReRegistrationWithSameTokenReplaces) {
  Start();
  std::vector<ObserverId> ids;
  h_.respond_with = [&](const Request& r) { ids.push_back(ep_->RespondObserve(r.id, Content("a"))); };
  Send(Build{.mid = 1}.OptUint(opt::kObserve, 0).done());
  auto a = Recv();
  Send(Build{.mid = 2}.OptUint(opt::kObserve, 0).done());
  auto b = Recv();
  ASSERT_TRUE(a && b && ids.size() == 2);
  EXPECT_GT(*b->m.UintOption(opt::kObserve), *a->m.UintOption(opt::kObserve));
  ASSERT_EQ(h_.dropped.size(), 1u);
  EXPECT_EQ(h_.dropped[0], std::make_pair(ids[0], DropReason::kReplaced));
  EXPECT_EQ(ep_->counters().observers, 1u);
}

// The registration's answer was lost and the client retransmits it (same MID and token): no
// reply is kept for a GET, so it is a re-registration, answered with a fresher Observe value.
TEST_F(EndpointTest, RetransmittedRegistrationReRegisters) {
  Start();
  std::vector<ObserverId> ids;
  h_.respond_with = [&](const Request& r) { ids.push_back(ep_->RespondObserve(r.id, Content("a"))); };
  const Bytes reg = Build{.mid = 1}.OptUint(opt::kObserve, 0).Path("x").done();
  Send(reg);
  auto a = Recv();
  Send(reg);
  auto b = Recv();
  ASSERT_TRUE(a && b);
  ASSERT_EQ(ids.size(), 2u);
  EXPECT_EQ(b->m.mid, 1);
  EXPECT_GT(*b->m.UintOption(opt::kObserve), *a->m.UintOption(opt::kObserve));
  ASSERT_EQ(h_.dropped.size(), 1u);
  EXPECT_EQ(h_.dropped[0], std::make_pair(ids[0], DropReason::kReplaced));
  EXPECT_EQ(ep_->counters().observers, 1u);
  EXPECT_TRUE(ep_->Notify(ids[1], Content("b")));
  auto n = Recv();
  ASSERT_TRUE(n);
  EXPECT_EQ(n->payload(), "b");
}

// The SDK reopens its socket and rebinds its session (POST /.rst): MoveObserver sends later
// notifications, and the CON being retransmitted, to the new address.
TEST_F(EndpointTest, MovedObserverIsNotifiedAtItsNewAddress) {
  auto o = FastOptions();
  o.con_notify_every = 1;  // every notification is CON
  o.ack_timeout_ms = 100;
  o.max_retransmit = 3;
  Start(o);
  ObserverId oid = 0;
  h_.respond_with = [&](const Request& r) {
    if (r.observe() == 0u) oid = ep_->RespondObserve(r.id, Content("v0"));
    else ep_->Respond(r.id, Content("rebound"));
  };
  Send(Build{.mid = 1}.OptUint(opt::kObserve, 0).Path("room").done());
  auto reg = Recv();
  ASSERT_TRUE(reg && oid);
  const uint32_t seq0 = *reg->m.UintOption(opt::kObserve);
  ASSERT_TRUE(ep_->Notify(oid, Content("v1")));
  auto lost = Recv();  // a CON the old socket will never acknowledge
  ASSERT_TRUE(lost);
  EXPECT_EQ(lost->m.type, Type::kCon);
  // New socket; the request that rebinds comes from it (the test handler answers it).
  UdpSocket fresh;
  Send(Build{.mid = 2, .token = {9}}.Path(".rst").done(), &fresh);
  ASSERT_TRUE(Recv(1000, &fresh));
  ASSERT_TRUE(ep_->MoveObserver(oid, fresh.address()));
  EXPECT_EQ(ep_->ObserverStateOf(oid)->peer, fresh.address());
  PumpFor(&loop_, 5);
  while (client_->TryRecv()) {}  // retransmissions that left before the move
  // The CON in flight is retransmitted to the new address with its MID.
  auto re = Recv(1000, &fresh);
  ASSERT_TRUE(re && re->ok);
  EXPECT_EQ(re->m.mid, lost->m.mid);
  EXPECT_EQ(re->payload(), "v1");
  Bytes ack = {0x64, 0x00, static_cast<uint8_t>(re->m.mid >> 8), static_cast<uint8_t>(re->m.mid), 0xA1, 0xB2, 0xC3,
               0xD4};
  Send(ack, &fresh);
  PumpFor(&loop_, 20);
  ASSERT_TRUE(ep_->Notify(oid, Content("v2")));
  auto n = Recv(1000, &fresh);
  ASSERT_TRUE(n && n->ok);
  EXPECT_EQ(n->payload(), "v2");
  EXPECT_GT(*n->m.UintOption(opt::kObserve), seq0);
  Bytes ack2 = {0x64, 0x00, static_cast<uint8_t>(n->m.mid >> 8), static_cast<uint8_t>(n->m.mid), 0xA1, 0xB2, 0xC3,
                0xD4};
  Send(ack2, &fresh);
  PumpFor(&loop_, 400);  // longer than the retransmission timeout
  while (auto stray = Recv(50)) ADD_FAILURE() << "the old address got a datagram";
  EXPECT_TRUE(h_.dropped.empty()) << "acknowledged at the new address: the observation lives";
  EXPECT_EQ(ep_->counters().observers, 1u);
  EXPECT_FALSE(ep_->MoveObserver(oid + 1000, fresh.address()));
}

// After a restart the handler re-creates an observation from its saved state; notifications
// continue on the same token with larger Observe values.
TEST_F(EndpointTest, RestoredObserverContinuesOnItsToken) {
  Start();
  ObserverId oid = 0;
  h_.respond_with = [&](const Request& r) { oid = ep_->RespondObserve(r.id, Content("v0")); };
  Send(Build{.mid = 1, .token = {5, 6}}.OptUint(opt::kObserve, 0).Path("room").done());
  ASSERT_TRUE(Recv() && oid);
  ASSERT_TRUE(ep_->Notify(oid, Content("v1")));
  auto before = Recv();
  ASSERT_TRUE(before);
  std::optional<ObserverState> saved = ep_->ObserverStateOf(oid);
  ASSERT_TRUE(saved);
  EXPECT_EQ(saved->seq, *before->m.UintOption(opt::kObserve));
  EXPECT_EQ(saved->token.len, 2);
  EXPECT_EQ(saved->peer, client_->address());
  EXPECT_FALSE(ep_->ObserverStateOf(oid + 1000));

  // "Restart": a new endpoint on a new port; the client keeps its socket.
  std::unique_ptr<UdpSocket> device = std::move(client_);
  ep_.reset();
  uv_run(&loop_, UV_RUN_NOWAIT);
  Start();
  client_ = std::move(device);
  ObserverState moved = *saved;
  moved.seq += 1u << 22;  // what the gateway does: ahead of anything sent before
  const ObserverId restored = ep_->RestoreObserver(moved);
  ASSERT_NE(restored, 0u);
  EXPECT_EQ(ep_->counters().observers, 1u);
  ASSERT_TRUE(ep_->Notify(restored, Content("v2")));
  auto after = Recv();
  ASSERT_TRUE(after && after->ok);
  EXPECT_EQ(Bytes(after->m.token.view().begin(), after->m.token.view().end()), (Bytes{5, 6}));
  EXPECT_EQ(*after->m.UintOption(opt::kObserve), moved.seq + 1);
  EXPECT_EQ(after->payload(), "v2");
  // A second restore with the same peer+token replaces the first (no callback).
  const ObserverId again = ep_->RestoreObserver(moved);
  EXPECT_NE(again, restored);
  EXPECT_FALSE(ep_->Notify(restored, Content("x")));
  EXPECT_EQ(ep_->counters().observers, 1u);
  EXPECT_TRUE(h_.dropped.empty());
}

// A registration answered late goes out as a separate CON; if the client never acknowledges it,
// the observation it created is dropped (not left registered with nobody listening).
TEST_F(EndpointTest, UnacknowledgedLateRegistrationDropsTheObserver) {
  Start();
  Send(Build{.mid = 7}.OptUint(opt::kObserve, 0).Path("slow").done());
  auto ack = Recv();
  ASSERT_TRUE(ack);
  EXPECT_EQ(ack->m.code, code::kEmpty);
  const ObserverId oid = ep_->RespondObserve(h_.requests.at(0).id, Content("late"));
  ASSERT_NE(oid, 0u);
  int copies = 0;
  while (auto p = Recv(400)) {
    EXPECT_EQ(p->m.type, Type::kCon);
    EXPECT_TRUE(p->m.UintOption(opt::kObserve));
    ++copies;
  }
  EXPECT_EQ(copies, 1 + static_cast<int>(opts_.max_retransmit));
  ASSERT_EQ(h_.dropped.size(), 1u);
  EXPECT_EQ(h_.dropped[0], std::make_pair(oid, DropReason::kTimeout));
  EXPECT_TRUE(h_.failed.empty()) << "reported as a dropped observer, not a failed response";
  EXPECT_EQ(ep_->counters().observers, 0u);
}

}  // namespace
