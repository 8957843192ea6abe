/*
 * ingress.c: group commit, deletion of confirmed rows, the STATS values.
 * The dead letters are dead.c's: it learns from here when no commit is open.
 *
 * The commit event is activated by the first insert of a loop turn; libevent
 * queues it behind the read callbacks already active in that turn, so every
 * message parsed in the turn shares one transaction (and one fsync).
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <event2/buffer.h>
#include <event2/event.h>

#include "config.h"
#include "dead.h"
#include "ingress.h"
#include "log.h"
#include "metrics.h"
#include "outbox.h"
#include "protocol.h"
#include "receipt.h"
#include "stats.h"
#include "users.h"
#include "util.h"

#define INGRESS_DELETE_DELAY_MS	100	/* batch deletes of confirmed rows */
#define INGRESS_DELETE_RETRY_MS	1000	/* after a failed delete */
/*
 * Idempotency keys go in short transactions between group commits: at most
 * a batch at a time, a second apart, or soon after a full batch.
 */
#define INGRESS_PRUNE_MS	1000
#define INGRESS_PRUNE_SOON_MS	10
#define INGRESS_PRUNE_BATCH	2000
/* The OK's message-id: a client's (a short string) or "<instance>-<id>". */
#define INGRESS_MID_MAX		(PROTO_SHORTSTR_MAX + 1)
struct ingress {
	struct event_base	*base;
	struct outbox		*ob;
	const struct config	*cf;
	struct relay_stats	*st;
	struct ingress_link	 link;		/* the broker side, as main wired it */
	struct users		*users;		/* per-uid connections and bytes */
	struct buf		 stamped;	/* a block with provenance */
	struct event		*ev_commit;
	struct event		*ev_delete;
	struct event		*ev_prune;	/* idempotency keys */
	int			 prune_due;
	int			 prune_logged;
	uint64_t		 idem_hits;	/* STATS idempotency_hits */
	unsigned		 tx_hits;	/* of the open transaction */
	int			 in_tx;
	int			 tx_failed;	/* OUTBOX_E*: rolled back */
	unsigned		 tx_count;
	uint64_t		 tx_bytes;
	uint64_t		 wal_excess;	/* outbox_wal_excess(), per turn */
	time_t			 wal_reclaimed;	/* last outbox_reclaim_wal() */
	ingress_done_fn		 done;		/* tells a waiter, as main wired it */
	void			**waiting;	/* waiters: held OKs, DEAD */
	size_t			 nwaiting, capwaiting;
	int64_t			 delete_upto;	/* confirmed, to delete */
	int64_t			 deleted_upto;
	int			 delete_due;
	int			 full_logged;
	int			 disk_logged;	/* below min_free */
	int			 delete_logged;
	int			 begin_logged;	/* a failed BEGIN, logged */
	int			 fail_logged;	/* a failing write, logged */
	struct dead		*dead;		/* dead letters */
	time_t			 started;
	uint64_t		 deleted;	/* rows deleted as confirmed */
	struct receipts		*receipts;	/* confirm: and WAIT */
	int64_t			 last_id;	/* the last row inserted */
	int64_t			 tx_last_id;	/* ... in the open transaction */
	int64_t			 committed_id;	/* ... and committed */
};

static void ingress_commit_cb(evutil_socket_t, short, void *);

/* New rows for the broker side. */
static void
ingress_wake_link(struct ingress *ing)
{
	if (ing->link.wake != NULL)
		ing->link.wake(ing->link.arg);
}

static void ingress_delete_cb(evutil_socket_t, short, void *);
static void ingress_prune_cb(evutil_socket_t, short, void *);

/* The dead letters' hooks: dead.h. */
static int
ingress_tx_open(void *arg)
{
	struct ingress	*ing = arg;

	return ing->in_tx;
}

static void
ingress_wake_cb(void *arg)
{
	ingress_wake_link(arg);
}

/* A dead letter parked for good: its receipts are told. */
static void
ingress_fate_cb(void *arg, int64_t id, const char *reason)
{
	struct ingress	*ing = arg;

	receipts_parked(ing->receipts, id, reason);
	/* No confirm may follow: the prefix passed it when it was refused. */
	receipts_check(ing->receipts);
}

/* The relay retries a dead letter: its receipts wait for the new row. */
static void
ingress_moved_cb(void *arg, int64_t from, int64_t to)
{
	struct ingress	*ing = arg;

	receipts_moved(ing->receipts, from, to);
}

