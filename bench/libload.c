/*
 * libload.c: one thread pipelining through libpubrelay, for `make bench`
 * (section 1c): N PUB requests of SIZE body bytes with a routing-key, at
 * most DEPTH unanswered (pubrelay_set_window()), sent with pubrelay_send()
 * and collected with pubrelay_recv(), the way an application would.  It
 * is bench/loadgen with one client, through the library: each request is
 * timed from the moment it is queued (the clock read once per refill, as
 * loadgen reads it once per loop) to the return of its reply.
 *
 * usage: libload SOCKET N SIZE DEPTH ROUTING_KEY
 * prints: msgs=.. secs=.. rate=.. errors=.. p50_us=.. p99_us=.. max_us=..
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "pubrelay.h"

static int64_t
mono_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
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
	if (n == 0)
		return 0;
	return v[(uint64_t)(p * (n - 1) + 0.5)] / 1000.0;
}

int
main(int argc, char **argv)
{
	pubrelay	*h;
	pubrelay_props	*p;
	char		*body;
	int64_t		*lat, *ring, t0, t1, now;
	uint64_t	 n, sent = 0, done = 0, errors = 0, nlat = 0;
	unsigned	 depth;
	long		 size;
	int		 rc;

	if (argc != 6) {
		fprintf(stderr, "usage: libload SOCKET N SIZE DEPTH "
		    "ROUTING_KEY\n");
		return 2;
	}
	n = strtoull(argv[2], NULL, 10);
	size = atol(argv[3]);
	depth = (unsigned)atoi(argv[4]);
	if (n == 0 || size < 1 || depth == 0)
		return 2;
	body = malloc((size_t)size);
	lat = malloc(n * sizeof(*lat));
	ring = malloc(depth * sizeof(*ring));
	p = pubrelay_props_new();
	if (body == NULL || lat == NULL || ring == NULL || p == NULL)
		return 1;
	memset(body, 'x', (size_t)size);
	if (pubrelay_props_set(p, "routing-key", argv[5]) != 0)
		return 2;

	t0 = mono_ns();
	h = pubrelay_open(argv[1], 30000);
	if (pubrelay_errcode(h) != PUBRELAY_OK ||
	    pubrelay_set_window(h, depth) != PUBRELAY_OK) {
		fprintf(stderr, "libload: %s\n", pubrelay_errmsg(h));
		return 1;
	}
	while (done < n) {
		now = mono_ns();
		while (sent < n && pubrelay_pending(h) < depth) {
			if (pubrelay_send(h, p, body, (size_t)size) != 0) {
				fprintf(stderr, "libload: send: %s\n",
				    pubrelay_errmsg(h));
				return 1;
			}
			ring[sent % depth] = now;
			sent++;
		}
		rc = pubrelay_recv(h);
		if (rc < 0) {
			if (pubrelay_pending(h) == 0 && sent < n) {
				fprintf(stderr, "libload: %s\n",
				    pubrelay_errmsg(h));
				return 1;
			}
			if (errors++ == 0)
				fprintf(stderr, "libload: first error: %s\n",
				    pubrelay_errmsg(h));
		} else
			lat[nlat++] = mono_ns() - ring[done % depth];
		done++;
	}
	t1 = mono_ns();
	pubrelay_close(h);
	pubrelay_props_free(p);
	qsort(lat, nlat, sizeof(*lat), cmp64);
	printf("msgs=%" PRIu64 " secs=%.4f rate=%.0f errors=%" PRIu64
	    " p50_us=%.0f p99_us=%.0f max_us=%.0f\n", n, (t1 - t0) / 1e9,
	    n / ((t1 - t0) / 1e9), errors, pct(lat, nlat, 0.5),
	    pct(lat, nlat, 0.99), nlat ? lat[nlat - 1] / 1000.0 : 0.0);
	free(body);
	free(lat);
	free(ring);
	return errors ? 3 : 0;
}
