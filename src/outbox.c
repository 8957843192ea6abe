/*
 * outbox.c: the SQLite outbox.  One writer connection (main thread), any
 * number of reader connections (the publisher thread has one).
 */
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/statvfs.h>

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <sqlite3.h>

#include "iovfs.h"
#include "keyset.h"
#include "outbox.h"
#include "protocol.h"
#include "util.h"

struct outbox {
	sqlite3		*db;
	int		 lockfd;
	char		 instance[OUTBOX_INSTANCE_LEN + 1];
	uint64_t	 rows, bytes;		/* committed totals */
	int64_t		 drows, dbytes;		/* deltas of the open transaction */
	int64_t		 dins;			/* rows outbox_insert()ed in it */
	int64_t		 next_id;		/* the next row's id */
	int64_t		 reserved;		/* ids up to it may be out */
	int64_t		 reserving;		/* the open transaction's */
	int64_t		 reserve_ids;		/* OUTBOX_RESERVE_IDS */
	int64_t		 wal_limit;		/* journal_size_limit */
	uint64_t	 unfolded;		/* rows inserted since the fold */
	uint64_t	 dead_rows, dead_bytes;	/* the dead-letter table's */
	int64_t		 ddead_rows, ddead_bytes;
	uint64_t	 dead_max_bytes;	/* 0: no limit */
	uint64_t	 idem_keys;		/* committed keys */
	int64_t		 confirmed;		/* meta 'confirmed' */
	/*
	 * The purged dead letters STATUS remembers (forgotten): at most
	 * forgotten_max, the older ones trimmed up to meta 'forgotten_upto',
	 * below which a gone id is "unknown", never "confirmed".
	 */
	int64_t		 forgotten_upto, tx_forgotten_upto;
	uint64_t	 forgotten_max;
	int64_t		 forgotten_rows, tx_forgotten_rows;
	/*
	 * A sync (fsync, fdatasync) failed: the kernel may have dropped what
	 * it could not write and report success next time, so nothing more
	 * is written (OUTBOX_EIO) and the owner is told once.
	 */
	int		 sync_failed;
	char		 sync_cut[200];		/* outbox_cut_log()'s outcome */
	void		(*sync_failed_cb)(void *);
	void		*sync_failed_arg;
	int64_t		 didem;			/* the open transaction's */
	struct keyset	*keys;			/* every key's fingerprint */
	/*
	 * Not every key's fingerprint: start-up could not read them all.
	 * Every key is then looked up, and the fingerprints of the keys
	 * indexed are added until all rows are (keys_problem says why).
	 */
	int		 keys_partial;
	char		 keys_problem[256];
	uint64_t	*tx_fps;		/* those the open transaction added */
	size_t		 tx_nfps, tx_fpcap;
	int64_t		 indexed;		/* meta 'indexed' */
	int64_t		 tx_indexed;		/* the open transaction's */
	int64_t		 keyed_last;		/* newest row with a key */
	int		 in_tx;
	/* the failure's message, kept from the statements that follow it */
	char		 err[256];
	int		 sync_full;		/* [outbox] sync = full */
	int		 sync_lowered;		/* NORMAL for a delete, not back */
	int		 sync_raised;		/* FULL for a reservation */
	int		 migrated_from;		/* schema version, 0: none */
	sqlite3_stmt	*st_begin, *st_commit, *st_rollback, *st_insert;
	sqlite3_stmt	*st_counters, *st_range, *st_delete, *st_oldest;
	sqlite3_stmt	*st_dead_counters, *st_reserve;
	sqlite3_stmt	*st_idem_find, *st_idem_put, *st_idem_drop;
	sqlite3_stmt	*st_idem_old, *st_index_rows, *st_indexed;
	sqlite3_stmt	*st_idem_expired, *st_confirmed;
};

struct outbox_reader {
	sqlite3		*db;
	sqlite3_stmt	*st_fetch;
};

/*
 * Version 3: pubrelayd assigns the ids itself (ob->next_id), so a commit of
 * new rows writes the outbox pages and nothing else.  Ids are never reused:
 * meta 'mark' is the highest id given out when the totals were last written
 * ("the fold"), which every transaction that removes rows does; start-up
 * adds the rows above the mark to the totals (outbox_load_meta()).  Up to
 * version 2 the table was AUTOINCREMENT, and every commit also wrote the meta
 * page and sqlite_sequence: three pages to the write-ahead log for one row.
 *
 * With sync = normal a commit is not flushed, and a power cut can take back
 * rows whose ids were already published (as "<instance>-<id>"): given out
 * again, new messages would carry message-ids consumers have seen.  So ids
 * are reserved: meta 'reserved' (optional, so older versions ignore it) is
 * the highest id that may have been given out.  When fewer than
 * OUTBOX_RESERVE_LOW reserved ids are left, the next transaction writes a
 * new reservation into itself and commits with synchronous = FULL
 * (outbox_begin()): SQLite flushes the log before it publishes the commit
 * to readers, so no row is visible to the publisher, and no id published,
 * before the reservation that covers it is on disk, and a failed flush is
 * a failed commit whose rows nobody sees.  Start-up goes on above it; a
 * clean stop brings it back to the last id given out.
 */
#define OUTBOX_TABLE(name)						\
	"CREATE TABLE " name " ("					\
	"  id INTEGER PRIMARY KEY,"					\
	"  created INTEGER NOT NULL,"					\
	"  size INTEGER NOT NULL,"					\
	"  props BLOB NOT NULL,"					\
	"  body BLOB NOT NULL,"					\
	"  attempts INTEGER NOT NULL DEFAULT 0);"

static const char *outbox_schema =
	"CREATE TABLE meta ("
	"  key TEXT PRIMARY KEY NOT NULL,"
	"  value NOT NULL);"
	OUTBOX_TABLE("outbox");

/*
 * Version 4: outbox.attempts, the times a row was refused before, set when
 * the main thread retries a dead letter on its own (ingress.c): a park adds
 * its attempts to them, so max_attempts holds across those retries.
 */

/*
 * Version 5: idempotency keys, the message-id the first OK named, and when
 * (ms): looked up by key, pruned by age.  Without rowid, the key is the
 * table's own b-tree: one insert writes it and the index, nothing else.
 * mid is the client's message-id (text), or for a generated one the row id
 * alone (an integer: "<instance>-" is the file's), a smaller record; id is
 * the row either way, for a repeat's receipt (confirm:).
 */
static const char *outbox_schema_idem =
	"CREATE TABLE idem ("
	"  key BLOB PRIMARY KEY,"
	"  mid NOT NULL,"
	"  created INTEGER NOT NULL,"
	"  id INTEGER NOT NULL DEFAULT 0) WITHOUT ROWID;"
	"CREATE INDEX idem_created ON idem (created);"
/*
 * And what STATUS needs to answer for a message-id after a restart: origin,
 * the id the OK named, on a row moved back from the dead letters under a
 * new id (NULL: its own); the purged dead letters (forgotten: "unknown",
 * never "confirmed"); meta 'confirmed', the confirmed prefix as the last
 * delete of confirmed rows left it.  Last in a migration: after the rebuild
 * of version 3.
 */
	"ALTER TABLE outbox ADD COLUMN origin INTEGER;"
	"ALTER TABLE dead ADD COLUMN origin INTEGER;"
	"CREATE INDEX outbox_origin ON outbox (origin) WHERE origin NOT NULL;"
	"CREATE INDEX dead_origin ON dead (origin) WHERE origin NOT NULL;"
	"CREATE TABLE forgotten (id INTEGER PRIMARY KEY);";

/*
 * Version 6: a new row's key is not written to the key table with it.  The
 * row's own property block holds the key (and the client's message-id), so
 * the row, committed, is the key's durable record; the key table gets it
 * when the row leaves the outbox (a delete, a park: outbox_index(), in
 * that transaction), at the broker's pace rather than the producers', or
 * when a lookup needs it.  meta 'indexed': the keys of every row up to it
 * are in the key table.  In between, the fingerprints in memory (keyset.h)
 * tell a new key from a possible repeat, and only a possible repeat costs
 * a lookup.  An outbox of version 5 had every key in the table already.
 */
static const char *outbox_schema_v6 =
	"INSERT OR REPLACE INTO meta SELECT 'indexed', "
	"  coalesce(max(id), 0) FROM outbox;";

/*
 * Version 2.  A dead letter keeps the outbox id it had (for the operator and
 * its message-id); a replay gives it a new one at the tail.
 */
static const char *outbox_schema_dead =
	"CREATE TABLE dead ("
	"  id INTEGER PRIMARY KEY,"
	"  created INTEGER NOT NULL,"
	"  parked INTEGER NOT NULL,"
	"  attempts INTEGER NOT NULL,"
	"  reason TEXT NOT NULL,"
	"  size INTEGER NOT NULL,"
	"  props BLOB NOT NULL,"
	"  body BLOB NOT NULL);";

#define OUTBOX_BUSY_MS			5000
#define OUTBOX_WAL_LIMIT		(8 * 1024 * 1024)	/* unknown size */
#define OUTBOX_CHECKPOINT_BUSY_MS	50
/* The lock taken at open: tries 5 ms apart before it counts as held. */
#define OUTBOX_LOCK_TRIES		20
#define OUTBOX_LOCK_WAIT_US		5000

static int	outbox_step(sqlite3_stmt *);
static int64_t	outbox_wal_target(struct outbox *);
static int	outbox_begin_tx(struct outbox *);
static int	outbox_fail(struct outbox *, int);
static void	outbox_keep_error(struct outbox *);
static int	outbox_write_reserved(struct outbox *, int64_t);
static void	outbox_commit_done(struct outbox *, int);
static int	outbox_write_counters(struct outbox *);
static void	outbox_load_keys(struct outbox *);
static int	outbox_index(struct outbox *, int64_t);
static int64_t	outbox_indexed_now(const struct outbox *);

static int
outbox_prepare(sqlite3 *db, const char *sql, sqlite3_stmt **st)
{
	return sqlite3_prepare_v3(db, sql, -1, SQLITE_PREPARE_PERSISTENT, st,
	    NULL);
}

static int
outbox_exec(sqlite3 *db, const char *sql)
{
	return sqlite3_exec(db, sql, NULL, NULL, NULL);
}

/*
 * Integer result of a one-value query, with ?1 = arg when sql has it, or -1
 * with rc in *rcp (SQLITE_DONE: no row).
 */
static int64_t
outbox_query_arg(sqlite3 *db, const char *sql, int64_t arg, int *rcp)
{
	sqlite3_stmt	*st;
	int64_t		 v = -1;
	int		 rc;

	rc = sqlite3_prepare_v2(db, sql, -1, &st, NULL);
	if (rc == SQLITE_OK) {
		if (sqlite3_bind_parameter_count(st) > 0)
			sqlite3_bind_int64(st, 1, arg);
		rc = sqlite3_step(st);
		if (rc == SQLITE_ROW) {
			v = sqlite3_column_int64(st, 0);
			rc = SQLITE_OK;
		}
		sqlite3_finalize(st);
	}
	*rcp = rc;
	return v;
}

static int64_t
outbox_query_int(sqlite3 *db, const char *sql, int *rcp)
{
	return outbox_query_arg(db, sql, 0, rcp);
}

static void
outbox_random_hex(char *out, size_t n)
{
	unsigned char	 raw[OUTBOX_INSTANCE_LEN / 2];
	size_t		 i;

	sqlite3_randomness(sizeof(raw), raw);
	if (n < 2 * sizeof(raw) + 1)
		abort();
	for (i = 0; i < sizeof(raw); i++)
		snprintf(out + 2 * i, 3, "%02x", raw[i]);
}

static int
outbox_create_schema(struct outbox *ob, const char *path, char *err,
    size_t errlen)
{
	char	 sql[2048];
	int	 rc;

	outbox_random_hex(ob->instance, sizeof(ob->instance));
	snprintf(sql, sizeof(sql),
	    "BEGIN;%s%s%s"
	    "INSERT INTO meta VALUES ('instance', '%s'), ('rows', 0), "
	    "('bytes', 0), ('dead_rows', 0), ('dead_bytes', 0), ('mark', 0), "
	    "('indexed', 0);"
	    "PRAGMA application_id = %d; PRAGMA user_version = %d; COMMIT;",
	    outbox_schema, outbox_schema_dead, outbox_schema_idem, ob->instance,
	    OUTBOX_APPLICATION_ID, OUTBOX_SCHEMA_VERSION);
	if (strlen(sql) + 1 >= sizeof(sql))
		abort();
	rc = outbox_exec(ob->db, sql);
	if (rc != SQLITE_OK) {
		snprintf(err, errlen, "%s: cannot create the outbox schema: %s",
		    path, sqlite3_errmsg(ob->db));
		outbox_exec(ob->db, "ROLLBACK");
		return -1;
	}
	return 0;
}

/*
 * Bring an older outbox to this version in one transaction: a crash leaves
 * it either untouched or migrated.  2 added the dead-letter table; 3 rebuilds
 * the outbox table without AUTOINCREMENT (a copy of the rows: SQLite cannot
 * drop it in place) and keeps the highest id ever given out as meta 'mark';
 * 4 adds outbox.attempts (the rebuild of 3 has it already); 5 adds the
 * idempotency keys and what STATUS needs; 6 meta 'indexed'.  The caller
 * logs it (outbox_migrated_from).
 */
