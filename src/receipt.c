/*
 * receipt.c: receipts (receipt.h).
 *
 * A waiter for one id sits in a min-heap on the id: a confirm of the prefix
 * up to X tells every waiter up to X at once, in id order.  A park comes
 * before the prefix passes its id, so it finds its waiters still in the
 * heap (a scan: parks are rare), and takes them out of it: held, they wait
 * for the dead letter's fate.  The relay retries a dead letter refused
 * fewer than max_attempts times under a new id (receipts_moved(): back in
 * the heap under it) and tells the rest as parked for good
 * (receipts_parked()).  A barrier (WAIT) is done when the outbox has no
 * row left between the confirmed prefix and its last id, and none of its
 * messages is being retried; it is looked at after each confirm and each
 * park.  Timeouts are libevent timers, one a receipt that has a limit.
 */
#include <stdlib.h>
#include <string.h>

#include <event2/event.h>

#include "outbox.h"
#include "receipt.h"
#include "util.h"

struct receipt {
	struct receipts	*r;
	int64_t		 id;		/* the row, or a barrier's last one */
	int		 barrier;
	int		 held;		/* parked, waiting for its fate */
	size_t		 idx;		/* in r->heap, r->barriers, r->held */
	struct event	*ev_timeout;	/* NULL: no limit */
	receipt_fn	 fn;
	void		*arg;
};

struct receipts {
	struct event_base	*base;
	struct outbox		*ob;
	int64_t			 upto;		/* confirmed prefix */
	struct receipt		**heap;		/* id waiters, min-heap */
	size_t			 nheap, capheap;
	struct receipt		**barriers;
	size_t			 nbarriers, capbarriers;
	struct receipt		**held;
	size_t			 nheld, capheld;
	unsigned		 max_attempts;
	void			(*on_waiting)(void *, int);
	void			*on_waiting_arg;
};

struct receipts *
receipts_new(struct event_base *base, struct outbox *ob, unsigned max_attempts)
{
	struct receipts	*r = xcalloc(1, sizeof(*r));

	r->base = base;
	r->ob = ob;
	r->max_attempts = max_attempts;
	return r;
}

static size_t
receipts_count(const struct receipts *r)
{
	return r->nheap + r->nbarriers + r->nheld;
}

static void
receipt_free(struct receipt *rc)
{
	if (rc->ev_timeout != NULL)
		event_free(rc->ev_timeout);
	free(rc);
}

void
receipts_free(struct receipts *r)
{
	size_t	i;

	if (r == NULL)
		return;
	for (i = 0; i < r->nheap; i++)
		receipt_free(r->heap[i]);
	for (i = 0; i < r->nbarriers; i++)
		receipt_free(r->barriers[i]);
	for (i = 0; i < r->nheld; i++)
		receipt_free(r->held[i]);
	free(r->heap);
	free(r->barriers);
	free(r->held);
	free(r);
}

static void
heap_set(struct receipts *r, size_t i, struct receipt *rc)
{
	r->heap[i] = rc;
	rc->idx = i;
}

static void
heap_up(struct receipts *r, size_t i)
{
	struct receipt	*rc = r->heap[i];

	while (i > 0 && r->heap[(i - 1) / 2]->id > rc->id) {
		heap_set(r, i, r->heap[(i - 1) / 2]);
		i = (i - 1) / 2;
	}
	heap_set(r, i, rc);
}

static void
heap_down(struct receipts *r, size_t i)
{
	struct receipt	*rc = r->heap[i];
	size_t		 c;

	for (;;) {
		c = 2 * i + 1;
		if (c >= r->nheap)
			break;
		if (c + 1 < r->nheap && r->heap[c + 1]->id < r->heap[c]->id)
			c++;
		if (r->heap[c]->id >= rc->id)
			break;
		heap_set(r, i, r->heap[c]);
		i = c;
	}
	heap_set(r, i, rc);
}

/* Take rc out of wherever it waits. */
static void
receipt_unlink(struct receipts *r, struct receipt *rc)
{
	struct receipt	*last;
	size_t		 i = rc->idx;

	if (rc->barrier) {
		last = r->barriers[--r->nbarriers];
		if (last != rc) {
			r->barriers[i] = last;
			last->idx = i;
		}
	} else if (rc->held) {
		last = r->held[--r->nheld];
		if (last != rc) {
			r->held[i] = last;
			last->idx = i;
		}
		rc->held = 0;
	} else if ((last = r->heap[--r->nheap]) != rc) {
		heap_set(r, i, last);
		if (i > 0 && r->heap[(i - 1) / 2]->id > last->id)
			heap_up(r, i);
		else
			heap_down(r, i);
	}
	if (receipts_count(r) == 0 && r->on_waiting != NULL)
		r->on_waiting(r->on_waiting_arg, 0);
}

