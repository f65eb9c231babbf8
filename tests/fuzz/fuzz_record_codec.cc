// The store's on-disk records (store/record_codec.h): whatever bytes a damaged or foreign store
// holds, decoding either refuses them or yields a record whose encoding decodes to the same
// encoding again. Never crashes, never reads past the input.
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "store/record_codec.h"

namespace {

template <typename Record>
void RoundTrip(std::string_view in, std::string (*encode)(const Record&), bool (*decode)(std::string_view, Record*)) {
  Record r;
  if (!decode(in, &r)) return;
  const std::string once = encode(r);
  Record again;
  if (!decode(once, &again)) __builtin_trap();  // what we write, we read
  if (encode(again) != once) __builtin_trap();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  using namespace tether::store;
  std::string_view in(reinterpret_cast<const char*>(data + 1), size - 1);
  switch (data[0] % 5) {
    case 0: RoundTrip<QueueEntry>(in, EncodeEntry, DecodeEntry); break;
    case 1: RoundTrip<DeadLetter>(in, EncodeDeadLetter, DecodeDeadLetter); break;
    case 2: RoundTrip<SessionRecord>(in, EncodeSession, DecodeSession); break;
    case 3: RoundTrip<OnDisconnectOp>(in, EncodeOnDisconnect, DecodeOnDisconnect); break;
    case 4: RoundTrip<RouteQueueStats>(in, EncodeRouteStats, DecodeRouteStats); break;
  }
  return 0;
}
