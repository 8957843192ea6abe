/*
 * outbox.h: the durable SQLite outbox.
 *
 * struct outbox is the one writer connection, owned by the main (ingress)
 * thread: group-commit inserts and range deletes of confirmed rows.  struct
 * outbox_reader is a read-only connection owned by the publisher thread; WAL
 * lets it read ahead by id beside the writer.
 */
#ifndef PUBRELAY_OUTBOX_H
#define PUBRELAY_OUTBOX_H

#include <limits.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

/*
 * 2: dead-letter table; 3: own ids; 4: outbox.attempts; 5: idempotency keys;
 * 6: a key goes to the key table when its row leaves (meta 'indexed')
 */
#define OUTBOX_SCHEMA_VERSION	6
/* New rows that may go by before the totals are written again. */
#define OUTBOX_FOLD_ROWS	1024
/* With sync = normal, ids made durable ahead of use, a flush at a time. */
#define OUTBOX_RESERVE_IDS	(1 << 20)
#define OUTBOX_APPLICATION_ID	0x50524c59	/* "PRLY": marks our files */
#define OUTBOX_INSTANCE_LEN	16		/* hex digits */

/* Results of outbox writes. */
#define OUTBOX_OK	0
#define OUTBOX_EFULL	-1	/* disk or database full: retryable */
#define OUTBOX_EIO	-2	/* any other failure */
#define OUTBOX_EDEADFULL -3	/* outbox_park(): dead-letter table full */

struct outbox;
struct outbox_reader;

/*
 * Open (creating when the file does not exist or is empty) the outbox at path.
 * An existing file that is not a pubrelay outbox, is corrupt, unreadable, or
 * has a newer schema is an error, never silently recreated; an older schema
 * is migrated in one transaction.  0 on success; -1 with a message in err.
 */
int	 outbox_open(struct outbox **obp, const char *path, int sync_full,
	    char *err, size_t errlen);
void	 outbox_close(struct outbox *ob);
/*
 * Whether an outbox file exists at path that no process holds (its lock is
 * free): left behind, nobody publishes what it holds.
 */
int	 outbox_unattended(const char *path);

/* Random id of this outbox, used to generate stable message-ids. */
const char *outbox_instance(const struct outbox *ob);
/* The schema version outbox_open() migrated from (for the log), 0: none. */
int	 outbox_migrated_from(const struct outbox *ob);

/*
 * Group commit: begin, insert..., commit (or rollback).  With sync = normal
 * a begin may reserve ids (that transaction is then synced), and an insert
 * never goes past the reservation: an error means the rows are not there.
 */
int	 outbox_begin(struct outbox *ob);
int	 outbox_insert(struct outbox *ob, const char *props, size_t plen,
	    const void *body, size_t blen, int64_t created_ms, int64_t *idp);
int	 outbox_commit(struct outbox *ob);
void	 outbox_rollback(struct outbox *ob);

/* Tests: reserve n ids at a time instead of OUTBOX_RESERVE_IDS. */
void	 outbox_test_reserve_ids(struct outbox *ob, int64_t n);
/*
 * Why start-up could not read every idempotency key (NULL: it could): every
 * keyed message is then looked up in the file, and refused while that fails.
 */
const char *outbox_keys_problem(const struct outbox *ob);
/* For the tests: the key fingerprints held in memory. */
size_t	 outbox_test_fingerprints(const struct outbox *ob);

/* Delete every row with id <= upto, in its own transaction. */
int	 outbox_delete_upto(struct outbox *ob, int64_t upto);

/* Free bytes on the outbox's file system; UINT64_MAX when unknown. */
uint64_t outbox_free_space(const struct outbox *ob);
/* Bytes of free pages inside the database file, which new rows reuse. */
uint64_t outbox_reusable_bytes(struct outbox *ob);
/*
 * Bytes of the write-ahead log beyond twice its working size (the size at
 * which its automatic checkpoint runs), where SQLite cuts it back when it
 * starts the log over: what a read held open too long, or a checkpoint
 * that cannot keep up, takes on disk beside the rows.
 */
uint64_t outbox_wal_excess(struct outbox *ob);
/*
 * Give back what the log holds beyond its working size once nothing reads
 * it any more: a truncating checkpoint that does not wait for readers (it
 * fails while one is in the log), then the log pre-sized again.  0 or -1.
 */
