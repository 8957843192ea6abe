/*
 * protocol.c: the request parser and the PUB encoder (wire format in
 * protocol.h).  The parser allocates nothing and reads only buf[0..len), so
 * the session can call it on whatever has arrived, and a fuzzer can call it on
 * anything.
 *
 * Framing errors (an over-long line, a bad body length, a body without its
 * newline) are FATAL because the stream position is lost.  Everything else is
 * BAD: the whole request is consumed so the connection stays usable.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "protocol.h"
#include "util.h"

/*
 * Longest run of empty lines accepted before a request: without a bound a
 * client could make the session buffer newlines forever, since INCOMPLETE
 * consumes nothing.
 */
#define PROTO_MAX_BLANK		PROTO_MAX_LINE

/* Longest decimal we copy out for util_parse_u64(): 20 digits and a NUL. */
#define PROTO_NUM_MAX		21

enum prop_kind {
	PROP_STR,
	PROP_EXPIRATION,
	PROP_MANDATORY,
	PROP_DELIVERY_MODE,
	PROP_PRIORITY,
	PROP_TIMESTAMP,
	PROP_HEADER,
	PROP_CONFIRM,
	PROP_MAX_AGE,
};

/* The encoder writes properties in this order. */
static const struct prop_def {
	const char	*name;
	size_t		 len;		/* strlen(name) */
	enum prop_kind	 kind;
	size_t		 off;		/* PROP_STR, PROP_EXPIRATION */
} prop_defs[] = {
#define P(name)	name, sizeof(name) - 1
	{ P("exchange"), PROP_STR, offsetof(struct proto_pub, exchange) },
	{ P("routing-key"), PROP_STR,
	    offsetof(struct proto_pub, routing_key) },
	{ P("mandatory"), PROP_MANDATORY, 0 },
	{ P("content-type"), PROP_STR,
	    offsetof(struct proto_pub, content_type) },
	{ P("content-encoding"), PROP_STR,
	    offsetof(struct proto_pub, content_encoding) },
	{ P("delivery-mode"), PROP_DELIVERY_MODE, 0 },
	{ P("priority"), PROP_PRIORITY, 0 },
	{ P("correlation-id"), PROP_STR,
	    offsetof(struct proto_pub, correlation_id) },
	{ P("reply-to"), PROP_STR, offsetof(struct proto_pub, reply_to) },
	{ P("expiration"), PROP_EXPIRATION,
	    offsetof(struct proto_pub, expiration) },
	{ P("message-id"), PROP_STR, offsetof(struct proto_pub, message_id) },
	{ P("timestamp"), PROP_TIMESTAMP, 0 },
	{ P("type"), PROP_STR, offsetof(struct proto_pub, type) },
	{ P("app-id"), PROP_STR, offsetof(struct proto_pub, app_id) },
	{ P("header"), PROP_HEADER, 0 },
	{ P("idempotency-key"), PROP_STR,
	    offsetof(struct proto_pub, idempotency_key) },
	{ P("confirm"), PROP_CONFIRM, 0 },	/* pubrelayd's own */
	{ P("max-age"), PROP_MAX_AGE, 0 },	/* pubrelayd's own */
#undef P
};
#define PROP_NDEFS	(sizeof(prop_defs) / sizeof(prop_defs[0]))

static const struct {
	const char	*name;
	enum proto_verb	 verb;
} proto_verbs[] = {
	{ "PUB",   PROTO_PUB },
	{ "PING",  PROTO_PING },
	{ "STATS", PROTO_STATS },
	{ "RESET", PROTO_RESET },
	{ "DEAD",  PROTO_DEAD },
	{ "WAIT",  PROTO_WAIT },
	{ "STATUS", PROTO_STATUS },
};

static const struct {
	const char		*name;
	enum proto_dead_op	 op;
} proto_dead_ops[] = {
	{ "LIST",  PROTO_DEAD_LIST },
	{ "RETRY", PROTO_DEAD_RETRY },
	{ "PURGE", PROTO_DEAD_PURGE },
};

static void	proto_errf(char *, size_t, const char *, ...)
		    __attribute__((format(printf, 3, 4)));
static int	proto_fail(struct proto_req *, int, const char *, const char *,
		    ...) __attribute__((format(printf, 4, 5)));

static void
proto_errf(char *err, size_t errlen, const char *fmt, ...)
{
	va_list	ap;

	if (err == NULL || errlen == 0)
		return;
	va_start(ap, fmt);
	(void)vsnprintf(err, errlen, fmt, ap);
	va_end(ap);
}

static int
proto_fail(struct proto_req *req, int status, const char *code,
    const char *fmt, ...)
{
	va_list	ap;

	req->err_code = code;
	va_start(ap, fmt);
	(void)vsnprintf(req->err, sizeof(req->err), fmt, ap);
	va_end(ap);
	return status;
}

/*
 * Client bytes go into error replies and logs: keep them short, printable,
 * and free of the quote character so the message stays one readable line.
 */
