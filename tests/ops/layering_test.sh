#!/bin/sh
# Layering (docs/architecture.md, "Rooms"): what the linker cannot see.
#  - tetherctl links neither libuv nor libcurl: it reads config and store and speaks HTTP to tetherd.
#  - device_proto/, store/ and upstream/ never include one another nor gateway/.
#  - gateway/ rooms include only the rooms below them: model <- config <- device <- cloud <- daemon,
#    admin beside device (gateway/model/ holds no state and does no I/O: it includes only itself).
#  - no tracked source file (.h .cc .py .js, third-party and node_modules aside) is over 600 lines:
#    one concept per file (the house style); a file that grows past it is split by concept.
# usage: layering_test.sh <source dir> <tetherctl binary>
set -u
src=$1
ctl=$2
fail=0

libs=$(ldd "$ctl") || { echo "ldd $ctl failed"; exit 1; }
for lib in libuv libcurl; do
  if echo "$libs" | grep -q "$lib"; then
    echo "FAIL: $ctl links $lib:"; echo "$libs" | grep "$lib"; fail=1
  fi
done

# check <dir> <allowed include prefixes...>: every quoted project include in dir names an allowed one.
check() {
  dir=$1; shift
  allowed=$(printf '%s|' "$@"); allowed=${allowed%|}
  bad=$(grep -rnE '^#include "(device_proto|store|upstream|gateway)/' "$src/$dir" |
        grep -vE "#include \"($allowed)/")
  if [ -n "$bad" ]; then echo "FAIL: $dir includes outside ($*):"; echo "$bad"; fail=1; fi
}
check device_proto device_proto
check store store
check upstream upstream
check util util
check gateway/model gateway/model
check gateway/config gateway/config gateway/model store upstream
check gateway/admin gateway/admin gateway/config gateway/model store
check gateway/device gateway/device gateway/config gateway/model device_proto store
check gateway/cloud gateway/cloud gateway/device gateway/config gateway/model store upstream

# Source files over 600 lines. git ls-files: tracked files and new ones not ignored (the node_modules
# symlink and build directories are ignored); outside a git checkout (a tarball), every such file.
max_lines=600
if git -C "$src" rev-parse --is-inside-work-tree >/dev/null 2>&1; then
  files=$(git -C "$src" ls-files --cached --others --exclude-standard -- '*.h' '*.cc' '*.py' '*.js')
else
  files=$(cd "$src" && find . -path ./build\* -prune -o -type f \( -name '*.h' -o -name '*.cc' -o -name '*.py' -o -name '*.js' \) -print |
          sed 's|^\./||')
fi
long=$(cd "$src" && echo "$files" | grep -vE '(^|/)(node_modules|third_party|third-party)/' |
       while IFS= read -r f; do
         [ -f "$f" ] || continue
         n=$(wc -l < "$f")
         [ "$n" -gt $max_lines ] && echo "  $f: $n lines"
       done)
if [ -n "$long" ]; then echo "FAIL: source files over $max_lines lines (split them by concept):"; echo "$long"; fail=1; fi

[ $fail -eq 0 ] && echo "layering: ok"
exit $fail
