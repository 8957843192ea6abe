/* Unit tests for backoff.c: bounds, growth, cap, reset, jitter. */
#include <stdint.h>

#include "backoff.h"
#include "tap.h"

int
main(void)
{
	struct backoff	b;
	uint64_t	d, prev_ceil, lo, hi;
	int		i, inrange, distinct;

	backoff_init(&b, 100, 30000, 42);
	is_int(b.ceil_ms, 100, "ceiling starts at min");
	d = backoff_next(&b);
	ok(d >= 50 && d <= 100, "first delay within [min/2, min] (%llu)",
	    (unsigned long long)d);
	is_int(b.ceil_ms, 200, "ceiling doubles");

	inrange = 1;
	for (i = 0; i < 50; i++) {
		prev_ceil = b.ceil_ms;
		d = backoff_next(&b);
		if (d < 50 || d > prev_ceil)
			inrange = 0;
	}
	ok(inrange, "every delay within [min/2, ceiling]");
	is_int(b.ceil_ms, 30000, "ceiling capped at max");

	lo = UINT64_MAX;
	hi = 0;
	for (i = 0; i < 1000; i++) {
		d = backoff_next(&b);
		if (d < lo)
			lo = d;
		if (d > hi)
			hi = d;
	}
	ok(lo >= 50 && hi <= 30000, "capped delays stay within [min/2, max]");
	ok(hi - lo > 20000, "full jitter spreads delays (%llu..%llu)",
	    (unsigned long long)lo, (unsigned long long)hi);

	backoff_reset(&b);
	is_int(b.ceil_ms, 100, "reset returns to min");
	d = backoff_next(&b);
	ok(d >= 50 && d <= 100, "delay after reset within [min/2, min]");

	/* The first retries of a fleet are spread too. */
	lo = UINT64_MAX;
	hi = 0;
	for (i = 1; i <= 200; i++) {
		backoff_init(&b, 100, 30000, (uint64_t)i * 7919);
		d = backoff_next(&b);
		if (d < lo)
			lo = d;
		if (d > hi)
			hi = d;
	}
	ok(lo < 60 && hi > 90, "first delays of 200 relays spread over "
	    "[min/2, min] (%llu..%llu)", (unsigned long long)lo,
	    (unsigned long long)hi);

	backoff_init(&b, 500, 100, 1);
	is_int(b.max_ms, 500, "max below min is raised to min");
	for (i = 0, inrange = 1; i < 20; i++) {
		d = backoff_next(&b);
		if (d < 250 || d > 500)
			inrange = 0;
	}
	ok(inrange, "then every delay within [min/2, min]");

	backoff_init(&b, 0, 1000, 7);
	d = backoff_next(&b);
	is_int(d, 0, "min 0: first delay 0");
	ok(b.ceil_ms >= 1, "min 0: ceiling still grows");
	for (i = 0; i < 20; i++)
		backoff_next(&b);
	is_int(b.ceil_ms, 1000, "min 0: ceiling reaches max");

	/* Two relays with different seeds do not reconnect in lock-step. */
	{
		struct backoff	a, c;

		backoff_init(&a, 100, 30000, 1);
		backoff_init(&c, 100, 30000, 2);
		distinct = 0;
		for (i = 0; i < 20; i++)
			if (backoff_next(&a) != backoff_next(&c))
				distinct++;
		ok(distinct >= 15, "different seeds give different delays (%d/20)",
		    distinct);
		backoff_init(&a, 100, 30000, 9);
		backoff_init(&c, 100, 30000, 9);
		distinct = 0;
		for (i = 0; i < 20; i++)
			if (backoff_next(&a) != backoff_next(&c))
				distinct++;
		is_int(distinct, 0, "same seed is deterministic");
	}
	return done_testing();
}
