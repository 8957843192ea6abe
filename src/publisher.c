/*
 * publisher.c: the AMQP side of the relay, in its own thread.
 *
 * rabbitmq-c 0.11 blocks in login, RPCs and (under backpressure) publish, so
 * the connection lives here, away from the ingress loop: a hung broker delays
 * nothing but this thread.  States (enum link_state) change only through
 * pub_enter_state(), which logs each transition once.
 *
 * The confirm window (slots, acks and nacks, returns, go-back-N, probing)
 * is pure code in window.c; window.h describes it.  This file feeds it
 * what the broker says and does what it asks (struct window_ops).  The
 * connection is opened by link.c (TCP or TLS, login, confirm channel).
 */
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <poll.h>
#include <netinet/in.h>
#include <netinet/tcp.h>

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <amqp.h>
#include <event2/event.h>

#include "backoff.h"
#include "config.h"
#include "link.h"
#include "log.h"
#include "outbox.h"
#include "protocol.h"
#include "amqpframe.h"
#include "publisher.h"
#include "stats.h"
#include "util.h"
#include "window.h"

#define PUB_CHANNEL		1
#define PUB_FETCH_MAX		256		/* rows per outbox read */
#define PUB_STOP_GRACE_MS	1000		/* wait for confirms at stop */
#define PUB_HEALTHY_MS		5000		/* link up this long: reset backoff */
#define PUB_REASON_MAX		256
#define PUB_WBUF_FLUSH		(256 * 1024)	/* write the batch at this size */
#define PUB_COPY_MAX		(16 * 1024)	/* bigger bodies: not copied */
#define PUB_STAGE_BYTES		(256 * 1024)	/* rows read at a time */
#define PUB_NOTIFY_MS		20	/* confirmed ids reach main so late */
/* A generated message-id: "<instance>-<id>", an id of up to 19 digits. */
#define PUB_MID_MAX		(OUTBOX_INSTANCE_LEN + 1 + 19 + 1)
#define PUB_WATCHDOG_MS		1000	/* the main thread looks at the link */

/* A row read from the outbox, its bytes in p->stage. */
struct pub_staged {
	int64_t		 id;
	int64_t		 created_ms;
	size_t		 poff, plen;
	size_t		 boff, blen;
};

struct pub_park {
	int64_t		 id;
	unsigned	 attempts;
	char		 reason[256];
};

enum ret_state {
	RET_NONE,		/* not inside a basic.return */
	RET_HEADER,		/* method seen, content header next */
	RET_BODY,		/* body frames until ret_left is 0 */
};

struct publisher {
	/* Set before the thread starts, then read-only. */
	const struct config	*cf;
	char			 instance[OUTBOX_INSTANCE_LEN + 1];
	struct relay_stats	*st;
	publisher_confirmed_fn	 confirmed_cb;
	publisher_park_fn	 park_cb;
	void			*cb_arg;
	pthread_t		 thread;
	struct event_base	*base;
	struct event		*ev_wake;
	struct event		*ev_confirmed;	/* on the main base */
	struct event		*ev_watchdog;	/* on the main base */

	/* Shared with the main thread. */
	atomic_int		 stopping;
	atomic_int		 eager;		/* receipts wait: no batching */
	atomic_int		 sockfd;	/* a dup of the socket: shutdown() */
	/*
	 * The link as the watchdog sees it.  The fd is cleared under the lock
	 * before it is closed, so the watchdog never touches a reused one.
	 */
	pthread_mutex_t		 link_lock;
	int			 watched;	/* logged in: judge the silence */
	int			 window_held;	/* TCP_USER_TIMEOUT off */
	unsigned		 cut_silent_ms;	/* the watchdog gave up the link */
	int			 cut_outq;	/* bytes that waited then */
	atomic_int_fast64_t	 confirmed_shared;
	atomic_size_t		 frame_max_shared; /* the last negotiated */
	pthread_mutex_t		 park_lock;	/* parks, for the main thread */
	struct pub_park		*parks;
	size_t			 nparks, capparks;

	/* Publisher thread only. */
	struct event		*ev_read;
	struct event		*ev_tick;
	struct event		*ev_retry;
	struct event		*ev_grace;
	struct event		*ev_resume;	/* end of a go-back pause */
	struct event		*ev_notify;	/* tell main what is confirmed */
	enum link_state		 state;
	struct outbox_reader	*reader;
	amqp_connection_state_t	 conn;
	int			 direct;	/* plain TCP: batched writes */
	size_t			 frame_max;	/* negotiated */
	struct buf		 wbuf;		/* encoded frames not yet sent */
	struct buf		 stage;		/* rows read, not yet sent */
	struct pub_staged	*staged;
	size_t			 nstaged, capstaged;
	uint64_t		 stage_room;	/* bytes left to read */
	int			 stage_full;	/* the read stopped for room */
	int			 uri_idx;	/* into order[] */
	int			 order[CONFIG_MAX_URIS]; /* uri_order */
	struct backoff		 backoff;
	struct window		 win;		/* the confirm window */
	struct timespec		 connected_at;
	int			 healthy;
	unsigned		 failures;	/* attempts since last success */
	/* per uri (config index): the last failure logged for it */
	char			 last_logged[CONFIG_MAX_URIS][256];
	enum ret_state		 ret_state;
	uint64_t		 ret_left;
	uint16_t		 ret_code;
	char			 ret_text[128];
	char			 ret_exchange[PROTO_SHORTSTR_MAX + 1];
	char			 ret_rkey[PROTO_SHORTSTR_MAX + 1];
	uint64_t		 ret_desthash;	/* of its exchange and key */
	amqp_table_entry_t	 hdrs[PROTO_MAX_HEADERS];
	int			 ever_connected;
	int			 read_logged;	/* a failed outbox read, logged */
};

static const char *
pub_state_name(enum link_state s)
{
	return proto_link_state((int)s);
}

static struct timeval
pub_tv(uint64_t ms)
{
	struct timeval	tv;

	tv.tv_sec = (time_t)(ms / 1000);
	tv.tv_usec = (suseconds_t)(ms % 1000) * 1000;
	return tv;
}

