/*
 * test_window.c: the confirm window (window.c) without a broker: acks and
 * nacks, go-back-N, channel renewal, returns, probing after channel.close.
 * What the window asks of its owner is recorded by the ops below.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "log.h"
#include "util.h"
#include "window.h"

#include "tap.h"

#define NOW	1000

static struct relay_stats	st;

/* What the window asked for. */
struct rec {
	int64_t		park_id[16];
	unsigned	park_attempts[16];
	char		park_reason[16][WINDOW_REASON_MAX];
	int		nparks;
	int64_t		confirmed;	/* the last value handed over */
	int		nconfirmed;
	int		nprogress;
	int		npause;
};

static struct rec	rec;

static void
park_cb(void *arg, int64_t id, unsigned attempts, const char *reason)
{
	struct rec	*r = arg;

	if (r->nparks < 16) {
		r->park_id[r->nparks] = id;
		r->park_attempts[r->nparks] = attempts;
		snprintf(r->park_reason[r->nparks], WINDOW_REASON_MAX, "%s",
		    reason);
	}
	r->nparks++;
}

static void
confirmed_cb(void *arg, int64_t id)
{
	struct rec	*r = arg;

	r->confirmed = id;
	r->nconfirmed++;
}

static void
progress_cb(void *arg)
{
	((struct rec *)arg)->nprogress++;
}

static void
pause_cb(void *arg, uint64_t ms)
{
	(void)ms;
	((struct rec *)arg)->npause++;
}

/* A window of cap with confirmed_id 100: the next row is 101. */
static void
mkwin(struct window *w, unsigned cap, int park_unroutable, int park_rejected)
{
	struct window_ops	ops = { park_cb, confirmed_cb, progress_cb,
				    pause_cb, &rec };

	memset(&rec, 0, sizeof(rec));
	memset(&st, 0, sizeof(st));
	window_init(w, cap, park_unroutable, park_rejected, 100, 1000, 1, &st,
	    &ops);
	w->confirmed_id = w->sent_id = 100;
}

static uint64_t
exhash(const char *ex)
{
	return util_fnv1a(UTIL_FNV_INIT, ex, strlen(ex));
}

/* Publish id to exchange ex; the return hash is h.  1: window full. */
static int
send_h(struct window *w, int64_t id, const char *ex, uint64_t h)
{
	return window_sent(w, id, 10, h, exhash(ex), NOW);
}

static int
send1(struct window *w, int64_t id)
{
	return send_h(w, id, "ex", (uint64_t)id * 7919);
}

static void
ack(struct window *w, uint64_t tag, int multiple)
{
	(void)window_resolve(w, tag, multiple, 0, NOW + 5);
}

static void
nack(struct window *w, uint64_t tag, int multiple)
{
	(void)window_resolve(w, tag, multiple, 1, NOW + 5);
}

#define is_state(w, s, ...) is_str(window_state_name((w)->state),	\
	window_state_name(s), __VA_ARGS__)

static void
test_in_order(void)
{
	struct window	w;

	mkwin(&w, 8, 1, 1);
	send1(&w, 101);
	send1(&w, 102);
	send1(&w, 103);
	is_int(window_inflight(&w), 3, "in order: 3 in flight");
	ack(&w, 1, 0);
	is_int(w.confirmed_id, 101, "ack of tag 1: confirmed 101");
	is_int(rec.confirmed, 101, "handed over to the owner");
	ack(&w, 2, 0);
	ack(&w, 3, 0);
	is_int(w.confirmed_id, 103, "tags 2, 3: confirmed 103");
	is_int(window_inflight(&w), 0, "nothing in flight");
	is_int(w.inflight_bytes, 0, "no bytes in flight");
	is_int(st.confirmed, 3, "3 confirms counted");
	is_int(st.confirm_ms_sum, 15, "5 ms each to confirm");
	ok(rec.nprogress == 3, "progress told at each step (%d)",
	    rec.nprogress);
	is_state(&w, WINDOW_OPEN, "open throughout");
	is_int(window_resolve(&w, 4, 0, 0, NOW), -1,
	    "an ack of a tag never sent is refused");
	is_int(window_resolve(&w, 0, 0, 0, NOW), -1, "and of tag 0");
	window_free(&w);
}

