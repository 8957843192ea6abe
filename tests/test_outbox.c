/* Unit tests for outbox.c against real SQLite files in a temp dir. */
#include <sys/file.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <inttypes.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <sqlite3.h>

#include "outbox.h"
#include "protocol.h"
#include "tap.h"

/* SQL that takes a version-5 file back to version 4's tables. */
#define UNDO_V5	"DELETE FROM meta WHERE key = 'indexed'; "		\
	"DROP TABLE idem; DROP INDEX outbox_origin; "				\
	"DROP INDEX dead_origin; ALTER TABLE outbox DROP COLUMN origin; "	\
	"ALTER TABLE dead DROP COLUMN origin; DROP TABLE forgotten; "

static char	dir[256];

/* A stored property block with an idempotency key, as outbox_insert() takes it. */
#define KEYED(k)	"idempotency-key: " k "\n", sizeof("idempotency-key: " k "\n") - 1
static unsigned	total;		/* outbox_park()'s, where no check wants it */

static const char *
path_in(const char *name)
{
	static char	p[512];

	snprintf(p, sizeof(p), "%s/%s", dir, name);
	return p;
}

struct collect {
	int		n;
	int64_t		ids[64];
	char		bodies[64][32];
};

static int
collect_cb(void *arg, const struct outbox_row *row)
{
	struct collect	*c = arg;

	c->ids[c->n] = row->id;
	snprintf(c->bodies[c->n], sizeof(c->bodies[0]), "%.*s",
	    (int)row->blen, (const char *)row->body);
	c->n++;
	return 0;
}

static int
insert_n(struct outbox *ob, int n, const char *tag, int64_t *last)
{
	char	body[32];
	int	i;

	if (outbox_begin(ob) != OUTBOX_OK)
		return -1;
	for (i = 0; i < n; i++) {
		snprintf(body, sizeof(body), "%s%d", tag, i);
		if (outbox_insert(ob, "routing-key: q\n", 15, body,
		    strlen(body), 1000 + i, last) != OUTBOX_OK)
			return -1;
	}
	return outbox_commit(ob);
}

struct dead_collect {
	int		n;
	int		stop_after;	/* 0: never stop early */
	int64_t		ids[16];
	int64_t		created[16];
	int64_t		parked[16];
	unsigned	attempts[16];
	char		reasons[16][64];
	char		props[16][128];
	char		bodies[16][32];
	size_t		blens[16];
	int		no_body;	/* rows listed with body NULL */
};

static int
dead_cb(void *arg, const struct outbox_dead *d)
{
	struct dead_collect	*c = arg;

	c->ids[c->n] = d->id;
	c->created[c->n] = d->created_ms;
	c->parked[c->n] = d->parked_ms;
	c->attempts[c->n] = d->attempts;
	snprintf(c->reasons[c->n], sizeof(c->reasons[0]), "%s", d->reason);
	snprintf(c->props[c->n], sizeof(c->props[0]), "%.*s", (int)d->plen,
	    d->props);
	c->blens[c->n] = d->blen;
	if (d->body == NULL)
		c->no_body++;
	else
		snprintf(c->bodies[c->n], sizeof(c->bodies[0]), "%.*s",
		    (int)d->blen, (const char *)d->body);
	c->n++;
	return c->stop_after != 0 && c->n >= c->stop_after;
}

struct row_collect {
	int		n;
	int64_t		ids[16];
	int64_t		created[16];
	char		props[16][128];
	char		bodies[16][32];
};

static int
row_cb(void *arg, const struct outbox_row *row)
{
	struct row_collect	*c = arg;

	c->ids[c->n] = row->id;
	c->created[c->n] = row->created_ms;
	snprintf(c->props[c->n], sizeof(c->props[0]), "%.*s", (int)row->plen,
	    row->props);
	snprintf(c->bodies[c->n], sizeof(c->bodies[0]), "%.*s",
	    (int)row->blen, (const char *)row->body);
	c->n++;
	return 0;
}

static int64_t
insert_one(struct outbox *ob, const char *props, const char *body,
    int64_t created)
{
	int64_t	id = -1;

	if (outbox_begin(ob) != OUTBOX_OK)
		return -1;
	if (outbox_insert(ob, props, strlen(props), body, strlen(body), created,
	    &id) != OUTBOX_OK) {
		outbox_rollback(ob);
		return -1;
	}
	return outbox_commit(ob) == OUTBOX_OK ? id : -1;
}

/* One integer from the file, through a connection of its own. */
static int64_t
sql_int(const char *file, const char *sql)
{
	sqlite3		*db;
	sqlite3_stmt	*st;
	int64_t		 v = -1;

	if (sqlite3_open_v2(file, &db, SQLITE_OPEN_READONLY, NULL) !=
	    SQLITE_OK) {
		sqlite3_close(db);
		return -1;
	}
	if (sqlite3_prepare_v2(db, sql, -1, &st, NULL) == SQLITE_OK) {
		if (sqlite3_step(st) == SQLITE_ROW)
			v = sqlite3_column_int64(st, 0);
		sqlite3_finalize(st);
	}
	sqlite3_close(db);
	return v;
}

/* The message-id a stored property block carries, or "" (for is_str). */
static const char *
props_message_id(const char *props)
{
	static struct proto_pub	pub;
	static char		id[300];
	char			err[256];

	id[0] = '\0';
	if (proto_parse_props(props, strlen(props), &pub, err,
	    sizeof(err)) == 0 && pub.message_id.p != NULL)
		snprintf(id, sizeof(id), "%.*s", (int)pub.message_id.len,
		    pub.message_id.p);
	else if (pub.message_id.p == NULL)
		snprintf(id, sizeof(id), "(none%s%s)", err[0] ? ": " : "", err);
	return id;
}

/* The message-id of a stored block of any size, or "(none...)". */
struct big_props {
	char	id[300];
	int64_t	row;
};

static int
big_props_cb(struct big_props *c, int64_t id, const char *props, size_t plen)
{
	static struct proto_pub	pub;
	char			err[256];

	c->row = id;
	if (proto_parse_props(props, plen, &pub, err, sizeof(err)) != 0)
		snprintf(c->id, sizeof(c->id), "(none: %s)", err);
	else if (pub.message_id.p == NULL)
		snprintf(c->id, sizeof(c->id), "(none)");
	else
		snprintf(c->id, sizeof(c->id), "%.*s",
		    (int)pub.message_id.len, pub.message_id.p);
	return 0;
}

static int
big_dead_cb(void *arg, const struct outbox_dead *d)
{
	return big_props_cb(arg, d->id, d->props, d->plen);
}

static int
big_row_cb(void *arg, const struct outbox_row *row)
{
	return big_props_cb(arg, row->id, row->props, row->plen);
}

/*
 * A message whose property block is as long as a request may make it, and
 * has no message-id: parked, it still gets the generated one written in
 * (the stored block has room for it), and replayed it is published under
 * the id its OK named.
 */
static void
test_park_full_block(void)
{
	struct outbox		*ob;
	struct outbox_reader	*r;
	struct big_props	 c;
	struct buf		 b;
	char			 err[512], p[512], want[64], line[600];
	int64_t			 id;
	uint64_t		 n;
	int			 i;

	snprintf(p, sizeof(p), "%s", path_in("fullblock.db"));
	if (outbox_open(&ob, p, 1, err, sizeof(err)) != 0) {
		ok(0, "open %s: %s", p, err);
		return;
	}
	buf_init(&b);
	buf_printf(&b, "routing-key: q\n");
	/* Header lines up to exactly PROTO_MAX_BLOCK bytes. */
	for (i = 0; b.len < PROTO_MAX_BLOCK; i++) {
		size_t room = PROTO_MAX_BLOCK - b.len;
		size_t len = room > 512 ? 512 : room;

		if (room - len > 0 && room - len < 16)
			len = room - 16;
		snprintf(line, sizeof(line), "header: h%03d=", i);
		memset(line + strlen(line), 'v', len - strlen(line) - 1);
		line[len - 1] = '\n';
		line[len] = '\0';
		buf_append(&b, line, len);
	}
	is_int(b.len, PROTO_MAX_BLOCK, "a block of PROTO_MAX_BLOCK bytes");
	id = -1;
	ok(outbox_begin(ob) == OUTBOX_OK && outbox_insert(ob, b.data, b.len,
	    "big", 3, 100, &id) == OUTBOX_OK && outbox_commit(ob) == OUTBOX_OK,
	    "inserted");
	is_int(outbox_park(ob, id, 3, "NO_ROUTE", 5000, &total), OUTBOX_OK,
	    "parked");
	snprintf(want, sizeof(want), "%s-%lld", outbox_instance(ob),
	    (long long)id);
	memset(&c, 0, sizeof(c));
	is_int(outbox_dead_foreach(ob, 0, 10, 1, big_dead_cb, &c), 1,
	    "listed");
	is_str(c.id, want, "the parked full block has the generated "
	    "message-id");
	is_int(outbox_dead_retry(ob, id, 6000, &n), OUTBOX_OK, "replayed");
	is_int(n, 1, "one moved");
	ok(outbox_reader_open(&r, p, err, sizeof(err)) == 0, "reader opens");
	memset(&c, 0, sizeof(c));
	is_int(outbox_reader_fetch(r, 0, 10, big_row_cb, &c), 1,
	    "the reader sees the replayed row");
	ok(c.row > id, "at the tail");
	is_str(c.id, want, "the publisher parses it, with the id of its OK");
	outbox_reader_close(r);
	buf_free(&b);
	outbox_close(ob);
}

/*
 * Parking, listing, replaying and purging dead letters, with the running
 * totals checked against the tables after every step.
 */
