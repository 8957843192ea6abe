/*
 * ingress.c: group commit, deletion of confirmed rows, the STATS values.
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
#include "ingress.h"
#include "log.h"
#include "metrics.h"
#include "outbox.h"
#include "protocol.h"
#include "stats.h"
#include "users.h"
#include "util.h"

#define INGRESS_DELETE_DELAY_MS	100	/* batch deletes of confirmed rows */
#define INGRESS_DELETE_RETRY_MS	1000	/* after a failed delete */
#define INGRESS_REQUEUE_MAX	64	/* dead letters retried per turn */
#define INGRESS_PARK_LOGS	10	/* parked for good: lines a minute */
/*
 * DEAD LIST replies are pages of at most this much (or max_buffer's room):
 * formatting one is a few ms of the main thread at most.
 */
#define INGRESS_DEAD_PAGE_BYTES	(256 * 1024)
/*
 * DEAD RETRY/PURGE ALL go a transaction of at most this much per loop
 * turn, so the other clients are served between two of them: 2-5 ms for
 * rows of 2 KiB with sync = normal on a small machine (more when SQLite's
 * automatic checkpoint falls into one, as for any commit).
 */
#define INGRESS_DEAD_BATCH_ROWS	256
#define INGRESS_DEAD_BATCH_BYTES (512 * 1024)

struct ingress_park {
	int64_t		 id;
	unsigned	 attempts;
	char		*reason;
};

/* A dead letter the relay retries on its own, and when. */
struct ingress_retry {
	int64_t		 id;
	int64_t		 due_ms;	/* CLOCK_REALTIME, like parked times */
};

/* A DEAD RETRY/PURGE ALL under way, one batch at a time; one at a time. */
struct ingress_job {
	void		*s;		/* who asked (a waiter); NULL: none */
	int		 retry;		/* or purge */
	int64_t		 after;		/* ids up to it are done */
	int64_t		 upto;		/* the last id parked when it began */
	uint64_t	 done;		/* rows moved or deleted */
};

struct ingress {
	struct event_base	*base;
	struct outbox		*ob;
	const struct config	*cf;
	struct relay_stats	*st;
	struct ingress_link	 link;		/* the broker side, as main wired it */
	struct users		*users;		/* per-uid connections and bytes */
	struct event		*ev_commit;
	struct event		*ev_delete;
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
	int			 park_logged;	/* a failed park, logged */
	int			 begin_logged;	/* a failed BEGIN, logged */
	int			 fail_logged;	/* a failing write, logged */
	struct ingress_park	*parks;		/* waiting for no open commit */
	size_t			 nparks, capparks;
	struct ingress_retry	*retries;	/* ingress_retry_cb() */
	size_t			 nretries, capretries;
	struct event		*ev_retry;
	unsigned		 retry_logged;	/* a retry that failed, said */
	time_t			 park_log_minute;	/* parked for good: */
	unsigned		 park_log_n, park_log_quiet;	/* lines, not */
	int			 dead_full;	/* a park found the table full */
	uint64_t		 dead_full_at;	/* its dead_bytes then */
	struct ingress_job	 job;
	struct event		*ev_dead;	/* the job's next batch */
	time_t			 started;
	uint64_t		 deleted;	/* rows deleted as confirmed */
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
static void ingress_retry_cb(evutil_socket_t, short, void *);
static uint64_t ingress_room(struct ingress *);
static void ingress_load_retries(struct ingress *);
static void ingress_dead_cb(evutil_socket_t, short, void *);

struct ingress *
ingress_new(struct event_base *base, struct outbox *ob, const struct config *cf,
    struct relay_stats *st, ingress_done_fn done)
{
	struct ingress	*ing;

	ing = xcalloc(1, sizeof(*ing));
	ing->done = done;
	ing->base = base;
	ing->ob = ob;
	ing->cf = cf;
	ing->st = st;
	ing->started = time(NULL);
	ing->users = users_new();

