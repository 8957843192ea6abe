/*
 * test_util.c: the checked parsers, URI masking, struct buf and the aborting
 * allocators.
 */
#include <sys/types.h>
#include <sys/wait.h>

#include <fcntl.h>
#include <signal.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "tap.h"
#include "util.h"

/* Let the huge-allocation tests see malloc() fail under ASan as in libc. */
const char *__asan_default_options(void);
const char *
__asan_default_options(void)
{
	return "allocator_may_return_null=1";
}

static void
test_u64(void)
{
	static const char *bad[] = {
		"", " 1", "1 ", "+1", "-1", "-0", "1x", "0x10", "1.0", "1e3",
		"\t1", "1_", "18446744073709551616", "99999999999999999999",
		"184467440737095516150",
	};
	uint64_t	v;
	size_t		i;

	v = 7;
	is_int(util_parse_u64("0", 0, 10, &v), 0, "u64: 0");
	is_int(v, 0, "u64: 0 value");
	is_int(util_parse_u64("42", 0, 100, &v), 0, "u64: 42");
	is_int(v, 42, "u64: 42 value");
	is_int(util_parse_u64("007", 0, 100, &v), 0, "u64: leading zeros");
	is_int(v, 7, "u64: leading zeros value");
	ok(util_parse_u64("18446744073709551615", 0, UINT64_MAX, &v) == 0 &&
	    v == UINT64_MAX, "u64: UINT64_MAX");
	ok(util_parse_u64("18446744073709551610", 0, UINT64_MAX, &v) == 0 &&
	    v == UINT64_MAX - 5, "u64: UINT64_MAX - 5");
	for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		v = 12345;
		is_int(util_parse_u64(bad[i], 0, UINT64_MAX, &v), -1,
		    "u64: refuses '%s'", bad[i]);
		is_int(v, 12345, "u64: '%s' leaves out alone", bad[i]);
	}
	is_int(util_parse_u64(NULL, 0, 1, &v), -1, "u64: NULL");
	is_int(util_parse_u64("1\n", 0, 10, &v), -1, "u64: trailing newline");
	is_int(util_parse_size("1K\n", &v), -1, "size: trailing newline");
	is_int(util_parse_duration_ms("1s\n", &v), -1,
	    "duration: trailing newline");
	is_int(util_parse_u64("10", 10, 20, &v), 0, "u64: at min");
	is_int(util_parse_u64("20", 10, 20, &v), 0, "u64: at max");
	is_int(util_parse_u64("9", 10, 20, &v), -1, "u64: min - 1");
	is_int(util_parse_u64("21", 10, 20, &v), -1, "u64: max + 1");
	is_int(util_parse_u64("65535", 1, 65535, &v), 0, "u64: port max");
	is_int(util_parse_u64("65536", 1, 65535, &v), -1, "u64: port max + 1");
}

static void
test_size(void)
{
	static const struct {
		const char	*s;
		uint64_t	 v;
	} good[] = {
		{ "0", 0 },
		{ "1", 1 },
		{ "1024", 1024 },
		{ "1K", 1024 },
		{ "1k", 1024 },
		{ "1KiB", 1024 },
		{ "1kib", 1024 },
		{ "1KIB", 1024 },
		{ "3M", 3ULL << 20 },
		{ "3MiB", 3ULL << 20 },
		{ "3m", 3ULL << 20 },
		{ "2G", 2ULL << 30 },
		{ "2gib", 2ULL << 30 },
		{ "5T", 5ULL << 40 },
		{ "5TiB", 5ULL << 40 },
		{ "0K", 0 },
		{ "18446744073709551615", UINT64_MAX },
		/* Largest multiples that fit exactly. */
		{ "18014398509481983K", UINT64_MAX - 1023 },
		{ "17592186044415M", 17592186044415ULL << 20 },
		{ "16777215T", 16777215ULL << 40 },
	};
	static const char *bad[] = {
		"", "K", "KiB", " 1K", "1K ", "1 K", "+1K", "-1K", "1KB", "1Ki",
		"1kb", "1B", "1P", "1PiB", "1X", "1.5M", "1KK", "1iB", "1MiBs",
		"18446744073709551616",
		"18014398509481984K",	/* 2^54 KiB = 2^64 */
		"17592186044416M",	/* 2^44 MiB = 2^64 */
		"17179869184G",
		"16777216T",
		"99999999999999999999T",
	};
	uint64_t	v;
	size_t		i;

	for (i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
		v = 12345;
		is_int(util_parse_size(good[i].s, &v), 0, "size: '%s'", good[i].s);
		ok(v == good[i].v, "size: '%s' = %llu", good[i].s,
		    (unsigned long long)good[i].v);
	}
	for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		v = 12345;
		is_int(util_parse_size(bad[i], &v), -1, "size: refuses '%s'",
		    bad[i]);
		is_int(v, 12345, "size: '%s' leaves out alone", bad[i]);
	}
	is_int(util_parse_size(NULL, &v), -1, "size: NULL");
}

