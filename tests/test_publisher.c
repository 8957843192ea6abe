/*
 * test_publisher.c: what publisher.c does with the window's decisions,
 * without a broker.  The window itself is tested in test_window.c; this
 * test includes publisher.c and drives its glue on a publisher built by
 * hand: no thread, no connection, an event base that never runs.
 */
#include "../src/publisher.c"

#include "tap.h"

static struct config		cf;
static struct relay_stats	st;

/* What the owner (the main thread) was handed, in order. */
static char	handed[256];

static void
noop_cb(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	(void)arg;
}

static void
owner_park_cb(int64_t id, unsigned attempts, const char *reason, void *arg)
{
	size_t	n = strlen(handed);

	(void)arg;
	snprintf(handed + n, sizeof(handed) - n, "park %" PRId64 "/%u (%s); ",
	    id, attempts, reason);
}

static void
owner_confirmed_cb(int64_t upto, void *arg)
{
	size_t	n = strlen(handed);

	(void)arg;
	snprintf(handed + n, sizeof(handed) - n, "confirmed %" PRId64 "; ",
	    upto);
}

static struct publisher *
mkpub(unsigned cap)
{
	struct publisher	*p = xcalloc(1, sizeof(*p));
	struct window_ops	 ops = { pub_park_cb, pub_confirmed_to_cb,
				     pub_progress_cb, pub_pause_cb, p };

	cf.on_rejected = POLICY_PARK;
	cf.on_unroutable = POLICY_PARK;
	cf.max_attempts = 3;
	p->cf = &cf;
	p->st = &st;
	p->park_cb = owner_park_cb;
	p->confirmed_cb = owner_confirmed_cb;
	window_init(&p->win, cap, 1, 1, 100, 1000, 1, &st, &ops);
	buf_init(&p->wbuf);
	buf_init(&p->stage);
	pthread_mutex_init(&p->park_lock, NULL);
	p->base = event_base_new();
	p->ev_confirmed = event_new(p->base, -1, 0, noop_cb, NULL);
	p->ev_notify = evtimer_new(p->base, noop_cb, NULL);
	p->ev_resume = evtimer_new(p->base, noop_cb, NULL);
	return p;
}

static void
freepub(struct publisher *p)
{
	window_free(&p->win);
	event_free(p->ev_confirmed);
	event_free(p->ev_notify);
	event_free(p->ev_resume);
	event_base_free(p->base);
	buf_free(&p->wbuf);
	buf_free(&p->stage);
	free(p->parks);
	pthread_mutex_destroy(&p->park_lock);
	free(p);
}

/*
 * The window's parks reach the main thread before a confirmed prefix that
 * covers them: the owner moves a row to the dead-letter table before it
 * deletes past it.
 */
static void
test_park_before_confirmed(void)
{
	struct publisher	*p = mkpub(8);

	(void)window_sent(&p->win, 1, 10, 1, 1, 0);
	(void)window_sent(&p->win, 2, 10, 2, 1, 0);
	window_match_return(&p->win, 2, "m2", "returned: 312 NO_ROUTE");
	is_int(pub_resolve(p, 2, 1, 0), 0, "multiple ack of tag 2");
	is_int(p->nparks, 1, "one park queued for the main thread");
	is_int(atomic_load(&p->st->parked), 1, "counted");
	is_int(atomic_load(&p->confirmed_shared), 2, "confirmed 2 stored");
	ok(evtimer_pending(p->ev_notify, NULL), "main is told within "
	    "PUB_NOTIFY_MS");
	is_int(pub_deliver(p), 2, "delivered up to 2");
	is_str(handed, "park 2/1 (returned: 312 NO_ROUTE); confirmed 2; ",
	    "the park first, then the prefix");
	is_int(p->nparks, 0, "the queue is empty");
	ok(p->healthy, "a confirm marks the link healthy");
	freepub(p);
}

/* A go-back asks for a pause: the resume timer runs. */
static void
test_pause_timer(void)
{
	struct publisher	*p = mkpub(8);

	(void)window_sent(&p->win, 1, 10, 1, 1, 0);
	ok(!evtimer_pending(p->ev_resume, NULL), "no pause yet");
	is_int(pub_resolve(p, 1, 0, 1), 0, "a nack of tag 1");
	ok(evtimer_pending(p->ev_resume, NULL), "the resume timer runs");
	is_int(p->win.state, WINDOW_PAUSED, "the window is paused");
	freepub(p);
}

int
main(void)
{
	log_init(LOG_ERR, "test_publisher");
	test_park_before_confirmed();
	test_pause_timer();
	return done_testing();
}
