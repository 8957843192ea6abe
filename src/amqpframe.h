/*
 * amqpframe.h: the AMQP 0-9-1 frames of one basic.publish (method, content
 * header, body), encoded into a caller's buffer.  Pure code: no I/O.
 *
 * rabbitmq-c 0.11's amqp_basic_publish() sends these frames with one send()
 * each; the publisher instead encodes a whole batch of messages and writes it
 * with one call, which is most of what a message costs the relay on the
 * broker side.  The properties are encoded by rabbitmq-c's own
 * amqp_encode_properties(), so both paths put the same bytes on the wire.
 */
#ifndef PUBRELAY_AMQPFRAME_H
#define PUBRELAY_AMQPFRAME_H

#include <stddef.h>
#include <stdint.h>

#include <amqp.h>

#include "util.h"

#define AMQPFRAME_HEADER	7	/* type, channel, size */
#define AMQPFRAME_FOOTER	1	/* 0xCE */
#define AMQPFRAME_END		0xCE

/*
 * Append the method and content-header frames of a basic.publish on channel
 * ch to out, and, when with_body is set, the body frames too (each at most
 * frame_max bytes in all).  exchange and routing_key are at most 255 bytes.
 * Returns 0, or -1 when a field cannot be encoded or the content header
 * does not fit frame_max (out is then unchanged).
 */
int	amqpframe_publish(struct buf *out, uint16_t ch, size_t frame_max,
	    amqp_bytes_t exchange, amqp_bytes_t routing_key, int mandatory,
	    amqp_basic_properties_t *props, amqp_bytes_t body, int with_body);

/*
 * Size of the content-header frame that carries props, frame header and end
 * included: it must not exceed the connection's frame_max, or the broker
 * closes the connection.  SIZE_MAX when props cannot be encoded.
 */
size_t	amqpframe_header_size(amqp_basic_properties_t *props);
/* Whether that frame fits frame_max; encodes props only when it may not. */
int	amqpframe_header_fits(amqp_basic_properties_t *props, size_t frame_max);

/* The 7-byte header of a body frame carrying len bytes. */
void	amqpframe_body_header(unsigned char hdr[AMQPFRAME_HEADER], uint16_t ch,
	    uint32_t len);

#endif