static void
test_duration(void)
{
	static const struct {
		const char	*s;
		uint64_t	 v;
	} good[] = {
		{ "0", 0 },
		{ "5", 5000 },
		{ "5s", 5000 },
		{ "5S", 5000 },
		{ "250ms", 250 },
		{ "250MS", 250 },
		{ "0ms", 0 },
		{ "2m", 120000 },
		{ "1h", 3600000 },
		{ "24h", 86400000 },
		{ "18446744073709551615ms", UINT64_MAX },
		{ "18446744073709551s", 18446744073709551000ULL },
		{ "5124095576030h", 5124095576030ULL * 3600000 },
	};
	static const char *bad[] = {
		"", "s", "ms", " 5s", "5s ", "5 s", "-5s", "+5", "5x", "5sec",
		"5min", "5d", "1.5s", "5mss", "5hs", "0x5",
		"18446744073709551616ms",
		"18446744073709552",		/* bare seconds: * 1000 overflows */
		"18446744073709552s",
		"307445734561826m",		/* * 60000 overflows */
		"5124095576031h",		/* * 3600000 overflows */
	};
	uint64_t	v;
	size_t		i;

	for (i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
		v = 12345;
		is_int(util_parse_duration_ms(good[i].s, &v), 0, "duration: '%s'",
		    good[i].s);
		ok(v == good[i].v, "duration: '%s' = %llu ms", good[i].s,
		    (unsigned long long)good[i].v);
	}
	for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		v = 12345;
		is_int(util_parse_duration_ms(bad[i], &v), -1,
		    "duration: refuses '%s'", bad[i]);
		is_int(v, 12345, "duration: '%s' leaves out alone", bad[i]);
	}
	is_int(util_parse_duration_ms(NULL, &v), -1, "duration: NULL");
}

static void
test_bool(void)
{
	static const char *yes[] = { "yes", "YES", "Yes", "true", "TRUE", "on",
	    "On", "1" };
	static const char *no[] = { "no", "NO", "false", "False", "off", "OFF",
	    "0" };
	static const char *bad[] = { "", "y", "n", "2", "01", "yes ", " no",
	    "enable", "truee", "of", "-1" };
	size_t	i;
	int	b;

	for (i = 0; i < sizeof(yes) / sizeof(yes[0]); i++) {
		b = -5;
		ok(util_parse_bool(yes[i], &b) == 0 && b == 1, "bool: '%s' = 1",
		    yes[i]);
	}
	for (i = 0; i < sizeof(no) / sizeof(no[0]); i++) {
		b = -5;
		ok(util_parse_bool(no[i], &b) == 0 && b == 0, "bool: '%s' = 0",
		    no[i]);
	}
	for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		b = -5;
		ok(util_parse_bool(bad[i], &b) == -1 && b == -5,
		    "bool: refuses '%s'", bad[i]);
	}
	is_int(util_parse_bool(NULL, &b), -1, "bool: NULL");
}