static int
outbox_migrate(struct outbox *ob, const char *path, int64_t from, char *err,
    size_t errlen)
{
	char	 sql[2048];
	int	 rc;

	if (from < 1 || from >= OUTBOX_SCHEMA_VERSION)
		abort();
	if (from >= 3)
		snprintf(sql, sizeof(sql), "BEGIN IMMEDIATE;%s%s%s"
		    "PRAGMA user_version = %d; COMMIT;",
		    from < 4 ? "ALTER TABLE outbox ADD COLUMN attempts INTEGER "
		    "NOT NULL DEFAULT 0;" : "",
		    from < 5 ? outbox_schema_idem : "", outbox_schema_v6,
		    OUTBOX_SCHEMA_VERSION);
	else
		snprintf(sql, sizeof(sql),
		    "BEGIN IMMEDIATE;%s%s"
		    "INSERT INTO meta SELECT 'mark', max("
		    "  coalesce((SELECT seq FROM sqlite_sequence WHERE name = "
		    "  'outbox'), 0), coalesce((SELECT max(id) FROM outbox), 0),"
		    "  coalesce((SELECT max(id) FROM dead), 0));"
		    OUTBOX_TABLE("outbox_v3")
		    "INSERT INTO outbox_v3 (id, created, size, props, body) "
		    "  SELECT id, created, size, props, body FROM outbox "
		    "  ORDER BY id;"
		    "DROP TABLE outbox;"
		    "ALTER TABLE outbox_v3 RENAME TO outbox;%s%s"
		    "PRAGMA user_version = %d; COMMIT;",
		    from < 2 ? outbox_schema_dead : "",
		    from < 2 ? "INSERT INTO meta VALUES ('dead_rows', 0), "
		    "('dead_bytes', 0);" : "", outbox_schema_idem,
		    outbox_schema_v6, OUTBOX_SCHEMA_VERSION);
	if (strlen(sql) + 1 >= sizeof(sql))
		abort();
	rc = outbox_exec(ob->db, sql);
	if (rc != SQLITE_OK) {
		snprintf(err, errlen, "%s: cannot migrate the outbox from "
		    "schema version %" PRId64 " to %d: %s", path, from,
		    OUTBOX_SCHEMA_VERSION, sqlite3_errmsg(ob->db));
		if (!sqlite3_get_autocommit(ob->db))
			outbox_exec(ob->db, "ROLLBACK");
		return -1;
	}
	ob->migrated_from = (int)from;
	return 0;
}

/*
 * The totals as of the last fold, plus the rows committed since (ids above
 * the mark: fewer than OUTBOX_FOLD_ROWS, so start-up never scans the table),
 * and the next id: above every id given out, whether its row is still here,
 * deleted or parked.
 */
static int
outbox_load_meta(struct outbox *ob, const char *path, char *err, size_t errlen)
{
	sqlite3_stmt	*st;
	int64_t		 mark = -1, top;
	int		 rc, seen = 0;

	rc = sqlite3_prepare_v2(ob->db,
	    "SELECT key, value FROM meta WHERE key IN ('instance', 'rows', "
	    "'bytes', 'dead_rows', 'dead_bytes', 'mark', 'reserved', "
	    "'indexed', 'forgotten_upto')", -1, &st,
	    NULL);
	if (rc != SQLITE_OK)
		goto bad;
	while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
		const char *k = (const char *)sqlite3_column_text(st, 0);

		if (strcmp(k, "instance") == 0) {
			const char *v = (const char *)sqlite3_column_text(st, 1);

			if (v == NULL || strlen(v) != OUTBOX_INSTANCE_LEN)
				break;
			memcpy(ob->instance, v, OUTBOX_INSTANCE_LEN + 1);
		} else if (strcmp(k, "rows") == 0)
			ob->rows = (uint64_t)sqlite3_column_int64(st, 1);
		else if (strcmp(k, "bytes") == 0)
			ob->bytes = (uint64_t)sqlite3_column_int64(st, 1);
		else if (strcmp(k, "dead_rows") == 0)
			ob->dead_rows = (uint64_t)sqlite3_column_int64(st, 1);
		else if (strcmp(k, "dead_bytes") == 0)
			ob->dead_bytes = (uint64_t)sqlite3_column_int64(st, 1);
		else if (strcmp(k, "reserved") == 0) {
			ob->reserved = sqlite3_column_int64(st, 1);
			continue;	/* optional */
		} else if (strcmp(k, "indexed") == 0) {
			ob->indexed = sqlite3_column_int64(st, 1);
			continue;
		} else if (strcmp(k, "forgotten_upto") == 0) {
			ob->forgotten_upto = sqlite3_column_int64(st, 1);
			continue;	/* optional: none trimmed yet */
		} else
			mark = sqlite3_column_int64(st, 1);
		seen++;
	}
	sqlite3_finalize(st);
	if (rc != SQLITE_DONE || seen != 6 || mark < 0)
		goto bad;

	rc = sqlite3_prepare_v2(ob->db, "SELECT count(*), coalesce(sum(size), "
	    "0), max(?1, coalesce((SELECT max(id) FROM outbox), 0), "
	    "coalesce((SELECT max(id) FROM dead), 0)) FROM outbox WHERE id > ?1",
	    -1, &st, NULL);
	if (rc != SQLITE_OK)
		goto bad;
	sqlite3_bind_int64(st, 1, mark);
	if ((rc = sqlite3_step(st)) == SQLITE_ROW) {
		ob->unfolded = (uint64_t)sqlite3_column_int64(st, 0);
		ob->rows += ob->unfolded;
		ob->bytes += (uint64_t)sqlite3_column_int64(st, 1);
		top = sqlite3_column_int64(st, 2);
		ob->next_id = (top > ob->reserved ? top : ob->reserved) + 1;
	}
	sqlite3_finalize(st);
	if (rc == SQLITE_ROW)
		return 0;
 bad:
	snprintf(err, errlen, "%s: outbox metadata missing or unreadable: %s",
	    path, sqlite3_errmsg(ob->db));
	return -1;
}

/*
 * Write-ahead logging, or no outbox.  SQLite keeps the journal mode it has
 * when WAL cannot work (a file system without shared memory for the WAL
 * index, as some network file systems): with a rollback journal every
 * commit would wait for the publisher's reads and the other way round.
 */
static int
outbox_journal_wal(struct outbox *ob, const char *path, char *err,
    size_t errlen)
{
	sqlite3_stmt	*st;
	const char	*mode;
	int		 rc, wal = 0;
	char		 got[32] = "?";

	rc = sqlite3_prepare_v2(ob->db, "PRAGMA journal_mode = WAL", -1, &st,
	    NULL);
	if (rc == SQLITE_OK && (rc = sqlite3_step(st)) == SQLITE_ROW) {
		mode = (const char *)sqlite3_column_text(st, 0);
		snprintf(got, sizeof(got), "%s", mode ? mode : "?");
		wal = strcmp(got, "wal") == 0;
		rc = SQLITE_OK;
	}
	sqlite3_finalize(st);
	if (rc != SQLITE_OK) {
		snprintf(err, errlen, "%s: cannot set up the outbox: %s", path,
		    sqlite3_errmsg(ob->db));
		return -1;
	}
	if (!wal) {
		snprintf(err, errlen, "%s: SQLite cannot use write-ahead "
		    "logging here (journal mode stays \"%s\"): the outbox "
		    "needs a local file system with shared memory (mmap) "
		    "support", path, got);
		return -1;
	}
	return 0;
}

/* PATH.lock, the file whose flock() says a daemon holds the outbox. */
static char *
outbox_lockpath(const char *path)
{
	char	*lockpath = xmalloc(strlen(path) + sizeof(".lock"));

	sprintf(lockpath, "%s.lock", path);
	return lockpath;
}

