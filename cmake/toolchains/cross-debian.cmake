# Shared part of the Debian 12 cross toolchains (toolchain-arm64.cmake, toolchain-armhf.cmake).
#
# Compilers: Debian's g++-<triplet> (scripts/install-cross-deps.sh installs them). Libraries: the
# sysroot that script fills with the target's Debian 12 packages, TETHER_SYSROOT/<arch> (default
# /var/cache/tether-sysroot/<arch>). With --sysroot, Debian's cross gcc still takes libc and
# libstdc++ from its own /usr/<triplet> first and everything else from the sysroot.
# Tests run under qemu-user with QEMU_LD_PREFIX pointing at the same sysroot, so a test that
# starts tetherd (through binfmt_misc) runs the target's tetherd against the target's libraries.
set(CMAKE_SYSTEM_NAME Linux)
set(CMAKE_C_COMPILER ${TETHER_TRIPLET}-gcc)
set(CMAKE_CXX_COMPILER ${TETHER_TRIPLET}-g++)
set(CMAKE_LIBRARY_ARCHITECTURE ${TETHER_TRIPLET})

if(NOT TETHER_SYSROOT)
  if(DEFINED ENV{TETHER_SYSROOT})
    set(TETHER_SYSROOT $ENV{TETHER_SYSROOT})
  else()
    set(TETHER_SYSROOT /var/cache/tether-sysroot)
  endif()
endif()
set(TETHER_SYSROOT ${TETHER_SYSROOT} CACHE PATH "Parent of the per-architecture sysroots")
set(TETHER_CROSS_ROOT ${TETHER_SYSROOT}/${TETHER_DEB_ARCH})
if(NOT EXISTS ${TETHER_CROSS_ROOT}/.tether-sysroot)
  message(FATAL_ERROR "no ${TETHER_DEB_ARCH} sysroot in ${TETHER_CROSS_ROOT}: run "
                      "scripts/install-cross-deps.sh ${TETHER_DEB_ARCH} (make cross-deps does)")
endif()
set(CMAKE_SYSROOT ${TETHER_CROSS_ROOT})
# try_compile projects (compiler checks) see the same settings.
list(APPEND CMAKE_TRY_COMPILE_PLATFORM_VARIABLES TETHER_SYSROOT)

set(CMAKE_FIND_ROOT_PATH_MODE_PROGRAM NEVER)
set(CMAKE_FIND_ROOT_PATH_MODE_LIBRARY ONLY)
set(CMAKE_FIND_ROOT_PATH_MODE_INCLUDE ONLY)
set(CMAKE_FIND_ROOT_PATH_MODE_PACKAGE ONLY)

# pkg-config reads the target's .pc files and prefixes their paths with the sysroot.
set(ENV{PKG_CONFIG_SYSROOT_DIR} ${TETHER_CROSS_ROOT})
set(ENV{PKG_CONFIG_LIBDIR}
    "${TETHER_CROSS_ROOT}/usr/lib/${TETHER_TRIPLET}/pkgconfig:${TETHER_CROSS_ROOT}/usr/share/pkgconfig")
set(ENV{PKG_CONFIG_PATH} "")

# -O2 as Debian builds its own packages (dpkg-buildflags), not CMake's -O3: GCC 12 at -O3 reports
# false -Wrestrict errors on `"literal" + std::string&&` in the tests (GCC PR 105651).
set(CMAKE_C_FLAGS_RELEASE "-O2 -DNDEBUG" CACHE STRING "Flags for Release builds (cross: Debian's -O2)")
set(CMAKE_CXX_FLAGS_RELEASE "-O2 -DNDEBUG" CACHE STRING "Flags for Release builds (cross: Debian's -O2)")

# ctest and gtest_discover_tests run target binaries through qemu-user.
set(CMAKE_CROSSCOMPILING_EMULATOR ${TETHER_QEMU};-L;${TETHER_CROSS_ROOT})