	ing->ev_commit = event_new(base, -1, 0, ingress_commit_cb, ing);
	ing->ev_delete = evtimer_new(base, ingress_delete_cb, ing);
	ing->ev_retry = evtimer_new(base, ingress_retry_cb, ing);
	ing->ev_dead = evtimer_new(base, ingress_dead_cb, ing);
	if (ing->ev_commit == NULL || ing->ev_delete == NULL ||
	    ing->ev_retry == NULL || ing->ev_dead == NULL)
		abort();
	outbox_set_dead_limit(ob, cf->dead_max_bytes);
	ingress_load_retries(ing);
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
	event_free(ing->ev_commit);
	event_free(ing->ev_delete);
	event_free(ing->ev_retry);
	free(ing->retries);
	event_free(ing->ev_dead);
	free(ing->waiting);
	while (ing->nparks > 0)
		free(ing->parks[--ing->nparks].reason);
	free(ing->parks);
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
	if (status == OUTBOX_EFULL) {
		*code = PROTO_E_FULL;
		snprintf(err, errlen, "outbox full: disk full (%s); retry later",
		    outbox_errmsg(ing->ob));
	} else {
		*code = PROTO_E_STORE;
		snprintf(err, errlen, "outbox write failed (%s); retry later",
		    outbox_errmsg(ing->ob));
	}
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

int
ingress_insert(struct ingress *ing, struct user *u,
    const struct proto_pub *pub, struct evbuffer *held, const char **code,
    char *err, size_t errlen)
{
	uint64_t	size, avail;
	int64_t		id;
	int		status;

	size = outbox_row_size(pub->props.len, pub->body.len);
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
		if (ing->disk_logged) {
			log_notice("outbox disk has room again");
			ing->disk_logged = 0;
		}
		ing->in_tx = 1;
		ing->tx_failed = 0;
		ing->tx_count = 0;
		ing->tx_bytes = 0;
		event_active(ing->ev_commit, EV_READ, 0);
	}
	status = outbox_insert(ing->ob, pub->props.p ? pub->props.p : "",
	    pub->props.len, pub->body.p, pub->body.len, ingress_now_ms(), &id);
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
	if (u != NULL && ing->cf->max_bytes_per_user > 0)
		users_insert(ing->users, u, id, size);
	if (pub->message_id.p != NULL)
		evbuffer_add_printf(held, "OK %.*s\n", (int)pub->message_id.len,
		    pub->message_id.p);
	else
		evbuffer_add_printf(held, "OK %s-%" PRId64 "\n",
		    outbox_instance(ing->ob), id);
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

/* Wait before the relay's own retry of a message refused n times. */
static uint64_t
ingress_retry_delay(const struct config *cf, unsigned n)
{
	uint64_t	d = cf->reconnect_min_ms;

	while (--n > 0 && d < cf->reconnect_max_ms)
		d *= 2;
	return d < cf->reconnect_max_ms ? d : cf->reconnect_max_ms;
}

/*
 * The schedule is a binary min-heap on due_ms: a burst of refusals adds
 * thousands of entries, and each park and each pass must cost O(log n),
 * not a scan of them all.
 */
static void
ingress_retry_swap(struct ingress *ing, size_t a, size_t b)
{
	struct ingress_retry	t = ing->retries[a];

	ing->retries[a] = ing->retries[b];
	ing->retries[b] = t;
}

static void
ingress_retry_add(struct ingress *ing, int64_t id, int64_t due_ms)
{
	size_t	i;

	if (ing->nretries == ing->capretries) {
		ing->capretries = ing->capretries ? ing->capretries * 2 : 16;
		ing->retries = xrealloc(ing->retries,
		    ing->capretries * sizeof(*ing->retries));
	}
	i = ing->nretries++;
	ing->retries[i].id = id;
	ing->retries[i].due_ms = due_ms;
	for (; i > 0 && ing->retries[(i - 1) / 2].due_ms >
	    ing->retries[i].due_ms; i = (i - 1) / 2)
		ingress_retry_swap(ing, i, (i - 1) / 2);
}

/* Take the earliest entry off the schedule. */
static void
ingress_retry_pop(struct ingress *ing)
{
	size_t	i = 0, c;

	ing->retries[0] = ing->retries[--ing->nretries];
	for (;;) {
		c = 2 * i + 1;
		if (c >= ing->nretries)
			break;
		if (c + 1 < ing->nretries &&
		    ing->retries[c + 1].due_ms < ing->retries[c].due_ms)
			c++;
		if (ing->retries[i].due_ms <= ing->retries[c].due_ms)
			break;
		ingress_retry_swap(ing, i, c);
		i = c;
	}
}

static void
ingress_retry_arm(struct ingress *ing)
{
	struct timeval	 tv;
	int64_t		 wait;

	if (ing->nretries == 0)
		return;
	wait = ing->retries[0].due_ms - ingress_now_ms();
	if (wait < 0)
		wait = 0;
	tv.tv_sec = (time_t)(wait / 1000);
	tv.tv_usec = (suseconds_t)(wait % 1000) * 1000;
	evtimer_add(ing->ev_retry, &tv);
}

/*
 * Dead letter id was refused total times in all.  Under max_attempts the
 * relay retries it after a backoff, away from the stream it was refused in
 * (it goes to the tail); else it stays parked, and that is logged: at most
 * INGRESS_PARK_LOGS lines a minute, however many a client sends.
 */
static void
ingress_parked(struct ingress *ing, int64_t id, unsigned total,
    const char *reason)
{
	time_t	minute = time(NULL) / 60;

	if (total < ing->cf->max_attempts) {
		log_debug("outbox id %" PRId64 " parked (attempt %u of %u: %s); "
		    "retried in %" PRIu64 " ms", id, total,
		    ing->cf->max_attempts, reason,
		    ingress_retry_delay(ing->cf, total));
		ingress_retry_add(ing, id, ingress_now_ms() +
		    (int64_t)ingress_retry_delay(ing->cf, total));
		ingress_retry_arm(ing);
		return;
	}
	if (minute != ing->park_log_minute) {
		if (ing->park_log_quiet > 0)
			log_warnx("%u more messages parked as dead letters in "
			    "the last minute (pubrelay dead list)",
			    ing->park_log_quiet);
		ing->park_log_minute = minute;
		ing->park_log_n = ing->park_log_quiet = 0;
	}
	if (ing->park_log_n++ < INGRESS_PARK_LOGS)
		log_warnx("outbox id %" PRId64 " parked as a dead letter after "
		    "%u attempt%s: %s", id, total, total == 1 ? "" : "s",
		    reason);
	else
		ing->park_log_quiet++;
}

/* Dead letters parked before this start that still have attempts left. */
static int
ingress_load_retry_cb(void *arg, const struct outbox_dead *d)
{
	struct ingress	*ing = arg;

	if (d->attempts > 0 && d->attempts < ing->cf->max_attempts)
		ingress_retry_add(ing, d->id, d->parked_ms +
		    (int64_t)ingress_retry_delay(ing->cf, d->attempts));
	return 0;
}

static void
ingress_load_retries(struct ingress *ing)
{
	if (ing->cf->max_attempts > 1 && outbox_dead_rows(ing->ob) > 0 &&
	    outbox_dead_foreach(ing->ob, 0, INT32_MAX, 0,
	    ingress_load_retry_cb, ing) == -1)
		log_warnx("outbox: cannot read the dead letters to retry: %s",
		    outbox_errmsg(ing->ob));
	ingress_retry_arm(ing);
}

/*
 * Retry the dead letters that are due, a few at a time: each is one
 * transaction of its own.  Never inside a group commit.
 */
static void
ingress_retry_cb(evutil_socket_t fd, short what, void *arg)
{
	struct ingress	*ing = arg;
	struct timeval	 soon = { 0, 10 * 1000 };
	struct timeval	 later = { INGRESS_DELETE_RETRY_MS / 1000,
			    (INGRESS_DELETE_RETRY_MS % 1000) * 1000 };
	int64_t		 now = ingress_now_ms();
	uint64_t	 n, moved = 0;
	unsigned	 done = 0;
	int		 status, stuck = 0;

	(void)fd;
	(void)what;
	if (ing->in_tx) {
		evtimer_add(ing->ev_retry, &soon);
		return;
	}
	while (ing->nretries > 0 && done < INGRESS_REQUEUE_MAX &&
	    ing->retries[0].due_ms <= now) {
		struct ingress_retry *r = &ing->retries[0];

		done++;
		status = outbox_dead_requeue(ing->ob, r->id, now,
		    ingress_room(ing), &n);
		if (status != OUTBOX_OK) {
			/*
			 * Full, or a failing disk: the others would fail the
			 * same way.  In a second, said once.
			 */
			log_msg(ing->retry_logged++ ? LOG_DEBUG : LOG_WARNING,
			    "outbox: cannot retry dead letter %" PRId64
			    " yet: %s", r->id, status == OUTBOX_EFULL ?
			    "no room under max_bytes" : outbox_errmsg(ing->ob));
			stuck = 1;
			break;
		}
		if (ing->retry_logged) {
			log_notice("outbox: dead letters are retried again");
			ing->retry_logged = 0;
		}
		moved += n;	/* 0: purged or replayed by hand meanwhile */
		ingress_retry_pop(ing);
	}
	if (moved > 0) {
		log_debug("%" PRIu64 " dead letter%s retried", moved,
		    moved == 1 ? "" : "s");
		ingress_wake_link(ing);
	}
	if (stuck)
		evtimer_add(ing->ev_retry, &later);
	else if (done == INGRESS_REQUEUE_MAX)
		evtimer_add(ing->ev_retry, &soon);
	else
		ingress_retry_arm(ing);
}

/* Park what the publisher gave up on; a failure keeps it queued. */
static void
ingress_run_parks(struct ingress *ing)
{
	size_t	i, done = 0;
	int	status;

	/* Full: nothing to try until dead letters are retried or purged. */
	if (ing->dead_full && outbox_dead_bytes(ing->ob) >= ing->dead_full_at)
		return;
	for (i = 0; i < ing->nparks; i++) {
		struct ingress_park *pk = &ing->parks[i];
		unsigned total;

		status = outbox_park(ing->ob, pk->id, pk->attempts, pk->reason,
		    ingress_now_ms(), &total);
		if (status == OUTBOX_EDEADFULL) {
			/*
			 * Nothing is dropped: the row stays in the outbox,
			 * counted in max_bytes (deletes go around it), so
			 * producers get FULL if refused messages keep coming.
			 * Once an episode: every commit and delete comes back
			 * here.
			 */
			if (!ing->dead_full)
				log_warnx("dead-letter table full (dead_max_bytes "
				    "%" PRIu64 ", %" PRIu64 " dead letters): "
				    "outbox id %" PRId64 " and what is refused "
				    "after it stay in the outbox, counted in "
				    "max_bytes, until dead letters are retried "
				    "or purged", ing->cf->dead_max_bytes,
				    outbox_dead_rows(ing->ob), pk->id);
			ing->dead_full = 1;
			ing->dead_full_at = outbox_dead_bytes(ing->ob);
			break;
		}
		if (status != OUTBOX_OK) {
			/* Retried every 100 ms and at each commit: log once. */
			log_msg(ing->park_logged ? LOG_DEBUG : LOG_WARNING,
			    "outbox: cannot park id %" PRId64 " (%s); "
			    "will try again", pk->id, outbox_errmsg(ing->ob));
			ing->park_logged = 1;
			break;
		}
		if (ing->dead_full) {
			log_notice("dead-letter table has room again: parking "
			    "resumes");
			ing->dead_full = 0;
		}
		if (ing->park_logged) {
			log_notice("outbox: parked id %" PRId64 " after failed "
			    "attempts", pk->id);
			ing->park_logged = 0;
		}
		if (total > 0)
			ingress_parked(ing, pk->id, total, pk->reason);
		free(pk->reason);
		done++;
	}
	memmove(ing->parks, ing->parks + done,
	    (ing->nparks - done) * sizeof(*ing->parks));
	ing->nparks -= done;
}

void
ingress_park(struct ingress *ing, int64_t id, unsigned attempts,
    const char *reason)
{
	struct ingress_park	*pk;

	if (ing->nparks == ing->capparks) {
		ing->capparks = ing->capparks ? ing->capparks * 2 : 8;
		ing->parks = xrealloc(ing->parks,
		    ing->capparks * sizeof(*ing->parks));
	}
	pk = &ing->parks[ing->nparks++];
	pk->id = id;
	pk->attempts = attempts;
	pk->reason = xstrdup(reason);
	if (!ing->in_tx)
		ingress_run_parks(ing);
}

void
ingress_forget(struct ingress *ing, void *s)
{
	size_t	i;

	for (i = 0; i < ing->nwaiting; i++)
		if (ing->waiting[i] == s)
			ing->waiting[i] = NULL;
	if (ing->job.s == s) {
		struct timeval	tv = { 0, 0 };

		/* What was done stays done; whoever waits for it goes on. */
		log_info("DEAD %s ALL: the client left after %" PRIu64 " dead "
		    "letters; stopped", ing->job.retry ? "RETRY" : "PURGE",
		    ing->job.done);
		ing->job.s = NULL;
		evtimer_add(ing->ev_dead, &tv);
	}
}

/*
 * While refused rows wait for room in the dead-letter table, the confirmed
 * ones around them go as usual: the outbox then holds only what waits (in
 * max_bytes) and what the broker has not confirmed.
 */
static int
ingress_delete_around(struct ingress *ing, int64_t upto)
{
	int64_t	*keep;
	size_t	 i, j, n = 0;
	int	 status;

	keep = xcalloc(ing->nparks, sizeof(*keep));
	for (i = 0; i < ing->nparks; i++) {
		if (ing->parks[i].id > upto)
			continue;
		/* Ascending; parks come nearly in order, so this is short. */
		for (j = n; j > 0 && keep[j - 1] > ing->parks[i].id; j--)
			keep[j] = keep[j - 1];
		keep[j] = ing->parks[i].id;
		n++;
	}
	status = outbox_delete_around(ing->ob, ing->deleted_upto, upto, keep,
	    n);
	free(keep);
	return status;
}

static void
ingress_delete(struct ingress *ing)
{
	uint64_t before;
	int64_t	upto, kept = INT64_MAX;	/* the lowest row deleted around */
	size_t	i;
	int	status, around = 0;

	ing->delete_due = 0;
	if (ing->nparks > 0)
		ingress_run_parks(ing);
	upto = ing->delete_upto;
	/*
	 * A row waiting to be parked must not be deleted as confirmed (the
	 * publisher may park in any order: the lowest id counts).
	 */
	for (i = 0; i < ing->nparks; i++) {
		struct timeval tv = { 0, INGRESS_DELETE_DELAY_MS * 1000 };

		if (ing->parks[i].id > upto)
			continue;
		/* Waiting for room may last: delete around those rows. */
		if (ing->dead_full) {
			around = 1;
			if (ing->parks[i].id < kept)
				kept = ing->parks[i].id;
		} else
			upto = ing->parks[i].id - 1;
		evtimer_add(ing->ev_delete, &tv);	/* try again */
	}
	if (upto <= ing->deleted_upto)
		return;
	before = outbox_rows(ing->ob);
	status = around ? ingress_delete_around(ing, upto) :
	    outbox_delete_upto(ing->ob, upto);
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
	users_deleted(ing->users, around && kept <= upto ? kept - 1 : upto);
	if (ing->full_logged && (ing->cf->max_bytes == 0 ||
	    outbox_bytes(ing->ob) < ing->cf->max_bytes)) {
		log_notice("outbox has room again");
		ing->full_logged = 0;
	}
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
	users_commit(ing->users, ok);

	if (ing->nparks > 0)
		ingress_run_parks(ing);

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
		 * sessions freed before the commit were cleared by
		 * ingress_forget().
		 */
		ing->done(list[i], ok, code, err);
	}
	free(list);

