/*
 * test_protocol.c: the request parser and the PUB encoder.  Every parse runs
 * on a heap copy of exactly len bytes, so a read past len shows up under
 * valgrind or ASan.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "protocol.h"
#include "tap.h"
#include "util.h"

#define NOLIMIT	((size_t)1 << 40)

static char	*cur;		/* the exact-size copy of the last input */

static int
parse_n(const char *s, size_t len, size_t max_body, struct proto_req *req,
    size_t *consumed)
{
	struct proto_limits lim;

	free(cur);
	cur = xmalloc(len);
	if (len > 0)
		memcpy(cur, s, len);
	memset(&lim, 0, sizeof(lim));
	lim.max_body = max_body;
	return proto_parse(cur, len, &lim, req, consumed);
}

static int
parse_s(const char *s, struct proto_req *req, size_t *consumed)
{
	return parse_n(s, strlen(s), NOLIMIT, req, consumed);
}

static int
streq(const struct proto_str *ps, const char *s)
{
	return ps->p != NULL && ps->len == strlen(s) &&
	    memcmp(ps->p, s, ps->len) == 0;
}

static int
str_same(const struct proto_str *a, const struct proto_str *b)
{
	if (a->p == NULL || b->p == NULL)
		return a->p == NULL && b->p == NULL;
	return a->len == b->len && (a->len == 0 ||
	    memcmp(a->p, b->p, a->len) == 0);
}

/* Do a and b describe the same message (props field aside)? */
static int
pub_same(const struct proto_pub *a, const struct proto_pub *b, int body,
    const char **why)
{
	unsigned i;

#define SAME(f) do {							\
	if (!str_same(&a->f, &b->f)) {					\
		*why = #f;						\
		return 0;						\
	}								\
} while (0)
	SAME(exchange);
	SAME(routing_key);
	SAME(content_type);
	SAME(content_encoding);
	SAME(correlation_id);
	SAME(reply_to);
	SAME(expiration);
	SAME(message_id);
	SAME(type);
	SAME(app_id);
	SAME(idempotency_key);
#undef SAME
	*why = "scalar";
	if (a->mandatory != b->mandatory ||
	    a->delivery_mode != b->delivery_mode ||
	    a->priority != b->priority ||
	    a->has_timestamp != b->has_timestamp ||
	    (a->has_timestamp && a->timestamp != b->timestamp))
		return 0;
	*why = "nheaders";
	if (a->nheaders != b->nheaders)
		return 0;
	*why = "header";
	for (i = 0; i < a->nheaders; i++) {
		struct proto_str av = a->headers[i].value;
		struct proto_str bv = b->headers[i].value;

		/* An empty value may be written with a NULL pointer. */
		if (av.p == NULL)
			av.p = "";
		if (bv.p == NULL)
			bv.p = "";
		if (!str_same(&a->headers[i].name, &b->headers[i].name) ||
		    !str_same(&av, &bv))
			return 0;
	}
	*why = "body";
	if (body && (a->body.len != b->body.len || (a->body.len > 0 &&
	    memcmp(a->body.p, b->body.p, a->body.len) != 0)))
		return 0;
	return 1;
}

static void
test_simple_verbs(void)
{
	static const struct {
		const char	*in;
		enum proto_verb	 verb;
		size_t		 consumed;
	} cases[] = {
		{ "PING\n", PROTO_PING, 5 },
		{ "ping\n", PROTO_PING, 5 },
		{ "PiNg\r\n", PROTO_PING, 6 },
		{ "STATS\n", PROTO_STATS, 6 },
		{ "stats\r\n", PROTO_STATS, 7 },
		{ "RESET\n", PROTO_RESET, 6 },
		{ "Reset\n", PROTO_RESET, 6 },
		{ "PING  \n", PROTO_PING, 7 },
		{ "PING\t\r\n", PROTO_PING, 7 },
		{ "\nPING\n", PROTO_PING, 6 },
		{ "\r\n\n\r\nPING\n", PROTO_PING, 10 },
		{ "PING\nPING\n", PROTO_PING, 5 },
		{ "PING\nPUB 5\n", PROTO_PING, 5 },
	};
	struct proto_req	req;
	size_t			i, c;

	for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		c = 99;
		is_int(parse_s(cases[i].in, &req, &c), PROTO_DONE,
		    "verb %zu: done", i);
		is_int(req.verb, cases[i].verb, "verb %zu: verb", i);
		is_int(c, cases[i].consumed, "verb %zu: consumed", i);
		ok(req.err_code == NULL, "verb %zu: no error code", i);
	}
}

static void
test_args_and_unknown(void)
{
	static const struct {
		const char	*in;
		const char	*code;
		size_t		 consumed;
		const char	*errpart;
	} cases[] = {
		{ "PING x\n", PROTO_E_BADREQ, 7, "PING takes no arguments" },
		{ "stats 1 2\r\n", PROTO_E_BADREQ, 11, "STATS" },
		{ "\nRESET now\nPING\n", PROTO_E_BADREQ, 11, "RESET" },
		{ "FOO\n", PROTO_E_UNKNOWN, 4, "\"FOO\"" },
		{ "FOO bar baz\r\nPING\n", PROTO_E_UNKNOWN, 13, "\"FOO\"" },
		{ "\n\r\nFOO\n", PROTO_E_UNKNOWN, 7, "FOO" },
		{ "PUBX 5\n", PROTO_E_UNKNOWN, 7, "PUBX" },
		{ "PINGPING\n", PROTO_E_UNKNOWN, 9, "PINGPING" },
		{ " PING\n", PROTO_E_UNKNOWN, 6, "not with a blank" },
		{ "\tPING\n", PROTO_E_UNKNOWN, 6, "not with a blank" },
		{ "\rPING\n", PROTO_E_UNKNOWN, 6, "\"?PING\"" },
		{ "PING\r\r\n", PROTO_E_UNKNOWN, 7, "\"PING?\"" },
		{ "P\"\x01\xff\n", PROTO_E_UNKNOWN, 5, "\"P???\"" },
	};
	struct proto_req	req;
	size_t			i, c;

	for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		c = 0;
		is_int(parse_s(cases[i].in, &req, &c), PROTO_BAD,
		    "bad %zu: BAD", i);
		is_str(req.err_code, cases[i].code, "bad %zu: code", i);
		is_int(c, cases[i].consumed, "bad %zu: consumed", i);
		ok(strstr(req.err, cases[i].errpart) != NULL,
		    "bad %zu: message '%s'", i, req.err);
	}

	/* Long unknown verbs are cut in the message. */
	{
		char line[300];

		memset(line, 'A', 200);
		memcpy(line + 200, "\n", 2);
		is_int(parse_s(line, &req, &c), PROTO_BAD, "long verb: BAD");
		is_int(c, 201, "long verb: consumed");
		ok(strlen(req.err) < 100 && strstr(req.err, "...") != NULL,
		    "long verb: message cut '%s'", req.err);
	}
}

static void
test_empty_lines(void)
{
	struct proto_req	req;
	char			*b;
	size_t			c, n;

	c = 7;
	is_int(parse_s("", &req, &c), PROTO_INCOMPLETE, "empty input");
	is_int(c, 0, "empty input: consumed 0");
	is_int(req.need, 0, "empty input: need unknown");
	is_int(parse_s("\n\n\r\n", &req, &c), PROTO_INCOMPLETE,
	    "only empty lines: incomplete");
	is_int(c, 0, "only empty lines: consumed 0");
	is_int(parse_s("\n\r", &req, &c), PROTO_INCOMPLETE,
	    "lone CR at the end: incomplete");
	is_int(parse_s("PIN", &req, &c), PROTO_INCOMPLETE, "partial verb");
	is_int(parse_s("PING\r", &req, &c), PROTO_INCOMPLETE,
	    "verb without LF");

	/* Empty lines are bounded: exactly the limit is fine, one more not. */
	n = PROTO_MAX_LINE;
	b = xmalloc(n + 16);
	memset(b, '\n', n);
	memcpy(b + n, "PING\n", 5);
	is_int(parse_n(b, n + 5, NOLIMIT, &req, &c), PROTO_DONE,
	    "%zu empty lines then PING", n);
	is_int(c, n + 5, "consumed with the empty lines");
	memset(b, '\n', n + 1);
	memcpy(b + n + 1, "PING\n", 5);
	is_int(parse_n(b, n + 6, NOLIMIT, &req, &c), PROTO_FATAL,
	    "%zu empty lines then PING", n + 1);
	is_str(req.err_code, PROTO_E_PROTO, "too many empty lines: PROTO");
	is_int(parse_n(b, n + 1, NOLIMIT, &req, &c), PROTO_FATAL,
	    "too many empty lines alone");
	is_int(parse_n(b, n, NOLIMIT, &req, &c), PROTO_INCOMPLETE,
	    "empty lines at the limit alone");
	free(b);
}

