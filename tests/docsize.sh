#!/bin/sh
# docsize.sh: the size budgets of the hand-written documents, as TAP.
#
# Each document keeps to its budget so that it stays a guide and does not
# grow back into a copy of facts whose home is elsewhere (the scenarios'
# docstrings, the man pages).  One "FILE BYTES" pair per line, FILE relative
# to the source tree; a file over its budget, or missing, fails.
# The budgets are issue #19's; docs/CLIENTS.md's is issue #21's.
set -u

budgets='
README.md 8192
docs/PERFORMANCE.md 12288
docs/DEPLOYMENT.md 25600
tests/README.md 6144
docs/CLIENTS.md 6144
'

srcdir=${PUBRELAY_SRCDIR:-$(dirname "$0")/..}

n=$(printf '%s\n' "$budgets" | grep -c .)
echo "1..$n"
i=0
failed=0
printf '%s\n' "$budgets" | grep . | {
	while read -r file max; do
		i=$((i + 1))
		if [ ! -f "$srcdir/$file" ]; then
			echo "not ok $i - $file: missing (in $srcdir)"
			failed=1
			continue
		fi
		size=$(wc -c < "$srcdir/$file" | tr -d ' ')
		if [ "$size" -le "$max" ]; then
			echo "ok $i - $file: $size bytes (budget $max)"
		else
			echo "# $file is $((size - max)) bytes over its budget:" \
			    "move what is not a guide to its home, or cut"
			echo "not ok $i - $file: $size bytes, over $max"
			failed=1
		fi
	done
	exit $failed
}
