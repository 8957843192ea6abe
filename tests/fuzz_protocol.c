/*
 * fuzz_protocol.c: libFuzzer entry point for the protocol parser.
 *
 *   clang -g -O1 -fsanitize=fuzzer,address,undefined -Isrc \
 *       tests/fuzz_protocol.c src/protocol.c src/util.c -o fuzz_protocol
 *   ./fuzz_protocol -max_total_time=60 tests/corpus/protocol
 *
 * Besides memory errors it checks what the session relies on: consumed and
 * need stay in range, a parsed message re-parses the same from its stored
 * property block and from its own encoding, and a request split anywhere
 * parses the same as whole.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "protocol.h"
#include "util.h"

int LLVMFuzzerTestOneInput(const uint8_t *, size_t);

#define FUZZ_MAX_BODY	1024
#define FUZZ_SPLIT_MAX	512	/* inputs checked at every split point */

#define CHECK(c) do {							\
	if (!(c))							\
		abort();						\
} while (0)

static int
fuzz_str_same(const struct proto_str *a, const struct proto_str *b)
{
	if (a->p == NULL || b->p == NULL)
		return a->p == NULL && b->p == NULL;
	return a->len == b->len && (a->len == 0 ||
	    memcmp(a->p, b->p, a->len) == 0);
}

static int
fuzz_pub_same(const struct proto_pub *a, const struct proto_pub *b)
{
	unsigned	i;

	if (!fuzz_str_same(&a->exchange, &b->exchange) ||
	    !fuzz_str_same(&a->routing_key, &b->routing_key) ||
	    !fuzz_str_same(&a->content_type, &b->content_type) ||
	    !fuzz_str_same(&a->content_encoding, &b->content_encoding) ||
	    !fuzz_str_same(&a->correlation_id, &b->correlation_id) ||
	    !fuzz_str_same(&a->reply_to, &b->reply_to) ||
	    !fuzz_str_same(&a->expiration, &b->expiration) ||
	    !fuzz_str_same(&a->message_id, &b->message_id) ||
	    !fuzz_str_same(&a->type, &b->type) ||
	    !fuzz_str_same(&a->app_id, &b->app_id) ||
	    !fuzz_str_same(&a->idempotency_key, &b->idempotency_key))
		return 0;
	if (a->mandatory != b->mandatory ||
	    a->delivery_mode != b->delivery_mode ||
	    a->priority != b->priority ||
	    a->has_timestamp != b->has_timestamp ||
	    (a->has_timestamp && a->timestamp != b->timestamp) ||
	    a->nheaders != b->nheaders)
		return 0;
	for (i = 0; i < a->nheaders; i++) {
		if (!fuzz_str_same(&a->headers[i].name, &b->headers[i].name) ||
		    !fuzz_str_same(&a->headers[i].value, &b->headers[i].value))
			return 0;
	}
	return 1;
}

/* Whatever the encoder accepts must parse back to the same message. */
static void
fuzz_reencode(const struct proto_pub *pub)
{
	static struct proto_req	 req;
	struct proto_limits	 lim = { .max_body = SIZE_MAX };
	struct buf		 out;
	char			 err[256];
	size_t			 c;

	buf_init(&out);
	if (proto_encode_pub(&out, pub, err, sizeof(err)) == 0) {
		CHECK(proto_parse(out.data, out.len, &lim, &req, &c) ==
		    PROTO_DONE);
		CHECK(c == out.len);
		CHECK(fuzz_pub_same(pub, &req.pub));
		CHECK(req.pub.body.len == pub->body.len);
		CHECK(pub->body.len == 0 ||
		    memcmp(req.pub.body.p, pub->body.p, pub->body.len) == 0);
	} else {
		CHECK(out.len == 0);
		CHECK(err[0] != '\0');
	}
	buf_free(&out);
}

