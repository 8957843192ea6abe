/*
 * pubrelay.c: the command-line client.  It speaks only the socket protocol of
 * protocol.h and builds every PUB with the daemon's own encoder, so what the
 * client sends is by construction what the daemon parses.
 */
#ifdef HAVE_CONFIG_H
/* autoconf's, from the build directory: "config.h" would find src/config.h. */
#include <config.h>
#endif

#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>

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
#include <strings.h>
#include <sysexits.h>
#include <time.h>
#include <unistd.h>

#include "metrics.h"
#include "protocol.h"
#include "statsfmt.h"
#include "util.h"

#ifndef PUBRELAY_SOCKET_PATH
#define PUBRELAY_SOCKET_PATH	"/run/pubrelay/pubrelay.sock"
#endif

#define CLIENT_DEFAULT_TIMEOUT	"30"		/* -t, seconds */
#define CLIENT_MAX_OUTSTANDING	4096		/* PUBs not yet answered */
#define CLIENT_OUT_HIGH		(256 * 1024)	/* encoded, not yet sent */
#define CLIENT_CHUNK		65536		/* one read() of standard input */
#define CLIENT_RCHUNK		4096		/* room for one recv() on the heap */
#define CLIENT_RMIN		512		/* least room for one recv() */
/*
 * A one-shot run's buffers start on the stack (buf_init_on()): the heap's
 * first allocations cost a one-message process more than its round trip
 * (page faults, and mmap()s for the allocator's groups).  Bigger requests,
 * replies and standard input move to the heap as they grow.
 */
#define CLIENT_FIRST_OUT	2048		/* a request: header and body */
#define CLIENT_FIRST_IN		1024		/* a reply, or stdin's first read */
#define CLIENT_MAX_REPLY	PROTO_MAX_LINE	/* one reply line */
#define CLIENT_MAX_STATS	(16 * 1024 * 1024)
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
 * ever (WAIT without a timeout).
 */
static int64_t		 client_grace_ms;
#define CLIENT_DEFAULT_CONFIRM	"30s"		/* --confirm without a time */

struct pub_opts {
	struct proto_pub pub;		/* the properties; body per message */
	char		 expiration[24];
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
	int		 fd;
	struct proto_pub *pub;
	int		 lines;
	int		 print_id;
	uint64_t	 confirm_ms;	/* receipts asked for: 0 without */
	const char	*key_prefix;	/* --lines --idempotency-key */

	struct buf	 lin;		/* stdin bytes not yet cut */
	size_t		 lstart;	/* first byte of the next line */
	size_t		 lscan;		/* lin[lstart..lscan) has no '\n' */
	int		 in_eof;	/* read() returned 0 */
	int		 in_done;	/* every message was encoded */
	int		 need_input;

	struct buf	 out;		/* encoded requests */
	size_t		 woff;		/* out[woff..len) not yet sent */
	int		 wdead;
	int		 werrno;

	struct buf	 rin;		/* reply bytes not yet parsed */
	int		 rdead;
	int		 rerrno;

	uint64_t	 nread;		/* messages taken from the input */
	uint64_t	 nsent;		/* requests encoded into out */
	uint64_t	 nreplied;
	uint64_t	 nok;		/* accepted: OK or any receipt */
	uint64_t	 nparked;	/* receipts: the broker refused */
	uint64_t	 nunconfirmed;	/* receipts: TIMEOUT */

