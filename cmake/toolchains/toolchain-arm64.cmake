# 64-bit Raspberry Pi OS (bookworm, arm64): Pi 3, 4, 5, Zero 2 W. See cross-debian.cmake.
set(CMAKE_SYSTEM_PROCESSOR aarch64)
set(TETHER_TRIPLET aarch64-linux-gnu)
set(TETHER_DEB_ARCH arm64)
set(TETHER_QEMU qemu-aarch64-static)
include(${CMAKE_CURRENT_LIST_DIR}/cross-debian.cmake)
