/*
 * pubrelay.h: libpubrelay, the C client library of pubrelayd(8).
 *
 * A connection (a pubrelay handle) speaks pubrelay-protocol(7) over the
 * daemon's Unix socket: publish a message and get its message-id (or, with
 * the "confirm" property, the broker's receipt), pipeline many publishes,
 * WAIT, STATUS, STATS, PING, RESET.  libpubrelay(3) is the reference.
 *
 * Errors are negative return values (PUBRELAY_E_*), with a message from
 * pubrelay_errmsg(); the library never aborts, exits or prints.  After
 * PUBRELAY_E_CONNECT, PUBRELAY_E_SYS and PUBRELAY_E_CLOSED, errno holds the
 * system's error (ENOTSOCK: the path is no socket; 0: the daemon closed
 * the connection).  It has no
 * global state: a handle belongs to one thread at a time (use one handle per
 * thread; two threads may use two handles freely).  It writes with
 * MSG_NOSIGNAL, so a lost connection is an error, not a SIGPIPE.
 *
 * ABI: libpubrelay.so.0, symbols of version node PUBRELAY_0; the rules for
 * changing them are in libpubrelay(3), section "ABI".
 */
#ifndef PUBRELAY_H
#define PUBRELAY_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* A connection to pubrelayd. */
typedef struct pubrelay pubrelay;
/* The properties of the messages to publish, reusable. */
typedef struct pubrelay_props pubrelay_props;

/* Errors: a negative return value of the functions below. */
enum pubrelay_error {
	PUBRELAY_OK = 0,
	PUBRELAY_E_SYS = -1,		/* a system call failed (errmsg says) */
	PUBRELAY_E_NOMEM = -2,		/* out of memory */
	PUBRELAY_E_INVAL = -3,		/* bad argument: nothing was sent */
	PUBRELAY_E_CONNECT = -4,	/* cannot connect to the socket */
	PUBRELAY_E_TIMEOUT = -5,	/* no reply in time; closed */
	PUBRELAY_E_CLOSED = -6,		/* the connection is closed */
	PUBRELAY_E_REPLY = -7,		/* a reply outside the protocol; closed */
	PUBRELAY_E_BUSY = -8,		/* pipelined replies to collect first */
	PUBRELAY_E_REFUSED = -9,	/* ERR with a code unknown to the library */
	/* "ERR <CODE>" from the daemon (pubrelay-protocol(7), ERROR CODES) */
	PUBRELAY_E_BADREQ = -10,
	PUBRELAY_E_TOOBIG = -11,
	PUBRELAY_E_UNKNOWN = -12,
	PUBRELAY_E_PROTO = -13,		/* closed */
	PUBRELAY_E_FULL = -14,
	PUBRELAY_E_STORE = -15,
	PUBRELAY_E_SKIPPED = -16,	/* refusal latch: pubrelay_reset() */
	PUBRELAY_E_SHUTDOWN = -17,	/* closed */
	PUBRELAY_E_LIMIT = -18,		/* closed */
	PUBRELAY_E_NOTFOUND = -19,
	PUBRELAY_E_DENIED = -20		/* closed */
};

/* What became of a message: a non-negative return value. */
enum pubrelay_state {
	PUBRELAY_ACCEPTED = 0,	/* "OK <id>": committed to the outbox */
	PUBRELAY_CONFIRMED = 1,	/* the broker confirmed it */
	PUBRELAY_PARKED = 2,	/* refused for good: a dead letter */
	PUBRELAY_PENDING = 3,	/* not confirmed in time; will be delivered */
	PUBRELAY_QUEUED = 4,	/* STATUS: in the outbox, not yet sent */
	PUBRELAY_INFLIGHT = 5,	/* STATUS: sent, waiting for the confirm */
	PUBRELAY_UNKNOWN = 6	/* STATUS: the daemon cannot say */
};

/*
 * Connect to path (NULL: $PUBRELAY_SOCKET, else the compiled-in default
 * the pubrelay command uses) within timeout_ms, which then also bounds
 * each wait for the daemon (0: no limit).  Returns a handle, NULL only when
 * out of memory; check pubrelay_errcode() for a failed connect.
 */
pubrelay	*pubrelay_open(const char *path, int timeout_ms);
/* Close the connection and free the handle (NULL is fine). */
void		 pubrelay_close(pubrelay *h);

/* The error of the last call that failed on h, and its message. */
int		 pubrelay_errcode(const pubrelay *h);
const char	*pubrelay_errmsg(const pubrelay *h);
/* A fixed text for an error code or a state. */
const char	*pubrelay_strerror(int code);
/* 1 when sending the same again later may succeed. */
int		 pubrelay_retryable(int code);

/*
 * Properties by their protocol names (pubrelay-protocol(7), PROPERTIES):
 * exchange, routing-key, mandatory, delivery-mode, message-id,
 * idempotency-key, confirm (milliseconds), content-type, header
 * ("NAME=VALUE", adds one), ...  Setting a name again replaces its value;
 * value NULL removes it (every header for "header").  0, or
 * PUBRELAY_E_INVAL (unknown name, newline in the value, too long) or
 * PUBRELAY_E_NOMEM.
 */