/* rc was added: the first one waiting? */
static void
receipt_linked(struct receipts *r)
{
	if (receipts_count(r) == 1 && r->on_waiting != NULL)
		r->on_waiting(r->on_waiting_arg, 1);
}

void
receipts_on_waiting(struct receipts *r, void (*fn)(void *, int), void *arg)
{
	r->on_waiting = fn;
	r->on_waiting_arg = arg;
}

/* Unlinked rc: tell its waiter, then free it. */
static void
receipt_tell(struct receipt *rc, enum receipt_fate fate, const char *reason,
    uint64_t n)
{
	receipt_fn	 fn = rc->fn;
	void		*arg = rc->arg;

	receipt_free(rc);
	fn(arg, fate, reason, n);
}

static void
receipt_timeout_cb(evutil_socket_t fd, short what, void *arg)
{
	struct receipt	*rc = arg;

	(void)fd;
	(void)what;
	receipt_unlink(rc->r, rc);
	receipt_tell(rc, RECEIPT_TIMEOUT, NULL, 0);
}

static struct receipt *
receipt_new(struct receipts *r, int64_t id, int barrier, unsigned timeout_ms,
    receipt_fn fn, void *arg)
{
	struct receipt	*rc = xcalloc(1, sizeof(*rc));
	struct timeval	 tv;

	rc->r = r;
	rc->id = id;
	rc->barrier = barrier;
	rc->fn = fn;
	rc->arg = arg;
	if (timeout_ms > 0) {
		rc->ev_timeout = evtimer_new(r->base, receipt_timeout_cb, rc);
		if (rc->ev_timeout == NULL)
			abort();
		tv.tv_sec = timeout_ms / 1000;
		tv.tv_usec = (timeout_ms % 1000) * 1000;
		evtimer_add(rc->ev_timeout, &tv);
	}
	return rc;
}

static void
receipt_heap_add(struct receipts *r, struct receipt *rc)
{
	if (r->nheap == r->capheap) {
		r->capheap = r->capheap ? r->capheap * 2 : 64;
		r->heap = xrealloc(r->heap, r->capheap * sizeof(*r->heap));
	}
	r->heap[r->nheap++] = rc;
	heap_up(r, r->nheap - 1);
}

static void
receipt_hold(struct receipts *r, struct receipt *rc)
{
	if (r->nheld == r->capheld) {
		r->capheld = r->capheld ? r->capheld * 2 : 8;
		r->held = xrealloc(r->held, r->capheld * sizeof(*r->held));
	}
	rc->held = 1;
	rc->idx = r->nheld;
	r->held[r->nheld++] = rc;
}

struct receipt *
receipt_wait_id(struct receipts *r, int64_t id, unsigned timeout_ms,
    receipt_fn fn, void *arg)
{
	struct receipt	*rc;
	char		 reason[256];
	int64_t		 row = id;
	int		 held = 0;

	/*
	 * Only a row committed before (a repeated idempotency key) can be
	 * behind the prefix or gone from the outbox: confirmed, a dead
	 * letter, or one the relay retries, under its id or a new one.
	 */
	if (id <= r->upto || outbox_first_above(r->ob, id - 1) != id) {
		switch (outbox_fate_of(r->ob, id, r->upto, r->max_attempts,
		    &row, reason, sizeof(reason))) {
		case OUTBOX_FATE_QUEUED:
			if (row > r->upto)
				break;
			/* FALLTHROUGH */
		case OUTBOX_FATE_CONFIRMED:
		case OUTBOX_FATE_UNKNOWN:	/* gone, not known to be purged */
			fn(arg, RECEIPT_CONFIRMED, NULL, 0);
			return NULL;
		case OUTBOX_FATE_PURGED:
			/* Refused, then deleted: it will never be delivered. */
			fn(arg, RECEIPT_PARKED, "purged", 0);
			return NULL;
		case OUTBOX_FATE_PARKED:
			fn(arg, RECEIPT_PARKED, reason, 0);
			return NULL;
		case OUTBOX_FATE_RETRYING:
			held = 1;
			break;
		}
	}
	rc = receipt_new(r, row, 0, timeout_ms, fn, arg);
	if (held)
		receipt_hold(r, rc);
	else
		receipt_heap_add(r, rc);
	receipt_linked(r);
	return rc;
}

/* Nothing left to confirm up to upto: the first row above the prefix. */
static int
receipts_barrier_done(struct receipts *r, int64_t upto)
{
	int64_t	first;

	if (upto > r->upto) {
		first = outbox_first_above(r->ob, r->upto);
		if (first != 0 && first <= upto)
			return 0;
	}
	return !outbox_retrying_upto(r->ob, upto, r->upto, r->max_attempts);
}

