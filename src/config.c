/*
 * config.c: load pubrelay.ini through inih.
 *
 * inih splits the file into sections and key = value pairs, but it is loose
 * (it takes "key: value", silently skips lines it cannot read and gives the
 * handler no line number in Debian's build), so our reader callback sits in
 * front of it: it counts lines, checks the syntax of each one and hands a bad
 * line to inih as an empty one.  Every error is reported and counted, and
 * parsing goes on; the caller rejects the file when the count is not zero.
 *
 * A key given twice keeps its last value, except uri, which adds one more
 * broker to the failover list.
 */
#include <sys/socket.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/stat.h>
#include <sys/un.h>

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <pwd.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <syslog.h>
#include <unistd.h>

#include <amqp.h>
#include <ini.h>

#include "config.h"
#include "log.h"
#include "protocol.h"
#include "util.h"

#ifndef PUBRELAY_SOCKET_PATH
#define PUBRELAY_SOCKET_PATH	"/run/pubrelay/pubrelay.sock"
#endif
#ifndef PUBRELAY_OUTBOX_PATH
#define PUBRELAY_OUTBOX_PATH	"/var/lib/pubrelay/outbox.db"
#endif

/* inih's line buffer; a line may hold CONFIG_LINE_MAX - 1 bytes. */
#define CONFIG_LINE_MAX			4096
/* The longest password_file first line (room for an OAuth 2 token). */
#define CONFIG_PASSWORD_MAX		65536
#define CONFIG_SECTION_MAX		32
/* Far above any real config (the shipped one is about 10 KB). */
#define CONFIG_FILE_MAX			(1024 * 1024)

/* Limits on values; the defaults live in config.h. */
#define CONFIG_HEARTBEAT_MAX_MS		(3600ULL * 1000)
#define CONFIG_CONNECT_TIMEOUT_MIN_MS	100ULL
#define CONFIG_CONNECT_TIMEOUT_MAX_MS	(300ULL * 1000)
#define CONFIG_RECONNECT_MIN_MS		10ULL
#define CONFIG_RECONNECT_MAX_MS		(3600ULL * 1000)
#define CONFIG_MAX_CLIENTS_MAX		100000
#define CONFIG_MAX_MESSAGE_MAX		((uint64_t)PROTO_MAX_BODY)
#define CONFIG_MAX_LINE_MIN		256
#define CONFIG_MAX_BUFFER_MIN		(64ULL * 1024)
#define CONFIG_MAX_BUFFER_MAX		(1024ULL * 1024 * 1024)
#define CONFIG_IDLE_TIMEOUT_MAX_MS	(24ULL * 3600 * 1000)
#define CONFIG_MAX_IDS			1024	/* allow_users, allow_groups */
#define CONFIG_WINDOW_MAX		65535
#define CONFIG_CONFIRM_TIMEOUT_MIN_MS	1000ULL
#define CONFIG_CONFIRM_TIMEOUT_MAX_MS	(3600ULL * 1000)
#define CONFIG_MAX_ATTEMPTS_MAX		1000
#define CONFIG_IDEM_WINDOW_MAX_MS	(366ULL * 24 * 3600 * 1000)
#define CONFIG_IDEM_MAX_KEYS_MAX	1000000000ULL
#define CONFIG_PEM_MAX			(16 * 1024 * 1024)	/* ca_file and the like */

/* Room for every row of config_keys[] (checked where the table is). */
#define CONFIG_KEYS_MAX			64

struct config_parse {
	struct config	*cf;
	const char	*path;
	FILE		*fp;
	FILE		*errf;
	int		 nerrors;
	int		 lineno;	/* of the line inih is working on */
	int		 read_errno;	/* getc() failed: the file is unreadable */
	size_t		 nread;		/* bytes read so far */
	int		 in_section;	/* a [section] line was seen */
	int		 section_ok;	/* and it names a section we know */
	char		 section[CONFIG_SECTION_MAX + 1];
	const char	*key;		/* the key being set, for config_keyerr() */
	/*
	 * For the checks made once the whole file is read, by row of
	 * config_keys[]: the line each key was last given on, and the line
	 * its value was last taken from (0: never).
	 */
	int		 given_line[CONFIG_KEYS_MAX];
	int		 taken_line[CONFIG_KEYS_MAX];
	int		 uri_password_line;	/* first uri holding a password */
	int		 tls_line;		/* first amqps:// uri */
	mode_t		 file_mode;		/* of the config file itself */
};

static const char *const config_sections[] = {
	"broker", "socket", "outbox", "publish", "metrics", "log",
};

static void	config_verr(struct config_parse *, int, const char *,
		    const char *, const char *, va_list)
		    __attribute__((format(printf, 5, 0)));
static void	config_err(struct config_parse *, int, const char *,
		    const char *, const char *, ...)
		    __attribute__((format(printf, 5, 6)));
static void	config_keyerr(struct config_parse *, const char *, ...)
		    __attribute__((format(printf, 2, 3)));
static void	config_syntax(struct config_parse *, const char *, ...)
		    __attribute__((format(printf, 2, 3)));

/*
 * One error line: "FILE:LINE: [section] key: message".  Without a section,
 * key alone is the prefix ("syntax error"); lineno 0 leaves out the line.
 */
static void
config_verr(struct config_parse *p, int lineno, const char *section,
    const char *key, const char *fmt, va_list ap)
{
	p->nerrors++;
	if (p->errf == NULL)
		return;
	flockfile(p->errf);
	if (lineno > 0)
		fprintf(p->errf, "%s:%d: ", p->path, lineno);
	else
		fprintf(p->errf, "%s: ", p->path);
	if (section != NULL && key != NULL)
		fprintf(p->errf, "[%s] %s: ", section, key);
	else if (key != NULL)
		fprintf(p->errf, "%s: ", key);
	vfprintf(p->errf, fmt, ap);
	fputc('\n', p->errf);
	funlockfile(p->errf);
}

static void
config_err(struct config_parse *p, int lineno, const char *section,
    const char *key, const char *fmt, ...)
{
	va_list	ap;

	va_start(ap, fmt);
	config_verr(p, lineno, section, key, fmt, ap);
	va_end(ap);
}

/* An error in the value of the key being set. */
static void
config_keyerr(struct config_parse *p, const char *fmt, ...)
{
	va_list	ap;

	va_start(ap, fmt);
	config_verr(p, p->lineno, p->section, p->key, fmt, ap);
	va_end(ap);
}

static void
config_syntax(struct config_parse *p, const char *fmt, ...)
{
	va_list	ap;

	va_start(ap, fmt);
	config_verr(p, p->lineno, NULL, "syntax error", fmt, ap);
	va_end(ap);
}

