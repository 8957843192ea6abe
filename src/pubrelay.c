/*
 * pubrelay.c: the command-line client.  Its requests, replies and
 * connections are libpubrelay's (lib/pubrelay.h, compiled in): the command
 * parses its arguments, reads standard input, and says in words and exit
 * statuses what became of each request (pubrelay(1)).
 */
#ifdef HAVE_CONFIG_H
/* autoconf's, from the build directory: "config.h" would find src/config.h. */
#include <config.h>
#endif

#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <limits.h>
#include <poll.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sysexits.h>
#include <time.h>
#include <unistd.h>

#include "pubrelay.h"
#include "protocol.h"		/* the daemon's limits, macros only */
#include "statsfmt.h"
#include "top.h"
#include "util.h"

#ifndef PUBRELAY_SOCKET_PATH
#define PUBRELAY_SOCKET_PATH	"/run/pubrelay/pubrelay.sock"
#endif

#define CLIENT_DEFAULT_TIMEOUT	"30"		/* -t, seconds */
#define CLIENT_MAX_OUTSTANDING	4096		/* PUBs not yet answered */
#define CLIENT_CHUNK		65536		/* one read() of standard input */
#define CLIENT_FIRST_IN		1024		/* stdin's first read, on the stack */
/* PROTO_DEAD_LIST_MAX lines of a few short strings and a reason each. */
#define CLIENT_MAX_DEAD		(256 * 1024 * 1024)
#define DEAD_FIELDS		8	/* TAB-separated, see protocol.h */

static const char	*client_socket;
static int		 client_stdin_closed;	/* fd 0 is our /dev/null */
static uint64_t		 client_timeout_ms;	/* 0: wait for ever */
#define CLIENT_TIMEOUT_MAX_MS	(8760ULL * 3600 * 1000)	/* -t: a year */
/*
 * Silence allowed on top of -t while the daemon holds a reply on purpose (a
 * receipt, a WAIT): it owes one only when its own timer runs out.  -1: for
 * ever (WAIT without a timeout).  The library keeps the same time; these
 * only say it, and bound the wait on the socket and stdin together.
 */
static int64_t		 client_grace_ms;
#define CLIENT_DEFAULT_CONFIRM	"30s"		/* --confirm without a time */

struct pub_opts {
	/* The properties, in the order pubrelayd's encoder checks them. */
	const char	*exchange;
	const char	*routing_key;
	int		 mandatory;
	const char	*content_type;
	const char	*content_encoding;
	int		 transient;
	int		 priority;		/* -1: none */
	const char	*correlation_id;
	const char	*reply_to;
	const char	*expiration;
	const char	*max_age;	/* --max-age, in ms */
	const char	*message_id;
	const char	*type;
	const char	*app_id;
	const char	*headers[PROTO_MAX_HEADERS];	/* NAME=VALUE */
	unsigned	 nheaders;
	unsigned	 confirm_ms;		/* 0: no receipts */

	char		 expiration_buf[24];
	char		 max_age_buf[24];
	int		 lines;
	int		 print_id;
	const char	*key;		/* --idempotency-key */
};

/*
 * --lines: line n gets the key "<KEY>:<n>" (from 1), so that a run again
 * with the same key and input sends nothing twice.  Room for the digits.
 */
#define CLIENT_KEY_PREFIX_MAX	(PROTO_SHORTSTR_MAX - 21)

/* One publish: stdin lines (or one body) in, requests out, replies in. */
struct pub_run {
	pubrelay	*h;
	pubrelay_props	*props;
	int		 lines;
	int		 print_id;
	unsigned	 confirm_ms;	/* receipts asked for: 0 without */
	const char	*key_prefix;	/* --lines --idempotency-key */

	struct buf	 lin;		/* stdin bytes not yet cut */
	size_t		 lstart;	/* first byte of the next line */
	size_t		 lscan;		/* lin[lstart..lscan) has no '\n' */
	int		 in_eof;	/* read() returned 0 */
	int		 in_done;	/* every message was sent */
	int		 need_input;

	uint64_t	 nread;		/* messages taken from the input */
	uint64_t	 nsent;		/* requests handed to the library */
	uint64_t	 nreplied;
	uint64_t	 nok;		/* accepted: OK or any receipt */
	uint64_t	 nparked;	/* receipts: the broker refused */
	uint64_t	 nunconfirmed;	/* receipts: TIMEOUT */

	int		 stopped;	/* send nothing more */
	int		 lost;		/* the connection is gone */
	int		 lost_errno;	/* and why, 0 when the daemon closed it */
	int		 status;	/* exit status of the first failure */
	char		 why[1024];
	int64_t		 progress;	/* ms: last sign of life on the socket */
};

static void	usage(FILE *, int) __attribute__((noreturn));
static void	client_warnx(const char *, ...)
		    __attribute__((format(printf, 1, 2)));
static int	client_flush(void);
static void	pub_fail(struct pub_run *, int, const char *, ...)
		    __attribute__((format(printf, 3, 4)));

static void
client_warnx(const char *fmt, ...)
{
	va_list	ap;

	fprintf(stderr, "pubrelay: ");
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fprintf(stderr, "\n");
}

/* Whether everything printed reached standard output. */
static int
client_flush(void)
{
	if (fflush(stdout) == EOF || ferror(stdout)) {
		client_warnx("standard output: %s", strerror(errno));
		return EX_IOERR;
	}
	return EX_OK;
}

