// Footprint of a real tetherd, as sized for a 1 GB Raspberry Pi (docs/benchmarks.md, "Footprint").
//
// Starts tetherd with the shipped defaults (local-only; only the ports, the store path and a
// session timeout long enough for the slowest run are set), then reads its memory from
// /proc/PID/status: idle; with N devices that each hold a session and one observation; and after
// each of them made one write (queued: there is no cloud). The store figure is the growth of
// data.mdb (and of the pages LMDB has in use) per queued write. One UDP socket per device, as on a
// LAN.
//
//   footprint_bench [devices=10000]
//
// TETHER_BUILD_DIR picks the tetherd: a cross build dir (build-armhf) runs the ARM binary under
// qemu-user through binfmt_misc (QEMU_LD_PREFIX=<sysroot>); the RSS read is then qemu's process,
// i.e. the emulated daemon plus qemu's own code and translation cache (an upper bound).
#include <sys/stat.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "tests/integration/sdk_client.h"
#include "tests/integration/tetherd_process.h"
#include "bench/gateway/proc_usage.h"

using namespace tether::testing;
using tether::bench::ProcessMemory;
using tether::bench::ReadProcessMemory;

namespace {

long long FileBytes(const std::string& path) {
  struct stat st;
  return stat(path.c_str(), &st) == 0 ? static_cast<long long>(st.st_size) : -1;
}

// Bytes of the map in use: pages up to the last one written minus the free list (mdb_stat -ef,
// lmdb-utils), which the file size alone hides while freed pages are being reused.
// The mdb_stat must be the daemon's architecture: LMDB's lock file holds process-shared mutexes
// whose layout differs between word sizes and ABIs (x86-64's pthread_mutex_t is 40 bytes,
// aarch64's 48), so a host mdb_stat opening an emulated daemon's store corrupts its lock and the
// daemon aborts in mdb_txn_begin. With QEMU_LD_PREFIX set (a cross build run under qemu-user),
// the target's own mdb_stat from that sysroot is run, under qemu too.
long long UsedBytes(const std::string& dir) {
  const char* sysroot = std::getenv("QEMU_LD_PREFIX");
  const std::string tool = sysroot && *sysroot ? std::string(sysroot) + "/usr/bin/mdb_stat" : "mdb_stat";
  const std::string out = Shell(tool + " -ef " + dir).out;
  auto field = [&](const std::string& name) {
    size_t p = out.find(name);
    return p == std::string::npos ? -1LL : std::stoll(out.substr(p + name.size()));
  };
  const long long pages = field("Number of pages used: "), free_pages = field("Free pages: "),
                  page = field("Page size: ");
  return pages < 0 || free_pages < 0 || page < 0 ? -1 : (pages - free_pages) * page;
}

constexpr int kWrites = 5;  // queued writes per device for the store figure

void Row(const char* what, const ProcessMemory& m) {
  std::printf("| %s | %.1f | %.1f | %.1f |\n", what, m.rss_kb / 1024.0, m.anon_kb / 1024.0, m.file_kb / 1024.0);
}

}  // namespace