/* Durations in messages read as they would be written in the file. */
static const char *
config_fmt_ms(uint64_t ms, char *out, size_t len)
{
	if (ms != 0 && ms % (3600 * 1000) == 0)
		snprintf(out, len, "%lluh", (unsigned long long)(ms / 3600000));
	else if (ms != 0 && ms % (60 * 1000) == 0)
		snprintf(out, len, "%llum", (unsigned long long)(ms / 60000));
	else if (ms % 1000 == 0)
		snprintf(out, len, "%llus", (unsigned long long)(ms / 1000));
	else
		snprintf(out, len, "%llums", (unsigned long long)ms);
	return out;
}

static const char *
config_fmt_size(uint64_t n, char *out, size_t len)
{
	if (n != 0 && n % (1ULL << 30) == 0)
		snprintf(out, len, "%lluG", (unsigned long long)(n >> 30));
	else if (n != 0 && n % (1ULL << 20) == 0)
		snprintf(out, len, "%lluM", (unsigned long long)(n >> 20));
	else if (n != 0 && n % (1ULL << 10) == 0)
		snprintf(out, len, "%lluK", (unsigned long long)(n >> 10));
	else
		snprintf(out, len, "%llu", (unsigned long long)n);
	return out;
}

static int
config_number(struct config_parse *p, const char *v, uint64_t min,
    uint64_t max, uint64_t *out)
{
	uint64_t	n;

	if (util_parse_u64(v, 0, UINT64_MAX, &n) == -1) {
		config_keyerr(p, "invalid number '%s' (expected %llu to %llu)",
		    v, (unsigned long long)min, (unsigned long long)max);
		return -1;
	}
	if (n < min || n > max) {
		config_keyerr(p, "%s is out of range (expected %llu to %llu)",
		    v, (unsigned long long)min, (unsigned long long)max);
		return -1;
	}
	*out = n;
	return 0;
}

static int
config_size(struct config_parse *p, const char *v, uint64_t min,
    uint64_t max, uint64_t *out)
{
	char		a[32], b[32];
	uint64_t	n;

	if (util_parse_size(v, &n) == -1) {
		config_keyerr(p, "invalid size '%s' (expected bytes, or a whole "
		    "number with unit K, M, G or T)", v);
		return -1;
	}
	if (n < min || n > max) {
		config_keyerr(p, "%s is out of range (expected %s to %s)", v,
		    config_fmt_size(min, a, sizeof(a)),
		    config_fmt_size(max, b, sizeof(b)));
		return -1;
	}
	*out = n;
	return 0;
}

static int
config_duration(struct config_parse *p, const char *v, uint64_t min,
    uint64_t max, uint64_t *out)
{
	char		a[32], b[32];
	uint64_t	ms;

	if (util_parse_duration_ms(v, &ms) == -1) {
		config_keyerr(p, "invalid duration '%s' (expected a whole number "
		    "with unit ms, s, m or h; no unit means seconds)", v);
		return -1;
	}
	if (ms < min || ms > max) {
		config_keyerr(p, "%s is out of range (expected %s to %s)", v,
		    config_fmt_ms(min, a, sizeof(a)),
		    config_fmt_ms(max, b, sizeof(b)));
		return -1;
	}
	*out = ms;
	return 0;
}

static int
config_bool(struct config_parse *p, const char *v, int *out)
{
	if (util_parse_bool(v, out) == -1) {
		config_keyerr(p, "invalid boolean '%s' (expected yes or no)", v);
		return -1;
	}
	return 0;
}

static void
config_set_str(char **dst, const char *v)
{
	free(*dst);
	*dst = xstrdup(v);
}

/* Does the URI carry a password ("user:password@")?  As util_mask_uri sees it. */
static int
config_uri_has_password(const char *v)
{
	const char	*auth, *end, *at = NULL, *s;

	auth = (s = strstr(v, "://")) != NULL ? s + 3 : v;
	end = auth + strcspn(auth, "/?#");
	for (s = auth; s < end; s++)
		if (*s == '@')
			at = s;
	return at != NULL && memchr(auth, ':', (size_t)(at - auth)) != NULL;
}

static int
config_set_uri(struct config_parse *p, const struct config_key *k,
    const char *v)
{
	struct amqp_connection_info	 ci;
	char				 masked[256], *copy;
	int				 ret = -1;

	(void)k;
	/* Error lines end up in logs: never print a password. */
	util_mask_uri(v, masked, sizeof(masked));
	if (p->uri_password_line == 0 && config_uri_has_password(v))
		p->uri_password_line = p->lineno;
	if (p->cf->nuris >= CONFIG_MAX_URIS) {
		config_keyerr(p, "too many uri keys: '%s' is past the limit of %d",
		    masked, CONFIG_MAX_URIS);
		return -1;
	}
	copy = xstrdup(v);		/* amqp_parse_url() cuts its input up */
	amqp_default_connection_info(&ci);
	if (amqp_parse_url(copy, &ci) != AMQP_STATUS_OK)
		config_keyerr(p, "invalid AMQP URI '%s' (expected "
		    "amqp://user:password@host:port/vhost)",
		    masked);
	/*
	 * rabbitmq-c reads "amqp://host/" as the vhost "", which no broker
	 * has: the login would fail much later, far from the typo.
	 */
	else if (ci.vhost[0] == '\0')
		config_keyerr(p, "empty vhost in '%s' (write %%2f for the vhost "
		    "'/', or leave out the trailing '/')", masked);
	else if (ci.port < 1 || ci.port > 65535)
		config_keyerr(p, "port %d in '%s' (expected 1 to 65535)",
		    ci.port, masked);
	else {
		if (ci.ssl && p->tls_line == 0)
			p->tls_line = p->lineno;
		p->cf->uris[p->cf->nuris++] = xstrdup(v);
		ret = 0;
	}
	free(copy);
	return ret;
}

/* The char * field of key k, which owns its string. */
static char **
config_str_field(struct config_parse *p, const struct config_key *k)
{
	return (char **)(void *)((char *)p->cf + k->offset);
}

static int
config_set_password_file(struct config_parse *p, const struct config_key *k,
    const char *v)
{
	if (*v == '\0') {
		config_keyerr(p, "empty path");
		return -1;
	}
	/* Read once the file is parsed, so only the last one counts. */
	config_set_str(config_str_field(p, k), v);
	return 0;
}

/*
 * A PEM file the publisher reads at each connect: read it now, so a typo or a
 * missing permission fails "pubrelayd -t" instead of every connection.
 * Returns the contents (NUL-terminated) or NULL (reported).
 */
