/*
 * session.c: one client connection.
 *
 * Replies leave in request order.  OKs are held in s->held until the
 * transaction holding their messages commits; a request whose reply does not
 * depend on that commit (PING, STATS, an error) is not parsed while OKs are
 * held: the session stalls and is resumed by session_committed().
 *
 * After a refused PUB every later PUB is refused with SKIPPED until RESET, so
 * the messages a connection got OK for are always a prefix of what it sent.
 *
 * Resources a client can hold are bounded by [socket] limits: input is read
 * only up to max_buffer (or one largest request, if that is more), parsing
 * stops while more than max_buffer of replies wait to be written (the
 * client does not read them), and a request left half-sent for
 * idle_timeout is answered ERR PROTO and the connection closed.  A client
 * idle between requests is kept: applications hold connections open.
 */
#include <sys/queue.h>
#include <sys/socket.h>
#include <sys/uio.h>

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>

#include "config.h"
#include "dead.h"
#include "ingress.h"
#include "log.h"
#include "metrics.h"
#include "protocol.h"
#include "provenance.h"
#include "receipt.h"
#include "session.h"
#include "users.h"
#include "util.h"

#define SESSION_READ_MAX	(256 * 1024) /* bytes per read callback */
#define SESSION_READ_IOV	4
#define SESSION_SKIPPED_TEXT \
	"an earlier message on this connection was refused; send RESET to go on"

/*
 * A reply that waits for a fate: a PUB's with "confirm:" (committed, its
 * message-id known) or a WAIT's.  Replies behind it go to its after buffer,
 * so that they leave in request order; only the last one's grows.
 */
struct sreceipt {
	TAILQ_ENTRY(sreceipt)	 entry;
	struct session		*s;
	struct receipt		*rc;		/* NULL once told */
	int			 wait;		/* a WAIT's, or a PUB's */
	char			*line;		/* the reply, once known */
	struct evbuffer		*after;
	char			 mid[PROTO_SHORTSTR_MAX + 1];
};
TAILQ_HEAD(sreceipts, sreceipt);

/* A held OK that becomes a receipt at commit: line number, row, limit. */
struct sconfirm {
	size_t		 line;
	int64_t		 id;
	unsigned	 ms;
};

/* What a waiting receipt counts for against max_buffer, beside its after. */
#define SESSION_RECEIPT_COST	(sizeof(struct sreceipt) + 64)

struct session {
	TAILQ_ENTRY(session)	 entry;
	struct ingress		*ing;
	struct user		*user;		/* per-user limits; or NULL */
	struct bufferevent	*bev;
	struct evbuffer		*held;		/* OKs waiting on a commit */
	struct proto_limits	 lim;
	uint64_t		 id;
	char			 who[80];	/* "client N (uid U, pid P)" */
	size_t			 need;		/* bytes the parser waits for */
	size_t			 skip;		/* bytes of a refused body to drop */
	unsigned		 pending;	/* PUBs in the open transaction */
	int			 stalled;
	int			 refused;	/* latch, see above */
	int			 closing;	/* close once output is flushed */
	int			 eof;		/* client closed its side */
	int			 draining;	/* shutdown: parse nothing more */
	int			 backlogged;	/* output over max_buffer */
	size_t			 max_buffer;
	size_t			 in_max;	/* input high-water mark */
	size_t			 held_lines;	/* replies in held */
	struct sconfirm		*confirms;	/* which of them wait for a fate */
	size_t			 nconfirms, capconfirms;
	struct sreceipts	 rq;		/* replies waiting for a fate */
	size_t			 nrq;
	size_t			 rq_sealed;	/* bytes in after buffers but
						   the last one's */
	int			 telling;	/* no flush from the callback */
	uint64_t		 idle_ms;
	char			*stamp;		/* provenance headers, or NULL */
	size_t			 stamplen;
	struct proto_req	 req;
};