static void
test_dead(void)
{
	struct outbox		*ob;
	struct outbox_reader	*r;
	struct dead_collect	 dc, dc2;
	struct row_collect	 rc;
	char			 err[512], want[128], p[512];
	const char		*pa = "routing-key: q\n";
	const char		*pb = "routing-key: q\nmessage-id: client-7\n";
	const char		*pc = "exchange: x\nrouting-key: q";
	int64_t			 a, b, c, d, tail;
	uint64_t		 n, bytes, dbytes, sa, sb, sc;

	snprintf(p, sizeof(p), "%s", path_in("dead.db"));
	if (outbox_open(&ob, p, 1, err, sizeof(err)) != 0) {
		ok(0, "open %s: %s", p, err);
		return;
	}
	is_int(outbox_migrated_from(ob), 0, "a new outbox was not migrated");
	is_int(sql_int(p, "PRAGMA user_version"), OUTBOX_SCHEMA_VERSION,
	    "a new outbox is created at schema version %d",
	    OUTBOX_SCHEMA_VERSION);
	is_int(outbox_dead_rows(ob), 0, "no dead letters at first");
	is_int(outbox_dead_bytes(ob), 0, "no dead-letter bytes at first");

	a = insert_one(ob, pa, "alpha", 100);
	b = insert_one(ob, pb, "bravo", 200);
	c = insert_one(ob, pc, "charlie", 300);
	d = insert_one(ob, pa, "delta", 400);
	ok(a > 0 && b > a && c > b && d > c, "four rows inserted");
	bytes = outbox_bytes(ob);
	is_int(bytes, strlen(pa) * 2 + strlen(pb) + strlen(pc) + 5 + 5 + 7 + 5,
	    "outbox bytes before parking");

	/* A row without a message-id gets the generated one written in. */
	is_int(outbox_park(ob, a, 3, "NO_ROUTE: unroutable (312)", 5000,
	    &total),
	    OUTBOX_OK, "park a row without a message-id");
	snprintf(want, sizeof(want), "%s-%lld", outbox_instance(ob),
	    (long long)a);
	sa = strlen(pa) + strlen("message-id: \n") + strlen(want) + 5;
	is_int(outbox_rows(ob), 3, "parking takes the row out of the outbox");
	is_int(outbox_bytes(ob), bytes - strlen(pa) - 5,
	    "outbox bytes drop by the row's size");
	is_int(outbox_dead_rows(ob), 1, "one dead letter");
	is_int(outbox_dead_bytes(ob), sa,
	    "dead bytes count the rewritten props");

	/* A client-given message-id is kept as it is. */
	is_int(outbox_park(ob, b, 1, "NOT_FOUND: no exchange 'x' (404)", 6000,
	    &total),
	    OUTBOX_OK, "park a row with a client message-id");
	sb = strlen(pb) + 5;
	/* A block without its last newline still gets a well-formed line. */
	is_int(outbox_park(ob, c, 2, "ACCESS_REFUSED\tdenied (403)", 7000,
	    &total),
	    OUTBOX_OK, "park a row whose props lack the last newline");
	/* pc, its newline, "message-id: <instance>-<c>\n", "charlie" */
	sc = strlen(pc) + 1 + strlen("message-id: -\n") +
	    strlen(outbox_instance(ob)) +
	    (size_t)snprintf(NULL, 0, "%lld", (long long)c) + 7;
	is_int(outbox_rows(ob), 1, "one row left in the outbox");
	is_int(outbox_bytes(ob), strlen(pa) + 5, "only its bytes are counted");
	is_int(outbox_dead_rows(ob), 3, "three dead letters");
	dbytes = sa + sb + sc;
	is_int(outbox_dead_bytes(ob), dbytes, "dead bytes add up");

	/* Idempotent: the row is gone from the outbox. */
	is_int(outbox_park(ob, a, 9, "again", 9000, &total), OUTBOX_OK,
	    "parking a parked row again is not an error");
	is_int(outbox_park(ob, 999999, 1, "never was", 9000, &total),
	    OUTBOX_OK,
	    "parking a row that never existed is not an error");
	is_int(outbox_dead_rows(ob), 3, "still three dead letters");
	is_int(outbox_dead_bytes(ob), dbytes, "dead bytes unchanged");
	is_int(outbox_rows(ob), 1, "outbox rows unchanged");

	memset(&dc, 0, sizeof(dc));
	is_int(outbox_dead_foreach(ob, 0, 100, 1, dead_cb, &dc), 3,
	    "foreach lists every dead letter");
	ok(dc.ids[0] == a && dc.ids[1] == b && dc.ids[2] == c,
	    "in id order, with the ids they had in the outbox");
	is_int(dc.created[0], 100, "creation time kept");
	is_int(dc.parked[0], 5000, "parking time stored");
	is_int(dc.attempts[0], 3, "attempts stored");
	is_str(dc.reasons[1], "NOT_FOUND: no exchange 'x' (404)",
	    "reason stored");
	is_str(dc.reasons[2], "ACCESS_REFUSED\tdenied (403)",
	    "reason stored as given (the list line cleans it)");
	is_str(props_message_id(dc.props[0]), want,
	    "the generated message-id is written into the parked props");
	ok(strncmp(dc.props[0], pa, strlen(pa)) == 0,
	    "the original props come first");
	is_str(dc.props[1], pb, "props with a message-id are unchanged");
	is_str(props_message_id(dc.props[1]), "client-7",
	    "the client's message-id is kept");
	snprintf(want, sizeof(want), "%s\nmessage-id: %s-%lld\n", pc,
	    outbox_instance(ob), (long long)c);
	is_str(dc.props[2], want, "a missing last newline is added first");
	is_str(dc.bodies[2], "charlie", "body kept");
	is_int(dc.no_body, 0, "with_body: every body given");

	/* What DEAD LIST uses: the same rows, lengths without the bodies. */
	memset(&dc2, 0, sizeof(dc2));
	is_int(outbox_dead_foreach(ob, 0, 100, 0, dead_cb, &dc2), 3,
	    "foreach without bodies lists every dead letter");
	is_int(dc2.no_body, 3, "without bodies: body is NULL");
	ok(dc2.ids[0] == a && dc2.ids[1] == b && dc2.ids[2] == c,
	    "without bodies: same ids, same order");
	ok(dc2.blens[0] == dc.blens[0] && dc2.blens[1] == dc.blens[1] &&
	    dc2.blens[2] == dc.blens[2], "without bodies: same body lengths");
	is_int(dc2.blens[2], 7, "without bodies: 'charlie' is 7 bytes");
	is_str(dc2.props[0], dc.props[0], "without bodies: same props");
	is_str(dc2.reasons[1], dc.reasons[1], "without bodies: same reason");

	memset(&dc, 0, sizeof(dc));
	is_int(outbox_dead_foreach(ob, a, 100, 1, dead_cb, &dc), 2,
	    "foreach after an id lists only later ones");
	is_int(dc.ids[0], b, "starting after it");
	memset(&dc, 0, sizeof(dc));
	is_int(outbox_dead_foreach(ob, 0, 2, 1, dead_cb, &dc), 2,
	    "foreach honours the limit");
	ok(dc.ids[0] == a && dc.ids[1] == b, "the first two");
	memset(&dc, 0, sizeof(dc));
	dc.stop_after = 1;
	is_int(outbox_dead_foreach(ob, 0, 100, 1, dead_cb, &dc), 1,
	    "a callback returning non-zero stops the listing");
	memset(&dc, 0, sizeof(dc));
	is_int(outbox_dead_foreach(ob, c, 100, 1, dead_cb, &dc), 0,
	    "nothing after the last one");

	/* The publisher never sees parked rows. */
	ok(outbox_reader_open(&r, p, err, sizeof(err)) == 0, "reader opens");
	memset(&rc, 0, sizeof(rc));
	is_int(outbox_reader_fetch(r, 0, 100, row_cb, &rc), 1,
	    "the reader sees only the row left in the outbox");
	is_int(rc.ids[0], d, "which is the last one");

	/* Totals survive a restart and agree with the tables. */
	outbox_reader_close(r);
	outbox_close(ob);
	if (outbox_open(&ob, p, 1, err, sizeof(err)) != 0) {
		ok(0, "reopen %s: %s", p, err);
		return;
	}
	is_int(outbox_dead_rows(ob), 3, "dead rows survive a restart");
	is_int(outbox_dead_bytes(ob), dbytes, "dead bytes survive a restart");
	is_int(outbox_rows(ob), 1, "outbox rows survive a restart");
	is_int(sql_int(p, "SELECT sum(size) FROM dead"), dbytes,
	    "dead bytes match the table");
	is_int(sql_int(p, "SELECT value FROM meta WHERE key = 'dead_rows'"), 3,
	    "dead_rows is stored in meta");

	/* Replay one: a new row at the tail, message-id unchanged. */
	is_int(outbox_dead_retry(ob, 999999, 10000, &n), OUTBOX_OK,
	    "replaying an unknown id is not an error");
	is_int(n, 0, "but moves nothing");
	is_int(outbox_dead_retry(ob, a, 10000, &n), OUTBOX_OK,
	    "replay one dead letter");
	is_int(n, 1, "one moved");
	is_int(outbox_rows(ob), 2, "back in the outbox");
	is_int(outbox_bytes(ob), strlen(pa) + 5 + sa,
	    "outbox bytes include the replayed row");
	is_int(outbox_dead_rows(ob), 2, "two dead letters left");
	is_int(outbox_dead_bytes(ob), sb + sc, "dead bytes drop");
	ok(outbox_reader_open(&r, p, err, sizeof(err)) == 0, "reader opens");
	memset(&rc, 0, sizeof(rc));
	is_int(outbox_reader_fetch(r, 0, 100, row_cb, &rc), 2,
	    "the reader sees the replayed row");
	is_int(rc.ids[0], d, "after the row that was already there");
	ok(rc.ids[1] > d, "with a new id at the tail (%lld > %lld)",
	    (long long)rc.ids[1], (long long)d);
	tail = rc.ids[1];
	is_int(rc.created[1], 10000, "created at the time of the replay");
	is_str(rc.bodies[1], "alpha", "its body");
	snprintf(want, sizeof(want), "%s-%lld", outbox_instance(ob),
	    (long long)a);
	is_str(props_message_id(rc.props[1]), want,
	    "its message-id is the one it was first published with");
	is_int(outbox_dead_retry(ob, a, 10000, &n), OUTBOX_OK,
	    "replaying it again is not an error");
	is_int(n, 0, "and moves nothing");

	/* Replay all: in dead id order, each at the tail. */
	is_int(outbox_dead_retry(ob, 0, 11000, &n), OUTBOX_OK, "replay all");
	is_int(n, 2, "both moved");
	is_int(outbox_dead_rows(ob), 0, "no dead letters left");
	is_int(outbox_dead_bytes(ob), 0, "no dead bytes left");
	is_int(outbox_rows(ob), 4, "four rows in the outbox");
	is_int(outbox_bytes(ob), strlen(pa) + 5 + sa + sb + sc,
	    "outbox bytes add up");
	is_int(sql_int(p, "SELECT count(*) FROM dead"), 0, "dead table empty");
	memset(&rc, 0, sizeof(rc));
	is_int(outbox_reader_fetch(r, tail, 100, row_cb, &rc), 2,
	    "two new rows after the first replay");
	ok(rc.ids[0] > tail && rc.ids[1] > rc.ids[0], "at the tail, in order");
	is_str(rc.bodies[0], "bravo", "the lower dead id first");
	is_str(rc.bodies[1], "charlie", "then the next");
	is_str(props_message_id(rc.props[0]), "client-7",
	    "the client's message-id survives the round trip");
	snprintf(want, sizeof(want), "%s-%lld", outbox_instance(ob),
	    (long long)c);
	is_str(props_message_id(rc.props[1]), want,
	    "the generated one too");
	is_int(outbox_dead_retry(ob, 0, 12000, &n), OUTBOX_OK,
	    "replay all with nothing parked");
	is_int(n, 0, "moves nothing");

	/* A replayed row parked again keeps its first message-id. */
	is_int(outbox_park(ob, rc.ids[1], 3, "again", 13000, &total), OUTBOX_OK,
	    "park a replayed row again");
	memset(&dc, 0, sizeof(dc));
	outbox_dead_foreach(ob, 0, 100, 1, dead_cb, &dc);
	is_str(props_message_id(dc.props[0]), want,
	    "no second message-id is added");

	/* Purge one, then all. */
	is_int(outbox_park(ob, d, 3, "x", 13000, &total), OUTBOX_OK,
	    "park another");
	is_int(outbox_park(ob, tail, 3, "x", 13000, &total), OUTBOX_OK,
	    "and another");
	is_int(outbox_dead_rows(ob), 3, "three dead letters");
	is_int(outbox_dead_purge(ob, 999999, &n), OUTBOX_OK,
	    "purging an unknown id is not an error");
	is_int(n, 0, "but deletes nothing");
	is_int(outbox_dead_purge(ob, d, &n), OUTBOX_OK, "purge one");
	is_int(n, 1, "one deleted");
	is_int(outbox_dead_rows(ob), 2, "two left");
	memset(&dc, 0, sizeof(dc));
	is_int(outbox_dead_foreach(ob, 0, 100, 1, dead_cb, &dc), 2,
	    "two listed");
	ok(dc.ids[0] == tail && dc.ids[1] == rc.ids[1], "the other two");
	is_int(outbox_dead_bytes(ob),
	    sql_int(p, "SELECT sum(size) FROM dead"), "dead bytes match");
	is_int(outbox_dead_purge(ob, 0, &n), OUTBOX_OK, "purge all");
	is_int(n, 2, "two deleted");
	is_int(outbox_dead_rows(ob), 0, "none left");
	is_int(outbox_dead_bytes(ob), 0, "no dead bytes");
	is_int(outbox_dead_purge(ob, 0, &n), OUTBOX_OK,
	    "purge all with nothing parked");
	is_int(n, 0, "deletes nothing");
	is_int(outbox_rows(ob), 1, "the outbox keeps its last row");
	is_int(outbox_bytes(ob), sql_int(p, "SELECT sum(size) FROM outbox"),
	    "outbox bytes match the table");
	outbox_reader_close(r);
	outbox_close(ob);
}

/* A version-1 outbox as pubrelay 0.1 wrote it. */
static void
make_v1(const char *file, const char *instance)
{
	sqlite3	*db;
	char	 sql[2048];

	snprintf(sql, sizeof(sql),
	    "PRAGMA journal_mode = WAL;"
	    "BEGIN;"
	    "CREATE TABLE meta (key TEXT PRIMARY KEY NOT NULL, value NOT NULL);"
	    "CREATE TABLE outbox (id INTEGER PRIMARY KEY AUTOINCREMENT,"
	    "  created INTEGER NOT NULL, size INTEGER NOT NULL,"
	    "  props BLOB NOT NULL, body BLOB NOT NULL);"
	    "INSERT INTO meta VALUES ('instance', '%s'), ('rows', 2),"
	    "  ('bytes', 37);"
	    "INSERT INTO outbox (created, size, props, body) VALUES"
	    "  (111, 18, CAST('routing-key: q\n' AS BLOB), CAST('one' AS BLOB)),"
	    "  (222, 19, CAST('routing-key: q\n' AS BLOB), CAST('four' AS BLOB)),"
	    "  (333, 20, CAST('routing-key: q\n' AS BLOB), CAST('gone' AS BLOB));"
	    "DELETE FROM outbox WHERE id = 3;"	/* confirmed, deleted */
	    "PRAGMA application_id = %d; PRAGMA user_version = 1; COMMIT;",
	    instance, OUTBOX_APPLICATION_ID);
	sqlite3_open(file, &db);
	if (sqlite3_exec(db, sql, NULL, NULL, NULL) != SQLITE_OK)
		diag("make_v1: %s", sqlite3_errmsg(db));
	sqlite3_close(db);
}

/*
 * Open the older outbox at p (schema version from): it must open, say it
 * was migrated from that version, and be at the current one.
 */
static struct outbox *
open_migrated(const char *p, int from)
{
	struct outbox	*ob;
	char		 err[512];

	is_int(sql_int(p, "PRAGMA user_version"), from, "a version-%d file",
	    from);
	ok(outbox_open(&ob, p, 1, err, sizeof(err)) == 0,
	    "a version-%d outbox opens: %s", from, ob ? "" : err);
	if (ob == NULL)
		return NULL;
	is_int(outbox_migrated_from(ob), from, "and says it was migrated "
	    "from %d", from);
	is_int(sql_int(p, "PRAGMA user_version"), OUTBOX_SCHEMA_VERSION,
	    "it is now at version %d", OUTBOX_SCHEMA_VERSION);
	return ob;
}

static void
test_migration(void)
{
	struct outbox		*ob;
	struct outbox_reader	*r;
	struct row_collect	 rc;
	struct dead_collect	 dc;
	char			 err[512];
	char			 p[512], p3[512];
	sqlite3			*db;
	uint64_t		 n;

	/* path_in() has one buffer. */
	snprintf(p, sizeof(p), "%s", path_in("v1.db"));
	snprintf(p3, sizeof(p3), "%s", path_in("v4.db"));

	make_v1(p, "0123456789abcdef");
	if ((ob = open_migrated(p, 1)) == NULL)
		return;
	is_int(sql_int(p, "SELECT count(*) FROM sqlite_master WHERE "
	    "name = 'outbox' AND sql LIKE '%AUTOINCREMENT%'"), 0,
	    "its outbox table has no AUTOINCREMENT any more");
	is_int(sql_int(p, "SELECT count(*) FROM sqlite_master WHERE "
	    "name = 'outbox_v3'"), 0, "and the copy took its name");
	is_int(sql_int(p, "SELECT value FROM meta WHERE key = 'mark'"), 3,
	    "the highest id ever given out (a deleted row's) is the mark");
	is_int(sql_int(p, "SELECT count(*) FROM dead"), 0,
	    "with an empty dead-letter table");
	is_int(sql_int(p, "SELECT count(*) FROM meta WHERE key IN "
	    "('dead_rows', 'dead_bytes') AND value = 0"), 2,
	    "and dead-letter totals at 0");
	is_str(outbox_instance(ob), "0123456789abcdef", "instance kept");
	is_int(outbox_rows(ob), 2, "row count kept");
	is_int(outbox_bytes(ob), 37, "byte count kept");
	is_int(outbox_dead_rows(ob), 0, "no dead letters");
	ok(outbox_reader_open(&r, p, err, sizeof(err)) == 0, "reader opens");
	memset(&rc, 0, sizeof(rc));
	is_int(outbox_reader_fetch(r, 0, 100, row_cb, &rc), 2, "rows kept");
	is_str(rc.bodies[0], "one", "first body");
	is_str(rc.bodies[1], "four", "second body");
	outbox_reader_close(r);

	is_int(outbox_park(ob, rc.ids[0], 1, "NO_ROUTE", 500, &total), OUTBOX_OK,
	    "park in a migrated outbox");
	memset(&dc, 0, sizeof(dc));
	is_int(outbox_dead_foreach(ob, 0, 10, 1, dead_cb, &dc), 1, "listed");
	is_str(props_message_id(dc.props[0]), "0123456789abcdef-1",
	    "with the message-id the old instance generated");
	is_int(outbox_dead_retry(ob, 0, 600, &n), OUTBOX_OK, "and replayed");
	is_int(n, 1, "one moved");
	is_int(sql_int(p, "SELECT max(id) FROM outbox"), 4,
	    "at a new id above the deleted row's, not at 3");
	outbox_close(ob);

	ok(outbox_open(&ob, p, 1, err, sizeof(err)) == 0, "reopen: %s",
	    ob ? "" : err);
	if (ob == NULL)
		return;
	is_int(outbox_migrated_from(ob), 0, "no second migration");
	is_int(outbox_rows(ob), 2, "both rows there");
	outbox_close(ob);

	/* The next version is refused, and left alone. */
	ok(outbox_open(&ob, p3, 1, err, sizeof(err)) == 0,
	    "create an outbox to age");
	if (ob != NULL)
		outbox_close(ob);
	sqlite3_open(p3, &db);
	sqlite3_exec(db, "PRAGMA user_version = 7", NULL, NULL, NULL);
	sqlite3_close(db);
	ok(outbox_open(&ob, p3, 1, err, sizeof(err)) == -1 &&
	    strstr(err, "schema version 7 is newer") != NULL,
	    "a version-7 outbox is refused: %s", err);
	is_int(sql_int(p3, "PRAGMA user_version"), 7, "and left at version 7");
	is_int(sql_int(p3, "SELECT count(*) FROM dead"), 0,
	    "with its tables intact");
}

