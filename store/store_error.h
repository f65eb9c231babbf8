// StoreError: the store cannot be used at all (incompatible format, unreadable file, bad options).
//
// Thrown by Store::Open and by read accessors on LMDB failures that are not expected outcomes.
// The message always names the store path. Startup must stop on it; the store never wipes data.
#pragma once

#include <stdexcept>
#include <string>

namespace tether::store {

class StoreError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// Throws StoreError("<path>: <what>: <mdb_strerror(rc)>").
[[noreturn]] void ThrowLmdb(const std::string& path, const char* what, int rc);

}  // namespace tether::store