static TAILQ_HEAD(, session) sessions = TAILQ_HEAD_INITIALIZER(sessions);
static unsigned	 nsessions;
static uint64_t	 session_ids;

static const char *session_host(void);
static void session_read_cb(struct bufferevent *, void *);
static void session_write_cb(struct bufferevent *, void *);
static void session_event_cb(struct bufferevent *, short, void *);
static void session_process(struct session *);

/*
 * How the log names a client: its number, and who is behind it, so that an
 * operator can find the application a line is about.
 */
static void
session_name(struct session *s, const struct ucred *uc)
{
	if (uc != NULL)
		snprintf(s->who, sizeof(s->who), "client %llu (uid %ld, pid "
		    "%ld)", (unsigned long long)s->id, (long)uc->uid,
		    (long)uc->pid);
	else
		snprintf(s->who, sizeof(s->who), "client %llu",
		    (unsigned long long)s->id);
}

unsigned
session_count(void)
{
	return nsessions;
}

struct session *
session_new(struct ingress *ing, int fd, const struct config *cf,
    const struct ucred *uc, struct user *u)
{
	struct session		*s;
	struct timeval		 tv;
	size_t			 in_max;	/* the read high-water mark */

	s = xcalloc(1, sizeof(*s));
	s->ing = ing;
	s->user = u;
	s->id = ++session_ids;
	session_name(s, uc);
	s->lim.max_body = (size_t)cf->max_message_size;
	s->lim.max_line = cf->max_line;
	s->lim.max_headers = cf->max_headers;
	if (cf->provenance) {
		char	stamp[PROTO_STAMP_ROOM];

		/* Room for the headers it adds, within PROTO_MAX_HEADERS. */
		if (s->lim.max_headers > PROTO_MAX_HEADERS - PROVENANCE_HEADERS)
			s->lim.max_headers = PROTO_MAX_HEADERS -
			    PROVENANCE_HEADERS;
		s->stamplen = provenance_stamp(stamp, sizeof(stamp),
		    session_host(), uc->uid, uc->pid);
		s->stamp = xstrndup(stamp, s->stamplen);
	}
	s->max_buffer = (size_t)cf->max_buffer;
	TAILQ_INIT(&s->rq);
	s->idle_ms = cf->idle_timeout_ms;
	s->held = evbuffer_new();
	s->bev = bufferevent_socket_new(ingress_base(ing), fd,
	    BEV_OPT_CLOSE_ON_FREE);
	if (s->held == NULL || s->bev == NULL) {
		log_warnx("cannot allocate a client session");
		if (s->held)
			evbuffer_free(s->held);
		if (s->bev)
			bufferevent_free(s->bev);
		else
			close(fd);
		if (u != NULL)
			users_disconnect(ingress_users(ing), u);
		free(s);
		return NULL;
	}
	bufferevent_set_max_single_read(s->bev, SESSION_READ_MAX);
	/* The largest request must fit, whatever max_buffer says. */
	in_max = (size_t)cf->max_message_size + PROTO_MAX_BLOCK +
	    2 * PROTO_MAX_LINE;
	if (in_max < s->max_buffer)
		in_max = s->max_buffer;
	bufferevent_setwatermark(s->bev, EV_READ, 0, in_max);
	s->in_max = in_max;
	if (s->idle_ms > 0) {
		tv.tv_sec = (time_t)(s->idle_ms / 1000);
		tv.tv_usec = (suseconds_t)(s->idle_ms % 1000) * 1000;
		bufferevent_set_timeouts(s->bev, &tv, NULL);
	}
	bufferevent_setcb(s->bev, session_read_cb, session_write_cb,
	    session_event_cb, s);
	bufferevent_enable(s->bev, EV_READ | EV_WRITE);
	TAILQ_INSERT_TAIL(&sessions, s, entry);
	nsessions++;
	log_debug("%s: connected", s->who);
	return s;
}