static void
test_pub_basic(void)
{
	struct proto_req	req;
	size_t			c;

	is_int(parse_s("PUB 5\n\nhello\n", &req, &c), PROTO_DONE, "pub: done");
	is_int(req.verb, PROTO_PUB, "pub: verb");
	is_int(c, 13, "pub: consumed");
	ok(streq(&req.pub.body, "hello"), "pub: body");
	ok(req.pub.props.p != NULL && req.pub.props.len == 0,
	    "pub: empty props block");
	ok(req.pub.exchange.p == NULL && req.pub.routing_key.p == NULL &&
	    req.pub.message_id.p == NULL && req.pub.mandatory == -1 &&
	    req.pub.delivery_mode == 0 && req.pub.priority == -1 &&
	    !req.pub.has_timestamp && req.pub.nheaders == 0,
	    "pub: every property unset");

	is_int(parse_s("pub 0\n\n\n", &req, &c), PROTO_DONE, "pub 0: done");
	is_int(c, 8, "pub 0: consumed");
	is_int(req.pub.body.len, 0, "pub 0: empty body");

	is_int(parse_s("PUB 5\r\n\r\nhello\r\n", &req, &c), PROTO_DONE,
	    "pub crlf: done");
	is_int(c, 16, "pub crlf: consumed");
	ok(streq(&req.pub.body, "hello"), "pub crlf: body");

	is_int(parse_s("PUB  005 \nexchange: x\r\n\r\nhello\n", &req, &c),
	    PROTO_DONE, "pub with blanks and leading zeros: done");
	ok(streq(&req.pub.body, "hello"), "... body");
	ok(streq(&req.pub.props, "exchange: x\r\n") &&
	    streq(&req.pub.exchange, "x"), "... props kept raw, CR dropped");

	/* The body is binary: newlines and a fake request inside. */
	is_int(parse_n("PUB 12\n\n\nPING\n\0\r\n\rab\n", 22, NOLIMIT, &req, &c),
	    PROTO_DONE, "binary body: done");
	is_int(c, 21, "binary body: consumed");
	ok(req.pub.body.len == 12 && memcmp(req.pub.body.p,
	    "\nPING\n\0\r\n\rab", 12) == 0, "binary body: bytes");

	/* A NULL limit means no limit. */
	{
		const char *m = "PUB 3\n\nabc\n";

		is_int(proto_parse(m, strlen(m), NULL, &req, &c), PROTO_DONE,
		    "NULL limits: done");
	}
}

static void
test_properties(void)
{
	static const char msg[] =
	    "PUB 2\n"
	    "exchange: ex.1\n"
	    "Routing-Key:\trk.a.b\n"
	    "MANDATORY:yes\n"
	    "content-type: application/json; charset=utf-8\n"
	    "content-encoding:   gzip\r\n"
	    "delivery-mode: 2\n"
	    "priority: 255\n"
	    "correlation-id: corr:1\n"
	    "reply-to: amq.rabbitmq.reply-to\n"
	    "expiration: 60000\n"
	    "message-id: m-1\n"
	    "timestamp: 18446744073709551615\n"
	    "type: t\n"
	    "app-id: app \n"
	    "header: x-a=1\n"
	    "HEADER: x-b==2=\n"
	    "header: x-c=\n"
	    "header:x-d:e= v \n"
	    "\n"
	    "hi\n";
	struct proto_req	 req;
	struct proto_pub	 pub;
	const struct proto_pub	*p = &req.pub;
	const char		*why;
	char			 err[256];
	size_t			 c;

	is_int(parse_s(msg, &req, &c), PROTO_DONE, "all props: done");
	is_int(c, strlen(msg), "all props: consumed");
	ok(streq(&p->exchange, "ex.1"), "exchange");
	ok(streq(&p->routing_key, "rk.a.b"), "routing-key after a tab");
	is_int(p->mandatory, 1, "mandatory");
	ok(streq(&p->content_type, "application/json; charset=utf-8"),
	    "content-type keeps inner blanks");
	ok(streq(&p->content_encoding, "gzip"), "content-encoding, CRLF");
	is_int(p->delivery_mode, 2, "delivery-mode");
	is_int(p->priority, 255, "priority 255");
	ok(streq(&p->correlation_id, "corr:1"), "correlation-id with ':'");
	ok(streq(&p->reply_to, "amq.rabbitmq.reply-to"), "reply-to");
	ok(streq(&p->expiration, "60000"), "expiration");
	ok(streq(&p->message_id, "m-1"), "message-id");
	ok(p->has_timestamp && p->timestamp == UINT64_MAX, "timestamp max");
	ok(streq(&p->type, "t"), "type");
	ok(streq(&p->app_id, "app "), "app-id keeps trailing blank");
	is_int(p->nheaders, 4, "4 headers");
	ok(streq(&p->headers[0].name, "x-a") &&
	    streq(&p->headers[0].value, "1"), "header x-a=1");
	ok(streq(&p->headers[1].name, "x-b") &&
	    streq(&p->headers[1].value, "=2="), "header splits at first '='");
	ok(streq(&p->headers[2].name, "x-c") &&
	    streq(&p->headers[2].value, ""), "header with empty value");
	ok(streq(&p->headers[3].name, "x-d:e") &&
	    streq(&p->headers[3].value, " v "), "header value keeps blanks");
	ok(streq(&p->body, "hi"), "body");
	ok(p->props.p == cur + 6 && p->props.len == strlen(msg) - 6 - 4,
	    "props is the raw block");

	/* The stored block parses back to the same fields. */
	memset(&pub, 0x5a, sizeof(pub));
	is_int(proto_parse_props(p->props.p, p->props.len, &pub, err,
	    sizeof(err)), 0, "props block parses again");
	ok(pub_same(p, &pub, 0, &why), "same fields from the block (%s)", why);
	ok(pub.props.p == p->props.p && pub.props.len == p->props.len,
	    "parse_props sets props");
	ok(pub.body.p == NULL && pub.body.len == 0,
	    "parse_props resets the body");

	/* Values of each kind, in their accepted spellings. */
	is_int(parse_s("PUB 0\nmandatory: no\npriority: 0\n"
	    "delivery-mode: 1\ntimestamp: 0\nexchange:\nexpiration: 0\n\n\n",
	    &req, &c), PROTO_DONE, "low values: done");
	ok(p->mandatory == 0 && p->priority == 0 && p->delivery_mode == 1 &&
	    p->has_timestamp && p->timestamp == 0, "low values");
	ok(streq(&p->exchange, "") && streq(&p->expiration, "0"),
	    "empty exchange is set, expiration 0");
	is_int(parse_s("PUB 0\nmandatory: TRUE\n\n\n", &req, &c), PROTO_DONE,
	    "mandatory TRUE");
	is_int(p->mandatory, 1, "mandatory TRUE = 1");
	is_int(parse_s("PUB 0\nmandatory: 0\n\n\n", &req, &c), PROTO_DONE,
	    "mandatory 0");
	is_int(p->mandatory, 0, "mandatory 0 = 0");
	is_int(parse_s("PUB 0\nmandatory: false\n\n\n", &req, &c), PROTO_DONE,
	    "mandatory false");
	is_int(p->mandatory, 0, "mandatory false = 0");
}

/* An invalid request is BAD BADREQ, whole, with a message naming the error. */
static void
bad_prop(const char *props, const char *errpart)
{
	struct proto_req	req;
	struct buf		b;
	size_t			c = 0;

	buf_init(&b);
	buf_printf(&b, "PUB 3\n%s\nabc\nPING\n", props);
	is_int(parse_n(b.data, b.len, NOLIMIT, &req, &c), PROTO_BAD,
	    "bad prop [%s]: BAD", errpart);
	is_str(req.err_code, PROTO_E_BADREQ, "bad prop [%s]: BADREQ", errpart);
	is_int(c, b.len - 5, "bad prop [%s]: consumes the whole request",
	    errpart);
	ok(strstr(req.err, errpart) != NULL, "bad prop [%s]: message '%s'",
	    errpart, req.err);
	/* Until the body and its newline are in, the answer is INCOMPLETE. */
	is_int(parse_n(b.data, b.len - 6, NOLIMIT, &req, &c),
	    PROTO_INCOMPLETE, "bad prop [%s]: waits for the newline", errpart);
	is_int(req.need, b.len - 5, "bad prop [%s]: need", errpart);
	/* proto_parse_props() finds the same problem in the block. */
	{
		struct proto_pub pub;
		char err[256];

		is_int(proto_parse_props(props, strlen(props) - 0, &pub, err,
		    sizeof(err)), -1, "bad prop [%s]: parse_props refuses",
		    errpart);
		ok(strstr(err, errpart) != NULL,
		    "bad prop [%s]: parse_props message '%s'", errpart, err);
	}
	buf_free(&b);
}

static void
test_bad_properties(void)
{
	char	 line[1024], *big;
	size_t	 i;
	struct buf b;

	bad_prop("colour: red\n", "unknown property \"colour\"");
	bad_prop("message-id:\n", "message-id: empty");
	bad_prop("message-id: \n", "message-id: empty");
	bad_prop("exchange : x\n", "unknown property \"exchange \"");
	bad_prop("exchange\n", "without ':'");
	bad_prop("exchange x\n", "without ':'");
	bad_prop("exchange: a\nexchange: b\n", "exchange: given twice");
	bad_prop("type: a\nTYPE: a\n", "type: given twice");
	bad_prop("mandatory: yes\nmandatory: yes\n", "mandatory: given twice");
	bad_prop("timestamp: 1\ntimestamp: 1\n", "timestamp: given twice");
	bad_prop("mandatory: maybe\n", "mandatory");
	bad_prop("mandatory:\n", "mandatory");
	bad_prop("mandatory: yes please\n", "mandatory");
	bad_prop("mandatory: yesyesyesyesyesyes\n", "mandatory");
	bad_prop("delivery-mode: 0\n", "delivery-mode");
	bad_prop("delivery-mode: 3\n", "delivery-mode");
	bad_prop("delivery-mode: x\n", "delivery-mode");
	bad_prop("delivery-mode: 2 \n", "delivery-mode");
	bad_prop("priority: 256\n", "priority");
	bad_prop("priority: -1\n", "priority");
	bad_prop("priority: +1\n", "priority");
	bad_prop("priority:\n", "priority");
	bad_prop("priority: 1.0\n", "priority");
	bad_prop("expiration: 10s\n", "expiration");
	bad_prop("expiration: -5\n", "expiration");
	bad_prop("expiration:\n", "expiration");
	bad_prop("expiration: 18446744073709551616\n", "expiration");
	bad_prop("timestamp: now\n", "timestamp");
	bad_prop("timestamp: 18446744073709551616\n", "timestamp");
	bad_prop("timestamp: -1\n", "timestamp");
	bad_prop("header: x\n", "header: \"x\" is not NAME=VALUE");
	bad_prop("header:\n", "is not NAME=VALUE");
	bad_prop("header: =v\n", "header: empty header name");
	bad_prop("header: a=1\nheader: a=2\n", "header: \"a\" given twice");

	/* Short strings: 255 bytes pass, 256 do not. */
	memset(line, 'k', 256);
	snprintf(line + 256, sizeof(line) - 256, "\n");
	buf_init(&b);
	buf_printf(&b, "routing-key: %.256s\n", line);
	bad_prop(b.data, "routing-key: longer than 255 bytes");
	buf_reset(&b);
	buf_printf(&b, "header: %.256s=v\n", line);
	bad_prop(b.data, "header name longer than 255 bytes");
	{
		struct proto_pub pub;
		char err[256];

		buf_reset(&b);
		buf_printf(&b, "routing-key: %.255s\nheader: %.255s=v\n",
		    line, line);
		is_int(proto_parse_props(b.data, b.len, &pub, err,
		    sizeof(err)), 0, "255-byte short string and header name");
		ok(pub.routing_key.len == 255 && pub.headers[0].name.len == 255,
		    "... lengths");
	}
	buf_reset(&b);
	buf_printf(&b, "expiration: 0000%.252s\n", line);
	for (i = 0; i < b.len; i++)
		if (b.data[i] == 'k')
			b.data[i] = '0';
	bad_prop(b.data, "expiration");

	/* A NUL byte in a value. */
	{
		struct proto_req req;
		static const char m[] = "PUB 0\ntype: a\0b\n\n\n";
		size_t c;

		is_int(parse_n(m, sizeof(m) - 1, NOLIMIT, &req, &c), PROTO_BAD,
		    "NUL in a value: BAD");
		ok(strstr(req.err, "type: value contains a NUL byte") != NULL,
		    "NUL in a value: message '%s'", req.err);
		is_int(c, sizeof(m) - 1, "NUL in a value: consumed");
	}

	/* PROTO_MAX_HEADERS headers pass, one more does not. */
	buf_reset(&b);
	for (i = 0; i < PROTO_MAX_HEADERS + 1; i++)
		buf_printf(&b, "header: h%zu=%zu\n", i, i);
	bad_prop(b.data, "more than 128 headers");
	big = xstrndup(b.data, b.len - strlen("header: h128=128\n"));
	{
		struct proto_pub pub;
		char err[256];

		is_int(proto_parse_props(big, strlen(big), &pub, err,
		    sizeof(err)), 0, "128 headers pass");
		is_int(pub.nheaders, 128, "128 headers parsed");
		ok(streq(&pub.headers[127].name, "h127") &&
		    streq(&pub.headers[127].value, "127"), "last header");
	}
	free(big);
	buf_free(&b);
}

