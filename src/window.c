/*
 * window.c: the confirm window (window.h says what it is and does).  Pure
 * code: time comes in as arguments, and what the window decides but cannot
 * do (park, hand over the confirmed prefix, wait a backoff) goes out
 * through struct window_ops.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "util.h"
#include "window.h"

static void	window_forget(struct window *, int);

static const char *window_state_names[] = {
	[WINDOW_OPEN] = "open",
	[WINDOW_PROBING] = "probing",
	[WINDOW_NACKED] = "nacked",
	[WINDOW_BROKEN] = "broken",
	[WINDOW_RENEW] = "renew",
	[WINDOW_PAUSED] = "paused",
	[WINDOW_CLOSED] = "closed",
};

const char *
window_state_name(enum window_state s)
{
	if ((size_t)s >= sizeof(window_state_names) /
	    sizeof(window_state_names[0]))
		return "?";
	return window_state_names[s];
}

void
window_init(struct window *w, unsigned cap, int park_unroutable,
    int park_rejected, uint64_t min_ms, uint64_t max_ms, uint64_t seed,
    struct relay_stats *st, const struct window_ops *ops)
{
	memset(w, 0, sizeof(*w));
	w->state = WINDOW_OPEN;
	w->cap = cap;
	w->ring = xcalloc(cap, sizeof(*w->ring));
	w->next_tag = w->first_tag = 1;
	w->park_unroutable = park_unroutable;
	w->park_rejected = park_rejected;
	backoff_init(&w->retry_backoff, min_ms, max_ms, seed);
	w->st = st;
	if (ops != NULL)
		w->ops = *ops;
}

void
window_free(struct window *w)
{
	window_forget(w, 1);	/* frees slot reasons */
	free(w->ring);
	free(w->skip);
	w->ring = NULL;
	w->skip = NULL;
	w->nskip = w->capskip = 0;
}

void
window_enter(struct window *w, enum window_state s, const char *why)
{
	if (w->state == s)
		return;
	log_debug("confirm window: %s -> %s%s%s", window_state_name(w->state),
	    window_state_name(s), why ? ": " : "", why ? why : "");
	w->state = s;
}

/* Open or probing, as the confirmed prefix and the probe bound say. */
static void
window_settle(struct window *w, const char *why)
{
	window_enter(w, w->confirmed_id < w->probe_until ? WINDOW_PROBING :
	    WINDOW_OPEN, why);
}

/* Settle, unless a failure holds the window. */
static void
window_settle_open(struct window *w, const char *why)
{
	if (w->state == WINDOW_OPEN || w->state == WINDOW_PROBING)
		window_settle(w, why);
}

static int
window_broken(const struct window *w)
{
	return w->state == WINDOW_NACKED || w->state == WINDOW_BROKEN;
}

int
window_episode_prio(struct window *w)
{
	return w->episode++ ? LOG_DEBUG : LOG_NOTICE;
}

/* window_reset() without a change of state. */
static void
window_forget(struct window *w, int new_channel)
{
	uint64_t	t;

	for (t = w->first_tag; t < w->next_tag; t++) {
		struct pub_slot *sl = &w->ring[t % w->cap];

		free(sl->reason);
		sl->reason = NULL;
	}
	if (new_channel)
		w->next_tag = 1;
	w->first_tag = w->next_tag;
	w->unresolved = 0;
	w->inflight_bytes = 0;
	/* Nacks counted on an old channel are no reason to renew the new. */
	if (new_channel)
		w->nack_rounds = 0;
	w->sent_id = w->confirmed_id;
	atomic_store(&w->st->in_flight, 0);
	atomic_store(&w->st->sent_id, w->sent_id);
}

void
window_reset(struct window *w, int new_channel)
{
	window_forget(w, new_channel);
	/* A break of the forgotten window is no reason to go back again. */
	if (window_broken(w))
		window_settle(w, "window reset");
}

void
window_lost(struct window *w)
{
	window_forget(w, 1);
	window_settle(w, "link lost");
}

int
window_can_send(const struct window *w)
{
	return w->state == WINDOW_OPEN || w->state == WINDOW_PROBING;
}

/* 1 while probing for a message that fails alone. */
uint64_t
window_limit(const struct window *w)
{
	return w->state == WINDOW_PROBING ? 1 : w->cap;
}

uint64_t
window_inflight(const struct window *w)
{
	return w->next_tag - w->first_tag;
}

