#!/bin/sh
# fuzz.sh: the fuzz targets in make check, as TAP.
#
# Always: replay every input kept under tests/corpus/NAME/ (seeds and the
# reproducers of crashes found so far) through tests/fuzz_replay_NAME, a
# plain build of the target.  When configure found a clang that takes
# -fsanitize=fuzzer (PUBRELAY_FUZZ=yes): run each libFuzzer target for
# PUBRELAY_FUZZ_SECONDS (default 20) from that corpus; a crash, leak or
# timeout fails the test and leaves the reproducer in tests/fuzz-crashes/.
# Without it the fuzz runs skip, or fail when PUBRELAY_REQUIRE_ALL is set
# (scripts/test.sh, .ci/run): scripts/install-deps.sh installs clang and
# libclang-rt-14-dev.
set -u

srcdir=${PUBRELAY_SRCDIR:-.}
builddir=${PUBRELAY_BUILDDIR:-.}
secs=${PUBRELAY_FUZZ_SECONDS:-20}
targets="protocol config"

echo "1..4"
n=0
for t in $targets; do
	n=$((n + 1))
	out=$("$builddir/tests/fuzz_replay_$t" -q "$srcdir/tests/corpus/$t" 2>&1)
	rc=$?
	if [ $rc -eq 0 ]; then
		echo "ok $n - replay tests/corpus/$t: $(echo "$out" | tail -1)"
	else
		echo "$out" | tail -40 | sed 's/^/# /'
		echo "not ok $n - replay tests/corpus/$t (exit $rc)"
	fi
done

for t in $targets; do
	n=$((n + 1))
	if [ "${PUBRELAY_FUZZ:-no}" != yes ]; then
		# A build machine without clang skips them, unless told that
		# nothing may skip (scripts/test.sh, .ci/run).
		echo "# configure found no clang that builds -fsanitize=fuzzer:" \
		    "scripts/install-deps.sh installs clang and" \
		    "libclang-rt-14-dev; then run configure again"
		case ${PUBRELAY_REQUIRE_ALL:-} in
		''|0) echo "ok $n - fuzz_$t # SKIP no libFuzzer (clang)" ;;
		*) echo "not ok $n - fuzz_$t not run: no libFuzzer" \
		    "(PUBRELAY_REQUIRE_ALL is set: nothing may skip)" ;;
		esac
		continue
	fi
	work=$(mktemp -d "${TMPDIR:-/tmp}/pubrelay-fuzz-$t.XXXXXX")
	crashes="$builddir/tests/fuzz-crashes"
	mkdir -p "$crashes"
	dict=""
	[ -f "$srcdir/tests/fuzz_$t.dict" ] && dict="-dict=$srcdir/tests/fuzz_$t.dict"
	# New inputs go to the scratch dir ($work), not into the repository.
	"$builddir/tests/fuzz_$t" -max_total_time="$secs" -timeout=10 \
	    -rss_limit_mb=2048 -print_final_stats=1 \
	    -artifact_prefix="$crashes/$t-" $dict \
	    "$work" "$srcdir/tests/corpus/$t" </dev/null >"$work.log" 2>&1
	rc=$?
	runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$work.log")
	if [ $rc -eq 0 ]; then
		echo "ok $n - fuzz_$t for ${secs}s (${runs:-?} runs)"
	else
		tail -60 "$work.log" | sed 's/^/# /'
		echo "# reproducer in $crashes/; fix the bug, then keep the input" \
		    "as tests/corpus/$t/crash-<what> (replayed by every make check)"
		echo "not ok $n - fuzz_$t found a crash, leak or timeout (exit $rc)"
	fi
	rm -rf "$work" "$work.log"
done
