/*
 * publisher.h: the broker side.  A thread with its own event_base owns the one
 * AMQP connection: it reads the outbox in id order through its own reader
 * connection, publishes within a window of unconfirmed messages, tracks
 * confirms, and reconnects with backoff across the configured URIs.  It never
 * writes the outbox: it reports "confirmed up to id X" to the main thread,
 * which deletes.  It answers no client.
 */
#ifndef PUBRELAY_PUBLISHER_H
#define PUBRELAY_PUBLISHER_H

#include <stddef.h>
#include <stdint.h>

struct config;
struct event_base;
struct proto_pub;
struct relay_stats;
struct publisher;

/* Called in the main thread (on main_base) when the confirmed prefix grew. */
typedef void (*publisher_confirmed_fn)(int64_t upto, void *arg);
/*
 * Called in the main thread for a message given up on (policy park): move
 * it to the dead-letter table.  Always called before the confirmed callback
 * that passes its id.
 */
typedef void (*publisher_park_fn)(int64_t id, unsigned attempts,
	    const char *reason, void *arg);

struct publisher_params {
	const struct config	*cf;		/* borrowed for the lifetime */
	const char		*instance;	/* outbox instance, for message-ids */
	struct relay_stats	*stats;
	struct event_base	*main_base;
	publisher_confirmed_fn	 confirmed_cb;
	publisher_park_fn	 park_cb;
	void			*cb_arg;
};

/* Start the thread.  NULL with err filled on failure. */
struct publisher *publisher_start(const struct publisher_params *pp,
	    char *err, size_t errlen);
/* Main thread: new rows were committed. */
void	 publisher_wake(struct publisher *p);
/*
 * Main thread: clients wait for confirms (on): hand each confirmed prefix
 * over at once rather than batched every few ms.
 */
void	 publisher_set_eager(struct publisher *p, int on);
/*
 * Main thread: whether message m's properties fit one frame of the broker
 * last connected to (1 when none was yet); 0 with the reason in err.
 */
int	 publisher_fits(struct publisher *p, const struct proto_pub *m,
	    char *err, size_t errlen);
/* Highest id the broker confirmed (every id <= it is confirmed). */
int64_t	 publisher_confirmed(struct publisher *p);
/*
 * Stop: publish nothing more, wait briefly for outstanding confirms, close the
 * link.  *confirmed gets the final confirmed id.  Returns 0 once the thread
 * exited (p is freed), -1 when it did not exit within timeout_ms (a broker
 * call is stuck; p is leaked on purpose, the process is about to exit).
 */
int	 publisher_stop(struct publisher *p, unsigned timeout_ms,
	    int64_t *confirmed);

#endif
