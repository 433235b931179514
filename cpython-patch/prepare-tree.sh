#!/usr/bin/env bash
# Make (or refresh) a CPython source tree under the build directory.
#
#   prepare-tree.sh patched BUILD   -> BUILD/src: pristine 3.13.5 + cpython-patch/series
#                                      + this repository's new files
#   prepare-tree.sh stock BUILD     -> BUILD/stock-src: pristine 3.13.5
#
# BUILD/src is a git repository: commit "pristine" plus one commit per patch,
# so edits made there can be turned back into patches (regen-patches.sh).
# A tree is only ever made in a temporary directory and moved into place once
# complete, so a failed step never leaves a tree that a later run would trust.
# When the patches change, the patched tree is re-made from pristine (and the
# patched object directories are wiped, so no stale object survives) -- unless
# the tree holds edits that are not saved as patches, which are never thrown
# away silently.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
repo=$(dirname "$here")
kind=${1:?usage: prepare-tree.sh patched|stock BUILD}
build=${2:?usage: prepare-tree.sh patched|stock BUILD}
mkdir -p "$build"
build=$(cd "$build" && pwd)

. "$here/lib.sh"

# The new files this repository adds to CPython, relative to the tree root.
OVERLAY_DIRS=(Include Lib Modules Objects Python Doc)

overlay_files() {
    (cd "$repo" && git ls-files --cached --others --exclude-standard -- "${OVERLAY_DIRS[@]}" 2>/dev/null \
        | while IFS= read -r f; do [ -f "$f" ] && printf '%s\n' "$f"; done) \
        | grep -v -E '(^|/)__pycache__/|\.py[co]$' | LC_ALL=C sort || true
}

unpack() {  # unpack DEST: pristine sources into DEST (which must not exist)
    local tarball
    tarball=$("$here/fetch-cpython.sh")
    say "unpacking $(basename "$tarball") into $1"
    mkdir -p "$1"
    tar -xJf "$tarball" -C "$1" --strip-components=1
}

if [ "$kind" = stock ]; then
    src=$build/stock-src
    stamp="stock $(tarball_sha)"
    if [ -f "$src.stamp" ] && [ "$(cat "$src.stamp")" = "$stamp" ] && [ -d "$src" ]; then
        exit 0
    fi
    rm -rf "$src" "$src.stamp" "$build/stock" "$build/.stock-src.tmp"
    unpack "$build/.stock-src.tmp"
    mv "$build/.stock-src.tmp" "$src"
    printf '%s\n' "$stamp" > "$src.stamp"
    exit 0
fi
[ "$kind" = patched ] || die "unknown tree kind '$kind' (patched or stock)"

src=$build/src

# What the tree must be made of: the tarball, the series and every patch in it.
series_stamp >/dev/null  # fails here, loudly, on a broken series
stamp=$(series_stamp)

if [ -d "$src/.git" ] && [ "$(cat "$src/.git/mt-stamp" 2>/dev/null)" = "$stamp" ]; then
    : # up to date; only the new files need syncing
else
    if [ -d "$src/.git" ]; then
        dirty=$(git_in "$src" status --porcelain --untracked-files=no)
        moved=""
        [ "$(git_in "$src" rev-parse HEAD)" = "$(cat "$src/.git/mt-head" 2>/dev/null)" ] || moved=yes
        if [ -n "$dirty" ] || [ -n "$moved" ]; then
            die "cpython-patch/ changed, but $src holds edits that are not saved as patches:
$(git_in "$src" status --short --untracked-files=no | head -20)
Fix: save them with 'make patches' (commit them in $src first, see cpython-patch/README.md),
     or throw them away with 'make reset-tree'."
        fi
        say "cpython-patch/ changed: re-making $src from pristine"
    elif [ -e "$src" ]; then
        say "$src is not a tree made by this build: re-making it"
    fi
    tmp=$build/.src.tmp
    rm -rf "$tmp"
    trap 'rm -rf "$tmp"' EXIT
    unpack "$tmp"
    git_in "$tmp" init -q -b micro-threads
    git_in "$tmp" add -A
    git_in "$tmp" commit -q -m "Pristine CPython 3.13.5"
    git_in "$tmp" tag pristine
    n=0
    while IFS= read -r p; do
        n=$((n + 1))
        say "applying $p"
        if ! out=$(git_in "$tmp" am --keep-cr -q "$here/$p" 2>&1); then
            # git's advice (git am --continue ...) is for a tree that is
            # about to be deleted: keep only what failed.
            die "cpython-patch/$p no longer applies to CPython 3.13.5:
$(printf '%s\n' "$out" | grep -E '^(error|Patch failed)')
Fix: rebase the patch on the tree of the patches before it (see cpython-patch/README.md)."
        fi
    done < <(series_patches)
    say "applied $n patch(es)"
    printf '%s\n' '__pycache__/' '*.pyc' > "$tmp/.git/info/exclude"
    git_in "$tmp" rev-parse HEAD > "$tmp/.git/mt-head"
    printf '%s\n' "$stamp" > "$tmp/.git/mt-stamp"
    rm -rf "$src"
    # object directories built from an older tree may hold objects newer than
    # the re-made sources (tar keeps the release's mtimes): never reuse them
    for v in release debug asan; do rm -rf "${build:?}/$v"; done
    mv "$tmp" "$src"
    trap - EXIT
fi

# Copy this repository's new files in (only those that changed, so make
# rebuilds only what depends on them), and remove ones deleted since.
new_list=$(overlay_files)
old_list=$(cat "$src/.git/mt-overlay" 2>/dev/null || true)
while IFS= read -r f; do
    [ -n "$f" ] || continue
    if git_in "$src" ls-files --error-unmatch -- "$f" >/dev/null 2>&1; then
        die "$f exists in CPython (or is added by a patch): change it with a patch in
cpython-patch/, not with a copy of the whole file."
    fi
    if ! cmp -s "$repo/$f" "$src/$f"; then
        mkdir -p "$(dirname "$src/$f")"
        cp "$repo/$f" "$src/$f"
    fi
done <<< "$new_list"
comm -23 <(printf '%s\n' "$old_list") <(printf '%s\n' "$new_list") | while IFS= read -r f; do
    if [ -n "$f" ]; then rm -f "$src/$f"; fi
done
printf '%s\n' "$new_list" > "$src/.git/mt-overlay"
{ printf '%s\n' '__pycache__/' '*.pyc'; printf '/%s\n' $new_list; } > "$src/.git/info/exclude"
