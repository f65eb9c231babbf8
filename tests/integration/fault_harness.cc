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
#include <fstream>

#include "tests/integration/tetherd_process.h"

namespace tether::testing {

using nlohmann::json;
using namespace std::chrono_literals;

namespace {

constexpr uint8_t kGet = 1, kPost = 2, kPut = 3, kPatch = 6;
using Clock = std::chrono::steady_clock;

std::string ServerTimestamp() { return CborMap({{".sv", CborText("timestamp")}}); }

std::string GonePayload(const std::string& token) {
  return CborMap({{"s", CborText(token)}, {"at", ServerTimestamp()}});
}

std::string Trim(const std::string& p) {
  size_t a = p.find_first_not_of('/');
  if (a == std::string::npos) return "";
  size_t b = p.find_last_not_of('/');
  return p.substr(a, b - a + 1);
}

std::string JoinPaths(const std::string& a, const std::string& b) {
  std::string x = Trim(a), y = Trim(b);
  if (x.empty()) return y;
  if (y.empty()) return x;
  return x + "/" + y;
}

// Milliseconds encoded in the first 8 characters of a Firebase push id; -1 if it is not one.
int64_t PushIdMs(const std::string& id) {
  static const std::string kChars = "-0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ_abcdefghijklmnopqrstuvwxyz";
  if (id.size() != 20) return -1;
  int64_t ms = 0;
  for (size_t i = 0; i < 8; ++i) {
    size_t v = kChars.find(id[i]);
    if (v == std::string::npos) return -1;
    ms = ms * 64 + static_cast<int64_t>(v);
  }
  return ms;
}

const json& At(const json& node, const std::string& key) {
  static const json kNull;
  if (!node.is_object()) return kNull;
  auto it = node.find(key);
  return it == node.end() ? kNull : *it;
}

int64_t IntOr(const json& v, int64_t fallback) { return v.is_number_integer() ? v.get<int64_t>() : fallback; }

// A device's sessions as the test saw them, for a failure message: token, registration outcome,
// how it ended, when it was opened (and first tried), when it should fire, and how often it fired.
std::string SessionHistory(const FleetDevice& d, const std::map<std::string, std::vector<std::string>>& fired) {
  static const char* kEnd[] = {"open", "offline", "silent", "lost"};
  static const char* kOutcome[] = {"acked", "unknown", "refused"};
  std::string out = "\n  " + d.id() + " sessions (ms since its first open):";
  const int64_t t0 = d.sessions().empty() ? 0 : d.sessions().front().first_attempt_ms;
  for (const auto& s : d.sessions()) {
    auto it = fired.find(s.token);
    out += "\n    " + s.token + " od=" + kOutcome[static_cast<int>(s.on_disconnect)] +
           " end=" + kEnd[static_cast<int>(s.end)] + " first_attempt=" + std::to_string(s.first_attempt_ms - t0) +
           " opened=" + std::to_string(s.opened_ms - t0) +
           " fire=[" + (s.fire_from_ms ? std::to_string(s.fire_from_ms - t0) : "-") + ", " +
           (s.fire_to_ms ? std::to_string(s.fire_to_ms - t0) : "-") + "] fired=" +
           std::to_string(it == fired.end() ? 0 : it->second.size());
  }
  return out;
}

}  // namespace

int64_t TrueWallMs() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::system_clock::now().time_since_epoch())
      .count();
}

bool SoakMode() { return std::getenv("TETHER_SOAK") != nullptr; }

bool Tally::Check(bool ok, const std::string& what) {
  if (ok) {
    ++passed_;
    return true;
  }
  ++failed_;
  if (failed_ <= 20) ADD_FAILURE() << suite_ << ": " << what;
  else if (failed_ == 21) ADD_FAILURE() << suite_ << ": more failures, not described";
  return false;
}

void Tally::Print() {
  if (printed_) return;
  printed_ = true;
  std::printf("%s: %d passed, %d failed\n", suite_.c_str(), passed_, failed_);
  std::fflush(stdout);
}

