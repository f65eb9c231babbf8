#include "gateway/device/persisted_observer.h"

#include <algorithm>

#include "gateway/model/value_codec.h"
#include "util/hex.h"

namespace tether {

namespace {

std::string ToHex(const uint8_t* p, size_t n) { return util::HexEncode({reinterpret_cast<const char*>(p), n}); }

// False if `hex` is not exactly 2*n hex digits.
bool FromHex(const std::string& hex, uint8_t* out, size_t n) {
  std::optional<std::string> bytes = util::HexDecode(hex);
  if (!bytes || bytes->size() != n) return false;
  std::copy(bytes->begin(), bytes->end(), out);
  return true;
}

Json QueryToJson(const Query& q) {
  Json j = {{"order", static_cast<int>(q.order)}, {"child", q.child}, {"eq", q.equal_to}};
  if (q.start_at) j["start"] = *q.start_at;
  if (q.end_at) j["end"] = *q.end_at;
  if (q.limit_first) j["first"] = *q.limit_first;
  if (q.limit_last) j["last"] = *q.limit_last;
  return j;
}

Query QueryFromJson(const Json& j) {
  Query q;
  const int order = j.at("order").get<int>();
  if (order < 0 || order > static_cast<int>(Query::Order::kChild)) throw std::out_of_range("query order");
  q.order = static_cast<Query::Order>(order);
  q.child = j.at("child").get<std::vector<std::string>>();
  q.equal_to = j.at("eq").get<bool>();
  if (j.contains("start")) q.start_at = j["start"];
  if (j.contains("end")) q.end_at = j["end"];
  if (j.contains("first")) q.limit_first = j["first"].get<uint32_t>();
  if (j.contains("last")) q.limit_last = j["last"].get<uint32_t>();
  return q;
}

}  // namespace

std::string EncodeObserver(const PersistedObserver& o) {
  const coap::ObserverState& w = o.wire;
  // "route" is written empty: readers before 2026-12-07 require the key; every reader resolves the
  // route again from the routes in force when it restores the observation.
  Json j = {{"dev", o.device_path}, {"path", o.cloud_path}, {"route", ""}, {"json", o.json},
            {"native", o.native}, {"family", w.peer.family}, {"ip", ToHex(w.peer.ip.data(), w.peer.ip.size())},
            {"port", w.peer.port}, {"secure", w.peer.secure}, {"socket", w.socket}, {"token", ToHex(w.token.bytes.data(), w.token.len)},
            {"seq", w.seq}, {"resource", w.resource}, {"blocks", w.unasked_blocks}};
  if (o.query) j["query"] = QueryToJson(*o.query);
  // Kept with its observer for the session's life (Observer::persisted): without the slack the
  // dump's appends leave (≈ 480 B held for ≈ 270 B of text).
  std::string text = j.dump();
  text.shrink_to_fit();
  return text;
}

std::string JoinObservers(const std::vector<const std::string*>& entries) {
  if (entries.empty()) return {};
  size_t size = 2;
  for (const std::string* e : entries) size += e->size() + 1;
  std::string out;
  out.reserve(size);
  out += '[';
  for (const std::string* e : entries) {
    if (out.size() > 1) out += ',';
    out += *e;
  }
  out += ']';
  return out;
}

std::string EncodeObservers(const std::vector<PersistedObserver>& observers) {
  std::vector<std::string> each;
  each.reserve(observers.size());
  for (const PersistedObserver& o : observers) each.push_back(EncodeObserver(o));
  std::vector<const std::string*> entries;
  for (const std::string& e : each) entries.push_back(&e);
  return JoinObservers(entries);
}

std::vector<PersistedObserver> DecodeObservers(std::string_view blob, size_t* skipped) {
  std::vector<PersistedObserver> out;
  if (skipped) *skipped = 0;
  if (blob.empty()) return out;
  Json all = Json::parse(blob, nullptr, /*allow_exceptions=*/false);
  if (!all.is_array()) {
    if (skipped) *skipped = 1;
    return out;
  }
  for (const Json& j : all) {
    try {
      PersistedObserver o;
      o.device_path = j.at("dev").get<std::string>();
      o.cloud_path = j.at("path").get<std::string>();
      o.json = j.at("json").get<bool>();
      o.native = j.at("native").get<bool>();
      coap::ObserverState& w = o.wire;
      w.peer.family = j.at("family").get<uint8_t>();
      w.peer.port = j.at("port").get<uint16_t>();
      w.peer.secure = j.value("secure", uint8_t{0}) ? 1 : 0;  // a DTLS peer: resumes after its new handshake
      w.socket = j.at("socket").get<uint32_t>();
      w.seq = j.at("seq").get<uint32_t>() & 0xFFFFFF;
      w.resource = j.at("resource").get<uint64_t>();
      w.unasked_blocks = j.at("blocks").get<bool>();
      const std::string token = j.at("token").get<std::string>();
      if (token.size() > 16 || token.size() % 2) throw std::out_of_range("token");
      w.token.len = static_cast<uint8_t>(token.size() / 2);
      if (!FromHex(j.at("ip").get<std::string>(), w.peer.ip.data(), w.peer.ip.size()) ||
          !FromHex(token, w.token.bytes.data(), w.token.len) ||
          (w.peer.family != AF_INET && w.peer.family != AF_INET6)) {
        throw std::out_of_range("address or token");
      }
      if (j.contains("query")) o.query = std::make_shared<const Query>(QueryFromJson(j["query"]));
      out.push_back(std::move(o));
    } catch (const std::exception&) {
      if (skipped) ++*skipped;
    }
  }
  return out;
}

}  // namespace tether
