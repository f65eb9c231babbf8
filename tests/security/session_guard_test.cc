// Session-level attacks against the real tetherd (issue 16, items 2, 3 and 5): a session token
// used from a forged address (amplification), token guessing (the flood of forged POST /.cs is in
// session_flood_test.cc: too much for the sanitizer build's daemon). Each
// counts what reaches an address on 127.0.0.0/8 or what the daemon answers and logs; today's main
// fails every assertion marked "main:".
#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <cstdio>
#include <fstream>
#include <sstream>
#include <thread>

#include "tests/integration/sdk_client.h"
#include "tests/integration/spoofed_udp.h"
#include "tests/security/attack_gateway.h"
#include "tests/support/eventually.h"

namespace tether::testing {
namespace {

using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;

size_t TotalBytes(const std::vector<std::string>& datagrams) {
  size_t n = 0;
  for (const std::string& d : datagrams) n += d.size();
  return n;
}

size_t CountLines(const std::string& log, const std::string& needle) {
  size_t n = 0;
  for (size_t at = 0; (at = log.find(needle, at)) != std::string::npos; at += needle.size()) ++n;
  return n;
}

// Item 2: an attacker with a valid session sends reads and observe registrations "from" a victim's
// address. main: a GET got the whole ~1 KB snapshot (25x the request) and each observe registered
// an observation that notified the victim. Required: every answer no larger than its request, and
// nothing more once the path changes. The device itself recovers from a port change as the SDK does.
TEST(SessionGuard, SessionTokenFromAnotherAddressGetsNoMoreThanItSent) {
  AttackGateway gw;
  gw.Start();
  SpoofedUdp spoof;
  const std::string victim_ip = SpoofedUdp::LoopbackSource(5151);
  Sink victim(victim_ip);
  SdkClient attacker(gw.port());
  ASSERT_TRUE(attacker.Open());
  ASSERT_EQ(attacker.Put("big", CborText(std::string(1000, 'x'))).CodeString(), "2.05");

  size_t sent = 0;
  std::vector<std::string> requests;
  for (int i = 0; i < 20; ++i) {
    // Half plain reads, half observe registrations, each with the attacker's own valid token.
    const std::optional<uint32_t> observe = i % 2 ? std::optional<uint32_t>(0u) : std::nullopt;
    requests.push_back(attacker.Build(1, {"big"}, {".cs=" + attacker.short_token()}, "", observe, {}, {}));
  }
  for (const std::string& pkt : requests) {
    ASSERT_TRUE(spoof.Send(victim_ip, victim.port(), "127.0.0.1", gw.port(), pkt));
    sent += pkt.size();
  }
  const std::vector<std::string> answers = victim.Drain(500ms);
  size_t largest = 0;
  for (const std::string& a : answers) largest = std::max(largest, a.size());
  std::printf("victim: %zu answers, %zu bytes (largest %zu) for %zu bytes of requests\n", answers.size(),
              TotalBytes(answers), largest, sent);
  EXPECT_LE(largest, requests.front().size()) << "main: the 1 KB snapshot";
  EXPECT_LE(TotalBytes(answers), sent);
  const size_t not_401 = static_cast<size_t>(std::count_if(answers.begin(), answers.end(), [](const std::string& a) {
    return a.size() < 2 || static_cast<uint8_t>(a[1]) != 0x81;
  }));
  EXPECT_EQ(not_401, 0u) << "every answer a 4.01 (use /.rst)";
  // No observation was registered for the victim: changes send it nothing.
  for (int i = 0; i < 5; ++i) ASSERT_EQ(attacker.Put("big", CborText(std::string(1000, 'a' + i))).CodeString(), "2.05");
  const std::vector<std::string> later = victim.Drain(1s);
  EXPECT_EQ(later.size(), 0u) << "main: notifications of ~1 KB to the victim";
  EXPECT_GT(gw.Metric("tether_auth_failures_total{kind=\"bound_elsewhere\",answer=\"answered\"}"), 0);

  // The device's own port change (the SDK's new socket): 4.01, then /.rst keeps the session, its
  // data and its observation (notified at the new port only).
  SdkClient device(gw.port());
  ASSERT_TRUE(device.Open());
  const CoapReply reg = device.Observe("big");
  ASSERT_EQ(reg.CodeString(), "2.05");
  device.NewSourcePort();
  EXPECT_EQ(device.Get("big").CodeString(), "4.01") << "from the new port before /.rst";
  ASSERT_EQ(device.Rebind().CodeString(), "2.05");
  EXPECT_EQ(device.Get("big").CodeString(), "2.05");
  EXPECT_EQ(device.Ping().CodeString(), "2.05");
  ASSERT_EQ(attacker.Put("big", CborText("moved")).CodeString(), "2.05");
  const auto n = device.WaitFreshNotification(reg.token, 3s);
  ASSERT_TRUE(n) << "the observation followed /.rst";
  EXPECT_EQ(n->payload, CborText("moved"));
}

// Item 3: forged POST /.cs from one victim address. main: every one answered (a 2.05 with two
// tokens, ~3.5x the request) and a session created. Required: opens per source IP are limited
// (device.opens_per_second, burst 2 s worth) and the excess is not answered.
TEST(SessionGuard, ForgedOpensFromOneAddressAreRateLimited) {
  AttackGateway gw;
  gw.Start();
  SpoofedUdp spoof;
  const std::string victim_ip = SpoofedUdp::LoopbackSource(6161);
  Sink victim(victim_ip);
  constexpr int kOpens = 1000;
  size_t sent = 0;
  for (int i = 0; i < kOpens; ++i) {
    const std::string pkt = CoapRequest(2, static_cast<uint16_t>(i), "op" + std::to_string(i % 100), {".cs"}, {"v=2"});
    ASSERT_TRUE(spoof.Send(victim_ip, static_cast<uint16_t>(20000 + i), "127.0.0.1", gw.port(), pkt));
    sent += pkt.size();
  }
  std::this_thread::sleep_for(300ms);
  // The sink listens on one port; the replies went to 1000 ports of that IP: count them by metric.
  const double refused = gw.Metric("tether_session_opens_refused_total{reason=\"rate_limited\"}");
  const double opened = gw.Metric("tether_sessions_unconfirmed");
  std::printf("%d forged opens from one IP: %.0f refused, %.0f unconfirmed sessions\n", kOpens, refused, opened);
  EXPECT_GE(refused, kOpens - 300) << "main: no such metric (-1), every open answered";
  EXPECT_LE(opened, 300);
}

// Item 5: wrong session tokens from one socket, as fast as it can send (the issue: 17,400
// guesses/s answered). Required: answers per source IP limited (device.auth_failures_per_second,
// burst 2 s worth), the rest dropped and counted; failed authentications logged at most about
// once a second with a count of the lines left out (main: one line each).
TEST(SessionGuard, WrongTokensAreAnsweredAtALimitedRateAndLoggedSparingly) {
  AttackGateway gw;
  gw.Start("", "", false, "", "{mode: tokens, tokens: [{device: d1, token: right-token}]}");
  SdkClient guesser(gw.port());
  constexpr int kGuesses = 2000;
  for (int i = 0; i < kGuesses; ++i) {
    char cs[9];
    std::snprintf(cs, sizeof cs, "G%07d", i);
    guesser.SendBytes(CoapRequest(1, static_cast<uint16_t>(i), "gs" + std::to_string(i % 100), {"x"},
                                  {std::string(".cs=") + cs}));
  }
  size_t answers = 0;
  for (auto quiet_since = Clock::now(); Clock::now() - quiet_since < 300ms;) {
    if (guesser.ReceiveNow()) {
      ++answers;
      quiet_since = Clock::now();
    } else {
      std::this_thread::sleep_for(5ms);
    }
  }
  std::printf("%d wrong tokens from one socket: %zu answered\n", kGuesses, answers);
  EXPECT_LE(answers, 120u) << "main: all of them";
  EXPECT_GE(gw.Metric("tether_auth_failures_total{kind=\"unknown_session\",answer=\"dropped\"}"), kGuesses - 120);

  // Wrong auth tokens from one socket (each from its own IP would be the same: the lines are
  // throttled whatever their source).
  for (int i = 0; i < kGuesses; ++i) {
    guesser.SendBytes(CoapRequest(2, static_cast<uint16_t>(30000 + i), "au" + std::to_string(i % 100), {".cs"},
                                  {"v=2"}, "wrong-token-" + std::to_string(i)));
    if (i % 100 == 99) std::this_thread::sleep_for(10ms);  // within the socket buffers on main too
  }
  std::this_thread::sleep_for(1500ms);  // the summary line comes with the next liveness tick
  while (guesser.ReceiveNow()) {
  }
  const std::string log = gw.process().Log();
  const size_t lines = CountLines(log, "failed to authenticate");
  std::printf("%d failed authentications: %zu log lines\n", kGuesses, lines);
  EXPECT_LE(lines, 10u) << "main: one line per attempt";
  EXPECT_NE(log.find("not logged one by one"), std::string::npos) << "the suppressed lines are counted";
}

}  // namespace
}  // namespace tether::testing