int
outbox_open(struct outbox **obp, const char *path, int sync_full, char *err,
    size_t errlen)
{
	struct outbox	*ob;
	struct stat	 sb;
	char		*lockpath, pragma[64];
	int		 rc, fresh, flags, tries;
	int64_t		 v = OUTBOX_SCHEMA_VERSION;

	*obp = NULL;
	if (stat(path, &sb) == 0) {
		if (!S_ISREG(sb.st_mode)) {
			snprintf(err, errlen, "%s: not a regular file", path);
			return -1;
		}
		fresh = sb.st_size == 0;
	} else if (errno == ENOENT) {
		/* A new outbox, but never a new directory: say which is missing. */
		char	*dir = xstrdup(path), *slash = strrchr(dir, '/');

		if (slash != NULL) {
			*(slash == dir ? slash + 1 : slash) = '\0';
			if (stat(dir, &sb) == -1) {
				snprintf(err, errlen, "%s: directory %s: %s",
				    path, dir, strerror(errno));
				free(dir);
				return -1;
			}
		}
		free(dir);
		fresh = 1;
	} else {
		snprintf(err, errlen, "%s: %s", path, strerror(errno));
		return -1;
	}

	ob = xcalloc(1, sizeof(*ob));
	ob->lockfd = -1;
	ob->reserve_ids = OUTBOX_RESERVE_IDS;
	ob->forgotten_max = OUTBOX_FORGOTTEN_MAX;

	/* Two daemons on one outbox would publish every message twice. */
	lockpath = outbox_lockpath(path);
	ob->lockfd = open(lockpath, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
	if (ob->lockfd == -1) {
		snprintf(err, errlen, "%s: cannot open its lock file %s: %s",
		    path, lockpath, strerror(errno));
		free(lockpath);
		goto fail;
	}
	/*
	 * A moment's grace: another daemon's outbox_unattended() holds a
	 * shared lock for an instant while it looks.
	 */
	for (tries = 0; flock(ob->lockfd, LOCK_EX | LOCK_NB) == -1; tries++) {
		if (errno != EWOULDBLOCK || tries == OUTBOX_LOCK_TRIES) {
			snprintf(err, errlen, "%s: outbox in use by another "
			    "process (lock %s held)", path, lockpath);
			free(lockpath);
			goto fail;
		}
		usleep(OUTBOX_LOCK_WAIT_US);
	}
	free(lockpath);

	flags = SQLITE_OPEN_READWRITE | SQLITE_OPEN_NOMUTEX;
	if (fresh)
		flags |= SQLITE_OPEN_CREATE;
	rc = sqlite3_open_v2(path, &ob->db, flags, iovfs_name());
	if (rc != SQLITE_OK) {
		snprintf(err, errlen, "%s: cannot open: %s", path,
		    ob->db ? sqlite3_errmsg(ob->db) : sqlite3_errstr(rc));
		goto fail;
	}
	sqlite3_extended_result_codes(ob->db, 1);
	if (sqlite3_db_readonly(ob->db, "main") == 1) {
		snprintf(err, errlen, "%s: outbox is read-only", path);
		goto fail;
	}
	sqlite3_busy_timeout(ob->db, OUTBOX_BUSY_MS);

	if (!fresh) {
		v = outbox_query_int(ob->db, "PRAGMA application_id", &rc);
		if (rc != SQLITE_OK) {
			snprintf(err, errlen, "%s: cannot read outbox: %s", path,
			    sqlite3_errmsg(ob->db));
			goto fail;
		}
		if (v != OUTBOX_APPLICATION_ID) {
			snprintf(err, errlen, "%s: not a pubrelay outbox "
			    "(application_id %" PRId64 "); refusing to use it",
			    path, v);
			goto fail;
		}
		v = outbox_query_int(ob->db, "PRAGMA user_version", &rc);
		if (rc != SQLITE_OK || v < 1) {
			snprintf(err, errlen, "%s: unreadable outbox schema "
			    "version", path);
			goto fail;
		}
		if (v > OUTBOX_SCHEMA_VERSION) {
			snprintf(err, errlen, "%s: outbox schema version %" PRId64
			    " is newer than this pubrelayd supports (%d); "
			    "refusing to touch it", path, v, OUTBOX_SCHEMA_VERSION);
			goto fail;
		}
		/* Older schemas are migrated below, once the journal is set. */
	}

	ob->sync_full = sync_full;
	if (outbox_journal_wal(ob, path, err, errlen) == -1)
		goto fail;
	/*
	 * Twice its working size: a log that grew past it (a read held open,
	 * a burst the checkpoint could not follow) is cut back at its next
	 * reset, and only what is beyond counts against max_bytes.
	 */
	ob->wal_limit = 2 * outbox_wal_target(ob);
	if (ob->wal_limit == 0)
		ob->wal_limit = OUTBOX_WAL_LIMIT;
	snprintf(pragma, sizeof(pragma), "PRAGMA journal_size_limit = %" PRId64,
	    ob->wal_limit);
	if (outbox_exec(ob->db, sync_full ? "PRAGMA synchronous = FULL" :
	    "PRAGMA synchronous = NORMAL") != SQLITE_OK ||
	    outbox_exec(ob->db, pragma) != SQLITE_OK) {
		snprintf(err, errlen, "%s: cannot set up the outbox: %s", path,
		    sqlite3_errmsg(ob->db));
		goto fail;
	}
	if (fresh && outbox_create_schema(ob, path, err, errlen) == -1)
		goto fail;
	if (!fresh && v < OUTBOX_SCHEMA_VERSION &&
	    outbox_migrate(ob, path, v, err, errlen) == -1)
		goto fail;
	if (outbox_load_meta(ob, path, err, errlen) == -1)
		goto fail;
	/*
	 * About forgotten_max rows at most (outbox_forgotten_trim()).  Not
	 * worth failing a start for: unreadable, they are counted from 0.
	 */
	ob->forgotten_rows = outbox_query_int(ob->db, "SELECT count(*) FROM "
	    "forgotten", &rc);
	if (rc != SQLITE_OK || ob->forgotten_rows < 0)
		ob->forgotten_rows = 0;

	if (outbox_prepare(ob->db, "BEGIN IMMEDIATE", &ob->st_begin) ||
	    outbox_prepare(ob->db, "COMMIT", &ob->st_commit) ||
	    outbox_prepare(ob->db, "ROLLBACK", &ob->st_rollback) ||
	    outbox_prepare(ob->db, "INSERT INTO outbox (id, created, size, props, "
	    "body) VALUES (?1, ?2, ?3, ?4, ?5)", &ob->st_insert) ||
	    outbox_prepare(ob->db, "UPDATE meta SET value = CASE key "
	    "WHEN 'rows' THEN ?1 WHEN 'bytes' THEN ?2 ELSE ?3 END "
	    "WHERE key IN ('rows', 'bytes', 'mark')", &ob->st_counters) ||
	    outbox_prepare(ob->db, "UPDATE meta SET value = CASE key "
	    "WHEN 'dead_rows' THEN ?1 ELSE ?2 END "
	    "WHERE key IN ('dead_rows', 'dead_bytes')", &ob->st_dead_counters) ||
	    outbox_prepare(ob->db, "SELECT count(*), coalesce(sum(size), 0) "
	    "FROM outbox WHERE id <= ?1", &ob->st_range) ||
	    outbox_prepare(ob->db, "DELETE FROM outbox WHERE id <= ?1",
	    &ob->st_delete) ||
	    outbox_prepare(ob->db, "SELECT created FROM outbox ORDER BY id "
	    "LIMIT 1", &ob->st_oldest) ||
	    outbox_prepare(ob->db, "INSERT OR REPLACE INTO meta (key, value) "
	    "VALUES ('reserved', ?1)", &ob->st_reserve) ||
	    outbox_prepare(ob->db, "SELECT mid, created, id FROM idem WHERE "
	    "key = ?1", &ob->st_idem_find) ||
	    outbox_prepare(ob->db, "INSERT OR IGNORE INTO idem (key, mid, "
	    "created, id) VALUES (?1, ?2, ?3, ?4)", &ob->st_idem_put) ||
	    outbox_prepare(ob->db, "DELETE FROM idem WHERE key = ?1",
	    &ob->st_idem_drop) ||
	    outbox_prepare(ob->db, "DELETE FROM idem WHERE key IN (SELECT key "
	    "FROM idem ORDER BY created LIMIT ?1) RETURNING key",
	    &ob->st_idem_old) ||
	    outbox_prepare(ob->db, "DELETE FROM idem WHERE key IN (SELECT key "
	    "FROM idem WHERE created < ?1 ORDER BY created LIMIT ?2) "
	    "RETURNING key", &ob->st_idem_expired) ||
	    outbox_prepare(ob->db, "SELECT id, created, props FROM outbox "
	    "WHERE id > ?1 AND id <= ?2 AND origin IS NULL ORDER BY id",
	    &ob->st_index_rows) ||
	    outbox_prepare(ob->db, "INSERT OR REPLACE INTO meta (key, value) "
	    "VALUES ('indexed', ?1)", &ob->st_indexed)) {
		snprintf(err, errlen, "%s: cannot prepare statements: %s "
		    "(corrupt outbox?)", path, sqlite3_errmsg(ob->db));
		goto fail;
	}
	/*
	 * Unreadable keys (a damaged page) are no reason not to start: the
	 * messages without keys go on, and a keyed one is looked up in the
	 * file, refused (STORE) while that fails.
	 */
	outbox_load_keys(ob);
	v = outbox_query_int(ob->db, "SELECT coalesce((SELECT value FROM meta "
	    "WHERE key = 'confirmed'), 0)", &rc);
	ob->confirmed = rc == SQLITE_OK && v > 0 ? v : 0;
	if (outbox_prepare(ob->db, "INSERT OR REPLACE INTO meta (key, value) "
	    "VALUES ('confirmed', ?1)", &ob->st_confirmed)) {
		snprintf(err, errlen, "%s: cannot prepare statements: %s "
		    "(corrupt outbox?)", path, sqlite3_errmsg(ob->db));
		goto fail;
	}
	*obp = ob;
	return 0;

 fail:
	outbox_close(ob);
	return -1;
}

int
outbox_unattended(const char *path)
{
	struct stat	 st;
	char		*lockpath;
	int		 e, fd, held;

	if (stat(path, &st) == -1 || !S_ISREG(st.st_mode))
		return 0;
	lockpath = outbox_lockpath(path);
	/* Read-only: under ProtectSystem=strict the directory may be too. */
	fd = open(lockpath, O_RDONLY | O_CLOEXEC | O_NONBLOCK | O_NOCTTY);
	e = errno;
	free(lockpath);
	if (fd == -1)
		return e == ENOENT;
	held = flock(fd, LOCK_SH | LOCK_NB) == -1 && errno == EWOULDBLOCK;
	close(fd);
	return !held;
}

void
outbox_close(struct outbox *ob)
{
	int	idx;

	if (ob == NULL)
		return;
	/*
	 * Spare the next start-up even its short count of the newest rows,
	 * its jump over the reserved ids (every id given out is known), and,
	 * when no key waits in a row, its read of the rows above 'indexed'.
	 */
	idx = ob->st_indexed != NULL && ob->keys_partial == 0 &&
	    ob->keyed_last <= ob->indexed && ob->indexed < ob->next_id - 1;
	if ((ob->unfolded > 0 || ob->reserved > ob->next_id - 1 || idx) &&
	    !ob->in_tx && ob->st_counters != NULL &&
	    outbox_begin_tx(ob) == OUTBOX_OK) {
		if (outbox_write_counters(ob) != SQLITE_DONE ||
		    (idx && outbox_index(ob, ob->next_id - 1) != SQLITE_DONE) ||
		    (ob->reserved > ob->next_id - 1 &&
		    outbox_write_reserved(ob, ob->next_id - 1) != SQLITE_DONE) ||
		    outbox_step(ob->st_commit) != SQLITE_DONE)
			outbox_rollback(ob);
	}
	sqlite3_finalize(ob->st_begin);
	sqlite3_finalize(ob->st_commit);
	sqlite3_finalize(ob->st_rollback);
	sqlite3_finalize(ob->st_insert);
	sqlite3_finalize(ob->st_counters);
	sqlite3_finalize(ob->st_range);
	sqlite3_finalize(ob->st_delete);
	sqlite3_finalize(ob->st_oldest);
	sqlite3_finalize(ob->st_dead_counters);
	sqlite3_finalize(ob->st_reserve);
	sqlite3_finalize(ob->st_confirmed);
	sqlite3_finalize(ob->st_idem_find);
	sqlite3_finalize(ob->st_idem_put);
	sqlite3_finalize(ob->st_idem_drop);
	sqlite3_finalize(ob->st_idem_old);
	sqlite3_finalize(ob->st_idem_expired);
	sqlite3_finalize(ob->st_index_rows);
	sqlite3_finalize(ob->st_indexed);
	if (ob->db != NULL)
		sqlite3_close(ob->db);
	if (ob->lockfd != -1)
		close(ob->lockfd);
	keyset_free(ob->keys);
	free(ob->tx_fps);
	free(ob);
}

const char *
outbox_instance(const struct outbox *ob)
{
	return ob->instance;
}

int
outbox_migrated_from(const struct outbox *ob)
{
	return ob->migrated_from;
}

/*
 * What a failed statement means for the client.  SQLite reports some ENOSPC
 * failures (a flush, a truncate) as I/O errors; the errno kept when the
 * call failed tells (iovfs.c), not errno now: the rollback and unlocking
 * after it made system calls of their own.
 */
static int
outbox_status(int rc)
{
	switch (rc & 0xff) {
	case SQLITE_OK:
	case SQLITE_DONE:
	case SQLITE_ROW:
		return OUTBOX_OK;
	case SQLITE_FULL:
		return OUTBOX_EFULL;
	case SQLITE_IOERR:
		/*
		 * A failed sync is not "full" whatever its errno (ENOSPC from
		 * thin provisioning too): what it covered may be lost, the
		 * owner restarts (outbox_fail()).
		 */
		if (rc == SQLITE_IOERR_FSYNC || rc == SQLITE_IOERR_DIR_FSYNC) {
			(void)iovfs_errno_take();
			return OUTBOX_EIO;
		}
		return iovfs_errno_take() == ENOSPC ? OUTBOX_EFULL : OUTBOX_EIO;
	default:
		return OUTBOX_EIO;
	}
}

/* Keep the connection's error message, if it holds one, in ob->err. */
static void
outbox_keep_error(struct outbox *ob)
{
	int	ec = sqlite3_errcode(ob->db);

	if (ec != SQLITE_OK && ec != SQLITE_ROW && ec != SQLITE_DONE)
		snprintf(ob->err, sizeof(ob->err), "%s",
		    sqlite3_errmsg(ob->db));
}

/*
 * The wal-index header (the first 48 bytes of the shared memory, twice),
 * as SQLite's file format documents it (walformat.html, "the WAL-index
 * header"): in native byte order, written by SQLite only when a commit
 * has reached the log, synced when the commit asked for it.
 */
#define WALIDX_HDR_SIZE		48
#define WALIDX_REGION		32768	/* the size of a shared-memory region */
#define WALIDX_VERSION		3007000
#define WAL_HDR_SIZE		32
#define WAL_FRAME_HDR_SIZE	24

/*
 * A commit whose sync failed left its frames, its commit frame included,
 * in the write-ahead log: SQLite took back only its own view of them (the
 * wal-index, which they never reached).  The next process to open the
 * outbox rebuilds that index from the log file and would find them valid,
 * bringing back rows whose clients were told STORE and send them again:
 * the same message twice, under two message-ids.  So the log is cut where
 * the last good commit ends (mxFrame in the index), at once, before
 * anything else can happen to this process.  Frames past that are of the
 * failed transaction only: every earlier commit reached the index.
 * ob->sync_cut says what was done, for the owner's log.
 */
static void
outbox_cut_log(struct outbox *ob)
{
	sqlite3_file	*db = NULL, *wal = NULL;
	volatile void	*shm = NULL;
	unsigned char	 hdr[2][WALIDX_HDR_SIZE];
	uint32_t	 version, mxframe;
	uint16_t	 szpage;
	sqlite3_int64	 size, end;
	int64_t		 page;
	const char	*why;

	if (sqlite3_file_control(ob->db, "main", SQLITE_FCNTL_FILE_POINTER,
	    &db) != SQLITE_OK || db == NULL || db->pMethods == NULL ||
	    db->pMethods->iVersion < 2 || db->pMethods->xShmMap == NULL ||
	    db->pMethods->xShmMap(db, 0, WALIDX_REGION, 0, &shm) !=
	    SQLITE_OK || shm == NULL) {
		why = "no write-ahead log index";
		goto fail;
	}
	memcpy(hdr, (const void *)shm, sizeof(hdr));
	memcpy(&version, hdr[0], 4);
	memcpy(&szpage, hdr[0] + 14, 2);
	memcpy(&mxframe, hdr[0] + 16, 4);
	if (memcmp(hdr[0], hdr[1], WALIDX_HDR_SIZE) != 0 ||
	    version != WALIDX_VERSION || hdr[0][12] != 1) {
		why = "the write-ahead log index is not in a settled state";
		goto fail;
	}
	/* 1 for 64 KiB, which does not fit. */
	page = (szpage & 0xfe00) + ((int64_t)(szpage & 1) << 16);
	if (page < 512) {
		why = "the write-ahead log index names no page size";
		goto fail;
	}
	if (sqlite3_file_control(ob->db, "main", SQLITE_FCNTL_JOURNAL_POINTER,
	    &wal) != SQLITE_OK || wal == NULL || wal->pMethods == NULL ||
	    wal->pMethods->xFileSize(wal, &size) != SQLITE_OK) {
		why = "no write-ahead log";
		goto fail;
	}
	end = WAL_HDR_SIZE + (sqlite3_int64)mxframe *
	    (page + WAL_FRAME_HDR_SIZE);
	if (size > end && wal->pMethods->xTruncate(wal, end) != SQLITE_OK) {
		why = strerror(errno);
		goto fail;
	}
	snprintf(ob->sync_cut, sizeof(ob->sync_cut), "the failed commit was "
	    "cut from the write-ahead log (at frame %" PRIu32 ")", mxframe);
	return;
 fail:
	snprintf(ob->sync_cut, sizeof(ob->sync_cut), "the failed commit "
	    "could not be cut from the write-ahead log (%s): its messages "
	    "may come back at the restart, twice if their clients send "
	    "them again", why);
}

/*
 * A statement of the open transaction failed with rc: its status (errno
 * still that of the failure, for ENOSPC) and message, then the rollback.
 */
static int
outbox_fail(struct outbox *ob, int rc)
{
	int	status = outbox_status(rc);

	outbox_keep_error(ob);
	outbox_rollback(ob);
	if ((rc == SQLITE_IOERR_FSYNC || rc == SQLITE_IOERR_DIR_FSYNC) &&
	    !ob->sync_failed) {
		ob->sync_failed = 1;
		outbox_cut_log(ob);
		if (ob->sync_failed_cb != NULL)
			ob->sync_failed_cb(ob->sync_failed_arg);
	}
	return status;
}

int
outbox_sync_failed(const struct outbox *ob)
{
	return ob->sync_failed;
}

const char *
outbox_sync_cut(const struct outbox *ob)
{
	return ob->sync_cut;
}

void
outbox_on_sync_failure(struct outbox *ob, void (*fn)(void *), void *arg)
{
	ob->sync_failed_cb = fn;
	ob->sync_failed_arg = arg;
}

static int
outbox_step(sqlite3_stmt *st)
{
	int	rc = sqlite3_step(st);

	sqlite3_reset(st);
	return rc;
}

/*
 * Back to synchronous = FULL after a delete.  Until that works no transaction
 * begins: a commit of new rows must never go unsynced.
 */
static int
outbox_sync_restore(struct outbox *ob)
{
	outbox_keep_error(ob);	/* of what failed before, if anything */
	if (outbox_exec(ob->db, "PRAGMA synchronous = FULL") != SQLITE_OK)
		return -1;
	ob->sync_lowered = 0;
	return 0;
}

static int
outbox_begin_tx(struct outbox *ob)
{
	int	rc;

	if (ob->sync_failed) {
		snprintf(ob->err, sizeof(ob->err), "a sync of the outbox "
		    "failed: nothing more is written to it");
		return OUTBOX_EIO;
	}
	ob->err[0] = '\0';
	(void)iovfs_errno_take();	/* of failures already reported */
	rc = outbox_step(ob->st_begin);
	if (rc != SQLITE_DONE)
		return outbox_status(rc);
	ob->in_tx = 1;
	ob->drows = ob->dbytes = ob->dins = 0;
	ob->ddead_rows = ob->ddead_bytes = 0;
	ob->didem = 0;
	ob->tx_indexed = 0;
	ob->tx_nfps = 0;
	return OUTBOX_OK;
}

/* Back to synchronous = NORMAL after a transaction that reserved ids. */
static void
outbox_sync_drop(struct outbox *ob)
{
	ob->reserving = 0;
	if (!ob->sync_raised)
		return;
	outbox_keep_error(ob);	/* of what failed before, if anything */
	/* On failure commits stay synced, which is slower, not wrong. */
	if (outbox_exec(ob->db, "PRAGMA synchronous = NORMAL") == SQLITE_OK)
		ob->sync_raised = 0;
}

int
outbox_begin(struct outbox *ob)
{
	int	rc, status, reserve;

	if (ob->sync_lowered && outbox_sync_restore(ob) == -1)
		return OUTBOX_EIO;
	/* sync = normal: see "ids are reserved" at the top of this file. */
	reserve = !ob->sync_full &&
	    ob->reserved - (ob->next_id - 1) < ob->reserve_ids / 2;
	if (reserve && !ob->sync_raised) {
		if (outbox_exec(ob->db, "PRAGMA synchronous = FULL") !=
		    SQLITE_OK) {
			outbox_keep_error(ob);
			return OUTBOX_EIO;
		}
		ob->sync_raised = 1;
	}
	if ((status = outbox_begin_tx(ob)) != OUTBOX_OK) {
		outbox_sync_drop(ob);
		return status;
	}
	if (reserve) {
		ob->reserving = ob->next_id - 1 + ob->reserve_ids;
		if ((rc = outbox_write_reserved(ob, ob->reserving)) !=
		    SQLITE_DONE)
			return outbox_fail(ob, rc);
	}
	return OUTBOX_OK;
}

/*
 * A transaction the relay makes of its own accord, moving rows between its
 * tables (a park, its own retry of a dead letter), need not be durable by
 * itself, like a delete: lost to a power cut, the row is where it was
 * before, and is refused and parked again.  So with sync = full it is not
 * synced (the next commit of new rows syncs the log, it with it), and the
 * main thread, which answers every client, waits for no flush of its own.
 */
static int
outbox_begin_lazy(struct outbox *ob)
{
	if (!ob->sync_full)
		return outbox_begin(ob);	/* which may reserve ids */
	if (!ob->sync_lowered) {
		if (outbox_exec(ob->db, "PRAGMA synchronous = NORMAL") !=
		    SQLITE_OK) {
			outbox_keep_error(ob);
			return OUTBOX_EIO;
		}
		ob->sync_lowered = 1;
	}
	return outbox_begin_tx(ob);
}

const char *
outbox_keys_problem(const struct outbox *ob)
{
	return ob->keys_partial ? ob->keys_problem : NULL;
}

size_t
outbox_test_fingerprints(const struct outbox *ob)
{
	return keyset_count(ob->keys);
}

void
outbox_test_reserve_ids(struct outbox *ob, int64_t n)
{
	ob->reserve_ids = n;
}

uint64_t
outbox_row_size(size_t plen, size_t blen)
{
	return (uint64_t)plen + blen;
}

int
outbox_insert(struct outbox *ob, const char *props, size_t plen,
    const void *body, size_t blen, int64_t created_ms, int64_t *idp)
{
	sqlite3_stmt	*st = ob->st_insert;
	int64_t		 upto;
	int		 rc;

	/* Never past the reservation (a turn of half a million rows). */
	upto = ob->reserving > ob->reserved ? ob->reserving : ob->reserved;
	if (!ob->sync_full && ob->next_id > upto) {
		snprintf(ob->err, sizeof(ob->err), "more rows in one "
		    "transaction than message ids reserved (%" PRId64 ")",
		    ob->reserve_ids);
		return OUTBOX_EIO;
	}
	sqlite3_bind_int64(st, 1, ob->next_id);
	sqlite3_bind_int64(st, 2, created_ms);
	sqlite3_bind_int64(st, 3, (sqlite3_int64)outbox_row_size(plen, blen));
	sqlite3_bind_blob64(st, 4, props, plen, SQLITE_STATIC);
	sqlite3_bind_blob64(st, 5, blen ? body : "", blen, SQLITE_STATIC);
	rc = sqlite3_step(st);
	sqlite3_clear_bindings(st);
	sqlite3_reset(st);
	if (rc != SQLITE_DONE)
		return outbox_status(rc);
	/* A rolled-back id is not given out again: harmless, and simpler. */
	*idp = ob->next_id++;
	ob->dins++;
	ob->drows++;
	ob->dbytes += (int64_t)outbox_row_size(plen, blen);
	return OUTBOX_OK;
}

/* The fold: the totals after this transaction, and the ids given out. */
static int
outbox_write_counters(struct outbox *ob)
{
	sqlite3_bind_int64(ob->st_counters, 1,
	    (sqlite3_int64)(ob->rows + ob->drows));
	sqlite3_bind_int64(ob->st_counters, 2,
	    (sqlite3_int64)(ob->bytes + ob->dbytes));
	sqlite3_bind_int64(ob->st_counters, 3, ob->next_id - 1);
	return outbox_step(ob->st_counters);
}

/* meta 'reserved', in the open transaction. */
static int
outbox_write_reserved(struct outbox *ob, int64_t upto)
{
	sqlite3_bind_int64(ob->st_reserve, 1, upto);
	return outbox_step(ob->st_reserve);
}

int
outbox_commit(struct outbox *ob)
{
	int	rc, fold;

	/*
	 * New rows alone leave meta alone until OUTBOX_FOLD_ROWS of them
	 * have gone by; anything else that changes the outbox (a delete,
	 * a park, a replay) folds, so only inserts are ever above the mark.
	 */
	fold = ob->drows != ob->dins ||
	    ob->unfolded + (uint64_t)ob->dins >= OUTBOX_FOLD_ROWS;
	if (fold) {
		rc = outbox_write_counters(ob);
		/* With no key waiting, 'indexed' keeps up at no cost. */
		if (rc == SQLITE_DONE && ob->keyed_last <= outbox_indexed_now(ob))
			rc = outbox_index(ob, ob->next_id - 1);
		if (rc != SQLITE_DONE)
			return outbox_fail(ob, rc);
	}
	if (ob->ddead_rows != 0 || ob->ddead_bytes != 0) {
		sqlite3_bind_int64(ob->st_dead_counters, 1,
		    (sqlite3_int64)(ob->dead_rows + ob->ddead_rows));
		sqlite3_bind_int64(ob->st_dead_counters, 2,
		    (sqlite3_int64)(ob->dead_bytes + ob->ddead_bytes));
		rc = outbox_step(ob->st_dead_counters);
		if (rc != SQLITE_DONE)
			return outbox_fail(ob, rc);
	}
	rc = outbox_step(ob->st_commit);
	if (rc != SQLITE_DONE)
		return outbox_fail(ob, rc);
	ob->in_tx = 0;
	if (ob->reserving > ob->reserved)
		ob->reserved = ob->reserving;
	outbox_sync_drop(ob);
	outbox_commit_done(ob, fold);
	return OUTBOX_OK;
}

static void
outbox_commit_done(struct outbox *ob, int fold)
{
	ob->unfolded = fold ? 0 : ob->unfolded + (uint64_t)ob->dins;
	ob->rows += ob->drows;
	ob->bytes += ob->dbytes;
	ob->dead_rows += ob->ddead_rows;
	ob->dead_bytes += ob->ddead_bytes;
	ob->idem_keys += (uint64_t)ob->didem;
	ob->indexed = outbox_indexed_now(ob);
	if (ob->keys_partial == 2 && ob->indexed >= ob->next_id - 1) {
		/* Every key is in the table now, with its fingerprint. */
		int	rc;
		int64_t	n = outbox_query_int(ob->db, "SELECT count(*) FROM "
		    "idem", &rc);

		if (rc == SQLITE_OK) {
			ob->idem_keys = (uint64_t)n;
			ob->keys_partial = 0;
		}
	}
	ob->drows = ob->dbytes = ob->dins = 0;
	ob->ddead_rows = ob->ddead_bytes = 0;
	ob->didem = 0;
	ob->tx_indexed = 0;
	ob->tx_nfps = 0;
}

void
outbox_rollback(struct outbox *ob)
{
	if (!sqlite3_get_autocommit(ob->db))
		outbox_step(ob->st_rollback);
	ob->in_tx = 0;
	ob->drows = ob->dbytes = ob->dins = 0;
	ob->ddead_rows = ob->ddead_bytes = 0;
	ob->didem = 0;
	ob->tx_indexed = 0;
	while (ob->tx_nfps > 0)
		keyset_del(ob->keys, ob->tx_fps[--ob->tx_nfps]);
	outbox_sync_drop(ob);
}

static int	outbox_delete_tx(struct outbox *, int64_t);

/*
 * A delete need not be durable by itself: lost to a power cut, its rows are
 * published again (at least once), and a killed process loses nothing that
 * it wrote.  So it is not synced: the next commit of new rows syncs the whole
 * write-ahead log, the delete's pages with it.  That is one flush fewer per
 * delete, and no client's commit waits behind one.
 */
int
outbox_delete_upto(struct outbox *ob, int64_t upto)
{
	int	status;

	ob->err[0] = '\0';
	status = outbox_delete_tx(ob, upto);
	if (ob->sync_lowered)
		outbox_sync_restore(ob);	/* or at the next begin */
	return status;
}

/*
 * A delete of confirmed rows also writes how far the confirms have got, in
 * its transaction, for STATUS after a restart: a row lost with sync = normal
 * was committed after it, so its id is above it.
 */
static int
outbox_mark_confirmed(struct outbox *ob, int64_t upto)
{
	if (upto <= ob->confirmed)
		return SQLITE_DONE;
	sqlite3_bind_int64(ob->st_confirmed, 1, upto);
	return outbox_step(ob->st_confirmed);
}

static int
outbox_commit_confirmed(struct outbox *ob, int64_t upto)
{
	int	status = outbox_commit(ob);

	if (status == OUTBOX_OK && upto > ob->confirmed)
		ob->confirmed = upto;
	return status;
}

static int
outbox_delete_tx(struct outbox *ob, int64_t upto)
{
	int	rc, status;

	if ((status = outbox_begin_lazy(ob)) != OUTBOX_OK)
		return status;
	sqlite3_bind_int64(ob->st_range, 1, upto);
	rc = sqlite3_step(ob->st_range);
	if (rc == SQLITE_ROW) {
		ob->drows = -sqlite3_column_int64(ob->st_range, 0);
		ob->dbytes = -sqlite3_column_int64(ob->st_range, 1);
	}
	sqlite3_reset(ob->st_range);
	if (rc != SQLITE_ROW)
		return outbox_fail(ob, rc);
	if (ob->drows == 0) {
		outbox_rollback(ob);
		return OUTBOX_OK;
	}
	/* The keys of the rows that go stay, in the key table. */
	if ((rc = outbox_index(ob, upto)) != SQLITE_DONE)
		return outbox_fail(ob, rc);
	sqlite3_bind_int64(ob->st_delete, 1, upto);
	rc = outbox_step(ob->st_delete);
	if (rc != SQLITE_DONE || (rc = outbox_mark_confirmed(ob, upto)) !=
	    SQLITE_DONE)
		return outbox_fail(ob, rc);
	return outbox_commit_confirmed(ob, upto);
}

uint64_t
outbox_rows(const struct outbox *ob)
{
	return ob->rows;
}

uint64_t
outbox_bytes(const struct outbox *ob)
{
	return ob->bytes;
}

int64_t
outbox_oldest_ms(struct outbox *ob)
{
	int64_t	v = -1;

	if (sqlite3_step(ob->st_oldest) == SQLITE_ROW)
		v = sqlite3_column_int64(ob->st_oldest, 0);
	sqlite3_reset(ob->st_oldest);
	return v;
}

/* outbox_query_arg() with ?1 = v; dflt when no row or on error. */
static int64_t
outbox_query_id(struct outbox *ob, const char *sql, int64_t v,
    int64_t dflt)
{
	int	rc;
	int64_t	r = outbox_query_arg(ob->db, sql, v, &rc);

	return rc == SQLITE_OK ? r : dflt;
}

int64_t
outbox_first_above(struct outbox *ob, int64_t id)
{
	return outbox_query_id(ob,
	    "SELECT id FROM outbox WHERE id > ?1 ORDER BY id LIMIT 1", id, 0);
}

int64_t
outbox_newest_id(const struct outbox *ob)
{
	return ob->next_id - 1;
}

int64_t
outbox_last_id(struct outbox *ob)
{
	return outbox_query_id(ob, "SELECT coalesce(max(id), 0) FROM outbox",
	    0, 0);
}

enum outbox_fate
outbox_fate_of(struct outbox *ob, int64_t id, int64_t confirmed,
    unsigned max_attempts, int64_t *row, char *reason, size_t n)
{
	int64_t		 attempts;
	sqlite3_stmt	*st;
	int		 rc;

	if (id <= 0 || id >= ob->next_id)
		return OUTBOX_FATE_UNKNOWN;
	/* Queued, under its own id or (moved back from the dead) a new one. */
	if ((*row = outbox_query_id(ob, "SELECT id FROM outbox WHERE id = ?1 "
	    "UNION ALL SELECT id FROM outbox WHERE origin = ?1 LIMIT 1", id,
	    0)) > 0)
		return OUTBOX_FATE_QUEUED;
	rc = sqlite3_prepare_v2(ob->db, "SELECT reason, id, attempts FROM dead "
	    "WHERE id = ?1 UNION ALL SELECT reason, id, attempts FROM dead "
	    "WHERE origin = ?1 LIMIT 1", -1, &st, NULL);
	if (rc != SQLITE_OK)
		return OUTBOX_FATE_UNKNOWN;
	sqlite3_bind_int64(st, 1, id);
	rc = sqlite3_step(st);
	if (rc == SQLITE_ROW) {
		snprintf(reason, n, "%s", (const char *)sqlite3_column_text(st,
		    0));
		*row = sqlite3_column_int64(st, 1);
		attempts = sqlite3_column_int64(st, 2);
	}
	sqlite3_finalize(st);
	if (rc == SQLITE_ROW)
		return attempts > 0 && attempts < (int64_t)max_attempts ?
		    OUTBOX_FATE_RETRYING : OUTBOX_FATE_PARKED;
	if (rc != SQLITE_DONE)
		return OUTBOX_FATE_UNKNOWN;
	if (outbox_query_id(ob, "SELECT 1 FROM forgotten WHERE id = ?1", id,
	    0) == 1)
		return OUTBOX_FATE_PURGED;
	/* Perhaps purged, among the ids trimmed from forgotten. */
	if (id <= ob->forgotten_upto)
		return OUTBOX_FATE_UNKNOWN;
	/* Gone from both tables: only a confirm deletes it then. */
	if (id <= ob->confirmed || id <= confirmed)
		return OUTBOX_FATE_CONFIRMED;
	return OUTBOX_FATE_UNKNOWN;
}

int
outbox_dead_reason(struct outbox *ob, int64_t id, char *buf, size_t n)
{
	sqlite3_stmt	*st;
	int		 found = 0;

	if (sqlite3_prepare_v2(ob->db, "SELECT reason FROM dead WHERE id = ?1",
	    -1, &st, NULL) != SQLITE_OK)
		return 0;
	sqlite3_bind_int64(st, 1, id);
	if (sqlite3_step(st) == SQLITE_ROW) {
		snprintf(buf, n, "%s", (const char *)sqlite3_column_text(st, 0));
		found = 1;
	}
	sqlite3_finalize(st);
	return found;
}

uint64_t
outbox_dead_upto(struct outbox *ob, int64_t id)
{
	int64_t	n = outbox_query_id(ob, "SELECT count(*) FROM dead WHERE "
	    "id <= ?1 OR origin <= ?1", id, 0);

	return n > 0 ? (uint64_t)n : 0;
}

int
outbox_retrying_upto(struct outbox *ob, int64_t upto, int64_t confirmed,
    unsigned max_attempts)
{
	sqlite3_stmt	*st;
	int		 rc;

	rc = sqlite3_prepare_v2(ob->db, "SELECT 1 FROM outbox WHERE origin <= "
	    "?1 AND id > ?3 UNION ALL SELECT 1 FROM dead WHERE (id <= ?1 OR "
	    "origin <= ?1) AND attempts > 0 AND attempts < ?2 LIMIT 1", -1,
	    &st, NULL);
	if (rc != SQLITE_OK)
		return 1;	/* unsure: not done */
	sqlite3_bind_int64(st, 1, upto);
	sqlite3_bind_int64(st, 2, (sqlite3_int64)max_attempts);
	sqlite3_bind_int64(st, 3, confirmed);
	rc = sqlite3_step(st);
	sqlite3_finalize(st);
	return rc != SQLITE_DONE;
}

const char *
outbox_errmsg(const struct outbox *ob)
{
	int	ec = sqlite3_errcode(ob->db);

	/* After a rollback or a PRAGMA the connection says "not an error". */
	if ((ec == SQLITE_OK || ec == SQLITE_ROW || ec == SQLITE_DONE) &&
	    ob->err[0] != '\0')
		return ob->err;
	return sqlite3_errmsg(ob->db);
}

/*
 * The idempotency key of a stored property block into pub (its message-id
 * with it): 1, or 0 when it has none.  A block that does not parse (it was
 * parsed when it came in) has none to give.
 */
static int
outbox_block_key(const void *props, size_t plen, struct proto_pub *pub)
{
	char	err[128];

	if (proto_parse_props(props, plen, pub, err, sizeof(err)) == -1)
		return 0;
	return pub->idempotency_key.p != NULL;
}

/*
 * Start-up: the fingerprint of every key, those of the key table and those
 * of the rows above meta 'indexed' (few unless keyed messages wait for the
 * broker: the fold moves 'indexed' up while none do), and their count.
 * Rows moved back from the dead letters (origin) are left out: their keys
 * went to the table when they were parked.  What cannot be read leaves the
 * set partial: 1, the key table's (until a restart); 2, the rows' (until
 * every row is indexed, its keys' fingerprints added as it goes).
 */
static void
outbox_load_keys(struct outbox *ob)
{
	struct proto_pub	 pub;
	sqlite3_stmt		*st;
	uint64_t		 seed;
	int64_t			 n;
	int			 rc;

	sqlite3_randomness(sizeof(seed), &seed);
	ob->keys = keyset_new(seed);
	ob->idem_keys = 0;
	n = outbox_query_int(ob->db, "SELECT count(*) FROM idem", &rc);
	if (rc == SQLITE_OK) {
		keyset_reserve(ob->keys, (size_t)n);
		rc = sqlite3_prepare_v2(ob->db, "SELECT key FROM idem", -1, &st,
		    NULL);
	}
	if (rc == SQLITE_OK) {
		while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
			keyset_add(ob->keys, keyset_fp(ob->keys,
			    sqlite3_column_blob(st, 0),
			    (size_t)sqlite3_column_bytes(st, 0)));
			ob->idem_keys++;
		}
		sqlite3_finalize(st);
	}
	if (rc != SQLITE_DONE) {
		ob->keys_partial = 1;
		snprintf(ob->keys_problem, sizeof(ob->keys_problem),
		    "the key table: %s", sqlite3_errmsg(ob->db));
		ob->keyed_last = ob->next_id - 1;
		return;
	}
	st = ob->st_index_rows;
	sqlite3_bind_int64(st, 1, ob->indexed);
	sqlite3_bind_int64(st, 2, INT64_MAX);
	while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
		if (!outbox_block_key(sqlite3_column_blob(st, 2),
		    (size_t)sqlite3_column_bytes(st, 2), &pub))
			continue;
		keyset_add(ob->keys, keyset_fp(ob->keys,
		    pub.idempotency_key.p, pub.idempotency_key.len));
		ob->idem_keys++;
		ob->keyed_last = sqlite3_column_int64(st, 0);
	}
	if (rc != SQLITE_DONE) {
		ob->keys_partial = 2;
		snprintf(ob->keys_problem, sizeof(ob->keys_problem),
		    "the messages waiting: %s", sqlite3_errmsg(ob->db));
		ob->keyed_last = ob->next_id - 1;
	}
	sqlite3_reset(st);
}