static char *
config_read_pem(struct config_parse *p, const char *v, struct stat *st)
{
	char	*buf = NULL;
	size_t	 len = 0;
	ssize_t	 n;
	int	 fd;

	if (*v == '\0') {
		config_keyerr(p, "empty path");
		return NULL;
	}
	/* O_NONBLOCK: a FIFO must not hang the loader; files ignore it. */
	if ((fd = open(v, O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK)) ==
	    -1) {
		config_keyerr(p, "cannot open '%s': %s", v, strerror(errno));
		return NULL;
	}
	if (fstat(fd, st) == -1) {
		config_keyerr(p, "cannot read '%s': %s", v, strerror(errno));
		goto fail;
	}
	if (S_ISDIR(st->st_mode)) {
		config_keyerr(p, "cannot read '%s': %s", v, strerror(EISDIR));
		goto fail;
	}
	if (!S_ISREG(st->st_mode) || st->st_size > CONFIG_PEM_MAX) {
		config_keyerr(p, "'%s' is not a regular file of at most %d bytes",
		    v, CONFIG_PEM_MAX);
		goto fail;
	}
	buf = xmalloc((size_t)st->st_size + 1);
	while (len < (size_t)st->st_size) {
		n = read(fd, buf + len, (size_t)st->st_size - len);
		if (n == -1 && errno == EINTR)
			continue;
		if (n == -1) {
			config_keyerr(p, "cannot read '%s': %s", v,
			    strerror(errno));
			goto fail;
		}
		if (n == 0)
			break;
		len += (size_t)n;
	}
	buf[len] = '\0';
	close(fd);
	return buf;
 fail:
	if (buf != NULL) {
		explicit_bzero(buf, (size_t)st->st_size);
		free(buf);
	}
	close(fd);
	return NULL;
}

/* ca_file, cert_file: a readable PEM file holding a certificate. */
static int
config_set_cert(struct config_parse *p, const struct config_key *k,
    const char *v)
{
	struct stat	 st;
	char		*pem;
	int		 rc = -1;

	if ((pem = config_read_pem(p, v, &st)) == NULL)
		return -1;
	if (strstr(pem, "-----BEGIN CERTIFICATE-----") == NULL &&
	    strstr(pem, "-----BEGIN TRUSTED CERTIFICATE-----") == NULL)
		config_keyerr(p, "'%s' holds no PEM certificate (no "
		    "-----BEGIN CERTIFICATE----- line)", v);
	else {
		config_set_str(config_str_field(p, k), v);
		rc = 0;
	}
	free(pem);
	return rc;
}

static int
config_set_key_file(struct config_parse *p, const struct config_key *k,
    const char *v)
{
	struct stat	 st;
	char		*pem;
	int		 rc = -1;

	if ((pem = config_read_pem(p, v, &st)) == NULL)
		return -1;
	/* A secret like password_file: the same rule (see pubrelay.ini(5)). */
	if (st.st_mode & S_IROTH)
		config_keyerr(p, "'%s' is readable by others (mode %04o): a "
		    "private key must not be; chmod o-r '%s'", v,
		    (unsigned)(st.st_mode & 07777), v);
	else if (strstr(pem, "PRIVATE KEY-----") == NULL)
		config_keyerr(p, "'%s' holds no PEM private key (no "
		    "-----BEGIN ... PRIVATE KEY----- line)", v);
	/* rabbitmq-c would ask for the passphrase on a terminal. */
	else if (strstr(pem, "-----BEGIN ENCRYPTED PRIVATE KEY-----") != NULL ||
	    strstr(pem, "Proc-Type: 4,ENCRYPTED") != NULL)
		config_keyerr(p, "'%s' is an encrypted private key, which "
		    "pubrelayd cannot unlock; store it unencrypted (openssl pkey "
		    "-in KEY -out NEWKEY), readable by pubrelayd alone", v);
	else {
		config_set_str(config_str_field(p, k), v);
		rc = 0;
	}
	explicit_bzero(pem, strlen(pem));
	free(pem);
	return rc;
}

static int
config_set_socket_path(struct config_parse *p, const struct config_key *k,
    const char *v)
{
	struct sockaddr_un	sun;
	size_t			len = strlen(v);

	if (*v != '/') {
		config_keyerr(p, "'%s' is not an absolute path", v);
		return -1;
	}
	if (len >= sizeof(sun.sun_path)) {
		config_keyerr(p, "path is too long for a Unix socket (%zu bytes, "
		    "at most %zu)", len, sizeof(sun.sun_path) - 1);
		return -1;
	}
	config_set_str(config_str_field(p, k), v);
	return 0;
}

/*
 * [metrics] listen: PORT (on 127.0.0.1), IPV4:PORT or [IPV6]:PORT, kept as
 * "ADDRESS:PORT" for evutil_parse_sockaddr_port(); "" or "off": none.
 */
static int
config_set_metrics_listen(struct config_parse *p, const struct config_key *k,
    const char *v)
{
	struct in6_addr	 a6;
	struct in_addr	 a4;
	const char	*colon, *port;
	char		 addr[64], out[80];
	uint64_t	 n;
	size_t		 alen;
	int		 ok;

	if (*v == '\0' || strcasecmp(v, "off") == 0) {
		free(*config_str_field(p, k));
		*config_str_field(p, k) = NULL;
		return 0;
	}
	if (v[0] == '[') {
		colon = strstr(v, "]:");
		port = colon != NULL ? colon + 2 : NULL;
		alen = colon != NULL ? (size_t)(colon - v - 1) : 0;
		if (colon != NULL && alen < sizeof(addr)) {
			memcpy(addr, v + 1, alen);
			addr[alen] = '\0';
		}
		ok = colon != NULL && alen < sizeof(addr) &&
		    inet_pton(AF_INET6, addr, &a6) == 1;
	} else if ((colon = strrchr(v, ':')) != NULL) {
		port = colon + 1;
		alen = (size_t)(colon - v);
		if (alen < sizeof(addr)) {
			memcpy(addr, v, alen);
			addr[alen] = '\0';
		}
		ok = alen < sizeof(addr) && inet_pton(AF_INET, addr, &a4) == 1;
	} else {
		port = v;
		snprintf(addr, sizeof(addr), "127.0.0.1");
		ok = 1;
	}
	if (!ok) {
		config_keyerr(p, "'%s' is not PORT, IPV4:PORT or [IPV6]:PORT "
		    "(an address, not a host name)", v);
		return -1;
	}
	if (util_parse_u64(port, 1, 65535, &n) == -1) {
		config_keyerr(p, "'%s': the port must be 1 to 65535", v);
		return -1;
	}
	snprintf(out, sizeof(out), strchr(addr, ':') != NULL ? "[%s]:%s" :
	    "%s:%s", addr, port);
	config_set_str(config_str_field(p, k), out);
	return 0;
}

static int
config_set_socket_mode(struct config_parse *p, const struct config_key *k,
    const char *v)
{
	unsigned	mode;

	(void)k;
	if (util_parse_mode(v, &mode) == -1)
		config_keyerr(p, "invalid file mode '%s' (expected octal such as "
		    "0660)", v);
	else if ((mode & 0222) == 0)
		config_keyerr(p, "mode %04o lets no one connect (connecting "
		    "takes write permission on the socket; expected such as "
		    "0660)", (unsigned)mode);
	else {
		p->cf->socket_mode = mode;
		return 0;
	}
	return -1;
}

/*
 * allow_users, allow_groups: a list of user or group names or numeric ids,
 * split on commas and blanks, resolved now: an unknown name is an error, not
 * a silent never-match.  The ids that resolved are kept either way.
 */