int
window_sent(struct window *w, int64_t id, uint32_t size, uint64_t rethash,
    uint64_t exhash, int64_t now_ms)
{
	struct pub_slot	*s = &w->ring[w->next_tag % w->cap];

	s->id = id;
	s->size = size;
	s->state = SLOT_PENDING;
	s->returned = 0;
	s->ambiguous = 0;
	free(s->reason);
	s->reason = NULL;
	s->sent_ms = now_ms;
	s->rethash = rethash;
	s->exhash = exhash;
	w->next_tag++;
	w->unresolved++;
	w->sent_id = id;
	atomic_store(&w->st->sent_id, id);
	w->inflight_bytes += size;
	atomic_fetch_add(&w->st->published, 1);
	atomic_store(&w->st->in_flight, window_inflight(w));
	return window_inflight(w) >= window_limit(w) ||
	    w->inflight_bytes >= WINDOW_MAX_BYTES;
}

/*
 * Republish what is in flight one message at a time: after a failure it
 * finds the culprit without a storm of duplicates behind it, and an
 * overloaded broker (nacks) gets a gentler stream.
 */
static void
window_probe(struct window *w)
{
	if (w->sent_id > w->probe_until)
		w->probe_until = w->sent_id;
}

/* Count an attempt of id; a new failing id starts again from 1. */
static unsigned
window_attempt(struct window *w, int64_t id)
{
	if (w->fail_id != id) {
		w->fail_id = id;
		w->fail_attempts = 0;
	}
	return ++w->fail_attempts;
}

/* Hand the confirmed prefix over; parked ids it passed need no skip. */
static void
window_publish_confirmed(struct window *w)
{
	size_t	i, n = 0;

	for (i = 0; i < w->nskip; i++)
		if (w->skip[i] > w->confirmed_id)
			w->skip[n++] = w->skip[i];
	w->nskip = n;
	if (w->ops.confirmed != NULL)
		w->ops.confirmed(w->ops.arg, w->confirmed_id);
}

/* Wait a backoff, in state s (paused, or renew first), then go on. */
static void
window_pause(struct window *w, enum window_state s, const char *why)
{
	uint64_t	ms = backoff_next(&w->retry_backoff);

	window_enter(w, s, why);
	if (w->ops.pause != NULL)
		w->ops.pause(w->ops.arg, ms);
}

void
window_resume(struct window *w)
{
	if (w->state == WINDOW_PAUSED)
		window_settle(w, "backoff over");
}

/*
 * Give up on id for good: the main thread moves it to the dead-letter table
 * before it deletes anything past it (parks are handed over first).
 */
void
window_park(struct window *w, int64_t id, unsigned attempts,
    const char *reason)
{
	size_t	i;

	/* The main thread logs what became of it (retried later, or not). */
	log_debug("outbox id %" PRId64 " refused: %s; parking it", id, reason);
	if (w->nskip == w->capskip) {
		w->capskip = w->capskip ? w->capskip * 2 : 16;
		w->skip = xrealloc(w->skip, w->capskip * sizeof(*w->skip));
	}
	/* Mostly in increasing order; a channel's culprits may come after. */
	for (i = w->nskip; i > 0 && w->skip[i - 1] > id; i--)
		w->skip[i] = w->skip[i - 1];
	w->skip[i] = id;
	w->nskip++;
	if (w->ops.park != NULL)
		w->ops.park(w->ops.arg, id, attempts, reason);
}

int
window_parked(const struct window *w, int64_t id)
{
	size_t	i;

	for (i = 0; i < w->nskip; i++)
		if (w->skip[i] == id)
			return 1;
	return 0;
}

/*
 * Parked row id is not published: go on after it.  With nothing in flight
 * it is the oldest unconfirmed row, and the prefix passes over it now.
 */
void
window_skipped(struct window *w, int64_t id)
{
	if (id > w->sent_id)
		w->sent_id = id;
	if (w->next_tag == w->first_tag && w->confirmed_id < id) {
		w->confirmed_id = id;
		window_publish_confirmed(w);
		window_settle_open(w, "parked row passed");
	}
}

/*
 * Advance the confirmed prefix over resolved slots.  A nacked slot, or a
 * returned one that is to be retried, breaks the window there; once every
 * tag is resolved, publishing goes back to it after a backoff.
 */