/* The one free path. */
static void
session_free(struct session *s, const char *why)
{
	struct sreceipt	*sr;

	log_debug("%s: closed (%s)", s->who, why);
	while ((sr = TAILQ_FIRST(&s->rq)) != NULL) {
		TAILQ_REMOVE(&s->rq, sr, entry);
		if (sr->rc != NULL)
			receipt_cancel(ingress_receipts(s->ing), sr->rc);
		evbuffer_free(sr->after);
		free(sr->line);
		free(sr);
	}
	free(s->confirms);
	free(s->stamp);
	ingress_forget(s->ing, s);
	if (s->user != NULL)
		users_disconnect(ingress_users(s->ing), s->user);
	TAILQ_REMOVE(&sessions, s, entry);
	nsessions--;
	bufferevent_free(s->bev);
	evbuffer_free(s->held);
	free(s);
}

/* Where the next reply goes: behind the last one waiting for a fate. */
static struct evbuffer *
session_out(struct session *s)
{
	if (TAILQ_EMPTY(&s->rq))
		return bufferevent_get_output(s->bev);
	return TAILQ_LAST(&s->rq, sreceipts)->after;
}

/* Replies not yet written, those waiting for a fate included. */
static size_t
session_queued(struct session *s)
{
	size_t	n = evbuffer_get_length(bufferevent_get_output(s->bev));

	if (!TAILQ_EMPTY(&s->rq))
		n += s->rq_sealed + s->nrq * SESSION_RECEIPT_COST +
		    evbuffer_get_length(TAILQ_LAST(&s->rq, sreceipts)->after);
	return n;
}

static void
session_reply(struct session *s, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));

static void
session_reply(struct session *s, const char *fmt, ...)
{
	va_list	ap;

	va_start(ap, fmt);
	evbuffer_add_vprintf(session_out(s), fmt, ap);
	va_end(ap);
}

static void
session_error(struct session *s, const char *code, const char *text)
{
	session_reply(s, "ERR %s %s\n", code, text);
}

/* The STATS reply: "STATS <length>" and the body metrics.c formats. */
static void
session_stats(struct session *s)
{
	struct metrics_snap	m;
	struct buf		body;

	ingress_stats(s->ing, &m);
	m.v[M_CLIENTS] = nsessions;
	buf_init(&body);
	metrics_format(&m, &body);
	session_reply(s, "STATS %zu\n", body.len);
	evbuffer_add(session_out(s), body.data, body.len);
	buf_free(&body);
}

/* Close once what was answered has been written. */
static void
session_close_after_flush(struct session *s)
{
	s->closing = 1;
	bufferevent_disable(s->bev, EV_READ);
	bufferevent_setcb(s->bev, NULL, session_write_cb, session_event_cb, s);
	if (evbuffer_get_length(bufferevent_get_output(s->bev)) == 0)
		session_free(s, "closed by daemon");
}

/* A reply that must wait until held OKs are released. */
static int
session_must_wait(struct session *s)
{
	if (s->pending == 0)
		return 0;
	s->stalled = 1;
	return 1;
}

/* A PUB reply: behind held OKs when there are any, so order is kept. */
static void
session_pub_error(struct session *s, const char *code, const char *text)
{
	if (s->pending > 0) {
		evbuffer_add_printf(s->held, "ERR %s %s\n", code, text);
		s->held_lines++;
	} else
		session_error(s, code, text);
}

/* This host's name, for the provenance headers: read once. */
static const char *
session_host(void)
{
	static char	host[256];

	if (host[0] == '\0' && (gethostname(host, sizeof(host) - 1) == -1 ||
	    host[0] == '\0'))
		snprintf(host, sizeof(host), "unknown");
	return host;
}

