/*
 * amqpframe.c: encode the frames of one basic.publish.  See amqpframe.h.
 */
#include <stdint.h>
#include <string.h>

#include <amqp.h>
#include <amqp_framing.h>

#include "amqpframe.h"

static void
put16(unsigned char *p, uint16_t v)
{
	p[0] = (unsigned char)(v >> 8);
	p[1] = (unsigned char)v;
}

static void
put32(unsigned char *p, uint32_t v)
{
	put16(p, (uint16_t)(v >> 16));
	put16(p + 2, (uint16_t)v);
}

static void
put64(unsigned char *p, uint64_t v)
{
	put32(p, (uint32_t)(v >> 32));
	put32(p + 4, (uint32_t)v);
}

static void
frame_header(unsigned char *p, uint8_t type, uint16_t ch, uint32_t len)
{
	p[0] = type;
	put16(p + 1, ch);
	put32(p + 3, len);
}

void
amqpframe_body_header(unsigned char hdr[AMQPFRAME_HEADER], uint16_t ch,
    uint32_t len)
{
	frame_header(hdr, AMQP_FRAME_BODY, ch, len);
}

/* Upper bound of the encoded size of props (flags and every field set). */
static size_t
props_bound(const amqp_basic_properties_t *bp)
{
	/* flags; 10 short strings; table length; 2 octets; timestamp */
	size_t	n = 2 + 10 * (1 + 255) + 4 + 2 + 8, i;

	if (bp->_flags & AMQP_BASIC_HEADERS_FLAG)
		for (i = 0; i < (size_t)bp->headers.num_entries; i++)
			/* key, kind, long-string length, value */
			n += 1 + bp->headers.entries[i].key.len + 1 + 4 +
			    bp->headers.entries[i].value.value.bytes.len;
	return n;
}

size_t
amqpframe_header_size(amqp_basic_properties_t *props)
{
	struct buf	 scratch;
	amqp_bytes_t	 enc;
	size_t		 bound = props_bound(props);
	int		 plen;

	buf_init(&scratch);
	buf_reserve(&scratch, bound);
	enc.bytes = scratch.data;
	enc.len = bound;
	plen = amqp_encode_properties(AMQP_BASIC_CLASS, props, enc);
	buf_free(&scratch);
	if (plen < 0)
		return SIZE_MAX;
	return AMQPFRAME_HEADER + 12 + (size_t)plen + AMQPFRAME_FOOTER;
}

int
amqpframe_header_fits(amqp_basic_properties_t *props, size_t frame_max)
{
	if (AMQPFRAME_HEADER + 12 + props_bound(props) + AMQPFRAME_FOOTER <=
	    frame_max)
		return 1;	/* without encoding them: most messages */
	return amqpframe_header_size(props) <= frame_max;
}

int
amqpframe_publish(struct buf *out, uint16_t ch, size_t frame_max,
    amqp_bytes_t exchange, amqp_bytes_t routing_key, int mandatory,
    amqp_basic_properties_t *props, amqp_bytes_t body, int with_body)
{
	unsigned char	*p, *start;
	amqp_bytes_t	 enc;
	size_t		 chunk, off, mlen, need;
	int		 plen;

	if (exchange.len > 255 || routing_key.len > 255 ||
	    frame_max <= AMQPFRAME_HEADER + AMQPFRAME_FOOTER)
		return -1;
	if (props->_flags & AMQP_BASIC_HEADERS_FLAG) {
		int	i;

		/* props_bound() counts long strings only. */
		for (i = 0; i < props->headers.num_entries; i++)
			if (props->headers.entries[i].value.kind !=
			    AMQP_FIELD_KIND_UTF8 &&
			    props->headers.entries[i].value.kind !=
			    AMQP_FIELD_KIND_BYTES)
				return -1;
	}

	chunk = frame_max - AMQPFRAME_HEADER - AMQPFRAME_FOOTER;
	need = AMQPFRAME_HEADER + 4 + 2 + 1 + exchange.len + 1 +
	    routing_key.len + 1 + AMQPFRAME_FOOTER +
	    AMQPFRAME_HEADER + 12 + props_bound(props) + AMQPFRAME_FOOTER;
	if (with_body)
		need += body.len + (body.len / chunk + 1) *
		    (AMQPFRAME_HEADER + AMQPFRAME_FOOTER);
	buf_reserve(out, need);
	start = p = (unsigned char *)out->data + out->len;

	/* basic.publish: ticket, exchange, routing-key, mandatory|immediate */
	mlen = 4 + 2 + 1 + exchange.len + 1 + routing_key.len + 1;
	frame_header(p, AMQP_FRAME_METHOD, ch, (uint32_t)mlen);
	p += AMQPFRAME_HEADER;
	put32(p, AMQP_BASIC_PUBLISH_METHOD);
	put16(p + 4, 0);
	p += 6;
	*p++ = (unsigned char)exchange.len;
	if (exchange.len > 0)
		memcpy(p, exchange.bytes, exchange.len);
	p += exchange.len;
	*p++ = (unsigned char)routing_key.len;
	if (routing_key.len > 0)
		memcpy(p, routing_key.bytes, routing_key.len);
	p += routing_key.len;
	*p++ = mandatory ? 1 : 0;
	*p++ = AMQPFRAME_END;

	/* Content header: class, weight, body size, properties. */
	enc.bytes = p + AMQPFRAME_HEADER + 12;
	enc.len = (size_t)((unsigned char *)out->data + out->cap -
	    (unsigned char *)enc.bytes);
	plen = amqp_encode_properties(AMQP_BASIC_CLASS, props, enc);
	if (plen < 0 || AMQPFRAME_HEADER + 12 + (size_t)plen +
	    AMQPFRAME_FOOTER > frame_max)
		return -1;
	frame_header(p, AMQP_FRAME_HEADER, ch, (uint32_t)(12 + plen));
	p += AMQPFRAME_HEADER;
	put16(p, AMQP_BASIC_CLASS);
	put16(p + 2, 0);
	put64(p + 4, body.len);
	p += 12 + plen;
	*p++ = AMQPFRAME_END;

	for (off = 0; with_body && off < body.len; off += chunk) {
		size_t	n = body.len - off < chunk ? body.len - off : chunk;

		frame_header(p, AMQP_FRAME_BODY, ch, (uint32_t)n);
		p += AMQPFRAME_HEADER;
		memcpy(p, (const char *)body.bytes + off, n);
		p += n;
		*p++ = AMQPFRAME_END;
	}
	out->len += (size_t)(p - start);
	return 0;
}
