// Seeded presence chaos (issue 15): devices with the Wilddog SDK's real timers (SdkDevice) run the
// presence recipe against the real daemon while the test kills devices (and reboots them once
// they were declared gone), sends devices offline and back, stops the daemon (SIGSTOP/SIGCONT, up
// to longer than the session timeout), kills it (-9) and restarts it gracefully. Judged from a
// PresenceWatcher:
// - 0 false offline: every "gone" was asked for (goOffline) or earned (killed);
// - 0 missed offline: each killed device is "gone" within session_timeout + 1 s of its last
//   datagram, later by the length of the stalls after it (a stall counts as nobody's silence), and
//   not before 5 s after a restart that came first (RestartGraceMs);
// - 0 lost registrations: at the end every running device is killed and must go "gone" as well.
// Half the devices present tokens (stable ids), half are anonymous; each has its own loopback IP.
// Short by default (about 50 s); TETHER_SOAK=1 (`make soak`) runs 40 devices for
// TETHER_CHAOS_SECONDS (default 1200). TETHER_CHAOS_SEED picks another seed.
#include <gtest/gtest.h>
#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <memory>
#include <random>

#include "tests/integration/presence_device.h"
#include "tests/integration/presence_watch.h"
#include "tests/integration/sdk_device.h"
#include "tests/integration/tetherd_process.h"

namespace tether::testing {
namespace {

using namespace std::chrono_literals;
constexpr int64_t kTimeoutMs = 35'000, kGraceMs = 5'000, kSlackMs = 1'000;

int64_t EnvInt(const char* name, int64_t fallback) {
  const char* v = std::getenv(name);
  return v && *v ? std::atoll(v) : fallback;
}

struct Stall {
  int64_t from, to;
};

class PresenceChaos {
 public:
  PresenceChaos(size_t devices, uint64_t seed) : rng_(seed) {
    port_ = static_cast<uint16_t>(FreePort());
    std::string tokens;
    for (size_t i = 0; i < devices; i += 2) tokens += "        - { device: d" + std::to_string(i) + ", token: t-d" + std::to_string(i) + " }\n";
    gw_.WriteConfig("device:\n  listen: \"127.0.0.1:" + std::to_string(port_) + "\"\n"
                    "  heartbeat_target: 20s\n  session_timeout: 35s\n"
                    "admin:\n  listen: \"127.0.0.1:" + std::to_string(FreePort(false)) + "\"\n"
                    "store:\n  path: ${STORE}\nlog:\n  level: " +
                    std::string(std::getenv("TETHER_CHAOS_DEBUG") ? "debug" : "info") + "\n"
                    "apps:\n  - id: tok\n    default: true\n    auth:\n      mode: tokens\n      tokens:\n" + tokens +
                    "        - { device: watcher, token: t-watcher }\n"
                    "  - id: anon\n"
                    "routes:\n  - { name: tok, app: tok, match: \"**\" }\n  - { name: anon, app: anon, match: \"**\" }\n");
    gw_.Start();
    EXPECT_TRUE(gw_.WaitForLog("listening for CoAP", 10s)) << gw_.Log();
    for (size_t i = 0; i < devices; ++i) {
      SdkDevice::Options o;
      const bool token = i % 2 == 0;
      o.app = token ? "tok" : "anon";
      o.auth_token = token ? "t-d" + std::to_string(i) : "";
      o.seed = seed * 1000 + i;
      o.source_ip = "127.0.4." + std::to_string(i + 1);
      devices_.push_back(std::make_unique<PresenceDevice>(port_, "d" + std::to_string(i), o));
    }
    watcher_ = std::make_unique<PresenceWatcher>(port_, "tok", "t-watcher");
  }

  // Runs the devices until `until`, rebooting killed ones once they were declared gone.
  void RunUntil(int64_t until) {
    while (SteadyMs() < until) {
      SdkFleet fleet;
      for (auto& d : devices_) fleet.Add(&d->sdk());
      bool reboot = false;
      fleet.Run(until, [&](int64_t now) {
        for (auto& d : devices_) {
          if (rebooting_ && !d->running() && !d->kills().empty() &&
              watcher_->FirstSeen(d->name(), "gone", d->kills().back().at_ms) > 0 &&
              now - d->kills().back().at_ms > 5'000) {
            d->Reboot(now);
            Note("reboot " + d->name());
            ++reboots_;
            reboot = true;
          }
        }
        return !reboot;
      });
    }
  }

