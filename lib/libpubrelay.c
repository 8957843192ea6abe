/*
 * libpubrelay.c: the connection half of libpubrelay (pubrelay.h): the
 * socket, the buffers of requests and replies, and the ring of requests
 * whose replies are still owed.  What a reply line means is wire.c's.
 *
 * Requests are encoded into h->out and sent when it holds a batch, or when
 * a reply is needed and none is buffered: a pipelining caller so sends and
 * reads in chunks, as bench/loadgen does, without a syscall per message.
 * While it waits to send, it also reads, so that the daemon never waits on
 * us (pubrelay-protocol(7), PIPELINING: it stops reading a client that
 * leaves max_buffer of replies unread).
 */
#ifdef HAVE_CONFIG_H
#include <config.h>
#endif

#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>

#include <errno.h>
#include <limits.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "pubrelay.h"
#include "wire.h"

#ifndef PUBRELAY_SOCKET_PATH
#define PUBRELAY_SOCKET_PATH	"/run/pubrelay/pubrelay.sock"
#endif

#define LIB_WINDOW_DEFAULT	256		/* requests owed a reply */
#define LIB_WINDOW_MAX		65536
#define LIB_RING_FIRST		8		/* slots before the ring grows */
#define LIB_SEND_BATCH		(64 * 1024)	/* send once this much waits */
#define LIB_OUT_HIGH		(1024 * 1024)	/* wait to send beyond this */
#define LIB_READ_CHUNK		(64 * 1024)	/* room for one recv() */
/*
 * The first recv()'s room: a one-shot program's reply.  Page faults are
 * most of what a short process pays beyond its round trip, so it is not a
 * whole chunk; a second read grows the buffer to one.
 */
#define LIB_FIRST_READ		512
#define LIB_MAX_REPLY		(2 * WIRE_MAX_LINE)	/* one reply line */
#define LIB_HOLD_FOREVER	UINT_MAX	/* WAIT without a time */

struct pubrelay_props {
	struct lib_prop {
		const char	*name;		/* canonical: wire_prop_name() */
		char		*value;
	}		*v;
	size_t		 n;
	char		*block;			/* "name: value\n"..., encoded */
	size_t		 blocklen;
	unsigned	 confirm_ms;		/* 0 without "confirm" */
	const char	*mid;			/* "message-id" when it has blanks */
	char		 err[256];		/* why the last change failed */
};

/* A request owed a reply. */
struct lib_slot {
	unsigned char	 req;		/* enum wire_req */
	unsigned	 hold_ms;	/* the daemon may hold its reply this long */
	char		*mid;		/* PUB's message-id with blanks, or NULL */
};

struct pubrelay {
	int		 fd;		/* -1 once closed */
	int		 timeout_ms;	/* 0: no limit */
	char		 path[sizeof(((struct sockaddr_un *)0)->sun_path)];

	char		*out;		/* requests; out[ooff..olen) unsent */
	size_t		 olen, ooff, ocap;
	char		*in;		/* replies; in[ioff..ilen) unread */
	size_t		 ilen, ioff, icap;
	int		 eof;
	int		 werrno;	/* sending failed: replies may still come */

	struct lib_slot	*ring;		/* ringcap slots, count from head */
	unsigned	 ringcap, window, head, count;

	int		 err;
	int		 syserr;	/* errno for the next lib_fail() */
	char		 errmsg[1024];
	char		 closedmsg[1024];	/* why the connection closed */
	char		 id[WIRE_SHORTSTR_MAX + 1];
	char		*reason;	/* the last PARKED's, NULL before one */
	size_t		 reasoncap;
	char		*stats;		/* STATS text, then a copy cut into */
	size_t		 statslen;	/* strings at its newlines */
	char		*badline;	/* the last reply outside the protocol */
	size_t		 badlen;
};

static int	lib_fail(pubrelay *, int, const char *, ...)
		    __attribute__((format(printf, 3, 4)));

