// DtlsServer against in-process mbedTLS clients on a fake clock: handshakes for every suite,
// cookies before state, sleeping sessions, the live/handshake caps, rate limits, close_notify,
// timeouts, replay and reconnects.
#include <gtest/gtest.h>

#include "tests/device_proto/dtls_test_client.h"

namespace tether::coap::testing {
namespace {

constexpr int kCcm8 = MBEDTLS_TLS_PSK_WITH_AES_128_CCM_8;
constexpr int kCcm = MBEDTLS_TLS_PSK_WITH_AES_128_CCM;
constexpr int kGcm = MBEDTLS_TLS_PSK_WITH_AES_128_GCM_SHA256;
constexpr int kCbc = MBEDTLS_TLS_PSK_WITH_AES_128_CBC_SHA256;

class SuiteTest : public ::testing::TestWithParam<int> {};

TEST_P(SuiteTest, HandshakeThenDataBothWays) {
  DtlsRig rig;
  DtlsClient c(rig, TestAddress(1, 40000), "dev1", "secret-key-1", GetParam());
  ASSERT_EQ(c.Handshake(), 0);
  EXPECT_EQ(c.suite(), GetParam());
  DtlsCounters k = rig.server().counters();
  EXPECT_EQ(k.hello_verify_sent, 1u) << "the first ClientHello gets a cookie, not a session";
  EXPECT_EQ(k.handshakes_ok, 1u);
  EXPECT_EQ(k.live, 1u);
  EXPECT_EQ(rig.server().Identity(c.addr()), "dev1");

  ASSERT_TRUE(c.Write("hello"));
  ASSERT_EQ(rig.received.size(), 1u);
  EXPECT_EQ(rig.received[0].bytes, "hello");
  EXPECT_EQ(rig.received[0].identity, "dev1");
  EXPECT_EQ(rig.received[0].from, c.addr());

  const std::string reply = "world";
  ASSERT_TRUE(rig.server().Send(c.addr(), {reinterpret_cast<const uint8_t*>(reply.data()), reply.size()}));
  EXPECT_EQ(c.Read(), "world");
}

INSTANTIATE_TEST_SUITE_P(Dtls, SuiteTest, ::testing::Values(kCcm8, kCcm, kGcm, kCbc));

TEST(Dtls, DefaultClientGetsCoapsMandatorySuite) {
  DtlsRig rig;
  DtlsClient c(rig, TestAddress(1, 40000), "dev1", "secret-key-1");  // offers everything it has
  ASSERT_EQ(c.Handshake(), 0);
  EXPECT_EQ(c.suite(), kCcm8);
}

TEST(Dtls, NoStateBeforeTheCookieComesBack) {
  DtlsOptions o;
  o.hellos_per_second = 0;  // one source address, many ports: no rate limit for this test
  DtlsRig rig(o);
  std::vector<std::unique_ptr<DtlsClient>> clients;
  for (uint16_t i = 0; i < 200; ++i) {
    clients.push_back(std::make_unique<DtlsClient>(rig, TestAddress(2, static_cast<uint16_t>(1000 + i)), "dev1",
                                                   "secret-key-1"));
    EXPECT_EQ(clients.back()->Step(), MBEDTLS_ERR_SSL_WANT_READ);  // ClientHello out, HelloVerifyRequest in
    EXPECT_EQ(clients.back()->inbox().size(), 1u);
  }
  const DtlsCounters k = rig.server().counters();
  EXPECT_EQ(k.hello_verify_sent, 200u);
  EXPECT_EQ(k.handshaking + k.live + k.sleeping, 0u) << "a spoofed source costs the server nothing";
}

TEST(Dtls, WrongKeyOrUnknownIdentityFailsAndLeavesNothing) {
  DtlsRig rig;
  DtlsClient wrong(rig, TestAddress(3, 1), "dev1", "not-the-key");
  EXPECT_NE(wrong.Handshake(), 0);
  DtlsClient unknown(rig, TestAddress(3, 2), "nobody", "secret-key-1");
  EXPECT_NE(unknown.Handshake(), 0);
  const DtlsCounters k = rig.server().counters();
  EXPECT_EQ(k.handshakes_ok, 0u);
  EXPECT_EQ(k.handshakes_failed, 2u);
  EXPECT_EQ(k.handshaking + k.live + k.sleeping, 0u);
  EXPECT_TRUE(rig.received.empty());
}

TEST(Dtls, IdleSessionSleepsSmallAndWakesOnEitherSide) {
  DtlsOptions o;
  o.sleep_after_ms = 1000;
  DtlsRig rig(o);
  DtlsClient c(rig, TestAddress(4, 1), "dev1", "secret-key-1");
  ASSERT_EQ(c.Handshake(), 0);
  ASSERT_TRUE(c.Write("one"));
  rig.Advance(1500);
  rig.server().Housekeeping();
  DtlsCounters k = rig.server().counters();
  ASSERT_EQ(k.sleeping, 1u);
  EXPECT_EQ(k.live, 0u);
  EXPECT_GT(k.sleeping_bytes, 0u);
  EXPECT_LT(k.sleeping_bytes, 512u) << "a sleeping session is a few hundred bytes";

  ASSERT_TRUE(c.Write("two"));  // the device wakes it
  ASSERT_EQ(rig.received.size(), 2u);
  EXPECT_EQ(rig.received[1].bytes, "two");
  EXPECT_EQ(rig.received[1].identity, "dev1");
  EXPECT_EQ(rig.server().counters().sessions_woken, 1u);

  rig.Advance(1500);
  rig.server().Housekeeping();
  ASSERT_EQ(rig.server().counters().sleeping, 1u);
  const std::string note = "notification";
  ASSERT_TRUE(rig.server().Send(c.addr(), {reinterpret_cast<const uint8_t*>(note.data()), note.size()}));
  EXPECT_EQ(c.Read(), "notification") << "the gateway wakes it to notify";
  EXPECT_EQ(rig.server().counters().sessions_woken, 2u);
}

TEST(Dtls, LiveCapRotatesSessionsThroughSleepWithoutLosingAny) {
  DtlsOptions o;
  o.max_live = 2;
  DtlsRig rig(o);
  std::vector<std::unique_ptr<DtlsClient>> cs;
  for (uint16_t i = 0; i < 6; ++i) {
    cs.push_back(std::make_unique<DtlsClient>(rig, TestAddress(5, static_cast<uint16_t>(i + 1)), "dev1",
                                              "secret-key-1"));
    ASSERT_EQ(cs.back()->Handshake(), 0) << i;
    ASSERT_TRUE(cs.back()->Write("first"));  // as a CoAP client does; until then mbedTLS keeps the
                                             // server's last flight and the session cannot sleep
    ASSERT_EQ(rig.received.back().bytes, "first");
    EXPECT_LE(rig.server().counters().live, 2u);
  }
  for (int round = 0; round < 3; ++round) {
    for (size_t i = 0; i < cs.size(); ++i) {
      const std::string msg = "r" + std::to_string(round) + "c" + std::to_string(i);
      ASSERT_TRUE(cs[i]->Write(msg));
      ASSERT_FALSE(rig.received.empty());
      ASSERT_EQ(rig.received.back().bytes, msg);
      ASSERT_TRUE(rig.server().Send(cs[i]->addr(), {reinterpret_cast<const uint8_t*>(msg.data()), msg.size()}));
      EXPECT_EQ(cs[i]->Read(), msg);
      EXPECT_LE(rig.server().counters().live, 2u);
    }
  }
  const DtlsCounters k = rig.server().counters();
  EXPECT_EQ(k.live + k.sleeping, 6u);
  EXPECT_GT(k.sessions_slept, 10u);
  EXPECT_EQ(k.sessions_evicted, 0u);
}

TEST(Dtls, CbcSessionCannotSleepSoTheCapClosesIt) {
  DtlsOptions o;
  o.max_live = 1;
  DtlsRig rig(o);
  DtlsClient cbc(rig, TestAddress(6, 1), "dev1", "secret-key-1", kCbc);
  ASSERT_EQ(cbc.Handshake(), 0);
  ASSERT_TRUE(cbc.Write("cbc"));
  DtlsClient aead(rig, TestAddress(6, 2), "dev1", "secret-key-1", kCcm8);
  ASSERT_EQ(aead.Handshake(), 0);
  ASSERT_TRUE(aead.Write("aead"));  // now both count against max_live 1, and the CBC one cannot sleep
  const DtlsCounters k = rig.server().counters();
  EXPECT_EQ(k.sessions_evicted, 1u);
  EXPECT_EQ(k.live, 1u);
  EXPECT_EQ(k.sleeping, 0u);
  EXPECT_FALSE(rig.server().Identity(cbc.addr()).has_value());
  EXPECT_EQ(cbc.Read().rfind("<error", 0), 0u) << "the evicted client was told (close_notify)";
}

TEST(Dtls, ReconnectStormBeyondTheLiveCapLosesNoSession) {
  DtlsOptions o;
  o.max_live = 2;
  DtlsRig rig(o);
  std::vector<std::unique_ptr<DtlsClient>> cs;
  for (uint16_t i = 0; i < 10; ++i) {  // all handshake before any sends a request
    cs.push_back(std::make_unique<DtlsClient>(rig, TestAddress(17, static_cast<uint16_t>(i + 1)), "dev1",
                                              "secret-key-1"));
    ASSERT_EQ(cs.back()->Handshake(), 0) << i;
  }
  EXPECT_EQ(rig.server().counters().sessions_evicted, 0u);
  for (size_t i = 0; i < cs.size(); ++i) {
    const std::string msg = "hello " + std::to_string(i);
    ASSERT_TRUE(cs[i]->Write(msg));
    ASSERT_EQ(rig.received.back().bytes, msg) << i;
  }
  const DtlsCounters k = rig.server().counters();
  EXPECT_EQ(k.sessions_evicted, 0u);
  EXPECT_EQ(k.live, 2u);
  EXPECT_EQ(k.sleeping, 8u);
}

TEST(Dtls, FreshSessionsCountAgainstTheHandshakeCapAndExpire) {
  DtlsOptions o;
  o.max_handshakes = 2;
  o.handshake_timeout_ms = 5000;
  DtlsRig rig(o);
  DtlsClient a(rig, TestAddress(18, 1), "dev1", "secret-key-1");
  DtlsClient b(rig, TestAddress(18, 2), "dev1", "secret-key-1");
  ASSERT_EQ(a.Handshake(), 0);
  ASSERT_EQ(b.Handshake(), 0);  // neither sends anything
  DtlsClient c(rig, TestAddress(18, 3), "dev1", "secret-key-1");
  EXPECT_NE(c.Handshake(), 0);
  EXPECT_EQ(rig.server().counters().hellos_over_cap, 1u);
  ASSERT_TRUE(a.Write("a speaks"));  // no longer fresh: frees its place
  DtlsClient d(rig, TestAddress(18, 4), "dev1", "secret-key-1");
  EXPECT_EQ(d.Handshake(), 0);
  rig.Advance(6000);
  rig.server().Housekeeping();
  EXPECT_FALSE(rig.server().Identity(b.addr()).has_value()) << "silent since its handshake: closed";
  EXPECT_TRUE(rig.server().Identity(a.addr()).has_value());
  EXPECT_EQ(rig.server().counters().sessions_evicted, 2u);  // b and d
}

TEST(Dtls, SessionWithoutDataYetIsKeptLiveWhileOthersSleep) {
  DtlsOptions o;
  o.max_live = 2;
  DtlsRig rig(o);
  DtlsClient quiet(rig, TestAddress(6, 10), "dev1", "secret-key-1");
  ASSERT_EQ(quiet.Handshake(), 0);  // sends nothing yet: mbedTLS still holds its last flight
  DtlsClient a(rig, TestAddress(6, 11), "dev1", "secret-key-1");
  ASSERT_EQ(a.Handshake(), 0);
  ASSERT_TRUE(a.Write("a"));
  DtlsClient b(rig, TestAddress(6, 12), "dev1", "secret-key-1");
  ASSERT_EQ(b.Handshake(), 0);
  ASSERT_TRUE(b.Write("b"));
  EXPECT_EQ(rig.server().counters().sleeping, 0u) << "the quiet one does not take a live place yet";
  ASSERT_TRUE(quiet.Write("late first request"));
  EXPECT_EQ(rig.received.back().bytes, "late first request");
  const DtlsCounters k = rig.server().counters();
  EXPECT_EQ(k.sessions_evicted, 0u);
  EXPECT_EQ(k.sleeping, 1u) << "now it does: the least recently active (a) sleeps";
  EXPECT_EQ(k.live, 2u);
}

TEST(Dtls, HandshakeCapDropsHellosUntilStaleHandshakesTimeOut) {
  DtlsOptions o;
  o.max_handshakes = 2;
  o.handshake_timeout_ms = 5000;
  DtlsRig rig(o);
  DtlsClient a(rig, TestAddress(7, 1), "dev1", "secret-key-1");
  DtlsClient b(rig, TestAddress(7, 2), "dev1", "secret-key-1");
  for (DtlsClient* c : {&a, &b}) {
    ASSERT_EQ(c->Step(), MBEDTLS_ERR_SSL_WANT_READ);  // -> HelloVerifyRequest
    ASSERT_EQ(c->Step(), MBEDTLS_ERR_SSL_WANT_READ);  // cookie back -> the server starts a handshake
  }
  ASSERT_EQ(rig.server().counters().handshaking, 2u);
  DtlsClient c(rig, TestAddress(7, 3), "dev1", "secret-key-1");  // the same source IP as a and b
  EXPECT_EQ(c.Step(), MBEDTLS_ERR_SSL_WANT_READ);
  EXPECT_FALSE(c.inbox().empty()) << "a cookie costs no place: still answered";
  EXPECT_EQ(c.Step(), MBEDTLS_ERR_SSL_WANT_READ);
  EXPECT_TRUE(c.inbox().empty()) << "over the cap, and its source holds as many as any: no answer";
  EXPECT_EQ(rig.server().counters().hellos_over_cap, 1u);
  EXPECT_EQ(rig.server().counters().handshaking, 2u);

  rig.Advance(6000);
  rig.server().Housekeeping();
  EXPECT_EQ(rig.server().counters().handshaking, 0u) << "abandoned handshakes are freed";
  DtlsClient d(rig, TestAddress(7, 4), "dev1", "secret-key-1");
  EXPECT_EQ(d.Handshake(), 0);
}

// Issue 16.7: one source flooding half-open handshakes holds every place, yet a handshake from
// another source takes the place of the flooder's oldest one; sources holding as many places as
// the newcomer would are left alone.
TEST(Dtls, HandshakePlacesAreSharedFairlyBetweenSources) {
  DtlsOptions o;
  o.max_handshakes = 8;
  o.hellos_per_second = 0;
  DtlsRig rig(o);
  std::vector<std::unique_ptr<DtlsClient>> flood;
  auto half_open = [&](uint8_t host, uint16_t port) {
    flood.push_back(std::make_unique<DtlsClient>(rig, TestAddress(host, port), "dev1", "secret-key-1"));
    flood.back()->Step();  // HelloVerifyRequest
    flood.back()->Step();  // the cookie back: the server holds a handshake from now on
  };
  for (uint16_t i = 1; i <= 8; ++i) half_open(20, i);
  ASSERT_EQ(rig.server().counters().handshaking, 8u);
  half_open(20, 9);
  EXPECT_EQ(rig.server().counters().hellos_over_cap, 1u) << "the flooder cannot push out its own";

  DtlsClient device(rig, TestAddress(21, 1), "dev1", "secret-key-1");
  ASSERT_EQ(device.Handshake(), 0) << "another source gets a place during the flood";
  ASSERT_TRUE(device.Write("first request"));
  EXPECT_EQ(rig.received.back().bytes, "first request");
  DtlsCounters k = rig.server().counters();
  EXPECT_EQ(k.handshakes_evicted, 1u);
  EXPECT_EQ(k.handshaking, 7u);

  // Four sources with two places each: a newcomer still gets one (2 >= 0 + 2) ...
  DtlsRig rig2(o);
  std::vector<std::unique_ptr<DtlsClient>> few;  // destroyed before rig2
  for (uint8_t host = 30; host < 34; ++host)
    for (uint16_t port = 1; port <= 2; ++port) {
      few.push_back(std::make_unique<DtlsClient>(rig2, TestAddress(host, port), "dev1", "secret-key-1"));
      few.back()->Step();
      few.back()->Step();
    }
  ASSERT_EQ(rig2.server().counters().handshaking, 8u);
  DtlsClient second(rig2, TestAddress(40, 1), "dev1", "secret-key-1");
  EXPECT_EQ(second.Handshake(), 0);
  // ... but a source that already holds one does not take a place from a source with two.
  DtlsClient again(rig2, TestAddress(40, 2), "dev1", "secret-key-1");
  EXPECT_NE(again.Handshake(), 0);
  EXPECT_EQ(rig2.server().counters().handshakes_evicted, 1u);
}

// A ClientHello whose cookie does not verify costs nobody a place: the eviction happens only once
// the cookie proved the sender's address.
TEST(Dtls, ForgedCookieTakesNobodysPlace) {
  DtlsOptions o;
  o.max_handshakes = 4;
  o.hellos_per_second = 0;
  DtlsRig rig(o);
  std::vector<std::unique_ptr<DtlsClient>> flood;
  for (uint16_t i = 1; i <= 4; ++i) {
    flood.push_back(std::make_unique<DtlsClient>(rig, TestAddress(50, i), "dev1", "secret-key-1"));
    flood.back()->Step();
    flood.back()->Step();
  }
  ASSERT_EQ(rig.server().counters().handshaking, 4u);
  DtlsClient forger(rig, TestAddress(51, 1), "dev1", "secret-key-1");
  ASSERT_EQ(forger.Step(), MBEDTLS_ERR_SSL_WANT_READ);
  ASSERT_EQ(forger.inbox().size(), 1u);
  std::string& hvr = forger.inbox().front();  // record 13 + handshake 12 + version 2 + length 1
  ASSERT_GT(hvr.size(), 30u);
  hvr[29] = static_cast<char>(hvr[29] ^ 0x5A);  // the cookie the forger sends back is wrong
  forger.Step();
  const DtlsCounters k = rig.server().counters();
  EXPECT_EQ(k.handshakes_evicted, 0u);
  EXPECT_EQ(k.handshaking, 4u);
  EXPECT_EQ(k.hello_verify_sent, 4u + 2u) << "the bad cookie was answered with a new one";
}

TEST(Dtls, HellosFromOneSourceAreRateLimited) {
  DtlsOptions o;
  o.hellos_per_second = 5;  // burst of 10
  DtlsRig rig(o);
  std::vector<std::unique_ptr<DtlsClient>> cs;
  for (uint16_t i = 0; i < 30; ++i) {
    cs.push_back(std::make_unique<DtlsClient>(rig, TestAddress(8, static_cast<uint16_t>(i + 1)), "dev1",
                                              "secret-key-1"));
    cs.back()->Step();
  }
  DtlsCounters k = rig.server().counters();
  EXPECT_EQ(k.hello_verify_sent, 10u);
  EXPECT_EQ(k.hellos_rate_limited, 20u);
  DtlsClient other(rig, TestAddress(9, 1), "dev1", "secret-key-1");
  EXPECT_EQ(other.Handshake(), 0) << "other sources are not affected";
  rig.Advance(1000);
  for (uint16_t i = 0; i < 6; ++i) {
    cs.push_back(std::make_unique<DtlsClient>(rig, TestAddress(8, static_cast<uint16_t>(100 + i)), "dev1",
                                              "secret-key-1"));
    cs.back()->Step();
  }
  k = rig.server().counters();
  EXPECT_EQ(k.hello_verify_sent, 10u + 1 + 5) << "the bucket refills at the rate";
  EXPECT_EQ(k.hellos_rate_limited, 21u);
}

TEST(Dtls, CloseNotifyEndsTheSessionAndIsAnswered) {
  DtlsRig rig;
  DtlsClient c(rig, TestAddress(10, 1), "dev1", "secret-key-1");
  ASSERT_EQ(c.Handshake(), 0);
  const size_t before = c.inbox().size();
  c.CloseNotify();
  const DtlsCounters k = rig.server().counters();
  EXPECT_EQ(k.close_notify_in, 1u);
  EXPECT_EQ(k.live + k.sleeping, 0u);
  EXPECT_EQ(c.inbox().size(), before + 1) << "the server's close_notify";
  const std::string x = "x";
  EXPECT_FALSE(rig.server().Send(c.addr(), {reinterpret_cast<const uint8_t*>(x.data()), 1}));
}

TEST(Dtls, SilentSessionsExpire) {
  DtlsOptions o;
  o.session_timeout_ms = 60000;
  o.sleep_after_ms = 1000;
  DtlsRig rig(o);
  DtlsClient c(rig, TestAddress(11, 1), "dev1", "secret-key-1");
  ASSERT_EQ(c.Handshake(), 0);
  ASSERT_TRUE(c.Write("hello"));
  rig.Advance(2000);
  rig.server().Housekeeping();
  EXPECT_EQ(rig.server().counters().sleeping, 1u);
  rig.Advance(60000);
  rig.server().Housekeeping();
  const DtlsCounters k = rig.server().counters();
  EXPECT_EQ(k.sessions_expired, 1u);
  EXPECT_EQ(k.sleeping + k.live, 0u);
  EXPECT_EQ(k.sleeping_bytes, 0u);
  ASSERT_TRUE(c.Write("late"));  // the client does not know: its record is dropped, not decrypted
  EXPECT_EQ(rig.received.size(), 1u);
  EXPECT_EQ(rig.server().counters().records_dropped, 1u);
}

TEST(Dtls, ReplayedRecordIsNotDeliveredTwice) {
  DtlsRig rig;
  DtlsClient c(rig, TestAddress(12, 1), "dev1", "secret-key-1");
  ASSERT_EQ(c.Handshake(), 0);
  ASSERT_TRUE(c.Write("pay once"));
  const std::string record = c.sent().back();
  rig.server().OnDatagram(c.addr(), {reinterpret_cast<const uint8_t*>(record.data()), record.size()});
  EXPECT_EQ(rig.received.size(), 1u);
  // Also across sleep: the replay window is part of the serialized state.
  rig.Advance(20000);
  rig.server().Housekeeping();
  ASSERT_EQ(rig.server().counters().sleeping, 1u);
  rig.server().OnDatagram(c.addr(), {reinterpret_cast<const uint8_t*>(record.data()), record.size()});
  EXPECT_EQ(rig.received.size(), 1u);
  ASSERT_TRUE(c.Write("fresh"));
  EXPECT_EQ(rig.received.back().bytes, "fresh");
}

TEST(Dtls, NewHandshakeFromTheSameAddressReplacesLiveAndSleepingSessions) {
  DtlsOptions o;
  o.sleep_after_ms = 1000;
  DtlsRig rig(o, {{"dev1", "secret-key-1"}, {"dev2", "secret-key-2"}});
  auto first = std::make_unique<DtlsClient>(rig, TestAddress(13, 1), "dev1", "secret-key-1");
  ASSERT_EQ(first->Handshake(), 0);
  first.reset();  // the device rebooted: same address, fresh handshake, another identity
  DtlsClient second(rig, TestAddress(13, 1), "dev2", "secret-key-2");
  ASSERT_EQ(second.Handshake(), 0);
  EXPECT_EQ(rig.server().Identity(second.addr()), "dev2") << "the identity is checked again";
  ASSERT_TRUE(second.Write("after reboot"));
  EXPECT_EQ(rig.received.back().identity, "dev2");

  rig.Advance(2000);
  rig.server().Housekeeping();
  ASSERT_EQ(rig.server().counters().sleeping, 1u);
  DtlsClient third(rig, TestAddress(13, 1), "dev1", "secret-key-1");
  ASSERT_EQ(third.Handshake(), 0) << "a sleeping session is woken to take the reconnect";
  ASSERT_TRUE(third.Write("again"));
  EXPECT_EQ(rig.received.back().identity, "dev1");
  EXPECT_EQ(rig.server().counters().live + rig.server().counters().sleeping, 1u);
}

TEST(Dtls, LostServerFlightIsRetransmittedOnTheTimer) {
  DtlsRig rig;
  DtlsClient c(rig, TestAddress(14, 1), "dev1", "secret-key-1");
  ASSERT_EQ(c.Step(), MBEDTLS_ERR_SSL_WANT_READ);  // HelloVerifyRequest
  c.drop_next_incoming = true;                     // lose the ServerHello flight
  ASSERT_EQ(c.Step(), MBEDTLS_ERR_SSL_WANT_READ);
  ASSERT_TRUE(c.inbox().empty());
  rig.Advance(1100);  // the server's retransmission timer (1 s) fires
  ASSERT_FALSE(c.inbox().empty());
  EXPECT_EQ(c.Handshake(), 0);
}

TEST(Dtls, NoDatagramExceedsTheLimitAndPlaintextIsBounded) {
  DtlsOptions o;
  o.max_datagram = 300;  // small enough that handshake messages are fragmented
  DtlsRig rig(o);
  DtlsClient c(rig, TestAddress(15, 1), "dev1", "secret-key-1", kCbc);
  ASSERT_EQ(c.Handshake(), 0);
  const size_t max = rig.server().max_plaintext();
  const std::string big(max, 'x');
  ASSERT_TRUE(rig.server().Send(c.addr(), {reinterpret_cast<const uint8_t*>(big.data()), big.size()}));
  EXPECT_EQ(c.Read(), big);
  const std::string over(max + 1, 'x');
  EXPECT_FALSE(rig.server().Send(c.addr(), {reinterpret_cast<const uint8_t*>(over.data()), over.size()}));
  for (const auto& [to, size] : rig.sizes) EXPECT_LE(size, 300u);
}

TEST(Dtls, GarbageNeverHurtsAnEstablishedSession) {
  DtlsRig rig;
  DtlsClient c(rig, TestAddress(16, 1), "dev1", "secret-key-1");
  ASSERT_EQ(c.Handshake(), 0);
  const uint8_t junk[] = {23, 0xFE, 0xFD, 0, 1, 0, 0, 0, 0, 0, 9, 0, 4, 1, 2, 3, 4};
  rig.server().OnDatagram(c.addr(), junk);
  rig.server().OnDatagram(TestAddress(16, 2), junk);  // unknown peer, not a ClientHello
  EXPECT_EQ(rig.server().counters().records_dropped, 1u);
  ASSERT_TRUE(c.Write("still fine"));
  EXPECT_EQ(rig.received.back().bytes, "still fine");
}

}  // namespace
}  // namespace tether::coap::testing