int	 outbox_reclaim_wal(struct outbox *ob, uint64_t keep_free);
/* Move the write-ahead log into the database and truncate it. */
int	 outbox_checkpoint(struct outbox *ob);
/*
 * With sync = full, extend the write-ahead log with zeros to the size it has
 * at its automatic checkpoint, and sync it once, so that commits overwrite
 * blocks that exist instead of allocating them.  Skipped (0) unless the
 * disk has at least 16 times that size free above keep_free bytes.  Bytes
 * added, or -1.
 */
int64_t	 outbox_presize_wal(struct outbox *ob, uint64_t keep_free);

/*
 * Running totals, kept in the database: written by every transaction that
 * removes or moves rows and after OUTBOX_FOLD_ROWS new rows, and brought up
 * to date from the rows above the last write at start-up.
 */
uint64_t outbox_rows(const struct outbox *ob);
uint64_t outbox_bytes(const struct outbox *ob);
/* Size a row is accounted at. */
uint64_t outbox_row_size(size_t plen, size_t blen);
/* Creation time (ms) of the oldest row; -1 when empty or on error. */
int64_t	 outbox_oldest_ms(struct outbox *ob);
/*
 * Receipts: the first row above id (0: none), the highest row id (0: none),
 * the dead letters with ids up to id.  One query each, on the main thread.
 */
int64_t	 outbox_first_above(struct outbox *ob, int64_t id);
int64_t	 outbox_last_id(struct outbox *ob);
/* The id given out last (to a new row, or a dead letter moved back). */
int64_t	 outbox_newest_id(const struct outbox *ob);
/*
 * Dead letters of the messages with ids up to id: parked under an id up to
 * it, or under a later one after a retry (origin).
 */
uint64_t outbox_dead_upto(struct outbox *ob, int64_t id);
/*
 * Whether a message with an id up to upto may still be published although
 * no outbox row up to upto is left: moved back from the dead letters under
 * a later id, not yet confirmed (above confirmed), or a dead letter the
 * relay retries (refused fewer than max_attempts times).
 */
int	 outbox_retrying_upto(struct outbox *ob, int64_t upto,
	    int64_t confirmed, unsigned max_attempts);
/*
 * What became of the message row id was when its OK was sent (STATUS):
 * QUEUED (still in the outbox, as *row: its id, or a new one if it was
 * moved back from the dead letters), RETRYING (a dead letter, *row, that
 * the relay retries: refused fewer than max_attempts times), PARKED
 * (reason into reason), CONFIRMED (gone, and at or below the confirmed
 * prefix: the stored one or confirmed, what main knows now), PURGED (a
 * dead letter since purged), UNKNOWN (never given out, or lost).
 */
enum outbox_fate {
	OUTBOX_FATE_UNKNOWN = 0,
	OUTBOX_FATE_QUEUED,
	OUTBOX_FATE_RETRYING,
	OUTBOX_FATE_PARKED,
	OUTBOX_FATE_CONFIRMED,
	OUTBOX_FATE_PURGED,
};
enum outbox_fate outbox_fate_of(struct outbox *ob, int64_t id,
	    int64_t confirmed, unsigned max_attempts, int64_t *row,
	    char *reason, size_t n);
/* 1 with dead letter id's reason in buf; 0 when id is no dead letter. */
int	 outbox_dead_reason(struct outbox *ob, int64_t id, char *buf, size_t n);
/* Last SQLite error text. */
const char *outbox_errmsg(const struct outbox *ob);

/*
 * Dead letters: messages the broker refused for good, parked with the reason.
 * Each of these runs in its own transaction: never call them while a group
 * commit is open (ingress.c queues them until it is not).
 */

/*
 * Move outbox row id into the dead-letter table with reason, and attempts
 * added to those the row had (outbox_dead_requeue()): the sum in *total.
 * The row keeps its message-id: when the props have none, the generated
 * "<instance>-<id>" is written into the parked props, so a replay publishes
 * the same id.  A row that is already gone is not an error (OUTBOX_OK,
 * *total OUTBOX_NOT_PARKED).  attempts 0 parks it for good without
 * counting an attempt (the relay does not retry it: an expired message).
 */