static const char *
proto_quote(char *dst, size_t dstlen, const char *p, size_t n)
{
	size_t	i, j = 0, max = dstlen - 4;

	for (i = 0; i < n && j < max; i++) {
		unsigned char c = (unsigned char)p[i];

		dst[j++] = (c >= 0x20 && c < 0x7f && c != '"') ? (char)c : '?';
	}
	if (i < n) {
		memcpy(dst + j, "...", 3);
		j += 3;
	}
	dst[j] = '\0';
	return dst;
}

/*
 * Find the end of the line at p[0..avail).  1: *n is its length without the
 * EOL ("\n" or "\r\n"), *next the offset after the "\n".  0: no "\n" yet.
 * -1: no "\n" within max bytes, so the line is too long whatever follows.
 */
static int
proto_line(const char *p, size_t avail, size_t max, size_t *n, size_t *next)
{
	const char	*nl;
	size_t		 scan = avail < max ? avail : max;

	if ((nl = memchr(p, '\n', scan)) == NULL)
		return avail >= max ? -1 : 0;
	*next = (size_t)(nl - p) + 1;
	*n = (size_t)(nl - p);
	if (*n > 0 && p[*n - 1] == '\r')
		(*n)--;
	return 1;
}

/* Copy a short decimal out of the buffer and parse it with the checked helper. */
static int
proto_number(const char *p, size_t n, uint64_t min, uint64_t max,
    uint64_t *out)
{
	char	tmp[PROTO_NUM_MAX];

	if (n == 0 || n >= sizeof(tmp))
		return -1;
	memcpy(tmp, p, n);
	tmp[n] = '\0';
	return util_parse_u64(tmp, min, max, out);
}

void
proto_pub_init(struct proto_pub *pub)
{
	memset(pub, 0, sizeof(*pub));
	pub->mandatory = -1;
	pub->delivery_mode = 0;
	pub->priority = -1;
	pub->has_timestamp = 0;
}

static const struct prop_def *
proto_prop_find(const char *name, size_t n)
{
	size_t	i;

	for (i = 0; i < PROP_NDEFS; i++) {
		if (prop_defs[i].len == n &&
		    strncasecmp(prop_defs[i].name, name, n) == 0)
			return &prop_defs[i];
	}
	return NULL;
}

static struct proto_str *
proto_prop_str(struct proto_pub *pub, const struct prop_def *d)
{
	return (struct proto_str *)(void *)((char *)pub + d->off);
}

static const struct proto_str *
proto_prop_cstr(const struct proto_pub *pub, const struct prop_def *d)
{
	return (const struct proto_str *)(const void *)((const char *)pub +
	    d->off);
}

