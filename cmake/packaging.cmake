# Packaging: the `tether` .deb (make deb, or `cpack -G DEB` in a build dir).
#
# Installs /usr/bin/tetherd, /usr/bin/tetherctl (install rules in gateway/CMakeLists.txt),
# /lib/systemd/system/tether.service, /etc/tether/tether.yaml (a conffile: local edits survive
# upgrades) and /usr/share/doc/tether/operations.md. The maintainer scripts below create the
# `tether` system user and its state dir; they work with and without a running systemd.
# A cross build (cmake/toolchains/) packages for its target: Architecture arm64 or armhf, and
# Depends computed by dpkg-shlibdeps against the target's sysroot (cross-depends.cmake.in).

# --- Files ----------------------------------------------------------------------------------
install(FILES ${CMAKE_SOURCE_DIR}/systemd/tether.service DESTINATION /lib/systemd/system)
install(FILES ${CMAKE_SOURCE_DIR}/etc/tether.yaml DESTINATION /etc/tether)
install(FILES ${CMAKE_SOURCE_DIR}/docs/operations.md DESTINATION share/doc/tether OPTIONAL)

# --- Maintainer scripts (generated into the build dir) ---------------------------------------
set(TETHER_DEB_DIR ${CMAKE_BINARY_DIR}/packaging/deb)

file(WRITE ${TETHER_DEB_DIR}/conffiles "/etc/tether/tether.yaml\n")

file(WRITE ${TETHER_DEB_DIR}/postinst [=[#!/bin/sh
# tether postinst: system user, state dir, unit registration. Idempotent.
set -e
if [ "$1" = "configure" ]; then
  if ! getent group tether >/dev/null; then addgroup --system tether >/dev/null; fi
  if ! getent passwd tether >/dev/null; then
    adduser --system --ingroup tether --home /var/lib/tether --no-create-home \
      --gecos "Tether gateway" --shell /usr/sbin/nologin tether >/dev/null
  fi
  # The LMDB store: owned by tether, private (systemd's StateDirectory= keeps it that way too).
  install -d -o tether -g tether -m 0700 /var/lib/tether
  # Secrets referenced from tether.yaml may be made group-readable: root:tether 0640.
  chgrp tether /etc/tether && chmod 0755 /etc/tether
  if [ -d /run/systemd/system ]; then
    systemctl daemon-reload || true
    if [ -z "$2" ]; then
      systemctl enable tether.service >/dev/null 2>&1 || true
      systemctl start tether.service || echo "tether: service did not start; see journalctl -u tether" >&2
    else
      systemctl try-restart tether.service || true
    fi
  else
    # No systemd (container, chroot): register the unit for a later boot, start nothing.
    if command -v systemctl >/dev/null 2>&1; then systemctl enable tether.service >/dev/null 2>&1 || true; fi
  fi
fi
exit 0
]=])

file(WRITE ${TETHER_DEB_DIR}/prerm [=[#!/bin/sh
# tether prerm: stop the service before its files go away (not on upgrade: postinst restarts it).
set -e
if [ "$1" = "remove" ] && [ -d /run/systemd/system ]; then
  systemctl stop tether.service || true
fi
exit 0
]=])

file(WRITE ${TETHER_DEB_DIR}/postrm [=[#!/bin/sh
# tether postrm: forget the unit on remove; on purge also delete the store. The tether user is
# kept (Debian practice: files it owned may survive elsewhere, e.g. in backups).
set -e
case "$1" in
  remove|purge)
    if command -v systemctl >/dev/null 2>&1; then systemctl disable tether.service >/dev/null 2>&1 || true; fi
    if [ -d /run/systemd/system ]; then systemctl daemon-reload || true; fi
    ;;
esac
if [ "$1" = "purge" ]; then
  rm -rf /var/lib/tether
  rmdir /etc/tether 2>/dev/null || true
fi
exit 0
]=])

# --- CPack ----------------------------------------------------------------------------------
set(CPACK_GENERATOR "DEB")
set(CPACK_PACKAGE_NAME "tether")
set(CPACK_PACKAGE_VERSION "${PROJECT_VERSION}")
set(CPACK_PACKAGE_VENDOR "Tether")
set(CPACK_PACKAGE_CONTACT "Tether maintainers <tether@localhost>")
set(CPACK_PACKAGE_DESCRIPTION_SUMMARY "CoAP edge gateway for constrained devices, with a durable queue to Firebase")
set(CPACK_PACKAGING_INSTALL_PREFIX "/usr")
set(CPACK_DEBIAN_FILE_NAME DEB-DEFAULT)
set(CPACK_DEBIAN_PACKAGE_SECTION "net")
set(CPACK_DEBIAN_PACKAGE_PRIORITY "optional")
set(CPACK_DEBIAN_PACKAGE_SHLIBDEPS ON)
set(CPACK_STRIP_FILES TRUE)  # the .deb ships stripped binaries; build dirs keep symbols
set(CPACK_DEBIAN_PACKAGE_DEPENDS "adduser")
set(CPACK_DEBIAN_PACKAGE_SUGGESTS "lmdb-utils")
set(CPACK_DEBIAN_PACKAGE_CONTROL_EXTRA
    "${TETHER_DEB_DIR}/conffiles;${TETHER_DEB_DIR}/postinst;${TETHER_DEB_DIR}/prerm;${TETHER_DEB_DIR}/postrm")
set(CPACK_DEBIAN_PACKAGE_CONTROL_STRICT_PERMISSION TRUE)
if(CMAKE_CROSSCOMPILING)
  # CPack's own dpkg-shlibdeps call looks the libraries up in the host's dpkg database, which
  # has no armhf/arm64 packages: the project config file runs it against the sysroot instead.
  set(CPACK_DEBIAN_PACKAGE_ARCHITECTURE ${TETHER_DEB_ARCH})
  set(CPACK_DEBIAN_PACKAGE_SHLIBDEPS OFF)
  # cpack's install step builds only what it installs (make deb-<arch> builds tetherd and
  # tetherctl first), not the whole test suite for the target.
  set(CMAKE_SKIP_INSTALL_ALL_DEPENDENCY TRUE)
  set(TETHER_SHLIBDEPS_DIR ${CMAKE_BINARY_DIR}/packaging/shlibdeps)
  configure_file(${CMAKE_CURRENT_LIST_DIR}/cross-depends.cmake.in
                 ${CMAKE_BINARY_DIR}/packaging/cross-depends.cmake.in @ONLY)
  file(GENERATE OUTPUT ${CMAKE_BINARY_DIR}/packaging/cross-depends.cmake
       INPUT ${CMAKE_BINARY_DIR}/packaging/cross-depends.cmake.in)
  set(CPACK_PROJECT_CONFIG_FILE ${CMAKE_BINARY_DIR}/packaging/cross-depends.cmake)
endif()
include(CPack)
