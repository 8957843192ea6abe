/*
 * wire.c: the pure half of libpubrelay (wire.h).  Written afresh rather
 * than taken from src/protocol.c: that encoder grows a struct buf that
 * aborts when memory runs out, which a library must not do.
 */
#include <stdint.h>
#include <string.h>
#include <strings.h>

#include "pubrelay.h"
#include "wire.h"

/* pubrelay-protocol(7), PROPERTIES; keep in step with src/protocol.c. */
static const char *const wire_props[] = {
	"exchange", "routing-key", "mandatory", "content-type",
	"content-encoding", "delivery-mode", "priority", "correlation-id",
	"reply-to", "expiration", "message-id", "timestamp", "type", "app-id",
	"header", "idempotency-key", "confirm", "max-age",
};
#define WIRE_NPROPS	(sizeof(wire_props) / sizeof(wire_props[0]))

static const struct {
	const char	*code;
	int		 err;
} wire_errs[] = {
	{ "BADREQ",	PUBRELAY_E_BADREQ },
	{ "TOOBIG",	PUBRELAY_E_TOOBIG },
	{ "UNKNOWN",	PUBRELAY_E_UNKNOWN },
	{ "PROTO",	PUBRELAY_E_PROTO },
	{ "FULL",	PUBRELAY_E_FULL },
	{ "STORE",	PUBRELAY_E_STORE },
	{ "SKIPPED",	PUBRELAY_E_SKIPPED },
	{ "SHUTDOWN",	PUBRELAY_E_SHUTDOWN },
	{ "LIMIT",	PUBRELAY_E_LIMIT },
	{ "NOTFOUND",	PUBRELAY_E_NOTFOUND },
	{ "DENIED",	PUBRELAY_E_DENIED },
};
#define WIRE_NERRS	(sizeof(wire_errs) / sizeof(wire_errs[0]))

/* The two public functions that need no handle. */
const char *
pubrelay_strerror(int code)
{
	switch (code) {
	case PUBRELAY_OK:		return "success (accepted)";
	case PUBRELAY_CONFIRMED:	return "confirmed by the broker";
	case PUBRELAY_PARKED:		return "refused by the broker, parked";
	case PUBRELAY_PENDING:		return "not confirmed in time, "
					    "still to be delivered";
	case PUBRELAY_QUEUED:		return "queued in the outbox";
	case PUBRELAY_INFLIGHT:		return "sent, waiting for the confirm";
	case PUBRELAY_UNKNOWN:		return "unknown to the daemon";
	case PUBRELAY_E_SYS:		return "system error";
	case PUBRELAY_E_NOMEM:		return "out of memory";
	case PUBRELAY_E_INVAL:		return "invalid argument";
	case PUBRELAY_E_CONNECT:	return "cannot connect to pubrelayd";
	case PUBRELAY_E_TIMEOUT:	return "no reply in time";
	case PUBRELAY_E_CLOSED:		return "connection closed";
	case PUBRELAY_E_REPLY:		return "reply outside the protocol";
	case PUBRELAY_E_BUSY:		return "pipelined replies to collect "
					    "first";
	case PUBRELAY_E_REFUSED:	return "refused (unknown error code)";
	case PUBRELAY_E_BADREQ:		return "malformed request";
	case PUBRELAY_E_TOOBIG:		return "message too big";
	case PUBRELAY_E_UNKNOWN:	return "unknown command";
	case PUBRELAY_E_PROTO:		return "framing lost";
	case PUBRELAY_E_FULL:		return "outbox full";
	case PUBRELAY_E_STORE:		return "outbox write failed";
	case PUBRELAY_E_SKIPPED:	return "skipped after an earlier refusal";
	case PUBRELAY_E_SHUTDOWN:	return "daemon stopping";
	case PUBRELAY_E_LIMIT:		return "too many clients";
	case PUBRELAY_E_NOTFOUND:	return "not found";
	case PUBRELAY_E_DENIED:		return "connection denied";
	default:			return "unknown code";
	}
}

int
pubrelay_retryable(int code)
{
	switch (code) {
	case PUBRELAY_E_CONNECT:
	case PUBRELAY_E_TIMEOUT:
	case PUBRELAY_E_CLOSED:
	case PUBRELAY_E_FULL:
	case PUBRELAY_E_STORE:
	case PUBRELAY_E_SHUTDOWN:
	case PUBRELAY_E_LIMIT:
		return 1;
	default:
		return 0;
	}
}

const char *
wire_prop_name(const char *name)
{
	size_t	i;

	for (i = 0; i < WIRE_NPROPS; i++)
		if (strcasecmp(name, wire_props[i]) == 0)
			return wire_props[i];
	return NULL;
}

int
wire_prop_repeats(const char *canonical)
{
	return strcmp(canonical, "header") == 0;
}