/* A version-2 outbox: version 1 with the dead-letter table. */
static void
make_v2(const char *file)
{
	sqlite3	*db;

	make_v1(file, "fedcba9876543210");
	sqlite3_open(file, &db);
	if (sqlite3_exec(db, "BEGIN;"
	    "CREATE TABLE dead (id INTEGER PRIMARY KEY, created INTEGER NOT NULL,"
	    "  parked INTEGER NOT NULL, attempts INTEGER NOT NULL,"
	    "  reason TEXT NOT NULL, size INTEGER NOT NULL,"
	    "  props BLOB NOT NULL, body BLOB NOT NULL);"
	    "INSERT INTO meta VALUES ('dead_rows', 0), ('dead_bytes', 0);"
	    "PRAGMA user_version = 2; COMMIT;", NULL, NULL, NULL) != SQLITE_OK)
		diag("make_v2: %s", sqlite3_errmsg(db));
	sqlite3_close(db);
}

static void
test_migration_v2(void)
{
	struct outbox	*ob;
	char		 p[512];
	int64_t		 id;

	snprintf(p, sizeof(p), "%s", path_in("v2.db"));
	make_v2(p);
	if ((ob = open_migrated(p, 2)) == NULL)
		return;
	is_int(outbox_rows(ob), 2, "its rows counted");
	is_int(sql_int(p, "SELECT count(*) FROM outbox"), 2, "and kept");
	id = insert_one(ob, "routing-key: q\n", "five", 444);
	is_int(id, 4, "the next row gets 4: 3 was given out before");
	is_int(outbox_rows(ob), 3, "three rows");
	outbox_close(ob);
}

/* Copy file to copy, byte for byte (0 when file does not exist). */
static int
copy_file(const char *file, const char *copy)
{
	char	buf[65536];
	ssize_t	n;
	int	in, out, rc = 0;

	if ((in = open(file, O_RDONLY)) == -1)
		return 0;
	out = open(copy, O_WRONLY | O_CREAT | O_TRUNC, 0600);
	while (out != -1 && (n = read(in, buf, sizeof(buf))) > 0)
		if (write(out, buf, (size_t)n) != n)
			rc = -1;
	if (out == -1 || close(out) == -1)
		rc = -1;
	close(in);
	return rc;
}

/* The files of an open outbox as a crash would leave them (no close). */
static int
snapshot(const char *from, const char *to)
{
	char	a[600], b[600];

	snprintf(a, sizeof(a), "%s-wal", from);
	snprintf(b, sizeof(b), "%s-wal", to);
	return copy_file(from, to) == 0 && copy_file(a, b) == 0 ? 0 : -1;
}

/*
 * Open a crash copy, check how many rows it counts, and give out one id
 * there: the next id (-1 when it does not open).
 */
static int64_t
copy_next_id(const char *copy, int sync_full, int64_t rows, const char *what)
{
	struct outbox	*cr;
	char		 err[512];
	int64_t		 id;

	ok(outbox_open(&cr, copy, sync_full, err, sizeof(err)) == 0,
	    "%s opens", what);
	if (cr == NULL)
		return -1;
	is_int(outbox_rows(cr), rows, "%s counts %lld rows", what,
	    (long long)rows);
	id = insert_one(cr, "", "x", 1);
	outbox_close(cr);
	return id;
}

/*
 * New rows do not write the totals (one page per commit, not three) until
 * OUTBOX_FOLD_ROWS of them: a crash in between loses neither a row from the
 * count nor an id, nor does a crash after the table was emptied.
 */
static void
test_fold(void)
{
	struct outbox	*ob, *cr;
	char		 err[512], p[512], c1[512], c2[512], c3[512];
	int64_t		 last = 0, id;
	int		 i, folds = 0;

	snprintf(p, sizeof(p), "%s", path_in("fold.db"));
	snprintf(c1, sizeof(c1), "%s", path_in("crash1.db"));
	snprintf(c2, sizeof(c2), "%s", path_in("crash2.db"));
	snprintf(c3, sizeof(c3), "%s", path_in("crash3.db"));
	ok(outbox_open(&ob, p, 1, err, sizeof(err)) == 0, "open %s", p);
	if (ob == NULL)
		return;
	for (i = 0; i < 5; i++)
		is_int(insert_n(ob, 1, "f", &last), OUTBOX_OK, "commit %d", i);
	is_int(sql_int(p, "SELECT value FROM meta WHERE key = 'rows'"), 0,
	    "five single-row commits left the stored totals alone");
	is_int(sql_int(p, "SELECT value FROM meta WHERE key = 'mark'"), 0,
	    "and the mark");
	ok(snapshot(p, c1) == 0, "crash copy with 5 rows above the mark");
	ok(outbox_open(&cr, c1, 1, err, sizeof(err)) == 0, "the copy opens");
	if (cr != NULL) {
		is_int(outbox_rows(cr), 5, "it counts the 5 rows");
		is_int(outbox_bytes(cr), 5 * (15 + 2), "and their bytes");
		id = insert_one(cr, "", "x", 1);
		is_int(id, last + 1, "and gives out the next id");
		outbox_close(cr);
	}

	is_int(outbox_delete_upto(ob, last), OUTBOX_OK, "delete all five");
	is_int(sql_int(p, "SELECT value FROM meta WHERE key = 'mark'"), last,
	    "a delete writes the mark (%lld)", (long long)last);
	is_int(sql_int(p, "SELECT value FROM meta WHERE key = 'rows'"), 0,
	    "and the totals");
	ok(snapshot(p, c2) == 0, "crash copy of the emptied outbox");
	id = copy_next_id(c2, 1, 0, "the emptied copy");
	ok(id > last, "and does not give out a deleted row's id again "
	    "(%lld > %lld)", (long long)id, (long long)last);

	for (i = 0; i < OUTBOX_FOLD_ROWS; i++) {
		if (insert_n(ob, 1, "g", &last) != OUTBOX_OK)
			break;
		if (sql_int(p, "SELECT value FROM meta WHERE key = 'mark'") ==
		    last)
			folds++;
	}
	is_int(i, OUTBOX_FOLD_ROWS, "%d more single-row commits",
	    OUTBOX_FOLD_ROWS);
	is_int(folds, 1, "wrote the totals once");
	is_int(sql_int(p, "SELECT value FROM meta WHERE key = 'rows'"),
	    OUTBOX_FOLD_ROWS, "with the right count");
	is_int(insert_n(ob, 3, "h", &last), OUTBOX_OK, "3 more");
	ok(snapshot(p, c3) == 0, "crash copy");
	ok(outbox_open(&cr, c3, 1, err, sizeof(err)) == 0, "it opens");
	if (cr != NULL) {
		is_int(outbox_rows(cr), OUTBOX_FOLD_ROWS + 3,
		    "with the folded rows and the 3 above the mark");
		is_int(outbox_bytes(cr), OUTBOX_FOLD_ROWS * (15 + 2) +
		    3 * (15 + 2), "and their bytes");
		outbox_close(cr);
	}
	outbox_close(ob);
	is_int(sql_int(p, "SELECT value FROM meta WHERE key = 'mark'"), last,
	    "a clean close writes the mark");
	is_int(sql_int(p, "SELECT value FROM meta WHERE key = 'rows'"),
	    OUTBOX_FOLD_ROWS + 3, "and the totals");
}

/*
 * sync = normal: a power cut may take back commits that were never flushed,
 * and with them ids already given out (and published as "<instance>-<id>").
 * A copy made right after a flush is what such a cut leaves; the ids given
 * out after it must not come back.  A clean close gives the unused part of
 * the reservation back.
 */
static void
test_reserve(void)
{
	struct outbox	*ob;
	char		 err[512], p[512], c[512];
	int64_t		 last = 0, after, id;

	snprintf(p, sizeof(p), "%s", path_in("reserve.db"));
	snprintf(c, sizeof(c), "%s", path_in("reserve-cut.db"));
	ok(outbox_open(&ob, p, 0, err, sizeof(err)) == 0, "open %s with sync "
	    "= normal", p);
	if (ob == NULL)
		return;
	is_int(insert_n(ob, 1, "r", &last), OUTBOX_OK, "a first commit");
	ok(snapshot(p, c) == 0, "the files as a power cut after its flush "
	    "leaves them");
	is_int(insert_n(ob, 3, "s", &after), OUTBOX_OK, "3 rows not flushed, "
	    "ids %lld to %lld", (long long)last + 1, (long long)after);
	id = copy_next_id(c, 0, 1, "the cut copy");
	ok(id > after, "the next id is above every id given out before "
	    "the cut (%lld > %lld)", (long long)id, (long long)after);
	outbox_close(ob);
	ok(sql_int(p, "SELECT value FROM meta WHERE key = 'reserved'") ==
	    after, "a clean close gives back the unused ids (reserved = %lld)",
	    (long long)after);
	ok(outbox_open(&ob, p, 0, err, sizeof(err)) == 0, "reopened");
	if (ob != NULL) {
		id = insert_one(ob, "", "y", 1);
		is_int(id, after + 1, "and the ids go on from the last one");
		outbox_close(ob);
	}
	ok(outbox_open(&ob, p, 1, err, sizeof(err)) == 0, "reopened with "
	    "sync = full");
	if (ob != NULL) {
		id = insert_one(ob, "", "z", 1);
		is_int(id, after + 2, "the next id");
		is_int(sql_int(p, "SELECT value FROM meta WHERE key = "
		    "'reserved'"), after + 1, "and no reservation: each commit "
		    "is flushed");
		outbox_close(ob);
	}
}

static long long	file_size(const char *);

/*
 * A TRUNCATE checkpoint while a reader holds a snapshot (the publisher in a
 * fetch blocked on the broker's socket) gives up at once instead of waiting
 * the 5 s busy timeout on the thread that answers every client; with the
 * reader gone it empties the log.
 */
static void
test_checkpoint_reader(void)
{
	struct outbox	*ob;
	struct timespec	 t0, t1;
	sqlite3		*rd;
	char		 err[512], p[512], wal[600];
	int64_t		 last = 0, ms;
	int		 rc;

	snprintf(p, sizeof(p), "%s", path_in("ckpt.db"));
	snprintf(wal, sizeof(wal), "%s-wal", p);
	ok(outbox_open(&ob, p, 0, err, sizeof(err)) == 0, "open %s", p);
	if (ob == NULL)
		return;
	is_int(insert_n(ob, 5, "c", &last), OUTBOX_OK, "5 rows");
	ok(sqlite3_open_v2(p, &rd, SQLITE_OPEN_READONLY, NULL) == SQLITE_OK &&
	    sqlite3_exec(rd, "BEGIN; SELECT count(*) FROM outbox;", NULL, NULL,
	    NULL) == SQLITE_OK, "a reader holds a snapshot");
	is_int(insert_n(ob, 5, "d", &last), OUTBOX_OK, "5 more behind it");
	clock_gettime(CLOCK_MONOTONIC, &t0);
	rc = outbox_checkpoint(ob);
	clock_gettime(CLOCK_MONOTONIC, &t1);
	ms = (t1.tv_sec - t0.tv_sec) * 1000 + (t1.tv_nsec - t0.tv_nsec) /
	    1000000;
	ok(rc != OUTBOX_OK, "the checkpoint cannot truncate past the reader");
	ok(ms < 2000, "and gives up without the busy timeout (%lld ms, not "
	    "5000)", (long long)ms);
	sqlite3_exec(rd, "COMMIT", NULL, NULL, NULL);
	sqlite3_close(rd);
	is_int(outbox_checkpoint(ob), OUTBOX_OK, "with the reader gone it works");
	is_int(file_size(wal), 0, "and empties the log");
	outbox_close(ob);
}

static long long
file_size(const char *file)
{
	struct stat	st;

	return stat(file, &st) == 0 ? (long long)st.st_size : -1;
}

/*
 * With sync = full the write-ahead log is given its full size at start-up,
 * so commits overwrite it instead of growing it; recovery after a crash
 * still finds every committed row, in front of the zeros or behind them.
 */
static void
test_presize(void)
{
	struct outbox	*ob, *cr;
	char		 err[512], p[512], w[600], c1[512], c2[512], c3[512];
	long long	 want, before;
	uint64_t	 room;
	int64_t		 last = 0, id;
	int		 i;

	snprintf(p, sizeof(p), "%s", path_in("presize.db"));
	snprintf(w, sizeof(w), "%s-wal", p);
	snprintf(c1, sizeof(c1), "%s", path_in("presize-crash1.db"));
	snprintf(c2, sizeof(c2), "%s", path_in("presize-crash2.db"));
	snprintf(c3, sizeof(c3), "%s", path_in("presize-crash3.db"));
	ok(outbox_open(&ob, p, 1, err, sizeof(err)) == 0, "open %s", p);
	if (ob == NULL)
		return;
	want = 32 + 1000LL * (sql_int(p, "PRAGMA page_size") + 24);
	before = file_size(w);
	ok(before >= 0 && before < want, "the new log is short (%lld bytes)",
	    before);
	is_int(outbox_presize_wal(ob, UINT64_MAX / 2), 0,
	    "not pre-sized when that would leave less than keep_free");
	is_int(outbox_presize_wal(ob, UINT64_MAX), 0,
	    "nor with the largest keep_free");
	room = outbox_free_space(ob);
	ok(room > 4 * (uint64_t)(want - before), "the test's disk has room");
	is_int(outbox_presize_wal(ob, room - 4 * (uint64_t)(want - before)), 0,
	    "nor when the log would take a quarter of the room above "
	    "keep_free (a small disk: the space is worth more)");
	is_int(file_size(w), before, "the log kept its size");
	is_int(outbox_presize_wal(ob, 0), want - before,
	    "pre-sized: %lld bytes added", want - before);
	is_int(file_size(w), want, "the log has its size at the automatic "
	    "checkpoint (1000 frames)");
	is_int(outbox_presize_wal(ob, 0), 0, "a second call adds nothing");
	for (i = 0; i < 50; i++)
		if (insert_n(ob, 1, "p", &last) != OUTBOX_OK)
			break;
	is_int(i, 50, "50 single-row commits");
	is_int(file_size(w), want, "wrote inside the log: it did not grow");
	ok(snapshot(p, c1) == 0, "crash copy");
	ok(outbox_open(&cr, c1, 1, err, sizeof(err)) == 0, "it opens");
	if (cr != NULL) {
		is_int(outbox_rows(cr), 50, "with the 50 rows");
		id = insert_one(cr, "", "x", 1);
		is_int(id, last + 1, "and gives out the next id");
		outbox_close(cr);
	}
	outbox_close(ob);
	ok(outbox_open(&ob, p, 1, err, sizeof(err)) == 0, "reopen");
	if (ob != NULL) {
		is_int(outbox_rows(ob), 50, "50 rows after a clean close");
		outbox_close(ob);
	}

	/* Frames of a crash, recovered, then zeros behind them. */
	ok(outbox_open(&ob, path_in("grown.db"), 1, err, sizeof(err)) == 0,
	    "open another outbox, not pre-sized");
	if (ob == NULL)
		return;
	last = 0;
	is_int(insert_n(ob, 3, "g", &last), OUTBOX_OK, "3 rows");
	ok(snapshot(path_in("grown.db"), c2) == 0, "crash copy");
	outbox_close(ob);
	ok(outbox_open(&cr, c2, 1, err, sizeof(err)) == 0, "it opens");
	if (cr == NULL)
		return;
	snprintf(w, sizeof(w), "%s-wal", c2);
	before = file_size(w);
	ok(outbox_presize_wal(cr, 0) > 0, "its log is pre-sized after the "
	    "recovery (was %lld bytes)", before);
	is_int(insert_n(cr, 2, "h", &last), OUTBOX_OK, "2 more rows");
	ok(snapshot(c2, c3) == 0, "crash copy of that");
	outbox_close(cr);
	ok(outbox_open(&cr, c3, 1, err, sizeof(err)) == 0, "it opens");
	if (cr != NULL) {
		is_int(outbox_rows(cr), 5, "with all 5 rows");
		outbox_close(cr);
	}

	ok(outbox_open(&ob, path_in("presize-normal.db"), 0, err,
	    sizeof(err)) == 0, "open with sync = normal");
	if (ob != NULL) {
		is_int(outbox_presize_wal(ob, 0), 0, "not pre-sized: its commits "
		    "sync nothing");
		outbox_close(ob);
	}
}

