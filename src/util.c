/*
 * util.c: checked number parsing, URI masking, a growable buffer and the
 * aborting allocators.  No I/O except the "out of memory" line before abort().
 */
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "util.h"

/*
 * Parse the leading decimal digits of s into *out; *end points after them.
 * Refuses no digits at all and overflow.  Signs and spaces are not digits, so
 * strtoull()'s habits (leading blanks, "-1" wrapping to UINT64_MAX) never apply.
 */
static int
util_digits(const char *s, const char **end, uint64_t *out)
{
	uint64_t	v = 0;
	const char	*p;

	for (p = s; *p >= '0' && *p <= '9'; p++) {
		unsigned d = (unsigned)(*p - '0');

		if (v > (UINT64_MAX - d) / 10)
			return -1;
		v = v * 10 + d;
	}
	if (p == s)
		return -1;
	*end = p;
	*out = v;
	return 0;
}

int
util_parse_u64(const char *s, uint64_t min, uint64_t max, uint64_t *out)
{
	const char	*end;
	uint64_t	 v;

	if (s == NULL || util_digits(s, &end, &v) == -1 || *end != '\0')
		return -1;
	if (v < min || v > max)
		return -1;
	*out = v;
	return 0;
}

/* Multiply with an overflow check. */
static int
util_mul(uint64_t v, uint64_t m, uint64_t *out)
{
	if (m != 0 && v > UINT64_MAX / m)
		return -1;
	*out = v * m;
	return 0;
}

int
util_parse_size(const char *s, uint64_t *out)
{
	static const struct {
		const char	*name;
		uint64_t	 mult;
	} units[] = {
		{ "",    1 },
		{ "K",   1ULL << 10 }, { "KiB", 1ULL << 10 },
		{ "M",   1ULL << 20 }, { "MiB", 1ULL << 20 },
		{ "G",   1ULL << 30 }, { "GiB", 1ULL << 30 },
		{ "T",   1ULL << 40 }, { "TiB", 1ULL << 40 },
	};
	const char	*end;
	uint64_t	 v;
	size_t		 i;

	if (s == NULL || util_digits(s, &end, &v) == -1)
		return -1;
	for (i = 0; i < sizeof(units) / sizeof(units[0]); i++) {
		if (strcasecmp(end, units[i].name) == 0)
			return util_mul(v, units[i].mult, out);
	}
	return -1;
}

int
util_parse_duration_ms(const char *s, uint64_t *out)
{
	static const struct {
		const char	*name;
		uint64_t	 mult;
	} units[] = {
		{ "",   1000 },		/* a bare number is seconds */
		{ "ms", 1 },
		{ "s",  1000 },
		{ "m",  60 * 1000 },
		{ "h",  60 * 60 * 1000 },
	};
	const char	*end;
	uint64_t	 v;
	size_t		 i;

	if (s == NULL || util_digits(s, &end, &v) == -1)
		return -1;
	for (i = 0; i < sizeof(units) / sizeof(units[0]); i++) {
		if (strcasecmp(end, units[i].name) == 0)
			return util_mul(v, units[i].mult, out);
	}
	return -1;
}

int
util_parse_bool(const char *s, int *out)
{
	static const char *yes[] = { "yes", "true", "on", "1" };
	static const char *no[] = { "no", "false", "off", "0" };
	size_t	i;

	if (s == NULL)
		return -1;
	for (i = 0; i < sizeof(yes) / sizeof(yes[0]); i++) {
		if (strcasecmp(s, yes[i]) == 0) {
			*out = 1;
			return 0;
		}
		if (strcasecmp(s, no[i]) == 0) {
			*out = 0;
			return 0;
		}
	}
	return -1;
}

int
util_parse_mode(const char *s, unsigned *out)
{
	const char	*p;
	unsigned	 v = 0;

	if (s == NULL || *s == '\0')
		return -1;
	for (p = s; *p != '\0'; p++) {
		if (*p < '0' || *p > '7')
			return -1;
		v = v * 8 + (unsigned)(*p - '0');
		/* Checked per digit so that long strings cannot wrap. */
		if (v > 07777)
			return -1;
	}
	*out = v;
	return 0;
}

