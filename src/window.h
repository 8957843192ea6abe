/*
 * window.h: the publisher's confirm window, as pure code: no connection, no
 * event loop, no outbox, no threads.  publisher.c owns one, feeds it what
 * the broker says (acks, nacks, returns, channel.close) and what it sent,
 * and does what it asks through struct window_ops.
 *
 * Delivery tags are consecutive from 1 on the channel, so the unconfirmed
 * messages are tags [first_tag, next_tag) and slot tag % cap of a ring
 * holds each one's outbox id.  Confirms may name single tags out of order;
 * the confirmed prefix advances only over acked slots, so "confirmed up to
 * id X" is always a prefix of the outbox (parked dead letters aside).
 *
 * Failures of one message, without losing the link:
 * - nack: the window breaks at the nacked slot (WINDOW_NACKED).  Nothing
 *   more is published; once every outstanding tag is resolved, publishing
 *   goes back to the nacked message after a backoff (WINDOW_PAUSED, then
 *   go-back-N one at a time, WINDOW_PROBING; tags go on increasing).
 * - basic.return (unroutable): the slot is marked; when the prefix reaches
 *   it the message is parked at once (policy park: the stream goes on, and
 *   the main thread retries it later from the dead-letter table, up to
 *   max_attempts) or the window breaks there as for a nack (policy retry,
 *   WINDOW_BROKEN).  A parked row leaves no gap: the confirmed prefix
 *   passes over it with the next confirm, the park having reached the main
 *   thread first, and a row read again before the main thread moved it is
 *   skipped (window_parked()).
 *   When nacks come back WINDOW_NACK_RENEW times with nothing confirmed in
 *   between, the channel is closed and a new one opened (WINDOW_RENEW):
 *   RabbitMQ 3.10 keeps per-channel state that can nack for ever (a quorum
 *   queue's leader cached on the channel, on a node that died;
 *   tests/cluster.py).
 * - channel.close (404, 403, 406; WINDOW_CLOSED): when the reply names an
 *   exchange (no such exchange, access refused to it), every unconfirmed
 *   message to it is taken for a culprit and parked (policy park), and the
 *   others are republished with the full window.  Otherwise which message
 *   caused it is unknown with a window, so the channel is reopened and the
 *   unconfirmed messages are republished one at a time (WINDOW_PROBING,
 *   window 1) up to the last one sent; a message that closes the channel
 *   while probing is the culprit and is parked or retried by policy.
 */
#ifndef PUBRELAY_WINDOW_H
#define PUBRELAY_WINDOW_H

#include <stddef.h>
#include <stdint.h>

#include "backoff.h"
#include "stats.h"

/*
 * Unconfirmed bytes: bounds memory and what a go-back sends again.  Not a
 * bound below SO_SNDBUF (Linux grows a send buffer up to tcp_wmem's maximum,
 * 4 MiB by default, less under memory pressure): a write can still wait
 * for room, for as long as the broker's heartbeats say it lives
 * (publisher.c, pub_watchdog_cb()).
 */
#define WINDOW_MAX_BYTES	(4 * 1024 * 1024)
#define WINDOW_NACK_RENEW	3	/* go-backs on nacks, no progress */
#define WINDOW_REASON_MAX	256

/*
 * The window's states.  Only window_enter() changes them; it logs each
 * transition once (at debug).
 */
enum window_state {
	WINDOW_OPEN = 0,	/* publishing, up to cap in flight */
	WINDOW_PROBING,		/* publishing one at a time up to probe_until */
	WINDOW_NACKED,		/* broke on a nack: go back once all resolved */
	WINDOW_BROKEN,		/* broke on a return: the same, no renew */
	WINDOW_RENEW,		/* went back on nacks: a new channel first */
	WINDOW_PAUSED,		/* went back: a backoff before publishing */
	WINDOW_CLOSED,		/* channel.close seen: window_recover() next */
};

enum slot_state {
	SLOT_PENDING = 0,
	SLOT_ACKED,
	SLOT_NACKED,
};

struct pub_slot {
	int64_t		 id;
	int64_t		 sent_ms;	/* for the confirm timeout */
	uint64_t	 rethash;	/* what a basic.return names of it */
	uint64_t	 exhash;	/* its exchange's name */
	char		*reason;	/* set when returned */
	uint32_t	 size;
	uint8_t		 state;
	uint8_t		 returned;
	uint8_t		 ambiguous;	/* returned, or one like it after it */
};