static void
window_advance(struct window *w, int64_t now_ms)
{
	int64_t		 before = w->confirmed_id;
	uint64_t	 n = 0;		/* wraps back at a park */
	unsigned	 attempts;

	while (!window_broken(w) && w->first_tag < w->next_tag) {
		struct pub_slot *sl = &w->ring[w->first_tag % w->cap];

		if (sl->state == SLOT_PENDING)
			break;
		if (sl->state == SLOT_NACKED) {
			window_enter(w, WINDOW_NACKED, "nack");
			break;
		}
		if (sl->returned && sl->ambiguous) {
			/* Not an attempt: it may have been routed. */
			log_msg(window_episode_prio(w), "outbox id %" PRId64
			    " or a message like it behind it (same message-id, "
			    "destination and size) was %s; republishing from "
			    "it one at a time", sl->id, sl->reason ?
			    sl->reason : "returned by the broker");
			window_probe(w);
			window_enter(w, WINDOW_BROKEN, "ambiguous return");
			break;
		}
		if (sl->returned) {
			attempts = window_attempt(w, sl->id);
			if (w->park_unroutable) {
				/* Not in the way of the messages behind it. */
				window_park(w, sl->id, 1, sl->reason ?
				    sl->reason : "returned by the broker");
				n--;	/* parked, not confirmed */
			} else {
				log_msg(window_episode_prio(w), "outbox id %"
				    PRId64 " returned (attempt %u): %s; "
				    "retrying", sl->id, attempts,
				    sl->reason ? sl->reason : "");
				window_probe(w);
				window_enter(w, WINDOW_BROKEN, "return");
				break;
			}
		}
		if (!sl->returned) {
			atomic_fetch_add(&w->st->confirm_ms_sum,
			    (uint64_t)(now_ms - sl->sent_ms));
			atomic_fetch_add(&w->st->confirm_count, 1);
		}
		w->confirmed_id = sl->id;
		w->inflight_bytes -= sl->size;
		free(sl->reason);
		sl->reason = NULL;
		w->first_tag++;
		n++;
	}
	/*
	 * Nothing left in flight: rows after the last confirmed one up to
	 * sent_id were parked and skipped, and no later confirm will come to
	 * pass over them.
	 */
	if (!window_broken(w) && w->first_tag == w->next_tag &&
	    w->sent_id > w->confirmed_id)
		w->confirmed_id = w->sent_id;
	if (w->confirmed_id != before) {
		atomic_fetch_add(&w->st->confirmed, n);
		atomic_store(&w->st->in_flight, window_inflight(w));
		if (w->ops.progress != NULL)
			w->ops.progress(w->ops.arg);
		w->nack_rounds = 0;
		if (!window_broken(w)) {
			backoff_reset(&w->retry_backoff);
			w->episode = 0;
		}
		window_publish_confirmed(w);
	}
	if (window_broken(w) && w->unresolved == 0) {
		/* Go back: republish from the oldest unconfirmed message. */
		int renew = w->state == WINDOW_NACKED &&
		    ++w->nack_rounds >= WINDOW_NACK_RENEW;

		if (renew)
			w->nack_rounds = 0;
		window_forget(w, 0);
		/* A new channel after the frames at hand, then the pause. */
		window_pause(w, renew ? WINDOW_RENEW : WINDOW_PAUSED,
		    "go back");
	} else
		window_settle_open(w, "confirmed");
}

/* basic.ack or basic.nack: tag, or every tag up to it with multiple. */
int
window_resolve(struct window *w, uint64_t tag, int multiple, int nack,
    int64_t now_ms)
{
	uint64_t	t, from, n = 0;

	if (multiple && tag == 0)
		tag = w->next_tag - 1;		/* everything outstanding */
	if (tag >= w->next_tag || (tag == 0 && !multiple))
		return -1;
	from = multiple ? w->first_tag : tag;
	for (t = from; t <= tag; t++) {
		struct pub_slot *sl;

		if (t < w->first_tag)
			continue;
		sl = &w->ring[t % w->cap];
		if (sl->state != SLOT_PENDING)
			continue;
		sl->state = nack ? SLOT_NACKED : SLOT_ACKED;
		w->unresolved--;
		n++;
	}
	if (nack && n > 0) {
		atomic_fetch_add(&w->st->nacked, n);
		/* One line per episode, not one per nack of a storm. */
		log_msg(window_episode_prio(w), "broker nacked %" PRIu64
		    " message%s (delivery tag %" PRIu64 "%s); republishing "
		    "from the first, one at a time", n, n == 1 ? "" : "s",
		    tag, multiple ? ", multiple" : "");
		window_probe(w);
	}
	window_advance(w, now_ms);
	return 0;
}

/*
 * Match a basic.return to the message in flight it names.  The broker
 * returns a message before it acks it, so that message is still pending.
 * When more than one pending message fits (a message-id used twice, to the
 * same place, with bodies of one size) the return cannot say which: the
 * first of them is marked ambiguous, and once it is acked the window goes
 * back to it and republishes one at a time, where a return names one
 * message.  A return that fits none is treated the same way from the
 * oldest pending message (or, when it is the only one, is its return): a
 * return is never taken for a confirm.
 */
