#!/bin/sh
# Set up a fresh Debian 12 machine and run the whole test suite:
# packages, build (warnings are errors here), unit and integration tests.
set -eu
cd "$(dirname "$0")/.."

./scripts/install-deps.sh
if [ ! -x configure ] || [ configure.ac -nt configure ] || [ Makefile.am -nt Makefile.in ]; then
	autoreconf -fi >/dev/null
fi
if [ ! -f Makefile ] || [ configure -nt Makefile ]; then
	./configure -q CFLAGS="${CFLAGS:--O2 -g -Werror}"
fi
make -s -j"$(nproc)"

status=0
make -s check VERBOSE=1 || status=$?

# One closing line any CI reader understands.
if [ -f test-suite.log ]; then
	pass=$(sed -n 's/^# PASS: *//p' test-suite.log | head -1)
	fail=$(sed -n 's/^# FAIL: *//p' test-suite.log | head -1)
	error=$(sed -n 's/^# ERROR: *//p' test-suite.log | head -1)
	skip=$(sed -n 's/^# SKIP: *//p' test-suite.log | head -1)
	echo "${pass:-0} passed, $(( ${fail:-0} + ${error:-0} )) failed, ${skip:-0} skipped"
fi
exit $status