/*
 * A VFS over SQLite's own that counts xSync calls, to see which transactions
 * reach the disk before they return.
 */
static sqlite3_vfs		*real_vfs;
static sqlite3_vfs		 counting_vfs;
/* The database and its journals have different methods: one copy of each. */
static const sqlite3_io_methods	*real_methods[4];
static sqlite3_io_methods	 counting_methods[4];
static int			 nsyncs;
/* Which open files are write-ahead logs (file objects are reused). */
static struct {
	sqlite3_file	*f;
	int		 wal;
}				 vfs_files[64];
/* Called before a log is synced; anything but SQLITE_OK fails the sync. */
static int			(*wal_sync_hook)(void);
/* Files as a VFS without shared memory has them (some network ones). */
static int			 no_shm;
static sqlite3_io_methods	 noshm_methods[4];

static const sqlite3_io_methods *
real_of(sqlite3_file *f)
{
	int	i;

	for (i = 0; f->pMethods != &counting_methods[i] &&
	    f->pMethods != &noshm_methods[i]; i++)
		;
	return real_methods[i];
}

/* Likewise before a write to a log. */
static int			(*wal_write_hook)(void);
/* Lock calls leave errno at EAGAIN, as one that found a reader does. */
static int			 lock_clobbers;
/* A read of the database file at this offset fails (-1: none), as a bad sector. */
static long			 read_fail_at = -1;

static int
counting_read(sqlite3_file *f, void *data, int n, sqlite3_int64 off)
{
	int	i;

	for (i = 0; i < 64 && vfs_files[i].f != f; i++)
		;
	if (i < 64 && !vfs_files[i].wal && read_fail_at >= 0 &&
	    off == read_fail_at)
		return SQLITE_IOERR_READ;
	return real_of(f)->xRead(f, data, n, off);
}

static int
counting_shmlock(sqlite3_file *f, int off, int n, int flags)
{
	int	rc;

	rc = real_of(f)->xShmLock(f, off, n, flags);
	if (lock_clobbers)
		errno = EAGAIN;
	return rc;
}

static int
counting_unlock(sqlite3_file *f, int level)
{
	int	rc;

	rc = real_of(f)->xUnlock(f, level);
	if (lock_clobbers)
		errno = EAGAIN;
	return rc;
}

static int
counting_write(sqlite3_file *f, const void *data, int n, sqlite3_int64 off)
{
	int	i, rc;

	for (i = 0; i < 64 && vfs_files[i].f != f; i++)
		;
	if (i < 64 && vfs_files[i].wal && wal_write_hook != NULL &&
	    (rc = wal_write_hook()) != SQLITE_OK)
		return rc;
	return real_of(f)->xWrite(f, data, n, off);
}

static int
counting_sync(sqlite3_file *f, int flags)
{
	int	i, rc;

	nsyncs++;
	for (i = 0; i < 64 && vfs_files[i].f != f; i++)
		;
	if (i < 64 && vfs_files[i].wal && wal_sync_hook != NULL &&
	    (rc = wal_sync_hook()) != SQLITE_OK)
		return rc;
	return real_of(f)->xSync(f, flags);
}

static int
counting_open(sqlite3_vfs *vfs, const char *name, sqlite3_file *f, int flags,
    int *out)
{
	int	rc, i;

	(void)vfs;
	rc = real_vfs->xOpen(real_vfs, name, f, flags, out);
	if (rc != SQLITE_OK || f->pMethods == NULL)
		return rc;
	for (i = 0; i < 63 && vfs_files[i].f != NULL && vfs_files[i].f != f;
	    i++)
		;
	vfs_files[i].f = f;
	vfs_files[i].wal = (flags & SQLITE_OPEN_WAL) != 0;
	for (i = 0; i < 4; i++) {
		if (real_methods[i] == NULL) {
			real_methods[i] = f->pMethods;
			counting_methods[i] = *f->pMethods;
			counting_methods[i].xSync = counting_sync;
			counting_methods[i].xWrite = counting_write;
			counting_methods[i].xRead = counting_read;
			if (counting_methods[i].xShmLock != NULL)
				counting_methods[i].xShmLock =
				    counting_shmlock;
			counting_methods[i].xUnlock = counting_unlock;
		}
		if (real_methods[i] == f->pMethods) {
			f->pMethods = &counting_methods[i];
			if (no_shm) {
				noshm_methods[i] = counting_methods[i];
				noshm_methods[i].iVersion = 1;
				f->pMethods = &noshm_methods[i];
			}
			break;
		}
	}
	return rc;
}

static void
vfs_install(void)
{
	real_vfs = sqlite3_vfs_find("unix");
	counting_vfs = *real_vfs;
	counting_vfs.zName = "counting";
	counting_vfs.xOpen = counting_open;
	sqlite3_vfs_register(&counting_vfs, 1);
}

static void
vfs_remove(void)
{
	wal_sync_hook = NULL;
	wal_write_hook = NULL;
	lock_clobbers = 0;
	read_fail_at = -1;
	sqlite3_vfs_unregister(&counting_vfs);
	/* Not the VFS the outbox put over ours, next in SQLite's list. */
	sqlite3_vfs_register(real_vfs, 1);
	memset(vfs_files, 0, sizeof(vfs_files));
}

static void
test_syncs(void)
{
	struct outbox	*ob;
	char		 err[512];
	int64_t		 id;
	uint64_t	 n64;
	int		 n;

	vfs_install();

	ok(outbox_open(&ob, path_in("sync.db"), 1, err, sizeof(err)) == 0,
	    "open with sync = full");
	if (ob != NULL) {
		n = nsyncs;
		id = insert_one(ob, "", "one", 1);
		ok(nsyncs > n, "a commit of a new row is synced (%d syncs)",
		    nsyncs - n);
		n = nsyncs;
		is_int(outbox_delete_upto(ob, id), OUTBOX_OK, "delete it");
		is_int(nsyncs - n, 0, "the delete is not synced by itself");
		n = nsyncs;
		insert_one(ob, "", "two", 2);
		ok(nsyncs > n, "the next commit is synced again (%d syncs)",
		    nsyncs - n);
		n = nsyncs;
		insert_one(ob, "", "three", 3);
		ok(nsyncs > n, "and the one after (%d syncs)", nsyncs - n);
		id = insert_one(ob, "", "four", 4);
		n = nsyncs;
		is_int(outbox_park(ob, id, 1, "NO_ROUTE", 5, &total), OUTBOX_OK,
		    "park a row");
		is_int(nsyncs - n, 0, "the park is not synced by itself");
		n = nsyncs;
		is_int(outbox_dead_requeue(ob, id, 6, UINT64_MAX, &n64),
		    OUTBOX_OK, "the relay retries it");
		is_int(nsyncs - n, 0, "nor is that");
		n = nsyncs;
		insert_one(ob, "", "five", 5);
		ok(nsyncs > n, "the next commit of a new row is (%d syncs)",
		    nsyncs - n);
		outbox_close(ob);
	}
	ok(outbox_open(&ob, path_in("nosync.db"), 0, err, sizeof(err)) == 0,
	    "open with sync = normal");
	if (ob != NULL) {
		n = nsyncs;
		id = insert_one(ob, "", "one", 1);
		is_int(nsyncs - n, 1, "the first commit reserves ids: one sync");
		n = nsyncs;
		id = insert_one(ob, "", "two", 2);
		is_int(nsyncs - n, 0, "the next commit is not synced");
		outbox_delete_upto(ob, id);
		n = nsyncs;
		insert_one(ob, "", "three", 3);
		is_int(nsyncs - n, 0, "nor after a delete");
		outbox_close(ob);
	}
	vfs_remove();
}

/*
 * sync = normal: a row must not be visible to the publisher's reader (and
 * so published as "<instance>-<id>") before the reservation of its id is on
 * disk, and a commit whose flush failed must leave no row behind: a client
 * told ERR STORE retries, and the first copy must not be published too.
 */
static struct outbox_reader	*hook_reader;
static int			 hook_visible;	/* rows the reader saw */
static int			 hook_fail;

static int
count_visible_cb(void *arg, const struct outbox_row *row)
{
	(void)arg;
	(void)row;
	hook_visible++;
	return 0;
}

static int
reserve_hook(void)
{
	if (hook_reader != NULL)
		(void)outbox_reader_fetch(hook_reader, 0, 100,
		    count_visible_cb, NULL);
	return hook_fail ? SQLITE_IOERR_FSYNC : SQLITE_OK;
}

/*
 * A flush that fails, even with ENOSPC (NFS, thin provisioning), is not
 * "full": what it covered may be lost (fsyncgate), so it is STORE, the
 * outbox writes nothing more, and the owner opens it again (pubrelayd
 * exits 74 and is restarted).
 */
static int
enospc_hook(void)
{
	errno = ENOSPC;
	return SQLITE_IOERR_FSYNC;
}

static void
test_enospc(void)
{
	struct outbox	*ob;
	char		 err[512], p[512], copy[512];
	int64_t		 id;

	vfs_install();
	ok(outbox_open(&ob, path_in("enospc.db"), 1, err, sizeof(err)) == 0,
	    "open");
	if (ob != NULL) {
		id = insert_one(ob, "", "one", 1);
		ok(id > 0, "a row");
		wal_sync_hook = enospc_hook;
		lock_clobbers = 1;
		ok(outbox_begin(ob) == OUTBOX_OK &&
		    outbox_insert(ob, "", 0, "two", 3, 1, &id) == OUTBOX_OK,
		    "a transaction");
		errno = 0;
		is_int(outbox_commit(ob), OUTBOX_EIO, "its commit fails, not "
		    "as full: %s", outbox_errmsg(ob));
		wal_sync_hook = NULL;
		lock_clobbers = 0;
		ok(outbox_sync_failed(ob), "the failed sync is remembered");
		/*
		 * Its frames, commit frame included, were in the log: a
		 * restart's recovery would have brought "two" back although
		 * its client was refused.  The files as the restart finds
		 * them (the shared memory gone) hold "one" alone.
		 */
		ok(strstr(outbox_sync_cut(ob), "was cut") != NULL,
		    "the failed commit is cut from the log: %s",
		    outbox_sync_cut(ob));
		snprintf(p, sizeof(p), "%s", path_in("enospc.db"));
		snprintf(copy, sizeof(copy), "%s", path_in("enospc-copy.db"));
		ok(snapshot(p, copy) == 0, "a copy of the files");
		is_int(copy_next_id(copy, 1, 1, "the copy"), 2, "and the "
		    "refused row's id is free");
		ok(insert_one(ob, "", "three", 1) < 0, "nothing more is "
		    "written");
		outbox_close(ob);
		ok(outbox_open(&ob, path_in("enospc.db"), 1, err,
		    sizeof(err)) == 0, "opened again");
	}
	if (ob != NULL) {
		ok(!outbox_sync_failed(ob), "a fresh start");
		ok(insert_one(ob, "", "three", 1) > 0, "and works again");
		is_int(outbox_rows(ob), 2, "two rows");
		outbox_close(ob);
	}
	vfs_remove();
}

/*
 * A key is known inside the transaction that writes it (a repeat within one
 * group commit is answered from it), and a commit that fails takes it away
 * with its row: the repeat, held on the same commit, fails with it, and a
 * retry is a new message.
 */
/* Park and purge ids[0..n). */
static void
park_purge(struct outbox *ob, const int64_t *ids, int n)
{
	unsigned	tot;
	uint64_t	purged;
	int		i;

	for (i = 0; i < n; i++)
		if (outbox_park(ob, ids[i], 1, "404 NOT_FOUND", 10, &tot) !=
		    OUTBOX_OK)
			printf("Bail out! park: %s\n", outbox_errmsg(ob));
	if (outbox_dead_purge(ob, 0, &purged) != OUTBOX_OK ||
	    purged != (uint64_t)n)
		printf("Bail out! purge: %s\n", outbox_errmsg(ob));
}

/*
 * The purged ids STATUS remembers stay within their bound: the oldest go
 * once it is a tenth over, and read "unknown", never "confirmed"; an id a
 * live idempotency key names is never dropped.  Across a reopen.
 */