int main(int argc, char** argv) {
  const size_t n = argc > 1 ? std::stoul(argv[1]) : 10000;
  if (const uint64_t fds = tether::bench::RaiseFileLimit(); fds < n + 100) {
    std::fprintf(stderr, "need %zu file descriptors, have %llu\n", n + 100, static_cast<unsigned long long>(fds));
    return 2;
  }
  TetherdProcess gw;
  const uint16_t port = static_cast<uint16_t>(FreePort());
  const int admin = FreePort(false);
  gw.WriteConfig("device:\n  listen: \"127.0.0.1:" + std::to_string(port) +
                 "\"\n  heartbeat_target: 10m\n  session_timeout: 20m\n"
                 // One host opens the whole fleet before any session is used: no per-IP open limit.
                 "  opens_per_second: 0\n  max_unconfirmed_sessions: 10000000\nadmin:\n  listen: \"127.0.0.1:" +
                 std::to_string(admin) + "\"\nstore:\n  path: ${STORE}\nlog:\n  level: warn\napps:\n  - id: myapp\n");
  gw.Start();
  std::this_thread::sleep_for(std::chrono::seconds(3));
  const std::string binary = TetherdProcess::BinaryPath("tetherd");
  const ProcessMemory idle = ReadProcessMemory(gw.pid());

  std::vector<std::unique_ptr<SdkClient>> devs;
  for (size_t i = 0; i < n; ++i) devs.push_back(std::make_unique<SdkClient>(port));
  std::vector<std::string> toks;
  size_t opened = 0, observing = 0, written = 0;
  std::string failed_code;  // the first write reply that was not a success
  for (size_t lo = 0; lo < n; lo += 1000) {
    const size_t hi = std::min(n, lo + 1000);
    toks.clear();
    for (size_t i = lo; i < hi; ++i) toks.push_back(devs[i]->SendOpen());
    for (size_t i = lo; i < hi; ++i) opened += devs[i]->AcceptOpen(devs[i]->Await(toks[i - lo]));
  }
  for (size_t i = 0; i < n; ++i) {
    observing += devs[i]->Observe("devices/d" + std::to_string(i) + "/cmd").CodeString() == "2.05";
  }
  std::this_thread::sleep_for(std::chrono::seconds(2));
  const ProcessMemory sessions = ReadProcessMemory(gw.pid());

  const std::string data = gw.store_path() + "/data.mdb";
  const long long before = FileBytes(data), used_before = UsedBytes(gw.store_path());
  // A typical telemetry write: a small map with a reading and a time; kWrites per device, each to
  // its own path, all kept queued (there is no cloud).
  const std::string value = CborMap({{"temp", CborText("21.5")}, {"hum", CborUint(40)}, {"t", CborUint(1790000000000)}});
  for (int round = 0; round < kWrites; ++round) {
    for (size_t lo = 0; lo < n; lo += 1000) {
      const size_t hi = std::min(n, lo + 1000);
      toks.clear();
      for (size_t i = lo; i < hi; ++i) {
        toks.push_back(devs[i]->Send(3, "telemetry/d" + std::to_string(i) + "/r" + std::to_string(round), value));
      }
      for (size_t i = lo; i < hi; ++i) {
        const std::string code = devs[i]->Await(toks[i - lo]).CodeString();
        const bool ok = code.rfind("2.", 0) == 0;  // the SDK protocol answers a write 2.05
        written += ok;
        if (!ok && failed_code.empty()) failed_code = code;
      }
    }
  }
  std::this_thread::sleep_for(std::chrono::seconds(2));
  const ProcessMemory writes = ReadProcessMemory(gw.pid());
  const long long after = FileBytes(data), used_after = UsedBytes(gw.store_path());

  std::printf("tetherd %s (%lld bytes), %zu devices: %zu sessions, %zu observations, %zu writes queued\n",
              binary.c_str(), FileBytes(binary), n, opened, observing, written);
  if (!failed_code.empty()) std::printf("a write was answered %s\n", failed_code.c_str());
  std::printf("| state | VmRSS MiB | RssAnon MiB | RssFile MiB |\n|---|---|---|---|\n");
  Row("idle", idle);
  Row((std::to_string(n) + " sessions + 1 observation each").c_str(), sessions);
  Row(("+ " + std::to_string(kWrites) + " queued writes each (" + std::to_string(written) + ")").c_str(), writes);
  auto per = [&](long long a, long long b) { return written ? static_cast<double>(b - a) / static_cast<double>(written) : 0.0; };
  std::printf("data.mdb %lld -> %lld bytes: %.0f bytes of file per queued write (payload %zu bytes CBOR)\n", before,
              after, per(before, after), value.size());
  if (used_before >= 0 && used_after >= 0) {
    std::printf("pages in use %lld -> %lld bytes: %.0f bytes per queued write\n", used_before, used_after,
                per(used_before, used_after));
  }
  gw.Signal(15);
  gw.WaitExit(std::chrono::seconds(30));
  return opened == n && observing == n && written == n * kWrites ? 0 : 1;
}