/* What the window decides and the owner does.  All may be NULL. */
struct window_ops {
	/* Give up on id: the owner hands it to the dead-letter table. */
	void	(*park)(void *arg, int64_t id, unsigned attempts,
		    const char *reason);
	/* The confirmed prefix moved to id: tell whoever deletes. */
	void	(*confirmed)(void *arg, int64_t id);
	/* A confirm moved the prefix: the link works. */
	void	(*progress)(void *arg);
	/* Call window_resume() in ms. */
	void	(*pause)(void *arg, uint64_t ms);
	void	*arg;
};

struct window {
	enum window_state	 state;
	struct pub_slot		*ring;
	unsigned		 cap;
	uint64_t		 next_tag;
	uint64_t		 first_tag;
	uint64_t		 unresolved;	/* neither acked nor nacked */
	uint64_t		 inflight_bytes;
	int64_t			 confirmed_id;
	int64_t			 sent_id;
	int64_t			 probe_until;	/* window 1 up to this id */
	enum window_state	 closed_from;	/* what channel.close met */
	unsigned		 nack_rounds;	/* nack go-backs, no progress */
	unsigned		 episode;	/* logged since progress */
	int64_t			 fail_id;	/* attempts of the failing id */
	unsigned		 fail_attempts;
	int			 park_unroutable; /* on_unroutable = park */
	int			 park_rejected;	/* on_rejected = park */
	struct backoff		 retry_backoff;	/* pauses before a go-back */
	int64_t			*skip;		/* parked, above confirmed_id */
	size_t			 nskip, capskip;
	char			 chan_reason[WINDOW_REASON_MAX];
	struct relay_stats	*st;
	struct window_ops	 ops;
};

/* Pauses before a go-back: a backoff of min_ms..max_ms seeded by seed. */
void	window_init(struct window *w, unsigned cap, int park_unroutable,
	    int park_rejected, uint64_t min_ms, uint64_t max_ms, uint64_t seed,
	    struct relay_stats *st, const struct window_ops *ops);
void	window_free(struct window *w);
const char *window_state_name(enum window_state s);
/* The one way to change state; logs a transition once. */
void	window_enter(struct window *w, enum window_state s, const char *why);

/*
 * Forget every outstanding tag and resume from the oldest unconfirmed row.
 * A new channel numbers tags from 1 again; on the same channel they go on.
 * A window broken by a nack or a return is open (or probing) again: the
 * break of a forgotten window is no reason to go back.
 */
void	window_reset(struct window *w, int new_channel);
/* The link is gone: forget the tags and every pending step. */
void	window_lost(struct window *w);

/* Whether a row may be published now, and how many may be in flight. */
int	window_can_send(const struct window *w);
uint64_t window_limit(const struct window *w);
uint64_t window_inflight(const struct window *w);
/* Tag next_tag carries id now; 1 when the window is full. */
int	window_sent(struct window *w, int64_t id, uint32_t size,
	    uint64_t rethash, uint64_t exhash, int64_t now_ms);

/* basic.ack or basic.nack; -1: the tag names nothing sent. */
int	window_resolve(struct window *w, uint64_t tag, int multiple, int nack,
	    int64_t now_ms);
/* A basic.return, matched by rethash; mid and reason are copied. */
void	window_match_return(struct window *w, uint64_t rethash,
	    const char *mid, const char *reason);
/* The broker closed the channel with reason (copied). */
void	window_channel_closed(struct window *w, const char *reason);
/* Before the channel is opened again after WINDOW_CLOSED. */
void	window_recover(struct window *w);
/* The channel was renewed after WINDOW_RENEW. */
void	window_renewed(struct window *w);
/* The backoff of WINDOW_PAUSED is over. */
void	window_resume(struct window *w);

/* Park id for good, and skip it when it is read again. */
void	window_park(struct window *w, int64_t id, unsigned attempts,
	    const char *reason);
/* Whether id was parked and is not yet passed by the confirmed prefix. */
int	window_parked(const struct window *w, int64_t id);
/* Parked row id was not published: go on after it. */
void	window_skipped(struct window *w, int64_t id);

/* The oldest pending slot, or NULL. */
const struct pub_slot *window_oldest_pending(const struct window *w);
/* Time blocked does not count against confirms. */
void	window_restamp(struct window *w, int64_t now_ms);
/* LOG_NOTICE for the first failure since progress, then LOG_DEBUG. */
int	window_episode_prio(struct window *w);

#endif