static void
test_forgotten_trim(void)
{
	struct outbox	*ob;
	char		 err[512], reason[256], path[4096];
	int64_t		 ids[30], keyed, row;
	int		 i;

	snprintf(path, sizeof(path), "%s", path_in("trim.db"));
	ok(outbox_open(&ob, path, 1, err, sizeof(err)) == 0, "trim: open");
	if (ob == NULL)
		return;
	outbox_set_forgotten_max(ob, 10);
	for (i = 0; i < 11; i++)
		ids[i] = insert_one(ob, "", "x", 1 + i);
	park_purge(ob, ids, 11);
	is_int(sql_int(path, "SELECT count(*) FROM forgotten"), 11,
	    "11 purged, max 10: not a tenth over yet, all kept");
	ids[11] = insert_one(ob, "", "x", 20);
	ids[12] = insert_one(ob, "", "x", 21);
	park_purge(ob, ids + 11, 2);
	is_int(sql_int(path, "SELECT count(*) FROM forgotten"), 10,
	    "13: trimmed to 10");
	is_int(sql_int(path, "SELECT value FROM meta WHERE key = "
	    "'forgotten_upto'"), ids[2], "forgotten_upto: the last dropped");
	is_int(outbox_fate_of(ob, ids[0], INT64_MAX, 1, &row, reason,
	    sizeof(reason)), OUTBOX_FATE_UNKNOWN,
	    "a dropped id is unknown, even below the confirmed prefix");
	is_int(outbox_fate_of(ob, ids[3], INT64_MAX, 1, &row, reason,
	    sizeof(reason)), OUTBOX_FATE_PURGED, "a kept one is purged");

	/* A keyed dead letter purged: its id outlives the bound. */
	keyed = -1;
	if (outbox_begin(ob) != OUTBOX_OK || outbox_insert(ob,
	    "idempotency-key: trim-k\n", 23, "k", 1, 30, &keyed) !=
	    OUTBOX_OK || outbox_idem_put(ob, "trim-k", 6, keyed, 0) !=
	    OUTBOX_OK || outbox_commit(ob) != OUTBOX_OK)
		printf("Bail out! keyed insert: %s\n", outbox_errmsg(ob));
	ids[13] = keyed;
	for (i = 14; i < 30; i++)
		ids[i] = insert_one(ob, "", "x", 30 + i);
	park_purge(ob, ids + 13, 17);
	is_int(outbox_fate_of(ob, keyed, INT64_MAX, 1, &row, reason,
	    sizeof(reason)), OUTBOX_FATE_PURGED,
	    "a purged id a live key names is kept past the bound");
	is_int(sql_int(path, "SELECT count(*) FROM forgotten"), 17,
	    "those below it dropped, none from it on: over the bound while "
	    "the key lives");
	outbox_close(ob);

	ok(outbox_open(&ob, path, 1, err, sizeof(err)) == 0, "trim: reopen");
	if (ob == NULL)
		return;
	is_int(outbox_fate_of(ob, ids[1], INT64_MAX, 1, &row, reason,
	    sizeof(reason)), OUTBOX_FATE_UNKNOWN, "reopened: dropped, unknown");
	is_int(outbox_fate_of(ob, ids[12], INT64_MAX, 1, &row, reason,
	    sizeof(reason)), OUTBOX_FATE_UNKNOWN, "reopened: the last one "
	    "below the key dropped");
	is_int(outbox_fate_of(ob, ids[29], INT64_MAX, 1, &row, reason,
	    sizeof(reason)), OUTBOX_FATE_PURGED, "reopened: kept, purged");
	is_int(outbox_fate_of(ob, keyed, INT64_MAX, 1, &row, reason,
	    sizeof(reason)), OUTBOX_FATE_PURGED, "reopened: the keyed one "
	    "purged");
	outbox_close(ob);
}

/* STATUS: what became of an id, across parks, retries, purges, reopens. */
static void
test_fate(void)
{
	struct outbox	*ob;
	char		 err[512], reason[256];
	int64_t		 a, b, c, row, last;
	uint64_t	 n;
	unsigned	 tot;

	ok(outbox_open(&ob, path_in("fate.db"), 1, err, sizeof(err)) == 0,
	    "fate: open");
	if (ob == NULL)
		return;
	a = insert_one(ob, "", "a", 1);
	b = insert_one(ob, "", "b", 2);
	c = insert_one(ob, "", "c", 3);
	is_int(outbox_fate_of(ob, a, 0, 1, &row, reason, sizeof(reason)),
	    OUTBOX_FATE_QUEUED, "a row in the outbox is queued");
	is_int(row, a, "as itself");
	is_int(outbox_fate_of(ob, c + 1, 0, 1, &row, reason, sizeof(reason)),
	    OUTBOX_FATE_UNKNOWN, "an id not given out yet is unknown");
	is_int(outbox_fate_of(ob, 0, 0, 1, &row, reason, sizeof(reason)),
	    OUTBOX_FATE_UNKNOWN, "id 0 is unknown");

	/* b refused and parked; a confirmed and deleted. */
	is_int(outbox_park(ob, b, 1, "312 NO_ROUTE", 10, &tot), OUTBOX_OK,
	    "b parked");
	is_int(outbox_fate_of(ob, b, 0, 1, &row, reason, sizeof(reason)),
	    OUTBOX_FATE_PARKED, "a dead letter is parked");
	is_str(reason, "312 NO_ROUTE", "with its reason");
	is_int(outbox_fate_of(ob, a, a, 1, &row, reason, sizeof(reason)),
	    OUTBOX_FATE_QUEUED, "confirmed but not yet deleted: still a row "
	    "(the caller knows the prefix)");
	is_int(outbox_delete_upto(ob, a), OUTBOX_OK, "a deleted as confirmed");
	is_int(outbox_fate_of(ob, a, 0, 1, &row, reason, sizeof(reason)),
	    OUTBOX_FATE_CONFIRMED, "gone and at or below the stored prefix: "
	    "confirmed");

	/* b moved back under a new id: its old id follows it. */
	is_int(outbox_dead_retry(ob, b, 20, &n), OUTBOX_OK, "b retried");
	is_int(outbox_fate_of(ob, b, 0, 1, &row, reason, sizeof(reason)),
	    OUTBOX_FATE_QUEUED, "b is queued again");
	ok(row > c, "under a new id at the tail (%lld)", (long long)row);
	last = row;
	is_int(outbox_park(ob, last, 1, "404 NOT_FOUND", 30, &tot),
	    OUTBOX_OK, "refused again");
	is_int(outbox_fate_of(ob, b, 0, 1, &row, reason, sizeof(reason)),
	    OUTBOX_FATE_PARKED, "b's id finds it parked under the new one");
	is_str(reason, "404 NOT_FOUND", "with the new reason");
	is_int(outbox_dead_purge(ob, last, &n), OUTBOX_OK, "purged");
	is_int(outbox_fate_of(ob, b, INT64_MAX, 1, &row, reason, sizeof(reason)),
	    OUTBOX_FATE_PURGED, "a purged dead letter is purged, even "
	    "below the prefix");
	is_int(outbox_fate_of(ob, c, 0, 1, &row, reason, sizeof(reason)),
	    OUTBOX_FATE_QUEUED, "c still queued");
	outbox_close(ob);

	/* What a restart finds. */
	ok(outbox_open(&ob, path_in("fate.db"), 1, err, sizeof(err)) == 0,
	    "fate: reopened");
	if (ob == NULL)
		return;
	is_int(outbox_fate_of(ob, a, 0, 1, &row, reason, sizeof(reason)),
	    OUTBOX_FATE_CONFIRMED, "a: still confirmed after a reopen");
	is_int(outbox_fate_of(ob, b, 0, 1, &row, reason, sizeof(reason)),
	    OUTBOX_FATE_PURGED, "b: still purged");
	is_int(outbox_fate_of(ob, c, 0, 1, &row, reason, sizeof(reason)),
	    OUTBOX_FATE_QUEUED, "c: still queued");
	is_int(outbox_delete_upto(ob, c), OUTBOX_OK, "c deleted as confirmed");
	outbox_close(ob);
	ok(outbox_open(&ob, path_in("fate.db"), 1, err, sizeof(err)) == 0,
	    "fate: reopened again");
	if (ob == NULL)
		return;
	is_int(outbox_fate_of(ob, c, 0, 1, &row, reason, sizeof(reason)),
	    OUTBOX_FATE_CONFIRMED, "c: confirmed after a reopen");
	outbox_close(ob);
}

static void
test_idem_commit_fails(void)
{
	struct outbox	*ob;
	char		 err[512], mid[300];
	int64_t		 id;

	vfs_install();
	ok(outbox_open(&ob, path_in("idemfail.db"), 1, err, sizeof(err)) == 0,
	    "idem fail: open");
	if (ob != NULL) {
		ok(outbox_begin(ob) == OUTBOX_OK &&
		    outbox_insert(ob, KEYED("K"), "one", 3, 1, &id) ==
		    OUTBOX_OK && outbox_idem_put(ob, "K", 1, id, 0) ==
		    OUTBOX_OK, "a row and its key");
		is_int(outbox_idem_find(ob, "K", 1, 0, mid, sizeof(mid), NULL), 1,
		    "a repeat in the same transaction finds it");
		wal_sync_hook = enospc_hook;
		lock_clobbers = 1;
		is_int(outbox_commit(ob), OUTBOX_EIO, "the commit fails");
		wal_sync_hook = NULL;
		lock_clobbers = 0;
		is_int(outbox_idem_find(ob, "K", 1, 0, mid, sizeof(mid), NULL), 0,
		    "the key went with it");
		is_int(outbox_idem_keys(ob), 0, "not counted");
		/* A failed sync: the owner starts again from the file. */
		outbox_close(ob);
		ok(outbox_open(&ob, path_in("idemfail.db"), 1, err,
		    sizeof(err)) == 0, "idem fail: opened again");
	}
	if (ob != NULL) {
		is_int(outbox_idem_find(ob, "K", 1, 0, mid, sizeof(mid), NULL), 0,
		    "the key is not in the file");
		ok(outbox_begin(ob) == OUTBOX_OK &&
		    outbox_insert(ob, KEYED("K"), "one", 3, 1, &id) ==
		    OUTBOX_OK && outbox_idem_put(ob, "K", 1, id, 0) ==
		    OUTBOX_OK && outbox_commit(ob) == OUTBOX_OK,
		    "the retry is a new message");
		is_int(outbox_idem_keys(ob), 1, "one key");
		is_int(outbox_rows(ob), 1, "one row");
		outbox_close(ob);
	}
	vfs_remove();
}

/*
 * Where SQLite cannot use write-ahead logging (no shared memory for its
 * index), the outbox does not open: a rollback journal would make every
 * commit wait for the publisher's reads.  Neither a new file nor an
 * existing outbox.
 */
static void
test_no_wal(void)
{
	struct outbox	*ob;
	char		 err[512];

	ok(outbox_open(&ob, path_in("nowal.db"), 1, err, sizeof(err)) == 0,
	    "an outbox made where WAL works");
	if (ob != NULL) {
		insert_one(ob, "", "one", 1);
		outbox_close(ob);
	}
	vfs_install();
	no_shm = 1;
	/* SQLite cannot even read a WAL database without it. */
	ok(outbox_open(&ob, path_in("nowal.db"), 1, err, sizeof(err)) == -1,
	    "is refused without shared memory: %s", err);
	ok(outbox_open(&ob, path_in("nowal-new.db"), 1, err,
	    sizeof(err)) == -1 && strstr(err, "shared memory") != NULL,
	    "so is a new one: %s", err);
	no_shm = 0;
	vfs_remove();
	ok(outbox_open(&ob, path_in("nowal.db"), 1, err, sizeof(err)) == 0,
	    "and the first opens again where WAL works");
	if (ob != NULL) {
		is_int(outbox_rows(ob), 1, "with its row");
		outbox_close(ob);
	}
}

/*
 * The relay's own retries of a refused message keep its count: a park adds
 * to the attempts the row brought back from the dead-letter table, so
 * max_attempts holds across retries; a retry by hand starts it again.  And
 * a version-3 outbox gets the column, its rows at 0.
 */
static void
test_requeue(void)
{
	struct outbox		*ob;
	struct outbox_reader	*r;
	struct row_collect	 rc;
	char			 err[512];
	uint64_t		 n;
	int64_t			 a, b;
	sqlite3			*db;

	ok(outbox_open(&ob, path_in("requeue.db"), 1, err, sizeof(err)) == 0,
	    "open");
	ok(outbox_reader_open(&r, path_in("requeue.db"), err, sizeof(err)) ==
	    0, "a reader");
	if (ob == NULL || r == NULL)
		return;
	a = insert_one(ob, "message-id: m1\n", "one", 1);
	is_int(outbox_park(ob, a, 1, "NO_ROUTE", 100, &total), OUTBOX_OK,
	    "parked once");
	is_int(total, 1, "attempt 1");
	is_int(outbox_dead_requeue(ob, a, 200, UINT64_MAX, &n), OUTBOX_OK,
	    "retried by "
	    "the relay");
	is_int(n, 1, "one moved");
	memset(&rc, 0, sizeof(rc));
	is_int(outbox_reader_fetch(r, a, 10, row_cb, &rc), 1, "at the tail");
	b = rc.ids[0];
	is_str(rc.bodies[0], "one", "the same body");
	is_int(outbox_park(ob, b, 1, "NO_ROUTE", 300, &total), OUTBOX_OK,
	    "refused again");
	is_int(total, 2, "attempt 2");
	is_int(outbox_dead_retry(ob, b, 400, &n), OUTBOX_OK, "retried by hand");
	memset(&rc, 0, sizeof(rc));
	is_int(outbox_reader_fetch(r, b, 10, row_cb, &rc), 1, "at the tail");
	is_int(outbox_park(ob, rc.ids[0], 1, "NO_ROUTE", 500, &total),
	    OUTBOX_OK, "refused again");
	is_int(total, 1, "attempt 1 again: a retry by hand starts over");
	outbox_reader_close(r);
	outbox_close(ob);

	/* Back to version 3: no attempts column. */
	ok(outbox_open(&ob, path_in("v3.db"), 1, err, sizeof(err)) == 0,
	    "a new outbox");
	if (ob != NULL) {
		insert_one(ob, "", "old", 1);
		outbox_close(ob);
	}
	sqlite3_open(path_in("v3.db"), &db);
	ok(sqlite3_exec(db, "ALTER TABLE outbox DROP COLUMN attempts; "
	    UNDO_V5 "PRAGMA user_version = 3", NULL, NULL, NULL) ==
	    SQLITE_OK, "made a version-3 file");
	sqlite3_close(db);
	ok(outbox_open(&ob, path_in("v3.db"), 1, err, sizeof(err)) == 0,
	    "it opens: %s", ob ? "" : err);
	if (ob != NULL) {
		is_int(outbox_migrated_from(ob), 3, "migrated from 3");
		is_int(outbox_rows(ob), 1, "with its row");
		outbox_close(ob);
	}
	is_int(sql_int(path_in("v3.db"), "SELECT attempts FROM outbox"), 0,
	    "at 0 attempts");
	is_int(sql_int(path_in("v3.db"), "PRAGMA user_version"),
	    OUTBOX_SCHEMA_VERSION, "now at version %d", OUTBOX_SCHEMA_VERSION);
}

