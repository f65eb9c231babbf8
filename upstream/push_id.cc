#include "upstream/push_id.h"

namespace tether::upstream {
namespace {
constexpr char kAlphabet[] = "-0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ_abcdefghijklmnopqrstuvwxyz";
}

PushId::PushId() : rng_(std::random_device{}()) {}

std::string PushId::next(int64_t now_ms) {
  if (now_ms > last_ms_) {
    for (auto& c : tail_) c = static_cast<uint8_t>(rng_() % 64);
    last_ms_ = now_ms;
  } else {
    // Same millisecond (or clock stepped back): keep the old prefix, add one to the tail.
    int i = 11;
    for (; i >= 0 && tail_[i] == 63; --i) tail_[i] = 0;
    if (i >= 0) ++tail_[i];
  }
  std::string id(20, '-');
  int64_t t = last_ms_;
  for (int i = 7; i >= 0; --i) {
    id[i] = kAlphabet[t % 64];
    t /= 64;
  }
  for (int i = 0; i < 12; ++i) id[8 + i] = kAlphabet[tail_[i]];
  return id;
}

}  // namespace tether::upstream