static int64_t
lib_now_ms(void)
{
	struct timespec	ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/*
 * strerror() may fill a static buffer: a library that promises threads
 * their own handles uses strerror_r() into the caller's.
 */
#define LIB_ERRSTR	128
static const char *
lib_strerror(int error, char *buf, size_t len)
{
#if defined(__GLIBC__) && defined(_GNU_SOURCE)
	return strerror_r(error, buf, len);
#else
	if (strerror_r(error, buf, len) != 0)
		snprintf(buf, len, "error %d", error);
	return buf;
#endif
}

/* Milliseconds left of limit since start, for poll(): -1 for no limit. */
static int
lib_left(int64_t start, int64_t limit)
{
	int64_t	left;

	if (limit < 0)
		return -1;
	left = start + limit - lib_now_ms();
	if (left <= 0)
		return 0;
	return left > INT_MAX ? INT_MAX : (int)left;
}

static void
lib_disconnect(pubrelay *h)
{
	unsigned	i;

	if (h->fd != -1) {
		close(h->fd);
		memcpy(h->closedmsg, h->errmsg, sizeof(h->closedmsg));
	}
	h->fd = -1;
	/* The replies still owed will never come. */
	for (i = 0; i < h->count; i++)
		free(h->ring[(h->head + i) % h->ringcap].mid);
	h->count = h->head = 0;
	h->olen = h->ooff = 0;
	h->ilen = h->ioff = 0;
	h->eof = h->werrno = 0;
}

/* Record an error; the ones after which the daemon closes close it here. */
static int
lib_fail(pubrelay *h, int code, const char *fmt, ...)
{
	va_list	ap;
	char	msg[sizeof(h->errmsg)];
	int	syserr = h->syserr;

	/* Into a copy first: an argument may be the last message. */
	h->syserr = 0;
	h->err = code;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	memcpy(h->errmsg, msg, sizeof(msg));
	if (code == PUBRELAY_E_TIMEOUT || code == PUBRELAY_E_CLOSED ||
	    code == PUBRELAY_E_REPLY || code == PUBRELAY_E_SYS ||
	    wire_err_closes(code))
		lib_disconnect(h);
	/* pubrelay.h: the system's word on CONNECT, SYS and CLOSED. */
	if (code == PUBRELAY_E_CONNECT || code == PUBRELAY_E_SYS ||
	    code == PUBRELAY_E_CLOSED)
		errno = syserr;
	return code;
}

/* A call on a closed connection: why it closed, once. */
static int
lib_closed(pubrelay *h)
{
	h->syserr = 0;
	return lib_fail(h, PUBRELAY_E_CLOSED, "not connected%s%s",
	    h->closedmsg[0] != '\0' ? ": " : "", h->closedmsg);
}

/* A connect that waits out a full listen backlog (EAGAIN) within the time. */
static int
lib_connect(pubrelay *h)
{
	struct sockaddr_un	 sun;
	struct pollfd		 pfd;
	struct stat		 st;
	socklen_t		 sl;
	int			 fd, error, rc, pause_ms = 1, left;
	int64_t			 start = lib_now_ms();
	int64_t			 limit = h->timeout_ms > 0 ? h->timeout_ms : -1;
	char			 eb[LIB_ERRSTR];

	memset(&sun, 0, sizeof(sun));
	sun.sun_family = AF_UNIX;
	memcpy(sun.sun_path, h->path, sizeof(sun.sun_path));
	for (;;) {
		fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC,
		    0);
		if (fd == -1) {
			h->syserr = errno;
			return lib_fail(h, PUBRELAY_E_SYS, "socket: %s",
			    lib_strerror(errno, eb, sizeof(eb)));
		}
		if (connect(fd, (struct sockaddr *)&sun, sizeof(sun)) == 0) {
			h->fd = fd;
			return PUBRELAY_OK;
		}
		error = errno;
		if (error != EAGAIN || (left = lib_left(start, limit)) == 0)
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
			rc = poll(&pfd, 1, lib_left(start, limit));
		} while (rc == -1 && errno == EINTR);
		sl = sizeof(error);
		if (rc == 1 && getsockopt(fd, SOL_SOCKET, SO_ERROR, &error,
		    &sl) == 0 && error == 0) {
			h->fd = fd;
			return PUBRELAY_OK;
		}
		error = rc == 0 ? ETIMEDOUT : rc == -1 ? errno : error;
	}
	close(fd);
	/*
	 * A file that is not a socket, or a path through one, stays so: no
	 * daemon can listen there, and waiting for one would be in vain.
	 */
	if (error == ECONNREFUSED && stat(h->path, &st) == 0 &&
	    !S_ISSOCK(st.st_mode)) {
		h->syserr = ENOTSOCK;
		return lib_fail(h, PUBRELAY_E_CONNECT, "%s: not a socket",
		    h->path);
	}
	h->syserr = error;
	return lib_fail(h, PUBRELAY_E_CONNECT, "cannot connect to %s: %s%s",
	    h->path, lib_strerror(error, eb, sizeof(eb)),
	    error == EAGAIN ? " (daemon busy)" : "");
}

pubrelay *
pubrelay_open(const char *path, int timeout_ms)
{
	pubrelay	*h;

	if ((h = calloc(1, sizeof(*h))) == NULL)
		return NULL;
	h->fd = -1;
	h->timeout_ms = timeout_ms > 0 ? timeout_ms : 0;
	h->window = LIB_WINDOW_DEFAULT;
	if (path == NULL && ((path = getenv("PUBRELAY_SOCKET")) == NULL ||
	    *path == '\0'))
		path = PUBRELAY_SOCKET_PATH;
	if (*path == '\0') {
		lib_fail(h, PUBRELAY_E_INVAL, "empty socket path");
		memcpy(h->closedmsg, h->errmsg, sizeof(h->closedmsg));
		return h;
	}
	if (strlen(path) >= sizeof(h->path)) {
		lib_fail(h, PUBRELAY_E_INVAL, "%s: socket path too long", path);
		memcpy(h->closedmsg, h->errmsg, sizeof(h->closedmsg));
		return h;
	}
	strcpy(h->path, path);
	if (lib_connect(h) != PUBRELAY_OK)
		memcpy(h->closedmsg, h->errmsg, sizeof(h->closedmsg));
	return h;
}

void
pubrelay_close(pubrelay *h)
{
	if (h == NULL)
		return;
	lib_disconnect(h);
	free(h->ring);
	free(h->out);
	free(h->in);
	free(h->stats);
	free(h->badline);
	free(h->reason);
	free(h);
}

int
pubrelay_errcode(const pubrelay *h)
{
	return h == NULL ? PUBRELAY_E_NOMEM : h->err;
}

const char *
pubrelay_errmsg(const pubrelay *h)
{
	if (h == NULL)
		return "out of memory";
	return h->err == PUBRELAY_OK ? "" : h->errmsg;
}

