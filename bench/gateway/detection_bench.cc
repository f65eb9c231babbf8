// Detection latency and onDisconnect throughput of a real tetherd at N sessions.
//
// Opens N device sessions over UDP (one socket per device, as on a LAN), registers one
// onDisconnect set per device, then all devices fall silent at the same instant. The admin
// /metrics endpoint is scraped every 20 ms; the detection latency of each device is the time from
// its last datagram until tether_detections_total counted it, minus the configured timeout.
// Prints percentiles and the onDisconnect throughput as a markdown row.
//
//   detection_bench [sessions=10000] [timeout_s=5] [samples_file]

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "tests/integration/sdk_client.h"
#include "tests/integration/tetherd_process.h"
#include "bench/gateway/proc_usage.h"

using namespace tether::testing;
using Clock = std::chrono::steady_clock;

static double Metric(const std::string& text, const std::string& name) {
  size_t p = text.find("\n" + name + " ");
  return p == std::string::npos ? 0 : std::stod(text.substr(p + name.size() + 2));
}

int main(int argc, char** argv) {
  const size_t n = argc > 1 ? std::stoul(argv[1]) : 10000;
  const int timeout_s = argc > 2 ? std::stoi(argv[2]) : 5;
  const char* samples_path = argc > 3 ? argv[3] : nullptr;  // one latency (s) per line, for plots
  if (const uint64_t fds = tether::bench::RaiseFileLimit(); fds < n + 100) {
    std::fprintf(stderr, "need %zu file descriptors, have %llu\n", n + 100, static_cast<unsigned long long>(fds));
    return 2;
  }
  TetherdProcess gw;
  uint16_t port = static_cast<uint16_t>(FreePort());
  int admin = FreePort(false);
  gw.WriteConfig("device:\n  listen: \"127.0.0.1:" + std::to_string(port) + "\"\n  heartbeat_target: " +
                 std::to_string(timeout_s - 1) + "s\n  session_timeout: " + std::to_string(timeout_s) +
                 // One host opens the whole fleet before any session is used: no per-IP open limit.
                 "s\n  opens_per_second: 0\n  max_unconfirmed_sessions: 10000000\nadmin:\n  listen: \"127.0.0.1:" +
                 std::to_string(admin) +
                 "\"\nstore:\n  path: ${STORE}\nlog:\n  level: warn\napps:\n  - id: myapp\n");
  gw.Start();
  std::this_thread::sleep_for(std::chrono::milliseconds(500));

  std::vector<std::unique_ptr<SdkClient>> devs;
  for (size_t i = 0; i < n; ++i) devs.push_back(std::make_unique<SdkClient>(port));
  // Open sessions.
  std::vector<std::string> toks;
  size_t opened = 0;
  for (size_t lo = 0; lo < n; lo += 2000) {
    size_t hi = std::min(n, lo + 2000);
    toks.clear();
    for (size_t i = lo; i < hi; ++i) toks.push_back(devs[i]->SendOpen());
    for (size_t i = lo; i < hi; ++i) opened += devs[i]->AcceptOpen(devs[i]->Await(toks[i - lo]));
  }
  size_t reg_failed = 0;
  for (size_t lo = 0; lo < n; lo += 2000) {
    size_t hi = std::min(n, lo + 2000);
    toks.clear();
    for (size_t i = lo; i < hi; ++i) {
      toks.push_back(devs[i]->Send(3, "presence/d" + std::to_string(i), CborText("offline"), {".dis=add"}));
    }
    for (size_t i = lo; i < hi; ++i) reg_failed += devs[i]->Await(toks[i - lo]).CodeString() != "2.05";
  }
  // Last datagram from every device: a ping round; silence starts when each one was answered.
  std::vector<Clock::time_point> last(n);
  for (size_t lo = 0; lo < n; lo += 2000) {
    size_t hi = std::min(n, lo + 2000);
    toks.clear();
    for (size_t i = lo; i < hi; ++i) toks.push_back(devs[i]->Send(1, ".ping"));
    for (size_t i = lo; i < hi; ++i) {
      devs[i]->Await(toks[i - lo]);
      last[i] = Clock::now();
    }
  }
  Clock::time_point silent_from = *std::min_element(last.begin(), last.end());
  Clock::time_point silent_to = *std::max_element(last.begin(), last.end());

  // Scrape detections until all are counted (bounded).
  std::vector<std::pair<double, double>> curve;  // (seconds since silent_from, detections)
  std::vector<std::pair<double, double>> fired;
  const std::string curl = "curl -sf http://127.0.0.1:" + std::to_string(admin) + "/metrics";
  double detected = 0, fired_now = 0;
  while ((detected < static_cast<double>(opened) || fired_now < static_cast<double>(opened)) &&
         Clock::now() - silent_to < std::chrono::seconds(timeout_s + 30)) {
    std::string text(1, '\n');  // Metric() looks for "\n<name> "
    text += Shell(curl).out;
    detected = Metric(text, "tether_detections_total");
    double t = std::chrono::duration<double>(Clock::now() - silent_from).count();
    curve.emplace_back(t, detected);
    fired_now = Metric(text, "tether_ondisconnect_fired_total");
    fired.emplace_back(t, fired_now);
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  // Latency of the k-th detection, relative to the k-th device's silence start (both in order).
  std::vector<double> silence(n);
  for (size_t i = 0; i < n; ++i) silence[i] = std::chrono::duration<double>(last[i] - silent_from).count();
  std::sort(silence.begin(), silence.end());
  std::vector<double> lat;
  size_t k = 0;
  for (const auto& [t, count] : curve) {
    while (k < count && k < n) lat.push_back(t - silence[k++] - timeout_s);
  }
  std::sort(lat.begin(), lat.end());
  auto pct = [&](double p) { return lat.empty() ? -1.0 : lat[std::min(lat.size() - 1, static_cast<size_t>(p * lat.size()))]; };
  // Throughput: from the scrape before the first detection to the scrape that saw every
  // onDisconnect operation committed (a lower bound: scrapes are 20 ms apart).
  double t_before = 0, t_last = 0;
  for (size_t i = 0; i < curve.size(); ++i) {
    if (curve[i].second == 0) t_before = curve[i].first;
    if (fired[i].second >= static_cast<double>(opened)) {
      t_last = fired[i].first;
      break;
    }
  }
  double throughput = t_last > t_before ? static_cast<double>(opened) / (t_last - t_before) : 0;
  std::printf("sessions opened %zu/%zu, onDisconnect registrations failed %zu, detected %.0f\n", opened, n, reg_failed, detected);
  std::printf("| sessions | timeout | detection latency beyond timeout p50 / p99 / max (s) | onDisconnect fired/s |\n");
  std::printf("|---|---|---|---|\n");
  std::printf("| %zu | %d s | %.3f / %.3f / %.3f | %.0f |\n", n, timeout_s, pct(0.5), pct(0.99), lat.empty() ? -1 : lat.back(), throughput);
  if (samples_path) {
    if (FILE* f = std::fopen(samples_path, "w")) {
      for (double v : lat) std::fprintf(f, "%.4f\n", v);
      std::fclose(f);
    }
  }
  gw.Signal(15);
  gw.WaitExit(std::chrono::seconds(20));
  return detected >= static_cast<double>(opened) ? 0 : 1;
}
