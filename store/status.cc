#include "store/status.h"

namespace tether::store {

const char* StatusCodeName(StatusCode code) {
  switch (code) {
    case StatusCode::kOk: return "ok";
    case StatusCode::kRejected: return "rejected";
    case StatusCode::kFull: return "full";
    case StatusCode::kNotFound: return "not_found";
    case StatusCode::kInvalidArgument: return "invalid_argument";
    case StatusCode::kConflict: return "conflict";
    case StatusCode::kClosed: return "closed";
    case StatusCode::kIoError: return "io_error";
  }
  return "unknown";
}

std::string Status::ToString() const {
  if (ok()) return "ok";
  return std::string(StatusCodeName(code)) + ": " + message;
}

}  // namespace tether::store