const char *
pubrelay_id(const pubrelay *h)
{
	return h->id;
}

const char *
pubrelay_reason(const pubrelay *h)
{
	return h->reason != NULL ? h->reason : "";
}

unsigned
pubrelay_pending(const pubrelay *h)
{
	return h->count;
}

int
pubrelay_fd(const pubrelay *h)
{
	return h->fd;
}

const char *
pubrelay_reply_line(const pubrelay *h, size_t *len)
{
	if (len != NULL)
		*len = h->badline != NULL ? h->badlen : 0;
	return h->badline;
}

int
pubrelay_set_window(pubrelay *h, unsigned window)
{
	if (window == 0 || window > LIB_WINDOW_MAX)
		return lib_fail(h, PUBRELAY_E_INVAL, "window %u: not 1 to %u",
		    window, LIB_WINDOW_MAX);
	if (window < h->count)
		return lib_fail(h, PUBRELAY_E_BUSY, "window %u: %u replies "
		    "still to collect", window, h->count);
	/* The ring grows to it as requests wait (lib_queue()). */
	h->window = window;
	return PUBRELAY_OK;
}

/* ------------------------------------------------------------------ */
/* Properties */

pubrelay_props *
pubrelay_props_new(void)
{
	return calloc(1, sizeof(struct pubrelay_props));
}

void
pubrelay_props_free(pubrelay_props *p)
{
	size_t	i;

	if (p == NULL)
		return;
	for (i = 0; i < p->n; i++)
		free(p->v[i].value);
	free(p->v);
	free(p->block);
	free(p);
}

static int
props_fail(pubrelay_props *p, int code, const char *what, const char *why)
{
	snprintf(p->err, sizeof(p->err), "%s%s%s", what, *why != '\0' ?
	    ": " : "", why);
	return code;
}

/* The block is encoded once per change, not once per message. */
static int
props_encode(pubrelay_props *p)
{
	size_t	 i, n, len = 0;
	char	*b, *w;

	for (i = 0; i < p->n; i++)
		len += strlen(p->v[i].name) + 2 + strlen(p->v[i].value) + 1;
	if (len > WIRE_MAX_BLOCK)
		return props_fail(p, PUBRELAY_E_INVAL, "property block longer "
		    "than 65536 bytes", "");
	if ((b = malloc(len + 1)) == NULL)
		return props_fail(p, PUBRELAY_E_NOMEM, "out of memory", "");
	w = b;
	p->confirm_ms = 0;
	p->mid = NULL;
	for (i = 0; i < p->n; i++) {
		n = strlen(p->v[i].name);
		memcpy(w, p->v[i].name, n);
		memcpy(w + n, ": ", 2);
		w += n + 2;
		n = strlen(p->v[i].value);
		memcpy(w, p->v[i].value, n);
		w[n] = '\n';
		w += n + 1;
		if (strcmp(p->v[i].name, "confirm") == 0)
			p->confirm_ms = (unsigned)strtoul(p->v[i].value, NULL,
			    10);
		if (strcmp(p->v[i].name, "message-id") == 0 &&
		    strchr(p->v[i].value, ' ') != NULL)
			p->mid = p->v[i].value;
	}
	free(p->block);
	p->block = b;
	p->blocklen = len;
	return PUBRELAY_OK;
}

/*
 * Whether p has a header of the name of "NAME=VALUE" already: the daemon
 * would refuse every message with BADREQ.  err: as pubrelayd says it.
 */
static int
props_header_twice(const pubrelay_props *p, const char *hv, char *err,
    size_t errlen)
{
	size_t		 nl = strcspn(hv, "="), i, j;
	const char	*v;

	for (i = 0; i < p->n; i++) {
		v = p->v[i].value;
		if (strcmp(p->v[i].name, "header") != 0 ||
		    strncmp(v, hv, nl) != 0 || v[nl] != '=')
			continue;
		/* Quoted as src/protocol.c's proto_quote() does. */
		j = (size_t)snprintf(err, errlen, "header: \"");
		for (v = hv; v < hv + nl && j + 1 < errlen && v - hv < 60;
		    v++) {
			unsigned char c = (unsigned char)*v;

			err[j++] = c >= 0x20 && c < 0x7f && c != '"' ?
			    (char)c : '?';
		}
		err[j] = '\0';
		snprintf(err + j, errlen - j, "%s\" given twice",
		    v < hv + nl ? "..." : "");
		return 1;
	}
	return 0;
}

