// DeviceCall and DeviceReplier: one device request being answered, and the answers.
//
// A DeviceCall is copied out of coap::Request (valid only during Handler::OnRequest), so a
// request answered after a store commit or a cloud read still has what its reply needs. The
// replier sends every answer through the engine (piggybacked, or separate when late) and counts
// it by method and code (DeviceApiCounters::requests).
//
// Thread: loop thread only. Ownership: DeviceApi owns the replier; the engine outlives it (without
// one, answers are only counted). Failure: none here — a reply the device never acknowledges is
// the engine's (Handler::OnResponseFailed).
//
// Invariants:
// - Every refusal is a Diagnostic (gateway/model/diagnostic.h); its CoAP code comes from CoapCodeOf
//   alone, its message is the payload, its retry_after the Max-Age.
// - A diagnostic payload carries no Content-Format (RFC 7252 §5.5.2); a data payload carries one
//   only for a native client (one that sent Content-Format or Accept), never for an SDK device.
// - Store refusals map to one Diagnostic each (DiagnosticOf): queue full / storage full / stopping
//   5.03 + Max-Age, invalid 4.00, anything else 5.00.
#pragma once

#include <array>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "device_proto/endpoint.h"
#include "gateway/device/device_counters.h"
#include "gateway/model/diagnostic.h"
#include "gateway/model/query.h"
#include "gateway/model/value_codec.h"
#include "store/store.h"

namespace tether {

struct DeviceCall {
  coap::ExchangeId id = 0;
  uint8_t method = 0;
  coap::Address peer;
  std::string identity;   // DTLS PSK identity (peer.secure)
  std::string app;
  std::string payload;
  std::optional<uint32_t> observe;
  bool json_in = false;   // Content-Format 50
  bool json_out = false;  // Accept 50 (or JSON request without Accept)
  bool native = false;    // sent Content-Format/Accept: answer with Content-Format too
  bool text_reply = false;  // the 2.05 payload is text (a push key), not data
  std::string cs;         // .cs= query
  std::string dis;        // .dis= query
  std::vector<std::string> params;      // other Uri-Query options (query vocabulary)
  std::shared_ptr<const Query> query;   // parsed from params on data GETs
};

inline constexpr uint32_t kQueryRetryMaxAge = 5;  // s: a read the gateway cannot answer now

// The one mapping from the gateway's error vocabulary to what a device sees (RFC 7252 §5.9, and
// 4.12 for a conflict: a compare-and-set that lost, answered with the current value).
constexpr uint8_t CoapCodeOf(ErrorCode code) {
  switch (code) {
    case ErrorCode::kInvalid: return coap::code::kBadRequest;
    case ErrorCode::kUnauthorized: return coap::code::kUnauthorized;
    case ErrorCode::kForbidden: return coap::code::Make(4, 3);
    case ErrorCode::kNotFound: return coap::code::kNotFound;
    case ErrorCode::kMethodNotAllowed: return coap::code::kMethodNotAllowed;
    case ErrorCode::kNotAcceptable: return coap::code::Make(4, 6);
    case ErrorCode::kConflict: return coap::code::Make(4, 12);
    case ErrorCode::kTooLarge: return coap::code::kRequestEntityTooLarge;
    case ErrorCode::kUnsupportedFormat: return coap::code::Make(4, 15);
    case ErrorCode::kWrongHost: return coap::code::kBadRequest;  // CoAP has no 4.21; devices never get it
    case ErrorCode::kUnavailable: return coap::code::kServiceUnavailable;
    case ErrorCode::kInternal: return coap::code::kInternalServerError;
  }
  return coap::code::kInternalServerError;
}
// A compare-and-set that lost: its answer carries the current value (a data payload, not a
// diagnostic).
inline constexpr uint8_t kPreconditionFailed = CoapCodeOf(ErrorCode::kConflict);
// A store refusal as the gateway's Diagnostic (the store keeps its own store::Status).
Diagnostic DiagnosticOf(const store::Status& st);

// The encoding the call asked for (JSON or CBOR).
inline std::string EncodeFor(const Json& v, bool json) { return json ? EncodeJson(v) : EncodeCbor(v); }

class DeviceReplier {
 public:
  explicit DeviceReplier(DeviceApiCounters& counters) : counters_(counters) {}
  void AttachEndpoint(coap::Endpoint* endpoint) { endpoint_ = endpoint; }

  void Reply(DeviceCall& c, uint8_t code, std::string payload = {}, std::optional<uint32_t> max_age = {},
             std::optional<uint32_t> size1 = {});
  // CoapCodeOf(d.code) with d.message as the payload and d.retry_after_s as Max-Age; size1: what
  // a 4.13 accepts (RFC 7959 §2.9.3).
  void ReplyError(DeviceCall& c, const Diagnostic& d, std::optional<uint32_t> size1 = {});
  void ReplyStoreStatus(DeviceCall& c, const store::Status& st);
  // Counts an answer sent some other way (the first snapshot of an observation).
  void CountAnswer(uint8_t method, uint8_t code);
  // Adds the answers counted so far to c->requests ("GET 2.05" -> count).
  void AddRequests(DeviceApiCounters* c) const;

 private:
  DeviceApiCounters& counters_;
  coap::Endpoint* endpoint_ = nullptr;
  // Answers by method (GET, POST, PUT, DELETE, FETCH, PATCH, other) and code: an array increment
  // per answer; AddRequests turns them into names.
  static constexpr size_t kOtherMethod = 6;
  std::array<std::array<uint64_t, 256>, 7> answered_{};
};

}  // namespace tether
