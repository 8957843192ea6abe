#!/bin/sh
# skips.sh: a suite on a machine without what it needs skips as a whole,
# saying why, and fails instead when PUBRELAY_REQUIRE_ALL is set (as
# scripts/test.sh and .ci/run set it).  As TAP.  pid1.py stands for them
# all (harness.lacking(), scenarios.run()'s needs): run without root it
# lacks root.  As root the check drops to nobody with setpriv.
set -u
srcdir=${PUBRELAY_SRCDIR:-$(dirname "$0")/..}
: "${PUBRELAYD:?PUBRELAYD is not set}" "${PUBRELAY:?PUBRELAY is not set}"

# pid1.py as a user without root, in a directory that user may enter.
asuser() {
	if [ "$(id -u)" -eq 0 ]; then
		(cd / && setpriv --reuid=65534 --regid=65534 --clear-groups -- \
		    env HOME=/ "$@")
	else
		"$@"
	fi
}
tmp=$(mktemp -d "${TMPDIR:-/tmp}/pubrelay-skips.XXXXXX")
chmod 755 "$tmp"
trap 'rm -rf "$tmp"' EXIT INT TERM
cp "$srcdir"/tests/pid1.py "$srcdir"/tests/harness.py \
    "$srcdir"/tests/scenarios.py "$tmp"/
chmod 644 "$tmp"/*.py

echo "1..2"
out=$(asuser env -u PUBRELAY_REQUIRE_ALL TMPDIR="$tmp" PUBRELAYD="$PUBRELAYD" \
    PUBRELAY="$PUBRELAY" /usr/bin/python3 "$tmp/pid1.py" 2>&1)
rc=$?
if [ $rc -eq 0 ] && [ "$(echo "$out" | head -1)" = \
    "1..0 # SKIP pid1.py needs root" ]; then
	echo "ok 1 - without root and without PUBRELAY_REQUIRE_ALL: skipped, saying why"
else
	echo "$out" | sed 's/^/# /'
	echo "not ok 1 - without root: want a skip with its reason (exit $rc)"
fi
out=$(asuser env PUBRELAY_REQUIRE_ALL=1 TMPDIR="$tmp" PUBRELAYD="$PUBRELAYD" \
    PUBRELAY="$PUBRELAY" /usr/bin/python3 "$tmp/pid1.py" 2>&1)
rc=$?
case $rc:$out in
1:"Bail out! pid1.py needs root (PUBRELAY_REQUIRE_ALL is set"*)
	echo "ok 2 - with PUBRELAY_REQUIRE_ALL=1 the same skip fails" ;;
*)	echo "$out" | sed 's/^/# /'
	echo "not ok 2 - with PUBRELAY_REQUIRE_ALL=1: want a failure (exit $rc)" ;;
esac
