// CloudAudit of the fault harness (fault_harness.h): what reached tests/fakecloud against the
// fleet's record of what the gateway acknowledged.
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

namespace tether::testing {

using nlohmann::json;
using namespace std::chrono_literals;

namespace {

using Clock = std::chrono::steady_clock;

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
      size_t n = Delivered(fleet, cloud_.Control({{"op", "dump"}}), &all);
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
  const json root = cloud_.Control({{"op", "dump"}});
  const json log = cloud_.Control({{"op", "log"}});
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
