// drain_bench: uploads N queued ops (default 1,000,000) from an in-memory outbox to fakecloud
// through the Drainer and reports ops/s, batches and wall time.
// Usage: upstream_drain_bench [ops] [max_ops_per_batch] [keys] [progress_file] [live_per_s]
// progress_file: "seconds uploaded_ops" every 250 ms, for plots ("-": none).
// live_per_s: while the backlog drains, live writes arrive on a second route at this rate; their
// enqueue-to-confirmed latency is reported (the backlog must not starve them).
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "tests/upstream/fakecloud_process.h"
#include "tests/upstream/memory_outbox.h"
#include "upstream/drainer.h"

using namespace tether::upstream;
using Clock = std::chrono::steady_clock;

namespace {

// Records when each live op was confirmed, to measure its latency under the backlog.
class TimedOutbox : public testing::MemoryOutbox {
 public:
  void confirmed(const std::string& route, uint64_t up_to) override {
    if (route == "live") {
      auto now = Clock::now();
      while (live_confirmed_ < up_to && live_confirmed_ < live_added_at.size()) {
        live_latency_ms.push_back(std::chrono::duration<double, std::milli>(now - live_added_at[live_confirmed_++]).count());
      }
    }
    MemoryOutbox::confirmed(route, up_to);
  }
  std::vector<Clock::time_point> live_added_at;  // by live seq - 1
  std::vector<double> live_latency_ms;

 private:
  uint64_t live_confirmed_ = 0;
};

}  // namespace

int main(int argc, char** argv) {
  long n = argc > 1 ? std::atol(argv[1]) : 1000000;
  long batch = argc > 2 ? std::atol(argv[2]) : 5000;
  long keys = argc > 3 ? std::atol(argv[3]) : 100000;
  FILE* progress = argc > 4 && std::string(argv[4]) != "-" ? std::fopen(argv[4], "w") : nullptr;
  long live_rate = argc > 5 ? std::atol(argv[5]) : 0;
  testing::FakeCloud cloud;
  TimedOutbox outbox;
  for (long i = 0; i < n; ++i)
    outbox.add({0, "bench", OutboundOp::Kind::Set, "dev/d" + std::to_string(i % keys) + "/v",
                std::to_string(i), 0});
  uv_loop_t loop;
  uv_loop_init(&loop);
  auto t0 = Clock::now();
  long live_sent = 0;
  {
    HttpClient http(&loop);
    auto creds = MakeNoCredentials();
    DrainerOptions opt;
    opt.base_url = cloud.url();
    opt.limits.max_ops = static_cast<size_t>(batch);
    opt.limits.max_bytes = 64 << 20;
    opt.request_timeout_ms = 120000;
    Drainer drainer(&loop, http, *creds, outbox, {{"bench", "bench"}, {"live", "live"}}, opt);
    drainer.start();
    auto limit = t0 + std::chrono::minutes(5);
    auto next_sample = t0;
    // Live writes: paced by the clock, checked every loop turn and every 10 ms.
    uv_timer_t tick;
    uv_timer_init(&loop, &tick);
    if (live_rate > 0) uv_timer_start(&tick, [](uv_timer_t*) {}, 10, 10);
    while ((outbox.pending() > 0 || outbox.live_latency_ms.size() < static_cast<size_t>(live_sent)) &&
           Clock::now() < limit) {
      uv_run(&loop, UV_RUN_ONCE);
      auto now = Clock::now();
      if (live_rate > 0 && drainer.stats()["bench"].uploaded_ops < static_cast<uint64_t>(n)) {
        long due = static_cast<long>(std::chrono::duration<double>(now - t0).count() * static_cast<double>(live_rate));
        bool added = false;
        for (; live_sent < due; ++live_sent, added = true) {
          outbox.live_added_at.push_back(now);
          outbox.add({0, "live", OutboundOp::Kind::Set, "sensor/s" + std::to_string(live_sent % 100), std::to_string(live_sent), 0});
        }
        if (added) drainer.notify("live");
      }
      if (progress && now >= next_sample) {
        std::fprintf(progress, "%.3f %lu\n", std::chrono::duration<double>(now - t0).count(),
                     static_cast<unsigned long>(drainer.stats()["bench"].uploaded_ops));
        next_sample = now + std::chrono::milliseconds(250);
      }
    }
    uv_close(reinterpret_cast<uv_handle_t*>(&tick), nullptr);
    double s = std::chrono::duration<double>(Clock::now() - t0).count();
    if (progress) {
      std::fprintf(progress, "%.3f %lu\n", s, static_cast<unsigned long>(drainer.stats()["bench"].uploaded_ops));
      std::fclose(progress);
    }
    auto st = drainer.stats()["bench"];
    std::printf("ops=%lu batches=%lu errors=%lu pending=%zu seconds=%.2f ops_per_s=%.0f\n",
                static_cast<unsigned long>(st.uploaded_ops), static_cast<unsigned long>(st.batches),
                static_cast<unsigned long>(st.retryable_errors + st.network_errors),
                outbox.pending(), s, st.uploaded_ops / s);
    if (live_rate > 0) {
      auto lat = outbox.live_latency_ms;
      std::sort(lat.begin(), lat.end());
      auto pct = [&](double p) { return lat.empty() ? -1.0 : lat[std::min(lat.size() - 1, static_cast<size_t>(p * lat.size()))]; };
      std::printf("live writes during the drain: %ld at %ld/s, confirmed %zu, latency p50 %.0f ms, p99 %.0f ms, max %.0f ms\n",
                  live_sent, live_rate, lat.size(), pct(0.5), pct(0.99), lat.empty() ? -1.0 : lat.back());
    }
    drainer.stop();
  }
  uv_run(&loop, UV_RUN_NOWAIT);
  uv_loop_close(&loop);
  auto last = cloud.get("/bench/dev/d" + std::to_string((n - 1) % keys) + "/v");
  std::printf("last value check: %s (want %ld)\n", last.dump().c_str(), n - 1);
  bool live_ok = true;
  if (live_sent > 0) {
    long l = live_sent - 1;
    auto v = cloud.get("/live/sensor/s" + std::to_string(l % 100));
    std::printf("last live value check: %s (want %ld)\n", v.dump().c_str(), l);
    live_ok = v == l;
  }
  return outbox.pending() == 0 && last == n - 1 && live_ok ? 0 : 1;
}
