// Cost of registering an observation as a session's observations grow (issue 16.6: 1.8 ms at 500,
// 88 ms at 4,000 on main).
//
// One device session on a real tetherd registers observations of distinct paths one after the
// other (each waits for its answer), with distinct 8-byte tokens (the SDK's own tokens repeat after
// 256, which is why the default cap is 256: this raises it). Prints, for the registrations just
// before each mark, the mean answer time and the round trip of a second device's GET sent between
// them (what other devices feel), as markdown rows.
//
//   observe_register_bench [marks=500,4000] [--legacy-config]
// --legacy-config leaves out device.max_observers_per_session, for a tetherd that predates it
// (TETHER_BUILD_DIR chooses the binary).
#include <poll.h>
#include <sys/socket.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "tests/integration/sdk_client.h"
#include "tests/integration/tetherd_process.h"

using namespace tether::testing;
using Clock = std::chrono::steady_clock;

int main(int argc, char** argv) {
  std::vector<size_t> marks = {500, 4000};
  bool legacy = false;
  for (int a = 1; a < argc; ++a) {
    if (std::strcmp(argv[a], "--legacy-config") == 0) {
      legacy = true;
      continue;
    }
    marks.clear();
    std::stringstream ss(argv[a]);
    for (std::string m; std::getline(ss, m, ',');) marks.push_back(std::stoul(m));
  }
  const size_t n = *std::max_element(marks.begin(), marks.end());
  TetherdProcess gw;
  const uint16_t port = static_cast<uint16_t>(FreePort());
  gw.WriteConfig("device:\n  listen: \"127.0.0.1:" + std::to_string(port) + "\"\n" +
                 (legacy ? std::string() : "  max_observers_per_session: " + std::to_string(n + 1) + "\n") +
                 "admin:\n  listen: \"127.0.0.1:" + std::to_string(FreePort(false)) +
                 "\"\nstore:\n  path: ${STORE}\nlog:\n  level: warn\napps:\n  - id: myapp\n    default: true\n"
                 "routes:\n  - { name: all, match: \"**\" }\n");
  gw.Start();
  std::this_thread::sleep_for(std::chrono::milliseconds(500));
  SdkClient dev(port), other(port);
  if (!dev.Open() || !other.Open()) {
    std::fprintf(stderr, "cannot open sessions\n%s\n", gw.Log().c_str());
    return 1;
  }
  const size_t window = 100;  // registrations measured before each mark
  std::printf("| observations held | mean registration ms (last %zu) | max ms | other device's GET p50 / max ms |\n|---|---|---|---|\n",
              window);
  std::vector<double> reg, ping;
  char buf[2048];
  for (uint32_t i = 0; i < n; ++i) {
    // GET /o/<i> with Observe=0 and the session's .cs, built by the tests' SDK client.
    const std::string pkt = dev.Prepare(1, "o/" + std::to_string(i), "", {}, 0u);
    const size_t tkl = static_cast<uint8_t>(pkt[0]) & 0x0f;
    const auto t0 = Clock::now();
    dev.SendBytes(pkt);
    bool answered = false;
    while (!answered) {
      pollfd p{dev.fd(), POLLIN, 0};
      if (poll(&p, 1, 5000) <= 0) {
        std::fprintf(stderr, "no answer to registration %u\n", i);
        return 1;
      }
      const ssize_t got = recv(dev.fd(), buf, sizeof buf, 0);
      // Our answer: an ACK (type 2) echoing this token.
      answered = got >= static_cast<ssize_t>(4 + tkl) && (static_cast<uint8_t>(buf[0]) >> 4 & 3) == 2 &&
                 (static_cast<uint8_t>(buf[0]) & 0x0f) == tkl && std::memcmp(buf + 4, pkt.data() + 4, tkl) == 0;
      if (answered && static_cast<uint8_t>(buf[1]) != 0x45) {
        std::fprintf(stderr, "registration %u answered %d.%02d\n", i, buf[1] >> 5 & 7, buf[1] & 31);
        return 1;
      }
    }
    const double ms = std::chrono::duration<double, std::milli>(Clock::now() - t0).count();
    const size_t held = i + 1;
    if (std::any_of(marks.begin(), marks.end(), [&](size_t m) { return held + window > m && held <= m; })) {
      reg.push_back(ms);
      const auto p0 = Clock::now();
      if (other.Get("x").CodeString() != "2.05") std::fprintf(stderr, "read failed\n");
      ping.push_back(std::chrono::duration<double, std::milli>(Clock::now() - p0).count());
    }
    if (std::find(marks.begin(), marks.end(), held) != marks.end()) {
      double sum = 0;
      for (double r : reg) sum += r;
      std::sort(ping.begin(), ping.end());
      std::printf("| %zu | %.3f | %.3f | %.3f / %.3f |\n", held, sum / reg.size(), *std::max_element(reg.begin(), reg.end()),
                  ping[ping.size() / 2], ping.back());
      reg.clear();
      ping.clear();
    }
  }
  return 0;
}
