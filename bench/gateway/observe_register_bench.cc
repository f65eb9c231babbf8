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

namespace {

void PutOption(std::string* out, uint16_t* last, uint16_t number, const std::string& value) {
  auto nibble = [](size_t v, std::string* ext) -> uint8_t {
    if (v < 13) return static_cast<uint8_t>(v);
    if (v < 269) {
      ext->push_back(static_cast<char>(v - 13));
      return 13;
    }
    ext->push_back(static_cast<char>((v - 269) >> 8));
    ext->push_back(static_cast<char>((v - 269) & 0xff));
    return 14;
  };
  std::string ext_delta, ext_len;
  uint8_t d = nibble(number - *last, &ext_delta), l = nibble(value.size(), &ext_len);
  out->push_back(static_cast<char>(d << 4 | l));
  *out += ext_delta + ext_len + value;
  *last = number;
}

// GET /o/<i> with Observe=0, .cs and an 8-byte token made of i.
std::string ObserveRequest(uint32_t i, const std::string& cs) {
  std::string out = {0x48, 0x01, static_cast<char>(i & 0xff), static_cast<char>((i >> 8) & 0xff)};
  for (int b = 0; b < 8; ++b) out.push_back(static_cast<char>(b < 4 ? (i >> (8 * b)) & 0xff : 0x5a));
  uint16_t last = 0;
  PutOption(&out, &last, 6, "");  // Observe = 0
  PutOption(&out, &last, 11, "o");
  PutOption(&out, &last, 11, std::to_string(i));
  PutOption(&out, &last, 15, ".cs=" + cs);
  return out;
}

}  // namespace

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
  // The device's short token: the 2.05 of its open carried it; SdkClient keeps it.
  const std::string cs = dev.short_token();
  const size_t window = 100;  // registrations measured before each mark
  std::printf("| observations held | mean registration ms (last %zu) | max ms | other device's GET p50 / max ms |\n|---|---|---|---|\n",
              window);
  std::vector<double> reg, ping;
  char buf[2048];
  for (uint32_t i = 0; i < n; ++i) {
    const std::string pkt = ObserveRequest(i, cs);
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
      answered = got >= 12 && (static_cast<uint8_t>(buf[0]) >> 4 & 3) == 2 && std::memcmp(buf + 4, pkt.data() + 4, 8) == 0;
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
