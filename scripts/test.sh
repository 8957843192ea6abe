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

# Here every suite runs: one that would skip for want of root, RabbitMQ,
# systemd or a tool (as on a package build machine) fails instead.
PUBRELAY_REQUIRE_ALL=1
export PUBRELAY_REQUIRE_ALL

# The suite needs root: the failure scenarios mount small tmpfs file
# systems, allow_lists runs clients as other users.  As another user the
# build above stays that user's and only the check runs under sudo; the files
# it leaves in the tree are given back afterwards.
status=0
if [ "$(id -u)" -eq 0 ]; then
	make -s check VERBOSE=1 || status=$?
elif command -v sudo >/dev/null 2>&1; then
	# sudo resets the environment: pass on the suite's own variables
	set --
	for v in PUBRELAY_REQUIRE_ALL PUBRELAY_KEEP_TMP PUBRELAY_FUZZ_SECONDS PUBRELAY_SOAK_SECONDS \
	    PUBRELAY_SOAK_SEED TMPDIR; do
		eval "val=\${$v-}; isset=\${$v+y}"
		[ -z "$isset" ] || set -- "$@" "$v=$val"
	done
	sudo env "$@" make -s check VERBOSE=1 || status=$?
	sudo chown -R "$(id -u):$(id -g)" . || status=1
else
	echo "test.sh: the test suite needs root (it mounts tmpfs file systems" \
	    "and runs clients as other users): run it as root or with sudo" >&2
	exit 1
fi

# One closing line any CI reader understands.
if [ -f test-suite.log ]; then
	pass=$(sed -n 's/^# PASS: *//p' test-suite.log | head -1)
	fail=$(sed -n 's/^# FAIL: *//p' test-suite.log | head -1)
	error=$(sed -n 's/^# ERROR: *//p' test-suite.log | head -1)
	skip=$(sed -n 's/^# SKIP: *//p' test-suite.log | head -1)
	echo "${pass:-0} passed, $(( ${fail:-0} + ${error:-0} )) failed, ${skip:-0} skipped"
fi
exit $status
