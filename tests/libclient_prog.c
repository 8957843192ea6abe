/*
 * libclient_prog.c: tests/libclient.py's program, an application of
 * libpubrelay linked against libpubrelay.so.  Each command runs one use of
 * the API against the daemon on SOCKET and prints what it got as
 * "key=value" lines, return codes as numbers (pubrelay.h's values): the
 * suite decides what is right, with the broker's view beside it.
 *
 * usage: libclient_prog COMMAND SOCKET [ARG ...]
 *   props SOCKET QUEUE            one message with every property
 *   pipeline SOCKET QUEUE N WINDOW [PAD]
 *                                 N messages "p0-<seq>" pipelined (with
 *                                 "-xxx..." to PAD bytes more)
 *   confirm SOCKET EXCHANGE KEY MS  one with a receipt
 *   wait SOCKET MS                the WAIT barrier
 *   status SOCKET ID              STATUS
 *   idem SOCKET QUEUE KEY         two messages with the same key
 *   stats SOCKET NAME ...         STATS, and the values of NAME ...
 *   ping SOCKET                   PING
 *   errors SOCKET QUEUE           refusals, and the handle after each
 *   twice SOCKET                  two PINGs (the second after the first's
 *                                 error, if any)
 *   timeout SOCKET MS             the same on a handle opened with MS
 *   threads SOCKET QUEUE T N      T threads, each with its own handle,
 *                                 pipelining N messages "p<thread>-<seq>"
 *   unasked SOCKET                poll pubrelay_fd() until pubrelay_ready(),
 *                                 then what pubrelay_recv() says unasked
 *   dead SOCKET EXCHANGE          park one, then list, retry and purge
 *   badreply SOCKET               PING to something that answers oddly
 *
 * A failed open also prints errno, as pubrelay.h promises it.
 */
#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "pubrelay.h"

static void
result(const char *key, int rc, pubrelay *h)
{
	printf("%s=%d\n", key, rc);
	if (rc < 0)
		printf("%s_msg=%s\n", key, pubrelay_errmsg(h));
}

static pubrelay *
connect_or_say(const char *sock, int timeout_ms)
{
	pubrelay	*h = pubrelay_open(sock, timeout_ms);

	int		 error = errno;

	printf("open=%d\n", pubrelay_errcode(h));
	if (pubrelay_errcode(h) != PUBRELAY_OK) {
		printf("open_errno=%d\n", error);
		printf("open_msg=%s\n", pubrelay_errmsg(h));
		pubrelay_close(h);
		return NULL;
	}
	return h;
}

/* A property the suite counts on: a failure to set one is the test's. */
static void
must_set(pubrelay_props *p, const char *name, const char *value)
{
	int	rc = pubrelay_props_set(p, name, value);

	if (rc != PUBRELAY_OK) {
		printf("props_set_%s=%d\n", name, rc);
		exit(2);
	}
}

static int
cmd_props(pubrelay *h, char **argv)
{
	static const char	 body[] = "bin\0ary\nPUB 3\n\nxyz\r\n";
	pubrelay_props		*p = pubrelay_props_new();

	must_set(p, "exchange", "amq.direct");
	must_set(p, "Routing-Key", argv[0]);
	must_set(p, "content-type", "application/x-lib");
	must_set(p, "content-encoding", "identity");
	must_set(p, "delivery-mode", "2");
	must_set(p, "priority", "7");
	must_set(p, "correlation-id", "corr-lib");
	must_set(p, "reply-to", "reply.lib");
	must_set(p, "expiration", "86400000");
	must_set(p, "message-id", "replaced");
	must_set(p, "message-id", "lib-mid-1");	/* replaces */
	must_set(p, "timestamp", "1700000000");
	must_set(p, "type", "lib.test");
	must_set(p, "app-id", "libclient");
	must_set(p, "mandatory", "yes");
	must_set(p, "header", "h1=v1");
	printf("header=%d\n", pubrelay_props_header(p, "h2", "a=b c"));
	result("publish", pubrelay_publish(h, p, body, sizeof(body) - 1), h);
	printf("id=%s\n", pubrelay_id(h));
	pubrelay_props_free(p);
	return 0;
}

