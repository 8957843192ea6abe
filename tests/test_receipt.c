/*
 * Unit tests for receipt.c against a real outbox in a temp dir: no broker,
 * no socket.  The publisher's confirms and parks are calls, the waiters a
 * log of what each was told; timeouts run on a real event loop.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/event.h>

#include "log.h"
#include "outbox.h"
#include "receipt.h"
#include "tap.h"
#include "outbox_fixture.h"

static struct event_base	*base;

/* What a waiter was told. */
struct told {
	int		 n;		/* times: must end at 1 */
	int		 order;		/* when, among all */
	enum receipt_fate fate;
	char		 reason[256];
	uint64_t	 dead;
};
static int	told_seq;

static void
tell(void *arg, enum receipt_fate fate, const char *reason, uint64_t n)
{
	struct told	*t = arg;

	t->n++;
	t->order = ++told_seq;
	t->fate = fate;
	snprintf(t->reason, sizeof(t->reason), "%s", reason ? reason : "");
	t->dead = n;
}

static void
park(struct outbox *ob, int64_t id)
{
	unsigned	total;

	if (outbox_park(ob, id, 1, "404 NOT_FOUND - no exchange", 2000,
	    &total) != OUTBOX_OK) {
		printf("Bail out! park: %s\n", outbox_errmsg(ob));
		exit(1);
	}
}

/* Confirms tell the waiters up to the prefix, in id order, once each. */
static void
test_confirms(void)
{
	struct outbox	*ob = open_in("confirms.db");
	struct receipts	*r = receipts_new(base, ob, 1);
	struct told	 t[6];
	int64_t		 ids[6];
	int		 i;

	memset(t, 0, sizeof(t));
	insert_n(ob, 6, "r", ids);
	/* Registered out of order: the heap sorts them. */
	for (i = 5; i >= 0; i--)
		ok(receipt_wait_id(r, ids[i], 0, tell, &t[i]) != NULL,
		    "waiter for row %d registered", i);
	is_int(receipts_waiting(r), 6, "six waiting");
	receipts_confirmed(r, ids[2]);
	is_int(t[0].n + t[1].n + t[2].n, 3, "confirmed up to the third: "
	    "three told");
	ok(t[0].order < t[1].order && t[1].order < t[2].order,
	    "in id order");
	ok(t[0].fate == RECEIPT_CONFIRMED && t[2].fate == RECEIPT_CONFIRMED,
	    "as confirmed");
	is_int(t[3].n, 0, "the fourth still waits");
	receipts_confirmed(r, ids[1]);
	is_int(t[3].n, 0, "an older prefix changes nothing");
	/* A park comes before the prefix passes its id. */
	receipts_parked(r, ids[4], "returned by the broker: 312 NO_ROUTE");
	ok(t[4].n == 1 && t[4].fate == RECEIPT_PARKED &&
	    strstr(t[4].reason, "312") != NULL, "parked with its reason");
	receipts_confirmed(r, ids[5]);
	ok(t[3].n == 1 && t[5].n == 1 && t[4].n == 1,
	    "the prefix passes the parked one: told once each");
	is_int(receipts_waiting(r), 0, "nothing waits");
	receipts_free(r);
	outbox_close(ob);
}

/* A row behind the prefix or gone is confirmed, unless it is or was dead. */
static void
test_known_at_once(void)
{
	struct outbox	*ob = open_in("known.db");
	struct receipts	*r = receipts_new(base, ob, 1);
	struct told	 t[3];
	int64_t		 ids[3];
	uint64_t	 n;

	memset(t, 0, sizeof(t));
	insert_n(ob, 3, "r", ids);
	park(ob, ids[1]);
	if (outbox_delete_upto(ob, ids[0]) != OUTBOX_OK)
		printf("Bail out! delete\n");
	ok(receipt_wait_id(r, ids[0], 0, tell, &t[0]) == NULL &&
	    t[0].n == 1 && t[0].fate == RECEIPT_CONFIRMED,
	    "a row deleted as confirmed: confirmed at once");
	ok(receipt_wait_id(r, ids[1], 0, tell, &t[1]) == NULL &&
	    t[1].n == 1 && t[1].fate == RECEIPT_PARKED &&
	    strstr(t[1].reason, "404") != NULL,
	    "a dead letter: parked at once, with its reason");
	ok(receipt_wait_id(r, ids[2], 0, tell, &t[2]) != NULL &&
	    t[2].n == 0, "a row still queued waits");
	if (outbox_dead_purge(ob, ids[1], &n) != OUTBOX_OK || n != 1)
		printf("Bail out! purge\n");
	memset(&t[1], 0, sizeof(t[1]));
	ok(receipt_wait_id(r, ids[1], 0, tell, &t[1]) == NULL &&
	    t[1].n == 1 && t[1].fate == RECEIPT_PARKED &&
	    strcmp(t[1].reason, "purged") == 0,
	    "a dead letter since purged: parked at once, \"purged\", never "
	    "confirmed");
	receipts_free(r);
	outbox_close(ob);
}