static void
test_reserve_visible(void)
{
	struct outbox		*ob;
	struct collect		 c;
	char			 err[512], p[512], cut[512];
	int64_t			 id, last = 0, seen;
	int			 i;

	vfs_install();
	wal_sync_hook = reserve_hook;
	snprintf(p, sizeof(p), "%s", path_in("visible.db"));
	ok(outbox_open(&ob, p, 0, err, sizeof(err)) == 0, "open with sync = "
	    "normal");
	ok(outbox_reader_open(&hook_reader, p, err, sizeof(err)) == 0,
	    "and a reader beside it");
	if (ob == NULL || hook_reader == NULL)
		goto out;
	/* Reserve 4 ids at a time: a new reservation when under 2 are left. */
	outbox_test_reserve_ids(ob, 4);
	hook_visible = 0;
	id = insert_one(ob, "", "one", 1);
	ok(id > 0, "the first commit (it reserves ids 1 to 4)");
	is_int(hook_visible, 0, "no row was visible to the reader while the "
	    "reservation was being flushed");
	memset(&c, 0, sizeof(c));
	is_int(outbox_reader_fetch(hook_reader, 0, 64, collect_cb, &c), 1,
	    "the row is visible after the commit");
	is_int(insert_n(ob, 2, "a", &last), OUTBOX_OK, "a commit inside the "
	    "reservation (ids 2 and 3)");

	hook_fail = 1;
	ok(insert_n(ob, 2, "b", &last) != OUTBOX_OK, "a commit that must "
	    "reserve ids, with a flush that fails, fails");
	memset(&c, 0, sizeof(c));
	is_int(outbox_reader_fetch(hook_reader, 0, 64, collect_cb, &c), 3,
	    "its rows are not there");
	is_int(outbox_rows(ob), 3, "nor counted");
	hook_fail = 0;
	ok(insert_n(ob, 2, "c", &last) != OUTBOX_OK, "nothing more is written "
	    "after a failed sync");
	/* The owner opens it again, as pubrelayd restarts. */
	outbox_close(ob);
	ok(outbox_open(&ob, p, 0, err, sizeof(err)) == 0, "opened again");
	if (ob == NULL)
		goto out;
	outbox_test_reserve_ids(ob, 4);
	is_int(insert_n(ob, 2, "c", &last), OUTBOX_OK, "the next commit "
	    "reserves and works");
	memset(&c, 0, sizeof(c));
	is_int(outbox_reader_fetch(hook_reader, 0, 64, collect_cb, &c), 5,
	    "its rows are there");
	seen = c.ids[c.n - 1];
	is_str(c.bodies[4], "c1", "the last of them");

	/* The files as the process leaves them: every id seen stays out. */
	snprintf(cut, sizeof(cut), "%s", path_in("visible-cut.db"));
	ok(snapshot(p, cut) == 0, "a crash copy");
	id = copy_next_id(cut, 0, 5, "the crash copy");
	ok(id > seen, "its next id is above every id the reader saw (%lld > "
	    "%lld)", (long long)id, (long long)seen);

	/* One transaction never goes past its reservation. */
	ok(outbox_begin(ob) == OUTBOX_OK, "a transaction of 5 rows with ids "
	    "8 and 9 left in the reservation (no new one yet)");
	for (i = 0; i < 5; i++)
		if (outbox_insert(ob, "", 0, "x", 1, 1, &last) != OUTBOX_OK)
			break;
	is_int(i, 2, "the third insert is refused");
	ok(strstr(outbox_errmsg(ob), "reserved") != NULL, "saying why: %s",
	    outbox_errmsg(ob));
	outbox_rollback(ob);
 out:
	outbox_reader_close(hook_reader);
	hook_reader = NULL;
	if (ob != NULL)
		outbox_close(ob);
	vfs_remove();
}

/*
 * A failing write (RLIMIT_FSIZE: every write past byte 1 fails with EFBIG)
 * in a delete and in a commit: outbox_errmsg() names SQLite's error, not the
 * "not an error" of the rollback or the PRAGMA that ran after it.
 */
/*
 * One daemon per outbox: a second open fails while the first holds the
 * lock, and outbox_unattended() tells a held outbox from one left behind.
 * A shared lock held for an instant (another daemon's outbox_unattended()
 * looking) does not make an open fail.
 */
static void
test_lock(void)
{
	struct outbox	*ob, *ob2;
	char		 err[512], lock[600], c;
	const char	*p = path_in("lock.db");
	int		 pfd[2], fd;
	pid_t		 pid;

	ok(!outbox_unattended(p), "no file: not unattended");
	if (outbox_open(&ob, p, 1, err, sizeof(err)) != 0) {
		ok(0, "open lock.db: %s", err);
		return;
	}
	ok(outbox_open(&ob2, p, 1, err, sizeof(err)) == -1 &&
	    strstr(err, "outbox in use by another process") != NULL,
	    "a second open fails: %s", err);
	ok(!outbox_unattended(p), "held: not unattended");
	outbox_close(ob);
	ok(outbox_unattended(p), "closed: unattended");

	/* A child holds a shared lock, then lets go 10 ms later. */
	snprintf(lock, sizeof(lock), "%s.lock", p);
	if (pipe(pfd) == -1 || (pid = fork()) == -1)
		abort();
	if (pid == 0) {
		if ((fd = open(lock, O_RDONLY)) == -1 ||
		    flock(fd, LOCK_SH) == -1)
			_exit(1);
		if (write(pfd[1], "x", 1) != 1)
			_exit(1);
		usleep(10000);
		_exit(0);
	}
	close(pfd[1]);
	if (read(pfd[0], &c, 1) != 1)
		abort();
	close(pfd[0]);
	ok(outbox_open(&ob, p, 1, err, sizeof(err)) == 0,
	    "open while a shared lock is held for 10 ms: %s",
	    ob == NULL ? err : "ok");
	if (ob != NULL)
		outbox_close(ob);
	waitpid(pid, NULL, 0);
}

static void
test_error_kept(void)
{
	struct outbox	*ob;
	struct rlimit	 old, tiny;
	char		 err[512];
	const char	*msg;
	int64_t		 last = 0;
	int		 rc;

	if (outbox_open(&ob, path_in("errkept.db"), 1, err, sizeof(err)) != 0) {
		ok(0, "open errkept.db: %s", err);
		return;
	}
	is_int(insert_n(ob, 20, "e", &last), OUTBOX_OK, "errkept: 20 rows");
	signal(SIGXFSZ, SIG_IGN);
	getrlimit(RLIMIT_FSIZE, &old);
	tiny = old;
	tiny.rlim_cur = 1;
	setrlimit(RLIMIT_FSIZE, &tiny);

	rc = outbox_delete_upto(ob, last);
	msg = outbox_errmsg(ob);
	ok(rc != OUTBOX_OK, "a delete whose writes fail fails (%d)", rc);
	ok(strstr(msg, "not an error") == NULL && strstr(msg, "I/O") != NULL,
	    "the failed delete's message is SQLite's: %s", msg);

	rc = insert_n(ob, 5, "f", &last);
	msg = outbox_errmsg(ob);
	ok(rc != OUTBOX_OK, "a commit whose writes fail fails (%d)", rc);
	ok(strstr(msg, "not an error") == NULL && strstr(msg, "I/O") != NULL,
	    "the failed commit's message is SQLite's: %s", msg);
	outbox_rollback(ob);

	setrlimit(RLIMIT_FSIZE, &old);
	signal(SIGXFSZ, SIG_DFL);
	is_int(outbox_delete_upto(ob, last), OUTBOX_OK,
	    "the delete works once writes do");
	is_int(outbox_rows(ob), 0, "errkept: all rows deleted");
	outbox_close(ob);
}

/* Rows of 30 bytes: a 14-byte block with its own message-id, 16 of body. */
static int64_t
insert_sized(struct outbox *ob, int i)
{
	char	body[32];

	snprintf(body, sizeof(body), "body-%011d", i);
	return insert_one(ob, "message-id: m\n", body, 1000 + i);
}

static void
test_dead_limit(void)
{
	struct outbox	*ob;
	char		 err[512], big[256];
	int64_t		 ids[6], bigid;
	uint64_t	 n, rows, bytes;
	int		 i;

	if (outbox_open(&ob, path_in("deadlimit.db"), 1, err,
	    sizeof(err)) != 0) {
		ok(0, "open: %s", err);
		return;
	}
	for (i = 0; i < 6; i++)
		ids[i] = insert_sized(ob, i);
	is_int(outbox_bytes(ob), 6 * 30, "six rows of 30 bytes");
	outbox_set_dead_limit(ob, 100);
	for (i = 0; i < 3; i++)
		is_int(outbox_park(ob, ids[i], 1, "NO_ROUTE", 5000, &total), OUTBOX_OK,
		    "park %d of 30 bytes under a limit of 100", i + 1);
	rows = outbox_rows(ob);
	bytes = outbox_bytes(ob);
	is_int(outbox_park(ob, ids[3], 1, "NO_ROUTE", 5000, &total), OUTBOX_EDEADFULL,
	    "a park past the dead-letter limit is refused");
	is_int(outbox_dead_rows(ob), 3, "the dead table stops at its limit");
	is_int(outbox_dead_bytes(ob), 90, "dead bytes stay under the limit");
	is_int(outbox_rows(ob), rows, "the refused park leaves its row in "
	    "the outbox");
	is_int(outbox_bytes(ob), bytes, "where it still counts in the total");
	is_int(outbox_park(ob, ids[3], 1, "NO_ROUTE", 5000, &total), OUTBOX_EDEADFULL,
	    "still full when asked again");
	is_int(outbox_dead_purge(ob, ids[0], &n), OUTBOX_OK, "purge one");
	is_int(outbox_park(ob, ids[3], 1, "NO_ROUTE", 5000, &total), OUTBOX_OK,
	    "with room again the same row parks");
	is_int(outbox_rows(ob), rows - 1, "and leaves the outbox");
	is_int(outbox_dead_bytes(ob), 90, "dead bytes back at 90");

	/* One dead letter larger than the whole limit: into an empty table. */
	is_int(outbox_dead_purge(ob, 0, &n), OUTBOX_OK, "purge all");
	memset(big, 'x', sizeof(big) - 1);
	big[sizeof(big) - 1] = '\0';
	bigid = insert_one(ob, "message-id: m\n", big, 2000);
	is_int(outbox_park(ob, bigid, 1, "NO_ROUTE", 5000, &total), OUTBOX_OK,
	    "a dead letter larger than the limit parks into an empty table");
	is_int(outbox_park(ob, ids[4], 1, "NO_ROUTE", 5000, &total), OUTBOX_EDEADFULL,
	    "after which the table is full");
	outbox_set_dead_limit(ob, 0);
	is_int(outbox_park(ob, ids[4], 1, "NO_ROUTE", 5000, &total), OUTBOX_OK,
	    "limit 0: no limit");
	is_int(outbox_dead_rows(ob), 2, "two dead letters");
	outbox_close(ob);
}

static void
test_dead_step(void)
{
	struct outbox			*ob;
	struct outbox_reader		*r;
	struct outbox_dead_batch	 b;
	struct collect			 c;
	char				 err[512], big[256];
	int64_t				 ids[10], upto, late, bigid;
	uint64_t			 orows;
	int				 i;

	if (outbox_open(&ob, path_in("deadstep.db"), 1, err,
	    sizeof(err)) != 0) {
		ok(0, "open: %s", err);
		return;
	}
	for (i = 0; i < 10; i++) {
		ids[i] = insert_sized(ob, i);
		outbox_park(ob, ids[i], 1, "NO_ROUTE", 5000, &total);
	}
	is_int(outbox_dead_rows(ob), 10, "ten dead letters");
	is_int(outbox_dead_last(ob), ids[9], "outbox_dead_last: the highest id");
	upto = ids[9];
	late = insert_sized(ob, 10);
	outbox_park(ob, late, 1, "NO_ROUTE", 5000, &total);	/* after the snapshot */

	memset(&b, 0, sizeof(b));
	b.upto = upto;
	b.max_rows = 4;
	b.max_bytes = b.room = UINT64_MAX;
	is_int(outbox_dead_step(ob, 1, 6000, &b), OUTBOX_OK, "retry a batch");
	ok(b.rows == 4 && b.bytes == 120 && b.more && !b.full,
	    "at most max_rows move (%llu rows, %llu bytes, more %d)",
	    (unsigned long long)b.rows, (unsigned long long)b.bytes, b.more);
	is_int(b.last, ids[3], "the lowest ids first");
	is_int(outbox_dead_rows(ob), 7, "dead rows drop by the batch");
	is_int(outbox_dead_bytes(ob), 7 * 30, "dead bytes drop by the batch");
	is_int(outbox_rows(ob), 4, "the batch is in the outbox");
	is_int(outbox_bytes(ob), 120, "and counts in its total");

	b.max_rows = UINT64_MAX;
	b.max_bytes = 50;
	is_int(outbox_dead_step(ob, 1, 6000, &b), OUTBOX_OK, "byte-bound batch");
	ok(b.rows == 1 && b.more, "max_bytes 50 takes one 30-byte row "
	    "(%llu)", (unsigned long long)b.rows);

	b.max_bytes = UINT64_MAX;
	b.room = 70;
	is_int(outbox_dead_step(ob, 1, 6000, &b), OUTBOX_OK, "room-bound batch");
	ok(b.rows == 2 && b.full && b.more, "room 70 takes two rows and says "
	    "full (%llu rows, full %d)", (unsigned long long)b.rows, b.full);
	b.room = 20;
	orows = outbox_rows(ob);
	is_int(outbox_dead_step(ob, 1, 6000, &b), OUTBOX_OK, "no room");
	ok(b.rows == 0 && b.full, "nothing moves past the room (%llu)",
	    (unsigned long long)b.rows);
	is_int(outbox_rows(ob), orows, "the outbox is unchanged");
	is_int(outbox_dead_rows(ob), 4, "three left parked, and the late one");

	/* A purge frees room: the outbox's room does not bind it. */
	b.max_rows = 2;
	b.room = 0;
	is_int(outbox_dead_step(ob, 0, 0, &b), OUTBOX_OK, "purge a batch");
	ok(b.rows == 2 && b.more && !b.full, "purge of two (%llu)",
	    (unsigned long long)b.rows);
	is_int(outbox_rows(ob), orows, "a purge adds nothing to the outbox");
	b.max_rows = UINT64_MAX;
	b.room = UINT64_MAX;
	is_int(outbox_dead_step(ob, 1, 6000, &b), OUTBOX_OK, "the rest");
	ok(b.rows == 1 && !b.more && !b.full, "the last one up to the "
	    "snapshot, and nothing more (%llu, more %d)",
	    (unsigned long long)b.rows, b.more);
	is_int(outbox_dead_rows(ob), 1, "the dead letter parked after the "
	    "snapshot stays");
	is_int(outbox_dead_last(ob), late, "it is the one left");
	is_int(outbox_dead_step(ob, 1, 6000, &b), OUTBOX_OK, "an empty range");
	ok(b.rows == 0 && !b.more && !b.full, "moves nothing");

	/* A dead letter over max_bytes is a batch of its own. */
	memset(big, 'y', sizeof(big) - 1);
	big[sizeof(big) - 1] = '\0';
	bigid = insert_one(ob, "message-id: m\n", big, 3000);
	outbox_park(ob, bigid, 1, "NO_ROUTE", 5000, &total);
	b.upto = INT64_MAX;
	b.max_bytes = 100;
	is_int(outbox_dead_step(ob, 1, 6000, &b), OUTBOX_OK, "a large row");
	ok(b.rows == 1 && b.last == late && b.more, "first the small one, "
	    "then stop before the large (%llu)", (unsigned long long)b.rows);
	is_int(outbox_dead_step(ob, 1, 6000, &b), OUTBOX_OK, "again");
	ok(b.rows == 1 && b.last == bigid && !b.more, "the large one alone");
	is_int(outbox_dead_last(ob), 0, "outbox_dead_last: 0 when empty");

	/* Replayed in dead id order, and the totals survive a restart. */
	ok(outbox_reader_open(&r, path_in("deadstep.db"), err,
	    sizeof(err)) == 0, "reader");
	memset(&c, 0, sizeof(c));
	is_int(outbox_reader_fetch(r, 0, 64, collect_cb, &c), 10,
	    "all ten not purged are back in the outbox");
	for (i = 0; i < 9; i++)
		if (strncmp(c.bodies[i], "body-", 5) != 0 ||
		    atoi(c.bodies[i] + 5) != (i < 7 ? i : i + 2))
			break;
	is_int(i, 9, "in the order they were parked");
	outbox_reader_close(r);
	orows = outbox_rows(ob);
	outbox_close(ob);
	if (outbox_open(&ob, path_in("deadstep.db"), 1, err,
	    sizeof(err)) != 0) {
		ok(0, "reopen: %s", err);
		return;
	}
	is_int(outbox_rows(ob), orows, "outbox rows survive a restart");
	is_int(outbox_dead_rows(ob), 0, "dead rows survive a restart");
	is_int(outbox_dead_bytes(ob), 0, "dead bytes survive a restart");
	outbox_close(ob);
}