	int		 stopped;	/* encode nothing more */
	int		 status;	/* exit status of the first failure */
	char		 why[1024];
	int64_t		 progress;	/* ms: last byte moved on the socket */
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

/*
 * Room for one recv(): all the buffer has, and at least CLIENT_RCHUNK bytes
 * on the heap; in a buffer still on the caller's stack, CLIENT_RMIN will do
 * (one-line replies).  Reserving a whole CLIENT_CHUNK would make a one-line
 * answer a 128 KiB allocation, which the C library serves with an mmap(),
 * a munmap() and their page faults.
 */
static size_t
client_room(struct buf *b)
{
	if (!b->borrowed || b->cap < b->len + 1 + CLIENT_RMIN)
		buf_reserve(b, CLIENT_RCHUNK);
	return b->cap - b->len - 1;
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

/* Whether the len bytes at code are the error code want. */
static int
client_code_is(const char *code, size_t len, const char *want)
{
	return strlen(want) == len && strncmp(code, want, len) == 0;
}

/* Exit status for "ERR <code>": retryable or not is the caller's question. */
static int
client_err_status(const char *code, size_t len)
{
	static const char *tempfail[] = {
		PROTO_E_FULL, PROTO_E_STORE, PROTO_E_SHUTDOWN, PROTO_E_LIMIT,
		PROTO_E_SKIPPED,
	};
	static const char *dataerr[] = {
		PROTO_E_BADREQ, PROTO_E_TOOBIG, PROTO_E_PROTO, PROTO_E_UNKNOWN,
		PROTO_E_NOTFOUND,
	};
	size_t	i;

	if (client_code_is(code, len, PROTO_E_DENIED))
		return EX_NOPERM;
	for (i = 0; i < sizeof(tempfail) / sizeof(tempfail[0]); i++)
		if (client_code_is(code, len, tempfail[i]))
			return EX_TEMPFAIL;
	for (i = 0; i < sizeof(dataerr) / sizeof(dataerr[0]); i++)
		if (client_code_is(code, len, dataerr[i]))
			return EX_DATAERR;
	/* A code this client does not know: a newer daemon, or not a daemon. */
	return EX_PROTOCOL;
}

/* Split "ERR <code> <text>" (without "ERR "); 0 when it is one. */
static int
client_err_split(const char *line, size_t len, size_t *codelen)
{
	size_t	n;

	if (len < 4 || strncmp(line, "ERR ", 4) != 0)
		return -1;
	for (n = 4; n < len && line[n] != ' '; n++)
		;
	if (n == 4)
		return -1;
	*codelen = n - 4;
	return 0;
}

/*
 * A non-blocking connection to the daemon, or an exit status.  The socket is
 * non-blocking from the start so that a full listen backlog is EAGAIN
 * rather than a wait without a deadline: the daemon is busy, not gone, so
 * the connect is tried again, a few milliseconds apart, within -t.
 */
static int
client_connect(int *fdp)
{
	struct sockaddr_un	 sun;
	struct pollfd		 pfd;
	struct stat		 st;
	socklen_t		 sl;
	int			 fd, error, rc, pause_ms = 1, left;
	int64_t			 start = client_now();

	memset(&sun, 0, sizeof(sun));
	sun.sun_family = AF_UNIX;
	if (strlen(client_socket) >= sizeof(sun.sun_path)) {
		client_warnx("%s: socket path too long", client_socket);
		return EX_USAGE;
	}
	strcpy(sun.sun_path, client_socket);

	for (;;) {
		fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC,
		    0);
		if (fd == -1) {
			client_warnx("socket: %s", strerror(errno));
			return EX_OSERR;
		}
		if (connect(fd, (struct sockaddr *)&sun, sizeof(sun)) == 0) {
			*fdp = fd;
			return EX_OK;
		}
		error = errno;
		if (error != EAGAIN || (left = client_wait_ms(start)) == 0)
			break;
		close(fd);
		if (left > 0 && left < pause_ms)
			pause_ms = left;
		poll(NULL, 0, pause_ms);
		if (pause_ms < 32)
			pause_ms *= 2;
	}
	if (error == EINPROGRESS) {
		pfd.fd = fd;
		pfd.events = POLLOUT;
		do {
			rc = poll(&pfd, 1, client_wait_ms(start));
		} while (rc == -1 && errno == EINTR);
		sl = sizeof(error);
		if (rc == 1 && getsockopt(fd, SOL_SOCKET, SO_ERROR, &error,
		    &sl) == 0 && error == 0) {
			*fdp = fd;
			return EX_OK;
		}
		if (rc == 0)
			error = ETIMEDOUT;
		else if (rc == -1)
			error = errno;
	}
	close(fd);
	/*
	 * A file that is not a socket, or a path through one, stays so: no
	 * daemon can listen there, and waiting for one would be in vain.
	 */
	if (error == ECONNREFUSED && stat(client_socket, &st) == 0 &&
	    !S_ISSOCK(st.st_mode)) {
		client_warnx("%s: not a socket", client_socket);
		return EX_OSFILE;
	}
	client_warnx("cannot connect to %s: %s%s", client_socket,
	    strerror(error), error == EAGAIN ? " (daemon busy)" : "");
	if (error == ENOTDIR || error == EPROTOTYPE)
		return EX_OSFILE;
	/* Retrying will not fix permissions; everything else may pass. */
	if (error == EACCES || error == EPERM)
		return EX_NOPERM;
	return EX_TEMPFAIL;
}

/*
 * A failure: the first one decides the exit status and the message, and any
 * failure stops encoding new requests.
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

static void
pub_encode(struct pub_run *r, const char *body, size_t len)
{
	char	err[256], label[64], key[PROTO_SHORTSTR_MAX + 1];
	size_t	mark = r->out.len;

	r->nread++;
	r->pub->body.p = body;
	r->pub->body.len = len;
	if (r->key_prefix != NULL) {
		snprintf(key, sizeof(key), "%s:%llu", r->key_prefix,
		    (unsigned long long)r->nread);
		r->pub->idempotency_key.p = key;
		r->pub->idempotency_key.len = strlen(key);
	}
	if (proto_encode_pub(&r->out, r->pub, err, sizeof(err)) == -1) {
		r->out.len = mark;
		pub_label(r, r->nread, label, sizeof(label));
		pub_fail(r, EX_DATAERR, "%s cannot be sent: %s", label, err);
		return;
	}
	r->nsent++;
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

/*
 * Encode while both the number of unanswered requests and the bytes waiting
 * for the socket stay bounded; stdin is read only as far as that allows.
 */
static void
pub_fill(struct pub_run *r)
{
	const char	*line;
	size_t		 len;
	int		 rc;

	r->need_input = 0;
	while (!r->stopped && !r->in_done &&
	    r->nsent - r->nreplied < CLIENT_MAX_OUTSTANDING &&
	    r->out.len - r->woff < CLIENT_OUT_HIGH) {
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
		pub_encode(r, line, len);
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

static void
pub_write(struct pub_run *r)
{
	ssize_t	n;

	n = send(r->fd, r->out.data + r->woff, r->out.len - r->woff,
	    MSG_NOSIGNAL);
	if (n == -1) {
		if (errno == EINTR || errno == EAGAIN || errno == EWOULDBLOCK)
			return;
		/* Replies already sent to us may still wait to be read. */
		r->wdead = 1;
		r->werrno = errno;
		r->stopped = 1;
		return;
	}
	r->progress = client_now();
	r->woff += (size_t)n;
	if (r->woff == r->out.len)
		r->out.len = r->woff = 0;
	else if (r->woff >= CLIENT_OUT_HIGH / 2 &&
	    r->woff >= r->out.len - r->woff) {
		/* Only once half is sent, so moving costs less than sending. */
		memmove(r->out.data, r->out.data + r->woff,
		    r->out.len - r->woff);
		r->out.len -= r->woff;
		r->woff = 0;
	}
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
 * Which reply line is, and the length of the id after its word (all the
 * rest of the line; PARKED is cut later).  A bare "OK" is an OK without an
 * id, reported as such.
 */
static enum pub_reply_kind
pub_reply_kind(const char *line, size_t len, size_t *idlen)
{
	size_t	i;

	*idlen = 0;
	if (len == 2 && strncmp(line, "OK", 2) == 0)
		return PUB_R_OK;
	for (i = 0; i < PUB_R_NONE; i++) {
		if (len >= pub_reply_words[i].len &&
		    strncmp(line, pub_reply_words[i].word,
		    pub_reply_words[i].len) == 0) {
			*idlen = len - pub_reply_words[i].len;
			return (enum pub_reply_kind)i;
		}
	}
	return PUB_R_NONE;
}

/*
 * The id in "PARKED <id> <reason>": up to the first space, or the
 * --message-id given when the line starts with it (an id of ours may hold
 * spaces; a daemon's never does).
 */
static size_t
pub_parked_idlen(const struct pub_run *r, const char *p, size_t n)
{
	const struct proto_str	*mid = &r->pub->message_id;
	const char		*sp;

	if (mid->p != NULL && mid->len < n && memcmp(p, mid->p, mid->len) == 0
	    && p[mid->len] == ' ')
		return mid->len;
	if ((sp = memchr(p, ' ', n)) == NULL)
		return 0;	/* no reason: not a PARKED line */
	return (size_t)(sp - p);
}

/* A receipt other than CONFIRMED: said at once, for each message. */
static void
pub_receipt_report(struct pub_run *r, enum pub_reply_kind kind,
    const char *id, const char *rest, size_t restlen)
{
	char	where[48], within[32], *reason;

	where[0] = '\0';
	if (r->lines)
		snprintf(where, sizeof(where), " (line %llu)",
		    (unsigned long long)r->nreplied);
	if (kind == PUB_R_PARKED) {
		r->nparked++;
		/* rest is " <reason>": the space is checked above. */
		reason = util_text(rest + 1, restlen - 1, NULL);
		client_warnx("%s%s parked: %s", id, where, reason);
		free(reason);
	} else {
		r->nunconfirmed++;
		client_ms_str(r->confirm_ms, within, sizeof(within));
		client_warnx("%s%s not confirmed within %s; it stays queued "
		    "and will be delivered", id, where, within);
	}
}

static void
pub_reply(struct pub_run *r, const char *line, size_t len)
{
	char			 text[512], label[64], *id;
	const char		*idp;
	size_t			 codelen, idlen;
	enum pub_reply_kind	 kind;

	if (len > 0 && line[len - 1] == '\r')
		len--;
	if (r->nreplied >= r->nsent) {
		/*
		 * LIMIT and DENIED come right after connecting, before any
		 * request (with --lines, before the first line was read).
		 */
		if (client_err_split(line, len, &codelen) == 0 &&
		    (client_code_is(line + 4, codelen, PROTO_E_LIMIT) ||
		    client_code_is(line + 4, codelen, PROTO_E_DENIED))) {
			client_clean(text, sizeof(text), line + 4, len - 4);
			pub_fail(r, client_err_status(line + 4, codelen),
			    "connection refused: %s", text);
			r->rdead = 1;
			return;
		}
		client_clean(text, sizeof(text), line, len);
		pub_fail(r, EX_PROTOCOL, "reply without a request: \"%s\"",
		    text);
		r->rdead = 1;
		return;
	}
	r->nreplied++;
	kind = pub_reply_kind(line, len, &idlen);
	/* A daemon that ignored confirm: would be no receipt at all. */
	if (kind != PUB_R_NONE && (kind == PUB_R_OK) != (r->confirm_ms == 0)) {
		client_clean(text, sizeof(text), line, len);
		pub_fail(r, EX_PROTOCOL, "unexpected reply to a PUB %s "
		    "confirm: \"%s\"", r->confirm_ms ? "with" : "without",
		    text);
		r->rdead = 1;
		return;
	}
	if (kind != PUB_R_NONE) {
		idp = line + pub_reply_words[kind].len;
		/* The id is a property value: 1 to 255 bytes, no NUL. */
		if (kind == PUB_R_PARKED)
			idlen = pub_parked_idlen(r, idp,
			    len - pub_reply_words[kind].len);
		if (idlen == 0 || idlen > PROTO_SHORTSTR_MAX ||
		    memchr(idp, '\0', idlen) != NULL) {
			client_clean(text, sizeof(text), line, len);
			pub_label(r, r->nreplied, label, sizeof(label));
			pub_fail(r, EX_PROTOCOL, "%s: reply without a valid "
			    "message-id: \"%s\"", label, text);
			r->rdead = 1;
			return;
		}
		r->nok++;
		/* Often a terminal: no escape sequences from an id. */
		id = util_text(idp, idlen, NULL);
		if (r->print_id)
			puts(id);
		if (kind == PUB_R_PARKED || kind == PUB_R_TIMEOUT)
			pub_receipt_report(r, kind, id, idp + idlen,
			    (size_t)(line + len - (idp + idlen)));
		free(id);
		return;
	}
	if (client_err_split(line, len, &codelen) == 0) {
		client_clean(text, sizeof(text), line + 4, len - 4);
		pub_label(r, r->nreplied, label, sizeof(label));
		pub_fail(r, client_err_status(line + 4, codelen),
		    "%s refused: %s", label, text);
		return;
	}
	client_clean(text, sizeof(text), line, len);
	pub_fail(r, EX_PROTOCOL, "unexpected reply: \"%s\"", text);
	r->rdead = 1;
}

static void
pub_read(struct pub_run *r)
{
	ssize_t	 n;
	size_t	 start = 0;
	char	*nl;

	n = recv(r->fd, r->rin.data + r->rin.len, client_room(&r->rin), 0);
	if (n == -1) {
		if (errno == EINTR || errno == EAGAIN || errno == EWOULDBLOCK)
			return;
		r->rdead = 1;
		r->rerrno = errno;
		return;
	}
	if (n == 0) {
		r->rdead = 1;
		return;
	}
	r->progress = client_now();
	r->rin.len += (size_t)n;
	while (!r->rdead && (nl = memchr(r->rin.data + start, '\n',
	    r->rin.len - start)) != NULL) {
		pub_reply(r, r->rin.data + start,
		    (size_t)(nl - (r->rin.data + start)));
		start = (size_t)(nl - r->rin.data) + 1;
	}
	memmove(r->rin.data, r->rin.data + start, r->rin.len - start);
	r->rin.len -= start;
	if (!r->rdead && r->rin.len > CLIENT_MAX_REPLY) {
		pub_fail(r, EX_PROTOCOL, "reply line longer than %d bytes",
		    CLIENT_MAX_REPLY);
		r->rdead = 1;
	}
}

/* Done when every request sent is answered and nothing more will be sent. */
static int
pub_finished(const struct pub_run *r)
{
	if (r->rdead)
		return 1;
	if (r->nreplied < r->nsent)
		return 0;
	/*
	 * After a refusal, unsent bytes can only be the rest of a body
	 * already answered (TOOBIG comes before the body ends).
	 */
	if (r->stopped)
		return 1;
	return r->in_done && r->woff == r->out.len;
}

static void
pub_loop(struct pub_run *r)
{
	struct pollfd	pfd[2];
	nfds_t		nfds;
	int		rc, waiting, wait_ms;
	char		tstr[32];

	r->progress = client_now();
	for (;;) {
		pub_fill(r);
		if (pub_finished(r))
			break;

		/* The clock runs only while the daemon owes us something. */
		waiting = r->nreplied < r->nsent ||
		    (!r->wdead && r->woff < r->out.len);
		if (waiting && client_expired(r->progress)) {
			client_timeout_str(tstr, sizeof(tstr));
			pub_fail(r, EX_TEMPFAIL, "no progress from %s in %s",
			    client_socket, tstr);
			break;
		}
		wait_ms = waiting ? client_wait_ms(r->progress) : -1;

		pfd[0].fd = r->fd;
		pfd[0].events = POLLIN;
		if (!r->wdead && r->woff < r->out.len)
			pfd[0].events |= POLLOUT;
		pfd[0].revents = 0;
		nfds = 1;
		if (r->need_input) {
			pfd[1].fd = STDIN_FILENO;
			pfd[1].events = POLLIN;
			pfd[1].revents = 0;
			nfds = 2;
		}
		rc = poll(pfd, nfds, wait_ms);
		if (rc == -1) {
			if (errno == EINTR)
				continue;
			pub_fail(r, EX_OSERR, "poll: %s", strerror(errno));
			break;
		}
		/* Waiting for stdin is no part of the daemon's time. */
		if (!waiting)
			r->progress = client_now();
		if (rc == 0)
			continue;	/* the expiry check above decides */
		if ((pfd[0].revents & (POLLOUT | POLLERR | POLLHUP)) &&
		    !r->wdead && r->woff < r->out.len)
			pub_write(r);
		if (pfd[0].revents & (POLLIN | POLLERR | POLLHUP)) {
			pub_read(r);
			/* Ids reach a pipeline as they come, not at exit. */
			if (r->print_id)
				fflush(stdout);
		}
		if (nfds == 2 && (pfd[1].revents & (POLLIN | POLLERR |
		    POLLHUP | POLLNVAL)))
			pub_read_input(r);
	}
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
	int	error;

	if (r->status == EX_OK && (r->nreplied < r->nsent || !r->in_done)) {
		error = r->rerrno != 0 ? r->rerrno : r->werrno;
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

static int
pub_run(struct pub_opts *o, const char *body)
{
	struct pub_run	 r;
	struct buf	 in;
	char		 err[256];
	char		 first_out[CLIENT_FIRST_OUT], first_rin[CLIENT_FIRST_IN];
	char		 first_in[CLIENT_FIRST_IN];
	int		 status;

	memset(&r, 0, sizeof(r));
	r.fd = -1;
	r.pub = &o->pub;
	r.lines = o->lines;
	r.print_id = o->print_id;
	r.confirm_ms = o->pub.confirm_ms;
	/* The daemon holds each reply until the receipt: up to that long. */
	client_grace_ms = (int64_t)o->pub.confirm_ms;
	if (o->lines)
		r.key_prefix = o->key;
	buf_init(&r.lin);
	buf_init_on(&r.out, first_out, sizeof(first_out));
	/* --lines takes replies in bulk: recv() them into a whole chunk. */
	if (o->lines)
		buf_init(&r.rin);
	else
		buf_init_on(&r.rin, first_rin, sizeof(first_rin));

	/*
	 * A property that cannot be encoded fails the same for every
	 * message: say so before connecting or reading anything.
	 */
	o->pub.body.p = "";
	o->pub.body.len = 0;
	if (proto_encode_pub(&r.out, &o->pub, err, sizeof(err)) == -1) {
		client_warnx("cannot send: %s", err);
		status = EX_DATAERR;
		goto done;
	}
	buf_reset(&r.out);

	if (!o->lines) {
		/*
		 * The whole body comes first: a daemon should not wait on
		 * our stdin with a connection open.
		 */
		buf_init_on(&in, first_in, sizeof(first_in));
		if (body == NULL && (status = pub_slurp(&in)) != EX_OK) {
			buf_free(&in);
			goto done;
		}
		if (body != NULL)
			pub_encode(&r, body, strlen(body));
		else
			pub_encode(&r, in.data != NULL ? in.data : "", in.len);
		buf_free(&in);
		r.in_done = 1;
		if (r.status != EX_OK) {
			client_warnx("%s", r.why);
			status = r.status;
			goto done;
		}
	}

	if ((status = client_connect(&r.fd)) != EX_OK)
		goto done;
	pub_loop(&r);
	status = pub_report(&r);
	close(r.fd);
done:
	buf_free(&r.lin);
	buf_free(&r.out);
	buf_free(&r.rin);
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
"      [--print-id] [--confirm[=timeout]] [body]\n"
"  pubrelay ping\n"
"  pubrelay stats [--json | --prometheus | --raw]\n"
"  pubrelay dead list [--max n] [--after id] [--raw]\n"
"  pubrelay dead retry id | --all\n"
"  pubrelay dead purge id | --all\n"
"  pubrelay wait [--timeout timeout]\n"
"  pubrelay status message-id\n"
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

static void
opt_str(struct proto_str *s, const char *arg)
{
	s->p = arg;
	s->len = strlen(arg);
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
	struct proto_header	*h;
	const char		*eq;
	uint64_t		 v;
	int			 ch, have_key = 0;

	memset(&o, 0, sizeof(o));
	proto_pub_init(&o.pub);
	optind = 1;
	opterr = 0;
	while ((ch = getopt_long(argc, argv, PUBLISH_OPTS, longopts,
	    NULL)) != -1) {
		switch (ch) {
		case 'e':
			opt_str(&o.pub.exchange, optarg);
			break;
		case 'k':
			opt_str(&o.pub.routing_key, optarg);
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
			if (o.pub.nheaders == PROTO_MAX_HEADERS) {
				client_warnx("more than %d --header options",
				    PROTO_MAX_HEADERS);
				usage(stderr, EX_USAGE);
			}
			h = &o.pub.headers[o.pub.nheaders++];
			h->name.p = optarg;
			h->name.len = (size_t)(eq - optarg);
			opt_str(&h->value, eq + 1);
			break;
		case OPT_CTYPE:
			opt_str(&o.pub.content_type, optarg);
			break;
		case OPT_CENC:
			opt_str(&o.pub.content_encoding, optarg);
			break;
		case OPT_MESSAGE_ID:
			opt_str(&o.pub.message_id, optarg);
			break;
		case OPT_CORR_ID:
			opt_str(&o.pub.correlation_id, optarg);
			break;
		case OPT_REPLY_TO:
			opt_str(&o.pub.reply_to, optarg);
			break;
		case OPT_EXPIRATION:
			if (util_parse_u64(optarg, 0, UINT64_MAX, &v) == -1) {
				client_warnx("--expiration %s: want "
				    "milliseconds", optarg);
				usage(stderr, EX_USAGE);
			}
			snprintf(o.expiration, sizeof(o.expiration), "%llu",
			    (unsigned long long)v);
			opt_str(&o.pub.expiration, o.expiration);
			break;
		case OPT_PRIORITY:
			if (util_parse_u64(optarg, 0, 255, &v) == -1) {
				client_warnx("--priority %s: want 0 to 255",
				    optarg);
				usage(stderr, EX_USAGE);
			}
			o.pub.priority = (int)v;
			break;
		case OPT_TYPE:
			opt_str(&o.pub.type, optarg);
			break;
		case OPT_APP_ID:
			opt_str(&o.pub.app_id, optarg);
			break;
		case OPT_IDEM_KEY:
			o.key = optarg;
			break;
		case OPT_TRANSIENT:
			o.pub.delivery_mode = 1;
			break;
		case OPT_MANDATORY:
			o.pub.mandatory = 1;
			break;
		case OPT_LINES:
			o.lines = 1;
			break;
		case OPT_PRINT_ID:
			o.print_id = 1;
			break;
		case OPT_CONFIRM:
			o.pub.confirm_ms = (unsigned)opt_receipt_ms("--confirm",
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
	if (o.key != NULL && !o.lines)
		opt_str(&o.pub.idempotency_key, o.key);
	/* One id for many messages would make consumers drop all but one. */
	if (o.lines && o.pub.message_id.p != NULL) {
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
 * Send all of req, waiting at most the timeout between bytes.  When the
 * daemon has closed the connection (EPIPE, ECONNRESET) nothing is printed
 * and -1 is returned with errno set: it may have answered before it closed
 * (ERR LIMIT or ERR DENIED on connecting), and that answer is the one to
 * report.
 */
static int
client_send(int fd, const char *req, size_t len)
{
	struct pollfd	pfd;
	ssize_t		n;
	int64_t		since = client_now();
	char		tstr[32];

	while (len > 0) {
		n = send(fd, req, len, MSG_NOSIGNAL);
		if (n > 0) {
			req += n;
			len -= (size_t)n;
			since = client_now();
			continue;
		}
		if (n == -1 && (errno == EPIPE || errno == ECONNRESET))
			return -1;
		if (n == -1 && errno != EINTR && errno != EAGAIN &&
		    errno != EWOULDBLOCK) {
			client_warnx("%s: %s", client_socket, strerror(errno));
			return EX_TEMPFAIL;
		}
		if (client_expired(since)) {
			client_timeout_str(tstr, sizeof(tstr));
			client_warnx("no progress from %s in %s",
			    client_socket, tstr);
			return EX_TEMPFAIL;
		}
		pfd.fd = fd;
		pfd.events = POLLOUT;
		if (poll(&pfd, 1, client_wait_ms(since)) == -1 &&
		    errno != EINTR) {
			client_warnx("poll: %s", strerror(errno));
			return EX_OSERR;
		}
	}
	return EX_OK;
}

/* Read until in holds at least want bytes (or, want == 0, a whole line). */
static int
client_recv(int fd, struct buf *in, size_t want)
{
	struct pollfd	pfd;
	ssize_t		n;
	int64_t		since = client_now();
	char		tstr[32];

	for (;;) {
		if (want == 0 ? in->len > 0 &&
		    memchr(in->data, '\n', in->len) != NULL : in->len >= want)
			return EX_OK;
		if (want == 0 && in->len > CLIENT_MAX_REPLY) {
			client_warnx("reply line longer than %d bytes",
			    CLIENT_MAX_REPLY);
			return EX_PROTOCOL;
		}
		n = recv(fd, in->data + in->len, client_room(in), 0);
		if (n > 0) {
			in->len += (size_t)n;
			since = client_now();
			continue;
		}
		if (n == 0) {
			client_warnx("connection to %s lost", client_socket);
			return EX_TEMPFAIL;
		}
		if (errno != EINTR && errno != EAGAIN && errno != EWOULDBLOCK) {
			client_warnx("connection to %s lost: %s",
			    client_socket, strerror(errno));
			return EX_TEMPFAIL;
		}
		if (client_expired(since)) {
			client_timeout_str(tstr, sizeof(tstr));
			client_warnx("no reply from %s in %s", client_socket,
			    tstr);
			return EX_TEMPFAIL;
		}
		pfd.fd = fd;
		pfd.events = POLLIN;
		if (poll(&pfd, 1, client_wait_ms(since)) == -1 &&
		    errno != EINTR) {
			client_warnx("poll: %s", strerror(errno));
			return EX_OSERR;
		}
	}
}

/*
 * After a send the daemon cut short: whether a whole line it sent before
 * closing is waiting to be read (into in).  The peer is gone, so nothing
 * more can arrive: no waiting.
 */
static int
client_recv_left(int fd, struct buf *in)
{
	ssize_t	n;

	while (in->len <= CLIENT_MAX_REPLY && (in->len == 0 ||
	    memchr(in->data, '\n', in->len) == NULL)) {
		n = recv(fd, in->data + in->len, client_room(in), MSG_DONTWAIT);
		if (n > 0)
			in->len += (size_t)n;
		else if (n == -1 && errno == EINTR)
			continue;
		else
			return 0;
	}
	return in->len > 0 && memchr(in->data, '\n', in->len) != NULL;
}

/*
 * Send one request (on *fdp, or a new connection when it is -1) and read
 * the first line of its reply.  On success *line
 * points into in, NUL-terminated, "\r\n" stripped, and *used is the bytes it
 * took.  An "ERR" reply is reported here: with notfound set (the DEAD
 * commands), NOTFOUND prints that instead of the daemon's text and every
 * code keeps its own exit status.
 */
static int
client_request(const char *cmd, const char *req, struct buf *in, int *fdp,
    char **line, size_t *used, const char *notfound)
{
	char	*nl, text[512];
	size_t	 len, codelen;
	int	 status, werr;

	/* The connection of an earlier request (dead list pages), or one. */
	if (*fdp == -1 && (status = client_connect(fdp)) != EX_OK)
		return status;
	if ((status = client_send(*fdp, req, strlen(req))) == -1) {
		werr = errno;
		if (!client_recv_left(*fdp, in)) {
			client_warnx("connection to %s lost: %s", client_socket,
			    strerror(werr));
			return EX_TEMPFAIL;
		}
	} else if (status != EX_OK ||
	    (status = client_recv(*fdp, in, 0)) != EX_OK)
		return status;
	nl = memchr(in->data, '\n', in->len);
	*used = (size_t)(nl - in->data) + 1;
	len = (size_t)(nl - in->data);
	if (len > 0 && in->data[len - 1] == '\r')
		len--;
	/* The callers see a C string: "PONG\0junk" must not pass as PONG. */
	if (memchr(in->data, '\0', len) != NULL) {
		client_clean(text, sizeof(text), in->data, len);
		client_warnx("unexpected reply to %s: \"%s\"", cmd, text);
		return EX_PROTOCOL;
	}
	in->data[len] = '\0';
	*line = in->data;
	if (client_err_split(in->data, len, &codelen) == 0) {
		status = client_err_status(in->data + 4, codelen);
		if (notfound != NULL &&
		    client_code_is(in->data + 4, codelen, PROTO_E_NOTFOUND)) {
			client_warnx("%s: %s", cmd, notfound);
			return status;
		}
		client_clean(text, sizeof(text), in->data + 4, len - 4);
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
	return EX_OK;
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
	struct buf	 in;
	char		*line, text[512], first_in[CLIENT_FIRST_IN];
	size_t		 used;
	int		 fd = -1, status, unused = 0;

	cmd_opts("ping", argc, argv, HELP_OPTS, longopts, &unused);
	buf_init_on(&in, first_in, sizeof(first_in));
	status = client_request("ping", "PING\n", &in, &fd, &line, &used,
	    NULL);
	if (status == EX_OK) {
		if (strcasecmp(line, "PONG") == 0)
			puts("PONG");
		else {
			client_clean(text, sizeof(text), line, strlen(line));
			client_warnx("unexpected reply to ping: \"%s\"", text);
			status = EX_PROTOCOL;
		}
	}
	if (fd != -1)
		close(fd);
	buf_free(&in);
	if (status == EX_OK && (fflush(stdout) == EOF || ferror(stdout))) {
		client_warnx("standard output: %s", strerror(errno));
		status = EX_IOERR;
	}
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
	struct buf		 in, out;
	char			*line, text[512];
	size_t			 used;
	uint64_t		 n = 0;
	int			 fd = -1, status, ch, fmt = STATS_TABLE, f;

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

	buf_init(&in);
	status = client_request("stats", "STATS\n", &in, &fd, &line,
	    &used, NULL);
	if (status == EX_OK && (strncasecmp(line, "STATS ", 6) != 0 ||
	    util_parse_u64(line + 6, 0, CLIENT_MAX_STATS, &n) == -1)) {
		client_clean(text, sizeof(text), line, strlen(line));
		client_warnx("unexpected reply to stats: \"%s\"", text);
		status = EX_PROTOCOL;
	}
	if (status == EX_OK)
		status = client_recv(fd, &in, used + (size_t)n);
	if (fd != -1)
		close(fd);
	buf_init(&out);
	if (status == EX_OK) {
		switch (fmt) {
		case STATS_RAW:
			buf_append(&out, in.data + used, (size_t)n);
			break;
		case STATS_JSON:
			statsfmt_json(&out, in.data + used, (size_t)n);
			break;
		case STATS_PROMETHEUS:
			statsfmt_prometheus(&out, in.data + used, (size_t)n);
			break;
		default:
			statsfmt_table(&out, in.data + used, (size_t)n);
			break;
		}
	} else if (fmt == STATS_PROMETHEUS && status != EX_USAGE)
		/* The scrape still says the daemon is down; the status too. */
		statsfmt_prometheus_down(&out);
	if (out.len > 0)
		fwrite(out.data, 1, out.len, stdout);
	buf_free(&out);
	buf_free(&in);
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

/* The DEAD LIST body as a table; -1 when a line is not 8 fields. */
static int
dead_table(const char *p, size_t len)
{
	struct dead_row	*rows = NULL;
	const char	*end = p + len, *eol, *q, *tab;
	char		 tmp[64];
	size_t		 nrows = 0, i;
	int		 width[DEAD_FIELDS], j, rc = 0;

	for (j = 0; j < DEAD_FIELDS; j++)
		width[j] = (int)strlen(dead_titles[j]);
	for (q = p; q < end && rc == 0; q = eol + 1) {
		if ((eol = memchr(q, '\n', (size_t)(end - q))) == NULL)
			eol = end;
		rows = xrealloc(rows, (nrows + 1) * sizeof(*rows));
		for (j = 0; j < DEAD_FIELDS; j++) {
			tab = memchr(q, '\t', (size_t)(eol - q));
			if ((tab == NULL) != (j == DEAD_FIELDS - 1)) {
				rc = -1;
				break;
			}
			if (tab == NULL)
				tab = eol;
			if (j == 1) {
				char	ms[32];

				snprintf(ms, sizeof(ms), "%.*s",
				    (int)(tab - q), q);
				dead_time(ms, tmp, sizeof(tmp));
				rows[nrows].field[j] = util_text(tmp,
				    strlen(tmp), &rows[nrows].width[j]);
			} else
				rows[nrows].field[j] = util_text(q,
				    (size_t)(tab - q), &rows[nrows].width[j]);
			if (rows[nrows].width[j] > width[j])
				width[j] = rows[nrows].width[j];
			q = tab + 1;
		}
		if (rc == 0)
			nrows++;
		else
			while (--j >= 0)
				free(rows[nrows].field[j]);
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
		{ "max",	required_argument, NULL, OPT_MAX },
		{ "raw",	no_argument,	   NULL, OPT_RAW },
		{ NULL,		0,		   NULL, 0 }
	};
	struct buf	 in, all;
	char		*line, *page, text[512], req[80];
	size_t		 used, i, nlines, start;
	uint64_t	 n = 0, max = 0, total = 0, want, after = 0;
	int64_t		 last;
	int		 ch, fd = -1, status = EX_OK, raw = 0;

	optind = 1;
	opterr = 0;
	while ((ch = getopt_long(argc, argv, HELP_OPTS, longopts, NULL)) != -1) {
		switch (ch) {
		case 'h':
			usage(stdout, EX_OK);
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

	buf_init(&in);
	buf_init(&all);
	while (status == EX_OK && (max == 0 || total < max)) {
		want = max != 0 && max - total < PROTO_DEAD_LIST_MAX ?
		    max - total : PROTO_DEAD_LIST_MAX;
		snprintf(req, sizeof(req), "DEAD LIST %llu AFTER %llu\n",
		    (unsigned long long)want, (unsigned long long)after);
		buf_reset(&in);
		status = client_request("dead list", req, &in, &fd, &line,
		    &used, "no such dead letter");
		if (status == EX_OK && (strncasecmp(line, "DEAD ", 5) != 0 ||
		    util_parse_u64(line + 5, 0, CLIENT_MAX_DEAD, &n) == -1)) {
			client_clean(text, sizeof(text), line, strlen(line));
			client_warnx("unexpected reply to dead list: \"%s\"",
			    text);
			status = EX_PROTOCOL;
		}
		if (status == EX_OK)
			status = client_recv(fd, &in, used + (size_t)n);
		if (status != EX_OK || n == 0)
			break;
		page = in.data + used;
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
		else if (all.len + n > CLIENT_MAX_DEAD) {
			client_warnx("dead list: over %d MiB of dead letters "
			    "for a table: use --raw, or --max and --after",
			    CLIENT_MAX_DEAD / (1024 * 1024));
			status = EX_SOFTWARE;
		} else
			buf_append(&all, page, (size_t)n);
	}
	if (status == EX_OK && !raw) {
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
	if (fd != -1)
		close(fd);
	buf_free(&in);
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
	struct buf	 in;
	char		*line, text[512], req[64], cmd[32], nf[96];
	size_t		 used;
	uint64_t	 id = 0, n;
	int		 ch, fd = -1, status, all = 0;

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

	if (all)
		snprintf(req, sizeof(req), "DEAD %s ALL\n", verb);
	else
		snprintf(req, sizeof(req), "DEAD %s %llu\n", verb,
		    (unsigned long long)id);
	snprintf(nf, sizeof(nf), "no dead letter with id %llu",
	    (unsigned long long)id);
	buf_init(&in);
	status = client_request(cmd, req, &in, &fd, &line, &used, nf);
	if (status == EX_OK && (strncasecmp(line, "OK ", 3) != 0 ||
	    util_parse_u64(line + 3, 0, UINT64_MAX, &n) == -1)) {
		client_clean(text, sizeof(text), line, strlen(line));
		client_warnx("unexpected reply to %s: \"%s\"", cmd, text);
		status = EX_PROTOCOL;
	}
	if (status == EX_OK) {
		printf("%llu messages %s\n", (unsigned long long)n, done);
		status = client_flush();
	}
	if (fd != -1)
		close(fd);
	buf_free(&in);
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
	struct buf	 in;
	char		*line, first_in[CLIENT_FIRST_IN], req[512], within[32];
	size_t		 used;
	uint64_t	 ms = 0, n;
	int		 ch, fd = -1, status;

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
	if (ms > 0)
		snprintf(req, sizeof(req), "WAIT %llu\n",
		    (unsigned long long)ms);
	else
		snprintf(req, sizeof(req), "WAIT\n");

	buf_init_on(&in, first_in, sizeof(first_in));
	if ((status = client_connect(&fd)) != EX_OK)
		goto done;
	/* Connected: the reply may take the whole wait, for ever without one. */
	client_grace_ms = ms > 0 ? (int64_t)ms : -1;
	status = client_request("wait", req, &in, &fd, &line, &used, NULL);
	if (status != EX_OK)
		goto done;
	client_ms_str(ms, within, sizeof(within));
	if (strcmp(line, "TIMEOUT") == 0) {
		client_warnx("wait: the messages accepted before it were not "
		    "all confirmed within %s; they stay queued", within);
		status = EX_TEMPFAIL;
	} else if (strncmp(line, "OK ", 3) != 0 ||
	    util_parse_u64(line + 3, 0, UINT64_MAX, &n) == -1) {
		client_clean(req, sizeof(req), line, strlen(line));
		client_warnx("unexpected reply to wait: \"%s\"", req);
		status = EX_PROTOCOL;
	} else if (n > 0) {
		client_warnx("%llu dead letters among the messages accepted "
		    "before the wait (pubrelay dead list)",
		    (unsigned long long)n);
		status = EX_DATAERR;
	}
done:
	if (fd != -1)
		close(fd);
	buf_free(&in);
	return status;
}

/* What STATUS answers, as printed and as exit status (pubrelay(1)). */
static const struct {
	const char	*reply;		/* the reply's word */
	const char	*word;		/* what status prints */
	int		 status;
} status_states[] = {
	{ "CONFIRMED",	"confirmed",	EX_OK },
	{ "PARKED",	"parked",	EX_DATAERR },
	{ "QUEUED",	"queued",	EX_TEMPFAIL },	/* not yet */
	{ "INFLIGHT",	"inflight",	EX_TEMPFAIL },
	{ "UNKNOWN",	"unknown",	EX_NOINPUT },	/* no such message */
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
	struct buf	 in;
	const char	*id, *why, *p;
	char		*line, *reason, text[512], first_in[CLIENT_FIRST_IN];
	char		 req[PROTO_SHORTSTR_MAX + 16];
	size_t		 used, idlen, wlen, i;
	int		 ch, fd = -1, status;

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
	snprintf(req, sizeof(req), "STATUS %s\n", id);

	buf_init_on(&in, first_in, sizeof(first_in));
	/*
	 * notfound set only so that every ERR code keeps its own status:
	 * the status command's 75 must not also mean a BADREQ.
	 */
	status = client_request("status", req, &in, &fd, &line, &used,
	    "no such message");
	if (status != EX_OK)
		goto done;
	for (i = 0; i < sizeof(status_states) / sizeof(status_states[0]);
	    i++) {
		wlen = strlen(status_states[i].reply);
		if (strncmp(line, status_states[i].reply, wlen) == 0 &&
		    line[wlen] == ' ' &&
		    strncmp(line + wlen + 1, id, idlen) == 0)
			break;
	}
	if (i == sizeof(status_states) / sizeof(status_states[0]))
		goto unexpected;
	p = line + wlen + 1 + idlen;
	status = status_states[i].status;
	if (status == EX_DATAERR) {
		/* "PARKED <id> <reason>": the reason may be empty, not gone. */
		if (*p != ' ')
			goto unexpected;
		reason = util_text(p + 1, strlen(p + 1), NULL);
		printf("%s %s: %s\n", status_states[i].word, id, reason);
		free(reason);
	} else if (*p != '\0')
		goto unexpected;
	else
		printf("%s %s\n", status_states[i].word, id);
	if (client_flush() != EX_OK)
		status = EX_IOERR;
	goto done;
unexpected:
	client_clean(text, sizeof(text), line, strlen(line));
	client_warnx("unexpected reply to status %s: \"%s\"", id, text);
	status = EX_PROTOCOL;
done:
	if (fd != -1)
		close(fd);
	buf_free(&in);
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
	client_warnx("%s: unknown command", argv[0]);
	usage(stderr, EX_USAGE);
}
