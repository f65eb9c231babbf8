#!/usr/bin/env bash
# Cross-building for a Raspberry Pi: installs the cross compiler and qemu-user for each ARCH
# (arm64, armhf) and fills a sysroot with that architecture's Debian 12 libraries.
#
#   install-cross-deps.sh ARCH...          e.g. install-cross-deps.sh armhf arm64
#   prints nothing but a summary when everything is present (a stamp per sysroot).
#
# Rules:
# - The host's own packages are never removed, replaced, upgraded or downgraded: the host part
#   is installed only after `apt-get -s` shows that it would install new packages and touch none
#   of those already there (other builds on this machine use them). That is why the compilers
#   are installed as g++-<triplet> rather than crossbuild-essential-<arch> (whose dpkg-cross can
#   pull a perl upgrade).
# - The target libraries never enter the host's dpkg database: `dpkg --add-architecture` plus
#   `libfoo-dev:armhf` would work for most of them, but libyaml-cpp-dev is not Multi-Arch: same
#   (its :armhf build would replace the host's amd64 one). Instead a private apt state (own lists,
#   an empty dpkg status, APT::Architecture=ARCH) resolves the dependency closure of the -dev
#   packages below, `apt-get download` fetches them and `dpkg -x` unpacks them into
#   $TETHER_SYSROOT/ARCH (default /var/cache/tether-sysroot/ARCH). Each package's control files
#   go to $SYSROOT/.pkgs/NAME/DEBIAN so dpkg-shlibdeps can compute the .deb's Depends.
# - The sysroot also holds the target's libc and libstdc++, so qemu-user runs the binaries with
#   QEMU_LD_PREFIX=$SYSROOT (what `make cross-test` and the CI smoke test do).
set -euo pipefail

ROOT=${TETHER_SYSROOT:-/var/cache/tether-sysroot}
[ $# -gt 0 ] || { echo "usage: $0 ARCH... (arm64, armhf)" >&2; exit 2; }

# Everything the build and the test suite link against (the list in install-deps.sh, target side).
TARGET_PKGS=(
  libuv1-dev liblmdb-dev libmbedtls-dev libyaml-cpp-dev libcurl4-openssl-dev
  libgtest-dev libgmock-dev libspdlog-dev libfmt-dev libcli11-dev nlohmann-json3-dev
  libcbor-dev libsystemd-dev libcpp-httplib-dev
  libc6 libstdc++6 libgcc-s1
)

# One package build tree for dpkg-shlibdeps -S (cmake/cross-depends.cmake.in): every package's
# symbols and shlibs files, merged (both formats allow many libraries per file).
merge_control() {
  local sysroot=$1
  [ -s "$sysroot/DEBIAN/symbols" ] && return 0
  mkdir -p "$sysroot/DEBIAN"
  cat "$sysroot"/.pkgs/*/DEBIAN/symbols >"$sysroot/DEBIAN/symbols" 2>/dev/null || true
  cat "$sysroot"/.pkgs/*/DEBIAN/shlibs >"$sysroot/DEBIAN/shlibs" 2>/dev/null || true
}

# Target tools that tests run on the store as an operator would on the Pi (its own mdb_copy: the
# LMDB file layout depends on the word size, so the host's cannot read an armhf store). Kept
# apart from TARGET_PKGS: they add no headers, so adding one does not rebuild the cross trees.
TARGET_TOOLS=(lmdb-utils)

triplet() {
  case "$1" in
    arm64) echo aarch64-linux-gnu ;;
    armhf) echo arm-linux-gnueabihf ;;
    *) echo "install-cross-deps: unknown ARCH '$1' (arm64, armhf)" >&2; exit 2 ;;
  esac
}

SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
export DEBIAN_FRONTEND=noninteractive

# --- host side: compilers and qemu, only ever as new packages -----------------------------------
host=(qemu-user-static dpkg-dev file)
for arch in "$@"; do host+=("g++-$(triplet "$arch")"); done
missing=()
for p in "${host[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "install-cross-deps: installing ${missing[*]}"
  $SUDO apt-get update -qq
  plan=$(apt-get -s install --no-install-recommends "${missing[@]}")
  if grep -qE '^(Remv|Inst [^ ]+ \[)' <<<"$plan"; then
    echo "install-cross-deps: refusing: installing ${missing[*]} would change packages already on this machine:" >&2
    grep -E '^(Remv|Inst [^ ]+ \[)' <<<"$plan" >&2
    exit 1
  fi
  $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

# --- binfmt_misc: a test that starts tetherd (an ARM binary) runs it through qemu-user ----------
# Only the two ARM handlers Debian's qemu-user-static ships, and only if not registered yet; the
# qemu binary is opened at registration (flag F), so it works in chroots and containers too.
# Runs here and not in a unit file: a CI machine has no systemd-binfmt running.
if [ ! -e /proc/sys/fs/binfmt_misc/register ]; then
  $SUDO mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc 2>/dev/null || true
fi
for arch in "$@"; do
  case "$arch" in arm64) handler=qemu-aarch64 ;; armhf) handler=qemu-arm ;; esac
  if [ -e /proc/sys/fs/binfmt_misc/register ] && [ ! -e "/proc/sys/fs/binfmt_misc/$handler" ]; then
    $SUDO sh -c "cat /usr/lib/binfmt.d/$handler.conf >/proc/sys/fs/binfmt_misc/register"
    echo "install-cross-deps: registered binfmt handler $handler"
  fi
  if [ ! -e "/proc/sys/fs/binfmt_misc/$handler" ]; then
    echo "install-cross-deps: warning: no binfmt_misc here: $arch binaries run only as qemu-$arch-static -L SYSROOT BINARY" >&2
  fi