/* One "name: value" line (without its EOL) into pub. */
static int
proto_prop_line(struct proto_pub *pub, const char *p, size_t n,
    uint32_t *seen, char *err, size_t errlen)
{
	const struct prop_def	*d;
	const char		*colon, *v, *eq;
	struct proto_header	*h;
	size_t			 vlen, i;
	uint64_t		 num;
	char			 q[64], tmp[16];
	int			 b;

	if ((colon = memchr(p, ':', n)) == NULL) {
		proto_errf(err, errlen, "property line without ':': \"%s\"",
		    proto_quote(q, sizeof(q), p, n));
		return -1;
	}
	if ((d = proto_prop_find(p, (size_t)(colon - p))) == NULL) {
		proto_errf(err, errlen, "unknown property \"%s\"",
		    proto_quote(q, sizeof(q), p, (size_t)(colon - p)));
		return -1;
	}
	if (d->kind != PROP_HEADER) {
		uint32_t bit = 1U << (d - prop_defs);

		if (*seen & bit) {
			proto_errf(err, errlen, "%s: given twice", d->name);
			return -1;
		}
		*seen |= bit;
	}
	v = colon + 1;
	while (v < p + n && (*v == ' ' || *v == '\t'))
		v++;
	vlen = (size_t)(p + n - v);
	/* Values end up in C strings further on (logs, the client). */
	if (memchr(v, '\0', vlen) != NULL) {
		proto_errf(err, errlen, "%s: value contains a NUL byte",
		    d->name);
		return -1;
	}

	switch (d->kind) {
	case PROP_EXPIRATION:
		if (proto_number(v, vlen, 0, UINT64_MAX, &num) == -1) {
			proto_errf(err, errlen, "%s: \"%s\" is not a decimal "
			    "number of milliseconds", d->name,
			    proto_quote(q, sizeof(q), v, vlen));
			return -1;
		}
		/* FALLTHROUGH */
	case PROP_STR:
		if (vlen > PROTO_SHORTSTR_MAX) {
			proto_errf(err, errlen, "%s: longer than %d bytes",
			    d->name, PROTO_SHORTSTR_MAX);
			return -1;
		}
		/*
		 * What consumers, or the daemon, de-duplicate on: empty
		 * would collide.
		 */
		if (vlen == 0 &&
		    (d->off == offsetof(struct proto_pub, message_id) ||
		    d->off == offsetof(struct proto_pub, idempotency_key))) {
			proto_errf(err, errlen, "%s: empty", d->name);
			return -1;
		}
		proto_prop_str(pub, d)->p = v;
		proto_prop_str(pub, d)->len = vlen;
		break;
	case PROP_MANDATORY:
		if (vlen >= sizeof(tmp))
			b = -1;
		else {
			memcpy(tmp, v, vlen);
			tmp[vlen] = '\0';
			if (util_parse_bool(tmp, &b) == -1)
				b = -1;
		}
		if (b == -1) {
			proto_errf(err, errlen, "%s: \"%s\" is not yes/no, "
			    "true/false, on/off or 1/0", d->name,
			    proto_quote(q, sizeof(q), v, vlen));
			return -1;
		}
		pub->mandatory = b;
		break;
	case PROP_DELIVERY_MODE:
		if (proto_number(v, vlen, 1, 2, &num) == -1) {
			proto_errf(err, errlen, "%s: \"%s\" is not 1 or 2",
			    d->name, proto_quote(q, sizeof(q), v, vlen));
			return -1;
		}
		pub->delivery_mode = (int)num;
		break;
	case PROP_PRIORITY:
		if (proto_number(v, vlen, 0, 255, &num) == -1) {
			proto_errf(err, errlen, "%s: \"%s\" is not a number "
			    "from 0 to 255", d->name,
			    proto_quote(q, sizeof(q), v, vlen));
			return -1;
		}
		pub->priority = (int)num;
		break;
	case PROP_CONFIRM:
		if (proto_number(v, vlen, 1, PROTO_WAIT_MAX_MS, &num) == -1) {
			proto_errf(err, errlen, "%s: \"%s\" is not a number of "
			    "milliseconds from 1 to %d", d->name,
			    proto_quote(q, sizeof(q), v, vlen),
			    PROTO_WAIT_MAX_MS);
			return -1;
		}
		pub->confirm_ms = (unsigned)num;
		break;
	case PROP_MAX_AGE:
		if (proto_number(v, vlen, 1, PROTO_MAX_AGE_MAX_MS, &num) ==
		    -1) {
			proto_errf(err, errlen, "%s: \"%s\" is not a number of "
			    "milliseconds from 1 to %llu", d->name,
			    proto_quote(q, sizeof(q), v, vlen),
			    (unsigned long long)PROTO_MAX_AGE_MAX_MS);
			return -1;
		}
		pub->max_age_ms = num;
		break;
	case PROP_TIMESTAMP:
		if (proto_number(v, vlen, 0, UINT64_MAX, &num) == -1) {
			proto_errf(err, errlen, "%s: \"%s\" is not a decimal "
			    "Unix time", d->name,
			    proto_quote(q, sizeof(q), v, vlen));
			return -1;
		}
		pub->timestamp = num;
		pub->has_timestamp = 1;
		break;
	case PROP_HEADER:
		if (pub->nheaders == PROTO_MAX_HEADERS) {
			proto_errf(err, errlen, "%s: more than %d headers",
			    d->name, PROTO_MAX_HEADERS);
			return -1;
		}
		if ((eq = memchr(v, '=', vlen)) == NULL) {
			proto_errf(err, errlen, "%s: \"%s\" is not NAME=VALUE",
			    d->name, proto_quote(q, sizeof(q), v, vlen));
			return -1;
		}
		if (eq == v) {
			proto_errf(err, errlen, "%s: empty header name",
			    d->name);
			return -1;
		}
		if ((size_t)(eq - v) > PROTO_SHORTSTR_MAX) {
			proto_errf(err, errlen, "%s: header name longer than "
			    "%d bytes", d->name, PROTO_SHORTSTR_MAX);
			return -1;
		}
		/* AMQP tables are looked up by name: a repeat is ambiguous. */
		for (i = 0; i < pub->nheaders; i++) {
			h = &pub->headers[i];
			if (h->name.len == (size_t)(eq - v) &&
			    memcmp(h->name.p, v, h->name.len) == 0) {
				proto_errf(err, errlen, "%s: \"%s\" given twice",
				    d->name, proto_quote(q, sizeof(q), v,
				    (size_t)(eq - v)));
				return -1;
			}
		}
		h = &pub->headers[pub->nheaders++];
		h->name.p = v;
		h->name.len = (size_t)(eq - v);
		h->value.p = eq + 1;
		h->value.len = (size_t)(p + n - (eq + 1));
		break;
	}
	return 0;
}

