// Invariants: parsing never reads out of bounds; a message that parses
// re-serializes to exactly the input bytes (the option encoding is canonical)
// and parses again to the same fields.
#include <cstdlib>
#include <vector>

#include "device_proto/message.h"

using namespace tether::coap;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::span<const uint8_t> in(data, size);
  Message m;
  const ParseResult r = Parse(in, m);
  if (r.status == ParseStatus::kUnreadable) return 0;
  if (!r.ok()) return 0;
  for (const Option& o : m.options) {
    (void)DecodeUint(o.value);
    (void)Block::Decode(o.value);
    (void)IsRecognized(o.number, o.value.size());
  }
  std::vector<uint8_t> out(size);
  const size_t n = Serialize(m, out);
  if (n != size || !std::equal(out.begin(), out.end(), data)) std::abort();
  std::vector<uint8_t> small(size ? size - 1 : 0);
  if (size > 0 && Serialize(m, small) != 0) std::abort();  // never writes past the span
  Message again;
  if (!Parse(out, again).ok()) std::abort();
  if (again.type != m.type || again.code != m.code || again.mid != m.mid || !(again.token == m.token) ||
      again.options.size() != m.options.size() || again.payload.size() != m.payload.size())
    std::abort();
  return 0;
}
