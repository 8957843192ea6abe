/*
 * keyset.h: the fingerprints of the idempotency keys an outbox knows, in
 * memory, so that a new key (nearly every key) is told apart without a
 * lookup in SQLite.
 *
 * A multiset of fingerprints, seeded 64-bit hashes.  "Absent" is exact:
 * every key stored has its fingerprint here (the caller's rule); a
 * fingerprint present means "maybe": the caller looks the key up.  With 64
 * bits a new key is taken for a possible repeat about once in 2^40 at a
 * million keys (32 bits: once in a few thousand, and each costs the caller
 * a catch-up of its key table).  The slot of a fingerprint is its own high
 * bits, so equal fingerprints are interchangeable and a removal can shift
 * the run behind it back (linear probing without tombstones).  8 bytes a
 * slot; the table doubles at 3/4 full and halves below 1/8: 11-21 bytes a
 * key while keys come in.
 */
#ifndef PUBRELAY_KEYSET_H
#define PUBRELAY_KEYSET_H

#include <stddef.h>
#include <stdint.h>

struct keyset;

/* The seed keeps a local producer from choosing colliding keys. */
struct keyset	*keyset_new(uint64_t seed);
void		 keyset_free(struct keyset *);

/* key's fingerprint under this set's seed: never 0. */
uint64_t	 keyset_fp(const struct keyset *, const void *key, size_t len);

/* Room for n fingerprints without a resize on the way (start-up). */
void		 keyset_reserve(struct keyset *, size_t n);
void		 keyset_add(struct keyset *, uint64_t fp);
/* 1 when fp may be there (some key has it), 0 when no key has it. */
int		 keyset_has(const struct keyset *, uint64_t fp);
/* Remove one copy of fp: 1, or 0 when there was none. */
int		 keyset_del(struct keyset *, uint64_t fp);

size_t		 keyset_count(const struct keyset *);
size_t		 keyset_bytes(const struct keyset *);

#endif