/* A barrier: no row left to confirm up to its id; dead letters counted. */
static void
test_barrier(void)
{
	struct outbox	*ob = open_in("barrier.db");
	struct receipts	*r = receipts_new(base, ob, 1);
	struct told	 t[3];
	int64_t		 ids[4], more[2];

	memset(t, 0, sizeof(t));
	ok(receipt_wait_upto(r, 0, 0, tell, &t[0]) == NULL && t[0].n == 1 &&
	    t[0].fate == RECEIPT_CONFIRMED && t[0].dead == 0,
	    "an empty outbox: done at once");
	insert_n(ob, 4, "r", ids);
	ok(receipt_wait_upto(r, ids[3], 0, tell, &t[1]) != NULL,
	    "a barrier over four rows waits");
	insert_n(ob, 2, "r", more);
	receipts_confirmed(r, ids[1]);
	is_int(t[1].n, 0, "half confirmed: waits");
	/* The last of them parked: no confirm passes it until later. */
	park(ob, ids[3]);
	receipts_parked(r, ids[3], "x");
	receipts_confirmed(r, ids[2]);
	ok(t[1].n == 1 && t[1].fate == RECEIPT_CONFIRMED && t[1].dead == 1,
	    "confirmed up to the third and the fourth parked: done, one dead "
	    "letter (got %d told, dead %llu)", t[1].n,
	    (unsigned long long)t[1].dead);
	ok(receipt_wait_upto(r, more[1], 0, tell, &t[2]) != NULL &&
	    t[2].n == 0, "rows after it: a new barrier waits");
	receipts_shutdown(r);
	ok(t[2].n == 1 && t[2].fate == RECEIPT_SHUTDOWN,
	    "shutdown tells the waiting barrier");
	receipts_free(r);
	outbox_close(ob);
}

static void
park_n(struct outbox *ob, int64_t id, unsigned attempts)
{
	unsigned	total;

	if (outbox_park(ob, id, attempts, "404 NOT_FOUND - no exchange", 2000,
	    &total) != OUTBOX_OK) {
		printf("Bail out! park: %s\n", outbox_errmsg(ob));
		exit(1);
	}
}

/*
 * max_attempts 3: a park with retries left is no fate.  Its waiters are
 * held past the confirmed prefix, follow the row the relay retries, and
 * hear CONFIRMED, or PARKED once it is parked for good; a barrier waits
 * for the retries of its messages, and counts the dead letter under its
 * new id.
 */
static void
test_retries(void)
{
	struct outbox	*ob = open_in("retries.db");
	struct receipts	*r = receipts_new(base, ob, 3);
	struct told	 t[6];
	int64_t		 ids[4], again, third;
	uint64_t	 n;

	memset(t, 0, sizeof(t));
	insert_n(ob, 4, "r", ids);
	ok(receipt_wait_id(r, ids[1], 0, tell, &t[0]) != NULL, "a waiter");
	ok(receipt_wait_upto(r, ids[3], 0, tell, &t[1]) != NULL, "a barrier");
	receipts_parking(r, ids[1]);
	park_n(ob, ids[1], 1);
	receipts_confirmed(r, ids[3]);
	receipts_check(r);
	is_int(t[0].n, 0, "the prefix passes a parked row: its waiter held");
	is_int(t[1].n, 0, "the barrier waits for the retry");
	is_int(receipts_waiting(r), 2, "both counted as waiting");
	ok(receipt_wait_id(r, ids[1], 0, tell, &t[2]) != NULL &&
	    t[2].n == 0, "a new waiter for it (a repeated key) waits too");

	ok(outbox_dead_requeue(ob, ids[1], 3000, UINT64_MAX, &n) ==
	    OUTBOX_OK && n == 1, "the relay retries it");
	again = outbox_newest_id(ob);
	receipts_moved(r, ids[1], again);
	receipts_check(r);
	is_int(t[1].n, 0, "the barrier waits for the row moved back");
	ok(receipt_wait_id(r, ids[1], 0, tell, &t[3]) != NULL &&
	    t[3].n == 0, "a waiter by the first id waits for the new row");
	receipts_confirmed(r, again);
	ok(t[0].n == 1 && t[0].fate == RECEIPT_CONFIRMED && t[2].n == 1 &&
	    t[2].fate == RECEIPT_CONFIRMED && t[3].n == 1 &&
	    t[3].fate == RECEIPT_CONFIRMED, "its confirm tells all three");
	ok(t[1].n == 1 && t[1].dead == 0, "the barrier is done, no dead "
	    "letter");

	/* Refused again until no attempt is left: parked for good. */
	insert_n(ob, 1, "s", &third);
	ok(receipt_wait_id(r, third, 0, tell, &t[4]) != NULL, "a waiter");
	receipts_parking(r, third);
	park_n(ob, third, 1);
	ok(outbox_dead_requeue(ob, third, 3000, UINT64_MAX, &n) ==
	    OUTBOX_OK && n == 1, "retried once");
	again = outbox_newest_id(ob);
	receipts_moved(r, third, again);
	ok(receipt_wait_upto(r, again, 0, tell, &t[5]) != NULL,
	    "a barrier after it waits");
	receipts_parking(r, again);
	park_n(ob, again, 2);
	is_int(t[4].n, 0, "its waiter still held");
	receipts_parked(r, again, "404 NOT_FOUND - no exchange");
	ok(t[4].n == 1 && t[4].fate == RECEIPT_PARKED &&
	    strstr(t[4].reason, "404") != NULL, "parked for good: told");
	receipts_check(r);
	ok(t[5].n == 1 && t[5].dead == 1, "the barrier counts it (got %d "
	    "told, dead %llu)", t[5].n, (unsigned long long)t[5].dead);
	is_int(outbox_dead_upto(ob, third), 1, "a dead letter of the "
	    "messages up to its first id, under its new one");
	receipts_free(r);
	outbox_close(ob);
}