static int
config_set_ids(struct config_parse *p, const struct config_key *k,
    const char *v)
{
	struct config	*cf = p->cf;
	char		*copy, *tok, *save;
	unsigned	*ids;
	size_t		 i, n = 0;
	uint64_t	 id;
	struct passwd	*pw;
	struct group	*gr;
	int		 groups, rc = 0;

	groups = k->offset == offsetof(struct config, allow_gids);
	copy = xstrdup(v);
	ids = xcalloc(CONFIG_MAX_IDS, sizeof(*ids));
	for (tok = strtok_r(copy, ", \t", &save); tok != NULL;
	    tok = strtok_r(NULL, ", \t", &save)) {
		if (n == CONFIG_MAX_IDS) {
			config_keyerr(p, "more than %d entries", CONFIG_MAX_IDS);
			rc = -1;
			break;
		}
		if (util_parse_u64(tok, 0, UINT32_MAX - 1, &id) == 0)
			ids[n++] = (unsigned)id;
		else if (groups && (gr = getgrnam(tok)) != NULL)
			ids[n++] = (unsigned)gr->gr_gid;
		else if (!groups && (pw = getpwnam(tok)) != NULL)
			ids[n++] = (unsigned)pw->pw_uid;
		else {
			config_keyerr(p, "unknown %s '%s'", groups ? "group" :
			    "user", tok);
			rc = -1;
		}
	}
	free(copy);
	if (groups) {
		free(cf->allow_gids);
		cf->allow_gids = xcalloc(n + 1, sizeof(gid_t));
		for (i = 0; i < n; i++)
			cf->allow_gids[i] = (gid_t)ids[i];
		cf->nallow_gids = n;
	} else {
		free(cf->allow_uids);
		cf->allow_uids = xcalloc(n + 1, sizeof(uid_t));
		for (i = 0; i < n; i++)
			cf->allow_uids[i] = (uid_t)ids[i];
		cf->nallow_uids = n;
	}
	free(ids);
	return rc;
}

static int
config_set_socket_group(struct config_parse *p, const struct config_key *k,
    const char *v)
{
	struct group	*gr;
	uint64_t	 id;

	(void)k;
	if (*v == '\0') {		/* the daemon's group */
		p->cf->socket_has_group = 0;
		return 0;
	}
	if (util_parse_u64(v, 0, UINT32_MAX - 1, &id) == 0)
		p->cf->socket_gid = (gid_t)id;
	else if ((gr = getgrnam(v)) != NULL)
		p->cf->socket_gid = gr->gr_gid;
	else {
		config_keyerr(p, "unknown group '%s'", v);
		return -1;
	}
	p->cf->socket_has_group = 1;
	return 0;
}

static int
config_set_outbox_path(struct config_parse *p, const struct config_key *k,
    const char *v)
{
	if (*v == '\0') {
		config_keyerr(p, "empty path");
		return -1;
	}
	if (*v != '/') {	/* as [socket] path: never relative to a cwd */
		config_keyerr(p, "'%s' is not an absolute path", v);
		return -1;
	}
	config_set_str(config_str_field(p, k), v);
	return 0;
}

/* The level names are log.c's: they are not repeated as a CONFIG_ENUM. */
static int
config_set_log_level(struct config_parse *p, const struct config_key *k,
    const char *v)
{
	(void)k;
	if (log_level_parse(v, &p->cf->log_level) == -1) {
		config_keyerr(p, "invalid log level '%s' (expected error, "
		    "warning, notice, info or debug)", v);
		return -1;
	}
	return 0;
}

static const struct config_enum config_uri_orders[] = {
	{ "ordered", 0 }, { "shuffle", 1 }, { NULL, 0 },
};
static const struct config_enum config_syncs[] = {
	{ "full", 1 }, { "normal", 0 }, { NULL, 0 },
};
static const struct config_enum config_policies[] = {
	{ "park", POLICY_PARK }, { "retry", POLICY_RETRY }, { NULL, 0 },
};

/* offsetof and sizeof a field of struct config: two columns of a row. */
#define F(field)	offsetof(struct config, field), \
			sizeof(((struct config *)NULL)->field)

/*
 * Every key: section, name, type, field, min, max (in the type's unit: ms
 * for durations), names of an enum, setter of a custom key.  The defaults
 * are config_defaults()'s.  Only [log] level is re-read on SIGHUP, and
 * pubrelayd.c's daemon_reload() says so where it takes it.
 */