static void
test_out_of_order(void)
{
	struct window	w;

	mkwin(&w, 8, 1, 1);
	send1(&w, 101);
	send1(&w, 102);
	send1(&w, 103);
	send1(&w, 104);
	ack(&w, 3, 0);
	is_int(w.confirmed_id, 100, "ack of tag 3 alone: nothing confirmed");
	ack(&w, 2, 0);
	is_int(w.confirmed_id, 100, "tag 2 too: tag 1 still holds the prefix");
	is_int(w.unresolved, 2, "tags 1 and 4 unresolved");
	ack(&w, 1, 0);
	is_int(w.confirmed_id, 103, "tag 1: the prefix passes 1..3");
	is_int(window_inflight(&w), 1, "tag 4 in flight");
	ack(&w, 3, 0);
	is_int(w.confirmed_id, 103, "a repeated ack changes nothing");
	ack(&w, 4, 0);
	is_int(w.confirmed_id, 104, "tag 4: confirmed 104");
	window_free(&w);
}

static void
test_multiple(void)
{
	struct window	w;
	int64_t		id;

	mkwin(&w, 8, 1, 1);
	for (id = 101; id <= 105; id++)
		send1(&w, id);
	ack(&w, 3, 1);
	is_int(w.confirmed_id, 103, "multiple ack of tag 3: confirmed 103");
	is_int(w.unresolved, 2, "tags 4 and 5 unresolved");
	is_int(rec.nconfirmed, 1, "handed over once");
	ack(&w, 0, 1);
	is_int(w.confirmed_id, 105, "multiple ack of tag 0: everything");
	is_int(window_inflight(&w), 0, "nothing in flight");
	window_free(&w);
}

/* The window is full at cap, and while probing at 1. */
static void
test_full(void)
{
	struct window	w;

	mkwin(&w, 3, 1, 1);
	is_int(send1(&w, 101), 0, "1 of 3: room");
	is_int(send1(&w, 102), 0, "2 of 3: room");
	is_int(send1(&w, 103), 1, "3 of 3: full");
	is_int(w.first_tag, 1, "tags 1..3");
	is_int(w.next_tag, 4, "next tag 4");
	window_free(&w);
}

/*
 * A nack breaks the window at the nacked message: nothing more is sent
 * until every tag is resolved, then it goes back to that message after a
 * backoff and republishes one at a time; tags go on increasing.
 */
