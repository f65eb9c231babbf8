// DatabaseUrl: the REST URL of a database location, `<base>/<segments>.json[?query]`, with every
// path segment percent-encoded (UTF-8 bytes, space, '?', '&', '%', '+', ...). The one place where
// upstream turns a database path into a URL.
#pragma once
#include <string>
#include <string_view>

namespace tether::upstream {

// `path` is '/'-separated; leading, trailing and repeated '/' are ignored ("" = the root).
std::string EncodeDatabasePath(std::string_view path);
// `query` is already URL-encoded ("k=v&k2=v2"); empty = none.
std::string DatabaseUrl(std::string_view base_url, std::string_view path, std::string_view query = {});

}  // namespace tether::upstream