static int64_t
outbox_indexed_now(const struct outbox *ob)
{
	return ob->tx_indexed > ob->indexed ? ob->tx_indexed : ob->indexed;
}

/*
 * In the open transaction: the keys of the rows up to upto go to the key
 * table, and meta 'indexed' with them.  A key already there (its row was
 * indexed before, in a transaction a crash took back) counts once.
 */
static int
outbox_index(struct outbox *ob, int64_t upto)
{
	sqlite3_stmt		*st = ob->st_index_rows, *put = ob->st_idem_put;
	struct proto_pub	 pub;
	int64_t			 from = outbox_indexed_now(ob), id;
	int			 rc;

	if (upto > ob->next_id - 1)
		upto = ob->next_id - 1;
	if (upto <= from)
		return SQLITE_DONE;
	/*
	 * Rows above the newest keyed one have none to give, even when their
	 * blocks name a key: they came in while keys were off (a window of
	 * 0), and were never counted.
	 */
	if (ob->keyed_last > from) {
		sqlite3_bind_int64(st, 1, from);
		sqlite3_bind_int64(st, 2, upto < ob->keyed_last ? upto :
		    ob->keyed_last);
		while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
			if (!outbox_block_key(sqlite3_column_blob(st, 2),
			    (size_t)sqlite3_column_bytes(st, 2), &pub))
				continue;
			id = sqlite3_column_int64(st, 0);
			sqlite3_bind_blob64(put, 1, pub.idempotency_key.p,
			    pub.idempotency_key.len, SQLITE_STATIC);
			/* The client's message-id; a generated one by its row. */
			if (pub.message_id.p != NULL)
				sqlite3_bind_text64(put, 2, pub.message_id.p,
				    pub.message_id.len, SQLITE_STATIC,
				    SQLITE_UTF8);
			else
				sqlite3_bind_int64(put, 2, id);
			sqlite3_bind_int64(put, 3,
			    sqlite3_column_int64(st, 1));
			sqlite3_bind_int64(put, 4, id);
			rc = sqlite3_step(put);
			sqlite3_clear_bindings(put);
			sqlite3_reset(put);
			if (rc != SQLITE_DONE)
				break;
			if (sqlite3_changes(ob->db) == 0)
				ob->didem--;
			else if (ob->keys_partial)
				keyset_add(ob->keys, keyset_fp(ob->keys,
				    pub.idempotency_key.p,
				    pub.idempotency_key.len));
		}
		sqlite3_clear_bindings(st);
		sqlite3_reset(st);
		if (rc != SQLITE_DONE)
			return rc;
	}
	sqlite3_bind_int64(ob->st_indexed, 1, upto);
	if ((rc = outbox_step(ob->st_indexed)) == SQLITE_DONE)
		ob->tx_indexed = upto;
	return rc;
}

