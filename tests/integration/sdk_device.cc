#include "tests/integration/sdk_device.h"

#include <poll.h>

#include <algorithm>
#include <chrono>

namespace tether::testing {

namespace {
constexpr uint8_t kGet = 1, kCodeContent = 0x45, kCodeBadRequest = 0x80, kCodeUnauthorized = 0x81,
                  kCodeNotAcceptable = 0x86;
constexpr int64_t kRetransmitMs[] = {2'000, 6'000};  // after the first transmission
constexpr int64_t kGiveUpMs = 10'000;
constexpr int kFailuresBeforeReauth = 3;
constexpr int64_t kMaxIntervalS = 165;
}  // namespace

SdkDevice::Exchange SdkDevice::NewExchange(Kind kind, std::string packet) {
  Exchange x;
  x.kind = kind;
  x.packet = std::move(packet);
  return x;
}

int64_t SteadyMs() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

SdkDevice::SdkDevice(uint16_t gateway_port, Options options)
    : client_(gateway_port, options.app), options_(std::move(options)), rng_(options_.seed) {
  if (!options_.source_ip.empty()) client_.SetSourceIp(options_.source_ip);
}

void SdkDevice::Boot(int64_t now) {
  state_ = State::kOpening;
  ResetPolicy();
  next_ping_ms_ = INT64_MAX;  // the login ping follows the session
  OpenSession(Why::kBoot, now);
}

void SdkDevice::GoOffline(int64_t now) {
  if (state_ == State::kDead) return;
  const bool had_session = state_ == State::kAuthed;
  state_ = State::kOffline;
  if (app_in_flight_ && !app_.empty()) app_.front().sent = 0;  // sent again once online
  app_in_flight_ = false;
  control_.reset();  // a ping in flight is dropped; the timer stays due
  if (!had_session) return;
  Exchange off = NewExchange(Kind::kOffline, client_.Prepare(kGet, ".off"));
  Start(off, now);
  client_.ForgetSession();
  control_ = std::move(off);
}

void SdkDevice::GoOnline(int64_t now) {
  if (state_ != State::kOffline) return;
  state_ = State::kOpening;
  OpenSession(Why::kOnline, now);
}

void SdkDevice::Kill(int64_t now) {
  state_ = State::kDead;
  killed_ms_ = now;
  control_.reset();
  CoapReply none;
  none.code = 0xff;
  for (Exchange& x : app_) {
    if (x.done) x.done(none, now);
  }
  app_.clear();
}

void SdkDevice::Request(uint8_t method, const std::string& path, const std::string& payload,
                        std::vector<std::string> queries, Done done) {
  Exchange x = NewExchange(Kind::kApp, "");
  x.done = std::move(done);
  x.method = method;
  x.path = path;
  x.payload = payload;
  x.queries = std::move(queries);
  app_.push_back(std::move(x));
}

int64_t SdkDevice::NextWakeMs() const {
  if (state_ == State::kDead) return INT64_MAX;
  int64_t wake = state_ == State::kAuthed && !control_ ? next_ping_ms_ : INT64_MAX;
  if (control_) wake = std::min(wake, control_->next_send_ms);
  if (app_in_flight_ && !app_.empty()) wake = std::min(wake, app_.front().next_send_ms);
  return wake;
}

void SdkDevice::Start(Exchange& x, int64_t now) {
  x.token = x.packet.substr(4, 4);
  x.started_ms = now;
  x.sent = 0;
  Transmit(x, now);
}

void SdkDevice::Transmit(Exchange& x, int64_t now) {
  client_.SendBytes(x.packet);
  last_sent_ms_ = now;
  ++x.sent;
  x.next_send_ms = x.sent <= 2 ? x.started_ms + kRetransmitMs[x.sent - 1] : x.started_ms + kGiveUpMs;
}

void SdkDevice::OpenSession(Why why, int64_t now) {
  why_ = why;
  Exchange open = NewExchange(Kind::kOpen, client_.PrepareOpen(options_.auth_token));
  Start(open, now);
  control_ = std::move(open);
}

void SdkDevice::SendPing(int64_t now) {
  if (last_ping_sent_ms_) {
    counters_.max_ping_gap_ms = std::max<uint64_t>(counters_.max_ping_gap_ms, now - last_ping_sent_ms_);
  }
  last_ping_sent_ms_ = now;
  ++counters_.pings;
  next_ping_ms_ = INT64_MAX;  // rescheduled by the answer
  Exchange ping = NewExchange(Kind::kPing, client_.Prepare(kGet, ".ping"));
  Start(ping, now);
  control_ = std::move(ping);
}

void SdkDevice::SendRebind(int64_t now) {
  ++counters_.rebinds;
  Exchange rst = NewExchange(Kind::kRebind, client_.PrepareRebind());
  Start(rst, now);
  control_ = std::move(rst);
}

void SdkDevice::NextPingAfter(int64_t now) {
  std::uniform_int_distribution<int64_t> loop(900, 1900);
  next_ping_ms_ = now + interval_s_ * 1000 + loop(rng_);
}

void SdkDevice::OnReadable(int64_t now) {
  while (std::optional<CoapReply> r = client_.ReceiveNow()) {
    if (state_ == State::kDead) continue;
    if (r->type == 0 || r->type == 1) {  // a notification or a separate response
      client_.Acknowledge(*r);
      if (r->observe) continue;
    }
    if (r->type == 2 && r->code == 0) {  // empty ACK: the answer follows; stop retransmitting
      if (control_ && control_->packet.size() >= 4 &&
          (static_cast<uint8_t>(control_->packet[2]) << 8 | static_cast<uint8_t>(control_->packet[3])) == r->mid) {
        control_->sent = 3, control_->next_send_ms = control_->started_ms + kGiveUpMs;
      }
      continue;
    }
    OnReply(*r, now);
  }
}

void SdkDevice::OnReply(const CoapReply& r, int64_t now) {
  if (control_ && r.token == control_->token) {
    Exchange x = std::move(*control_);
    control_.reset();
    failures_ = 0;
    return OnSessionReply(std::move(x), r, now);
  }
  if (app_in_flight_ && !app_.empty() && r.token == app_.front().token) {
    app_in_flight_ = false;
    failures_ = 0;
    if (r.code == kCodeUnauthorized) {  // the gateway does not know the session: re-authenticate, resend
      app_.front().sent = 0;
      return Reauthenticate(now);
    }
    Exchange x = std::move(app_.front());
    app_.pop_front();
    if (x.done) x.done(r, now);
    PumpApp(now);
  }
}

void SdkDevice::OnSessionReply(Exchange x, const CoapReply& r, int64_t now) {
  switch (x.kind) {
    case Kind::kOpen:
      if (r.code != kCodeContent || !client_.AcceptOpen(r)) {
        if (r.code == kCodeBadRequest) state_ = State::kDead;  // unknown app: the SDK stops for good
        else OpenSession(why_, now);                           // (not expected in these tests)
        return;
      }
      state_ = State::kAuthed;
      if (why_ == Why::kBoot) SendPing(now);  // the login ping
      else if (next_ping_ms_ <= now) SendPing(now);
      if (why_ != Why::kReauth && on_online) on_online(*this, now);
      PumpApp(now);
      return;
    case Kind::kPing:
      if (r.code == kCodeContent) {
        if (interval_s_ >= kMaxIntervalS) interval_s_ = kMaxIntervalS, delta_s_ = 0;
        else interval_s_ = std::min(kMaxIntervalS, interval_s_ + delta_s_);
        if (interval_s_ == kMaxIntervalS) delta_s_ = 0;
        NextPingAfter(now);
      } else if (r.code == kCodeUnauthorized || r.code == kCodeNotAcceptable) {
        ++counters_.steered;
        if (delta_s_ == 0) ResetPolicy();
        else interval_s_ -= delta_s_, delta_s_ /= 2;
        SendRebind(now);
      } else if (r.code == kCodeBadRequest) {
        ResetPolicy();
        next_ping_ms_ = now;  // right after the new session
        Reauthenticate(now);
      } else {
        NextPingAfter(now);
      }
      return;
    case Kind::kRebind:
      if (r.code == kCodeContent) {
        interval_s_ += delta_s_;
        NextPingAfter(now);
      } else {
        ResetPolicy();
        next_ping_ms_ = now;
        Reauthenticate(now);
      }
      return;
    case Kind::kOffline:
      return;
    case Kind::kApp:
      return;
  }
}

void SdkDevice::Reauthenticate(int64_t now) {
  if (state_ == State::kDead || state_ == State::kOffline) return;
  ++counters_.reauths;
  state_ = State::kOpening;
  client_.ForgetSession();
  app_in_flight_ = false;
  OpenSession(Why::kReauth, now);
}

void SdkDevice::PumpApp(int64_t now) {
  if (state_ != State::kAuthed || app_in_flight_ || app_.empty()) return;
  Exchange& x = app_.front();
  if (x.token.empty()) {  // first transmission: build it with the current .cs
    x.packet = client_.Prepare(x.method, x.path, x.payload, x.queries);
  } else {
    x.packet = client_.WithCurrentSession(x.packet);  // same message ID and token, the new .cs
  }
  app_in_flight_ = true;
  Start(x, now);
}

void SdkDevice::Failed(bool control, int64_t now) {
  ++counters_.failed_requests;
  ++counters_.new_sockets;
  client_.NewSourcePort();
  if (++failures_ >= kFailuresBeforeReauth) {
    failures_ = 0;
    if (control && control_->kind == Kind::kPing) next_ping_ms_ = now;  // sent again in the new session
    control_.reset();
    if (app_in_flight_) app_.front().sent = 0;  // resent with the new .cs
    app_in_flight_ = false;
    return Reauthenticate(now);
  }
  Start(control ? *control_ : app_.front(), now);  // the same request (message ID, token) from the new socket
}

void SdkDevice::OnTimer(int64_t now) {
  if (state_ == State::kDead) return;
  if (control_ && now >= control_->next_send_ms) {
    if (control_->sent < 3) Transmit(*control_, now);
    else if (control_->kind == Kind::kOffline) control_.reset();  // goodbye said; nobody waits for it
    else Failed(true, now);
  }
  if (app_in_flight_ && !app_.empty() && now >= app_.front().next_send_ms) {
    if (app_.front().sent < 3) Transmit(app_.front(), now);
    else Failed(false, now);
  }
  if (state_ == State::kAuthed && !control_ && next_ping_ms_ <= now) SendPing(now);
  PumpApp(now);
}

void SdkFleet::Run(int64_t until, const std::function<bool(int64_t now)>& each) {
  std::vector<pollfd> fds;
  while (true) {
    int64_t now = SteadyMs();
    for (SdkDevice* d : devices_) {
      if (d->NextWakeMs() <= now) d->OnTimer(now);
    }
    if (each && !each(now)) return;
    if (now >= until) return;
    int64_t wake = std::min<int64_t>(until, now + 50);
    for (SdkDevice* d : devices_) wake = std::min(wake, d->NextWakeMs());
    fds.clear();
    for (SdkDevice* d : devices_) fds.push_back({d->fd(), POLLIN, 0});
    poll(fds.data(), fds.size(), static_cast<int>(std::max<int64_t>(0, wake - now)));
    now = SteadyMs();
    for (size_t i = 0; i < fds.size(); ++i) {
      if (fds[i].revents) devices_[i]->OnReadable(now);
    }
  }
}

}  // namespace tether::testing