static void
test_mode(void)
{
	static const char *bad[] = { "", "8", "0668", "0x1ff", "-0660", "+660",
	    " 0660", "0660 ", "10000", "017777", "0777777777777777777777777",
	    "06a0" };
	unsigned	m;
	size_t		i;

	ok(util_parse_mode("0660", &m) == 0 && m == 0660, "mode: 0660");
	ok(util_parse_mode("660", &m) == 0 && m == 0660, "mode: 660");
	ok(util_parse_mode("0", &m) == 0 && m == 0, "mode: 0");
	ok(util_parse_mode("07777", &m) == 0 && m == 07777, "mode: 07777");
	ok(util_parse_mode("7777", &m) == 0 && m == 07777, "mode: 7777");
	ok(util_parse_mode("0000000000000000600", &m) == 0 && m == 0600,
	    "mode: many leading zeros");
	for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		m = 12345;
		ok(util_parse_mode(bad[i], &m) == -1 && m == 12345,
		    "mode: refuses '%s'", bad[i]);
	}
	is_int(util_parse_mode(NULL, &m), -1, "mode: NULL");
}

static void
test_mask(void)
{
	static const struct {
		const char	*in, *out;
	} cases[] = {
		{ "amqp://user:secret@host:5672/vh",
		  "amqp://user:***@host:5672/vh" },
		{ "amqps://user:secret@host:5671/vh",
		  "amqps://user:***@host:5671/vh" },
		{ "AMQPS://u:p@h", "AMQPS://u:***@h" },
		{ "amqp://user@host:5672/vh", "amqp://user@host:5672/vh" },
		{ "amqp://host:5672/vh", "amqp://host:5672/vh" },
		{ "amqp://host", "amqp://host" },
		{ "amqp://", "amqp://" },
		{ "", "" },
		{ "amqp://guest:guest@localhost:5672/",
		  "amqp://guest:***@localhost:5672/" },
		{ "amqp://user:secret@host", "amqp://user:***@host" },
		{ "amqp://user:secret@host?x=1", "amqp://user:***@host?x=1" },
		{ "amqp://user:@host/", "amqp://user:***@host/" },
		{ "amqp://:secret@host/", "amqp://:***@host/" },
		/* '@' in the path or query is not userinfo. */
		{ "amqp://host:5672/v@h", "amqp://host:5672/v@h" },
		{ "amqp://host/a:b@c", "amqp://host/a:b@c" },
		{ "amqp://host?u=a:b@c", "amqp://host?u=a:b@c" },
		{ "amqp://host#a:b@c", "amqp://host#a:b@c" },
		{ "amqp://user:secret@host/a:b@c",
		  "amqp://user:***@host/a:b@c" },
		/* A raw '@' in the password: the last '@' ends the userinfo. */
		{ "amqp://user:se@cret@host/vh", "amqp://user:***@host/vh" },
		/* A colon in the password stays hidden too. */
		{ "amqp://user:se:cret@host/vh", "amqp://user:***@host/vh" },
		/* IPv6 literal host. */
		{ "amqp://u:p@[::1]:5672/vh", "amqp://u:***@[::1]:5672/vh" },
		{ "amqp://[::1]:5672/vh", "amqp://[::1]:5672/vh" },
		/* No scheme: the whole start is the authority. */
		{ "user:secret@host", "user:***@host" },
		{ "host:5672", "host:5672" },
		{ "host/x?r=amqp://u:p@h", "host/x?r=amqp://u:***@h" },
		/* A malformed scheme still counts. */
		{ "a b://u:p@h/", "a b://u:***@h/" },
		{ "://u:p@h/", "://u:***@h/" },
	};
	char	out[256];
	size_t	i;

	for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		memset(out, 'X', sizeof(out));
		util_mask_uri(cases[i].in, out, sizeof(out));
		is_str(out, cases[i].out, "mask: '%s'", cases[i].in);
	}

	/* Truncation: always NUL-terminated, never a byte of the password. */
	{
		const char *u = "amqp://user:secret@host:5672/vh";
		const char *m = "amqp://user:***@host:5672/vh";
		size_t n;

		for (n = 1; n <= strlen(m) + 1; n++) {
			char small[64];

			memset(small, 'X', sizeof(small));
			util_mask_uri(u, small, n);
			ok(strlen(small) == n - 1 &&
			    strncmp(small, m, n - 1) == 0 &&
			    strstr(small, "sec") == NULL && small[n] == 'X',
			    "mask: truncated to %zu bytes", n);
		}
	}
	out[0] = 'X';
	util_mask_uri("amqp://u:p@h", out, 0);
	is_int(out[0], 'X', "mask: outlen 0 writes nothing");
	util_mask_uri(NULL, out, sizeof(out));
	is_str(out, "", "mask: NULL uri gives an empty string");
}

