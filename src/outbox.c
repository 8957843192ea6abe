/*
 * outbox.c: the SQLite outbox.  One writer connection (main thread), any
 * number of reader connections (the publisher thread has one).
 */
#include <sys/file.h>
#include <sys/stat.h>

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <sqlite3.h>

#include "outbox.h"
#include "util.h"

struct outbox {
	sqlite3		*db;
	int		 lockfd;
	char		 instance[OUTBOX_INSTANCE_LEN + 1];
	uint64_t	 rows, bytes;		/* committed totals */
	int64_t		 drows, dbytes;		/* deltas of the open transaction */
	int		 in_tx;
	sqlite3_stmt	*st_begin, *st_commit, *st_rollback, *st_insert;
	sqlite3_stmt	*st_counters, *st_range, *st_delete, *st_oldest;
};

struct outbox_reader {
	sqlite3		*db;
	sqlite3_stmt	*st_fetch;
};

static const char *outbox_schema =
	"CREATE TABLE meta ("
	"  key TEXT PRIMARY KEY NOT NULL,"
	"  value NOT NULL);"
	"CREATE TABLE outbox ("
	"  id INTEGER PRIMARY KEY AUTOINCREMENT,"	/* ids never reused */
	"  created INTEGER NOT NULL,"
	"  size INTEGER NOT NULL,"
	"  props BLOB NOT NULL,"
	"  body BLOB NOT NULL);";

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

