/*
 * keyset.c: a multiset of key fingerprints (keyset.h).
 */
#include <sys/mman.h>

#include <stdlib.h>
#include <string.h>

#include "keyset.h"
#include "util.h"

#define KEYSET_MIN_BITS	10
/*
 * A table this large goes on huge pages where the kernel gives them on
 * request (transparent_hugepage "madvise", Debian's default): a lookup is
 * a miss in a table of megabytes, and with 4 KiB pages a TLB miss too,
 * dearer still in a virtual machine (two levels of page tables).
 */
#define KEYSET_HUGE	(2u << 20)

static uint64_t *
keyset_alloc(size_t bytes)
{
	void	*p;

	if (bytes < KEYSET_HUGE)
		return xcalloc(1, bytes);
	if (posix_memalign(&p, KEYSET_HUGE, bytes) != 0)
		return xcalloc(1, bytes);
#ifdef MADV_HUGEPAGE
	(void)madvise(p, bytes, MADV_HUGEPAGE);
#endif
	memset(p, 0, bytes);
	return p;
}

struct keyset {
	uint64_t	*slot;		/* 0: empty */
	unsigned	 bits;		/* 1 << bits slots */
	size_t		 n;
	uint64_t	 seed;
};

static uint64_t
keyset_mix(uint64_t x)
{
	x ^= x >> 33;
	x *= UINT64_C(0xff51afd7ed558ccd);
	x ^= x >> 33;
	x *= UINT64_C(0xc4ceb9fe1a85ec53);
	x ^= x >> 33;
	return x;
}

uint64_t
keyset_fp(const struct keyset *ks, const void *key, size_t len)
{
	const unsigned char	*p = key;
	uint64_t		 h, w, fp;

	h = ks->seed ^ ((uint64_t)len * UINT64_C(0x9e3779b97f4a7c15));
	for (; len >= 8; p += 8, len -= 8) {
		memcpy(&w, p, 8);
		h = keyset_mix(h ^ w) + UINT64_C(0x9e3779b97f4a7c15);
	}
	if (len > 0) {
		w = 0;
		memcpy(&w, p, len);
		h = keyset_mix(h ^ w ^ ((uint64_t)len << 56));
	}
	fp = keyset_mix(h ^ ks->seed);
	return fp != 0 ? fp : 1;
}

static size_t
keyset_home(const struct keyset *ks, uint64_t fp)
{
	return (size_t)(fp >> (64 - ks->bits));
}

static void
keyset_put(uint64_t *slot, size_t mask, size_t home, uint64_t fp)
{
	size_t	i;

	for (i = home; slot[i] != 0; i = (i + 1) & mask)
		;
	slot[i] = fp;
}

static void
keyset_resize(struct keyset *ks, unsigned bits)
{
	uint64_t	*old = ks->slot;
	size_t		 i, oldsize = (size_t)1 << ks->bits;

	ks->slot = keyset_alloc(((size_t)1 << bits) * sizeof(*ks->slot));
	ks->bits = bits;
	for (i = 0; old != NULL && i < oldsize; i++)
		if (old[i] != 0)
			keyset_put(ks->slot, ((size_t)1 << bits) - 1,
			    keyset_home(ks, old[i]), old[i]);
	free(old);
}

struct keyset *
keyset_new(uint64_t seed)
{
	struct keyset	*ks = xcalloc(1, sizeof(*ks));

	ks->seed = keyset_mix(seed) | 1;
	ks->bits = KEYSET_MIN_BITS;
	keyset_resize(ks, KEYSET_MIN_BITS);
	return ks;
}

void
keyset_free(struct keyset *ks)
{
	if (ks == NULL)
		return;
	free(ks->slot);
	free(ks);
}

void
keyset_reserve(struct keyset *ks, size_t n)
{
	unsigned	bits = ks->bits;

	while ((n + ks->n) * 4 > ((size_t)3 << bits) && bits < 31)
		bits++;
	if (bits != ks->bits)
		keyset_resize(ks, bits);
}

void
keyset_add(struct keyset *ks, uint64_t fp)
{
	if (fp == 0)
		fp = 1;
	if ((ks->n + 1) * 4 > ((size_t)3 << ks->bits) && ks->bits < 31)
		keyset_resize(ks, ks->bits + 1);
	keyset_put(ks->slot, ((size_t)1 << ks->bits) - 1, keyset_home(ks, fp),
	    fp);
	ks->n++;
}

int
keyset_has(const struct keyset *ks, uint64_t fp)
{
	size_t	i, mask = ((size_t)1 << ks->bits) - 1;

	if (fp == 0)
		fp = 1;
	for (i = keyset_home(ks, fp); ks->slot[i] != 0; i = (i + 1) & mask)
		if (ks->slot[i] == fp)
			return 1;
	return 0;
}

int
keyset_del(struct keyset *ks, uint64_t fp)
{
	size_t	i, k, h, mask = ((size_t)1 << ks->bits) - 1;

	if (fp == 0)
		fp = 1;
	for (i = keyset_home(ks, fp); ks->slot[i] != fp; i = (i + 1) & mask)
		if (ks->slot[i] == 0)
			return 0;
	/* Shift back what would not be found past the hole. */
	for (;;) {
		ks->slot[i] = 0;
		for (k = (i + 1) & mask;; k = (k + 1) & mask) {
			if (ks->slot[k] == 0)
				goto done;
			h = keyset_home(ks, ks->slot[k]);
			/* It stays when its home lies in (i, k], cyclically. */
			if (i <= k ? (i < h && h <= k) : (i < h || h <= k))
				continue;
			break;
		}
		ks->slot[i] = ks->slot[k];
		i = k;
	}
 done:
	ks->n--;
	if (ks->bits > KEYSET_MIN_BITS && ks->n * 8 < ((size_t)1 << ks->bits))
		keyset_resize(ks, ks->bits - 1);
	return 1;
}

size_t
keyset_count(const struct keyset *ks)
{
	return ks->n;
}

size_t
keyset_bytes(const struct keyset *ks)
{
	return ((size_t)1 << ks->bits) * sizeof(*ks->slot);
}