/* Append n bytes of p to out[*pos..outlen-1), truncating; keeps room for NUL. */
static void
util_put(char *out, size_t outlen, size_t *pos, const char *p, size_t n)
{
	size_t	room = outlen - 1 - *pos;

	if (n > room)
		n = room;
	memcpy(out + *pos, p, n);
	*pos += n;
}

/*
 * Only the authority (between "scheme://" and the first '/', '?' or '#') can
 * hold a password; an '@' further on belongs to the path or query and must
 * not make us mask (or keep) the wrong part.  The last '@' of the authority
 * ends the userinfo, so a password with a raw '@' in it is still masked whole.
 */
void
util_mask_uri(const char *uri, char *out, size_t outlen)
{
	const char	*auth, *authend, *at, *colon, *p;
	size_t		 pos = 0;

	if (out == NULL || outlen == 0)
		return;
	if (uri == NULL) {
		out[0] = '\0';
		return;
	}

	/* Even after a malformed scheme: masking too much is harmless. */
	auth = (p = strstr(uri, "://")) != NULL ? p + 3 : uri;
	authend = auth + strcspn(auth, "/?#");

	at = NULL;
	for (p = auth; p < authend; p++) {
		if (*p == '@')
			at = p;
	}
	colon = NULL;
	if (at != NULL)
		colon = memchr(auth, ':', (size_t)(at - auth));

	if (colon == NULL) {
		util_put(out, outlen, &pos, uri, strlen(uri));
	} else {
		util_put(out, outlen, &pos, uri, (size_t)(colon + 1 - uri));
		util_put(out, outlen, &pos, "***", 3);
		util_put(out, outlen, &pos, at, strlen(at));
	}
	out[pos] = '\0';
}

void
buf_init(struct buf *b)
{
	b->data = NULL;
	b->len = 0;
	b->cap = 0;
	b->borrowed = 0;
}

/* storage must outlive the buffer's use of it; size 0 is buf_init(). */
void
buf_init_on(struct buf *b, char *storage, size_t size)
{
	buf_init(b);
	if (size == 0)
		return;
	b->data = storage;
	b->data[0] = '\0';
	b->cap = size;
	b->borrowed = 1;
}

void
buf_free(struct buf *b)
{
	if (!b->borrowed)
		free(b->data);
	buf_init(b);
}

void
buf_reset(struct buf *b)
{
	b->len = 0;
	if (b->data != NULL)
		b->data[0] = '\0';
}

/*
 * Room for extra more bytes plus a NUL: the data stays a C string after every
 * append, which lets text users print it without copying.
 */
void
buf_reserve(struct buf *b, size_t extra)
{
	char	*p;
	size_t	 want, ncap;

	if (extra > SIZE_MAX - 1 - b->len) {
		fprintf(stderr, "out of memory\n");
		abort();
	}
	want = b->len + extra + 1;
	if (want <= b->cap)
		return;
	ncap = b->cap != 0 ? b->cap : 64;
	while (ncap < want)
		ncap = ncap > SIZE_MAX / 2 ? want : ncap * 2;
	if (b->borrowed) {
		p = xmalloc(ncap);
		memcpy(p, b->data, b->len + 1);	/* with its NUL */
		b->data = p;
		b->borrowed = 0;
	} else
		b->data = xrealloc(b->data, ncap);
	b->cap = ncap;
}

void
buf_append(struct buf *b, const void *p, size_t n)
{
	buf_reserve(b, n);
	if (n != 0)
		memcpy(b->data + b->len, p, n);
	b->len += n;
	b->data[b->len] = '\0';
}

void
buf_appends(struct buf *b, const char *s)
{
	buf_append(b, s, strlen(s));
}

void
buf_printf(struct buf *b, const char *fmt, ...)
{
	va_list	ap;
	int	n;

	buf_reserve(b, 64);
	va_start(ap, fmt);
	n = vsnprintf(b->data + b->len, b->cap - b->len, fmt, ap);
	va_end(ap);
	if (n < 0) {
		/* Only an invalid format gets here; leave the buffer as it was. */
		b->data[b->len] = '\0';
		return;
	}
	if ((size_t)n >= b->cap - b->len) {
		buf_reserve(b, (size_t)n);
		va_start(ap, fmt);
		(void)vsnprintf(b->data + b->len, b->cap - b->len, fmt, ap);
		va_end(ap);
	}
	b->len += (size_t)n;
}

