// Fault suite: the store runs out of space while the cloud refuses uploads, so the queue only
// grows. Device writes must then get 5.03 with Max-Age and a diagnostic, reads must still be
// served, and the gateway must recover by itself when space returns, losing nothing acknowledged.
//   MapAtItsMaximum: store.map_size = map_max = 1 MiB; space returns as the queue drains.
//   SmallFilesystem (root only: mounts a 3 MiB tmpfs): the disk itself is full (ENOSPC); space
//   returns when a filler file is deleted, then the queue drains.
#include <gtest/gtest.h>
#include <sys/mount.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <thread>

#include "tests/integration/fault_harness.h"
#include "tests/integration/tetherd_process.h"

namespace tether::testing {
namespace {

using namespace std::chrono_literals;
using nlohmann::json;
constexpr int kDevices = 8;

class FaultDiskFull : public ::testing::Test {
 protected:
  void StartGateway(const std::string& store_yaml) {
    // Every upload is refused until Heal(): the queue can only grow.
    cloud_.Control({{"op", "fail"}, {"status", 503}, {"count", 1000000000}});
    GatewayOptions go;
    go.cloud_url = cloud_.url();
    go.store_yaml = store_yaml;
    gw_.WriteConfig(FaultGatewayYaml(&go));
    gw_.Start();
    ASSERT_TRUE(gw_.WaitForLog("listening for CoAP", 10s)) << gw_.Log();
    port_ = go.port;
    fleet_ = std::make_unique<Fleet>(kDevices, port_, 3000ms, 4000);
    for (auto& d : fleet_->devices()) ASSERT_TRUE(d->EnsureSession());
  }
  void Round(int steps) {
    load_.max_steps = steps;
    ++load_.seed;
    fleet_->Start(load_);
    fleet_->Join();
  }
  size_t Refused() const { return fleet_->Count(Outcome::kRefused); }
  size_t Total() const {
    size_t n = 0;
    for (const auto& d : fleet_->devices()) n += d->writes().size();
    return n;
  }

  // Writes until the store refuses them; checks the refusals and that reads are still served.
  void FillUntilFull(Tally& tally) {
    load_.depth = 2;
    load_.think = 0ms;
    load_.mix_push = 1.0;
    load_.pad_bytes = 300;
    auto t0 = std::chrono::steady_clock::now();
    // Until some write is answered with anything but 2.05 (the first refusal, or a wrong answer).
    while (fleet_->Count(Outcome::kAcked) == Total() && std::chrono::steady_clock::now() - t0 < 60s) Round(10);
    ASSERT_GT(Refused(), 0u) << "the store never refused a write with 5.03: " << fleet_->CodeHistogram();
    Round(3);  // every device meets the full store
    size_t refused = 0, well_formed = 0;
    for (const auto& d : fleet_->devices()) {
      for (const auto& w : d->writes()) {
        if (w.outcome != Outcome::kRefused) continue;
        ++refused;
        // A commit that waits on the full disk may also trip overload shedding (device.max_write_wait).
        well_formed += w.code == "5.03" && w.max_age && *w.max_age > 0 &&
                       (w.diagnostic == "storage full, retry later" || w.diagnostic == "overloaded, retry later");
      }
    }
    tally.Check(well_formed == refused, std::to_string(refused - well_formed) + " of " + std::to_string(refused) +
                                            " refusals are not 5.03 + Max-Age + \"storage full\" or \"overloaded\"");
    full_refusals_ = refused;
    // Reads are served from the full store: acknowledged values read back, sessions answer.
    // - Each device reads its own samples on its own thread, as devices do: read one after
    //   another, the last device stayed silent past its 4 s session timeout under ASan.
    std::atomic<size_t> read_ok{0}, sampled{0};
    std::vector<char> answers(fleet_->devices().size(), 0);
    std::vector<std::thread> readers;
    for (size_t n = 0; n < fleet_->devices().size(); ++n) {
      readers.emplace_back([&, n] {
        FleetDevice& d = *fleet_->devices()[n];
        answers[n] = d.client().Request(1, ".info/connected").code == 0x45;
        const auto& ws = d.writes();
        for (size_t i = 0; i < ws.size(); i += std::max<size_t>(1, ws.size() / 10)) {
          if (ws[i].outcome != Outcome::kAcked) continue;
          ++sampled;
          CoapReply r = d.client().Request(1, "devices/" + d.id() + "/log/" + ws[i].push_key, "", {}, {}, {}, 50u);
          json v = json::parse(r.payload, nullptr, false);
          read_ok += r.code == 0x45 && v.is_object() && v.value("v", uint64_t{0}) == ws[i].k;
        }
      });
    }
    for (auto& t : readers) t.join();
    for (size_t n = 0; n < fleet_->devices().size(); ++n) {
      tally.Check(answers[n] != 0, fleet_->devices()[n]->id() + ": session answers while full");
    }
    tally.Check(sampled > 0 && read_ok == sampled,
                std::to_string(read_ok.load()) + "/" + std::to_string(sampled.load()) + " acknowledged values read back while full");
    tally.Check(gw_.WaitExit(0ms) == -1, "tetherd still running while full");
  }

