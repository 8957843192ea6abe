/*
 * top.c: `pubrelay top`, a live view of one relay, refreshed every
 * interval from its STATS (through libpubrelay, one connection kept open).
 *
 * On a terminal: a screen of at most 12 lines that fits 80x24, redrawn in
 * place (the alternate screen, restored at exit), with the last minute of
 * rates in and out and of the backlog as sparklines.  Otherwise (a pipe, a
 * file, a log): one line of name=value pairs per interval, for scripts and
 * for people tailing a file.  No curses: ANSI escapes only, as every
 * terminal emulator of the last thirty years understands them.
 */
#include <sys/ioctl.h>
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <langinfo.h>
#include <locale.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sysexits.h>
#include <time.h>
#include <unistd.h>

#include "pubrelay.h"
#include "top.h"
#include "util.h"

#define TOP_HISTORY	64		/* samples kept for the sparklines */
#define TOP_MIN_MS	100

/* One STATS reply, as top uses it. */
struct top_sample {
	int		 ok;		/* the daemon answered */
	double		 t;		/* CLOCK_MONOTONIC seconds */
	uint64_t	 accepted, confirmed, backlog, oldest_ms;
	uint64_t	 dead, dead_waiting, parked, expired, reconnects;
	uint64_t	 clients, clients_refused, receipts;
	uint64_t	 conf_sum, conf_count, outbox_bytes, outbox_max;
	uint64_t	 uptime;
	char		 state[32], broker[256], last_error[256];
	char		 err[256];	/* why not ok */
};

struct top {
	const char	*sock;
	int		 timeout_ms;
	pubrelay	*h;
	struct top_sample prev, cur;
	double		 in[TOP_HISTORY], out[TOP_HISTORY];
	double		 backlog[TOP_HISTORY];
	size_t		 nhist;		/* samples in the rings, at most ... */
	size_t		 head;		/* next slot */
	int		 tty, utf8;
	unsigned	 cols, rows;
};

static volatile sig_atomic_t	top_stop;

static void
top_signal(int sig)
{
	(void)sig;
	top_stop = 1;
}

