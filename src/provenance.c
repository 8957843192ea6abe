/*
 * provenance.c: the header lines that say which local process sent a
 * message (provenance.h).
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "provenance.h"

/* The path of the line that starts with prefix, or NULL. */
static const char *
provenance_line(const char *p, const char *end, const char *prefix,
    size_t *len)
{
	size_t		 plen = strlen(prefix);
	const char	*nl;

	while (p < end) {
		nl = memchr(p, '\n', (size_t)(end - p));
		if (nl == NULL)
			nl = end;
		if ((size_t)(nl - p) >= plen && memcmp(p, prefix, plen) == 0) {
			*len = (size_t)(nl - p) - plen;
			return p + plen;
		}
		p = nl + 1;
	}
	return NULL;
}

static int
provenance_suffix(const char *s, size_t n, const char *suffix)
{
	size_t	sl = strlen(suffix);

	return n > sl && memcmp(s + n - sl, suffix, sl) == 0;
}

int
provenance_unit(const char *cgroup, size_t len, char *unit, size_t unitlen)
{
	const char	*path, *end = cgroup + len, *c, *best = NULL;
	size_t		 plen, blen = 0, n;

	if ((path = provenance_line(cgroup, end, "0::", &plen)) == NULL) {
		/* cgroup v1: the "N:name=systemd:" line, whatever N. */
		const char *p = cgroup;

		while (p < end && path == NULL) {
			const char *nl = memchr(p, '\n', (size_t)(end - p));
			const char *m;

			if (nl == NULL)
				nl = end;
			m = memchr(p, ':', (size_t)(nl - p));
			if (m != NULL && (size_t)(nl - m) > 14 &&
			    memcmp(m, ":name=systemd:", 14) == 0) {
				path = m + 14;
				plen = (size_t)(nl - path);
			}
			p = nl + 1;
		}
		if (path == NULL)
			return 0;
	}
	for (c = path; c < path + plen; c += n + 1) {
		const char *slash = memchr(c, '/', (size_t)(path + plen - c));

		n = (size_t)((slash != NULL ? slash : path + plen) - c);
		if (provenance_suffix(c, n, ".service") ||
		    provenance_suffix(c, n, ".scope")) {
			best = c;
			blen = n;
		}
	}
	if (best == NULL || blen >= unitlen)
		return 0;
	memcpy(unit, best, blen);
	unit[blen] = '\0';
	return 1;
}

size_t
provenance_stamp(char *out, size_t outlen, const char *host, uid_t uid,
    pid_t pid)
{
	char	 path[64], text[4096], unit[256];
	ssize_t	 n = -1;
	int	 fd, len;

	snprintf(path, sizeof(path), "/proc/%ld/cgroup", (long)pid);
	/* Unreadable (ProtectProc=invisible, gone): no unit header. */
	if ((fd = open(path, O_RDONLY | O_CLOEXEC)) != -1) {
		do
			n = read(fd, text, sizeof(text) - 1);
		while (n == -1 && errno == EINTR);
		close(fd);
	}
	if (n <= 0 || !provenance_unit(text, (size_t)n, unit, sizeof(unit)))
		unit[0] = '\0';
	len = snprintf(out, outlen, "header: " PROVENANCE_PREFIX "host=%s\n"
	    "header: " PROVENANCE_PREFIX "uid=%lu\n"
	    "header: " PROVENANCE_PREFIX "pid=%ld\n%s%s%s", host,
	    (unsigned long)uid, (long)pid,
	    unit[0] != '\0' ? "header: " PROVENANCE_PREFIX "unit=" : "", unit,
	    unit[0] != '\0' ? "\n" : "");
	return len > 0 && (size_t)len < outlen ? (size_t)len : 0;
}
