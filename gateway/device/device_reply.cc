#include "gateway/device/device_reply.h"

#include <fmt/format.h>
#include <spdlog/spdlog.h>

namespace tether {

namespace {

constexpr uint32_t kQueueFullMaxAge = 30;
constexpr uint32_t kStoreFullMaxAge = 60;
constexpr uint32_t kStoppingMaxAge = 5;

std::string CodeName(uint8_t code) { return fmt::format("{}.{:02d}", code >> 5, code & 31); }

const char* MethodName(uint8_t m) {
  switch (m) {
    case coap::code::kGet: return "GET";
    case coap::code::kPost: return "POST";
    case coap::code::kPut: return "PUT";
    case coap::code::kDelete: return "DELETE";
    case coap::code::kPatch: return "PATCH";
    default: return "OTHER";
  }
}

}  // namespace

Diagnostic DiagnosticOf(const store::Status& st) {
  switch (st.code) {
    case store::StatusCode::kRejected: return {ErrorCode::kUnavailable, "queue full, retry later", kQueueFullMaxAge};
    case store::StatusCode::kFull: return {ErrorCode::kUnavailable, "storage full, retry later", kStoreFullMaxAge};
    case store::StatusCode::kInvalidArgument: return Diagnostic::Invalid(st.message.substr(0, 120));
    case store::StatusCode::kClosed: return {ErrorCode::kUnavailable, "gateway stopping", kStoppingMaxAge};
    default: return {ErrorCode::kInternal, "storage error"};
  }
}

void DeviceReplier::CountAnswer(uint8_t method, uint8_t code) {
  const size_t m = method >= coap::code::kGet && method <= coap::code::kPatch ? method - coap::code::kGet : kOtherMethod;
  ++answered_[m][code];
}

void DeviceReplier::AddRequests(DeviceApiCounters* c) const {
  for (size_t m = 0; m < answered_.size(); ++m) {
    const uint8_t method = m == kOtherMethod ? 0 : static_cast<uint8_t>(coap::code::kGet + m);
    for (size_t code = 0; code < answered_[m].size(); ++code) {
      if (answered_[m][code]) {
        c->requests[fmt::format("{} {}", MethodName(method), CodeName(static_cast<uint8_t>(code)))] += answered_[m][code];
      }
    }
  }
}

void DeviceReplier::Reply(DeviceCall& c, uint8_t code, std::string payload, std::optional<uint32_t> max_age,
                          std::optional<uint32_t> size1) {
  CountAnswer(c.method, code);
  if (!endpoint_) return;
  std::span<const uint8_t> bytes(reinterpret_cast<const uint8_t*>(payload.data()), payload.size());
  coap::Response resp{code, bytes, std::nullopt, max_age};
  resp.size1 = size1;
  // A native client is told the format of a data payload (2.05, and 4.12's current value); a
  // diagnostic carries none (RFC 7252 §5.5.2), an SDK device never gets one (as in the traces).
  if (c.native && !payload.empty() && (code == coap::code::kContent || code == kPreconditionFailed)) {
    resp.content_format = c.text_reply ? kContentFormatText : c.json_out ? kContentFormatJson : kContentFormatCbor;
  }
  endpoint_->Respond(c.id, resp);
}

void DeviceReplier::ReplyError(DeviceCall& c, const Diagnostic& d, std::optional<uint32_t> size1) {
  const uint8_t code = CoapCodeOf(d.code);
  spdlog::debug("{} from {}: {} {}", MethodName(c.method), c.peer.to_string(), CodeName(code), d.message);
  Reply(c, code, d.message, d.retry_after_s, size1);  // RFC 7252 §5.5.2: diagnostic payload
}

void DeviceReplier::ReplyStoreStatus(DeviceCall& c, const store::Status& st) {
  const Diagnostic d = DiagnosticOf(st);
  if (st.code == store::StatusCode::kFull) ++counters_.writes_refused_store_full;
  if (d.code == ErrorCode::kInternal) spdlog::error("store error: {}", st.ToString());
  ReplyError(c, d);
}

}  // namespace tether