int
proto_parse_props(const char *block, size_t len, struct proto_pub *pub,
    char *err, size_t errlen)
{
	const char	*p, *end, *nl, *lend, *next;
	uint32_t	 seen = 0;
	size_t		 n;

	proto_pub_init(pub);
	if (err != NULL && errlen > 0)
		err[0] = '\0';
	if (block == NULL && len != 0) {
		proto_errf(err, errlen, "no property block");
		return -1;
	}
	if (len > PROTO_MAX_STORED_BLOCK) {
		proto_errf(err, errlen, "property block longer than %d bytes",
		    PROTO_MAX_STORED_BLOCK);
		return -1;
	}
	pub->props.p = block;
	pub->props.len = len;
	if (len == 0)
		return 0;
	end = block + len;
	/* A stored block ends in "\n", but a missing last one is harmless. */
	for (p = block; p < end; p = next) {
		nl = memchr(p, '\n', (size_t)(end - p));
		lend = nl != NULL ? nl : end;
		next = nl != NULL ? nl + 1 : end;
		if ((size_t)(next - p) > PROTO_MAX_LINE) {
			proto_errf(err, errlen, "property line longer than %d "
			    "bytes", PROTO_MAX_LINE);
			return -1;
		}
		n = (size_t)(lend - p);
		if (n > 0 && p[n - 1] == '\r')
			n--;
		if (n == 0) {
			proto_errf(err, errlen, "empty line in property block");
			return -1;
		}
		if (proto_prop_line(pub, p, n, &seen, err, errlen) == -1)
			return -1;
	}
	return 0;
}

/* The next blank-separated word of p[0..n): its length; *rest after it. */
static size_t
proto_word(const char *p, size_t n, const char **rest, size_t *restlen)
{
	size_t	w, r;

	for (w = 0; w < n && p[w] != ' ' && p[w] != '\t'; w++)
		;
	for (r = w; r < n && (p[r] == ' ' || p[r] == '\t'); r++)
		;
	*rest = p + r;
	*restlen = n - r;
	return w;
}

/* What follows "DEAD LIST": "[max] [AFTER id]". */
static int
proto_parse_dead_list(const char *arg, size_t alen, struct proto_req *req)
{
	const char	*rest;
	size_t		 wlen, rlen;
	uint64_t	 num;
	char		 q[64];

	wlen = proto_word(arg, alen, &rest, &rlen);
	if (wlen > 0 && !(wlen == 5 && strncasecmp(arg, "AFTER", 5) == 0)) {
		if (proto_number(arg, wlen, 1, PROTO_DEAD_LIST_MAX,
		    &num) == -1)
			return proto_fail(req, PROTO_BAD, PROTO_E_BADREQ,
			    "DEAD LIST: invalid count \"%s\" (expected 1 to "
			    "%d)", proto_quote(q, sizeof(q), arg, wlen),
			    PROTO_DEAD_LIST_MAX);
		req->dead_max = (unsigned)num;
		arg = rest;
		alen = rlen;
		wlen = proto_word(arg, alen, &rest, &rlen);
	}
	if (wlen == 0)
		return PROTO_DONE;
	if (!(wlen == 5 && strncasecmp(arg, "AFTER", 5) == 0))
		return proto_fail(req, PROTO_BAD, PROTO_E_BADREQ,
		    "DEAD LIST takes a count and AFTER <id>, not \"%s\"",
		    proto_quote(q, sizeof(q), arg, wlen));
	arg = rest;
	alen = rlen;
	wlen = proto_word(arg, alen, &rest, &rlen);
	if (wlen == 0)
		return proto_fail(req, PROTO_BAD, PROTO_E_BADREQ,
		    "DEAD LIST AFTER needs an id");
	if (proto_number(arg, wlen, 0, INT64_MAX, &num) == -1)
		return proto_fail(req, PROTO_BAD, PROTO_E_BADREQ,
		    "DEAD LIST AFTER: invalid id \"%s\" (expected a number)",
		    proto_quote(q, sizeof(q), arg, wlen));
	if (rlen != 0)
		return proto_fail(req, PROTO_BAD, PROTO_E_BADREQ,
		    "DEAD LIST takes at most a count and AFTER <id>");
	req->dead_after = (int64_t)num;
	return PROTO_DONE;
}

/*
 * "DEAD LIST [max] [AFTER id]", "DEAD RETRY id|ALL", "DEAD PURGE id|ALL":
 * arg is what follows the verb, trimmed.  The line is complete, so every
 * mistake is BAD.
 */