struct receipt *
receipt_wait_upto(struct receipts *r, int64_t upto, unsigned timeout_ms,
    receipt_fn fn, void *arg)
{
	struct receipt	*rc;

	if (receipts_barrier_done(r, upto)) {
		fn(arg, RECEIPT_CONFIRMED, NULL, outbox_dead_upto(r->ob, upto));
		return NULL;
	}
	rc = receipt_new(r, upto, 1, timeout_ms, fn, arg);
	if (r->nbarriers == r->capbarriers) {
		r->capbarriers = r->capbarriers ? r->capbarriers * 2 : 8;
		r->barriers = xrealloc(r->barriers,
		    r->capbarriers * sizeof(*r->barriers));
	}
	rc->idx = r->nbarriers;
	r->barriers[r->nbarriers++] = rc;
	receipt_linked(r);
	return rc;
}

void
receipt_cancel(struct receipts *r, struct receipt *rc)
{
	receipt_unlink(r, rc);
	receipt_free(rc);
}

/*
 * Called after every commit and confirm.  The first row above the prefix is
 * the same for every barrier: one query, not one a barrier (64 clients in
 * WAIT cost the ingest a query each a commit), asked again only after a
 * waiter was told, since its session may have changed the outbox.
 */
void
receipts_check(struct receipts *r)
{
	struct receipt	*rc;
	size_t		 i = 0;
	int64_t		 first;

	if (r->nbarriers == 0)
		return;
	first = outbox_first_above(r->ob, r->upto);
	while (i < r->nbarriers) {
		rc = r->barriers[i];
		if ((rc->id > r->upto && first != 0 && first <= rc->id) ||
		    outbox_retrying_upto(r->ob, rc->id, r->upto,
		    r->max_attempts)) {
			i++;
			continue;
		}
		/* Unlinking moves the last one here: look at i again. */
		receipt_unlink(r, rc);
		receipt_tell(rc, RECEIPT_CONFIRMED, NULL,
		    outbox_dead_upto(r->ob, rc->id));
		first = outbox_first_above(r->ob, r->upto);
	}
}

void
receipts_confirmed(struct receipts *r, int64_t upto)
{
	struct receipt	*rc;

	if (upto <= r->upto)
		return;
	r->upto = upto;
	while (r->nheap > 0 && r->heap[0]->id <= upto) {
		rc = r->heap[0];
		receipt_unlink(r, rc);
		receipt_tell(rc, RECEIPT_CONFIRMED, NULL, 0);
	}
	if (r->nbarriers > 0)
		receipts_check(r);
}

void
receipts_parking(struct receipts *r, int64_t id)
{
	struct receipt	*rc;
	size_t		 i = 0;

	while (i < r->nheap) {
		rc = r->heap[i];
		if (rc->id != id) {
			i++;
			continue;
		}
		receipt_unlink(r, rc);
		receipt_hold(r, rc);
		receipt_linked(r);
		i = 0;		/* the heap was reordered */
	}
}

void
receipts_parked(struct receipts *r, int64_t id, const char *reason)
{
	struct receipt	*rc;
	size_t		 i = 0;

	receipts_parking(r, id);
	while (i < r->nheld) {
		rc = r->held[i];
		if (rc->id != id) {
			i++;
			continue;
		}
		/* Unlinking moves the last one here: look at i again. */
		receipt_unlink(r, rc);
		receipt_tell(rc, RECEIPT_PARKED, reason, 0);
	}
}

void
receipts_moved(struct receipts *r, int64_t from, int64_t to)
{
	struct receipt	*rc;
	size_t		 i = 0;

	while (i < r->nheld) {
		rc = r->held[i];
		if (rc->id != from) {
			i++;
			continue;
		}
		receipt_unlink(r, rc);
		rc->id = to;
		receipt_heap_add(r, rc);
		receipt_linked(r);
	}
}

void
receipts_shutdown(struct receipts *r)
{
	struct receipt	*rc;

	while (r->nheap > 0) {
		rc = r->heap[r->nheap - 1];
		receipt_unlink(r, rc);
		receipt_tell(rc, RECEIPT_SHUTDOWN, NULL, 0);
	}
	while (r->nbarriers > 0) {
		rc = r->barriers[r->nbarriers - 1];
		receipt_unlink(r, rc);
		receipt_tell(rc, RECEIPT_SHUTDOWN, NULL, 0);
	}
	while (r->nheld > 0) {
		rc = r->held[r->nheld - 1];
		receipt_unlink(r, rc);
		receipt_tell(rc, RECEIPT_SHUTDOWN, NULL, 0);
	}
}

size_t
receipts_waiting(const struct receipts *r)
{
	return receipts_count(r);
}