static void
test_nack_go_back(void)
{
	struct window	w;
	int64_t		id;

	mkwin(&w, 8, 1, 1);
	for (id = 101; id <= 104; id++)
		send1(&w, id);
	nack(&w, 2, 0);
	is_int(st.nacked, 1, "one nack counted");
	is_int(w.probe_until, 104, "probe up to the last sent, 104");
	is_state(&w, WINDOW_PROBING, "tag 1 pending: probing");
	ok(window_inflight(&w) >= window_limit(&w), "window 1: full, "
	    "nothing more sent");
	ack(&w, 1, 0);
	is_int(w.confirmed_id, 101, "tag 1 acked: confirmed 101");
	is_state(&w, WINDOW_NACKED, "the prefix reached the nack: nacked");
	ok(!window_can_send(&w), "nothing is sent while nacked");
	ack(&w, 3, 0);
	is_state(&w, WINDOW_NACKED, "tag 4 unresolved: still nacked");
	is_int(rec.npause, 0, "no go-back yet");
	is_int(w.confirmed_id, 101, "acked 103 is not confirmed past the "
	    "nack");
	ack(&w, 4, 0);
	is_state(&w, WINDOW_PAUSED, "all resolved: paused before going back");
	is_int(rec.npause, 1, "one backoff asked for");
	is_int(w.sent_id, 101, "publishing goes back to 102");
	is_int(w.next_tag, 5, "tags go on at 5");
	is_int(w.first_tag, 5, "nothing in flight");
	ok(!window_can_send(&w), "nothing is sent while paused");
	window_resume(&w);
	is_state(&w, WINDOW_PROBING, "backoff over: probing");
	is_int(window_limit(&w), 1, "window 1");
	is_int(send1(&w, 102), 1, "102 again on tag 5: full");
	ack(&w, 5, 0);
	is_int(w.confirmed_id, 102, "tag 5 acked: confirmed 102");
	is_state(&w, WINDOW_PROBING, "still probing up to 104");
	send1(&w, 103);
	ack(&w, 6, 0);
	send1(&w, 104);
	ack(&w, 7, 0);
	is_int(w.confirmed_id, 104, "confirmed 104");
	is_state(&w, WINDOW_OPEN, "probe done: open");
	is_int(window_limit(&w), 8, "the full window again");
	is_int(rec.nparks, 0, "nothing parked");
	window_free(&w);
}

/* One go-back on a nack of message 101, from the open window. */
static void
nack_round(struct window *w)
{
	window_resume(w);
	send1(w, 101);
	nack(w, w->next_tag - 1, 0);
}

/* Nacks WINDOW_NACK_RENEW times in a row, nothing confirmed: new channel. */
static void
test_nack_renew(void)
{
	struct window	w;

	mkwin(&w, 4, 1, 1);
	nack_round(&w);
	is_state(&w, WINDOW_PAUSED, "first nack round: paused");
	is_int(w.nack_rounds, 1, "one round");
	nack_round(&w);
	is_state(&w, WINDOW_PAUSED, "second: paused");
	nack_round(&w);
	is_state(&w, WINDOW_RENEW, "third: renew the channel");
	is_int(rec.npause, 3, "each round waits a backoff");
	is_int(w.nack_rounds, 0, "the count starts again");
	window_renewed(&w);
	is_state(&w, WINDOW_PAUSED, "renewed: the backoff runs on");
	is_int(w.next_tag, 1, "a new channel's tags start at 1");
	window_resume(&w);
	is_state(&w, WINDOW_PROBING, "then probing");
	window_free(&w);

	/* Progress in between starts the count again. */
	mkwin(&w, 4, 1, 1);
	nack_round(&w);
	nack_round(&w);
	window_resume(&w);
	send1(&w, 101);
	ack(&w, w.next_tag - 1, 0);
	is_int(w.nack_rounds, 0, "a confirm resets the count");
	window_resume(&w);
	send1(&w, 102);
	nack(&w, w.next_tag - 1, 0);
	is_state(&w, WINDOW_PAUSED, "a nack after progress: paused, no renew");
	window_free(&w);
}

/* A basic.return, then the ack: policy park parks it, the stream goes on. */
static void
test_return_park(void)
{
	struct window	w;

	mkwin(&w, 8, 1, 1);
	send_h(&w, 101, "ex", 11);
	send_h(&w, 102, "ex", 12);
	send_h(&w, 103, "ex", 13);
	window_match_return(&w, 12, "m102", "returned by the broker: 312 "
	    "NO_ROUTE");
	ok(w.ring[2 % 8].returned && !w.ring[2 % 8].ambiguous,
	    "tag 2 returned, not ambiguous");
	ack(&w, 3, 1);
	is_int(rec.nparks, 1, "one park");
	is_int(rec.park_id[0], 102, "of 102");
	ok(strstr(rec.park_reason[0], "NO_ROUTE") != NULL, "with the reason: "
	    "%s", rec.park_reason[0]);
	is_int(w.confirmed_id, 103, "the prefix passes it: confirmed 103");
	is_int(st.confirmed, 2, "two confirmed, one parked");
	is_state(&w, WINDOW_OPEN, "open");
	window_free(&w);
}

