#include "gateway/session_liveness.h"

#include <spdlog/spdlog.h>

#include "store/boot_clock.h"

namespace tether {

namespace {
constexpr int64_t kTickMs = 250;
// A gap over this between two observations of the loop clock (the tick makes one every 250 ms)
// is a stall of the loop: its length is given back to every session's timeout.
constexpr int64_t kStallThresholdMs = 1'000;
// After a stall: how long the datagrams read are taken as ones that waited in the socket.
constexpr int64_t kStallDrainMs = 1'000;
}  // namespace

void SetCheckpoint(store::SessionRecord* r, const Session& s, int64_t now, const store::ClockReading& clock) {
  r->last_seen_ms = clock.wall_ms - (now - s.last_seen_ms);
  r->last_seen_boottime_ms = clock.boottime_ms - (now - s.last_seen_ms);
  r->boot_id = clock.boot_id;
  r->last_ping_ms = s.last_ping_ms ? clock.wall_ms - (now - s.last_ping_ms) : 0;
}

SessionLiveness::SessionLiveness(uv_loop_t* loop, SessionTable& sessions, SessionContinuity& continuity,
                                 DeviceApiCounters& counters, ExpiredHook expired, TickHook tick)
    : loop_(loop),
      sessions_(sessions),
      continuity_(continuity),
      counters_(counters),
      on_expired_(std::move(expired)),
      on_tick_(std::move(tick)),
      stall_(kTickMs, kStallThresholdMs) {
  uv_timer_init(loop_, &tick_);
  tick_.data = this;
  uv_timer_start(&tick_, OnTick, kTickMs, kTickMs);
  uv_idle_init(loop_, &sweep_idle_);
  uv_check_init(loop_, &sweep_check_);
  sweep_check_.data = this;
}

SessionLiveness::~SessionLiveness() { Close(); }

void SessionLiveness::Close() {
  for (uv_handle_t* h : {reinterpret_cast<uv_handle_t*>(&tick_), reinterpret_cast<uv_handle_t*>(&sweep_idle_),
                         reinterpret_cast<uv_handle_t*>(&sweep_check_)}) {
    if (!uv_is_closing(h)) uv_close(h, nullptr);
  }
}

int64_t SessionLiveness::Now() {
  const int64_t now = static_cast<int64_t>(uv_now(loop_));
  if (const int64_t stalled = stall_.Observe(now)) {
    boottime_minus_loop_ms_ = store::BootTimeMs() - now;
    sessions_.ShiftForStall(stalled);
    pings_judged_from_ms_ = now + kStallDrainMs;
    continuity_.HostLinksUntil(now + SessionContinuity::kEvidenceMs);
    if (file_) sessions_.ForEachMutable([this](Session& s) { Stamp(s); });
    counters_.loop_stalls = stall_.stalls();
    counters_.loop_stalled_ms = static_cast<uint64_t>(stall_.stalled_ms());
    spdlog::warn("the event loop did not run for {} ms (process stopped, VM paused or starved of CPU?): that "
                 "time does not count as any device's silence", stalled + kTickMs);
  }
  return now;
}

void SessionLiveness::OnTick(uv_timer_t* t) {
  auto* self = static_cast<SessionLiveness*>(t->data);
  const int64_t now = self->Now();
  // CLOCK_BOOTTIME runs ahead of the loop's clock only while the host is suspended: a tick's
  // reading is fresh enough for the liveness file, and datagrams do not pay for one each.
  self->boottime_minus_loop_ms_ = store::BootTimeMs() - now;
  if (self->on_tick_) self->on_tick_(now);
  if (self->sessions_.MaybeDue(now)) self->ArmSweep();
}

void SessionLiveness::ArmSweep() {
  if (sweep_armed_) return;
  sweep_armed_ = true;
  // An active idle handle makes this iteration's poll non-blocking: whatever datagrams already
  // reached the sockets are read (and stamp their sessions) before OnSweep, in the check phase.
  uv_idle_start(&sweep_idle_, [](uv_idle_t*) {});
  uv_check_start(&sweep_check_, OnSweep);
}

void SessionLiveness::OnSweep(uv_check_t* h) {
  auto* self = static_cast<SessionLiveness*>(h->data);
  self->sweep_armed_ = false;
  uv_idle_stop(&self->sweep_idle_);
  uv_check_stop(&self->sweep_check_);
  self->on_expired_(self->sessions_.Expired(self->Now()));
}

void SessionLiveness::Stamp(Session& s) {
  if (!file_ || !s.confirmed) return;  // no record to restore it from: no slot either
  if (s.liveness_slot == LivenessFile::kNoSlot) s.liveness_slot = file_->Assign();
  file_->Write(s.liveness_slot, s.id,
               {s.last_seen_ms + boottime_minus_loop_ms_, s.last_ping_ms ? s.last_ping_ms + boottime_minus_loop_ms_ : 0});
}

void SessionLiveness::Free(Session& s) {
  if (file_ && s.liveness_slot != LivenessFile::kNoSlot) file_->Free(s.liveness_slot);
  s.liveness_slot = LivenessFile::kNoSlot;
}

store::WriteBatch SessionLiveness::Checkpoints() {
  const int64_t now = Now();
  const store::ClockReading clock = store::ClockNow();
  store::WriteBatch batch;
  sessions_.ForEachMutable([&](Session& s) {
    if (!s.confirmed) return;  // memory only
    store::SessionRecord r;
    SetCheckpoint(&r, s, now, clock);
    batch.TouchSession(s.id, r.last_seen_ms, r.last_seen_boottime_ms, r.boot_id, r.last_ping_ms);
  });
  return batch;
}

}  // namespace tether
