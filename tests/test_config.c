/*
 * test_config.c: config_defaults() and config_load(): every key, every error
 * message with its FILE:LINE: [section] key prefix, syntax errors, the uri
 * list, password_file, and the shipped etc/pubrelay.ini.
 */
#include <sys/stat.h>

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <syslog.h>
#include <unistd.h>

#include "config.h"
#include "tap.h"

#ifndef PUBRELAY_SOCKET_PATH
#define PUBRELAY_SOCKET_PATH	"/run/pubrelay/pubrelay.sock"
#endif
#ifndef PUBRELAY_OUTBOX_PATH
#define PUBRELAY_OUTBOX_PATH	"/var/lib/pubrelay/outbox.db"
#endif

/* One config_load() of a temporary file, with what it printed. */
struct result {
	char		*path;
	char		*errs;
	size_t		 errlen;
	int		 rc;
	struct config	 cf;
};

static char	tmpdir[4096];

/* A formatted, allocated string (asprintf is not in POSIX). */
static char *
strfmt(const char *f, ...) __attribute__((format(printf, 1, 2)));

static char *
strfmt(const char *f, ...)
{
	va_list	 ap;
	char	*s;
	int	 n;

	va_start(ap, f);
	n = vsnprintf(NULL, 0, f, ap);
	va_end(ap);
	if (n < 0 || (s = malloc((size_t)n + 1)) == NULL)
		abort();
	va_start(ap, f);
	vsnprintf(s, (size_t)n + 1, f, ap);
	va_end(ap);
	return s;
}

static char *
tmp_write(const char *data, size_t len)
{
	char	*path;
	int	 fd;

	path = strfmt("%s/test_config.XXXXXX", tmpdir);
	if ((fd = mkstemp(path)) == -1) {
		perror("mkstemp");
		exit(2);
	}
	if (write(fd, data, len) != (ssize_t)len) {
		perror("write");
		exit(2);
	}
	close(fd);
	return path;
}

/* A file of the source tree: from $PUBRELAY_SRCDIR, or beside this one. */
static char *
srcdir_path(const char *rel)
{
	const char	*srcdir, *f = __FILE__, *t;

	if ((srcdir = getenv("PUBRELAY_SRCDIR")) != NULL)
		return strfmt("%s/%s", srcdir, rel);
	/* Run by hand: __FILE__ is the path make gave the compiler. */
	t = strstr(f, "tests/test_config.c");
	return strfmt("%.*s%s", t != NULL ? (int)(t - f) : 0, f, rel);
}

static void
load_path(struct result *r, const char *path)
{
	FILE	*errf;

	r->errs = NULL;
	r->errlen = 0;
	if ((errf = open_memstream(&r->errs, &r->errlen)) == NULL)
		abort();
	config_defaults(&r->cf);
	r->rc = config_load(&r->cf, path, errf);
	fclose(errf);
}

static void
load_n(struct result *r, const char *text, size_t len)
{
	r->path = tmp_write(text, len);
	load_path(r, r->path);
}

static void
load(struct result *r, const char *text)
{
	load_n(r, text, strlen(text));
}

static void
result_free(struct result *r)
{
	config_free(&r->cf);
	if (r->path != NULL) {
		unlink(r->path);
		free(r->path);
	}
	free(r->errs);
	memset(r, 0, sizeof(*r));
}

static int
count_lines(const char *s)
{
	int	n = 0;

	for (; *s != '\0'; s++)
		if (*s == '\n')
			n++;
	return n;
}

