// Fleet and FleetDevice of the fault harness (fault_harness.h): SDK devices writing from their own
// threads, each keeping the record of what the gateway answered that CloudAudit later checks.
#include "tests/integration/fault_harness.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <map>
#include <set>
#include <sstream>
#include <unordered_map>

namespace tether::testing {

using namespace std::chrono_literals;

namespace {

constexpr uint8_t kGet = 1, kPost = 2, kPut = 3, kPatch = 6;
using Clock = std::chrono::steady_clock;

std::string ServerTimestamp() { return CborMap({{".sv", CborText("timestamp")}}); }

std::string GonePayload(const std::string& token) {
  return CborMap({{"s", CborText(token)}, {"at", ServerTimestamp()}});
}

}  // namespace

// ---- FleetDevice ----

FleetDevice::FleetDevice(int index, uint16_t port, std::chrono::milliseconds request_timeout,
                         int64_t session_timeout_ms)
    : id_("d" + std::to_string(index)),
      port_(port),
      client_(std::make_unique<SdkClient>(port)),
      request_timeout_(request_timeout),
      session_timeout_ms_(session_timeout_ms) {
  client_->set_timeout(request_timeout_);
}

void FleetDevice::SetRetransmit(std::chrono::milliseconds first, int max) {
  retransmit_first_ = first;
  max_retransmit_ = max;
  client_->SetRetransmit(first, max);
}

bool FleetDevice::Open() {
  last_sent_ms_ = TrueWallMs();
  const int64_t opened_ms = last_sent_ms_;
  CoapReply r = client_->OpenRaw(id_);  // open auth: the token is the device id
  if (!client_->AcceptOpen(r)) {
    if (r.code == 0xff && first_unanswered_open_ms_ == 0) first_unanswered_open_ms_ = opened_ms;
    return false;
  }
  token_ = client_->short_token();
  suspect_ = false;
  SessionRecord s;
  s.token = token_;
  s.opened_ms = opened_ms;
  s.first_attempt_ms = first_unanswered_open_ms_ ? first_unanswered_open_ms_ : opened_ms;
  first_unanswered_open_ms_ = 0;
  last_sent_ms_ = TrueWallMs();
  CoapReply g = client_->Request(kPost, "devices/" + id_ + "/gone", GonePayload(token_), {".dis=add"});
  s.on_disconnect = g.code == 0x45 ? Outcome::kAcked : g.code == 0xff ? Outcome::kUnknown : Outcome::kRefused;
  if (g.code == 0xff || g.CodeString() == "4.01") suspect_ = true;
  sessions_.push_back(std::move(s));
  return true;
}

bool FleetDevice::EnsureSession() {
  if (token_.empty()) return Open();
  if (!suspect_) return true;
  last_sent_ms_ = TrueWallMs();
  CoapReply r = client_->Request(kGet, ".info/connected");
  if (r.code == 0x45) {
    suspect_ = false;
    return true;
  }
  if (r.CodeString() != "4.01") return false;  // unreachable for now
  // The gateway no longer knows the session: it ended (and fired) while we were not looking.
  if (!sessions_.empty() && sessions_.back().token == token_) sessions_.back().end = SessionRecord::End::kLost;
  token_.clear();
  client_->set_short_token("");
  return Open();
}

void FleetDevice::Classify(WriteRecord& w, const CoapReply& r) {
  w.done = Clock::now();
  w.done_ms = TrueWallMs();
  if (r.code == 0xff) {
    w.code = "timeout";
    w.outcome = Outcome::kUnknown;
    suspect_ = true;
    return;
  }
  w.code = r.CodeString();
  if (r.code == 0x45) {
    w.outcome = Outcome::kAcked;
    if (w.kind == WriteRecord::kPush) w.push_key = r.payload;
    return;
  }
  w.max_age = r.max_age;
  w.diagnostic = r.payload;
  // 4.xx and 5.03 are answered before anything is committed; other 5.xx leave it open.
  w.outcome = (r.code >> 5) == 4 || w.code == "5.03" ? Outcome::kRefused : Outcome::kUnknown;
  if (w.code == "4.01") suspect_ = true;
}

void FleetDevice::Step(const LoadOptions& o, std::mt19937& rng) {
  std::uniform_real_distribution<double> mix(0, 1);
  std::vector<std::pair<size_t, std::string>> inflight;
  for (int i = 0; i < o.depth; ++i) {
    WriteRecord w;
    double roll = mix(rng);
    w.kind = roll < o.mix_push ? WriteRecord::kPush : roll < o.mix_push + o.mix_set ? WriteRecord::kSet
                                                                                      : WriteRecord::kCount;
    w.k = ++next_k_;
    w.sent = Clock::now();
    w.sent_ms = last_sent_ms_ = TrueWallMs();
    std::string tok;
    const std::string base = "devices/" + id_;
    switch (w.kind) {
      case WriteRecord::kPush: {
        std::vector<std::pair<std::string, std::string>> kv = {{"v", CborUint(w.k)}, {"at", ServerTimestamp()}};
        if (o.pad_bytes > 0) kv.emplace_back("pad", CborText(std::string(o.pad_bytes, 'x')));
        tok = client_->Send(kPost, base + "/log", CborMap(kv));
        break;
      }
      case WriteRecord::kSet:
        tok = client_->Send(kPut, base + "/state", CborMap({{"v", CborUint(w.k)}}));
        break;
      case WriteRecord::kCount:
        tok = client_->Send(kPatch, base,
                            CborMap({{"count", CborMap({{".sv", CborMap({{"increment", CborUint(1)}})}})},
                                     {"seen/k" + std::to_string(w.k), "\xf5"}}));
        break;
    }
    writes_.push_back(std::move(w));
    inflight.emplace_back(writes_.size() - 1, tok);
  }
  for (const auto& [idx, tok] : inflight) Classify(writes_[idx], client_->Await(tok));
}

void FleetDevice::EndSession(bool go_offline) {
  if (token_.empty()) return;
  SessionRecord* s = !sessions_.empty() && sessions_.back().token == token_ ? &sessions_.back() : nullptr;
  bool done = false;
  if (go_offline) {
    // An unanswered .off is sent again (three tries): left in doubt, the device's next open could
    // continue the session instead (a kill -9 lost the .off), and the audit could no longer say
    // whether its onDisconnect must fire. Any answer settles it: 2.05 ended it now; 4.01 means an
    // earlier try ended it or it timed out, and either fired its operations once.
    auto sent = Clock::now();
    int64_t from = TrueWallMs();
    CoapReply r;
    for (int attempt = 0; attempt < 3 && r.code != 0x45 && r.CodeString() != "4.01"; ++attempt) {
      last_sent_ms_ = TrueWallMs();
      r = client_->Request(kGet, ".off");
    }
    if (r.code == 0x45 && s) {
      s->end = SessionRecord::End::kOffline;
      s->fire_from_ms = from;
      s->fire_to_ms = TrueWallMs();
      s->end_sent = sent;
      s->end_done = Clock::now();
      done = true;
    } else if (r.CodeString() == "4.01" && s) {
      s->end = SessionRecord::End::kLost;
      s->fire_from_ms = from;
      s->fire_to_ms = last_sent_ms_ + session_timeout_ms_ + 1500;
      done = true;
    } else if (s) {  // still unknown: fired now, or it times out below
      s->fire_from_ms = from;
      s->off_unanswered = true;
    }
    last_sent_ms_ = TrueWallMs();
  }
  if (!done) {
    // Silence: the old source port is never used again, so the session times out.
    client_ = std::make_unique<SdkClient>(port_);
    client_->set_timeout(request_timeout_);
    if (max_retransmit_ > 0) client_->SetRetransmit(retransmit_first_, max_retransmit_);
    if (s) {
      if (s->end == SessionRecord::End::kOpen) s->end = SessionRecord::End::kSilent;
      if (s->fire_from_ms == 0) s->fire_from_ms = last_sent_ms_ + session_timeout_ms_ - 50;
      s->fire_to_ms = TrueWallMs() + session_timeout_ms_ + 1500;
    }
  }
  token_.clear();
  client_->set_short_token("");
  suspect_ = false;
}

// ---- Fleet ----

Fleet::Fleet(int devices, uint16_t port, std::chrono::milliseconds request_timeout, int64_t session_timeout_ms) {
  for (int i = 0; i < devices; ++i) {
    devices_.push_back(std::make_unique<FleetDevice>(i, port, request_timeout, session_timeout_ms));
  }
}

void Fleet::Start(const LoadOptions& o) {
  stop_ = false;
  for (size_t i = 0; i < devices_.size(); ++i) {
    threads_.emplace_back([this, o, i] {
      FleetDevice& d = *devices_[i];
      std::mt19937 rng(o.seed * 7919u + static_cast<uint32_t>(i));
      std::uniform_real_distribution<double> chance(0, 1);
      int steps = 0;
      while (!stop_ && (o.max_steps == 0 || steps < o.max_steps)) {
        if (!d.EnsureSession()) {
          std::this_thread::sleep_for(50ms);
          continue;
        }
        if (o.end_session_chance > 0 && chance(rng) < o.end_session_chance) {
          d.EndSession(rng() % 2 == 0);
          continue;
        }
        d.Step(o, rng);
        ++steps;
        if (o.think.count() > 0) std::this_thread::sleep_for(o.think);
      }
    });
  }
}

void Fleet::Join() {
  for (auto& t : threads_) t.join();
  threads_.clear();
}

void Fleet::Stop() {
  stop_ = true;
  Join();
}

void Fleet::EndAll() {
  Stop();
  for (size_t i = 0; i < devices_.size(); ++i) devices_[i]->EndSession(i % 2 == 0);
}

size_t Fleet::Count(Outcome o) const {
  size_t n = 0;
  for (const auto& d : devices_) {
    for (const auto& w : d->writes()) n += w.outcome == o;
  }
  return n;
}

std::string Fleet::CodeHistogram() const {
  std::map<std::string, size_t> h;
  for (const auto& d : devices_) {
    for (const auto& w : d->writes()) h[w.code]++;
  }
  std::string out;
  for (const auto& [code, n] : h) out += (out.empty() ? "" : " ") + code + "=" + std::to_string(n);
  return out;
}

std::string Fleet::LatencySummary() const {
  std::vector<double> ms;
  for (const auto& d : devices_) {
    for (const auto& w : d->writes()) {
      if (w.outcome != Outcome::kUnknown) ms.push_back(std::chrono::duration<double, std::milli>(w.done - w.sent).count());
    }
  }
  if (ms.empty()) return "no answered writes";
  std::sort(ms.begin(), ms.end());
  char buf[96];
  std::snprintf(buf, sizeof buf, "p50 %.1f ms, p99 %.1f ms, max %.1f ms", ms[ms.size() / 2], ms[ms.size() * 99 / 100],
                ms.back());
  return buf;
}

}  // namespace tether::testing