static void
test_pub_fatal(void)
{
	static const char *cases[] = {
		"PUB\n",
		"PUB \n",
		"pub\r\n",
		"PUB -1\n",
		"PUB -0\n",
		"PUB +5\n",
		"PUB x\n",
		"PUB 5x\n",
		"PUB 0x10\n",
		"PUB 1.5\n",
		"PUB 1e3\n",
		"PUB 5 6\n",
		"PUB 5 x\n",
		"PUB 99999999999999999999\n",
		"PUB 18446744073709551615\n",
		"PUB 000000000000000000005\n",
	};
	struct proto_req	req;
	size_t			i, c;

	for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		c = 77;
		is_int(parse_s(cases[i], &req, &c), PROTO_FATAL,
		    "fatal length %zu: FATAL", i);
		is_str(req.err_code, PROTO_E_PROTO, "fatal length %zu: PROTO", i);
		ok(req.err[0] != '\0', "fatal length %zu: '%s'", i, req.err);
	}

	is_int(parse_s("PUB 3\n\nabcX", &req, &c), PROTO_FATAL,
	    "body without newline: FATAL");
	is_str(req.err_code, PROTO_E_PROTO, "body without newline: PROTO");
	is_str(req.err, "body of 3 bytes not followed by a newline",
	    "body without newline: message");
	is_int(parse_s("PUB 3\n\nabc\rX", &req, &c), PROTO_FATAL,
	    "body with CR not LF: FATAL");
	is_str(req.err, "body of 3 bytes not followed by a newline",
	    "body with CR not LF: message");
	is_int(parse_s("PUB 0\n\nX", &req, &c), PROTO_FATAL,
	    "empty body without newline: FATAL");
	is_int(parse_s("PUB 3\n\nabc\r\r\n", &req, &c), PROTO_FATAL,
	    "body with CR CR LF: FATAL");
	/* Bad properties do not hide a framing error. */
	is_int(parse_s("PUB 3\ncolour: red\n\nabcd", &req, &c), PROTO_FATAL,
	    "bad prop and bad framing: FATAL");
}

static void
test_need(void)
{
	struct proto_req	req;
	size_t			c;

	is_int(parse_s("PUB 5", &req, &c), PROTO_INCOMPLETE, "need: no EOL");
	is_int(req.need, 0, "need: unknown before the PUB line ends");
	is_int(parse_s("PUB 5\n", &req, &c), PROTO_INCOMPLETE, "need: line");
	is_int(req.need, 0, "need: unknown before the block ends");
	is_int(parse_s("PUB 5\nexchange: x\n", &req, &c), PROTO_INCOMPLETE,
	    "need: partial block");
	is_int(req.need, 0, "need: unknown in the block");
	is_int(parse_s("PUB 5\nexchange: x\n\r", &req, &c), PROTO_INCOMPLETE,
	    "need: block end CR");
	is_int(req.need, 0, "need: unknown on a lone CR");
	is_int(parse_s("PUB 5\n\n", &req, &c), PROTO_INCOMPLETE, "need: block");
	is_int(req.need, 13, "need: header + body + 1");
	is_int(c, 0, "need: consumed 0");
	is_int(parse_s("\n\nPUB 5\n\nhel", &req, &c), PROTO_INCOMPLETE,
	    "need: partial body");
	is_int(req.need, 15, "need: counts the empty lines");
	is_int(parse_s("PUB 5\n\nhello", &req, &c), PROTO_INCOMPLETE,
	    "need: body without EOL");
	is_int(req.need, 13, "need: the newline");
	is_int(parse_s("PUB 5\n\nhello\r", &req, &c), PROTO_INCOMPLETE,
	    "need: body and CR");
	is_int(req.need, 14, "need: the LF after CR");
	is_int(parse_s("PUB 5\r\n\r\nhello", &req, &c), PROTO_INCOMPLETE,
	    "need crlf: body without EOL");
	is_int(req.need, 15, "need crlf");
}

static void
test_toobig(void)
{
	struct proto_req	req;
	const char		*m;
	size_t			c;

	m = "PUB 10\n\n0123456789\n";
	is_int(parse_n(m, strlen(m), 10, &req, &c), PROTO_DONE,
	    "body at the limit: done");
	is_int(parse_n(m, strlen(m), 9, &req, &c), PROTO_BAD,
	    "body one over the limit: BAD");
	is_str(req.err_code, PROTO_E_TOOBIG, "TOOBIG");
	is_int(c, 8 + 10, "TOOBIG consumes header and body, not the EOL");
	ok(strstr(req.err, "10") != NULL && strstr(req.err, "9") != NULL,
	    "TOOBIG message '%s'", req.err);
	is_int(req.verb, PROTO_PUB, "TOOBIG verb");

	/* Known as soon as the block ends, before any body byte. */
	m = "\nPUB 1000000\nexchange: x\n\n";
	is_int(parse_n(m, strlen(m), 1000, &req, &c), PROTO_BAD,
	    "TOOBIG before the body");
	is_str(req.err_code, PROTO_E_TOOBIG, "TOOBIG before the body: code");
	is_int(c, strlen(m) + 1000000, "TOOBIG consumed beyond len");
	is_int(parse_n(m, strlen(m) - 1, 1000, &req, &c), PROTO_INCOMPLETE,
	    "TOOBIG waits for the block end");
	is_int(c, 0, "TOOBIG waits: consumed 0");

	/* Invalid properties do not matter once the body is too big. */
	m = "PUB 5\ncolour: red\n\n";
	is_int(parse_n(m, strlen(m), 4, &req, &c), PROTO_BAD,
	    "TOOBIG with a bad property");
	is_str(req.err_code, PROTO_E_TOOBIG, "... TOOBIG wins");

	/* After discarding, the trailing newline is an empty line. */
	m = "\nPING\n";
	is_int(parse_n(m, strlen(m), 4, &req, &c), PROTO_DONE,
	    "after TOOBIG: the body's newline is skipped");
	is_int(c, 6, "after TOOBIG: consumed");
	m = "\r\nPING\n";
	is_int(parse_n(m, strlen(m), 4, &req, &c), PROTO_DONE,
	    "after TOOBIG: CRLF is skipped");

	/* max_body 0: only empty bodies. */
	is_int(parse_n("PUB 0\n\n\n", 8, 0, &req, &c), PROTO_DONE,
	    "max_body 0: empty body");
	is_int(parse_n("PUB 1\n\n", 7, 0, &req, &c), PROTO_BAD,
	    "max_body 0: one byte is TOOBIG");
}