static int64_t
client_now(void)
{
	struct timespec	ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/*
 * Milliseconds poll() may still wait when the last progress was at since, -1
 * for ever, 0 when the time is up (the caller tells that apart with
 * client_expired()).
 */
static int
client_wait_ms(int64_t since)
{
	int64_t	left;

	if (client_timeout_ms == 0 || client_grace_ms == -1)
		return -1;
	left = since + (int64_t)client_timeout_ms + client_grace_ms -
	    client_now();
	if (left <= 0)
		return 0;
	return left > INT_MAX ? INT_MAX : (int)left;
}

static int
client_expired(int64_t since)
{
	return client_timeout_ms != 0 && client_grace_ms != -1 &&
	    client_now() - since >= (int64_t)client_timeout_ms +
	    client_grace_ms;
}

static void
client_timeout_str(char *out, size_t outlen)
{
	uint64_t	ms = client_timeout_ms + (uint64_t)client_grace_ms;

	if (ms % 1000 == 0)
		snprintf(out, outlen, "%llu s", (unsigned long long)(ms / 1000));
	else
		snprintf(out, outlen, "%llu ms", (unsigned long long)ms);
}

/* A --confirm or wait --timeout as the user would write it: 30s, 500ms. */
static void
client_ms_str(uint64_t ms, char *out, size_t outlen)
{
	if (ms % 1000 == 0)
		snprintf(out, outlen, "%llus", (unsigned long long)(ms / 1000));
	else
		snprintf(out, outlen, "%llums", (unsigned long long)ms);
}

/* Reply text comes from another process: keep control bytes off the tty. */
static void
client_clean(char *dst, size_t dstlen, const char *src, size_t len)
{
	size_t	i, n = 0;

	for (i = 0; i < len && n + 1 < dstlen; i++) {
		unsigned char c = (unsigned char)src[i];

		dst[n++] = (c >= 0x20 && c < 0x7f) ? (char)c : '?';
	}
	dst[n] = '\0';
}

/* Whether the library's code is the daemon's "ERR <code>". */
static int
client_daemon_err(int rc)
{
	return rc == PUBRELAY_E_REFUSED ||
	    (rc <= PUBRELAY_E_BADREQ && rc >= PUBRELAY_E_DENIED);
}

/* Exit status for "ERR <code>": retryable or not is the caller's question. */
static int
client_err_status(int rc)
{
	switch (rc) {
	case PUBRELAY_E_DENIED:
		return EX_NOPERM;
	case PUBRELAY_E_FULL:
	case PUBRELAY_E_STORE:
	case PUBRELAY_E_SHUTDOWN:
	case PUBRELAY_E_LIMIT:
	case PUBRELAY_E_SKIPPED:
		return EX_TEMPFAIL;
	case PUBRELAY_E_BADREQ:
	case PUBRELAY_E_TOOBIG:
	case PUBRELAY_E_PROTO:
	case PUBRELAY_E_UNKNOWN:
	case PUBRELAY_E_NOTFOUND:
		return EX_DATAERR;
	}
	/* A code this client does not know: a newer daemon, or not a daemon. */
	return EX_PROTOCOL;
}

/* The daemon's "<code> <text>" of the last ERR, fit for a terminal. */
static void
client_err_text(const pubrelay *h, char *dst, size_t dstlen)
{
	const char	*m = pubrelay_errmsg(h);

	client_clean(dst, dstlen, m, strlen(m));
}

/* -t for the library, which counts in int milliseconds (24 days). */
static int
client_lib_timeout(void)
{
	return client_timeout_ms > INT_MAX ? INT_MAX : (int)client_timeout_ms;
}

/*
 * A connection to the daemon, or NULL once said why, with the exit status
 * in *status.  The library waits out a full listen backlog within -t: the
 * daemon is busy, not gone.
 */
static pubrelay *
client_open(int *status)
{
	pubrelay	*h;
	int		 rc, error;

	if ((h = pubrelay_open(client_socket, client_lib_timeout())) == NULL) {
		client_warnx("out of memory");
		*status = EX_OSERR;
		return NULL;
	}
	if ((rc = pubrelay_errcode(h)) == PUBRELAY_OK)
		return h;
	error = errno;
	client_warnx("%s", pubrelay_errmsg(h));
	pubrelay_close(h);
	if (rc == PUBRELAY_E_INVAL)		/* the path is too long */
		*status = EX_USAGE;
	else if (rc != PUBRELAY_E_CONNECT)
		*status = EX_OSERR;
	else if (error == ENOTSOCK || error == ENOTDIR || error == EPROTOTYPE)
		*status = EX_OSFILE;
	/* Retrying will not fix permissions; everything else may pass. */
	else if (error == EACCES || error == EPERM)
		*status = EX_NOPERM;
	else
		*status = EX_TEMPFAIL;
	return NULL;
}

/*
 * A failure: the first one decides the exit status and the message, and any
 * failure stops sending new requests.
 */
static void
pub_fail(struct pub_run *r, int status, const char *fmt, ...)
{
	va_list	ap;

	r->stopped = 1;
	if (r->status != EX_OK)
		return;
	r->status = status;
	va_start(ap, fmt);
	vsnprintf(r->why, sizeof(r->why), fmt, ap);
	va_end(ap);
}

/* "message 12" with --lines, where numbers help; "message" for a single one. */
static void
pub_label(const struct pub_run *r, uint64_t n, char *out, size_t outlen)
{
	if (r->lines)
		snprintf(out, outlen, "message %llu", (unsigned long long)n);
	else
		snprintf(out, outlen, "message");
}

/* A library call failed on the connection itself (not a reply). */
static void
pub_io_error(struct pub_run *r, int rc)
{
	char	tstr[32];

	if (rc == PUBRELAY_E_CLOSED) {
		/* Said by pub_report(), which knows what was still owed. */
		r->lost_errno = errno;
		r->lost = r->stopped = 1;
	} else if (rc == PUBRELAY_E_TIMEOUT) {
		client_timeout_str(tstr, sizeof(tstr));
		pub_fail(r, EX_TEMPFAIL, "no progress from %s in %s",
		    client_socket, tstr);
	} else
		pub_fail(r, EX_OSERR, "%s", pubrelay_errmsg(r->h));
}

static void
pub_send(struct pub_run *r, const char *body, size_t len)
{
	char	label[64], key[PROTO_SHORTSTR_MAX + 1];
	int	rc;

	r->nread++;
	if (r->key_prefix != NULL) {
		snprintf(key, sizeof(key), "%s:%llu", r->key_prefix,
		    (unsigned long long)r->nread);
		if (pubrelay_props_set(r->props, "idempotency-key", key) !=
		    PUBRELAY_OK) {
			pub_label(r, r->nread, label, sizeof(label));
			pub_fail(r, EX_DATAERR, "%s cannot be sent: %s", label,
			    pubrelay_props_errmsg(r->props));
			return;
		}
	}
	rc = pubrelay_send(r->h, r->props, body, len);
	if (rc == PUBRELAY_OK) {
		r->nsent++;
		r->progress = client_now();
	} else if (rc == PUBRELAY_E_INVAL) {
		pub_label(r, r->nread, label, sizeof(label));
		pub_fail(r, EX_DATAERR, "%s cannot be sent: %s", label,
		    pubrelay_errmsg(r->h));
	} else
		pub_io_error(r, rc);
}

/*
 * The next complete line of input: 1 with it, 0 when more input is needed,
 * -1 at the end.
 */
static int
pub_next_line(struct pub_run *r, const char **line, size_t *len)
{
	char	*nl = NULL;

	if (r->lscan < r->lin.len)
		nl = memchr(r->lin.data + r->lscan, '\n',
		    r->lin.len - r->lscan);
	if (nl != NULL) {
		*line = r->lin.data + r->lstart;
		*len = (size_t)(nl - *line);
		r->lstart = r->lscan = (size_t)(nl - r->lin.data) + 1;
		return 1;
	}
	r->lscan = r->lin.len;
	if (!r->in_eof)
		return 0;
	if (r->lstart < r->lin.len) {
		/* A last line without its newline is a message too. */
		*line = r->lin.data + r->lstart;
		*len = r->lin.len - r->lstart;
		r->lstart = r->lscan = r->lin.len;
		return 1;
	}
	return -1;
}

/* The replies that accept a PUB; a receipt is one of the last three. */
enum pub_reply_kind {
	PUB_R_OK = 0,
	PUB_R_CONFIRMED,
	PUB_R_PARKED,
	PUB_R_TIMEOUT,
	PUB_R_NONE,
};

static const struct {
	const char	*word;		/* with the space before the id */
	size_t		 len;
} pub_reply_words[] = {
	[PUB_R_OK]	  = { "OK ", 3 },
	[PUB_R_CONFIRMED] = { "CONFIRMED ", 10 },
	[PUB_R_PARKED]	  = { "PARKED ", 7 },
	[PUB_R_TIMEOUT]	  = { "TIMEOUT ", 8 },
};

/*
 * Which reply a line the library refused looks like, so that the message
 * says what was wrong with it.  A bare "OK" is an OK without an id.
 */
static enum pub_reply_kind
pub_reply_kind(const char *line, size_t len)
{
	size_t	i;

	if (len == 2 && strncmp(line, "OK", 2) == 0)
		return PUB_R_OK;
	for (i = 0; i < PUB_R_NONE; i++)
		if (len >= pub_reply_words[i].len &&
		    strncmp(line, pub_reply_words[i].word,
		    pub_reply_words[i].len) == 0)
			return (enum pub_reply_kind)i;
	return PUB_R_NONE;
}

/* A receipt other than CONFIRMED: said at once, for each message. */
static void
pub_receipt_report(struct pub_run *r, int state, const char *id)
{
	char		 where[48], within[32], *reason;
	const char	*why;

	where[0] = '\0';
	if (r->lines)
		snprintf(where, sizeof(where), " (line %llu)",
		    (unsigned long long)r->nreplied);
	if (state == PUBRELAY_PARKED) {
		r->nparked++;
		why = pubrelay_reason(r->h);
		reason = util_text(why, strlen(why), NULL);
		client_warnx("%s%s parked: %s", id, where, reason);
		free(reason);
	} else {
		r->nunconfirmed++;
		client_ms_str(r->confirm_ms, within, sizeof(within));
		client_warnx("%s%s not confirmed within %s; it stays queued "
		    "and will be delivered", id, where, within);
	}
}

/* A reply line outside the protocol, or one sent without a request. */
static void
pub_bad_reply(struct pub_run *r, int owed)
{
	const char		*line;
	char			 text[512], label[64];
	size_t			 len;
	enum pub_reply_kind	 kind;

	if ((line = pubrelay_reply_line(r->h, &len)) == NULL) {
		/* Too long to keep: the library says how long. */
		pub_fail(r, EX_PROTOCOL, "%s", pubrelay_errmsg(r->h));
		return;
	}
	client_clean(text, sizeof(text), line, len);
	if (!owed) {
		pub_fail(r, EX_PROTOCOL, "reply without a request: \"%s\"",
		    text);
		return;
	}
	r->nreplied++;
	kind = pub_reply_kind(line, len);
	/* A daemon that ignored confirm: would be no receipt at all. */
	if (kind != PUB_R_NONE && (kind == PUB_R_OK) != (r->confirm_ms == 0))
		pub_fail(r, EX_PROTOCOL, "unexpected reply to a PUB %s "
		    "confirm: \"%s\"", r->confirm_ms ? "with" : "without",
		    text);
	else if (kind != PUB_R_NONE) {
		pub_label(r, r->nreplied, label, sizeof(label));
		pub_fail(r, EX_PROTOCOL, "%s: reply without a valid "
		    "message-id: \"%s\"", label, text);
	} else
		pub_fail(r, EX_PROTOCOL, "unexpected reply: \"%s\"", text);
}

/* Take one reply (or, none owed, what the daemon said unasked). */
static void
pub_collect(struct pub_run *r)
{
	char	text[512], label[64], *id;
	int	rc, owed = pubrelay_pending(r->h) > 0;

	rc = pubrelay_recv(r->h);
	if (rc >= 0) {
		r->progress = client_now();
		r->nreplied++;
		r->nok++;
		/* Often a terminal: no escape sequences from an id. */
		id = util_text(pubrelay_id(r->h), strlen(pubrelay_id(r->h)),
		    NULL);
		if (r->print_id)
			puts(id);
		if (rc == PUBRELAY_PARKED || rc == PUBRELAY_PENDING)
			pub_receipt_report(r, rc, id);
		free(id);
	} else if (client_daemon_err(rc)) {
		r->progress = client_now();
		client_err_text(r->h, text, sizeof(text));
		if (!owed && (rc == PUBRELAY_E_LIMIT ||
		    rc == PUBRELAY_E_DENIED))
			/* Right after connecting, before any request. */
			pub_fail(r, client_err_status(rc), "connection "
			    "refused: %s", text);
		else if (!owed)
			pub_fail(r, EX_PROTOCOL, "reply without a request: "
			    "\"ERR %s\"", text);
		else {
			r->nreplied++;
			pub_label(r, r->nreplied, label, sizeof(label));
			pub_fail(r, client_err_status(rc), "%s refused: %s",
			    label, text);
		}
	} else if (rc == PUBRELAY_E_REPLY)
		pub_bad_reply(r, owed);
	else
		pub_io_error(r, rc);
}

/*
 * Send whole lines while the window has room, taking a reply when it is
 * full; stdin is read only as far as that allows.
 */
static void
pub_fill(struct pub_run *r)
{
	const char	*line;
	size_t		 len;
	int		 rc;

	r->need_input = 0;
	while (!r->stopped && !r->in_done) {
		if (pubrelay_pending(r->h) >= CLIENT_MAX_OUTSTANDING) {
			pub_collect(r);
			continue;
		}
		rc = pub_next_line(r, &line, &len);
		/* No daemon takes it: neither hold more of it nor send it. */
		if ((rc == 0 && r->lin.len - r->lstart > PROTO_MAX_BODY) ||
		    (rc == 1 && len > PROTO_MAX_BODY)) {
			pub_fail(r, EX_DATAERR, "message %llu cannot be sent: "
			    "TOOBIG line over %d bytes, the most pubrelayd "
			    "takes", (unsigned long long)r->nread + 1,
			    PROTO_MAX_BODY);
			break;
		}
		if (rc == 0) {
			r->need_input = 1;
			break;
		}
		if (rc == -1) {
			r->in_done = 1;
			break;
		}
		pub_send(r, line, len);
	}
}

static void
pub_read_input(struct pub_run *r)
{
	ssize_t	n;

	if (r->lstart > 0) {
		memmove(r->lin.data, r->lin.data + r->lstart,
		    r->lin.len - r->lstart);
		r->lin.len -= r->lstart;
		r->lscan -= r->lstart;
		r->lstart = 0;
	}
	buf_reserve(&r->lin, CLIENT_CHUNK);
	n = read(STDIN_FILENO, r->lin.data + r->lin.len, CLIENT_CHUNK);
	if (n > 0)
		r->lin.len += (size_t)n;
	else if (n == 0)
		r->in_eof = 1;
	else if (errno != EINTR && errno != EAGAIN)
		pub_fail(r, EX_IOERR, "standard input: %s", strerror(errno));
}

/* Done when every request sent is answered and nothing more will be sent. */
static int
pub_finished(const struct pub_run *r)
{
	if (r->lost)
		return 1;
	if (pubrelay_pending(r->h) > 0)
		return 0;
	/*
	 * After a refusal, unsent bytes can only be the rest of a body
	 * already answered (TOOBIG comes before the body ends).
	 */
	return r->stopped || r->in_done;
}

/*
 * --lines waits for stdin and the daemon at once: what was sent goes out
 * and the replies are taken as they come (ids reach a pipeline then, not
 * at exit), and the daemon's refusing or closing the connection is seen
 * while stdin is quiet.
 */
static void
pub_wait(struct pub_run *r)
{
	struct pollfd	pfd[2];
	int		rc, waiting;
	char		tstr[32];

	if ((rc = pubrelay_flush(r->h)) != PUBRELAY_OK) {
		if (rc != PUBRELAY_E_CLOSED) {
			pub_io_error(r, rc);
			return;
		}
		/* Replies sent before may still wait to be read. */
		r->stopped = 1;
	}
	while (!(r->stopped && pubrelay_pending(r->h) == 0) &&
	    (rc = pubrelay_ready(r->h)) != 0) {
		if (rc < 0) {
			pub_io_error(r, rc);
			break;
		}
		pub_collect(r);
	}
	if (r->print_id)
		fflush(stdout);
	if (r->stopped)
		return;

	/* The clock runs only while the daemon owes us something. */
	waiting = pubrelay_pending(r->h) > 0;
	if (waiting && client_expired(r->progress)) {
		client_timeout_str(tstr, sizeof(tstr));
		pub_fail(r, EX_TEMPFAIL, "no progress from %s in %s",
		    client_socket, tstr);
		return;
	}
	pfd[0].fd = pubrelay_fd(r->h);
	pfd[0].events = POLLIN;
	pfd[0].revents = 0;
	pfd[1].fd = STDIN_FILENO;
	pfd[1].events = POLLIN;
	pfd[1].revents = 0;
	rc = poll(pfd, 2, waiting ? client_wait_ms(r->progress) : -1);
	if (rc == -1) {
		if (errno != EINTR)
			pub_fail(r, EX_OSERR, "poll: %s", strerror(errno));
		return;
	}
	/* Waiting for stdin is no part of the daemon's time. */
	if (!waiting || pfd[0].revents != 0)
		r->progress = client_now();
	if (pfd[1].revents & (POLLIN | POLLERR | POLLHUP | POLLNVAL))
		pub_read_input(r);
}

static void
pub_loop(struct pub_run *r)
{
	r->progress = client_now();
	for (;;) {
		pub_fill(r);
		if (pub_finished(r))
			break;
		if (r->need_input && !r->stopped)
			pub_wait(r);
		else
			pub_collect(r);
	}
	if (r->print_id)
		fflush(stdout);
}

/*
 * After a run without failures: 0 when every receipt said CONFIRMED, else
 * 65 if any message was parked (the broker refused it: retrying the same
 * will not help), else 75 (only slow: each will still be delivered).
 * Each one was reported as its receipt came; --lines adds the count.
 */
static int
pub_receipts_status(const struct pub_run *r)
{
	if (r->nparked == 0 && r->nunconfirmed == 0)
		return EX_OK;
	if (r->lines)
		client_warnx("%llu messages not confirmed (%llu parked, %llu "
		    "not in time) among the %llu accepted",
		    (unsigned long long)(r->nparked + r->nunconfirmed),
		    (unsigned long long)r->nparked,
		    (unsigned long long)r->nunconfirmed,
		    (unsigned long long)r->nok);
	return r->nparked > 0 ? EX_DATAERR : EX_TEMPFAIL;
}

static int
pub_report(struct pub_run *r)
{
	char	label[64];
	int	error = r->lost_errno;

	if (r->status == EX_OK && (r->nreplied < r->nsent || !r->in_done)) {
		if (r->nreplied < r->nsent)
			pub_label(r, r->nreplied + 1, label, sizeof(label));
		pub_fail(r, EX_TEMPFAIL, "connection to %s lost%s%s%s%s",
		    client_socket,
		    r->nreplied < r->nsent ? " before the reply to " : "",
		    r->nreplied < r->nsent ? label : "",
		    error != 0 ? ": " : "", error != 0 ? strerror(error) : "");
	}
	if (fflush(stdout) == EOF || ferror(stdout))
		pub_fail(r, EX_IOERR, "standard output: %s", strerror(errno));
	if (r->status == EX_OK)
		return pub_receipts_status(r);

	if (!r->lines)
		client_warnx("%s", r->why);
	else if (r->in_done || (r->in_eof && r->lstart == r->lin.len))
		client_warnx("%s; %llu of %llu messages accepted", r->why,
		    (unsigned long long)r->nok, (unsigned long long)r->nread);
	else
		client_warnx("%s; %llu accepted of the %llu messages read "
		    "(input not read to the end)", r->why,
		    (unsigned long long)r->nok, (unsigned long long)r->nread);
	return r->status;
}

/*
 * Read all of stdin: a body is binary, so no stdio line handling.  Stop one
 * byte over PROTO_MAX_BODY: no daemon takes more, so holding it (and
 * sending it) would only end in TOOBIG.
 */
static int
pub_slurp(struct buf *b)
{
	ssize_t	n;
	size_t	want;

	for (;;) {
		if (b->len > PROTO_MAX_BODY) {
			client_warnx("message cannot be sent: TOOBIG standard "
			    "input over %d bytes, the most pubrelayd takes",
			    PROTO_MAX_BODY);
			return EX_DATAERR;
		}
		/* What the buffer has; a whole chunk once it is full. */
		want = PROTO_MAX_BODY + 1 - b->len;
		if (b->cap == b->len + 1 || b->data == NULL)
			buf_reserve(b, want < CLIENT_CHUNK ? want : CLIENT_CHUNK);
		if (want > b->cap - b->len - 1)
			want = b->cap - b->len - 1;
		n = read(STDIN_FILENO, b->data + b->len, want);
		if (n == 0)
			return EX_OK;
		if (n == -1) {
			if (errno == EINTR)
				continue;
			client_warnx("standard input: %s", strerror(errno));
			return EX_IOERR;
		}
		b->len += (size_t)n;
	}
}

/*
 * The properties every message of the run shares, set in the order
 * pubrelayd's encoder checks them, so that the first one that cannot be
 * sent is the one named.  NULL once said why.
 */
static pubrelay_props *
pub_props(const struct pub_opts *o)
{
	const struct {
		const char	*name;
		const char	*value;
	} strs[] = {
		{ "exchange",		o->exchange },
		{ "routing-key",	o->routing_key },
		{ "mandatory",		o->mandatory ? "yes" : NULL },
		{ "content-type",	o->content_type },
		{ "content-encoding",	o->content_encoding },
		{ "delivery-mode",	o->transient ? "1" : NULL },
		{ "priority",		NULL },
		{ "correlation-id",	o->correlation_id },
		{ "reply-to",		o->reply_to },
		{ "expiration",		o->expiration },
		{ "message-id",		o->message_id },
		{ "type",		o->type },
		{ "app-id",		o->app_id },
		{ "header",		NULL },
		{ "idempotency-key",	o->lines ? NULL : o->key },
		{ "confirm",		NULL },
		{ "max-age",		o->max_age },
	};
	pubrelay_props	*p;
	char		 num[24];
	const char	*v;
	size_t		 i;
	unsigned	 j;
	int		 rc = PUBRELAY_OK;

	if ((p = pubrelay_props_new()) == NULL) {
		client_warnx("out of memory");
		return NULL;
	}
	/* An empty id is checked before all else, as the encoder does. */
	if (o->message_id != NULL && *o->message_id == '\0')
		rc = pubrelay_props_set(p, "message-id", "");
	for (i = 0; rc == PUBRELAY_OK && i < sizeof(strs) / sizeof(strs[0]);
	    i++) {
		v = strs[i].value;
		if (strcmp(strs[i].name, "priority") == 0 && o->priority != -1) {
			snprintf(num, sizeof(num), "%d", o->priority);
			v = num;
		} else if (strcmp(strs[i].name, "confirm") == 0 &&
		    o->confirm_ms > 0) {
			snprintf(num, sizeof(num), "%u", o->confirm_ms);
			v = num;
		} else if (strcmp(strs[i].name, "header") == 0) {
			for (j = 0; rc == PUBRELAY_OK && j < o->nheaders; j++)
				rc = pubrelay_props_set(p, "header",
				    o->headers[j]);
			continue;
		}
		if (v != NULL)
			rc = pubrelay_props_set(p, strs[i].name, v);
	}
	if (rc != PUBRELAY_OK) {
		client_warnx("cannot send: %s", pubrelay_props_errmsg(p));
		pubrelay_props_free(p);
		return NULL;
	}
	return p;
}

static int
pub_run(struct pub_opts *o, const char *body)
{
	struct pub_run	 r;
	struct buf	 in;
	char		 first_in[CLIENT_FIRST_IN];
	int		 status = EX_OK;

	memset(&r, 0, sizeof(r));
	r.lines = o->lines;
	r.print_id = o->print_id;
	r.confirm_ms = o->confirm_ms;
	/* The daemon holds each reply until the receipt: up to that long. */
	client_grace_ms = (int64_t)o->confirm_ms;
	if (o->lines)
		r.key_prefix = o->key;
	buf_init(&r.lin);
	buf_init_on(&in, first_in, sizeof(first_in));

	/*
	 * A property that cannot be sent fails the same for every message:
	 * say so before connecting or reading anything.
	 */
	if ((r.props = pub_props(o)) == NULL) {
		status = EX_DATAERR;
		goto done;
	}
	/*
	 * The whole body comes first: a daemon should not wait on our stdin
	 * with a connection open.
	 */
	if (!o->lines && body == NULL && (status = pub_slurp(&in)) != EX_OK)
		goto done;
	if ((r.h = client_open(&status)) == NULL)
		goto done;
	if (o->lines && pubrelay_set_window(r.h, CLIENT_MAX_OUTSTANDING) !=
	    PUBRELAY_OK) {
		client_warnx("%s", pubrelay_errmsg(r.h));
		status = EX_OSERR;
		goto done;
	}
	if (!o->lines) {
		if (body != NULL)
			pub_send(&r, body, strlen(body));
		else
			pub_send(&r, in.data != NULL ? in.data : "", in.len);
		r.in_done = 1;
	}
	pub_loop(&r);
	status = pub_report(&r);
done:
	pubrelay_close(r.h);
	pubrelay_props_free(r.props);
	buf_free(&r.lin);
	buf_free(&in);
	return status;
}

static void
usage(FILE *fp, int status)
{
	fprintf(fp,
"usage: pubrelay [-hV] [-s socket] [-t timeout] command [argument ...]\n"
"\n"
"  pubrelay publish [-e exchange] -k routing-key [--header name=value] ...\n"
"      [--content-type type] [--content-encoding encoding]\n"
"      [--message-id id] [--correlation-id id] [--reply-to queue]\n"
"      [--expiration ms] [--priority 0-255] [--type type] [--app-id id]\n"
"      [--idempotency-key key] [--transient] [--mandatory] [--lines]\n"
"      [--print-id] [--confirm[=timeout]] [--max-age duration] [body]\n"
"  pubrelay ping\n"
"  pubrelay stats [--json | --prometheus | --raw]\n"
"  pubrelay dead list [--max n] [--after id] [--raw | --json]\n"
"  pubrelay dead retry id | --all\n"
"  pubrelay dead purge id | --all\n"
"  pubrelay wait [--timeout timeout]\n"
"  pubrelay status message-id\n"
"  pubrelay top [-d interval] [-n count]\n"
"\n"
"  -s socket   daemon socket (default $PUBRELAY_SOCKET, else %s)\n"
"  -t timeout  give up after this long without progress (default %s s,\n"
"              at most 8760h, 0 waits for ever; units ms, s, m, h)\n"
"\n"
"publish sends body, or all of standard input; with --lines every line of\n"
"standard input is a message.  dead lists the messages the broker refused\n"
"for good, replays them (retry) or deletes them (purge).  --confirm waits\n"
"for the broker's confirm of each message; wait for that of every message\n"
"accepted so far.  status tells what became of one message: confirmed\n"
"(exit 0), parked (65), queued or inflight (75), unknown (66).\n"
"See pubrelay(1).\n",
	    PUBRELAY_SOCKET_PATH, CLIENT_DEFAULT_TIMEOUT);
	/* exit() flushes too, but says nothing when that fails. */
	if (fp == stdout && status == EX_OK)
		status = client_flush();
	exit(status);
}

/*
 * Short options: "+" stops at the first word that is no option, ":" says
 * when an option lacks its argument (opt_error() relies on both).
 */
#define MAIN_OPTS	"+:hs:t:V"
#define PUBLISH_OPTS	"+:e:hk:"
#define HELP_OPTS	"+:h"

enum {
	OPT_HEADER = 256,
	OPT_CTYPE,
	OPT_CENC,
	OPT_MESSAGE_ID,
	OPT_CORR_ID,
	OPT_REPLY_TO,
	OPT_EXPIRATION,
	OPT_MAX_AGE,
	OPT_PRIORITY,
	OPT_TYPE,
	OPT_APP_ID,
	OPT_IDEM_KEY,
	OPT_TRANSIENT,
	OPT_MANDATORY,
	OPT_LINES,
	OPT_PRINT_ID,
	OPT_RAW,
	OPT_JSON,
	OPT_PROMETHEUS,
	OPT_MAX,
	OPT_AFTER,
	OPT_ALL,
	OPT_CONFIRM,
	OPT_TIMEOUT,
};

/*
 * getopt's own messages would name argv[0], which is the command's name.
 * The wrong word is worked out here rather than read at optind - 1: C
 * libraries leave optind in different places after an error (musl one past
 * argc when the last option lacks its argument; both on a cluster such as
 * -zk while its letters are read, so that optind - 1 is the word before).
 * The option strings start with "+:": no permutation, ':' for a missing
 * argument.
 */
static void
opt_error(int ch, int argc, char **argv, const char *optstring)
{
	const char	*word;
	int		 len;

	word = optind >= 1 && optind - 1 < argc ? argv[optind - 1] :
	    argv[argc - 1];
	if (ch == ':') {
		/* Only the last word can lack the argument that follows it. */
		word = argv[argc - 1];
		if (strncmp(word, "--", 2) == 0)
			client_warnx("option %s requires an argument", word);
		else
			client_warnx("option -%c requires an argument", optopt);
	} else if (optopt == 0) {
		/* An unknown or ambiguous long option: optind is past it. */
		len = (int)strcspn(word, "=");
		client_warnx("unknown option %.*s", len, word);
	} else if (optopt >= 256 || (optopt != '+' && optopt != ':' &&
	    strchr(optstring, optopt) != NULL)) {
		/* A known option, so the long form given an argument. */
		len = (int)strcspn(word, "=");
		client_warnx("option %.*s takes no argument", len, word);
	} else
		client_warnx("unknown option -%c", optopt);
	usage(stderr, EX_USAGE);
}


/* A --confirm or wait --timeout: what the daemon takes, else a usage error. */
static uint64_t
opt_receipt_ms(const char *opt, const char *arg)
{
	uint64_t	ms;

	if (util_parse_duration_ms(arg, &ms) == -1 || ms == 0 ||
	    ms > PROTO_WAIT_MAX_MS) {
		client_warnx("%s %s: want a duration from 1ms to 24h, such as "
		    "30s or 500ms", opt, arg);
		usage(stderr, EX_USAGE);
	}
	return ms;
}


static int
cmd_publish(int argc, char **argv)
{
	static const struct option longopts[] = {
		{ "exchange",	      required_argument, NULL, 'e' },
		{ "routing-key",      required_argument, NULL, 'k' },
		{ "help",	      no_argument,	 NULL, 'h' },
		{ "header",	      required_argument, NULL, OPT_HEADER },
		{ "content-type",     required_argument, NULL, OPT_CTYPE },
		{ "content-encoding", required_argument, NULL, OPT_CENC },
		{ "message-id",	      required_argument, NULL, OPT_MESSAGE_ID },
		{ "correlation-id",   required_argument, NULL, OPT_CORR_ID },
		{ "reply-to",	      required_argument, NULL, OPT_REPLY_TO },
		{ "expiration",	      required_argument, NULL, OPT_EXPIRATION },
		{ "max-age",	      required_argument, NULL, OPT_MAX_AGE },
		{ "priority",	      required_argument, NULL, OPT_PRIORITY },
		{ "type",	      required_argument, NULL, OPT_TYPE },
		{ "app-id",	      required_argument, NULL, OPT_APP_ID },
		{ "idempotency-key",  required_argument, NULL, OPT_IDEM_KEY },
		{ "transient",	      no_argument,	 NULL, OPT_TRANSIENT },
		{ "mandatory",	      no_argument,	 NULL, OPT_MANDATORY },
		{ "lines",	      no_argument,	 NULL, OPT_LINES },
		{ "print-id",	      no_argument,	 NULL, OPT_PRINT_ID },
		{ "confirm",	      optional_argument, NULL, OPT_CONFIRM },
		{ NULL,		      0,		 NULL, 0 }
	};
	static struct pub_opts	 o;	/* big: the header array */
	const char		*eq;
	uint64_t		 v;
	int			 ch, have_key = 0;

	memset(&o, 0, sizeof(o));
	o.priority = -1;
	optind = 1;
	opterr = 0;
	while ((ch = getopt_long(argc, argv, PUBLISH_OPTS, longopts,
	    NULL)) != -1) {
		switch (ch) {
		case 'e':
			o.exchange = optarg;
			break;
		case 'k':
			o.routing_key = optarg;
			have_key = 1;
			break;
		case 'h':
			usage(stdout, EX_OK);
		case OPT_HEADER:
			if ((eq = strchr(optarg, '=')) == NULL ||
			    eq == optarg) {
				client_warnx("--header %s: want NAME=VALUE",
				    optarg);
				usage(stderr, EX_USAGE);
			}
			if (o.nheaders == PROTO_MAX_HEADERS) {
				client_warnx("more than %d --header options",
				    PROTO_MAX_HEADERS);
				usage(stderr, EX_USAGE);
			}
			o.headers[o.nheaders++] = optarg;
			break;
		case OPT_CTYPE:
			o.content_type = optarg;
			break;
		case OPT_CENC:
			o.content_encoding = optarg;
			break;
		case OPT_MESSAGE_ID:
			o.message_id = optarg;
			break;
		case OPT_CORR_ID:
			o.correlation_id = optarg;
			break;
		case OPT_REPLY_TO:
			o.reply_to = optarg;
			break;
		case OPT_EXPIRATION:
			if (util_parse_u64(optarg, 0, UINT64_MAX, &v) == -1) {
				client_warnx("--expiration %s: want "
				    "milliseconds", optarg);
				usage(stderr, EX_USAGE);
			}
			snprintf(o.expiration_buf, sizeof(o.expiration_buf),
			    "%llu", (unsigned long long)v);
			o.expiration = o.expiration_buf;
			break;
		case OPT_MAX_AGE:
			if (util_parse_duration_ms(optarg, &v) == -1 ||
			    v == 0 || v > PROTO_MAX_AGE_MAX_MS) {
				client_warnx("--max-age %s: want a duration "
				    "from 1ms to 3650 days, such as 30s or 2h",
				    optarg);
				usage(stderr, EX_USAGE);
			}
			snprintf(o.max_age_buf, sizeof(o.max_age_buf),
			    "%llu", (unsigned long long)v);
			o.max_age = o.max_age_buf;
			break;
		case OPT_PRIORITY:
			if (util_parse_u64(optarg, 0, 255, &v) == -1) {
				client_warnx("--priority %s: want 0 to 255",
				    optarg);
				usage(stderr, EX_USAGE);
			}
			o.priority = (int)v;
			break;
		case OPT_TYPE:
			o.type = optarg;
			break;
		case OPT_APP_ID:
			o.app_id = optarg;
			break;
		case OPT_IDEM_KEY:
			o.key = optarg;
			break;
		case OPT_TRANSIENT:
			o.transient = 1;
			break;
		case OPT_MANDATORY:
			o.mandatory = 1;
			break;
		case OPT_LINES:
			o.lines = 1;
			break;
		case OPT_PRINT_ID:
			o.print_id = 1;
			break;
		case OPT_CONFIRM:
			o.confirm_ms = (unsigned)opt_receipt_ms("--confirm",
			    optarg != NULL ? optarg : CLIENT_DEFAULT_CONFIRM);
			break;
		default:
			opt_error(ch, argc, argv, PUBLISH_OPTS);
		}
	}
	argc -= optind;
	argv += optind;

	if (!have_key) {
		client_warnx("publish: -k routing-key is required");
		usage(stderr, EX_USAGE);
	}
	if (argc > 1 || (argc == 1 && o.lines)) {
		client_warnx("publish: %s", o.lines ?
		    "--lines takes no body argument" : "too many arguments");
		usage(stderr, EX_USAGE);
	}
	if (o.key != NULL && (o.key[0] == '\0' || strlen(o.key) >
	    (o.lines ? CLIENT_KEY_PREFIX_MAX : PROTO_SHORTSTR_MAX))) {
		client_warnx("publish: --idempotency-key: want 1 to %d bytes",
		    o.lines ? CLIENT_KEY_PREFIX_MAX : PROTO_SHORTSTR_MAX);
		usage(stderr, EX_USAGE);
	}
	/* One id for many messages would make consumers drop all but one. */
	if (o.lines && o.message_id != NULL) {
		client_warnx("publish: --message-id cannot be used with "
		    "--lines");
		usage(stderr, EX_USAGE);
	}
	/*
	 * The /dev/null in place of a closed stdin would be an empty
	 * message nobody meant.  (--lines reads it as no messages at all.)
	 */
	if (argc == 0 && !o.lines && client_stdin_closed) {
		client_warnx("publish: no body, and standard input is closed");
		return EX_NOINPUT;
	}
	return pub_run(&o, argc == 1 ? argv[0] : NULL);
}

/*
 * Say why a request other than PUB failed, and return the exit status.
 * cmd names it in "refused" messages, what in "unexpected reply to".
 * With notfound set (the DEAD commands, status), NOTFOUND prints that
 * instead of the daemon's text and every code keeps its own exit status.
 */
static int
client_request_error(pubrelay *h, int rc, const char *cmd, const char *what,
    const char *notfound)
{
	const char	*line;
	char		 text[512], tstr[32];
	size_t		 len;
	int		 error = errno, status;

	if (client_daemon_err(rc)) {
		status = client_err_status(rc);
		if (notfound != NULL && rc == PUBRELAY_E_NOTFOUND) {
			client_warnx("%s: %s", cmd, notfound);
			return status;
		}
		client_err_text(h, text, sizeof(text));
		client_warnx("%s refused: %s", cmd, text);
		if (notfound != NULL)
			return status;
		/*
		 * Nothing in a ping or stats to fix: retry, or give up on a
		 * reply the client does not understand or a DENIED that no
		 * retry changes.
		 */
		return status == EX_PROTOCOL || status == EX_NOPERM ? status :
		    EX_TEMPFAIL;
	}
	switch (rc) {
	case PUBRELAY_E_REPLY:
		if ((line = pubrelay_reply_line(h, &len)) == NULL)
			client_warnx("%s", pubrelay_errmsg(h));
		else {
			client_clean(text, sizeof(text), line, len);
			client_warnx("unexpected reply to %s: \"%s\"", what,
			    text);
		}
		return EX_PROTOCOL;
	case PUBRELAY_E_TIMEOUT:
		client_timeout_str(tstr, sizeof(tstr));
		client_warnx("no reply from %s in %s", client_socket, tstr);
		return EX_TEMPFAIL;
	case PUBRELAY_E_CLOSED:
		client_warnx("connection to %s lost%s%s", client_socket,
		    error != 0 ? ": " : "", error != 0 ? strerror(error) : "");
		return EX_TEMPFAIL;
	}
	client_warnx("%s", pubrelay_errmsg(h));
	return EX_OSERR;
}

static void
cmd_opts(const char *cmd, int argc, char **argv, const char *opts,
    const struct option *longopts, int *raw)
{
	int	ch;

	optind = 1;
	opterr = 0;
	while ((ch = getopt_long(argc, argv, opts, longopts, NULL)) != -1) {
		switch (ch) {
		case 'h':
			usage(stdout, EX_OK);
		case OPT_RAW:
			*raw = 1;
			break;
		default:
			opt_error(ch, argc, argv, opts);
		}
	}
	if (optind != argc) {
		client_warnx("%s: too many arguments", cmd);
		usage(stderr, EX_USAGE);
	}
}


static int
cmd_ping(int argc, char **argv)
{
	static const struct option longopts[] = {
		{ "help",	no_argument,	NULL, 'h' },
		{ NULL,		0,		NULL, 0 }
	};
	pubrelay	*h;
	int		 rc, status, unused = 0;

	cmd_opts("ping", argc, argv, HELP_OPTS, longopts, &unused);
	if ((h = client_open(&status)) == NULL)
		return status;
	if ((rc = pubrelay_ping(h)) == PUBRELAY_OK) {
		puts("PONG");
		status = client_flush();
	} else
		status = client_request_error(h, rc, "ping", "ping", NULL);
	pubrelay_close(h);
	return status;
}

/* pubrelay stats: the daemon's "name value" lines, formatted (statsfmt.h). */
enum stats_format {
	STATS_TABLE = 0,
	STATS_RAW,
	STATS_JSON,
	STATS_PROMETHEUS,
};

static const char *
stats_format_opt(int fmt)
{
	switch (fmt) {
	case STATS_RAW:
		return "--raw";
	case STATS_JSON:
		return "--json";
	case STATS_PROMETHEUS:
		return "--prometheus";
	}
	return "";
}


static int
cmd_stats(int argc, char **argv)
{
	static const struct option longopts[] = {
		{ "help",	no_argument,	NULL, 'h' },
		{ "json",	no_argument,	NULL, OPT_JSON },
		{ "prometheus",	no_argument,	NULL, OPT_PROMETHEUS },
		{ "raw",	no_argument,	NULL, OPT_RAW },
		{ NULL,		0,		NULL, 0 }
	};
	pubrelay		*h;
	struct buf		 out;
	const char		*text;
	size_t			 n;
	int			 status, rc, ch, fmt = STATS_TABLE, f;

	optind = 1;
	opterr = 0;
	while ((ch = getopt_long(argc, argv, HELP_OPTS, longopts, NULL)) != -1) {
		switch (ch) {
		case 'h':
			usage(stdout, EX_OK);
		case OPT_RAW:
		case OPT_JSON:
		case OPT_PROMETHEUS:
			f = ch == OPT_RAW ? STATS_RAW : ch == OPT_JSON ?
			    STATS_JSON : STATS_PROMETHEUS;
			if (fmt != STATS_TABLE && fmt != f) {
				client_warnx("stats: %s and %s exclude each "
				    "other", stats_format_opt(fmt),
				    stats_format_opt(f));
				usage(stderr, EX_USAGE);
			}
			fmt = f;
			break;
		default:
			opt_error(ch, argc, argv, HELP_OPTS);
		}
	}
	if (optind != argc) {
		client_warnx("stats: too many arguments");
		usage(stderr, EX_USAGE);
	}

	buf_init(&out);
	if ((h = client_open(&status)) != NULL) {
		if ((rc = pubrelay_stats(h)) == PUBRELAY_OK)
			status = EX_OK;
		else
			status = client_request_error(h, rc, "stats", "stats",
			    NULL);
	}
	if (status == EX_OK) {
		text = pubrelay_stats_text(h, &n);
		switch (fmt) {
		case STATS_RAW:
			buf_append(&out, text, n);
			break;
		case STATS_JSON:
			statsfmt_json(&out, text, n);
			break;
		case STATS_PROMETHEUS:
			statsfmt_prometheus(&out, text, n);
			break;
		default:
			statsfmt_table(&out, text, n);
			break;
		}
	} else if (fmt == STATS_PROMETHEUS && status != EX_USAGE)
		/* The scrape still says the daemon is down; the status too. */
		statsfmt_prometheus_down(&out);
	pubrelay_close(h);
	if (out.len > 0)
		fwrite(out.data, 1, out.len, stdout);
	buf_free(&out);
	if (fflush(stdout) == EOF || ferror(stdout)) {
		client_warnx("standard output: %s", strerror(errno));
		if (status == EX_OK)
			status = EX_IOERR;
	}
	return status;
}

/* Unix milliseconds as local time, ISO 8601: 2024-05-01T12:34:56+02:00. */
static void
dead_time(const char *ms, char *out, size_t outlen)
{
	struct tm	tm;
	uint64_t	v;
	time_t		t;
	size_t		n;

	if (util_parse_u64(ms, 0, (uint64_t)INT64_MAX, &v) == -1)
		goto raw;
	t = (time_t)(v / 1000);
	if (localtime_r(&t, &tm) == NULL ||
	    (n = strftime(out, outlen, "%Y-%m-%dT%H:%M:%S%z", &tm)) == 0)
		goto raw;
	/* strftime's %z is +0200; the extended format wants +02:00. */
	if (n >= 5 && n + 2 <= outlen && (out[n - 5] == '+' ||
	    out[n - 5] == '-')) {
		memmove(out + n - 1, out + n - 2, 3);
		out[n - 2] = ':';
	}
	return;
 raw:
	snprintf(out, outlen, "%s", ms);
}

struct dead_row {
	char	*field[DEAD_FIELDS];
	int	 width[DEAD_FIELDS];
};

static const char *const dead_titles[DEAD_FIELDS] = {
	"ID", "PARKED", "ATTEMPTS", "BYTES", "EXCHANGE", "ROUTING KEY",
	"MESSAGE ID", "REASON",
};

/*
 * The DEAD LIST line at *pp (up to end, without its newline) split at its
 * tabs into f[] and n[]; *pp moves past it.  -1 when it is not exactly
 * DEAD_FIELDS fields.
 */
static int
dead_split(const char **pp, const char *end, const char *f[DEAD_FIELDS],
    size_t n[DEAD_FIELDS])
{
	const char	*q = *pp, *eol, *tab;
	int		 j;

	if ((eol = memchr(q, '\n', (size_t)(end - q))) == NULL)
		eol = end;
	*pp = eol < end ? eol + 1 : end;
	for (j = 0; j < DEAD_FIELDS; j++) {
		tab = memchr(q, '\t', (size_t)(eol - q));
		if ((tab == NULL) != (j == DEAD_FIELDS - 1))
			return -1;
		if (tab == NULL)
			tab = eol;
		f[j] = q;
		n[j] = (size_t)(tab - q);
		q = tab + 1;
	}
	return 0;
}

/* The DEAD LIST body as a table; -1 when a line is not 8 fields. */
static int
dead_table(const char *p, size_t len)
{
	struct dead_row	*rows = NULL;
	const char	*end = p + len, *f[DEAD_FIELDS];
	char		 tmp[64], ms[32];
	size_t		 n[DEAD_FIELDS], nrows = 0, i;
	int		 width[DEAD_FIELDS], j, rc = 0;

	for (j = 0; j < DEAD_FIELDS; j++)
		width[j] = (int)strlen(dead_titles[j]);
	while (p < end && (rc = dead_split(&p, end, f, n)) == 0) {
		rows = xrealloc(rows, (nrows + 1) * sizeof(*rows));
		for (j = 0; j < DEAD_FIELDS; j++) {
			if (j == 1) {
				snprintf(ms, sizeof(ms), "%.*s", (int)n[j],
				    f[j]);
				dead_time(ms, tmp, sizeof(tmp));
				rows[nrows].field[j] = util_text(tmp,
				    strlen(tmp), &rows[nrows].width[j]);
			} else
				rows[nrows].field[j] = util_text(f[j], n[j],
				    &rows[nrows].width[j]);
			if (rows[nrows].width[j] > width[j])
				width[j] = rows[nrows].width[j];
		}
		nrows++;
	}
	if (rc == 0) {
		/* Numbers right-aligned; the reason, last, is not padded. */
		for (j = 0; j < DEAD_FIELDS - 1; j++)
			printf(j == 0 || j == 2 || j == 3 ? "%*s  " : "%-*s  ",
			    width[j], dead_titles[j]);
		printf("%s\n", dead_titles[DEAD_FIELDS - 1]);
		for (i = 0; i < nrows; i++) {
			for (j = 0; j < DEAD_FIELDS - 1; j++) {
				if (j == 0 || j == 2 || j == 3)
					printf("%*s", width[j] -
					    rows[i].width[j], "");
				fputs(rows[i].field[j], stdout);
				if (j != 0 && j != 2 && j != 3)
					printf("%*s", width[j] -
					    rows[i].width[j], "");
				fputs("  ", stdout);
			}
			printf("%s\n", rows[i].field[DEAD_FIELDS - 1]);
		}
	}
	for (i = 0; i < nrows; i++)
		for (j = 0; j < DEAD_FIELDS; j++)
			free(rows[i].field[j]);
	free(rows);
	return rc;
}

/*
 * A DEAD LIST page as JSON lines, one object a dead letter, for scripts:
 * id, parked_ms, attempts and bytes as numbers, the rest as strings (always
 * valid JSON).  -1 when a line is not 8 fields, or a number is not one.
 */
static const char *const dead_json_names[DEAD_FIELDS] = {
	"id", "parked_ms", "attempts", "bytes", "exchange", "routing_key",
	"message_id", "reason",
};

static int
dead_json(const char *p, size_t len)
{
	const char	*end = p + len, *f[DEAD_FIELDS];
	struct buf	 o;
	size_t		 n[DEAD_FIELDS], k;
	int		 j, rc = 0;

	buf_init(&o);
	while (p < end && (rc = dead_split(&p, end, f, n)) == 0) {
		buf_reset(&o);
		buf_append(&o, "{", 1);
		for (j = 0; j < DEAD_FIELDS; j++) {
			buf_printf(&o, "%s\"%s\": ", j ? ", " : "",
			    dead_json_names[j]);
			if (j < 4) {
				for (k = 0; k < n[j]; k++)
					if (f[j][k] < '0' || f[j][k] > '9')
						rc = -1;
				if (n[j] == 0 || n[j] > 20)
					rc = -1;
				buf_append(&o, f[j], n[j]);
			} else
				statsfmt_json_string(&o, f[j], n[j]);
		}
		if (rc != 0)
			break;
		buf_append(&o, "}\n", 2);
		fwrite(o.data, 1, o.len, stdout);
	}
	buf_free(&o);
	return rc;
}

/* The id a DEAD LIST line starts with; -1 when it has none. */
static int64_t
dead_line_id(const char *p, size_t len)
{
	char		 tmp[24];
	size_t		 n;
	uint64_t	 v;

	for (n = 0; n < len && p[n] != '\t' && n < sizeof(tmp) - 1; n++)
		tmp[n] = p[n];
	tmp[n] = '\0';
	if (util_parse_u64(tmp, 1, (uint64_t)INT64_MAX, &v) == -1)
		return -1;
	return (int64_t)v;
}


/*
 * The daemon answers DEAD LIST a page at a time (what fits in its buffer
 * for a client): ask for the next one after the last id until a page is
 * empty or --max lines came.  --raw prints each page as it comes; the
 * table needs them all for its column widths.
 */
static int
cmd_dead_list(int argc, char **argv)
{
	static const struct option longopts[] = {
		{ "after",	required_argument, NULL, OPT_AFTER },
		{ "help",	no_argument,	   NULL, 'h' },
		{ "json",	no_argument,	   NULL, OPT_JSON },
		{ "max",	required_argument, NULL, OPT_MAX },
		{ "raw",	no_argument,	   NULL, OPT_RAW },
		{ NULL,		0,		   NULL, 0 }
	};
	pubrelay	*h = NULL;
	struct buf	 all;
	const char	*page;
	size_t		 n, i, nlines, start;
	uint64_t	 max = 0, total = 0, want, after = 0;
	int64_t		 last;
	int		 ch, rc, status = EX_OK, raw = 0, json = 0;

	optind = 1;
	opterr = 0;
	while ((ch = getopt_long(argc, argv, HELP_OPTS, longopts, NULL)) != -1) {
		switch (ch) {
		case 'h':
			usage(stdout, EX_OK);
		case OPT_JSON:
			json = 1;
			break;
		case OPT_MAX:
			if (util_parse_u64(optarg, 1, (uint64_t)INT64_MAX,
			    &max) == -1) {
				client_warnx("--max %s: want a number above 0",
				    optarg);
				usage(stderr, EX_USAGE);
			}
			break;
		case OPT_AFTER:
			if (util_parse_u64(optarg, 0, (uint64_t)INT64_MAX,
			    &after) == -1) {
				client_warnx("--after %s: want a dead letter "
				    "id", optarg);
				usage(stderr, EX_USAGE);
			}
			break;
		case OPT_RAW:
			raw = 1;
			break;
		default:
			opt_error(ch, argc, argv, HELP_OPTS);
		}
	}
	if (optind != argc) {
		client_warnx("dead list: too many arguments");
		usage(stderr, EX_USAGE);
	}
	if (json && raw) {
		client_warnx("dead list: --json or --raw, not both");
		usage(stderr, EX_USAGE);
	}

	buf_init(&all);
	if ((h = client_open(&status)) == NULL)
		return status;
	while (status == EX_OK && (max == 0 || total < max)) {
		want = max != 0 && max - total < PROTO_DEAD_LIST_MAX ?
		    max - total : PROTO_DEAD_LIST_MAX;
		rc = pubrelay_dead_list(h, after, (unsigned)want, &page, &n);
		if (rc != PUBRELAY_OK)
			status = client_request_error(h, rc, "dead list",
			    "dead list", "no such dead letter");
		if (status != EX_OK || n == 0)
			break;
		if (page[n - 1] != '\n') {
			client_warnx("dead list: reply does not end in a "
			    "newline");
			status = EX_PROTOCOL;
			break;
		}
		for (i = 0, nlines = 0, start = 0; i < n; i++) {
			if (page[i] == '\n' && i + 1 < n) {
				nlines++;
				start = i + 1;
			}
		}
		nlines++;
		/* Pages go up by id: anything else would never end. */
		last = dead_line_id(page + start, (size_t)n - start);
		if (last == -1 || (uint64_t)last <= after) {
			client_warnx("dead list: a page does not go on after "
			    "id %llu", (unsigned long long)after);
			status = EX_PROTOCOL;
			break;
		}
		after = (uint64_t)last;
		total += nlines;
		if (raw)
			fwrite(page, 1, (size_t)n, stdout);
		else if (json) {
			if (dead_json(page, (size_t)n) == -1) {
				client_warnx("dead list: a line of the reply is "
				    "not %d tab-separated fields",
				    DEAD_FIELDS);
				status = EX_PROTOCOL;
			}
		} else if (all.len + n > CLIENT_MAX_DEAD) {
			client_warnx("dead list: over %d MiB of dead letters "
			    "for a table: use --raw, or --max and --after",
			    CLIENT_MAX_DEAD / (1024 * 1024));
			status = EX_SOFTWARE;
		} else
			buf_append(&all, page, (size_t)n);
	}
	if (status == EX_OK && !raw && !json) {
		if (all.len == 0)
			printf("no dead letters\n");
		else if (dead_table(all.data, all.len) == -1) {
			client_warnx("dead list: a line of the reply is not "
			    "%d tab-separated fields", DEAD_FIELDS);
			status = EX_PROTOCOL;
		}
	}
	if (status == EX_OK)
		status = client_flush();
	if (status == EX_OK && max != 0 && total == max)
		client_warnx("dead list: showing the first %llu; there may be "
		    "more (--max, --after)", (unsigned long long)total);
	pubrelay_close(h);
	buf_free(&all);
	return status;
}

/* dead retry / dead purge: one id or --all, then "OK <count>". */
static int
cmd_dead_move(int argc, char **argv, const char *verb, const char *done)
{
	static const struct option longopts[] = {
		{ "all",	no_argument,	NULL, OPT_ALL },
		{ "help",	no_argument,	NULL, 'h' },
		{ NULL,		0,		NULL, 0 }
	};
	pubrelay	*h;
	char		 cmd[32], nf[96];
	uint64_t	 id = 0, n = 0;
	int		 ch, rc, status, all = 0;

	snprintf(cmd, sizeof(cmd), "dead %s", argv[0]);
	optind = 1;
	opterr = 0;
	while ((ch = getopt_long(argc, argv, HELP_OPTS, longopts, NULL)) != -1) {
		switch (ch) {
		case 'h':
			usage(stdout, EX_OK);
		case OPT_ALL:
			all = 1;
			break;
		default:
			opt_error(ch, argc, argv, HELP_OPTS);
		}
	}
	argc -= optind;
	argv += optind;
	if (argc > 1) {
		client_warnx("%s: too many arguments", cmd);
		usage(stderr, EX_USAGE);
	}
	if ((argc == 1) == all) {
		client_warnx("%s: give one dead letter id, or --all", cmd);
		usage(stderr, EX_USAGE);
	}
	if (argc == 1 &&
	    util_parse_u64(argv[0], 1, (uint64_t)INT64_MAX, &id) == -1) {
		client_warnx("%s: '%s' is not a dead letter id (a number "
		    "above 0; see dead list)", cmd, argv[0]);
		usage(stderr, EX_USAGE);
	}

	snprintf(nf, sizeof(nf), "no dead letter with id %llu",
	    (unsigned long long)id);
	if ((h = client_open(&status)) == NULL)
		return status;
	/* Id 0 is every one: a dead letter's id is above 0. */
	rc = strcmp(verb, "RETRY") == 0 ? pubrelay_dead_retry(h, id, &n) :
	    pubrelay_dead_purge(h, id, &n);
	if (rc == PUBRELAY_OK) {
		printf("%llu messages %s\n", (unsigned long long)n, done);
		status = client_flush();
	} else
		status = client_request_error(h, rc, cmd, cmd, nf);
	pubrelay_close(h);
	return status;
}

/*
 * pubrelay wait: a barrier.  "OK <dead>" once every message accepted before
 * it is confirmed or parked, <dead> the dead letters among them and earlier
 * ones; "TIMEOUT" when --timeout ran out first.
 */
static int
cmd_wait(int argc, char **argv)
{
	static const struct option longopts[] = {
		{ "timeout",	required_argument, NULL, OPT_TIMEOUT },
		{ "help",	no_argument,	   NULL, 'h' },
		{ NULL,		0,		   NULL, 0 }
	};
	pubrelay	*h;
	char		 within[32];
	uint64_t	 ms = 0, n = 0;
	int		 ch, rc, status = EX_OK;

	optind = 1;
	opterr = 0;
	while ((ch = getopt_long(argc, argv, HELP_OPTS, longopts, NULL)) != -1) {
		switch (ch) {
		case 'h':
			usage(stdout, EX_OK);
		case OPT_TIMEOUT:
			ms = opt_receipt_ms("--timeout", optarg);
			break;
		default:
			opt_error(ch, argc, argv, HELP_OPTS);
		}
	}
	if (optind != argc) {
		client_warnx("wait: too many arguments");
		usage(stderr, EX_USAGE);
	}
	if ((h = client_open(&status)) == NULL)
		return status;
	/* Connected: the reply may take the whole wait, for ever without one. */
	client_grace_ms = ms > 0 ? (int64_t)ms : -1;
	rc = pubrelay_wait(h, (unsigned)ms, &n);
	client_ms_str(ms, within, sizeof(within));
	if (rc == PUBRELAY_PENDING) {
		client_warnx("wait: the messages accepted before it were not "
		    "all confirmed within %s; they stay queued", within);
		status = EX_TEMPFAIL;
	} else if (rc != PUBRELAY_CONFIRMED)
		status = client_request_error(h, rc, "wait", "wait", NULL);
	else if (n > 0) {
		client_warnx("%llu dead letters among the messages accepted "
		    "before the wait (pubrelay dead list)",
		    (unsigned long long)n);
		status = EX_DATAERR;
	}
	pubrelay_close(h);
	return status;
}

/* What STATUS answers, as printed and as exit status (pubrelay(1)). */
static const struct {
	int		 state;		/* pubrelay_status()'s */
	const char	*word;		/* what status prints */
	int		 status;
} status_states[] = {
	{ PUBRELAY_CONFIRMED,	"confirmed",	EX_OK },
	{ PUBRELAY_PARKED,	"parked",	EX_DATAERR },
	{ PUBRELAY_QUEUED,	"queued",	EX_TEMPFAIL },	/* not yet */
	{ PUBRELAY_INFLIGHT,	"inflight",	EX_TEMPFAIL },
	{ PUBRELAY_UNKNOWN,	"unknown",	EX_NOINPUT },	/* no such one */
};

/*
 * Why id cannot be asked about, or NULL: STATUS takes 1 to 255 bytes; a
 * control character could end or split the request line, and the parser
 * drops blanks at either end, so the reply would name another id.
 */
static const char *
status_id_error(const char *id, size_t len)
{
	size_t	i;

	if (len == 0)
		return "an empty message-id";
	if (len > PROTO_SHORTSTR_MAX)
		return "longer than 255 bytes";
	for (i = 0; i < len; i++)
		if ((unsigned char)id[i] < 0x20 || id[i] == 0x7f)
			return "a control character in it";
	if (id[0] == ' ' || id[len - 1] == ' ')
		return "a blank at its start or end";
	return NULL;
}


/*
 * pubrelay status: "<state> <id>" on standard output ("parked <id>:
 * <reason>"), the state also in the exit status.  The reply must name the
 * id asked about: it is the one thing a script could confuse.
 */
static int
cmd_status(int argc, char **argv)
{
	static const struct option longopts[] = {
		{ "help",	no_argument,	NULL, 'h' },
		{ NULL,		0,		NULL, 0 }
	};
	pubrelay	*h;
	const char	*id, *why;
	char		*reason, text[512], what[PROTO_SHORTSTR_MAX + 16];
	size_t		 idlen, i;
	int		 ch, rc, status;

	optind = 1;
	opterr = 0;
	while ((ch = getopt_long(argc, argv, HELP_OPTS, longopts, NULL)) != -1) {
		switch (ch) {
		case 'h':
			usage(stdout, EX_OK);
		default:
			opt_error(ch, argc, argv, HELP_OPTS);
		}
	}
	argc -= optind;
	argv += optind;
	if (argc != 1) {
		client_warnx("status: %s", argc == 0 ? "give a message-id" :
		    "too many arguments");
		usage(stderr, EX_USAGE);
	}
	id = argv[0];
	idlen = strlen(id);
	if ((why = status_id_error(id, idlen)) != NULL) {
		client_clean(text, sizeof(text), id, idlen);
		client_warnx("status: '%s' cannot be asked about: %s", text,
		    why);
		usage(stderr, EX_USAGE);
	}
	if ((h = client_open(&status)) == NULL)
		return status;
	rc = pubrelay_status(h, id);
	for (i = 0; i < sizeof(status_states) / sizeof(status_states[0]); i++)
		if (status_states[i].state == rc)
			break;
	if (i == sizeof(status_states) / sizeof(status_states[0])) {
		/*
		 * notfound set only so that every ERR code keeps its own
		 * status: the status command's 75 must not also mean a BADREQ.
		 */
		snprintf(what, sizeof(what), "status %s", id);
		status = client_request_error(h, rc, "status", what,
		    "no such message");
	} else {
		status = status_states[i].status;
		if (rc == PUBRELAY_PARKED) {
			/* The reason may be empty, not gone. */
			why = pubrelay_reason(h);
			reason = util_text(why, strlen(why), NULL);
			printf("%s %s: %s\n", status_states[i].word, id, reason);
			free(reason);
		} else
			printf("%s %s\n", status_states[i].word, id);
		if (client_flush() != EX_OK)
			status = EX_IOERR;
	}
	pubrelay_close(h);
	return status;
}


static int
cmd_dead(int argc, char **argv)
{
	if (argc < 2 || strcmp(argv[1], "-h") == 0 ||
	    strcmp(argv[1], "--help") == 0) {
		if (argc >= 2)
			usage(stdout, EX_OK);
		client_warnx("dead: want list, retry or purge");
		usage(stderr, EX_USAGE);
	}
	if (strcmp(argv[1], "list") == 0)
		return cmd_dead_list(argc - 1, argv + 1);
	if (strcmp(argv[1], "retry") == 0)
		return cmd_dead_move(argc - 1, argv + 1, "RETRY", "replayed");
	if (strcmp(argv[1], "purge") == 0)
		return cmd_dead_move(argc - 1, argv + 1, "PURGE", "purged");
	client_warnx("dead %s: unknown subcommand (want list, retry or purge)",
	    argv[1]);
	usage(stderr, EX_USAGE);
}

int
main(int argc, char **argv)
{
	static const struct option longopts[] = {
		{ "help",	no_argument,	   NULL, 'h' },
		{ "socket",	required_argument, NULL, 's' },
		{ "timeout",	required_argument, NULL, 't' },
		{ "version",	no_argument,	   NULL, 'V' },
		{ NULL,		0,		   NULL, 0 }
	};
	const char	*timeout = CLIENT_DEFAULT_TIMEOUT;
	int		 ch, fd;

	/*
	 * A closed standard descriptor would be taken by the socket: the
	 * client would read its own connection as input, or write ids into
	 * it as requests.  Closed ones become /dev/null.
	 */
	for (fd = 0; fd <= 2; fd++)
		if (fcntl(fd, F_GETFD) == -1 && errno == EBADF) {
			if (open("/dev/null", fd == 0 ? O_RDONLY : O_WRONLY) !=
			    fd)
				return EX_OSERR;
			if (fd == STDIN_FILENO)
				client_stdin_closed = 1;
		}

	if ((client_socket = getenv("PUBRELAY_SOCKET")) == NULL ||
	    *client_socket == '\0')
		client_socket = PUBRELAY_SOCKET_PATH;

	/* "+": stop at the command; its options are its own. */
	opterr = 0;
	while ((ch = getopt_long(argc, argv, MAIN_OPTS, longopts,
	    NULL)) != -1) {
		switch (ch) {
		case 'h':
			usage(stdout, EX_OK);
		case 's':
			/* connect(2) would take "" as an abstract name. */
			if (*optarg == '\0') {
				client_warnx("-s: empty socket path");
				usage(stderr, EX_USAGE);
			}
			client_socket = optarg;
			break;
		case 't':
			timeout = optarg;
			break;
		case 'V':
			printf("pubrelay %s\n", PACKAGE_VERSION);
			return client_flush();
		default:
			opt_error(ch, argc, argv, MAIN_OPTS);
		}
	}
	argc -= optind;
	argv += optind;

	if (util_parse_duration_ms(timeout, &client_timeout_ms) == -1) {
		client_warnx("-t %s: want a duration such as 30, 500ms or 2m",
		    timeout);
		usage(stderr, EX_USAGE);
	}
	/* Larger ones would wrap in the deadline arithmetic. */
	if (client_timeout_ms > CLIENT_TIMEOUT_MAX_MS) {
		client_warnx("-t %s: at most 8760h (a year); 0 waits for ever",
		    timeout);
		usage(stderr, EX_USAGE);
	}
	if (argc == 0) {
		client_warnx("no command");
		usage(stderr, EX_USAGE);
	}
	if (strcmp(argv[0], "publish") == 0)
		return cmd_publish(argc, argv);
	if (strcmp(argv[0], "ping") == 0)
		return cmd_ping(argc, argv);
	if (strcmp(argv[0], "stats") == 0)
		return cmd_stats(argc, argv);
	if (strcmp(argv[0], "dead") == 0)
		return cmd_dead(argc, argv);
	if (strcmp(argv[0], "wait") == 0)
		return cmd_wait(argc, argv);
	if (strcmp(argv[0], "status") == 0)
		return cmd_status(argc, argv);
	if (strcmp(argv[0], "top") == 0)
		return top_cmd(client_socket, client_timeout_ms, argc, argv);
	client_warnx("%s: unknown command", argv[0]);
	usage(stderr, EX_USAGE);
}