static double
top_now(void)
{
	struct timespec	ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static uint64_t
top_u64(pubrelay *h, const char *name)
{
	const char	*v = pubrelay_stat(h, name);
	uint64_t	 n;

	return v != NULL && util_parse_u64(v, 0, UINT64_MAX, &n) == 0 ? n : 0;
}

static void
top_str(pubrelay *h, const char *name, char *out, size_t len)
{
	const char	*v = pubrelay_stat(h, name);
	size_t		 i;

	snprintf(out, len, "%s", v != NULL ? v : "-");
	/* The daemon's text on a terminal: no control characters. */
	for (i = 0; out[i] != '\0'; i++)
		if ((unsigned char)out[i] < 0x20 || out[i] == 0x7f)
			out[i] = '?';
}

/* Fetch a sample; a connection that failed is opened again next time. */
static void
top_fetch(struct top *t, struct top_sample *s)
{
	memset(s, 0, sizeof(*s));
	s->t = top_now();
	if (t->h == NULL)
		t->h = pubrelay_open(t->sock, t->timeout_ms);
	if (t->h == NULL) {
		snprintf(s->err, sizeof(s->err), "out of memory");
		return;
	}
	if (pubrelay_errcode(t->h) != 0 || pubrelay_stats(t->h) < 0) {
		snprintf(s->err, sizeof(s->err), "%s", pubrelay_errmsg(t->h));
		pubrelay_close(t->h);
		t->h = NULL;
		return;
	}
	s->ok = 1;
	s->accepted = top_u64(t->h, "accepted");
	s->confirmed = top_u64(t->h, "confirmed");
	s->backlog = top_u64(t->h, "backlog");
	s->oldest_ms = top_u64(t->h, "oldest_age_ms");
	s->dead = top_u64(t->h, "dead_messages");
	s->dead_waiting = top_u64(t->h, "dead_waiting");
	s->parked = top_u64(t->h, "parked");
	s->expired = top_u64(t->h, "expired");
	s->reconnects = top_u64(t->h, "reconnects");
	s->clients = top_u64(t->h, "clients");
	s->clients_refused = top_u64(t->h, "clients_refused");
	s->receipts = top_u64(t->h, "receipts_waiting");
	s->conf_sum = top_u64(t->h, "confirm_latency_ms_sum");
	s->conf_count = top_u64(t->h, "confirm_latency_count");
	s->outbox_bytes = top_u64(t->h, "outbox_bytes");
	s->outbox_max = top_u64(t->h, "outbox_max_bytes");
	s->uptime = top_u64(t->h, "uptime_s");
	top_str(t->h, "state", s->state, sizeof(s->state));
	top_str(t->h, "broker", s->broker, sizeof(s->broker));
	top_str(t->h, "last_error", s->last_error, sizeof(s->last_error));
}

/* A counter's rate between two samples; -1 when there is none. */
static double
top_rate(const struct top_sample *a, const struct top_sample *b,
    uint64_t va, uint64_t vb)
{
	double	dt = b->t - a->t;

	/* A restarted daemon starts its counters again. */
	if (!a->ok || !b->ok || dt <= 0 || vb < va)
		return -1;
	return (double)(vb - va) / dt;
}

static void
top_record(struct top *t)
{
	t->in[t->head] = top_rate(&t->prev, &t->cur, t->prev.accepted,
	    t->cur.accepted);
	t->out[t->head] = top_rate(&t->prev, &t->cur, t->prev.confirmed,
	    t->cur.confirmed);
	t->backlog[t->head] = t->cur.ok ? (double)t->cur.backlog : -1;
	t->head = (t->head + 1) % TOP_HISTORY;
	if (t->nhist < TOP_HISTORY)
		t->nhist++;
}

/* The last width samples of ring r as a sparkline (gaps as blanks). */
static void
top_spark(const struct top *t, const double *r, size_t width, struct buf *o)
{
	static const char *const blocks[] = { "\xe2\x96\x81", "\xe2\x96\x82",
	    "\xe2\x96\x83", "\xe2\x96\x84", "\xe2\x96\x85", "\xe2\x96\x86",
	    "\xe2\x96\x87", "\xe2\x96\x88" };
	static const char ascii[] = "_.-:=+*#";
	double	 max = 0, v;
	size_t	 n = t->nhist < width ? t->nhist : width, i, k;
	int	 level;

	for (i = 0; i < n; i++) {
		v = r[(t->head + TOP_HISTORY - n + i) % TOP_HISTORY];
		if (v > max)
			max = v;
	}
	for (i = n; i < width; i++)
		buf_append(o, " ", 1);
	for (i = 0; i < n; i++) {
		v = r[(t->head + TOP_HISTORY - n + i) % TOP_HISTORY];
		if (v < 0) {
			buf_append(o, " ", 1);
			continue;
		}
		level = max > 0 ? (int)(v / max * 7.0 + 0.5) : 0;
		k = (size_t)(level < 0 ? 0 : level > 7 ? 7 : level);
		if (t->utf8)
			buf_appends(o, blocks[k]);
		else
			buf_append(o, ascii + k, 1);
	}
}

static void
top_bytes(uint64_t n, char *out, size_t len)
{
	static const char *const units[] = { "B", "KiB", "MiB", "GiB", "TiB" };
	double	v = (double)n;
	int	u = 0;

	while (v >= 1024 && u < 4) {
		v /= 1024;
		u++;
	}
	snprintf(out, len, u == 0 ? "%.0f %s" : "%.1f %s", v, units[u]);
}

static void
top_duration(double s, char *out, size_t len)
{
	uint64_t	n = (uint64_t)s;

	if (s < 1)
		snprintf(out, len, "%.0f ms", s * 1000);
	else if (s < 120)
		snprintf(out, len, "%.1f s", s);
	else if (s < 7200)
		snprintf(out, len, "%" PRIu64 "m%02" PRIu64 "s", n / 60, n % 60);
	else if (s < 172800)
		snprintf(out, len, "%" PRIu64 "h%02" PRIu64 "m", n / 3600,
		    n % 3600 / 60);
	else
		snprintf(out, len, "%" PRIu64 "d%02" PRIu64 "h", n / 86400,
		    n % 86400 / 3600);
}

static void
top_rate_str(double r, char *out, size_t len)
{
	if (r < 0)
		snprintf(out, len, "-");
	else if (r >= 100)
		snprintf(out, len, "%.0f/s", r);
	else
		snprintf(out, len, "%.1f/s", r);
}

/* One line of the screen: cut to the terminal's width, the rest cleared. */
static void
top_line(struct top *t, struct buf *screen, const struct buf *line)
{
	size_t	i, cols = 0;

	for (i = 0; i < line->len && cols < t->cols; i++) {
		buf_append(screen, line->data + i, 1);
		/* UTF-8: only lead bytes take a column. */
		if (((unsigned char)line->data[i] & 0xc0) != 0x80)
			cols++;
	}
	while (i < line->len &&
	    ((unsigned char)line->data[i] & 0xc0) == 0x80)
		buf_append(screen, line->data + i++, 1);
	buf_appends(screen, "\033[K\r\n");
}

/* A rate's line: its label, the rate now, and the sparkline of ring r. */
static void
top_rate_line(struct top *t, struct buf *screen, struct buf *l,
    const char *label, double rate, const double *r, size_t spark)
{
	char	a[64];

	top_rate_str(rate, a, sizeof(a));
	buf_printf(l, "%-10s%-10s", label, a);
	if (spark > 0) {
		buf_appends(l, "        ");
		top_spark(t, r, spark, l);
	}
	top_line(t, screen, l);
	buf_reset(l);
}

static void
top_screen(struct top *t)
{
	const struct top_sample	*c = &t->cur, *p = &t->prev;
	struct buf		 screen, l;
	char			 a[64], b[64], d[160], clock[16];
	size_t			 spark;
	double			 trend, lat;
	time_t			 now = time(NULL);
	struct winsize		 ws;

	if (ioctl(STDOUT_FILENO, TIOCGWINSZ, &ws) == 0 && ws.ws_col > 0) {
		t->cols = ws.ws_col;
		t->rows = ws.ws_row;
	}
	spark = t->cols > 30 ? t->cols - 30 : 0;
	if (spark > TOP_HISTORY)
		spark = TOP_HISTORY;
	strftime(clock, sizeof(clock), "%H:%M:%S", localtime(&now));
	buf_init(&screen);
	buf_init(&l);
	buf_appends(&screen, "\033[H");

	top_duration((double)c->uptime, a, sizeof(a));
	buf_printf(&l, "pubrelay top  %s  %s%s  %s", t->sock, c->ok ? "up " :
	    "", c->ok ? a : "", clock);
	top_line(t, &screen, &l);
	buf_reset(&l);
	if (!c->ok) {
		buf_printf(&l, "not reachable: %s (trying again every "
		    "interval)", c->err);
		top_line(t, &screen, &l);
		goto done;
	}
	buf_printf(&l, "link      %s  %s  reconnects %" PRIu64, c->state,
	    c->broker, c->reconnects);
	top_line(t, &screen, &l);
	buf_reset(&l);
	buf_printf(&l, "          last error: %s", c->last_error);
	top_line(t, &screen, &l);
	buf_reset(&l);

	top_rate_line(t, &screen, &l, "in",
	    top_rate(p, c, p->accepted, c->accepted), t->in, spark);
	top_rate_line(t, &screen, &l, "out",
	    top_rate(p, c, p->confirmed, c->confirmed), t->out, spark);
	trend = p->ok && c->t > p->t ? ((double)c->backlog -
	    (double)p->backlog) / (c->t - p->t) : 0;
	snprintf(a, sizeof(a), "%" PRIu64, c->backlog);
	snprintf(b, sizeof(b), "%+.0f/s", trend);
	buf_printf(&l, "backlog   %-10s%-8s", a, b);
	if (spark > 0)
		top_spark(t, t->backlog, spark, &l);
	top_line(t, &screen, &l);
	buf_reset(&l);
	top_duration((double)c->oldest_ms / 1000, a, sizeof(a));
	lat = c->conf_count > p->conf_count && p->ok ?
	    (double)(c->conf_sum - p->conf_sum) /
	    (double)(c->conf_count - p->conf_count) : -1;
	if (lat >= 0)
		snprintf(b, sizeof(b), "%.1f ms", lat);
	else
		snprintf(b, sizeof(b), "-");
	buf_printf(&l, "oldest    %-18sconfirm latency %s (this interval)",
	    c->backlog > 0 ? a : "-", b);
	top_line(t, &screen, &l);
	buf_reset(&l);
	buf_printf(&l, "dead      %" PRIu64 " letters, %" PRIu64 " waiting  "
	    "parked %" PRIu64 ", expired %" PRIu64 " since start", c->dead,
	    c->dead_waiting, c->parked, c->expired);
	top_line(t, &screen, &l);
	buf_reset(&l);
	buf_printf(&l, "clients   %" PRIu64 " (refused %" PRIu64 ")  "
	    "receipts waiting %" PRIu64, c->clients, c->clients_refused,
	    c->receipts);
	top_line(t, &screen, &l);
	buf_reset(&l);
	top_bytes(c->outbox_bytes, a, sizeof(a));
	if (c->outbox_max > 0) {
		top_bytes(c->outbox_max, b, sizeof(b));
		snprintf(d, sizeof(d), " of %s (%.1f%%)", b, 100.0 *
		    (double)c->outbox_bytes / (double)c->outbox_max);
	} else
		snprintf(d, sizeof(d), " (no limit)");
	buf_printf(&l, "outbox    %s%s", a, d);
	top_line(t, &screen, &l);
	buf_reset(&l);
	top_line(t, &screen, &l);
	buf_printf(&l, "graphs: the last %zu samples, newest right; ^C quits",
	    t->nhist < spark ? t->nhist : spark);
	top_line(t, &screen, &l);
done:
	buf_appends(&screen, "\033[J");
	fwrite(screen.data, 1, screen.len, stdout);
	fflush(stdout);
	buf_free(&screen);
	buf_free(&l);
}

/* Not a terminal: one line per interval. */
static void
top_plain(struct top *t)
{
	const struct top_sample	*c = &t->cur, *p = &t->prev;
	char			 when[32], a[32], b[32];
	time_t			 now = time(NULL);

	strftime(when, sizeof(when), "%Y-%m-%dT%H:%M:%S", localtime(&now));
	if (!c->ok) {
		printf("%s state=unreachable error=\"%s\"\n", when, c->err);
		fflush(stdout);
		return;
	}
	top_rate_str(top_rate(p, c, p->accepted, c->accepted), a, sizeof(a));
	top_rate_str(top_rate(p, c, p->confirmed, c->confirmed), b,
	    sizeof(b));
	printf("%s state=%s in=%s out=%s backlog=%" PRIu64 " oldest_ms=%"
	    PRIu64 " dead=%" PRIu64 " clients=%" PRIu64 " receipts=%" PRIu64
	    "\n", when, c->state, a, b, c->backlog, c->oldest_ms, c->dead,
	    c->clients, c->receipts);
	fflush(stdout);
}

static void
top_usage(FILE *f)
{
	fprintf(f, "usage: pubrelay [-s socket] [-t timeout] top "
	    "[-d interval] [-n count]\n");
}

int
top_cmd(const char *sock, uint64_t timeout_ms, int argc, char **argv)
{
	static const struct option opts[] = {
		{ "interval",	required_argument, NULL, 'd' },
		{ "count",	required_argument, NULL, 'n' },
		{ "help",	no_argument,	   NULL, 'h' },
		{ NULL, 0, NULL, 0 }
	};
	struct top		 t;
	struct sigaction	 sa;
	struct timespec		 ts;
	uint64_t		 interval = 1000, count = 0, n;
	double			 next;
	int			 ch;
	const char		*cs;

	memset(&t, 0, sizeof(t));
	t.sock = sock;
	t.timeout_ms = timeout_ms > INT32_MAX ? INT32_MAX : (int)timeout_ms;
	optind = 1;
	while ((ch = getopt_long(argc, argv, "d:n:h", opts, NULL)) != -1) {
		switch (ch) {
		case 'd':
			if (util_parse_duration_ms(optarg, &interval) == -1 ||
			    interval < TOP_MIN_MS || interval > 3600000) {
				fprintf(stderr, "pubrelay: top: -d: '%s' is not "
				    "a duration from 100ms to 1h\n", optarg);
				return EX_USAGE;
			}
			break;
		case 'n':
			if (util_parse_u64(optarg, 1, UINT32_MAX, &count) ==
			    -1) {
				fprintf(stderr, "pubrelay: top: -n: '%s' is not "
				    "a count from 1\n", optarg);
				return EX_USAGE;
			}
			break;
		case 'h':
			top_usage(stdout);
			return 0;
		default:
			top_usage(stderr);
			return EX_USAGE;
		}
	}
	if (optind != argc) {
		fprintf(stderr, "pubrelay: top: unexpected argument '%s'\n",
		    argv[optind]);
		top_usage(stderr);
		return EX_USAGE;
	}

	t.tty = isatty(STDOUT_FILENO);
	t.cols = 80;
	t.rows = 24;
	setlocale(LC_CTYPE, "");
	cs = nl_langinfo(CODESET);
	t.utf8 = cs != NULL && strcmp(cs, "UTF-8") == 0;
	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = top_signal;
	sigaction(SIGINT, &sa, NULL);
	sigaction(SIGTERM, &sa, NULL);
	sigaction(SIGHUP, &sa, NULL);
	if (t.tty) {
		/* The alternate screen, the cursor hidden: both restored. */
		fputs("\033[?1049h\033[?25l\033[H\033[J", stdout);
		fflush(stdout);
	}
	t.prev.ok = 0;
	next = top_now();
	for (n = 0; !top_stop && (count == 0 || n < count); n++) {
		top_fetch(&t, &t.cur);
		top_record(&t);
		if (t.tty)
			top_screen(&t);
		else
			top_plain(&t);
		t.prev = t.cur;
		if (count != 0 && n + 1 == count)
			break;
		next += (double)interval / 1000;
		while (!top_stop && top_now() < next) {
			double	left = next - top_now();

			ts.tv_sec = (time_t)left;
			ts.tv_nsec = (long)((left - (double)ts.tv_sec) * 1e9);
			if (nanosleep(&ts, NULL) == -1 && errno != EINTR)
				break;
		}
	}
	if (t.tty) {
		fputs("\033[?25h\033[?1049l", stdout);
		fflush(stdout);
	}
	pubrelay_close(t.h);
	return ferror(stdout) ? EX_IOERR : 0;
}
