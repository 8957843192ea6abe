/*
 * amqp_base.c: bare rabbitmq-c publisher baseline for `make bench`.
 *
 * One connection, one channel in confirm mode, persistent messages of
 * BODY_BYTES bytes (each with a message-id shaped like pubrelayd's) to the
 * default exchange and a durable QUEUE (declared here), at most WINDOW
 * unconfirmed at a time: what rabbitmq-c alone gets from this broker.
 * TYPE (optional) is "classic" (the default: a plain durable queue) or
 * "quorum" (durable, x-queue-type=quorum); the queue is declared with it, so
 * an existing queue of the other type is a PRECONDITION_FAILED.
 *
 * usage: amqp_base HOST PORT QUEUE MESSAGES BODY_BYTES WINDOW [TYPE [PAUSE]]
 * prints: msgs=N secs=S rate=R nacked=K
 *
 * With PAUSE (microseconds; WINDOW must be 1) it sleeps that long before
 * each publish, as a one-shot client leaves the broker idle between
 * messages, and also prints p50_ms= and p99_ms=: publish to its confirm on
 * the open connection, what a receipt (issue #20) costs the broker's side.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <amqp.h>
#include <amqp_tcp_socket.h>

static double
now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

static int
cmp_double(const void *a, const void *b)
{
	double	x = *(const double *)a, y = *(const double *)b;

	return x < y ? -1 : x > y;
}

static void
die_rpc(amqp_rpc_reply_t r, const char *what)
{
	if (r.reply_type == AMQP_RESPONSE_NORMAL)
		return;
	fprintf(stderr, "amqp_base: %s failed (%d)\n", what, r.reply_type);
	exit(1);
}

int
main(int argc, char **argv)
{
	amqp_connection_state_t	 conn;
	amqp_socket_t		*sock;
	amqp_basic_properties_t	 bp;
	amqp_bytes_t		 body, queue;
	amqp_frame_t		 f;
	amqp_table_entry_t	 qarg;
	amqp_table_t		 qargs = amqp_empty_table;
	char			 mid[64], *buf;
	uint64_t		 n, sent = 0, acked = 0, nacked = 0, window, size;
	double			 t0, t1, *lat = NULL;
	long			 pause_us = -1;
	int			 rc;

	if (argc < 7 || argc > 9) {
		fprintf(stderr, "usage: amqp_base HOST PORT QUEUE MESSAGES "
		    "BODY_BYTES WINDOW [classic|quorum [PAUSE]]\n");
		return 2;
	}
	if (argc >= 8 && strcmp(argv[7], "quorum") == 0) {
		qarg.key = amqp_cstring_bytes("x-queue-type");
		qarg.value.kind = AMQP_FIELD_KIND_UTF8;
		qarg.value.value.bytes = amqp_cstring_bytes("quorum");
		qargs.num_entries = 1;
		qargs.entries = &qarg;
	} else if (argc >= 8 && strcmp(argv[7], "classic") != 0) {
		fprintf(stderr, "amqp_base: queue type %s: not classic or "
		    "quorum\n", argv[7]);
		return 2;
	}
	n = strtoull(argv[4], NULL, 10);
	size = strtoull(argv[5], NULL, 10);
	window = strtoull(argv[6], NULL, 10);
	if (argc == 9) {
		pause_us = atol(argv[8]);
		if (pause_us < 0 || window != 1 || n == 0) {
			fprintf(stderr, "amqp_base: PAUSE needs WINDOW 1\n");
			return 2;
		}
		lat = calloc(n, sizeof(*lat));
	}
	conn = amqp_new_connection();
	sock = amqp_tcp_socket_new(conn);
	if (amqp_socket_open(sock, argv[1], atoi(argv[2])) != AMQP_STATUS_OK) {
		fprintf(stderr, "amqp_base: cannot connect\n");
		return 1;
	}
	die_rpc(amqp_login(conn, "/", 0, 131072, 0, AMQP_SASL_METHOD_PLAIN,
	    "guest", "guest"), "login");
	amqp_channel_open(conn, 1);
	die_rpc(amqp_get_rpc_reply(conn), "channel.open");
	queue = amqp_cstring_bytes(argv[3]);
	/* passive 0, durable 1, exclusive 0, auto_delete 0 */
	amqp_queue_declare(conn, 1, queue, 0, 1, 0, 0, qargs);
	die_rpc(amqp_get_rpc_reply(conn), "queue.declare");
	amqp_confirm_select(conn, 1);
	die_rpc(amqp_get_rpc_reply(conn), "confirm.select");

	buf = malloc(size + 1);
	memset(buf, 'x', size);
	body.bytes = buf;
	body.len = size;
	memset(&bp, 0, sizeof(bp));
	bp._flags = AMQP_BASIC_DELIVERY_MODE_FLAG | AMQP_BASIC_MESSAGE_ID_FLAG;
	bp.delivery_mode = 2;

	t0 = now();
	while (acked + nacked < n) {
		while (sent < n && sent - acked - nacked < window) {
			snprintf(mid, sizeof(mid),
			    "0123456789abcdef0123456789abcdef-%" PRIu64, sent + 1);
			bp.message_id = amqp_cstring_bytes(mid);
			if (lat != NULL) {
				usleep(pause_us);
				lat[sent] = now();
			}
			rc = amqp_basic_publish(conn, 1, amqp_empty_bytes, queue,
			    0, 0, &bp, body);
			if (rc != AMQP_STATUS_OK) {
				fprintf(stderr, "amqp_base: publish: %s\n",
				    amqp_error_string2(rc));
				return 1;
			}
			sent++;
		}
		rc = amqp_simple_wait_frame(conn, &f);
		if (rc != AMQP_STATUS_OK) {
			fprintf(stderr, "amqp_base: wait: %s\n",
			    amqp_error_string2(rc));
			return 1;
		}
		if (f.frame_type != AMQP_FRAME_METHOD)
			continue;
		if (f.payload.method.id == AMQP_BASIC_ACK_METHOD ||
		    f.payload.method.id == AMQP_BASIC_NACK_METHOD) {
			uint64_t tag, done;
			int multiple, nack;

			nack = f.payload.method.id == AMQP_BASIC_NACK_METHOD;
			if (nack) {
				amqp_basic_nack_t *m = f.payload.method.decoded;
				tag = m->delivery_tag;
				multiple = m->multiple;
			} else {
				amqp_basic_ack_t *m = f.payload.method.decoded;
				tag = m->delivery_tag;
				multiple = m->multiple;
			}
			done = multiple ? tag - (acked + nacked) : 1;
			if (lat != NULL)
				lat[acked + nacked] = now() - lat[acked + nacked];
			if (nack)
				nacked += done;
			else
				acked += done;
		} else {
			fprintf(stderr, "amqp_base: unexpected method 0x%08x\n",
			    (unsigned)f.payload.method.id);
			return 1;
		}
		amqp_maybe_release_buffers(conn);
	}
	t1 = now();
	printf("msgs=%" PRIu64 " secs=%.4f rate=%.0f nacked=%" PRIu64, n,
	    t1 - t0, n / (t1 - t0), nacked);
	if (lat != NULL) {
		qsort(lat, n, sizeof(*lat), cmp_double);
		printf(" p50_ms=%.3f p99_ms=%.3f", 1000 * lat[n / 2],
		    1000 * lat[n * 99 / 100]);
	}
	printf("\n");
	amqp_channel_close(conn, 1, AMQP_REPLY_SUCCESS);
	amqp_connection_close(conn, AMQP_REPLY_SUCCESS);
	amqp_destroy_connection(conn);
	free(buf);
	free(lat);
	return 0;
}