void
window_match_return(struct window *w, uint64_t h, const char *mid,
    const char *reason)
{
	struct pub_slot	*first = NULL, *oldest = NULL;
	unsigned	 n = 0, pending = 0;
	uint64_t	 t;

	for (t = w->first_tag; t < w->next_tag; t++) {
		struct pub_slot *sl = &w->ring[t % w->cap];

		if (sl->state != SLOT_PENDING || sl->returned)
			continue;
		if (pending++ == 0)
			oldest = sl;
		if (sl->rethash == h && n++ == 0)
			first = sl;
	}
	if (first == NULL) {
		log_warnx("basic.return for message %s, which matches nothing "
		    "in flight%s", mid, pending > 1 ? ": republishing from "
		    "the oldest unconfirmed message one at a time" : "");
		if ((first = oldest) == NULL)
			return;
		n = pending;
	}
	first->returned = 1;
	first->ambiguous = n > 1;
	free(first->reason);
	first->reason = xstrdup(reason);
}

/*
 * A channel.close that names an exchange (404 "no exchange 'x' in vhost
 * ...", 403 "access to exchange 'x' in vhost ... refused") tells which of
 * the unconfirmed messages caused it: those to that exchange, each of which
 * would close the channel again.  Park them all; how many.
 */
static unsigned
window_park_exchange(struct window *w)
{
	const char	*name, *end;
	uint64_t	 h, t;
	unsigned	 n = 0;

	if ((name = strstr(w->chan_reason, "exchange '")) == NULL)
		return 0;
	name += strlen("exchange '");
	if ((end = strchr(name, '\'')) == NULL)
		return 0;
	h = util_fnv1a(UTIL_FNV_INIT, name, (size_t)(end - name));
	for (t = w->first_tag; t < w->next_tag; t++) {
		struct pub_slot *sl = &w->ring[t % w->cap];

		if (sl->state == SLOT_ACKED || sl->exhash != h)
			continue;
		window_park(w, sl->id, 1, w->chan_reason);
		n++;
	}
	return n;
}

void
window_channel_closed(struct window *w, const char *reason)
{
	snprintf(w->chan_reason, sizeof(w->chan_reason), "%s", reason);
	if (w->state != WINDOW_CLOSED)
		w->closed_from = w->state;
	window_enter(w, WINDOW_CLOSED, "channel.close");
}

/*
 * After channel.close, before the channel is opened again.  The first time,
 * republish the unconfirmed messages one by one to find the culprit; while
 * probing the one message in flight is the culprit.
 */
void
window_recover(struct window *w)
{
	unsigned	attempts, parked;
	int		culprit = 0;

	if (w->confirmed_id < w->probe_until && w->unresolved == 1 &&
	    window_inflight(w) == 1) {
		struct pub_slot *sl = &w->ring[w->first_tag % w->cap];

		culprit = 1;
		attempts = window_attempt(w, sl->id);
		if (w->park_rejected) {
			window_park(w, sl->id, 1, w->chan_reason);
			w->confirmed_id = sl->id;
			window_publish_confirmed(w);
			culprit = 0;	/* parked: go on at once */
		} else
			log_msg(window_episode_prio(w), "outbox id %" PRId64
			    " refused (attempt %u): %s; retrying", sl->id,
			    attempts, w->chan_reason);
	} else if (w->sent_id > w->confirmed_id && w->park_rejected &&
	    (parked = window_park_exchange(w)) > 0) {
		log_msg(window_episode_prio(w), "%s; parked the %u unconfirmed "
		    "message%s to that exchange, republishing the others",
		    w->chan_reason, parked, parked == 1 ? "" : "s");
	} else if (w->sent_id > w->confirmed_id) {
		window_probe(w);
		log_msg(window_episode_prio(w), "%s; republishing outbox ids "
		    "%" PRId64 "..%" PRId64 " one at a time to find the "
		    "message", w->chan_reason, w->confirmed_id + 1,
		    w->probe_until);
	}
	window_forget(w, 1);
	if (culprit)
		window_pause(w, WINDOW_PAUSED, "culprit");
	else if (w->closed_from == WINDOW_PAUSED ||
	    w->closed_from == WINDOW_RENEW)
		/* A new channel it is anyway; the pause asked for runs on. */
		window_enter(w, WINDOW_PAUSED, "channel reopened");
	else
		window_settle(w, "channel reopened");
}

void
window_renewed(struct window *w)
{
	window_forget(w, 1);
	window_enter(w, WINDOW_PAUSED, "channel renewed");
}

const struct pub_slot *
window_oldest_pending(const struct window *w)
{
	uint64_t	t;

	for (t = w->first_tag; t < w->next_tag; t++) {
		const struct pub_slot *sl = &w->ring[t % w->cap];

		if (sl->state == SLOT_PENDING)
			return sl;
	}
	return NULL;
}

void
window_restamp(struct window *w, int64_t now_ms)
{
	uint64_t	t;

	for (t = w->first_tag; t < w->next_tag; t++)
		w->ring[t % w->cap].sent_ms = now_ms;
}
