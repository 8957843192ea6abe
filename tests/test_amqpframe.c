/*
 * test_amqpframe.c: the frames src/amqpframe.c encodes, read back with
 * rabbitmq-c's own decoders (amqp_decode_method, amqp_decode_properties),
 * so the batched publisher puts on the wire what amqp_basic_publish would.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <amqp.h>
#include <amqp_framing.h>

#include "../src/amqpframe.h"
#include "tap.h"

struct frame {
	int		 type;
	unsigned	 ch;
	const unsigned char *payload;
	size_t		 len;
};

static uint32_t
get32(const unsigned char *p)
{
	return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 |
	    (uint32_t)p[2] << 8 | p[3];
}

/* Split buf into frames; -1 when a frame is cut short or lacks its 0xCE. */
static int
split(const struct buf *b, struct frame *f, int max)
{
	const unsigned char	*p = (const unsigned char *)b->data;
	size_t			 off = 0;
	int			 n = 0;

	while (off < b->len) {
		if (n == max || b->len - off < 8)
			return -1;
		f[n].type = p[off];
		f[n].ch = (unsigned)p[off + 1] << 8 | p[off + 2];
		f[n].len = get32(p + off + 3);
		if (b->len - off < 8 + f[n].len ||
		    p[off + 7 + f[n].len] != AMQPFRAME_END)
			return -1;
		f[n].payload = p + off + 7;
		off += 8 + f[n].len;
		n++;
	}
	return n;
}

static int
bytes_eq(amqp_bytes_t a, const char *s)
{
	return a.len == strlen(s) && (a.len == 0 || memcmp(a.bytes, s, a.len) == 0);
}

