// Proves that answering late pings with 4.01 keeps an unmodified Wilddog SDK device within the
// heartbeat target, using the SDK's documented policy (shared/protocol/device-protocol.md), and
// that no device following that policy is ever declared gone, whatever the moment it re-opens its
// session, goes offline and online, or the gateway restarts (issue 15.1, 15.7).
#include "gateway/device/heartbeat_policy.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <array>
#include <optional>
#include <random>
#include <set>
#include <string>
#include <vector>

#include "gateway/device/device_api.h"
#include "gateway/device/session_continuity.h"
#include "gateway/device/session_table.h"

namespace tether {
namespace {

// The SDK's ping scheduler, in seconds, exactly as documented.
struct SdkPingModel {
  int64_t interval = 19, delta = 8;
  void On205ToPing() {
    interval += delta;
    if (interval >= 165) interval = 165, delta = 0;
  }
  void On401ToPing() {
    if (delta == 0) {
      interval = 19, delta = 8;
    } else {
      interval -= delta;
      delta /= 2;
    }
  }
  void On205ToRst() { interval += delta; }
};

// Runs a device for `seconds`; returns the gaps between consecutive pings as the gateway saw them.
std::vector<int64_t> Simulate(const HeartbeatPolicy* policy, int64_t seconds) {
  SdkPingModel sdk;
  std::vector<int64_t> gaps;
  int64_t now = 1'000'000, prev = 0;  // prev 0 = no ping yet
  // First ping right after auth. Times are ms for the policy, seconds for the model.
  const int64_t end = now + seconds * 1000;
  while (now < end) {
    bool steer = policy && policy->ShouldSteerDown(prev, now);
    if (prev) gaps.push_back((now - prev) / 1000);
    prev = now;
    if (steer) {
      sdk.On401ToPing();
      sdk.On205ToRst();  // the gateway accepts the immediate /.rst with the long token
    } else {
      sdk.On205ToPing();
    }
    now += sdk.interval * 1000;
  }
  return gaps;
}

TEST(HeartbeatPolicy, UnsteeredSdkDriftsToThreeMinutes) {
  auto gaps = Simulate(nullptr, 3600);
  EXPECT_EQ(*std::max_element(gaps.begin(), gaps.end()), 165);
}

TEST(HeartbeatPolicy, SteeredSdkStaysWithinTargetAfterConvergence) {
  HeartbeatPolicy p{20'000, 1'000};
  auto gaps = Simulate(&p, 24 * 3600);
  ASSERT_GT(gaps.size(), 3000u);
  // Only the very first intervals may overshoot while the model converges.
  EXPECT_LE(*std::max_element(gaps.begin(), gaps.end()), 27);
  EXPECT_LE(*std::max_element(gaps.begin() + 5, gaps.end()), 23);
  int over_target = std::count_if(gaps.begin() + 10, gaps.end(), [](int64_t g) { return g > 21; });
  EXPECT_EQ(over_target, 0) << "steady state: every ping within target + tolerance";
  // The default session timeout (1.75 x target = 35 s) leaves room for the SDK's own ping
  // retransmissions (+2 s, +6 s) even on the first, longest interval.
  EXPECT_LT(*std::max_element(gaps.begin(), gaps.end()) + 6, 35);
}

TEST(HeartbeatPolicy, NativeClientWithinTargetIsNeverSteered) {
  HeartbeatPolicy p{20'000, 1'000};
  for (int64_t gap : {5'000, 15'000, 20'000, 21'000}) {
    EXPECT_FALSE(p.ShouldSteerDown(100'000, 100'000 + gap)) << gap;
  }
  EXPECT_TRUE(p.ShouldSteerDown(100'000, 121'001));
  EXPECT_FALSE(p.ShouldSteerDown(0, 500'000)) << "first ping of a session";
}

TEST(HeartbeatPolicy, LargerTargetsConvergeToo) {
  for (int64_t target : {30, 60, 120}) {
    HeartbeatPolicy p{target * 1000, 1000};
    auto gaps = Simulate(&p, 24 * 3600);
    int64_t steady_max = *std::max_element(gaps.begin() + 20, gaps.end());
    EXPECT_LE(steady_max, target + 1) << "target " << target;
  }
}

// ---- The liveness property ----
//
// The gateway's rules as DeviceApi applies them, over the production SessionTable (deadlines),
// SessionContinuity (which session a new one continues, remembered pings) and HeartbeatPolicy:
// - every datagram stamps its session; a session is declared gone at its deadline;
// - a ping is steered when it is later than target + tolerance after the session's last ping,
//   which a new session inherits from the sessions it continues or the device's ended ones;
// - a restart in the same boot restores each session exactly as of the crash (the liveness file),
//   not declared gone before restart + RestartGraceMs; after a crash of the host only the store's
//   record is left: a full timeout from the restart, and the last ping it recorded (the session's
//   first, or the one inherited when it opened).
// `carry` false is the rule before issue 15: a new or restored session knew no previous ping.
class GatewayModel {
 public:
  GatewayModel(int64_t target_ms, int64_t timeout_ms, bool carry)
      : policy_{target_ms, 1000}, timeout_ms_(timeout_ms), carry_(carry), table_(timeout_ms) {}

  // POST /.cs from the device (`anonymous`: no stable id; then it is known by its address).
  void Open(int64_t now, bool anonymous) {
    Expect(now);
    Session s;
    s.id = "s" + std::to_string(++sessions_);
    s.tokens = SessionTokens("t" + s.id, "l" + s.id, "");
    s.app = "app";
    s.anonymous = anonymous;
    s.device = anonymous ? "anon-x" : "dev";
    s.addr.family = AF_INET;
    s.addr.port = 1000;
    s.last_seen_ms = now;
    if (carry_) {
      for (Session* p : continuity_.Predecessors(table_, s.app, anonymous ? "" : s.device, anonymous, s.addr, now)) {
        s.last_ping_ms = std::max(s.last_ping_ms, p->last_ping_ms);
        table_.Remove(std::string(p->id));
      }
      if (!s.last_ping_ms) s.last_ping_ms = continuity_.RememberedPing(s.app, s.device, anonymous, s.addr, now);
    } else {
      for (Session* p : table_.ByAddress(s.addr)) table_.Remove(std::string(p->id));  // replaced at once
    }
    current_ = s.id;
    table_.Add(std::move(s));
    Snapshot(now);
  }
  void GoOffline(int64_t now) {
    Session* s = Live(now);
    table_.Touch(*s, now);
    continuity_.NoteEnded(*s, now);
    table_.Remove(std::string(s->id));
    current_.clear();
  }
  // A ping arriving now; true: answered 2.05, false: steered (4.01).
  bool Ping(int64_t now) {
    Session* s = Live(now);
    table_.Touch(*s, now);
    const bool steer = policy_.ShouldSteerDown(s->last_ping_ms, now);
    // Not while a stall's backlog drains, unless it is the first ping known.
    if (!carry_ || now >= pings_judged_from_ || !s->last_ping_ms) s->last_ping_ms = now;
    return !steer;
  }
  // The gateway's loop did not run in [from, to): deadlines move by the stall; the datagrams that
  // waited are read right after it (DeviceApi: ShiftForStall, kStallDrainMs).
  void Stall(int64_t from, int64_t to) {
    table_.ShiftForStall(to - from);
    pings_judged_from_ = to + 1'000;
  }
  void Datagram(int64_t now) { table_.Touch(*Live(now), now); }  // e.g. POST /.rst
  // What the session's store record holds after a change at `now`: written when the session
  // opens and at its first ping (DeviceApi writes no other ping to the store).
  void Snapshot(int64_t now) {
    Session* s = table_.ById(current_);
    if (!s || (!snapshots_.empty() && snapshots_.back().session.id == s->id && s->checkpointed_ping_ms)) return;
    if (s->last_ping_ms) s->checkpointed_ping_ms = s->last_ping_ms;
    snapshots_.push_back({now, *s});
  }
  // The process dies now and is back at `restart`: in the same boot, or (`host_crash`) after a
  // crash of the host that lost the liveness file.
  void Restart(int64_t restart, bool host_crash) {
    Session* live = table_.ById(current_);
    std::optional<Session> s;
    if (!host_crash) {
      s = *live;  // the liveness file: exact
      s->expire_not_before_ms = restart + DeviceApi::RestartGraceMs(timeout_ms_);
    } else {
      for (const Snap& snap : snapshots_) {
        if (snap.session.id == current_) s = snap.session;
      }
      s->last_seen_ms = restart;  // undated: a full timeout
      s->expire_not_before_ms = 0;
    }
    table_.Remove(current_);
    if (!carry_) s->last_seen_ms = restart, s->expire_not_before_ms = 0, s->last_ping_ms = 0;
    table_.Add(std::move(*s));
  }
  // Whether the device's session was declared gone at any moment up to now.
  bool declared_gone() const { return gone_; }

 private:
  Session* Live(int64_t now) {
    Expect(now);
    return table_.ById(current_);
  }
  void Expect(int64_t now) {
    if (!table_.Expired(now).empty()) {
      gone_ = true;
    }
  }

  HeartbeatPolicy policy_;
  int64_t timeout_ms_;
  bool carry_;
  SessionTable table_;
  SessionContinuity continuity_;
  std::string current_;
  struct Snap {
    int64_t at;
    Session session;
  };
  std::vector<Snap> snapshots_;
  int64_t pings_judged_from_ = 0;
  int sessions_ = 0;
  bool gone_ = false;
};

enum class Event { kReopen, kOffOn, kKill9, kHostCrash, kStall, kBootAfterStall };

struct Scenario {
  int pings_before = 0;     // normal pings after the login ping, before the event
  int64_t offset_ms = 0;    // of the event after the last of them
  Event event = Event::kReopen;
  bool anonymous = false;
  int64_t downtime_ms = 1'000;
  uint64_t jitter_seed = 0;       // 0: 900 ms, 1: 1900 ms, else random in [900, 1900]
};

struct Outcome {
  bool gone = false;
  int64_t max_gap_ms = 0;  // between pings the gateway heard at their first transmission
  std::vector<std::pair<int64_t, int64_t>> states;  // (interval, delta) before each ping
};

// One SDK device under the gateway model, as documented (SdkPingModel above): 24 pings after the
// event, retransmitting a ping that the gateway missed while down (+2 s, +6 s, then from a new
// socket every 10 s with its own +2/+6 s).
Outcome RunScenario(const Scenario& sc, bool carry) {
  constexpr int64_t kTarget = 20'000, kTimeout = 35'000;
  GatewayModel gw(kTarget, kTimeout, carry);
  SdkPingModel sdk;
  std::mt19937_64 rng(sc.jitter_seed);
  auto loop = [&]() -> int64_t {
    if (sc.jitter_seed == 0) return 900;
    if (sc.jitter_seed == 1) return 1'900;
    return std::uniform_int_distribution<int64_t>(900, 1'900)(rng);
  };
  Outcome out;
  int64_t now = 1'000'000, last_ping = 0;
  std::optional<int64_t> event_at, down_from, down_until;
  bool offline = false;
  if (sc.event == Event::kBootAfterStall) gw.Stall(now - sc.downtime_ms, now - sc.offset_ms);  // booted while draining
  gw.Open(now, sc.anonymous);
  std::optional<int64_t> stall_from, stall_to;
  bool stall_applied = false;
  auto settle = [&](int64_t t) {  // the gateway notices a stall when it runs again
    if (stall_to && !stall_applied && t >= *stall_to) gw.Stall(*stall_from, *stall_to), stall_applied = true;
  };
  auto react = [&](bool answered_205, int64_t at) {
    if (answered_205) {
      sdk.On205ToPing();
    } else {
      sdk.On401ToPing();
      gw.Datagram(at);  // POST /.rst with the long token, answered 2.05
      sdk.On205ToRst();
    }
  };
  auto ping = [&](int64_t sent) -> int64_t {
    if (stall_to && sent >= *stall_from && sent < *stall_to) {
      // Sent while the gateway is stopped: it waits in the socket with the SDK's retransmissions.
      const int64_t resume = *stall_to;
      settle(resume);
      out.states.emplace_back(sdk.interval, sdk.delta);
      last_ping = resume;
      if (resume < sent + 10'000) {
        react(gw.Ping(resume), resume);  // answered before the SDK gave up on it
      } else if (resume < sent + 30'000) {
        // The SDK moved to a new socket and sent it again from there: the old copies are answered
        // to a closed socket; the new one gets 4.01 (another address), the SDK's steering reply.
        gw.Ping(resume);
        gw.Datagram(resume);  // its token from the new address: a sign of life
        react(false, resume);
      } else {
        // Three failures: the SDK re-authenticated (POST /.cs waited too) and sends the ping again.
        gw.Ping(resume);
        gw.Open(resume, sc.anonymous);
        react(gw.Ping(resume + 5), resume + 5);
      }
      gw.Snapshot(resume);
      return resume + 5 + sdk.interval * 1000 + loop();
    }
    settle(sent);
    int64_t at = sent;  // when the gateway hears it: the first transmission after it is back
    if (offline && sent >= *event_at && sent < *event_at + 1'000) at = *event_at + 1'000;  // due while offline
    if (down_from && sent >= *down_from && sent < *down_until) {
      for (int64_t k = 0; at < *down_until; ++k) at = sent + (k / 3) * 10'000 + std::array<int64_t, 3>{0, 2'000, 6'000}[k % 3];
    }
    if (last_ping && at == sent) out.max_gap_ms = std::max(out.max_gap_ms, at - last_ping);  // heard at once
    last_ping = at;
    out.states.emplace_back(sdk.interval, sdk.delta);
    react(gw.Ping(at), at);
    gw.Snapshot(at);
    return at + sdk.interval * 1000 + loop();
  };
  int64_t next = ping(now);  // the login ping
  for (int i = 0; i < sc.pings_before; ++i) next = ping(next);
  event_at = last_ping + sc.offset_ms;
  if (*event_at >= next) return out;  // offset beyond this interval: covered by another scenario
  if (sc.event == Event::kBootAfterStall) event_at = next;  // nothing more happens
  switch (sc.event) {
    case Event::kReopen: gw.Open(*event_at, sc.anonymous); break;
    case Event::kOffOn:
      gw.GoOffline(*event_at);
      offline = true;
      break;
    case Event::kBootAfterStall: break;
    case Event::kStall:
      stall_from = *event_at;
      stall_to = *event_at + sc.downtime_ms;
      break;
    case Event::kKill9:
    case Event::kHostCrash:
      down_from = *event_at;
      down_until = *event_at + sc.downtime_ms;
      gw.Restart(*down_until, sc.event == Event::kHostCrash);
      break;
  }
  if (offline) gw.Open(*event_at + 1'000, sc.anonymous);  // goOnline a second later; a due ping follows it
  for (int i = 0; i < 24; ++i) next = ping(next);
  gw.Datagram(next - 1);  // past the last interval: still alive
  out.gone = gw.declared_gone();
  return out;
}

std::vector<Scenario> AllScenarios() {
  std::vector<Scenario> all;
  for (uint64_t seed : {0, 1, 2, 3}) {
    for (int before = 0; before <= 8; ++before) {
      for (int64_t offset = 0; offset < 30'000; offset += 250) {
        for (bool anonymous : {false, true}) {
          all.push_back({before, offset, Event::kReopen, anonymous, 0, seed});
          all.push_back({before, offset, Event::kOffOn, anonymous, 0, seed});
          for (int64_t down : {500, 8'000}) {
            all.push_back({before, offset, Event::kKill9, anonymous, down, seed});
            all.push_back({before, offset, Event::kHostCrash, anonymous, down, seed});
          }
          for (int64_t stall : {5'000, 15'000, 40'000}) all.push_back({before, offset, Event::kStall, anonymous, stall, seed});
          if (before == 0 && offset < 1'000) all.push_back({0, offset, Event::kBootAfterStall, anonymous, 30'000, seed});
        }
      }
    }
  }
  return all;
}

TEST(LivenessProperty, NoSdkDeviceIsDeclaredGoneWhateverTheMomentOfItsReopenOrARestart) {
  size_t runs = 0;
  std::set<std::pair<int64_t, int64_t>> states;
  int64_t max_gap = 0;
  for (const Scenario& sc : AllScenarios()) {
    Outcome o = RunScenario(sc, /*carry=*/true);
    if (o.states.empty()) continue;
    ++runs;
    states.insert(o.states.begin(), o.states.end());
    max_gap = std::max(max_gap, o.max_gap_ms);
    ASSERT_FALSE(o.gone) << "declared gone: " << sc.pings_before << " pings, event " << static_cast<int>(sc.event)
                         << " at +" << sc.offset_ms << " ms, anonymous " << sc.anonymous << ", downtime "
                         << sc.downtime_ms << ", seed " << sc.jitter_seed;
  }
  EXPECT_GT(runs, 50'000u);
  // Every interval the SDK reaches under steering, re-opened at every 250 ms of each.
  EXPECT_TRUE(states.count({27, 8}) && states.count({23, 4}) && states.count({21, 2}) && states.count({19, 0}));
  for (const auto& [interval, delta] : states) EXPECT_LE(interval, 27) << "delta " << delta;
  EXPECT_LT(max_gap, 35'000) << "the SDK's interval stays below the session timeout";
}

// The same model without the carried-over ping (the rule before issue 15) finds the false
// "gone" the issue reported: re-opened or restored sessions judged the SDK's next ping as a first.
TEST(LivenessProperty, WithoutTheCarriedPingTheModelFindsTheFalseGone) {
  size_t reopen = 0, restart = 0;
  for (const Scenario& sc : AllScenarios()) {
    if (sc.jitter_seed != 1 || sc.anonymous) continue;
    Outcome o = RunScenario(sc, /*carry=*/false);
    if (!o.gone) continue;
    if (sc.event == Event::kOffOn || sc.event == Event::kReopen) ++reopen;
    else ++restart;
  }
  EXPECT_GT(reopen, 0u) << "goOffline/goOnline or re-auth mid-interval";
  EXPECT_GT(restart, 0u) << "gateway restart mid-interval";
}

}  // namespace
}  // namespace tether