/*
 * A lookup needs the keys of the rows not yet indexed in the table: in the
 * open transaction, or in one of its own that, like a delete, need not be
 * durable (lost, it is done again).
 */
static int
outbox_index_all(struct outbox *ob)
{
	int	rc, status;

	if (ob->keyed_last <= outbox_indexed_now(ob))
		return OUTBOX_OK;
	if (ob->in_tx) {
		rc = outbox_index(ob, ob->next_id - 1);
		if (rc != SQLITE_DONE) {
			outbox_keep_error(ob);
			return outbox_status(rc);
		}
		return OUTBOX_OK;
	}
	ob->err[0] = '\0';
	if ((status = outbox_begin_lazy(ob)) == OUTBOX_OK) {
		rc = outbox_index(ob, ob->next_id - 1);
		status = rc == SQLITE_DONE ? outbox_commit(ob) :
		    outbox_fail(ob, rc);
	}
	if (ob->sync_lowered)
		outbox_sync_restore(ob);
	return status;
}

int
outbox_idem_find(struct outbox *ob, const void *key, size_t klen,
    int64_t since_ms, char *mid, size_t midlen, int64_t *idp)
{
	sqlite3_stmt	*st = ob->st_idem_find;
	const char	*m;
	int		 rc, found = 0;

	/* Nearly every key is new, and its fingerprint says so. */
	if (!ob->keys_partial &&
	    !keyset_has(ob->keys, keyset_fp(ob->keys, key, klen)))
		return 0;
	if (outbox_index_all(ob) != OUTBOX_OK)
		return -1;
	sqlite3_bind_blob64(st, 1, key, klen, SQLITE_STATIC);
	rc = sqlite3_step(st);
	if (rc == SQLITE_ROW) {
		if (idp != NULL)
			*idp = sqlite3_column_int64(st, 2);
		if (sqlite3_column_int64(st, 1) >= since_ms) {
			if (sqlite3_column_type(st, 0) == SQLITE_INTEGER)
				snprintf(mid, midlen, "%s-%" PRId64,
				    ob->instance, (int64_t)
				    sqlite3_column_int64(st, 0));
			else {
				m = (const char *)sqlite3_column_text(st, 0);
				snprintf(mid, midlen, "%s", m != NULL ? m : "");
			}
			found = 1;
		} else
			found = 2;
	} else if (rc != SQLITE_DONE) {
		outbox_keep_error(ob);
		found = -1;
	}
	sqlite3_clear_bindings(st);
	sqlite3_reset(st);
	return found;
}

