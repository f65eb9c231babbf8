#include "gateway/device/liveness_file.h"

#include <fcntl.h>
#include <spdlog/spdlog.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstring>

#include "store/boot_clock.h"

namespace tether {

// 64 bytes. The sequence pair brackets every write (see the header).
struct LivenessFile::Slot {
  uint64_t seq_begin;
  char session_id[16];
  char boot[16];
  int64_t seen_boottime_ms;
  int64_t ping_boottime_ms;
  uint64_t seq_end;
};

namespace {
constexpr uint32_t kInitialSlots = 1024;
constexpr size_t kSlotBytes = 64;

std::string Fixed16(const std::string& s) {
  std::string out(16, '\0');
  std::memcpy(out.data(), s.data(), std::min<size_t>(16, s.size()));
  return out;
}
}  // namespace

LivenessFile::LivenessFile(std::string path) : path_(std::move(path)), boot_(Fixed16(store::BootId())) {
  static_assert(sizeof(Slot) == kSlotBytes);
  fd_ = ::open(path_.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600);
  if (fd_ < 0) {
    Disable(std::strerror(errno));
    return;
  }
  // What the previous process of this boot left.
  struct stat st {};
  if (fstat(fd_, &st) == 0 && st.st_size >= static_cast<off_t>(kSlotBytes) && !store::BootId().empty()) {
    const size_t n = static_cast<size_t>(st.st_size) / kSlotBytes;
    std::vector<Slot> slots(n);
    if (pread(fd_, slots.data(), n * kSlotBytes, 0) == static_cast<ssize_t>(n * kSlotBytes)) {
      for (const Slot& s : slots) {
        if (s.seq_begin == 0 || s.seq_begin != s.seq_end || std::memcmp(s.boot, boot_.data(), 16) != 0) continue;
        std::string id(s.session_id, strnlen(s.session_id, 16));
        recovered_[id] = Stamp{s.seen_boottime_ms, s.ping_boottime_ms};
      }
    }
  }
  if (ftruncate(fd_, 0) != 0) {
    Disable(std::strerror(errno));
    return;
  }
  Grow(kInitialSlots);
}

LivenessFile::~LivenessFile() {
  if (base_) munmap(base_, static_cast<size_t>(capacity_) * kSlotBytes);
  if (fd_ >= 0) ::close(fd_);
}

void LivenessFile::Disable(const std::string& why) {
  spdlog::warn("liveness file {}: {}; after a crash, restored sessions get a full timeout", path_, why);
  if (base_) munmap(base_, static_cast<size_t>(capacity_) * kSlotBytes);
  base_ = nullptr;
  capacity_ = 0;
}

bool LivenessFile::Grow(uint32_t slots) {
  const size_t bytes = static_cast<size_t>(slots) * kSlotBytes;
  if (ftruncate(fd_, static_cast<off_t>(bytes)) != 0) {
    Disable(std::string("cannot grow: ") + std::strerror(errno));
    return false;
  }
  void* p = base_ ? mremap(base_, static_cast<size_t>(capacity_) * kSlotBytes, bytes, MREMAP_MAYMOVE)
                  : mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_SHARED, fd_, 0);
  if (p == MAP_FAILED) {
    Disable(std::string("cannot map: ") + std::strerror(errno));
    return false;
  }
  base_ = static_cast<char*>(p);
  capacity_ = slots;
  return true;
}

uint32_t LivenessFile::Assign() {
  if (!base_) return kNoSlot;
  if (!free_.empty()) {
    uint32_t s = free_.back();
    free_.pop_back();
    return s;
  }
  if (used_ == capacity_ && !Grow(capacity_ * 2)) return kNoSlot;
  return used_++;
}

void LivenessFile::Write(uint32_t slot, const std::string& session_id, Stamp stamp) {
  if (!base_ || slot >= capacity_) return;
  Slot* s = reinterpret_cast<Slot*>(base_ + static_cast<size_t>(slot) * kSlotBytes);
  const uint64_t seq = s->seq_end + 1;
  // The compiler keeps these stores in program order; a process killed between two of them leaves
  // seq_begin != seq_end, and the slot is not trusted.
  s->seq_begin = seq;
  std::atomic_signal_fence(std::memory_order_seq_cst);
  std::memset(s->session_id, 0, sizeof s->session_id);
  std::memcpy(s->session_id, session_id.data(), std::min<size_t>(16, session_id.size()));
  std::memcpy(s->boot, boot_.data(), 16);
  s->seen_boottime_ms = stamp.seen_boottime_ms;
  s->ping_boottime_ms = stamp.ping_boottime_ms;
  std::atomic_signal_fence(std::memory_order_seq_cst);
  s->seq_end = seq;
}

void LivenessFile::Free(uint32_t slot) {
  if (!base_ || slot >= capacity_) return;
  Slot* s = reinterpret_cast<Slot*>(base_ + static_cast<size_t>(slot) * kSlotBytes);
  const uint64_t seq = s->seq_end + 1;
  s->seq_begin = seq;  // unequal from here on: never read back
  std::atomic_signal_fence(std::memory_order_seq_cst);
  std::memset(s->session_id, 0, sizeof s->session_id);
  free_.push_back(slot);
}

}  // namespace tether