static int64_t
pub_now_ms(void)
{
	struct timespec	ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* The STATS "state" names of protocol.c, in the order of enum link_state. */
_Static_assert(LINK_STOPPED + 1 == PROTO_LINK_STATES,
    "enum link_state and proto_link_states[] differ");

/* Where a message went, as a basic.return names it. */
static uint64_t
pub_dest_hash(amqp_bytes_t exchange, amqp_bytes_t rkey)
{
	uint64_t	len = exchange.len;
	uint64_t	h = util_fnv1a(UTIL_FNV_INIT, &len, sizeof(len));

	h = util_fnv1a(h, exchange.bytes, exchange.len);
	return util_fnv1a(h, rkey.bytes, rkey.len);
}

/*
 * What matches a basic.return to a message in flight: its message-id, where
 * it went and its size.  Two in flight alike in all of these are told apart
 * by republishing one at a time (window_match_return()).
 */
static uint64_t
pub_return_hash(amqp_bytes_t mid, uint64_t desthash, uint64_t body_size)
{
	uint64_t	h = util_fnv1a(UTIL_FNV_INIT, mid.bytes, mid.len);

	h = util_fnv1a(h, &desthash, sizeof(desthash));
	return util_fnv1a(h, &body_size, sizeof(body_size));
}

static void
pub_set_shared_string(struct publisher *p, char *dst, size_t n, const char *s)
{
	pthread_mutex_lock(&p->st->lock);
	snprintf(dst, n, "%s", s);
	pthread_mutex_unlock(&p->st->lock);
}

/* The one way to change state; logs a transition once. */
static void
pub_enter_state(struct publisher *p, enum link_state s, const char *why)
{
	if (p->state == s)
		return;
	if (s == LINK_BLOCKED)
		atomic_store(&p->st->blocked_since, pub_now_ms());
	else if (p->state == LINK_BLOCKED) {
		atomic_fetch_add(&p->st->blocked_ms, (uint64_t)(pub_now_ms() -
		    atomic_load(&p->st->blocked_since)));
		atomic_store(&p->st->blocked_since, 0);
	}
	/*
	 * disconnected <-> connecting cycles of a retry storm are logged at
	 * debug; failures are logged by pub_fail() when their text changes.
	 */
	if (s == LINK_CONNECTING || (s == LINK_DISCONNECTED &&
	    p->state == LINK_CONNECTING))
		log_debug("broker link: %s -> %s%s%s", pub_state_name(p->state),
		    pub_state_name(s), why ? ": " : "", why ? why : "");
	else
		log_notice("broker link: %s -> %s%s%s", pub_state_name(p->state),
		    pub_state_name(s), why ? ": " : "", why ? why : "");
	p->state = s;
	atomic_store(&p->st->link_state, s);
}

/*
 * uri_order = shuffle: a seed that differs from host to host but stays the
 * same across restarts of one host, so each host keeps its preferred node
 * and a fleet's connections spread over the cluster.  From the host name and
 * /etc/machine-id (either may be missing or cloned; together they rarely are).
 */
static uint64_t
pub_host_seed(void)
{
	char		 buf[256];
	uint64_t	 h = UTIL_FNV_INIT;
	ssize_t		 n;
	int		 fd;

	if (gethostname(buf, sizeof(buf)) == 0) {
		buf[sizeof(buf) - 1] = '\0';
		h = util_fnv1a(h, buf, strlen(buf));
	}
	if ((fd = open("/etc/machine-id", O_RDONLY | O_CLOEXEC)) != -1) {
		if ((n = read(fd, buf, sizeof(buf))) > 0)
			h = util_fnv1a(h, buf, (size_t)n);
		close(fd);
	}
	return h;
}

/* Fix the order in which the URIs are tried, and say it once. */
static void
pub_init_order(struct publisher *p)
{
	struct buf	 b;
	char		 uri[256];
	int		 i;

	if (p->cf->uri_shuffle)
		util_shuffle_order(p->order, p->cf->nuris, pub_host_seed());
	else
		for (i = 0; i < p->cf->nuris; i++)
			p->order[i] = i;
	if (p->cf->nuris < 2)
		return;
	buf_init(&b);
	for (i = 0; i < p->cf->nuris; i++) {
		util_mask_uri(p->cf->uris[p->order[i]], uri, sizeof(uri));
		buf_printf(&b, "%s%s", i > 0 ? ", " : "", uri);
	}
	log_info("broker uris, in the order tried (%s): %s",
	    p->cf->uri_shuffle ? "shuffled for this host" : "as written",
	    b.data);
	buf_free(&b);
}

static void
pub_masked_uri(struct publisher *p, char *out, size_t n)
{
	util_mask_uri(p->cf->uris[p->order[p->uri_idx]], out, n);
}

static void
pub_teardown(struct publisher *p)
{
	if (p->ev_read != NULL) {
		event_free(p->ev_read);
		p->ev_read = NULL;
	}
	if (p->conn != NULL) {
		int	wfd;

		pthread_mutex_lock(&p->link_lock);
		if ((wfd = atomic_exchange(&p->sockfd, -1)) != -1)
			close(wfd);
		p->watched = 0;
		p->window_held = 0;
		p->cut_silent_ms = 0;
		pthread_mutex_unlock(&p->link_lock);
		amqp_destroy_connection(p->conn);
		p->conn = NULL;
	}
	buf_reset(&p->wbuf);	/* frames of forgotten tags: never sent */
	window_lost(&p->win);
	p->ret_state = RET_NONE;
	evtimer_del(p->ev_resume);
}

/*
 * The link failed: drop it and schedule a reconnect.  The error is logged
 * once per uri and distinct text, so brokers that stay down log one line
 * each, not one per retry, however the attempts alternate between them.
 */
static void
pub_fail(struct publisher *p, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));

static void
pub_fail(struct publisher *p, const char *fmt, ...)
{
	char		 why[256], uri[256], *last;
	struct timeval	 tv;
	uint64_t	 delay;
	va_list		 ap;
	unsigned	 silent;
	int		 outq;
	int		 was_up = p->state == LINK_CONNECTED ||
			    p->state == LINK_BLOCKED;
	int		 was_connecting = p->state == LINK_CONNECTING;

	va_start(ap, fmt);
	vsnprintf(why, sizeof(why), fmt, ap);
	va_end(ap);
	/* The watchdog's reason, not the broken socket it left behind. */
	pthread_mutex_lock(&p->link_lock);
	silent = p->cut_silent_ms;
	outq = p->cut_outq;
	pthread_mutex_unlock(&p->link_lock);
	if (silent > 0)
		snprintf(why, sizeof(why), "broker sent nothing for %u.%u s "
		    "(%s) while %d bytes waited to be sent: giving up the link",
		    silent / 1000, silent % 1000 / 100, p->cf->heartbeat ?
		    "2 x heartbeat" : "60 s, heartbeat 0", outq);

	pub_masked_uri(p, uri, sizeof(uri));
	last = p->last_logged[p->order[p->uri_idx]];
	if (strcmp(why, last) != 0) {
		log_warnx("broker %s: %s", uri, why);
		snprintf(last, sizeof(p->last_logged[0]), "%s", why);
	} else
		log_debug("broker %s: %s (again)", uri, why);
	pub_set_shared_string(p, p->st->last_error, sizeof(p->st->last_error),
	    why);

	pub_teardown(p);
	pub_enter_state(p, LINK_DISCONNECTED, was_up ? why : NULL);
	if (atomic_load(&p->stopping)) {
		event_base_loopbreak(p->base);
		return;
	}

	/*
	 * After losing a working link start again at the first URI, unless
	 * that is the one that just failed (a node that is down, or that takes
	 * connections but never confirms): then at the second.
	 */
	if (was_up)
		p->uri_idx = p->uri_idx == 0 && p->cf->nuris > 1 ? 1 : 0;
	else
		p->uri_idx = (p->uri_idx + 1) % p->cf->nuris;
	if (was_connecting)
		p->failures++;
	if (p->healthy)
		backoff_reset(&p->backoff);
	p->healthy = 0;
	delay = backoff_next(&p->backoff);
	tv = pub_tv(delay);
	evtimer_add(p->ev_retry, &tv);
}

/*
 * TCP_USER_TIMEOUT is there for a dead peer.  A live broker that stops
 * reading (connection.blocked in a resource alarm, which can last hours, or
 * plain overload) closes its receive window and answers the kernel's window
 * probes, yet Linux aborts such a connection once the window has stayed
 * closed for the user timeout: the relay would drop the link and send a
 * whole window again every 2 x heartbeat for as long as the alarm lasts.
 * So, from the watchdog: while everything sent has been acknowledged, bytes
 * wait in the send queue and the probes are being answered, the timeout is
 * off; it is back as soon as one of these stops holding (a peer that stops
 * answering the probes too is dead: the next probe then ends the
 * connection).  A stopped broker's kernel answers the probes as well: the
 * watchdog tells it apart by its silence.  Under link_lock.
 */
#define PUB_PROBES_UNANSWERED	3

static void
pub_watch_window(struct publisher *p, int fd, const struct tcp_info *ti,
    int outq)
{
	unsigned int	uto;
	int		held;

	held = ti->tcpi_unacked == 0 && outq > 0 &&
	    ti->tcpi_probes < PUB_PROBES_UNANSWERED;
	if (held == p->window_held)
		return;
	uto = held ? 0 : link_user_timeout(p->cf);
	if (setsockopt(fd, IPPROTO_TCP, TCP_USER_TIMEOUT, &uto,
	    sizeof(uto)) == -1)
		return;
	p->window_held = held;
	if (held)
		log_debug("broker holds its receive window closed (%d bytes "
		    "waiting): no TCP_USER_TIMEOUT while it answers", outq);
	else
		log_debug("broker window: TCP_USER_TIMEOUT %u ms again", uto);
}

