// Shared helpers for store tests: a temp directory and queue entry builders.
#pragma once

#include <stdlib.h>

#include <filesystem>
#include <string>

#include "store/boot_clock.h"
#include "store/queue_entry.h"

namespace tether::store::testing {

// mkdtemp'd directory under /tmp, removed with its contents on destruction.
class TempDir {
 public:
  TempDir() {
    char tmpl[] = "/tmp/tether-store-test-XXXXXX";
    path_ = mkdtemp(tmpl);
  }
  ~TempDir() {
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
  }
  const std::string& path() const { return path_; }
  std::string Sub(const std::string& name) const { return path_ + "/" + name; }

 private:
  std::string path_;
};

inline QueueEntry Entry(const std::string& route, const std::string& path, const std::string& payload,
                        int64_t wall_ms = 0) {
  QueueEntry e;
  e.route = route;
  e.device_id = "dev1";
  e.kind = OpKind::kSet;
  e.path = path;
  e.payload = payload;
  e.wall_ms = wall_ms ? wall_ms : WallClockMs();
  e.boottime_ms = BootTimeMs();
  e.boot_id = BootId();
  return e;
}

// An entry whose clocks read `at` (injected clocks for TTL tests).
inline QueueEntry EntryAt(const std::string& route, const std::string& payload, const ClockReading& at,
                          const std::string& path = "/x") {
  QueueEntry e = Entry(route, path, payload);
  e.wall_ms = at.wall_ms;
  e.boottime_ms = at.boottime_ms;
  e.boot_id = at.boot_id;
  return e;
}

}  // namespace tether::store::testing
