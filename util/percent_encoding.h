// PercentEncode: RFC 3986 percent-encoding of one URL component (a path segment or a query
// parameter value), by libcurl (curl_easy_escape). The one percent-encoder: REST URLs and query
// parameters to the database (upstream/), query strings the gateway builds (gateway/query.cc) and
// admin API paths (gateway/admin_client.h).
//
// Everything but the unreserved characters A-Z a-z 0-9 - . _ ~ becomes %XX (upper-case hex),
// byte by byte: a UTF-8 character becomes one %XX per byte; '/', '?', '&', '%', '+' and space are
// encoded too. Stateless: any thread. Throws std::bad_alloc if libcurl cannot allocate.
#pragma once

#include <string>
#include <string_view>

namespace tether::util {

std::string PercentEncode(std::string_view component);

}  // namespace tether::util