/* Is "PATH:LINE: msg" one whole line of the errors? */
static int
has_error(const struct result *r, int line, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

static int
has_error(const struct result *r, int line, const char *fmt, ...)
{
	char	 msg[8192], want[8300];
	const char *s, *nl;
	va_list	 ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	if (line > 0)
		snprintf(want, sizeof(want), "%s:%d: %s", r->path, line, msg);
	else
		snprintf(want, sizeof(want), "%s: %s", r->path, msg);
	for (s = r->errs; s != NULL && *s != '\0'; s = nl + 1) {
		if ((nl = strchr(s, '\n')) == NULL)
			nl = s + strlen(s);
		if ((size_t)(nl - s) == strlen(want) &&
		    strncmp(s, want, (size_t)(nl - s)) == 0)
			return 1;
		if (*nl == '\0')
			break;
	}
	printf("# no line '%s' in:\n", want);
	for (s = r->errs; s != NULL && *s != '\0'; s = nl + 1) {
		if ((nl = strchr(s, '\n')) == NULL)
			break;
		printf("#   %.*s\n", (int)(nl - s), s);
	}
	return 0;
}

/*
 * Under a unit with StateDirectory= and RuntimeDirectory=, the defaults are
 * in the directories systemd made (the first of several; relative values
 * ignored); a path in the config still wins.
 */
static void
test_defaults_from_systemd(void)
{
	struct config	cf;
	struct result	r;

	setenv("STATE_DIRECTORY", "/var/lib/pubrelay", 1);
	setenv("RUNTIME_DIRECTORY", "/run/pubrelay/:/run/other", 1);
	config_defaults(&cf);
	is_str(cf.outbox_path, "/var/lib/pubrelay/outbox.db",
	    "STATE_DIRECTORY: default outbox in it");
	is_str(cf.socket_path, "/run/pubrelay/pubrelay.sock",
	    "RUNTIME_DIRECTORY: default socket in the first one");
	config_free(&cf);

	load(&r, "[outbox]\npath = /srv/outbox.db\n[socket]\n"
	    "path = /srv/p.sock\n");
	is_int(r.rc, 0, "paths set under systemd: no errors");
	is_str(r.cf.outbox_path, "/srv/outbox.db", "[outbox] path wins");
	is_str(r.cf.socket_path, "/srv/p.sock", "[socket] path wins");
	result_free(&r);

	setenv("STATE_DIRECTORY", "relative", 1);
	setenv("RUNTIME_DIRECTORY", "", 1);
	config_defaults(&cf);
	is_str(cf.outbox_path, PUBRELAY_OUTBOX_PATH,
	    "relative STATE_DIRECTORY ignored");
	is_str(cf.socket_path, PUBRELAY_SOCKET_PATH,
	    "empty RUNTIME_DIRECTORY ignored");
	config_free(&cf);
	unsetenv("STATE_DIRECTORY");
	unsetenv("RUNTIME_DIRECTORY");
}

static void
test_defaults(void)
{
	struct config	cf;

	config_defaults(&cf);
	is_int(cf.nuris, 0, "defaults: no uri before config_load");
	ok(cf.password_file == NULL && cf.password == NULL,
	    "defaults: no password");
	is_int(cf.heartbeat, 30, "defaults: heartbeat 30 s");
	is_int(cf.connect_timeout_ms, 5000, "defaults: connect_timeout 5 s");
	is_int(cf.reconnect_min_ms, 100, "defaults: reconnect_min 100 ms");
	is_int(cf.reconnect_max_ms, 30000, "defaults: reconnect_max 30 s");
	ok(cf.ca_file == NULL && cf.cert_file == NULL && cf.key_file == NULL,
	    "defaults: no ca_file, cert_file, key_file");
	is_int(cf.verify_peer, 1, "defaults: verify_peer yes");
	is_int(cf.verify_hostname, 1, "defaults: verify_hostname yes");
	is_str(cf.socket_path, PUBRELAY_SOCKET_PATH, "defaults: socket path");
	is_int(cf.socket_mode, 0660, "defaults: socket mode 0660");
	is_int(cf.max_clients, 1024, "defaults: max_clients");
	is_int(cf.max_clients_per_user, 0, "defaults: max_clients_per_user "
	    "0 (off)");
	ok(cf.max_bytes_per_user == 0, "defaults: max_bytes_per_user 0 (off)");
	is_int(cf.max_message_size, 1024 * 1024, "defaults: max_message_size");
	is_str(cf.outbox_path, PUBRELAY_OUTBOX_PATH, "defaults: outbox path");
	ok(cf.max_bytes == 1024ULL * 1024 * 1024, "defaults: max_bytes 1G");
	ok(cf.min_free == 64ULL * 1024 * 1024, "defaults: min_free 64M");
	ok(cf.dead_max_bytes == 64ULL * 1024 * 1024,
	    "defaults: dead_max_bytes 64M");
	is_int(cf.sync_full, 1, "defaults: sync full");
	is_int(cf.window, 256, "defaults: window");
	is_int(cf.persistent, 1, "defaults: persistent");
	is_int(cf.mandatory, 0, "defaults: not mandatory");
	is_int(cf.confirm_timeout_ms, 30000, "defaults: confirm_timeout 30 s");
	is_int(cf.on_unroutable, POLICY_PARK, "defaults: on_unroutable park");
	is_int(cf.on_rejected, POLICY_PARK, "defaults: on_rejected park");
	is_int(cf.max_attempts, 3, "defaults: max_attempts 3");
	is_int(cf.log_level, LOG_INFO, "defaults: log level info");
	config_free(&cf);
	test_defaults_from_systemd();
	ok(cf.socket_path == NULL && cf.outbox_path == NULL && cf.nuris == 0,
	    "config_free on defaults clears the struct");
	/* A second free finds nothing left to free. */
	config_free(&cf);
	ok(cf.socket_path == NULL, "config_free twice is harmless");
}

static void
test_empty(void)
{
	struct result	r;

	load(&r, "");
	is_int(r.rc, 0, "empty file: no errors");
	is_int(r.errlen, 0, "empty file: nothing printed");
	is_int(r.cf.nuris, 1, "empty file: one uri");
	is_str(r.cf.uris[0], CONFIG_DEFAULT_URI, "empty file: default uri");
	is_int(r.cf.window, CONFIG_DEFAULT_WINDOW, "empty file: defaults kept");
	result_free(&r);

	/*
	 * The compiled-in uri must pass the rules a written one does: the
	 * publisher logs in to whatever vhost it names.
	 */
	load(&r, "[broker]\nuri = " CONFIG_DEFAULT_URI "\n");
	is_int(r.rc, 0, "CONFIG_DEFAULT_URI is valid when written in the file");
	if (r.rc != 0)
		diag("%s", r.errs);
	result_free(&r);

	load(&r, "# only a comment\n\n; another\n   \n");
	is_int(r.rc, 0, "comments only: no errors");
	is_int(r.errlen, 0, "comments only: nothing printed");
	result_free(&r);
}

static void
test_every_key(void)
{
	struct result	r;

	/* A BOM, CRLF endings, indentation and comments of every kind. */
	load(&r,
	    "\xef\xbb\xbf# pubrelay test\n"
	    "[broker]\r\n"
	    "uri = amqp://u1:p1@first:5672/%2f\n"
	    "  uri=amqp://u2:p2@second/vh ; inline comment\n"
	    "uri = amqp://third\n"
	    "uri_order = Shuffle\n"
	    "heartbeat = 10\n"
	    "connect_timeout = 750ms\r\n"
	    "reconnect_min = 250ms\n"
	    "reconnect_max = 2m\n"
	    "\n"
	    "; semicolon comment\n"
	    "[socket]  # trailing comment\n"
	    "path = /tmp/x/relay.sock\n"
	    "mode = 0600\n"
	    "max_clients = 17\n"
	    "max_message_size = 64K\n"
	    "[outbox]\n"
	    "path = /tmp/x/outbox.db\n"
	    "max_bytes = 0\n"
	    "min_free = 512K\n"
	    "dead_max_bytes = 2M\n"
	    "sync = normal\n"
	    "[publish]\n"
	    "window = 1\n"
	    "persistent = no\n"
	    "mandatory = YES\n"
	    "confirm_timeout = 90\n"
	    "on_unroutable = retry\n"
	    "on_rejected = Retry\n"
	    "max_attempts = 7\n"
	    "[log]\n"
	    "level = debug\n");
	is_int(r.rc, 0, "every key: no errors");
	is_int(r.errlen, 0, "every key: nothing printed");
	is_int(r.cf.nuris, 3, "every key: three uris");
	is_str(r.cf.uris[0], "amqp://u1:p1@first:5672/%2f", "uri 1 in order");
	is_str(r.cf.uris[1], "amqp://u2:p2@second/vh",
	    "uri 2 in order, inline comment stripped");
	is_str(r.cf.uris[2], "amqp://third", "uri 3 in order");
	is_int(r.cf.uri_shuffle, 1, "uri_order Shuffle");
	is_int(r.cf.heartbeat, 10, "heartbeat: bare number is seconds");
	is_int(r.cf.connect_timeout_ms, 750, "connect_timeout 750ms");
	is_int(r.cf.reconnect_min_ms, 250, "reconnect_min 250ms");
	is_int(r.cf.reconnect_max_ms, 120000, "reconnect_max 2m");
	is_str(r.cf.socket_path, "/tmp/x/relay.sock", "socket path");
	is_int(r.cf.socket_mode, 0600, "socket mode 0600");
	is_int(r.cf.max_clients, 17, "max_clients");
	is_int(r.cf.max_message_size, 65536, "max_message_size 64K");
	is_str(r.cf.outbox_path, "/tmp/x/outbox.db", "outbox path");
	is_int(r.cf.max_bytes, 0, "max_bytes 0: unlimited");
	is_int(r.cf.min_free, 512 * 1024, "min_free 512K");
	is_int(r.cf.dead_max_bytes, 2 * 1024 * 1024, "dead_max_bytes 2M");
	is_int(r.cf.sync_full, 0, "sync normal");
	is_int(r.cf.window, 1, "window 1");
	is_int(r.cf.persistent, 0, "persistent no");
	is_int(r.cf.mandatory, 1, "mandatory YES");
	is_int(r.cf.confirm_timeout_ms, 90000,
	    "confirm_timeout: bare number is seconds");
	is_int(r.cf.on_unroutable, POLICY_RETRY, "on_unroutable retry");
	is_int(r.cf.on_rejected, POLICY_RETRY, "on_rejected Retry");
	is_int(r.cf.max_attempts, 7, "max_attempts 7");
	is_int(r.cf.log_level, LOG_DEBUG, "log level debug");
	ok(r.cf.password == NULL, "no password_file, no password");
	result_free(&r);
}

static void
test_limits_accepted(void)
{
	struct result	r;
	char		text[1024], path[200];

	/* The longest socket path that fits sun_path (108 bytes on Linux). */
	memset(path, 'a', 107);
	path[0] = '/';
	path[107] = '\0';
	snprintf(text, sizeof(text),
	    "[broker]\n"
	    "heartbeat = 0\n"
	    "connect_timeout = 300s\n"
	    "reconnect_min = 10ms\n"
	    "reconnect_max = 10ms\n"
	    "[socket]\n"
	    "path = %s\n"
	    "max_clients = 100000\n"
	    "max_message_size = 128MiB\n"
	    "mode = 07777\n"
	    "[outbox]\n"
	    "max_bytes = 16T\n"
	    "sync = FULL\n"
	    "[publish]\n"
	    "window = 65535\n"
	    "persistent = on\n"
	    "mandatory = false\n"
	    "confirm_timeout = 1s\n"
	    "on_unroutable = PARK\n"
	    "on_rejected = park\n"
	    "max_attempts = 1000\n"
	    "[log]\n"
	    "level = error\n", path);
	load(&r, text);
	is_int(r.rc, 0, "limits: no errors");
	is_int(r.errlen, 0, "limits: nothing printed");
	is_int(r.cf.heartbeat, 0, "heartbeat 0 disables");
	is_int(r.cf.connect_timeout_ms, 300000, "connect_timeout 300s");
	ok(r.cf.reconnect_min_ms == 10 && r.cf.reconnect_max_ms == 10,
	    "reconnect_min == reconnect_max is fine");
	is_str(r.cf.socket_path, path, "socket path of 107 bytes");
	is_int(r.cf.max_clients, 100000, "max_clients 100000");
	is_int(r.cf.max_message_size, 128 * 1024 * 1024, "max_message_size 128M");
	is_int(r.cf.socket_mode, 07777, "mode 07777");
	ok(r.cf.max_bytes == 16ULL << 40, "max_bytes 16T");
	is_int(r.cf.sync_full, 1, "sync FULL");
	is_int(r.cf.window, 65535, "window 65535");
	is_int(r.cf.persistent, 1, "persistent on");
	is_int(r.cf.mandatory, 0, "mandatory false");
	is_int(r.cf.confirm_timeout_ms, 1000, "confirm_timeout 1s");
	is_int(r.cf.on_unroutable, POLICY_PARK, "on_unroutable PARK");
	is_int(r.cf.on_rejected, POLICY_PARK, "on_rejected park");
	is_int(r.cf.max_attempts, 1000, "max_attempts 1000");
	is_int(r.cf.log_level, LOG_ERR, "level error");
	result_free(&r);

	load(&r, "[publish]\nconfirm_timeout = 1h\nmax_attempts = 1\n");
	is_int(r.rc, 0, "confirm_timeout 1h, max_attempts 1: no errors");
	is_int(r.cf.confirm_timeout_ms, 3600000, "confirm_timeout 1h");
	is_int(r.cf.max_attempts, 1, "max_attempts 1");
	result_free(&r);

	load(&r, "[broker]\nheartbeat = 1h\nconnect_timeout = 100ms\n"
	    "reconnect_max = 1h\n");
	is_int(r.rc, 0, "heartbeat 1h, connect_timeout 100ms: no errors");
	is_int(r.cf.heartbeat, 3600, "heartbeat 1h is 3600 s");
	is_int(r.cf.connect_timeout_ms, 100, "connect_timeout 100ms");
	is_int(r.cf.reconnect_max_ms, 3600000, "reconnect_max 1h");
	result_free(&r);
}

static void
test_bad_values(void)
{
	struct result	r;
	char		text[4096], longpath[200];
	struct config	d;
	int		n = 0;

	memset(longpath, 'b', 108);
	longpath[0] = '/';
	longpath[108] = '\0';
	snprintf(text, sizeof(text),
	    "[broker]\n"				/* 1 */
	    "uri = http://x\n"				/* 2 */
	    "uri = amqp://u:hunter2@h/\n"		/* 3 */
	    "password_file =\n"				/* 4 */
	    "heartbeat = 1500ms\n"			/* 5 */
	    "heartbeat = 2h\n"				/* 6 */
	    "heartbeat = soon\n"			/* 7 */
	    "connect_timeout = 50ms\n"			/* 8 */
	    "connect_timeout = 301s\n"			/* 9 */
	    "reconnect_min = 5ms\n"			/* 10 */
	    "reconnect_max = -1\n"			/* 11 */
	    "[socket]\n"				/* 12 */
	    "path = relative.sock\n"			/* 13 */
	    "path = %s\n"				/* 14 */
	    "mode = abc\n"				/* 15 */
	    "mode = 0999\n"				/* 16 */
	    "max_clients = 0\n"				/* 17 */
	    "max_clients = 100001\n"			/* 18 */
	    "max_clients = many\n"			/* 19 */
	    "max_message_size = 0\n"			/* 20 */
	    "max_message_size = 129M\n"			/* 21 */
	    "max_message_size = 1X\n"			/* 22 */
	    "[outbox]\n"				/* 23 */
	    "path =\n"					/* 24 */
	    "max_bytes = lots\n"			/* 25 */
	    "sync = off\n"				/* 26 */
	    "[publish]\n"				/* 27 */
	    "window = 0\n"				/* 28 */
	    "window = 65536\n"				/* 29 */
	    "persistent = maybe\n"			/* 30 */
	    "mandatory = 2\n"				/* 31 */
	    "[log]\n"					/* 32 */
	    "level = verbose\n"				/* 33 */
	    "level =\n"					/* 34 */
	    "[publish]\n"				/* 35 */
	    "confirm_timeout = 0\n"			/* 36 */
	    "confirm_timeout = 999ms\n"			/* 37 */
	    "confirm_timeout = 61m\n"			/* 38 */
	    "confirm_timeout = never\n"			/* 39 */
	    "on_unroutable = drop\n"			/* 40 */
	    "on_rejected =\n"				/* 41 */
	    "max_attempts = 0\n"			/* 42 */
	    "max_attempts = 1001\n"			/* 43 */
	    "max_attempts = few\n"			/* 44 */
	    "[broker]\n"				/* 45 */
	    "uri_order = random\n"			/* 46 */
	    "uri = amqp://u@h:0\n"			/* 47 */
	    "[socket]\n"				/* 48 */
	    "mode = 0440\n"				/* 49 */
	    "[outbox]\n"				/* 50 */
	    "path = relative.db\n",			/* 51 */
	    longpath);
	load(&r, text);

#define BAD(line, ...) do {						\
	n++;								\
	ok(has_error(&r, line, __VA_ARGS__), "error at line %d", line); \
} while (0)
	BAD(2, "[broker] uri: invalid AMQP URI 'http://x' (expected "
	    "amqp://user:password@host:port/vhost)");
	BAD(3, "[broker] uri: empty vhost in 'amqp://u:***@h/' (write %%2f "
	    "for the vhost '/', or leave out the trailing '/')");
	BAD(4, "[broker] password_file: empty path");
	BAD(5, "[broker] heartbeat: 1500ms is not a whole number of seconds");
	BAD(6, "[broker] heartbeat: 2h is out of range (expected 0s to 1h)");
	BAD(7, "[broker] heartbeat: invalid duration 'soon' (expected a whole "
	    "number with unit ms, s, m or h; no unit means seconds)");
	BAD(8, "[broker] connect_timeout: 50ms is out of range (expected "
	    "100ms to 5m)");
	BAD(9, "[broker] connect_timeout: 301s is out of range (expected "
	    "100ms to 5m)");
	BAD(10, "[broker] reconnect_min: 5ms is out of range (expected 10ms "
	    "to 1h)");
	BAD(11, "[broker] reconnect_max: invalid duration '-1' (expected a "
	    "whole number with unit ms, s, m or h; no unit means seconds)");
	BAD(13, "[socket] path: 'relative.sock' is not an absolute path");
	BAD(14, "[socket] path: path is too long for a Unix socket (108 bytes, "
	    "at most 107)");
	BAD(15, "[socket] mode: invalid file mode 'abc' (expected octal such "
	    "as 0660)");
	BAD(16, "[socket] mode: invalid file mode '0999' (expected octal such "
	    "as 0660)");
	BAD(17, "[socket] max_clients: 0 is out of range (expected 1 to "
	    "100000)");
	BAD(18, "[socket] max_clients: 100001 is out of range (expected 1 to "
	    "100000)");
	BAD(19, "[socket] max_clients: invalid number 'many' (expected 1 to "
	    "100000)");
	BAD(20, "[socket] max_message_size: 0 is out of range (expected 1 to "
	    "128M)");
	BAD(21, "[socket] max_message_size: 129M is out of range (expected 1 "
	    "to 128M)");
	BAD(22, "[socket] max_message_size: invalid size '1X' (expected bytes, "
	    "or a whole number with unit K, M, G or T)");
	BAD(24, "[outbox] path: empty path");
	BAD(25, "[outbox] max_bytes: invalid size 'lots' (expected bytes, or a "
	    "whole number with unit K, M, G or T)");
	BAD(26, "[outbox] sync: invalid value 'off' (expected full or normal)");
	BAD(28, "[publish] window: 0 is out of range (expected 1 to 65535)");
	BAD(29, "[publish] window: 65536 is out of range (expected 1 to "
	    "65535)");
	BAD(30, "[publish] persistent: invalid boolean 'maybe' (expected yes "
	    "or no)");
	BAD(31, "[publish] mandatory: invalid boolean '2' (expected yes or no)");
	BAD(33, "[log] level: invalid log level 'verbose' (expected error, "
	    "warning, notice, info or debug)");
	BAD(34, "[log] level: invalid log level '' (expected error, warning, "
	    "notice, info or debug)");
	BAD(36, "[publish] confirm_timeout: 0 is out of range (expected 1s to "
	    "1h)");
	BAD(37, "[publish] confirm_timeout: 999ms is out of range (expected 1s "
	    "to 1h)");
	BAD(38, "[publish] confirm_timeout: 61m is out of range (expected 1s "
	    "to 1h)");
	BAD(39, "[publish] confirm_timeout: invalid duration 'never' (expected "
	    "a whole number with unit ms, s, m or h; no unit means seconds)");
	BAD(40, "[publish] on_unroutable: invalid value 'drop' (expected park "
	    "or retry)");
	BAD(41, "[publish] on_rejected: invalid value '' (expected park or "
	    "retry)");
	BAD(42, "[publish] max_attempts: 0 is out of range (expected 1 to "
	    "1000)");
	BAD(43, "[publish] max_attempts: 1001 is out of range (expected 1 to "
	    "1000)");
	BAD(44, "[publish] max_attempts: invalid number 'few' (expected 1 to "
	    "1000)");
	BAD(46, "[broker] uri_order: invalid value 'random' (expected "
	    "ordered or shuffle)");
	BAD(47, "[broker] uri: port 0 in 'amqp://u@h:0' (expected 1 to "
	    "65535)");
	BAD(49, "[socket] mode: mode 0440 lets no one connect (connecting "
	    "takes write permission on the socket; expected such as 0660)");
	BAD(51, "[outbox] path: 'relative.db' is not an absolute path");
#undef BAD
	is_int(r.rc, n, "bad values: every error counted (%d)", n);
	is_int(count_lines(r.errs), n, "bad values: one line per error");
	ok(strstr(r.errs, "hunter2") == NULL, "uri password never printed");

	/* A refused value leaves the default in place. */
	config_defaults(&d);
	is_int(r.cf.nuris, 1, "bad uris not kept (default added)");
	is_str(r.cf.uris[0], CONFIG_DEFAULT_URI, "bad uris: default uri");
	ok(r.cf.password_file == NULL, "empty password_file not kept");
	is_int(r.cf.heartbeat, d.heartbeat, "bad heartbeat not applied");
	ok(r.cf.connect_timeout_ms == d.connect_timeout_ms &&
	    r.cf.reconnect_min_ms == d.reconnect_min_ms &&
	    r.cf.reconnect_max_ms == d.reconnect_max_ms,
	    "bad durations not applied");
	is_str(r.cf.socket_path, d.socket_path, "bad socket path not applied");
	ok(r.cf.socket_mode == d.socket_mode &&
	    r.cf.max_clients == d.max_clients &&
	    r.cf.max_message_size == d.max_message_size,
	    "bad socket values not applied");
	is_str(r.cf.outbox_path, d.outbox_path, "empty or relative outbox path "
	    "not applied");
	ok(r.cf.max_bytes == d.max_bytes && r.cf.sync_full == d.sync_full,
	    "bad outbox values not applied");
	ok(r.cf.window == d.window && r.cf.persistent == d.persistent &&
	    r.cf.mandatory == d.mandatory &&
	    r.cf.confirm_timeout_ms == d.confirm_timeout_ms &&
	    r.cf.on_unroutable == d.on_unroutable &&
	    r.cf.on_rejected == d.on_rejected &&
	    r.cf.max_attempts == d.max_attempts,
	    "bad publish values not applied");
	is_int(r.cf.log_level, d.log_level, "bad level not applied");
	is_int(r.cf.uri_shuffle, 0, "bad uri_order not applied (ordered)");
	config_free(&d);
	result_free(&r);
}

