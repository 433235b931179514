# Shared helpers for the build scripts in cpython-patch/ (sourced, not run).
# Expects $here to be the cpython-patch directory.

die() { printf 'error: %s\n' "$*" >&2; exit 1; }
say() { printf '==> %s\n' "$*" >&2; }

# The patch files named by the series, in order (comments and blanks dropped).
series_patches() {
    sed -e 's/#.*//' -e 's/[[:space:]]*$//' "$here/series" | grep -v '^$' || true
}

tarball_sha() { sed -n 's/^SHA256=//p' "$here/fetch-cpython.sh"; }

# A digest of everything a patched tree is made from: the tarball, the series
# and each patch.  A tree whose recorded stamp differs must be re-made.
series_stamp() {
    local p
    for p in $(series_patches); do
        [ -f "$here/$p" ] || die "cpython-patch/series names $p, which does not exist"
    done
    {
        tarball_sha
        cat "$here/series"
        series_patches | while IFS= read -r p; do
            printf '%s  %s\n' "$(sha256sum < "$here/$p" | cut -d' ' -f1)" "$p"
        done
    } | sha256sum | cut -d' ' -f1
}

# git with a fixed identity, for commits the build makes in its own trees.
git_in() {
    git -C "$1" -c user.name=micro-thread-build -c user.email=build@micro-thread.invalid \
        -c commit.gpgsign=false -c core.autocrlf=false "${@:2}"
}