#define OUTBOX_NOT_PARKED	UINT_MAX
int	 outbox_park(struct outbox *ob, int64_t id, unsigned attempts,
	    const char *reason, int64_t now_ms, unsigned *total);
/*
 * The dead-letter table's limit in bytes (0: none, the default).  A park
 * that would take the table past it is refused with OUTBOX_EDEADFULL and
 * changes nothing: the row stays in the outbox.  A dead letter larger than
 * the whole limit is still parked into an empty table, so every refused
 * message can be parked eventually.
 */
void	 outbox_set_dead_limit(struct outbox *ob, uint64_t max_bytes);
/*
 * A sync of the outbox failed (SQLITE_IOERR_FSYNC): what the kernel could
 * not write it may have dropped, and a later sync may report success
 * anyway (PostgreSQL's "fsyncgate").  From then on outbox_sync_failed() is
 * 1 and fn(arg), set by outbox_on_sync_failure(), has been called once,
 * from the failing call: the owner stops writing and starts again from
 * the file on disk (pubrelayd exits 74).  Before fn is called the failed
 * commit is cut from the write-ahead log, where it would otherwise come
 * back at the next open although its clients were refused;
 * outbox_sync_cut() says whether that worked, for the log.
 */
int	 outbox_sync_failed(const struct outbox *ob);
const char *outbox_sync_cut(const struct outbox *ob);
void	 outbox_on_sync_failure(struct outbox *ob, void (*fn)(void *),
	    void *arg);
/*
 * pubrelayd --check-outbox: open path read-only (safe beside a running
 * daemon), write "name value" lines of its counts and sizes to out, then
 * SQLite's integrity check: "problem ..." lines and "integrity ok" or
 * "integrity FAILED".  The number of problems; -1 with err when the file
 * cannot be read as an outbox.
 */
int	 outbox_check(const char *path, FILE *out, char *err, size_t errlen);
/*
 * How many purged dead letters STATUS tells apart from confirmed ones
 * (default OUTBOX_FORGOTTEN_MAX); older purges make a gone id "unknown".
 */
#define OUTBOX_FORGOTTEN_MAX	100000
void	 outbox_set_forgotten_max(struct outbox *ob, uint64_t n);

struct outbox_dead {
	int64_t		 id;		/* its outbox id when it was parked */
	int64_t		 created_ms;
	int64_t		 parked_ms;
	unsigned	 attempts;
	const char	*reason;
	const char	*props;
	size_t		 plen;
	const void	*body;
	size_t		 blen;
};
typedef int (*outbox_dead_fn)(void *arg, const struct outbox_dead *d);

/*
 * Dead letters with id > after, in id order, at most max; count or -1.
 * Without with_body, body is NULL and only blen is set: a listing then
 * reads no message bodies (SQLite takes a blob's length from the record
 * header), so a large dead table does not stall the ingress thread.
 */
int	 outbox_dead_foreach(struct outbox *ob, int64_t after, int max,
	    int with_body, outbox_dead_fn fn, void *arg);
/*
 * Replay: move dead letter id (0: all, in id order) back to the tail of the
 * outbox, as new rows.  *n gets how many moved (0: no such dead letter).
 */
int	 outbox_dead_retry(struct outbox *ob, int64_t id, int64_t now_ms,
	    uint64_t *n);
/*
 * Like outbox_dead_retry() of one dead letter, keeping its attempts: the
 * relay's own retry of a refused message, which max_attempts bounds.  Only
 * within room bytes (UINT64_MAX: no limit): OUTBOX_EFULL when it does not
 * fit.
 */
int	 outbox_dead_requeue(struct outbox *ob, int64_t id, int64_t now_ms,
	    uint64_t room, uint64_t *n);
/* Delete dead letter id (0: all); *n gets how many were deleted. */
int	 outbox_dead_purge(struct outbox *ob, int64_t id, uint64_t *n);