static void
fuzz_check_done(const struct proto_req *req, const char *buf, size_t len,
    size_t c)
{
	static struct proto_pub	pub;
	char			err[256];

	CHECK(c > 0 && c <= len);
	if (req->verb == PROTO_DEAD) {
		CHECK(req->dead_op == PROTO_DEAD_LIST ||
		    req->dead_op == PROTO_DEAD_RETRY ||
		    req->dead_op == PROTO_DEAD_PURGE);
		CHECK(req->dead_max <= PROTO_DEAD_LIST_MAX);
		CHECK(req->dead_id >= 0);
		CHECK(req->dead_op == PROTO_DEAD_LIST || req->dead_max == 0);
		CHECK(req->dead_after >= 0);
		CHECK(req->dead_op == PROTO_DEAD_LIST || req->dead_after == 0);
		return;
	}
	if (req->verb == PROTO_WAIT) {
		CHECK(req->wait_ms <= PROTO_WAIT_MAX_MS);
		return;
	}
	if (req->verb == PROTO_STATUS) {
		CHECK(req->status_mid.p >= buf && req->status_mid.len > 0 &&
		    req->status_mid.len <= PROTO_SHORTSTR_MAX &&
		    req->status_mid.p + req->status_mid.len <= buf + c);
		CHECK(memchr(req->status_mid.p, '\0',
		    req->status_mid.len) == NULL);
		return;
	}
	CHECK(req->verb == PROTO_WAIT || req->wait_ms == 0);
	CHECK(req->status_mid.p == NULL);
	if (req->verb != PROTO_PUB) {
		CHECK(req->verb == PROTO_PING || req->verb == PROTO_STATS ||
		    req->verb == PROTO_RESET);
		return;
	}
	CHECK(req->pub.body.p >= buf &&
	    req->pub.body.p + req->pub.body.len <= buf + len);
	CHECK(req->pub.body.len <= FUZZ_MAX_BODY);
	CHECK(req->pub.props.p >= buf &&
	    req->pub.props.p + req->pub.props.len <= req->pub.body.p);
	CHECK(req->pub.props.len <= PROTO_MAX_BLOCK);
	CHECK(req->pub.nheaders <= PROTO_MAX_HEADERS);
	CHECK(proto_parse_props(req->pub.props.p, req->pub.props.len, &pub,
	    err, sizeof(err)) == 0);
	CHECK(fuzz_pub_same(&req->pub, &pub));
	fuzz_reencode(&req->pub);
}

/* Every proper prefix of one request is INCOMPLETE, or FATAL for good. */
static void
fuzz_check_splits(const char *buf, size_t len, int st, size_t consumed,
    const char *code)
{
	static struct proto_req	req;
	struct proto_limits	lim = { .max_body = FUZZ_MAX_BODY };
	size_t			k, c, end;
	int			r, fatal = 0;

	end = st == PROTO_FATAL || consumed > len ? len : consumed;
	for (k = 0; k < end; k++) {
		r = proto_parse(buf, k, &lim, &req, &c);
		if (st == PROTO_FATAL && r == PROTO_FATAL) {
			fatal = 1;
			continue;
		}
		CHECK(!fatal);
		if (st == PROTO_BAD && strcmp(code, PROTO_E_TOOBIG) == 0 &&
		    r == PROTO_BAD) {
			CHECK(c == consumed);
			CHECK(strcmp(req.err_code, PROTO_E_TOOBIG) == 0);
			continue;
		}
		CHECK(r == PROTO_INCOMPLETE);
		CHECK(c == 0);
		CHECK(req.need == 0 || req.need > k);
		if (st == PROTO_DONE || st == PROTO_BAD)
			CHECK(req.need <= consumed);
	}
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static struct proto_req	 req;
	static struct proto_pub	 pub;
	struct proto_limits	 lim = { .max_body = FUZZ_MAX_BODY };
	const char		*buf = (const char *)data;
	char			 err[256];
	size_t			 off = 0, c;
	int			 st, first = 1;

	/* The stream, consumed the way the session consumes it. */
	while (off < size) {
		c = 12345;
		st = proto_parse(buf + off, size - off, &lim, &req, &c);
		if (first && size <= FUZZ_SPLIT_MAX)
			fuzz_check_splits(buf + off, size - off, st, c,
			    req.err_code);
		first = 0;
		if (st == PROTO_DONE) {
			fuzz_check_done(&req, buf + off, size - off, c);
			off += c;
			continue;
		}
		if (st == PROTO_INCOMPLETE) {
			CHECK(c == 0);
			CHECK(req.need == 0 || req.need > size - off);
			break;
		}
		CHECK(req.err_code != NULL && req.err[0] != '\0');
		CHECK(memchr(req.err, '\n', strlen(req.err)) == NULL);
		if (st == PROTO_FATAL) {
			CHECK(strcmp(req.err_code, PROTO_E_PROTO) == 0);
			break;
		}
		CHECK(st == PROTO_BAD);
		CHECK(c > 0);
		if (strcmp(req.err_code, PROTO_E_TOOBIG) != 0)
			CHECK(c <= size - off);
		if (c >= size - off)
			break;
		off += c;
	}

	/* The same bytes as a stored property block. */
	if (proto_parse_props(buf, size, &pub, err, sizeof(err)) == 0) {
		CHECK(pub.props.p == buf && pub.props.len == size);
		fuzz_reencode(&pub);
	} else
		CHECK(err[0] != '\0');
	return 0;
}