static void
test_unknown(void)
{
	struct result	r;

	load(&r,
	    "[broker]\n"			/* 1 */
	    "colour = blue\n"			/* 2 */
	    "[brokr]\n"				/* 3 */
	    "uri = amqp://skipped/%2f\n"		/* 4 */
	    "anything = at all\n"		/* 5 */
	    "[log]\n"				/* 6 */
	    "level = notice\n"			/* 7 */
	    "path = /x\n");			/* 8 */
	ok(has_error(&r, 2, "[broker] colour: unknown key"), "unknown key");
	ok(has_error(&r, 3, "[brokr]: unknown section (expected broker, "
	    "socket, outbox, publish, metrics or log)"), "unknown section");
	ok(has_error(&r, 8, "[log] path: unknown key"),
	    "a key of another section is unknown here");
	is_int(r.rc, 3, "unknown: three errors, keys of [brokr] not repeated");
	is_int(count_lines(r.errs), 3, "unknown: three lines");
	is_int(r.cf.nuris, 1, "uri under an unknown section is ignored");
	is_str(r.cf.uris[0], CONFIG_DEFAULT_URI, "so the default uri is used");
	is_int(r.cf.log_level, LOG_NOTICE, "keys after it still apply");
	result_free(&r);
}

static void
test_syntax(void)
{
	struct result	r;
	struct {
		char	*p;
		size_t	 len;
	}		b;
	FILE		*f;
	int		 i;

	if ((f = open_memstream(&b.p, &b.len)) == NULL)
		abort();
	fputs("window = 3\n", f);				/* 1 */
	fputs("[broker\n", f);					/* 2 */
	fputs("uri = amqp://under-broken-header/%2f\n", f);	/* 3 */
	fputs("[socket] junk\n", f);				/* 4 */
	fputs("[]\n", f);					/* 5 */
	fputs("[so cket]\n", f);				/* 6 */
	fputs("[publish]\n", f);				/* 7 */
	fputs("window: 5\n", f);				/* 8 */
	fputs("just some words\n", f);				/* 9 */
	fputs("= 5\n", f);					/* 10 */
	fputs("bad key = 5\n", f);				/* 11 */
	fputs("  window = 7 ; seven\n", f);			/* 12 */
	for (i = 0; i < 5000; i++)				/* 13 */
		fputc(i == 0 ? '#' : 'x', f);
	fputc('\n', f);
	fputs("mandatory = yes\n", f);				/* 14 */
	fputs("persistent = n", f);				/* 15 */
	fputc('\0', f);
	fputs("o\n", f);
	fputs("persistent = no\n", f);				/* 16 */
	fputs("window ; 9\n", f);				/* 17 */
	fputs("[log]\r\n", f);					/* 18 */
	fputs("level = warning", f);				/* 19, no EOL */
	fclose(f);

	load_n(&r, b.p, b.len);
	free(b.p);
	ok(has_error(&r, 1, "syntax error: key 'window' outside any "
	    "[section]"), "key before any section");
	ok(has_error(&r, 2, "syntax error: missing ']' in section header"),
	    "missing ]");
	ok(has_error(&r, 4, "syntax error: unexpected text after ']'"),
	    "text after ]");
	ok(has_error(&r, 5, "syntax error: empty section name"),
	    "empty section name");
	ok(has_error(&r, 6, "syntax error: invalid section name 'so cket'"),
	    "invalid section name");
	ok(has_error(&r, 8, "syntax error: expected 'key = value', not "
	    "'key: value'"), "key: value refused");
	ok(has_error(&r, 9, "syntax error: expected 'key = value', a "
	    "[section], or a comment starting with # or ;"), "bare words");
	ok(has_error(&r, 10, "syntax error: missing key name before '='"),
	    "missing key name");
	ok(has_error(&r, 11, "syntax error: invalid key name 'bad key'"),
	    "invalid key name");
	ok(has_error(&r, 13, "syntax error: line longer than 4095 bytes"),
	    "over-long line");
	ok(has_error(&r, 15, "syntax error: NUL byte in line"), "NUL byte");
	ok(has_error(&r, 17, "syntax error: expected 'key = value', a "
	    "[section], or a comment starting with # or ;"),
	    "key followed by an inline comment");
	is_int(r.rc, 12, "syntax: twelve errors");
	is_int(count_lines(r.errs), 12, "syntax: twelve lines");
	is_int(r.cf.nuris, 1, "a key under a broken header is skipped");
	is_str(r.cf.uris[0], CONFIG_DEFAULT_URI, "so the default uri is used");
	is_int(r.cf.window, 7, "valid lines around errors apply");
	is_int(r.cf.mandatory, 1, "line counting goes on after a long line");
	is_int(r.cf.persistent, 0, "and after a NUL byte");
	is_int(r.cf.log_level, LOG_WARNING, "last line without newline read");
	result_free(&r);

	/* A line of exactly 4095 bytes is the longest accepted. */
	{
		char	text[5000];
		size_t	len;

		strcpy(text, "[log]\nlevel = info\n#");
		len = strlen(text);
		memset(text + len, 'y', 4094);
		len += 4094;
		strcpy(text + len, "\n[publish]\nwindow = 4\n");
		load(&r, text);
		is_int(r.rc, 0, "4095-byte line accepted");
		is_int(r.cf.window, 4, "line after it read");
		result_free(&r);
	}
}

