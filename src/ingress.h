/*
 * ingress.h: group commit into the outbox.  Every PUB parsed in one loop turn
 * is inserted into one open transaction; a commit event queued behind the
 * turn's read callbacks commits it, and only then are the OKs released to the
 * sessions.  Also deletes the rows the publisher reports confirmed (the main
 * thread holds the one writer connection) and gathers the STATS values.
 * Knows no AMQP, and no sessions: a waiter is told through a callback.
 */
#ifndef PUBRELAY_INGRESS_H
#define PUBRELAY_INGRESS_H

#include <stddef.h>
#include <stdint.h>

struct config;
struct dead;
struct evbuffer;
struct event_base;
struct metrics_snap;
struct outbox;
struct proto_pub;
struct receipts;
struct relay_stats;
struct ingress;
struct user;
struct users;

/*
 * How a waiter (ingress_wait()) is told that the transaction holding its
 * replies committed (ok) or was rolled back (code, PROTO_E_*, and err set),
 * or, for a DEAD request that waited, that it may ask again (ok).  The
 * waiter is opaque here: main wires session_committed().
 */
typedef void (*ingress_done_fn)(void *waiter, int ok, const char *code,
	    const char *err);

struct ingress *ingress_new(struct event_base *base, struct outbox *ob,
	    const struct config *cf, struct relay_stats *st,
	    ingress_done_fn done);
struct event_base *ingress_base(struct ingress *ing);
/* Who holds what, per uid (the listener counts connections in it). */
struct users *ingress_users(struct ingress *ing);
/* Its dead letters (dead.h): ingress runs them between group commits. */
struct dead *ingress_dead(struct ingress *ing);
/* Receipts (confirm: and WAIT), told of confirms by ingress_confirmed(). */
struct receipts *ingress_receipts(struct ingress *ing);
/* The outbox id of the row the last successful ingress_insert() added. */
int64_t	ingress_inserted_id(const struct ingress *ing);
/* The last row committed (rows from before a restart included). */
int64_t	ingress_committed_id(const struct ingress *ing);
/*
 * STATUS: what became of the message the daemon named mid[0..len) in an OK
 * (PARKED: its reason into reason).  Only generated ids ("<instance>-<id>"
 * of this outbox) are found; any other is UNKNOWN.
 */
enum ingress_fate {
	INGRESS_UNKNOWN = 0,
	INGRESS_QUEUED,
	INGRESS_INFLIGHT,
	INGRESS_CONFIRMED,
	INGRESS_PARKED,
};
enum ingress_fate ingress_status(struct ingress *ing, const char *mid,
	    size_t len, char *reason, size_t n);
/*
 * What ingress needs of the broker side, wired by main (ingress knows no
 * AMQP): wake it when rows were committed, and ask whether a message fits
 * the broker's frames (NULL: all do).  NULL unwires it (shutdown).
 */
struct ingress_link {
	void	(*wake)(void *arg);
	int	(*fits)(void *arg, const struct proto_pub *m, char *err,
		    size_t errlen);
	/* Receipts wait (on): hand confirms over at once, not batched. */
	void	(*eager)(void *arg, int on);
	void	*arg;
};
void	ingress_set_link(struct ingress *ing, const struct ingress_link *link);
void	ingress_free(struct ingress *ing);

/*
 * Insert pub, sent by user u (NULL: not counted per user), into the open
 * transaction (opening one if needed) and append its "OK <message-id>"
 * reply to held, to be released on commit.  0 on success; -1 with *code
 * (PROTO_E_*) and err set when it is refused (outbox full, u's share of it
 * full, write failed).  The caller then registers itself with
 * ingress_wait().  stamp[0..stamplen), when not empty, is stored after
 * the message's property block: lines of its own ([publish] provenance).
 */
int	ingress_insert(struct ingress *ing, struct user *u,
	    const struct proto_pub *pub, const char *stamp, size_t stamplen,
	    struct evbuffer *held, const char **code, char *err,
	    size_t errlen);
/* Waiter s has replies held on the open transaction: done() tells it. */
void	ingress_wait(struct ingress *ing, void *s);
/* Waiter s is going away: it is told nothing more. */
void	ingress_forget(struct ingress *ing, void *s);
/* Commit the open transaction now (shutdown). */
void	ingress_flush(struct ingress *ing);
/*
 * Like ingress_wait(), ahead of the sessions already waiting: for a DEAD
 * command told to wait and ask again (dead_request()).
 */
void	ingress_wait_first(struct ingress *ing, void *s);
/* Rows up to upto are confirmed: delete them soon, in batches. */
void	ingress_confirmed(struct ingress *ing, int64_t upto);
/* Delete confirmed rows now (shutdown). */
void	ingress_delete_now(struct ingress *ing, int64_t upto);
/*
 * The STATS values of the outbox and the link, all but M_CLIENTS (the
 * sessions count themselves): metrics.h formats them.
 */
void	ingress_stats(struct ingress *ing, struct metrics_snap *m);
/* A PUB was answered with an error other than SKIPPED (STATS refused). */
void	ingress_count_refused(struct ingress *ing);
/* A connection was refused at accept: LIMIT or DENIED (STATS). */
void	ingress_count_client_refused(struct ingress *ing);

#endif
