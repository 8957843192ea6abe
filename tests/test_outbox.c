/* Unit tests for outbox.c against real SQLite files in a temp dir. */
#include <sys/stat.h>

#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <sqlite3.h>

#include "outbox.h"
#include "tap.h"

static char	dir[256];

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

static void
write_file(const char *p, const char *data, size_t n)
{
	FILE	*f = fopen(p, "w");

	fwrite(data, 1, n, f);
	fclose(f);
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

	if (getenv("PUBRELAY_KEEP_TMP") == NULL) {
		char	cmd[600];

		snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
		if (system(cmd) != 0)
			diag("could not remove %s", dir);
	}
	return done_testing();
}
