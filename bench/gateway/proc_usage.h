// What a benchmark reads about a process from /proc and asks of its own limits.
//
// - ReadProcessMemory: VmRSS, RssAnon and RssFile of /proc/PID/status, in KiB; -1 where unknown
//   (no such process, pid <= 0, or a kernel without the field).
// - ReadServerCpu: user + system CPU seconds of every thread of PID (/proc/PID/task/*/stat), split
//   into the event loop (the thread whose id is the pid), tetherd's store writer (the thread named
//   tether-writer) and the rest; zeros for pid <= 0.
// - RaiseFileLimit: raises this process's RLIMIT_NOFILE soft limit to the hard limit (a fleet
//   needs one socket per device) and returns the soft limit now in force.
// Any thread; no state.
#pragma once

#include <sys/types.h>

#include <cstdint>

namespace tether::bench {

struct ProcessMemory {
  long rss_kb = -1, anon_kb = -1, file_kb = -1;
};
ProcessMemory ReadProcessMemory(pid_t pid);

struct ServerCpu {
  double loop = 0, writer = 0, other = 0;
  double total() const { return loop + writer + other; }
};
ServerCpu ReadServerCpu(pid_t pid);

uint64_t RaiseFileLimit();

}  // namespace tether::bench