static const struct config_key config_keys[] = {
	{ "broker", "uri", CONFIG_CUSTOM, F(uris), 0, 0,
	    NULL, config_set_uri },
	{ "broker", "uri_order", CONFIG_ENUM, F(uri_shuffle), 0, 0,
	    config_uri_orders, NULL },
	{ "broker", "password_file", CONFIG_CUSTOM, F(password_file), 0, 0,
	    NULL, config_set_password_file },
	{ "broker", "heartbeat", CONFIG_SECONDS, F(heartbeat),
	    0, CONFIG_HEARTBEAT_MAX_MS, NULL, NULL },
	{ "broker", "connect_timeout", CONFIG_DURATION, F(connect_timeout_ms),
	    CONFIG_CONNECT_TIMEOUT_MIN_MS, CONFIG_CONNECT_TIMEOUT_MAX_MS,
	    NULL, NULL },
	{ "broker", "reconnect_min", CONFIG_DURATION, F(reconnect_min_ms),
	    CONFIG_RECONNECT_MIN_MS, CONFIG_RECONNECT_MAX_MS, NULL, NULL },
	{ "broker", "reconnect_max", CONFIG_DURATION, F(reconnect_max_ms),
	    CONFIG_RECONNECT_MIN_MS, CONFIG_RECONNECT_MAX_MS, NULL, NULL },
	{ "broker", "ca_file", CONFIG_CUSTOM, F(ca_file), 0, 0,
	    NULL, config_set_cert },
	{ "broker", "cert_file", CONFIG_CUSTOM, F(cert_file), 0, 0,
	    NULL, config_set_cert },
	{ "broker", "key_file", CONFIG_CUSTOM, F(key_file), 0, 0,
	    NULL, config_set_key_file },
	{ "broker", "verify_peer", CONFIG_BOOL, F(verify_peer), 0, 1,
	    NULL, NULL },
	{ "broker", "verify_hostname", CONFIG_BOOL, F(verify_hostname), 0, 1,
	    NULL, NULL },

	{ "socket", "path", CONFIG_CUSTOM, F(socket_path), 0, 0,
	    NULL, config_set_socket_path },
	{ "socket", "mode", CONFIG_CUSTOM, F(socket_mode), 0, 0,
	    NULL, config_set_socket_mode },
	{ "socket", "max_clients", CONFIG_NUMBER, F(max_clients),
	    1, CONFIG_MAX_CLIENTS_MAX, NULL, NULL },
	{ "socket", "max_clients_per_user", CONFIG_NUMBER,
	    F(max_clients_per_user), 0, CONFIG_MAX_CLIENTS_MAX, NULL, NULL },
	{ "socket", "max_message_size", CONFIG_SIZE, F(max_message_size),
	    1, CONFIG_MAX_MESSAGE_MAX, NULL, NULL },
	{ "socket", "group", CONFIG_CUSTOM, F(socket_gid), 0, 0,
	    NULL, config_set_socket_group },
	{ "socket", "allow_users", CONFIG_CUSTOM, F(allow_uids), 0, 0,
	    NULL, config_set_ids },
	{ "socket", "allow_groups", CONFIG_CUSTOM, F(allow_gids), 0, 0,
	    NULL, config_set_ids },
	{ "socket", "max_headers", CONFIG_NUMBER, F(max_headers),
	    1, PROTO_MAX_HEADERS, NULL, NULL },
	{ "socket", "max_line", CONFIG_SIZE, F(max_line),
	    CONFIG_MAX_LINE_MIN, PROTO_MAX_LINE, NULL, NULL },
	{ "socket", "max_buffer", CONFIG_SIZE, F(max_buffer),
	    CONFIG_MAX_BUFFER_MIN, CONFIG_MAX_BUFFER_MAX, NULL, NULL },
	{ "socket", "idle_timeout", CONFIG_DURATION, F(idle_timeout_ms),
	    0, CONFIG_IDLE_TIMEOUT_MAX_MS, NULL, NULL },

	{ "outbox", "path", CONFIG_CUSTOM, F(outbox_path), 0, 0,
	    NULL, config_set_outbox_path },
	{ "outbox", "max_bytes", CONFIG_SIZE, F(max_bytes), 0, UINT64_MAX,
	    NULL, NULL },
	{ "outbox", "max_bytes_per_user", CONFIG_SIZE, F(max_bytes_per_user),
	    0, UINT64_MAX, NULL, NULL },
	{ "outbox", "min_free", CONFIG_SIZE, F(min_free), 0, UINT64_MAX,
	    NULL, NULL },
	{ "outbox", "dead_max_bytes", CONFIG_SIZE, F(dead_max_bytes),
	    0, UINT64_MAX, NULL, NULL },
	{ "outbox", "sync", CONFIG_ENUM, F(sync_full), 0, 0,
	    config_syncs, NULL },
	{ "outbox", "idempotency_window", CONFIG_DURATION, F(idem_window_ms),
	    0, CONFIG_IDEM_WINDOW_MAX_MS, NULL, NULL },
	{ "outbox", "idempotency_max_keys", CONFIG_NUMBER, F(idem_max_keys),
	    1, CONFIG_IDEM_MAX_KEYS_MAX, NULL, NULL },
	{ "outbox", "max_age", CONFIG_DURATION, F(max_age_ms),
	    0, PROTO_MAX_AGE_MAX_MS, NULL, NULL },

	{ "publish", "window", CONFIG_NUMBER, F(window), 1, CONFIG_WINDOW_MAX,
	    NULL, NULL },
	{ "publish", "persistent", CONFIG_BOOL, F(persistent), 0, 1,
	    NULL, NULL },
	{ "publish", "mandatory", CONFIG_BOOL, F(mandatory), 0, 1,
	    NULL, NULL },
	{ "publish", "confirm_timeout", CONFIG_DURATION, F(confirm_timeout_ms),
	    CONFIG_CONFIRM_TIMEOUT_MIN_MS, CONFIG_CONFIRM_TIMEOUT_MAX_MS,
	    NULL, NULL },
	{ "publish", "on_unroutable", CONFIG_ENUM, F(on_unroutable), 0, 0,
	    config_policies, NULL },
	{ "publish", "on_rejected", CONFIG_ENUM, F(on_rejected), 0, 0,
	    config_policies, NULL },
	{ "publish", "max_attempts", CONFIG_NUMBER, F(max_attempts),
	    1, CONFIG_MAX_ATTEMPTS_MAX, NULL, NULL },
	{ "publish", "provenance", CONFIG_BOOL, F(provenance), 0, 1,
	    NULL, NULL },

	{ "metrics", "listen", CONFIG_CUSTOM, F(metrics_listen), 0, 0,
	    NULL, config_set_metrics_listen },

	{ "log", "level", CONFIG_CUSTOM, F(log_level), 0, 0,
	    NULL, config_set_log_level },
};
#undef F

#define CONFIG_NKEYS	(sizeof(config_keys) / sizeof(config_keys[0]))
_Static_assert(CONFIG_NKEYS <= CONFIG_KEYS_MAX,
    "struct config_parse has a line for every key");

const struct config_key *
config_key(size_t i)
{
	return i < CONFIG_NKEYS ? &config_keys[i] : NULL;
}

static const struct config_key *
config_find_key(const char *section, const char *name)
{
	size_t	i;

	for (i = 0; i < CONFIG_NKEYS; i++) {
		if (strcmp(config_keys[i].section, section) == 0 &&
		    strcmp(config_keys[i].name, name) == 0)
			return &config_keys[i];
	}
	return NULL;
}

/* The row of a key this file names itself: a typo is a bug, caught here. */
static size_t
config_key_index(const char *section, const char *name)
{
	const struct config_key	*k = config_find_key(section, name);

	if (k == NULL)
		abort();
	return (size_t)(k - config_keys);
}

/* "a or b", "a, b or c": the names of an enum, as an error lists them. */
static void
config_enum_names(const struct config_enum *e, char *out, size_t len)
{
	size_t	i, n, used = 0;

	for (n = 0; e[n].name != NULL; n++)
		;
	out[0] = '\0';
	for (i = 0; i < n && used < len; i++)
		used += (size_t)snprintf(out + used, len - used, "%s%s",
		    i == 0 ? "" : i + 1 == n ? " or " : ", ", e[i].name);
}

static int
config_set_enum(struct config_parse *p, const struct config_key *k,
    const char *v, int *out)
{
	const struct config_enum	*e;
	char				 names[256];

	for (e = k->names; e->name != NULL; e++) {
		if (strcasecmp(v, e->name) == 0) {
			*out = e->value;
			return 0;
		}
	}
	config_enum_names(k->names, names, sizeof(names));
	config_keyerr(p, "invalid value '%s' (expected %s)", v, names);
	return -1;
}

/*
 * Any key's value, read by the type of its row into its field of struct
 * config.  0 when taken; -1 when reported, the field left as it was.
 */
static int
config_set_value(struct config_parse *p, const struct config_key *k,
    const char *v)
{
	void		*field = (char *)p->cf + k->offset;
	uint64_t	 n = 0;
	int		 rc = -1;

	switch (k->type) {
	case CONFIG_BOOL:
		return config_bool(p, v, field);
	case CONFIG_ENUM:
		return config_set_enum(p, k, v, field);
	case CONFIG_CUSTOM:
		return k->set(p, k, v);
	case CONFIG_NUMBER:
		rc = config_number(p, v, k->min, k->max, &n);
		break;
	case CONFIG_SIZE:
		rc = config_size(p, v, k->min, k->max, &n);
		break;
	case CONFIG_DURATION:
		rc = config_duration(p, v, k->min, k->max, &n);
		break;
	case CONFIG_SECONDS:
		if ((rc = config_duration(p, v, k->min, k->max, &n)) == -1)
			break;
		/* AMQP negotiates the heartbeat in whole seconds. */
		if (n % 1000 != 0) {
			config_keyerr(p, "%s is not a whole number of seconds",
			    v);
			return -1;
		}
		n /= 1000;
		break;
	}
	if (rc == -1)
		return -1;
	/* max fits the field: tests/test_config.c checks every row. */
	if (k->size == sizeof(uint64_t))
		*(uint64_t *)field = n;
	else
		*(unsigned *)field = (unsigned)n;
	return 0;
}

