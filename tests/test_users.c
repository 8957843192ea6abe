/*
 * Unit tests for users.c: connections per uid, bytes charged at commit and
 * released as the outbox is deleted by prefix, the bounded marks, records
 * freed when nothing is left, the log throttle.
 */
#include <stdint.h>

#include "tap.h"
#include "users.h"

static void
test_connections(void)
{
	struct users	*us = users_new();
	struct user	*a1, *a2, *b;

	ok(users_lookup(us, 1000) == NULL, "unknown uid: no record");
	a1 = users_connect(us, 1000);
	a2 = users_connect(us, 1000);
	b = users_connect(us, 1000 + 64);	/* the same bucket */
	ok(a1 == a2, "one record per uid");
	ok(a1 != b, "uids in one bucket kept apart");
	is_int(user_connections(a1), 2, "uid 1000: 2 connections");
	is_int(user_connections(b), 1, "uid 1064: 1 connection");
	is_int(user_uid(b), 1064, "user_uid");
	users_disconnect(us, a1);
	is_int(user_connections(users_lookup(us, 1000)), 1,
	    "uid 1000 after one disconnect");
	users_disconnect(us, a2);
	ok(users_lookup(us, 1000) == NULL,
	    "last connection gone: record freed");
	ok(users_lookup(us, 1064) == b, "the other uid untouched");
	users_free(us);			/* b still held: freed with the table */
}

static void
test_bytes(void)
{
	struct users	*us = users_new();
	struct user	*a, *b;

	a = users_connect(us, 1);
	b = users_connect(us, 2);
	/* One transaction: a's rows 1, 2, 4; b's row 3. */
	users_insert(us, a, 1, 100);
	users_insert(us, a, 2, 100);
	users_insert(us, b, 3, 50);
	users_insert(us, a, 4, 100);
	is_int(user_bytes(a), 300, "a: the open transaction counts");
	is_int(user_bytes(b), 50, "b: the open transaction counts");
	users_commit(us, 1);
	is_int(user_bytes(a), 300, "a after commit");

	/* A rolled-back transaction charges nobody. */
	users_insert(us, a, 5, 1000);
	users_insert(us, b, 6, 1000);
	users_commit(us, 0);
	is_int(user_bytes(a), 300, "a after a rollback");
	is_int(user_bytes(b), 50, "b after a rollback");

	/* Two more commits of a: ids 7 and 8. */
	users_insert(us, a, 7, 10);
	users_commit(us, 1);
	users_insert(us, a, 8, 20);
	users_commit(us, 1);
	is_int(user_bytes(a), 330, "a after three commits");

	/* Deletes go by prefix; a commit is released once all of it is gone. */
	users_deleted(us, 3);
	is_int(user_bytes(a), 330, "a: its first commit (up to id 4) not "
	    "wholly deleted");
	is_int(user_bytes(b), 0, "b: row 3 deleted");
	users_deleted(us, 4);
	is_int(user_bytes(a), 30, "a: first commit released");
	users_deleted(us, 7);
	is_int(user_bytes(a), 20, "a: second commit released");

	/* Disconnected with rows left: kept until they are deleted. */
	users_disconnect(us, a);
	ok(users_lookup(us, 1) == a, "a kept while it has rows in the outbox");
	users_deleted(us, 100);
	ok(users_lookup(us, 1) == NULL, "a freed once its rows are deleted");

	/* Disconnected inside a transaction: kept until its commit. */
	users_insert(us, b, 101, 5);
	users_disconnect(us, b);
	ok(users_lookup(us, 2) == b, "b kept while in the open transaction");
	users_commit(us, 0);
	ok(users_lookup(us, 2) == NULL, "b freed when its rows rolled back");
	users_free(us);
}

static void
test_marks(void)
{
	struct users	*us = users_new();
	struct user	*a;
	int64_t		 id;

	a = users_connect(us, 7);
	/* More commits than marks: the newest mark takes the rest. */
	for (id = 1; id <= USERS_MARKS + 10; id++) {
		users_insert(us, a, id, 1);
		users_commit(us, 1);
	}
	is_int(user_bytes(a), USERS_MARKS + 10, "every commit charged");
	users_deleted(us, USERS_MARKS - 1);
	is_int(user_bytes(a), 11, "the first marks released one by one");
	users_deleted(us, USERS_MARKS + 9);
	is_int(user_bytes(a), 11, "the last mark waits for all of its rows "
	    "(late, never early)");
	users_deleted(us, USERS_MARKS + 10);
	is_int(user_bytes(a), 0, "all released");
	/* Marks are reused as a ring. */
	for (id = 100; id < 100 + 3 * USERS_MARKS; id++) {
		users_insert(us, a, id, 2);
		users_commit(us, 1);
		users_deleted(us, id - 1);
	}
	is_int(user_bytes(a), 2, "ring: only the last commit left");
	users_disconnect(us, a);
	users_free(us);
}

static void
test_log(void)
{
	struct users_log	l = { 0, 0 };
	unsigned long		q = 99;

	ok(users_log_due(&l, 1000, 60, &q) && q == 0, "first event logged");
	ok(!users_log_due(&l, 1001, 60, &q), "second within the interval: "
	    "counted");
	ok(!users_log_due(&l, 1059, 60, &q), "third within the interval: "
	    "counted");
	ok(users_log_due(&l, 1060, 60, &q), "after the interval: logged");
	is_int(q, 2, "with the two not logged");
	ok(!users_log_due(&l, 1061, 60, &q), "then quiet again");
	l.last = 0;
	l.quiet = 0;
	ok(users_log_due(&l, 0, 60, &q), "a clock at 0 s");
	ok(!users_log_due(&l, 0, 60, &q), "still throttles");
}

int
main(void)
{
	test_connections();
	test_bytes();
	test_marks();
	test_log();
	return done_testing();
}
