// WatchSet: keeps a changing set of database paths fresh (paths devices observe outside the sync
// roots). The first max_streams watched paths get a SyncStream each; beyond that a path is read
// with a GET every poll_interval_ms until a stream slot frees up (the oldest polled path is then
// promoted). on_data gets what changed with an absolute path: a stream's puts and patches (the
// first put after each connect replaces the whole path), and a polled value whenever it differs
// from the last one delivered. A stream the cloud cancels (rules) falls back to polling.
// Loop thread only; http and creds outlive it. A GET answered after destruction does nothing.
#pragma once
#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>
#include <uv.h>

#include "upstream/credentials.h"
#include "upstream/http_client.h"
#include "upstream/sync_stream.h"
#include "util/callback_scope.h"
#include "util/uv_handle.h"

namespace tether::upstream {

struct WatchSetOptions {
  std::string base_url;
  size_t max_streams = 32;
  int64_t poll_interval_ms = 30000;
  long poll_timeout_ms = 10000;
  int64_t idle_timeout_ms = 60000;  // streams: see SyncStreamOptions
  int64_t backoff_initial_ms = 500;
  int64_t backoff_max_ms = 30000;
  // The cloud answered (a stream or a read) or a stream's connection failed: see SyncStream.
  std::function<void(bool reachable)> on_link{};
  // A stream degraded to periodic reads (the server does not stream) or streams again.
  std::function<void(const std::string& path, bool polling, const std::string& why)> on_polling{};
};

class WatchSet {
 public:
  using OnData = std::function<void(const std::string& path, const nlohmann::json& value, bool is_patch)>;
  WatchSet(uv_loop_t* loop, HttpClient& http, Credentials& creds, WatchSetOptions opt, OnData on_data);
  ~WatchSet();  // the loop must run once more to close timers
  WatchSet(const WatchSet&) = delete;
  WatchSet& operator=(const WatchSet&) = delete;

  void Watch(const std::string& path);    // idempotent; path '/'-separated, "" = root
  void Unwatch(const std::string& path);  // idempotent; closes its stream
  void Stop();                            // unwatches everything

  size_t streams() const { return streams_.size(); }
  size_t streams_polling() const;  // of streams(): those reading periodically (no streaming)
  size_t streams_open() const;     // of streams(): those streaming
  size_t polled() const { return polled_.size(); }
  bool Streamed(const std::string& path) const { return streams_.count(path) > 0; }

 private:
  void OpenStream(const std::string& path);
  void AddPolled(const std::string& path);
  void PollAll();
  void Poll(const std::string& path);

  struct Polled {
    uint64_t digest = 0;   // of the last value delivered (0: none yet)
    bool in_flight = false;
  };

  uv_loop_t* loop_;
  HttpClient& http_;
  Credentials& creds_;
  WatchSetOptions opt_;
  OnData on_data_;
  std::map<std::string, std::unique_ptr<SyncStream>> streams_;
  std::vector<std::unique_ptr<SyncStream>> retired_;  // cancelled by the cloud, freed later
  std::map<std::string, Polled> polled_;
  std::deque<std::string> poll_order_;  // polled paths, oldest first (promotion order)
  util::UvHandle<uv_timer_t> poll_timer_;
  util::CallbackScope scope_;  // for GETs in flight
};

}  // namespace tether::upstream