static void
session_pub(struct session *s, const struct proto_pub *pub)
{
	const char	*code;
	char		 err[256];
	size_t		 i, n = sizeof(PROVENANCE_PREFIX) - 1;

	if (s->refused) {
		session_pub_error(s, PROTO_E_SKIPPED, SESSION_SKIPPED_TEXT);
		return;
	}
	/* With provenance on, its headers are the relay's to write. */
	for (i = 0; s->stamp != NULL && i < pub->nheaders; i++) {
		const struct proto_str *h = &pub->headers[i].name;

		if (h->len >= n && strncasecmp(h->p, PROVENANCE_PREFIX, n) ==
		    0) {
			ingress_count_refused(s->ing);
			s->refused = 1;
			snprintf(err, sizeof(err), "header %.*s: names that "
			    "start with " PROVENANCE_PREFIX " are the relay's "
			    "own ([publish] provenance)", (int)(h->len > 64 ?
			    64 : h->len), h->p);
			session_pub_error(s, PROTO_E_BADREQ, err);
			return;
		}
	}
	if (ingress_insert(s->ing, s->user, pub, s->stamp, s->stamplen,
	    s->held, &code, err, sizeof(err)) == -1) {
		ingress_count_refused(s->ing);
		s->refused = 1;
		session_pub_error(s, code, err);
		return;
	}
	if (pub->confirm_ms > 0) {
		struct sconfirm	*c;

		if (s->nconfirms == s->capconfirms) {
			s->capconfirms = s->capconfirms ?
			    s->capconfirms * 2 : 16;
			s->confirms = xrealloc(s->confirms,
			    s->capconfirms * sizeof(*s->confirms));
		}
		c = &s->confirms[s->nconfirms++];
		c->line = s->held_lines;
		c->id = ingress_inserted_id(s->ing);
		c->ms = pub->confirm_ms;
	}
	s->held_lines++;
	if (s->pending++ == 0)
		ingress_wait(s->ing, s);
}

/*
 * Write what was answered at once rather than on the next loop turn (the
 * bufferevent writes whatever is left, and sees any error, when the socket
 * is next writable).  A socket bufferevent freezes the start of its output
 * so that only it drains it; it unfreezes it around its own writes, as here.
 */
static void
session_write_now(struct session *s)
{
	struct evbuffer	*out = bufferevent_get_output(s->bev);

	if (evbuffer_get_length(out) > 0) {
		evbuffer_unfreeze(out, 1);
		(void)evbuffer_write(out, bufferevent_getfd(s->bev));
		evbuffer_freeze(out, 1);
	}
}

/* Send the replies whose fate is known, in order; 1 when any was. */
static int
session_rq_flush(struct session *s)
{
	struct evbuffer	*out = bufferevent_get_output(s->bev);
	struct sreceipt	*sr;
	int		 any = 0;

	while ((sr = TAILQ_FIRST(&s->rq)) != NULL && sr->line != NULL) {
		TAILQ_REMOVE(&s->rq, sr, entry);
		s->nrq--;
		if (!TAILQ_EMPTY(&s->rq))
			s->rq_sealed -= evbuffer_get_length(sr->after);
		else
			s->rq_sealed = 0;
		evbuffer_add(out, sr->line, strlen(sr->line));
		evbuffer_add_buffer(out, sr->after);
		evbuffer_free(sr->after);
		free(sr->line);
		free(sr);
		any = 1;
	}
	return any;
}

static void session_maybe_done(struct session *);

/*
 * The replies waiting to be written, those behind a receipt included, are
 * down to half of max_buffer again: read on.  From session_write_cb() and
 * when a receipt's fate let replies go.
 */
static void
session_catch_up(struct session *s)
{
	if (!s->backlogged || session_queued(s) > s->max_buffer / 2)
		return;
	s->backlogged = 0;
	bufferevent_setwatermark(s->bev, EV_WRITE, 0, 0);
	if (!s->eof && !s->draining)
		bufferevent_enable(s->bev, EV_READ);
	session_process(s);
}

/*
 * "PARKED <message-id> <reason>\n": the reason on one line, whatever the
 * broker wrote.
 */
