#!/usr/bin/env python3
"""One naming convention, checked: clang-tidy's readability-identifier-naming plus the accessor rule.

usage: scripts/check-naming.py BUILD_DIR [-j N] [--export-renames FILE]

The convention (docs/architecture.md, "Naming"):
- types, functions and methods are PascalCase (.clang-tidy says so and clang-tidy checks it);
- names the standard library calls (allocate, value_type, begin, size...) stay as it spells them;
- one exception clang-tidy cannot express, as in Google's style: an accessor may be named like the
  variable it reads. An accessor here is a method without parameters that is const or returns a
  member (`size_t size() const`, `Store& store() { return *store_; }`), and its mutator
  `set_<name>(value)` takes one parameter.

Runs clang-tidy over the product's translation units in BUILD_DIR/compile_commands.json (gateway/,
device_proto/, upstream/, store/, util/, bench/; every header they include is checked through them;
tests/ are left out to keep `make test` short), drops the accessors, prints the rest as
file:line: kind 'name' and exits 1 if there are any. --export-renames writes the names to rename
(one per line).
"""
import argparse
import json
import os
import re
import subprocess
import sys

WARNING = re.compile(r"^(?P<file>[^:\s]+):(?P<line>\d+):\d+: warning: invalid case style for "
                     r"(?P<kind>[a-z ]+) '(?P<name>[A-Za-z0-9_]+)' \[readability-identifier-naming\]")
ANSI = re.compile(r"\x1b\[[0-9;]*m")
# Names the standard library calls by name (allocators, containers, hashers): a type that is used
# as one keeps them.
STANDARD = {"allocate", "deallocate", "value_type", "size_type", "iterator", "const_iterator",
            "begin", "end", "size", "empty", "data", "swap", "clear"}


def declaration(path, line):
    """The declaration starting at line (1-based) up to its body or semicolon."""
    with open(path, encoding="utf-8", errors="replace") as f:
        lines = f.read().split("\n")
    text = ""
    for l in lines[line - 1:line + 5]:
        text += l + "\n"
        if "{" in l or ";" in l:
            break
    return text


def is_accessor(name, decl):
    if re.search(r"\b" + name + r"\s*\(\s*\)\s*const\b", decl):
        return True  # a const query without parameters
    if re.search(r"\b" + name + r"\s*\(\s*\)\s*(noexcept\s*)?\{\s*return\s+[*&]?\w+_\s*;", decl):
        return True  # returns a member
    m = re.search(r"\bset_\w+\s*\(([^()]*)\)", decl)
    if name.startswith("set_") and m and m.group(1).strip() and "," not in m.group(1):
        return True  # the mutator of an accessor
    return False


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("build_dir")
    ap.add_argument("-j", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--export-renames")
    args = ap.parse_args()
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    db = os.path.join(args.build_dir, "compile_commands.json")
    rooms = ("gateway", "device_proto", "upstream", "store", "util", "bench")
    units = sorted({u["file"] for u in json.load(open(db))
                    if os.path.relpath(os.path.abspath(u["file"]), root).split(os.sep)[0] in rooms})
    cmd = ["run-clang-tidy", "-quiet", "-j", str(args.j), "-p", args.build_dir] + units
    out = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True).stdout
    found = {}
    for raw in out.split("\n"):
        m = WARNING.match(ANSI.sub("", raw))
        if not m:
            continue
        path = os.path.realpath(m["file"])
        key = (path, int(m["line"]), m["name"])
        if key in found:
            continue
        found[key] = m["kind"]
    bad = []
    for (path, line, name), kind in sorted(found.items()):
        if name in STANDARD or (kind.endswith("method") and is_accessor(name, declaration(path, line))):
            continue
        bad.append((os.path.relpath(path, root), line, kind, name))
    for path, line, kind, name in bad:
        print(f"{path}:{line}: {kind} '{name}' is not PascalCase (accessors excepted: docs/architecture.md, Naming)")
    if args.export_renames:
        with open(args.export_renames, "w") as f:
            f.write("".join(sorted({n + "\n" for _, _, _, n in bad})))
    if "error:" in out and not found and not bad:
        print(out[-4000:], file=sys.stderr)
        return 2
    print(f"naming: {len(units)} units, {len(bad)} name(s) against the convention", file=sys.stderr)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