int
pubrelay_props_set(pubrelay_props *p, const char *name, const char *value)
{
	const char	*canon;
	struct lib_prop	*nv, *old;
	char		*copy, err[128];
	size_t		 i, j, oldn;
	int		 rc, replace;

	if (p == NULL)
		return PUBRELAY_E_INVAL;
	if (name == NULL || (canon = wire_prop_name(name)) == NULL)
		return props_fail(p, PUBRELAY_E_INVAL, name != NULL ? name :
		    "(null)", "no such property");
	if (value != NULL && wire_prop_check(canon, value, err,
	    sizeof(err)) == -1)
		return props_fail(p, PUBRELAY_E_INVAL, err, "");
	if (value != NULL && strcmp(canon, "confirm") == 0 &&
	    (value[strspn(value, "0123456789")] != '\0' ||
	    strtoul(value, NULL, 10) == 0 ||
	    strtoul(value, NULL, 10) > WIRE_MAX_MS))
		return props_fail(p, PUBRELAY_E_INVAL, canon, "not 1 to "
		    "86400000 milliseconds");
	if (value != NULL && strcmp(canon, "header") == 0 &&
	    props_header_twice(p, value, err, sizeof(err)))
		return props_fail(p, PUBRELAY_E_INVAL, err, "");
	/* The new list beside the old one: a failure leaves p as it was. */
	replace = value == NULL || !wire_prop_repeats(canon);
	if ((nv = malloc((p->n + 1) * sizeof(*nv))) == NULL)
		return props_fail(p, PUBRELAY_E_NOMEM, "out of memory", "");
	copy = NULL;
	if (value != NULL && (copy = strdup(value)) == NULL) {
		free(nv);
		return props_fail(p, PUBRELAY_E_NOMEM, "out of memory", "");
	}
	for (i = j = 0; i < p->n; i++)
		if (!replace || p->v[i].name != canon)
			nv[j++] = p->v[i];
	if (copy != NULL) {
		nv[j].name = canon;
		nv[j++].value = copy;
	}
	old = p->v;
	oldn = p->n;
	p->v = nv;
	p->n = j;
	if ((rc = props_encode(p)) != PUBRELAY_OK) {
		p->v = old;
		p->n = oldn;
		free(nv);
		free(copy);
		return rc;
	}
	for (i = 0; i < oldn; i++)
		if (replace && old[i].name == canon)
			free(old[i].value);
	free(old);
	p->err[0] = '\0';
	return PUBRELAY_OK;
}

const char *
pubrelay_props_errmsg(const pubrelay_props *p)
{
	return p == NULL ? "out of memory" : p->err;
}

int
pubrelay_props_header(pubrelay_props *p, const char *name, const char *value)
{
	char	*hv;
	size_t	 nl, vl;
	int	 rc;

	if (p == NULL)
		return PUBRELAY_E_INVAL;
	if (name == NULL || value == NULL || strchr(name, '=') != NULL)
		return props_fail(p, PUBRELAY_E_INVAL, "header", name == NULL ||
		    value == NULL ? "NULL name or value" : "name contains '='");
	nl = strlen(name);
	vl = strlen(value);
	if ((hv = malloc(nl + vl + 2)) == NULL)
		return props_fail(p, PUBRELAY_E_NOMEM, "out of memory", "");
	memcpy(hv, name, nl);
	hv[nl] = '=';
	memcpy(hv + nl + 1, value, vl + 1);
	rc = pubrelay_props_set(p, "header", hv);
	free(hv);
	return rc;
}

/* ------------------------------------------------------------------ */
/* Buffers and the socket */

static int
lib_reserve(char **buf, size_t *cap, size_t need)
{
	char	*b;
	size_t	 ncap = *cap ? *cap : 512;

	if (need <= *cap)
		return 0;
	while (ncap < need)
		ncap *= 2;
	if ((b = realloc(*buf, ncap)) == NULL)
		return -1;
	*buf = b;
	*cap = ncap;
	return 0;
}

/* Send what out holds, without waiting: 0, or an error (closed). */
static int
lib_send_some(pubrelay *h)
{
	ssize_t	n;

	while (h->ooff < h->olen) {
		n = send(h->fd, h->out + h->ooff, h->olen - h->ooff,
		    MSG_NOSIGNAL | MSG_DONTWAIT);
		if (n == -1) {
			if (errno == EINTR)
				continue;
			if (errno == EAGAIN || errno == EWOULDBLOCK)
				return PUBRELAY_OK;
			/*
			 * Not an error yet: the daemon may have said why it
			 * closed (ERR LIMIT, DENIED, SHUTDOWN) before it did,
			 * and those replies are still to read.
			 */
			h->werrno = errno;
			h->olen = h->ooff = 0;
			return PUBRELAY_OK;
		}
		h->ooff += (size_t)n;
	}
	h->olen = h->ooff = 0;
	return PUBRELAY_OK;
}

/* Read what the socket holds into in: 0 (eof may be set), or an error. */
static int
lib_recv_some(pubrelay *h)
{
	ssize_t	n;
	char	eb[LIB_ERRSTR];

	if (h->ioff > 0 && (h->ioff == h->ilen || h->icap - h->ilen <
	    LIB_READ_CHUNK / 4)) {
		memmove(h->in, h->in + h->ioff, h->ilen - h->ioff);
		h->ilen -= h->ioff;
		h->ioff = 0;
	}
	if (h->icap - h->ilen < LIB_READ_CHUNK / 4 &&
	    lib_reserve(&h->in, &h->icap, h->ilen + (h->icap == 0 ?
	    LIB_FIRST_READ : LIB_READ_CHUNK)) == -1)
		return lib_fail(h, PUBRELAY_E_NOMEM, "out of memory");
	for (;;) {
		n = recv(h->fd, h->in + h->ilen, h->icap - h->ilen,
		    MSG_DONTWAIT);
		if (n > 0) {
			h->ilen += (size_t)n;
			return PUBRELAY_OK;
		}
		if (n == 0) {
			h->eof = 1;
			return PUBRELAY_OK;
		}
		if (errno == EINTR)
			continue;
		if (errno == EAGAIN || errno == EWOULDBLOCK)
			return PUBRELAY_OK;
		h->syserr = errno;
		return lib_fail(h, PUBRELAY_E_CLOSED, "connection to %s lost: "
		    "%s", h->path, lib_strerror(errno, eb, sizeof(eb)));
	}
}