/* The row number of a generated id, "<instance>-<row>". */
static long long
id_row(const char *id)
{
	const char	*dash = strrchr(id, '-');

	return dash != NULL ? atoll(dash + 1) : -1;
}

static int
cmd_pipeline(pubrelay *h, char **argv)
{
	pubrelay_props	*p = pubrelay_props_new();
	unsigned	 n = (unsigned)atoi(argv[1]);
	unsigned	 window = (unsigned)atoi(argv[2]);
	unsigned	 sent = 0, got = 0, maxpending = 0, busy_seen = 0;
	size_t		 pad = argv[3] != NULL ? (size_t)atol(argv[3]) : 0;
	long long	 row, last = -1;
	int		 rc, inorder = 1;
	char		*body, first[256] = "";

	if ((body = malloc(32 + pad)) == NULL)
		return 1;
	if (pad > 0) {
		memset(body + 9, 'x', pad);
		body[9] = '-';
	}
	must_set(p, "routing-key", argv[0]);
	result("set_window", pubrelay_set_window(h, window), h);
	while (got < n) {
		while (sent < n && pubrelay_pending(h) < window) {
			/* "p0-<6 digits>", then the padding if any. */
			snprintf(body, 10, "p0-%06u", sent % 1000000);
			if (pad > 0)
				body[9] = '-';
			if ((rc = pubrelay_send(h, p, body, 9 + pad)) != 0) {
				result("send", rc, h);
				return 0;
			}
			sent++;
		}
		if (pubrelay_pending(h) > maxpending)
			maxpending = pubrelay_pending(h);
		/* The window is a bound: one more is refused, not queued. */
		if (!busy_seen && sent < n) {
			result("busy", pubrelay_send(h, p, "x", 1), h);
			busy_seen = 1;
		}
		if ((rc = pubrelay_recv(h)) != PUBRELAY_ACCEPTED) {
			printf("failed_at=%u\n", got);
			result("recv", rc, h);
			break;
		}
		row = id_row(pubrelay_id(h));
		if (row <= last)
			inorder = 0;
		last = row;
		if (got == 0)
			snprintf(first, sizeof(first), "%s", pubrelay_id(h));
		got++;
	}
	printf("ok=%u\ninorder=%d\nmaxpending=%u\npending=%u\nfirst=%s\n"
	    "last=%s\n", got, inorder, maxpending, pubrelay_pending(h), first,
	    pubrelay_id(h));
	pubrelay_props_free(p);
	free(body);
	return 0;
}

static int
cmd_confirm(pubrelay *h, char **argv)
{
	pubrelay_props	*p = pubrelay_props_new();

	must_set(p, "exchange", argv[0]);
	must_set(p, "routing-key", argv[1]);
	must_set(p, "confirm", argv[2]);
	result("publish", pubrelay_publish(h, p, "receipt", 7), h);
	printf("id=%s\nreason=%s\n", pubrelay_id(h), pubrelay_reason(h));
	pubrelay_props_free(p);
	return 0;
}

static int
cmd_wait(pubrelay *h, char **argv)
{
	uint64_t	dead = 999999;

	result("wait", pubrelay_wait(h, (unsigned)atoi(argv[0]), &dead), h);
	printf("dead=%llu\n", (unsigned long long)dead);
	return 0;
}

static int
cmd_status(pubrelay *h, char **argv)
{
	result("status", pubrelay_status(h, argv[0]), h);
	printf("id=%s\nreason=%s\n", pubrelay_id(h), pubrelay_reason(h));
	return 0;
}

