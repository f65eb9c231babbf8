// Overload seen from a device: while the commits in progress are later than device.max_write_wait,
// new writes are answered at once with 5.03 + Max-Age and a diagnostic (counted in /metrics as
// tether_writes_refused_total{reason="overloaded"}), nothing of them is queued, reads go on being
// served, a sustained overload shows in /readyz and tetherctl status, and writes are accepted
// again by themselves once the commits catch up.
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "tests/integration/sdk_client.h"
#include "tests/integration/tetherd_process.h"
#include "tests/support/eventually.h"

namespace tether::testing {
namespace {

using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;

// A CBOR map of n small entries ({"k00000": 0, ...}): one PUT of it is n leaves in the local
// copy, so each commit that carries it takes a while.
// n < 65536 (a 16-bit map length, 5-digit keys).
std::string HeavyMap(int n) {
  std::string out = {static_cast<char>(0xB9), static_cast<char>(n >> 8), static_cast<char>(n & 0xFF)};
  char key[16];
  for (int i = 0; i < n; ++i) {
    std::snprintf(key, sizeof key, "k%05d", i);
    out += static_cast<char>(0x66);
    out.append(key, 6);
    out += static_cast<char>(i % 24);
  }
  return out;
}

double Metric(int admin_port, const std::string& series) {
  ShellResult m = Shell("curl -sf http://127.0.0.1:" + std::to_string(admin_port) + "/metrics");
  EXPECT_EQ(m.status, 0);
  for (size_t i = 0; i < m.out.size();) {
    size_t eol = m.out.find('\n', i);
    if (eol == std::string::npos) eol = m.out.size();
    const std::string line = m.out.substr(i, eol - i);
    i = eol + 1;
    if (line.rfind(series + " ", 0) == 0) return std::stod(line.substr(series.size() + 1));
  }
  return -1;
}

// The value of `key` in tetherctl's aligned "key:  value" lines; "(absent)" when no line has it.
std::string Field(const std::string& text, const std::string& key) {
  const std::string head = key + ":";
  for (size_t i = 0; i < text.size();) {
    size_t eol = text.find('\n', i);
    if (eol == std::string::npos) eol = text.size();
    const std::string line = text.substr(i, eol - i);
    i = eol + 1;
    if (line.rfind(head + " ", 0) != 0) continue;
    const size_t v = line.find_first_not_of(' ', head.size());
    return v == std::string::npos ? "" : line.substr(v);
  }
  return "(absent)";
}

ShellResult Ctl(int admin_port, const std::string& args) {
  return Shell(TetherdProcess::BinaryPath("tetherctl") + " --admin 127.0.0.1:" + std::to_string(admin_port) + " " + args);
}

TEST(Overload, LateCommitsShedNewWritesWith503AndMaxAgeCountedAndRecover) {
  TetherdProcess gw;
  const auto coap_port = static_cast<uint16_t>(FreePort());
  const int admin_port = FreePort(false);
  gw.WriteConfig("device:\n  listen: \"127.0.0.1:" + std::to_string(coap_port) +
                 "\"\n  max_payload: 64KiB\n  max_write_wait: 10ms\nadmin:\n  listen: \"127.0.0.1:" +
                 std::to_string(admin_port) + "\"\nstore:\n  path: ${STORE}\nlog:\n  level: warn\napps:\n  - id: myapp\n");
  gw.Start();
  ASSERT_TRUE(Eventually([&] { return Shell("curl -sf http://127.0.0.1:" + std::to_string(admin_port) + "/healthz").status == 0; }, 10s))
      << gw.Log();

  // Four devices keep the writer busy with large values (7,000 leaves each): every commit they
  // are in takes far longer than 10 ms.
  const std::string heavy = HeavyMap(7000);
  std::atomic<bool> stop{false};
  std::atomic<int> heavy_ok{0}, heavy_shed{0}, heavy_other{0};
  std::vector<std::thread> writers;
  for (int d = 0; d < 4; ++d) {
    writers.emplace_back([&, d] {
      SdkClient dev(coap_port);
      if (!dev.Open("heavy" + std::to_string(d))) return;
      while (!stop) {
        const std::string code = dev.Put("bulk/d" + std::to_string(d), heavy).CodeString();
        (code == "2.05" ? heavy_ok : code == "5.03" ? heavy_shed : heavy_other)++;
      }
    });
  }

  // A small device writes every 20 ms: the writes that arrive while a heavy commit is late are
  // refused at once; each is answered well before the SDK's first retransmission (2 s).
  SdkClient probe(coap_port);
  ASSERT_TRUE(probe.Open("probe"));
  int ok = 0, shed = 0;
  std::vector<std::string> shed_paths;
  std::string not_ready, status_shedding;  // what /readyz and tetherctl said once shedding lasted
  const Clock::time_point start = Clock::now(), until = start + 5s;
  for (int i = 0; Clock::now() < until; ++i) {
    const std::string path = "probe/p" + std::to_string(i);
    const Clock::time_point t0 = Clock::now();
    CoapReply r = probe.Put(path, CborUint(static_cast<uint64_t>(i)));
    const auto took = Clock::now() - t0;
    EXPECT_LT(took, 2s) << "write " << i << " answered " << r.CodeString();
    if (r.CodeString() == "2.05") {
      ++ok;
    } else {
      ASSERT_EQ(r.CodeString(), "5.03") << i;
      ASSERT_TRUE(r.max_age) << "the device is told when to retry";
      EXPECT_EQ(*r.max_age, 1u);
      EXPECT_EQ(r.payload, "overloaded, retry later");
      ++shed;
      shed_paths.push_back(path);
    }
    if (i % 10 == 0) {
      EXPECT_EQ(probe.Get("probe/p0").CodeString(), "2.05") << "reads are not shed";
    }
    // Sustained (past 2 s, the SDK's retransmission): /readyz and tetherctl say so.
    if (Clock::now() - start > 3s && not_ready.empty()) {
      ShellResult ready = Shell("curl -s -w ' %{http_code}' http://127.0.0.1:" + std::to_string(admin_port) + "/readyz");
      if (ready.out.find("writes shed for") != std::string::npos) {
        not_ready = ready.out;
        status_shedding = Ctl(admin_port, "status").out;
      }
    }
    std::this_thread::sleep_for(20ms);
  }
  stop = true;
  for (auto& t : writers) t.join();
  std::printf("overload: probe writes %d answered 2.05, %d shed; heavy writes %d answered 2.05, %d shed, %d other\n",
              ok, shed, heavy_ok.load(), heavy_shed.load(), heavy_other.load());
  EXPECT_GT(shed, 0) << "commits later than 10 ms must shed some writes";
  EXPECT_NE(not_ready.find("device.max_write_wait (10 ms)"), std::string::npos) << not_ready;
  EXPECT_NE(not_ready.find(" 503"), std::string::npos) << not_ready;
  const std::string shedding_for = Field(status_shedding, "overload.shedding_for_s");
  EXPECT_NE(shedding_for, "(absent)") << status_shedding;
  EXPECT_NE(shedding_for, "null") << status_shedding;
  EXPECT_GT(heavy_ok, 0);
  EXPECT_EQ(heavy_other, 0);

  // Counted where an operator looks, once per refused write.
  EXPECT_EQ(Metric(admin_port, "tether_writes_refused_total{reason=\"overloaded\"}"), shed + heavy_shed);
  EXPECT_EQ(Metric(admin_port, "tether_requests_total{method=\"PUT\",code=\"5.03\"}"), shed + heavy_shed);

  // Nothing of a refused write was kept; the backlog gone, writes are accepted again.
  for (const std::string& p : shed_paths) EXPECT_EQ(Hex(probe.Get(p).payload), "f6") << p;
  EXPECT_TRUE(Eventually([&] { return probe.Put("probe/after", CborUint(1)).CodeString() == "2.05"; }, 5s));
  // Shedding over (no write shed for 2 s): ready again, and tetherctl says so.
  EXPECT_TRUE(Eventually([&] { return Shell("curl -sf http://127.0.0.1:" + std::to_string(admin_port) + "/readyz").status == 0; }, 5s));
  const nlohmann::json status = nlohmann::json::parse(Ctl(admin_port, "--json status").out);
  EXPECT_TRUE(status["overload"]["shedding_for_s"].is_null()) << status.dump();
  EXPECT_EQ(status["overload"]["writes_shed"], shed + heavy_shed) << status.dump();
}

// The loop falls behind (here: stopped) while datagrams keep coming: the kernel drops what does not
// fit the receive queue. Nothing in tetherd sees those datagrams, so the kernel's count is what
// /metrics, /readyz and tetherctl status report; the daemon serves on once it reads again.
TEST(Overload, DatagramsTheKernelDropsShowInMetricsReadyzAndStatus) {
  TetherdProcess gw;
  const auto coap_port = static_cast<uint16_t>(FreePort());
  const int admin_port = FreePort(false);
  gw.WriteConfig("device:\n  listen: \"127.0.0.1:" + std::to_string(coap_port) + "\"\nadmin:\n  listen: \"127.0.0.1:" +
                 std::to_string(admin_port) + "\"\nstore:\n  path: ${STORE}\nlog:\n  level: warn\napps:\n  - id: myapp\n");
  gw.Start();
  ASSERT_TRUE(Eventually([&] { return Shell("curl -sf http://127.0.0.1:" + std::to_string(admin_port) + "/readyz").status == 0; }, 10s))
      << gw.Log();
  SdkClient dev(coap_port);
  ASSERT_TRUE(dev.Open("steady"));
  const double buffer = Metric(admin_port, "tether_coap_receive_buffer_bytes");
  ASSERT_GT(buffer, 0);
  EXPECT_EQ(Metric(admin_port, "tether_coap_receive_dropped_total"), 0);

  // Junk (not CoAP) from one socket, more than the buffer holds, while tetherd is stopped; then it
  // runs 0.3 s and reads the queue empty. Repeated past 2 s of drops.
  const int fd = ::socket(AF_INET, SOCK_DGRAM, 0);
  ASSERT_GE(fd, 0);
  sockaddr_in to{};
  to.sin_family = AF_INET;
  to.sin_port = htons(coap_port);
  to.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  const std::string junk(1200, '\0');
  std::string not_ready, status_dropping;
  const Clock::time_point start = Clock::now();
  while (Clock::now() - start < 8s && not_ready.empty()) {
    gw.Signal(SIGSTOP);
    for (double sent = 0; sent < 2 * buffer + (1 << 20); sent += static_cast<double>(junk.size()))
      ::sendto(fd, junk.data(), junk.size(), 0, reinterpret_cast<const sockaddr*>(&to), sizeof to);
    gw.Signal(SIGCONT);
    std::this_thread::sleep_for(300ms);
    ShellResult ready = Shell("curl -s -w ' %{http_code}' http://127.0.0.1:" + std::to_string(admin_port) + "/readyz");
    if (ready.out.find("datagrams dropped by the kernel") != std::string::npos) {
      not_ready = ready.out;
      status_dropping = Ctl(admin_port, "status").out;
    }
  }
  ::close(fd);
  EXPECT_NE(not_ready.find("the CoAP receive queue is full"), std::string::npos) << not_ready;
  EXPECT_NE(not_ready.find(" 503"), std::string::npos) << not_ready;
  const std::string dropping_for = Field(status_dropping, "overload.receive_dropping_for_s");
  EXPECT_NE(dropping_for, "(absent)") << status_dropping;
  EXPECT_NE(dropping_for, "null") << status_dropping;
  const double dropped = Metric(admin_port, "tether_coap_receive_dropped_total");
  EXPECT_GT(dropped, 0);

  // Reading again, it serves the device and turns ready once no datagram was dropped for 2 s.
  EXPECT_EQ(dev.Put("steady/after", CborUint(1)).CodeString(), "2.05");
  EXPECT_TRUE(Eventually([&] { return Shell("curl -sf http://127.0.0.1:" + std::to_string(admin_port) + "/readyz").status == 0; }, 6s));
  const nlohmann::json status = nlohmann::json::parse(Ctl(admin_port, "--json status").out);
  EXPECT_TRUE(status["overload"]["receive_dropping_for_s"].is_null()) << status.dump();
  EXPECT_EQ(status["overload"]["receive_dropped"].get<double>(), dropped) << status.dump();
  EXPECT_EQ(status["overload"]["receive_buffer_bytes"].get<double>(), buffer) << status.dump();
}

}  // namespace
}  // namespace tether::testing