static void
wire_err(char *err, size_t errlen, const char *name, const char *why)
{
	if (err != NULL && errlen > 0) {
		strncpy(err, name, errlen - 1);
		err[errlen - 1] = '\0';
		strncat(err, ": ", errlen - 1 - strlen(err));
		strncat(err, why, errlen - 1 - strlen(err));
	}
}

/* What the daemon's encoder checks of a string (proto_encodable()). */
static int
wire_str_check(const char *what, const char *p, size_t len, size_t max,
    char *err, size_t errlen)
{
	if (len > max) {
		wire_err(err, errlen, what, max == WIRE_SHORTSTR_MAX ?
		    "longer than 255 bytes" : "line longer than 8192 bytes");
		return -1;
	}
	if (memchr(p, '\n', len) != NULL || memchr(p, '\r', len) != NULL) {
		wire_err(err, errlen, what, "contains a line break");
		return -1;
	}
	/* The parser strips the blanks after ':'. */
	if (max == WIRE_SHORTSTR_MAX && len > 0 && (p[0] == ' ' ||
	    p[0] == '\t')) {
		wire_err(err, errlen, what, "starts with a space or tab");
		return -1;
	}
	return 0;
}

int
wire_prop_check(const char *canonical, const char *value, char *err,
    size_t errlen)
{
	size_t	len = strlen(value);

	if (strcmp(canonical, "header") == 0) {
		const char *eq = strchr(value, '=');

		if (eq == NULL || eq == value) {
			wire_err(err, errlen, canonical, "not NAME=VALUE");
			return -1;
		}
		if (wire_str_check("header name", value, (size_t)(eq - value),
		    WIRE_SHORTSTR_MAX, err, errlen) == -1 ||
		    wire_str_check("header value", eq + 1, strlen(eq + 1),
		    SIZE_MAX, err, errlen) == -1)
			return -1;
		/* "header: " and the newline share the line. */
		if (len + 9 > WIRE_MAX_LINE) {
			wire_err(err, errlen, canonical,
			    "line longer than 8192 bytes");
			return -1;
		}
		return 0;
	}
	if (len == 0 && (strcmp(canonical, "message-id") == 0 ||
	    strcmp(canonical, "idempotency-key") == 0 ||
	    strcmp(canonical, "confirm") == 0)) {
		wire_err(err, errlen, canonical, "empty");
		return -1;
	}
	return wire_str_check(canonical, value, len, WIRE_SHORTSTR_MAX, err,
	    errlen);
}

int
wire_err_code(const char *code, size_t len)
{
	size_t	i;

	for (i = 0; i < WIRE_NERRS; i++)
		if (strlen(wire_errs[i].code) == len &&
		    memcmp(wire_errs[i].code, code, len) == 0)
			return wire_errs[i].err;
	return PUBRELAY_E_REFUSED;
}

int
wire_err_closes(int code)
{
	return code == PUBRELAY_E_PROTO || code == PUBRELAY_E_SHUTDOWN ||
	    code == PUBRELAY_E_LIMIT || code == PUBRELAY_E_DENIED;
}

/* line starts with word (which ends in its blank, if it has one). */
static int
wire_starts(const char *line, size_t len, const char *word)
{
	size_t	n = strlen(word);

	return len >= n && memcmp(line, word, n) == 0;
}

/* A whole decimal number of at most 19 digits. */
static int
wire_number(const char *p, size_t len, uint64_t *out)
{
	size_t		i;
	uint64_t	v = 0;

	if (len == 0 || len > 19)
		return -1;
	for (i = 0; i < len; i++) {
		if (p[i] < '0' || p[i] > '9')
			return -1;
		v = v * 10 + (uint64_t)(p[i] - '0');
	}
	*out = v;
	return 0;
}

/* The id after a reply word: all the rest of the line, 1 to 255 bytes. */
static int
wire_id(const char *p, size_t len, struct wire_reply *r)
{
	if (len == 0 || len > WIRE_SHORTSTR_MAX || memchr(p, '\0', len))
		return -1;
	r->id = p;
	r->idlen = len;
	return 0;
}

/*
 * "<id> <reason>": the id is mid when the rest starts with it and a
 * blank (an id of the client's may hold blanks; a generated one never
 * does), else up to the first blank.
 */
static int
wire_parked(const char *p, size_t len, const char *mid, size_t midlen,
    struct wire_reply *r)
{
	const char	*sp;
	size_t		 idlen;

	if (mid != NULL && midlen < len && memcmp(p, mid, midlen) == 0 &&
	    p[midlen] == ' ')
		idlen = midlen;
	else if ((sp = memchr(p, ' ', len)) != NULL)
		idlen = (size_t)(sp - p);
	else
		return -1;
	if (wire_id(p, idlen, r) == -1)
		return -1;
	r->text = p + idlen + 1;
	r->textlen = len - idlen - 1;
	return 0;
}

/* A STATUS reply names the id asked about: a script could confuse two. */
static int
wire_same_id(const struct wire_reply *r, const char *mid, size_t midlen)
{
	return mid == NULL || (r->idlen == midlen &&
	    memcmp(r->id, mid, midlen) == 0);
}

