/*
 * backoff.c: exponential backoff with jitter.  Each delay is random between
 * half the minimum and a ceiling that starts at the minimum and doubles, so
 * even the first retry of a fleet of relays that lost the same broker at the
 * same moment is spread, and later ones are spread wide.
 */
#include "backoff.h"

static uint64_t
backoff_rand(struct backoff *b)
{
	/* xorshift64*: tiny, deterministic for a given seed. */
	b->rng ^= b->rng >> 12;
	b->rng ^= b->rng << 25;
	b->rng ^= b->rng >> 27;
	return b->rng * 2685821657736338717ULL;
}

void
backoff_init(struct backoff *b, uint64_t min_ms, uint64_t max_ms, uint64_t seed)
{
	if (max_ms < min_ms)
		max_ms = min_ms;
	b->min_ms = min_ms;
	b->max_ms = max_ms;
	b->ceil_ms = min_ms;
	b->rng = seed != 0 ? seed : 0x9e3779b97f4a7c15ULL;
}

uint64_t
backoff_next(struct backoff *b)
{
	uint64_t	lo, span, delay;

	lo = b->min_ms / 2;
	span = b->ceil_ms - lo;
	delay = lo + (span == 0 ? 0 : backoff_rand(b) % (span + 1));
	if (b->ceil_ms >= b->max_ms / 2)
		b->ceil_ms = b->max_ms;
	else
		b->ceil_ms = b->ceil_ms * 2 > b->min_ms ? b->ceil_ms * 2 :
		    b->min_ms + 1;
	return delay;
}

void
backoff_reset(struct backoff *b)
{
	b->ceil_ms = b->min_ms;
}
