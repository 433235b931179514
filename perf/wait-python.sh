#!/bin/sh
# wait-python.sh PYTHON: wait (up to 10 minutes) until PYTHON runs.  The
# interpreter may be being rebuilt by another session (its binary briefly
# missing or half-written).
py=$1
i=0
until "$py" -c "import sys" >/dev/null 2>&1; do
	i=$((i + 1))
	if [ "$i" -gt 120 ]; then
		echo "$py does not run (waited 10 minutes)" >&2
		exit 1
	fi
	[ "$i" -eq 1 ] && echo "==> waiting for $py (being rebuilt?)" >&2
	sleep 5
done
