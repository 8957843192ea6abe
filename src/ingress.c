/*
 * ingress.c: group commit, deletion of confirmed rows, STATS.
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
#include "outbox.h"
#include "protocol.h"
#include "publisher.h"
#include "session.h"
#include "stats.h"
#include "util.h"

#define INGRESS_DELETE_DELAY_MS	100	/* batch deletes of confirmed rows */

static const char *ingress_state_names[] = {
	"disconnected", "connecting", "connected", "blocked", "stopped",
};

struct ingress {
	struct event_base	*base;
	struct outbox		*ob;
	const struct config	*cf;
	struct relay_stats	*st;
	struct publisher	*pub;
	struct event		*ev_commit;
	struct event		*ev_delete;
	int			 in_tx;
	int			 tx_failed;	/* OUTBOX_E*: rolled back */
	unsigned		 tx_count;
	uint64_t		 tx_bytes;
	struct session		**waiting;	/* sessions with held OKs */
	size_t			 nwaiting, capwaiting;
	int64_t			 delete_upto;	/* confirmed, to delete */
	int64_t			 deleted_upto;
	int			 delete_due;
	int			 full_logged;
	time_t			 started;
	uint64_t		 rows_at_start;
};

static void ingress_commit_cb(evutil_socket_t, short, void *);
static void ingress_delete_cb(evutil_socket_t, short, void *);

struct ingress *
ingress_new(struct event_base *base, struct outbox *ob, const struct config *cf,
    struct relay_stats *st)
{
	struct ingress	*ing;

	ing = xcalloc(1, sizeof(*ing));
	ing->base = base;
	ing->ob = ob;
	ing->cf = cf;
	ing->st = st;
	ing->started = time(NULL);
	ing->rows_at_start = outbox_rows(ob);
	ing->ev_commit = event_new(base, -1, 0, ingress_commit_cb, ing);
	ing->ev_delete = evtimer_new(base, ingress_delete_cb, ing);
	if (ing->ev_commit == NULL || ing->ev_delete == NULL)
		abort();
	return ing;
}

struct event_base *
ingress_base(struct ingress *ing)
{
	return ing->base;
}

void
ingress_set_publisher(struct ingress *ing, struct publisher *pub)
{
	ing->pub = pub;
}

