#!/bin/sh
# Install every Debian package needed to build, test and run pubrelay.
# Idempotent and quiet: safe to run twice; does nothing when all is present.
set -eu

PKGS="build-essential autoconf automake libtool pkg-config
      librabbitmq-dev libevent-dev libsqlite3-dev libinih-dev
      rabbitmq-server amqp-tools python3 python3-pika socat systemd
      openssl ca-certificates
      clang libclang-rt-14-dev valgrind musl-tools
      php-cli golang-go nodejs prometheus tmux fiu-utils
      debhelper dh-python dpkg-dev devscripts lintian git"

missing=""
for p in $PKGS; do
	if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed"; then
		missing="$missing $p"
	fi
done

if [ -z "$missing" ]; then
	exit 0
fi

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
	SUDO="sudo"
fi

echo "install-deps: installing:$missing" >&2
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq >/dev/null
# The tests start private RabbitMQ nodes of their own and never use the
# packaged one, so the install does not start it: a policy-rc.d that refuses
# every start, for the install only, unless the machine has one already
# (container images do).  Without it the package's postinst starts the
# system node, and where that cannot work (no init system) it fails the
# install.
policy=/usr/sbin/policy-rc.d
if [ ! -e $policy ]; then
	printf '#!/bin/sh\n# pubrelay install-deps.sh, removed after the install\nexit 101\n' |
	    $SUDO tee $policy >/dev/null
	$SUDO chmod 755 $policy
	trap '$SUDO rm -f $policy' EXIT
	trap 'exit 1' INT TERM
fi
$SUDO apt-get install -y -qq --no-install-recommends $missing >/dev/null
