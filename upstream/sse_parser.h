// SseParser: incremental text/event-stream parser plus Firebase event decoding.
// Feed arbitrary byte chunks; complete events are delivered in order.
#pragma once
#include <functional>
#include <string>
#include <string_view>

#include <nlohmann/json.hpp>

namespace tether::upstream {

// One raw SSE event (after a blank line dispatches it).
struct SseEvent {
  std::string type = "message";  // `event:` field, default "message"
  std::string data;              // `data:` lines joined by '\n'
  std::string id;
};

class SseParser {
 public:
  using Handler = std::function<void(const SseEvent&)>;
  explicit SseParser(Handler on_event) : on_event_(std::move(on_event)) {}
  void Feed(std::string_view bytes);
  void Reset();  // new connection: drop partial line/event, expect a BOM again

 private:
  void Line(std::string_view l);
  Handler on_event_;
  std::string buf_;         // bytes of the current unterminated line
  bool after_cr_ = false;   // last byte was CR; an LF right after it is part of the same break
  bool bom_checked_ = false;
  SseEvent cur_;
  bool has_data_ = false;
};

// Firebase stream event decoded from an SseEvent.
struct FirebaseEvent {
  enum class Kind { Put, Patch, KeepAlive, Cancel, AuthRevoked, Unknown };
  Kind kind = Kind::Unknown;
  std::string path;       // "/..." relative to the stream's location (Put/Patch)
  nlohmann::json data;    // Put/Patch payload; Cancel/AuthRevoked: the raw data
};

// Returns Unknown for unknown types or malformed put/patch data.
FirebaseEvent DecodeFirebaseEvent(const SseEvent& e);

}  // namespace tether::upstream