/* Policy retry: the window breaks at the returned message. */
static void
test_return_retry(void)
{
	struct window	w;

	mkwin(&w, 8, 0, 1);
	send_h(&w, 101, "ex", 11);
	send_h(&w, 102, "ex", 12);
	send_h(&w, 103, "ex", 13);
	window_match_return(&w, 12, "m102", "returned");
	ack(&w, 2, 0);
	is_state(&w, WINDOW_OPEN, "returned 102 acked, 101 pending: open");
	ack(&w, 1, 0);
	is_int(w.confirmed_id, 101, "confirmed 101");
	is_state(&w, WINDOW_BROKEN, "the prefix reached 102: broken");
	is_int(w.fail_attempts, 1, "attempt 1 of 102");
	ack(&w, 3, 0);
	is_state(&w, WINDOW_PAUSED, "all resolved: paused");
	is_int(w.sent_id, 101, "back to 102");
	is_int(w.probe_until, 103, "probing up to 103");
	is_int(rec.nparks, 0, "nothing parked");
	window_free(&w);
}

/*
 * Two identical messages in flight (same message-id, destination, size):
 * a return cannot say which; the first is marked and the window goes back
 * to it one at a time, where a return names one message.
 */
static void
test_return_ambiguous(void)
{
	struct window	w;

	mkwin(&w, 8, 1, 1);
	send_h(&w, 101, "ex", 42);
	send_h(&w, 102, "ex", 42);
	send_h(&w, 103, "ex", 13);
	window_match_return(&w, 42, "dup", "returned");
	ok(w.ring[1].returned && w.ring[1].ambiguous, "the first is marked "
	    "ambiguous");
	ok(!w.ring[2].returned, "the second not");
	ack(&w, 3, 1);
	is_int(w.confirmed_id, 100, "nothing confirmed past it");
	is_int(rec.nparks, 0, "nothing parked: it may have been routed");
	is_state(&w, WINDOW_PAUSED, "went back");
	is_int(w.fail_attempts, 0, "not counted as an attempt");
	window_resume(&w);
	is_state(&w, WINDOW_PROBING, "probing up to 103");
	send_h(&w, 101, "ex", 42);
	window_match_return(&w, 42, "dup", "returned");
	ok(!w.ring[4 % 8].ambiguous, "alone in flight: not ambiguous");
	ack(&w, 4, 0);
	is_int(rec.nparks, 1, "parked now");
	is_int(rec.park_id[0], 101, "101");
	is_int(w.confirmed_id, 101, "confirmed 101");
	window_free(&w);

	/* A return that matches nothing marks the oldest pending message. */
	mkwin(&w, 8, 1, 1);
	send_h(&w, 101, "ex", 1);
	send_h(&w, 102, "ex", 2);
	ack(&w, 1, 0);
	window_match_return(&w, 99, "other", "returned");
	ok(w.ring[2].returned && !w.ring[2].ambiguous, "one pending: it is "
	    "the one returned");
	window_free(&w);
}

/*
 * channel.close naming no exchange: the window reopens and probes one at a
 * time up to the last sent; a close while probing names the culprit.
 */
