/*
 * dead.h: dead letters on the main thread.  Parks what the publisher gave
 * up on (queued while a group commit is open, and before any delete of
 * confirmed rows passes it), retries them on its own after a backoff up to
 * max_attempts (the schedule is loaded at start), and runs DEAD
 * LIST/RETRY/PURGE.  The rows are outbox.c's; the sessions and the group
 * commit are ingress.c's, reached through struct dead_hooks.  Knows no AMQP.
 */
#ifndef PUBRELAY_DEAD_H
#define PUBRELAY_DEAD_H

#include <stddef.h>
#include <stdint.h>

struct config;
struct dead;
struct evbuffer;
struct event_base;
struct outbox;
struct proto_req;

/*
 * What the dead letters need of group commit, wired by their owner
 * (ingress.c): whether a transaction is open (parks, retries and DEAD
 * commands never run inside one), wake the broker side when rows went back
 * to the outbox, and resume the sessions told to wait and ask again (only
 * called while no transaction is open); and, for receipts, a park that is
 * for good (fate: no retry left) and a retry of the relay's own (moved:
 * dead letter from is outbox row to now).  fate and moved may be NULL.
 */
struct dead_hooks {
	int	(*tx_open)(void *arg);
	void	(*wake)(void *arg);
	void	(*resume)(void *arg);
	void	(*fate)(void *arg, int64_t id, const char *reason);
	void	(*moved)(void *arg, int64_t from, int64_t to);
	void	*arg;
};

/* Sets the outbox's dead_max_bytes and loads the retry schedule. */
struct dead *dead_new(struct event_base *base, struct outbox *ob,
	    const struct config *cf, const struct dead_hooks *hooks);
void	dead_free(struct dead *d);

/*
 * The publisher gave up on id: park it in the dead-letter table, before any
 * delete passes it (queued while a group commit is open).
 */
void	dead_park(struct dead *d, int64_t id, unsigned attempts,
	    const char *reason);
/* Park what is queued, unless a transaction is open; failures stay queued. */
void	dead_run_parks(struct dead *d);
/*
 * Confirmed rows up to *upto are to be deleted: park what is queued first.
 * Returns how many rows still wait to be parked at or below *upto (0:
 * delete up to it); those must not be deleted, so try again soon.  While
 * the dead-letter table is full (the wait may last) *keep gets their ids,
 * ascending, to delete around (the caller frees it); else *upto is lowered
 * below them and *keep is NULL.
 */
size_t	dead_hold(struct dead *d, int64_t *upto, int64_t **keep);
/* Parks queued, not yet in the table (STATS dead_waiting). */
size_t	dead_waiting(const struct dead *d);

/*
 * DEAD LIST/RETRY/PURGE for waiter s (only compared, never used).  Appends
 * the whole reply to out and returns 0, or returns 1 when the caller is to
 * wait (first in line for the hooks' resume) and ask again: while a group
 * commit is open, between two batches of a DEAD RETRY/PURGE ALL, and while
 * another one runs.  A DEAD LIST reply takes at most room bytes (at least
 * one line).
 */
int	dead_request(struct dead *d, void *s,
	    const struct proto_req *req, struct evbuffer *out, size_t room);
/* s is going away: a DEAD ALL it asked for stops where it is. */
void	dead_forget(struct dead *d, void *s);

/* Wait before the relay's own retry of a message refused n times. */
uint64_t dead_retry_delay(const struct config *cf, unsigned n);
/*
 * The next retry due (CLOCK_REALTIME ms, like parked times) and its id;
 * -1 when none is scheduled.
 */
int64_t	dead_next_retry(const struct dead *d, int64_t *id);

#endif