static void
test_buf(void)
{
	struct buf	b;
	char		big[5000];
	size_t		i;

	buf_init(&b);
	ok(b.data == NULL && b.len == 0 && b.cap == 0, "buf: init is empty");
	buf_free(&b);
	ok(b.data == NULL && b.len == 0, "buf: free of an empty buf");

	buf_append(&b, "abc", 3);
	ok(b.len == 3 && memcmp(b.data, "abc", 3) == 0, "buf: append");
	is_int(b.data[3], 0, "buf: NUL-terminated after append");
	buf_append(&b, "\0x\n", 3);
	ok(b.len == 6 && memcmp(b.data, "abc\0x\n", 6) == 0,
	    "buf: binary append");
	buf_append(&b, NULL, 0);
	is_int(b.len, 6, "buf: empty append");
	buf_appends(&b, "def");
	ok(b.len == 9 && memcmp(b.data, "abc\0x\ndef", 10) == 0,
	    "buf: appends");
	buf_reset(&b);
	ok(b.len == 0 && b.cap > 0 && b.data[0] == '\0', "buf: reset keeps memory");

	buf_printf(&b, "%s=%d;", "n", 42);
	is_str(b.data, "n=42;", "buf: printf");
	is_int(b.len, 5, "buf: printf len");
	buf_printf(&b, "%s", "");
	is_int(b.len, 5, "buf: printf of nothing");

	/* A formatted string longer than the free space grows the buffer. */
	memset(big, 'z', sizeof(big) - 1);
	big[sizeof(big) - 1] = '\0';
	buf_printf(&b, "[%s]", big);
	is_int(b.len, 5 + 2 + sizeof(big) - 1, "buf: long printf len");
	ok(b.cap > b.len, "buf: cap covers len and NUL");
	ok(memcmp(b.data, "n=42;[zzz", 9) == 0 && b.data[b.len - 1] == ']' &&
	    b.data[b.len] == '\0', "buf: long printf content");

	buf_reset(&b);
	for (i = 0; i < 10000; i++)
		buf_printf(&b, "%zu,", i % 10);
	is_int(b.len, 20000, "buf: many small printfs");
	ok(b.data[0] == '0' && b.data[19998] == '9' && b.data[19999] == ',',
	    "buf: many small printfs content");

	buf_reserve(&b, 100000);
	ok(b.cap >= b.len + 100000 + 1, "buf: reserve");
	buf_free(&b);
	ok(b.data == NULL && b.len == 0 && b.cap == 0, "buf: free resets");
}

