#!/bin/sh
# Install every Debian package needed to build, test and run pubrelay.
# Idempotent and quiet: safe to run twice; does nothing when all is present.
set -eu

PKGS="build-essential autoconf automake libtool pkg-config
      librabbitmq-dev libevent-dev libsqlite3-dev libinih-dev
      rabbitmq-server amqp-tools python3 python3-pika socat systemd
      openssl ca-certificates
      clang libclang-rt-14-dev valgrind"

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
# policy-rc.d keeps the packaged rabbitmq-server from being started by the
# install where that works; tests never rely on it either way.
$SUDO apt-get install -y -qq --no-install-recommends $missing >/dev/null