done

apt_opts_for() {  # ARCH STATE_DIR: a private apt state for ARCH (see the rules above)
  apt_opts=(
    -o "APT::Architecture=$1" -o "APT::Architectures::=$1"
    -o "Dir::State::Lists=$2/lists" -o "Dir::State::Status=$2/status"
    -o "Dir::State::extended_states=$2/extended_states" -o "Dir::Cache=$2/cache"
    -o "Acquire::Languages=none" -o "Debug::NoLocking=1" -o "APT::Sandbox::User=root"
    -o "APT::Install-Recommends=false"
  )
}

add_tools() {  # ARCH SYSROOT STATE_DIR: unpacks TARGET_TOOLS (their libraries are in the sysroot)
  local want="${TARGET_TOOLS[*]}" tools_stamp=$2/.tether-tools
  [ -f "$tools_stamp" ] && [ "$(cat "$tools_stamp")" = "$want" ] && return 0
  apt_opts_for "$1" "$3"
  rm -rf "$3/tools" && mkdir -p "$3/tools" "$3/cache/archives/partial"
  (cd "$3/tools" && apt-get "${apt_opts[@]}" download "${TARGET_TOOLS[@]}" >/dev/null)
  for deb in "$3"/tools/*.deb; do dpkg-deb -x "$deb" "$2"; done
  rm -rf "$3/tools"
  echo "$want" >"$tools_stamp"
}

# --- target side: one sysroot per architecture --------------------------------------------------
for arch in "$@"; do
  sysroot=$ROOT/$arch
  state=$ROOT/.apt-$arch
  stamp=$sysroot/.tether-sysroot
  want="${TARGET_PKGS[*]}"
  if [ -f "$stamp" ] && [ "$(head -1 "$stamp")" = "$want" ]; then
    merge_control "$sysroot"
    add_tools "$arch" "$sysroot" "$state"
    echo "install-cross-deps: $arch sysroot present ($sysroot, $(($(wc -l <"$stamp") - 1)) packages)"
    continue
  fi
  $SUDO mkdir -p "$ROOT"
  exec 9>"$ROOT/.lock-$arch"
  flock 9  # two worktrees filling the same sysroot at once would unpack over each other
  if [ -f "$stamp" ] && [ "$(head -1 "$stamp")" = "$want" ]; then exec 9>&-; continue; fi
  echo "install-cross-deps: building the $arch sysroot in $sysroot"
  rm -rf "$sysroot" "$state"
  mkdir -p "$state/lists/partial" "$state/cache/archives/partial" "$state/debs" "$sysroot"
  : >"$state/status"
  apt_opts_for "$arch" "$state"
  # A mirror mid-sync answers "File has unexpected size": try again a little later, then go on
  # without the suites that still fail (e.g. -security) as long as the release itself is there:
  # the sysroot serves compiling, linking and computing minimum versions, not running a Pi.
  for try in 1 2 3; do
    if apt-get "${apt_opts[@]}" update -qq 2>"$state/update.err"; then break; fi
    if [ "$try" = 3 ]; then
      if ! ls "$state"/lists/*_dists_bookworm_main_binary-"${arch}"_Packages* >/dev/null 2>&1; then
        cat "$state/update.err" >&2
        echo "install-cross-deps: apt-get update failed for $arch" >&2
        exit 1
      fi
      echo "install-cross-deps: warning: some $arch indexes could not be fetched, going on without them:" >&2
      grep '^E: Failed to fetch' "$state/update.err" | cut -c1-160 >&2 || true
      break
    fi
    sleep $((try * 10))
  done
  # An empty dpkg status: the simulated install lists the whole closure, resolved by apt.
  mapfile -t pkgs < <(apt-get "${apt_opts[@]}" -s install "${TARGET_PKGS[@]}" |
                      awk '/^Inst /{print $2}' | sort -u)
  [ ${#pkgs[@]} -gt 0 ] || { echo "install-cross-deps: could not resolve the $arch packages" >&2; exit 1; }
  (cd "$state/debs" && apt-get "${apt_opts[@]}" download "${pkgs[@]}" >/dev/null)
  for deb in "$state"/debs/*.deb; do
    name=$(dpkg-deb -f "$deb" Package)
    dpkg-deb -x "$deb" "$sysroot"
    mkdir -p "$sysroot/.pkgs/$name/DEBIAN"
    dpkg-deb -e "$deb" "$sysroot/.pkgs/$name/DEBIAN"
  done
  # Absolute symlinks (e.g. libfoo.so -> /lib/...) would point into the host: make them relative.
  find "$sysroot" -type l -lname '/*' | while read -r link; do
    target=$(readlink "$link")
    ln -sfn "$(realpath -m --relative-to="$(dirname "$link")" "$sysroot$target")" "$link"
  done
  merge_control "$sysroot"
  { echo "$want"; printf '%s\n' "${pkgs[@]}"; } >"$stamp"
  add_tools "$arch" "$sysroot" "$state"
  rm -rf "$state/debs" "$state/cache"
  echo "install-cross-deps: $arch sysroot ready (${#pkgs[@]} packages)"
  exec 9>&-
done
