/*
 * Unit tests for dead.c against a real outbox in a temp dir: no broker, no
 * socket.  The group commit is a flag (the tx_open hook), the sessions are
 * pointers only compared, DEAD commands go through dead_request().
 */
#include <inttypes.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <event2/buffer.h>
#include <event2/event.h>

#include "config.h"
#include "dead.h"
#include "log.h"
#include "outbox.h"
#include "protocol.h"
#include "tap.h"
#include "outbox_fixture.h"

static int	tx;		/* a group commit is open */
static int	wakes, resumes;

static int
hook_tx_open(void *arg)
{
	(void)arg;
	return tx;
}

static void
hook_wake(void *arg)
{
	(void)arg;
	wakes++;
}

static void
hook_resume(void *arg)
{
	(void)arg;
	resumes++;
}

/* What the receipts were told: the last fate and the last move. */
static int	fates, moves;
static int64_t	fate_id, moved_from, moved_to;

static void
hook_fate(void *arg, int64_t id, const char *reason)
{
	(void)arg;
	(void)reason;
	fates++;
	fate_id = id;
}

static void
hook_moved(void *arg, int64_t from, int64_t to)
{
	(void)arg;
	moves++;
	moved_from = from;
	moved_to = to;
}

static const struct dead_hooks hooks = {
	.tx_open = hook_tx_open, .wake = hook_wake, .resume = hook_resume,
	.fate = hook_fate, .moved = hook_moved, .arg = NULL
};

/* Sessions are only compared. */
static int	s1_, s2_;
#define S1	((void *)&s1_)
#define S2	((void *)&s2_)

static struct event_base	*base;
static struct config		 cf;

