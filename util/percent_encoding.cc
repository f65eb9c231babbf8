#include "util/percent_encoding.h"

#include <curl/curl.h>

#include <climits>
#include <memory>
#include <new>

namespace tether::util {

std::string PercentEncode(std::string_view component) {
  if (component.empty()) return {};
  if (component.size() > static_cast<size_t>(INT_MAX)) throw std::bad_alloc();
  // libcurl >= 7.82 takes no handle here (Debian 12: 7.88); the escape is locale-independent.
  std::unique_ptr<char, decltype(&curl_free)> out(
      curl_easy_escape(nullptr, component.data(), static_cast<int>(component.size())), &curl_free);
  if (!out) throw std::bad_alloc();
  return std::string(out.get());
}

}  // namespace tether::util
