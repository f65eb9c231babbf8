#include "gateway/random_token.h"

#include <sys/random.h>
#include <stdexcept>

namespace tether {

std::string RandomToken(size_t n) {
  static const char kAlpha[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
  std::string out;
  out.reserve(n);  // exactly: a session keeps its tokens for life (grown by appends, 32 chars take 61 bytes)
  while (out.size() < n) {
    unsigned char buf[64];
    ssize_t got = getrandom(buf, sizeof buf, 0);
    if (got <= 0) throw std::runtime_error("getrandom failed");
    for (ssize_t i = 0; i < got && out.size() < n; ++i) {
      if (buf[i] < 248) out += kAlpha[buf[i] % 62];  // 248 = 4 * 62: no modulo bias
    }
  }
  return out;
}

}  // namespace tether