/* A buf on the caller's storage: used there, then moved to the heap. */
static void
test_buf_on(void)
{
	struct buf	b;
	char		store[16], big[40], *dirty;

	memset(store, 'x', sizeof(store));
	buf_init_on(&b, store, sizeof(store));
	ok(b.data == store && b.len == 0 && b.cap == sizeof(store) &&
	    store[0] == '\0', "buf_on: starts empty in the storage");
	buf_append(&b, "0123456789abcde", 15);	/* 15 and the NUL: full */
	ok(b.data == store && b.len == 15 && strcmp(store, "0123456789abcde")
	    == 0, "buf_on: fills the storage without allocating");
	buf_reset(&b);
	ok(b.data == store && b.len == 0, "buf_on: reset keeps the storage");
	buf_free(&b);	/* must not free() the stack array */
	ok(b.data == NULL && b.len == 0 && b.cap == 0,
	    "buf_on: free of an unmoved buf resets it");

	buf_init_on(&b, store, sizeof(store));
	buf_append(&b, "0123456789", 10);
	memset(big, 'y', sizeof(big));
	buf_append(&b, big, sizeof(big));	/* 50 bytes: over 16 */
	ok(b.data != store && b.len == 50 && b.cap > 50,
	    "buf_on: growing moves it to the heap");
	ok(memcmp(b.data, "0123456789yyy", 13) == 0 && b.data[49] == 'y' &&
	    b.data[50] == '\0', "buf_on: the move keeps the bytes");
	ok(!b.borrowed, "buf_on: the heap copy is the buffer's own");
	buf_reserve(&b, 10000);
	ok(b.cap >= 50 + 10000 + 1 && memcmp(b.data, "0123456789y", 11) == 0,
	    "buf_on: grows on the heap after the move");
	buf_free(&b);	/* frees the heap copy: leak-checked by valgrind */
	ok(b.data == NULL && b.cap == 0 && !b.borrowed,
	    "buf_on: free after the move");

	/*
	 * A move by reserve alone (a recv() into the room) keeps the NUL.
	 * The move's malloc(128) likely gets this block back: not zeros
	 * (past the 16 bytes a free list writes into a freed block).
	 */
	if ((dirty = malloc(128)) != NULL) {
		memset(dirty, 'x', 128);
		free(dirty);
	}
	memset(big, 'x', sizeof(big));
	buf_init_on(&b, big, 32);
	buf_append(&b, "0123456789abcdefghij", 20);
	buf_reserve(&b, 100);
	ok(b.data != big && b.len == 20 && b.cap >= 121 &&
	    strcmp(b.data, "0123456789abcdefghij") == 0,
	    "buf_on: a reserve over the storage moves the string with its NUL");
	buf_free(&b);

	buf_init_on(&b, store, 0);
	ok(b.data == NULL && b.cap == 0, "buf_on: size 0 is buf_init()");
	buf_appends(&b, "abc");
	ok(b.data != store && strcmp(b.data, "abc") == 0,
	    "buf_on: size 0 allocates on the first append");
	buf_free(&b);
}

static void
test_x(void)
{
	char	*p;

	p = xstrdup("hello");
	is_str(p, "hello", "xstrdup");
	free(p);
	p = xstrndup("hello", 3);
	is_str(p, "hel", "xstrndup shorter");
	free(p);
	p = xstrndup("hi", 10);
	is_str(p, "hi", "xstrndup longer than the string");
	free(p);
	p = xstrndup("hi", 0);
	is_str(p, "", "xstrndup 0");
	free(p);
	p = xmalloc(0);
	ok(p != NULL, "xmalloc(0) is not NULL");
	free(p);
	p = xcalloc(0, 8);
	ok(p != NULL, "xcalloc(0, n) is not NULL");
	free(p);
	p = xcalloc(4, 8);
	ok(p != NULL && memcmp(p, "\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0", 16) == 0,
	    "xcalloc zeroes");
	memcpy(p, "0123456789abcdef", 16);
	p = xrealloc(p, 1000);
	ok(p != NULL && memcmp(p, "0123456789abcdef", 16) == 0,
	    "xrealloc keeps content");
	free(p);
}

enum oom_case { OOM_MALLOC, OOM_CALLOC, OOM_REALLOC, OOM_BUF };

/*
 * Run one out-of-memory case in a child: it must say "out of memory" on
 * stderr and die of SIGABRT.
 */
