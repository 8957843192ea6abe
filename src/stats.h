/*
 * stats.h: counters and link state shared by the ingress and publisher
 * threads.  Counters are atomics written by one side and read by the other;
 * the strings are under the mutex.
 */
#ifndef PUBRELAY_STATS_H
#define PUBRELAY_STATS_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>

enum link_state {
	LINK_DISCONNECTED = 0,	/* waiting to (re)connect */
	LINK_CONNECTING,	/* connect, login, channel, confirm.select */
	LINK_CONNECTED,		/* publishing */
	LINK_BLOCKED,		/* connection.blocked: resource alarm */
	LINK_STOPPED,		/* shut down */
};

struct relay_stats {
	/* ingress side */
	atomic_uint_fast64_t	accepted;
	atomic_uint_fast64_t	refused;	/* PUBs refused, SKIPPED not */
	atomic_uint_fast64_t	clients_refused; /* LIMIT, DENIED at accept */
	/* publisher side */
	atomic_uint_fast64_t	published;
	atomic_uint_fast64_t	confirmed;
	atomic_uint_fast64_t	nacked;
	atomic_uint_fast64_t	returned;
	atomic_uint_fast64_t	parked;
	atomic_uint_fast64_t	expired;	/* parked unsent: max-age */
	atomic_uint_fast64_t	reconnects;
	atomic_uint_fast64_t	in_flight;
	atomic_int_fast64_t	sent_id;	/* the last row published (STATUS) */
	atomic_uint_fast64_t	confirm_ms_sum;	/* publish -> confirm, summed */
	atomic_uint_fast64_t	confirm_count;
	atomic_uint_fast64_t	blocked_ms;	/* finished blocked periods */
	atomic_int_fast64_t	blocked_since;	/* CLOCK_MONOTONIC ms, 0: not */
	atomic_int		link_state;
	pthread_mutex_t		lock;
	char			broker[256];	/* masked URI of the link */
	char			last_error[256];
};

#endif
