/*
 * backoff.h: exponential reconnect backoff with full jitter.  Pure code: the
 * caller supplies the seed, so tests are deterministic.
 */
#ifndef PUBRELAY_BACKOFF_H
#define PUBRELAY_BACKOFF_H

#include <stdint.h>

struct backoff {
	uint64_t	min_ms;
	uint64_t	max_ms;
	uint64_t	ceil_ms;	/* current upper bound, doubles per failure */
	uint64_t	rng;		/* xorshift64* state */
};

void	 backoff_init(struct backoff *b, uint64_t min_ms, uint64_t max_ms,
	    uint64_t seed);
/* Next delay: uniform in [min, ceil], then ceil doubles (capped at max). */
uint64_t backoff_next(struct backoff *b);
/* After a success: start again from min. */
void	 backoff_reset(struct backoff *b);

#endif
