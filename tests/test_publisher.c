/*
 * test_publisher.c: the publisher's window bookkeeping, without a broker.
 *
 * publisher.c keeps the window's logic in static functions beside the link;
 * until it is pure code of its own (issue #19) this test includes the file
 * and drives those functions on a publisher built by hand: no thread, no
 * connection, an event base that never runs.
 */
#include "../src/publisher.c"

#include "tap.h"

static struct config		cf;
static struct relay_stats	st;

static void
noop_cb(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	(void)arg;
}

static struct publisher *
mkpub(unsigned cap)
{
	struct publisher	*p = xcalloc(1, sizeof(*p));

	cf.on_rejected = POLICY_PARK;
	cf.on_unroutable = POLICY_PARK;
	cf.max_attempts = 3;
	p->cf = &cf;
	p->st = &st;
	p->cap = cap;
	p->ring = xcalloc(cap, sizeof(*p->ring));
	p->next_tag = p->first_tag = 1;
	buf_init(&p->wbuf);
	buf_init(&p->stage);
	pthread_mutex_init(&p->park_lock, NULL);
	p->base = event_base_new();
	p->ev_confirmed = event_new(p->base, -1, 0, noop_cb, NULL);
	p->ev_notify = evtimer_new(p->base, noop_cb, NULL);
	return p;
}

static void
freepub(struct publisher *p)
{
	pub_window_reset(p, 1);
	event_free(p->ev_confirmed);
	event_free(p->ev_notify);
	event_base_free(p->base);
	buf_free(&p->wbuf);
	buf_free(&p->stage);
	free(p->ring);
	free(p->parks);
	free(p->skip);
	pthread_mutex_destroy(&p->park_lock);
	free(p);
}

/* Put a message with outbox id to exchange ex in flight. */
static void
send_one(struct publisher *p, int64_t id, const char *ex)
{
	struct pub_slot	*sl = &p->ring[p->next_tag % p->cap];

	memset(sl, 0, sizeof(*sl));
	sl->id = id;
	sl->state = SLOT_PENDING;
	sl->exhash = util_fnv1a(UTIL_FNV_INIT, ex, strlen(ex));
	p->next_tag++;
	p->unresolved++;
	p->sent_id = id;
}

/* A window reset forgets a nack that broke the old window (issue #18). */
static void
test_nack_flags(void)
{
	struct publisher	*p = mkpub(8);

	p->nack_break = 1;
	p->nack_rounds = 2;
	pub_window_reset(p, 0);
	is_int(p->nack_break, 0, "a go-back on the channel forgets the flag");
	is_int(p->nack_rounds, 2, "and keeps the count of such go-backs");
	p->nack_break = 1;
	pub_window_reset(p, 1);
	is_int(p->nack_break, 0, "a new channel forgets the flag");
	is_int(p->nack_rounds, 0, "and the count: it was the old channel's");
	freepub(p);
}

/*
 * A channel.close that names an exchange parks the unconfirmed messages to
 * it, and nothing else; they are skipped when read again, until the
 * confirmed prefix passes them.
 */
static void
test_park_exchange(void)
{
	struct publisher	*p = mkpub(8);
	struct pub_park		*pk;

	send_one(p, 11, "a");
	send_one(p, 12, "x");
	send_one(p, 13, "");
	send_one(p, 14, "x");
	p->ring[1 % p->cap].state = SLOT_ACKED;	/* 11: acked */
	snprintf(p->chan_reason, sizeof(p->chan_reason), "channel closed by "
	    "broker: 404 NOT_FOUND - no exchange 'x' in vhost '/'");
	is_int(pub_park_exchange(p), 2, "404: two messages to 'x' parked");
	pk = p->parks;
	ok(p->nparks == 2 && pk[0].id == 12 && pk[1].id == 14,
	    "ids 12 and 14, in order");
	ok(strstr(pk[0].reason, "NOT_FOUND") != NULL, "with the reply: %s",
	    pk[0].reason);
	ok(pub_parked(p, 12) && pub_parked(p, 14) && !pub_parked(p, 13),
	    "skipped when read again, the others not");
	p->confirmed_id = 12;
	pub_publish_confirmed(p);
	ok(!pub_parked(p, 12) && pub_parked(p, 14), "the prefix past 12: "
	    "only 14 left to skip");

	p->nparks = 0;
	snprintf(p->chan_reason, sizeof(p->chan_reason), "channel closed by "
	    "broker: 403 ACCESS_REFUSED - access to exchange 'a' in vhost "
	    "'/' refused for user 'u'");
	is_int(pub_park_exchange(p), 0, "403 for 'a': its only message was "
	    "acked, nothing to park");
	snprintf(p->chan_reason, sizeof(p->chan_reason), "channel closed by "
	    "broker: 406 PRECONDITION_FAILED - invalid expiration");
	is_int(pub_park_exchange(p), 0, "406 names no exchange: nothing "
	    "parked (the probe finds the culprit)");
	freepub(p);
}

/* A parked row with nothing in flight: the prefix passes over it at once. */
static void
test_skipped(void)
{
	struct publisher	*p = mkpub(8);

	p->confirmed_id = p->sent_id = 20;
	pub_park(p, 21, 1, "test");
	pub_skipped(p, 21);
	is_int(p->confirmed_id, 21, "nothing in flight: confirmed moves on");
	send_one(p, 22, "a");
	pub_park(p, 23, 1, "test");
	pub_skipped(p, 23);
	is_int(p->sent_id, 23, "in flight: publishing goes on after it");
	is_int(p->confirmed_id, 21, "and the prefix waits for 22's confirm");
	p->ring[p->first_tag % p->cap].state = SLOT_ACKED;
	p->unresolved--;
	pub_advance(p);
	is_int(p->confirmed_id, 23, "22 confirmed: the prefix passes the "
	    "parked 23 too, with nothing after it");
	is_int(p->nskip, 0, "nothing left to skip");
	freepub(p);
}

int
main(void)
{
	test_nack_flags();
	test_park_exchange();
	test_skipped();
	return done_testing();
}