static int
cmd_idem(pubrelay *h, char **argv)
{
	pubrelay_props	*p = pubrelay_props_new();

	must_set(p, "routing-key", argv[0]);
	must_set(p, "idempotency-key", argv[1]);
	result("first", pubrelay_publish(h, p, "idem-first", 10), h);
	printf("id1=%s\n", pubrelay_id(h));
	result("second", pubrelay_publish(h, p, "idem-second", 11), h);
	printf("id2=%s\n", pubrelay_id(h));
	pubrelay_props_free(p);
	return 0;
}

static int
cmd_stats(pubrelay *h, char **argv)
{
	const char	*v;
	size_t		 len;

	result("stats", pubrelay_stats(h), h);
	for (; *argv != NULL; argv++) {
		v = pubrelay_stat(h, *argv);
		printf("stat.%s=%s\n", *argv, v != NULL ? v : "(none)");
	}
	pubrelay_stats_text(h, &len);
	printf("text_len=%zu\n", len);
	return 0;
}

static int
cmd_errors(pubrelay *h, char **argv)
{
	pubrelay_props	*good = pubrelay_props_new(), *bad = pubrelay_props_new();
	static char	 big[8192];
	char		 name[16];
	int		 n, rc = 0;

	must_set(good, "routing-key", argv[0]);
	must_set(bad, "routing-key", argv[0]);
	/* The library passes numbers on: the daemon refuses this one. */
	must_set(bad, "priority", "300");

	/* Refused by the library, before anything is sent. */
	printf("set_unknown=%d\n", pubrelay_props_set(good, "routng-key", "x"));
	printf("set_newline=%d\n", pubrelay_props_set(good, "type", "a\nb"));
	printf("set_confirm0=%d\n", pubrelay_props_set(good, "confirm", "0"));
	printf("set_header=%d\n", pubrelay_props_set(good, "header", "h=1"));
	printf("set_header_twice=%d\n", pubrelay_props_set(good, "header",
	    "h=2"));
	printf("set_header_twice_msg=%s\n", pubrelay_props_errmsg(good));
	printf("set_header_none=%d\n", pubrelay_props_set(good, "header",
	    NULL));
	printf("set_newline2=%d\n", pubrelay_props_set(good, "type", "a\nb"));
	printf("set_newline_msg=%s\n", pubrelay_props_errmsg(good));
	result("status_empty", pubrelay_status(h, ""), h);
	result("window0", pubrelay_set_window(h, 0), h);

	/* BADREQ, then the latch, then RESET. */
	result("badreq", pubrelay_publish(h, bad, "bad", 3), h);
	result("skipped", pubrelay_publish(h, good, "skipped", 7), h);
	result("ping", pubrelay_ping(h), h);
	result("reset", pubrelay_reset(h), h);
	result("after", pubrelay_publish(h, good, "after-reset", 11), h);
	printf("after_id=%s\n", pubrelay_id(h));

	/* TOOBIG (the suite's relay takes 1 KiB): read and dropped. */
	memset(big, 'b', sizeof(big));
	result("toobig", pubrelay_publish(h, good, big, 4096), h);
	result("reset2", pubrelay_reset(h), h);

	/* In a pipeline: each reply in its place, the latch after the bad. */
	result("send1", pubrelay_send(h, good, "pipe-1", 6), h);
	result("send2", pubrelay_send(h, bad, "pipe-bad", 8), h);
	result("send3", pubrelay_send(h, good, "pipe-3", 6), h);
	result("busy_ping", pubrelay_ping(h), h);
	result("recv1", pubrelay_recv(h), h);
	result("recv2", pubrelay_recv(h), h);
	result("recv3", pubrelay_recv(h), h);
	result("recv_none", pubrelay_recv(h), h);
	result("reset3", pubrelay_reset(h), h);
	result("last", pubrelay_publish(h, good, "last", 4), h);

	/* Headers until the block would pass 64 KiB: the set that fails
	 * leaves the properties as they were, and they still publish. */
	memset(big, 'v', 8000);
	big[8000] = '\0';
	for (n = 0; n < 20; n++) {
		snprintf(name, sizeof(name), "h%d", n);
		if ((rc = pubrelay_props_header(good, name, big)) != 0)
			break;
	}
	printf("headers_set=%d\nheaders_full=%d\n", n, rc);
	result("headers_publish", pubrelay_publish(h, good, "big-headers",
	    11), h);
	pubrelay_props_free(good);
	pubrelay_props_free(bad);
	return 0;
}