  PresenceDevice& Pick(bool running) {
    std::vector<PresenceDevice*> pool;
    for (auto& d : devices_) {
      if (d->running() == running && !d->sdk().offline()) pool.push_back(d.get());
    }
    if (pool.empty()) return *devices_.front();
    return *pool[std::uniform_int_distribution<size_t>(0, pool.size() - 1)(rng_)];
  }

  void Note(const std::string& what) {
    std::printf("chaos +%lld ms: %s\n", static_cast<long long>(SteadyMs() - start_), what.c_str());
    std::fflush(stdout);
  }
  void KillDevice() {
    PresenceDevice& d = Pick(true);
    if (!d.running()) return;
    d.Kill(SteadyMs());
    Note("kill " + d.name());
    ++kills_;
  }
  void OfflineOnline() {
    PresenceDevice& d = Pick(true);
    if (!d.running() || !d.sdk().authed()) return;
    d.GoOffline(SteadyMs());
    Note("goOffline " + d.name());
    RunUntil(SteadyMs() + std::uniform_int_distribution<int64_t>(500, 4'000)(rng_));
    d.GoOnline(SteadyMs());
    Note("goOnline " + d.name());
    ++offons_;
  }
  void StallGateway(int64_t ms) {
    Note("SIGSTOP for " + std::to_string(ms) + " ms");
    gw_.Signal(SIGSTOP);
    const int64_t from = SteadyMs();
    RunUntil(from + ms);
    gw_.Signal(SIGCONT);
    stalls_.push_back({from, SteadyMs()});
  }
  void RestartGateway(bool graceful) {
    Note(graceful ? "SIGTERM, restart" : "kill -9, restart");
    if (graceful) {
      gw_.Signal(SIGTERM);
      EXPECT_EQ(gw_.WaitExit(15s), 0) << gw_.Log();
    } else {
      gw_.Kill9();
    }
    RunUntil(SteadyMs() + std::uniform_int_distribution<int64_t>(200, 3'000)(rng_));
    gw_.Start();
    EXPECT_TRUE(gw_.WaitForLog("listening for CoAP", 15s)) << gw_.Log();
    restarts_.push_back(SteadyMs());
    graceful ? ++graceful_ : ++kill9_;
  }

  // The latest moment a device killed after its last datagram `last` may be declared gone.
  int64_t Bound(int64_t last) const {
    int64_t bound = last + kTimeoutMs;
    std::vector<std::pair<int64_t, size_t>> events;  // (where the stall counts from, which)
    for (size_t i = 0; i < stalls_.size(); ++i) {
      if (stalls_[i].to > last) events.push_back({std::max(stalls_[i].from, last), i});
    }
    std::sort(events.begin(), events.end());
    for (const auto& [at, i] : events) {
      if (at > bound) break;
      bound += stalls_[i].to - at;  // the stall is given back
    }
    for (int64_t r : restarts_) {
      if (r > last && r <= bound + kSlackMs) bound = std::max(bound, r + kGraceMs);
    }
    return bound + kSlackMs;
  }

  void Judge(bool final_kill) {
    if (final_kill) {
      rebooting_ = false;
      const int64_t at = SteadyMs();
      for (auto& d : devices_) {
        if (d->running()) d->Kill(at);
      }
      RunUntil(at + kTimeoutMs + kSlackMs + 3'000);
    }
    size_t false_offline = 0, missed = 0, judged = 0;
    int64_t worst = 0;
    for (auto& d : devices_) {
      for (int64_t t : d->FalseOfflines(*watcher_)) {
        ++false_offline;
        ADD_FAILURE() << d->name() << " declared gone while running, at +" << t - start_ << " ms";
      }
      for (const auto& k : d->kills()) {
        ++judged;
        const int64_t gone = watcher_->FirstSeen(d->name(), "gone", k.at_ms);
        const int64_t bound = Bound(k.last_datagram_ms);
        if (gone < 0 || gone > bound) {
          ++missed;
          ADD_FAILURE() << d->name() << " killed at +" << k.at_ms - start_ << " ms (last datagram +"
                        << k.last_datagram_ms - start_ << "): " << (gone < 0 ? "never declared gone" : "gone at +" +
                        std::to_string(gone - start_)) << ", bound +" << bound - start_;
        } else {
          worst = std::max(worst, gone - k.last_datagram_ms);
        }
      }
    }
    uint64_t reauths = 0, steered = 0, new_sockets = 0;
    for (auto& d : devices_) {
      reauths += d->sdk().counters().reauths;
      steered += d->sdk().counters().steered;
      new_sockets += d->sdk().counters().new_sockets;
    }
    std::printf("presence chaos: %zu devices, %.0f s: %d device kills (+%d final), %d reboots, %d goOffline/goOnline, "
                "%zu stalls, %d kill -9, %d graceful restarts; false offline %zu, missed offline %zu of %zu, worst "
                "detection %lld ms after the last datagram; last SDK process: %llu re-auths, %llu steered pings, %llu "
                "new sockets; %llu watcher reads\n",
                devices_.size(), (SteadyMs() - start_) / 1000.0, kills_, final_kill ? int(devices_.size()) : 0,
                reboots_, offons_, stalls_.size(), kill9_, graceful_, false_offline, missed, judged,
                static_cast<long long>(worst), static_cast<unsigned long long>(reauths),
                static_cast<unsigned long long>(steered), static_cast<unsigned long long>(new_sockets),
                static_cast<unsigned long long>(watcher_->reads()));
    EXPECT_GT(judged, 0u);
  }

  void Start() {
    start_ = SteadyMs();
    for (auto& d : devices_) {
      d->Boot(SteadyMs());
      RunUntil(SteadyMs() + 100);
    }
  }
  int64_t start() const { return start_; }
  std::mt19937_64& rng() { return rng_; }

 private:
  TetherdProcess gw_;
  uint16_t port_ = 0;
  std::mt19937_64 rng_;
  std::vector<std::unique_ptr<PresenceDevice>> devices_;
  std::unique_ptr<PresenceWatcher> watcher_;
  std::vector<Stall> stalls_;
  std::vector<int64_t> restarts_;
  int64_t start_ = 0;
  bool rebooting_ = true;
  int kills_ = 0, reboots_ = 0, offons_ = 0, kill9_ = 0, graceful_ = 0;
};

// About 50 s: one of each event, the killed devices judged within the run.
void ShortRun() {
  PresenceChaos chaos(8, static_cast<uint64_t>(EnvInt("TETHER_CHAOS_SEED", 15)));
  chaos.Start();
  const int64_t t0 = chaos.start();
  chaos.RunUntil(t0 + 2'000);
  chaos.KillDevice();
  chaos.OfflineOnline();
  chaos.RunUntil(t0 + 10'000);
  chaos.StallGateway(8'000);
  chaos.RunUntil(t0 + 22'000);
  chaos.RestartGateway(/*graceful=*/false);
  chaos.RunUntil(t0 + 50'000);
  chaos.Judge(/*final_kill=*/false);
}

// make soak: 40 devices; a seeded event every 10-40 s.
void SoakRun() {
  PresenceChaos chaos(40, static_cast<uint64_t>(EnvInt("TETHER_CHAOS_SEED", 15)));
  const int64_t seconds = EnvInt("TETHER_CHAOS_SECONDS", 1200);
  chaos.Start();
  const int64_t end = chaos.start() + seconds * 1000;
  auto& rng = chaos.rng();
  while (SteadyMs() < end - 60'000) {
    chaos.RunUntil(SteadyMs() + std::uniform_int_distribution<int64_t>(10'000, 40'000)(rng));
    const int roll = std::uniform_int_distribution<int>(0, 99)(rng);
    if (roll < 30) chaos.KillDevice();
    else if (roll < 65) chaos.OfflineOnline();
    else if (roll < 80) chaos.StallGateway(std::uniform_int_distribution<int64_t>(6'000, 40'000)(rng));
    else if (roll < 92) chaos.RestartGateway(false);
    else chaos.RestartGateway(true);
  }
  chaos.RunUntil(end);
  chaos.Judge(/*final_kill=*/true);
}

// One test, two lengths (as CloudLink.WanOutage*): `make soak` sets TETHER_SOAK for the long one.
TEST(PresenceChaos, SeededRun) {
  if (std::getenv("TETHER_SOAK")) {
    SoakRun();
  } else {
    ShortRun();
  }
}

}  // namespace
}  // namespace tether::testing