/*
 * Wait for the socket within the time left, then send and read what it
 * allows.  hold_ms: how long the daemon may keep the awaited reply on
 * purpose, on top of the timeout.
 */
static int
lib_pump(pubrelay *h, int64_t since, unsigned hold_ms)
{
	struct pollfd	pfd;
	int64_t		limit;
	int		rc, wait;
	char		eb[LIB_ERRSTR];

	if (h->timeout_ms == 0 || hold_ms == LIB_HOLD_FOREVER)
		limit = -1;
	else
		limit = (int64_t)h->timeout_ms + hold_ms;
	pfd.fd = h->fd;
	pfd.events = POLLIN | (h->ooff < h->olen ? POLLOUT : 0);
	pfd.revents = 0;
	wait = lib_left(since, limit);
	rc = poll(&pfd, 1, wait);
	if (rc == -1) {
		if (errno == EINTR)
			return PUBRELAY_OK;
		h->syserr = errno;
		return lib_fail(h, PUBRELAY_E_SYS, "poll: %s",
		    lib_strerror(errno, eb, sizeof(eb)));
	}
	if (rc == 0)
		return lib_fail(h, PUBRELAY_E_TIMEOUT, "no reply from %s in "
		    "%lld ms", h->path, (long long)limit);
	if ((pfd.revents & (POLLOUT | POLLERR | POLLHUP)) && h->ooff < h->olen &&
	    (rc = lib_send_some(h)) != PUBRELAY_OK)
		return rc;
	if (pfd.revents & (POLLIN | POLLERR | POLLHUP))
		return lib_recv_some(h);
	return PUBRELAY_OK;
}

/* Until in holds want bytes: 0, or an error. */
static int
lib_need(pubrelay *h, size_t want, unsigned hold_ms)
{
	int64_t	since = lib_now_ms();
	size_t	had;
	int	rc;

	if (h->ioff > 0 && h->icap - h->ioff < want) {
		memmove(h->in, h->in + h->ioff, h->ilen - h->ioff);
		h->ilen -= h->ioff;
		h->ioff = 0;
	}
	if (lib_reserve(&h->in, &h->icap, h->ioff + want) == -1)
		return lib_fail(h, PUBRELAY_E_NOMEM, "out of memory");
	while (h->ilen - h->ioff < want) {
		if (h->eof) {
			h->syserr = h->werrno;
			return lib_fail(h, PUBRELAY_E_CLOSED, "connection to %s "
			    "closed in the middle of a reply", h->path);
		}
		had = h->ilen;
		if ((rc = lib_pump(h, since, hold_ms)) != PUBRELAY_OK)
			return rc;
		if (h->ilen != had)
			since = lib_now_ms();
	}
	return PUBRELAY_OK;
}

/* The next reply line (its "\n" cut off), waiting for it if need be. */
static int
lib_line(pubrelay *h, unsigned hold_ms, const char **line, size_t *len)
{
	const char	*nl;
	size_t		 scanned = 0, had;
	int64_t		 since = lib_now_ms();
	int		 rc;
	char		 eb[LIB_ERRSTR];

	for (;;) {
		nl = NULL;
		if (h->ilen > h->ioff + scanned)
			nl = memchr(h->in + h->ioff + scanned, '\n',
			    h->ilen - h->ioff - scanned);
		if (nl != NULL) {
			*line = h->in + h->ioff;
			*len = (size_t)(nl - *line);
			h->ioff += *len + 1;
			return PUBRELAY_OK;
		}
		scanned = h->ilen - h->ioff;
		if (scanned > LIB_MAX_REPLY) {
			free(h->badline);
			h->badline = NULL;
			return lib_fail(h, PUBRELAY_E_REPLY, "reply line longer "
			    "than %d bytes", LIB_MAX_REPLY);
		}
		if (h->eof) {
			h->syserr = h->werrno;
			return lib_fail(h, PUBRELAY_E_CLOSED, "connection to %s "
			    "closed before the reply%s%s", h->path,
			    h->werrno != 0 ? ": " : "",
			    h->werrno != 0 ?
			    lib_strerror(h->werrno, eb, sizeof(eb)) : "");
		}
		/* Nothing to read: whatever waits to be sent goes first. */
		if (h->ooff < h->olen && (rc = lib_send_some(h)) != PUBRELAY_OK)
			return rc;
		had = h->ilen;
		if ((rc = lib_pump(h, since, hold_ms)) != PUBRELAY_OK)
			return rc;
		if (h->ilen != had)
			since = lib_now_ms();
	}
}

/* Whether in holds a whole line (or more than one may be long). */
static int
lib_has_line(const pubrelay *h)
{
	return h->ilen > h->ioff && (h->ilen - h->ioff > LIB_MAX_REPLY ||
	    memchr(h->in + h->ioff, '\n', h->ilen - h->ioff) != NULL);
}

/* Keep a reply the library did not understand, for pubrelay_reply_line(). */
static void
lib_keep_line(pubrelay *h, const char *line, size_t len)
{
	char	*copy;

	if ((copy = malloc(len + 1)) == NULL)
		len = 0;
	else {
		memcpy(copy, line, len);
		copy[len] = '\0';
	}
	free(h->badline);
	h->badline = copy;
	h->badlen = len;
}