static void
session_parked_line(struct buf *line, const char *mid, size_t mlen,
    const char *reason)
{
	const char	*p;

	buf_appends(line, "PARKED ");
	buf_append(line, mid, mlen);
	buf_append(line, " ", 1);
	for (p = reason != NULL ? reason : "refused by the broker";
	    *p != '\0'; p++)
		buf_append(line, *p == '\n' || *p == '\r' || *p == '\t' ?
		    " " : p, 1);
	buf_append(line, "\n", 1);
}

/* STATUS: what became of a message-id this daemon gave out. */
static void
session_status(struct session *s, const struct proto_str *mid)
{
	static const char *const words[] = {
		[INGRESS_UNKNOWN] = "UNKNOWN",
		[INGRESS_QUEUED] = "QUEUED",
		[INGRESS_INFLIGHT] = "INFLIGHT",
		[INGRESS_CONFIRMED] = "CONFIRMED",
	};
	struct buf		 line;
	char			 reason[256];
	enum ingress_fate	 f;

	f = ingress_status(s->ing, mid->p, mid->len, reason, sizeof(reason));
	buf_init(&line);
	if (f == INGRESS_PARKED)
		session_parked_line(&line, mid->p, mid->len, reason);
	else {
		buf_printf(&line, "%s ", words[f]);
		buf_append(&line, mid->p, mid->len);
		buf_append(&line, "\n", 1);
	}
	evbuffer_add(session_out(s), line.data, line.len);
	buf_free(&line);
}

/* receipt_fn: the fate of a PUB with "confirm:" or of a WAIT. */
static void
session_receipt_cb(void *arg, enum receipt_fate fate, const char *reason,
    uint64_t n)
{
	struct sreceipt	*sr = arg;
	struct session	*s = sr->s;
	struct buf	 line;

	sr->rc = NULL;
	buf_init(&line);
	if (sr->wait) {
		if (fate == RECEIPT_CONFIRMED)
			buf_printf(&line, "OK %llu\n", (unsigned long long)n);
		else if (fate == RECEIPT_SHUTDOWN)
			buf_printf(&line, "ERR %s pubrelayd is stopping; retry "
			    "later\n", PROTO_E_SHUTDOWN);
		else
			buf_appends(&line, "TIMEOUT\n");
	} else if (fate == RECEIPT_CONFIRMED)
		buf_printf(&line, "CONFIRMED %s\n", sr->mid);
	else if (fate == RECEIPT_PARKED)
		session_parked_line(&line, sr->mid, strlen(sr->mid), reason);
	else
		buf_printf(&line, "TIMEOUT %s\n", sr->mid);
	buf_append(&line, "", 1);
	sr->line = xstrdup(line.data);
	buf_free(&line);
	if (s->telling || TAILQ_FIRST(&s->rq) != sr)
		return;
	/* The first in line: it and what follows go out now. */
	session_rq_flush(s);
	session_write_now(s);
	if (s->stalled || s->pending > 0)
		return;
	if (s->backlogged)
		session_catch_up(s);
	else
		session_maybe_done(s);
}

/* A reply that waits for a fate: the ones after it queue behind it. */
static struct sreceipt *
session_receipt_add(struct session *s, int wait, const char *mid)
{
	struct sreceipt	*sr = xcalloc(1, sizeof(*sr));

	sr->s = s;
	sr->wait = wait;
	if (mid != NULL)
		snprintf(sr->mid, sizeof(sr->mid), "%s", mid);
	if ((sr->after = evbuffer_new()) == NULL)
		abort();
	if (!TAILQ_EMPTY(&s->rq))
		s->rq_sealed += evbuffer_get_length(TAILQ_LAST(&s->rq,
		    sreceipts)->after);
	TAILQ_INSERT_TAIL(&s->rq, sr, entry);
	s->nrq++;
	return sr;
}

/* WAIT: everything committed so far confirmed or parked. */
static void
session_wait(struct session *s, unsigned ms)
{
	struct sreceipt	*sr = session_receipt_add(s, 1, NULL);

	s->telling = 1;
	sr->rc = receipt_wait_upto(ingress_receipts(s->ing),
	    ingress_committed_id(s->ing), ms, session_receipt_cb, sr);
	s->telling = 0;
	session_rq_flush(s);
}

