// SdkDevice: one Wilddog C SDK device with the SDK's real timers, for presence tests.
//
// Packets come from SdkClient (the one packet builder); this adds the SDK's connection layer as
// shared/protocol/device-protocol.md ("The SDK's heartbeat policy") describes it:
// - Boot: POST /.cs with the auth token; on 2.05 the login ping at once, then the app's
//   on_online hook. GoOnline: POST /.cs, then on_online (no ping: the timer runs on).
// - Ping timer: the next ping `interval` s after the answer, plus the SDK loop's 0.9-1.9 s. 2.05:
//   interval += delta (at 165 s: capped, delta 0). 4.01/4.06: delta 0 ? (19, 8) :
//   (interval -= delta, delta /= 2), then POST /.rst with the long token at once, whose 2.05 adds
//   delta. 4.00 to a ping or /.rst: reset to (19, 8), re-authenticate, ping right after. The timer
//   is not reset by goOffline/goOnline, /.rst or re-authentication: a ping that falls due while
//   there is no session goes out as soon as there is one.
// - Every request is CON, retransmitted at +2 s and +6 s; unanswered at +10 s it failed: the
//   socket is reopened (new source port) and the request sent again (same message ID and token,
//   old .cs). After 3 failed requests without a success between, POST /.cs (re-authentication);
//   requests still outstanding are then resent with the new .cs. A 4.01 to a data request also
//   re-authenticates and resends it. The SDK never registers onDisconnect again by itself.
// - Kill(): the process dies; nothing is sent any more.
// App requests go one at a time, in order. Single-threaded and non-blocking: SdkFleet polls many
// devices from one loop. Times are steady-clock milliseconds (SteadyMs).
#pragma once

#include <cstdint>
#include <deque>
#include <functional>
#include <optional>
#include <random>
#include <string>
#include <vector>

#include "tests/integration/sdk_client.h"

namespace tether::testing {

int64_t SteadyMs();

class SdkDevice {
 public:
  struct Options {
    std::string app = "myapp";
    std::string auth_token;  // POST /.cs payload (empty: anonymous)
    uint64_t seed = 1;       // the SDK loop's jitter
    std::string source_ip;   // loopback address to send from (empty: 127.0.0.1)
  };
  using Done = std::function<void(const CoapReply&, int64_t now)>;

  SdkDevice(uint16_t gateway_port, Options options);

  void Boot(int64_t now);
  void GoOffline(int64_t now);
  void GoOnline(int64_t now);
  void Kill(int64_t now);
  // Queues a request of the app; `done` gets its final answer (code 0xff: the device died or went
  // offline first).
  void Request(uint8_t method, const std::string& path, const std::string& payload,
               std::vector<std::string> queries = {}, Done done = {});
  // The app: a session was opened by Boot or GoOnline (not by the SDK re-authenticating).
  std::function<void(SdkDevice&, int64_t now)> on_online;

  // The poll loop's side.
  int fd() const { return client_.fd(); }
  int64_t NextWakeMs() const;
  void OnReadable(int64_t now);
  void OnTimer(int64_t now);

  bool alive() const { return state_ != State::kDead; }
  bool offline() const { return state_ == State::kOffline; }
  bool authed() const { return state_ == State::kAuthed; }
  int64_t last_sent_ms() const { return last_sent_ms_; }
  int64_t killed_ms() const { return killed_ms_; }
  int64_t interval_s() const { return interval_s_; }
  int64_t delta_s() const { return delta_s_; }
  const SdkClient& client() const { return client_; }
  struct Counters {
    uint64_t pings = 0, steered = 0, rebinds = 0, reauths = 0, new_sockets = 0, failed_requests = 0;
    uint64_t max_ping_gap_ms = 0;  // between consecutive pings sent
  };
  const Counters& counters() const { return counters_; }

 private:
  enum class State { kDead, kOpening, kAuthed, kOffline };
  enum class Why { kBoot, kOnline, kReauth };
  enum class Kind { kOpen, kPing, kRebind, kOffline, kApp };
  struct Exchange {
    Kind kind = Kind::kApp;
    std::string packet, token;  // packet: built when first sent (an app request carries the .cs then)
    int64_t started_ms = 0, next_send_ms = 0;
    int sent = 0;  // transmissions from this socket: 1, then +2 s, +6 s
    Done done;
    uint8_t method = 0;  // an app request, until built
    std::string path, payload;
    std::vector<std::string> queries;
  };

  static Exchange NewExchange(Kind kind, std::string packet);
  void Start(Exchange& x, int64_t now);
  void Transmit(Exchange& x, int64_t now);
  void OpenSession(Why why, int64_t now);
  void SendPing(int64_t now);
  void SendRebind(int64_t now);
  void NextPingAfter(int64_t now);
  void ResetPolicy() { interval_s_ = 19, delta_s_ = 8; }
  void OnReply(const CoapReply& r, int64_t now);
  void OnSessionReply(Exchange x, const CoapReply& r, int64_t now);
  void Failed(bool control, int64_t now);  // the control exchange or the app's head: unanswered 10 s
  void Reauthenticate(int64_t now);
  void PumpApp(int64_t now);  // sends the head app request when it can

  SdkClient client_;
  Options options_;
  std::mt19937_64 rng_;
  State state_ = State::kDead;
  Why why_ = Why::kBoot;
  int64_t interval_s_ = 19, delta_s_ = 8;
  int64_t next_ping_ms_ = INT64_MAX;  // due time of the ping timer
  int64_t last_ping_sent_ms_ = 0, last_sent_ms_ = 0, killed_ms_ = 0;
  int failures_ = 0;
  std::optional<Exchange> control_;  // .cs, .ping, .rst or .off in flight
  std::deque<Exchange> app_;         // app requests; the head is in flight while app_in_flight_
  bool app_in_flight_ = false;
  Counters counters_;
};

// Drives devices from one poll loop until `until` (steady ms) or until `each` returns false.
// `each` runs at least every 50 ms with the current time.
class SdkFleet {
 public:
  void Add(SdkDevice* d) { devices_.push_back(d); }
  void Run(int64_t until, const std::function<bool(int64_t now)>& each = {});

 private:
  std::vector<SdkDevice*> devices_;
};

}  // namespace tether::testing