static void
test_repeat(void)
{
	struct result	r;

	load(&r,
	    "[publish]\nwindow = 5\nwindow = 6\n"
	    "[socket]\npath = /one.sock\n[socket]\npath = /two.sock\n"
	    "[outbox]\npath = /a.db\npath = /b.db\n");
	is_int(r.rc, 0, "repeat: no errors");
	is_int(r.cf.window, 6, "repeated key: the last one wins");
	is_str(r.cf.socket_path, "/two.sock",
	    "repeated section and key: the last one wins");
	is_str(r.cf.outbox_path, "/b.db", "repeated string key replaced");
	result_free(&r);
}

static void
test_uris(void)
{
	struct result	r;
	FILE		*f;
	char		*text;
	size_t		 len;
	int		 i;

	if ((f = open_memstream(&text, &len)) == NULL)
		abort();
	fputs("[broker]\n", f);
	for (i = 1; i <= CONFIG_MAX_URIS + 2; i++)
		fprintf(f, "uri = amqp://user:pw%d@host%d:%d/%%2f\n", i, i,
		    5600 + i);
	fclose(f);
	load(&r, text);
	free(text);
	is_int(r.cf.nuris, CONFIG_MAX_URIS, "uris: at most CONFIG_MAX_URIS");
	for (i = 0; i < CONFIG_MAX_URIS; i++) {
		char	want[100];

		snprintf(want, sizeof(want), "amqp://user:pw%d@host%d:%d/%%2f",
		    i + 1, i + 1, 5601 + i);
		is_str(r.cf.uris[i], want, "uri %d kept in file order", i + 1);
	}
	ok(has_error(&r, CONFIG_MAX_URIS + 2, "[broker] uri: too many uri "
	    "keys: 'amqp://user:***@host17:5617/%%2f' is past the limit of "
	    "%d", CONFIG_MAX_URIS), "uri 17 refused");
	ok(has_error(&r, CONFIG_MAX_URIS + 3, "[broker] uri: too many uri "
	    "keys: 'amqp://user:***@host18:5618/%%2f' is past the limit of "
	    "%d", CONFIG_MAX_URIS), "uri 18 refused");
	is_int(r.rc, 2, "too many uris: one error each");
	result_free(&r);

	load(&r, "[broker]\nuri = amqp://host\nuri = amqp://[::1]:5671/v\n");
	is_int(r.rc, 0, "uri without path and IPv6 uri accepted");
	is_int(r.cf.nuris, 2, "two uris");
	ok(r.cf.nuris == 2 && strcmp(r.cf.uris[1], "amqp://[::1]:5671/v") == 0,
	    "IPv6 uri kept as written");
	result_free(&r);
	load(&r, "[broker]\nuri = amqps://u:secret@host:5671/v\n"
	    "verify_peer = no\n");
	is_int(r.rc, 0, "amqps uri accepted");
	ok(r.cf.nuris == 1 &&
	    strcmp(r.cf.uris[0], "amqps://u:secret@host:5671/v") == 0,
	    "amqps uri kept as written");
	result_free(&r);

	load(&r, "[broker]\nuri = amqp://h:99999/%2f\nuri = amqp://u:p@@h\n");
	ok(has_error(&r, 2, "[broker] uri: invalid AMQP URI "
	    "'amqp://h:99999/%%2f' (expected amqp://user:password@host:port/"
	    "vhost)"), "bad port refused");
	ok(has_error(&r, 3, "[broker] uri: invalid AMQP URI 'amqp://u:***@h' "
	    "(expected amqp://user:password@host:port/vhost)"),
	    "bad authority refused, password masked");
	is_int(r.rc, 2, "two bad uris, two errors");
	result_free(&r);
}

/* Load "[broker]\npassword_file = PATH" into r. */
static void
load_password_file(struct result *r, const char *path)
{
	char	*text = strfmt("[broker]\npassword_file = %s\n", path);

	load(r, text);
	free(text);
}

/* Write all of s into the pipe fd, or give up on the whole test. */
static void
fifo_put(int fd, const char *s)
{
	if (write(fd, s, strlen(s)) != (ssize_t)strlen(s)) {
		perror("write fifo");
		exit(2);
	}
}

/* A password_file holding len bytes of content gives the password want. */
static void
password_is(const char *content, size_t len, const char *want,
    const char *name)
{
	struct result	 r;
	char		*pw = tmp_write(content, len);

	load_password_file(&r, pw);
	is_str(r.cf.password, want, "%s", name);
	result_free(&r);
	unlink(pw);
	free(pw);
}

/* Load "[broker]\npassword_file = PATH" and check the one error on line 2. */
static void
password_err(const char *path, const char *want, const char *name)
{
	struct result	 r;

	load_password_file(&r, path);
	ok(has_error(&r, 2, "[broker] password_file: %s", want), "%s", name);
	is_int(r.rc, 1, "%s: one error", name);
	ok(r.cf.password == NULL, "%s: no password", name);
	result_free(&r);
}

/*
 * A first line that never ends, or a pipe or device with nothing to read,
 * is an error at once: the loader neither waits (a SIGHUP reload runs in
 * the event loop) nor reads without bound (/dev/full, found by fuzz_config).
 */
static void
test_password_bounds(void)
{
	struct result	 r;
	char		*big, *pw, *want, fifo[4200];
	int		 fd, wfd;
	size_t		 max = 65536;

	password_err("/dev/full", "the first line of '/dev/full' is longer "
	    "than 65536 bytes", "/dev/full: first line never ends");
	password_err("/dev/zero", "the first line of '/dev/zero' is longer "
	    "than 65536 bytes", "/dev/zero: first line never ends");

	big = malloc(max + 2);
	memset(big, 'p', max + 1);
	big[max + 1] = '\n';
	pw = tmp_write(big, max + 2);
	want = strfmt("the first line of '%s' is longer than 65536 bytes", pw);
	password_err(pw, want, "65537-byte first line");
	free(want);
	unlink(pw);
	free(pw);

	big[max] = '\n';
	pw = tmp_write(big, max + 1);
	load_password_file(&r, pw);
	is_int(r.rc, 0, "65536-byte first line: no errors");
	ok(r.cf.password != NULL && strlen(r.cf.password) == max,
	    "65536-byte password read whole");
	result_free(&r);
	unlink(pw);
	free(pw);

	big[max] = '\r';
	big[max + 1] = '\n';
	pw = tmp_write(big, max + 2);
	load_password_file(&r, pw);
	ok(r.rc == 0 && r.cf.password != NULL &&
	    strlen(r.cf.password) == max,
	    "65536 bytes and CRLF: read whole, CR stripped");
	result_free(&r);
	unlink(pw);
	free(pw);
	free(big);

	pw = tmp_write("ab\0cd\n", 6);
	want = strfmt("the first line of '%s' holds a NUL byte", pw);
	password_err(pw, want, "NUL byte in the password");
	free(want);
	unlink(pw);
	free(pw);

	password_is("ok\n\0\0", 5, "ok", "NUL bytes after the first line: "
	    "ignored");

	/* A pipe: no writer reads as empty; a silent writer, nothing yet. */
	snprintf(fifo, sizeof(fifo), "%s/pw.fifo", tmpdir);
	if (mkfifo(fifo, 0600) == -1) {
		perror("mkfifo");
		exit(2);
	}
	want = strfmt("'%s' is empty: the password must be on its first line",
	    fifo);
	password_err(fifo, want, "fifo without a writer: not waited for");
	free(want);
	if ((fd = open(fifo, O_RDONLY | O_NONBLOCK)) == -1 ||
	    (wfd = open(fifo, O_WRONLY)) == -1) {
		perror("open fifo");
		exit(2);
	}
	want = strfmt("'%s' has nothing to read (a pipe or device, not a "
	    "file)", fifo);
	password_err(fifo, want, "fifo with a silent writer: not waited for");
	free(want);
	fifo_put(wfd, "half");
	want = strfmt("the first line of '%s' is not complete (a pipe whose "
	    "writer has not ended it)", fifo);
	password_err(fifo, want, "fifo with half a line: not taken");
	free(want);
	fifo_put(wfd, "whole\n");	/* "half" was read */
	load_password_file(&r, fifo);
	is_str(r.cf.password, "whole", "fifo with a whole line: read");
	result_free(&r);
	fifo_put(wfd, "piped\n");
	close(fd);		/* the loader's own reader sees the data */
	load_password_file(&r, fifo);
	is_str(r.cf.password, "piped", "fifo with a line in it: read");
	result_free(&r);
	close(wfd);
	unlink(fifo);
}

/*
 * A config file is read at most 1 MiB in: /dev/zero (one line that never
 * ends) and a file of that size are refused at once, not read for ever.
 */
static void
test_file_size(void)
{
	struct result	 r;
	char		*big;
	size_t		 max = 1024 * 1024, i;

	r.path = NULL;
	load_path(&r, "/dev/zero");
	is_int(r.rc, -1, "/dev/zero: refused");
	ok(r.errs != NULL && strstr(r.errs, "/dev/zero: larger than 1048576 "
	    "bytes: not a pubrelay configuration") != NULL,
	    "/dev/zero: the error says why");
	result_free(&r);

	/* Comment lines of 1000 bytes, then the rest: exactly max bytes. */
	big = malloc(max + 1);
	for (i = 0; i < max; i++)
		big[i] = i % 1000 == 999 || i == max - 1 ? '\n' : '#';
	load_n(&r, big, max);
	is_int(r.rc, 0, "a config of 1048576 bytes is read");
	result_free(&r);
	big[max] = '\n';
	big[max - 1] = '#';
	load_n(&r, big, max + 1);
	is_int(r.rc, -1, "a config of 1048577 bytes is refused");
	result_free(&r);
	free(big);
}