	if (ok)
		ingress_wake_link(ing);
	if (ing->nparks > 0 && !ing->in_tx)
		ingress_run_parks(ing);
	if (ing->delete_due && !ing->in_tx)
		ingress_delete(ing);
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
	m->v[M_DEAD_MESSAGES] = outbox_dead_rows(ing->ob);
	m->v[M_DEAD_BYTES] = outbox_dead_bytes(ing->ob);
	m->v[M_DEAD_MAX_BYTES] = ing->cf->dead_max_bytes;
	m->v[M_DEAD_WAITING] = ing->nparks;
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

struct ingress_list {
	struct buf	 b;
	unsigned	 n;
	size_t		 budget;	/* bytes the page may take */
};

static int
ingress_dead_line_cb(void *arg, const struct outbox_dead *d)
{
	struct ingress_list	*l = arg;
	struct proto_pub	 m;
	char			 err[128];
	size_t			 start = l->b.len;

	if (proto_parse_props(d->props, d->plen, &m, err, sizeof(err)) == -1)
		proto_pub_init(&m);
	proto_dead_line(&l->b, d->id, d->parked_ms, d->attempts,
	    outbox_row_size(d->plen, d->blen), &m, d->reason);
	/* The page is full: this line opens the next one. */
	if (l->n > 0 && l->b.len > l->budget) {
		l->b.len = start;
		l->b.data[start] = '\0';
		return 1;
	}
	l->n++;
	return 0;
}

/* DEAD LIST: one page, within room (what the client's buffer has left). */
static void
ingress_dead_list(struct ingress *ing, const struct proto_req *req,
    struct evbuffer *out, size_t room)
{
	struct ingress_list	 l;
	int			 max;

