// The differential suite (tests/peers/differential.js) against the real tetherd: local-only mode,
// the device protocol over UDP on 127.0.0.1, the official Firebase client (firebase 7.24) on npm
// firebase-server as the oracle. The seed is fixed here (the script's default); TETHER_DIFF_SEED,
// TETHER_DIFF_CASES and TETHER_DIFF_OPS in the environment run other or longer sequences, and a
// failure prints the seed, the case and the JSON that replays it (TETHER_DIFF_REPLAY).
#include <gtest/gtest.h>
#include <signal.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <string>

#include "tests/integration/tetherd_process.h"

namespace tether::testing {
namespace {

using namespace std::chrono_literals;

TEST(Differential, LocalCopyAgreesWithTheOfficialClient) {
  const std::string src = TETHER_SOURCE_DIR_FALLBACK;
  const std::string modules = src + "/tests/peers/node_modules";
  // A missing peer is a broken test environment, not a pass: `make peers` installs them.
  ASSERT_EQ(Shell("command -v node").status, 0) << "node is not installed: run `make peers`";
  for (const char* peer : {"firebase", "firebase-server", "coap"}) {
    ASSERT_EQ(access((modules + "/" + peer + "/package.json").c_str(), R_OK), 0)
        << "npm peer '" << peer << "' missing in " << modules << ": run `make peers`";
  }
  TetherdProcess gw;
  const int port = FreePort();
  gw.WriteConfig("gateway:\n  id: gw-differential\ndevice:\n  listen: \"127.0.0.1:" + std::to_string(port) +
                 "\"\nadmin:\n  listen: \"127.0.0.1:" + std::to_string(FreePort(false)) +
                 "\"\nstore:\n  path: ${STORE}\napps:\n  - id: diff\nroutes:\n  - { name: all, match: \"**\" }\n");
  gw.Start();
  ASSERT_TRUE(gw.WaitForLog("local-only mode", 10s)) << gw.Log();
  const auto t0 = std::chrono::steady_clock::now();
  ShellResult r = Shell("NODE_PATH=" + modules + " timeout 600 node " + src + "/tests/peers/differential.js --port " +
                        std::to_string(port));
  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  std::printf("%s(%.1f s)\n", r.out.c_str(), secs);
  EXPECT_EQ(r.status, 0) << "tetherd and firebase 7.24 disagree (cases above), or the harness broke";
  EXPECT_NE(r.out.find("mismatches=0"), std::string::npos);
  EXPECT_EQ(kill(gw.pid(), 0), 0) << "tetherd is still running";
}

}  // namespace
}  // namespace tether::testing