/* Limits run out on the loop; a cancelled waiter is told nothing. */
static void
test_timeouts(void)
{
	struct outbox	*ob = open_in("timeouts.db");
	struct receipts	*r = receipts_new(base, ob, 1);
	struct receipt	*rc;
	struct told	 t[4];
	int64_t		 ids[3];
	struct timeval	 tv = { 0, 300000 };

	memset(t, 0, sizeof(t));
	insert_n(ob, 3, "r", ids);
	(void)receipt_wait_id(r, ids[0], 50, tell, &t[0]);
	rc = receipt_wait_id(r, ids[1], 50, tell, &t[1]);
	(void)receipt_wait_id(r, ids[2], 0, tell, &t[2]);
	(void)receipt_wait_upto(r, ids[2], 100, tell, &t[3]);
	receipt_cancel(r, rc);
	event_base_loopexit(base, &tv);
	event_base_dispatch(base);
	ok(t[0].n == 1 && t[0].fate == RECEIPT_TIMEOUT, "a 50 ms limit ran "
	    "out");
	is_int(t[1].n, 0, "the cancelled one was told nothing");
	is_int(t[2].n, 0, "no limit: still waiting");
	ok(t[3].n == 1 && t[3].fate == RECEIPT_TIMEOUT, "the barrier's "
	    "limit ran out");
	is_int(receipts_waiting(r), 1, "one left");
	receipts_confirmed(r, ids[2]);
	ok(t[2].n == 1 && t[0].n == 1, "a confirm tells the one left, not "
	    "the timed out one again");
	receipts_free(r);
	outbox_close(ob);
}

/* Many waiters, confirmed in random steps: each told once, in order. */
static void
test_many(void)
{
	struct outbox	*ob = open_in("many.db");
	struct receipts	*r = receipts_new(base, ob, 1);
	static struct told t[500];
	static int64_t	 ids[500];
	int		 i, once = 1, ordered = 1;
	int64_t		 upto = 0;

	memset(t, 0, sizeof(t));
	insert_n(ob, 500, "r", ids);
	srand(7);
	for (i = 0; i < 500; i++)
		(void)receipt_wait_id(r, ids[(i * 7919) % 500], 0, tell,
		    &t[(i * 7919) % 500]);
	while (upto < ids[499]) {
		upto += 1 + rand() % 40;
		if (rand() % 5 == 0)
			receipts_parked(r, upto + 1, "p");
		receipts_confirmed(r, upto);
	}
	for (i = 0; i < 500; i++) {
		if (t[i].n != 1)
			once = 0;
		if (i > 0 && t[i].order < t[i - 1].order &&
		    t[i].fate == RECEIPT_CONFIRMED &&
		    t[i - 1].fate == RECEIPT_CONFIRMED)
			ordered = 0;
	}
	ok(once, "500 waiters told once each");
	ok(ordered, "the confirmed ones in id order");
	receipts_free(r);
	outbox_close(ob);
}

int
main(void)
{
	fixture_init("receipt-test");
	log_init(LOG_ERR, "test_receipt");
	base = event_base_new();
	test_confirms();
	test_known_at_once();
	test_barrier();
	test_retries();
	test_timeouts();
	test_many();
	event_base_free(base);
	fixture_done();
	return done_testing();
}