static void
test_roundtrip(const char *what, size_t frame_max, size_t blen, int full)
{
	amqp_basic_properties_t	 bp, *dp;
	amqp_basic_publish_t	*m;
	amqp_table_entry_t	 hdrs[3];
	amqp_pool_t		 pool;
	amqp_bytes_t		 enc, body;
	struct frame		 f[64];
	struct buf		 b;
	char			*data;
	size_t			 i, got;
	int			 n, k, bad;

	data = malloc(blen + 1);
	for (i = 0; i < blen; i++)
		data[i] = (char)('a' + i % 26);
	body.bytes = data;
	body.len = blen;
	memset(&bp, 0, sizeof(bp));
	bp._flags = AMQP_BASIC_DELIVERY_MODE_FLAG | AMQP_BASIC_MESSAGE_ID_FLAG;
	bp.delivery_mode = 2;
	bp.message_id = amqp_cstring_bytes("a1b2-42");
	if (full) {
		bp._flags |= AMQP_BASIC_CONTENT_TYPE_FLAG |
		    AMQP_BASIC_CORRELATION_ID_FLAG | AMQP_BASIC_PRIORITY_FLAG |
		    AMQP_BASIC_TIMESTAMP_FLAG | AMQP_BASIC_HEADERS_FLAG |
		    AMQP_BASIC_APP_ID_FLAG | AMQP_BASIC_EXPIRATION_FLAG;
		bp.content_type = amqp_cstring_bytes("application/json");
		bp.correlation_id = amqp_cstring_bytes("corr");
		bp.priority = 7;
		bp.timestamp = 1700000000;
		bp.app_id = amqp_cstring_bytes("tests");
		bp.expiration = amqp_cstring_bytes("60000");
		hdrs[0].key = amqp_cstring_bytes("x-one");
		hdrs[1].key = amqp_cstring_bytes("x-two");
		hdrs[2].key = amqp_cstring_bytes("empty");
		for (k = 0; k < 3; k++)
			hdrs[k].value.kind = AMQP_FIELD_KIND_UTF8;
		hdrs[0].value.value.bytes = amqp_cstring_bytes("1");
		hdrs[1].value.value.bytes = amqp_cstring_bytes("second value");
		hdrs[2].value.value.bytes = amqp_cstring_bytes("");
		bp.headers.num_entries = 3;
		bp.headers.entries = hdrs;
	}

	buf_init(&b);
	buf_append(&b, "x", 1);		/* appends after what is there */
	ok(amqpframe_publish(&b, 9, frame_max, amqp_cstring_bytes("ex"),
	    amqp_cstring_bytes(full ? "orders.created" : ""), full, &bp, body,
	    1) == 0, "%s: encoded", what);
	ok(b.data[0] == 'x', "%s: earlier bytes kept", what);
	b.data++, b.len--;
	n = split(&b, f, 64);
	ok(n >= 2, "%s: whole frames, each ending in 0xCE (%d)", what, n);
	if (n < 2)
		goto out;
	ok(f[0].type == AMQP_FRAME_METHOD && f[1].type == AMQP_FRAME_HEADER,
	    "%s: method then content header", what);
	for (k = 0, bad = 0; k < n; k++)
		bad += f[k].ch != 9 || f[k].len + 8 > frame_max;
	is_int(bad, 0, "%s: channel 9, no frame over frame_max", what);
	is_int(get32(f[0].payload), AMQP_BASIC_PUBLISH_METHOD,
	    "%s: basic.publish", what);

	init_amqp_pool(&pool, 4096);
	enc.bytes = (void *)(uintptr_t)(f[0].payload + 4);
	enc.len = f[0].len - 4;
	ok(amqp_decode_method(AMQP_BASIC_PUBLISH_METHOD, &pool, enc,
	    (void **)&m) == 0, "%s: rabbitmq-c decodes the method", what);
	ok(bytes_eq(m->exchange, "ex") &&
	    bytes_eq(m->routing_key, full ? "orders.created" : "") &&
	    m->mandatory == (full ? 1 : 0) && m->immediate == 0,
	    "%s: exchange, routing key, mandatory, immediate", what);

	ok(f[1].len >= 12 && f[1].payload[0] == 0 && f[1].payload[1] == 60 &&
	    f[1].payload[2] == 0 && f[1].payload[3] == 0,
	    "%s: header class 60, weight 0", what);
	is_int((uint64_t)get32(f[1].payload + 4) << 32 | get32(f[1].payload + 8),
	    blen, "%s: header body size", what);
	enc.bytes = (void *)(uintptr_t)(f[1].payload + 12);
	enc.len = f[1].len - 12;
	ok(amqp_decode_properties(AMQP_BASIC_CLASS, &pool, enc,
	    (void **)&dp) == 0, "%s: rabbitmq-c decodes the properties", what);
	ok(dp->_flags == bp._flags && dp->delivery_mode == 2 &&
	    bytes_eq(dp->message_id, "a1b2-42"), "%s: flags, delivery mode, "
	    "message-id", what);
	if (full) {
		ok(bytes_eq(dp->content_type, "application/json") &&
		    bytes_eq(dp->correlation_id, "corr") && dp->priority == 7 &&
		    dp->timestamp == 1700000000 && bytes_eq(dp->app_id, "tests") &&
		    bytes_eq(dp->expiration, "60000"),
		    "%s: the other properties", what);
		ok(dp->headers.num_entries == 3 &&
		    bytes_eq(dp->headers.entries[0].key, "x-one") &&
		    bytes_eq(dp->headers.entries[0].value.value.bytes, "1") &&
		    bytes_eq(dp->headers.entries[1].value.value.bytes,
		    "second value") &&
		    dp->headers.entries[2].value.kind == AMQP_FIELD_KIND_UTF8 &&
		    dp->headers.entries[2].value.value.bytes.len == 0,
		    "%s: headers", what);
	}
	empty_amqp_pool(&pool);

	for (k = 2, got = 0, bad = 0; k < n; k++) {
		bad += f[k].type != AMQP_FRAME_BODY ||
		    memcmp(f[k].payload, data + got, f[k].len) != 0 ||
		    (k < n - 1 && f[k].len + 8 != frame_max);
		got += f[k].len;
	}
	is_int(got, blen, "%s: body frames carry the whole body", what);
	is_int(bad, 0, "%s: body bytes in order, frames full but the last",
	    what);
	is_int(n - 2, blen == 0 ? 0 : (blen + frame_max - 9) / (frame_max - 8),
	    "%s: body frame count", what);
	b.data--;
out:
	buf_free(&b);
	free(data);
}

