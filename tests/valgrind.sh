#!/bin/sh
# valgrind.sh: the unit tests, and the integration suites with pubrelayd
# running under valgrind's memcheck, as TAP (`make check-valgrind`).
#
# memcheck sees what the sanitizer build does not: reads of uninitialised
# memory (a branch on a field never set), in the plain -O2 build that ships.
# Each unit test runs under valgrind directly; for the Python suites
# PUBRELAYD points at a wrapper that execs the daemon under valgrind (same
# pid, so the harness's signals reach it), one log file per daemon process.
# A test fails when its suite fails or when any valgrind log of it is not
# empty (an error, or a definite leak at exit).  Daemons the tests kill
# with SIGKILL leave no leak report, only the errors seen until then.
#
# Arguments: the suites to run (default: unit integration failures cluster
# tls); PUBRELAY_VALGRIND_ARGS adds options to valgrind.
set -u

srcdir=${PUBRELAY_SRCDIR:-.}
builddir=${PUBRELAY_BUILDDIR:-.}
suites=${*:-unit integration failures cluster tls}
# The unit tests: Makefile.am's UNIT_TESTS (make check-valgrind passes it).
unit=$(for t in ${PUBRELAY_UNIT_TESTS:-}; do basename "$t"; done)
if [ -z "$unit" ]; then
	echo "1..1"
	echo "not ok 1 - PUBRELAY_UNIT_TESTS is empty: run make check-valgrind"
	exit 1
fi

if ! command -v valgrind >/dev/null 2>&1; then
	# Not a pass without having looked: scripts/install-deps.sh has it.
	echo "1..1"
	echo "not ok 1 - valgrind is not installed (scripts/install-deps.sh)"
	exit 1
fi
work=$(mktemp -d "${TMPDIR:-/tmp}/pubrelay-valgrind.XXXXXX") || exit 1
trap 'rm -rf "$work"' EXIT INT TERM
# Only definite leaks are errors, and only they are shown: "possibly lost"
# blocks are what a daemon leaving a stuck thread behind (_exit at a stuck
# shutdown) still points into, and a shown block makes the log non-empty.
vg="valgrind -q --error-exitcode=99 --leak-check=full \
--errors-for-leak-kinds=definite --show-leak-kinds=definite \
--track-origins=yes ${PUBRELAY_VALGRIND_ARGS:-}"

daemon=${PUBRELAYD:-$builddir/pubrelayd}
case $daemon in /*) ;; *) daemon=$(pwd)/$daemon ;; esac
cat >"$work/pubrelayd" <<EOF
#!/bin/sh
exec $vg --log-file="$work/logs/\$SUITE.%p" "$daemon" "\$@"
EOF
chmod +x "$work/pubrelayd"
mkdir "$work/logs"
# A scenario runs a daemon as nobody (socket_in_place): it must reach the
# wrapper and write its log.
chmod 755 "$work"
chmod 1777 "$work/logs"

count=0
for s in $suites; do
	if [ "$s" = unit ]; then
		count=$((count + $(echo $unit | wc -w)))
	else
		count=$((count + 1))
	fi
done
echo "1..$count"

n=0
failed=0
report() {	# name, exit status, logs glob
	n=$((n + 1))
	bad=
	for f in $3; do
		[ -s "$f" ] && bad="$bad $f"
	done
	if [ "$2" -eq 0 ] && [ -z "$bad" ]; then
		echo "ok $n - valgrind: $1"
	else
		for f in $bad; do
			head -40 "$f" | sed 's/^/# /'
		done
		echo "not ok $n - valgrind: $1 (exit $2${bad:+, memcheck reports})"
		failed=1
	fi
}

for s in $suites; do
	if [ "$s" = unit ]; then
		for t in $unit; do
			$vg --log-file="$work/logs/$t" \
			    "$builddir/tests/$t" >"$work/$t.out" 2>&1
			rc=$?
			[ $rc -eq 0 ] || tail -20 "$work/$t.out" | sed 's/^/# /'
			report "tests/$t" $rc "$work/logs/$t"
		done
		continue
	fi
	SUITE=$s PUBRELAYD="$work/pubrelayd" /usr/bin/python3 \
	    "$srcdir/tests/$s.py" >"$work/$s.out" 2>&1
	rc=$?
	[ $rc -eq 0 ] || grep -E '^not ok|FAILED' "$work/$s.out" | head -20 |
	    sed 's/^/# /'
	echo "# $s: $(grep -c '^ok' "$work/$s.out") scenarios passed," \
	    "$(ls "$work/logs" | grep -c "^$s\.") daemon runs"
	report "tests/$s.py" $rc "$work/logs/$s.*"
done
exit $failed
