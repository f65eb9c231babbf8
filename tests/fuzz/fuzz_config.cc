// The configuration parser on arbitrary text: a Config or a ConfigError, never a crash or another
// exception type.
#include <cstddef>
#include <cstdint>
#include <string>

#include "gateway/config/config.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string text(reinterpret_cast<const char*>(data), size);
  try {
    tether::Config c = tether::Config::Parse(text, "fuzz.yaml");
    if (c.apps.empty() || c.routes.empty()) __builtin_trap();  // Load guarantees both
  } catch (const tether::ConfigError& e) {
    if (std::string(e.what()).rfind("fuzz.yaml", 0) != 0) __builtin_trap();  // always located
  }
  return 0;
}