static void
test_password_file(void)
{
	struct result	r;
	char		*pw, *text, dir[4200];

	pw = tmp_write("s3cret\nsecond line\n", 19);
	load_password_file(&r, pw);
	is_int(r.rc, 0, "password_file: no errors");
	is_str(r.cf.password_file, pw, "password_file kept");
	is_str(r.cf.password, "s3cret", "password: first line, no newline");
	result_free(&r);
	unlink(pw);
	free(pw);

	password_is("crlf\r\n", 6, "crlf", "password: CRLF stripped");

	pw = tmp_write("noeol", 5);
	load_password_file(&r, pw);
	is_str(r.cf.password, "noeol", "password: no final newline");
	result_free(&r);

	/* The last password_file wins: the missing first one is not read. */
	text = strfmt("[broker]\npassword_file = /nonexistent/pw\n"
	    "password_file = %s\n", pw);
	load(&r, text);
	is_int(r.rc, 0, "password_file twice: only the last is read");
	is_str(r.cf.password, "noeol", "password from the last file");
	result_free(&r);
	free(text);
	unlink(pw);
	free(pw);

	load(&r, "[broker]\n\npassword_file = /nonexistent/pw\n");
	ok(has_error(&r, 3, "[broker] password_file: cannot open "
	    "'/nonexistent/pw': No such file or directory"),
	    "missing password_file");
	is_int(r.rc, 1, "missing password_file: one error");
	ok(r.cf.password == NULL, "missing password_file: no password");
	result_free(&r);

	pw = tmp_write("", 0);
	load_password_file(&r, pw);
	ok(has_error(&r, 2, "[broker] password_file: '%s' is empty: the "
	    "password must be on its first line", pw), "empty password_file");
	is_int(r.rc, 1, "empty password_file: one error");
	result_free(&r);
	unlink(pw);
	free(pw);

	pw = tmp_write("\nsecond\n", 8);
	load_password_file(&r, pw);
	ok(has_error(&r, 2, "[broker] password_file: '%s' is empty: the "
	    "password must be on its first line", pw),
	    "empty first line is an empty password");
	result_free(&r);
	unlink(pw);
	free(pw);

	snprintf(dir, sizeof(dir), "%s", tmpdir);
	load_password_file(&r, dir);
	ok(has_error(&r, 2, "[broker] password_file: cannot read '%s': Is a "
	    "directory", dir), "password_file is a directory");
	result_free(&r);

	test_password_bounds();
}

#define PEM_CERT "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"
#define PEM_KEY	"-----BEGIN PRIVATE KEY-----\nMIIE\n-----END PRIVATE KEY-----\n"
#define PEM_ENC	"-----BEGIN ENCRYPTED PRIVATE KEY-----\nMIIF\n" \
		"-----END ENCRYPTED PRIVATE KEY-----\n"

static void
test_tls(void)
{
	struct result	 r;
	char		*ca, *cert, *key, *enc, *junk, *text;

	ca = tmp_write(PEM_CERT PEM_CERT, strlen(PEM_CERT PEM_CERT));
	cert = tmp_write(PEM_CERT, strlen(PEM_CERT));
	key = tmp_write(PEM_KEY, strlen(PEM_KEY));
	enc = tmp_write(PEM_ENC, strlen(PEM_ENC));
	junk = tmp_write("not a pem file\n", 15);

	text = strfmt("[broker]\nuri = amqps://u@mq.example.com/%%2f\n"
	    "ca_file = %s\ncert_file = %s\nkey_file = %s\n"
	    "verify_peer = no\nverify_hostname = off\n", ca, cert, key);
	load(&r, text);
	is_int(r.rc, 0, "tls: every key accepted");
	is_str(r.cf.ca_file, ca, "tls: ca_file kept");
	is_str(r.cf.cert_file, cert, "tls: cert_file kept");
	is_str(r.cf.key_file, key, "tls: key_file kept");
	ok(r.cf.verify_peer == 0 && r.cf.verify_hostname == 0,
	    "tls: verify_peer and verify_hostname off");
	result_free(&r);
	free(text);

	/* Files are read at load time; each error names key and file. */
	load(&r, "[broker]\nca_file = /nonexistent/ca.pem\n"
	    "cert_file = /nonexistent/c.pem\nkey_file = /nonexistent/k.pem\n"
	    "verify_peer = maybe\nverify_hostname =\n");
	ok(has_error(&r, 2, "[broker] ca_file: cannot open "
	    "'/nonexistent/ca.pem': No such file or directory"),
	    "missing ca_file");
	ok(has_error(&r, 3, "[broker] cert_file: cannot open "
	    "'/nonexistent/c.pem': No such file or directory"),
	    "missing cert_file");
	ok(has_error(&r, 4, "[broker] key_file: cannot open "
	    "'/nonexistent/k.pem': No such file or directory"),
	    "missing key_file");
	ok(has_error(&r, 5, "[broker] verify_peer: invalid boolean 'maybe' "
	    "(expected yes or no)"), "bad verify_peer");
	ok(has_error(&r, 6, "[broker] verify_hostname: invalid boolean '' "
	    "(expected yes or no)"), "empty verify_hostname");
	is_int(r.rc, 5, "five errors, no both-or-neither error on top");
	ok(r.cf.ca_file == NULL && r.cf.cert_file == NULL &&
	    r.cf.key_file == NULL, "bad files not kept");
	result_free(&r);

	text = strfmt("[broker]\nca_file = %s\ncert_file = %s\n"
	    "key_file = %s\nca_file =\n", tmpdir, junk, enc);
	load(&r, text);
	ok(has_error(&r, 2, "[broker] ca_file: cannot read '%s': Is a "
	    "directory", tmpdir), "ca_file is a directory");
	ok(has_error(&r, 3, "[broker] cert_file: '%s' holds no PEM "
	    "certificate (no -----BEGIN CERTIFICATE----- line)", junk),
	    "cert_file that is no certificate");
	ok(has_error(&r, 4, "[broker] key_file: '%s' is an encrypted private "
	    "key, which pubrelayd cannot unlock; store it unencrypted (openssl "
	    "pkey -in KEY -out NEWKEY), readable by pubrelayd alone", enc),
	    "encrypted key_file");
	ok(has_error(&r, 5, "[broker] ca_file: empty path"), "empty ca_file");
	is_int(r.rc, 4, "four errors");
	result_free(&r);
	free(text);

	text = strfmt("[broker]\nkey_file = %s\n", cert);
	load(&r, text);
	ok(has_error(&r, 2, "[broker] key_file: '%s' holds no PEM private key "
	    "(no -----BEGIN ... PRIVATE KEY----- line)", cert),
	    "key_file that is no key");
	result_free(&r);
	free(text);

	/* The client key is a secret: not readable by others. */
	chmod(key, 0644);
	text = strfmt("[broker]\ncert_file = %s\nkey_file = %s\n", cert, key);
	load(&r, text);
	ok(has_error(&r, 3, "[broker] key_file: '%s' is readable by others "
	    "(mode 0644): a private key must not be; chmod o-r '%s'", key, key),
	    "key_file readable by others refused");
	is_int(r.rc, 1, "key_file 0644: one error");
	result_free(&r);
	chmod(key, 0640);
	load(&r, text);
	is_int(r.rc, 0, "key_file 0640 accepted");
	result_free(&r);
	free(text);

	/* Both or neither. */
	text = strfmt("[broker]\n\ncert_file = %s\n", cert);
	load(&r, text);
	ok(has_error(&r, 3, "[broker] cert_file: a client certificate needs "
	    "its key: key_file is missing"), "cert_file without key_file");
	is_int(r.rc, 1, "cert_file alone: one error");
	result_free(&r);
	free(text);
	text = strfmt("[broker]\nkey_file = %s\n", key);
	load(&r, text);
	ok(has_error(&r, 2, "[broker] key_file: a client key needs its "
	    "certificate: cert_file is missing"), "key_file without cert_file");
	result_free(&r);
	free(text);

	/* amqps without ca_file verifies against the system bundle. */
	load(&r, "[broker]\nuri = amqp://plain\nuri = amqps://h/%2f\n");
	if (access(CONFIG_DEFAULT_CA_FILE, R_OK) == 0) {
		is_int(r.rc, 0, "amqps without ca_file: system bundle used");
		ok(r.cf.ca_file == NULL, "ca_file stays unset");
	} else {
		ok(has_error(&r, 3, "[broker] uri: amqps:// needs CA "
		    "certificates to verify the broker: set ca_file (the system "
		    "bundle %s cannot be read: %s)", CONFIG_DEFAULT_CA_FILE,
		    strerror(errno)), "amqps without any CA refused");
		is_int(r.rc, 1, "no CA: one error");
	}
	result_free(&r);
	load(&r, "[broker]\nuri = amqps://h/%2f\nverify_peer = no\n");
	is_int(r.rc, 0, "amqps, verify_peer = no: no CA needed");
	result_free(&r);

	unlink(ca);
	unlink(cert);
	unlink(key);
	unlink(enc);
	unlink(junk);
	free(ca);
	free(cert);
	free(key);
	free(enc);
	free(junk);
}

/* A password in a uri or password_file must not be readable by others. */
static void
test_secrets(void)
{
	struct result	 r;
	const char	*text;
	char		*pw, *ptext;

	text = "[broker]\nuri = amqp://nopw@h/%2f\n"
	    "uri = amqp://u:hunter2@h/%2f\nuri = amqp://v:pw@h/%2f\n";
	r.path = tmp_write(text, strlen(text));
	chmod(r.path, 0644);
	load_path(&r, r.path);
	ok(has_error(&r, 3, "[broker] uri: this uri holds a password and "
	    "'%s' is readable by others (mode 0644): chmod o-r it, or move the "
	    "password to password_file", r.path),
	    "uri password in a file readable by others: first such line");
	is_int(r.rc, 1, "one error for the file");
	ok(strstr(r.errs, "hunter2") == NULL, "the password is not printed");
	config_free(&r.cf);
	free(r.errs);
	chmod(r.path, 0640);
	load_path(&r, r.path);
	is_int(r.rc, 0, "mode 0640 accepted");
	config_free(&r.cf);
	free(r.errs);
	chmod(r.path, 0604);
	load_path(&r, r.path);
	ok(has_error(&r, 3, "[broker] uri: this uri holds a password and "
	    "'%s' is readable by others (mode 0604): chmod o-r it, or move the "
	    "password to password_file", r.path), "mode 0604 refused");
	result_free(&r);

	text = "[broker]\nuri = amqp://u@h/%2f\n";
	r.path = tmp_write(text, strlen(text));
	chmod(r.path, 0644);
	load_path(&r, r.path);
	is_int(r.rc, 0, "no password in the file: any mode");
	result_free(&r);

	pw = tmp_write("s3cret\n", 7);
	chmod(pw, 0644);
	ptext = strfmt("[broker]\npassword_file = %s\n", pw);
	load(&r, ptext);
	ok(has_error(&r, 2, "[broker] password_file: '%s' is readable by "
	    "others (mode 0644): chmod o-r '%s'", pw, pw),
	    "password_file readable by others refused");
	is_int(r.rc, 1, "password_file 0644: one error");
	ok(r.cf.password == NULL, "and not read");
	ok(strstr(r.errs, "s3cret") == NULL, "the password is not printed");
	result_free(&r);
	chmod(pw, 0640);
	load(&r, ptext);
	is_int(r.rc, 0, "password_file 0640 accepted");
	is_str(r.cf.password, "s3cret", "password read");
	result_free(&r);
	free(ptext);
	unlink(pw);
	free(pw);
}

