/*
 * util.h: checked parsing of numbers, sizes, durations and booleans, a growable
 * byte buffer, and URI password masking.  Pure code: no I/O, no logging, so the
 * unit tests and the client reach it directly.
 */
#ifndef PUBRELAY_UTIL_H
#define PUBRELAY_UTIL_H

#include <stddef.h>
#include <stdint.h>

/* Whole-string decimal in [min, max]; 0 on success, -1 otherwise. */
int util_parse_u64(const char *s, uint64_t min, uint64_t max, uint64_t *out);
/* Decimal with an optional binary unit: K, M, G, T (also KiB, MiB...). */
int util_parse_size(const char *s, uint64_t *out);
/* Whole number with an optional unit ms, s, m, h; a bare number is seconds. */
int util_parse_duration_ms(const char *s, uint64_t *out);
/* yes/no, true/false, on/off, 1/0 (case-insensitive). */
int util_parse_bool(const char *s, int *out);
/* Octal file mode such as 0660 (at most 07777). */
int util_parse_mode(const char *s, unsigned *out);

/* Copy uri into out with any password replaced by "***" (always NUL-terminated). */
void util_mask_uri(const char *uri, char *out, size_t outlen);

/*
 * Put a permutation of 0..n-1 into order, fixed by seed (xorshift64* driving
 * a Fisher-Yates shuffle): the same seed always gives the same order.
 */
void util_shuffle_order(int *order, int n, uint64_t seed);
/* FNV-1a over n bytes, continuing from h (start with UTIL_FNV_INIT). */
#define UTIL_FNV_INIT	0xcbf29ce484222325ULL
uint64_t util_fnv1a(uint64_t h, const void *p, size_t n);

/*
 * A growable byte buffer; the owner frees it with buf_free().  One started
 * with buf_init_on() lives in the caller's storage until it needs more, then
 * moves to the heap: a short-lived process then need not allocate at all.
 */
struct buf {
	char	*data;
	size_t	 len;
	size_t	 cap;
	int	 borrowed;	/* data is the caller's storage, not malloc'd */
};
void	buf_init(struct buf *b);
void	buf_init_on(struct buf *b, char *storage, size_t size);
void	buf_free(struct buf *b);
void	buf_reset(struct buf *b);
/* These abort on out-of-memory, like xmalloc. */
void	buf_reserve(struct buf *b, size_t extra);
void	buf_append(struct buf *b, const void *p, size_t n);
void	buf_appends(struct buf *b, const char *s);
void	buf_printf(struct buf *b, const char *fmt, ...)
	    __attribute__((format(printf, 2, 3)));

/*
 * Length of the valid UTF-8 sequence of two to four bytes at p (no overlong
 * form, no surrogate, at most U+10FFFF), or 0.
 */
size_t	 util_utf8_seq(const unsigned char *p, size_t left);
/*
 * Text from another process for a terminal (ids, stats, dead letters):
 * valid UTF-8 is kept; control characters (C0, DEL, and C1 in UTF-8 too,
 * which some terminals obey) and bytes that are not valid UTF-8 become '?'.
 * Returns a NUL-terminated copy (the caller frees it); *width, when not
 * NULL, is in characters.
 */
char	*util_text(const char *src, size_t len, int *width);

void	*xmalloc(size_t n);
void	*xcalloc(size_t n, size_t sz);
void	*xrealloc(void *p, size_t n);
char	*xstrdup(const char *s);
char	*xstrndup(const char *s, size_t n);

#endif