/*
 * Take the reply to the oldest request owed one.  With none owed, a line
 * the daemon sent unasked (ERR LIMIT, DENIED or SHUTDOWN before it closes)
 * or the end of the connection, once pubrelay_ready() saw one.
 */
static int
lib_collect(pubrelay *h, struct wire_reply *r)
{
	struct lib_slot	*s = NULL;
	const char	*line = NULL;
	size_t		 len = 0, n;
	int		 rc;

	if (h->fd == -1)
		return lib_closed(h);
	if (h->count == 0 && !h->eof && !lib_has_line(h))
		return lib_fail(h, PUBRELAY_E_INVAL, "no request waits for a "
		    "reply");
	if (h->count > 0)
		s = &h->ring[h->head];
	if ((rc = lib_line(h, s != NULL ? s->hold_ms : 0, &line, &len)) !=
	    PUBRELAY_OK)
		return rc;
	if (s == NULL)
		rc = wire_reply(WIRE_NONE, line, len, NULL, 0, r);
	else {
		rc = wire_reply((enum wire_req)s->req, line, len, s->mid,
		    s->mid != NULL ? strlen(s->mid) : 0, r);
		free(s->mid);
		s->mid = NULL;
		h->head = (h->head + 1) % h->ringcap;
		h->count--;
	}
	h->id[0] = '\0';
	if (h->reason != NULL)
		h->reason[0] = '\0';
	if (r->id != NULL) {
		memcpy(h->id, r->id, r->idlen);
		h->id[r->idlen] = '\0';
	}
	if (rc == PUBRELAY_PARKED) {
		/* A line may be longer than the limit when it came whole. */
		n = r->textlen < LIB_MAX_REPLY ? r->textlen : LIB_MAX_REPLY;
		/* Out of memory, the state still stands: without a reason. */
		if (lib_reserve(&h->reason, &h->reasoncap, n + 1) == 0) {
			memcpy(h->reason, r->text, n);
			h->reason[n] = '\0';
		}
	}
	if (rc == PUBRELAY_E_REPLY) {
		if (len > 0 && line[len - 1] == '\r')
			len--;
		lib_keep_line(h, line, len);
		if (len > 200)
			len = 200;
		return lib_fail(h, rc, "%s from %s: \"%.*s\"", s == NULL ?
		    "reply without a request" : "unexpected reply", h->path,
		    (int)len, line);
	}
	if (rc < 0)
		return lib_fail(h, rc, "%.*s", (int)(r->text + r->textlen -
		    (line + 4)), line + 4);
	return rc;
}

/*
 * Room for one more request owed a reply, up to the window.  The ring
 * starts small: a one-shot program pays for the pages it touches.
 */
static int
lib_ring_grow(pubrelay *h)
{
	struct lib_slot	*ring;
	unsigned	 cap, i;

	cap = h->ringcap == 0 ? LIB_RING_FIRST : h->ringcap * 2;
	if (cap > h->window)
		cap = h->window;
	if ((ring = calloc(cap, sizeof(*ring))) == NULL)
		return -1;
	for (i = 0; i < h->count; i++)
		ring[i] = h->ring[(h->head + i) % h->ringcap];
	free(h->ring);
	h->ring = ring;
	h->ringcap = cap;
	h->head = 0;
	return 0;
}

/* Queue one request of kind req: bytes a, then b (either may be empty). */
static int
lib_queue(pubrelay *h, enum wire_req req, unsigned hold_ms, const char *mid,
    const char *a, size_t alen, const void *b, size_t blen)
{
	struct lib_slot	*s;
	int64_t		 since;
	size_t		 sent;
	int		 rc;

	if (h->fd == -1)
		return lib_closed(h);
	if (h->count == h->window)
		return lib_fail(h, PUBRELAY_E_BUSY, "%u replies to collect "
		    "first (the window)", h->count);
	if (h->ooff > 0 && h->ooff == h->olen)
		h->ooff = h->olen = 0;
	if (lib_reserve(&h->out, &h->ocap, h->olen + alen + blen) == -1)
		return lib_fail(h, PUBRELAY_E_NOMEM, "out of memory");
	if (h->count == h->ringcap && lib_ring_grow(h) == -1)
		return lib_fail(h, PUBRELAY_E_NOMEM, "out of memory");
	s = &h->ring[(h->head + h->count) % h->ringcap];
	s->mid = NULL;
	if (mid != NULL && (s->mid = strdup(mid)) == NULL)
		return lib_fail(h, PUBRELAY_E_NOMEM, "out of memory");
	s->req = (unsigned char)req;
	s->hold_ms = hold_ms;
	h->count++;
	if (alen > 0)
		memcpy(h->out + h->olen, a, alen);
	h->olen += alen;
	if (blen > 0)
		memcpy(h->out + h->olen, b, blen);
	h->olen += blen;
	if (h->olen - h->ooff < LIB_SEND_BATCH)
		return PUBRELAY_OK;
	if ((rc = lib_send_some(h)) != PUBRELAY_OK)
		return rc;
	/* Big messages: hold at most about LIB_OUT_HIGH unsent. */
	since = lib_now_ms();
	while (h->olen - h->ooff > LIB_OUT_HIGH) {
		sent = h->ooff;
		if ((rc = lib_pump(h, since, 0)) != PUBRELAY_OK)
			return rc;
		if (h->ooff != sent)
			since = lib_now_ms();
	}
	return PUBRELAY_OK;
}