	buf_init(&l.b);
	l.n = 0;
	l.budget = room < INGRESS_DEAD_PAGE_BYTES ? room :
	    INGRESS_DEAD_PAGE_BYTES;
	l.budget = l.budget > 32 ? l.budget - 32 : 0;	/* "DEAD <n>\n" */
	max = req->dead_max ? (int)req->dead_max : PROTO_DEAD_LIST_DEFAULT;
	if (outbox_dead_foreach(ing->ob, req->dead_after, max, 0,
	    ingress_dead_line_cb, &l) == -1) {
		evbuffer_add_printf(out, "ERR %s cannot read the dead letters: "
		    "%s\n", PROTO_E_STORE, outbox_errmsg(ing->ob));
		buf_free(&l.b);
		return;
	}
	evbuffer_add_printf(out, "DEAD %zu\n", l.b.len);
	evbuffer_add(out, l.b.data ? l.b.data : "", l.b.len);
	buf_free(&l.b);
}

/*
 * Room under max_bytes for rows moved back from the dead-letter table,
 * counted as ingress_insert() counts it: the write-ahead log's excess too.
 */
static uint64_t
ingress_room(struct ingress *ing)
{
	uint64_t	used;

	if (ing->cf->max_bytes == 0)
		return UINT64_MAX;
	used = outbox_bytes(ing->ob) + outbox_wal_excess(ing->ob);
	return used < ing->cf->max_bytes ? ing->cf->max_bytes - used : 0;
}

/* After rows left the dead-letter table: wake who may use them. */
static void
ingress_dead_moved(struct ingress *ing, int retry, uint64_t n)
{
	if (n == 0)
		return;
	if (retry)
		ingress_wake_link(ing);
	if (ing->nparks > 0)
		ingress_run_parks(ing);		/* room for them, perhaps */
}

static void
ingress_dead_error(struct ingress *ing, int status, struct evbuffer *out,
    const char *what, uint64_t done)
{
	const char	*code;
	char		 err[256];

	ingress_store_error(ing, status, &code, err, sizeof(err));
	if (done > 0)
		evbuffer_add_printf(out, "ERR %s %s (%" PRIu64 " dead letters "
		    "%s before it)\n", code, err, done, what);
	else
		evbuffer_add_printf(out, "ERR %s %s\n", code, err);
}

/* DEAD RETRY/PURGE <id>: one row, one transaction. */
static void
ingress_dead_one(struct ingress *ing, const struct proto_req *req,
    struct evbuffer *out)
{
	struct outbox_dead_batch	 b;
	int				 retry, status;

