/*
 * users.c: per-uid connections and outbox bytes (see users.h).
 *
 * A record lives while its uid has a connection, rows in the outbox or rows
 * in the open transaction; the last of these to go frees it.  Nothing here
 * allocates per message: a row only adds to its user's transaction total,
 * and the user joins the transaction's list once.
 */
#include <sys/queue.h>
#include <sys/types.h>

#include <stdint.h>
#include <stdlib.h>

#include "users.h"
#include "util.h"

#define USERS_BUCKETS	64	/* a power of two */

struct users_mark {
	int64_t		 upto;		/* u's rows up to this id */
	uint64_t	 bytes;		/* ... and their size */
};

struct user {
	LIST_ENTRY(user)	 entry;
	uid_t			 uid;
	unsigned		 conns;
	uint64_t		 bytes;		/* committed, not yet deleted */
	uint64_t		 tx_bytes;	/* in the open transaction */
	int64_t			 tx_upto;	/* its highest id there */
	int			 in_tx;		/* listed in us->tx */
	struct users_mark	 marks[USERS_MARKS];
	unsigned		 mark_first, nmarks;
	struct users_log	 conn_log, full_log;
};

LIST_HEAD(users_bucket, user);

struct users {
	struct users_bucket	 buckets[USERS_BUCKETS];
	struct user		**tx;		/* in the open transaction */
	size_t			 ntx, captx;
};

struct users *
users_new(void)
{
	struct users	*us;
	size_t		 i;

	us = xcalloc(1, sizeof(*us));
	for (i = 0; i < USERS_BUCKETS; i++)
		LIST_INIT(&us->buckets[i]);
	return us;
}

void
users_free(struct users *us)
{
	struct user	*u;
	size_t		 i;

	if (us == NULL)
		return;
	for (i = 0; i < USERS_BUCKETS; i++)
		while ((u = LIST_FIRST(&us->buckets[i])) != NULL) {
			LIST_REMOVE(u, entry);
			free(u);
		}
	free(us->tx);
	free(us);
}

#define USERS_HASH(uid)	((size_t)(uid) & (USERS_BUCKETS - 1))

static struct user *
users_find(const struct users *us, uid_t uid)
{
	struct user	*u;

	LIST_FOREACH(u, &us->buckets[USERS_HASH(uid)], entry)
		if (u->uid == uid)
			return u;
	return NULL;
}

/* The one free path: once nothing of the uid is left. */
static void
users_release(struct user *u)
{
	if (u->conns > 0 || u->bytes > 0 || u->in_tx)
		return;
	LIST_REMOVE(u, entry);
	free(u);
}

struct user *
users_lookup(const struct users *us, uid_t uid)
{
	return users_find(us, uid);
}

struct user *
users_connect(struct users *us, uid_t uid)
{
	struct user	*u;

	if ((u = users_find(us, uid)) == NULL) {
		u = xcalloc(1, sizeof(*u));
		u->uid = uid;
		LIST_INSERT_HEAD(&us->buckets[USERS_HASH(uid)], u, entry);
	}
	u->conns++;
	return u;
}

void
users_disconnect(struct users *us, struct user *u)
{
	(void)us;
	u->conns--;
	users_release(u);
}

uid_t
user_uid(const struct user *u)
{
	return u->uid;
}

unsigned
user_connections(const struct user *u)
{
	return u->conns;
}

uint64_t
user_bytes(const struct user *u)
{
	return u->bytes + u->tx_bytes;
}

struct users_log *
user_conn_log(struct user *u)
{
	return &u->conn_log;
}

struct users_log *
user_full_log(struct user *u)
{
	return &u->full_log;
}

void
users_insert(struct users *us, struct user *u, int64_t id, uint64_t size)
{
	if (!u->in_tx) {
		if (us->ntx == us->captx) {
			us->captx = us->captx ? us->captx * 2 : 16;
			us->tx = xrealloc(us->tx, us->captx * sizeof(*us->tx));
		}
		us->tx[us->ntx++] = u;
		u->in_tx = 1;
	}
	u->tx_bytes += size;
	u->tx_upto = id;
}

/* Charge u's rows of the transaction that just committed. */
static void
users_mark(struct user *u)
{
	struct users_mark	*m;

	if (u->nmarks < USERS_MARKS) {
		m = &u->marks[(u->mark_first + u->nmarks) % USERS_MARKS];
		m->upto = u->tx_upto;
		m->bytes = u->tx_bytes;
		u->nmarks++;
	} else {
		/* Full: the newest mark takes these rows too. */
		m = &u->marks[(u->mark_first + u->nmarks - 1) % USERS_MARKS];
		m->upto = u->tx_upto;
		m->bytes += u->tx_bytes;
	}
	u->bytes += u->tx_bytes;
}

void
users_commit(struct users *us, int ok)
{
	struct user	*u;
	size_t		 i;

	for (i = 0; i < us->ntx; i++) {
		u = us->tx[i];
		if (ok && u->tx_bytes > 0)
			users_mark(u);
		u->tx_bytes = 0;
		u->in_tx = 0;
		users_release(u);
	}
	us->ntx = 0;
}

void
users_deleted(struct users *us, int64_t upto)
{
	struct user		*u, *next;
	struct users_mark	*m;
	size_t			 i;

	for (i = 0; i < USERS_BUCKETS; i++) {
		for (u = LIST_FIRST(&us->buckets[i]); u != NULL; u = next) {
			next = LIST_NEXT(u, entry);
			while (u->nmarks > 0 &&
			    (m = &u->marks[u->mark_first])->upto <= upto) {
				u->bytes -= m->bytes;
				u->mark_first = (u->mark_first + 1) %
				    USERS_MARKS;
				u->nmarks--;
			}
			users_release(u);
		}
	}
}

int
users_log_due(struct users_log *l, time_t now, time_t interval,
    unsigned long *quiet)
{
	if (l->last != 0 && now - l->last < interval) {
		l->quiet++;
		return 0;
	}
	*quiet = l->quiet;
	l->quiet = 0;
	l->last = now > 0 ? now : 1;
	return 1;
}