int
pubrelay_send(pubrelay *h, const pubrelay_props *props, const void *body,
    size_t len)
{
	char		 head[32];
	size_t		 hl, total;
	char		*w;
	int		 rc;

	if (body == NULL && len > 0)
		return lib_fail(h, PUBRELAY_E_INVAL, "body: NULL");
	if (len > SIZE_MAX / 2)
		return lib_fail(h, PUBRELAY_E_INVAL, "body too long");
	hl = (size_t)snprintf(head, sizeof(head), "PUB %zu\n", len);
	if (props == NULL || props->blocklen == 0) {
		memcpy(head + hl, "\n", 2);
		hl++;
		/* head, then the body and its line end, in one go. */
		total = hl + len + 1;
	} else
		total = hl + props->blocklen + 1 + len + 1;
	if (h->fd == -1 || h->count == h->window)
		return lib_queue(h, WIRE_PUB, 0, NULL, "", 0, NULL, 0);
	if (h->ooff > 0 && h->ooff == h->olen)
		h->ooff = h->olen = 0;
	if (lib_reserve(&h->out, &h->ocap, h->olen + total) == -1)
		return lib_fail(h, PUBRELAY_E_NOMEM, "out of memory");
	/* Encoded in place: lib_queue() then only books the slot. */
	w = h->out + h->olen;
	memcpy(w, head, hl);
	w += hl;
	if (props != NULL && props->blocklen > 0) {
		memcpy(w, props->block, props->blocklen);
		w += props->blocklen;
		*w++ = '\n';
	}
	if (len > 0)
		memcpy(w, body, len);
	w[len] = '\n';
	h->olen += total;
	rc = lib_queue(h, props != NULL && props->confirm_ms > 0 ?
	    WIRE_PUB_CONFIRM : WIRE_PUB, props != NULL ? props->confirm_ms : 0,
	    props != NULL ? props->mid : NULL, "", 0, NULL, 0);
	if (rc != PUBRELAY_OK && h->fd != -1 && h->count < h->window)
		h->olen -= total;	/* not booked: not sent either */
	return rc;
}

int
pubrelay_recv(pubrelay *h)
{
	struct wire_reply	r;

	return lib_collect(h, &r);
}

int
pubrelay_flush(pubrelay *h)
{
	int64_t	since = lib_now_ms();
	int	rc;
	char	eb[LIB_ERRSTR];

	if (h->fd == -1)
		return lib_closed(h);
	while (h->ooff < h->olen) {
		if ((rc = lib_send_some(h)) != PUBRELAY_OK)
			return rc;
		if (h->ooff < h->olen &&
		    (rc = lib_pump(h, since, 0)) != PUBRELAY_OK)
			return rc;
	}
	if (h->werrno != 0) {
		/* Kept open: the replies sent before may still be read. */
		h->err = PUBRELAY_E_CLOSED;
		snprintf(h->errmsg, sizeof(h->errmsg), "connection to %s "
		    "lost: %s", h->path,
		    lib_strerror(h->werrno, eb, sizeof(eb)));
		errno = h->werrno;
		return PUBRELAY_E_CLOSED;
	}
	return PUBRELAY_OK;
}

int
pubrelay_ready(pubrelay *h)
{
	int	rc;

	/* Closed: pubrelay_recv() says why at once. */
	if (h->fd == -1)
		return 1;
	if (h->ooff < h->olen && (rc = lib_send_some(h)) != PUBRELAY_OK)
		return rc;
	if (h->eof || lib_has_line(h))
		return 1;
	if ((rc = lib_recv_some(h)) != PUBRELAY_OK)
		return rc;
	return h->eof || lib_has_line(h);
}

int
pubrelay_publish(pubrelay *h, const pubrelay_props *props, const void *body,
    size_t len)
{
	int	rc;

	if (h->count > 0)
		return lib_fail(h, PUBRELAY_E_BUSY, "%u pipelined replies to "
		    "collect first", h->count);
	if ((rc = pubrelay_send(h, props, body, len)) != PUBRELAY_OK)
		return rc;
	return pubrelay_recv(h);
}

/* One request other than PUB, and its reply. */
static int
lib_call(pubrelay *h, enum wire_req req, unsigned hold_ms, const char *mid,
    const char *line, size_t len, struct wire_reply *r)
{
	int	rc;

	if (h->count > 0)
		return lib_fail(h, PUBRELAY_E_BUSY, "%u pipelined replies to "
		    "collect first", h->count);
	if ((rc = lib_queue(h, req, hold_ms, mid, line, len, NULL, 0)) !=
	    PUBRELAY_OK)
		return rc;
	return lib_collect(h, r);
}

int
pubrelay_ping(pubrelay *h)
{
	struct wire_reply	r;

	return lib_call(h, WIRE_PING, 0, NULL, "PING\n", 5, &r);
}

int
pubrelay_reset(pubrelay *h)
{
	struct wire_reply	r;

	return lib_call(h, WIRE_RESET, 0, NULL, "RESET\n", 6, &r);
}

int
pubrelay_wait(pubrelay *h, unsigned ms, uint64_t *dead)
{
	struct wire_reply	r;
	char			line[32];
	int			rc;

	if (ms > WIRE_MAX_MS)
		return lib_fail(h, PUBRELAY_E_INVAL, "wait: %u ms: over a day",
		    ms);
	if (ms > 0)
		snprintf(line, sizeof(line), "WAIT %u\n", ms);
	else
		snprintf(line, sizeof(line), "WAIT\n");
	rc = lib_call(h, WIRE_WAIT, ms > 0 ? ms : LIB_HOLD_FOREVER, NULL, line,
	    strlen(line), &r);
	if (rc == PUBRELAY_CONFIRMED && dead != NULL)
		*dead = r.n;
	return rc;
}