/*
 * Main thread, every PUB_WATCHDOG_MS.  The publisher thread can wait inside
 * a library write with no deadline: rabbitmq-c 0.11 polls for room for
 * ever in amqp_basic_publish() (TLS) and in the heartbeat it sends from
 * amqp_simple_wait_frame_noblock(), and checks no heartbeat meanwhile.  So
 * the link is judged from here, from the kernel's view of the socket, with
 * no AMQP: bytes wait to be sent and the broker sent nothing at all (not
 * even a heartbeat, which a broker in a resource alarm goes on sending)
 * for link_user_timeout(): the broker is hung or gone.  shutdown(2) makes
 * whatever the publisher waits in fail at once (as at stop), and pub_fail()
 * logs this reason.  The bytes received wait in the kernel's receive queue
 * while the publisher is stuck, so tcpi_last_data_recv sees them without
 * reading the socket.  Bounded: while bytes wait, the link is given up at
 * most link_user_timeout() + PUB_WATCHDOG_MS after the broker's last byte,
 * whatever call the publisher waits in, plain TCP or TLS; with nothing
 * waiting no write can hold the publisher, and its tick drains, where the
 * library checks the heartbeat.
 */
static void
pub_watchdog_cb(evutil_socket_t unused, short what, void *arg)
{
	struct publisher	*p = arg;
	struct tcp_info		 ti;
	struct linger		 rst = { 1, 0 };
	socklen_t		 len = sizeof(ti);
	int			 fd, outq;

	(void)unused;
	(void)what;
	pthread_mutex_lock(&p->link_lock);
	fd = atomic_load(&p->sockfd);
	if (fd == -1 || p->cut_silent_ms > 0 ||
	    getsockopt(fd, IPPROTO_TCP, TCP_INFO, &ti, &len) == -1 ||
	    ioctl(fd, TIOCOUTQ, &outq) == -1)
		goto out;
	pub_watch_window(p, fd, &ti, outq);
	if (p->watched && outq > 0 &&
	    ti.tcpi_last_data_recv >= link_user_timeout(p->cf)) {
		p->cut_silent_ms = ti.tcpi_last_data_recv;
		p->cut_outq = outq;
		/* What still waits must not reach a broker that resumes. */
		setsockopt(fd, SOL_SOCKET, SO_LINGER, &rst, sizeof(rst));
		shutdown(fd, SHUT_RDWR);
	}
 out:
	pthread_mutex_unlock(&p->link_lock);
}

static void pub_read_cb(evutil_socket_t, short, void *);
static void pub_fill(struct publisher *p);

/*
 * The main thread's copy of the socket (watchdog, stop): rabbitmq-c closes
 * its own descriptor by itself on some failures (a heartbeat or RPC
 * timeout), and the number could be another file's before pub_teardown()
 * runs.  A duplicate stays this socket until pub_teardown() closes it, and
 * shutdown() through it ends the library's waits as well.  Taken before
 * the login, which can wait on a hung broker.
 */
static void
pub_opened_cb(void *arg, int fd)
{
	struct publisher	*p = arg;

	pthread_mutex_lock(&p->link_lock);
	atomic_store(&p->sockfd, fcntl(fd, F_DUPFD_CLOEXEC, 0));
	pthread_mutex_unlock(&p->link_lock);
}

static void
pub_connect(struct publisher *p)
{
	struct link_params	 lp;
	char			 uri[256], why[256];
	int			 fd, tls;

	pub_enter_state(p, LINK_CONNECTING, NULL);
	pub_masked_uri(p, uri, sizeof(uri));
	pub_set_shared_string(p, p->st->broker, sizeof(p->st->broker), uri);

	p->conn = amqp_new_connection();
	if (p->conn == NULL) {
		pub_fail(p, "out of memory creating the connection");
		return;
	}
	memset(&lp, 0, sizeof(lp));
	lp.cf = p->cf;
	lp.uri = p->cf->uris[p->order[p->uri_idx]];
	lp.channel = PUB_CHANNEL;
	lp.opened_cb = pub_opened_cb;
	lp.arg = p;
	if (link_open(p->conn, &lp, &tls, why, sizeof(why)) == -1) {
		pub_fail(p, "%s", why);
		return;
	}
	fd = amqp_get_sockfd(p->conn);
	pthread_mutex_lock(&p->link_lock);
	p->watched = 1;
	pthread_mutex_unlock(&p->link_lock);
	/* TLS goes through the library; plain TCP is written in batches. */
	p->direct = !tls;
	p->frame_max = (size_t)amqp_get_frame_max(p->conn);
	atomic_store(&p->frame_max_shared, p->frame_max);
	buf_reset(&p->wbuf);

	p->ev_read = event_new(p->base, fd, EV_READ | EV_PERSIST, pub_read_cb, p);
	event_add(p->ev_read, NULL);
	clock_gettime(CLOCK_MONOTONIC, &p->connected_at);
	if (p->failures > 0)
		log_notice("connected to broker %s after %u failed attempt%s",
		    uri, p->failures, p->failures == 1 ? "" : "s");
	else
		log_notice("connected to broker %s", uri);
	p->failures = 0;
	memset(p->last_logged, 0, sizeof(p->last_logged));
	if (p->ever_connected)
		atomic_fetch_add(&p->st->reconnects, 1);
	p->ever_connected = 1;
	pub_enter_state(p, LINK_CONNECTED, NULL);
	pub_fill(p);
}

/*
 * The main thread needs the confirmed prefix only to delete rows, which it
 * batches every 100 ms: waking it for every confirm cost a context switch
 * per few messages at small windows (perf of a window-16 drain).  So the
 * value is handed over at most every PUB_NOTIFY_MS, unless clients wait
 * for confirms (p->eager); parks go at once (pub_park_cb), and the value
 * stored here is what a stop reads.
 */
static void
pub_confirmed_to_cb(void *arg, int64_t id)
{
	struct publisher	*p = arg;
	struct timeval		 tv = { 0, PUB_NOTIFY_MS * 1000 };

	atomic_store(&p->confirmed_shared, id);
	if (atomic_load(&p->eager))
		event_active(p->ev_confirmed, EV_READ, 0);
	else if (!evtimer_pending(p->ev_notify, NULL))
		evtimer_add(p->ev_notify, &tv);
}

static void
pub_notify_cb(evutil_socket_t fd, short what, void *arg)
{
	struct publisher	*p = arg;

	(void)fd;
	(void)what;
	event_active(p->ev_confirmed, EV_READ, 0);
}

static void
pub_mark_healthy(struct publisher *p)
{
	if (!p->healthy) {
		p->healthy = 1;
		backoff_reset(&p->backoff);
	}
}

/* The window parked id: hand it to the main thread at once. */
static void
pub_park_cb(void *arg, int64_t id, unsigned attempts, const char *reason)
{
	struct publisher	*p = arg;
	struct pub_park		*pk;

	pthread_mutex_lock(&p->park_lock);
	if (p->nparks == p->capparks) {
		p->capparks = p->capparks ? p->capparks * 2 : 8;
		p->parks = xrealloc(p->parks, p->capparks * sizeof(*p->parks));
	}
	pk = &p->parks[p->nparks++];
	pk->id = id;
	pk->attempts = attempts;
	snprintf(pk->reason, sizeof(pk->reason), "%s", reason);
	pthread_mutex_unlock(&p->park_lock);
	atomic_fetch_add(&p->st->parked, 1);
	event_active(p->ev_confirmed, EV_READ, 0);
}

