#!/bin/sh
# abi.sh: libpubrelay's ABI, as TAP.  The library built in the build tree
# (.libs/libpubrelay.so.0) has the soname libpubrelay.so.0; the functions it
# exports (nm -D --defined-only) are exactly those lib/libpubrelay.sym lists
# and exactly those lib/pubrelay.h declares, each of version PUBRELAY_0;
# the header compiles on its own as C99 and as C++; pubrelay.pc is valid;
# the static libpubrelay.a, which no version script hides, defines only
# names that start with pubrelay_.
# libpubrelay(3), section ABI, says why and how they may change.
set -u

srcdir=${PUBRELAY_SRCDIR:-$(dirname "$0")/..}
builddir=${PUBRELAY_BUILDDIR:-.}
lib=$builddir/.libs/libpubrelay.so.0
CC=${CC:-cc}
tmp=$(mktemp -d "${TMPDIR:-/tmp}/pubrelay-abi.XXXXXX")
trap 'rm -rf "$tmp"' EXIT INT TERM

echo "1..8"
n=0
failed=0
res() {	# res OK|FAIL text
	n=$((n + 1))
	if [ "$1" = OK ]; then
		echo "ok $n - $2"
	else
		echo "not ok $n - $2"
		failed=1
	fi
}

if [ -f "$lib" ]; then
	res OK "$lib exists"
else
	res FAIL "$lib: missing (build with make first)"
fi

soname=$(readelf -d "$lib" 2>/dev/null | sed -n 's/.*(SONAME).*\[\(.*\)\]/\1/p')
if [ "$soname" = libpubrelay.so.0 ]; then
	res OK "soname is libpubrelay.so.0"
else
	res FAIL "soname is '$soname', want libpubrelay.so.0"
fi

# What the library exports: functions (and nothing else but the version
# node's own absolute symbol).
nm -D --defined-only "$lib" >"$tmp/nm" 2>&1 || true
awk '$2 != "A" { print $3 }' "$tmp/nm" | sort >"$tmp/exported"
sed 's/@.*//' "$tmp/exported" >"$tmp/exported.names"
# What the version script lists as global.
sed -e 's,/\*.*,,' -e 's,^ \*.*,,' "$srcdir/lib/libpubrelay.sym" |
    awk '/global:/ { g = 1; next } /local:/ { g = 0 } g' |
    tr -d ' \t;' | grep . | sort >"$tmp/sym"
# What the header declares: comments and macros gone, each name before "(".
$CC -E -P -I"$srcdir/lib" "$srcdir/lib/pubrelay.h" 2>/dev/null |
    grep -o '\bpubrelay_[a-z_]*[ \t]*(' | tr -d ' \t(' | sort -u >"$tmp/hdr"

if [ -s "$tmp/exported.names" ] && cmp -s "$tmp/exported.names" "$tmp/sym"; then
	res OK "exported = the version script ($(wc -l <"$tmp/sym") functions)"
else
	echo "# exported (<) against libpubrelay.sym (>):"
	diff "$tmp/exported.names" "$tmp/sym" | sed 's/^/# /'
	res FAIL "exported symbols differ from the version script"
fi

if [ -s "$tmp/hdr" ] && cmp -s "$tmp/hdr" "$tmp/sym"; then
	res OK "the version script = the functions pubrelay.h declares"
else
	echo "# pubrelay.h (<) against libpubrelay.sym (>):"
	diff "$tmp/hdr" "$tmp/sym" | sed 's/^/# /'
	res FAIL "pubrelay.h and the version script differ"
fi

bad=$(grep -v '@@PUBRELAY_0$' "$tmp/exported" || true)
if [ -s "$tmp/exported" ] && [ -z "$bad" ] &&
    grep -q ' A PUBRELAY_0$' "$tmp/nm"; then
	res OK "every exported function has the version PUBRELAY_0"
else
	echo "# without @@PUBRELAY_0: $bad"
	res FAIL "symbol versions"
fi

printf '#include <pubrelay.h>\nint main(void) { return pubrelay_strerror(0) == 0; }\n' \
    >"$tmp/h.c"
if $CC -std=c99 -pedantic -Wall -Wextra -Werror -I"$srcdir/lib" -c \
    "$tmp/h.c" -o "$tmp/h.o" >"$tmp/cc.log" 2>&1 &&
    { ! command -v c++ >/dev/null ||
    c++ -x c++ -Wall -Wextra -Werror -I"$srcdir/lib" -c "$tmp/h.c" \
    -o "$tmp/hpp.o" >>"$tmp/cc.log" 2>&1; }; then
	res OK "pubrelay.h compiles alone, as C99 and as C++"
else
	sed 's/^/# /' "$tmp/cc.log"
	res FAIL "pubrelay.h does not compile alone"
fi

pc=$builddir/lib/pubrelay.pc
libs=$(PKG_CONFIG_PATH=$builddir/lib pkg-config --libs pubrelay 2>&1)
if [ -f "$pc" ] && PKG_CONFIG_PATH=$builddir/lib pkg-config --validate \
    pubrelay && case " $libs " in *" -lpubrelay "*) true ;; *) false ;; esac
then
	res OK "pubrelay.pc: pkg-config --libs pubrelay is '$libs'"
else
	echo "# pkg-config --libs pubrelay: ${libs:-(none)}"
	res FAIL "pubrelay.pc"
fi
archive=$builddir/.libs/libpubrelay.a
nm --defined-only -g "$archive" 2>/dev/null |
    awk 'NF == 3 { print $3 }' | sort -u >"$tmp/static"
stray=$(grep -v '^pubrelay_' "$tmp/static" || true)
if [ ! -f "$archive" ] && grep -q "^old_library=''" \
    "$builddir/libpubrelay.la" 2>/dev/null; then
	res OK "no libpubrelay.a (configured with --disable-static)"
elif [ -s "$tmp/static" ] && [ -z "$stray" ]; then
	res OK "libpubrelay.a: $(wc -l <"$tmp/static") global names, all pubrelay_*"
else
	echo "# outside pubrelay_*: ${stray:-(no archive at $archive)}"
	res FAIL "libpubrelay.a's global names"
fi
exit $failed