static int
config_known_section(const char *name, size_t len)
{
	size_t	i;

	for (i = 0; i < sizeof(config_sections) / sizeof(config_sections[0]);
	    i++) {
		if (strlen(config_sections[i]) == len &&
		    strncmp(config_sections[i], name, len) == 0)
			return 1;
	}
	return 0;
}

static const char *
config_skip_space(const char *s)
{
	while (isspace((unsigned char)*s))
		s++;
	return s;
}

/* Section and key names: letters, digits, '_', '-' and '.'. */
static int
config_valid_name(const char *s, size_t len)
{
	size_t	i;

	for (i = 0; i < len; i++) {
		if (!isalnum((unsigned char)s[i]) && s[i] != '_' &&
		    s[i] != '-' && s[i] != '.')
			return 0;
	}
	return len > 0;
}

/*
 * Where inih will split a key line: at the first '=' or ':', or at an inline
 * comment (';' after a blank), which inih takes for a line with no '='.
 */
static const char *
config_find_separator(const char *s)
{
	int	blank = 0;

	for (; *s != '\0'; s++) {
		if (*s == '=' || *s == ':' || (blank && *s == ';'))
			break;
		blank = isspace((unsigned char)*s);
	}
	return s;
}

/* A bad header still opens a section: its keys are skipped, not misfiled. */
static int
config_check_section(struct config_parse *p, const char *s)
{
	const char	*name = s + 1, *end, *rest;
	size_t		 len;

	p->in_section = 1;
	p->section_ok = 0;
	if ((end = strchr(name, ']')) == NULL) {
		config_syntax(p, "missing ']' in section header");
		return -1;
	}
	len = (size_t)(end - name);
	if (len == 0) {
		config_syntax(p, "empty section name");
		return -1;
	}
	if (!config_valid_name(name, len)) {
		config_syntax(p, "invalid section name '%.*s'", (int)len, name);
		return -1;
	}
	rest = config_skip_space(end + 1);
	if (*rest != '\0' && *rest != '#' && *rest != ';') {
		config_syntax(p, "unexpected text after ']'");
		return -1;
	}
	if (!config_known_section(name, len)) {
		/* Its keys go unreported: one line names the mistake. */
		config_err(p, p->lineno, NULL, NULL, "[%.*s]: unknown section "
		    "(expected broker, socket, outbox, publish, metrics or log)",
		    (int)len, name);
		return 0;
	}
	memcpy(p->section, name, len);
	p->section[len] = '\0';
	p->section_ok = 1;
	return 0;
}

static int
config_check_key(struct config_parse *p, const char *s)
{
	const char	*sep, *end;
	size_t		 len;

	sep = config_find_separator(s);
	if (*sep == ':') {
		config_syntax(p, "expected 'key = value', not 'key: value'");
		return -1;
	}
	if (*sep != '=') {
		config_syntax(p, "expected 'key = value', a [section], or a "
		    "comment starting with # or ;");
		return -1;
	}
	for (end = sep; end > s && isspace((unsigned char)end[-1]); end--)
		;
	len = (size_t)(end - s);
	if (len == 0) {
		config_syntax(p, "missing key name before '='");
		return -1;
	}
	if (!config_valid_name(s, len)) {
		config_syntax(p, "invalid key name '%.*s'", (int)len, s);
		return -1;
	}
	if (!p->in_section) {
		config_syntax(p, "key '%.*s' outside any [section]", (int)len, s);
		return -1;
	}
	return 0;
}

/* 0 when inih may have the line; -1 when it was bad (and reported). */
static int
config_check_line(struct config_parse *p, const char *line)
{
	const char	*s = config_skip_space(line);

	if (*s == '\0' || *s == '#' || *s == ';')
		return 0;
	if (*s == '[')
		return config_check_section(p, s);
	return config_check_key(p, s);
}

/*
 * inih's reader: one line per call.  getc() rather than fgets() tells an
 * over-long line from one with a NUL byte in it; either is reported, and
 * every bad line reaches inih as an empty one, so inih neither stops at it nor
 * reads it in its own looser way.
 */
static char *
config_read_cb(char *line, int size, void *arg)
{
	struct config_parse	*p = arg;
	size_t			 n = 0, max = (size_t)size - 1;
	int			 c, nul = 0;

	/* /dev/zero, or a file that is not a config: stop, not read on. */
	if (p->nread > CONFIG_FILE_MAX)
		return NULL;
	while ((c = getc(p->fp)) != EOF && c != '\n') {
		if (c == '\0')
			nul = 1;
		if (n < max)
			line[n] = (char)c;
		n++;
		if (++p->nread > CONFIG_FILE_MAX)
			return NULL;
	}
	if (c == '\n')
		p->nread++;
	if (c == EOF) {
		if (ferror(p->fp)) {
			p->read_errno = errno != 0 ? errno : EIO;
			return NULL;
		}
		if (n == 0)
			return NULL;
	}
	p->lineno++;
	line[n < max ? n : max] = '\0';
	if (n > max) {
		config_syntax(p, "line longer than %zu bytes", max);
		line[0] = '\0';
	} else if (nul) {
		config_syntax(p, "NUL byte in line");
		line[0] = '\0';
	} else {
		if (p->lineno == 1 && strncmp(line, "\xef\xbb\xbf", 3) == 0)
			memmove(line, line + 3, n - 2);
		if (config_check_line(p, line) == -1)
			line[0] = '\0';
	}
	return line;
}

static int
config_handler_cb(void *arg, const char *section, const char *name,
    const char *value)
{
	struct config_parse	*p = arg;
	const struct config_key	*k;

	/* inih truncates long section names; the reader kept the real one. */
	(void)section;
	if (!p->section_ok)
		return 1;
	if ((k = config_find_key(p->section, name)) == NULL) {
		config_err(p, p->lineno, p->section, name, "unknown key");
		return 1;
	}
	p->key = k->name;
	p->given_line[k - config_keys] = p->lineno;
	if (config_set_value(p, k, value) == 0)
		p->taken_line[k - config_keys] = p->lineno;
	p->key = NULL;
	/* Errors are counted here; a 0 would only make inih note the line. */
	return 1;
}

