/*
 * users.h: what each local user (uid) holds in the daemon, for the per-user
 * limits [socket] max_clients_per_user and [outbox] max_bytes_per_user: its
 * open connections, and the bytes of its messages still in the outbox.
 * Pure code: no I/O, no clock; the callers log and decide.
 *
 * The outbox does not store who sent a row.  Bytes are charged to a uid in
 * memory when its rows commit and released when the rows are deleted after
 * their confirm.  Rows are deleted as a prefix by id, so each user keeps a
 * short queue of marks "my rows up to id N, B bytes": one per group commit
 * it took part in, at most USERS_MARKS (then the newest mark grows, which
 * releases those bytes a little late, never early).  Rows from before a
 * restart, and dead letters replayed into the outbox, are charged to nobody.
 */
#ifndef PUBRELAY_USERS_H
#define PUBRELAY_USERS_H

#include <sys/types.h>

#include <stdint.h>
#include <time.h>

#define USERS_MARKS	32	/* per user: commits released one by one */
#define USERS_LOG_S	60	/* s between warnings about one uid */

struct users;
struct user;

/* A warning that is repeated at most once an interval, counting the rest. */
struct users_log {
	time_t		 last;		/* of the last line; 0: none yet */
	unsigned long	 quiet;		/* events since, not logged */
};

struct users	*users_new(void);
/* Only once no session holds a user of it. */
void		 users_free(struct users *us);

/* uid's record; NULL when it holds nothing. */
struct user	*users_lookup(const struct users *us, uid_t uid);
/* A connection of uid was accepted: its record, held until users_disconnect. */
struct user	*users_connect(struct users *us, uid_t uid);
void		 users_disconnect(struct users *us, struct user *u);

uid_t		 user_uid(const struct user *u);
unsigned	 user_connections(const struct user *u);
/* Bytes of u's rows in the outbox, with those of the open transaction. */
uint64_t	 user_bytes(const struct user *u);
/* u's log throttles: over max_clients_per_user, over max_bytes_per_user. */
struct users_log *user_conn_log(struct user *u);
struct users_log *user_full_log(struct user *u);

/* A row of size bytes, id, of u went into the open transaction. */
void		 users_insert(struct users *us, struct user *u, int64_t id,
		    uint64_t size);
/* The open transaction committed (ok) or was rolled back. */
void		 users_commit(struct users *us, int ok);
/* Every row with id <= upto has left the outbox. */
void		 users_deleted(struct users *us, int64_t upto);

/*
 * Whether to log an event now (at now, in seconds, never 0) at most once
 * every interval: 1, with *quiet set to the events not logged since the last
 * line; 0 when the event is only counted.
 */
int		 users_log_due(struct users_log *l, time_t now, time_t interval,
		    unsigned long *quiet);

#endif