static void
test_reconnect(void)
{
	struct result	r;

	load(&r, "[broker]\nreconnect_min = 10s\nreconnect_max = 5s\n");
	ok(has_error(&r, 3, "[broker] reconnect_max: reconnect_min (10s) is "
	    "greater than reconnect_max (5s)"), "min > max: later line blamed");
	is_int(r.rc, 1, "min > max: one error");
	result_free(&r);

	load(&r, "[broker]\nreconnect_max = 5s\n\nreconnect_min = 1500ms\n");
	ok(r.rc == 0 && r.errlen == 0,
	    "min < max written in any order: no error");
	ok(r.cf.reconnect_min_ms == 1500 && r.cf.reconnect_max_ms == 5000,
	    "both applied");
	result_free(&r);

	/* Only one of them set: the default of the other one counts. */
	load(&r, "[broker]\nreconnect_min = 1m\n");
	ok(has_error(&r, 2, "[broker] reconnect_min: reconnect_min (1m) is "
	    "greater than reconnect_max (30s)"),
	    "min over the default max is an error");
	is_int(r.rc, 1, "one error");
	result_free(&r);

	load(&r, "[broker]\nreconnect_max = 50ms\n");
	ok(has_error(&r, 2, "[broker] reconnect_max: reconnect_min (100ms) is "
	    "greater than reconnect_max (50ms)"),
	    "max under the default min is an error");
	result_free(&r);
}

static void
test_missing_file(void)
{
	struct result	r;
	struct config	cf;

	memset(&r, 0, sizeof(r));
	r.path = strfmt("%s/no-such-dir/pubrelay.ini", tmpdir);
	load_path(&r, r.path);
	is_int(r.rc, -1, "missing file: -1");
	ok(has_error(&r, 0, "cannot open: No such file or directory"),
	    "missing file reported as FILE: cannot open: strerror");
	is_int(count_lines(r.errs), 1, "missing file: one line");
	config_free(&r.cf);
	free(r.path);
	free(r.errs);

	/* No error stream at all: still counted. */
	config_defaults(&cf);
	is_int(config_load(&cf, "/nonexistent/pubrelay.ini", NULL), -1,
	    "missing file, NULL errf: -1");
	config_free(&cf);
	{
		struct result	r2;
		char		*path = tmp_write("[log]\nlevel = x\n", 16);

		config_defaults(&r2.cf);
		is_int(config_load(&r2.cf, path, NULL), 1,
		    "NULL errf: errors still counted");
		config_free(&r2.cf);
		unlink(path);
		free(path);
	}
}

/*
 * The shipped example: it loads as is; and with every "#key = value" line
 * uncommented it still loads, names every key in its own section, and its
 * values are the compiled-in defaults.
 */
static void
test_example(void)
{
	/* Every key the parser knows (config_key()), as "section/name". */
	char		 keys[64][80];
	size_t		 nkeys = 0;
	const struct config_key *k;
	struct result	 r;
	struct config	 d;
	char		*example, *line = NULL, *text, section[64] = "";
	char		 seen[64];
	size_t		 cap = 0, len, j;
	FILE		*in, *out;
	int		 password_line = 0;

	example = srcdir_path("etc/pubrelay.ini");
	diag("example: %s", example);
	while (nkeys < 64 && (k = config_key(nkeys)) != NULL) {
		snprintf(keys[nkeys], sizeof(keys[nkeys]), "%s/%s", k->section,
		    k->name);
		nkeys++;
	}
	ok(nkeys >= 30 && config_key(nkeys) == NULL,
	    "config_key() lists the parser's keys (%zu)", nkeys);

	/* r.path names the shipped file here: never result_free() it. */
	memset(&r, 0, sizeof(r));
	r.path = example;
	load_path(&r, example);
	is_int(r.rc, 0, "etc/pubrelay.ini loads without errors");
	is_int(r.errlen, 0, "etc/pubrelay.ini: nothing printed");
	if (r.rc != 0)
		diag("%s", r.errs);
	config_free(&r.cf);
	free(r.errs);
	memset(&r, 0, sizeof(r));

	in = fopen(example, "r");
	if (in == NULL) {
		ok(0, "open %s: %s", example, strerror(errno));
		free(example);
		return;
	}
	free(example);
	memset(seen, 0, sizeof(seen));
	if ((out = open_memstream(&text, &len)) == NULL)
		abort();
	while (getline(&line, &cap, in) != -1) {
		char	key[64];

		if (sscanf(line, "[%63[^]]]", section) == 1) {
			fputs(line, out);
			continue;
		}
		/* "#key = value": a setting; "# text": prose. */
		if (line[0] == '#' && sscanf(line + 1, "%63[a-z_] =", key) == 1 &&
		    strchr(line, '=') != NULL) {
			char	full[140];

			snprintf(full, sizeof(full), "%s/%s", section, key);
			for (j = 0; j < nkeys; j++)
				if (strcmp(keys[j], full) == 0)
					seen[j]++;
			/* The password file does not exist here. */
			if (strcmp(full, "broker/password_file") == 0) {
				password_line = 1;
				fputs("\n", out);
				continue;
			}
			/* Nor need the certificates. */
			if (strcmp(full, "broker/ca_file") == 0 ||
			    strcmp(full, "broker/cert_file") == 0 ||
			    strcmp(full, "broker/key_file") == 0) {
				fputs("\n", out);
				continue;
			}
			fputs(line + 1, out);
			continue;
		}
		fputs(line, out);
	}
	free(line);
	fclose(in);
	fclose(out);
	for (j = 0; j < nkeys; j++)
		is_int(seen[j], 1, "example has '#%s = ...' once", keys[j]);
	ok(password_line, "example shows password_file");

	load(&r, text);
	free(text);
	is_int(r.rc, 0, "example with every setting uncommented loads");
	if (r.rc != 0)
		diag("%s", r.errs);

	config_defaults(&d);
	is_int(r.cf.nuris, 1, "example: one uri");
	ok(r.cf.nuris == 1 && strcmp(r.cf.uris[0], CONFIG_DEFAULT_URI) == 0,
	    "example: uri default");
	is_int(r.cf.uri_shuffle, d.uri_shuffle, "example: uri_order default");
	is_int(r.cf.heartbeat, d.heartbeat, "example: heartbeat default");
	is_int(r.cf.connect_timeout_ms, d.connect_timeout_ms,
	    "example: connect_timeout default");
	is_int(r.cf.reconnect_min_ms, d.reconnect_min_ms,
	    "example: reconnect_min default");
	is_int(r.cf.reconnect_max_ms, d.reconnect_max_ms,
	    "example: reconnect_max default");
	is_int(r.cf.verify_peer, d.verify_peer, "example: verify_peer default");
	is_int(r.cf.verify_hostname, d.verify_hostname,
	    "example: verify_hostname default");
	/* Paths follow the build's prefix; the example shows the packaged ones. */
	is_str(r.cf.socket_path, "/run/pubrelay/pubrelay.sock",
	    "example: socket path as packaged");
	is_int(r.cf.socket_mode, d.socket_mode, "example: mode default");
	is_int(r.cf.max_clients, d.max_clients, "example: max_clients default");
	is_int(r.cf.max_clients_per_user, d.max_clients_per_user,
	    "example: max_clients_per_user default");
	ok(r.cf.max_bytes_per_user == d.max_bytes_per_user,
	    "example: max_bytes_per_user default");
	is_int(r.cf.max_message_size, d.max_message_size,
	    "example: max_message_size default");
	is_int(r.cf.socket_has_group, d.socket_has_group,
	    "example: group default (none)");
	ok(r.cf.nallow_uids == d.nallow_uids, "example: allow_users default");
	ok(r.cf.nallow_gids == d.nallow_gids, "example: allow_groups default");
	is_int(r.cf.max_headers, d.max_headers, "example: max_headers default");
	is_int(r.cf.max_line, d.max_line, "example: max_line default");
	ok(r.cf.max_buffer == d.max_buffer, "example: max_buffer default");
	ok(r.cf.idle_timeout_ms == d.idle_timeout_ms,
	    "example: idle_timeout default");
	is_str(r.cf.outbox_path, "/var/lib/pubrelay/outbox.db",
	    "example: outbox path as packaged");
	ok(r.cf.max_bytes == d.max_bytes, "example: max_bytes default");
	ok(r.cf.min_free == d.min_free, "example: min_free default");
	ok(r.cf.dead_max_bytes == d.dead_max_bytes,
	    "example: dead_max_bytes default");
	is_int(r.cf.sync_full, d.sync_full, "example: sync default");
	is_int(r.cf.window, d.window, "example: window default");
	is_int(r.cf.persistent, d.persistent, "example: persistent default");
	is_int(r.cf.mandatory, d.mandatory, "example: mandatory default");
	is_int(r.cf.confirm_timeout_ms, d.confirm_timeout_ms,
	    "example: confirm_timeout default");
	is_int(r.cf.on_unroutable, d.on_unroutable,
	    "example: on_unroutable default");
	is_int(r.cf.on_rejected, d.on_rejected, "example: on_rejected default");
	is_int(r.cf.max_attempts, d.max_attempts,
	    "example: max_attempts default");
	is_int(r.cf.log_level, d.log_level, "example: level default");
	config_free(&d);
	result_free(&r);
}

/* As config.c writes limits in messages: as they would be in the file. */
static const char *
fmt_ms(uint64_t ms, char *out, size_t len)
{
	if (ms != 0 && ms % 3600000 == 0)
		snprintf(out, len, "%lluh", (unsigned long long)(ms / 3600000));
	else if (ms != 0 && ms % 60000 == 0)
		snprintf(out, len, "%llum", (unsigned long long)(ms / 60000));
	else if (ms % 1000 == 0)
		snprintf(out, len, "%llus", (unsigned long long)(ms / 1000));
	else
		snprintf(out, len, "%llums", (unsigned long long)ms);
	return out;
}

static const char *
fmt_size(uint64_t n, char *out, size_t len)
{
	static const char	units[] = "GMK";
	int			i;

	for (i = 0; i < 3; i++) {
		if (n != 0 && n % (1ULL << (10 * (3 - i))) == 0) {
			snprintf(out, len, "%llu%c",
			    (unsigned long long)(n >> (10 * (3 - i))), units[i]);
			return out;
		}
	}
	snprintf(out, len, "%llu", (unsigned long long)n);
	return out;
}

