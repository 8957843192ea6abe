#!/bin/sh
# pubrelay.sh: publish through pubrelayd from the shell, with socat(1).
#
# The pubrelay_* functions are the part to copy (they need PUBRELAY_SOCKET);
# the command line at the end shows their use and is what tests/examples.py
# runs.  The protocol: pubrelay-protocol(7).  Each call is one connection:
# socat sends the requests, half-closes, and the daemon answers every one
# before it closes, so socat's -t only bounds the wait.
#
#   pubrelay.sh SOCKET pub KEY BODY [PROPERTY ...]     prints the message-id
#   pubrelay.sh SOCKET lines KEY [PROPERTY ...] <FILE  one message a line
#   pubrelay.sh SOCKET confirm MS KEY BODY [PROPERTY ...]
#   pubrelay.sh SOCKET wait MS
#
# PROPERTY is "name: value", e.g. "message-id: order-42", "header: k=v".
# Exit status: 0 done, 1 refused or failed (the daemon's error code on
# stderr), 2 usage, 3 parked, 4 timed out.
set -u
PUBRELAY_TIMEOUT=${PUBRELAY_TIMEOUT:-10}	# seconds to wait for replies
nl='
'
cr=$(printf '\r')

# pubrelay_send SECONDS: the requests on stdin to the daemon, its replies
# on stdout.
pubrelay_send() {
	socat -t "$1" - "UNIX-CONNECT:$PUBRELAY_SOCKET"
}

# pubrelay_props PROPERTY ...: the property lines, refusing a line break
# (it would end the property early).
pubrelay_props() {
	for p; do
		case $p in *"$nl"* | *"$cr"*)
			echo "pubrelay: property \"$p\": line breaks cannot be sent" >&2
			return 1 ;;
		esac
	done
	printf '%s\n' "$@"
}

# pubrelay_request BODY PROPS: one PUB request, PROPS from pubrelay_props.
pubrelay_request() {
	printf 'PUB %d\n%s\n\n%s\n' "$(printf %s "$1" | wc -c)" "$2" "$1"
}

# pubrelay_fail REPLY: report a refusal ("ERR CODE text") or a missing reply.
pubrelay_fail() {
	case $1 in
	"ERR "*) echo "pubrelay: refused: ${1#ERR }" >&2 ;;
	"") echo "pubrelay: no reply from $PUBRELAY_SOCKET (the request may or may not have been taken)" >&2 ;;
	*) echo "pubrelay: unexpected reply \"$1\"" >&2 ;;
	esac
	return 1
}

# pubrelay_pub KEY BODY [PROPERTY ...]: publish one message; prints its
# message-id.
pubrelay_pub() (
	key=$1 body=$2; shift 2
	props=$(pubrelay_props "routing-key: $key" "$@") || exit 1
	reply=$(pubrelay_request "$body" "$props" | pubrelay_send "$PUBRELAY_TIMEOUT")
	case $reply in
	"OK "*) printf '%s\n' "${reply#OK }" ;;
	*) pubrelay_fail "$reply" ;;
	esac
)

# pubrelay_lines KEY [PROPERTY ...]: publish each line of stdin as a message,
# pipelined: the requests go out without waiting for replies, which socat
# reads meanwhile.  Prints the message-ids.  After a refusal the
# daemon takes no more messages on the connection, so the accepted ones
# are always the first: resend from the first refused line.  If the daemon
# goes away meanwhile, socat stops at its first failed write and may miss
# replies already sent: the count is then a lower bound (resending from it
# can make duplicates, never a loss).
pubrelay_lines() (
	key=$1; shift
	props=$(pubrelay_props "routing-key: $key" "$@") || exit 1
	lines=$(cat)
	[ -n "$lines" ] || exit 0
	total=$(printf '%s\n' "$lines" | wc -l)
	# awk counts bytes when the locale is C.
	printf '%s\n' "$lines" |
	    PROPS=$props LC_ALL=C awk '
		{ printf "PUB %d\n%s\n\n%s\n", length($0), ENVIRON["PROPS"], $0 }' |
	    pubrelay_send "$PUBRELAY_TIMEOUT" |
	    awk -v total="$total" '
		!bad && /^OK / { print substr($0, 4); ok++; next }
		!bad { bad = $0 }
		END {
			if (ok == total) exit 0
			if (bad ~ /^ERR /)
				why = "message " (ok + 1) " refused: " substr(bad, 5)
			else if (bad != "")
				why = "unexpected reply \"" bad "\""
			else
				why = "connection lost"
			printf "pubrelay: %s; %d of %d accepted\n", why, ok, total | "cat >&2"
			exit 1
		}'
)

# pubrelay_confirm MS KEY BODY [PROPERTY ...]: publish and wait up to MS
# milliseconds for the broker; prints "confirmed ID", "parked ID REASON"
# (status 3) or "timeout ID" (status 4: still queued).
pubrelay_confirm() (
	ms=$1 key=$2 body=$3; shift 3
	props=$(pubrelay_props "routing-key: $key" "confirm: $ms" "$@") || exit 1
	reply=$(pubrelay_request "$body" "$props" |
	    pubrelay_send $((ms / 1000 + PUBRELAY_TIMEOUT)))
	case $reply in
	"CONFIRMED "*) echo "confirmed ${reply#* }" ;;
	"PARKED "*) echo "parked ${reply#* }"; exit 3 ;;
	"TIMEOUT "*) echo "timeout ${reply#* }"; exit 4 ;;
	*) pubrelay_fail "$reply" ;;
	esac
)

# pubrelay_wait MS: once every message accepted so far is confirmed or
# parked, prints "ok DEAD" (status 3 when DEAD, the dead letters, is not 0);
# after MS milliseconds "timeout" (status 4).
pubrelay_wait() (
	reply=$(printf 'WAIT %s\n' "$1" | pubrelay_send $(($1 / 1000 + PUBRELAY_TIMEOUT)))
	case $reply in
	"OK 0") echo "ok 0" ;;
	"OK "*) echo "ok ${reply#OK }"; exit 3 ;;
	TIMEOUT) echo timeout; exit 4 ;;
	*) pubrelay_fail "$reply" ;;
	esac
)

# ---- the example command line ----------------------------------------------

usage() {
	echo "usage: $0 SOCKET pub|lines|confirm|wait ARGS (see the comment at the top)" >&2
	exit 2
}
[ $# -ge 3 ] || usage
PUBRELAY_SOCKET=$1 cmd=$2
shift 2
case $cmd in
pub) [ $# -ge 2 ] ;;
lines | wait) true ;;
confirm) [ $# -ge 3 ] ;;
*) false ;;
esac || usage
"pubrelay_$cmd" "$@"