static void
test_close_probe(void)
{
	struct window	w;

	mkwin(&w, 8, 1, 1);
	send1(&w, 101);
	send1(&w, 102);
	send1(&w, 103);
	ack(&w, 1, 0);
	window_channel_closed(&w, "channel closed by broker: 406 "
	    "PRECONDITION_FAILED - invalid expiration");
	is_state(&w, WINDOW_CLOSED, "closed");
	ok(!window_can_send(&w), "nothing is sent while closed");
	window_recover(&w);
	is_int(w.probe_until, 103, "probe up to 103");
	is_state(&w, WINDOW_PROBING, "probing");
	is_int(rec.nparks, 0, "no culprit known yet");
	is_int(w.next_tag, 1, "a new channel: tags from 1");
	is_int(w.sent_id, 101, "publishing goes back to 102");
	send1(&w, 102);
	ack(&w, 1, 0);
	is_int(w.confirmed_id, 102, "102 passes");
	send1(&w, 103);
	window_channel_closed(&w, "channel closed by broker: 406 "
	    "PRECONDITION_FAILED - invalid expiration");
	window_recover(&w);
	is_int(rec.nparks, 1, "the one in flight is the culprit");
	is_int(rec.park_id[0], 103, "103 parked");
	ok(strstr(rec.park_reason[0], "406") != NULL, "with the reply");
	is_int(w.confirmed_id, 103, "the prefix passes it");
	is_state(&w, WINDOW_OPEN, "probe done: open");
	window_free(&w);

	/* Policy retry: the culprit is retried after a backoff. */
	mkwin(&w, 8, 1, 0);
	send1(&w, 101);
	send1(&w, 102);
	window_channel_closed(&w, "channel closed by broker: 406 x");
	window_recover(&w);
	send1(&w, 101);
	window_channel_closed(&w, "channel closed by broker: 406 x");
	window_recover(&w);
	is_int(rec.nparks, 0, "retry: nothing parked");
	is_int(w.fail_attempts, 1, "attempt 1 of 101");
	is_state(&w, WINDOW_PAUSED, "paused before the retry");
	is_int(rec.npause, 1, "a backoff asked for");
	is_int(w.confirmed_id, 100, "nothing confirmed");
	window_free(&w);

	/* A close met while paused keeps the pause. */
	mkwin(&w, 8, 1, 1);
	send1(&w, 101);
	nack(&w, 1, 0);
	is_state(&w, WINDOW_PAUSED, "paused after a nack");
	window_channel_closed(&w, "channel closed by broker: 406 x");
	window_recover(&w);
	is_state(&w, WINDOW_PAUSED, "still paused after the new channel");
	window_free(&w);
}

/*
 * A channel.close naming an exchange parks the unconfirmed messages to
 * it, and nothing else; they are skipped when read again, until the
 * confirmed prefix passes them.
 */
static void
test_close_exchange(void)
{
	struct window	w;

	mkwin(&w, 8, 1, 1);
	send_h(&w, 101, "a", 1);
	send_h(&w, 102, "x", 2);
	send_h(&w, 103, "", 3);
	send_h(&w, 104, "x", 4);
	ack(&w, 1, 0);
	window_channel_closed(&w, "channel closed by broker: 404 NOT_FOUND - "
	    "no exchange 'x' in vhost '/'");
	window_recover(&w);
	is_int(rec.nparks, 2, "404: two messages to 'x' parked");
	ok(rec.park_id[0] == 102 && rec.park_id[1] == 104, "ids 102 and 104, "
	    "in order");
	ok(strstr(rec.park_reason[0], "NOT_FOUND") != NULL, "with the reply: "
	    "%s", rec.park_reason[0]);
	is_state(&w, WINDOW_OPEN, "the others go on with the full window");
	is_int(w.probe_until, 0, "no probe");
	ok(window_parked(&w, 102) && window_parked(&w, 104) &&
	    !window_parked(&w, 103), "skipped when read again, the others not");
	window_skipped(&w, 102);
	is_int(w.confirmed_id, 102, "nothing in flight: the prefix passes 102");
	ok(!window_parked(&w, 102) && window_parked(&w, 104), "only 104 left "
	    "to skip");
	send_h(&w, 103, "", 3);
	window_skipped(&w, 104);
	is_int(w.sent_id, 104, "in flight: publishing goes on after 104");
	is_int(w.confirmed_id, 102, "and the prefix waits for 103's confirm");
	ack(&w, 1, 0);
	is_int(w.confirmed_id, 104, "103 confirmed: the prefix passes the "
	    "parked 104 too, with nothing after it");
	is_int(w.nskip, 0, "nothing left to skip");

	/* Policy retry, or an exchange with nothing in flight: a probe. */
	send_h(&w, 105, "a", 5);
	window_channel_closed(&w, "channel closed by broker: 403 "
	    "ACCESS_REFUSED - access to exchange 'x' in vhost '/' refused");
	window_recover(&w);
	is_int(rec.nparks, 2, "403 for 'x': nothing of it in flight, nothing "
	    "parked");
	is_state(&w, WINDOW_PROBING, "probing for the culprit");
	window_free(&w);

	/* A message to it acked out of order did not close the channel. */
	mkwin(&w, 8, 1, 1);
	send_h(&w, 101, "a", 1);
	send_h(&w, 102, "x", 2);
	send_h(&w, 103, "x", 3);
	ack(&w, 2, 0);
	window_channel_closed(&w, "channel closed by broker: 404 NOT_FOUND - "
	    "no exchange 'x' in vhost '/'");
	window_recover(&w);
	ok(rec.nparks == 1 && rec.park_id[0] == 103, "only the unacked 103 "
	    "is parked (%d parks)", rec.nparks);
	window_free(&w);
}