pubrelay_props	*pubrelay_props_new(void);
void		 pubrelay_props_free(pubrelay_props *p);
int		 pubrelay_props_set(pubrelay_props *p, const char *name,
		    const char *value);
int		 pubrelay_props_header(pubrelay_props *p, const char *name,
		    const char *value);
/* Why the last change of p failed, in pubrelayd's words; "" if it did not. */
const char	*pubrelay_props_errmsg(const pubrelay_props *p);

/*
 * Publish one message (props NULL: none) and wait for its reply.  Returns
 * PUBRELAY_ACCEPTED, or with "confirm" the receipt: PUBRELAY_CONFIRMED,
 * PUBRELAY_PARKED or PUBRELAY_PENDING; or an error.  pubrelay_id() then
 * names the message-id, pubrelay_reason() why it was parked.
 */
int		 pubrelay_publish(pubrelay *h, const pubrelay_props *props,
		    const void *body, size_t len);

/*
 * Pipelining: pubrelay_send() queues a publish (sent when the buffer
 * fills, or by pubrelay_flush() or pubrelay_recv()); pubrelay_recv() returns
 * the reply to the oldest one not yet collected, as pubrelay_publish()
 * would.  At most the window (default 256) may wait for pubrelay_recv():
 * beyond, pubrelay_send() returns PUBRELAY_E_BUSY.
 */
int		 pubrelay_send(pubrelay *h, const pubrelay_props *props,
		    const void *body, size_t len);
int		 pubrelay_recv(pubrelay *h);
int		 pubrelay_flush(pubrelay *h);
/* Requests sent whose replies pubrelay_recv() has not returned yet. */
unsigned	 pubrelay_pending(const pubrelay *h);
/* 1 to 65536; PUBRELAY_E_INVAL otherwise. */
int		 pubrelay_set_window(pubrelay *h, unsigned window);

/*
 * For a caller's own poll() loop: the socket (-1 once closed), to wait
 * for POLLIN on; and pubrelay_ready(), which sends and reads what the
 * socket takes and holds without waiting: 1 when pubrelay_recv() would
 * return at once (a reply is there, or the connection ended), 0 when it
 * would wait, or an error.  With no reply owed, pubrelay_recv() then
 * returns what the daemon said unasked before it closed (ERR LIMIT,
 * DENIED, SHUTDOWN), or PUBRELAY_E_CLOSED.
 */
int		 pubrelay_fd(const pubrelay *h);
int		 pubrelay_ready(pubrelay *h);

/* The message-id of the last reply that named one, "" if none. */
const char	*pubrelay_id(const pubrelay *h);
/* The reason of the last PARKED, "" if none. */
const char	*pubrelay_reason(const pubrelay *h);
/*
 * The reply line of the last PUBRELAY_E_REPLY, as it came (without its
 * line end; it may hold any byte), or NULL when there was none or it was
 * too long to keep.
 */
const char	*pubrelay_reply_line(const pubrelay *h, size_t *len);

/*
 * The other requests; each needs every pipelined reply collected first
 * (else PUBRELAY_E_BUSY).
 *
 * pubrelay_wait: the WAIT barrier, ms 0 for no limit.  PUBRELAY_CONFIRMED
 * when everything accepted before it was confirmed or parked (*dead, if
 * not NULL: how many were parked), PUBRELAY_PENDING when ms passed first.
 * pubrelay_status: QUEUED, INFLIGHT, CONFIRMED, PARKED or UNKNOWN.
 * pubrelay_stats: fetch the statistics; pubrelay_stat() then looks one up
 * by name (NULL when absent), pubrelay_stats_text() gives them all.
 * pubrelay_dead_list: one page of the dead letters with an id above after,
 * at most max of them (0: the daemon's default), as the daemon's lines
 * ("id<TAB>parked-ms<TAB>...\n"); *text stays valid until the next call
 * on h; an empty page is the end.  pubrelay_dead_retry and _purge: replay
 * or delete the dead letter id, every one when id is 0; *count (if not
 * NULL): how many.
 */
int		 pubrelay_ping(pubrelay *h);
int		 pubrelay_reset(pubrelay *h);
int		 pubrelay_wait(pubrelay *h, unsigned ms, uint64_t *dead);
int		 pubrelay_status(pubrelay *h, const char *message_id);
int		 pubrelay_stats(pubrelay *h);
const char	*pubrelay_stat(const pubrelay *h, const char *name);
const char	*pubrelay_stats_text(const pubrelay *h, size_t *len);
int		 pubrelay_dead_list(pubrelay *h, uint64_t after, unsigned max,
		    const char **text, size_t *len);
int		 pubrelay_dead_retry(pubrelay *h, uint64_t id, uint64_t *count);
int		 pubrelay_dead_purge(pubrelay *h, uint64_t id, uint64_t *count);

#ifdef __cplusplus
}
#endif

#endif
