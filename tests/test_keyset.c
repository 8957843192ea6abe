/*
 * Unit tests for keyset.c: fingerprints, the multiset's answers, removal
 * with the runs shifted back (wrap-around included), growth and shrinking,
 * against a plain model.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "keyset.h"
#include "tap.h"

/* A fingerprint whose slot in a table of 1 << bits is home. */
static uint64_t
at(unsigned bits, uint64_t home, uint64_t low)
{
	return (home << (64 - bits)) | (low & ((UINT64_C(1) << 40) - 1)) | 1;
}

static uint64_t
rnd(uint64_t *s)
{
	*s ^= *s << 13;
	*s ^= *s >> 7;
	*s ^= *s << 17;
	return *s;
}

/* Random adds and removes of a few crowded fingerprints, against counts. */
static void
test_model(void)
{
	struct keyset	*ks = keyset_new(1);
	uint64_t	 fps[40], s = 88172645463325252ULL;
	int		 count[40] = { 0 }, i, j, wrong = 0, total = 0;

	/*
	 * Homes crowded at the end of the 1024 slots and at the start, so
	 * runs wrap around; several fingerprints share a home.
	 */
	for (i = 0; i < 40; i++)
		fps[i] = at(10, i < 20 ? 1020 + (uint64_t)(i % 4) :
		    (uint64_t)(i % 3), (uint64_t)i * 7919);
	for (i = 0; i < 20000; i++) {
		j = (int)(rnd(&s) % 40);
		if (rnd(&s) % 2 == 0 && total < 300) {
			keyset_add(ks, fps[j]);
			count[j]++;
			total++;
		} else {
			if (keyset_del(ks, fps[j]) != (count[j] > 0))
				wrong++;
			if (count[j] > 0) {
				count[j]--;
				total--;
			}
		}
		for (j = 0; j < 40; j++)
			if (keyset_has(ks, fps[j]) != (count[j] > 0))
				wrong++;
		if (keyset_count(ks) != (size_t)total)
			wrong++;
	}
	is_int(wrong, 0, "20,000 adds and removes agree with the model");
	is_int(keyset_bytes(ks), 1024 * 8, "never grew past 1024 slots");
	keyset_free(ks);
}

int
main(void)
{
	struct keyset	*ks, *ks2, *ks3;
	uint64_t	*fps, s = 2463534242ULL, fp;
	char		 key[64];
	size_t		 i, n = 200000, missing, same;

	ks = keyset_new(42);
	ks2 = keyset_new(43);
	ok(keyset_fp(ks, "k", 1) == keyset_fp(ks, "k", 1),
	    "a key has one fingerprint");
	ok(keyset_fp(ks, "k", 1) != keyset_fp(ks2, "k", 1),
	    "another seed, another fingerprint");
	is_int(keyset_fp(ks, "k1x", 2) == keyset_fp(ks, "k1", 2), 1,
	    "the same prefix of len bytes, the same fingerprint");
	ok(keyset_fp(ks, "abcdefgh", 8) != keyset_fp(ks, "abcdefgh\0", 9),
	    "the length counts");
	same = 0;
	for (i = 0; i < 10000; i++) {
		snprintf(key, sizeof(key), "KEYS-%03zu-%012zu", i % 8, i);
		if (keyset_fp(ks, key, strlen(key)) == 0)
			same++;
	}
	is_int(same, 0, "never 0 (the empty slot)");

	is_int(keyset_has(ks, 5), 0, "empty: nothing there");
	is_int(keyset_del(ks, 5), 0, "nothing to remove");
	keyset_add(ks, 5);
	keyset_add(ks, 5);
	is_int(keyset_count(ks), 2, "a multiset: two copies");
	is_int(keyset_del(ks, 5), 1, "one removed");
	is_int(keyset_has(ks, 5), 1, "the other still there");
	is_int(keyset_del(ks, 5), 1, "the other removed");
	is_int(keyset_has(ks, 5), 0, "gone");
	keyset_add(ks, 0);
	is_int(keyset_has(ks, 0), 1, "0 is taken as 1");
	is_int(keyset_del(ks, 1), 1, "and removed as 1");

	test_model();

	ks3 = keyset_new(44);
	keyset_reserve(ks3, 3000);
	is_int(keyset_bytes(ks3), 4096 * 8, "room for 3,000: 4096 slots");
	for (i = 0; i < 3000; i++)
		keyset_add(ks3, rnd(&s));
	is_int(keyset_bytes(ks3), 4096 * 8, "no resize on the way");
	keyset_free(ks3);

	/* Growth: 200,000 keys, every one found, a few strangers not. */
	fps = calloc(n, sizeof(*fps));
	for (i = 0; i < n; i++) {
		snprintf(key, sizeof(key), "KEYS-%03zu-%012zu", i % 8, i);
		fps[i] = keyset_fp(ks, key, strlen(key));
		keyset_add(ks, fps[i]);
	}
	is_int(keyset_count(ks), n, "200,000 counted");
	ok(keyset_bytes(ks) <= n * 8 * 8 / 3 + 8 && keyset_bytes(ks) >=
	    n * 8 * 4 / 3, "at most 3/4 full, at least 3/8 (%zu bytes)",
	    keyset_bytes(ks));
	missing = 0;
	for (i = 0; i < n; i++)
		if (!keyset_has(ks, fps[i]))
			missing++;
	is_int(missing, 0, "every one found after the table grew");
	same = 0;
	for (i = 0; i < 100000; i++) {
		fp = rnd(&s) | 1;
		same += (size_t)keyset_has(ks, fp);
	}
	is_int(same, 0, "no stranger among 100,000 taken for one");

	/* Shrinking: every other one removed, then the rest. */
	missing = 0;
	for (i = 0; i < n; i += 2)
		if (keyset_del(ks, fps[i]) != 1)
			missing++;
	for (i = 1; i < n; i += 2)
		if (!keyset_has(ks, fps[i]))
			missing++;
	is_int(missing, 0, "half removed, the other half found");
	for (i = 1; i < n; i += 2)
		keyset_del(ks, fps[i]);
	is_int(keyset_count(ks), 0, "all removed");
	is_int(keyset_bytes(ks), 1024 * 8, "back to 1024 slots");
	free(fps);
	keyset_free(ks);
	keyset_free(ks2);
	keyset_free(NULL);
	return done_testing();
}