static int
proto_parse_dead(const char *arg, size_t alen, struct proto_req *req)
{
	const char	*rest, *name;
	size_t		 wlen, rlen, i;
	uint64_t	 num;
	char		 q[64];

	if (alen == 0)
		return proto_fail(req, PROTO_BAD, PROTO_E_BADREQ,
		    "DEAD needs a subcommand: LIST, RETRY or PURGE");
	wlen = proto_word(arg, alen, &rest, &rlen);
	for (i = 0; i < sizeof(proto_dead_ops) / sizeof(proto_dead_ops[0]);
	    i++) {
		if (strlen(proto_dead_ops[i].name) == wlen &&
		    strncasecmp(proto_dead_ops[i].name, arg, wlen) == 0)
			break;
	}
	if (i == sizeof(proto_dead_ops) / sizeof(proto_dead_ops[0]))
		return proto_fail(req, PROTO_BAD, PROTO_E_BADREQ,
		    "DEAD: unknown subcommand \"%s\" (expected LIST, RETRY "
		    "or PURGE)", proto_quote(q, sizeof(q), arg, wlen));
	name = proto_dead_ops[i].name;
	req->dead_op = proto_dead_ops[i].op;

	arg = rest;
	alen = rlen;
	if (req->dead_op == PROTO_DEAD_LIST)
		return proto_parse_dead_list(arg, alen, req);
	wlen = proto_word(arg, alen, &rest, &rlen);
	if (rlen != 0)
		return proto_fail(req, PROTO_BAD, PROTO_E_BADREQ,
		    "DEAD %s takes one argument (an id or ALL)", name);
	if (wlen == 0)
		return proto_fail(req, PROTO_BAD, PROTO_E_BADREQ,
		    "DEAD %s needs a message id or ALL", name);
	if (wlen == 3 && strncasecmp(arg, "ALL", 3) == 0) {
		req->dead_id = 0;
		return PROTO_DONE;
	}
	if (proto_number(arg, wlen, 1, INT64_MAX, &num) == -1)
		return proto_fail(req, PROTO_BAD, PROTO_E_BADREQ,
		    "DEAD %s: invalid id \"%s\" (expected a number above 0, "
		    "or ALL)", name, proto_quote(q, sizeof(q), arg, wlen));
	req->dead_id = (int64_t)num;
	return PROTO_DONE;
}

int
proto_parse(const char *buf, size_t len, const struct proto_limits *lim,
    struct proto_req *req, size_t *consumed)
{
	const char	*line, *arg;
	size_t		 off = 0, n, next, vlen, alen, i;
	size_t		 bs, pos, blockend, hdr, total, avail;
	uint64_t	 blen;
	char		 q[64];
	int		 r;
	size_t		 maxline = lim != NULL && lim->max_line > 0 &&
			    lim->max_line < PROTO_MAX_LINE ? lim->max_line :
			    PROTO_MAX_LINE;

	*consumed = 0;
	req->verb = 0;
	req->dead_op = 0;
	req->dead_id = 0;
	req->dead_max = 0;
	req->dead_after = 0;
	req->wait_ms = 0;
	req->status_mid.p = NULL;
	req->status_mid.len = 0;
	req->need = 0;
	req->err_code = NULL;
	req->err[0] = '\0';

	/* Empty lines between requests. */
	for (;;) {
		if (off > PROTO_MAX_BLANK)
			return proto_fail(req, PROTO_FATAL, PROTO_E_PROTO,
			    "more than %d bytes of empty lines", PROTO_MAX_BLANK);
		if (off == len)
			return PROTO_INCOMPLETE;
		if (buf[off] == '\n') {
			off++;
			continue;
		}
		if (buf[off] == '\r') {
			if (off + 1 == len)
				return PROTO_INCOMPLETE;
			if (buf[off + 1] == '\n') {
				off += 2;
				continue;
			}
		}
		break;
	}

	if ((r = proto_line(buf + off, len - off, maxline, &n, &next)) == 0)
		return PROTO_INCOMPLETE;
	if (r == -1)
		return proto_fail(req, PROTO_FATAL, PROTO_E_PROTO,
		    "line too long (over %zu bytes)", maxline);
	line = buf + off;

	for (vlen = 0; vlen < n && line[vlen] != ' ' && line[vlen] != '\t';
	    vlen++)
		;
	arg = line + vlen;
	alen = n - vlen;
	while (alen > 0 && (*arg == ' ' || *arg == '\t')) {
		arg++;
		alen--;
	}
	while (alen > 0 && (arg[alen - 1] == ' ' || arg[alen - 1] == '\t'))
		alen--;

	for (i = 0; i < sizeof(proto_verbs) / sizeof(proto_verbs[0]); i++) {
		if (strlen(proto_verbs[i].name) == vlen &&
		    strncasecmp(proto_verbs[i].name, line, vlen) == 0)
			break;
	}
	if (i == sizeof(proto_verbs) / sizeof(proto_verbs[0])) {
		*consumed = off + next;
		if (vlen == 0)
			return proto_fail(req, PROTO_BAD, PROTO_E_UNKNOWN,
			    "a request line starts with its command, not "
			    "with a blank");
		return proto_fail(req, PROTO_BAD, PROTO_E_UNKNOWN,
		    "unknown command \"%s\"", proto_quote(q, sizeof(q), line,
		    vlen));
	}
	req->verb = proto_verbs[i].verb;