static int64_t
now_ms(void)
{
	struct timespec	ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

struct rows {
	int	n;
	int64_t	ids[16];
	char	bodies[16][32];
};

static int
rows_cb(void *arg, const struct outbox_row *row)
{
	struct rows	*r = arg;

	if (r->n < 16) {
		r->ids[r->n] = row->id;
		snprintf(r->bodies[r->n], sizeof(r->bodies[0]), "%.*s",
		    (int)row->blen, (const char *)row->body);
	}
	r->n++;
	return 0;
}

/* The outbox's rows, as the publisher would read them. */
static void
outbox_rows_of(const char *name, struct rows *r)
{
	struct outbox_reader	*rd;
	char			 p[512], err[512];

	memset(r, 0, sizeof(*r));
	snprintf(p, sizeof(p), "%s/%s", fixture_dir, name);
	if (outbox_reader_open(&rd, p, err, sizeof(err)) != 0) {
		printf("Bail out! reader %s: %s\n", p, err);
		exit(1);
	}
	if (outbox_reader_fetch(rd, 0, 1000, rows_cb, r) == -1)
		r->n = -1;
	outbox_reader_close(rd);
}

/*
 * Run one DEAD command for s; its reply (empty when told to wait) into
 * reply.  Returns what dead_request() returned.
 */
static int
cmd(struct dead *d, void *s, enum proto_dead_op op, int64_t id,
    unsigned max, int64_t after, size_t room, char *reply, size_t len)
{
	struct proto_req	 req;
	struct evbuffer		*out = evbuffer_new();
	size_t			 n;
	int			 rc;

	memset(&req, 0, sizeof(req));
	req.verb = PROTO_DEAD;
	req.dead_op = op;
	req.dead_id = id;
	req.dead_max = max;
	req.dead_after = after;
	rc = dead_request(d, s, &req, out, room);
	n = evbuffer_get_length(out);
	if (n >= len)
		n = len - 1;
	evbuffer_remove(out, reply, n);
	reply[n] = '\0';
	evbuffer_free(out);
	return rc;
}

static int
list(struct dead *d, unsigned max, int64_t after, size_t room, char *reply,
    size_t len)
{
	return cmd(d, S1, PROTO_DEAD_LIST, 0, max, after, room, reply, len);
}

/* The number of lines of a DEAD LIST reply's body. */
static int
lines(const char *reply)
{
	const char	*p = strchr(reply, '\n');
	int		 n = 0;

	for (; p != NULL && p[1] != '\0'; p = strchr(p + 1, '\n'))
		n++;
	return n;
}

/* The id of line i (from 0) of a DEAD LIST reply's body; -1: none. */
static int64_t
line_id(const char *reply, int i)
{
	const char	*p = strchr(reply, '\n');

	while (p != NULL && i-- > 0)
		p = strchr(p + 1, '\n');
	return p != NULL && p[1] != '\0' ? strtoll(p + 1, NULL, 10) : -1;
}

static void
test_park_list(void)
{
	struct outbox	*ob = open_in("park.db");
	struct dead	*d;
	char		 reply[4096], want[256];
	int64_t		 ids[3], upto, *keep, parked, t0 = now_ms();
	uint64_t	 bytes;
	unsigned	 attempts;
	size_t		 n;

	cf.max_attempts = 1;
	d = dead_new(base, ob, &cf, &hooks);
	insert_n(ob, 3, "p", ids);

	tx = 1;
	dead_park(d, ids[1], 1, "NOT_FOUND - no exchange 'ex'");
	is_int(dead_waiting(d), 1, "a park while a commit is open is queued");
	is_int(outbox_dead_rows(ob), 0, "and not in the table yet");
	is_int(list(d, 0, 0, 1 << 20, reply, sizeof(reply)), 1,
	    "DEAD LIST waits while a commit is open");
	is_str(reply, "", "and says nothing yet");
	upto = ids[2];
	n = dead_hold(d, &upto, &keep);
	is_int(n, 1, "a delete past the queued park is held");
	is_int(upto, ids[1] - 1, "and stops below it");
	ok(keep == NULL, "nothing to delete around while the table has room");
	dead_run_parks(d);
	is_int(dead_waiting(d), 1, "no park while the commit is open");

	tx = 0;
	fates = 0;
	dead_run_parks(d);
	is_int(dead_waiting(d), 0, "parked once the commit is over");
	ok(fates == 1 && fate_id == ids[1], "max_attempts 1: a fate, told");
	is_int(outbox_dead_rows(ob), 1, "one dead letter");
	is_int(outbox_rows(ob), 2, "out of the outbox");
	upto = ids[2];
	is_int(dead_hold(d, &upto, &keep), 0, "no delete is held any more");
	is_int(upto, ids[2], "up to the last confirmed");

	is_int(list(d, 0, 0, 1 << 20, reply, sizeof(reply)), 0, "DEAD LIST");
	is_int(lines(reply), 1, "one line");
	is_int(line_id(reply, 0), ids[1], "the parked id");
	ok(sscanf(strchr(reply, '\n') + 1, "%*d\t%" SCNd64 "\t%u\t%" SCNu64,
	    &parked, &attempts, &bytes) == 3 && attempts == 1 &&
	    parked >= t0 && parked <= now_ms() &&
	    bytes > outbox_row_size(28, 2), "parked time, 1 attempt, size "
	    "(the message-id written in)");
	ok(strstr(reply, "\tex\tq\t") != NULL, "exchange, routing key");
	ok(strstr(reply, "\tNOT_FOUND - no exchange 'ex'\n") != NULL,
	    "and the reason");
	snprintf(want, sizeof(want), "DEAD %zu\n", strlen(strchr(reply, '\n')
	    + 1));
	ok(strncmp(reply, want, strlen(want)) == 0, "DEAD <bytes> heads it");
	ok(dead_next_retry(d, NULL) == -1, "max_attempts 1: no retry");

	dead_free(d);
	outbox_close(ob);
}

/* Park the outbox's last row again, as the publisher would. */
static int64_t
park_last(struct dead *d, const char *name)
{
	struct rows	r;

	outbox_rows_of(name, &r);
	if (r.n < 1)
		return -1;
	dead_park(d, r.ids[r.n - 1], 1, "PRECONDITION_FAILED");
	return r.ids[r.n - 1];
}

static void
test_schedule(void)
{
	struct outbox	*ob = open_in("sched.db");
	struct dead	*d;
	struct rows	 r;
	char		 reply[4096];
	int64_t		 ids[1], id, due, before, after, got;
	uint64_t	 want[] = { 20, 40, 80, 80 };
	unsigned	 i;

	cf.reconnect_min_ms = 20;
	cf.reconnect_max_ms = 80;
	cf.max_attempts = 5;
	for (i = 0; i < 4; i++)
		is_int(dead_retry_delay(&cf, i + 1), want[i],
		    "retry %u after %" PRIu64 " ms", i + 1, want[i]);
	is_int(dead_retry_delay(&cf, 9), 80, "never past reconnect_max");

	d = dead_new(base, ob, &cf, &hooks);
	insert_n(ob, 1, "s", ids);
	id = ids[0];
	fates = moves = 0;
	for (i = 0; i < 4; i++) {
		before = now_ms();
		dead_park(d, id, 1, "PRECONDITION_FAILED");
		is_int(fates, 0, "attempt %u: no fate while retries are left",
		    i + 1);
		after = now_ms();
		due = dead_next_retry(d, &got);
		is_int(got, id, "attempt %u: id %" PRId64 " scheduled", i + 1,
		    id);
		ok(due >= before + (int64_t)want[i] &&
		    due <= after + (int64_t)want[i],
		    "due %" PRIu64 " ms after its park", want[i]);
		if (i == 0) {
			/* A restart reads the schedule back. */
			dead_free(d);
			d = dead_new(base, ob, &cf, &hooks);
			due = dead_next_retry(d, &got);
			ok(got == id && due >= before + (int64_t)want[i] &&
			    due <= after + (int64_t)want[i],
			    "a restart loads the schedule");
		}
		wakes = 0;
		while (outbox_dead_rows(ob) > 0 && now_ms() < after + 2000)
			event_base_loop(base, EVLOOP_ONCE);
		is_int(outbox_dead_rows(ob), 0, "retried when due");
		ok(now_ms() >= before + (int64_t)want[i], "not before");
		is_int(wakes, 1, "the broker side is woken");
		outbox_rows_of("sched.db", &r);
		ok(r.n == 1 && r.ids[0] > id && strcmp(r.bodies[0], "s0") == 0,
		    "back at the outbox's tail");
		ok(moves == (int)i + 1 && moved_from == id &&
		    moved_to == r.ids[0], "the move is told, from and to");
		id = r.ids[0];
	}
	ok(park_last(d, "sched.db") == id, "parked a fifth time");
	ok(fates == 1 && fate_id == id, "for good: the fate is told");
	ok(dead_next_retry(d, NULL) == -1, "max_attempts: no more retries");
	is_int(outbox_dead_rows(ob), 1, "it stays dead");
	list(d, 0, 0, 1 << 20, reply, sizeof(reply));
	ok(strstr(reply, "\t5\t") != NULL, "with its 5 attempts");
	dead_free(d);
	d = dead_new(base, ob, &cf, &hooks);
	ok(dead_next_retry(d, NULL) == -1, "not scheduled after a restart");
	dead_free(d);
	outbox_close(ob);
	cf.max_attempts = 1;
}

static void
test_retry_purge(void)
{
	struct outbox	*ob = open_in("retry.db");
	struct dead	*d;
	struct rows	 r;
	char		 reply[4096];
	int64_t		 ids[4], more[1];

	d = dead_new(base, ob, &cf, &hooks);
	insert_n(ob, 4, "r", ids);
	dead_park(d, ids[1], 1, "no route");
	dead_park(d, ids[2], 1, "no route");
	insert_n(ob, 1, "later", more);

	tx = 1;
	is_int(cmd(d, S1, PROTO_DEAD_RETRY, ids[1], 0, 0, 0, reply,
	    sizeof(reply)), 1, "DEAD RETRY waits while a commit is open");
	tx = 0;
	wakes = 0;
	is_int(cmd(d, S1, PROTO_DEAD_RETRY, ids[1], 0, 0, 0, reply,
	    sizeof(reply)), 0, "DEAD RETRY <id>");
	is_str(reply, "OK 1\n", "replies OK 1");
	is_int(wakes, 1, "the broker side is woken");
	is_int(outbox_dead_rows(ob), 1, "one dead letter left");
	outbox_rows_of("retry.db", &r);
	ok(r.n == 4 && r.ids[0] == ids[0] && r.ids[1] == ids[3] &&
	    r.ids[2] == more[0] && r.ids[3] > more[0] &&
	    strcmp(r.bodies[3], "r1") == 0,
	    "back in the outbox after the rows then in it");
	is_int(cmd(d, S1, PROTO_DEAD_RETRY, ids[1], 0, 0, 0, reply,
	    sizeof(reply)), 0, "DEAD RETRY of it again");
	snprintf(r.bodies[0], sizeof(r.bodies[0]), "%" PRId64, ids[1]);
	ok(strncmp(reply, "ERR NOTFOUND no dead letter with id ", 36) == 0 &&
	    strstr(reply, r.bodies[0]) != NULL, "is NOTFOUND");

	wakes = 0;
	is_int(cmd(d, S1, PROTO_DEAD_PURGE, ids[2], 0, 0, 0, reply,
	    sizeof(reply)), 0, "DEAD PURGE <id>");
	is_str(reply, "OK 1\n", "replies OK 1");
	is_int(outbox_dead_rows(ob), 0, "gone from the dead letters");
	is_int(outbox_rows(ob), 4, "and not in the outbox");
	is_int(wakes, 0, "a purge wakes nobody");
	list(d, 0, 0, 1 << 20, reply, sizeof(reply));
	is_str(reply, "DEAD 0\n", "DEAD LIST is empty");
	dead_free(d);
	outbox_close(ob);
}

#define MANY	300	/* more than a DEAD ALL batch */

static void
test_all_batches(void)
{
	struct outbox	*ob = open_in("all.db");
	struct dead	*d;
	char		 reply[4096];
	int64_t		 ids[MANY];
	int		 i, turns;

	d = dead_new(base, ob, &cf, &hooks);
	insert_n(ob, MANY, "a", ids);
	for (i = 0; i < MANY; i++)
		dead_park(d, ids[i], 1, "x");
	is_int(outbox_dead_rows(ob), MANY, "%d dead letters", MANY);

	is_int(cmd(d, S1, PROTO_DEAD_PURGE, 0, 0, 0, 0, reply, sizeof(reply)),
	    1, "DEAD PURGE ALL goes a batch at a time");
	ok(outbox_dead_rows(ob) > 0 && outbox_dead_rows(ob) < MANY,
	    "one batch went: %" PRIu64 " left", outbox_dead_rows(ob));
	is_int(cmd(d, S2, PROTO_DEAD_PURGE, 0, 0, 0, 0, reply, sizeof(reply)),
	    1, "another DEAD ALL waits for it");
	is_int(cmd(d, S2, PROTO_DEAD_RETRY, 0, 0, 0, 0, reply, sizeof(reply)),
	    1, "a DEAD RETRY ALL too");
	resumes = 0;
	event_base_loop(base, EVLOOP_ONCE | EVLOOP_NONBLOCK);
	is_int(resumes, 1, "the waiting are told to ask again");
	for (turns = 0; turns < 10; turns++)
		if (cmd(d, S1, PROTO_DEAD_PURGE, 0, 0, 0, 0, reply,
		    sizeof(reply)) == 0)
			break;
	snprintf(reply + 2000, 64, "OK %d\n", MANY);
	is_str(reply, reply + 2000, "the asker gets the total");
	resumes = 0;
	event_base_loop(base, EVLOOP_ONCE | EVLOOP_NONBLOCK);
	is_int(resumes, 1, "its end tells the waiting to ask again");
	is_int(outbox_dead_rows(ob), 0, "all purged");
	is_int(cmd(d, S2, PROTO_DEAD_PURGE, 0, 0, 0, 0, reply, sizeof(reply)),
	    0, "the next DEAD ALL runs");
	is_str(reply, "OK 0\n", "with nothing left");

	/* A client that leaves stops its DEAD ALL; the next one goes on. */
	insert_n(ob, MANY, "b", ids);
	for (i = 0; i < MANY; i++)
		dead_park(d, ids[i], 1, "x");
	is_int(cmd(d, S1, PROTO_DEAD_RETRY, 0, 0, 0, 0, reply, sizeof(reply)),
	    1, "DEAD RETRY ALL begins");
	dead_forget(d, S1);
	ok(outbox_dead_rows(ob) > 0 && outbox_dead_rows(ob) < MANY,
	    "stopped after a batch when its client left");
	snprintf(reply + 2000, 64, "OK %" PRIu64 "\n", outbox_dead_rows(ob));
	is_int(cmd(d, S2, PROTO_DEAD_RETRY, 0, 0, 0, 0, reply, sizeof(reply)),
	    0, "another DEAD RETRY ALL runs at once");
	is_str(reply, reply + 2000, "and replays the rest");
	is_int(outbox_dead_rows(ob), 0, "all replayed");
	is_int(outbox_rows(ob), MANY, "into the outbox");
	dead_free(d);
	outbox_close(ob);
}

static void
test_paged_list(void)
{
	struct outbox	*ob = open_in("list.db");
	struct dead	*d;
	char		 reply[4096];
	int64_t		 ids[5];
	int		 i;

	d = dead_new(base, ob, &cf, &hooks);
	insert_n(ob, 5, "l", ids);
	for (i = 0; i < 5; i++)
		dead_park(d, ids[i], 1, "refused");
	list(d, 2, 0, 1 << 20, reply, sizeof(reply));
	ok(lines(reply) == 2 && line_id(reply, 0) == ids[0] &&
	    line_id(reply, 1) == ids[1], "DEAD LIST 2: the first two");
	list(d, 2, ids[1], 1 << 20, reply, sizeof(reply));
	ok(lines(reply) == 2 && line_id(reply, 0) == ids[2] &&
	    line_id(reply, 1) == ids[3], "DEAD LIST 2 AFTER the second: "
	    "the next two");
	list(d, 0, ids[3], 1 << 20, reply, sizeof(reply));
	ok(lines(reply) == 1 && line_id(reply, 0) == ids[4],
	    "DEAD LIST AFTER the fourth: the last");
	list(d, 0, ids[4], 1 << 20, reply, sizeof(reply));
	is_str(reply, "DEAD 0\n", "and nothing after it");
	list(d, 0, 0, 0, reply, sizeof(reply));
	ok(lines(reply) == 1 && line_id(reply, 0) == ids[0],
	    "no room: still one line");
	list(d, 0, 0, 150, reply, sizeof(reply));
	ok(lines(reply) >= 1 && lines(reply) < 5,
	    "a page within the room the client has: %d lines", lines(reply));
	dead_free(d);
	outbox_close(ob);
}

static void
test_bounded(void)
{
	struct outbox	*ob = open_in("bounded.db");
	struct dead	*d;
	char		 reply[4096];
	int64_t		 ids[4], upto, *keep;
	size_t		 n;

	cf.dead_max_bytes = 1;
	d = dead_new(base, ob, &cf, &hooks);
	insert_n(ob, 4, "b", ids);
	dead_park(d, ids[0], 1, "refused");
	is_int(outbox_dead_rows(ob), 1, "the first goes into an empty table "
	    "whatever dead_max_bytes");
	dead_park(d, ids[2], 1, "refused");
	is_int(outbox_dead_rows(ob), 1, "the next finds it full");
	is_int(dead_waiting(d), 1, "and waits");
	is_int(outbox_rows(ob), 3, "in the outbox");

	upto = ids[3];
	n = dead_hold(d, &upto, &keep);
	is_int(n, 1, "a delete is held by it");
	is_int(upto, ids[3], "but not stopped: the wait may last");
	ok(keep != NULL && keep[0] == ids[2], "it is deleted around");
	free(keep);

	is_int(cmd(d, S1, PROTO_DEAD_PURGE, ids[0], 0, 0, 0, reply,
	    sizeof(reply)), 0, "DEAD PURGE the first");
	is_int(dead_waiting(d), 0, "room: the waiting one is parked");
	is_int(outbox_dead_rows(ob), 1, "one dead letter");
	list(d, 0, 0, 1 << 20, reply, sizeof(reply));
	is_int(line_id(reply, 0), ids[2], "the one that waited");
	upto = ids[3];
	ok(dead_hold(d, &upto, &keep) == 0 && keep == NULL &&
	    upto == ids[3], "no delete is held any more");
	dead_free(d);
	outbox_close(ob);
	cf.dead_max_bytes = 0;
}

int
main(void)
{
	fixture_init("dead-test");
	log_init(LOG_ERR, "test_dead");
	base = event_base_new();
	config_defaults(&cf);
	cf.max_bytes = 0;
	cf.dead_max_bytes = 0;
	cf.max_attempts = 1;

	test_park_list();
	test_schedule();
	test_retry_purge();
	test_all_batches();
	test_paged_list();
	test_bounded();

	event_base_free(base);
	fixture_done();
	return done_testing();
}
