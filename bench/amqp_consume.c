/*
 * amqp_consume.c: latency consumer for `make bench`.
 *
 * Consumes QUEUE (declared durable here, no-ack) and, for each message whose
 * body starts with "T<ns>" (CLOCK_REALTIME nanoseconds when the load
 * generator handed it to the relay), records now - sent.  Prints "ready"
 * once consuming, then, after MESSAGES messages or IDLE_S seconds without
 * one, the percentiles.
 *
 * usage: amqp_consume HOST PORT QUEUE MESSAGES IDLE_S
 * prints: msgs=N p50_us=.. p99_us=.. p999_us=.. max_us=..
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>

#include <amqp.h>
#include <amqp_tcp_socket.h>

static int64_t
now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static int
cmp64(const void *a, const void *b)
{
	int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;

	return x < y ? -1 : x > y;
}

static double
pct(int64_t *v, uint64_t n, double p)
{
	uint64_t i;

	if (n == 0)
		return 0;
	i = (uint64_t)(p * (n - 1) + 0.5);
	return v[i] / 1000.0;
}

int
main(int argc, char **argv)
{
	amqp_connection_state_t	 conn;
	amqp_socket_t		*sock;
	amqp_envelope_t		 env;
	amqp_rpc_reply_t	 r;
	struct timeval		 tv;
	uint64_t		 want, got = 0;
	int64_t			*lat;

	if (argc != 6) {
		fprintf(stderr, "usage: amqp_consume HOST PORT QUEUE MESSAGES "
		    "IDLE_S\n");
		return 2;
	}
	want = strtoull(argv[4], NULL, 10);
	tv.tv_sec = atoi(argv[5]);
	tv.tv_usec = 0;
	lat = calloc(want + 1, sizeof(*lat));
	conn = amqp_new_connection();
	sock = amqp_tcp_socket_new(conn);
	if (amqp_socket_open(sock, argv[1], atoi(argv[2])) != AMQP_STATUS_OK) {
		fprintf(stderr, "amqp_consume: cannot connect\n");
		return 1;
	}
	r = amqp_login(conn, "/", 0, 131072, 0, AMQP_SASL_METHOD_PLAIN,
	    "guest", "guest");
	if (r.reply_type != AMQP_RESPONSE_NORMAL)
		return 1;
	amqp_channel_open(conn, 1);
	amqp_queue_declare(conn, 1, amqp_cstring_bytes(argv[3]), 0, 1, 0, 0,
	    amqp_empty_table);
	amqp_basic_consume(conn, 1, amqp_cstring_bytes(argv[3]),
	    amqp_empty_bytes, 0, 1, 0, amqp_empty_table);
	r = amqp_get_rpc_reply(conn);
	if (r.reply_type != AMQP_RESPONSE_NORMAL) {
		fprintf(stderr, "amqp_consume: basic.consume failed\n");
		return 1;
	}
	printf("ready\n");
	fflush(stdout);
	while (got < want) {
		amqp_maybe_release_buffers(conn);
		r = amqp_consume_message(conn, &env, &tv, 0);
		if (r.reply_type != AMQP_RESPONSE_NORMAL)
			break;		/* idle timeout or error */
		if (env.message.body.len > 1 &&
		    ((char *)env.message.body.bytes)[0] == 'T') {
			char num[24];
			size_t l = env.message.body.len - 1;

			if (l > sizeof(num) - 1)
				l = sizeof(num) - 1;
			memcpy(num, (char *)env.message.body.bytes + 1, l);
			num[l] = '\0';
			lat[got++] = now_ns() - strtoll(num, NULL, 10);
		}
		amqp_destroy_envelope(&env);
	}
	qsort(lat, got, sizeof(*lat), cmp64);
	printf("msgs=%" PRIu64 " p50_us=%.0f p99_us=%.0f p999_us=%.0f "
	    "max_us=%.0f\n", got, pct(lat, got, 0.5), pct(lat, got, 0.99),
	    pct(lat, got, 0.999), got ? lat[got - 1] / 1000.0 : 0.0);
	amqp_destroy_connection(conn);
	return 0;
}