static const struct {
	const char	*word;
	int		 state;
} wire_status_words[] = {
	{ "QUEUED ",	PUBRELAY_QUEUED },
	{ "INFLIGHT ",	PUBRELAY_INFLIGHT },
	{ "CONFIRMED ",	PUBRELAY_CONFIRMED },
	{ "UNKNOWN ",	PUBRELAY_UNKNOWN },
};

int
wire_reply(enum wire_req req, const char *line, size_t len, const char *mid,
    size_t midlen, struct wire_reply *r)
{
	const char	*sp;
	size_t		 i, n;

	memset(r, 0, sizeof(*r));
	if (len > 0 && line[len - 1] == '\r')
		len--;
	if (wire_starts(line, len, "ERR ")) {
		sp = memchr(line + 4, ' ', len - 4);
		n = sp != NULL ? (size_t)(sp - (line + 4)) : len - 4;
		if (n == 0)
			return PUBRELAY_E_REPLY;
		r->text = sp != NULL ? sp + 1 : line + len;
		r->textlen = (size_t)(line + len - r->text);
		return wire_err_code(line + 4, n);
	}
	switch (req) {
	case WIRE_PUB:
		if (wire_starts(line, len, "OK ") &&
		    wire_id(line + 3, len - 3, r) == 0)
			return PUBRELAY_ACCEPTED;
		break;
	case WIRE_PUB_CONFIRM:
		if (wire_starts(line, len, "CONFIRMED ") &&
		    wire_id(line + 10, len - 10, r) == 0)
			return PUBRELAY_CONFIRMED;
		if (wire_starts(line, len, "TIMEOUT ") &&
		    wire_id(line + 8, len - 8, r) == 0)
			return PUBRELAY_PENDING;
		if (wire_starts(line, len, "PARKED ") &&
		    wire_parked(line + 7, len - 7, mid, midlen, r) == 0)
			return PUBRELAY_PARKED;
		break;
	case WIRE_PING:
		if (len == 4 && memcmp(line, "PONG", 4) == 0)
			return PUBRELAY_OK;
		break;
	case WIRE_RESET:
		if (len == 2 && memcmp(line, "OK", 2) == 0)
			return PUBRELAY_OK;
		break;
	case WIRE_WAIT:
		if (len == 7 && memcmp(line, "TIMEOUT", 7) == 0)
			return PUBRELAY_PENDING;
		if (wire_starts(line, len, "OK ") &&
		    wire_number(line + 3, len - 3, &r->n) == 0)
			return PUBRELAY_CONFIRMED;
		break;
	case WIRE_STATUS:
		for (i = 0; i < sizeof(wire_status_words) /
		    sizeof(wire_status_words[0]); i++) {
			n = strlen(wire_status_words[i].word);
			if (wire_starts(line, len, wire_status_words[i].word) &&
			    wire_id(line + n, len - n, r) == 0)
				return wire_same_id(r, mid, midlen) ?
				    wire_status_words[i].state :
				    PUBRELAY_E_REPLY;
		}
		if (wire_starts(line, len, "PARKED ") &&
		    wire_parked(line + 7, len - 7, mid, midlen, r) == 0)
			return wire_same_id(r, mid, midlen) ? PUBRELAY_PARKED :
			    PUBRELAY_E_REPLY;
		break;
	case WIRE_STATS:
		if (wire_starts(line, len, "STATS ") &&
		    wire_number(line + 6, len - 6, &r->n) == 0 &&
		    r->n <= WIRE_MAX_STATS)
			return PUBRELAY_OK;
		break;
	case WIRE_DEAD_LIST:
		if (wire_starts(line, len, "DEAD ") &&
		    wire_number(line + 5, len - 5, &r->n) == 0 &&
		    r->n <= WIRE_MAX_DEAD)
			return PUBRELAY_OK;
		break;
	case WIRE_DEAD_MOVE:
		if (wire_starts(line, len, "OK ") &&
		    wire_number(line + 3, len - 3, &r->n) == 0)
			return PUBRELAY_OK;
		break;
	case WIRE_NONE:
		break;
	}
	return PUBRELAY_E_REPLY;
}

const char *
wire_stat(const char *text, size_t len, const char *name, size_t *vlen)
{
	const char	*p = text, *end = text + len, *nl, *sp;
	size_t		 nlen = strlen(name);

	while (p < end) {
		nl = memchr(p, '\n', (size_t)(end - p));
		if (nl == NULL)
			nl = end;
		sp = memchr(p, ' ', (size_t)(nl - p));
		if (sp != NULL && (size_t)(sp - p) == nlen &&
		    memcmp(p, name, nlen) == 0) {
			*vlen = (size_t)(nl - sp - 1);
			return sp + 1;
		}
		p = nl + 1;
	}
	return NULL;
}