static void
test_errors(void)
{
	amqp_basic_properties_t	 bp;
	amqp_table_entry_t	 h;
	amqp_bytes_t		 body = { 3, "abc" };
	struct buf		 b;
	char			 longkey[300];

	memset(&bp, 0, sizeof(bp));
	memset(longkey, 'k', sizeof(longkey) - 1);
	longkey[sizeof(longkey) - 1] = '\0';
	buf_init(&b);
	buf_append(&b, "keep", 4);
	ok(amqpframe_publish(&b, 1, 4096, amqp_cstring_bytes(longkey),
	    amqp_cstring_bytes("q"), 0, &bp, body, 1) == -1 && b.len == 4,
	    "exchange over 255 bytes refused, buffer unchanged");
	ok(amqpframe_publish(&b, 1, 4096, amqp_cstring_bytes(""),
	    amqp_cstring_bytes(longkey), 0, &bp, body, 1) == -1 && b.len == 4,
	    "routing key over 255 bytes refused, buffer unchanged");
	ok(amqpframe_publish(&b, 1, 8, amqp_cstring_bytes(""),
	    amqp_cstring_bytes("q"), 0, &bp, body, 1) == -1 && b.len == 4,
	    "frame_max too small refused");
	h.key = amqp_cstring_bytes("n");
	h.value.kind = AMQP_FIELD_KIND_I32;
	h.value.value.i32 = 1;
	bp._flags = AMQP_BASIC_HEADERS_FLAG;
	bp.headers.num_entries = 1;
	bp.headers.entries = &h;
	ok(amqpframe_publish(&b, 1, 4096, amqp_cstring_bytes(""),
	    amqp_cstring_bytes("q"), 0, &bp, body, 1) == -1 && b.len == 4,
	    "a header kind other than a string refused");
	memset(&bp, 0, sizeof(bp));
	ok(amqpframe_publish(&b, 1, 4096, amqp_cstring_bytes(""),
	    amqp_cstring_bytes("q"), 0, &bp, body, 0) == 0,
	    "without the body: encoded");
	{
		struct buf	 v = { b.data + 4, b.len - 4, b.cap, 0 };
		struct frame	 f[4];

		is_int(split(&v, f, 4), 2, "without the body: two frames");
	}
	buf_free(&b);
}

/*
 * Properties whose content header frame is larger than frame_max: the broker
 * closes the connection on such a frame, so it is never encoded, and
 * amqpframe_header_size() tells the publisher beforehand.
 */
static void
test_header_size(void)
{
	amqp_basic_properties_t	 bp;
	amqp_table_entry_t	 h[64];
	amqp_bytes_t		 body = { 3, "abc" };
	struct buf		 b;
	struct frame		 f[4];
	char			 key[64][16], value[100];
	size_t			 size;
	int			 i;

	memset(&bp, 0, sizeof(bp));
	memset(value, 'v', sizeof(value) - 1);
	value[sizeof(value) - 1] = '\0';
	for (i = 0; i < 64; i++) {
		snprintf(key[i], sizeof(key[i]), "h%d", i);
		h[i].key = amqp_cstring_bytes(key[i]);
		h[i].value.kind = AMQP_FIELD_KIND_UTF8;
		h[i].value.value.bytes = amqp_cstring_bytes(value);
	}
	bp._flags = AMQP_BASIC_HEADERS_FLAG | AMQP_BASIC_MESSAGE_ID_FLAG;
	bp.message_id = amqp_cstring_bytes("id-1");
	bp.headers.num_entries = 64;
	bp.headers.entries = h;
	size = amqpframe_header_size(&bp);
	buf_init(&b);
	ok(amqpframe_publish(&b, 1, 131072, amqp_cstring_bytes(""),
	    amqp_cstring_bytes("q"), 0, &bp, body, 0) == 0 &&
	    split(&b, f, 4) == 2, "64 headers of 100 bytes: encoded");
	is_int(size, 8 + f[1].len, "amqpframe_header_size() is the content "
	    "header frame's size (%zu)", size);
	ok(size > 4096, "more than the smallest frame_max");
	buf_reset(&b);
	ok(amqpframe_publish(&b, 1, 4096, amqp_cstring_bytes(""),
	    amqp_cstring_bytes("q"), 0, &bp, body, 1) == -1 && b.len == 0,
	    "refused with frame_max 4096, buffer unchanged");
	ok(amqpframe_publish(&b, 1, size, amqp_cstring_bytes(""),
	    amqp_cstring_bytes("q"), 0, &bp, body, 1) == 0, "encoded with "
	    "frame_max %zu", size);
	buf_reset(&b);
	ok(amqpframe_publish(&b, 1, size - 1, amqp_cstring_bytes(""),
	    amqp_cstring_bytes("q"), 0, &bp, body, 1) == -1, "refused with "
	    "one byte less");
	buf_free(&b);
}

int
main(void)
{
	test_roundtrip("empty body, few properties", 131072, 0, 0);
	test_roundtrip("100 B, every property", 131072, 100, 1);
	test_roundtrip("exactly one frame of body", 4096, 4096 - 8, 1);
	test_roundtrip("one byte over a frame", 4096, 4096 - 7, 0);
	test_roundtrip("10 frames and a bit", 4096, 10 * 4088 + 17, 1);
	test_errors();
	test_header_size();
	return done_testing();
}