/* A window reset forgets a nack that broke the old window (issue #18). */
static void
test_nack_flags(void)
{
	struct window	w;

	mkwin(&w, 8, 1, 1);
	window_enter(&w, WINDOW_NACKED, "test");
	w.nack_rounds = 2;
	window_reset(&w, 0);
	ok(w.state != WINDOW_NACKED, "a go-back on the channel forgets the "
	    "break (%s)", window_state_name(w.state));
	is_int(w.nack_rounds, 2, "and keeps the count of such go-backs");
	window_enter(&w, WINDOW_NACKED, "test");
	window_reset(&w, 1);
	ok(w.state != WINDOW_NACKED, "a new channel forgets the break");
	is_int(w.nack_rounds, 0, "and the count: it was the old channel's");
	window_enter(&w, WINDOW_PAUSED, "test");
	send1(&w, 101);
	window_lost(&w);
	is_state(&w, WINDOW_OPEN, "a lost link forgets the pause");
	is_int(window_inflight(&w), 0, "and what was in flight");
	is_int(w.sent_id, 100, "publishing goes back to 101");
	window_free(&w);
}

/* A transition is logged once; entering the state it is in logs nothing. */
static void
test_enter_logs_once(void)
{
	struct window	 w;
	char		 line[512];
	FILE		*f = tmpfile();
	int		 saved = dup(2), n = 0, moves = 0;

	mkwin(&w, 8, 1, 1);
	fflush(stderr);
	dup2(fileno(f), 2);
	log_init(LOG_DEBUG, "test_window");
	window_enter(&w, WINDOW_PAUSED, "one");
	window_enter(&w, WINDOW_PAUSED, "two");
	window_enter(&w, WINDOW_OPEN, "three");
	fflush(stderr);
	dup2(saved, 2);
	close(saved);
	rewind(f);
	while (fgets(line, sizeof(line), f) != NULL) {
		n++;
		if (strstr(line, "confirm window: open -> paused: one") ||
		    strstr(line, "confirm window: paused -> open: three"))
			moves++;
	}
	fclose(f);
	is_int(n, 2, "two transitions, two lines");
	is_int(moves, 2, "each names both states and why");
	window_free(&w);
}

int
main(void)
{
	log_init(LOG_ERR, "test_window");
	test_in_order();
	test_out_of_order();
	test_multiple();
	test_full();
	test_nack_go_back();
	test_nack_renew();
	test_return_park();
	test_return_retry();
	test_return_ambiguous();
	test_close_probe();
	test_close_exchange();
	test_nack_flags();
	test_enter_logs_once();
	return done_testing();
}
