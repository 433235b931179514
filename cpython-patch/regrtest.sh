#!/usr/bin/env bash
# Run CPython's whole regression suite on the patched and the stock
# interpreter, and fail only on tests that fail on the patched one alone.
#
#   regrtest.sh BUILD [regrtest args...]     (default args: -j$JOBS)
set -uo pipefail

here=$(cd "$(dirname "$0")" && pwd)
. "$here/lib.sh"
build=$(cd "${1:?usage: regrtest.sh BUILD [args]}" && pwd)
shift
args=("$@")
[ ${#args[@]} -gt 0 ] || args=(-j"${JOBS:-2}")
logs=$build/regrtest
mkdir -p "$logs"

# A job started in the background by a non-interactive shell inherits SIGINT
# ignored; Python then installs no KeyboardInterrupt handler and every test
# of Ctrl-C fails (test_signal, test_threading hangs, ...).  Run the suite
# with SIGINT and SIGQUIT at their defaults, as from a terminal.
with_default_signals() {
    "$build/python" -c 'import os, signal, sys
for sig in (signal.SIGINT, signal.SIGQUIT):
    signal.signal(sig, signal.SIG_DFL)
os.execv(sys.argv[1], sys.argv[1:])' "$@"
}

run() {  # run NAME PYTHON
    say "regrtest on $1 ($2 -m test ${args[*]} --timeout 1200 -w); log: $logs/$1.log"
    # -w re-runs failures once, so a test only counts when it fails twice.
    with_default_signals "$2" -m test "${args[@]}" --timeout 1200 -w > "$logs/$1.log" 2>&1
    tail -4 "$logs/$1.log" | sed 's/^/    /' >&2
}
run patched "$build/python"
run stock "$build/python-stock"

"$build/python" "$here/regrtest-compare.py" "$logs/stock.log" "$logs/patched.log"