bool WaitForCloudOffset(SdkClient& probe, int64_t skew_ms, int64_t tolerance_ms) {
  for (int i = 0; i < 100; ++i) {
    std::string v = probe.Request(1, ".info/serverTimeOffset", "", {}, {}, {}, 50u).payload;
    if (!v.empty() && std::llabs(std::atoll(v.c_str()) - skew_ms) < tolerance_ms) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  return false;
}

std::string FaultGatewayYaml(GatewayOptions* o) {
  if (o->port == 0) o->port = static_cast<uint16_t>(FreePort());
  std::string y = "gateway:\n  id: gw-fault\ndevice:\n  listen: \"127.0.0.1:" + std::to_string(o->port) +
                  "\"\n  heartbeat_target: " + o->heartbeat + "\n  session_timeout: " + o->session_timeout +
                  "\nadmin:\n  listen: \"127.0.0.1:" + std::to_string(FreePort(false)) +
                  "\"\nstore:\n  path: ${STORE}\n" + o->store_yaml;
  if (!o->cloud_url.empty()) y += "upstream:\n  url: " + o->cloud_url + "\n";
  const char* level = std::getenv("TETHER_FAULT_LOG_LEVEL");  // "debug" for a post-mortem
  y += "log:\n  level: " + std::string(level ? level : "info") + "\napps:\n  - id: myapp\nroutes:\n"
       "  - { name: devs, match: \"devices/{device}/**\", cloud: \"fleet/{device}/**\" }\n";
  if (o->sync_config) y += "  - { name: cfg, match: \"config/**\", write: none, sync: [ \"config\" ] }\n";
  return y;
}

bool ContinuedBy(const SessionRecord& s, const SessionRecord* next) {
  // 500 ms short of the deadline: a reopen that close could reach the gateway after it.
  return s.end == SessionRecord::End::kSilent && next != nullptr && s.fire_from_ms > 0 &&
         next->opened_ms < s.fire_from_ms - 500;
}

bool MaybeContinuedBy(const SessionRecord& s, const SessionRecord* next) {
  if ((s.end != SessionRecord::End::kSilent && s.end != SessionRecord::End::kLost) || next == nullptr) return false;
  if (s.off_unanswered) return next->first_attempt_ms < s.fire_to_ms;
  return next->first_attempt_ms < next->opened_ms && (s.fire_from_ms == 0 || next->first_attempt_ms < s.fire_from_ms + 500);
}

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

void FleetDevice::set_retransmit(std::chrono::milliseconds first, int max) {
  retransmit_first_ = first;
  max_retransmit_ = max;
  client_->set_retransmit(first, max);
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
    if (max_retransmit_ > 0) client_->set_retransmit(retransmit_first_, max_retransmit_);
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

// ---- CloudAudit ----

size_t CloudAudit::Delivered(const Fleet& fleet, const json& root, bool* all) {
  const json& cloud_fleet = At(root, "fleet");
  size_t there = 0;
  missing_.clear();
  auto expect = [&](bool ok, const std::function<std::string()>& what) {
    there += ok;
    if (!ok && missing_.empty()) missing_ = what();
  };
  for (const auto& dp : fleet.devices()) {
    const FleetDevice& d = *dp;
    const json& node = At(cloud_fleet, d.id());
    uint64_t last_set = 0;
    for (const auto& w : d.writes()) {
      if (w.outcome != Outcome::kAcked) continue;
      if (w.kind == WriteRecord::kSet) {
        last_set = std::max(last_set, w.k);
        continue;
      }
      bool ok = w.kind == WriteRecord::kPush ? !At(At(node, "log"), w.push_key).is_null()
                                             : !At(At(node, "seen"), "k" + std::to_string(w.k)).is_null();
      expect(ok, [&] { return d.id() + " write k=" + std::to_string(w.k); });
    }
    if (last_set > 0) {
      expect(IntOr(At(At(node, "state"), "v"), 0) >= static_cast<int64_t>(last_set),
             [&] { return d.id() + " state >= " + std::to_string(last_set); });
    }
    std::set<std::string> fired;
    const json& gone = At(node, "gone");
    if (gone.is_object()) {
      for (const auto& [key, g] : gone.items()) {
        if (At(g, "s").is_string()) fired.insert(At(g, "s").get<std::string>());
      }
    }
    const auto& sessions = d.sessions();
    for (size_t i = 0; i < sessions.size(); ++i) {
      const auto& s = sessions[i];
      if (s.on_disconnect != Outcome::kAcked || s.end == SessionRecord::End::kOpen) continue;
      const SessionRecord* next = i + 1 < sessions.size() ? &sessions[i + 1] : nullptr;
      if (ContinuedBy(s, next) || MaybeContinuedBy(s, next)) continue;
      expect(fired.count(s.token) > 0, [&] { return d.id() + " onDisconnect of session " + s.token; });
    }
  }
  *all = missing_.empty();
  return there;
}

bool CloudAudit::WaitDelivered(const Fleet& fleet, std::chrono::milliseconds stall) {
  size_t best = 0;
  for (auto progress = Clock::now(); Clock::now() - progress < stall;) {
    auto asked = Clock::now();
    try {
      bool all = false;
      size_t n = Delivered(fleet, cloud_.control({{"op", "dump"}}), &all);
      if (all) return true;
      if (n > best) {
        best = n;
        progress = Clock::now();
      }
    } catch (const std::exception&) {  // the cloud is down for a moment
      missing_ = "the cloud is unreachable";
    }
    // A dump holds the fake cloud's lock: poll a large tree less often so uploads keep going.
    std::this_thread::sleep_for(std::max<Clock::duration>(250ms, 4 * (Clock::now() - asked)));
  }
  return false;
}

void CloudAudit::Verify(const Fleet& fleet, Tally& tally) {
  const json root = cloud_.control({{"op", "dump"}});
  const json log = cloud_.control({{"op", "log"}});
  if (const char* dump = std::getenv("TETHER_FAULT_CLOUD_LOG")) std::ofstream(dump) << log.dump(1);  // for a post-mortem
  // Flatten every data write into (index, absolute path, value) entries.
  std::unordered_map<std::string, size_t> first_index;
  std::map<std::string, std::vector<std::pair<size_t, json>>> state_writes;  // device -> values in log order
  for (size_t i = 0; i < log.size(); ++i) {
    const json& e = log[i];
    const std::string method = e.value("method", "");
    const std::string path = Trim(e.value("path", ""));
    std::vector<std::pair<std::string, const json*>> leaves;
    if (method == "PATCH" && e["body"].is_object()) {
      for (const auto& [k, v] : e["body"].items()) leaves.emplace_back(JoinPaths(path, k), &v);
    } else if (method == "PUT" || method == "DELETE") {
      leaves.emplace_back(path, &e["body"]);
    }
    for (const auto& [p, v] : leaves) {
      first_index.emplace(p, i);
      if (p.rfind("fleet/", 0) == 0 && p.size() > 12 && p.compare(p.size() - 6, 6, "/state") == 0) {
        state_writes[p.substr(6, p.size() - 12)].emplace_back(i, At(*v, "v"));
      }
    }
  }
  auto index_of = [&](const std::string& p) -> std::optional<size_t> {
    auto it = first_index.find(p);
    if (it == first_index.end()) return std::nullopt;
    return it->second;
  };

  struct Ordered {
    Clock::time_point sent, done;
    size_t idx;
    std::string what;
  };
  std::vector<Ordered> route_ops;  // every acknowledged op found in the log, for the route order
  const json& all = At(root, "fleet");
  const int64_t skew = o_.cloud_skew_ms, tol = o_.timestamp_tolerance_ms;
  std::set<std::string> allowed_codes = {"2.05", "timeout", "4.01", "5.03"};
  for (const auto& dp : fleet.devices()) {
    const FleetDevice& d = *dp;
    const json& node = At(all, d.id());
    const std::string cloud_base = "fleet/" + d.id();
    // Pushes: by value (one value per write) -> keys holding it.
    std::map<int64_t, std::vector<std::string>> keys_of;
    const json& logs = At(node, "log");
    if (logs.is_object()) {
      for (const auto& [key, v] : logs.items()) keys_of[IntOr(At(v, "v"), -1)].push_back(key);
    }
    std::set<int64_t> sent_push, sent_set, sent_count;
    std::vector<std::pair<uint64_t, size_t>> device_order;  // (k, log index) of acknowledged ops
    std::vector<std::string> acked_keys;
    uint64_t last_acked_set = 0;
    for (const auto& w : d.writes()) {
      const std::string kdesc = d.id() + " k=" + std::to_string(w.k) + " (" + w.code + ")";
      tally.Check(allowed_codes.count(w.code) > 0, kdesc + ": unexpected reply " + w.code + " " + w.diagnostic);
      if (w.kind == WriteRecord::kPush) {
        sent_push.insert(static_cast<int64_t>(w.k));
        const auto& ks = keys_of[static_cast<int64_t>(w.k)];
        if (w.outcome == Outcome::kAcked) {
          acked_keys.push_back(w.push_key);
          bool once = ks.size() == 1 && ks[0] == w.push_key;
          tally.Check(once, kdesc + ": acknowledged push should be in the cloud once under " + w.push_key + ", found " +
                                std::to_string(ks.size()) + " copies");
          auto idx = index_of(cloud_base + "/log/" + w.push_key);
          if (idx) {
            device_order.emplace_back(w.k, *idx);
            route_ops.push_back({w.sent, w.done, *idx, kdesc + " push"});
          }
          if (once && tol > 0) {
            int64_t at = IntOr(At(At(logs, w.push_key), "at"), 0);
            tally.Check(at >= w.sent_ms + skew - tol && at <= w.done_ms + skew + tol,
                        kdesc + ": server timestamp " + std::to_string(at) + " outside the write's window [" +
                            std::to_string(w.sent_ms + skew) + ", " + std::to_string(w.done_ms + skew) + "]");
          }
          if (o_.check_push_id_time) {
            int64_t ms = PushIdMs(w.push_key);
            tally.Check(ms >= w.sent_ms + skew - tol && ms <= w.done_ms + skew + tol,
                        kdesc + ": push id " + w.push_key + " encodes " + std::to_string(ms) + ", write window [" +
                            std::to_string(w.sent_ms + skew) + ", " + std::to_string(w.done_ms + skew) + "]");
          }
        } else if (w.outcome == Outcome::kUnknown) {
          tally.Check(ks.size() <= 1, kdesc + ": unanswered push in the cloud " + std::to_string(ks.size()) + " times");
        } else {
          tally.Check(ks.empty(), kdesc + ": refused push reached the cloud");
        }
      } else if (w.kind == WriteRecord::kSet) {
        sent_set.insert(static_cast<int64_t>(w.k));
        if (w.outcome == Outcome::kAcked) {
          last_acked_set = std::max(last_acked_set, w.k);
          std::optional<size_t> idx;
          for (const auto& [i, v] : state_writes[d.id()]) {
            if (IntOr(v, -1) == static_cast<int64_t>(w.k)) {
              idx = i;
              break;
            }
          }
          tally.Check(idx.has_value(), kdesc + ": acknowledged set never uploaded");
          if (idx) {
            device_order.emplace_back(w.k, *idx);
            route_ops.push_back({w.sent, w.done, *idx, kdesc + " set"});
          }
        } else if (w.outcome == Outcome::kRefused) {
          bool uploaded = false;
          for (const auto& [i, v] : state_writes[d.id()]) uploaded |= IntOr(v, -1) == static_cast<int64_t>(w.k);
          tally.Check(!uploaded, kdesc + ": refused set reached the cloud");
        }
      } else {
        sent_count.insert(static_cast<int64_t>(w.k));
        const std::string mark = "k" + std::to_string(w.k);
        bool there = !At(At(node, "seen"), mark).is_null();
        if (w.outcome == Outcome::kAcked) {
          tally.Check(there, kdesc + ": acknowledged increment missing in the cloud");
          auto idx = index_of(cloud_base + "/seen/" + mark);
          if (idx) {
            device_order.emplace_back(w.k, *idx);
            route_ops.push_back({w.sent, w.done, *idx, kdesc + " count"});
          }
        } else if (w.outcome == Outcome::kRefused) {
          tally.Check(!there, kdesc + ": refused increment reached the cloud");
        }
      }
    }
    // No effect the device never asked for.
    size_t phantom = 0;
    for (const auto& [v, ks] : keys_of) phantom += sent_push.count(v) ? 0 : ks.size();
    tally.Check(phantom == 0, d.id() + ": " + std::to_string(phantom) + " pushes in the cloud that were never sent");
    // Push ids sort in write order.
    tally.Check(std::is_sorted(acked_keys.begin(), acked_keys.end()), d.id() + ": push ids out of write order");
    // Sets: uploaded in order (a value may repeat: a retried batch), ending at the latest.
    const auto& seq = state_writes[d.id()];
    std::string regression;
    for (size_t i = 1; i < seq.size() && regression.empty(); ++i) {
      if (IntOr(seq[i].second, -1) >= IntOr(seq[i - 1].second, -1)) continue;
      for (size_t j = i > 3 ? i - 3 : 0; j < std::min(seq.size(), i + 3); ++j) {
        regression += " #" + std::to_string(seq[j].first) + ":" + seq[j].second.dump();
      }
    }
    tally.Check(regression.empty(), d.id() + ": sets uploaded out of order (upload #index:value)" + regression);
    int64_t final_set = IntOr(At(At(node, "state"), "v"), 0);
    if (last_acked_set > 0 || final_set != 0) {
      tally.Check(final_set >= static_cast<int64_t>(last_acked_set) && sent_set.count(final_set),
                  d.id() + ": final state " + std::to_string(final_set) + ", latest acknowledged set " +
                      std::to_string(last_acked_set));
    }
    // Increments: each applied exactly once, i.e. the counter equals the writes that carried it.
    const json& seen = At(node, "seen");
    int64_t marks = seen.is_object() ? static_cast<int64_t>(seen.size()) : 0;
    int64_t count = IntOr(At(node, "count"), 0);
    tally.Check(count == marks, d.id() + ": counter " + std::to_string(count) + " but " + std::to_string(marks) +
                                    " increments reached the cloud");
    size_t unknown_marks = 0;
    if (seen.is_object()) {
      for (const auto& [mark, v] : seen.items()) unknown_marks += sent_count.count(std::atoll(mark.c_str() + 1)) ? 0 : 1;
    }
    tally.Check(unknown_marks == 0, d.id() + ": increments in the cloud that were never sent");
    // Order per device: acknowledged ops reach the cloud in the order they were sent.
    std::sort(device_order.begin(), device_order.end());
    bool in_order = true;
    for (size_t i = 1; i < device_order.size(); ++i) in_order &= device_order[i].second >= device_order[i - 1].second;
    tally.Check(in_order, d.id() + ": acknowledged writes uploaded out of order");
    // onDisconnect: exactly once per ended session, never for a session still open.
    std::map<std::string, std::vector<std::string>> fired;  // token -> push keys
    const json& gone = At(node, "gone");
    if (gone.is_object()) {
      for (const auto& [key, g] : gone.items()) fired[At(g, "s").is_string() ? At(g, "s").get<std::string>() : ""].push_back(key);
    }
    std::set<std::string> tokens;
    const auto& sessions = d.sessions();
    for (size_t i = 0; i < sessions.size(); ++i) {
      const auto& s = sessions[i];
      tokens.insert(s.token);
      const auto& keys = fired[s.token];
      const std::string sdesc = d.id() + " session " + s.token;
      const SessionRecord* next = i + 1 < sessions.size() ? &sessions[i + 1] : nullptr;
      const bool continued = ContinuedBy(s, next);
      if (s.end == SessionRecord::End::kOpen) {
        tally.Check(keys.empty(), sdesc + ": onDisconnect fired for a session still open");
      } else if (continued || MaybeContinuedBy(s, next)) {
        const size_t allowed = continued && next->on_disconnect == Outcome::kAcked ? 0 : 1;
        tally.Check(keys.size() <= allowed, sdesc + ": continued by the device's next session, yet its onDisconnect fired " +
                                                std::to_string(keys.size()) + " times");
        continue;
      } else if (s.on_disconnect == Outcome::kAcked) {
        tally.Check(keys.size() == 1, sdesc + ": onDisconnect fired " + std::to_string(keys.size()) + " times" +
                                          (keys.size() == 1 ? "" : SessionHistory(d, fired)));
      } else if (s.on_disconnect == Outcome::kUnknown) {
        tally.Check(keys.size() <= 1, sdesc + ": unanswered onDisconnect fired " + std::to_string(keys.size()) + " times");
      } else {
        tally.Check(keys.empty(), sdesc + ": refused onDisconnect fired");
      }
      if (keys.size() != 1) continue;
      if (o_.check_fire_time && s.fire_from_ms > 0) {
        int64_t at = IntOr(At(At(gone, keys[0]), "at"), 0);
        tally.Check(at >= s.fire_from_ms + skew - tol && at <= s.fire_to_ms + skew + tol,
                    sdesc + ": onDisconnect timestamp " + std::to_string(at) + " outside [" +
                        std::to_string(s.fire_from_ms + skew) + ", " + std::to_string(s.fire_to_ms + skew) + "]");
      }
      if (s.end == SessionRecord::End::kOffline) {
        if (auto idx = index_of(cloud_base + "/gone/" + keys[0])) {
          route_ops.push_back({s.end_sent, s.end_done, *idx, sdesc + " onDisconnect"});
        }
      }
    }
    size_t stray = 0;
    for (const auto& [tok, keys] : fired) stray += tokens.count(tok) ? 0 : keys.size();
    tally.Check(stray == 0, d.id() + ": " + std::to_string(stray) + " onDisconnect pushes of unknown sessions");
  }
  // Order per route: an op acknowledged before another was sent is uploaded no later than it.
  std::sort(route_ops.begin(), route_ops.end(), [](const Ordered& a, const Ordered& b) { return a.done < b.done; });
  std::vector<size_t> prefix_max(route_ops.size());  // index into route_ops of the latest upload so far
  for (size_t i = 0; i < route_ops.size(); ++i) {
    prefix_max[i] = i == 0 || route_ops[i].idx > route_ops[prefix_max[i - 1]].idx ? i : prefix_max[i - 1];
  }
  for (const Ordered& b : route_ops) {
    auto it = std::lower_bound(route_ops.begin(), route_ops.end(), b.sent,
                               [](const Ordered& a, Clock::time_point t) { return a.done < t; });
    if (it == route_ops.begin()) {
      tally.Check(true, "");
      continue;
    }
    const Ordered& a = route_ops[prefix_max[static_cast<size_t>(it - route_ops.begin()) - 1]];
    tally.Check(a.idx <= b.idx, "route order: " + a.what + " (upload #" + std::to_string(a.idx) +
                                    ") was acknowledged before " + b.what + " was sent, but uploaded after it (#" +
                                    std::to_string(b.idx) + ")");
  }
}

}  // namespace tether::testing
