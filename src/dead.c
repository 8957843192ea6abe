/*
 * dead.c: dead letters on the main thread: parks, the relay's own retries,
 * DEAD LIST/RETRY/PURGE.
 *
 * Every write here is a transaction of its own on the one writer
 * connection, so none runs while a group commit is open: parks queue until
 * it ends, retries and commands wait for it (struct dead_hooks).
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
#include "log.h"
#include "outbox.h"
#include "protocol.h"
#include "util.h"

#define DEAD_RETRY_STUCK_MS	1000	/* after a retry that failed */
#define DEAD_REQUEUE_MAX	64	/* dead letters retried per turn */
#define DEAD_PARK_LOGS		10	/* parked for good: lines a minute */
/*
 * DEAD LIST replies are pages of at most this much (or max_buffer's room):
 * formatting one is a few ms of the main thread at most.
 */
#define DEAD_PAGE_BYTES	(256 * 1024)
/*
 * DEAD RETRY/PURGE ALL go a transaction of at most this much per loop
 * turn, so the other clients are served between two of them: 2-5 ms for
 * rows of 2 KiB with sync = normal on a small machine (more when SQLite's
 * automatic checkpoint falls into one, as for any commit).
 */
#define DEAD_BATCH_ROWS		256
#define DEAD_BATCH_BYTES	(512 * 1024)

struct dead_park {
	int64_t		 id;
	unsigned	 attempts;
	char		*reason;
};

/* A dead letter the relay retries on its own, and when. */
struct dead_retry {
	int64_t		 id;
	int64_t		 due_ms;	/* CLOCK_REALTIME, like parked times */
};

/* A DEAD RETRY/PURGE ALL under way, one batch at a time; one at a time. */
struct dead_job {
	void		*s;		/* who asked (a waiter); NULL: none */
	int		 retry;		/* or purge */
	int64_t		 after;		/* ids up to it are done */
	int64_t		 upto;		/* the last id parked when it began */
	uint64_t	 done;		/* rows moved or deleted */
};

struct dead {
	struct outbox		*ob;
	const struct config	*cf;
	struct dead_hooks	 hooks;
	struct dead_park	*parks;		/* waiting for no open commit */
	size_t			 nparks, capparks;
	int			 park_logged;	/* a failed park, logged */
	struct dead_retry	*retries;	/* dead_retry_cb() */
	size_t			 nretries, capretries;
	struct event		*ev_retry;
	unsigned		 retry_logged;	/* a retry that failed, said */
	time_t			 park_log_minute;	/* parked for good: */
	unsigned		 park_log_n, park_log_quiet;	/* lines, not */
	int			 full;		/* a park found the table full */
	uint64_t		 full_at;	/* its dead_bytes then */
	struct dead_job		 job;
	struct event		*ev_job;	/* the job's next batch */
};

static void dead_retry_cb(evutil_socket_t, short, void *);
static void dead_job_cb(evutil_socket_t, short, void *);
static void dead_load_retries(struct dead *);

struct dead *
dead_new(struct event_base *base, struct outbox *ob, const struct config *cf,
    const struct dead_hooks *hooks)
{
	struct dead	*d;

	d = xcalloc(1, sizeof(*d));
	d->ob = ob;
	d->cf = cf;
	d->hooks = *hooks;
	d->ev_retry = evtimer_new(base, dead_retry_cb, d);
	d->ev_job = evtimer_new(base, dead_job_cb, d);
	if (d->ev_retry == NULL || d->ev_job == NULL)
		abort();
	outbox_set_dead_limit(ob, cf->dead_max_bytes);
	dead_load_retries(d);
	return d;
}

void
dead_free(struct dead *d)
{
	if (d == NULL)
		return;
	event_free(d->ev_retry);
	free(d->retries);
	event_free(d->ev_job);
	while (d->nparks > 0)
		free(d->parks[--d->nparks].reason);
	free(d->parks);
	free(d);
}