  // Keeps writing until writes are accepted again; returns how long that took.
  double WaitForRecovery(Tally& tally, std::chrono::seconds limit) {
    auto t0 = std::chrono::steady_clock::now();
    size_t acked_before = fleet_->Count(Outcome::kAcked);
    while (fleet_->Count(Outcome::kAcked) < acked_before + kDevices && std::chrono::steady_clock::now() - t0 < limit) {
      std::this_thread::sleep_for(200ms);
      Round(1);
    }
    double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    tally.Check(fleet_->Count(Outcome::kAcked) >= acked_before + kDevices,
                "writes still refused " + std::to_string(limit.count()) + " s after space returned");
    return s;
  }

  void Heal() { cloud_.Control({{"op", "heal"}}); }

  void Audit(Tally& tally) {
    Round(3);  // after recovery, writes keep working
    fleet_->EndAll();
    CloudAudit audit(cloud_, AuditOptions{});
    bool delivered = audit.WaitDelivered(*fleet_, 30s);
    tally.Check(delivered, "delivery stalled for 30 s: " + audit.Missing());
    audit.Verify(*fleet_, tally);
  }

  upstream::testing::FakeCloud cloud_;
  TetherdProcess gw_;
  uint16_t port_ = 0;
  std::unique_ptr<Fleet> fleet_;
  LoadOptions load_;
  size_t full_refusals_ = 0;
};

TEST_F(FaultDiskFull, MapAtItsMaximum) {
  Tally tally("disk full (map at its maximum)");
  StartGateway("  map_size: 1MiB\n  map_max: 1MiB\n");
  FillUntilFull(tally);
  size_t acked_full = fleet_->Count(Outcome::kAcked);
  Heal();  // the queue drains: its pages are freed
  double recovered_s = WaitForRecovery(tally, 60s);
  Audit(tally);
  std::printf("disk full (map at its maximum): %zu writes acknowledged until full, %zu refused with 5.03, "
              "writes accepted again %.1f s after the cloud took uploads, %zu acknowledged in all\n",
              acked_full, full_refusals_, recovered_s, fleet_->Count(Outcome::kAcked));
}

TEST_F(FaultDiskFull, SmallFilesystem) {
  if (geteuid() != 0) GTEST_SKIP() << "mounting a small tmpfs needs root; MapAtItsMaximum covers the map limit";
  Tally tally("disk full (small filesystem)");
  std::filesystem::create_directories(gw_.store_path());
  ASSERT_EQ(mount("tmpfs", gw_.store_path().c_str(), "tmpfs", 0, "size=3m,mode=0750"), 0) << std::strerror(errno);
  struct Unmount {
    std::string path;
    ~Unmount() { umount2(path.c_str(), MNT_DETACH); }
  } unmount{gw_.store_path()};
  const std::string filler = gw_.store_path() + "/filler";
  std::ofstream(filler) << std::string(1 << 20, 'f');  // 1 MiB the operator can free later
  StartGateway("  map_size: 64MiB\n  map_max: 64MiB\n");  // the map is larger than the disk
  FillUntilFull(tally);
  size_t acked_full = fleet_->Count(Outcome::kAcked);
  std::filesystem::remove(filler);  // space returns; the cloud still refuses uploads
  double recovered_s = WaitForRecovery(tally, 30s);
  Heal();
  Audit(tally);
  std::printf("disk full (small filesystem): %zu writes acknowledged until ENOSPC, %zu refused with 5.03, writes "
              "accepted again %.1f s after space was freed, %zu acknowledged in all\n",
              acked_full, full_refusals_, recovered_s, fleet_->Count(Outcome::kAcked));
}

}  // namespace
}  // namespace tether::testing