/* What the daemon says unasked, seen through the caller's own poll(). */
static int
cmd_unasked(pubrelay *h, char **argv)
{
	struct pollfd	pfd;
	int		rc, polls = 0;

	(void)argv;
	while ((rc = pubrelay_ready(h)) == 0 && polls++ < 100) {
		pfd.fd = pubrelay_fd(h);
		pfd.events = POLLIN;
		poll(&pfd, 1, 100);
	}
	printf("ready=%d\n", rc);
	result("recv", pubrelay_recv(h), h);
	printf("fd=%d\n", pubrelay_fd(h));
	printf("ready_closed=%d\n", pubrelay_ready(h));
	result("recv_closed", pubrelay_recv(h), h);
	printf("recv_closed_errno=%d\n", errno);
	return 0;
}

/* A dead letter made, listed, replayed (it parks again) and purged. */
static int
cmd_dead(pubrelay *h, char **argv)
{
	pubrelay_props	*p = pubrelay_props_new();
	const char	*text;
	size_t		 len;
	uint64_t	 id, n = 99;

	must_set(p, "exchange", argv[0]);
	must_set(p, "routing-key", "x");
	must_set(p, "confirm", "30000");
	result("publish", pubrelay_publish(h, p, "dead", 4), h);
	result("list", pubrelay_dead_list(h, 0, 0, &text, &len), h);
	printf("list_len=%zu\nlist_first=%.*s\n", len,
	    (int)strcspn(text, "\n"), text);
	id = strtoull(text, NULL, 10);
	result("list_after", pubrelay_dead_list(h, id, 10, &text, &len), h);
	printf("list_after_len=%zu\n", len);
	result("list_badmax", pubrelay_dead_list(h, 0, 100001, &text, &len),
	    h);
	result("retry", pubrelay_dead_retry(h, id, &n), h);
	printf("retry_n=%llu\n", (unsigned long long)n);
	result("retry_none", pubrelay_dead_retry(h, 999999999, &n), h);
	result("wait", pubrelay_wait(h, 30000, NULL), h);
	result("purge", pubrelay_dead_purge(h, 0, &n), h);
	printf("purge_n=%llu\n", (unsigned long long)n);
	result("list_end", pubrelay_dead_list(h, 0, 0, &text, &len), h);
	printf("list_end_len=%zu\n", len);
	pubrelay_props_free(p);
	return 0;
}

/* A reply outside the protocol, kept for the caller to show. */
static int
cmd_badreply(pubrelay *h, char **argv)
{
	const char	*line;
	size_t		 len;

	(void)argv;
	result("ping", pubrelay_ping(h), h);
	line = pubrelay_reply_line(h, &len);
	printf("line_len=%zu\nline=%.*s\n", len, (int)len,
	    line != NULL ? line : "(null)");
	return 0;
}

static int
cmd_twice(pubrelay *h, char **argv)
{
	(void)argv;
	result("ping1", pubrelay_ping(h), h);
	result("ping2", pubrelay_ping(h), h);
	return 0;
}

struct thread_run {
	pthread_t	 tid;
	const char	*sock;
	const char	*queue;
	unsigned	 index, n, ok;
	int		 rc;
	char		 msg[256];
};