/* A request of exactly n bytes of request line, including its "\n". */
static void
test_line_limits(void)
{
	struct proto_req	req;
	char			*b;
	size_t			c, n = PROTO_MAX_LINE;

	b = xmalloc(PROTO_MAX_BLOCK * 2);

	memset(b, 'X', n);
	b[n - 1] = '\n';
	is_int(parse_n(b, n, NOLIMIT, &req, &c), PROTO_BAD,
	    "request line at the limit: parsed (unknown verb)");
	is_str(req.err_code, PROTO_E_UNKNOWN, "... UNKNOWN");
	is_int(c, n, "... consumed");
	is_int(parse_n(b, n - 1, NOLIMIT, &req, &c), PROTO_INCOMPLETE,
	    "request line at the limit without LF: incomplete");
	memset(b, 'X', n + 1);
	b[n] = '\n';
	is_int(parse_n(b, n + 1, NOLIMIT, &req, &c), PROTO_FATAL,
	    "request line one over: FATAL");
	is_str(req.err_code, PROTO_E_PROTO, "... PROTO");
	ok(strstr(req.err, "line too long") != NULL, "... '%s'", req.err);
	is_int(parse_n(b, n, NOLIMIT, &req, &c), PROTO_FATAL,
	    "request line one over, before its LF: FATAL");

	/* The same for "PING   ...\r\n": trailing blanks at the limit. */
	memset(b, ' ', n);
	memcpy(b, "PING", 4);
	memcpy(b + n - 2, "\r\n", 2);
	is_int(parse_n(b, n, NOLIMIT, &req, &c), PROTO_DONE,
	    "PING padded to the limit with CRLF");

	/* A property line: "header: a=" + padding + "\n" = n bytes. */
	memcpy(b, "PUB 1\nheader: a=", 16);
	memset(b + 16, 'v', n - 11);
	memcpy(b + 6 + n - 1, "\n\nZ\n", 4);
	is_int(parse_n(b, 6 + n + 3, NOLIMIT, &req, &c), PROTO_DONE,
	    "property line at the limit");
	is_int(req.pub.headers[0].value.len, n - 11, "... value length");
	memcpy(b, "PUB 1\nheader: a=", 16);
	memset(b + 16, 'v', n - 10);
	memcpy(b + 6 + n, "\n\nZ\n", 4);
	is_int(parse_n(b, 6 + n + 4, NOLIMIT, &req, &c), PROTO_FATAL,
	    "property line one over: FATAL");
	ok(strstr(req.err, "line too long") != NULL, "... '%s'", req.err);
	is_int(parse_n(b, 6 + n, NOLIMIT, &req, &c), PROTO_FATAL,
	    "property line one over, before its LF: FATAL");
	is_int(parse_n(b, 6 + n - 1, NOLIMIT, &req, &c), PROTO_INCOMPLETE,
	    "property line at the limit, before its LF: incomplete");

	free(b);
}

/* A block of 128 lines of 512 bytes is exactly PROTO_MAX_BLOCK. */
static size_t
make_block(char *b, size_t linelen, int extra)
{
	size_t	i, off;

	off = (size_t)sprintf(b, "PUB 1\n");
	for (i = 0; i < PROTO_MAX_HEADERS; i++) {
		int k = sprintf(b + off, "header: h%03zu=", i);

		memset(b + off + k, 'v', linelen - (size_t)k - 1);
		b[off + linelen - 1] = '\n';
		off += linelen;
	}
	if (extra) {
		/* One byte longer: the last value gets one more 'v'. */
		memmove(b + off - 1, b + off - 2, 2);
		off++;
	}
	memcpy(b + off, "\nZ\n", 3);
	return off + 3;
}

static void
test_block_limit(void)
{
	struct proto_req	req;
	struct proto_pub	pub;
	char			*b, err[256];
	size_t			c, n;

	b = xmalloc(PROTO_MAX_BLOCK * 2);
	n = make_block(b, PROTO_MAX_BLOCK / PROTO_MAX_HEADERS, 0);
	is_int(parse_n(b, n, NOLIMIT, &req, &c), PROTO_DONE,
	    "block at the limit: done");
	is_int(req.pub.props.len, PROTO_MAX_BLOCK, "... props length");
	is_int(req.pub.nheaders, PROTO_MAX_HEADERS, "... headers");
	is_int(proto_parse_props(req.pub.props.p, req.pub.props.len, &pub, err,
	    sizeof(err)), 0, "... parse_props takes it");

	n = make_block(b, PROTO_MAX_BLOCK / PROTO_MAX_HEADERS, 1);
	is_int(parse_n(b, n, NOLIMIT, &req, &c), PROTO_FATAL,
	    "block one over: FATAL");
	is_str(req.err_code, PROTO_E_PROTO, "... PROTO");
	ok(strstr(req.err, "block too long") != NULL, "... '%s'", req.err);
	/* Stored blocks have room for the message-id line a park adds. */
	is_int(proto_parse_props(b + 6, PROTO_MAX_BLOCK + 1, &pub, err,
	    sizeof(err)), 0, "... parse_props takes it as a stored block");
	memset(b, 'a', PROTO_MAX_STORED_BLOCK + 1);
	is_int(proto_parse_props(b, PROTO_MAX_STORED_BLOCK + 1, &pub, err,
	    sizeof(err)), -1, "a stored block over its limit: refused");
	ok(strstr(err, "block") != NULL, "... '%s'", err);
	n = make_block(b, PROTO_MAX_BLOCK / PROTO_MAX_HEADERS, 1);
	/* Known as soon as the block cannot end in time. */
	is_int(parse_n(b, 6 + PROTO_MAX_BLOCK, NOLIMIT, &req, &c), PROTO_FATAL,
	    "block one over, cut at the limit: FATAL");
	is_int(parse_n(b, 6 + PROTO_MAX_BLOCK - 1, NOLIMIT, &req, &c),
	    PROTO_INCOMPLETE, "block one over, cut before the limit: "
	    "incomplete");

	/* Framing limits come before property checks. */
	n = make_block(b, PROTO_MAX_BLOCK / PROTO_MAX_HEADERS, 0);
	b[6] = 'X';
	is_int(parse_n(b, n, NOLIMIT, &req, &c), PROTO_BAD,
	    "block at the limit with a bad name: BAD");
	n = make_block(b, PROTO_MAX_BLOCK / PROTO_MAX_HEADERS, 1);
	b[6] = 'X';
	is_int(parse_n(b, n, NOLIMIT, &req, &c), PROTO_FATAL,
	    "block one over with a bad name: FATAL");
	free(b);
}

/*
 * The parse of every prefix of a request agrees with the parse of the whole:
 * INCOMPLETE (consuming nothing, with a need that is a lower bound) until
 * the request is complete, then the same result; once FATAL, always FATAL.
 */
static void
check_splits(const char *m, size_t len, size_t max_body, const char *name)
{
	struct proto_req	req, full;
	size_t			k, c, fc, bad = 0, fatal_at = SIZE_MAX;
	int			st, fst;

	fst = parse_n(m, len, max_body, &full, &fc);
	for (k = 0; k < len; k++) {
		st = parse_n(m, k, max_body, &req, &c);
		if (st == PROTO_FATAL && fst == PROTO_FATAL) {
			if (fatal_at == SIZE_MAX)
				fatal_at = k;
			continue;
		}
		if (fatal_at != SIZE_MAX) {
			bad++;
			continue;
		}
		if (fst == PROTO_BAD && strcmp(full.err_code,
		    PROTO_E_TOOBIG) == 0 && st == PROTO_BAD) {
			if (c != fc || strcmp(req.err_code, PROTO_E_TOOBIG) != 0)
				bad++;
			continue;
		}
		if (fst != PROTO_FATAL && fst != PROTO_INCOMPLETE && k >= fc) {
			/* A later request starts here: not ours to judge. */
			if (st != fst || c != fc)
				bad++;
			continue;
		}
		if (st != PROTO_INCOMPLETE || c != 0 ||
		    (req.need != 0 && (req.need <= k ||
		    (fst != PROTO_FATAL && req.need > fc)))) {
			if (bad++ == 0)
				diag("%s: prefix %zu: status %d, consumed %zu, "
				    "need %zu", name, k, st, c, req.need);
		}
	}
	is_int(bad, 0, "split %s: every prefix agrees (%zu bytes)", name, len);
}

static void
test_splits(void)
{
	static const char *msgs[] = {
		"PING\n",
		"\r\n\nstats\r\n",
		"PUB 5\n\nhello\n",
		"PUB 5\r\n\r\nhello\r\n",
		("\n\nPUB 7\nexchange: x\r\nrouting-key: a.b\nheader: k=v\n"
		    "mandatory: yes\npriority: 9\n\nab\ncd\r\n\n"),
		"PUB 3\ncolour: red\n\nabc\n",		/* BAD BADREQ */
		"PUB 3\npriority: 300\r\n\r\nabc\r\n",	/* BAD BADREQ */
		"FOO bar\r\n",				/* BAD UNKNOWN */
		"PING now\n",				/* BAD BADREQ */
		"PUB 3\nexchange: x\n\nabcX",		/* FATAL */
		"PUB 3\n\nabc\rX",			/* FATAL */
		"PUB -3\n\nabc\n",			/* FATAL */
		"PUB 40\ntype: t\n\n0123456789",		/* TOOBIG */
	};
	size_t	i;

	for (i = 0; i < sizeof(msgs) / sizeof(msgs[0]); i++) {
		char name[32];

		snprintf(name, sizeof(name), "msg %zu", i);
		check_splits(msgs[i], strlen(msgs[i]), 20, name);
	}
	check_splits("PUB 4\n\n\0\n\r\0\n", 12, 20, "binary");
}

/* Many requests in one buffer, parsed the way the session will. */
static void
test_pipeline(void)
{
	static const char in[] =
	    "PING\n"
	    "PUB 3\nexchange: e1\n\nabc\n"
	    "\n"
	    "PUB 2\r\nrouting-key: r\r\n\r\nxy\r\n"
	    "FOO\n"
	    "PUB 30\n\n012345678901234567890123456789\n"	/* TOOBIG */
	    "PUB 1\npriority: x\n\nq\n"			/* BADREQ */
	    "stats\n"
	    "PUB 0\n\n\n"
	    "DEAD LIST 5\n"
	    "DEAD RETRY none\n"					/* BADREQ */
	    "RESET\n";
	static const struct {
		int		 st;
		enum proto_verb	 verb;
		const char	*code;
		const char	*body;
	} want[] = {
		{ PROTO_DONE, PROTO_PING, NULL, NULL },
		{ PROTO_DONE, PROTO_PUB, NULL, "abc" },
		{ PROTO_DONE, PROTO_PUB, NULL, "xy" },
		{ PROTO_BAD, 0, PROTO_E_UNKNOWN, NULL },
		{ PROTO_BAD, PROTO_PUB, PROTO_E_TOOBIG, NULL },
		{ PROTO_BAD, PROTO_PUB, PROTO_E_BADREQ, NULL },
		{ PROTO_DONE, PROTO_STATS, NULL, NULL },
		{ PROTO_DONE, PROTO_PUB, NULL, "" },
		{ PROTO_DONE, PROTO_DEAD, NULL, NULL },
		{ PROTO_BAD, PROTO_DEAD, PROTO_E_BADREQ, NULL },
		{ PROTO_DONE, PROTO_RESET, NULL, NULL },
	};
	struct proto_limits	 lim = { .max_body = 20 };
	struct proto_req	 req;
	const char		*p = in;
	size_t			 left = sizeof(in) - 1, c, i, bad = 0;
	int			 st;

	for (i = 0; i < sizeof(want) / sizeof(want[0]); i++) {
		st = proto_parse(p, left, &lim, &req, &c);
		if (st != want[i].st || (st == PROTO_DONE &&
		    req.verb != want[i].verb) || (want[i].code != NULL &&
		    (req.err_code == NULL ||
		    strcmp(req.err_code, want[i].code) != 0)) ||
		    (want[i].body != NULL && !streq(&req.pub.body,
		    want[i].body)) || c == 0 || c > left) {
			diag("pipeline request %zu: status %d", i, st);
			bad++;
			break;
		}
		p += c;
		left -= c;
	}
	is_int(bad, 0, "pipeline: every request in order");
	is_int(left, 0, "pipeline: all consumed");
	is_int(proto_parse(p, left, &lim, &req, &c), PROTO_INCOMPLETE,
	    "pipeline: then incomplete");
}