/*
 * One bounded step of a retry or purge: the dead letters with after < id <=
 * upto, lowest id first, in one transaction of at most max_rows rows and
 * max_bytes bytes (the first row goes whatever its size, so one large dead
 * letter is a batch of its own).  For a retry, room is a hard limit (the
 * room left under the outbox's max_bytes; UINT64_MAX: none): a row that
 * would exceed it stops the batch, before it or as its first row, and sets
 * full.  more says that rows in the range are left after this batch.
 */
struct outbox_dead_batch {
	int64_t		 after, upto;		/* in: the ids, (after, upto] */
	uint64_t	 max_rows, max_bytes;	/* in: the batch's size */
	uint64_t	 room;			/* in: retry only, hard */
	uint64_t	 rows, bytes;		/* out: moved or deleted */
	int64_t		 last;			/* out: the last id taken */
	int		 more;			/* out: rows in range are left */
	int		 full;			/* out: stopped by room */
	int		 keep_attempts;		/* in: retry: the relay's own */
};
int	 outbox_dead_step(struct outbox *ob, int retry, int64_t now_ms,
	    struct outbox_dead_batch *b);
/* The highest id in the dead-letter table, 0 when empty, -1 on error. */
int64_t	 outbox_dead_last(struct outbox *ob);
/*
 * Delete the confirmed rows with after < id <= upto except the nkeep ids
 * in keep (ascending): refused rows that wait for room in the dead-letter
 * table, in one transaction.  outbox_delete_upto() is the usual way; this
 * one is for while rows wait.
 */
int	 outbox_delete_around(struct outbox *ob, int64_t after, int64_t upto,
	    const int64_t *keep, size_t nkeep);
/* Running totals of the dead-letter table. */
uint64_t outbox_dead_rows(const struct outbox *ob);
uint64_t outbox_dead_bytes(const struct outbox *ob);

/*
 * Idempotency keys: a client's key and the message-id its first OK named,
 * written in the group commit that holds its row, so both are durable or
 * neither is.  They outlive the row: a repeat after the row was confirmed
 * and deleted is still known.
 */

/*
 * Look key up, the open transaction's own keys included (the fingerprints
 * in memory answer for a new key; a possible repeat first brings the key
 * table up to date): 1 when it is
 * there with created >= since_ms (its message-id into mid, NUL-terminated,
 * cut to midlen - 1 bytes, and its row into *idp unless idp is NULL), 2
 * when it is there but older (expired, not yet pruned), 0 when unknown, -1
 * on error.
 */
int	 outbox_idem_find(struct outbox *ob, const void *key, size_t klen,
	    int64_t since_ms, char *mid, size_t midlen, int64_t *idp);
/*
 * Row id, inserted in the open transaction, has key: its property block
 * holds it (and the client's message-id, if any), and it goes to the key
 * table when the row leaves the outbox or a lookup needs it.  replace says
 * that an expired entry (outbox_idem_find() 2) goes.  OUTBOX_* status.
 */
int	 outbox_idem_put(struct outbox *ob, const void *key, size_t klen,
	    int64_t id, int replace);
/*
 * Delete, in one short transaction of its own (never while a group commit
 * is open), at most batch keys, oldest first: those beyond max_keys (0: no
 * bound), then those created before before_ms.  *n gets how many went.
 */
int	 outbox_idem_prune(struct outbox *ob, int64_t before_ms,
	    uint64_t max_keys, unsigned batch, uint64_t *n);
/* Keys stored (committed), counted at open and kept up to date. */
uint64_t outbox_idem_keys(const struct outbox *ob);

/* One row as the reader hands it out; pointers valid during the callback. */
struct outbox_row {
	int64_t		 id;
	int64_t		 created_ms;
	const char	*props;
	size_t		 plen;
	const void	*body;
	size_t		 blen;
};
typedef int (*outbox_row_fn)(void *arg, const struct outbox_row *row);

int	 outbox_reader_open(struct outbox_reader **rp, const char *path,
	    char *err, size_t errlen);
void	 outbox_reader_close(struct outbox_reader *r);
/*
 * Call fn for up to max rows with id > after, in id order; fn returning
 * non-zero stops early.  Returns the number of rows handed out, or -1.
 */
int	 outbox_reader_fetch(struct outbox_reader *r, int64_t after, int max,
	    outbox_row_fn fn, void *arg);
const char *outbox_reader_errmsg(const struct outbox_reader *r);

#endif
