// MessageOf: the text a refusal's Diagnostic carries ("" when the call succeeded), so a test
// compares exactly what a device or an admin client would read. PrintTo lets gtest show a
// Diagnostic. Test-only (production code tests ok() and reads Error()).
#pragma once

#include <ostream>
#include <string>

#include "gateway/model/diagnostic.h"

namespace tether {

template <class T>
std::string MessageOf(const Expected<T>& r) {
  return r ? std::string() : r.error().message;
}

inline void PrintTo(const Diagnostic& d, std::ostream* os) {
  *os << ErrorCodeName(d.code) << ": " << d.message;
  if (d.retry_after_s) *os << " (retry after " << *d.retry_after_s << " s)";
}

}  // namespace tether
