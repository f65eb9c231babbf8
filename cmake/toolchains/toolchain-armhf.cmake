# 32-bit Raspberry Pi OS (bookworm, armhf: ARMv7 + VFPv3, EABI5 hard float): Pi 2, 3, 4, Zero 2 W.
# (Raspberry Pi OS armhf is built for ARMv6 so it also runs on a Pi 1 / Zero; Debian's armhf,
# which this targets, needs ARMv7.) 32-bit address space and 32-bit time_t. See cross-debian.cmake.
set(CMAKE_SYSTEM_PROCESSOR armv7l)
set(TETHER_TRIPLET arm-linux-gnueabihf)
set(TETHER_DEB_ARCH armhf)
set(TETHER_QEMU qemu-arm-static)
# GCC's note that the AAPCS passing of some std:: types changed in GCC 7.1: everything here,
# the sysroot's libraries included, is built by GCC 12, so it is noise.
set(CMAKE_CXX_FLAGS_INIT "-Wno-psabi")
include(${CMAKE_CURRENT_LIST_DIR}/cross-debian.cmake)