/* xorshift64*: deterministic test data. */
static uint64_t rng = 0x9e3779b97f4a7c15ULL;

static uint64_t
rnd(void)
{
	rng ^= rng >> 12;
	rng ^= rng << 25;
	rng ^= rng >> 27;
	return rng * 2685821657736338717ULL;
}

static size_t
rnd_len(size_t max)
{
	switch (rnd() % 4) {
	case 0:
		return 0;
	case 1:
		return max;
	default:
		return (size_t)(rnd() % (max + 1));
	}
}

/* Bytes a property value may hold: anything but CR, LF and NUL. */
static void
rnd_value(char *p, size_t n, int first_blank_ok)
{
	size_t	i;

	for (i = 0; i < n; i++) {
		char c;

		do {
			c = (char)(rnd() % 256);
		} while (c == '\n' || c == '\r' || c == '\0' ||
		    (i == 0 && !first_blank_ok && (c == ' ' || c == '\t')));
		p[i] = c;
	}
}

struct msgstore {
	char	pool[64 * 1024];
	size_t	used;
	char	body[4096];
};

static void
rnd_str(struct msgstore *ms, struct proto_str *s, size_t max)
{
	if (rnd() % 3 == 0) {
		s->p = NULL;
		s->len = 0;
		return;
	}
	s->len = rnd_len(max);
	s->p = ms->pool + ms->used;
	rnd_value(ms->pool + ms->used, s->len, 0);
	ms->used += s->len;
}

static void
rnd_pub(struct msgstore *ms, struct proto_pub *pub)
{
	size_t	i, n;
	char	digits[24];

	proto_pub_init(pub);
	ms->used = 0;
	rnd_str(ms, &pub->exchange, 255);
	rnd_str(ms, &pub->routing_key, 255);
	rnd_str(ms, &pub->content_type, 255);
	rnd_str(ms, &pub->content_encoding, 255);
	rnd_str(ms, &pub->correlation_id, 255);
	rnd_str(ms, &pub->reply_to, 255);
	rnd_str(ms, &pub->message_id, 255);
	if (pub->message_id.p != NULL && pub->message_id.len == 0)
		pub->message_id.p = NULL;	/* an empty id is refused */
	rnd_str(ms, &pub->type, 255);
	rnd_str(ms, &pub->app_id, 255);
	if (rnd() % 2) {
		n = (size_t)snprintf(digits, sizeof(digits), "%llu",
		    (unsigned long long)(rnd() >> (rnd() % 64)));
		memcpy(ms->pool + ms->used, digits, n);
		pub->expiration.p = ms->pool + ms->used;
		pub->expiration.len = n;
		ms->used += n;
	}
	pub->mandatory = (int)(rnd() % 3) - 1;
	pub->delivery_mode = (int)(rnd() % 3);
	pub->priority = (int)(rnd() % 257) - 1;
	if ((pub->has_timestamp = (int)(rnd() % 2)))
		pub->timestamp = rnd();
	pub->nheaders = (unsigned)(rnd() % 12);
	for (i = 0; i < pub->nheaders; i++) {
		struct proto_header *h = &pub->headers[i];
		char *name = ms->pool + ms->used;

		/* Unique: a prefix that no other name has. */
		n = (size_t)snprintf(name, 8, "%zu:", i);
		h->name.len = n + rnd_len(200);
		rnd_value(name + n, h->name.len - n, 1);
		for (n = 0; n < h->name.len; n++)
			if (name[n] == '=')
				name[n] = '-';
		h->name.p = name;
		ms->used += h->name.len;
		h->value.len = rnd_len(600);
		h->value.p = ms->pool + ms->used;
		rnd_value(ms->pool + ms->used, h->value.len, 1);
		ms->used += h->value.len;
	}
	pub->body.len = rnd_len(sizeof(ms->body));
	for (i = 0; i < pub->body.len; i++) {
		static const char special[] = "\n\r\0 PUB 1\n\n";

		ms->body[i] = (rnd() % 4 == 0) ?
		    special[rnd() % (sizeof(special))] : (char)rnd();
	}
	pub->body.p = ms->body;
}

static void
test_round_trip(void)
{
	static struct msgstore	ms;
	static struct proto_pub	pub, pub2;
	struct proto_req	req;
	struct buf		out, again, all;
	const char		*why = "";
	char			err[256];
	size_t			c, i, n = 2000, bad = 0, badprops = 0;
	size_t			badre = 0, nmsgs = 0;

	buf_init(&out);
	buf_init(&again);
	buf_init(&all);
	for (i = 0; i < n; i++) {
		rnd_pub(&ms, &pub);
		buf_reset(&out);
		if (proto_encode_pub(&out, &pub, err, sizeof(err)) == -1) {
			diag("message %zu: encode: %s", i, err);
			bad++;
			continue;
		}
		if (parse_n(out.data, out.len, NOLIMIT, &req, &c) !=
		    PROTO_DONE || c != out.len || req.verb != PROTO_PUB ||
		    !pub_same(&pub, &req.pub, 1, &why)) {
			if (bad++ == 0)
				diag("message %zu: parse: %s (%s)", i, req.err,
				    why);
			continue;
		}
		if (proto_parse_props(req.pub.props.p, req.pub.props.len,
		    &pub2, err, sizeof(err)) == -1 ||
		    !pub_same(&pub, &pub2, 0, &why)) {
			if (badprops++ == 0)
				diag("message %zu: props: %s (%s)", i, err, why);
		}
		/* Encoding is canonical: the parsed message encodes the same. */
		buf_reset(&again);
		if (proto_encode_pub(&again, &req.pub, err, sizeof(err)) ==
		    -1 || again.len != out.len ||
		    memcmp(again.data, out.data, out.len) != 0)
			badre++;
		if (i % 20 == 0 && all.len < 1024 * 1024) {
			buf_append(&all, out.data, out.len);
			nmsgs++;
		}
	}
	is_int(bad, 0, "round trip: %zu random messages encode and parse", n);
	is_int(badprops, 0, "round trip: every props block parses the same");
	is_int(badre, 0, "round trip: re-encoding gives the same bytes");

	/* The same messages back to back in one buffer. */
	{
		size_t off = 0, cnt = 0;

		while (off < all.len && proto_parse(all.data + off,
		    all.len - off, NULL, &req, &c) == PROTO_DONE) {
			off += c;
			cnt++;
		}
		ok(off == all.len && cnt == nmsgs,
		    "round trip: %zu pipelined messages", nmsgs);
	}

	/* Every prefix of a few encoded messages. */
	for (i = 0; i < 5; i++) {
		char name[32];

		rnd_pub(&ms, &pub);
		pub.body.len = pub.body.len % 300;
		buf_reset(&out);
		if (proto_encode_pub(&out, &pub, err, sizeof(err)) == -1) {
			ok(0, "split encoded %zu: encode: %s", i, err);
			continue;
		}
		snprintf(name, sizeof(name), "encoded %zu", i);
		check_splits(out.data, out.len, NOLIMIT, name);
	}

	/* An empty message: no properties, no body. */
	proto_pub_init(&pub);
	buf_reset(&out);
	is_int(proto_encode_pub(&out, &pub, err, sizeof(err)), 0,
	    "encode empty message");
	is_str(out.data, "PUB 0\n\n\n", "empty message bytes");

	/* The exact form of each property line. */
	proto_pub_init(&pub);
	pub.exchange.p = "";
	pub.routing_key.p = "rk";
	pub.routing_key.len = 2;
	pub.mandatory = 1;
	pub.delivery_mode = 2;
	pub.priority = 0;
	pub.expiration.p = "100";
	pub.expiration.len = 3;
	pub.has_timestamp = 1;
	pub.timestamp = 1700000000;
	pub.nheaders = 2;
	pub.headers[0].name.p = "a";
	pub.headers[0].name.len = 1;
	pub.headers[0].value.p = " x=y";
	pub.headers[0].value.len = 4;
	pub.headers[1].name.p = "b";
	pub.headers[1].name.len = 1;
	pub.body.p = "B\n";
	pub.body.len = 2;
	buf_reset(&out);
	buf_appends(&out, "PING\n");
	is_int(proto_encode_pub(&out, &pub, err, sizeof(err)), 0,
	    "encode known message");
	is_str(out.data, "PING\nPUB 2\nexchange:\nrouting-key: rk\n"
	    "mandatory: yes\ndelivery-mode: 2\npriority: 0\nexpiration: 100\n"
	    "timestamp: 1700000000\nheader: a= x=y\nheader: b=\n\nB\n\n",
	    "known message bytes, appended");

	buf_free(&out);
	buf_free(&again);
	buf_free(&all);
}