static uint64_t
key_field(const struct config *cf, const struct config_key *k)
{
	const char	*field = (const char *)cf + k->offset;
	uint64_t	 u64;
	unsigned	 u;

	if (k->size == sizeof(uint64_t)) {
		memcpy(&u64, field, sizeof(u64));
		return u64;
	}
	memcpy(&u, field, sizeof(u));
	return u;
}

static int
key_numeric(const struct config_key *k)
{
	return k->type == CONFIG_NUMBER || k->type == CONFIG_SIZE ||
	    k->type == CONFIG_DURATION || k->type == CONFIG_SECONDS;
}

/*
 * Line 9 sets key k to n (in the table's unit) over lines that keep the
 * checks across keys quiet whatever the value: reconnect_min <=
 * reconnect_max, max_clients_per_user <= max_clients, max_bytes_per_user
 * <= max_bytes.
 */
static void
key_try(const struct config_key *k, uint64_t n, int good)
{
	struct result	 r;
	char		 val[32], lo[32], hi[32], *text;
	int		 dur = k->type == CONFIG_DURATION ||
			    k->type == CONFIG_SECONDS;

	snprintf(val, sizeof(val), dur ? "%llums" : "%llu",
	    (unsigned long long)n);
	text = strfmt("[broker]\nreconnect_min = 10ms\nreconnect_max = 1h\n"
	    "[socket]\nmax_clients = 100000\n[outbox]\nmax_bytes = 0\n"
	    "[%s]\n%s = %s\n", k->section, k->name, val);
	load(&r, text);
	free(text);
	if (good) {
		ok(r.rc == 0 && key_field(&r.cf, k) ==
		    (k->type == CONFIG_SECONDS ? n / 1000 : n),
		    "[%s] %s = %s is taken", k->section, k->name, val);
		if (r.rc != 0)
			diag("%s", r.errs);
	} else {
		if (dur) {
			fmt_ms(k->min, lo, sizeof(lo));
			fmt_ms(k->max, hi, sizeof(hi));
		} else if (k->type == CONFIG_SIZE) {
			fmt_size(k->min, lo, sizeof(lo));
			fmt_size(k->max, hi, sizeof(hi));
		} else {
			snprintf(lo, sizeof(lo), "%llu",
			    (unsigned long long)k->min);
			snprintf(hi, sizeof(hi), "%llu",
			    (unsigned long long)k->max);
		}
		ok(r.rc == 1 && has_error(&r, 9, "[%s] %s: %s is out of range "
		    "(expected %s to %s)", k->section, k->name, val, lo, hi),
		    "[%s] %s = %s is refused, naming the range", k->section,
		    k->name, val);
	}
	result_free(&r);
}

/* Every numeric key of the table: min and max taken, one past refused. */
static void
test_key_ranges(void)
{
	const struct config_key	*k;
	size_t			 i, n = 0;
	uint64_t		 fieldmax;

	for (i = 0; (k = config_key(i)) != NULL; i++) {
		if (!key_numeric(k))
			continue;
		n++;
		/* The setter stores max without a check of its own. */
		fieldmax = k->size == sizeof(uint64_t) ? UINT64_MAX :
		    k->type == CONFIG_SECONDS ? UINT_MAX * 1000ULL : UINT_MAX;
		ok(k->size == sizeof(uint64_t) || k->size == sizeof(unsigned),
		    "[%s] %s: a field of unsigned or uint64_t", k->section,
		    k->name);
		ok(k->min <= k->max && k->max <= fieldmax,
		    "[%s] %s: min <= max, and max fits the field", k->section,
		    k->name);
		key_try(k, k->min, 1);
		key_try(k, k->max, 1);
		if (k->min > 0)
			key_try(k, k->min - 1, 0);
		if (k->max < UINT64_MAX)
			key_try(k, k->max + 1, 0);
	}
	ok(n >= 15, "%zu numeric keys in the table", n);
}

/* "a or b", "a, b or c", as the enum's error message lists the names. */
static void
enum_list(const struct config_key *k, char *out, size_t len)
{
	size_t	i, n, used = 0;

	for (n = 0; k->names[n].name != NULL; n++)
		;
	out[0] = '\0';
	for (i = 0; i < n && used < len; i++)
		used += (size_t)snprintf(out + used, len - used, "%s%s",
		    i == 0 ? "" : i + 1 == n ? " or " : ", ", k->names[i].name);
}

/* Every enum and boolean key: each name taken, in any case; others refused. */
static void
test_key_words(void)
{
	const struct config_key	*k;
	const struct config_enum *e;
	struct result		 r;
	char			 word[64], names[256], *text;
	size_t			 i, j;
	int			 v;

	for (i = 0; (k = config_key(i)) != NULL; i++) {
		if (k->type != CONFIG_ENUM && k->type != CONFIG_BOOL)
			continue;
		for (e = k->names; e != NULL && e->name != NULL; e++) {
			for (j = 0; e->name[j] != '\0' && j + 1 < sizeof(word);
			    j++)
				word[j] = (char)toupper((unsigned char)e->name[j]);
			word[j] = '\0';
			text = strfmt("[%s]\n%s = %s\n", k->section, k->name,
			    word);
			load(&r, text);
			free(text);
			memcpy(&v, (const char *)&r.cf + k->offset, sizeof(v));
			ok(r.rc == 0 && v == e->value, "[%s] %s = %s is taken",
			    k->section, k->name, word);
			result_free(&r);
		}
		text = strfmt("[%s]\n%s = sometimes\n", k->section, k->name);
		load(&r, text);
		free(text);
		if (k->type == CONFIG_BOOL)
			ok(r.rc == 1 && has_error(&r, 2, "[%s] %s: invalid "
			    "boolean 'sometimes' (expected yes or no)",
			    k->section, k->name), "[%s] %s = sometimes is "
			    "refused", k->section, k->name);
		else {
			enum_list(k, names, sizeof(names));
			ok(r.rc == 1 && has_error(&r, 2, "[%s] %s: invalid "
			    "value 'sometimes' (expected %s)", k->section,
			    k->name, names), "[%s] %s = sometimes is refused, "
			    "naming the choices", k->section, k->name);
		}
		result_free(&r);
	}
}

/*
 * pubrelay.ini(5) and the table agree: each key of the table is documented
 * once, under its section, with its type ("Ar size", "Cm full | normal"),
 * and the man page documents no key the parser does not know.  (The keys
 * of etc/pubrelay.ini are held to the table by test_example.)
 */
static void
test_key_docs(void)
{
	const struct config_key	*k;
	const struct config_enum *e;
	char			*path, *line = NULL, section[32] = "";
	char			 name[64], want[256];
	char			 docs[64][2][256];	/* section/name, type */
	size_t			 cap = 0, ndocs = 0, i, j, found;
	FILE			*in;
	int			 off;

	path = srcdir_path("man/pubrelay.ini.5");
	if ((in = fopen(path, "r")) == NULL) {
		ok(0, "open %s: %s", path, strerror(errno));
		free(path);
		return;
	}
	free(path);
	while (getline(&line, &cap, in) != -1) {
		line[strcspn(line, "\n")] = '\0';
		if (strncmp(line, ".Sh ", 4) == 0) {
			/* ".Sh BROKER" documents [broker]. */
			for (j = 0; line[4 + j] != '\0' &&
			    j + 1 < sizeof(section); j++)
				section[j] = (char)tolower(
				    (unsigned char)line[4 + j]);
			section[j] = '\0';
			continue;
		}
		off = 0;
		if (sscanf(line, ".It Ic %63s No = %n", name, &off) != 1 ||
		    off == 0 || ndocs == 64)
			continue;
		snprintf(docs[ndocs][0], sizeof(docs[ndocs][0]), "%s/%s",
		    section, name);
		snprintf(docs[ndocs][1], sizeof(docs[ndocs][1]), "%s",
		    line + off);
		ndocs++;
	}
	free(line);
	fclose(in);
	ok(ndocs >= 30, "pubrelay.ini(5) documents %zu keys", ndocs);

	for (i = 0; (k = config_key(i)) != NULL; i++) {
		snprintf(want, sizeof(want), "%s/%s", k->section, k->name);
		for (found = 0, j = 0; j < ndocs; j++)
			if (strcmp(docs[j][0], want) == 0)
				found = found == 0 ? j + 1 : SIZE_MAX;
		ok(found > 0 && found != SIZE_MAX, "pubrelay.ini(5) documents "
		    "[%s] %s once, under %s", k->section, k->name, k->section);
		if (found == 0 || found == SIZE_MAX)
			continue;
		want[0] = '\0';
		switch (k->type) {
		case CONFIG_BOOL:
			snprintf(want, sizeof(want), "Ar boolean");
			break;
		case CONFIG_NUMBER:
			snprintf(want, sizeof(want), "Ar number");
			break;
		case CONFIG_SIZE:
			snprintf(want, sizeof(want), "Ar size");
			break;
		case CONFIG_DURATION:
		case CONFIG_SECONDS:
			snprintf(want, sizeof(want), "Ar duration");
			break;
		case CONFIG_ENUM:
			snprintf(want, sizeof(want), "Cm");
			for (e = k->names; e->name != NULL; e++)
				snprintf(want + strlen(want), sizeof(want) -
				    strlen(want), "%s %s", e == k->names ? "" :
				    " |", e->name);
			break;
		case CONFIG_CUSTOM:
			break;
		}
		if (want[0] != '\0')
			is_str(docs[found - 1][1], want, "pubrelay.ini(5) gives "
			    "[%s] %s its type", k->section, k->name);
	}
	for (j = 0; j < ndocs; j++) {
		for (i = 0; (k = config_key(i)) != NULL; i++) {
			snprintf(want, sizeof(want), "%s/%s", k->section,
			    k->name);
			if (strcmp(docs[j][0], want) == 0)
				break;
		}
		ok(k != NULL, "%s in pubrelay.ini(5) is a key of the parser",
		    docs[j][0]);
	}
}

