#!/usr/bin/env bash
# Configure and build one variant of the interpreter out of tree.
#
#   build.sh VARIANT BUILD      VARIANT: release | debug | asan | stock
#
# release, debug and asan are built from BUILD/src (patched); stock from
# BUILD/stock-src (pristine) with exactly the release flags.  The result is
# linked as BUILD/python (release), BUILD/python-debug, BUILD/python-asan or
# BUILD/python-stock.  Re-running only rebuilds what changed.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
. "$here/lib.sh"
variant=${1:?usage: build.sh release|debug|asan|stock BUILD}
mkdir -p "${2:?usage: build.sh VARIANT BUILD}"
build=$(cd "$2" && pwd)
jobs=${JOBS:-$(nproc 2>/dev/null || echo 2)}

case $variant in
    release) src=$build/src;       flags=();                     link=python ;;
    debug)   src=$build/src;       flags=(--with-pydebug);       link=python-debug ;;
    asan)    src=$build/src;       flags=(--with-address-sanitizer --without-pymalloc --with-pydebug)
                                                                  link=python-asan ;;
    stock)   src=$build/stock-src; flags=();                     link=python-stock ;;
    *) die "unknown variant '$variant' (release, debug, asan or stock)" ;;
esac
obj=$build/$variant

cc=${CC:-cc}
command -v "${cc%% *}" >/dev/null 2>&1 || die "no C compiler ('$cc' not found).
Fix: install one (Debian/Ubuntu: apt-get install build-essential), or set CC."
command -v make >/dev/null 2>&1 || die "make is not installed. Fix: apt-get install make"
command -v git >/dev/null 2>&1 || die "git is not installed (the build keeps its tree in git). Fix: apt-get install git"

if [ "$variant" = stock ]; then
    "$here/prepare-tree.sh" stock "$build"
else
    "$here/prepare-tree.sh" patched "$build"
fi

mkdir -p "$obj"
want="${flags[*]:-}"
if [ ! -f "$obj/Makefile" ] || [ "$(cat "$obj/.mt-configure" 2>/dev/null)" != "$want" ]; then
    say "configuring $variant build in $obj (${want:-default flags}; log: $obj/configure.log)"
    if ! (cd "$obj" && "$src/configure" ${flags[@]+"${flags[@]}"} > configure.log 2>&1); then
        tail -25 "$obj/configure.log" >&2
        rm -f "$obj/Makefile"
        die "configure failed for the $variant build (full log: $obj/configure.log)"
    fi
    printf '%s\n' "$want" > "$obj/.mt-configure"
fi

# sys.version names the tree's commit; CPython's default runs git with the
# object directory as work tree, which always reads as "-dirty".
git_tag=()
[ -d "$src/.git" ] && git_tag=("GITTAG=git -C $src describe --all --always --dirty")
say "building $variant interpreter with $jobs jobs (log: $obj/build.log)"
# Show one line per compiled file, every error, and the warnings in this
# project's files (stock 3.13.5 has warnings of its own); the rest is in the log.
set +e
make -C "$obj" -j"$jobs" ${git_tag[@]+"${git_tag[@]}"} 2>&1 | tee "$obj/build.log" | awk '
    / -c .*-o [^ ]+\.o/ { n++; for (i = 1; i <= NF; i++) if ($i == "-o") o = $(i+1);
                           printf "  [%4d] CC %s\n", n, o; fflush(); next }
    /error:|Error [0-9]|Failed to build|\*\*\*/ { print; fflush(); next }
    /warning:/ && /micro_?thread/ { print; fflush() }'
status=${PIPESTATUS[0]}
set -e
if [ "$status" -ne 0 ]; then
    die "the $variant build failed (full log: $obj/build.log)"
fi
# A wrapper rather than a symlink: run through it, sys.executable is the real
# binary in the object directory, which is what venv needs to find the stdlib.
rm -f "$build/$link"
printf '#!/bin/sh\nexec "$(dirname "$0")/%s/python" "$@"\n' "$variant" > "$build/$link"
chmod +x "$build/$link"
"$build/$link" -c 'import sys; print("==> built", sys.executable, "--", sys.version.replace(chr(10), " "))' >&2
