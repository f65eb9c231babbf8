// Which session a POST /.cs replaces (issue 15.6), over real sockets against the real daemon:
// only the same device's, and then its onDisconnect operations carry over instead of running;
// a POST /.cs as another identity, even from the victim's own address, leaves its session alone.
#include <gtest/gtest.h>
#include <signal.h>

#include <thread>

#include "tests/integration/presence_watch.h"
#include "tests/integration/sdk_client.h"
#include "tests/integration/sdk_device.h"
#include "tests/integration/spoofed_udp.h"
#include "tests/integration/tetherd_process.h"
#include "tests/support/eventually.h"

namespace tether::testing {
namespace {

using namespace std::chrono_literals;
constexpr uint8_t kGet = 1, kPost = 2, kPut = 3;

class PresenceIdentity : public ::testing::Test {
 protected:
  void SetUp() override {
    port_ = static_cast<uint16_t>(FreePort());
    gw_.WriteConfig("device:\n  listen: \"127.0.0.1:" + std::to_string(port_) + "\"\n"
                    "  heartbeat_target: 1s\n  session_timeout: 2s\n"
                    "admin:\n  listen: \"127.0.0.1:" + std::to_string(FreePort(false)) + "\"\n"
                    "store:\n  path: ${STORE}\nlog:\n  level: info\n"
                    "apps:\n  - id: tok\n    default: true\n    auth:\n      mode: tokens\n      tokens:\n"
                    "        - { device: victim, token: token-victim }\n"
                    "        - { device: attacker, token: token-attacker }\n"
                    "        - { device: watcher, token: token-watcher }\n"
                    "        - { device: reader, token: token-reader }\n"
                    "  - id: anon\n"
                    "routes:\n  - { name: tok, app: tok, match: \"**\" }\n  - { name: anon, app: anon, match: \"**\" }\n");
    gw_.Start();
    ASSERT_TRUE(gw_.WaitForLog("listening for CoAP", 10s)) << gw_.Log();
    watcher_ = std::make_unique<PresenceWatcher>(port_, "tok", "token-watcher");
  }
  void TearDown() override { watcher_.reset(); }
  // The presence recipe: onDisconnect first (set "gone", push a line to log/<name>), then "online".
  void Announce(SdkClient& c, const std::string& name) {
    ASSERT_EQ(c.Request(kPut, "pres/" + name, CborText("gone"), {".dis=add"}).CodeString(), "2.05");
    ASSERT_EQ(c.Request(kPost, "log/" + name, CborText("left"), {".dis=add"}).CodeString(), "2.05");
    ASSERT_EQ(c.Put("pres/" + name, CborText("online")).CodeString(), "2.05");
    ASSERT_TRUE(Eventually([&] { return watcher_->Value(name) == "online"; }, 3s));
  }
  // Each pings every 300 ms for `d` (well past the 2 s timeout of any session it left behind).
  static void KeepAlive(std::initializer_list<SdkClient*> devices, std::chrono::milliseconds d) {
    for (auto end = std::chrono::steady_clock::now() + d; std::chrono::steady_clock::now() < end;) {
      for (SdkClient* c : devices) EXPECT_EQ(c->Ping().CodeString(), "2.05");
      std::this_thread::sleep_for(300ms);
    }
  }
  // A read by a bystander (its own short-lived session).
  CoapReply Read(const std::string& path) {
    SdkClient reader(port_, "tok");
    EXPECT_TRUE(reader.Open("token-reader"));
    return reader.Request(kGet, path, "", {}, {}, {}, 50u);
  }
  // The device dies now: its registrations must still be armed, and fire exactly once.
  void ExpectArmedAndFiredOnce(const std::string& name) {
    const int64_t died = SteadyMs();
    ASSERT_TRUE(Eventually([&] { return watcher_->FirstSeen(name, "gone", died) > 0; }, 4s))
        << name << ": its onDisconnect registration was lost";
    EXPECT_LE(watcher_->FirstSeen(name, "gone", died) - died, 2'000 + 1'250);
    std::this_thread::sleep_for(2500ms);  // anything left behind would have fired by now
    std::string log = Read("log/" + name).payload;
    EXPECT_EQ(std::count(log.begin(), log.end(), ':'), 1) << name << " fired once, not twice: " << log;
    int gones = 0;
    for (const auto& c : watcher_->Changes()) gones += c.device == name && c.value == "gone";
    EXPECT_EQ(gones, 1) << name << ": one offline, at its death";
  }