/* After the client's EOF: close once every request has been answered. */
static void
session_maybe_done(struct session *s)
{
	if (s->closing || s->pending > 0 || !TAILQ_EMPTY(&s->rq))
		return;
	if (s->draining) {
		/* Say why the next request, if any, went unanswered. */
		if (evbuffer_get_length(bufferevent_get_input(s->bev)) > 0 &&
		    s->skip == 0)
			session_error(s, PROTO_E_SHUTDOWN, "pubrelayd is "
			    "stopping; retry later");
		session_close_after_flush(s);
	} else if (s->eof && !s->stalled)
		session_close_after_flush(s);
}

/*
 * The client does not read its replies: stop reading its requests until
 * the output drains to half of max_buffer (session_write_cb).
 */
static void
session_backlog(struct session *s)
{
	if (s->backlogged)
		return;
	s->backlogged = 1;
	log_debug("%s: over max_buffer of unread replies; not reading "
	    "until it catches up", s->who);
	bufferevent_disable(s->bev, EV_READ);
	bufferevent_setwatermark(s->bev, EV_WRITE, s->max_buffer / 2, 0);
}

static void
session_process(struct session *s)
{
	struct evbuffer	*in = bufferevent_get_input(s->bev);
	struct evbuffer	*out;
	const char	*buf;
	size_t		 len, consumed, n;
	int		 rc;

	if (s->draining) {
		session_maybe_done(s);
		return;
	}
	while (!s->closing && !s->stalled) {
		if (session_queued(s) > s->max_buffer) {
			session_backlog(s);
			return;
		}
		len = evbuffer_get_length(in);
		if (s->skip > 0) {
			n = len < s->skip ? len : s->skip;
			evbuffer_drain(in, n);
			s->skip -= n;
			if (s->skip > 0) {
				if (s->eof)	/* the body will never come */
					session_close_after_flush(s);
				return;
			}
			continue;
		}
		if (len == 0 || (s->need > 0 && len < s->need)) {
			session_maybe_done(s);
			return;
		}
		buf = (const char *)evbuffer_pullup(in, -1);
		rc = proto_parse(buf, len, &s->lim, &s->req, &consumed);
		switch (rc) {
		case PROTO_INCOMPLETE:
			s->need = s->req.need;
			session_maybe_done(s);
			return;
		case PROTO_DONE:
			s->need = 0;
			if (s->req.verb == PROTO_PUB) {
				session_pub(s, &s->req.pub);
				evbuffer_drain(in, consumed);
				break;
			}
			if (session_must_wait(s))
				return;
			switch (s->req.verb) {
			case PROTO_PING:
				session_reply(s, "PONG\n");
				break;
			case PROTO_STATS:
				session_stats(s);
				break;
			case PROTO_RESET:
				s->refused = 0;
				session_reply(s, "OK\n");
				break;
			case PROTO_WAIT:
				session_wait(s, s->req.wait_ms);
				break;
			case PROTO_STATUS:
				session_status(s, &s->req.status_mid);
				break;
			case PROTO_DEAD:
				/* Runs between group commits, never inside. */
				out = session_out(s);
				n = session_queued(s);
				if (dead_request(ingress_dead(s->ing), s,
				    &s->req, out, n < s->max_buffer ?
				    s->max_buffer - n : 0) != 0) {
					s->stalled = 1;
					ingress_wait_first(s->ing, s);
					return;
				}
				break;
			default:
				break;
			}
			evbuffer_drain(in, consumed);
			break;
		case PROTO_BAD:
			s->need = 0;
			if (session_must_wait(s))
				return;
			session_error(s, s->req.err_code, s->req.err);
			if (s->req.verb == PROTO_PUB) {
				s->refused = 1;	/* a refused PUB */
				ingress_count_refused(s->ing);
			}
			n = consumed < len ? consumed : len;
			evbuffer_drain(in, n);
			s->skip = consumed - n;
			break;
		case PROTO_FATAL:
		default:
			if (session_must_wait(s))
				return;
			log_info("%s: %s; closing the connection", s->who,
			    s->req.err);
			session_error(s, s->req.err_code ? s->req.err_code :
			    PROTO_E_PROTO, s->req.err);
			session_close_after_flush(s);
			return;
		}
	}
}