int
pubrelay_status(pubrelay *h, const char *message_id)
{
	struct wire_reply	 r;
	char			 line[8 + WIRE_SHORTSTR_MAX + 1];
	size_t			 len;

	if (message_id == NULL || (len = strlen(message_id)) == 0 ||
	    len > WIRE_SHORTSTR_MAX || strpbrk(message_id, "\r\n") != NULL)
		return lib_fail(h, PUBRELAY_E_INVAL, "status: not a message-id "
		    "of 1 to 255 bytes on one line");
	len = (size_t)snprintf(line, sizeof(line), "STATUS %s\n", message_id);
	return lib_call(h, WIRE_STATUS, 0, message_id, line, len, &r);
}

int
pubrelay_stats(pubrelay *h)
{
	struct wire_reply	 r;
	char			*copy;
	size_t			 i;
	int			 rc;

	if ((rc = lib_call(h, WIRE_STATS, 0, NULL, "STATS\n", 6, &r)) !=
	    PUBRELAY_OK)
		return rc;
	if ((rc = lib_need(h, (size_t)r.n, 0)) != PUBRELAY_OK)
		return rc;
	if ((copy = malloc(2 * ((size_t)r.n + 1))) == NULL) {
		/* The bytes are read: the connection stays in step. */
		h->ioff += (size_t)r.n;
		return lib_fail(h, PUBRELAY_E_NOMEM, "out of memory");
	}
	memcpy(copy, h->in + h->ioff, (size_t)r.n);
	copy[r.n] = '\0';
	memcpy(copy + r.n + 1, copy, (size_t)r.n + 1);
	for (i = (size_t)r.n + 1; i < 2 * (size_t)r.n + 1; i++)
		if (copy[i] == '\n')
			copy[i] = '\0';
	h->ioff += (size_t)r.n;
	free(h->stats);
	h->stats = copy;
	h->statslen = (size_t)r.n;
	return PUBRELAY_OK;
}

const char *
pubrelay_stat(const pubrelay *h, const char *name)
{
	const char	*v;
	size_t		 vlen;

	if (h->stats == NULL ||
	    (v = wire_stat(h->stats, h->statslen, name, &vlen)) == NULL)
		return NULL;
	/* The same place in the copy, where the value ends in a NUL. */
	return v + h->statslen + 1;
}

const char *
pubrelay_stats_text(const pubrelay *h, size_t *len)
{
	if (len != NULL)
		*len = h->stats != NULL ? h->statslen : 0;
	return h->stats != NULL ? h->stats : "";
}

int
pubrelay_dead_list(pubrelay *h, uint64_t after, unsigned max,
    const char **text, size_t *len)
{
	struct wire_reply	 r;
	char			 line[64];
	int			 rc;

	if (text != NULL)
		*text = "";
	if (len != NULL)
		*len = 0;
	if (max > WIRE_DEAD_LIST_MAX || after > INT64_MAX)
		return lib_fail(h, PUBRELAY_E_INVAL, "dead list: max over %d "
		    "or after over 2^63-1", WIRE_DEAD_LIST_MAX);
	if (max > 0)
		snprintf(line, sizeof(line), "DEAD LIST %u AFTER %llu\n", max,
		    (unsigned long long)after);
	else
		snprintf(line, sizeof(line), "DEAD LIST AFTER %llu\n",
		    (unsigned long long)after);
	if ((rc = lib_call(h, WIRE_DEAD_LIST, 0, NULL, line, strlen(line),
	    &r)) != PUBRELAY_OK)
		return rc;
	if ((rc = lib_need(h, (size_t)r.n, 0)) != PUBRELAY_OK)
		return rc;
	/* Borrowed from the buffer: nothing reads into it before a call. */
	if (text != NULL)
		*text = h->in + h->ioff;
	if (len != NULL)
		*len = (size_t)r.n;
	h->ioff += (size_t)r.n;
	return PUBRELAY_OK;
}

/* DEAD RETRY and DEAD PURGE: one id, or 0 for all. */
static int
lib_dead_move(pubrelay *h, const char *verb, uint64_t id, uint64_t *count)
{
	struct wire_reply	 r;
	char			 line[64];
	int			 rc;

	if (id > INT64_MAX)
		return lib_fail(h, PUBRELAY_E_INVAL, "dead %s: id over 2^63-1",
		    verb);
	if (id == 0)
		snprintf(line, sizeof(line), "DEAD %s ALL\n", verb);
	else
		snprintf(line, sizeof(line), "DEAD %s %llu\n", verb,
		    (unsigned long long)id);
	rc = lib_call(h, WIRE_DEAD_MOVE, 0, NULL, line, strlen(line), &r);
	if (rc == PUBRELAY_OK && count != NULL)
		*count = r.n;
	return rc;
}

int
pubrelay_dead_retry(pubrelay *h, uint64_t id, uint64_t *count)
{
	return lib_dead_move(h, "RETRY", id, count);
}

int
pubrelay_dead_purge(pubrelay *h, uint64_t id, uint64_t *count)
{
	return lib_dead_move(h, "PURGE", id, count);
}