/* [socket] group, allow_users, allow_groups: names and ids, resolved. */
static void
test_socket_access(void)
{
	struct result	r;

	load(&r, "[socket]\n"
	    "group = root\n"
	    "allow_users = root, 65534 nobody\n"
	    "allow_groups = 0,nogroup\n");
	is_int(r.rc, 0, "access keys: no error (%s)", r.errs ? r.errs : "");
	is_int(r.cf.socket_has_group, 1, "group set");
	is_int(r.cf.socket_gid, 0, "group root is gid 0");
	is_int(r.cf.nallow_uids, 3, "allow_users: 3 entries");
	if (r.cf.nallow_uids == 3) {
		is_int(r.cf.allow_uids[0], 0, "allow_users: root is 0");
		is_int(r.cf.allow_uids[1], 65534, "allow_users: numeric id");
		is_int(r.cf.allow_uids[2], 65534, "allow_users: nobody");
	}
	is_int(r.cf.nallow_gids, 2, "allow_groups: 2 entries");
	result_free(&r);

	load(&r, "[socket]\n"
	    "allow_users = root no-such-user-xyz\n"	/* 2 */
	    "allow_groups = no-such-group-xyz\n"		/* 3 */
	    "group = no-such-group-xyz\n");		/* 4 */
	is_int(r.rc, 3, "unknown names: 3 errors");
	ok(has_error(&r, 2, "[socket] allow_users: unknown user "
	    "'no-such-user-xyz'"), "unknown user named");
	ok(has_error(&r, 3, "[socket] allow_groups: unknown group "
	    "'no-such-group-xyz'"), "unknown group named");
	ok(has_error(&r, 4, "[socket] group: unknown group "
	    "'no-such-group-xyz'"), "unknown socket group named");
	result_free(&r);

	load(&r, "[socket]\nallow_users = root\nallow_users =\n");
	is_int(r.rc, 0, "empty allow_users: no error");
	is_int(r.cf.nallow_uids, 0, "empty allow_users: anyone");
	result_free(&r);
}

static void
test_socket_limits(void)
{
	struct result	r;
	struct config	d;

	config_defaults(&d);
	is_int(d.max_headers, 128, "defaults: max_headers 128");
	is_int(d.max_line, 8192, "defaults: max_line 8192");
	ok(d.max_buffer == 4ULL * 1024 * 1024, "defaults: max_buffer 4M");
	ok(d.idle_timeout_ms == 60000, "defaults: idle_timeout 60s");
	config_free(&d);

	load(&r, "[socket]\nmax_headers = 1\nmax_line = 1K\n"
	    "max_buffer = 64K\nidle_timeout = 0\n");
	is_int(r.rc, 0, "small limits: no error (%s)", r.errs ? r.errs : "");
	is_int(r.cf.max_headers, 1, "max_headers 1");
	is_int(r.cf.max_line, 1024, "max_line 1K");
	ok(r.cf.max_buffer == 64 * 1024, "max_buffer 64K");
	ok(r.cf.idle_timeout_ms == 0, "idle_timeout 0: never");
	result_free(&r);

	load(&r, "[socket]\n"
	    "max_headers = 129\n"		/* 2 */
	    "max_headers = 0\n"			/* 3 */
	    "max_line = 8193\n"			/* 4 */
	    "max_line = 100\n"			/* 5 */
	    "max_buffer = 1K\n"			/* 6 */
	    "idle_timeout = 2d\n"		/* 7 */
	    "idle_timeout = 25h\n");		/* 8 */
	is_int(r.rc, 7, "bad limits: 7 errors");
	ok(has_error(&r, 2, "[socket] max_headers: 129 is out of range "
	    "(expected 1 to 128)"), "max_headers over 128");
	ok(has_error(&r, 3, "[socket] max_headers: 0 is out of range "
	    "(expected 1 to 128)"),
	    "max_headers 0");
	ok(has_error(&r, 4, "[socket] max_line: 8193 is out of range "
	    "(expected 256 to 8K)"), "max_line over 8K");
	ok(has_error(&r, 5, "[socket] max_line: 100 is out of range "
	    "(expected 256 to 8K)"),
	    "max_line under 256");
	ok(has_error(&r, 6, "[socket] max_buffer: 1K is out of range "
	    "(expected 64K to 1G)"), "max_buffer under 64K");
	ok(has_error(&r, 7, "[socket] idle_timeout: invalid duration '2d' "
	    "(expected a whole number with unit ms, s, m or h; no unit means "
	    "seconds)"),
	    "idle_timeout bad unit");
	ok(has_error(&r, 8, "[socket] idle_timeout: 25h is out of range "
	    "(expected 0s to 24h)"), "idle_timeout over 24h");
	result_free(&r);
}

/* [socket] max_clients_per_user and [outbox] max_bytes_per_user. */
static void
test_per_user(void)
{
	struct result	r;

	load(&r, "[socket]\nmax_clients = 100\nmax_clients_per_user = 10\n"
	    "[outbox]\nmax_bytes = 1G\nmax_bytes_per_user = 256M\n");
	is_int(r.rc, 0, "per-user limits: no error (%s)", r.errs ? r.errs : "");
	is_int(r.cf.max_clients_per_user, 10, "max_clients_per_user 10");
	ok(r.cf.max_bytes_per_user == 256ULL << 20, "max_bytes_per_user 256M");
	result_free(&r);

	/* Equal to the global limit, or the global limit off: allowed. */
	load(&r, "[socket]\nmax_clients = 5\nmax_clients_per_user = 5\n"
	    "[outbox]\nmax_bytes = 0\nmax_bytes_per_user = 16T\n");
	is_int(r.rc, 0, "per-user = global, or no global: no error (%s)",
	    r.errs ? r.errs : "");
	ok(r.cf.max_bytes_per_user == 16ULL << 40,
	    "max_bytes_per_user 16T without max_bytes");
	result_free(&r);

	load(&r, "[socket]\n"
	    "max_clients_per_user = -1\n"		/* 2 */
	    "max_clients_per_user = 100001\n"		/* 3 */
	    "max_clients_per_user = some\n"		/* 4 */
	    "[outbox]\n"
	    "max_bytes_per_user = 5X\n"		/* 6 */
	    "max_bytes_per_user = 10%\n");		/* 7 */
	is_int(r.rc, 5, "bad per-user values: 5 errors");
	ok(has_error(&r, 2, "[socket] max_clients_per_user: invalid number "
	    "'-1' (expected 0 to 100000)"), "max_clients_per_user negative");
	ok(has_error(&r, 3, "[socket] max_clients_per_user: 100001 is out of "
	    "range (expected 0 to 100000)"), "max_clients_per_user too big");
	ok(has_error(&r, 4, "[socket] max_clients_per_user: invalid number "
	    "'some' (expected 0 to 100000)"), "max_clients_per_user not a "
	    "number");
	ok(has_error(&r, 6, "[outbox] max_bytes_per_user: invalid size '5X' "
	    "(expected bytes, or a whole number with unit K, M, G or T)"),
	    "max_bytes_per_user bad unit");
	ok(has_error(&r, 7, "[outbox] max_bytes_per_user: invalid size '10%%' "
	    "(expected bytes, or a whole number with unit K, M, G or T)"),
	    "max_bytes_per_user: a share is a size, not a percentage");
	ok(r.cf.max_clients_per_user == 0 && r.cf.max_bytes_per_user == 0,
	    "bad per-user values not applied");
	result_free(&r);

	/* Over the global limit it could never apply: its line is named. */
	load(&r, "[socket]\nmax_clients_per_user = 2000\n"
	    "[outbox]\nmax_bytes_per_user = 2G\nmax_bytes = 1G\n");
	is_int(r.rc, 2, "per-user over global: 2 errors");
	ok(has_error(&r, 2, "[socket] max_clients_per_user: 2000 is more than "
	    "max_clients (1024): it could never apply"),
	    "max_clients_per_user over the default max_clients");
	ok(has_error(&r, 4, "[outbox] max_bytes_per_user: 2G is more than "
	    "max_bytes (1G): it could never apply"),
	    "max_bytes_per_user over max_bytes");
	result_free(&r);
}

/* [metrics] listen: a port, IPv4 or [IPv6] with a port; never a name. */
static void
test_metrics_listen(void)
{
	static const struct { const char *in, *want; } good[] = {
		{ "9864", "127.0.0.1:9864" },
		{ "127.0.0.1:1", "127.0.0.1:1" },
		{ "0.0.0.0:65535", "0.0.0.0:65535" },
		{ "[::1]:9864", "[::1]:9864" },
		{ "[fe80::1]:80", "[fe80::1]:80" },
		{ "off", NULL },
		{ "", NULL },
	};
	static const char *const bad[] = {
		"0", "65536", "localhost:9864", "1.2.3.4:", ":9864",
		"[::1]9864", "::1:9864", "[::1]:", "1.2.3:80", "port",
		"[localhost]:80", "[::1]:80x",
	};
	struct result	r;
	char		 text[256];
	size_t		 i;

	for (i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
		snprintf(text, sizeof(text), "[broker]\nuri = amqp://h\n"
		    "[metrics]\nlisten = %s\n", good[i].in);
		load(&r, text);
		is_int(r.rc, 0, "listen = '%s' accepted", good[i].in);
		if (good[i].want == NULL)
			ok(r.cf.metrics_listen == NULL, "listen = '%s': off",
			    good[i].in);
		else
			is_str(r.cf.metrics_listen, good[i].want,
			    "listen = '%s'", good[i].in);
		result_free(&r);
	}
	for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		snprintf(text, sizeof(text), "[metrics]\nlisten = %s\n",
		    bad[i]);
		load(&r, text);
		ok(r.rc != 0 && r.cf.metrics_listen == NULL &&
		    strstr(r.errs, "[metrics] listen: ") != NULL,
		    "listen = '%s' refused, naming the key: %s", bad[i],
		    r.errs);
		result_free(&r);
	}
	load(&r, "[broker]\nuri = amqp://h\n");
	ok(r.rc == 0 && r.cf.metrics_listen == NULL, "no endpoint by default");
	result_free(&r);
}

int
main(void)
{
	const char	*t = getenv("TMPDIR");
	char		 tmpl[4096];

	snprintf(tmpl, sizeof(tmpl), "%s/test_config.d.XXXXXX",
	    t != NULL && *t != '\0' ? t : "/tmp");
	if (mkdtemp(tmpl) == NULL) {
		perror("mkdtemp");
		return 2;
	}
	snprintf(tmpdir, sizeof(tmpdir), "%s", tmpl);
	/* The defaults follow systemd's directories: not this run's. */
	unsetenv("STATE_DIRECTORY");
	unsetenv("RUNTIME_DIRECTORY");

	test_defaults();
	test_empty();
	test_every_key();
	test_limits_accepted();
	test_bad_values();
	test_unknown();
	test_syntax();
	test_repeat();
	test_uris();
	test_password_file();
	test_file_size();
	test_tls();
	test_secrets();
	test_reconnect();
	test_missing_file();
	test_example();
	test_socket_access();
	test_socket_limits();
	test_per_user();
	test_key_ranges();
	test_key_words();
	test_key_docs();
	test_metrics_listen();

	if (rmdir(tmpdir) == -1)
		ok(0, "temp dir left empty: %s", strerror(errno));
	return done_testing();
}