	if (req->verb == PROTO_DEAD) {
		*consumed = off + next;
		return proto_parse_dead(arg, alen, req);
	}
	if (req->verb == PROTO_STATUS) {
		*consumed = off + next;
		if (alen == 0)
			return proto_fail(req, PROTO_BAD, PROTO_E_BADREQ,
			    "STATUS needs a message-id");
		if (alen > PROTO_SHORTSTR_MAX)
			return proto_fail(req, PROTO_BAD, PROTO_E_BADREQ,
			    "STATUS: message-id longer than %d bytes",
			    PROTO_SHORTSTR_MAX);
		if (memchr(arg, '\0', alen) != NULL)
			return proto_fail(req, PROTO_BAD, PROTO_E_BADREQ,
			    "STATUS: message-id contains a NUL byte");
		req->status_mid.p = arg;
		req->status_mid.len = alen;
		return PROTO_DONE;
	}
	if (req->verb == PROTO_WAIT && alen > 0) {
		uint64_t	num;

		*consumed = off + next;
		if (proto_number(arg, alen, 1, PROTO_WAIT_MAX_MS, &num) == -1)
			return proto_fail(req, PROTO_BAD, PROTO_E_BADREQ,
			    "WAIT: invalid time \"%s\" (expected milliseconds "
			    "from 1 to %d)", proto_quote(q, sizeof(q), arg,
			    alen), PROTO_WAIT_MAX_MS);
		req->wait_ms = (unsigned)num;
		return PROTO_DONE;
	}
	if (req->verb != PROTO_PUB) {
		if (alen != 0) {
			*consumed = off + next;
			return proto_fail(req, PROTO_BAD, PROTO_E_BADREQ,
			    "%s takes no arguments", proto_verbs[i].name);
		}
		*consumed = off + next;
		return PROTO_DONE;
	}

	/*
	 * Without a trustworthy length the end of the body is unknown, so
	 * nothing after this line can be parsed.  Half of SIZE_MAX keeps the
	 * offset arithmetic below free of overflow.
	 */
	if (alen == 0)
		return proto_fail(req, PROTO_FATAL, PROTO_E_PROTO,
		    "PUB needs a body length");
	if (proto_number(arg, alen, 0, SIZE_MAX / 2, &blen) == -1)
		return proto_fail(req, PROTO_FATAL, PROTO_E_PROTO,
		    "PUB: invalid body length \"%s\"",
		    proto_quote(q, sizeof(q), arg, alen));

	/* The property block: lines up to an empty one. */
	bs = pos = off + next;
	for (;;) {
		r = proto_line(buf + pos, len - pos, maxline, &n, &next);
		if (r == -1)
			return proto_fail(req, PROTO_FATAL, PROTO_E_PROTO,
			    "property line too long (over %zu bytes)",
			    maxline);
		if (r == 0) {
			/*
			 * Fail as soon as the block cannot fit whatever comes
			 * next; only a lone "\r" may still be the empty line.
			 */
			avail = len - pos;
			if (avail > 0 && !(avail == 1 && buf[pos] == '\r') &&
			    pos + avail + 1 - bs > PROTO_MAX_BLOCK)
				return proto_fail(req, PROTO_FATAL,
				    PROTO_E_PROTO, "property block too long "
				    "(over %d bytes)", PROTO_MAX_BLOCK);
			return PROTO_INCOMPLETE;
		}
		if (n == 0)
			break;
		if (pos + next - bs > PROTO_MAX_BLOCK)
			return proto_fail(req, PROTO_FATAL, PROTO_E_PROTO,
			    "property block too long (over %d bytes)",
			    PROTO_MAX_BLOCK);
		pos += next;
	}
	blockend = pos;
	hdr = pos + next;

	if (lim != NULL && blen > lim->max_body) {
		*consumed = hdr + (size_t)blen;
		return proto_fail(req, PROTO_BAD, PROTO_E_TOOBIG,
		    "body of %llu bytes is over the limit of %zu",
		    (unsigned long long)blen, lim->max_body);
	}

	total = hdr + (size_t)blen;
	if (len < total + 1) {
		req->need = total + 1;
		return PROTO_INCOMPLETE;
	}
	if (buf[total] == '\r') {
		if (len < total + 2) {
			req->need = total + 2;
			return PROTO_INCOMPLETE;
		}
		if (buf[total + 1] != '\n')
			return proto_fail(req, PROTO_FATAL, PROTO_E_PROTO,
			    "body of %llu bytes not followed by a newline",
			    (unsigned long long)blen);
		total += 2;
	} else if (buf[total] == '\n')
		total += 1;
	else
		return proto_fail(req, PROTO_FATAL, PROTO_E_PROTO,
		    "body of %llu bytes not followed by a newline",
		    (unsigned long long)blen);

	if (proto_parse_props(buf + bs, blockend - bs, &req->pub, req->err,
	    sizeof(req->err)) == -1) {
		*consumed = total;
		req->err_code = PROTO_E_BADREQ;
		return PROTO_BAD;
	}
	if (lim != NULL && lim->max_headers > 0 &&
	    req->pub.nheaders > lim->max_headers) {
		*consumed = total;
		return proto_fail(req, PROTO_BAD, PROTO_E_BADREQ,
		    "more than %u headers (max_headers)", lim->max_headers);
	}
	req->pub.body.p = buf + hdr;
	req->pub.body.len = (size_t)blen;
	*consumed = total;
	return PROTO_DONE;
}