static void
refuse(struct proto_pub *pub, const char *errpart)
{
	struct buf	out;
	char		err[256];

	buf_init(&out);
	buf_appends(&out, "KEEP");
	is_int(proto_encode_pub(&out, pub, err, sizeof(err)), -1,
	    "encode refuses [%s]", errpart);
	ok(out.len == 4 && strcmp(out.data, "KEEP") == 0,
	    "encode [%s] leaves the buffer alone", errpart);
	ok(strstr(err, errpart) != NULL, "encode [%s]: '%s'", errpart, err);
	buf_free(&out);
}

static void
test_encode_refusals(void)
{
	static struct proto_pub	 pub;
	static char		 big[PROTO_MAX_LINE + 10];
	struct buf		 out;
	char			 err[256];
	size_t			 i;

#define STR(f, s) do { pub.f.p = (s); pub.f.len = strlen(s); } while (0)
	proto_pub_init(&pub);
	STR(routing_key, "a\nb");
	refuse(&pub, "routing-key: contains a line break");
	proto_pub_init(&pub);
	STR(type, "a\r");
	refuse(&pub, "type: contains a line break");
	proto_pub_init(&pub);
	pub.app_id.p = "a\0b";
	pub.app_id.len = 3;
	refuse(&pub, "app-id: contains a NUL byte");
	proto_pub_init(&pub);
	STR(message_id, "");
	refuse(&pub, "message-id: empty");
	proto_pub_init(&pub);
	STR(message_id, " m");
	refuse(&pub, "message-id: starts with a space or tab");
	proto_pub_init(&pub);
	STR(reply_to, "\tm");
	refuse(&pub, "reply-to: starts with a space or tab");
	proto_pub_init(&pub);
	STR(expiration, "10s");
	refuse(&pub, "expiration");
	proto_pub_init(&pub);
	STR(expiration, "");
	refuse(&pub, "expiration");
	proto_pub_init(&pub);
	STR(expiration, "-1");
	refuse(&pub, "expiration");
	proto_pub_init(&pub);
	STR(expiration, "18446744073709551616");
	refuse(&pub, "expiration");
	proto_pub_init(&pub);
	pub.correlation_id.p = NULL;
	pub.correlation_id.len = 0;
	pub.body.p = NULL;
	pub.body.len = 3;
	refuse(&pub, "body");

	memset(big, 'x', sizeof(big) - 1);
	proto_pub_init(&pub);
	pub.content_type.p = big;
	pub.content_type.len = 256;
	refuse(&pub, "content-type: longer than 255 bytes");
	pub.content_type.len = 255;
	buf_init(&out);
	is_int(proto_encode_pub(&out, &pub, err, sizeof(err)), 0,
	    "encode: 255-byte short string");

	proto_pub_init(&pub);
	pub.mandatory = 2;
	refuse(&pub, "mandatory");
	proto_pub_init(&pub);
	pub.delivery_mode = 3;
	refuse(&pub, "delivery-mode");
	proto_pub_init(&pub);
	pub.delivery_mode = -1;
	refuse(&pub, "delivery-mode");
	proto_pub_init(&pub);
	pub.priority = 256;
	refuse(&pub, "priority");
	proto_pub_init(&pub);
	pub.priority = -2;
	refuse(&pub, "priority");

	proto_pub_init(&pub);
	pub.nheaders = 1;
	STR(headers[0].name, "a=b");
	refuse(&pub, "header: name contains '='");
	STR(headers[0].name, "");
	refuse(&pub, "header: empty header name");
	STR(headers[0].name, " a");
	refuse(&pub, "header name: starts with a space");
	STR(headers[0].name, "a\nb");
	refuse(&pub, "header name: contains a line break");
	STR(headers[0].name, "a");
	STR(headers[0].value, "v\r\n");
	refuse(&pub, "header value: contains a line break");
	pub.headers[0].name.p = NULL;
	pub.headers[0].name.len = 1;
	refuse(&pub, "header name: no data");
	STR(headers[0].name, "a");
	pub.headers[0].name.p = big;
	pub.headers[0].name.len = 256;
	STR(headers[0].value, "");
	refuse(&pub, "header name: longer than 255 bytes");
	/* The line "header: a=" + value + "\n" must fit PROTO_MAX_LINE. */
	STR(headers[0].name, "a");
	pub.headers[0].value.p = big;
	pub.headers[0].value.len = PROTO_MAX_LINE - 11;
	buf_reset(&out);
	is_int(proto_encode_pub(&out, &pub, err, sizeof(err)), 0,
	    "encode: header line at the limit");
	pub.headers[0].value.len = PROTO_MAX_LINE - 10;
	refuse(&pub, "header: line longer than 8192 bytes");
	pub.nheaders = 2;
	STR(headers[0].value, "1");
	STR(headers[1].name, "a");
	STR(headers[1].value, "2");
	refuse(&pub, "header: \"a\" given twice");
	/* Named as the parser names it: quoted, odd bytes as '?'. */
	STR(headers[0].name, "x\033\"y");
	STR(headers[1].name, "x\033\"y");
	refuse(&pub, "header: \"x??y\" given twice");

	/* Too many headers, and a block over the limit. */
	{
		static char names[PROTO_MAX_HEADERS][8];

		proto_pub_init(&pub);
		for (i = 0; i < PROTO_MAX_HEADERS; i++) {
			snprintf(names[i], sizeof(names[i]), "h%zu", i);
			STR(headers[i].name, names[i]);
		}
		/* The array holds 128: the count alone must be refused. */
		pub.nheaders = PROTO_MAX_HEADERS + 1;
		refuse(&pub, "more than 128 headers");
		pub.nheaders = PROTO_MAX_HEADERS;
		for (i = 0; i < PROTO_MAX_HEADERS; i++) {
			pub.headers[i].value.p = big;
			pub.headers[i].value.len = 600;
		}
		refuse(&pub, "property block longer than 65536 bytes");
		for (i = 0; i < PROTO_MAX_HEADERS; i++)
			pub.headers[i].value.len = 100;
		buf_reset(&out);
		is_int(proto_encode_pub(&out, &pub, err, sizeof(err)), 0,
		    "encode: 128 headers");
	}
#undef STR
	buf_free(&out);
}

static void
test_parse_props(void)
{
	struct proto_pub	pub;
	char			err[256];

	memset(&pub, 0x33, sizeof(pub));
	is_int(proto_parse_props("", 0, &pub, err, sizeof(err)), 0,
	    "props: empty block");
	ok(pub.exchange.p == NULL && pub.mandatory == -1 &&
	    pub.priority == -1 && pub.delivery_mode == 0 &&
	    !pub.has_timestamp && pub.nheaders == 0 && pub.body.p == NULL,
	    "props: fields reset");
	is_int(proto_parse_props(NULL, 0, &pub, err, sizeof(err)), 0,
	    "props: NULL empty block");
	is_int(proto_parse_props("exchange: x", 11, &pub, err, sizeof(err)), 0,
	    "props: last line without newline");
	ok(streq(&pub.exchange, "x"), "props: ... value");
	is_int(proto_parse_props("priority: 5\r\n", 13, &pub, err, sizeof(err)),
	    0, "props: CRLF");
	is_int(pub.priority, 5, "props: ... value");
	is_int(proto_parse_props("\n", 1, &pub, err, sizeof(err)), -1,
	    "props: empty line refused");
	is_int(proto_parse_props("exchange: x\n\n", 13, &pub, err, sizeof(err)),
	    -1, "props: trailing empty line refused");
	/* Only len bytes count. */
	is_int(proto_parse_props("type: a\ncolour: red\n", 8, &pub, err,
	    sizeof(err)), 0, "props: stops at len");
	ok(streq(&pub.type, "a"), "props: ... value");
	/* A tiny error buffer is still terminated. */
	err[0] = 'Z';
	err[4] = 'Z';
	is_int(proto_parse_props("bogus: 1\n", 9, &pub, err, 4), -1,
	    "props: small err buffer");
	ok(strlen(err) == 3 && err[4] == 'Z', "props: err cut to its size");
	is_int(proto_parse_props("bogus: 1\n", 9, &pub, NULL, 0), -1,
	    "props: NULL err buffer");
	is_int(proto_parse_props(NULL, 5, &pub, err, sizeof(err)), -1,
	    "props: NULL block with a length");

	/* A line over PROTO_MAX_LINE inside a block of legal size. */
	{
		char *b = xmalloc(PROTO_MAX_LINE + 1);

		memcpy(b, "type: ", 6);
		memset(b + 6, 'x', PROTO_MAX_LINE - 7);
		b[PROTO_MAX_LINE - 1] = '\n';
		is_int(proto_parse_props(b, PROTO_MAX_LINE, &pub, err,
		    sizeof(err)), -1, "props: line at the limit parses to a "
		    "too long type");
		ok(strstr(err, "type: longer than 255") != NULL, "... '%s'", err);
		memcpy(b, "header: a=", 10);
		is_int(proto_parse_props(b, PROTO_MAX_LINE, &pub, err,
		    sizeof(err)), 0, "props: header line at the limit");
		b[PROTO_MAX_LINE - 1] = 'x';
		b[PROTO_MAX_LINE] = '\n';
		is_int(proto_parse_props(b, PROTO_MAX_LINE + 1, &pub, err,
		    sizeof(err)), -1, "props: header line one over");
		ok(strstr(err, "property line longer than 8192") != NULL,
		    "... '%s'", err);
		free(b);
	}
}

