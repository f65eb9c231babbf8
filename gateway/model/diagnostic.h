// Diagnostic and Expected<T>: the gateway's one error vocabulary at its boundaries.
//
// When to use it:
// - A gateway function that refuses its input or cannot do what it was asked returns Expected<T>
//   (Expected<void> when there is no value): the value, or a Diagnostic, which is an ErrorCode
//   (what kind of refusal: a small enum) and a short human message.
// - The message is what the peer reads, word for word (a CoAP diagnostic payload, an admin API
//   {"error": ...}): short, lowercase, naming the offending key or limit, never a status number.
// - Code that refuses says what went wrong, never which status to send: a device sees
//   CoapCodeOf(code) (gateway/device/device_reply.h), an admin client HttpStatusOf(code)
//   (gateway/admin/admin_server.h). One mapping per protocol, nowhere else.
// Not here (each keeps its own, for its own reason):
// - store::Status stays in store/ (the LMDB outcome; the store includes nothing of the gateway).
//   The device side turns it into a Diagnostic in one place (DiagnosticOf, device_reply.h).
// - upstream/ keeps its own results (its own module; the cloud's HTTP answers).
// - Start-up and configuration loading throw: ConfigError (file:line:col and key), AdminBindError.
//   Those fail the start or the reload as a whole, not one request; a helper used while loading
//   (RoutePattern::Parse) returns Expected and its caller throws with the position.
//
// Thread: values only, no state; copy and move freely. Failure: Value() on an error, or Error()
// on a value, is a programming error (it throws std::bad_variant_access / bad_optional_access).
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <utility>
#include <variant>

namespace tether {

// What kind of refusal. Each maps to one CoAP code and one HTTP status (the mappings name the
// numbers; the comments here give them for the reader).
enum class ErrorCode : uint8_t {
  kInvalid,            // malformed or out-of-rule input: 4.00 / 400
  kUnauthorized,       // no or wrong credentials, unknown session: 4.01 / 401
  kForbidden,          // known peer, not allowed (access rules, per-session caps): 4.03 / 403
  kNotFound,           // no such entry: 4.04 / 404
  kMethodNotAllowed,   // the resource exists, the method does not apply: 4.05 / 405
  kNotAcceptable,      // cannot answer in the asked format (Accept): 4.06 / 406
  kConflict,           // the state changed under the request: 4.12 / 409
  kTooLarge,           // payload over a limit: 4.13 / 413
  kUnsupportedFormat,  // payload in a format not spoken (Content-Format/Type): 4.15 / 415
  kWrongHost,          // the request names another server: 4.00 / 421 (HTTP only in practice)
  kUnavailable,        // cannot now, retry later (overload, full, stopping, cloud away): 5.03 / 503
  kInternal,           // our fault (storage error, an exception): 5.00 / 500
};

struct Diagnostic {
  Diagnostic() = default;
  Diagnostic(ErrorCode c, std::string m, std::optional<uint32_t> retry_after = std::nullopt)
      : code(c), message(std::move(m)), retry_after_s(retry_after) {}

  ErrorCode code = ErrorCode::kInternal;
  std::string message;
  // kUnavailable: seconds after which asking again makes sense (a 5.03's Max-Age). Unset: the
  // protocol's default.
  std::optional<uint32_t> retry_after_s;

  static Diagnostic Invalid(std::string message) { return {ErrorCode::kInvalid, std::move(message)}; }
  // The same refusal with context before its message ("expect: " + message).
  Diagnostic Prefixed(const std::string& prefix) && {
    message.insert(0, prefix);
    return std::move(*this);
  }
  bool operator==(const Diagnostic&) const = default;
};

// The name of a code, for logs and test output ("invalid", "unavailable", ...).
constexpr const char* ErrorCodeName(ErrorCode c) {
  switch (c) {
    case ErrorCode::kInvalid: return "invalid";
    case ErrorCode::kUnauthorized: return "unauthorized";
    case ErrorCode::kForbidden: return "forbidden";
    case ErrorCode::kNotFound: return "not found";
    case ErrorCode::kMethodNotAllowed: return "method not allowed";
    case ErrorCode::kNotAcceptable: return "not acceptable";
    case ErrorCode::kConflict: return "conflict";
    case ErrorCode::kTooLarge: return "too large";
    case ErrorCode::kUnsupportedFormat: return "unsupported format";
    case ErrorCode::kWrongHost: return "wrong host";
    case ErrorCode::kUnavailable: return "unavailable";
    case ErrorCode::kInternal: return "internal";
  }
  return "internal";
}

// A value of T, or the Diagnostic saying why there is none. Converts implicitly from either, so a
// function returns `value` or `Diagnostic::Invalid("...")`. (std::expected is C++23.)
template <class T>
class [[nodiscard]] Expected {
 public:
  Expected(T value) : v_(std::in_place_index<0>, std::move(value)) {}  // NOLINT: implicit by design
  Expected(Diagnostic error) : v_(std::in_place_index<1>, std::move(error)) {}  // NOLINT

  bool ok() const { return v_.index() == 0; }
  explicit operator bool() const { return ok(); }

  T& Value() & { return std::get<0>(v_); }
  const T& value() const& { return std::get<0>(v_); }
  T&& Value() && { return std::get<0>(std::move(v_)); }
  T& operator*() & { return Value(); }
  const T& operator*() const& { return value(); }
  T&& operator*() && { return std::move(*this).Value(); }
  T* operator->() { return &Value(); }
  const T* operator->() const { return &value(); }

  const Diagnostic& error() const& { return std::get<1>(v_); }
  Diagnostic&& Error() && { return std::get<1>(std::move(v_)); }

 private:
  std::variant<T, Diagnostic> v_;
};

// Success without a value (a check), or the Diagnostic.
template <>
class [[nodiscard]] Expected<void> {
 public:
  Expected() = default;
  Expected(Diagnostic error) : error_(std::move(error)) {}  // NOLINT: implicit by design

  bool ok() const { return !error_; }
  explicit operator bool() const { return ok(); }
  const Diagnostic& error() const& { return error_.value(); }
  Diagnostic&& Error() && { return std::move(error_).value(); }

 private:
  std::optional<Diagnostic> error_;
};

}  // namespace tether
