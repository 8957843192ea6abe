/*
 * loadgen.c: multi-client load generator for `make bench`.
 *
 * K clients on the pubrelayd socket, driven from one thread with poll() (so
 * the generator costs as little CPU as possible on a 2-core machine), each
 * sending N PUB requests (src/protocol.h) of SIZE body bytes with a
 * routing-key, at most DEPTH of them unanswered at a time, and timing each
 * request from the moment it is handed to the socket (RATE 0: as fast as
 * the relay answers) or from its scheduled time (RATE > 0: open loop, total
 * RATE msg/s spread over the clients, so a stall is not hidden) to its
 * "OK" line.  With STAMP 1 every body starts with "T<CLOCK_REALTIME ns>"
 * for bench/amqp_consume.
 *
 * With KEYS (optional) every request carries its own idempotency-key,
 * "KEYS-<client>-<seq>", all of the same length.
 *
 * usage: loadgen SOCKET K N SIZE DEPTH RATE ROUTING_KEY STAMP [KEYS]
 * prints: msgs=.. secs=.. rate=.. errors=.. p50_us=.. p99_us=.. p999_us=.. max_us=..
 */
#include <sys/socket.h>
#include <sys/un.h>

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

struct client {
	int		 fd;
	uint64_t	 queued, answered;	/* requests */
	int64_t		*ring;			/* DEPTH send times */
	char		*wbuf;
	size_t		 wlen, woff, wcap;
	char		 rbuf[65536];
	size_t		 rlen;
	int64_t		 due;			/* RATE > 0: next send time */
};

static int64_t
mono_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static int64_t
real_ns(void)
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
	if (n == 0)
		return 0;
	return v[(uint64_t)(p * (n - 1) + 0.5)] / 1000.0;
}