  TetherdProcess gw_;
  uint16_t port_ = 0;
  std::unique_ptr<PresenceWatcher> watcher_;
};

// One forged POST /.cs carrying the attacker's own valid token, "from" the victim's address, used
// to end the victim's session: its onDisconnect ran (presence "gone") and its next request got 4.01.
TEST_F(PresenceIdentity, SpoofedOpenAsAnotherDeviceLeavesTheSessionAlone) {
  SdkClient victim(port_, "tok"), attacker(port_, "tok");
  ASSERT_TRUE(victim.Open("token-victim"));
  Announce(victim, "victim");
  SpoofedUdp spoof;
  for (int i = 0; i < 100; ++i) attacker.Prepare(kGet, "x");  // its own message ID and token: no duplicate
  ASSERT_TRUE(spoof.Send("127.0.0.1", victim.local_port(), "127.0.0.1", port_, attacker.PrepareOpen("token-attacker")));
  std::this_thread::sleep_for(300ms);
  EXPECT_EQ(victim.Ping().CodeString(), "2.05") << "the victim's session survived";
  EXPECT_EQ(victim.Get("pres/victim").payload, CborText("online"));
  KeepAlive({&victim}, 3s);
  EXPECT_EQ(watcher_->FirstSeen("victim", "gone", 0), -1) << "no offline blip";
  ExpectArmedAndFiredOnce("victim");
}

// The SDK re-authenticates from a new socket (after 10 s without answers, or a 4.01): the session
// it left behind used to time out and run its onDisconnect although the device was alive, and the
// SDK never registers them again, so its real death later wrote nothing.
TEST_F(PresenceIdentity, ReopenFromANewSocketCarriesTheRegistrationsOver) {
  SdkClient device(port_, "tok");
  ASSERT_TRUE(device.Open("token-victim"));
  Announce(device, "victim");
  const std::string old_session = device.short_token();
  device.NewSourcePort();
  ASSERT_TRUE(device.Open("token-victim"));
  EXPECT_EQ(Read("pres/victim").payload, "\"online\"");
  KeepAlive({&device}, 4s);
  EXPECT_EQ(watcher_->FirstSeen("victim", "gone", 0), -1) << "the session left behind ran its onDisconnect";
  device.set_short_token(old_session);
  EXPECT_EQ(device.Ping().CodeString(), "4.01") << "the old session is gone (continued, not duplicated)";
  ExpectArmedAndFiredOnce("victim");
}

// Re-opening from the same address (the SDK after a 4.01 to a data request) used to end the old
// session at once, its onDisconnect running while the device was alive.
TEST_F(PresenceIdentity, ReopenFromTheSameAddressContinuesTheSession) {
  SdkClient device(port_, "tok"), anon(port_, "anon");
  ASSERT_TRUE(device.Open("token-victim"));
  ASSERT_TRUE(anon.Open());
  Announce(device, "victim");
  Announce(anon, "anon1");
  ASSERT_TRUE(device.Open("token-victim"));
  ASSERT_TRUE(anon.Open());
  KeepAlive({&device, &anon}, 3s);
  EXPECT_EQ(watcher_->FirstSeen("victim", "gone", 0), -1);
  EXPECT_EQ(watcher_->FirstSeen("anon1", "gone", 0), -1);
  ExpectArmedAndFiredOnce("anon1");  // and the victim too, dying at the same time
  EXPECT_GT(watcher_->FirstSeen("victim", "gone", 0), 0);
}

// A device without a stable id (open app, no token): the gateway stops answering, the SDK moves to
// a new source port and keeps sending its old .cs, then re-authenticates from there. When the
// gateway runs again, the token it showed from that port links the two sessions.
TEST_F(PresenceIdentity, AnonymousDeviceIsFollowedByTheTokenItShowed) {
  SdkClient device(port_, "anon");
  device.SetSourceIp("127.0.3.1");
  ASSERT_TRUE(device.Open());
  Announce(device, "anon1");
  gw_.Signal(SIGSTOP);
  device.NewSourcePort();
  device.Send(kGet, ".ping");  // the old .cs from the new port, waiting in the socket
  const std::string open = device.SendOpen("");
  std::this_thread::sleep_for(1500ms);
  gw_.Signal(SIGCONT);
  ASSERT_TRUE(device.AcceptOpen(device.Await(open)));
  KeepAlive({&device}, 3s);
  EXPECT_EQ(watcher_->FirstSeen("anon1", "gone", 0), -1) << "linked by the token seen from the new port";
  ExpectArmedAndFiredOnce("anon1");
}

// The stall: the gateway stops answering, the SDK gives up on its ping after 10 s, moves
// to a new port and sends it again with its old .cs, and after three failures re-authenticates
// from yet another port. All of it waits in the socket; when the gateway runs again, the token
// seen from the device's IP links the new session to the old one (only after the gateway itself
// was away: in normal operation other clients on one IP must not be linked).
TEST_F(PresenceIdentity, AnonymousDeviceReopeningFromAFreshPortAfterAStallIsFollowedByItsIp) {
  SdkClient device(port_, "anon"), other(port_, "anon");
  device.SetSourceIp("127.0.3.2");
  other.SetSourceIp("127.0.3.2");  // another client on the same host, in normal operation
  ASSERT_TRUE(device.Open());
  Announce(device, "anon2");
  device.NewSourcePort();
  EXPECT_EQ(device.Get("pres/anon2").CodeString(), "4.01") << "old .cs from another port: noted, not served";
  ASSERT_TRUE(other.Open());
  Announce(other, "other");
  EXPECT_EQ(device.Ping().CodeString(), "4.01") << "the other client took nothing over (ping: wrong address)";
  EXPECT_EQ(device.Rebind().CodeString(), "2.05");
  gw_.Signal(SIGSTOP);
  device.NewSourcePort();
  device.Send(kGet, ".ping");  // the old .cs from a new port, waiting in the socket
  device.NewSourcePort();      // three failures later, yet another port
  const std::string open = device.SendOpen("");
  std::this_thread::sleep_for(1500ms);
  gw_.Signal(SIGCONT);
  ASSERT_TRUE(device.AcceptOpen(device.Await(open)));
  KeepAlive({&device, &other}, 3s);
  EXPECT_EQ(watcher_->FirstSeen("anon2", "gone", 0), -1) << "linked by the token seen from its IP";
  EXPECT_EQ(watcher_->FirstSeen("other", "gone", 0), -1);
  ExpectArmedAndFiredOnce("anon2");
}

// What remains possible against a device without a stable id: a forged anonymous POST /.cs from its
// address continues its session (the reply goes to the device, which ignores it), so its next
// request gets 4.01 and it re-authenticates; its presence and registrations stay intact.
TEST_F(PresenceIdentity, SpoofedAnonymousOpenCostsARestartNotThePresence) {
  SdkClient victim(port_, "anon"), forger(port_, "anon");
  ASSERT_TRUE(victim.Open());
  Announce(victim, "anon1");
  SpoofedUdp spoof;
  for (int i = 0; i < 100; ++i) forger.Prepare(kGet, "x");  // its own message ID and token: no duplicate
  ASSERT_TRUE(spoof.Send("127.0.0.1", victim.local_port(), "127.0.0.1", port_, forger.PrepareOpen("")));
  std::this_thread::sleep_for(300ms);
  if (victim.Ping().CodeString() == "4.01") {  // as the SDK: /.rst fails too, so it re-authenticates
    EXPECT_EQ(victim.Rebind().CodeString(), "4.00");
    ASSERT_TRUE(victim.Open());
  }
  KeepAlive({&victim}, 3s);
  EXPECT_EQ(watcher_->FirstSeen("anon1", "gone", 0), -1);
  ExpectArmedAndFiredOnce("anon1");
}

// A device rebooting within its timeout opens a new session that continues the old one (it was
// never seen gone); its app then registers the same operations again, which replace the carried
// ones instead of piling up with every reboot.
TEST_F(PresenceIdentity, QuickRebootRegistersAgainWithoutDuplicates) {
  SdkClient first(port_, "tok");
  ASSERT_TRUE(first.Open("token-victim"));
  Announce(first, "victim");
  for (int boot = 0; boot < 3; ++boot) {
    SdkClient next(port_, "tok");  // the new process: a new socket
    ASSERT_TRUE(next.Open("token-victim"));
    Announce(next, "victim");
    if (boot == 2) {
      KeepAlive({&next}, 1s);
      ExpectArmedAndFiredOnce("victim");  // one "gone" and one pushed line, not four
    }
  }
}

// goOffline is a goodbye: the operations run at once, and the next session starts with none.
TEST_F(PresenceIdentity, GoOfflineRunsTheOperationsAndTheNextSessionHasNone) {
  SdkClient device(port_, "tok");
  ASSERT_TRUE(device.Open("token-victim"));
  Announce(device, "victim");
  ASSERT_EQ(device.GoOffline().CodeString(), "2.05");
  ASSERT_TRUE(Eventually([&] { return watcher_->Value("victim") == "gone"; }, 2s));
  ASSERT_TRUE(device.Open("token-victim"));
  ASSERT_EQ(device.Put("pres/victim", CborText("back")).CodeString(), "2.05");
  KeepAlive({&device}, 1s);
  std::this_thread::sleep_for(3500ms);  // dies without registering again: nothing may run
  EXPECT_EQ(Read("pres/victim").payload, "\"back\"");
  std::string log = Read("log/victim").payload;
  EXPECT_EQ(std::count(log.begin(), log.end(), ':'), 1) << log;
}

}  // namespace
}  // namespace tether::testing
