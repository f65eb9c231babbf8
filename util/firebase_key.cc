#include "util/firebase_key.h"

namespace tether::util {

std::string CheckFirebaseKey(std::string_view key) {
  if (key.empty()) return "empty key";
  if (key.size() > kMaxFirebaseKeyBytes) return "key longer than 768 bytes";
  for (unsigned char c : key) {
    if (!IsForbiddenKeyByte(c)) continue;
    if (c < 0x20 || c == 0x7f) return "key contains a control character";
    return "key '" + std::string(key.substr(0, 40)) + "' contains one of . $ # [ ] /";
  }
  return "";
}

}  // namespace tether::util