static void
test_delete_around(void)
{
	struct outbox		*ob;
	struct outbox_reader	*r;
	struct collect		 c;
	char			 err[512];
	int64_t			 ids[10], keep[3];
	int			 i;

	if (outbox_open(&ob, path_in("around.db"), 1, err, sizeof(err)) != 0) {
		ok(0, "open: %s", err);
		return;
	}
	for (i = 0; i < 10; i++)
		ids[i] = insert_sized(ob, i);
	keep[0] = ids[2];
	keep[1] = ids[6];
	keep[2] = ids[9];		/* above upto: not in the range */
	is_int(outbox_delete_around(ob, ids[0], ids[8], keep, 3), OUTBOX_OK,
	    "delete around two waiting rows");
	is_int(outbox_rows(ob), 4, "the first (before the range), the two "
	    "kept and the last (after it) are left");
	is_int(outbox_bytes(ob), 4 * 30, "and the bytes follow");
	ok(outbox_reader_open(&r, path_in("around.db"), err, sizeof(err)) == 0,
	    "reader");
	memset(&c, 0, sizeof(c));
	outbox_reader_fetch(r, 0, 64, collect_cb, &c);
	ok(c.n == 4 && c.ids[0] == ids[0] && c.ids[1] == ids[2] &&
	    c.ids[2] == ids[6] && c.ids[3] == ids[9], "exactly those rows");
	outbox_reader_close(r);
	is_int(outbox_delete_around(ob, ids[8], ids[8], keep, 3), OUTBOX_OK,
	    "an empty range");
	is_int(outbox_rows(ob), 4, "deletes nothing");
	outbox_close(ob);
	if (outbox_open(&ob, path_in("around.db"), 1, err, sizeof(err)) != 0) {
		ok(0, "reopen: %s", err);
		return;
	}
	is_int(outbox_rows(ob), 4, "the count survives a restart");
	is_int(outbox_bytes(ob), 4 * 30, "the bytes too");
	outbox_close(ob);
}

static void
write_file(const char *p, const char *data, size_t n)
{
	FILE	*f = fopen(p, "w");

	fwrite(data, 1, n, f);
	fclose(f);
}

/* The property block of a message with key and (unless NULL) mid. */
static size_t
idem_block(char *buf, size_t len, const char *key, const char *mid)
{
	if (mid != NULL)
		return (size_t)snprintf(buf, len, "message-id: %s\n"
		    "idempotency-key: %s\n", mid, key);
	return (size_t)snprintf(buf, len, "idempotency-key: %s\n", key);
}

/* Put key -> mid with one row, in one transaction of its own. */
static int
idem_put_one(struct outbox *ob, const char *key, const char *mid,
    int64_t created, int replace)
{
	char	block[512];
	size_t	blen = idem_block(block, sizeof(block), key, mid);
	int64_t	id;

	if (outbox_begin(ob) != OUTBOX_OK)
		return -1;
	if (outbox_insert(ob, block, blen, "b", 1, created, &id) !=
	    OUTBOX_OK || outbox_idem_put(ob, key, strlen(key), id, replace) !=
	    OUTBOX_OK) {
		outbox_rollback(ob);
		return -1;
	}
	return outbox_commit(ob) == OUTBOX_OK ? 0 : -1;
}

static int
idem_find(struct outbox *ob, const char *key, int64_t since, char *mid)
{
	return outbox_idem_find(ob, key, strlen(key), since, mid, 300, NULL);
}

static void
test_idem(void)
{
	struct outbox	*ob;
	sqlite3		*db;
	char		 err[512], mid[300], key[32], p[512];
	uint64_t	 n;
	int64_t		 id, rows;
	int		 i;

	snprintf(p, sizeof(p), "%s", path_in("idem.db"));
	ok(outbox_open(&ob, p, 1, err, sizeof(err)) == 0, "idem: open");
	if (ob == NULL)
		return;
	is_int(outbox_idem_keys(ob), 0, "no keys in a new outbox");
	is_int(idem_find(ob, "k1", 0, mid), 0, "k1 unknown");

	/* Seen inside the transaction that writes it; gone with a rollback. */
	ok(outbox_begin(ob) == OUTBOX_OK &&
	    outbox_insert(ob, "message-id: m-1\nidempotency-key: k1\n", 36,
	    "b", 1, 1000, &id) == OUTBOX_OK, "a row");
	is_int(outbox_idem_put(ob, "k1", 2, id, 0), OUTBOX_OK, "k1 put");
	is_int(idem_find(ob, "k1", 0, mid), 1, "k1 known in its transaction");
	is_str(mid, "m-1", "with its message-id");
	{
		int64_t	got = -1;

		outbox_idem_find(ob, "k1", 2, 0, mid, sizeof(mid), &got);
		is_int(got, id, "and its row, for a repeat's receipt");
	}
	outbox_rollback(ob);
	is_int(idem_find(ob, "k1", 0, mid), 0, "rolled back with its row");
	is_int(outbox_idem_keys(ob), 0, "and not counted");
	is_int(sql_int(p, "SELECT count(*) FROM outbox"), 0, "no row either");

	ok(idem_put_one(ob, "k1", "m-1", 1000, 0) == 0, "k1 committed");
	is_int(outbox_idem_keys(ob), 1, "one key");
	is_int(idem_find(ob, "k1", 1000, mid), 1, "known at the window's edge");
	is_str(mid, "m-1", "its message-id");
	is_int(idem_find(ob, "k1", 1001, mid), 2, "expired after it");
	is_int(idem_find(ob, "K1", 0, mid), 0, "keys are case-sensitive");
	/* Keys are bytes: a prefix or a longer one is another key. */
	is_int(outbox_idem_find(ob, "k1x", 2, 0, mid, sizeof(mid), NULL), 1,
	    "by length: k1");
	is_int(idem_find(ob, "k1x", 0, mid), 0, "k1x unknown");

	/* The row goes (confirmed); the key stays. */
	is_int(outbox_delete_upto(ob, INT64_MAX), OUTBOX_OK, "rows deleted");
	is_int(idem_find(ob, "k1", 0, mid), 1, "key outlives its row");
	is_int(sql_int(p, "SELECT count(*) FROM idem"), 1, "in the key table");

	/* An expired key is written over, not counted twice. */
	ok(idem_put_one(ob, "k1", "m-2", 5000, 1) == 0, "k1 replaced");
	is_int(outbox_idem_keys(ob), 1, "still one key");
	is_int(idem_find(ob, "k1", 5000, mid), 1, "known again");
	is_str(mid, "m-2", "under the new message-id");

	/* Ten more, created 100..109 (older than k1). */
	for (i = 0; i < 10; i++) {
		snprintf(key, sizeof(key), "n%d", i);
		idem_put_one(ob, key, key, 100 + i, 0);
	}
	is_int(outbox_idem_keys(ob), 11, "eleven keys");
	is_int(sql_int(p, "SELECT count(*) FROM idem"), 1,
	    "ten of them still only in their rows");
	is_int(outbox_test_fingerprints(ob), 11, "eleven fingerprints");
	is_int(outbox_idem_prune(ob, 0, 0, 100, &n), OUTBOX_OK,
	    "prune: nothing old, no bound");
	is_int(n, 0, "nothing pruned");
	/*
	 * The bound: the oldest beyond it go, a batch at a time, those still
	 * with their rows included (a batch of rows' keys goes to the table).
	 */
	is_int(outbox_idem_prune(ob, 0, 5, 4, &n), OUTBOX_OK, "prune to 5");
	is_int(n, 4, "a batch of 4");
	is_int(outbox_idem_keys(ob), 7, "seven left");
	is_int(outbox_test_fingerprints(ob), 7, "their fingerprints went");
	is_int(sql_int(p, "SELECT count(*) FROM idem"), 1,
	    "n0..n3 went through the table");
	is_int(idem_find(ob, "n3", 0, mid), 0, "n3 (among the oldest) gone");
	is_int(sql_int(p, "SELECT count(*) FROM idem"), 1,
	    "a key without a fingerprint costs no lookup");
	is_int(idem_find(ob, "n4", 0, mid), 1, "n4 kept");
	is_int(sql_int(p, "SELECT count(*) FROM idem"), 7,
	    "a possible repeat brought the table up to date");
	is_int(outbox_idem_prune(ob, 0, 5, 4, &n), OUTBOX_OK, "prune again");
	is_int(n, 2, "the other 2");
	is_int(outbox_idem_keys(ob), 5, "at the bound");
	is_int(sql_int(p, "SELECT count(*) FROM idem"), 5, "five stored");
	/* The window: those created before the cut go. */
	is_int(outbox_idem_prune(ob, 108, 5, 100, &n), OUTBOX_OK,
	    "prune before 108");
	is_int(n, 2, "n6, n7 pruned");
	is_int(idem_find(ob, "n7", 0, mid), 0, "n7 gone");
	is_int(idem_find(ob, "n8", 0, mid), 1, "n8 kept");
	is_int(idem_find(ob, "k1", 0, mid), 1, "k1 kept");
	is_int(outbox_idem_keys(ob), 3, "three left");
	/* Both in one batch: the bound first, then the window. */
	is_int(outbox_idem_prune(ob, 5000, 2, 100, &n), OUTBOX_OK,
	    "prune bound and window");
	is_int(n, 2, "n8, n9 pruned");
	outbox_close(ob);

	/* A restart: the keys and their count are where they were. */
	ok(outbox_open(&ob, p, 1, err, sizeof(err)) == 0, "idem: reopen");
	if (ob == NULL)
		return;
	is_int(outbox_idem_keys(ob), 1, "one key counted at open");
	is_int(idem_find(ob, "k1", 0, mid), 1, "k1 known after a restart");
	is_str(mid, "m-2", "with its message-id");
	ok(idem_put_one(ob, "k2", "m-3", 6000, 0) == 0, "k2 committed");

	/* A generated message-id is kept as its row id, named in full. */
	ok(idem_put_one(ob, "gen", NULL, 1000, 0) == 0, "key of a generated id");
	is_int(idem_find(ob, "gen", 0, mid), 1, "found");
	snprintf(key, sizeof(key), "%s-%" PRId64, outbox_instance(ob),
	    sql_int(p, "SELECT max(id) FROM outbox"));
	is_str(mid, key, "as <instance>-<id>");
	is_int(sql_int(p, "SELECT typeof(mid) = 'integer' FROM idem WHERE "
	    "key = CAST('gen' AS BLOB)"), 1, "stored as an integer");
	is_int(sql_int(p, "SELECT typeof(mid) = 'text' FROM idem WHERE "
	    "key = CAST('k1' AS BLOB)"), 1, "a client's stays text");
	ok(idem_put_one(ob, "num", "123", 1000, 0) == 0, "message-id \"123\"");
	is_int(idem_find(ob, "num", 0, mid), 1, "found");
	is_int(sql_int(p, "SELECT typeof(mid) = 'text' FROM idem WHERE "
	    "key = CAST('num' AS BLOB)"), 1, "stays text too");
	/* A key found in the table twice (an index done again) counts once. */
	ok(idem_put_one(ob, "gen", NULL, 1000, 0) == 0, "gen put again");
	is_int(outbox_idem_keys(ob), 5, "counted twice at first");
	is_int(outbox_delete_upto(ob, INT64_MAX), OUTBOX_OK, "rows deleted");
	is_int(outbox_idem_keys(ob), 4, "once the table has it");
	is_int(sql_int(p, "SELECT count(*) FROM idem"), 4, "four stored");
	is_int(sql_int(p, "SELECT value FROM meta WHERE key = 'indexed'"),
	    sql_int(p, "SELECT value FROM meta WHERE key = 'mark'"),
	    "'indexed' at the last row");
	/*
	 * A block naming a key that was never put (keys off: a window of 0)
	 * gives the table nothing, before or after the newest keyed row.
	 */
	ok(idem_put_one(ob, "k5", NULL, 8000, 0) == 0, "k5 put");
	{
		char	block[64];
		size_t	blen = idem_block(block, sizeof(block), "off", NULL);

		ok(outbox_begin(ob) == OUTBOX_OK &&
		    outbox_insert(ob, block, blen, "b", 1, 8000, &id) ==
		    OUTBOX_OK && outbox_commit(ob) == OUTBOX_OK,
		    "a row naming key \"off\", not put");
	}
	is_int(outbox_delete_upto(ob, INT64_MAX), OUTBOX_OK, "rows deleted");
	is_int(sql_int(p, "SELECT count(*) FROM idem WHERE key = "
	    "CAST('off' AS BLOB)"), 0, "\"off\" not in the table");
	is_int(sql_int(p, "SELECT count(*) FROM idem WHERE key = "
	    "CAST('k5' AS BLOB)"), 1, "k5 is");
	is_int(outbox_idem_keys(ob), 5, "five keys");

	/*
	 * A restart with keys still only in their rows: their fingerprints
	 * and count come from the rows above 'indexed'.
	 */
	ok(idem_put_one(ob, "p1", "m-p1", 9000, 0) == 0 &&
	    idem_put_one(ob, "p2", NULL, 9000, 0) == 0, "p1, p2 put");
	outbox_close(ob);
	ok(outbox_open(&ob, p, 1, err, sizeof(err)) == 0, "idem: reopen");
	if (ob == NULL)
		return;
	is_int(outbox_idem_keys(ob), 7, "seven keys counted at open");
	is_int(outbox_test_fingerprints(ob), 7, "seven fingerprints");
	is_int(sql_int(p, "SELECT count(*) FROM idem"), 5,
	    "two of them not in the table");
	is_int(idem_find(ob, "p1", 0, mid), 1, "p1 found after the restart");
	is_str(mid, "m-p1", "with its message-id");
	is_int(idem_find(ob, "p2", 0, mid), 1, "p2 found");
	is_int(sql_int(p, "SELECT count(*) FROM idem"), 7, "now in the table");
	is_int(outbox_idem_keys(ob), 7, "still seven");

	/* A park takes its row's key to the table. */
	ok(idem_put_one(ob, "p3", NULL, 9000, 0) == 0, "p3 put");
	id = sql_int(p, "SELECT max(id) FROM outbox");
	{
		unsigned tries;

		is_int(outbox_park(ob, id, 1, "refused", 9001, &tries),
		    OUTBOX_OK, "its row parked");
	}
	is_int(sql_int(p, "SELECT count(*) FROM idem WHERE key = "
	    "CAST('p3' AS BLOB)"), 1, "p3 in the table");
	is_int(outbox_idem_keys(ob), 8, "eight keys");

	/* With no key waiting, 'indexed' follows the fold at no cost. */
	ok(outbox_begin(ob) == OUTBOX_OK, "begin");
	for (i = 0; i < OUTBOX_FOLD_ROWS + 1; i++)
		outbox_insert(ob, "", 0, "b", 1, 9000, &id);
	ok(outbox_commit(ob) == OUTBOX_OK, "%d rows without keys",
	    OUTBOX_FOLD_ROWS + 1);
	is_int(sql_int(p, "SELECT value FROM meta WHERE key = 'indexed'"), id,
	    "'indexed' at the newest row");
	outbox_close(ob);

	/* A version-5 outbox had every key in its table: none to index. */
	sqlite3_open(p, &db);
	ok(sqlite3_exec(db, "DELETE FROM meta WHERE key = 'indexed'; "
	    "PRAGMA user_version = 5", NULL, NULL, NULL) == SQLITE_OK,
	    "made a version-5 file");
	sqlite3_close(db);
	ok(outbox_open(&ob, p, 1, err, sizeof(err)) == 0, "version 5 opens");
	if (ob == NULL)
		return;
	is_int(outbox_migrated_from(ob), 5, "migrated from 5");
	is_int(sql_int(p, "SELECT value FROM meta WHERE key = 'indexed'"),
	    sql_int(p, "SELECT max(id) FROM outbox"), "'indexed' at its top");
	is_int(outbox_idem_keys(ob), 8, "its keys counted once");
	outbox_close(ob);

	/* A version-4 outbox (no key table) gets an empty one. */
	rows = sql_int(p, "SELECT count(*) FROM outbox");
	sqlite3_open(p, &db);
	ok(sqlite3_exec(db, UNDO_V5 "PRAGMA user_version = 4", NULL,
	    NULL, NULL) == SQLITE_OK, "made a version-4 file");
	sqlite3_close(db);
	ok(outbox_open(&ob, p, 1, err, sizeof(err)) == 0,
	    "version 4 opens: %s", ob ? "" : err);
	if (ob == NULL)
		return;
	is_int(outbox_migrated_from(ob), 4, "migrated from 4");
	is_int(outbox_rows(ob), rows, "its rows kept");
	is_int(outbox_idem_keys(ob), 0, "no keys");
	ok(idem_put_one(ob, "k3", "m-4", 7000, 0) == 0, "a key goes in");
	is_int(idem_find(ob, "k3", 0, mid), 1, "and is found");
	outbox_close(ob);
	is_int(sql_int(p, "SELECT count(*) FROM sqlite_master WHERE name = "
	    "'idem_created'"), 1, "with its index on created");
	is_int(sql_int(p, "PRAGMA user_version"), OUTBOX_SCHEMA_VERSION,
	    "now at version %d", OUTBOX_SCHEMA_VERSION);
}