	retry = req->dead_op == PROTO_DEAD_RETRY;
	memset(&b, 0, sizeof(b));
	b.after = req->dead_id - 1;
	b.upto = req->dead_id;
	b.max_rows = 1;
	b.max_bytes = UINT64_MAX;
	b.room = ingress_room(ing);
	status = outbox_dead_step(ing->ob, retry, ingress_now_ms(), &b);
	if (status != OUTBOX_OK) {
		ingress_dead_error(ing, status, out, "", 0);
		return;
	}
	if (b.full) {
		evbuffer_add_printf(out, "ERR %s outbox full (max_bytes %" PRIu64
		    " reached): dead letter %" PRId64 " stays parked; retry "
		    "later\n", PROTO_E_FULL, ing->cf->max_bytes, req->dead_id);
		return;
	}
	if (b.rows == 0) {
		evbuffer_add_printf(out, "ERR %s no dead letter with id %" PRId64
		    "\n", PROTO_E_NOTFOUND, req->dead_id);
		return;
	}
	log_notice("1 dead letter %s", retry ? "replayed" : "purged");
	ingress_dead_moved(ing, retry, b.rows);
	evbuffer_add_printf(out, "OK 1\n");
}

/*
 * One batch of the DEAD RETRY/PURGE ALL under way: 1 when there is more
 * (the next batch runs on a later loop turn), 0 with the reply in out.
 * It takes the dead letters parked before it began, not those parked while
 * it runs (a replay the broker refuses again would go round for ever).
 */
static int
ingress_dead_batch(struct ingress *ing, struct evbuffer *out)
{
	struct ingress_job		*job = &ing->job;
	struct outbox_dead_batch	 b;
	struct timeval			 tv = { 0, 0 };
	const char			*what;
	int				 status;

	what = job->retry ? "replayed" : "purged";
	memset(&b, 0, sizeof(b));
	b.after = job->after;
	b.upto = job->upto;
	b.max_rows = INGRESS_DEAD_BATCH_ROWS;
	b.max_bytes = INGRESS_DEAD_BATCH_BYTES;
	b.room = ingress_room(ing);
	status = outbox_dead_step(ing->ob, job->retry, ingress_now_ms(), &b);
	job->done += b.rows;
	if (b.rows > 0)
		job->after = b.last;
	ingress_dead_moved(ing, job->retry, b.rows);
	/*
	 * Short of room, go on while rows still move: the parks that waited
	 * for room in the dead-letter table free as much in the outbox.
	 */
	if (status == OUTBOX_OK && b.more && (!b.full || b.rows > 0)) {
		evtimer_add(ing->ev_dead, &tv);
		return 1;
	}

	job->s = NULL;
	if (ing->nwaiting > 0)		/* another DEAD ALL waits for this one */
		evtimer_add(ing->ev_dead, &tv);
	if (job->done > 0 || b.full)
		log_notice("%" PRIu64 " dead letter%s %s (all)%s", job->done,
		    job->done == 1 ? "" : "s", what, b.full ? "; the outbox "
		    "is full (max_bytes), the rest stay parked" : "");
	if (status != OUTBOX_OK)
		ingress_dead_error(ing, status, out, what, job->done);
	else if (b.full)
		evbuffer_add_printf(out, "ERR %s outbox full (max_bytes %" PRIu64
		    " reached) after %" PRIu64 " dead letters %s; %" PRIu64
		    " stay parked: retry later\n", PROTO_E_FULL,
		    ing->cf->max_bytes, job->done, what,
		    outbox_dead_rows(ing->ob));
	else
		evbuffer_add_printf(out, "OK %" PRIu64 "\n", job->done);
	return 0;
}

int
ingress_dead(struct ingress *ing, void *s,
    const struct proto_req *req, struct evbuffer *out, size_t room)
{
	struct ingress_job	*job = &ing->job;
	int64_t			 upto;

	if (ing->in_tx)
		return 1;
	if (req->dead_op == PROTO_DEAD_LIST) {
		ingress_dead_list(ing, req, out, room);
		return 0;
	}
	if (req->dead_id != 0) {
		ingress_dead_one(ing, req, out);
		return 0;
	}
	if (job->s != NULL && job->s != s)
		return 1;		/* one at a time: resumed when it ends */
	if (job->s == NULL) {
		if ((upto = outbox_dead_last(ing->ob)) == -1) {
			ingress_dead_error(ing, OUTBOX_EIO, out, "", 0);
			return 0;
		}
		memset(job, 0, sizeof(*job));
		job->s = s;
		job->retry = req->dead_op == PROTO_DEAD_RETRY;
		job->upto = upto;
	}
	return ingress_dead_batch(ing, out);
}

/*
 * The next batch of a DEAD ALL: resume the sessions waiting while no
 * transaction is open (none of them holds an OK then).  With one open, its
 * commit resumes them.
 */
static void
ingress_dead_cb(evutil_socket_t fd, short what, void *arg)
{
	struct ingress	 *ing = arg;
	void		**list;
	size_t		  i, n;

	(void)fd;
	(void)what;
	if (ing->in_tx)
		return;
	list = ing->waiting;
	n = ing->nwaiting;
	ing->waiting = NULL;
	ing->nwaiting = ing->capwaiting = 0;
	for (i = 0; i < n; i++)
		if (list[i] != NULL)
			ing->done(list[i], 1, NULL, NULL);
	free(list);
}
