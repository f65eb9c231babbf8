// Clock readings used to timestamp device writes (loop thread, cheap).
#pragma once

#include <cstdint>
#include <string>

namespace tether {

int64_t WallNowMs();       // CLOCK_REALTIME
int64_t BootTimeNowMs();   // CLOCK_BOOTTIME: keeps counting across suspend, immune to clock jumps
const std::string& BootId();  // /proc/sys/kernel/random/boot_id, read once

// n characters from [A-Za-z0-9] drawn from getrandom(2): session tokens are capabilities.
std::string RandomToken(size_t n);

}  // namespace tether