static void
test_dead(void)
{
	static const struct {
		const char		*in;
		enum proto_dead_op	 op;
		int64_t			 id;
		unsigned		 max;
		int64_t			 after;
	} good[] = {
		{ "DEAD LIST\n", PROTO_DEAD_LIST, 0, 0, 0 },
		{ "dead list\r\n", PROTO_DEAD_LIST, 0, 0, 0 },
		{ "Dead List 1\n", PROTO_DEAD_LIST, 0, 1, 0 },
		{ "DEAD LIST 100000\n", PROTO_DEAD_LIST, 0, 100000, 0 },
		{ "DEAD\tLIST\t 25 \t\n", PROTO_DEAD_LIST, 0, 25, 0 },
		{ "DEAD RETRY 1\n", PROTO_DEAD_RETRY, 1, 0, 0 },
		{ "dead retry 9223372036854775807\n", PROTO_DEAD_RETRY,
		    INT64_MAX, 0, 0 },
		{ "DEAD RETRY ALL\n", PROTO_DEAD_RETRY, 0, 0, 0 },
		{ "DEAD retry all\n", PROTO_DEAD_RETRY, 0, 0, 0 },
		{ "DEAD PURGE 42\n", PROTO_DEAD_PURGE, 42, 0, 0 },
		{ "DEAD PURGE All\r\n", PROTO_DEAD_PURGE, 0, 0, 0 },
		{ "\nDEAD  purge  7  \n", PROTO_DEAD_PURGE, 7, 0, 0 },
		{ "DEAD LIST 50 AFTER 1234\n", PROTO_DEAD_LIST, 0, 50, 1234 },
		{ "dead list after 9\n", PROTO_DEAD_LIST, 0, 0, 9 },
		{ "DEAD LIST AFTER 0\n", PROTO_DEAD_LIST, 0, 0, 0 },
		{ "DEAD LIST 1 AFTER 9223372036854775807\n", PROTO_DEAD_LIST,
		    0, 1, INT64_MAX },
	};
	static const struct {
		const char	*in;
		const char	*errpart;
	} bad[] = {
		{ "DEAD\n", "DEAD needs a subcommand: LIST, RETRY or PURGE" },
		{ "DEAD  \t\n", "needs a subcommand" },
		{ "DEAD FOO\n", "unknown subcommand \"FOO\" (expected LIST, "
		    "RETRY or PURGE)" },
		{ "DEAD LISTS\n", "unknown subcommand \"LISTS\"" },
		{ "DEAD 5\n", "unknown subcommand \"5\"" },
		{ "DEAD LIST 0\n", "DEAD LIST: invalid count \"0\" (expected "
		    "1 to 100000)" },
		{ "DEAD LIST 100001\n", "invalid count \"100001\"" },
		{ "DEAD LIST -1\n", "invalid count \"-1\"" },
		{ "DEAD LIST ten\n", "invalid count \"ten\"" },
		{ "DEAD LIST 1 2\n", "DEAD LIST takes a count and AFTER <id>, "
		    "not \"2\"" },
		{ "DEAD LIST AFTER\n", "DEAD LIST AFTER needs an id" },
		{ "DEAD LIST 5 AFTER\n", "DEAD LIST AFTER needs an id" },
		{ "DEAD LIST AFTER -1\n", "DEAD LIST AFTER: invalid id \"-1\"" },
		{ "DEAD LIST AFTER 3 4\n", "takes at most a count and AFTER" },
		{ "DEAD LIST AFTER 3 5\n", "takes at most a count and AFTER" },
		{ "DEAD LIST AFTER 3 AFTER 4\n", "takes at most a count" },
		{ "DEAD LIST 5 6 AFTER 3\n", "not \"6\"" },
		{ "DEAD RETRY\n", "DEAD RETRY needs a message id or ALL" },
		{ "DEAD PURGE\n", "DEAD PURGE needs a message id or ALL" },
		{ "DEAD RETRY 0\n", "DEAD RETRY: invalid id \"0\" (expected a "
		    "number above 0, or ALL)" },
		{ "DEAD PURGE -3\n", "DEAD PURGE: invalid id \"-3\"" },
		{ "DEAD PURGE 12x\n", "invalid id \"12x\"" },
		{ "DEAD RETRY 9223372036854775808\n", "invalid id" },
		{ "DEAD RETRY ALLE\n", "invalid id \"ALLE\"" },
		{ "DEAD RETRY 1 2\n", "DEAD RETRY takes one argument (an id or "
		    "ALL)" },
		{ "DEAD PURGE ALL now\n", "DEAD PURGE takes one argument" },
	};
	struct proto_req	req;
	size_t			i, c;

	for (i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
		c = 0;
		req.dead_id = req.dead_max = 77;
		req.dead_after = 77;
		is_int(parse_s(good[i].in, &req, &c), PROTO_DONE,
		    "dead %zu: done", i);
		is_int(req.verb, PROTO_DEAD, "dead %zu: verb", i);
		is_int(req.dead_op, good[i].op, "dead %zu: subcommand", i);
		is_int(req.dead_id, good[i].id, "dead %zu: id", i);
		is_int(req.dead_max, good[i].max, "dead %zu: max", i);
		is_int(req.dead_after, good[i].after, "dead %zu: after", i);
		is_int(c, strlen(good[i].in), "dead %zu: consumed", i);
	}
	for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		c = 0;
		is_int(parse_s(bad[i].in, &req, &c), PROTO_BAD,
		    "bad dead %zu: BAD, not FATAL", i);
		is_str(req.err_code, PROTO_E_BADREQ, "bad dead %zu: BADREQ", i);
		is_int(c, strlen(bad[i].in), "bad dead %zu: the line consumed",
		    i);
		ok(strstr(req.err, bad[i].errpart) != NULL,
		    "bad dead %zu: message '%s'", i, req.err);
	}

	/* Split anywhere, a DEAD line waits for its newline. */
	for (i = 0; i < strlen("DEAD RETRY 12\n"); i++) {
		c = 9;
		if (parse_n("DEAD RETRY 12\n", i, NOLIMIT, &req, &c) !=
		    PROTO_INCOMPLETE || c != 0)
			break;
	}
	is_int(i, strlen("DEAD RETRY 12\n"), "dead: every prefix is "
	    "incomplete");

	/* Fields from an earlier request never leak into the next one. */
	parse_s("DEAD PURGE 5\n", &req, &c);
	is_int(parse_s("DEAD LIST\n", &req, &c), PROTO_DONE, "list after purge");
	ok(req.dead_id == 0 && req.dead_max == 0, "dead fields are reset");
	parse_s("DEAD LIST 3 AFTER 8\n", &req, &c);
	is_int(parse_s("DEAD LIST\n", &req, &c), PROTO_DONE, "list again");
	ok(req.dead_after == 0 && req.dead_max == 0, "AFTER is reset");
	parse_s("DEAD LIST 9\n", &req, &c);
	is_int(parse_s("PING\n", &req, &c), PROTO_DONE, "ping after list");
	ok(req.dead_op == 0 && req.dead_max == 0, "dead fields are reset "
	    "for other verbs");
}

/* Receipts: WAIT [ms] and the confirm: property (issue #20). */
static void
test_receipts(void)
{
	static const struct {
		const char	*in;
		unsigned	 ms;
	} waits[] = {
		{ "WAIT\n", 0 },
		{ "wait\r\n", 0 },
		{ "WAIT 1\n", 1 },
		{ "WAIT  \t30000 \n", 30000 },
		{ "WAIT 86400000\n", 86400000 },
	};
	static const struct {
		const char	*in;
		const char	*errpart;
	} badwaits[] = {
		{ "WAIT 0\n", "WAIT: invalid time \"0\" (expected milliseconds "
		    "from 1 to 86400000)" },
		{ "WAIT 86400001\n", "invalid time \"86400001\"" },
		{ "WAIT 5s\n", "invalid time \"5s\"" },
		{ "WAIT 1 2\n", "invalid time \"1 2\"" },
		{ "WAIT -1\n", "invalid time \"-1\"" },
	};
	static const char *const badconfirm[] = {
		"0", "86400001", "1.5", "", "30s", "-4",
	};
	struct proto_req	 req;
	struct proto_pub	 pub;
	struct buf		 out;
	char			 in[300], err[256];
	size_t			 i, c;

	for (i = 0; i < sizeof(waits) / sizeof(waits[0]); i++) {
		req.wait_ms = 77;
		is_int(parse_s(waits[i].in, &req, &c), PROTO_DONE,
		    "wait %zu: done", i);
		ok(req.verb == PROTO_WAIT && req.wait_ms == waits[i].ms &&
		    c == strlen(waits[i].in), "wait %zu: %u ms, line consumed",
		    i, req.wait_ms);
	}
	for (i = 0; i < sizeof(badwaits) / sizeof(badwaits[0]); i++) {
		is_int(parse_s(badwaits[i].in, &req, &c), PROTO_BAD,
		    "bad wait %zu: BAD", i);
		ok(req.err_code != NULL && strcmp(req.err_code,
		    PROTO_E_BADREQ) == 0 && strstr(req.err,
		    badwaits[i].errpart) != NULL && c == strlen(badwaits[i].in),
		    "bad wait %zu: BADREQ '%s', the line consumed", i, req.err);
	}
	parse_s("WAIT 5\n", &req, &c);
	parse_s("PING\n", &req, &c);
	is_int(req.wait_ms, 0, "wait_ms is reset for other verbs");

	is_int(parse_s("PUB 1\nconfirm: 2500\n\nx\n", &req, &c), PROTO_DONE,
	    "a PUB with confirm:");
	is_int(req.pub.confirm_ms, 2500, "confirm_ms");
	is_int(parse_s("PUB 1\n\nx\n", &req, &c), PROTO_DONE, "a PUB without");
	is_int(req.pub.confirm_ms, 0, "confirm_ms 0: OK at commit");
	for (i = 0; i < sizeof(badconfirm) / sizeof(badconfirm[0]); i++) {
		snprintf(in, sizeof(in), "PUB 1\nconfirm: %s\n\nx\n",
		    badconfirm[i]);
		is_int(parse_s(in, &req, &c), PROTO_BAD, "confirm: '%s' is BAD",
		    badconfirm[i]);
		ok(strstr(req.err, "confirm: ") == req.err &&
		    strstr(req.err, "milliseconds from 1 to 86400000") != NULL,
		    "confirm: '%s': '%s'", badconfirm[i], req.err);
	}
	is_int(parse_s("PUB 1\nconfirm: 5\nconfirm: 6\n\nx\n", &req, &c),
	    PROTO_BAD, "confirm: twice is BAD");

	/* STATUS <message-id>: the rest of the line, trimmed. */
	is_int(parse_s("STATUS  ab12-7 \n", &req, &c), PROTO_DONE, "STATUS");
	ok(req.verb == PROTO_STATUS && req.status_mid.len == 6 &&
	    memcmp(req.status_mid.p, "ab12-7", 6) == 0, "its message-id");
	is_int(parse_s("STATUS my id\n", &req, &c), PROTO_DONE,
	    "a client's id with a blank");
	is_int(req.status_mid.len, 5, "kept whole");
	is_int(parse_s("STATUS\n", &req, &c), PROTO_BAD, "STATUS alone: BAD");
	ok(strstr(req.err, "STATUS needs a message-id") != NULL, "%s",
	    req.err);
	memset(in, 'x', sizeof(in));
	memcpy(in, "STATUS ", 7);
	in[7 + 256] = '\n';
	in[7 + 257] = '\0';
	is_int(parse_s(in, &req, &c), PROTO_BAD, "a 256-byte id: BAD");
	ok(strstr(req.err, "longer than 255 bytes") != NULL, "%s", req.err);
	parse_s("STATUS x\n", &req, &c);
	parse_s("PING\n", &req, &c);
	ok(req.status_mid.p == NULL, "status_mid is reset for other verbs");

	/* The client's encoder writes it; the parser reads it back. */
	proto_pub_init(&pub);
	pub.confirm_ms = 30000;
	pub.body.p = "hi";
	pub.body.len = 2;
	buf_init(&out);
	ok(proto_encode_pub(&out, &pub, err, sizeof(err)) == 0, "encoded");
	buf_append(&out, "", 1);
	ok(strstr(out.data, "\nconfirm: 30000\n") != NULL, "as confirm: 30000");
	ok(parse_s(out.data, &req, &c) == PROTO_DONE &&
	    req.pub.confirm_ms == 30000, "and parsed back");
	buf_free(&out);
}

