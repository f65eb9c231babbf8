// The pieces of device liveness: the crash-proof liveness file, the loop stall detector and
// which live session a newly opened one continues (SessionContinuity).
#include <gtest/gtest.h>

#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstring>
#include <fstream>

#include "gateway/device/liveness_file.h"
#include "gateway/device/loop_stall.h"
#include "gateway/device/session_continuity.h"
#include "store/boot_clock.h"
#include "tests/store/store_test_util.h"

namespace tether {
namespace {

TEST(LivenessFile, WhatTheProcessStoredSurvivesItUnlessTornFreedOrFromAnotherBoot) {
  ASSERT_FALSE(store::BootId().empty()) << "needs /proc/sys/kernel/random/boot_id";
  store::testing::TempDir dir;
  const std::string path = dir.Sub("liveness");
  // A child process writes the stamps and is killed with SIGKILL: no destructor, no msync.
  const pid_t child = fork();
  ASSERT_GE(child, 0);
  if (child == 0) {
    LivenessFile f(path);
    if (!f.ok() || !f.recovered().empty()) _exit(3);
    std::vector<uint32_t> slots;
    for (int i = 0; i < 3000; ++i) {  // grows past its first mapping
      slots.push_back(f.Assign());
      f.Write(slots.back(), "session" + std::to_string(i), {1000 + i, i % 2 ? 500 + i : 0});
    }
    f.Write(slots[7], "session7", {99'999, 88'888});  // a later datagram and ping
    f.Free(slots[8]);                                 // ended: never comes back
    kill(getpid(), SIGKILL);
    _exit(4);
  }
  int status = 0;
  ASSERT_EQ(waitpid(child, &status, 0), child);
  ASSERT_TRUE(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL) << "child status " << status;
  {
    // Tear one slot (a process killed mid-write) and forge one from another boot.
    std::fstream raw(path, std::ios::in | std::ios::out | std::ios::binary);
    char slot[64];
    raw.seekg(64 * 9);
    raw.read(slot, 64);
    slot[0] ^= 1;  // seq_begin != seq_end
    raw.seekp(64 * 9);
    raw.write(slot, 64);
    raw.seekg(64 * 10);
    raw.read(slot, 64);
    slot[8 + 16] ^= 0x20;  // the boot marker
    raw.seekp(64 * 10);
    raw.write(slot, 64);
  }
  LivenessFile again(path);
  ASSERT_TRUE(again.ok());
  const auto& got = again.recovered();
  EXPECT_EQ(got.size(), 3000u - 3);
  ASSERT_TRUE(got.count("session7"));
  EXPECT_EQ(got.at("session7").seen_boottime_ms, 99'999);
  EXPECT_EQ(got.at("session7").ping_boottime_ms, 88'888);
  EXPECT_EQ(got.at("session2999").seen_boottime_ms, 3999);
  EXPECT_EQ(got.at("session2998").ping_boottime_ms, 0);
  EXPECT_FALSE(got.count("session8")) << "freed";
  EXPECT_FALSE(got.count("session9")) << "torn";
  EXPECT_FALSE(got.count("session10")) << "another boot";
  LivenessFile third(path);
  EXPECT_TRUE(third.recovered().empty()) << "each open starts the file empty";
}

TEST(LivenessFile, AFileThatCannotBeCreatedDisablesItWithoutThrowing) {
  LivenessFile f("/nonexistent-dir/liveness");
  EXPECT_FALSE(f.ok());
  EXPECT_EQ(f.Assign(), LivenessFile::kNoSlot);
  f.Write(LivenessFile::kNoSlot, "s", {1, 1});
  f.Free(LivenessFile::kNoSlot);
}

TEST(LoopStallDetector, GapsBeyondTheThresholdAreStallsMinusOneTick) {
  LoopStallDetector d(250, 1000);
  EXPECT_EQ(d.Observe(10'000), 0);
  EXPECT_EQ(d.Observe(10'250), 0);
  EXPECT_EQ(d.Observe(11'200), 0) << "950 ms: a busy iteration, not a stall";
  EXPECT_EQ(d.Observe(26'200), 15'000 - 250);
  EXPECT_EQ(d.Observe(26'100), 0) << "the clock never goes back; ignored";
  EXPECT_EQ(d.stalls(), 1u);
  EXPECT_EQ(d.stalled_ms(), 14'750);
  d.Reset();
  EXPECT_EQ(d.Observe(90'000), 0) << "startup work is not a stall";
}

Session Make(const std::string& id, const std::string& device, bool anonymous, uint16_t port, const char* ip = "\x7f\0\0\x01") {
  Session s;
  s.id = id;
  s.app = "app";
  s.device = device;
  s.anonymous = anonymous;
  s.tokens = SessionTokens("s" + id, "l" + id, "");
  s.addr.family = AF_INET;
  std::memcpy(s.addr.ip.data(), ip, 4);
  s.addr.port = port;
  return s;
}

TEST(SessionContinuity, TheSameDeviceAnywhereButNeverAnotherIdentity) {
  SessionTable t(35'000);
  SessionContinuity c;
  t.Add(Make("a", "dev1", false, 1000));
  t.Add(Make("b", "dev2", false, 2000));
  coap::Address elsewhere = t.ById("a")->addr;
  elsewhere.port = 3000;
  auto p = c.Predecessors(t, "app", "dev1", false, elsewhere, 0);
  ASSERT_EQ(p.size(), 1u) << "a stable id is followed wherever it comes from";
  EXPECT_EQ(p[0]->id, "a");
  EXPECT_TRUE(c.Predecessors(t, "app", "dev3", false, t.ById("a")->addr, 0).empty())
      << "another identity at the victim's address continues nothing";
  EXPECT_TRUE(c.Predecessors(t, "app", "", true, t.ById("a")->addr, 0).empty())
      << "an anonymous open never continues an identified session";
  EXPECT_TRUE(c.Predecessors(t, "other", "dev1", false, elsewhere, 0).empty()) << "another app";
  coap::Address secure = elsewhere;
  secure.secure = 1;
  EXPECT_TRUE(c.Predecessors(t, "app", "dev1", false, secure, 0).empty()) << "another transport";
}

TEST(SessionContinuity, AnonymousDevicesAreFollowedByAddressThenTokenThenTheirIp) {
  SessionTable t(35'000);
  SessionContinuity c;
  Session& a = t.Add(Make("a", "anon-1", true, 1000, "\x7f\0\0\x05"));
  Session& b = t.Add(Make("b", "anon-2", true, 1000, "\x7f\0\0\x06"));
  auto at = [](const Session& s, uint16_t port) {
    coap::Address x = s.addr;
    x.port = port;
    return x;
  };
  EXPECT_EQ(c.Predecessors(t, "app", "", true, a.addr, 0).at(0)->id, "a") << "same address";
  c.HostLinksUntil(1'000 + SessionContinuity::kEvidenceMs);  // the gateway was away
  EXPECT_TRUE(c.Predecessors(t, "app", "", true, at(a, 2000), 0).empty()) << "nothing shown from there yet";
  c.NoteTokenFrom(t, a, at(a, 2000), 1'000);
  EXPECT_EQ(c.Predecessors(t, "app", "", true, at(a, 2000), 2'000).at(0)->id, "a") << "its token came from there";
  EXPECT_EQ(c.Predecessors(t, "app", "", true, at(a, 3000), 2'000).at(0)->id, "a") << "from its IP";
  EXPECT_TRUE(c.Predecessors(t, "app", "", true, at(a, 3000), 1'000 + SessionContinuity::kEvidenceMs).empty())
      << "evidence is only good for a while";
  c.HostLinksUntil(0);
  c.NoteTokenFrom(t, a, at(a, 2000), 65'000);
  EXPECT_TRUE(c.Predecessors(t, "app", "", true, at(a, 2000), 65'000).empty())
      << "while the gateway answers, a port the token came from may already be another client's";
  // Two live sessions' tokens from one IP (two devices behind it): the IP says nothing.
  c.HostLinksUntil(200'000);
  c.NoteTokenFrom(t, b, at(a, 4000), 70'000);
  c.NoteTokenFrom(t, a, at(a, 2000), 70'000);
  EXPECT_TRUE(c.Predecessors(t, "app", "", true, at(a, 5000), 71'000).empty());
  EXPECT_EQ(c.Predecessors(t, "app", "", true, at(a, 4000), 71'000).at(0)->id, "b") << "the exact port still says";
}

TEST(SessionContinuity, AnEndedSessionLeavesItsLastPingForTheNextOne) {
  SessionTable t(35'000);
  SessionContinuity c;
  Session s = Make("a", "dev1", false, 1000);
  s.last_ping_ms = 500;
  c.NoteEnded(s, 1'000);
  Session anon = Make("b", "anon-1", true, 1001);
  anon.last_ping_ms = 700;
  c.NoteEnded(anon, 1'000);
  EXPECT_EQ(c.RememberedPing("app", "dev1", false, anon.addr, 2'000), 500) << "by id, from any address";
  EXPECT_EQ(c.RememberedPing("app", "anon-9", true, anon.addr, 2'000), 700) << "anonymous: by address";
  EXPECT_EQ(c.RememberedPing("app", "dev2", false, s.addr, 2'000), 0);
}

}  // namespace
}  // namespace tether