/*
 * Resume the waiters told to wait and ask again by a DEAD command (no
 * transaction is open, so none of them holds an OK).
 */
static void
ingress_resume_cb(void *arg)
{
	struct ingress	 *ing = arg;
	void		**list;
	size_t		  i, n;

	list = ing->waiting;
	n = ing->nwaiting;
	ing->waiting = NULL;
	ing->nwaiting = ing->capwaiting = 0;
	for (i = 0; i < n; i++)
		if (list[i] != NULL)
			ing->done(list[i], 1, NULL, NULL);
	free(list);
}

/* Receipts started or stopped waiting: tell the broker side. */
static void
ingress_eager(void *arg, int on)
{
	struct ingress	*ing = arg;

	if (ing->link.eager != NULL)
		ing->link.eager(ing->link.arg, on);
}

struct ingress *
ingress_new(struct event_base *base, struct outbox *ob, const struct config *cf,
    struct relay_stats *st, ingress_done_fn done)
{
	struct ingress		*ing;
	struct dead_hooks	 hooks;

	ing = xcalloc(1, sizeof(*ing));
	buf_init(&ing->stamped);
	ing->done = done;
	ing->base = base;
	ing->ob = ob;
	ing->cf = cf;
	ing->st = st;
	ing->started = time(NULL);
	ing->users = users_new();

	ing->ev_commit = event_new(base, -1, 0, ingress_commit_cb, ing);
	ing->ev_delete = evtimer_new(base, ingress_delete_cb, ing);
	ing->ev_prune = evtimer_new(base, ingress_prune_cb, ing);
	if (ing->ev_commit == NULL || ing->ev_delete == NULL ||
	    ing->ev_prune == NULL)
		abort();
	{
		struct timeval tv = { INGRESS_PRUNE_MS / 1000, 0 };

		evtimer_add(ing->ev_prune, &tv);
	}
	hooks.tx_open = ingress_tx_open;
	hooks.wake = ingress_wake_cb;
	hooks.resume = ingress_resume_cb;
	hooks.fate = ingress_fate_cb;
	hooks.moved = ingress_moved_cb;
	hooks.arg = ing;
	/* Before the dead letters, which may tell them at once. */
	ing->receipts = receipts_new(base, ob, cf->max_attempts);
	ing->dead = dead_new(base, ob, cf, &hooks);
	receipts_on_waiting(ing->receipts, ingress_eager, ing);
	ing->committed_id = outbox_last_id(ob);
	return ing;
}

struct event_base *
ingress_base(struct ingress *ing)
{
	return ing->base;
}

struct users *
ingress_users(struct ingress *ing)
{
	return ing->users;
}

struct dead *
ingress_dead(struct ingress *ing)
{
	return ing->dead;
}

struct receipts *
ingress_receipts(struct ingress *ing)
{
	return ing->receipts;
}

int64_t
ingress_inserted_id(const struct ingress *ing)
{
	return ing->last_id;
}

int64_t
ingress_committed_id(const struct ingress *ing)
{
	return ing->committed_id;
}

enum ingress_fate
ingress_status(struct ingress *ing, const char *mid, size_t len,
    char *reason, size_t n)
{
	const char	*inst = outbox_instance(ing->ob);
	size_t		 ilen = strlen(inst), i;
	int64_t		 id = 0, row;
	int		 state;

	/* Only the ids this outbox generates name a row: <instance>-<id>. */
	if (len <= ilen + 1 || len > ilen + 1 + 18 ||
	    memcmp(mid, inst, ilen) != 0 || mid[ilen] != '-' ||
	    mid[ilen + 1] == '0')
		return INGRESS_UNKNOWN;
	for (i = ilen + 1; i < len; i++) {
		if (mid[i] < '0' || mid[i] > '9')
			return INGRESS_UNKNOWN;
		id = id * 10 + (mid[i] - '0');
	}
	switch (outbox_fate_of(ing->ob, id, ing->delete_upto,
	    ing->cf->max_attempts, &row, reason, n)) {
	case OUTBOX_FATE_RETRYING:
		/* A dead letter the relay retries: it waits to be sent. */
		return INGRESS_QUEUED;
	case OUTBOX_FATE_QUEUED:
		/* Confirmed, its delete batched; or sent on this link. */
		if (row <= ing->delete_upto)
			return INGRESS_CONFIRMED;
		state = atomic_load(&ing->st->link_state);
		if ((state == LINK_CONNECTED || state == LINK_BLOCKED) &&
		    row <= atomic_load(&ing->st->sent_id))
			return INGRESS_INFLIGHT;
		return INGRESS_QUEUED;
	case OUTBOX_FATE_PARKED:
		return INGRESS_PARKED;
	case OUTBOX_FATE_CONFIRMED:
		return INGRESS_CONFIRMED;
	case OUTBOX_FATE_PURGED:	/* STATUS: it cannot say now */
	case OUTBOX_FATE_UNKNOWN:
	default:
		return INGRESS_UNKNOWN;
	}
}