static void
pub_progress_cb(void *arg)
{
	pub_mark_healthy(arg);
}

static void
pub_resume_cb(evutil_socket_t fd, short what, void *arg)
{
	struct publisher	*p = arg;

	(void)fd;
	(void)what;
	window_resume(&p->win);
	pub_fill(p);
}

/* The window went back: publish nothing for ms, then go on. */
static void
pub_pause_cb(void *arg, uint64_t ms)
{
	struct publisher	*p = arg;
	struct timeval		 tv = pub_tv(ms);

	buf_reset(&p->wbuf);	/* frames of forgotten tags: never sent */
	evtimer_add(p->ev_resume, &tv);
}

/* basic.ack or basic.nack.  Returns 0, or -1 after pub_fail(). */
static int
pub_resolve(struct publisher *p, uint64_t tag, int multiple, int nack)
{
	if (window_resolve(&p->win, tag, multiple, nack, pub_now_ms()) == -1) {
		pub_fail(p, "broker confirmed unknown delivery tag %" PRIu64,
		    tag);
		return -1;
	}
	return 0;
}

/* Open the channel in confirm mode.  Returns 0, or -1 after pub_fail(). */
static int
pub_channel_open(struct publisher *p)
{
	char	why[256];

	if (link_channel_open(p->conn, PUB_CHANNEL, why, sizeof(why)) == -1) {
		pub_fail(p, "%s", why);
		return -1;
	}
	return 0;
}

/* After channel.close: tell the window, then open the channel again. */
static void
pub_channel_recover(struct publisher *p)
{
	window_recover(&p->win);
	buf_reset(&p->wbuf);	/* frames of forgotten tags: never sent */
	(void)pub_channel_open(p);
}

/*
 * Nacks keep coming and nothing is confirmed: close the channel and open a
 * new one on the same connection.  Nothing is in flight (the window went
 * back), so no confirm is lost with the old channel.
 */
static void
pub_channel_renew(struct publisher *p)
{
	amqp_rpc_reply_t	 r;
	char			 why[256];

	snprintf(why, sizeof(why), "broker nacked %d times in a row with "
	    "nothing confirmed; opening a new channel", WINDOW_NACK_RENEW);
	log_msg(window_episode_prio(&p->win), "%s", why);
	pub_set_shared_string(p, p->st->last_error, sizeof(p->st->last_error),
	    why);
	r = amqp_channel_close(p->conn, PUB_CHANNEL, AMQP_REPLY_SUCCESS);
	if (r.reply_type != AMQP_RESPONSE_NORMAL) {
		pub_fail(p, "channel.close: %s", link_reply_text(r, why,
		    sizeof(why)));
		return;
	}
	window_renewed(&p->win);
	buf_reset(&p->wbuf);
	(void)pub_channel_open(p);
}

static void
pub_copy_bytes(char *dst, size_t n, amqp_bytes_t b)
{
	size_t	len = b.len < n - 1 ? b.len : n - 1;

	memcpy(dst, b.bytes, len);
	dst[len] = '\0';
}

static int
pub_method(struct publisher *p, amqp_method_t *m)
{
	switch (m->id) {
	case AMQP_BASIC_ACK_METHOD: {
		amqp_basic_ack_t *a = m->decoded;

		return pub_resolve(p, a->delivery_tag, a->multiple, 0);
	}
	case AMQP_BASIC_NACK_METHOD: {
		amqp_basic_nack_t *n = m->decoded;

		/* The broker took no responsibility: go back to it. */
		return pub_resolve(p, n->delivery_tag, n->multiple, 1);
	}
	case AMQP_BASIC_RETURN_METHOD: {
		amqp_basic_return_t *r = m->decoded;

		p->ret_state = RET_HEADER;
		p->ret_code = r->reply_code;
		pub_copy_bytes(p->ret_text, sizeof(p->ret_text), r->reply_text);
		pub_copy_bytes(p->ret_exchange, sizeof(p->ret_exchange),
		    r->exchange);
		pub_copy_bytes(p->ret_rkey, sizeof(p->ret_rkey), r->routing_key);
		p->ret_desthash = pub_dest_hash(r->exchange, r->routing_key);
		return 0;
	}
	case AMQP_CONNECTION_BLOCKED_METHOD: {
		amqp_connection_blocked_t *b = m->decoded;
		char why[160];

		snprintf(why, sizeof(why), "%.*s", (int)b->reason.len,
		    (const char *)b->reason.bytes);
		pub_set_shared_string(p, p->st->last_error,
		    sizeof(p->st->last_error), why);
		pub_enter_state(p, LINK_BLOCKED, why);
		return 0;
	}
	case AMQP_CONNECTION_UNBLOCKED_METHOD:
		if (p->state == LINK_BLOCKED) {
			/* Time blocked does not count against confirms. */
			window_restamp(&p->win, pub_now_ms());
			pub_enter_state(p, LINK_CONNECTED, "unblocked");
		}
		return 0;
	case AMQP_CHANNEL_CLOSE_METHOD: {
		amqp_channel_close_t *c = m->decoded;
		amqp_channel_close_ok_t ok = { 0 };
		char why[WINDOW_REASON_MAX];

		/* A message was refused; the connection itself is fine. */
		snprintf(why, sizeof(why), "channel closed by broker: %u %.*s",
		    c->reply_code, (int)c->reply_text.len,
		    (const char *)c->reply_text.bytes);
		pub_set_shared_string(p, p->st->last_error,
		    sizeof(p->st->last_error), why);
		if (amqp_send_method(p->conn, PUB_CHANNEL,
		    AMQP_CHANNEL_CLOSE_OK_METHOD, &ok) != AMQP_STATUS_OK) {
			pub_fail(p, "%s; channel.close-ok failed", why);
			return -1;
		}
		window_channel_closed(&p->win, why);
		return 0;
	}
	case AMQP_CONNECTION_CLOSE_METHOD: {
		amqp_connection_close_t *c = m->decoded;
		amqp_connection_close_ok_t ok = { 0 };
		char why[256];

		snprintf(why, sizeof(why), "connection closed by broker: %u %.*s",
		    c->reply_code, (int)c->reply_text.len,
		    (const char *)c->reply_text.bytes);
		amqp_send_method(p->conn, 0, AMQP_CONNECTION_CLOSE_OK_METHOD, &ok);
		pub_fail(p, "%s", why);
		return -1;
	}
	default:
		pub_fail(p, "unexpected method 0x%08x from broker", m->id);
		return -1;
	}
}

static void
pub_returned(struct publisher *p, amqp_basic_properties_t *bp,
    uint64_t body_size)
{
	char		mid[PROTO_SHORTSTR_MAX + 1] = "?";
	char		reason[PUB_REASON_MAX + 2 * PROTO_SHORTSTR_MAX];
	amqp_bytes_t	midb = amqp_empty_bytes;

	if (bp != NULL && (bp->_flags & AMQP_BASIC_MESSAGE_ID_FLAG)) {
		midb = bp->message_id;
		pub_copy_bytes(mid, sizeof(mid), midb);
	}
	atomic_fetch_add(&p->st->returned, 1);
	snprintf(reason, sizeof(reason), "returned by the broker: %u %s "
	    "(exchange '%s', routing key '%s')", p->ret_code, p->ret_text,
	    p->ret_exchange, p->ret_rkey);
	log_debug("message %s %s", mid, reason);
	window_match_return(&p->win, pub_return_hash(midb, p->ret_desthash,
	    body_size), mid, reason);
}