/* The offset of the 4 KiB page of db that holds marker, or -1. */
static long
page_of(const char *db, const char *marker)
{
	FILE	*f = fopen(db, "rb");
	char	*buf;
	long	 size, i, at = -1;
	size_t	 mlen = strlen(marker);

	if (f == NULL)
		return -1;
	fseek(f, 0, SEEK_END);
	size = ftell(f);
	buf = malloc((size_t)size);
	fseek(f, 0, SEEK_SET);
	if (fread(buf, 1, (size_t)size, f) != (size_t)size)
		size = 0;
	for (i = 0; i + (long)mlen <= size; i++)
		if (memcmp(buf + i, marker, mlen) == 0) {
			at = i / 4096 * 4096;
			break;
		}
	free(buf);
	fclose(f);
	return at;
}

/*
 * Start-up cannot read the rows whose keys are not in the key table yet
 * (a page of them fails to read): the relay starts all the same, says why,
 * and looks every key up in the file (an error while that fails, never a
 * wrong "new"); once the page reads again and every row is indexed, the
 * set is whole again.
 */
static void
test_idem_unreadable(void)
{
	struct outbox	*ob;
	char		 err[512], mid[300], key[32], p[512], body[400];
	int64_t		 first = 0;
	int		 i;

	vfs_install();
	snprintf(p, sizeof(p), "%s", path_in("idembad.db"));
	ok(outbox_open(&ob, p, 1, err, sizeof(err)) == 0, "idembad: open");
	if (ob == NULL) {
		vfs_remove();
		return;
	}
	memset(body, 'b', sizeof(body));
	for (i = 0; i < 60; i++) {
		char	block[64];
		size_t	blen;
		int64_t	id;

		snprintf(key, sizeof(key), "pk%02d", i);
		blen = idem_block(block, sizeof(block), key, NULL);
		if (outbox_begin(ob) != OUTBOX_OK ||
		    outbox_insert(ob, block, blen, body, sizeof(body), 100,
		    &id) != OUTBOX_OK ||
		    outbox_idem_put(ob, key, strlen(key), id, 0) != OUTBOX_OK ||
		    outbox_commit(ob) != OUTBOX_OK)
			break;
		if (i == 0)
			first = id;
	}
	is_int(i, 60, "60 keyed rows, their keys only in them");
	ok(outbox_keys_problem(ob) == NULL, "all keys read");
	outbox_close(ob);
	read_fail_at = page_of(p, "idempotency-key: pk30");
	ok(read_fail_at > 0, "reads of the page of pk30 fail");
	ok(outbox_open(&ob, p, 1, err, sizeof(err)) == 0,
	    "it opens all the same: %s", ob ? "" : err);
	if (ob == NULL) {
		vfs_remove();
		return;
	}
	ok(outbox_keys_problem(ob) != NULL, "and says why: %s",
	    outbox_keys_problem(ob) ? outbox_keys_problem(ob) : "(nothing)");
	is_int(idem_find(ob, "pk59", 0, mid), -1,
	    "a key after the page: an error, not \"new\"");
	is_int(idem_find(ob, "new-one", 0, mid), -1,
	    "a new key too, while the rows cannot be read");
	read_fail_at = -1;
	is_int(idem_find(ob, "pk59", 0, mid), 1, "readable again: pk59 found "
	    "(%s)", outbox_errmsg(ob));
	snprintf(key, sizeof(key), "%s-%" PRId64, outbox_instance(ob),
	    first + 59);
	is_str(mid, key, "under its first id");
	ok(outbox_keys_problem(ob) == NULL, "every row indexed: whole again");
	is_int(outbox_idem_keys(ob), 60, "60 keys counted");
	is_int(idem_find(ob, "pk30", 0, mid), 1, "pk30, from that page");
	is_int(idem_find(ob, "new-one", 0, mid), 0, "a new key is new");
	outbox_close(ob);
	vfs_remove();
}

int
main(void)
{
	struct outbox		*ob, *ob2;
	struct outbox_reader	*r;
	struct collect		 c;
	char			 err[512], inst[OUTBOX_INSTANCE_LEN + 1];
	int64_t			 last = 0, first_last;
	sqlite3			*db;

	snprintf(dir, sizeof(dir), "%s/outbox-test.XXXXXX",
	    getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp");
	if (mkdtemp(dir) == NULL) {
		perror("mkdtemp");
		return 1;
	}

	ok(outbox_open(&ob, path_in("o.db"), 1, err, sizeof(err)) == 0,
	    "a new outbox is created");
	is_int(strlen(outbox_instance(ob)), OUTBOX_INSTANCE_LEN,
	    "instance id has %d hex digits", OUTBOX_INSTANCE_LEN);
	snprintf(inst, sizeof(inst), "%s", outbox_instance(ob));
	is_int(outbox_rows(ob), 0, "empty at first");
	is_int(outbox_oldest_ms(ob), -1, "no oldest row when empty");

	ok(outbox_open(&ob2, path_in("o.db"), 1, err, sizeof(err)) == -1 &&
	    strstr(err, "in use") != NULL, "a second writer is refused: %s",
	    err);

	is_int(insert_n(ob, 10, "a", &last), OUTBOX_OK, "10 rows committed");
	is_int(outbox_rows(ob), 10, "row count kept");
	is_int(outbox_bytes(ob), 10 * 15 + 10 * 2, "byte count kept");
	is_int(outbox_oldest_ms(ob), 1000, "oldest creation time");
	first_last = last;

	ok(outbox_reader_open(&r, path_in("o.db"), err, sizeof(err)) == 0,
	    "reader opens beside the writer");
	memset(&c, 0, sizeof(c));
	is_int(outbox_reader_fetch(r, 0, 4, collect_cb, &c), 4,
	    "fetch honours the limit");
	ok(c.ids[0] < c.ids[1] && c.ids[1] < c.ids[2] && c.ids[2] < c.ids[3],
	    "rows come in id order");
	is_str(c.bodies[0], "a0", "first body");
	is_str(c.bodies[3], "a3", "fourth body");
	memset(&c, 0, sizeof(c));
	is_int(outbox_reader_fetch(r, first_last - 2, 64, collect_cb, &c), 2,
	    "fetch after an id returns only later rows");
	is_str(c.bodies[1], "a9", "the last row");

	/* A rolled-back transaction leaves nothing behind. */
	outbox_begin(ob);
	outbox_insert(ob, "", 0, "x", 1, 1, &last);
	outbox_rollback(ob);
	is_int(outbox_rows(ob), 10, "rollback leaves the count alone");
	memset(&c, 0, sizeof(c));
	is_int(outbox_reader_fetch(r, first_last, 64, collect_cb, &c), 0,
	    "rolled-back row is not visible");

	is_int(outbox_delete_upto(ob, first_last - 5), OUTBOX_OK,
	    "delete a confirmed prefix");
	is_int(outbox_rows(ob), 5, "five rows left");
	is_int(outbox_bytes(ob), 5 * 15 + 5 * 2, "bytes adjusted");
	is_int(outbox_delete_upto(ob, first_last - 5), OUTBOX_OK,
	    "deleting the same prefix again is harmless");
	is_int(outbox_rows(ob), 5, "still five rows");
	outbox_reader_close(r);
	outbox_close(ob);

	ok(outbox_open(&ob, path_in("o.db"), 0, err, sizeof(err)) == 0,
	    "reopen an existing outbox");
	is_int(outbox_rows(ob), 5, "row count survives a restart");
	is_int(outbox_bytes(ob), 5 * 15 + 5 * 2, "byte count survives");
	is_str(outbox_instance(ob), inst, "instance id survives");
	is_int(outbox_delete_upto(ob, first_last), OUTBOX_OK, "delete all");
	is_int(outbox_rows(ob), 0, "empty");
	outbox_close(ob);
	ok(outbox_open(&ob, path_in("o.db"), 1, err, sizeof(err)) == 0,
	    "reopen the emptied outbox");
	is_int(insert_n(ob, 1, "b", &last), OUTBOX_OK, "insert after emptying");
	ok(last > first_last, "ids are never reused (%lld > %lld), so "
	    "generated message-ids stay unique", (long long)last,
	    (long long)first_last);
	outbox_close(ob);

	/* Files that are not our outbox are never touched. */
	write_file(path_in("garbage.db"), "this is not a database at all, "
	    "just some text that is long enough to be a header.............."
	    "................................................", 128);
	ok(outbox_open(&ob, path_in("garbage.db"), 1, err, sizeof(err)) == -1,
	    "a corrupt file is refused: %s", err);

	sqlite3_open(path_in("other.db"), &db);
	sqlite3_exec(db, "CREATE TABLE t(x); INSERT INTO t VALUES (1);", NULL,
	    NULL, NULL);
	sqlite3_close(db);
	ok(outbox_open(&ob, path_in("other.db"), 1, err, sizeof(err)) == -1 &&
	    strstr(err, "not a pubrelay outbox") != NULL,
	    "another application's database is refused: %s", err);

	ok(outbox_open(&ob, path_in("new.db"), 1, err, sizeof(err)) == 0,
	    "create an outbox to age");
	outbox_close(ob);
	sqlite3_open(path_in("new.db"), &db);
	sqlite3_exec(db, "PRAGMA user_version = 99", NULL, NULL, NULL);
	sqlite3_close(db);
	ok(outbox_open(&ob, path_in("new.db"), 1, err, sizeof(err)) == -1 &&
	    strstr(err, "newer") != NULL,
	    "a newer schema is refused: %s", err);

	write_file(path_in("empty.db"), "", 0);
	ok(outbox_open(&ob, path_in("empty.db"), 1, err, sizeof(err)) == 0,
	    "an empty file becomes a new outbox");
	if (ob)
		outbox_close(ob);

	ok(outbox_open(&ob, path_in("no/such/dir/o.db"), 1, err,
	    sizeof(err)) == -1, "a missing directory is an error: %s", err);
	mkdir(path_in("adir"), 0700);
	ok(outbox_open(&ob, path_in("adir"), 1, err, sizeof(err)) == -1 &&
	    strstr(err, "not a regular file") != NULL,
	    "a directory is refused: %s", err);

	test_dead();
	test_park_full_block();
	test_dead_limit();
	test_dead_step();
	test_delete_around();
	test_migration();
	test_migration_v2();
	test_idem();
	test_idem_unreadable();
	test_idem_commit_fails();
	test_fate();
	test_forgotten_trim();
	test_fold();
	test_reserve();
	test_checkpoint_reader();
	test_presize();
	test_syncs();
	test_reserve_visible();
	test_requeue();
	test_enospc();
	test_no_wal();
	test_error_kept();
	test_lock();

	if (getenv("PUBRELAY_KEEP_TMP") == NULL) {
		char	cmd[600];

		snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
		if (system(cmd) != 0)
			diag("could not remove %s", dir);
	}
	return done_testing();
}