int
outbox_idem_put(struct outbox *ob, const void *key, size_t klen, int64_t id,
    int replace)
{
	int	rc;

	if (!ob->in_tx)
		abort();
	/* An expired entry goes; its fingerprint serves the new one. */
	if (replace) {
		sqlite3_bind_blob64(ob->st_idem_drop, 1, key, klen,
		    SQLITE_STATIC);
		rc = outbox_step(ob->st_idem_drop);
		sqlite3_clear_bindings(ob->st_idem_drop);
		if (rc != SQLITE_DONE) {
			outbox_keep_error(ob);
			return outbox_status(rc);
		}
		if (sqlite3_changes(ob->db) > 0)
			ob->didem--;
	}
	/* Taken back if the transaction is. */
	if (!replace || sqlite3_changes(ob->db) == 0) {
		if (ob->tx_nfps == ob->tx_fpcap) {
			ob->tx_fpcap = ob->tx_fpcap ? 2 * ob->tx_fpcap : 64;
			ob->tx_fps = xrealloc(ob->tx_fps, ob->tx_fpcap *
			    sizeof(*ob->tx_fps));
		}
		ob->tx_fps[ob->tx_nfps] = keyset_fp(ob->keys, key, klen);
		keyset_add(ob->keys, ob->tx_fps[ob->tx_nfps++]);
	}
	ob->didem++;
	if (id > ob->keyed_last)
		ob->keyed_last = id;
	return OUTBOX_OK;
}

/* Run a prune statement; the fingerprints of the keys it took into fps. */
static int
outbox_prune_step(struct outbox *ob, sqlite3_stmt *st, uint64_t *fps,
    size_t max, size_t *nfp)
{
	int	rc;

	while ((rc = sqlite3_step(st)) == SQLITE_ROW)
		if (*nfp < max)
			fps[(*nfp)++] = keyset_fp(ob->keys,
			    sqlite3_column_blob(st, 0),
			    (size_t)sqlite3_column_bytes(st, 0));
	sqlite3_reset(st);
	return rc;
}

/*
 * Like a delete, a prune need not be durable by itself: lost, the keys are
 * pruned again.  So it is not synced (outbox_begin_lazy()).  Their
 * fingerprints go once it committed.
 */
int
outbox_idem_prune(struct outbox *ob, int64_t before_ms, uint64_t max_keys,
    unsigned batch, uint64_t *n)
{
	uint64_t	over;
	uint64_t	*fps;
	size_t		 nfp = 0, i;
	int64_t		 gone = 0, upto;
	int		 rc, status;

	*n = 0;
	ob->err[0] = '\0';
	over = max_keys > 0 && ob->idem_keys > max_keys ?
	    ob->idem_keys - max_keys : 0;
	if (over > batch)
		over = batch;
	fps = xcalloc(batch > 0 ? batch : 1, sizeof(*fps));
	if ((status = outbox_begin_lazy(ob)) != OUTBOX_OK)
		goto out;
	if (over > 0) {
		/*
		 * Keys still with their rows count against the bound too,
		 * and the oldest may be among them: a batch of rows' keys
		 * into the table first.
		 */
		upto = outbox_indexed_now(ob) + (int64_t)batch;
		rc = outbox_index(ob, upto < ob->next_id - 1 ? upto :
		    ob->next_id - 1);
		if (rc != SQLITE_DONE) {
			status = outbox_fail(ob, rc);
			goto out;
		}
		sqlite3_bind_int64(ob->st_idem_old, 1, (sqlite3_int64)over);
		rc = outbox_prune_step(ob, ob->st_idem_old, fps, batch, &nfp);
		if (rc != SQLITE_DONE) {
			status = outbox_fail(ob, rc);
			goto out;
		}
		gone = sqlite3_changes(ob->db);
	}
	if ((uint64_t)gone < batch) {
		sqlite3_bind_int64(ob->st_idem_expired, 1, before_ms);
		sqlite3_bind_int64(ob->st_idem_expired, 2,
		    (sqlite3_int64)(batch - (uint64_t)gone));
		rc = outbox_prune_step(ob, ob->st_idem_expired, fps, batch,
		    &nfp);
		if (rc != SQLITE_DONE) {
			status = outbox_fail(ob, rc);
			goto out;
		}
		gone += sqlite3_changes(ob->db);
	}
	if (gone == 0) {
		outbox_rollback(ob);
		goto out;
	}
	ob->didem = -gone;
	if ((status = outbox_commit(ob)) == OUTBOX_OK) {
		*n = (uint64_t)gone;
		for (i = 0; i < nfp; i++)
			keyset_del(ob->keys, fps[i]);
	}
 out:
	free(fps);
	if (ob->sync_lowered)
		outbox_sync_restore(ob);	/* or at the next begin */
	return status;
}

uint64_t
outbox_idem_keys(const struct outbox *ob)
{
	return ob->idem_keys;
}

/*
 * Dead letters.  These are rare, so their statements are prepared per call;
 * each runs in a transaction of its own, and a group commit must not be
 * open (its rows would be committed or rolled back with ours).
 */

/* Fail the open transaction with rc; st (may be NULL) is finalized. */
static int
outbox_dead_fail(struct outbox *ob, sqlite3_stmt *st, int rc)
{
	int	status = outbox_status(rc);

	outbox_keep_error(ob);
	sqlite3_finalize(st);
	outbox_rollback(ob);
	/* An error without a step (prepare) must not read as success. */
	return status == OUTBOX_OK ? OUTBOX_EIO : status;
}

/*
 * The props a parked row keeps: its own, plus the message-id the publisher
 * generated for it when it had none, so a replay (a new row id) publishes
 * the same id.  A block that does not parse (a damaged row) or would grow
 * past what the parser takes back is kept as it is.
 */
static void
outbox_park_props(struct outbox *ob, int64_t id, const char *props,
    size_t plen, struct buf *out)
{
	static struct proto_pub	pub;	/* big: the header array */
	char			err[256];

	buf_reset(out);
	if (plen > 0)
		buf_append(out, props, plen);
	if (proto_parse_props(props, plen, &pub, err, sizeof(err)) == -1 ||
	    pub.message_id.p != NULL)
		return;
	if (plen > 0 && props[plen - 1] != '\n')
		buf_append(out, "\n", 1);
	buf_printf(out, "message-id: %s-%" PRId64 "\n", ob->instance, id);
	if (out->len > PROTO_MAX_STORED_BLOCK) {	/* cannot happen */
		buf_reset(out);
		if (plen > 0)
			buf_append(out, props, plen);
	}
}

int
outbox_park(struct outbox *ob, int64_t id, unsigned attempts,
    const char *reason, int64_t now_ms, unsigned *total)
{
	sqlite3_stmt	*st = NULL;
	struct buf	 props;
	int64_t		 oldsize, blen, before;
	uint64_t	 newsize;
	int		 rc, status;

	if (ob->in_tx)
		abort();
	*total = OUTBOX_NOT_PARKED;
	if ((status = outbox_begin_lazy(ob)) != OUTBOX_OK)
		return status;
	if ((rc = sqlite3_prepare_v2(ob->db, "SELECT size, props, "
	    "length(body), attempts FROM outbox WHERE id = ?1", -1, &st,
	    NULL)) != SQLITE_OK)
		return outbox_dead_fail(ob, st, rc);
	sqlite3_bind_int64(st, 1, id);
	if ((rc = sqlite3_step(st)) == SQLITE_DONE) {
		/* Already parked, or gone: parking again changes nothing. */
		sqlite3_finalize(st);
		outbox_rollback(ob);
		return OUTBOX_OK;
	}
	if (rc != SQLITE_ROW)
		return outbox_dead_fail(ob, st, rc);
	oldsize = sqlite3_column_int64(st, 0);
	buf_init(&props);
	outbox_park_props(ob, id, sqlite3_column_blob(st, 1),
	    (size_t)sqlite3_column_bytes(st, 1), &props);
	blen = sqlite3_column_int64(st, 2);
	before = sqlite3_column_int64(st, 3);
	sqlite3_finalize(st);
	st = NULL;
	newsize = outbox_row_size(props.len, (size_t)blen);
	if (before < 0 || before >= UINT_MAX - attempts)
		before = 0;	/* a damaged count: start again */
	if (attempts == 0)
		before = 0;	/* for good, whatever it had */
	/* Full: the row stays where it is, counted in the outbox's total. */
	if (ob->dead_max_bytes > 0 && ob->dead_rows > 0 &&
	    (newsize > ob->dead_max_bytes ||
	    ob->dead_bytes > ob->dead_max_bytes - newsize)) {
		buf_free(&props);
		outbox_rollback(ob);
		return OUTBOX_EDEADFULL;
	}

	/* Its key stays known, in the key table. */
	if ((rc = outbox_index(ob, id)) != SQLITE_DONE) {
		buf_free(&props);
		return outbox_dead_fail(ob, NULL, rc);
	}
	/* The body goes from table to table without a copy in memory. */
	rc = sqlite3_prepare_v2(ob->db, "INSERT INTO dead (id, created, parked, "
	    "attempts, reason, size, props, body, origin) SELECT id, created, "
	    "?2, ?3, ?4, ?5, ?6, body, origin FROM outbox WHERE id = ?1", -1,
	    &st, NULL);
	if (rc == SQLITE_OK) {
		sqlite3_bind_int64(st, 1, id);
		sqlite3_bind_int64(st, 2, now_ms);
		sqlite3_bind_int64(st, 3, before + attempts);
		sqlite3_bind_text(st, 4, reason != NULL ? reason : "", -1,
		    SQLITE_STATIC);
		sqlite3_bind_int64(st, 5, (sqlite3_int64)newsize);
		sqlite3_bind_blob64(st, 6, props.len ? props.data : "",
		    props.len, SQLITE_STATIC);
		rc = sqlite3_step(st);
	}
	buf_free(&props);
	if (rc != SQLITE_DONE)
		return outbox_dead_fail(ob, st, rc);
	sqlite3_finalize(st);
	st = NULL;

	rc = sqlite3_prepare_v2(ob->db, "DELETE FROM outbox WHERE id = ?1", -1,
	    &st, NULL);
	if (rc == SQLITE_OK) {
		sqlite3_bind_int64(st, 1, id);
		rc = sqlite3_step(st);
	}
	if (rc != SQLITE_DONE)
		return outbox_dead_fail(ob, st, rc);
	sqlite3_finalize(st);

	ob->drows = -1;
	ob->dbytes = -oldsize;
	ob->ddead_rows = 1;
	ob->ddead_bytes = (int64_t)newsize;
	if ((status = outbox_commit(ob)) == OUTBOX_OK)
		*total = (unsigned)before + attempts;
	return status;
}

void
outbox_set_forgotten_max(struct outbox *ob, uint64_t n)
{
	ob->forgotten_max = n;
}

void
outbox_set_dead_limit(struct outbox *ob, uint64_t max_bytes)
{
	ob->dead_max_bytes = max_bytes;
}

int
outbox_dead_foreach(struct outbox *ob, int64_t after, int max,
    int with_body, outbox_dead_fn fn, void *arg)
{
	sqlite3_stmt		*st;
	struct outbox_dead	 d;
	int			 rc, n = 0;

	/* A read: allowed inside a group commit, which never touches dead. */
	rc = sqlite3_prepare_v2(ob->db, with_body ?
	    "SELECT id, created, parked, attempts, reason, props, body "
	    "FROM dead WHERE id > ?1 ORDER BY id LIMIT ?2" :
	    "SELECT id, created, parked, attempts, reason, props, "
	    "length(body) FROM dead WHERE id > ?1 ORDER BY id LIMIT ?2",
	    -1, &st, NULL);
	if (rc != SQLITE_OK)
		return -1;
	sqlite3_bind_int64(st, 1, after);
	sqlite3_bind_int(st, 2, max);
	while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
		d.id = sqlite3_column_int64(st, 0);
		d.created_ms = sqlite3_column_int64(st, 1);
		d.parked_ms = sqlite3_column_int64(st, 2);
		d.attempts = (unsigned)sqlite3_column_int64(st, 3);
		d.reason = (const char *)sqlite3_column_text(st, 4);
		d.props = sqlite3_column_blob(st, 5);
		d.plen = (size_t)sqlite3_column_bytes(st, 5);
		if (with_body) {
			d.body = sqlite3_column_blob(st, 6);
			d.blen = (size_t)sqlite3_column_bytes(st, 6);
			if (d.body == NULL)
				d.body = "";
		} else {
			d.body = NULL;
			d.blen = (size_t)sqlite3_column_int64(st, 6);
		}
		if (d.reason == NULL)
			d.reason = "";
		if (d.props == NULL)
			d.props = "";
		n++;
		if (fn(arg, &d) != 0) {
			rc = SQLITE_DONE;
			break;
		}
	}
	sqlite3_finalize(st);
	return rc == SQLITE_DONE ? n : -1;
}