static int
pub_frame(struct publisher *p, amqp_frame_t *f)
{
	switch (f->frame_type) {
	case AMQP_FRAME_METHOD:
		if (p->ret_state != RET_NONE) {
			pub_fail(p, "protocol error: method inside a returned "
			    "message");
			return -1;
		}
		return pub_method(p, &f->payload.method);
	case AMQP_FRAME_HEADER:
		if (p->ret_state != RET_HEADER) {
			pub_fail(p, "protocol error: unexpected content header");
			return -1;
		}
		pub_returned(p, f->payload.properties.decoded,
		    f->payload.properties.body_size);
		p->ret_left = f->payload.properties.body_size;
		p->ret_state = p->ret_left > 0 ? RET_BODY : RET_NONE;
		return 0;
	case AMQP_FRAME_BODY:
		if (p->ret_state != RET_BODY ||
		    f->payload.body_fragment.len > p->ret_left) {
			pub_fail(p, "protocol error: unexpected content body");
			return -1;
		}
		p->ret_left -= f->payload.body_fragment.len;
		if (p->ret_left == 0)
			p->ret_state = RET_NONE;
		return 0;
	default:
		return 0;	/* heartbeats are handled by the library */
	}
}

/*
 * Read every frame that is ready.  Frames may already sit inside the library
 * while the fd shows nothing, so this runs after every library call.
 */
static int
pub_drain(struct publisher *p)
{
	struct timeval	 zero = { 0, 0 };
	amqp_frame_t	 f;
	int		 rc;

	while (p->conn != NULL) {
		rc = amqp_simple_wait_frame_noblock(p->conn, &f, &zero);
		if (rc == AMQP_STATUS_TIMEOUT)
			break;
		if (rc != AMQP_STATUS_OK) {
			pub_fail(p, "%s", amqp_error_string2(rc));
			return -1;
		}
		if (f.channel != 0 && f.channel != PUB_CHANNEL) {
			pub_fail(p, "frame on unknown channel %u", f.channel);
			return -1;
		}
		if (pub_frame(p, &f) == -1)
			return -1;
		if (p->win.state == WINDOW_CLOSED)
			break;
	}
	if (p->conn != NULL)
		amqp_maybe_release_buffers(p->conn);
	if (p->conn != NULL && p->win.state == WINDOW_CLOSED)
		pub_channel_recover(p);
	else if (p->conn != NULL && p->win.state == WINDOW_RENEW)
		pub_channel_renew(p);
	return p->conn != NULL ? 0 : -1;
}

static amqp_bytes_t
pub_bytes(struct proto_str s)
{
	amqp_bytes_t	b;

	b.len = s.len;
	b.bytes = (void *)(uintptr_t)s.p;
	return b;
}

/*
 * Write iov out in full on the AMQP socket.  The socket is rabbitmq-c's, so
 * this must finish before the library is called again (it would interleave
 * its own frames); a full send buffer is waited for in poll(), which the
 * main thread ends with shutdown(2) on the fd at stop and for a silent
 * broker (pub_watchdog_cb()), and TCP_USER_TIMEOUT ends for a dead peer.
 * Returns 0, or -1 after pub_fail().
 */
static int
pub_writev(struct publisher *p, struct iovec *iov, int n)
{
	struct msghdr	 mh;
	struct pollfd	 pfd;
	ssize_t		 w;
	int		 fd, rc;

	fd = amqp_get_sockfd(p->conn);
	while (n > 0) {
		if (iov->iov_len == 0) {
			iov++, n--;
			continue;
		}
		memset(&mh, 0, sizeof(mh));
		mh.msg_iov = iov;
		mh.msg_iovlen = (size_t)n;
		w = sendmsg(fd, &mh, MSG_NOSIGNAL);
		if (w == -1) {
			if (errno == EINTR)
				continue;
			if (errno != EAGAIN && errno != EWOULDBLOCK) {
				pub_fail(p, "publish: %s", strerror(errno));
				return -1;
			}
			if (atomic_load(&p->stopping)) {
				pub_fail(p, "publish: stopping with the socket "
				    "send buffer full");
				return -1;
			}
			pfd.fd = fd;
			pfd.events = POLLOUT;
			rc = poll(&pfd, 1, 1000);
			if (rc == -1 && errno != EINTR) {
				pub_fail(p, "publish: poll: %s",
				    strerror(errno));
				return -1;
			}
			continue;
		}
		while (n > 0 && (size_t)w >= iov->iov_len) {
			w -= (ssize_t)iov->iov_len;
			iov++, n--;
		}
		if (n > 0) {
			iov->iov_base = (char *)iov->iov_base + w;
			iov->iov_len -= (size_t)w;
		}
	}
	return 0;
}

/* Send the frames encoded so far.  Returns 0, or -1 after pub_fail(). */
static int
pub_flush(struct publisher *p)
{
	struct iovec	iov;
	int		rc;

	if (p->conn == NULL || p->wbuf.len == 0)
		return p->conn != NULL ? 0 : -1;
	iov.iov_base = p->wbuf.data;
	iov.iov_len = p->wbuf.len;
	rc = pub_writev(p, &iov, 1);
	buf_reset(&p->wbuf);
	return rc;
}

/*
 * basic.publish on a plain TCP link: the frames go into wbuf, sent with the
 * rest of the batch.  A big body is not copied: what is pending goes out
 * with it, a frame at a time, straight from the row.
 */
static int
pub_direct(struct publisher *p, amqp_bytes_t exchange, amqp_bytes_t rk,
    int mandatory, amqp_basic_properties_t *bp, amqp_bytes_t body)
{
	unsigned char	 hdr[AMQPFRAME_HEADER], end = AMQPFRAME_END;
	struct iovec	 iov[4];
	size_t		 chunk, off, n;
	int		 copy = body.len <= PUB_COPY_MAX;

	if (amqpframe_publish(&p->wbuf, PUB_CHANNEL, p->frame_max, exchange,
	    rk, mandatory, bp, body, copy) == -1) {
		pub_fail(p, "publish: cannot encode the message's frames");
		return -1;
	}
	if (copy)
		return p->wbuf.len >= PUB_WBUF_FLUSH ? pub_flush(p) : 0;
	chunk = p->frame_max - AMQPFRAME_HEADER - AMQPFRAME_FOOTER;
	for (off = 0; off < body.len; off += n) {
		n = body.len - off < chunk ? body.len - off : chunk;
		amqpframe_body_header(hdr, PUB_CHANNEL, (uint32_t)n);
		iov[0].iov_base = p->wbuf.data;
		iov[0].iov_len = p->wbuf.len;
		iov[1].iov_base = hdr;
		iov[1].iov_len = sizeof(hdr);
		iov[2].iov_base = (char *)body.bytes + off;
		iov[2].iov_len = n;
		iov[3].iov_base = &end;
		iov[3].iov_len = 1;
		if (pub_writev(p, iov, 4) == -1)
			return -1;
		buf_reset(&p->wbuf);
	}
	return 0;
}

/*
 * The AMQP properties of message m into bp (pointing into m, hdrs and mid,
 * the message-id used when m has none).
 */