/*
 * The first line of password_file, without its line ending.  The file is
 * opened without blocking and read at most CONFIG_PASSWORD_MAX + 2 bytes
 * in (the longest password and a CRLF): a device that never ends its first
 * line (/dev/zero, /dev/full) or a pipe with nothing, or half a line, in it
 * must be an error, not a daemon that hangs or eats memory at start-up or
 * at a SIGHUP reload, nor a password cut short.
 */
static void
config_read_password(struct config_parse *p)
{
	struct config	*cf = p->cf;
	struct stat	 st;
	char		*buf, *eol;
	size_t		 len = 0, linelen;
	ssize_t		 n;
	int		 fd;
	int		 line = p->taken_line[config_key_index("broker",
			    "password_file")];

	if ((fd = open(cf->password_file,
	    O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK)) == -1) {
		config_err(p, line, "broker", "password_file",
		    "cannot open '%s': %s", cf->password_file, strerror(errno));
		return;
	}
	/*
	 * Refused, not warned about: a daemon's warning scrolls by unread
	 * while the secret stays exposed (see pubrelay.ini(5), SECRETS).
	 */
	if (fstat(fd, &st) == 0 && S_ISREG(st.st_mode) &&
	    (st.st_mode & S_IROTH)) {
		config_err(p, line, "broker", "password_file",
		    "'%s' is readable by others (mode %04o): chmod o-r '%s'",
		    cf->password_file, (unsigned)(st.st_mode & 07777),
		    cf->password_file);
		close(fd);
		return;
	}
	if ((buf = malloc(CONFIG_PASSWORD_MAX + 2)) == NULL) {
		config_err(p, line, "broker", "password_file",
		    "cannot read '%s': %s", cf->password_file,
		    strerror(ENOMEM));
		close(fd);
		return;
	}
	eol = NULL;
	while (eol == NULL && len < CONFIG_PASSWORD_MAX + 2) {
		n = read(fd, buf + len, CONFIG_PASSWORD_MAX + 2 - len);
		if (n == -1 && errno == EINTR)
			continue;
		if (n == -1 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
			if (len == 0)
				config_err(p, line, "broker",
				    "password_file", "'%s' has nothing to read "
				    "(a pipe or device, not a file)",
				    cf->password_file);
			else
				config_err(p, line, "broker",
				    "password_file", "the first line of '%s' "
				    "is not complete (a pipe whose writer has "
				    "not ended it)", cf->password_file);
			goto out;
		}
		if (n == -1) {
			config_err(p, line, "broker",
			    "password_file", "cannot read '%s': %s",
			    cf->password_file, strerror(errno));
			goto out;
		}
		if (n == 0)
			break;
		eol = memchr(buf + len, '\n', (size_t)n);
		len += (size_t)n;
	}
	linelen = eol != NULL ? (size_t)(eol - buf) : len;
	if (linelen > 0 && buf[linelen - 1] == '\r')
		linelen--;
	if (linelen > CONFIG_PASSWORD_MAX) {
		config_err(p, line, "broker", "password_file",
		    "the first line of '%s' is longer than %d bytes",
		    cf->password_file, CONFIG_PASSWORD_MAX);
		goto out;
	}
	if (linelen == 0) {
		config_err(p, line, "broker", "password_file",
		    "'%s' is empty: the password must be on its first line",
		    cf->password_file);
		goto out;
	}
	if (memchr(buf, '\0', linelen) != NULL) {
		config_err(p, line, "broker", "password_file",
		    "the first line of '%s' holds a NUL byte",
		    cf->password_file);
		goto out;
	}
	if (cf->password != NULL) {
		explicit_bzero(cf->password, strlen(cf->password));
		free(cf->password);
	}
	if ((cf->password = strndup(buf, linelen)) == NULL)
		config_err(p, line, "broker", "password_file",
		    "cannot read '%s': %s", cf->password_file,
		    strerror(ENOMEM));
 out:
	explicit_bzero(buf, len);
	free(buf);
	close(fd);
}

/* A password written in a uri is as exposed as the config file itself. */
static void
config_check_uri_secret(struct config_parse *p)
{
	if (p->uri_password_line == 0 || !(p->file_mode & S_IROTH))
		return;
	config_err(p, p->uri_password_line, "broker", "uri", "this uri holds "
	    "a password and '%s' is readable by others (mode %04o): chmod o-r "
	    "it, or move the password to password_file", p->path,
	    (unsigned)(p->file_mode & 07777));
}

static void
config_check_tls(struct config_parse *p)
{
	struct config	*cf = p->cf;
	int		 cert_line, key_line;

	/* Given, even with a bad value: that one is reported already. */
	cert_line = p->given_line[config_key_index("broker", "cert_file")];
	key_line = p->given_line[config_key_index("broker", "key_file")];
	if (cert_line > 0 && key_line == 0)
		config_err(p, cert_line, "broker", "cert_file", "a client "
		    "certificate needs its key: key_file is missing");
	else if (key_line > 0 && cert_line == 0)
		config_err(p, key_line, "broker", "key_file", "a client "
		    "key needs its certificate: cert_file is missing");
	if (p->tls_line > 0 && cf->verify_peer && cf->ca_file == NULL &&
	    access(CONFIG_DEFAULT_CA_FILE, R_OK) == -1)
		config_err(p, p->tls_line, "broker", "uri", "amqps:// needs CA "
		    "certificates to verify the broker: set ca_file (the "
		    "system bundle %s cannot be read: %s)",
		    CONFIG_DEFAULT_CA_FILE, strerror(errno));
}

static void
config_check_reconnect(struct config_parse *p)
{
	struct config	*cf = p->cf;
	char		 a[32], b[32];
	int		 line, min_line, max_line;
	const char	*key;

	if (cf->reconnect_min_ms <= cf->reconnect_max_ms)
		return;
	min_line = p->taken_line[config_key_index("broker", "reconnect_min")];
	max_line = p->taken_line[config_key_index("broker", "reconnect_max")];
	/* Blame the later of the two lines: it made them disagree. */
	if (min_line > max_line) {
		line = min_line;
		key = "reconnect_min";
	} else {
		line = max_line;
		key = "reconnect_max";
	}
	config_err(p, line, "broker", key, "reconnect_min (%s) is greater than "
	    "reconnect_max (%s)", config_fmt_ms(cf->reconnect_min_ms, a,
	    sizeof(a)), config_fmt_ms(cf->reconnect_max_ms, b, sizeof(b)));
}

/*
 * A per-user limit above the global one could never apply: most likely a
 * typo or a global limit lowered without it, so say so rather than run
 * without the protection the operator meant to have.
 */
static void
config_check_per_user(struct config_parse *p)
{
	struct config	*cf = p->cf;
	char		 a[32], b[32];

	if (cf->max_clients_per_user > cf->max_clients)
		config_err(p, p->taken_line[config_key_index("socket",
		    "max_clients_per_user")], "socket",
		    "max_clients_per_user", "%u is more than max_clients (%u): "
		    "it could never apply", cf->max_clients_per_user,
		    cf->max_clients);
	if (cf->max_bytes > 0 && cf->max_bytes_per_user > cf->max_bytes)
		config_err(p, p->taken_line[config_key_index("outbox",
		    "max_bytes_per_user")], "outbox",
		    "max_bytes_per_user", "%s is more than max_bytes (%s): it "
		    "could never apply", config_fmt_size(cf->max_bytes_per_user,
		    a, sizeof(a)), config_fmt_size(cf->max_bytes, b, sizeof(b)));
}