static void
util_oom(void)
{
	fprintf(stderr, "out of memory\n");
	abort();
}

void *
xmalloc(size_t n)
{
	void	*p;

	/* malloc(0) may return NULL; callers treat NULL as failure. */
	if ((p = malloc(n != 0 ? n : 1)) == NULL)
		util_oom();
	return p;
}

void *
xcalloc(size_t n, size_t sz)
{
	void	*p;

	if (n == 0 || sz == 0)
		n = sz = 1;
	if ((p = calloc(n, sz)) == NULL)
		util_oom();
	return p;
}

void *
xrealloc(void *p, size_t n)
{
	void	*np;

	if ((np = realloc(p, n != 0 ? n : 1)) == NULL)
		util_oom();
	return np;
}

char *
xstrdup(const char *s)
{
	return xstrndup(s, strlen(s));
}

char *
xstrndup(const char *s, size_t n)
{
	char	*p;
	size_t	 len;

	for (len = 0; len < n && s[len] != '\0'; len++)
		;
	p = xmalloc(len + 1);
	memcpy(p, s, len);
	p[len] = '\0';
	return p;
}

uint64_t
util_fnv1a(uint64_t h, const void *p, size_t n)
{
	const unsigned char	*c = p;

	while (n-- > 0) {
		h ^= *c++;
		h *= 0x100000001b3ULL;
	}
	return h;
}

void
util_shuffle_order(int *order, int n, uint64_t seed)
{
	uint64_t	x = seed != 0 ? seed : 0x9e3779b97f4a7c15ULL;
	int		i, j, t;

	for (i = 0; i < n; i++)
		order[i] = i;
	for (i = n - 1; i > 0; i--) {
		x ^= x >> 12;
		x ^= x << 25;
		x ^= x >> 27;
		j = (int)((x * 0x2545f4914f6cdd1dULL) % (uint64_t)(i + 1));
		t = order[i];
		order[i] = order[j];
		order[j] = t;
	}
}

size_t
util_utf8_seq(const unsigned char *p, size_t left)
{
	unsigned char	lo = 0x80, hi = 0xbf;
	size_t		n, i;

	if (p[0] >= 0xc2 && p[0] <= 0xdf)
		n = 2;
	else if (p[0] >= 0xe0 && p[0] <= 0xef) {
		n = 3;
		if (p[0] == 0xe0)
			lo = 0xa0;
		else if (p[0] == 0xed)
			hi = 0x9f;
	} else if (p[0] >= 0xf0 && p[0] <= 0xf4) {
		n = 4;
		if (p[0] == 0xf0)
			lo = 0x90;
		else if (p[0] == 0xf4)
			hi = 0x8f;
	} else
		return 0;
	if (left < n || p[1] < lo || p[1] > hi)
		return 0;
	for (i = 2; i < n; i++)
		if (p[i] < 0x80 || p[i] > 0xbf)
			return 0;
	return n;
}

char *
util_text(const char *src, size_t len, int *width)
{
	const unsigned char	*p = (const unsigned char *)src;
	char			*dst = xmalloc(len + 1);
	size_t			 i, j = 0, n;
	int			 w = 0;

	for (i = 0; i < len; i += n, w++) {
		n = p[i] >= 0x80 ? util_utf8_seq(p + i, len - i) : 1;
		if (n > 1 && !(p[i] == 0xc2 && p[i + 1] < 0xa0)) {
			memcpy(dst + j, p + i, n);
			j += n;
			continue;
		}
		if (n == 0)
			n = 1;
		dst[j++] = (n == 1 && p[i] >= 0x20 && p[i] < 0x7f) ?
		    (char)p[i] : '?';
	}
	dst[j] = '\0';
	if (width != NULL)
		*width = w;
	return dst;
}
