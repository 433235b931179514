#!/bin/sh
# pyperf-rounds.sh ROUNDS "PYPERF OPTIONS" RESULTS NAME PYTHON SCRIPT [NAME PYTHON SCRIPT...]
#
# Run each pyperf SCRIPT with PYTHON ROUNDS times, the scripts interleaved
# round by round.  Each round writes its own file, whose runs are then added
# to RESULTS/NAME.json.tmp; at the end each NAME.json.tmp becomes NAME.json
# (pyperf refuses to overwrite a result file, and a half-done run leaves the
# old result alone).
#
# Another session may be rebuilding the interpreter (its binary briefly
# missing): wait for it, and retry a round that failed, up to 3 tries (a
# failed try adds nothing: its round file is thrown away).
set -e
rounds=$1 opts=$2 results=$3
shift 3
here=$(dirname "$0")
mkdir -p "$results"

set_triples() { triples="$*"; }
set_triples "$@"

# Start afresh.
set -- $triples
while [ $# -ge 3 ]; do rm -f "$results/$1.json.tmp" "$results/$1.round.json"; shift 3; done

round=1
while [ "$round" -le "$rounds" ]; do
	set -- $triples
	while [ $# -ge 3 ]; do
		name=$1 py=$2 script=$3
		shift 3
		echo "==> $script on $py, round $round/$rounds ($opts) -> $results/$name.json"
		try=1
		part="$results/$name.round.json"
		until sh "$here/wait-python.sh" "$py" && rm -f "$part" &&
		      "$py" "$here/$script" $opts -o "$part"; do
			if [ "$try" -ge 3 ]; then
				echo "==> $script failed 3 times" >&2
				exit 1
			fi
			try=$((try + 1))
			echo "==> $script failed; retrying (try $try of 3)" >&2
			sleep 10
		done
		"$py" -c 'import sys, pyperf
pyperf.add_runs(sys.argv[1], pyperf.BenchmarkSuite.load(sys.argv[2]))' \
			"$results/$name.json.tmp" "$part"
		rm -f "$part"
	done
	round=$((round + 1))
done

set -- $triples
while [ $# -ge 3 ]; do mv "$results/$1.json.tmp" "$results/$1.json"; shift 3; done
