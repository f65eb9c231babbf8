// LivenessFile: every session's last datagram and last ping, kept where a crash of tetherd cannot
// take them: a shared memory mapping of a file in the store directory. The kernel owns the
// mapping's dirty pages, so what the process stored survives kill -9 or an abort exactly; a restart
// in the same boot reads it back and declares a device that died before the crash gone
// session_timeout after its real last datagram, not a whole timeout after the restart.
//
// Rules:
// - Never fsynced (one memory store per datagram, no system call): after a crash of the host it
//   may be stale or lost. Each slot names the boot that wrote it; slots of another boot are ignored
//   (the restart then gives sessions a full timeout, as the store's record cannot date them).
// - A slot is written inside a sequence pair (begin, end): a process killed in the middle of a write
//   leaves them unequal and the slot is ignored.
// - Opening reads what the previous process left (recovered()) and starts the file empty.
// - Any failure (cannot create, map or grow the file) is logged once and disables it; liveness then
//   falls back to what the store records. Never throws. Loop thread only.
#pragma once

#include <cstdint>
#include <string>
#include <unordered_map>
#include <vector>

namespace tether {

class LivenessFile {
 public:
  struct Stamp {
    int64_t seen_boottime_ms = 0;  // CLOCK_BOOTTIME of the last datagram
    int64_t ping_boottime_ms = 0;  // of the last ping; 0: none
  };
  static constexpr uint32_t kNoSlot = UINT32_MAX;

  explicit LivenessFile(std::string path);
  ~LivenessFile();
  LivenessFile(const LivenessFile&) = delete;
  LivenessFile& operator=(const LivenessFile&) = delete;

  bool ok() const { return base_ != nullptr; }
  // Session id -> stamps left by the previous process of this boot (complete slots only).
  const std::unordered_map<std::string, Stamp>& recovered() const { return recovered_; }

  uint32_t Assign();  // a free slot; kNoSlot when disabled
  void Write(uint32_t slot, const std::string& session_id, Stamp stamp);
  void Free(uint32_t slot);

 private:
  struct Slot;
  bool Grow(uint32_t slots);
  void Disable(const std::string& why);

  std::string path_;
  int fd_ = -1;
  char* base_ = nullptr;
  uint32_t capacity_ = 0, used_ = 0;  // slots mapped / handed out at least once
  std::vector<uint32_t> free_;
  std::string boot_;  // 16 bytes naming this boot
  std::unordered_map<std::string, Stamp> recovered_;
};

}  // namespace tether
