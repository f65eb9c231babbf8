#include "gateway/random_token.h"

#include <sys/random.h>
#include <stdexcept>

namespace tether {

std::string RandomToken(size_t n) {
  static const char kAlpha[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
  // Sized once: a session keeps its tokens for life, and a string grown by appends (or reserved
  // past its inline buffer) keeps up to twice the room (a 16-char id took 31 bytes, 32 chars 61).
  std::string out(n, '\0');
  size_t filled = 0;
  while (filled < n) {
    unsigned char buf[64];
    ssize_t got = getrandom(buf, sizeof buf, 0);
    if (got <= 0) throw std::runtime_error("getrandom failed");
    for (ssize_t i = 0; i < got && filled < n; ++i) {
      if (buf[i] < 248) out[filled++] = kAlpha[buf[i] % 62];  // 248 = 4 * 62: no modulo bias
    }
  }
  return out;
}

}  // namespace tether