/* Integer result of a one-value query, or -1 with rc in *rcp. */
static int64_t
outbox_query_int(sqlite3 *db, const char *sql, int *rcp)
{
	sqlite3_stmt	*st;
	int64_t		 v = -1;
	int		 rc;

	rc = sqlite3_prepare_v2(db, sql, -1, &st, NULL);
	if (rc == SQLITE_OK) {
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
outbox_create_schema(struct outbox *ob, char *err, size_t errlen)
{
	char	 sql[512];
	int	 rc;

	outbox_random_hex(ob->instance, sizeof(ob->instance));
	snprintf(sql, sizeof(sql),
	    "BEGIN;%s"
	    "INSERT INTO meta VALUES ('instance', '%s'), ('rows', 0), ('bytes', 0);"
	    "PRAGMA application_id = %d; PRAGMA user_version = %d; COMMIT;",
	    outbox_schema, ob->instance, OUTBOX_APPLICATION_ID,
	    OUTBOX_SCHEMA_VERSION);
	if (strlen(sql) + 1 >= sizeof(sql))
		abort();
	rc = outbox_exec(ob->db, sql);
	if (rc != SQLITE_OK) {
		snprintf(err, errlen, "cannot create the outbox schema: %s",
		    sqlite3_errmsg(ob->db));
		outbox_exec(ob->db, "ROLLBACK");
		return -1;
	}
	return 0;
}

static int
outbox_load_meta(struct outbox *ob, const char *path, char *err, size_t errlen)
{
	sqlite3_stmt	*st;
	int		 rc, seen = 0;

	rc = sqlite3_prepare_v2(ob->db,
	    "SELECT key, value FROM meta WHERE key IN ('instance','rows','bytes')",
	    -1, &st, NULL);
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
		else
			ob->bytes = (uint64_t)sqlite3_column_int64(st, 1);
		seen++;
	}
	sqlite3_finalize(st);
	if (rc == SQLITE_DONE && seen == 3)
		return 0;
 bad:
	snprintf(err, errlen, "%s: outbox metadata missing or unreadable: %s",
	    path, sqlite3_errmsg(ob->db));
	return -1;
}

int
outbox_open(struct outbox **obp, const char *path, int sync_full, char *err,
    size_t errlen)
{
	struct outbox	*ob;
	struct stat	 sb;
	char		*lockpath;
	int		 rc, fresh, flags;
	int64_t		 v;

	*obp = NULL;
	if (stat(path, &sb) == 0) {
		if (!S_ISREG(sb.st_mode)) {
			snprintf(err, errlen, "%s: not a regular file", path);
			return -1;
		}
		fresh = sb.st_size == 0;
	} else if (errno == ENOENT)
		fresh = 1;
	else {
		snprintf(err, errlen, "%s: %s", path, strerror(errno));
		return -1;
	}

	ob = xcalloc(1, sizeof(*ob));
	ob->lockfd = -1;

	/* Two daemons on one outbox would publish every message twice. */
	lockpath = xmalloc(strlen(path) + 6);
	sprintf(lockpath, "%s.lock", path);
	ob->lockfd = open(lockpath, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
	if (ob->lockfd == -1) {
		snprintf(err, errlen, "%s: %s", lockpath, strerror(errno));
		free(lockpath);
		goto fail;
	}
	if (flock(ob->lockfd, LOCK_EX | LOCK_NB) == -1) {
		snprintf(err, errlen, "%s: outbox in use by another process "
		    "(lock %s held)", path, lockpath);
		free(lockpath);
		goto fail;
	}
	free(lockpath);

	flags = SQLITE_OPEN_READWRITE | SQLITE_OPEN_NOMUTEX;
	if (fresh)
		flags |= SQLITE_OPEN_CREATE;
	rc = sqlite3_open_v2(path, &ob->db, flags, NULL);
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
	sqlite3_busy_timeout(ob->db, 5000);

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
		/* Older schemas would be migrated here; version 1 is the first. */
	}

	if (outbox_exec(ob->db, "PRAGMA journal_mode = WAL") != SQLITE_OK ||
	    outbox_exec(ob->db, sync_full ? "PRAGMA synchronous = FULL" :
	    "PRAGMA synchronous = NORMAL") != SQLITE_OK ||
	    outbox_exec(ob->db, "PRAGMA journal_size_limit = 67108864") !=
	    SQLITE_OK) {
		snprintf(err, errlen, "%s: cannot set up the outbox: %s", path,
		    sqlite3_errmsg(ob->db));
		goto fail;
	}
	if (fresh && outbox_create_schema(ob, err, errlen) == -1)
		goto fail;
	if (outbox_load_meta(ob, path, err, errlen) == -1)
		goto fail;

	if (outbox_prepare(ob->db, "BEGIN IMMEDIATE", &ob->st_begin) ||
	    outbox_prepare(ob->db, "COMMIT", &ob->st_commit) ||
	    outbox_prepare(ob->db, "ROLLBACK", &ob->st_rollback) ||
	    outbox_prepare(ob->db, "INSERT INTO outbox (created, size, props, "
	    "body) VALUES (?1, ?2, ?3, ?4)", &ob->st_insert) ||
	    outbox_prepare(ob->db, "UPDATE meta SET value = CASE key "
	    "WHEN 'rows' THEN ?1 ELSE ?2 END WHERE key IN ('rows', 'bytes')",
	    &ob->st_counters) ||
	    outbox_prepare(ob->db, "SELECT count(*), coalesce(sum(size), 0) "
	    "FROM outbox WHERE id <= ?1", &ob->st_range) ||
	    outbox_prepare(ob->db, "DELETE FROM outbox WHERE id <= ?1",
	    &ob->st_delete) ||
	    outbox_prepare(ob->db, "SELECT created FROM outbox ORDER BY id "
	    "LIMIT 1", &ob->st_oldest)) {
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

void
outbox_close(struct outbox *ob)
{
	if (ob == NULL)
		return;
	sqlite3_finalize(ob->st_begin);
	sqlite3_finalize(ob->st_commit);
	sqlite3_finalize(ob->st_rollback);
	sqlite3_finalize(ob->st_insert);
	sqlite3_finalize(ob->st_counters);
	sqlite3_finalize(ob->st_range);
	sqlite3_finalize(ob->st_delete);
	sqlite3_finalize(ob->st_oldest);
	if (ob->db != NULL)
		sqlite3_close(ob->db);
	if (ob->lockfd != -1)
		close(ob->lockfd);
	free(ob);
}

const char *
outbox_instance(const struct outbox *ob)
{
	return ob->instance;
}

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
		/* SQLite reports some ENOSPC writes as I/O errors. */
		return errno == ENOSPC ? OUTBOX_EFULL : OUTBOX_EIO;
	default:
		return OUTBOX_EIO;
	}
}

static int
outbox_step(sqlite3_stmt *st)
{
	int	rc = sqlite3_step(st);

	sqlite3_reset(st);
	return rc;
}

int
outbox_begin(struct outbox *ob)
{
	int	rc;

	rc = outbox_step(ob->st_begin);
	if (rc != SQLITE_DONE)
		return outbox_status(rc);
	ob->in_tx = 1;
	ob->drows = ob->dbytes = 0;
	return OUTBOX_OK;
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
	int		 rc;

	sqlite3_bind_int64(st, 1, created_ms);
	sqlite3_bind_int64(st, 2, (sqlite3_int64)outbox_row_size(plen, blen));
	sqlite3_bind_blob64(st, 3, props, plen, SQLITE_STATIC);
	sqlite3_bind_blob64(st, 4, blen ? body : "", blen, SQLITE_STATIC);
	rc = sqlite3_step(st);
	sqlite3_clear_bindings(st);
	sqlite3_reset(st);
	if (rc != SQLITE_DONE)
		return outbox_status(rc);
	*idp = sqlite3_last_insert_rowid(ob->db);
	ob->drows++;
	ob->dbytes += (int64_t)outbox_row_size(plen, blen);
	return OUTBOX_OK;
}

static int
outbox_write_counters(struct outbox *ob)
{
	sqlite3_bind_int64(ob->st_counters, 1,
	    (sqlite3_int64)(ob->rows + ob->drows));
	sqlite3_bind_int64(ob->st_counters, 2,
	    (sqlite3_int64)(ob->bytes + ob->dbytes));
	return outbox_step(ob->st_counters);
}

int
outbox_commit(struct outbox *ob)
{
	int	rc;

	if (ob->drows != 0 || ob->dbytes != 0) {
		rc = outbox_write_counters(ob);
		if (rc != SQLITE_DONE) {
			outbox_rollback(ob);
			return outbox_status(rc);
		}
	}
	rc = outbox_step(ob->st_commit);
	if (rc != SQLITE_DONE) {
		outbox_rollback(ob);
		return outbox_status(rc);
	}
	ob->in_tx = 0;
	ob->rows += ob->drows;
	ob->bytes += ob->dbytes;
	ob->drows = ob->dbytes = 0;
	return OUTBOX_OK;
}

void
outbox_rollback(struct outbox *ob)
{
	if (!sqlite3_get_autocommit(ob->db))
		outbox_step(ob->st_rollback);
	ob->in_tx = 0;
	ob->drows = ob->dbytes = 0;
}

int
outbox_delete_upto(struct outbox *ob, int64_t upto)
{
	int	rc, status;

	if ((status = outbox_begin(ob)) != OUTBOX_OK)
		return status;
	sqlite3_bind_int64(ob->st_range, 1, upto);
	rc = sqlite3_step(ob->st_range);
	if (rc == SQLITE_ROW) {
		ob->drows = -sqlite3_column_int64(ob->st_range, 0);
		ob->dbytes = -sqlite3_column_int64(ob->st_range, 1);
	}
	sqlite3_reset(ob->st_range);
	if (rc != SQLITE_ROW) {
		outbox_rollback(ob);
		return outbox_status(rc);
	}
	if (ob->drows == 0) {
		outbox_rollback(ob);
		return OUTBOX_OK;
	}
	sqlite3_bind_int64(ob->st_delete, 1, upto);
	rc = outbox_step(ob->st_delete);
	if (rc != SQLITE_DONE) {
		outbox_rollback(ob);
		return outbox_status(rc);
	}
	return outbox_commit(ob);
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

const char *
outbox_errmsg(const struct outbox *ob)
{
	return sqlite3_errmsg(ob->db);
}

int
outbox_reader_open(struct outbox_reader **rp, const char *path, char *err,
    size_t errlen)
{
	struct outbox_reader	*r;
	int			 rc;

	r = xcalloc(1, sizeof(*r));
	rc = sqlite3_open_v2(path, &r->db, SQLITE_OPEN_READONLY |
	    SQLITE_OPEN_NOMUTEX, NULL);
	if (rc == SQLITE_OK) {
		sqlite3_busy_timeout(r->db, 5000);
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