static int64_t
dead_now_ms(void)
{
	struct timespec	ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int
dead_tx_open(struct dead *d)
{
	return d->hooks.tx_open != NULL && d->hooks.tx_open(d->hooks.arg);
}

/* New rows in the outbox, for the broker side. */
static void
dead_wake(struct dead *d)
{
	if (d->hooks.wake != NULL)
		d->hooks.wake(d->hooks.arg);
}

size_t
dead_waiting(const struct dead *d)
{
	return d->nparks;
}

uint64_t
dead_retry_delay(const struct config *cf, unsigned n)
{
	uint64_t	delay = cf->reconnect_min_ms;

	while (--n > 0 && delay < cf->reconnect_max_ms)
		delay *= 2;
	return delay < cf->reconnect_max_ms ? delay : cf->reconnect_max_ms;
}

/*
 * The schedule is a binary min-heap on due_ms: a burst of refusals adds
 * thousands of entries, and each park and each pass must cost O(log n),
 * not a scan of them all.
 */
static void
dead_retry_swap(struct dead *d, size_t a, size_t b)
{
	struct dead_retry	t = d->retries[a];

	d->retries[a] = d->retries[b];
	d->retries[b] = t;
}

static void
dead_retry_add(struct dead *d, int64_t id, int64_t due_ms)
{
	size_t	i;

	if (d->nretries == d->capretries) {
		d->capretries = d->capretries ? d->capretries * 2 : 16;
		d->retries = xrealloc(d->retries,
		    d->capretries * sizeof(*d->retries));
	}
	i = d->nretries++;
	d->retries[i].id = id;
	d->retries[i].due_ms = due_ms;
	for (; i > 0 && d->retries[(i - 1) / 2].due_ms >
	    d->retries[i].due_ms; i = (i - 1) / 2)
		dead_retry_swap(d, i, (i - 1) / 2);
}

/* Take the earliest entry off the schedule. */
static void
dead_retry_pop(struct dead *d)
{
	size_t	i = 0, c;

	d->retries[0] = d->retries[--d->nretries];
	for (;;) {
		c = 2 * i + 1;
		if (c >= d->nretries)
			break;
		if (c + 1 < d->nretries &&
		    d->retries[c + 1].due_ms < d->retries[c].due_ms)
			c++;
		if (d->retries[i].due_ms <= d->retries[c].due_ms)
			break;
		dead_retry_swap(d, i, c);
		i = c;
	}
}

int64_t
dead_next_retry(const struct dead *d, int64_t *id)
{
	if (d->nretries == 0)
		return -1;
	if (id != NULL)
		*id = d->retries[0].id;
	return d->retries[0].due_ms;
}

static void
dead_retry_arm(struct dead *d)
{
	struct timeval	 tv;
	int64_t		 wait;

	if (d->nretries == 0)
		return;
	wait = d->retries[0].due_ms - dead_now_ms();
	if (wait < 0)
		wait = 0;
	tv.tv_sec = (time_t)(wait / 1000);
	tv.tv_usec = (suseconds_t)(wait % 1000) * 1000;
	evtimer_add(d->ev_retry, &tv);
}

/*
 * Dead letter id was refused total times in all.  Under max_attempts the
 * relay retries it after a backoff, away from the stream it was refused in
 * (it goes to the tail); else, or with total 0 (parked for good unsent:
 * expired), it stays parked, and that is logged: at most DEAD_PARK_LOGS
 * lines a minute, however many a client sends.
 */
static void
dead_parked(struct dead *d, int64_t id, unsigned total, const char *reason)
{
	time_t	minute = time(NULL) / 60;

	if (total > 0 && total < d->cf->max_attempts) {
		log_debug("outbox id %" PRId64 " parked (attempt %u of %u: %s); "
		    "retried in %" PRIu64 " ms", id, total,
		    d->cf->max_attempts, reason,
		    dead_retry_delay(d->cf, total));
		dead_retry_add(d, id, dead_now_ms() +
		    (int64_t)dead_retry_delay(d->cf, total));
		dead_retry_arm(d);
		return;
	}
	if (d->hooks.fate != NULL)
		d->hooks.fate(d->hooks.arg, id, reason);
	if (minute != d->park_log_minute) {
		if (d->park_log_quiet > 0)
			log_warnx("%u more messages parked as dead letters in "
			    "the last minute (pubrelay dead list)",
			    d->park_log_quiet);
		d->park_log_minute = minute;
		d->park_log_n = d->park_log_quiet = 0;
	}
	if (d->park_log_n++ >= DEAD_PARK_LOGS)
		d->park_log_quiet++;
	else if (total == 0)
		log_warnx("outbox id %" PRId64 " parked as a dead letter "
		    "unsent: %s", id, reason);
	else
		log_warnx("outbox id %" PRId64 " parked as a dead letter after "
		    "%u attempt%s: %s", id, total, total == 1 ? "" : "s",
		    reason);
}

/* Dead letters parked before this start that still have attempts left. */
static int
dead_load_retry_cb(void *arg, const struct outbox_dead *row)
{
	struct dead	*d = arg;

	if (row->attempts > 0 && row->attempts < d->cf->max_attempts)
		dead_retry_add(d, row->id, row->parked_ms +
		    (int64_t)dead_retry_delay(d->cf, row->attempts));
	return 0;
}

static void
dead_load_retries(struct dead *d)
{
	if (d->cf->max_attempts > 1 && outbox_dead_rows(d->ob) > 0 &&
	    outbox_dead_foreach(d->ob, 0, INT32_MAX, 0,
	    dead_load_retry_cb, d) == -1)
		log_warnx("outbox: cannot read the dead letters to retry: %s",
		    outbox_errmsg(d->ob));
	dead_retry_arm(d);
}

/*
 * Room under max_bytes for rows moved back from the dead-letter table,
 * counted as ingress_insert() counts it: the write-ahead log's excess too.
 */
static uint64_t
dead_room(struct dead *d)
{
	uint64_t	used;

	if (d->cf->max_bytes == 0)
		return UINT64_MAX;
	used = outbox_bytes(d->ob) + outbox_wal_excess(d->ob);
	return used < d->cf->max_bytes ? d->cf->max_bytes - used : 0;
}

/*
 * Retry the dead letters that are due, a few at a time: each is one
 * transaction of its own.  Never inside a group commit.
 */
static void
dead_retry_cb(evutil_socket_t fd, short what, void *arg)
{
	struct dead	*d = arg;
	struct timeval	 soon = { 0, 10 * 1000 };
	struct timeval	 later = { DEAD_RETRY_STUCK_MS / 1000,
			    (DEAD_RETRY_STUCK_MS % 1000) * 1000 };
	int64_t		 now = dead_now_ms();
	uint64_t	 n, moved = 0;
	unsigned	 done = 0;
	int		 status, stuck = 0;

	(void)fd;
	(void)what;
	if (dead_tx_open(d)) {
		evtimer_add(d->ev_retry, &soon);
		return;
	}
	while (d->nretries > 0 && done < DEAD_REQUEUE_MAX &&
	    d->retries[0].due_ms <= now) {
		struct dead_retry *r = &d->retries[0];

		done++;
		status = outbox_dead_requeue(d->ob, r->id, now, dead_room(d),
		    &n);
		if (status != OUTBOX_OK) {
			/*
			 * Full, or a failing disk: the others would fail the
			 * same way.  In a second, said once.
			 */
			log_msg(d->retry_logged++ ? LOG_DEBUG : LOG_WARNING,
			    "outbox: cannot retry dead letter %" PRId64
			    " yet: %s", r->id, status == OUTBOX_EFULL ?
			    "no room under max_bytes" : outbox_errmsg(d->ob));
			stuck = 1;
			break;
		}
		if (d->retry_logged) {
			log_notice("outbox: dead letters are retried again");
			d->retry_logged = 0;
		}
		moved += n;	/* 0: purged or replayed by hand meanwhile */
		if (n == 1 && d->hooks.moved != NULL)
			d->hooks.moved(d->hooks.arg, r->id,
			    outbox_newest_id(d->ob));
		dead_retry_pop(d);
	}
	if (moved > 0) {
		log_debug("%" PRIu64 " dead letter%s retried", moved,
		    moved == 1 ? "" : "s");
		dead_wake(d);
	}
	if (stuck)
		evtimer_add(d->ev_retry, &later);
	else if (done == DEAD_REQUEUE_MAX)
		evtimer_add(d->ev_retry, &soon);
	else
		dead_retry_arm(d);
}

void
dead_run_parks(struct dead *d)
{
	size_t	i, done = 0;
	int	status;

	if (d->nparks == 0 || dead_tx_open(d))
		return;
	/* Full: nothing to try until dead letters are retried or purged. */
	if (d->full && outbox_dead_bytes(d->ob) >= d->full_at)
		return;
	for (i = 0; i < d->nparks; i++) {
		struct dead_park *pk = &d->parks[i];
		unsigned total;

		status = outbox_park(d->ob, pk->id, pk->attempts, pk->reason,
		    dead_now_ms(), &total);
		if (status == OUTBOX_EDEADFULL) {
			/*
			 * Nothing is dropped: the row stays in the outbox,
			 * counted in max_bytes (deletes go around it), so
			 * producers get FULL if refused messages keep coming.
			 * Once an episode: every commit and delete comes back
			 * here.
			 */
			if (!d->full)
				log_warnx("dead-letter table full (dead_max_bytes "
				    "%" PRIu64 ", %" PRIu64 " dead letters): "
				    "outbox id %" PRId64 " and what is refused "
				    "after it stay in the outbox, counted in "
				    "max_bytes, until dead letters are retried "
				    "or purged", d->cf->dead_max_bytes,
				    outbox_dead_rows(d->ob), pk->id);
			d->full = 1;
			d->full_at = outbox_dead_bytes(d->ob);
			break;
		}
		if (status != OUTBOX_OK) {
			/* Retried every 100 ms and at each commit: log once. */
			log_msg(d->park_logged ? LOG_DEBUG : LOG_WARNING,
			    "outbox: cannot park id %" PRId64 " (%s); "
			    "will try again", pk->id, outbox_errmsg(d->ob));
			d->park_logged = 1;
			break;
		}
		if (d->full) {
			log_notice("dead-letter table has room again: parking "
			    "resumes");
			d->full = 0;
		}
		if (d->park_logged) {
			log_notice("outbox: parked id %" PRId64 " after failed "
			    "attempts", pk->id);
			d->park_logged = 0;
		}
		if (total != OUTBOX_NOT_PARKED)
			dead_parked(d, pk->id, total, pk->reason);
		free(pk->reason);
		done++;
	}
	memmove(d->parks, d->parks + done,
	    (d->nparks - done) * sizeof(*d->parks));
	d->nparks -= done;
}

void
dead_park(struct dead *d, int64_t id, unsigned attempts, const char *reason)
{
	struct dead_park	*pk;

	if (d->nparks == d->capparks) {
		d->capparks = d->capparks ? d->capparks * 2 : 8;
		d->parks = xrealloc(d->parks, d->capparks * sizeof(*d->parks));
	}
	pk = &d->parks[d->nparks++];
	pk->id = id;
	pk->attempts = attempts;
	pk->reason = xstrdup(reason);
	dead_run_parks(d);
}

size_t
dead_hold(struct dead *d, int64_t *upto, int64_t **keep)
{
	int64_t	*k = NULL;
	size_t	 i, j, n = 0;

	*keep = NULL;
	dead_run_parks(d);
	/*
	 * A row waiting to be parked must not be deleted as confirmed (the
	 * publisher may park in any order: the lowest id counts).
	 */
	for (i = 0; i < d->nparks; i++) {
		int64_t id = d->parks[i].id;

		if (id > *upto)
			continue;
		n++;
		/* Waiting for room may last: delete around those rows. */
		if (!d->full) {
			*upto = id - 1;
			continue;
		}
		if (k == NULL)
			k = xcalloc(d->nparks, sizeof(*k));
		/* Ascending; parks come nearly in order, so this is short. */
		for (j = n - 1; j > 0 && k[j - 1] > id; j--)
			k[j] = k[j - 1];
		k[j] = id;
	}
	*keep = k;
	return n;
}

/*
 * After a commit, a delete or a DEAD command: the sessions told to wait
 * and ask again, while no transaction is open (none of them holds an OK
 * then).  With one open, its commit resumes them.
 */
static void
dead_job_cb(evutil_socket_t fd, short what, void *arg)
{
	struct dead	*d = arg;

	(void)fd;
	(void)what;
	if (dead_tx_open(d))
		return;
	if (d->hooks.resume != NULL)
		d->hooks.resume(d->hooks.arg);
}

void
dead_forget(struct dead *d, void *s)
{
	struct timeval	tv = { 0, 0 };

	if (d->job.s != s)
		return;
	/* What was done stays done; whoever waits for it goes on. */
	log_info("DEAD %s ALL: the client left after %" PRIu64 " dead "
	    "letters; stopped", d->job.retry ? "RETRY" : "PURGE",
	    d->job.done);
	d->job.s = NULL;
	evtimer_add(d->ev_job, &tv);
}

struct dead_list {
	struct buf	 b;
	unsigned	 n;
	size_t		 budget;	/* bytes the page may take */
};

static int
dead_line_cb(void *arg, const struct outbox_dead *row)
{
	struct dead_list	*l = arg;
	struct proto_pub	 m;
	char			 err[128];
	size_t			 start = l->b.len;

	if (proto_parse_props(row->props, row->plen, &m, err,
	    sizeof(err)) == -1)
		proto_pub_init(&m);
	proto_dead_line(&l->b, row->id, row->parked_ms, row->attempts,
	    outbox_row_size(row->plen, row->blen), &m, row->reason);
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
dead_list(struct dead *d, const struct proto_req *req, struct evbuffer *out,
    size_t room)
{
	struct dead_list	 l;
	int			 max;

	buf_init(&l.b);
	l.n = 0;
	l.budget = room < DEAD_PAGE_BYTES ? room : DEAD_PAGE_BYTES;
	l.budget = l.budget > 32 ? l.budget - 32 : 0;	/* "DEAD <n>\n" */
	max = req->dead_max ? (int)req->dead_max : PROTO_DEAD_LIST_DEFAULT;
	if (outbox_dead_foreach(d->ob, req->dead_after, max, 0,
	    dead_line_cb, &l) == -1) {
		evbuffer_add_printf(out, "ERR %s cannot read the dead letters: "
		    "%s\n", PROTO_E_STORE, outbox_errmsg(d->ob));
		buf_free(&l.b);
		return;
	}
	evbuffer_add_printf(out, "DEAD %zu\n", l.b.len);
	evbuffer_add(out, l.b.data ? l.b.data : "", l.b.len);
	buf_free(&l.b);
}

/* After rows left the dead-letter table: wake who may use them. */
static void
dead_moved(struct dead *d, int retry, uint64_t n)
{
	if (n == 0)
		return;
	if (retry)
		dead_wake(d);
	dead_run_parks(d);		/* room for them, perhaps */
}

static void
dead_error(struct dead *d, int status, struct evbuffer *out,
    const char *what, uint64_t done)
{
	const char	*code;
	char		 err[256];

	code = proto_store_error(status == OUTBOX_EFULL, outbox_errmsg(d->ob),
	    err, sizeof(err));
	if (done > 0)
		evbuffer_add_printf(out, "ERR %s %s (%" PRIu64 " dead letters "
		    "%s before it)\n", code, err, done, what);
	else
		evbuffer_add_printf(out, "ERR %s %s\n", code, err);
}

/* DEAD RETRY/PURGE <id>: one row, one transaction. */
static void
dead_one(struct dead *d, const struct proto_req *req, struct evbuffer *out)
{
	struct outbox_dead_batch	 b;
	int				 retry, status;

	retry = req->dead_op == PROTO_DEAD_RETRY;
	memset(&b, 0, sizeof(b));
	b.after = req->dead_id - 1;
	b.upto = req->dead_id;
	b.max_rows = 1;
	b.max_bytes = UINT64_MAX;
	b.room = dead_room(d);
	status = outbox_dead_step(d->ob, retry, dead_now_ms(), &b);
	if (status != OUTBOX_OK) {
		dead_error(d, status, out, "", 0);
		return;
	}
	if (b.full) {
		evbuffer_add_printf(out, "ERR %s outbox full (max_bytes %" PRIu64
		    " reached): dead letter %" PRId64 " stays parked; retry "
		    "later\n", PROTO_E_FULL, d->cf->max_bytes, req->dead_id);
		return;
	}
	if (b.rows == 0) {
		evbuffer_add_printf(out, "ERR %s no dead letter with id %" PRId64
		    "\n", PROTO_E_NOTFOUND, req->dead_id);
		return;
	}
	log_notice("1 dead letter %s", retry ? "replayed" : "purged");
	dead_moved(d, retry, b.rows);
	evbuffer_add_printf(out, "OK 1\n");
}

/*
 * One batch of the DEAD RETRY/PURGE ALL under way: 1 when there is more
 * (the next batch runs on a later loop turn), 0 with the reply in out.
 * It takes the dead letters parked before it began, not those parked while
 * it runs (a replay the broker refuses again would go round for ever).
 */
static int
dead_batch(struct dead *d, struct evbuffer *out)
{
	struct dead_job			*job = &d->job;
	struct outbox_dead_batch	 b;
	struct timeval			 tv = { 0, 0 };
	const char			*what;
	int				 status;

	what = job->retry ? "replayed" : "purged";
	memset(&b, 0, sizeof(b));
	b.after = job->after;
	b.upto = job->upto;
	b.max_rows = DEAD_BATCH_ROWS;
	b.max_bytes = DEAD_BATCH_BYTES;
	b.room = dead_room(d);
	status = outbox_dead_step(d->ob, job->retry, dead_now_ms(), &b);
	job->done += b.rows;
	if (b.rows > 0)
		job->after = b.last;
	dead_moved(d, job->retry, b.rows);
	/*
	 * Short of room, go on while rows still move: the parks that waited
	 * for room in the dead-letter table free as much in the outbox.
	 */
	if (status == OUTBOX_OK && b.more && (!b.full || b.rows > 0)) {
		evtimer_add(d->ev_job, &tv);
		return 1;
	}

	job->s = NULL;
	evtimer_add(d->ev_job, &tv);	/* another DEAD ALL may wait for it */
	if (job->done > 0 || b.full)
		log_notice("%" PRIu64 " dead letter%s %s (all)%s", job->done,
		    job->done == 1 ? "" : "s", what, b.full ? "; the outbox "
		    "is full (max_bytes), the rest stay parked" : "");
	if (status != OUTBOX_OK)
		dead_error(d, status, out, what, job->done);
	else if (b.full)
		evbuffer_add_printf(out, "ERR %s outbox full (max_bytes %" PRIu64
		    " reached) after %" PRIu64 " dead letters %s; %" PRIu64
		    " stay parked: retry later\n", PROTO_E_FULL,
		    d->cf->max_bytes, job->done, what,
		    outbox_dead_rows(d->ob));
	else
		evbuffer_add_printf(out, "OK %" PRIu64 "\n", job->done);
	return 0;
}

int
dead_request(struct dead *d, void *s, const struct proto_req *req,
    struct evbuffer *out, size_t room)
{
	struct dead_job	*job = &d->job;
	int64_t		 upto;

	if (dead_tx_open(d))
		return 1;
	if (req->dead_op == PROTO_DEAD_LIST) {
		dead_list(d, req, out, room);
		return 0;
	}
	if (req->dead_id != 0) {
		dead_one(d, req, out);
		return 0;
	}
	if (job->s != NULL && job->s != s)
		return 1;		/* one at a time: resumed when it ends */
	if (job->s == NULL) {
		if ((upto = outbox_dead_last(d->ob)) == -1) {
			dead_error(d, OUTBOX_EIO, out, "", 0);
			return 0;
		}
		memset(job, 0, sizeof(*job));
		job->s = s;
		job->retry = req->dead_op == PROTO_DEAD_RETRY;
		job->upto = upto;
	}
	return dead_batch(d, out);
}