int
main(int argc, char **argv)
{
	struct sockaddr_un	 sun;
	struct client		*cl;
	struct pollfd		*pfd;
	char			*req, errline[256] = "";
	size_t			 reqlen, hdrlen, koff = 0;
	uint64_t		 n, total, done = 0, errors = 0, nlat = 0;
	int64_t			*lat, t0, t1, interval = 0;
	unsigned		 k, depth, i;
	long			 size;
	double			 rate;
	int			 stamp;

	if (argc != 9 && argc != 10) {
		fprintf(stderr, "usage: loadgen SOCKET K N SIZE DEPTH RATE "
		    "ROUTING_KEY STAMP [KEYS]\n");
		return 2;
	}
	k = (unsigned)atoi(argv[2]);
	n = strtoull(argv[3], NULL, 10);
	size = atol(argv[4]);
	depth = (unsigned)atoi(argv[5]);
	rate = atof(argv[6]);
	stamp = atoi(argv[8]);
	if (k == 0 || n == 0 || depth == 0 || size < (stamp ? 24 : 1))
		return 2;
	total = (uint64_t)k * n;

	/* One request, reused; a stamp is written into its body. */
	req = malloc(size + 512);
	if (argc == 10) {
		if (strlen(argv[9]) > 200)
			return 2;
		/* <client>-<seq> is written over the zeros per request. */
		hdrlen = (size_t)snprintf(req, 512, "PUB %ld\nrouting-key: %s\n"
		    "idempotency-key: %s-", size, argv[7], argv[9]);
		koff = hdrlen;
		hdrlen += (size_t)snprintf(req + hdrlen, 512 - hdrlen,
		    "000-000000000000\n\n");
	} else
		hdrlen = (size_t)snprintf(req, 512, "PUB %ld\nrouting-key: "
		    "%s\n\n", size, argv[7]);
	memset(req + hdrlen, 'x', size);
	req[hdrlen + size] = '\n';
	reqlen = hdrlen + size + 1;

	lat = malloc(total * sizeof(*lat));
	cl = calloc(k, sizeof(*cl));
	pfd = calloc(k, sizeof(*pfd));
	memset(&sun, 0, sizeof(sun));
	sun.sun_family = AF_UNIX;
	snprintf(sun.sun_path, sizeof(sun.sun_path), "%s", argv[1]);
	if (rate > 0)
		interval = (int64_t)(1e9 * k / rate);
	t0 = mono_ns();
	for (i = 0; i < k; i++) {
		cl[i].fd = socket(AF_UNIX, SOCK_STREAM, 0);
		if (cl[i].fd == -1 || connect(cl[i].fd, (struct sockaddr *)&sun,
		    sizeof(sun)) == -1) {
			perror("loadgen: connect");
			return 1;
		}
		fcntl(cl[i].fd, F_SETFL, O_NONBLOCK);
		cl[i].ring = malloc(depth * sizeof(int64_t));
		cl[i].wcap = (size_t)depth * reqlen;
		if (cl[i].wcap > (4u << 20))
			cl[i].wcap = 4u << 20;
		if (cl[i].wcap < reqlen)
			cl[i].wcap = reqlen;
		cl[i].wbuf = malloc(cl[i].wcap);
		cl[i].due = t0 + (rate > 0 ? interval * i / k : 0);
	}

	while (done < total) {
		int64_t now = mono_ns(), next = INT64_MAX;
		int timeout;

		for (i = 0; i < k; i++) {
			struct client *c = &cl[i];

			/* Queue what the window (and the schedule) allows. */
			while (c->queued < n && c->queued - c->answered < depth &&
			    c->wlen + reqlen <= c->wcap &&
			    (rate <= 0 || c->due <= now)) {
				if (stamp) {
					char ts[24];

					snprintf(ts, sizeof(ts), "T%019" PRId64,
					    real_ns());
					memcpy(req + hdrlen, ts, 20);
				}
				if (koff > 0) {
					char kb[24];

					snprintf(kb, sizeof(kb), "%03u-%012"
					    PRIu64, i % 1000, c->queued %
					    UINT64_C(1000000000000));
					memcpy(req + koff, kb, 16);
				}
				if (c->woff > 0 && c->woff == c->wlen)
					c->woff = c->wlen = 0;
				memcpy(c->wbuf + c->wlen, req, reqlen);
				c->wlen += reqlen;
				c->ring[c->queued % depth] = rate > 0 ? c->due : now;
				c->queued++;
				if (rate > 0)
					c->due += interval;
			}
			if (c->woff < c->wlen) {
				ssize_t w = write(c->fd, c->wbuf + c->woff,
				    c->wlen - c->woff);

				if (w > 0)
					c->woff += (size_t)w;
				else if (w == -1 && errno != EAGAIN) {
					perror("loadgen: write");
					return 1;
				}
				if (c->woff == c->wlen)
					c->woff = c->wlen = 0;
			}
			pfd[i].fd = c->fd;
			pfd[i].events = POLLIN;
			if (c->woff < c->wlen)
				pfd[i].events |= POLLOUT;
			if (rate > 0 && c->queued < n && c->due < next)
				next = c->due;
			if (c->answered == n)
				pfd[i].fd = -1;
		}
		now = mono_ns();
		if (next == INT64_MAX)
			timeout = 10000;
		else
			timeout = next <= now ? 0 : (int)((next - now) / 1000000);
		if (poll(pfd, k, timeout) == -1 && errno != EINTR) {
			perror("loadgen: poll");
			return 1;
		}
		now = mono_ns();
		for (i = 0; i < k; i++) {
			struct client *c = &cl[i];
			ssize_t r;
			char *p, *nl, *end;

			if (pfd[i].fd == -1 || !(pfd[i].revents & (POLLIN |
			    POLLHUP | POLLERR)))
				continue;
			r = read(c->fd, c->rbuf + c->rlen,
			    sizeof(c->rbuf) - c->rlen);
			if (r == 0) {
				fprintf(stderr, "loadgen: relay closed client %u "
				    "after %" PRIu64 " replies\n", i, c->answered);
				return 1;
			}
			if (r < 0)
				continue;
			c->rlen += (size_t)r;
			p = c->rbuf;
			end = c->rbuf + c->rlen;
			while ((nl = memchr(p, '\n', (size_t)(end - p))) != NULL) {
				if (nl - p >= 3 && memcmp(p, "ERR", 3) == 0) {
					if (errors++ == 0)
						snprintf(errline, sizeof(errline),
						    "%.*s", (int)(nl - p), p);
				} else
					lat[nlat++] = now -
					    c->ring[c->answered % depth];
				c->answered++;
				done++;
				p = nl + 1;
			}
			c->rlen = (size_t)(end - p);
			memmove(c->rbuf, p, c->rlen);
		}
	}
	t1 = mono_ns();
	for (i = 0; i < k; i++)
		close(cl[i].fd);
	qsort(lat, nlat, sizeof(*lat), cmp64);
	printf("msgs=%" PRIu64 " secs=%.4f rate=%.0f errors=%" PRIu64
	    " p50_us=%.0f p99_us=%.0f p999_us=%.0f max_us=%.0f\n", total,
	    (t1 - t0) / 1e9, total / ((t1 - t0) / 1e9), errors,
	    pct(lat, nlat, 0.5), pct(lat, nlat, 0.99), pct(lat, nlat, 0.999),
	    nlat ? lat[nlat - 1] / 1000.0 : 0.0);
	if (errors)
		fprintf(stderr, "loadgen: %" PRIu64 " errors, first: %s\n",
		    errors, errline);
	return errors ? 3 : 0;
}
