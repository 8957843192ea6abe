/*
 * receipt.h: receipts, on the main thread.  A client may ask to hear what
 * became of a message (a PUB with "confirm:") or of everything accepted so
 * far (WAIT): confirmed by the broker, parked as a dead letter, or still
 * waiting when its time ran out.  The publisher thread tells main how far
 * the confirms have got (receipts_confirmed()) and which ids it parked
 * (receipts_parking(), always before the confirmed prefix passes them);
 * the dead letters say which parks are for good (receipts_parked()) and
 * which the relay retries under a new id (receipts_moved()).  No lock is
 * held and no client waits on another.  Knows no AMQP and no
 * sessions: a waiter is told through its callback.
 */
#ifndef PUBRELAY_RECEIPT_H
#define PUBRELAY_RECEIPT_H

#include <stddef.h>
#include <stdint.h>

struct event_base;
struct outbox;
struct receipts;
struct receipt;

enum receipt_fate {
	RECEIPT_CONFIRMED = 1,	/* the broker confirmed it (all of them) */
	RECEIPT_PARKED,		/* refused: parked as a dead letter */
	RECEIPT_TIMEOUT,	/* time ran out; still queued */
	RECEIPT_SHUTDOWN,	/* the daemon stops; still queued */
};

/*
 * The receipt's fate: reason is the park's reason (RECEIPT_PARKED), n the
 * dead letters with ids up to a barrier's last id (a barrier confirmed).
 * The receipt is freed once this returns.
 */
typedef void (*receipt_fn)(void *arg, enum receipt_fate fate,
	    const char *reason, uint64_t n);

/*
 * max_attempts: [publish] max_attempts, under which a dead letter is
 * retried by the relay, not yet a fate.
 */
struct receipts *receipts_new(struct event_base *base, struct outbox *ob,
	    unsigned max_attempts);
void	receipts_free(struct receipts *r);

/*
 * Wait for outbox row id (committed), at most timeout_ms (0: no limit).
 * NULL when the fate was known at once and fn has been called.
 */
struct receipt *receipt_wait_id(struct receipts *r, int64_t id,
	    unsigned timeout_ms, receipt_fn fn, void *arg);
/*
 * Wait until no message with an id up to upto is left to confirm: each is
 * confirmed or parked for good (a dead letter the relay no longer
 * retries).  NULL when that is already so and fn has been called.
 */
struct receipt *receipt_wait_upto(struct receipts *r, int64_t upto,
	    unsigned timeout_ms, receipt_fn fn, void *arg);
/* The waiter went away: fn is not called. */
void	receipt_cancel(struct receipts *r, struct receipt *rc);

/* The broker confirmed every row up to upto (parked ones aside). */
void	receipts_confirmed(struct receipts *r, int64_t upto);
/*
 * The publisher gave up on id: it is being parked.  Its waiters are held
 * out of the confirmed prefix until its fate is known.
 */
void	receipts_parking(struct receipts *r, int64_t id);
/* Dead letter id is parked for good, for reason: its waiters are told. */
void	receipts_parked(struct receipts *r, int64_t id, const char *reason);
/* The relay retries dead letter from as outbox row to. */
void	receipts_moved(struct receipts *r, int64_t from, int64_t to);
/* Rows left the outbox other than by a confirm (parks ran): look again. */
void	receipts_check(struct receipts *r);
/* Shutdown: every waiter is told RECEIPT_SHUTDOWN. */
void	receipts_shutdown(struct receipts *r);
/*
 * fn(arg, 1) when a receipt starts waiting with none before, fn(arg, 0)
 * when the last one is told: main has the publisher hand confirms over at
 * once meanwhile.
 */
void	receipts_on_waiting(struct receipts *r, void (*fn)(void *, int),
	    void *arg);
/* Receipts waiting (STATS). */
size_t	receipts_waiting(const struct receipts *r);

#endif