/*
 * Release the held replies.  When the transaction failed, every held OK
 * becomes an error (the first names the cause, the rest are SKIPPED); held
 * refusals stay as they are.
 */
void
session_committed(void *arg, int ok, const char *code, const char *err)
{
	struct session	*s = arg;
	char		*line;
	size_t		 n;
	int		 first = 1;

	s->telling = 1;
	if (ok && s->nconfirms == 0)
		evbuffer_add_buffer(session_out(s), s->held);
	else if (ok) {
		/* The OKs of PUBs with "confirm:" become receipts. */
		size_t		 k = 0, no = 0;
		struct sreceipt	*sr;
		struct sconfirm	*c;

		while ((line = evbuffer_readln(s->held, &n,
		    EVBUFFER_EOL_LF)) != NULL) {
			c = k < s->nconfirms ? &s->confirms[k] : NULL;
			if (c != NULL && c->line == no &&
			    strncmp(line, "OK ", 3) == 0) {
				sr = session_receipt_add(s, 0, line + 3);
				sr->rc = receipt_wait_id(
				    ingress_receipts(s->ing), c->id, c->ms,
				    session_receipt_cb, sr);
				k++;
			} else
				evbuffer_add_printf(session_out(s), "%s\n",
				    line);
			free(line);
			no++;
		}
	} else {
		while ((line = evbuffer_readln(s->held, &n,
		    EVBUFFER_EOL_LF)) != NULL) {
			if (strncmp(line, "OK", 2) == 0) {
				evbuffer_add_printf(session_out(s), "ERR %s %s\n",
				    first ? code : PROTO_E_SKIPPED,
				    first ? err : SESSION_SKIPPED_TEXT);
				if (first)
					ingress_count_refused(s->ing);
				first = 0;
				s->refused = 1;
			} else
				evbuffer_add_printf(session_out(s), "%s\n", line);
			free(line);
		}
	}
	s->telling = 0;
	s->nconfirms = 0;
	s->held_lines = 0;
	session_rq_flush(s);
	/* The answers went durable just now: send them at once. */
	session_write_now(s);
	s->pending = 0;
	if (s->stalled) {
		s->stalled = 0;
		session_process(s);
	} else
		session_maybe_done(s);
}

/*
 * libevent 2.1 reads at most 4096 bytes per read callback, whatever
 * bufferevent_set_max_single_read() says (EVBUFFER_MAX_READ), and a loop
 * turn runs one read callback per client and then the group commit: a
 * client sending 4 KiB messages had one message per commit (one fsync
 * each).  So read what else is waiting, up to SESSION_READ_MAX, here.  EOF
 * and errors are left to the bufferevent, which sees them on its next read
 * (the fd stays readable).
 */
