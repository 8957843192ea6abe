#!/bin/sh
# The main job on a fresh Debian 12 machine: install packages, build, start a
# private RabbitMQ node when none answers on 127.0.0.1:5672, start pubrelayd,
# publish with the client and show the messages arriving in a queue.
set -eu
cd "$(dirname "$0")/.."

./scripts/install-deps.sh
if [ ! -x configure ] || [ configure.ac -nt configure ]; then
	autoreconf -fi >/dev/null
fi
[ -f Makefile ] || ./configure -q
make -s -j"$(nproc)" pubrelayd pubrelay
exec /usr/bin/python3 scripts/demo.py "$@"
