// drain_bench: N queued writes (default 1,000,000) in a real LMDB store (fsync durability, as
// tetherd runs) drained to fakecloud through the path tetherd uses: gateway::CloudBridge peeks the
// store's queue and deletes confirmed entries with store batches (LMDB + fsync), the Drainer
// uploads multi-path PATCHes with tetherd's default batch limits unless told otherwise.
// Usage: upstream_drain_bench [ops] [max_ops_per_batch|0=default] [keys] [progress_file|-] [live_per_s]
// progress_file: "seconds uploaded_ops" every 250 ms, for plots. live_per_s: while the backlog
// drains, live device writes are committed to a second route at this rate and their
// commit-to-confirmed latency is reported (the backlog must not starve them).
// Exit status 0 only when every write was uploaded and the queue is empty.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <string>
#include <unistd.h>
#include <vector>

#include "gateway/cloud/cloud_bridge.h"
#include "gateway/config/config.h"
#include "gateway/device/device_api.h"
#include "gateway/config/route_table.h"
#include "store/boot_clock.h"
#include "store/store.h"
#include "tests/upstream/fakecloud_process.h"
#include "upstream/drainer.h"

using namespace tether;
using Clock = std::chrono::steady_clock;

namespace {

// Records when each live write was confirmed, to measure its latency under the backlog.
class TimedBridge : public CloudBridge {
 public:
  using CloudBridge::CloudBridge;
  void Confirmed(const std::string& route, uint64_t up_to) override {
    if (route == "live") {
      auto now = Clock::now();
      while (next_ < live_committed.size() && live_committed[next_].first <= up_to) {
        live_latency_ms.push_back(std::chrono::duration<double, std::milli>(now - live_committed[next_++].second).count());
      }
    }
    CloudBridge::Confirmed(route, up_to);
  }
  std::vector<std::pair<uint64_t, Clock::time_point>> live_committed;  // seq, commit time
  std::vector<double> live_latency_ms;

 private:
  size_t next_ = 0;
};

store::QueueEntry Entry(const std::string& route, const std::string& path, std::string payload) {
  store::QueueEntry e;
  e.route = route;
  e.device_id = "bench";
  e.kind = store::OpKind::kSet;
  e.path = path;
  e.payload = std::move(payload);
  e.wall_ms = store::WallClockMs();
  e.boottime_ms = store::BootTimeMs();
  e.boot_id = store::BootId();
  e.cloud_offset_ms = 0;
  return e;
}

void RunUntil(uv_loop_t* loop, const std::function<bool()>& done) {
  while (!done()) uv_run(loop, UV_RUN_ONCE);
}

}  // namespace

