#include "upstream/sse_parser.h"

namespace tether::upstream {

void SseParser::Reset() {
  buf_.clear();
  after_cr_ = false;
  bom_checked_ = false;
  cur_ = SseEvent{};
  has_data_ = false;
}

void SseParser::Feed(std::string_view bytes) {
  for (char c : bytes) {
    if (after_cr_) {
      after_cr_ = false;
      if (c == '\n') continue;
    }
    if (c == '\r' || c == '\n') {
      after_cr_ = (c == '\r');
      if (!bom_checked_) bom_checked_ = true;
      Line(buf_);
      buf_.clear();
      continue;
    }
    buf_.push_back(c);
    if (!bom_checked_ && buf_.size() == 3) {
      bom_checked_ = true;
      if (buf_ == "\xEF\xBB\xBF") buf_.clear();
    } else if (!bom_checked_ && std::string_view("\xEF\xBB\xBF").substr(0, buf_.size()) != buf_) {
      bom_checked_ = true;
    }
  }
}

void SseParser::Line(std::string_view l) {
  if (l.empty()) {
    if (has_data_) {
      if (!cur_.data.empty() && cur_.data.back() == '\n') cur_.data.pop_back();
      on_event_(cur_);
    }
    std::string id = cur_.id;  // last event id persists across events
    cur_ = SseEvent{};
    cur_.id = std::move(id);
    has_data_ = false;
    return;
  }
  if (l[0] == ':') return;  // comment
  std::string_view field = l, value;
  if (auto colon = l.find(':'); colon != std::string_view::npos) {
    field = l.substr(0, colon);
    value = l.substr(colon + 1);
    if (!value.empty() && value[0] == ' ') value.remove_prefix(1);
  }
  if (field == "event") {
    cur_.type = value.empty() ? "message" : std::string(value);
  } else if (field == "data") {
    cur_.data.append(value);
    cur_.data.push_back('\n');
    has_data_ = true;
  } else if (field == "id") {
    if (value.find('\0') == std::string_view::npos) cur_.id = std::string(value);
  }  // "retry" and unknown fields are ignored
}

FirebaseEvent DecodeFirebaseEvent(const SseEvent& e) {
  FirebaseEvent out;
  auto parsed = nlohmann::json::parse(e.data, nullptr, /*allow_exceptions=*/false);
  if (e.type == "put" || e.type == "patch") {
    if (parsed.is_discarded() || !parsed.is_object() || !parsed.contains("path") ||
        !parsed["path"].is_string() || !parsed.contains("data"))
      return out;
    out.kind = e.type == "put" ? FirebaseEvent::Kind::Put : FirebaseEvent::Kind::Patch;
    out.path = parsed["path"].get<std::string>();
    out.data = std::move(parsed["data"]);
  } else if (e.type == "keep-alive") {
    out.kind = FirebaseEvent::Kind::KeepAlive;
  } else if (e.type == "cancel") {
    out.kind = FirebaseEvent::Kind::Cancel;
    out.data = parsed.is_discarded() ? nlohmann::json(e.data) : parsed;
  } else if (e.type == "auth_revoked") {
    out.kind = FirebaseEvent::Kind::AuthRevoked;
    out.data = parsed.is_discarded() ? nlohmann::json(e.data) : parsed;
  }
  return out;
}

}  // namespace tether::upstream