void
ingress_free(struct ingress *ing)
{
	if (ing == NULL)
		return;
	event_free(ing->ev_commit);
	event_free(ing->ev_delete);
	free(ing->waiting);
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

int
ingress_insert(struct ingress *ing, const struct proto_pub *pub,
    struct evbuffer *held, const char **code, char *err, size_t errlen)
{
	uint64_t	size;
	int64_t		id;
	int		status;

	size = outbox_row_size(pub->props.len, pub->body.len);
	if (ing->cf->max_bytes > 0 &&
	    outbox_bytes(ing->ob) + ing->tx_bytes + size > ing->cf->max_bytes) {
		*code = PROTO_E_FULL;
		snprintf(err, errlen, "outbox full (max_bytes %" PRIu64
		    " reached); retry later", ing->cf->max_bytes);
		if (!ing->full_logged) {
			log_warnx("outbox full (max_bytes %" PRIu64 "): refusing "
			    "messages until the broker drains it",
			    ing->cf->max_bytes);
			ing->full_logged = 1;
		}
		return -1;
	}
	if (ing->in_tx && ing->tx_failed) {
		ingress_store_error(ing, ing->tx_failed, code, err, errlen);
		return -1;
	}
	if (!ing->in_tx) {
		status = outbox_begin(ing->ob);
		if (status != OUTBOX_OK) {
			log_warnx("outbox: cannot begin a transaction: %s",
			    outbox_errmsg(ing->ob));
			ingress_store_error(ing, status, code, err, errlen);
			return -1;
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
		log_warnx("outbox: insert failed: %s", outbox_errmsg(ing->ob));
		ingress_store_error(ing, status, code, err, errlen);
		outbox_rollback(ing->ob);
		ing->tx_failed = status;
		return -1;
	}
	ing->tx_count++;
	ing->tx_bytes += size;
	if (pub->message_id.p != NULL)
		evbuffer_add_printf(held, "OK %.*s\n", (int)pub->message_id.len,
		    pub->message_id.p);
	else
		evbuffer_add_printf(held, "OK %s-%" PRId64 "\n",
		    outbox_instance(ing->ob), id);
	return 0;
}

void
ingress_wait(struct ingress *ing, struct session *s)
{
	if (ing->nwaiting == ing->capwaiting) {
		ing->capwaiting = ing->capwaiting ? ing->capwaiting * 2 : 64;
		ing->waiting = xrealloc(ing->waiting,
		    ing->capwaiting * sizeof(*ing->waiting));
	}
	ing->waiting[ing->nwaiting++] = s;
}

void
ingress_forget(struct ingress *ing, struct session *s)
{
	size_t	i;

	for (i = 0; i < ing->nwaiting; i++)
		if (ing->waiting[i] == s)
			ing->waiting[i] = NULL;
}

static void
ingress_delete(struct ingress *ing)
{
	int	status;

	ing->delete_due = 0;
	if (ing->delete_upto <= ing->deleted_upto)
		return;
	status = outbox_delete_upto(ing->ob, ing->delete_upto);
	if (status != OUTBOX_OK) {
		/* Harmless: the rows are deleted with the next batch. */
		log_warnx("outbox: cannot delete confirmed rows: %s",
		    outbox_errmsg(ing->ob));
		return;
	}
	ing->deleted_upto = ing->delete_upto;
	if (ing->full_logged && (ing->cf->max_bytes == 0 ||
	    outbox_bytes(ing->ob) < ing->cf->max_bytes)) {
		log_notice("outbox has room again");
		ing->full_logged = 0;
	}
}

static void
ingress_commit(struct ingress *ing)
{
	struct session	**list;
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
	if (ok)
		atomic_fetch_add(&ing->st->accepted, ing->tx_count);
	else {
		log_warnx("outbox: transaction of %u messages failed: %s",
		    ing->tx_count, outbox_errmsg(ing->ob));
		ingress_store_error(ing, status, &code, err, sizeof(err));
	}

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
		session_committed(list[i], ok, code, err);
	}
	free(list);

	if (ok && ing->pub != NULL)
		publisher_wake(ing->pub);
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
ingress_stats(struct ingress *ing, struct evbuffer *out)
{
	struct relay_stats	*st = ing->st;
	char			 broker[256], last_error[256];
	int64_t			 oldest, age = 0;
	uint64_t		 accepted, confirmed, backlog;
	int			 state;

	pthread_mutex_lock(&st->lock);
	snprintf(broker, sizeof(broker), "%s", st->broker[0] ? st->broker : "-");
	snprintf(last_error, sizeof(last_error), "%s",
	    st->last_error[0] ? st->last_error : "-");
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

	evbuffer_add_printf(out, "state %s\n", ingress_state_names[state]);
	evbuffer_add_printf(out, "broker %s\n", broker);
	evbuffer_add_printf(out, "last_error %s\n", last_error);
	evbuffer_add_printf(out, "outbox_messages %" PRIu64 "\n",
	    outbox_rows(ing->ob));
	/* Each row is confirmed once: what the broker has yet to confirm. */
	accepted = atomic_load(&st->accepted);
	confirmed = atomic_load(&st->confirmed);
	backlog = ing->rows_at_start + accepted;
	backlog = backlog > confirmed ? backlog - confirmed : 0;
	evbuffer_add_printf(out, "backlog %" PRIu64 "\n", backlog);
	evbuffer_add_printf(out, "outbox_bytes %" PRIu64 "\n",
	    outbox_bytes(ing->ob));
	evbuffer_add_printf(out, "outbox_max_bytes %" PRIu64 "\n",
	    ing->cf->max_bytes);
	evbuffer_add_printf(out, "oldest_age_ms %" PRId64 "\n", age);
	evbuffer_add_printf(out, "in_flight %" PRIu64 "\n",
	    (uint64_t)atomic_load(&st->in_flight));
	evbuffer_add_printf(out, "accepted %" PRIu64 "\n",
	    (uint64_t)atomic_load(&st->accepted));
	evbuffer_add_printf(out, "published %" PRIu64 "\n",
	    (uint64_t)atomic_load(&st->published));
	evbuffer_add_printf(out, "confirmed %" PRIu64 "\n",
	    (uint64_t)atomic_load(&st->confirmed));
	evbuffer_add_printf(out, "nacked %" PRIu64 "\n",
	    (uint64_t)atomic_load(&st->nacked));
	evbuffer_add_printf(out, "returned %" PRIu64 "\n",
	    (uint64_t)atomic_load(&st->returned));
	evbuffer_add_printf(out, "reconnects %" PRIu64 "\n",
	    (uint64_t)atomic_load(&st->reconnects));
	evbuffer_add_printf(out, "clients %u\n", session_count());
	evbuffer_add_printf(out, "uptime_s %lld\n",
	    (long long)(time(NULL) - ing->started));
}