int main(int argc, char** argv) {
  long n = argc > 1 ? std::atol(argv[1]) : 1000000;
  long batch = argc > 2 ? std::atol(argv[2]) : 0;
  long keys = argc > 3 ? std::atol(argv[3]) : 100000;
  FILE* progress = argc > 4 && std::string(argv[4]) != "-" ? std::fopen(argv[4], "w") : nullptr;
  long live_rate = argc > 5 ? std::atol(argv[5]) : 0;
  upstream::testing::FakeCloud cloud;
  std::string dir = (std::filesystem::temp_directory_path() / ("drain_bench_" + std::to_string(getpid()))).string();
  std::filesystem::remove_all(dir);

  Config config = Config::Parse("upstream:\n  url: " + cloud.url() + "\nroutes:\n"
                                "  - { name: bench, match: \"bench/**\" }\n  - { name: live, match: \"live/**\" }\n",
                                "drain_bench.yaml");
  uv_loop_t loop;
  uv_loop_init(&loop);
  int status = 1;
  {
    store::StoreOptions so;
    so.durability = store::Durability::kFsync;
    so.map_max = 8ull << 30;
    auto st = store::Store::Open(dir, so, &loop);
    // Fill the queue: 10,000 writes per committed batch.
    auto fill0 = Clock::now();
    for (long i = 0; i < n;) {
      store::WriteBatch b;
      for (long j = 0; j < 10000 && i < n; ++j, ++i) {
        b.Append(Entry("bench", "bench/dev/d" + std::to_string(i % keys) + "/v", std::to_string(i)));
      }
      bool done = false;
      st->Submit(std::move(b), [&](const store::BatchResult& r) {
        if (!r.status.ok()) std::fprintf(stderr, "fill failed: %s\n", r.status.ToString().c_str()), std::exit(1);
        done = true;
      });
      RunUntil(&loop, [&] { return done; });
    }
    std::printf("queued %ld writes in the store in %.1f s\n", n,
                std::chrono::duration<double>(Clock::now() - fill0).count());

    auto routes = std::make_shared<RouteTable>(config);
    LocalCopy local(&loop, *st);
    DeviceApi devices(&loop, *st, local, routes);
    TimedBridge bridge(*st, local, routes, devices);
    bridge.OnClockEstimate(store::WallClockMs() - store::BootTimeMs(), 1, true);  // cloud = local wall clock
    upstream::HttpClient http(&loop);
    auto creds = upstream::MakeNoCredentials();
    upstream::DrainerOptions opt;
    opt.base_url = cloud.url();
    if (batch > 0) opt.limits.max_ops = static_cast<size_t>(batch);
    std::printf("batch limits: %zu ops, %zu bytes%s\n", opt.limits.max_ops, opt.limits.max_bytes,
                batch > 0 ? "" : " (tetherd's defaults)");
    std::vector<upstream::RouteTarget> targets = {{"bench", bridge.RootOf("bench")}, {"live", bridge.RootOf("live")}};
    upstream::Drainer drainer(&loop, http, *creds, bridge, targets, opt);
    // As tetherd wires it: a route's next batch leaves once its confirmation is committed.
    util::Subscription settled = bridge.SetSettledHook([&drainer](const std::string& route) { drainer.Notify(route); });
    auto t0 = Clock::now();
    drainer.Start();
    auto limit = t0 + std::chrono::minutes(5);
    auto next_sample = t0;
    long live_sent = 0, live_inflight = 0;
    uv_timer_t tick;  // wakes the loop every 10 ms to pace the live writes
    uv_timer_init(&loop, &tick);
    if (live_rate > 0) uv_timer_start(&tick, [](uv_timer_t*) {}, 10, 10);
    auto depth = [&] { return st->queue().Totals().entries; };
    while ((depth() > 0 || live_inflight > 0 || bridge.live_latency_ms.size() < bridge.live_committed.size()) &&
           Clock::now() < limit) {
      uv_run(&loop, UV_RUN_ONCE);
      auto now = Clock::now();
      if (live_rate > 0 && drainer.stats()["bench"].uploaded_ops < static_cast<uint64_t>(n)) {
        long due = static_cast<long>(std::chrono::duration<double>(now - t0).count() * static_cast<double>(live_rate));
        if (live_sent < due) {
          store::WriteBatch b;
          for (; live_sent < due; ++live_sent) {
            b.Append(Entry("live", "live/sensor/s" + std::to_string(live_sent % 100), std::to_string(live_sent)));
          }
          ++live_inflight;
          st->Submit(std::move(b), [&](const store::BatchResult& r) {
            --live_inflight;
            for (uint64_t seq : r.seqs) bridge.live_committed.push_back({seq, Clock::now()});
            drainer.Notify("live");
          });
        }
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
    auto stats = drainer.stats()["bench"];
    std::printf("ops=%lu batches=%lu errors=%lu queued=%lu seconds=%.2f ops_per_s=%.0f\n",
                static_cast<unsigned long>(stats.uploaded_ops), static_cast<unsigned long>(stats.batches),
                static_cast<unsigned long>(stats.retryable_errors + stats.network_errors),
                static_cast<unsigned long>(depth()), s, static_cast<double>(stats.uploaded_ops) / s);
    if (live_rate > 0) {
      auto lat = bridge.live_latency_ms;
      std::sort(lat.begin(), lat.end());
      auto pct = [&](double p) { return lat.empty() ? -1.0 : lat[std::min(lat.size() - 1, static_cast<size_t>(p * lat.size()))]; };
      std::printf("live writes during the drain: %ld at %ld/s, confirmed %zu, latency p50 %.0f ms, p99 %.0f ms, max %.0f ms\n",
                  live_sent, live_rate, lat.size(), pct(0.5), pct(0.99), lat.empty() ? -1.0 : lat.back());
    }
    drainer.Stop();
    bool drained = depth() == 0;
    devices.Close();
    st->Close();
    uv_run(&loop, UV_RUN_NOWAIT);
    auto last = cloud.Get("/bench/dev/d" + std::to_string((n - 1) % keys) + "/v");
    std::printf("last value check: %s (want %ld)\n", last.dump().c_str(), n - 1);
    bool live_ok = true;
    if (live_sent > 0) {
      long l = live_sent - 1;
      auto v = cloud.Get("/live/sensor/s" + std::to_string(l % 100));
      std::printf("last live value check: %s (want %ld)\n", v.dump().c_str(), l);
      live_ok = v == l;
    }
    status = drained && last == n - 1 && stats.uploaded_ops == static_cast<uint64_t>(n) && live_ok ? 0 : 1;
  }
  uv_run(&loop, UV_RUN_NOWAIT);
  uv_loop_close(&loop);
  std::filesystem::remove_all(dir);
  return status;
}