/* Can s be written as a property value and read back the same? */
static int
proto_encodable(const char *what, const struct proto_str *s, size_t max,
    char *err, size_t errlen)
{
	size_t	i;

	if (s->p == NULL && s->len != 0) {
		proto_errf(err, errlen, "%s: no data", what);
		return -1;
	}
	if (s->len > max) {
		proto_errf(err, errlen, "%s: longer than %zu bytes", what, max);
		return -1;
	}
	for (i = 0; i < s->len; i++) {
		if (s->p[i] == '\n' || s->p[i] == '\r' || s->p[i] == '\0') {
			proto_errf(err, errlen, "%s: contains a %s", what,
			    s->p[i] == '\0' ? "NUL byte" : "line break");
			return -1;
		}
	}
	return 0;
}

/* The parser strips blanks after ':', so a value cannot start with one. */
static int
proto_encodable_start(const char *what, const struct proto_str *s, char *err,
    size_t errlen)
{
	if (s->len > 0 && (s->p[0] == ' ' || s->p[0] == '\t')) {
		proto_errf(err, errlen, "%s: starts with a space or tab", what);
		return -1;
	}
	return 0;
}

static void
proto_put_str(struct buf *out, const char *name, const struct proto_str *s)
{
	buf_appends(out, name);
	if (s->len > 0) {
		buf_append(out, ": ", 2);
		buf_append(out, s->p, s->len);
	} else
		buf_append(out, ":", 1);
	buf_append(out, "\n", 1);
}

static int
proto_encode_prop(struct buf *out, const struct proto_pub *pub,
    const struct prop_def *d, char *err, size_t errlen)
{
	const struct proto_str		*s;
	const struct proto_header	*h;
	size_t				 i, j, k, start;
	char				 q[64];

	switch (d->kind) {
	case PROP_STR:
	case PROP_EXPIRATION:
		s = proto_prop_cstr(pub, d);
		if (s->p == NULL)
			return 0;
		if (proto_encodable(d->name, s, PROTO_SHORTSTR_MAX, err,
		    errlen) == -1 ||
		    proto_encodable_start(d->name, s, err, errlen) == -1)
			return -1;
		if (d->kind == PROP_EXPIRATION) {
			uint64_t num;

			for (i = 0; i < s->len; i++) {
				if (s->p[i] < '0' || s->p[i] > '9')
					break;
			}
			if (s->len == 0 || i != s->len ||
			    proto_number(s->p, s->len, 0, UINT64_MAX,
			    &num) == -1) {
				proto_errf(err, errlen, "%s: not a decimal "
				    "number of milliseconds", d->name);
				return -1;
			}
		}
		proto_put_str(out, d->name, s);
		return 0;
	case PROP_MANDATORY:
		if (pub->mandatory == -1)
			return 0;
		if (pub->mandatory != 0 && pub->mandatory != 1)
			break;
		buf_printf(out, "%s: %s\n", d->name,
		    pub->mandatory ? "yes" : "no");
		return 0;
	case PROP_DELIVERY_MODE:
		if (pub->delivery_mode == 0)
			return 0;
		if (pub->delivery_mode != 1 && pub->delivery_mode != 2)
			break;
		buf_printf(out, "%s: %d\n", d->name, pub->delivery_mode);
		return 0;
	case PROP_PRIORITY:
		if (pub->priority == -1)
			return 0;
		if (pub->priority < 0 || pub->priority > 255)
			break;
		buf_printf(out, "%s: %d\n", d->name, pub->priority);
		return 0;
	case PROP_CONFIRM:
		if (pub->confirm_ms == 0)
			return 0;
		if (pub->confirm_ms > PROTO_WAIT_MAX_MS)
			break;
		buf_printf(out, "%s: %u\n", d->name, pub->confirm_ms);
		return 0;
	case PROP_MAX_AGE:
		if (pub->max_age_ms == 0)
			return 0;
		if (pub->max_age_ms > PROTO_MAX_AGE_MAX_MS)
			break;
		buf_printf(out, "%s: %llu\n", d->name,
		    (unsigned long long)pub->max_age_ms);
		return 0;
	case PROP_TIMESTAMP:
		if (!pub->has_timestamp)
			return 0;
		buf_printf(out, "%s: %llu\n", d->name,
		    (unsigned long long)pub->timestamp);
		return 0;
	case PROP_HEADER:
		if (pub->nheaders > PROTO_MAX_HEADERS) {
			proto_errf(err, errlen, "%s: more than %d headers",
			    d->name, PROTO_MAX_HEADERS);
			return -1;
		}
		for (i = 0; i < pub->nheaders; i++) {
			h = &pub->headers[i];
			if (h->name.len == 0) {
				proto_errf(err, errlen, "%s: empty header name",
				    d->name);
				return -1;
			}
			if (proto_encodable("header name", &h->name,
			    PROTO_SHORTSTR_MAX, err, errlen) == -1 ||
			    proto_encodable_start("header name", &h->name, err,
			    errlen) == -1 ||
			    proto_encodable("header value", &h->value,
			    SIZE_MAX, err, errlen) == -1)
				return -1;
			if (memchr(h->name.p, '=', h->name.len) != NULL) {
				proto_errf(err, errlen, "%s: name contains '='",
				    d->name);
				return -1;
			}
			for (j = 0; j < i; j++) {
				if (pub->headers[j].name.len == h->name.len &&
				    memcmp(pub->headers[j].name.p, h->name.p,
				    h->name.len) == 0) {
					/* As the parser says it. */
					proto_errf(err, errlen, "%s: \"%s\" "
					    "given twice", d->name,
					    proto_quote(q, sizeof(q), h->name.p,
					    h->name.len));
					return -1;
				}
			}
			start = out->len;
			buf_appends(out, d->name);
			buf_append(out, ": ", 2);
			buf_append(out, h->name.p, h->name.len);
			buf_append(out, "=", 1);
			if (h->value.len > 0)
				buf_append(out, h->value.p, h->value.len);
			buf_append(out, "\n", 1);
			k = out->len - start;
			if (k > PROTO_MAX_LINE) {
				proto_errf(err, errlen, "%s: line longer than "
				    "%d bytes", d->name, PROTO_MAX_LINE);
				return -1;
			}
		}
		return 0;
	}
	proto_errf(err, errlen, "%s: value out of range", d->name);
	return -1;
}

