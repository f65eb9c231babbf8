// SessionLiveness: the sessions' clock — loop time with stalls given back, deadlines swept after
// the sockets were read, and each session's last datagram and ping in a file that survives a
// crash of the process.
//
// Thread: loop thread only. Ownership: the session keeper owns it, and the SessionTable and
// SessionContinuity it adjusts; its libuv handles close in Close() (the loop must run once more).
// Failure: none reported — without a liveness file, restored sessions get a full timeout.
//
// Invariants:
// - A gap over kStallThresholdMs between two readings of the loop clock (the tick reads it every
//   250 ms) is a stall of the loop: its length is given back to every session's timeout, and the
//   pings read in the kStallDrainMs after it are not recorded (they waited in the socket).
// - Expired sessions are handed over in the check phase after a non-blocking poll: a datagram
//   that reached the host before a deadline counts.
// - Only confirmed sessions have a slot in the liveness file (an unconfirmed one has no record to
//   restore it from).
#pragma once

#include <uv.h>

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "gateway/device_counters.h"
#include "gateway/liveness_file.h"
#include "gateway/loop_stall.h"
#include "gateway/session_continuity.h"
#include "gateway/session_table.h"
#include "store/store.h"

namespace tether {

class SessionLiveness {
 public:
  // expired: the ids of sessions past their deadline; tick: every 250 ms with the loop clock.
  using ExpiredHook = std::function<void(const std::vector<std::string>& ids)>;
  using TickHook = std::function<void(int64_t now)>;
  SessionLiveness(uv_loop_t* loop, SessionTable& sessions, SessionContinuity& continuity,
                  DeviceApiCounters& counters, ExpiredHook expired, TickHook tick);
  ~SessionLiveness();
  SessionLiveness(const SessionLiveness&) = delete;
  SessionLiveness& operator=(const SessionLiveness&) = delete;
  void Close();

  void SetFile(std::unique_ptr<LivenessFile> file) { file_ = std::move(file); }
  const LivenessFile* file() const { return file_.get(); }
  // The loop clock, after giving any loop stall it reveals back to every session.
  int64_t Now();
  // Startup work (opening the store, restoring sessions) is not a stall.
  void ResetStall() { stall_.Reset(); }
  // At restore: CLOCK_BOOTTIME - loop clock, read once before the loop runs.
  void SetBoottimeOffset(int64_t boottime_minus_loop_ms) { boottime_minus_loop_ms_ = boottime_minus_loop_ms; }
  // Whether a ping read at `now` becomes the session's last ping (not while a stall's backlog drains).
  bool RecordsPingAt(int64_t now) const { return now >= pings_judged_from_ms_; }
  // Records s's last datagram and ping in the file (at every change); Free gives its slot back.
  void Stamp(Session& s);
  void Free(Session& s);
  // Every confirmed session's liveness fields, as record updates (a graceful stop).
  store::WriteBatch Checkpoints();

 private:
  void ArmSweep();
  static void OnSweep(uv_check_t* h);
  static void OnTick(uv_timer_t* t);

  uv_loop_t* loop_;
  SessionTable& sessions_;
  SessionContinuity& continuity_;
  DeviceApiCounters& counters_;
  ExpiredHook on_expired_;
  TickHook on_tick_;
  std::unique_ptr<LivenessFile> file_;
  LoopStallDetector stall_;
  int64_t boottime_minus_loop_ms_ = 0;  // CLOCK_BOOTTIME - loop clock, as of the last tick
  int64_t pings_judged_from_ms_ = 0;    // pings before this (a stall's backlog) do not become last_ping
  uv_timer_t tick_;
  uv_idle_t sweep_idle_;  // while armed: the loop polls without blocking, then OnSweep runs
  uv_check_t sweep_check_;
  bool sweep_armed_ = false;
};

// The liveness checkpoint of s (loop clock) as of `now` (loop clock) = `clock` (the three clocks).
void SetCheckpoint(store::SessionRecord* r, const Session& s, int64_t now, const store::ClockReading& clock);

}  // namespace tether