static void
test_oom(enum oom_case c, const char *name)
{
	int	 fds[2], status;
	char	 msg[256];
	ssize_t	 n;
	size_t	 got = 0;
	pid_t	 pid;

	if (pipe(fds) == -1) {
		ok(0, "%s: pipe", name);
		return;
	}
	fflush(stdout);
	if ((pid = fork()) == 0) {
		struct buf b;
		volatile void *p = NULL;

		dup2(fds[1], 2);
		close(fds[0]);
		switch (c) {
		case OOM_MALLOC:
			p = xmalloc(SIZE_MAX / 2 - 16);
			break;
		case OOM_CALLOC:
			p = xcalloc(SIZE_MAX / 8, 2);
			break;
		case OOM_REALLOC:
			p = xrealloc(NULL, SIZE_MAX / 2 - 16);
			break;
		case OOM_BUF:
			buf_init(&b);
			buf_append(&b, "x", 1);
			buf_reserve(&b, SIZE_MAX);
			break;
		}
		(void)p;
		_exit(0);
	}
	close(fds[1]);
	while (got < sizeof(msg) - 1 &&
	    (n = read(fds[0], msg + got, sizeof(msg) - 1 - got)) > 0)
		got += (size_t)n;
	msg[got] = '\0';
	close(fds[0]);
	waitpid(pid, &status, 0);
	ok(WIFSIGNALED(status) && WTERMSIG(status) == SIGABRT,
	    "%s: aborts", name);
	ok(strstr(msg, "out of memory") != NULL, "%s: says out of memory",
	    name);
}

static void
test_shuffle(void)
{
	int		 a[16], b[16], seen[16], first[3] = { 0, 0, 0 };
	int		 n, i, same, differ = 0;
	uint64_t	 seed;

	for (n = 1; n <= 16; n++) {
		util_shuffle_order(a, n, 12345 + (uint64_t)n);
		memset(seen, 0, sizeof(seen));
		for (i = 0; i < n; i++)
			if (a[i] >= 0 && a[i] < n)
				seen[a[i]]++;
		for (i = 0; i < n && seen[i] == 1; i++)
			;
		ok(i == n, "shuffle of %d: a permutation", n);
	}
	util_shuffle_order(a, 16, 42);
	util_shuffle_order(b, 16, 42);
	ok(memcmp(a, b, sizeof(a)) == 0, "shuffle: same seed, same order");
	for (seed = 1; seed <= 20; seed++) {
		util_shuffle_order(b, 16, seed * 0x9e3779b97f4a7c15ULL);
		differ += memcmp(a, b, sizeof(a)) != 0;
	}
	is_int(differ, 20, "shuffle: other seeds, other orders");
	util_shuffle_order(a, 16, 0);
	for (i = 0, same = 0; i < 16; i++)
		same += a[i] == i;
	ok(same < 16, "shuffle: seed 0 still shuffles");
	/* Hosts spread over three nodes: FNV of "host-N" as the seed. */
	for (i = 0; i < 3000; i++) {
		char	 host[32];

		snprintf(host, sizeof(host), "host-%d", i);
		seed = util_fnv1a(UTIL_FNV_INIT, host, strlen(host));
		util_shuffle_order(a, 3, seed);
		first[a[0]]++;
	}
	ok(first[0] > 850 && first[1] > 850 && first[2] > 850,
	    "shuffle: 3000 hosts spread over 3 first choices (%d/%d/%d)",
	    first[0], first[1], first[2]);
	ok(util_fnv1a(UTIL_FNV_INIT, "a", 1) == 0xaf63dc4c8601ec8cULL,
	    "fnv1a of \"a\" (the published test vector)");
}

int
main(void)
{
	test_u64();
	test_size();
	test_duration();
	test_bool();
	test_mode();
	test_mask();
	test_buf();
	test_buf_on();
	test_shuffle();
	test_x();
	test_oom(OOM_MALLOC, "xmalloc");
	test_oom(OOM_CALLOC, "xcalloc");
	test_oom(OOM_REALLOC, "xrealloc");
	test_oom(OOM_BUF, "buf_reserve");
	return done_testing();
}