static void
session_read_more(struct session *s)
{
	struct evbuffer		*in = bufferevent_get_input(s->bev);
	struct evbuffer_iovec	 vec[SESSION_READ_IOV];
	struct iovec		 iov[SESSION_READ_IOV];
	size_t			 have = evbuffer_get_length(in), room, left;
	ssize_t			 r;
	int			 n, i;

	room = SESSION_READ_MAX;
	if (have >= s->in_max)
		return;
	if (room > s->in_max - have)
		room = s->in_max - have;
	/* The bufferevent keeps the input's end frozen outside its reads. */
	evbuffer_unfreeze(in, 0);
	n = evbuffer_reserve_space(in, (ev_ssize_t)room, vec,
	    SESSION_READ_IOV);
	if (n <= 0) {
		evbuffer_freeze(in, 0);
		return;
	}
	for (i = 0; i < n; i++) {
		iov[i].iov_base = vec[i].iov_base;
		iov[i].iov_len = vec[i].iov_len;
	}
	do
		r = readv(bufferevent_getfd(s->bev), iov, n);
	while (r == -1 && errno == EINTR);
	if (r <= 0)
		evbuffer_commit_space(in, NULL, 0);
	else {
		for (i = 0, left = (size_t)r; i < n && left > 0; i++) {
			if (vec[i].iov_len > left)
				vec[i].iov_len = left;
			left -= vec[i].iov_len;
		}
		evbuffer_commit_space(in, vec, i);
	}
	evbuffer_freeze(in, 0);
}

static void
session_read_cb(struct bufferevent *bev, void *arg)
{
	struct session	*s = arg;

	(void)bev;
	if (!s->closing && !s->draining && !s->eof)
		session_read_more(s);
	session_process(s);
}

static void
session_write_cb(struct bufferevent *bev, void *arg)
{
	struct session	*s = arg;

	if (s->closing) {
		if (evbuffer_get_length(bufferevent_get_output(bev)) == 0)
			session_free(s, "closed by daemon");
		return;
	}
	session_catch_up(s);
}

/* Nothing but the empty lines the protocol allows between requests. */
static int
session_only_blanks(struct evbuffer *in)
{
	size_t		 len = evbuffer_get_length(in), i;
	const char	*p;

	if (len == 0)
		return 1;
	if (len > PROTO_MAX_LINE + 2)	/* the parser refuses that many */
		return 0;
	p = (const char *)evbuffer_pullup(in, -1);
	for (i = 0; i < len; i++)
		if (p[i] != '\n' && p[i] != '\r')
			return 0;
	return 1;
}

/*
 * The read timeout ran out.  Only a request left half-sent is the client's
 * fault; between requests, or while we hold the session (commit pending,
 * replies unread), the timer just starts again.
 */
static void
session_timeout(struct session *s)
{
	char	msg[128];

	if (s->closing || s->draining || s->eof)
		return;
	if (s->stalled || s->backlogged || (s->skip == 0 &&
	    session_only_blanks(bufferevent_get_input(s->bev)))) {
		bufferevent_enable(s->bev, EV_READ);
		return;
	}
	log_info("%s: partial request idle for %llu ms; closing the "
	    "connection", s->who, (unsigned long long)s->idle_ms);
	snprintf(msg, sizeof(msg), "idle for %llu ms in the middle of a "
	    "request (idle_timeout); closing", (unsigned long long)s->idle_ms);
	session_error(s, PROTO_E_PROTO, msg);
	session_close_after_flush(s);
}

static void
session_event_cb(struct bufferevent *bev, short what, void *arg)
{
	struct session	*s = arg;

	(void)bev;
	if (what & BEV_EVENT_TIMEOUT) {
		session_timeout(s);
		return;
	}
	if ((what & BEV_EVENT_EOF) && !s->closing) {
		/* A half-close still gets every reply (e.g. socat, shell pipes). */
		s->eof = 1;
		bufferevent_disable(s->bev, EV_READ);
		session_process(s);
	} else if (what & BEV_EVENT_EOF)
		session_free(s, "end of input");
	else if (what & BEV_EVENT_ERROR)
		session_free(s, strerror(EVUTIL_SOCKET_ERROR()));
}

void
session_drain_all(void)
{
	struct session	*s;

	TAILQ_FOREACH(s, &sessions, entry) {
		s->draining = 1;
		bufferevent_disable(s->bev, EV_READ);
	}
}

void
session_close_all(void)
{
	struct session	*s, *next;

	for (s = TAILQ_FIRST(&sessions); s != NULL; s = next) {
		next = TAILQ_NEXT(s, entry);
		s->draining = 1;
		session_maybe_done(s);
	}
}
