#!/usr/bin/env bash
# Find the pristine CPython 3.13.5 tarball, verify it, and print its path.
#
# Order: $CPYTHON_TARBALL, then the download cache, then python.org (into the
# cache).  Anything whose sha256 is not the release's is refused: a wrong file
# is never unpacked and never left in the cache.
set -euo pipefail

VERSION=3.13.5
NAME=Python-$VERSION.tar.xz
SHA256=93e583f243454e6e9e4588ca2c2662206ad961659863277afcdb96801647d640
URL=https://www.python.org/ftp/python/$VERSION/$NAME
CACHE_DIR=${CPYTHON_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/micro-thread}

die() { printf 'error: %s\n' "$*" >&2; exit 1; }

sha_of() { sha256sum "$1" | cut -d' ' -f1; }

verify() {  # verify FILE WHERE-IT-CAME-FROM
    local got
    got=$(sha_of "$1")
    if [ "$got" != "$SHA256" ]; then
        die "$1 ($2) is not the CPython $VERSION release tarball:
  expected sha256 $SHA256
  got      sha256 $got
Fix: point CPYTHON_TARBALL at the genuine $NAME from python.org, or unset it to download it."
    fi
}

if [ -n "${CPYTHON_TARBALL:-}" ]; then
    [ -f "$CPYTHON_TARBALL" ] || die "CPYTHON_TARBALL=$CPYTHON_TARBALL does not exist.
Fix: set it to the path of $NAME, or unset it to use the cache or download."
    verify "$CPYTHON_TARBALL" "from CPYTHON_TARBALL"
    printf '%s\n' "$(cd "$(dirname "$CPYTHON_TARBALL")" && pwd)/$(basename "$CPYTHON_TARBALL")"
    exit 0
fi

cached=$CACHE_DIR/$NAME
if [ -f "$cached" ]; then
    verify "$cached" "in the download cache; delete it to download again"
    printf '%s\n' "$cached"
    exit 0
fi

mkdir -p "$CACHE_DIR"
partial=$(mktemp "$CACHE_DIR/$NAME.XXXXXX.part")
trap 'rm -f "$partial"' EXIT
echo "==> downloading $URL" >&2
if command -v curl >/dev/null 2>&1; then
    fetch=(curl -fL --retry 2 --connect-timeout 20 -o "$partial" "$URL")
elif command -v wget >/dev/null 2>&1; then
    fetch=(wget -q -O "$partial" "$URL")
else
    die "neither curl nor wget is installed, and no tarball was given.
Fix: install curl (apt-get install curl), or set CPYTHON_TARBALL=/path/to/$NAME."
fi
if ! "${fetch[@]}" >&2; then
    die "could not download $URL (no network?).
Fix: download $NAME elsewhere and set CPYTHON_TARBALL=/path/to/$NAME
     (or put it in $CACHE_DIR/)."
fi
verify "$partial" "downloaded from $URL"
mv "$partial" "$cached"
trap - EXIT
printf '%s\n' "$cached"
