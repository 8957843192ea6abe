#!/bin/bash
# package.sh: build pubrelay's Debian packages from this source tree.
#
#   scripts/package.sh [-o DIR] [--version V] [--nocheck] [--no-deps]
#                      [--no-lintian]
#
# On Debian 12: installs the build dependencies (debian/control) and the
# tools with apt-get when some are missing (sudo when not root), copies the
# tree to a temporary directory (from a git checkout, the files git knows
# plus the untracked ones it does not ignore, uncommitted changes
# included; the developer's own build is neither used nor touched), builds
# the binary packages there with `dpkg-buildpackage -us -uc -b`, runs
# lintian on them (any error or warning fails, overrides aside), and
# copies the .debs, .changes, .buildinfo and the build's log to DIR
# (default: debian-out/ at the top of the tree).
#
#   -o, --out DIR   where the packages go (made if missing; the packages of
#                   an earlier run with the same version are replaced)
#   --version V     build version V: a changelog entry is added in the copy
#                   (e.g. 0.1.0+test1, for upgrade tests)
#   --nocheck       DEB_BUILD_OPTIONS=nocheck: no unit tests in the build
#   --no-deps       install nothing; fail if something is missing
#   --no-lintian    skip lintian
#
# The last line of output is the directory holding the .debs.
set -euo pipefail

prog=package.sh
srcdir=$(cd "$(dirname "$0")/.." && pwd)
out=$srcdir/debian-out
version=
nocheck=no
deps=yes
lint=yes

die() { echo "$prog: $*" >&2; exit 1; }

while [ $# -gt 0 ]; do
	case $1 in
	-o|--out) [ $# -ge 2 ] || die "$1 needs a directory"; out=$2; shift ;;
	--out=*) out=${1#--out=} ;;
	--version) [ $# -ge 2 ] || die "$1 needs a version"; version=$2; shift ;;
	--version=*) version=${1#--version=} ;;
	--nocheck) nocheck=yes ;;
	--no-deps) deps=no ;;
	--no-lintian) lint=no ;;
	-h|--help) sed -n '2,/^set /p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
	*) die "unknown option $1 (see --help)" ;;
	esac
	shift
done
[ -f "$srcdir/debian/control" ] || die "$srcdir/debian/control: not a pubrelay tree"
case $version in
''|[0-9]*[0-9a-zA-Z]) ;;
*) die "--version $version: not a Debian version" ;;
esac
mkdir -p "$out"
out=$(cd "$out" && pwd)

SUDO=
[ "$(id -u)" -eq 0 ] || SUDO=sudo

# The tools this script runs, beyond the Build-Depends.
TOOLS="dpkg-dev git lintian"
[ "$lint" = yes ] || TOOLS="dpkg-dev git"

installed() {
	dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q "ok installed"
}

work=$(mktemp -d "${TMPDIR:-/tmp}/pubrelay-package.XXXXXX")
trap 'rm -rf "$work"' EXIT
trap 'exit 1' INT TERM
tree=$work/pubrelay

# The copy: what git tracks or would track, as it is in the working tree;
# files deleted but not yet committed stay out.  Without git (an unpacked
# tarball): everything, and debian/rules clean removes any build in it.
mkdir "$tree"
if git -C "$srcdir" rev-parse --is-inside-work-tree >/dev/null 2>&1; then
	(cd "$srcdir" && git ls-files -z -co --exclude-standard --deduplicate |
	    while IFS= read -r -d '' f; do
		[ -e "$f" ] || [ -L "$f" ] && printf '%s\0' "$f"
	    done | tar --null -T - -cf -) | tar -C "$tree" -xf -
else
	(cd "$srcdir" && tar --exclude=./debian-out --exclude="./${out#"$srcdir"/}" \
	    -cf - .) | tar -C "$tree" -xf -
fi

if [ -n "$version" ]; then
	cl=$tree/debian/changelog
	trailer=$(grep -m1 '^ -- ' "$cl")
	maint=${trailer#' -- '}
	maint=${maint%%>*}\>
	{
		printf 'pubrelay (%s) unstable; urgency=medium\n\n' "$version"
		printf '  * Built by scripts/package.sh --version %s.\n\n' "$version"
		printf ' -- %s  %s\n\n' "$maint" "$(date -R)"
		cat "$cl"
	} >"$cl.new"
	mv "$cl.new" "$cl"
fi

missing=
for p in $TOOLS; do
	installed "$p" || missing="$missing $p"
done
if ! (cd "$tree" && dpkg-checkbuilddeps) >/dev/null 2>&1 || [ -n "$missing" ]; then
	[ "$deps" = yes ] || die "missing build dependencies or tools (run without --no-deps):$missing $(cd "$tree" && dpkg-checkbuilddeps 2>&1 || true)"
	echo "$prog: installing the build dependencies and:${missing:- nothing else}" >&2
	export DEBIAN_FRONTEND=noninteractive
	$SUDO apt-get update -qq >/dev/null
	# shellcheck disable=SC2086
	[ -z "$missing" ] || $SUDO apt-get install -y -qq --no-install-recommends $missing >/dev/null
	$SUDO apt-get build-dep -y -qq --no-install-recommends "$tree" >/dev/null
	(cd "$tree" && dpkg-checkbuilddeps)
fi

opts=${DEB_BUILD_OPTIONS:-}
[ "$nocheck" = no ] || opts="$opts nocheck"
case $opts in *parallel=*) ;; *) opts="$opts parallel=$(nproc)" ;; esac
echo "$prog: building in $tree (DEB_BUILD_OPTIONS=${opts# })" >&2
profiles=
[ "$nocheck" = no ] || profiles=-Pnocheck
if ! (cd "$tree" && DEB_BUILD_OPTIONS="${opts# }" \
    dpkg-buildpackage -us -uc -b $profiles) >"$work/build.log" 2>&1; then
	tail -n 60 "$work/build.log" >&2
	die "dpkg-buildpackage failed (last lines above)"
fi

changes=$(ls "$work"/pubrelay_*.changes)
if [ "$lint" = yes ]; then
	echo "$prog: lintian $(basename "$changes")" >&2
	# Errors and warnings fail; info and pedantic tags are shown.
	lintian --fail-on error,warning --display-info --pedantic "$changes" >&2 ||
	    die "lintian found errors or warnings (above)"
fi

# The files .changes lists (the .debs, the .buildinfo), and itself.
files=$(sed -n '/^Files:/,/^[^ ]/{/^ /s/.* //p}' "$changes")
for f in $files; do
	cp "$work/$f" "$out/"
done
cp "$changes" "$out/"
cp "$work/build.log" "$out/pubrelay_$(dpkg-parsechangelog -l "$tree/debian/changelog" -S Version)_build.log"
echo "$prog: built:" >&2
for f in $files; do
	case $f in *.deb) echo "  $out/$f" >&2 ;; esac
done
echo "$out"