/* One thread's own handle and properties: nothing shared but the code. */
static void *
thread_main(void *arg)
{
	struct thread_run	*t = arg;
	pubrelay		*h = pubrelay_open(t->sock, 20000);
	pubrelay_props		*p = pubrelay_props_new();
	unsigned		 sent = 0;
	char			 body[32];
	int			 rc = pubrelay_errcode(h);

	if (rc == PUBRELAY_OK)
		rc = pubrelay_props_set(p, "routing-key", t->queue);
	while (rc >= 0 && t->ok < t->n) {
		while (sent < t->n && pubrelay_pending(h) < 64) {
			snprintf(body, sizeof(body), "p%u-%06u", t->index, sent);
			if ((rc = pubrelay_send(h, p, body, strlen(body))) < 0)
				break;
			sent++;
		}
		if (rc >= 0 && (rc = pubrelay_recv(h)) == PUBRELAY_ACCEPTED)
			t->ok++;
	}
	t->rc = rc < 0 ? rc : 0;
	snprintf(t->msg, sizeof(t->msg), "%s", pubrelay_errmsg(h));
	pubrelay_props_free(p);
	pubrelay_close(h);
	return NULL;
}

/* Runs without a handle of its own: each thread opens one. */
static int
cmd_threads(char **argv)
{
	struct thread_run	*t;
	unsigned		 i, nt = (unsigned)atoi(argv[2]);

	if (nt == 0 || (t = calloc(nt, sizeof(*t))) == NULL)
		return 2;
	for (i = 0; i < nt; i++) {
		t[i].sock = argv[0];
		t[i].queue = argv[1];
		t[i].index = i;
		t[i].n = (unsigned)atoi(argv[3]);
		if (pthread_create(&t[i].tid, NULL, thread_main, &t[i]) != 0)
			return 1;
	}
	for (i = 0; i < nt; i++) {
		pthread_join(t[i].tid, NULL);
		printf("thread%u=%d\nthread%u_ok=%u\n", i, t[i].rc, i, t[i].ok);
		if (t[i].rc < 0)
			printf("thread%u_msg=%s\n", i, t[i].msg);
	}
	free(t);
	return 0;
}

static const struct {
	const char	*name;
	int		 nargs;		/* at least, after SOCKET */
	int		 (*fn)(pubrelay *, char **);
} cmds[] = {
	{ "props",	1, cmd_props },
	{ "pipeline",	3, cmd_pipeline },
	{ "confirm",	3, cmd_confirm },
	{ "wait",	1, cmd_wait },
	{ "status",	1, cmd_status },
	{ "idem",	2, cmd_idem },
	{ "stats",	0, cmd_stats },
	{ "ping",	0, cmd_twice },
	{ "errors",	1, cmd_errors },
	{ "twice",	0, cmd_twice },
	{ "timeout",	1, cmd_twice },
	{ "unasked",	0, cmd_unasked },
	{ "dead",	1, cmd_dead },
	{ "badreply",	0, cmd_badreply },
};

int
main(int argc, char **argv)
{
	pubrelay	*h;
	size_t		 i;
	int		 rc;

	if (argc < 3) {
		fprintf(stderr, "usage: libclient_prog COMMAND SOCKET "
		    "[ARG ...]\n");
		return 2;
	}
	if (strcmp(argv[1], "threads") == 0) {
		if (argc != 6) {
			fprintf(stderr, "libclient_prog threads: SOCKET QUEUE "
			    "T N\n");
			return 2;
		}
		printf("open=0\n");	/* each thread opens its own */
		return cmd_threads(argv + 2);
	}
	for (i = 0; i < sizeof(cmds) / sizeof(cmds[0]); i++) {
		if (strcmp(argv[1], cmds[i].name) != 0)
			continue;
		if (argc - 3 < cmds[i].nargs) {
			fprintf(stderr, "libclient_prog %s: %d arguments after "
			    "SOCKET\n", cmds[i].name, cmds[i].nargs);
			return 2;
		}
		if ((h = connect_or_say(argv[2], strcmp(argv[1], "timeout") ==
		    0 ? atoi(argv[3]) : 20000)) == NULL)
			return 0;
		rc = cmds[i].fn(h, argv + 3);
		pubrelay_close(h);
		return rc;
	}
	fprintf(stderr, "libclient_prog: unknown command %s\n", argv[1]);
	return 2;
}
