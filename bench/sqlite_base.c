/*
 * sqlite_base.c: bare SQLite insert baseline for `make bench`.
 *
 * The same pragmas as src/outbox.c (WAL, synchronous FULL or NORMAL,
 * journal_size_limit 8M), the same outbox table, one prepared INSERT
 * reused, BEGIN IMMEDIATE ... COMMIT around every batch.  No daemon, no
 * socket, no parsing: what SQLite alone can do on this disk.
 *
 * usage: sqlite_base PATH full|normal ROWS BODY_BYTES BATCH [PAUSE_US [presize]]
 * prints: rows=N secs=S rate=R
 *
 * With PAUSE_US, it sleeps that long before every transaction, as a client
 * publishing one message now and then leaves the disk idle, and also prints
 * p50_ms= and p99_ms= of the time of a transaction (begin to commit).
 * "presize" first writes the write-ahead log to its size at the automatic
 * checkpoint with zeros and syncs it, as pubrelayd does at start-up with
 * sync = full.
 */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <sqlite3.h>

static double
now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

static int
cmp_double(const void *a, const void *b)
{
	double	x = *(const double *)a, y = *(const double *)b;

	return x < y ? -1 : x > y;
}

/* Zeros to the log's size at 1000 frames (the automatic checkpoint). */
static void
presize(const char *path_wal)
{
	static const char	zeros[65536];
	off_t			off, target = 32 + 1000L * (4096 + 24);
	int			fd;

	if ((fd = open(path_wal, O_WRONLY)) == -1) {
		perror(path_wal);
		exit(1);
	}
	for (off = lseek(fd, 0, SEEK_END); off < target; off += sizeof(zeros))
		if (pwrite(fd, zeros, sizeof(zeros), off) == -1) {
			perror(path_wal);
			exit(1);
		}
	if (fdatasync(fd) == -1 || close(fd) == -1) {
		perror(path_wal);
		exit(1);
	}
}

static void
must(sqlite3 *db, int rc, const char *what)
{
	if (rc != SQLITE_OK && rc != SQLITE_DONE && rc != SQLITE_ROW) {
		fprintf(stderr, "sqlite_base: %s: %s\n", what, sqlite3_errmsg(db));
		exit(1);
	}
}

int
main(int argc, char **argv)
{
	sqlite3		*db;
	sqlite3_stmt	*ins, *begin, *commit;
	const char	*props = "routing-key: bench\n";
	char		*body, path_wal[4096];
	long		 rows, size, batch, pause_us = 0, i, ntx = 0;
	double		 t0, t1, tx0 = 0, *txs;

	if (argc < 6 || argc > 8 || (argc == 8 && strcmp(argv[7], "presize"))) {
		fprintf(stderr, "usage: sqlite_base PATH full|normal ROWS "
		    "BODY_BYTES BATCH [PAUSE_US [presize]]\n");
		return 2;
	}
	rows = atol(argv[3]);
	size = atol(argv[4]);
	batch = atol(argv[5]);
	if (argc > 6)
		pause_us = atol(argv[6]);
	if (rows <= 0 || size < 0 || batch <= 0 || pause_us < 0)
		return 2;
	txs = calloc(rows / batch + 1, sizeof(*txs));
	unlink(argv[1]);
	snprintf(path_wal, sizeof(path_wal), "%s-wal", argv[1]);
	unlink(path_wal);
	snprintf(path_wal, sizeof(path_wal), "%s-shm", argv[1]);
	unlink(path_wal);
	body = malloc(size + 1);
	memset(body, 'x', size);

	must(NULL, sqlite3_open_v2(argv[1], &db, SQLITE_OPEN_READWRITE |
	    SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX, NULL), "open");
	must(db, sqlite3_exec(db, "PRAGMA journal_mode = WAL", 0, 0, 0), "wal");
	must(db, sqlite3_exec(db, strcmp(argv[2], "full") == 0 ?
	    "PRAGMA synchronous = FULL" : "PRAGMA synchronous = NORMAL",
	    0, 0, 0), "sync");
	must(db, sqlite3_exec(db, "PRAGMA journal_size_limit = 8388608",
	    0, 0, 0), "limit");
	must(db, sqlite3_exec(db, "CREATE TABLE outbox ("
	    "  id INTEGER PRIMARY KEY,"		/* as pubrelayd's (schema 3) */
	    "  created INTEGER NOT NULL,"
	    "  size INTEGER NOT NULL,"
	    "  props BLOB NOT NULL,"
	    "  body BLOB NOT NULL)", 0, 0, 0), "create");
	if (argc == 8) {
		snprintf(path_wal, sizeof(path_wal), "%s-wal", argv[1]);
		presize(path_wal);
	}
	must(db, sqlite3_prepare_v3(db, "INSERT INTO outbox (created, size, "
	    "props, body) VALUES (?1, ?2, ?3, ?4)", -1,
	    SQLITE_PREPARE_PERSISTENT, &ins, NULL), "prepare");
	must(db, sqlite3_prepare_v3(db, "BEGIN IMMEDIATE", -1,
	    SQLITE_PREPARE_PERSISTENT, &begin, NULL), "prepare");
	must(db, sqlite3_prepare_v3(db, "COMMIT", -1,
	    SQLITE_PREPARE_PERSISTENT, &commit, NULL), "prepare");

	t0 = now();
	for (i = 0; i < rows; i++) {
		if (i % batch == 0) {
			if (pause_us > 0) {
				usleep(pause_us);
				tx0 = now();
			}
			must(db, sqlite3_step(begin), "begin");
			sqlite3_reset(begin);
		}
		sqlite3_bind_int64(ins, 1, (sqlite3_int64)(t0 * 1000));
		sqlite3_bind_int64(ins, 2, (sqlite3_int64)(strlen(props) + size));
		sqlite3_bind_blob64(ins, 3, props, strlen(props), SQLITE_STATIC);
		sqlite3_bind_blob64(ins, 4, body, size, SQLITE_STATIC);
		must(db, sqlite3_step(ins), "insert");
		sqlite3_clear_bindings(ins);
		sqlite3_reset(ins);
		if (i % batch == batch - 1 || i == rows - 1) {
			must(db, sqlite3_step(commit), "commit");
			sqlite3_reset(commit);
			if (pause_us > 0)
				txs[ntx++] = now() - tx0;
		}
	}
	t1 = now();
	printf("rows=%ld secs=%.4f rate=%.0f", rows, t1 - t0, rows / (t1 - t0));
	if (ntx > 0) {
		qsort(txs, ntx, sizeof(*txs), cmp_double);
		printf(" p50_ms=%.3f p99_ms=%.3f", 1000 * txs[ntx / 2],
		    1000 * txs[ntx * 99 / 100]);
	}
	printf("\n");
	free(txs);
	sqlite3_finalize(ins);
	sqlite3_finalize(begin);
	sqlite3_finalize(commit);
	sqlite3_close(db);
	free(body);
	return 0;
}