/*
 * inih's knobs are process globals in Debian's build: set them on every load
 * (config_load runs in the main thread only).
 */
static void
config_setup_inih(void)
{
	static char	start_comments[] = ";#";
	static char	inline_comments[] = ";";

	ini_use_stack = false;
	ini_max_line = CONFIG_LINE_MAX;
	/* On the heap, inih reads into ini_initial_alloc bytes, not max_line. */
	ini_initial_alloc = CONFIG_LINE_MAX;
	ini_allow_realloc = false;
	ini_allow_multiline = false;
	ini_allow_bom = false;		/* the reader strips it */
	ini_allow_no_value = false;
	ini_allow_inline_comments = true;
	ini_start_comment_prefixes = start_comments;
	ini_inline_comment_prefixes = inline_comments;
	ini_stop_on_first_error = false;
}

/*
 * DIR/NAME for the first directory in the environment variable env (systemd's
 * $STATE_DIRECTORY or $RUNTIME_DIRECTORY, from StateDirectory= and
 * RuntimeDirectory=; colon-separated when several) if it is absolute, else
 * builtin.  Under the
 * shipped unit the outbox and the socket then land where the unit made room
 * for them (ProtectSystem=strict leaves the rest read-only), whatever
 * prefix the build was configured with.
 */
static char *
config_default_path(const char *env, const char *name, const char *builtin)
{
	const char	*dir = getenv(env);
	size_t		 len;
	char		*path;

	if (dir == NULL || dir[0] != '/')
		return xstrdup(builtin);
	len = strcspn(dir, ":");
	while (len > 1 && dir[len - 1] == '/')
		len--;
	path = xmalloc(len + 1 + strlen(name) + 1);
	memcpy(path, dir, len);
	path[len] = '/';
	strcpy(path + len + 1, name);
	return path;
}

void
config_defaults(struct config *cf)
{
	memset(cf, 0, sizeof(*cf));
	cf->heartbeat = CONFIG_DEFAULT_HEARTBEAT;
	cf->connect_timeout_ms = CONFIG_DEFAULT_CONNECT_TIMEOUT;
	cf->reconnect_min_ms = CONFIG_DEFAULT_RECONNECT_MIN;
	cf->reconnect_max_ms = CONFIG_DEFAULT_RECONNECT_MAX;
	cf->verify_peer = 1;
	cf->verify_hostname = 1;
	cf->socket_path = config_default_path("RUNTIME_DIRECTORY",
	    "pubrelay.sock", PUBRELAY_SOCKET_PATH);
	cf->socket_mode = CONFIG_DEFAULT_SOCKET_MODE;
	cf->max_clients = CONFIG_DEFAULT_MAX_CLIENTS;
	cf->max_message_size = CONFIG_DEFAULT_MAX_MESSAGE;
	cf->max_headers = PROTO_MAX_HEADERS;
	cf->max_line = PROTO_MAX_LINE;
	cf->max_buffer = CONFIG_DEFAULT_MAX_BUFFER;
	cf->idle_timeout_ms = CONFIG_DEFAULT_IDLE_TIMEOUT;
	cf->outbox_path = config_default_path("STATE_DIRECTORY", "outbox.db",
	    PUBRELAY_OUTBOX_PATH);
	cf->max_bytes = CONFIG_DEFAULT_MAX_BYTES;
	cf->min_free = CONFIG_DEFAULT_MIN_FREE;
	cf->dead_max_bytes = CONFIG_DEFAULT_DEAD_MAX_BYTES;
	cf->idem_window_ms = CONFIG_DEFAULT_IDEM_WINDOW;
	cf->idem_max_keys = CONFIG_DEFAULT_IDEM_MAX_KEYS;
	cf->sync_full = 1;
	cf->window = CONFIG_DEFAULT_WINDOW;
	cf->persistent = 1;
	cf->mandatory = 0;
	cf->confirm_timeout_ms = CONFIG_DEFAULT_CONFIRM_TIMEOUT;
	cf->on_unroutable = POLICY_PARK;
	cf->on_rejected = POLICY_PARK;
	cf->max_attempts = CONFIG_DEFAULT_MAX_ATTEMPTS;
	cf->log_level = LOG_INFO;
}

int
config_load(struct config *cf, const char *path, FILE *errf)
{
	struct config_parse	p;
	int			rc;

	memset(&p, 0, sizeof(p));
	p.cf = cf;
	p.path = path;
	p.errf = errf;
	if ((p.fp = fopen(path, "re")) == NULL) {
		if (errf != NULL)
			fprintf(errf, "%s: cannot open: %s\n", path,
			    strerror(errno));
		return -1;
	}

	{
		struct stat	st;

		if (fstat(fileno(p.fp), &st) == 0)
			p.file_mode = st.st_mode;
	}
	config_setup_inih();
	rc = ini_parse_stream(config_read_cb, &p, config_handler_cb, &p);
	fclose(p.fp);
	if (p.read_errno != 0) {
		if (errf != NULL)
			fprintf(errf, "%s: cannot read: %s\n", path,
			    strerror(p.read_errno));
		return -1;
	}
	if (p.nread > CONFIG_FILE_MAX) {
		if (errf != NULL)
			fprintf(errf, "%s: larger than %d bytes: not a pubrelay "
			    "configuration\n", path, CONFIG_FILE_MAX);
		return -1;
	}
	if (rc == -2)
		config_err(&p, 0, NULL, NULL, "out of memory");
	else if (rc > 0) {
		/* The reader let through a line inih refused: still an error. */
		config_err(&p, rc, NULL, "syntax error", "line not understood");
	}

	if (cf->password_file != NULL &&
	    p.taken_line[config_key_index("broker", "password_file")] > 0)
		config_read_password(&p);
	config_check_reconnect(&p);
	config_check_per_user(&p);
	config_check_uri_secret(&p);
	config_check_tls(&p);
	if (cf->nuris == 0)
		cf->uris[cf->nuris++] = xstrdup(CONFIG_DEFAULT_URI);
	return p.nerrors;
}

void
config_free(struct config *cf)
{
	int	i;

	for (i = 0; i < cf->nuris; i++)
		free(cf->uris[i]);
	free(cf->password_file);
	free(cf->ca_file);
	free(cf->cert_file);
	free(cf->key_file);
	if (cf->password != NULL) {
		explicit_bzero(cf->password, strlen(cf->password));
		free(cf->password);
	}
	free(cf->socket_path);
	free(cf->allow_uids);
	free(cf->allow_gids);
	free(cf->outbox_path);
	free(cf->metrics_listen);
	memset(cf, 0, sizeof(*cf));
}