/*
 * Which rows the batch takes: ids in (after, upto] in id order, while they
 * fit its bounds.  Reads id and size only (no blob is loaded).  b->rows,
 * b->bytes, b->last, b->more and b->full are set; SQLITE_OK or rc.
 */
static int
outbox_dead_measure(struct outbox *ob, int retry, struct outbox_dead_batch *b)
{
	sqlite3_stmt	*st;
	uint64_t	 size, room = retry ? b->room : UINT64_MAX;
	int		 rc;

	rc = sqlite3_prepare_v2(ob->db, "SELECT id, size FROM dead "
	    "WHERE id > ?1 AND id <= ?2 ORDER BY id LIMIT ?3", -1, &st, NULL);
	if (rc != SQLITE_OK)
		return rc;
	sqlite3_bind_int64(st, 1, b->after);
	sqlite3_bind_int64(st, 2, b->upto);
	/* One more than the batch takes, to know whether any are left. */
	sqlite3_bind_int64(st, 3, b->max_rows >= INT64_MAX ? INT64_MAX :
	    (sqlite3_int64)b->max_rows + 1);
	while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
		size = (uint64_t)sqlite3_column_int64(st, 1);
		if (b->rows == b->max_rows || (b->rows > 0 &&
		    (b->bytes >= b->max_bytes ||
		    size > b->max_bytes - b->bytes))) {
			b->more = 1;
			break;
		}
		if (size > room - b->bytes) {
			b->more = b->full = 1;
			break;
		}
		b->rows++;
		b->bytes += size;
		b->last = sqlite3_column_int64(st, 0);
	}
	sqlite3_finalize(st);
	return rc == SQLITE_ROW || rc == SQLITE_DONE ? SQLITE_OK : rc;
}

/*
 * Keep forgotten within about forgotten_max rows, in the purge's
 * transaction: once it is a tenth over, drop the oldest down to
 * forgotten_max, and move meta 'forgotten_upto' up to the last one
 * dropped.  Never one at or above the lowest id a key in the key table
 * names: a repeat of that key must hear "purged" (receipt_wait_id()).
 * Keys of rows still in the outbox name rows that are not dead letters.
 * The scans (the key table's ids have no index) come once in
 * forgotten_max / 10 purges.
 */
static int	outbox_dead_run(struct outbox *, const char *,
		    const struct outbox_dead_batch *, int64_t);

static int
outbox_forgotten_trim(struct outbox *ob)
{
	int64_t		 cut, live, max = ob->forgotten_max > INT64_MAX / 2 ?
			    INT64_MAX / 2 : (int64_t)ob->forgotten_max;
	struct outbox_dead_batch b;
	sqlite3_stmt	*st;
	int		 rc;

	if (ob->tx_forgotten_rows <= max + max / 10)
		return SQLITE_OK;
	rc = sqlite3_prepare_v2(ob->db, "SELECT id FROM forgotten "
	    "ORDER BY id DESC LIMIT 1 OFFSET ?1", -1, &st, NULL);
	if (rc != SQLITE_OK)
		return rc;
	sqlite3_bind_int64(st, 1, max);
	rc = sqlite3_step(st);
	cut = rc == SQLITE_ROW ? sqlite3_column_int64(st, 0) : 0;
	sqlite3_finalize(st);
	if (rc != SQLITE_ROW)
		return rc == SQLITE_DONE ? SQLITE_OK : rc;
	live = outbox_query_int(ob->db, "SELECT coalesce(min(id), 0) FROM idem "
	    "WHERE id > 0", &rc);
	if (rc != SQLITE_OK)
		return rc;
	if (live > 0 && cut >= live)
		cut = live - 1;
	if (cut <= ob->forgotten_upto)
		return SQLITE_OK;
	memset(&b, 0, sizeof(b));
	b.last = cut;
	if ((rc = outbox_dead_run(ob, "DELETE FROM forgotten WHERE id <= :last",
	    &b, 0)) != SQLITE_DONE)
		return rc;
	ob->tx_forgotten_rows -= sqlite3_changes(ob->db);
	if ((rc = outbox_dead_run(ob, "INSERT OR REPLACE INTO meta (key, value) "
	    "VALUES ('forgotten_upto', :last)", &b, 0)) != SQLITE_DONE)
		return rc;
	ob->tx_forgotten_upto = cut;
	return SQLITE_OK;
}

/* Run sql with :after, :last, :now and :base bound where it has them. */
static int
outbox_dead_run(struct outbox *ob, const char *sql,
    const struct outbox_dead_batch *b, int64_t now)
{
	sqlite3_stmt	*st;
	int		 rc, i;

	if ((rc = sqlite3_prepare_v2(ob->db, sql, -1, &st, NULL)) != SQLITE_OK)
		return rc;
	if ((i = sqlite3_bind_parameter_index(st, ":after")) > 0)
		sqlite3_bind_int64(st, i, b->after);
	if ((i = sqlite3_bind_parameter_index(st, ":last")) > 0)
		sqlite3_bind_int64(st, i, b->last);
	if ((i = sqlite3_bind_parameter_index(st, ":now")) > 0)
		sqlite3_bind_int64(st, i, now);
	if ((i = sqlite3_bind_parameter_index(st, ":base")) > 0)
		sqlite3_bind_int64(st, i, ob->next_id - 1);
	rc = sqlite3_step(st);
	sqlite3_finalize(st);
	return rc;
}

int
outbox_dead_step(struct outbox *ob, int retry, int64_t now_ms,
    struct outbox_dead_batch *b)
{
	int	rc, status;

	b->rows = b->bytes = 0;
	b->last = b->after;
	b->more = b->full = 0;
	ob->tx_forgotten_upto = 0;
	if (ob->in_tx)
		abort();
	if ((status = b->keep_attempts ? outbox_begin_lazy(ob) :
	    outbox_begin(ob)) != OUTBOX_OK)
		return status;
	if ((rc = outbox_dead_measure(ob, retry, b)) != SQLITE_OK) {
		b->rows = b->bytes = 0;
		return outbox_dead_fail(ob, NULL, rc);
	}
	if (b->rows == 0) {
		outbox_rollback(ob);
		return OUTBOX_OK;
	}
	/* As outbox_insert(): never past the reserved ids (sync = normal). */
	if (retry && !ob->sync_full && ob->next_id - 1 + (int64_t)b->rows >
	    (ob->reserving > ob->reserved ? ob->reserving : ob->reserved)) {
		snprintf(ob->err, sizeof(ob->err), "more rows in one "
		    "transaction than message ids reserved (%" PRId64 ")",
		    ob->reserve_ids);
		b->rows = b->bytes = 0;
		outbox_rollback(ob);
		return OUTBOX_EIO;
	}
	if (retry) {
		/*
		 * New rows at the tail, with new ids in dead id order.  The
		 * props already carry the message-id, so the new id changes
		 * nothing downstream.
		 */
		rc = outbox_dead_run(ob, b->keep_attempts ?
		    "INSERT INTO outbox (id, created, size, props, body, "
		    "attempts, origin) "
		    "SELECT :base + row_number() OVER (ORDER BY id), :now, "
		    "size, props, body, attempts, coalesce(origin, id) "
		    "FROM dead "
		    "WHERE id > :after AND id <= :last ORDER BY id" :
		    "INSERT INTO outbox (id, created, size, props, body, "
		    "origin) "
		    "SELECT :base + row_number() OVER (ORDER BY id), :now, "
		    "size, props, body, coalesce(origin, id) FROM dead "
		    "WHERE id > :after AND id <= :last ORDER BY id", b, now_ms);
		if (rc != SQLITE_DONE)
			goto fail;
		ob->next_id += (int64_t)b->rows;
		ob->drows = (int64_t)b->rows;
		ob->dbytes = (int64_t)b->bytes;
	}
	/* Purged: STATUS says "unknown" of them from now on. */
	if (!retry && (rc = outbox_dead_run(ob, "INSERT OR IGNORE INTO "
	    "forgotten SELECT coalesce(origin, id) FROM dead "
	    "WHERE id > :after AND id <= :last", b, 0)) != SQLITE_DONE)
		goto fail;
	if (!retry) {
		ob->tx_forgotten_rows = ob->forgotten_rows +
		    sqlite3_changes(ob->db);
		if ((rc = outbox_forgotten_trim(ob)) != SQLITE_OK)
			goto fail;
	}
	rc = outbox_dead_run(ob, "DELETE FROM dead "
	    "WHERE id > :after AND id <= :last", b, 0);
	if (rc != SQLITE_DONE)
		goto fail;
	ob->ddead_rows = -(int64_t)b->rows;
	ob->ddead_bytes = -(int64_t)b->bytes;
	if ((status = outbox_commit(ob)) != OUTBOX_OK)
		b->rows = b->bytes = 0;
	else if (!retry) {
		ob->forgotten_rows = ob->tx_forgotten_rows;
		if (ob->tx_forgotten_upto > ob->forgotten_upto)
			ob->forgotten_upto = ob->tx_forgotten_upto;
	}
	return status;

fail:
	b->rows = b->bytes = 0;
	return outbox_dead_fail(ob, NULL, rc);
}

int64_t
outbox_dead_last(struct outbox *ob)
{
	int	rc;
	int64_t	v;

	v = outbox_query_int(ob->db, "SELECT coalesce(max(id), 0) FROM dead",
	    &rc);
	return rc == SQLITE_OK ? v : -1;
}

int
outbox_delete_around(struct outbox *ob, int64_t after, int64_t upto,
    const int64_t *keep, size_t nkeep)
{
	sqlite3_stmt	*stm = NULL, *std = NULL;
	int64_t		 lo = after, hi;
	size_t		 i = 0;
	int		 rc, status;

	if (ob->in_tx)
		abort();
	/* Not synced by itself, as outbox_delete_upto(). */
	if ((status = outbox_begin_lazy(ob)) != OUTBOX_OK)
		return status;
	/* The keys of the rows that go stay, in the key table. */
	rc = outbox_index(ob, upto);
	if (rc == SQLITE_DONE)
		rc = sqlite3_prepare_v2(ob->db, "SELECT count(*), "
		    "coalesce(sum(size), 0) FROM outbox WHERE id > ?1 AND "
		    "id < ?2", -1, &stm, NULL);
	if (rc == SQLITE_OK)
		rc = sqlite3_prepare_v2(ob->db, "DELETE FROM outbox "
		    "WHERE id > ?1 AND id < ?2", -1, &std, NULL);
	/* The gaps between the kept ids, the last one up to upto. */
	while (rc == SQLITE_OK && lo < upto) {
		while (i < nkeep && keep[i] <= lo)
			i++;
		hi = i < nkeep && keep[i] <= upto ? keep[i] : upto + 1;
		sqlite3_bind_int64(stm, 1, lo);
		sqlite3_bind_int64(stm, 2, hi);
		if ((rc = sqlite3_step(stm)) != SQLITE_ROW)
			break;
		ob->drows -= sqlite3_column_int64(stm, 0);
		ob->dbytes -= sqlite3_column_int64(stm, 1);
		sqlite3_reset(stm);
		sqlite3_bind_int64(std, 1, lo);
		sqlite3_bind_int64(std, 2, hi);
		if ((rc = sqlite3_step(std)) != SQLITE_DONE)
			break;
		sqlite3_reset(std);
		rc = SQLITE_OK;
		lo = hi;
	}
	sqlite3_finalize(stm);
	if (rc != SQLITE_OK)
		return outbox_dead_fail(ob, std, rc);
	sqlite3_finalize(std);
	if (ob->drows == 0) {
		outbox_rollback(ob);
		return OUTBOX_OK;
	}
	if ((rc = outbox_mark_confirmed(ob, upto)) != SQLITE_DONE)
		return outbox_fail(ob, rc);
	return outbox_commit_confirmed(ob, upto);
}

/* Move (retry) or drop (purge) dead letter id, 0 for all of them, at once. */
static int
outbox_dead_take(struct outbox *ob, int64_t id, int retry, int64_t now_ms,
    uint64_t *n)
{
	struct outbox_dead_batch	b;
	int				status;

	memset(&b, 0, sizeof(b));
	b.after = id != 0 ? id - 1 : 0;
	b.upto = id != 0 ? id : INT64_MAX;
	b.max_rows = b.max_bytes = b.room = UINT64_MAX;
	status = outbox_dead_step(ob, retry, now_ms, &b);
	*n = b.rows;
	return status;
}

int
outbox_dead_retry(struct outbox *ob, int64_t id, int64_t now_ms, uint64_t *n)
{
	return outbox_dead_take(ob, id, 1, now_ms, n);
}

int
outbox_dead_requeue(struct outbox *ob, int64_t id, int64_t now_ms,
    uint64_t room, uint64_t *n)
{
	struct outbox_dead_batch	b;
	int				status;

	if (id == 0)
		abort();
	memset(&b, 0, sizeof(b));
	b.after = id - 1;
	b.upto = id;
	b.max_rows = b.max_bytes = UINT64_MAX;
	b.room = room;
	b.keep_attempts = 1;
	status = outbox_dead_step(ob, 1, now_ms, &b);
	*n = b.rows;
	if (status == OUTBOX_OK && b.full && b.rows == 0)
		return OUTBOX_EFULL;
	return status;
}