/* max-age: (issue #23): milliseconds, 1 to ten years; encoded back. */
static void
test_max_age(void)
{
	static const char *const bad[] = {
		"0", "315360000001", "1.5", "", "30s", "-4", "99999999999999999999",
	};
	struct proto_req	 req;
	struct proto_pub	 pub;
	struct buf		 out;
	char			 in[300], err[256];
	size_t			 i, c;

	is_int(parse_s("PUB 1\nmax-age: 2500\n\nx\n", &req, &c), PROTO_DONE,
	    "a PUB with max-age:");
	ok(req.pub.max_age_ms == 2500, "max_age_ms 2500");
	is_int(parse_s("PUB 1\nmax-age: 315360000000\n\nx\n", &req, &c),
	    PROTO_DONE, "max-age: ten years");
	ok(req.pub.max_age_ms == 315360000000ULL, "max_age_ms ten years");
	is_int(parse_s("PUB 1\n\nx\n", &req, &c), PROTO_DONE, "a PUB");
	ok(req.pub.max_age_ms == 0, "max_age_ms 0 without it");
	for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		snprintf(in, sizeof(in), "PUB 1\nmax-age: %s\n\nx\n", bad[i]);
		is_int(parse_s(in, &req, &c), PROTO_BAD, "max-age: '%s' is BAD",
		    bad[i]);
		ok(strstr(req.err, "max-age: ") == req.err &&
		    strstr(req.err, "milliseconds from 1 to 315360000000") !=
		    NULL, "max-age: '%s': '%s'", bad[i], req.err);
	}
	is_int(parse_s("PUB 1\nmax-age: 5\nmax-age: 6\n\nx\n", &req, &c),
	    PROTO_BAD, "max-age: twice is BAD");

	proto_pub_init(&pub);
	pub.max_age_ms = 60000;
	pub.body.p = "hi";
	pub.body.len = 2;
	buf_init(&out);
	ok(proto_encode_pub(&out, &pub, err, sizeof(err)) == 0, "encoded");
	buf_append(&out, "", 1);
	ok(strstr(out.data, "\nmax-age: 60000\n") != NULL, "as max-age: 60000");
	ok(parse_s(out.data, &req, &c) == PROTO_DONE &&
	    req.pub.max_age_ms == 60000, "and parsed back");
	buf_free(&out);
}

static void
test_dead_line(void)
{
	static struct proto_pub	pub;
	struct buf		out;
	char			err[256];
	const char		*props = "exchange: orders\nrouting-key: "
				    "order.created\nmessage-id: abc-1\n";

	buf_init(&out);
	ok(proto_parse_props(props, strlen(props), &pub, err,
	    sizeof(err)) == 0, "props parse");
	proto_dead_line(&out, 17, 1700000000123LL, 3, 1234, &pub,
	    "NO_ROUTE: unroutable (312)");
	is_str(out.data, "17\t1700000000123\t3\t1234\torders\t"
	    "order.created\tabc-1\tNO_ROUTE: unroutable (312)\n",
	    "a full line");

	/* Lines accumulate: the daemon builds the whole body in one buffer. */
	proto_pub_init(&pub);
	proto_dead_line(&out, 18, 5, 0, 0, &pub, "");
	is_str(out.data, "17\t1700000000123\t3\t1234\torders\t"
	    "order.created\tabc-1\tNO_ROUTE: unroutable (312)\n"
	    "18\t5\t0\t0\t-\t-\t-\t-\n",
	    "empty fields are \"-\", and lines append");

	buf_reset(&out);
	proto_dead_line(&out, 19, 6, 1, 7, NULL, NULL);
	is_str(out.data, "19\t6\t1\t7\t-\t-\t-\t-\n",
	    "no props and no reason");

	/* Header values may hold tabs; a reason may hold anything. */
	props = "exchange:\nrouting-key: a\tb\nmessage-id: m\tn\n";
	ok(proto_parse_props(props, strlen(props), &pub, err,
	    sizeof(err)) == 0, "props with tabs parse");
	buf_reset(&out);
	proto_dead_line(&out, 20, 7, 1000, UINT64_MAX, &pub,
	    "line one\r\nline\ttwo\n");
	is_str(out.data, "20\t7\t1000\t18446744073709551615\t-\ta b\t"
	    "m n\tline one  line two \n",
	    "tabs, CR and LF become spaces; an empty exchange is \"-\"");
	{
		size_t	i, tabs = 0, nls = 0;

		for (i = 0; i < out.len; i++) {
			tabs += out.data[i] == '\t';
			nls += out.data[i] == '\n';
		}
		ok(tabs == 7 && nls == 1, "always 8 fields on one line");
	}
	buf_reset(&out);
	proto_dead_line(&out, INT64_MAX, -1, 0, 0, NULL, "r");
	is_str(out.data, "9223372036854775807\t-1\t0\t0\t-\t-\t-\tr\n",
	    "extreme numbers");
	buf_free(&out);
}

/* idempotency-key: 1 to 255 bytes, once, kept out of the AMQP fields. */
static void
test_idempotency_key(void)
{
	struct proto_req	 req;
	struct proto_pub	 pub, back;
	struct buf		 b, out;
	size_t			 c;
	char			 err[256], key[300];

	ok(parse_s("PUB 1\nidempotency-key: job-7:42\nIdempotency-Key2: x\n"
	    "\nx\n", &req, &c) == PROTO_BAD, "unknown look-alike refused");
	is_int(parse_s("PUB 1\nidempotency-key: job-7:42 \n\nx\n", &req, &c),
	    PROTO_DONE, "idempotency-key parsed");
	ok(streq(&req.pub.idempotency_key, "job-7:42 "),
	    "idempotency-key value, trailing blank kept");
	ok(req.pub.message_id.p == NULL, "no message-id implied");
	is_int(parse_s("PUB 1\nIDEMPOTENCY-KEY: k\n\nx\n", &req, &c),
	    PROTO_DONE, "name case-insensitive");
	bad_prop("idempotency-key:\n", "idempotency-key: empty");
	bad_prop("idempotency-key: a\nidempotency-key: a\n",
	    "idempotency-key: given twice");
	memset(key, 'k', 256);
	key[256] = '\0';
	buf_init(&b);
	buf_printf(&b, "idempotency-key: %s\n", key);
	bad_prop(b.data, "idempotency-key: longer than 255 bytes");
	buf_reset(&b);
	buf_printf(&b, "PUB 1\nidempotency-key: %.255s\n\nx\n", key);
	is_int(parse_n(b.data, b.len, NOLIMIT, &req, &c), PROTO_DONE,
	    "255-byte key taken");
	is_int(req.pub.idempotency_key.len, 255, "all of it");
	buf_free(&b);

	/* The encoder writes it and the parser reads it back. */
	proto_pub_init(&pub);
	pub.idempotency_key.p = "batch:1";
	pub.idempotency_key.len = 7;
	pub.body.p = "x";
	pub.body.len = 1;
	buf_init(&out);
	is_int(proto_encode_pub(&out, &pub, err, sizeof(err)), 0, "encoded");
	ok(strstr(out.data, "\nidempotency-key: batch:1\n") != NULL,
	    "encoded as a property line");
	is_int(parse_n(out.data, out.len, NOLIMIT, &req, &c), PROTO_DONE,
	    "encoded request parses");
	ok(streq(&req.pub.idempotency_key, "batch:1"), "same key back");
	is_int(proto_parse_props(req.pub.props.p, req.pub.props.len, &back,
	    err, sizeof(err)), 0, "stored block parses");
	ok(streq(&back.idempotency_key, "batch:1"), "stored block keeps it");
	buf_free(&out);
	pub.idempotency_key.len = 0;
	refuse(&pub, "idempotency-key: empty");
}

int
main(void)
{
	test_simple_verbs();
	test_args_and_unknown();
	test_empty_lines();
	test_pub_basic();
	test_properties();
	test_bad_properties();
	test_pub_fatal();
	test_need();
	test_toobig();
	test_line_limits();
	test_block_limit();
	test_splits();
	test_pipeline();
	test_round_trip();
	test_encode_refusals();
	test_idempotency_key();
	test_parse_props();
	test_dead();
	test_dead_line();
	test_receipts();
	test_max_age();
	free(cur);
	return done_testing();
}
