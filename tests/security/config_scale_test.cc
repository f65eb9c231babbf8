// Validation cost grows linearly with the size of the file (issue 16 item 10: 20k variables took
// 14.6 s, 40k 58 s; 20k DTLS identities 21 s). `tetherd --check-config` on N and 2N keys of one
// kind: the best of three runs of 2N must take under 3x the best of N (linear: ~2x; quadratic:
// ~4x). Bounded: a run over 20 s, or a 2N run past 4x N, fails at once.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <fstream>
#include <functional>
#include <string>
#include <thread>

#include "tests/integration/tetherd_process.h"

namespace tether::testing {
namespace {

using namespace std::chrono_literals;
using Ms = std::chrono::duration<double, std::milli>;

class ConfigScale : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/config-scale-XXXXXX";
    dir_ = mkdtemp(tmpl);
  }
  void TearDown() override { std::system(("rm -rf " + dir_).c_str()); }

  // Wall time of `tetherd --check-config file` (must exit 0); nullopt when it ran past `limit`.
  std::optional<Ms> CheckTime(const std::string& file, std::chrono::milliseconds limit) {
    const std::string bin = TetherdProcess::BinaryPath("tetherd");
    auto t0 = std::chrono::steady_clock::now();
    pid_t pid = fork();
    if (pid == 0) {
      freopen("/dev/null", "w", stdout);
      execl(bin.c_str(), bin.c_str(), "--check-config", file.c_str(), static_cast<char*>(nullptr));
      _exit(127);
    }
    int st = 0;
    while (waitpid(pid, &st, WNOHANG) == 0) {
      if (std::chrono::steady_clock::now() - t0 > limit) {
        kill(pid, SIGKILL);
        waitpid(pid, &st, 0);
        return std::nullopt;
      }
      std::this_thread::sleep_for(1ms);
    }
    Ms took = std::chrono::steady_clock::now() - t0;
    EXPECT_TRUE(WIFEXITED(st) && WEXITSTATUS(st) == 0) << file << " is not valid";
    return took;
  }
  // Best of three, stopping at the first run over `limit`.
  std::optional<Ms> Best(const std::string& file, std::chrono::milliseconds limit) {
    std::optional<Ms> best;
    for (int i = 0; i < 3; ++i) {
      auto t = CheckTime(file, limit);
      if (!t) return std::nullopt;
      if (!best || *t < *best) best = t;
    }
    return best;
  }
  // Writes the files for n and 2n keys with `write(out, n, dir)` and checks the ratio.
  void ExpectLinear(const std::string& what, size_t n,
                    const std::function<void(std::ofstream&, size_t, const std::string&)>& write) {
    std::string small = dir_ + "/" + what + "-n.yaml", large = dir_ + "/" + what + "-2n.yaml";
    {
      std::ofstream a(small), b(large);
      write(a, n, dir_ + "/" + what + "-n");
      write(b, 2 * n, dir_ + "/" + what + "-2n");
    }
    auto t1 = Best(small, 20s);
    ASSERT_TRUE(t1) << what << ": " << n << " keys took over 20 s";
    auto limit = std::chrono::milliseconds(static_cast<int64_t>(4 * t1->count()) + 200);
    auto t2 = Best(large, limit);
    ASSERT_TRUE(t2) << what << ": " << 2 * n << " keys took over 4x the time of " << n << " (" << t1->count()
                    << " ms): quadratic";
    double ratio = t2->count() / t1->count();
    std::fprintf(stderr, "%s: %zu keys %.0f ms, %zu keys %.0f ms, ratio %.2f\n", what.c_str(), n, t1->count(), 2 * n,
                 t2->count(), ratio);
    EXPECT_LT(ratio, 3.0) << what << ": " << n << " keys " << t1->count() << " ms, " << 2 * n << " keys "
                          << t2->count() << " ms";
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