void
ingress_set_link(struct ingress *ing, const struct ingress_link *link)
{
	if (link != NULL)
		ing->link = *link;
	else
		memset(&ing->link, 0, sizeof(ing->link));
}

void
ingress_free(struct ingress *ing)
{
	if (ing == NULL)
		return;
	buf_free(&ing->stamped);
	event_free(ing->ev_commit);
	event_free(ing->ev_delete);
	event_free(ing->ev_prune);
	dead_free(ing->dead);
	receipts_free(ing->receipts);
	free(ing->waiting);
	users_free(ing->users);
	free(ing);
}

static int64_t
ingress_now_ms(void)
{
	struct timespec	ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static const char *
ingress_store_error(struct ingress *ing, int status, const char **code,
    char *err, size_t errlen)
{
	*code = proto_store_error(status == OUTBOX_EFULL,
	    outbox_errmsg(ing->ob), err, errlen);
	return *code;
}

/*
 * u is over max_bytes_per_user: a warning, then at most one a minute for
 * that uid however long its producer keeps trying.
 */
static void
ingress_user_full_log(struct ingress *ing, struct user *u)
{
	struct timespec	now;
	unsigned long	quiet;

	clock_gettime(CLOCK_MONOTONIC, &now);
	if (!users_log_due(user_full_log(u), now.tv_sec, USERS_LOG_S, &quiet))
		return;
	if (quiet > 0)
		log_warnx("uid %ld: outbox share full (max_bytes_per_user %"
		    PRIu64 "): refusing its messages until the broker drains "
		    "them (%lu more refused since the last such line)",
		    (long)user_uid(u), ing->cf->max_bytes_per_user, quiet);
	else
		log_warnx("uid %ld: outbox share full (max_bytes_per_user %"
		    PRIu64 "): refusing its messages until the broker drains "
		    "them", (long)user_uid(u), ing->cf->max_bytes_per_user);
}

/* The [outbox] max_bytes_per_user check of a message of size bytes of u. */
static int
ingress_user_check(struct ingress *ing, struct user *u, uint64_t size,
    const char **code, char *err, size_t errlen)
{
	uint64_t	max = ing->cf->max_bytes_per_user;

	if (size > max) {
		*code = PROTO_E_TOOBIG;
		snprintf(err, errlen, "message of %" PRIu64 " bytes with its "
		    "properties is larger than one user's share of the outbox "
		    "(max_bytes_per_user %" PRIu64 ")", size, max);
		return -1;
	}
	if (user_bytes(u) + size > max) {
		*code = PROTO_E_FULL;
		snprintf(err, errlen, "outbox share of uid %ld full "
		    "(max_bytes_per_user %" PRIu64 " reached); retry later",
		    (long)user_uid(u), max);
		ingress_user_full_log(ing, u);
		return -1;
	}
	return 0;
}

/* Open the group commit's transaction if none is: 0, or -1 refused. */
static int
ingress_begin(struct ingress *ing, const char **code, char *err,
    size_t errlen)
{
	int	status;

	if (ing->in_tx)
		return 0;
	status = outbox_begin(ing->ob);
	if (status != OUTBOX_OK) {
		/* Once, not once per message refused meanwhile. */
		log_msg(ing->begin_logged ? LOG_DEBUG : LOG_WARNING,
		    "outbox: cannot begin a transaction: %s",
		    outbox_errmsg(ing->ob));
		ing->begin_logged = 1;
		ingress_store_error(ing, status, code, err, errlen);
		return -1;
	}
	if (ing->begin_logged) {
		log_notice("outbox: transactions begin again");
		ing->begin_logged = 0;
	}
	ing->in_tx = 1;
	ing->tx_failed = 0;
	ing->tx_count = 0;
	ing->tx_bytes = 0;
	ing->tx_hits = 0;
	event_active(ing->ev_commit, EV_READ, 0);
	return 0;
}

/*
 * A key seen within the window: the first message's OK again, nothing
 * stored.  It is held on the open transaction like any OK: when the key was
 * written by this same transaction and it fails, both are refused together.
 */
static int
ingress_repeat(struct ingress *ing, const char *mid, int64_t id,
    struct evbuffer *held, const char **code, char *err, size_t errlen)
{
	if (ingress_begin(ing, code, err, errlen) == -1)
		return -1;
	ing->tx_hits++;
	ing->last_id = id;	/* a receipt waits for the first one */
	evbuffer_add_printf(held, "OK %s\n", mid);
	return 0;
}

int
ingress_insert(struct ingress *ing, struct user *u,
    const struct proto_pub *pub, const char *stamp, size_t stamplen,
    struct evbuffer *held, const char **code, char *err, size_t errlen)
{
	const char	*props = pub->props.p != NULL ? pub->props.p : "";
	size_t		 plen = pub->props.len;
	uint64_t	size, avail;
	int64_t		id, now = ingress_now_ms();
	int		status, known = 0;
	int		keyed = pub->idempotency_key.p != NULL &&
			    ing->cf->idem_window_ms > 0;
	char		mid[INGRESS_MID_MAX];

	/*
	 * A repeat is answered before any limit: it adds nothing, and its
	 * producer, retrying, must hear the id it missed, not FULL.
	 */
	if (outbox_sync_failed(ing->ob)) {
		*code = PROTO_E_STORE;
		snprintf(err, errlen, "outbox: a sync of its file failed, what "
		    "was written may be lost; pubrelayd restarts from the disk");
		return -1;
	}
	if (keyed) {
		if (ing->in_tx && ing->tx_failed) {
			ingress_store_error(ing, ing->tx_failed, code, err,
			    errlen);
			return -1;
		}
		known = outbox_idem_find(ing->ob, pub->idempotency_key.p,
		    pub->idempotency_key.len,
		    now - (int64_t)ing->cf->idem_window_ms, mid, sizeof(mid),
		    &id);
		if (known == -1) {
			log_msg(ing->fail_logged++ ? LOG_DEBUG : LOG_WARNING,
			    "outbox: idempotency key lookup failed: %s",
			    outbox_errmsg(ing->ob));
			ingress_store_error(ing, OUTBOX_EIO, code, err, errlen);
			return -1;
		}
		if (known == 1)
			return ingress_repeat(ing, mid, id, held, code, err,
			    errlen);
	}

	if (stamplen > 0) {
		/* The block ends in a newline: the stamp's lines follow. */
		buf_reset(&ing->stamped);
		buf_append(&ing->stamped, props, plen);
		buf_append(&ing->stamped, stamp, stamplen);
		props = ing->stamped.data;
		plen = ing->stamped.len;
	}
	size = outbox_row_size(plen, pub->body.len);
	if (ing->cf->max_bytes > 0 && size > ing->cf->max_bytes) {
		/* Not FULL: it would never fit, so retrying is no use. */
		*code = PROTO_E_TOOBIG;
		snprintf(err, errlen, "message of %" PRIu64 " bytes with its "
		    "properties is larger than the whole outbox (max_bytes %"
		    PRIu64 ")", size, ing->cf->max_bytes);
		return -1;
	}
	/* Never publishable to this broker: not FULL, it would never fit. */
	if (ing->link.fits != NULL &&
	    !ing->link.fits(ing->link.arg, pub, err, errlen)) {
		*code = PROTO_E_TOOBIG;
		return -1;
	}
	/*
	 * The write-ahead log beyond its working size takes disk beside the
	 * rows (a read held open, a checkpoint behind): it counts, so that
	 * producers hear FULL before the disk fills.  One fstat a turn.
	 */
	if (ing->cf->max_bytes > 0 && !ing->in_tx) {
		ing->wal_excess = outbox_wal_excess(ing->ob);
		/*
		 * Nothing written, nothing deleted: no commit starts the log
		 * over.  Once a second, try to give its space back (it works
		 * once the read that held it ended).
		 */
		if (ing->wal_excess > 0 && outbox_bytes(ing->ob) +
		    ing->wal_excess + size > ing->cf->max_bytes &&
		    time(NULL) != ing->wal_reclaimed) {
			ing->wal_reclaimed = time(NULL);
			if (outbox_reclaim_wal(ing->ob, ing->cf->min_free) == 0)
				ing->wal_excess = outbox_wal_excess(ing->ob);
		}
	}
	if (ing->cf->max_bytes > 0 && outbox_bytes(ing->ob) + ing->wal_excess +
	    ing->tx_bytes + size > ing->cf->max_bytes) {
		*code = PROTO_E_FULL;
		if (ing->wal_excess > 0)
			snprintf(err, errlen, "outbox full (max_bytes %" PRIu64
			    " reached, %" PRIu64 " of them the write-ahead log "
			    "beyond its working size); retry later",
			    ing->cf->max_bytes, ing->wal_excess);
		else
			snprintf(err, errlen, "outbox full (max_bytes %" PRIu64
			    " reached); retry later", ing->cf->max_bytes);
		if (!ing->full_logged) {
			log_warnx("outbox full (max_bytes %" PRIu64 ", the "
			    "write-ahead log's excess %" PRIu64 " bytes "
			    "included): refusing messages until the broker "
			    "drains it", ing->cf->max_bytes, ing->wal_excess);
			ing->full_logged = 1;
		}
		return -1;
	}
	/* u is NULL when no per-user limit is set: nothing is counted. */
	if (u != NULL && ing->cf->max_bytes_per_user > 0 &&
	    ingress_user_check(ing, u, size, code, err, errlen) == -1)
		return -1;
	if (ing->in_tx && ing->tx_failed) {
		ingress_store_error(ing, ing->tx_failed, code, err, errlen);
		return -1;
	}
	/*
	 * Once per group commit: one fstatvfs(); the queries for free pages
	 * inside the database run only when the disk itself is short.
	 */
	if (!ing->in_tx && ing->cf->min_free > 0 &&
	    (avail = outbox_free_space(ing->ob)) < ing->cf->min_free &&
	    (avail += outbox_reusable_bytes(ing->ob)) < ing->cf->min_free) {
		*code = PROTO_E_FULL;
		snprintf(err, errlen, "outbox full: %" PRIu64 " bytes free on "
		    "its disk, below min_free %" PRIu64 "; retry later", avail,
		    ing->cf->min_free);
		if (!ing->disk_logged) {
			log_warnx("outbox disk: %" PRIu64 " bytes free, below "
			    "min_free (%" PRIu64 "): refusing messages",
			    avail, ing->cf->min_free);
			ing->disk_logged = 1;
		}
		return -1;
	}
	if (!ing->in_tx) {
		if (ingress_begin(ing, code, err, errlen) == -1)
			return -1;
		if (ing->disk_logged) {
			log_notice("outbox disk has room again");
			ing->disk_logged = 0;
		}
	}
	status = outbox_insert(ing->ob, props, plen, pub->body.p,
	    pub->body.len, now, &id);
	if (status == OUTBOX_OK) {
		if (pub->message_id.p != NULL)
			snprintf(mid, sizeof(mid), "%.*s",
			    (int)pub->message_id.len, pub->message_id.p);
		else
			snprintf(mid, sizeof(mid), "%s-%" PRId64,
			    outbox_instance(ing->ob), id);
		/* In the row's transaction: both are durable, or neither. */
		if (keyed)
			status = outbox_idem_put(ing->ob,
			    pub->idempotency_key.p, pub->idempotency_key.len,
			    id, known == 2);
	}
	if (status != OUTBOX_OK) {
		/*
		 * SQLite may already have rolled the transaction back (disk
		 * full): roll back the whole turn so that no later insert
		 * runs outside it and every message of the turn is refused.
		 */
		log_msg(ing->fail_logged++ ? LOG_DEBUG : LOG_WARNING,
		    "outbox: insert failed: %s", outbox_errmsg(ing->ob));
		ingress_store_error(ing, status, code, err, errlen);
		outbox_rollback(ing->ob);
		ing->tx_failed = status;
		return -1;
	}
	ing->tx_count++;
	ing->tx_bytes += size;
	ing->last_id = ing->tx_last_id = id;
	if (u != NULL && ing->cf->max_bytes_per_user > 0)
		users_insert(ing->users, u, id, size);
	evbuffer_add_printf(held, "OK %s\n", mid);
	return 0;
}

void
ingress_wait(struct ingress *ing, void *s)
{
	if (ing->nwaiting == ing->capwaiting) {
		ing->capwaiting = ing->capwaiting ? ing->capwaiting * 2 : 64;
		ing->waiting = xrealloc(ing->waiting,
		    ing->capwaiting * sizeof(*ing->waiting));
	}
	ing->waiting[ing->nwaiting++] = s;
}

void
ingress_wait_first(struct ingress *ing, void *s)
{
	ingress_wait(ing, s);
	memmove(ing->waiting + 1, ing->waiting,
	    (ing->nwaiting - 1) * sizeof(*ing->waiting));
	ing->waiting[0] = s;
}

void
ingress_forget(struct ingress *ing, void *s)
{
	size_t	i;

	for (i = 0; i < ing->nwaiting; i++)
		if (ing->waiting[i] == s)
			ing->waiting[i] = NULL;
	dead_forget(ing->dead, s);
}

static void
ingress_delete(struct ingress *ing)
{
	struct timeval	 soon = { 0, INGRESS_DELETE_DELAY_MS * 1000 };
	uint64_t	 before;
	int64_t		 upto, kept, *keep;
	size_t		 nkeep;
	int		 status;

	ing->delete_due = 0;
	/* Nothing more is written: the next start deletes them. */
	if (outbox_sync_failed(ing->ob))
		return;
	upto = ing->delete_upto;
	/*
	 * Rows waiting to be parked stay (deleted around while the dead-letter
	 * table is full, else upto stops below them): try again soon.
	 */
	nkeep = dead_hold(ing->dead, &upto, &keep);
	if (nkeep > 0)
		evtimer_add(ing->ev_delete, &soon);
	if (upto <= ing->deleted_upto) {
		free(keep);
		return;
	}
	/* The lowest row deleted around, if any. */
	kept = keep != NULL ? keep[0] : INT64_MAX;
	before = outbox_rows(ing->ob);
	/*
	 * While refused rows wait for room in the dead-letter table, the
	 * confirmed ones around them go as usual: the outbox then holds only
	 * what waits (in max_bytes) and what the broker has not confirmed.
	 */
	status = keep != NULL ? outbox_delete_around(ing->ob, ing->deleted_upto,
	    upto, keep, nkeep) : outbox_delete_upto(ing->ob, upto);
	free(keep);
	if (status != OUTBOX_OK) {
		struct timeval tv = { INGRESS_DELETE_RETRY_MS / 1000,
		    (INGRESS_DELETE_RETRY_MS % 1000) * 1000 };

		/*
		 * Harmless for the messages (they are confirmed), but a full
		 * disk stays full until they go: move the write-ahead log into
		 * the database and try again soon, not only at the next confirm.
		 */
		log_msg(ing->delete_logged++ ? LOG_DEBUG : LOG_WARNING,
		    "outbox: cannot delete confirmed rows: %s; retrying",
		    outbox_errmsg(ing->ob));
		outbox_checkpoint(ing->ob);
		evtimer_add(ing->ev_delete, &tv);
		return;
	}
	if (ing->delete_logged) {
		log_notice("outbox: confirmed rows deleted again");
		ing->delete_logged = 0;
	}
	/* Short of disk: give the write-ahead log's space back too. */
	if (ing->disk_logged)
		outbox_checkpoint(ing->ob);
	ing->deleted_upto = upto;
	ing->deleted += before - outbox_rows(ing->ob);
	/* A row deleted around is still its user's. */
	users_deleted(ing->users, kept <= upto ? kept - 1 : upto);
	if (ing->full_logged && (ing->cf->max_bytes == 0 ||
	    outbox_bytes(ing->ob) < ing->cf->max_bytes)) {
		log_notice("outbox has room again");
		ing->full_logged = 0;
	}
}

/*
 * Forget the idempotency keys past the window, and the oldest beyond
 * idempotency_max_keys, a batch at a time.  With the window at 0, every
 * key goes.
 */
static void
ingress_prune(struct ingress *ing)
{
	struct timeval	tv = { INGRESS_PRUNE_MS / 1000, 0 };
	uint64_t	n = 0;
	int		status;

	ing->prune_due = 0;
	if (outbox_idem_keys(ing->ob) > 0) {
		status = outbox_idem_prune(ing->ob, ingress_now_ms() -
		    (int64_t)ing->cf->idem_window_ms, ing->cf->idem_max_keys,
		    INGRESS_PRUNE_BATCH, &n);
		if (status != OUTBOX_OK)
			log_msg(ing->prune_logged++ ? LOG_DEBUG : LOG_WARNING,
			    "outbox: cannot delete old idempotency keys: %s; "
			    "retrying", outbox_errmsg(ing->ob));
		else if (ing->prune_logged) {
			log_notice("outbox: old idempotency keys deleted "
			    "again");
			ing->prune_logged = 0;
		}
		if (n == INGRESS_PRUNE_BATCH) {
			tv.tv_sec = 0;
			tv.tv_usec = INGRESS_PRUNE_SOON_MS * 1000;
		}
	}
	evtimer_add(ing->ev_prune, &tv);
}

static void
ingress_prune_cb(evutil_socket_t fd, short what, void *arg)
{
	struct ingress	*ing = arg;

	(void)fd;
	(void)what;
	if (ing->in_tx)
		ing->prune_due = 1;	/* done right after the commit */
	else
		ingress_prune(ing);
}

static void
ingress_commit(struct ingress *ing)
{
	void		**list;
	const char	*code = NULL;
	char		 err[256];
	size_t		 i, n;
	int		 status, ok;

	if (!ing->in_tx)
		return;
	status = ing->tx_failed ? ing->tx_failed : outbox_commit(ing->ob);
	ing->in_tx = 0;
	ing->tx_failed = 0;
	ok = status == OUTBOX_OK;
	if (ok) {
		atomic_fetch_add(&ing->st->accepted, ing->tx_count);
		if (ing->tx_last_id > ing->committed_id)
			ing->committed_id = ing->tx_last_id;
		ing->idem_hits += ing->tx_hits;
		if (ing->fail_logged) {
			log_notice("outbox writes succeed again");
			ing->fail_logged = 0;
		}
	} else {
		/* Once per episode: a full disk fails every turn. */
		log_msg(ing->fail_logged++ ? LOG_DEBUG : LOG_WARNING,
		    "outbox: transaction of %u messages failed: %s",
		    ing->tx_count, outbox_errmsg(ing->ob));
		ingress_store_error(ing, status, &code, err, sizeof(err));
	}
	/*
	 * The turn's bytes are in outbox_bytes() now (or gone): the max_bytes
	 * check between transactions must not count them again.
	 */
	ing->tx_count = 0;
	ing->tx_bytes = 0;
	ing->tx_hits = 0;
	users_commit(ing->users, ok);

	dead_run_parks(ing->dead);

	/* Sessions resumed below may open the next transaction. */
	list = ing->waiting;
	n = ing->nwaiting;
	ing->waiting = NULL;
	ing->nwaiting = ing->capwaiting = 0;
	for (i = 0; i < n; i++) {
		if (list[i] == NULL)
			continue;
		/*
		 * Only list[i] itself can be freed by its own processing, and
		 * waiters freed before the commit were cleared by
		 * ingress_forget().
		 */
		ing->done(list[i], ok, code, err);
	}
	free(list);

	if (ok)
		ingress_wake_link(ing);
	dead_run_parks(ing->dead);	/* unless a session opened one */
	receipts_check(ing->receipts);	/* parks may have moved rows */
	if (ing->delete_due && !ing->in_tx)
		ingress_delete(ing);
	if (ing->prune_due && !ing->in_tx)
		ingress_prune(ing);
}

static void
ingress_commit_cb(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	ingress_commit(arg);
}

void
ingress_flush(struct ingress *ing)
{
	ingress_commit(ing);
}

static void
ingress_delete_cb(evutil_socket_t fd, short what, void *arg)
{
	struct ingress	*ing = arg;

	(void)fd;
	(void)what;
	if (ing->in_tx)
		ing->delete_due = 1;	/* done right after the commit */
	else
		ingress_delete(ing);
}

void
ingress_confirmed(struct ingress *ing, int64_t upto)
{
	struct timeval	tv = { 0, INGRESS_DELETE_DELAY_MS * 1000 };

	receipts_confirmed(ing->receipts, upto);
	if (upto <= ing->delete_upto)
		return;
	ing->delete_upto = upto;
	if (!evtimer_pending(ing->ev_delete, NULL))
		evtimer_add(ing->ev_delete, &tv);
}

void
ingress_delete_now(struct ingress *ing, int64_t upto)
{
	if (upto > ing->delete_upto)
		ing->delete_upto = upto;
	if (!ing->in_tx)
		ingress_delete(ing);
}

void
ingress_stats(struct ingress *ing, struct metrics_snap *m)
{
	struct relay_stats	*st = ing->st;
	int64_t			 oldest, age = 0;
	uint64_t		 confirmed, pending, backlog, blocked;
	int64_t			 since, now_mono;
	struct timespec		 mono;
	int			 state;

	memset(m, 0, sizeof(*m));
	pthread_mutex_lock(&st->lock);
	snprintf(m->str[M_BROKER], sizeof(m->str[M_BROKER]), "%s", st->broker);
	snprintf(m->str[M_LAST_ERROR], sizeof(m->str[M_LAST_ERROR]), "%s",
	    st->last_error);
	pthread_mutex_unlock(&st->lock);

	oldest = outbox_oldest_ms(ing->ob);
	if (oldest >= 0) {
		age = ingress_now_ms() - oldest;
		if (age < 0)
			age = 0;
	}
	state = atomic_load(&st->link_state);
	if (state < 0 || state > LINK_STOPPED)
		state = LINK_DISCONNECTED;
	snprintf(m->str[M_STATE], sizeof(m->str[M_STATE]), "%s",
	    proto_link_state(state));

	m->v[M_OUTBOX_MESSAGES] = outbox_rows(ing->ob);
	/*
	 * Rows still stored, less those confirmed and waiting for their
	 * batched delete (every row deleted was confirmed in this run).
	 */
	confirmed = atomic_load(&st->confirmed);
	pending = confirmed > ing->deleted ? confirmed - ing->deleted : 0;
	backlog = m->v[M_OUTBOX_MESSAGES];
	m->v[M_BACKLOG] = backlog > pending ? backlog - pending : 0;
	m->v[M_OUTBOX_BYTES] = outbox_bytes(ing->ob);
	m->v[M_OUTBOX_MAX_BYTES] = ing->cf->max_bytes;
	m->v[M_OLDEST_AGE_MS] = (uint64_t)age;
	m->v[M_IN_FLIGHT] = atomic_load(&st->in_flight);
	m->v[M_ACCEPTED] = atomic_load(&st->accepted);
	m->v[M_REFUSED] = atomic_load(&st->refused);
	m->v[M_PUBLISHED] = atomic_load(&st->published);
	m->v[M_CONFIRMED] = confirmed;
	m->v[M_NACKED] = atomic_load(&st->nacked);
	m->v[M_RETURNED] = atomic_load(&st->returned);
	m->v[M_PARKED] = atomic_load(&st->parked);
	m->v[M_EXPIRED] = atomic_load(&st->expired);
	m->v[M_DEAD_MESSAGES] = outbox_dead_rows(ing->ob);
	m->v[M_DEAD_BYTES] = outbox_dead_bytes(ing->ob);
	m->v[M_DEAD_MAX_BYTES] = ing->cf->dead_max_bytes;
	m->v[M_DEAD_WAITING] = dead_waiting(ing->dead);
	m->v[M_IDEM_KEYS] = outbox_idem_keys(ing->ob);
	m->v[M_IDEM_HITS] = ing->idem_hits;
	m->v[M_RECONNECTS] = atomic_load(&st->reconnects);
	blocked = atomic_load(&st->blocked_ms);
	since = atomic_load(&st->blocked_since);
	if (since > 0) {
		clock_gettime(CLOCK_MONOTONIC, &mono);
		now_mono = (int64_t)mono.tv_sec * 1000 + mono.tv_nsec / 1000000;
		if (now_mono > since)
			blocked += (uint64_t)(now_mono - since);
	}
	m->v[M_BLOCKED_MS] = blocked;
	m->v[M_CONFIRM_MS_SUM] = atomic_load(&st->confirm_ms_sum);
	m->v[M_CONFIRM_COUNT] = atomic_load(&st->confirm_count);
	m->v[M_CLIENTS_REFUSED] = atomic_load(&st->clients_refused);
	m->v[M_RECEIPTS_WAITING] = receipts_waiting(ing->receipts);
	if (time(NULL) > ing->started)
		m->v[M_UPTIME_S] = (uint64_t)(time(NULL) - ing->started);
}

void
ingress_count_refused(struct ingress *ing)
{
	atomic_fetch_add(&ing->st->refused, 1);
}

void
ingress_count_client_refused(struct ingress *ing)
{
	atomic_fetch_add(&ing->st->clients_refused, 1);
}