int
proto_encode_pub(struct buf *out, const struct proto_pub *pub, char *err,
    size_t errlen)
{
	size_t	start = out->len, bs, i;

	if (err != NULL && errlen > 0)
		err[0] = '\0';
	if (pub->body.p == NULL && pub->body.len != 0) {
		proto_errf(err, errlen, "body: no data");
		return -1;
	}
	if (pub->body.len > SIZE_MAX / 2) {
		proto_errf(err, errlen, "body: too long");
		return -1;
	}
	if (pub->message_id.p != NULL && pub->message_id.len == 0) {
		proto_errf(err, errlen, "message-id: empty");
		return -1;
	}
	if (pub->idempotency_key.p != NULL && pub->idempotency_key.len == 0) {
		proto_errf(err, errlen, "idempotency-key: empty");
		return -1;
	}
	buf_printf(out, "PUB %zu\n", pub->body.len);
	bs = out->len;
	for (i = 0; i < PROP_NDEFS; i++) {
		if (proto_encode_prop(out, pub, &prop_defs[i], err, errlen) == -1)
			goto fail;
	}
	if (out->len - bs > PROTO_MAX_BLOCK) {
		proto_errf(err, errlen, "property block longer than %d bytes",
		    PROTO_MAX_BLOCK);
		goto fail;
	}
	buf_append(out, "\n", 1);
	if (pub->body.len > 0)
		buf_append(out, pub->body.p, pub->body.len);
	buf_append(out, "\n", 1);
	return 0;

fail:
	/* Leave out as it was: a caller may be batching requests in it. */
	out->len = start;
	if (out->data != NULL)
		out->data[start] = '\0';
	return -1;
}

/* One field of a DEAD LIST line: "-" when empty, blanks for tabs and EOLs. */
static void
proto_dead_field(struct buf *out, const char *p, size_t n)
{
	size_t	i, start;

	if (p == NULL || n == 0) {
		buf_append(out, "-", 1);
		return;
	}
	start = out->len;
	buf_append(out, p, n);
	for (i = start; i < out->len; i++) {
		if (out->data[i] == '\t' || out->data[i] == '\r' ||
		    out->data[i] == '\n')
			out->data[i] = ' ';
	}
}

void
proto_dead_line(struct buf *out, int64_t id, int64_t parked_ms,
    unsigned attempts, uint64_t bytes, const struct proto_pub *props,
    const char *reason)
{
	buf_printf(out, "%lld\t%lld\t%u\t%llu\t", (long long)id,
	    (long long)parked_ms, attempts, (unsigned long long)bytes);
	if (props != NULL) {
		proto_dead_field(out, props->exchange.p, props->exchange.len);
		buf_append(out, "\t", 1);
		proto_dead_field(out, props->routing_key.p,
		    props->routing_key.len);
		buf_append(out, "\t", 1);
		proto_dead_field(out, props->message_id.p,
		    props->message_id.len);
	} else
		buf_appends(out, "-\t-\t-");
	buf_append(out, "\t", 1);
	proto_dead_field(out, reason, reason != NULL ? strlen(reason) : 0);
	buf_append(out, "\n", 1);
}

const char *
proto_store_error(int full, const char *why, char *err, size_t errlen)
{
	if (full) {
		snprintf(err, errlen, "outbox full: disk full (%s); retry later",
		    why);
		return PROTO_E_FULL;
	}
	snprintf(err, errlen, "outbox write failed (%s); retry later", why);
	return PROTO_E_STORE;
}

const char *const proto_link_states[PROTO_LINK_STATES] = {
	"disconnected", "connecting", "connected", "blocked", "stopped",
};

const char *
proto_link_state(int state)
{
	if (state < 0 || state >= PROTO_LINK_STATES)
		return "unknown";
	return proto_link_states[state];
}