static void
pub_props(const struct config *cf, const struct proto_pub *m, const char *mid,
    amqp_basic_properties_t *bp, amqp_table_entry_t *hdrs)
{
	unsigned	i;

	memset(bp, 0, sizeof(*bp));
	bp->_flags = AMQP_BASIC_DELIVERY_MODE_FLAG | AMQP_BASIC_MESSAGE_ID_FLAG;
	bp->delivery_mode = m->delivery_mode ? (uint8_t)m->delivery_mode :
	    (cf->persistent ? 2 : 1);
	if (m->message_id.p != NULL)
		bp->message_id = pub_bytes(m->message_id);
	else
		bp->message_id = amqp_cstring_bytes(mid);
#define PUB_PROP(field, flag)						\
	if (m->field.p != NULL) {					\
		bp->_flags |= flag;					\
		bp->field = pub_bytes(m->field);			\
	}
	PUB_PROP(content_type, AMQP_BASIC_CONTENT_TYPE_FLAG);
	PUB_PROP(content_encoding, AMQP_BASIC_CONTENT_ENCODING_FLAG);
	PUB_PROP(correlation_id, AMQP_BASIC_CORRELATION_ID_FLAG);
	PUB_PROP(reply_to, AMQP_BASIC_REPLY_TO_FLAG);
	PUB_PROP(expiration, AMQP_BASIC_EXPIRATION_FLAG);
	PUB_PROP(type, AMQP_BASIC_TYPE_FLAG);
	PUB_PROP(app_id, AMQP_BASIC_APP_ID_FLAG);
#undef PUB_PROP
	if (m->priority >= 0) {
		bp->_flags |= AMQP_BASIC_PRIORITY_FLAG;
		bp->priority = (uint8_t)m->priority;
	}
	if (m->has_timestamp) {
		bp->_flags |= AMQP_BASIC_TIMESTAMP_FLAG;
		bp->timestamp = m->timestamp;
	}
	if (m->nheaders > 0) {
		for (i = 0; i < m->nheaders; i++) {
			hdrs[i].key = pub_bytes(m->headers[i].name);
			hdrs[i].value.kind = AMQP_FIELD_KIND_UTF8;
			hdrs[i].value.value.bytes = pub_bytes(m->headers[i].value);
		}
		bp->_flags |= AMQP_BASIC_HEADERS_FLAG;
		bp->headers.num_entries = (int)m->nheaders;
		bp->headers.entries = hdrs;
	}
}

/*
 * A row whose properties do not fit one frame of this connection: the
 * broker would close the connection on it, and again at every reconnect.
 * Parked, whatever the policy, and skipped.
 */
static void
pub_unsendable(struct publisher *p, int64_t id, size_t header_size)
{
	char	reason[PUB_REASON_MAX];

	snprintf(reason, sizeof(reason), "properties too large for the "
	    "broker: a %zu-byte content header frame, frame_max is %zu",
	    header_size, p->frame_max);
	window_park(&p->win, id, 1, reason);
	window_skipped(&p->win, id);
}

/*
 * A row older than its max-age (or [outbox] max_age): worthless late, so
 * never published.  Parked for good, with no attempt counted (0: the relay
 * does not retry it), and skipped.  Ages are the wall clock's, as the
 * row's created time is.
 */
