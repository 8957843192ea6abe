/*
 * Unit tests for lib/wire.c, libpubrelay's pure half: property names and
 * values, every reply each request may get (and the ones it may not), and
 * the STATS lookup.
 */
#include <string.h>

#include "pubrelay.h"
#include "tap.h"
#include "wire.h"

static int
reply(enum wire_req req, const char *line, struct wire_reply *r)
{
	return wire_reply(req, line, strlen(line), NULL, 0, r);
}

static int
same(const char *p, size_t len, const char *want)
{
	return p != NULL && len == strlen(want) && memcmp(p, want, len) == 0;
}

int
main(void)
{
	struct wire_reply	 r;
	char			 err[128], long_id[300];
	const char		*v, *mid;
	size_t			 vlen;

	/* Properties */
	is_str(wire_prop_name("Routing-Key"), "routing-key",
	    "property names are case-insensitive, canonical out");
	ok(wire_prop_name("routng-key") == NULL, "a misspelt name is unknown");
	ok(wire_prop_name("routing-key ") == NULL, "a blank makes it unknown");
	ok(wire_prop_repeats("header") && !wire_prop_repeats("exchange"),
	    "only header repeats");
	is_int(wire_prop_check("exchange", "amq.topic", err, sizeof(err)), 0,
	    "a plain value passes");
	is_int(wire_prop_check("exchange", "", err, sizeof(err)), 0,
	    "an empty exchange passes (the default exchange)");
	is_int(wire_prop_check("routing-key", "a\nPUB 0", err, sizeof(err)), -1,
	    "a newline in a value is refused (it would frame a request)");
	is_str(err, "routing-key: contains a line break",
	    "and says why, as pubrelayd's encoder does");
	is_int(wire_prop_check("type", "x\r", err, sizeof(err)), -1,
	    "a carriage return is refused (the parser drops it)");
	is_int(wire_prop_check("type", " x", err, sizeof(err)), -1,
	    "a leading blank is refused (the parser skips it)");
	memset(long_id, 'i', 256);
	long_id[256] = '\0';
	is_int(wire_prop_check("message-id", long_id, err, sizeof(err)), -1,
	    "a 256-byte short string is refused");
	long_id[255] = '\0';
	is_int(wire_prop_check("message-id", long_id, err, sizeof(err)), 0,
	    "a 255-byte one passes");
	is_int(wire_prop_check("message-id", "", err, sizeof(err)), -1,
	    "an empty message-id is refused");
	is_int(wire_prop_check("idempotency-key", "", err, sizeof(err)), -1,
	    "an empty idempotency-key is refused");
	is_int(wire_prop_check("header", "a=b=c", err, sizeof(err)), 0,
	    "a header value may hold '='");
	is_int(wire_prop_check("header", "=b", err, sizeof(err)), -1,
	    "a header needs a name");
	is_int(wire_prop_check("header", "novalue", err, sizeof(err)), -1,
	    "a header needs NAME=VALUE");
	is_int(wire_prop_check("header", " n=v", err, sizeof(err)), -1,
	    "a header name cannot start with a blank");
	is_str(err, "header name: starts with a space or tab", "said so");
	is_int(wire_prop_check("header", "n=a\rb", err, sizeof(err)), -1,
	    "nor a header value hold a line break");
	is_str(err, "header value: contains a line break", "said so");
	is_int(wire_prop_check("header", "n= v", err, sizeof(err)), 0,
	    "a header value may start with a blank");

	/* PUB */
	is_int(reply(WIRE_PUB, "OK 10a894a75918e46b-7", &r), PUBRELAY_ACCEPTED,
	    "OK <id> accepts a PUB");
	ok(same(r.id, r.idlen, "10a894a75918e46b-7"), "with its id");
	is_int(reply(WIRE_PUB, "OK my id with blanks\r", &r), PUBRELAY_ACCEPTED,
	    "an id may hold blanks; CR LF ends a line too");
	ok(same(r.id, r.idlen, "my id with blanks"), "the id is the rest");
	is_int(reply(WIRE_PUB, "OK", &r), PUBRELAY_E_REPLY,
	    "a bare OK does not answer a PUB");
	is_int(reply(WIRE_PUB, "OK ", &r), PUBRELAY_E_REPLY,
	    "nor an OK with an empty id");
	is_int(reply(WIRE_PUB, "CONFIRMED x-1", &r), PUBRELAY_E_REPLY,
	    "a receipt does not answer a PUB without confirm");
	is_int(reply(WIRE_PUB, "PONG", &r), PUBRELAY_E_REPLY,
	    "a PONG does not either");

	/* Errors */
	is_int(reply(WIRE_PUB, "ERR BADREQ unknown property \"x\"", &r),
	    PUBRELAY_E_BADREQ, "ERR BADREQ");
	ok(same(r.text, r.textlen, "unknown property \"x\""), "its text");
	is_int(reply(WIRE_PING, "ERR SKIPPED", &r), PUBRELAY_E_SKIPPED,
	    "an ERR without text, to any request");
	is_int(reply(WIRE_STATS, "ERR NEWCODE later", &r), PUBRELAY_E_REFUSED,
	    "an unknown code is a refusal (the protocol says so)");
	is_int(reply(WIRE_PUB, "ERR ", &r), PUBRELAY_E_REPLY,
	    "ERR without a code is outside the protocol");
	is_int(wire_err_code("FULL", 4), PUBRELAY_E_FULL, "FULL");
	is_int(wire_err_code("FUL", 3), PUBRELAY_E_REFUSED, "no prefix match");
	ok(wire_err_closes(PUBRELAY_E_PROTO) && wire_err_closes(PUBRELAY_E_LIMIT)
	    && wire_err_closes(PUBRELAY_E_DENIED) &&
	    wire_err_closes(PUBRELAY_E_SHUTDOWN),
	    "PROTO, LIMIT, DENIED, SHUTDOWN close the connection");
	ok(!wire_err_closes(PUBRELAY_E_BADREQ) &&
	    !wire_err_closes(PUBRELAY_E_TOOBIG) &&
	    !wire_err_closes(PUBRELAY_E_SKIPPED),
	    "BADREQ, TOOBIG, SKIPPED keep it");

	/* Receipts */
	is_int(reply(WIRE_PUB_CONFIRM, "CONFIRMED a-1", &r),
	    PUBRELAY_CONFIRMED, "CONFIRMED");
	is_int(reply(WIRE_PUB_CONFIRM, "TIMEOUT a-2", &r), PUBRELAY_PENDING,
	    "TIMEOUT: pending");
	ok(same(r.id, r.idlen, "a-2"), "with its id");
	is_int(reply(WIRE_PUB_CONFIRM, "PARKED a-3 returned by the broker: "
	    "312 NO_ROUTE", &r), PUBRELAY_PARKED, "PARKED");
	ok(same(r.id, r.idlen, "a-3"), "the id up to the blank");
	ok(same(r.text, r.textlen, "returned by the broker: 312 NO_ROUTE"),
	    "the reason after it");
	mid = "my id";
	is_int(wire_reply(WIRE_PUB_CONFIRM, "PARKED my id 404 NOT_FOUND", 26,
	    mid, strlen(mid), &r), PUBRELAY_PARKED,
	    "PARKED with a client's id holding a blank");
	ok(same(r.id, r.idlen, "my id") && same(r.text, r.textlen,
	    "404 NOT_FOUND"), "is cut after that id");
	is_int(reply(WIRE_PUB_CONFIRM, "PARKED a-4", &r), PUBRELAY_E_REPLY,
	    "PARKED without a reason is outside the protocol");
	is_int(reply(WIRE_PUB_CONFIRM, "OK a-5", &r), PUBRELAY_E_REPLY,
	    "a plain OK does not answer a PUB with confirm");

	/* The other requests */
	is_int(reply(WIRE_PING, "PONG", &r), PUBRELAY_OK, "PONG");
	is_int(reply(WIRE_PING, "PONGX", &r), PUBRELAY_E_REPLY, "not PONGX");
	is_int(reply(WIRE_RESET, "OK", &r), PUBRELAY_OK, "RESET: OK");
	is_int(reply(WIRE_WAIT, "OK 3", &r), PUBRELAY_CONFIRMED, "WAIT: OK n");
	is_int(r.n, 3, "with the dead count");
	is_int(reply(WIRE_WAIT, "TIMEOUT", &r), PUBRELAY_PENDING,
	    "WAIT: TIMEOUT is pending");
	is_int(reply(WIRE_WAIT, "OK -1", &r), PUBRELAY_E_REPLY,
	    "WAIT: a count is digits only");
	is_int(reply(WIRE_STATUS, "QUEUED a-1", &r), PUBRELAY_QUEUED, "QUEUED");
	is_int(reply(WIRE_STATUS, "INFLIGHT a-1", &r), PUBRELAY_INFLIGHT,
	    "INFLIGHT");
	is_int(reply(WIRE_STATUS, "CONFIRMED a-1", &r), PUBRELAY_CONFIRMED,
	    "CONFIRMED");
	is_int(reply(WIRE_STATUS, "UNKNOWN a-1", &r), PUBRELAY_UNKNOWN,
	    "UNKNOWN");
	is_int(reply(WIRE_STATUS, "PARKED a-1 why", &r), PUBRELAY_PARKED,
	    "PARKED, to STATUS");
	ok(same(r.text, r.textlen, "why"), "with its reason");
	mid = "a 1";
	is_int(wire_reply(WIRE_STATUS, "QUEUED a 1", 10, mid, strlen(mid), &r),
	    PUBRELAY_QUEUED, "STATUS naming the id asked about");
	is_int(wire_reply(WIRE_STATUS, "QUEUED a 10", 11, mid, strlen(mid),
	    &r), PUBRELAY_E_REPLY, "naming another id is outside the protocol");
	is_int(wire_reply(WIRE_STATUS, "PARKED a 1 why", 14, mid, strlen(mid),
	    &r), PUBRELAY_PARKED, "PARKED naming it");
	is_int(wire_reply(WIRE_STATUS, "PARKED b why", 12, mid, strlen(mid),
	    &r), PUBRELAY_E_REPLY, "PARKED naming another");
	is_int(reply(WIRE_DEAD_LIST, "DEAD 273", &r), PUBRELAY_OK, "DEAD n");
	is_int(r.n, 273, "n");
	is_int(reply(WIRE_DEAD_LIST, "DEAD 999999999", &r), PUBRELAY_E_REPLY,
	    "a page over 256 MiB is refused");
	is_int(reply(WIRE_DEAD_LIST, "ERR NOTFOUND no", &r),
	    PUBRELAY_E_NOTFOUND, "DEAD LIST: NOTFOUND");
	is_int(reply(WIRE_DEAD_MOVE, "OK 3", &r), PUBRELAY_OK, "DEAD RETRY: OK n");
	is_int(r.n, 3, "n");
	is_int(reply(WIRE_DEAD_MOVE, "OK 1\0junk", &r), PUBRELAY_OK,
	    "(a C string ends at the NUL: the library passes the length)");
	is_int(wire_reply(WIRE_DEAD_MOVE, "OK 1\0junk", 9, NULL, 0, &r),
	    PUBRELAY_E_REPLY, "a NUL in the count is outside the protocol");
	is_int(reply(WIRE_NONE, "ERR LIMIT too many", &r), PUBRELAY_E_LIMIT,
	    "unasked: an ERR is a reply");
	is_int(reply(WIRE_NONE, "OK 1", &r), PUBRELAY_E_REPLY,
	    "unasked: nothing else is");
	is_int(reply(WIRE_STATS, "STATS 42", &r), PUBRELAY_OK, "STATS n");
	is_int(r.n, 42, "n");
	is_int(reply(WIRE_STATS, "STATS 99999999999", &r), PUBRELAY_E_REPLY,
	    "a STATS body over 16 MiB is refused");
	is_int(reply(WIRE_STATS, "STATS", &r), PUBRELAY_E_REPLY,
	    "STATS without n");

	/* STATS lookup */
	v = wire_stat("state connected\nlast_error a b c\nbacklog 0\n", 43,
	    "last_error", &vlen);
	ok(same(v, vlen, "a b c"), "a value is the rest of the line");
	v = wire_stat("state connected\nbacklog 0", 25, "backlog", &vlen);
	ok(same(v, vlen, "0"), "the last line needs no newline");
	ok(wire_stat("state connected\n", 16, "stat", &vlen) == NULL,
	    "a name is matched whole");
	ok(wire_stat("", 0, "state", &vlen) == NULL, "nothing in nothing");

	/* strerror and retryable, the library's fixed texts */
	is_str(pubrelay_strerror(PUBRELAY_E_FULL), "outbox full", "strerror");
	ok(pubrelay_retryable(PUBRELAY_E_FULL) &&
	    !pubrelay_retryable(PUBRELAY_E_BADREQ), "FULL retries, BADREQ not");
	return done_testing();
}
