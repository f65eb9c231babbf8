// Validation cost grows linearly with the size of the file (issue 16 item 10: 20k variables took
// 14.6 s, 40k 58 s; 20k DTLS identities 21 s). `tetherd --check-config` on N and 2N keys of one
// kind: the CPU time (user + system, from wait4: other processes on the machine barely move it)
// of the best of three 2N runs must be under 3x the best of three N runs (linear: ~2x;
// quadratic: ~4x). Bounded: a run over 20 s wall time, or a 2N run past 6x the N run's wall time,
// is stopped, and a first 2N run over 3.5x the N CPU time fails at once.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <functional>
#include <optional>
#include <string>
#include <thread>

#include "tests/integration/tetherd_process.h"

namespace tether::testing {
namespace {

using namespace std::chrono_literals;

struct Timing {
  double cpu_ms;   // user + system of the tetherd process
  double wall_ms;
};

class ConfigScale : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/config-scale-XXXXXX";
    dir_ = mkdtemp(tmpl);
  }
  void TearDown() override { std::system(("rm -rf " + dir_).c_str()); }

  // `tetherd --check-config file` (must exit 0); nullopt when it ran past `limit` (wall time).
  std::optional<Timing> Check(const std::string& file, std::chrono::milliseconds limit) {
    const std::string bin = TetherdProcess::BinaryPath("tetherd");
    auto t0 = std::chrono::steady_clock::now();
    pid_t pid = fork();
    if (pid == 0) {
      if (!freopen("/dev/null", "w", stdout)) _exit(126);
      execl(bin.c_str(), bin.c_str(), "--check-config", file.c_str(), static_cast<char*>(nullptr));
      _exit(127);
    }
    int st = 0;
    rusage ru{};
    while (wait4(pid, &st, WNOHANG, &ru) == 0) {
      if (std::chrono::steady_clock::now() - t0 > limit) {
        kill(pid, SIGKILL);
        wait4(pid, &st, 0, &ru);
        return std::nullopt;
      }
      std::this_thread::sleep_for(1ms);
    }
    std::chrono::duration<double, std::milli> wall = std::chrono::steady_clock::now() - t0;
    EXPECT_TRUE(WIFEXITED(st) && WEXITSTATUS(st) == 0) << file << " is not valid";
    auto ms = [](const timeval& tv) { return tv.tv_sec * 1000.0 + tv.tv_usec / 1000.0; };
    return Timing{ms(ru.ru_utime) + ms(ru.ru_stime), wall.count()};
  }
  // Writes the files for n and 2n keys with `write(out, n, prefix)` and checks the ratio.
  void ExpectLinear(const std::string& what, size_t n,
                    const std::function<void(std::ofstream&, size_t, const std::string&)>& write) {
    std::string small = dir_ + "/" + what + "-n.yaml", large = dir_ + "/" + what + "-2n.yaml";
    {
      std::ofstream a(small), b(large);
      write(a, n, dir_ + "/" + what + "-n");
      write(b, 2 * n, dir_ + "/" + what + "-2n");
    }
    std::optional<Timing> one, two;  // the best (least CPU) of each
    for (int i = 0; i < 3; ++i) {
      auto t = Check(small, 20s);
      ASSERT_TRUE(t) << what << ": " << n << " keys took over 20 s";
      if (!one || t->cpu_ms < one->cpu_ms) one = t;
    }
    for (int i = 0; i < 3; ++i) {
      auto t = Check(large, std::chrono::milliseconds(static_cast<int64_t>(6 * one->wall_ms) + 1000));
      ASSERT_TRUE(t) << what << ": " << 2 * n << " keys took over 6x the time of " << n << " (" << one->wall_ms
                     << " ms): quadratic";
      ASSERT_LT(t->cpu_ms, 3.5 * one->cpu_ms) << what << ": " << 2 * n << " keys " << t->cpu_ms << " ms CPU, " << n
                                              << " keys " << one->cpu_ms << " ms: quadratic";
      if (!two || t->cpu_ms < two->cpu_ms) two = t;
    }
    double ratio = two->cpu_ms / one->cpu_ms;
    std::fprintf(stderr, "%s: %zu keys %.0f ms CPU (%.0f wall), %zu keys %.0f ms CPU (%.0f wall), ratio %.2f\n",
                 what.c_str(), n, one->cpu_ms, one->wall_ms, 2 * n, two->cpu_ms, two->wall_ms, ratio);
    EXPECT_LT(ratio, 3.0) << what << ": " << n << " keys " << one->cpu_ms << " ms, " << 2 * n << " keys "
                          << two->cpu_ms << " ms of CPU";
  }
  std::string dir_;
};

TEST_F(ConfigScale, GatewayVariables) {
  ExpectLinear("variables", 20000, [](std::ofstream& out, size_t n, const std::string&) {
    out << "gateway:\n  variables:\n";
    for (size_t i = 0; i < n; ++i) out << "    site" << i << ": plant-" << i << "\n";
  });
}

TEST_F(ConfigScale, DtlsIdentities) {
  ExpectLinear("identities", 20000, [](std::ofstream& out, size_t n, const std::string& base) {
    const std::string keys = base + "-keys.yaml";
    std::ofstream k(keys);
    for (size_t i = 0; i < n; ++i) k << "device-" << i << ": key-of-device-" << i << "\n";
    out << "dtls:\n  listen: \"127.0.0.1:0\"\n  keys_file: " << keys << "\n";
  });
}

// Every route is checked for overlap with the routes before it: all in one app, one literal
// prefix, so each one could overlap any other.
TEST_F(ConfigScale, Routes) {
  ExpectLinear("routes", 20000, [](std::ofstream& out, size_t n, const std::string&) {
    out << "routes:\n";
    for (size_t i = 0; i < n; ++i) {
      out << "  - { name: r" << i << ", match: \"fleet/site" << i << "/{device}/**\", cloud: \"fleet/site" << i
          << "/{device}/**\" }\n";
    }
  });
}

}  // namespace
}  // namespace tether::testing
