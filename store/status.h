// Status: the outcome of a store operation that can fail for expected reasons.
//
// Programming errors and an unusable store (wrong format, unreadable file) throw StoreError
// instead; everything a running gateway must answer to a device is a Status.
#pragma once

#include <cstdint>
#include <string>

namespace tether::store {

enum class StatusCode : uint8_t {
  kOk,
  kRejected,         // a queue limit with policy "reject" would be exceeded: answer 5.03 + Max-Age
  kFull,             // the disk or the LMDB map (at its configured maximum) is full: retry later
  kNotFound,         // the session / queue entry / dead letter named by a mutation does not exist
  kInvalidArgument,  // bad path, bad value, entry larger than its route's byte limit, ...
  kConflict,         // a session token is already bound to another session
  kClosed,           // the store is shutting down; the batch was not applied
  kIoError,          // any other LMDB / OS error; message carries the detail
};

struct Status {
  StatusCode code = StatusCode::kOk;
  std::string message;

  bool ok() const { return code == StatusCode::kOk; }
  static Status Ok() { return {}; }
  static Status Error(StatusCode c, std::string msg) { return Status{c, std::move(msg)}; }
  std::string ToString() const;  // "ok" or "<code name>: <message>"
};

const char* StatusCodeName(StatusCode code);

}  // namespace tether::store