static int
pub_expired(struct publisher *p, const struct outbox_row *row,
    uint64_t max_age_ms)
{
	struct timespec	ts;
	int64_t		now, age;
	char		reason[PUB_REASON_MAX];

	if (max_age_ms == 0)
		return 0;
	clock_gettime(CLOCK_REALTIME, &ts);
	now = (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
	age = now - row->created_ms;
	if (age < 0 || (uint64_t)age <= max_age_ms)
		return 0;
	snprintf(reason, sizeof(reason), "expired: %" PRId64 " ms after it "
	    "was accepted, max-age %" PRIu64 " ms", age, max_age_ms);
	atomic_fetch_add(&p->st->expired, 1);
	window_park(&p->win, row->id, 0, reason);
	window_skipped(&p->win, row->id);
	return 1;
}

/* Publish one outbox row; 1: stop (window full or link lost). */
static int
pub_row(struct publisher *p, const struct outbox_row *row)
{
	struct proto_pub	 m;
	amqp_basic_properties_t	 bp;
	amqp_bytes_t		 body;
	char			 err[256], mid[PUB_MID_MAX];
	uint64_t		 rethash;
	int			 rc, mandatory;

	if (window_parked(&p->win, row->id)) {
		/* Not moved out by main yet. */
		window_skipped(&p->win, row->id);
		return 0;
	}

	if (proto_parse_props(row->props, row->plen, &m, err, sizeof(err))) {
		/* Validated at ingress; only a damaged row gets here. */
		log_errx("outbox row %" PRId64 " has bad properties (%s); "
		    "publishing its body without them", row->id, err);
		proto_pub_init(&m);
	}
	if (pub_expired(p, row, m.max_age_ms ? m.max_age_ms :
	    p->cf->max_age_ms))
		return 0;
	if (m.message_id.p == NULL)
		snprintf(mid, sizeof(mid), "%s-%" PRId64, p->instance, row->id);

	pub_props(p->cf, &m, mid, &bp, p->hdrs);
	if (!amqpframe_header_fits(&bp, p->frame_max)) {
		pub_unsendable(p, row->id, amqpframe_header_size(&bp));
		return 0;
	}
	mandatory = m.mandatory >= 0 ? m.mandatory : p->cf->mandatory;
	body.len = row->blen;
	body.bytes = (void *)(uintptr_t)row->body;

	if (p->direct) {
		if (pub_direct(p, pub_bytes(m.exchange), pub_bytes(m.routing_key),
		    mandatory, &bp, body) == -1)
			return 1;
	} else if ((rc = amqp_basic_publish(p->conn, PUB_CHANNEL,
	    pub_bytes(m.exchange), pub_bytes(m.routing_key), mandatory, 0,
	    &bp, body)) != AMQP_STATUS_OK) {
		pub_fail(p, "publish: %s", amqp_error_string2(rc));
		return 1;
	}
	rethash = pub_return_hash(bp.message_id, pub_dest_hash(
	    pub_bytes(m.exchange), pub_bytes(m.routing_key)), row->blen);
	return window_sent(&p->win, row->id, (uint32_t)(row->plen + row->blen),
	    rethash, util_fnv1a(UTIL_FNV_INIT, m.exchange.p, m.exchange.len),
	    pub_now_ms());
}

/*
 * Copy a row out of the read.  Nothing is sent from inside a read: a send
 * can wait on the broker for as long as it does not read, and a read open
 * that long pins the write-ahead log (no checkpoint passes it, so it grows
 * with every message producers send).  At least one row, however big.
 */
static int
pub_stage_cb(void *arg, const struct outbox_row *row)
{
	struct publisher	*p = arg;
	struct pub_staged	*sg;
	uint64_t		 size = (uint64_t)row->plen + row->blen;

	if (p->nstaged > 0 && size > p->stage_room) {
		p->stage_full = 1;
		return 1;
	}
	if (p->nstaged == p->capstaged) {
		p->capstaged = p->capstaged ? p->capstaged * 2 : 64;
		p->staged = xrealloc(p->staged,
		    p->capstaged * sizeof(*p->staged));
	}
	sg = &p->staged[p->nstaged++];
	sg->id = row->id;
	sg->created_ms = row->created_ms;
	sg->poff = p->stage.len;
	sg->plen = row->plen;
	buf_append(&p->stage, row->props, row->plen);
	sg->boff = p->stage.len;
	sg->blen = row->blen;
	if (row->blen > 0)
		buf_append(&p->stage, row->body, row->blen);
	p->stage_room = size < p->stage_room ? p->stage_room - size : 0;
	return 0;
}

/* Read up to want rows after sent_id into the stage; as the reader. */
static int
pub_stage(struct publisher *p, int want)
{
	uint64_t	room = WINDOW_MAX_BYTES - p->win.inflight_bytes;

	buf_reset(&p->stage);
	p->nstaged = 0;
	p->stage_full = 0;
	p->stage_room = room < PUB_STAGE_BYTES ? room : PUB_STAGE_BYTES;
	return outbox_reader_fetch(p->reader, p->win.sent_id, want, pub_stage_cb,
	    p);
}

/* Publish the staged rows; 1 when it stopped (window full, link lost). */
static int
pub_send_staged(struct publisher *p)
{
	struct outbox_row	 row;
	const char		*base;
	size_t			 i;

	base = p->stage.data != NULL ? p->stage.data : "";	/* all empty */
	for (i = 0; i < p->nstaged; i++) {
		const struct pub_staged *sg = &p->staged[i];

		row.id = sg->id;
		row.created_ms = sg->created_ms;
		row.props = base + sg->poff;
		row.plen = sg->plen;
		row.body = base + sg->boff;
		row.blen = sg->blen;
		if (pub_row(p, &row) != 0)
			return 1;	/* the rest is read again */
	}
	return 0;
}

/* Publish from the outbox while the window has room. */
static void
pub_fill(struct publisher *p)
{
	uint64_t	win;
	int		want, n;

	while (p->state == LINK_CONNECTED && !atomic_load(&p->stopping) &&
	    window_can_send(&p->win)) {
		uint64_t inflight = window_inflight(&p->win);

		win = window_limit(&p->win);
		if (inflight >= win ||
		    p->win.inflight_bytes >= WINDOW_MAX_BYTES)
			break;
		want = (int)(win - inflight);
		if (want > PUB_FETCH_MAX)
			want = PUB_FETCH_MAX;
		n = pub_stage(p, want);
		if (n < 0) {
			/* Tried again at every commit, tick and ack: once. */
			log_msg(p->read_logged ? LOG_DEBUG : LOG_WARNING,
			    "cannot read the outbox %s: %s",
			    p->cf->outbox_path,
			    outbox_reader_errmsg(p->reader));
			p->read_logged = 1;
			/*
			 * The rows read before the failure are staged: send
			 * them like any batch, or they wait for a read that
			 * may never work again.
			 */
			(void)pub_send_staged(p);
			if (p->conn != NULL && pub_flush(p) == 0)
				(void)pub_drain(p);
			break;
		}
		if (p->read_logged) {
			log_notice("reading the outbox %s works again",
			    p->cf->outbox_path);
			p->read_logged = 0;
		}
		(void)pub_send_staged(p);
		if (p->conn == NULL)
			return;		/* failed while publishing */
		if (pub_flush(p) == -1 || pub_drain(p) == -1)
			return;
		if (n < want && !p->stage_full &&
		    window_inflight(&p->win) < win &&
		    p->win.inflight_bytes < WINDOW_MAX_BYTES)
			break;		/* caught up with the outbox */
	}
	/* One big row must not keep its copy for the life of the link. */
	if (p->stage.cap > 4 * PUB_STAGE_BYTES)
		buf_free(&p->stage);
	else
		buf_reset(&p->stage);
	p->nstaged = 0;
}

static void
pub_check_healthy(struct publisher *p)
{
	struct timespec	now;
	int64_t		up;

	if (p->healthy || p->state != LINK_CONNECTED)
		return;
	clock_gettime(CLOCK_MONOTONIC, &now);
	up = (int64_t)(now.tv_sec - p->connected_at.tv_sec) * 1000 +
	    (now.tv_nsec - p->connected_at.tv_nsec) / 1000000;
	if (up >= PUB_HEALTHY_MS)
		pub_mark_healthy(p);
}

/*
 * A link that takes no bytes and sends no heartbeat is caught by rabbitmq-c;
 * one that keeps heartbeating but confirms nothing is caught here.
 */
static void
pub_check_confirms(struct publisher *p)
{
	const struct pub_slot	*sl;
	int64_t			 waited;

	if (p->state != LINK_CONNECTED || p->win.unresolved == 0)
		return;
	/* The oldest pending one decides. */
	if ((sl = window_oldest_pending(&p->win)) == NULL)
		return;
	waited = pub_now_ms() - sl->sent_ms;
	if (waited > (int64_t)p->cf->confirm_timeout_ms)
		pub_fail(p, "no confirm for outbox id %" PRId64 " in "
		    "%" PRId64 " ms (confirm_timeout)", sl->id, waited);
}

static void
pub_stop_if_done(struct publisher *p)
{
	if (atomic_load(&p->stopping) &&
	    (p->conn == NULL || p->win.unresolved == 0))
		event_base_loopbreak(p->base);
}

static void
pub_read_cb(evutil_socket_t fd, short what, void *arg)
{
	struct publisher	*p = arg;

	(void)fd;
	(void)what;
	if (pub_drain(p) == 0)
		pub_fill(p);
	pub_stop_if_done(p);
}

static void
pub_tick_cb(evutil_socket_t fd, short what, void *arg)
{
	struct publisher	*p = arg;

	(void)fd;
	(void)what;
	/* Heartbeats are sent and checked only inside library calls. */
	if (p->conn != NULL && pub_drain(p) == 0) {
		pub_check_healthy(p);
		pub_check_confirms(p);
		if (p->conn != NULL)
			pub_fill(p);
	}
	pub_stop_if_done(p);
}

static void
pub_retry_cb(evutil_socket_t fd, short what, void *arg)
{
	struct publisher	*p = arg;

	(void)fd;
	(void)what;
	if (!atomic_load(&p->stopping))
		pub_connect(p);
}

static void
pub_grace_cb(evutil_socket_t fd, short what, void *arg)
{
	struct publisher	*p = arg;

	(void)fd;
	(void)what;
	event_base_loopbreak(p->base);
}

static void
pub_wake_cb(evutil_socket_t fd, short what, void *arg)
{
	struct publisher	*p = arg;
	struct timeval		 tv;

	(void)fd;
	(void)what;
	if (atomic_load(&p->stopping)) {
		if (p->conn == NULL || p->win.unresolved == 0) {
			event_base_loopbreak(p->base);
			return;
		}
		tv = pub_tv(PUB_STOP_GRACE_MS);
		evtimer_add(p->ev_grace, &tv);
		return;
	}
	if (p->state == LINK_CONNECTED)
		pub_fill(p);
}

/*
 * Main thread: hand parks, then the confirmed prefix, to the owner.  Every
 * park of an id up to the confirmed value read here was queued before that
 * value was stored, so it is parked before anything past it is deleted.
 * Returns that value.
 */
static int64_t
pub_deliver(struct publisher *p)
{
	struct pub_park	*parks;
	size_t		 i, n;
	int64_t		 upto;

	upto = atomic_load(&p->confirmed_shared);
	pthread_mutex_lock(&p->park_lock);
	parks = p->parks;
	n = p->nparks;
	p->parks = NULL;
	p->nparks = p->capparks = 0;
	pthread_mutex_unlock(&p->park_lock);
	for (i = 0; i < n; i++)
		if (p->park_cb != NULL)
			p->park_cb(parks[i].id, parks[i].attempts,
			    parks[i].reason, p->cb_arg);
	free(parks);
	p->confirmed_cb(upto, p->cb_arg);
	return upto;
}

/* Main thread: hand the confirmed prefix to the owner, which deletes. */
static void
pub_confirmed_cb(evutil_socket_t fd, short what, void *arg)
{
	struct publisher	*p = arg;

	(void)fd;
	(void)what;
	(void)pub_deliver(p);
}

static void *
pub_thread(void *arg)
{
	struct publisher	*p = arg;
	struct timeval		 tick, zero;
	uint64_t		 tick_ms;

	tick_ms = p->cf->heartbeat ? p->cf->heartbeat * 1000 / 4 : 1000;
	if (tick_ms > 1000)
		tick_ms = 1000;
	if (tick_ms < 100)
		tick_ms = 100;
	tick = pub_tv(tick_ms);
	event_add(p->ev_tick, &tick);

	/*
	 * Connect from inside the loop: a loopbreak issued before
	 * event_base_dispatch() starts would be forgotten.
	 */
	zero = pub_tv(0);
	evtimer_add(p->ev_retry, &zero);
	if (!atomic_load(&p->stopping))
		event_base_dispatch(p->base);

	/* Be polite to a live broker; never wait long on a dead one. */
	if (p->conn != NULL && p->state != LINK_DISCONNECTED) {
		struct timeval	tv = pub_tv(1000);

		amqp_set_rpc_timeout(p->conn, &tv);
		amqp_connection_close(p->conn, AMQP_REPLY_SUCCESS);
	}
	pub_teardown(p);
	pub_enter_state(p, LINK_STOPPED, NULL);
	return NULL;
}

struct publisher *
publisher_start(const struct publisher_params *pp, char *err, size_t errlen)
{
	struct publisher	*p;
	struct timespec		 ts;
	struct timeval		 watchdog_tv;
	struct window_ops	 ops;
	int			 rc;

	p = xcalloc(1, sizeof(*p));
	ops.park = pub_park_cb;
	ops.confirmed = pub_confirmed_to_cb;
	ops.progress = pub_progress_cb;
	ops.pause = pub_pause_cb;
	ops.arg = p;
	p->cf = pp->cf;
	snprintf(p->instance, sizeof(p->instance), "%s", pp->instance);
	p->st = pp->stats;
	p->confirmed_cb = pp->confirmed_cb;
	p->cb_arg = pp->cb_arg;
	buf_init(&p->wbuf);
	buf_init(&p->stage);
	p->state = LINK_DISCONNECTED;
	pub_init_order(p);
	atomic_store(&p->sockfd, -1);
	pthread_mutex_init(&p->link_lock, NULL);
	clock_gettime(CLOCK_REALTIME, &ts);
	window_init(&p->win, p->cf->window,
	    p->cf->on_unroutable == POLICY_PARK,
	    p->cf->on_rejected == POLICY_PARK, p->cf->reconnect_min_ms,
	    p->cf->reconnect_max_ms, (uint64_t)ts.tv_nsec * 7919 + 1, p->st,
	    &ops);
	pthread_mutex_init(&p->park_lock, NULL);
	p->park_cb = pp->park_cb;
	backoff_init(&p->backoff, p->cf->reconnect_min_ms,
	    p->cf->reconnect_max_ms,
	    (uint64_t)ts.tv_nsec ^ ((uint64_t)getpid() << 32));

	if (outbox_reader_open(&p->reader, p->cf->outbox_path, err,
	    errlen) == -1)
		goto fail;
	if ((p->base = event_base_new()) == NULL) {
		snprintf(err, errlen, "cannot create the publisher event base");
		goto fail;
	}
	p->ev_wake = event_new(p->base, -1, 0, pub_wake_cb, p);
	p->ev_tick = event_new(p->base, -1, EV_PERSIST, pub_tick_cb, p);
	p->ev_retry = evtimer_new(p->base, pub_retry_cb, p);
	p->ev_grace = evtimer_new(p->base, pub_grace_cb, p);
	p->ev_resume = evtimer_new(p->base, pub_resume_cb, p);
	p->ev_notify = evtimer_new(p->base, pub_notify_cb, p);
	p->ev_confirmed = event_new(pp->main_base, -1, 0, pub_confirmed_cb, p);
	p->ev_watchdog = event_new(pp->main_base, -1, EV_PERSIST,
	    pub_watchdog_cb, p);
	if (!p->ev_wake || !p->ev_tick || !p->ev_retry || !p->ev_grace ||
	    !p->ev_resume || !p->ev_notify || !p->ev_confirmed ||
	    !p->ev_watchdog) {
		snprintf(err, errlen, "cannot create publisher events");
		goto fail;
	}
	watchdog_tv = pub_tv(PUB_WATCHDOG_MS);
	event_add(p->ev_watchdog, &watchdog_tv);
	rc = pthread_create(&p->thread, NULL, pub_thread, p);
	if (rc != 0) {
		snprintf(err, errlen, "pthread_create: %s", strerror(rc));
		goto fail;
	}
	return p;

 fail:
	if (p->ev_watchdog)
		event_free(p->ev_watchdog);
	if (p->ev_confirmed)
		event_free(p->ev_confirmed);
	if (p->ev_wake)
		event_free(p->ev_wake);
	if (p->ev_tick)
		event_free(p->ev_tick);
	if (p->ev_retry)
		event_free(p->ev_retry);
	if (p->ev_grace)
		event_free(p->ev_grace);
	if (p->ev_resume)
		event_free(p->ev_resume);
	if (p->ev_notify)
		event_free(p->ev_notify);
	if (p->base)
		event_base_free(p->base);
	outbox_reader_close(p->reader);
	buf_free(&p->wbuf);
	buf_free(&p->stage);
	window_free(&p->win);
	pthread_mutex_destroy(&p->link_lock);
	free(p);
	return NULL;
}

void
publisher_wake(struct publisher *p)
{
	event_active(p->ev_wake, EV_READ, 0);
}

void
publisher_set_eager(struct publisher *p, int on)
{
	atomic_store(&p->eager, on);
}

/*
 * Main thread.  A message-id generated later is counted at its longest, so
 * a message up to 18 bytes short of the limit may be refused.
 */
int
publisher_fits(struct publisher *p, const struct proto_pub *m, char *err,
    size_t errlen)
{
	amqp_basic_properties_t	 bp;
	amqp_table_entry_t	 hdrs[PROTO_MAX_HEADERS];
	char			 mid[PUB_MID_MAX];
	size_t			 fm = atomic_load(&p->frame_max_shared);

	if (fm == 0)
		return 1;	/* never connected: not known yet */
	snprintf(mid, sizeof(mid), "%s-%019d", p->instance, 0);
	pub_props(p->cf, m, mid, &bp, hdrs);
	if (amqpframe_header_fits(&bp, fm))
		return 1;
	snprintf(err, errlen, "properties too large for the broker: a %zu-byte "
	    "content header frame, its frame_max is %zu",
	    amqpframe_header_size(&bp), fm);
	return 0;
}

int64_t
publisher_confirmed(struct publisher *p)
{
	return atomic_load(&p->confirmed_shared);
}

static int
pub_join(struct publisher *p, unsigned ms)
{
	struct timespec	ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	ts.tv_sec += ms / 1000;
	ts.tv_nsec += (long)(ms % 1000) * 1000000;
	if (ts.tv_nsec >= 1000000000) {
		ts.tv_sec++;
		ts.tv_nsec -= 1000000000;
	}
	return pthread_timedjoin_np(p->thread, NULL, &ts);
}

int
publisher_stop(struct publisher *p, unsigned timeout_ms, int64_t *confirmed)
{
	int	fd;

	event_del(p->ev_watchdog);	/* the stop judges the link now */
	atomic_store(&p->stopping, 1);
	publisher_wake(p);
	if (pub_join(p, timeout_ms) != 0) {
		/*
		 * Stuck in a blocking library call: make its socket fail.
		 * Under the lock, as the watchdog: never a descriptor that
		 * was closed and given to another file meanwhile.
		 */
		pthread_mutex_lock(&p->link_lock);
		fd = atomic_load(&p->sockfd);
		if (fd != -1)
			shutdown(fd, SHUT_RDWR);
		pthread_mutex_unlock(&p->link_lock);
		if (pub_join(p, 1000) != 0) {
			log_warnx("publisher thread did not stop; exiting "
			    "without it (unconfirmed messages stay in the "
			    "outbox)");
			/*
			 * Parks queued since the last delivery first: the
			 * owner deletes up to *confirmed, which may cover
			 * them.  No later value: it could cover parks queued
			 * after these were taken.
			 */
			*confirmed = pub_deliver(p);
			return -1;
		}
	}
	*confirmed = pub_deliver(p);
	event_free(p->ev_watchdog);
	event_free(p->ev_confirmed);
	event_free(p->ev_wake);
	event_free(p->ev_tick);
	event_free(p->ev_retry);
	event_free(p->ev_grace);
	event_free(p->ev_resume);
	event_free(p->ev_notify);
	event_base_free(p->base);
	outbox_reader_close(p->reader);
	window_free(&p->win);
	buf_free(&p->wbuf);
	buf_free(&p->stage);
	free(p->staged);
	free(p->parks);
	pthread_mutex_destroy(&p->park_lock);
	pthread_mutex_destroy(&p->link_lock);
	free(p);
	return 0;
}
