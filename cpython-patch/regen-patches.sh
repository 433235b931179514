#!/usr/bin/env bash
# Turn the commits made in BUILD/src on top of pristine CPython back into the
# patch series: one patch per commit, named after its subject, listed in order
# in cpython-patch/series.  Refuses while BUILD/src has uncommitted edits, so
# that what is exported is exactly what was reviewed with 'git log -p'.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
build=${1:?usage: regen-patches.sh BUILD}
src=$(cd "$build" && pwd)/src

. "$here/lib.sh"

[ -d "$src/.git" ] || die "$src does not exist: run 'make' first"
if [ -n "$(git -C "$src" status --porcelain --untracked-files=no)" ]; then
    die "$src has uncommitted edits:
$(git -C "$src" status --short --untracked-files=no | head -20)
Fix: commit them in $src -- as 'git commit --fixup=<commit of the patch>' followed by
     'git rebase -i --autosquash pristine' to change an existing patch, or as a new
     commit to add a patch -- then run 'make patches' again."
fi
untracked=$(git -C "$src" status --porcelain | sed -n 's/^?? //p')
if [ -n "$untracked" ]; then
    printf 'note: untracked files in %s are not exported (new files belong in this\n' "$src" >&2
    printf '      repository'"'"'s Include/ Lib/ Modules/ Objects/ Python/ Doc/):\n%s\n' "$untracked" >&2
fi

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
git -C "$src" format-patch -q --zero-commit --no-signature --keep-subject \
    --no-stat --full-index -o "$tmp" pristine..HEAD

# Replace the old series with the new one.
series_patches | while IFS= read -r p; do rm -f "$here/$p"; done
{
    printf '# Patches against pristine CPython 3.13.5, applied in this order.\n'
    printf '# Made by "make patches" from the commits in build/src; see README.md.\n'
    for p in "$tmp"/*.patch; do
        [ -e "$p" ] || continue
        cp "$p" "$here/"
        basename "$p"
    done
} > "$here/series.new"
mv "$here/series.new" "$here/series"

# The tree now matches the series: record that, so 'make' does not re-make it.
git -C "$src" rev-parse HEAD > "$src/.git/mt-head"
series_stamp > "$src/.git/mt-stamp"
printf 'wrote %s patch(es) to cpython-patch/:\n' "$(grep -vc '^#' "$here/series")"
grep -v '^#' "$here/series" | sed 's/^/  /'