int
outbox_dead_purge(struct outbox *ob, int64_t id, uint64_t *n)
{
	return outbox_dead_take(ob, id, 0, 0, n);
}

uint64_t
outbox_dead_rows(const struct outbox *ob)
{
	return ob->dead_rows;
}

uint64_t
outbox_dead_bytes(const struct outbox *ob)
{
	return ob->dead_bytes;
}

int
outbox_reader_open(struct outbox_reader **rp, const char *path, char *err,
    size_t errlen)
{
	struct outbox_reader	*r;
	int			 rc;

	r = xcalloc(1, sizeof(*r));
	rc = sqlite3_open_v2(path, &r->db, SQLITE_OPEN_READONLY |
	    SQLITE_OPEN_NOMUTEX, iovfs_name());
	if (rc == SQLITE_OK) {
		sqlite3_busy_timeout(r->db, OUTBOX_BUSY_MS);
		rc = outbox_prepare(r->db, "SELECT id, created, props, body "
		    "FROM outbox WHERE id > ?1 ORDER BY id LIMIT ?2", &r->st_fetch);
	}
	if (rc != SQLITE_OK) {
		snprintf(err, errlen, "%s: cannot open for reading: %s", path,
		    r->db ? sqlite3_errmsg(r->db) : sqlite3_errstr(rc));
		outbox_reader_close(r);
		return -1;
	}
	*rp = r;
	return 0;
}

void
outbox_reader_close(struct outbox_reader *r)
{
	if (r == NULL)
		return;
	sqlite3_finalize(r->st_fetch);
	if (r->db != NULL)
		sqlite3_close(r->db);
	free(r);
}

int
outbox_reader_fetch(struct outbox_reader *r, int64_t after, int max,
    outbox_row_fn fn, void *arg)
{
	sqlite3_stmt		*st = r->st_fetch;
	struct outbox_row	 row;
	int			 rc, n = 0;

	sqlite3_bind_int64(st, 1, after);
	sqlite3_bind_int(st, 2, max);
	while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
		row.id = sqlite3_column_int64(st, 0);
		row.created_ms = sqlite3_column_int64(st, 1);
		row.props = sqlite3_column_blob(st, 2);
		row.plen = (size_t)sqlite3_column_bytes(st, 2);
		row.body = sqlite3_column_blob(st, 3);
		row.blen = (size_t)sqlite3_column_bytes(st, 3);
		if (row.props == NULL)
			row.props = "";
		n++;
		if (fn(arg, &row) != 0) {
			rc = SQLITE_DONE;
			break;
		}
	}
	sqlite3_reset(st);
	return rc == SQLITE_DONE ? n : -1;
}

const char *
outbox_reader_errmsg(const struct outbox_reader *r)
{
	return sqlite3_errmsg(r->db);
}

uint64_t
outbox_free_space(const struct outbox *ob)
{
	struct statvfs	sv;

	if (ob->lockfd == -1 || fstatvfs(ob->lockfd, &sv) == -1)
		return UINT64_MAX;
	return (uint64_t)sv.f_bavail * sv.f_frsize;
}

uint64_t
outbox_reusable_bytes(struct outbox *ob)
{
	int64_t	pages, size;
	int	rc;

	pages = outbox_query_int(ob->db, "PRAGMA freelist_count", &rc);
	size = outbox_query_int(ob->db, "PRAGMA page_size", &rc);
	if (pages < 0 || size < 0)
		return 0;
	return (uint64_t)(pages * size);
}

/*
 * TRUNCATE waits for every reader to leave the log.  The publisher's reader
 * can sit in a fetch for as long as the broker does not read (a blocked
 * socket), and the main thread must not wait the busy timeout for it: it
 * answers every client.  The checkpoint is an optimisation, tried again.
 */
int
outbox_checkpoint(struct outbox *ob)
{
	int	rc;

	sqlite3_busy_timeout(ob->db, OUTBOX_CHECKPOINT_BUSY_MS);
	rc = sqlite3_wal_checkpoint_v2(ob->db, NULL, SQLITE_CHECKPOINT_TRUNCATE,
	    NULL, NULL);
	sqlite3_busy_timeout(ob->db, OUTBOX_BUSY_MS);
	return outbox_status(rc);
}

/* The log's size when its automatic checkpoint runs; 0 if unknown. */
static int64_t
outbox_wal_target(struct outbox *ob)
{
	int64_t	pages, page_size;
	int	rc;

	pages = outbox_query_int(ob->db, "PRAGMA wal_autocheckpoint", &rc);
	page_size = outbox_query_int(ob->db, "PRAGMA page_size", &rc);
	if (pages <= 0 || page_size <= 0)
		return 0;
	/* Its 32-byte header and that many frames (24 bytes and a page). */
	return 32 + pages * (page_size + 24);
}

uint64_t
outbox_wal_excess(struct outbox *ob)
{
	sqlite3_file	*fp = NULL;
	sqlite3_int64	 size;

	if (sqlite3_file_control(ob->db, "main", SQLITE_FCNTL_JOURNAL_POINTER,
	    &fp) != SQLITE_OK || fp == NULL || fp->pMethods == NULL ||
	    fp->pMethods->xFileSize(fp, &size) != SQLITE_OK)
		return 0;
	return size > ob->wal_limit ? (uint64_t)(size - ob->wal_limit) : 0;
}

int
outbox_reclaim_wal(struct outbox *ob, uint64_t keep_free)
{
	int	rc;

	sqlite3_busy_timeout(ob->db, 0);
	rc = sqlite3_wal_checkpoint_v2(ob->db, NULL, SQLITE_CHECKPOINT_TRUNCATE,
	    NULL, NULL);
	sqlite3_busy_timeout(ob->db, OUTBOX_BUSY_MS);
	if (rc != SQLITE_OK)
		return -1;
	(void)outbox_presize_wal(ob, keep_free);
	return 0;
}

/*
 * A commit that appends to the write-ahead log makes the file system
 * allocate blocks and grow the file, and its fdatasync() then has to write
 * that metadata as well: on ext4 one or two more device round trips per
 * commit (fsync_buffers_list in a profile of one-message commits).  Once the
 * log has wrapped after its first checkpoint, commits overwrite blocks that
 * exist and sync their data alone.  So give the log its full size at
 * start-up, written and synced once, instead of growing it commit by commit
 * for the first thousand commits after every start.
 *
 * Only zeros past the current end are written: frames there, if any, would
 * have been left by an older generation of the log, which SQLite tells apart
 * by the salts, and zeros are never a valid frame.  SQLite truncates the log
 * only beyond journal_size_limit and deletes it on the last close.
 */
/* The log is pre-sized only when it takes at most 1/16 of the room. */
#define OUTBOX_PRESIZE_SHARE	16

int64_t
outbox_presize_wal(struct outbox *ob, uint64_t keep_free)
{
	static const char	 zeros[65536];
	sqlite3_file		*fp = NULL;
	sqlite3_int64		 size, target, off;
	uint64_t		 avail;
	int			 n;

	if (!ob->sync_full)
		return 0;	/* nothing synced per commit to spare */
	if ((target = outbox_wal_target(ob)) == 0)
		return 0;
	if (sqlite3_file_control(ob->db, "main", SQLITE_FCNTL_JOURNAL_POINTER,
	    &fp) != SQLITE_OK || fp == NULL || fp->pMethods == NULL ||
	    fp->pMethods->xFileSize(fp, &size) != SQLITE_OK)
		return -1;
	if (size >= target)
		return 0;
	/*
	 * Only where the log's size is a small share of the room above
	 * keep_free.  On a small or nearly full file system the space is worth
	 * more: commits written into a pre-sized log would later need as much
	 * again in the database file at the checkpoint, and a relay whose disk
	 * filled up could then not delete even the rows the broker confirmed.
	 */
	avail = outbox_free_space(ob);
	if (avail < keep_free ||
	    (avail - keep_free) / OUTBOX_PRESIZE_SHARE < (uint64_t)(target - size))
		return 0;
	for (off = size; off < target; off += n) {
		n = target - off < (sqlite3_int64)sizeof(zeros) ?
		    (int)(target - off) : (int)sizeof(zeros);
		if (fp->pMethods->xWrite(fp, zeros, n, off) != SQLITE_OK)
			break;
	}
	if (off < target || fp->pMethods->xSync(fp, SQLITE_SYNC_NORMAL) !=
	    SQLITE_OK) {
		(void)fp->pMethods->xTruncate(fp, size);
		return -1;
	}
	return target - size;
}

/* What outbox_check() reports, each from a query of its own. */
static const struct {
	const char	*name;
	const char	*sql;
} outbox_check_counts[] = {
	{ "schema", "PRAGMA user_version" },
	{ "messages", "SELECT count(*) FROM outbox" },
	{ "message_bytes", "SELECT coalesce(sum(size), 0) FROM outbox" },
	{ "oldest_created_ms", "SELECT coalesce(min(created), 0) FROM outbox" },
	{ "dead_messages", "SELECT count(*) FROM dead" },
	{ "dead_bytes", "SELECT coalesce(sum(size), 0) FROM dead" },
	{ "idempotency_keys", "SELECT count(*) FROM idem" },
	{ "purged_remembered", "SELECT count(*) FROM forgotten" },
	{ "confirmed_prefix", "SELECT coalesce((SELECT value FROM meta WHERE "
	    "key = 'confirmed'), 0)" },
	{ "page_size", "PRAGMA page_size" },
	{ "pages", "PRAGMA page_count" },
	{ "free_pages", "PRAGMA freelist_count" },
};

static int64_t
outbox_check_size(const char *path, const char *suffix)
{
	char		p[4096];
	struct stat	sb;

	snprintf(p, sizeof(p), "%s%s", path, suffix);
	return stat(p, &sb) == 0 ? (int64_t)sb.st_size : 0;
}

int
outbox_check(const char *path, FILE *out, char *err, size_t errlen)
{
	sqlite3		*db = NULL;
	sqlite3_stmt	*st = NULL;
	const char	*msg;
	int64_t		 v;
	size_t		 i;
	int		 rc, problems = 0, n = 0;

	rc = sqlite3_open_v2(path, &db, SQLITE_OPEN_READONLY, NULL);
	if (rc == SQLITE_OK) {
		sqlite3_busy_timeout(db, OUTBOX_BUSY_MS);
		v = outbox_query_int(db, "PRAGMA application_id", &rc);
		if (rc == SQLITE_OK && v != OUTBOX_APPLICATION_ID) {
			snprintf(err, errlen, "%s: not a pubrelay outbox "
			    "(application_id %" PRId64 ")", path, v);
			sqlite3_close(db);
			return -1;
		}
	}
	if (rc != SQLITE_OK) {
		snprintf(err, errlen, "%s: cannot open for reading: %s", path,
		    db != NULL ? sqlite3_errmsg(db) : sqlite3_errstr(rc));
		sqlite3_close(db);
		return -1;
	}
	fprintf(out, "outbox %s\n", path);
	/* The counts are of one snapshot; the writer goes on meanwhile. */
	if (outbox_exec(db, "BEGIN") != SQLITE_OK) {
		snprintf(err, errlen, "%s: cannot read: %s", path,
		    sqlite3_errmsg(db));
		sqlite3_close(db);
		return -1;
	}
	for (i = 0; i < sizeof(outbox_check_counts) /
	    sizeof(outbox_check_counts[0]); i++) {
		v = outbox_query_int(db, outbox_check_counts[i].sql, &rc);
		if (rc == SQLITE_OK) {
			fprintf(out, "%s %" PRId64 "\n",
			    outbox_check_counts[i].name, v);
			continue;
		}
		/* A damaged table: say so, and go on to the full check. */
		fprintf(out, "%s -\nproblem cannot count %s: %s\n",
		    outbox_check_counts[i].name, outbox_check_counts[i].name,
		    sqlite3_errmsg(db));
		problems++;
	}
	fprintf(out, "file_bytes %" PRId64 "\nwal_bytes %" PRId64 "\n",
	    outbox_check_size(path, ""), outbox_check_size(path, "-wal"));
	/* Every page, every index against its table: read-only. */
	rc = sqlite3_prepare_v2(db, "PRAGMA integrity_check(100)", -1, &st,
	    NULL);
	while (rc == SQLITE_OK && (rc = sqlite3_step(st)) == SQLITE_ROW) {
		msg = (const char *)sqlite3_column_text(st, 0);
		if (msg != NULL && strcmp(msg, "ok") == 0 && n == 0) {
			rc = SQLITE_OK;
			continue;
		}
		fprintf(out, "problem %s\n", msg != NULL ? msg : "?");
		problems++;
		n++;
		rc = SQLITE_OK;
	}
	if (rc != SQLITE_DONE && rc != SQLITE_OK) {
		fprintf(out, "problem integrity_check failed: %s\n",
		    sqlite3_errmsg(db));
		problems++;
	}
	sqlite3_finalize(st);
	fprintf(out, "integrity %s\n", problems ? "FAILED" : "ok");
	outbox_exec(db, "COMMIT");
	sqlite3_close(db);
	return problems;
}
