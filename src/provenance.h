/*
 * provenance.h: where a client connection comes from on this host, as the
 * header lines [publish] provenance adds to each of its messages
 * (pubrelay.ini(5)): x-pubrelay-host, x-pubrelay-uid, x-pubrelay-pid and,
 * when the sender runs in one, x-pubrelay-unit (its systemd unit, from
 * /proc/PID/cgroup).  Computed once per connection.
 */
#ifndef PUBRELAY_PROVENANCE_H
#define PUBRELAY_PROVENANCE_H

#include <stddef.h>
#include <sys/types.h>

/* The prefix of the header names; a client may not use it when on. */
#define PROVENANCE_PREFIX	"x-pubrelay-"
/* Headers it adds at most: the room a client's max_headers leaves. */
#define PROVENANCE_HEADERS	4

/*
 * The systemd unit in the text of a /proc/PID/cgroup file: the last path
 * component ending in ".service" or ".scope" of the unified hierarchy's
 * line ("0::"), else of the "name=systemd" one.  1 with it in unit, 0 when
 * there is none (or it does not fit).  Pure.
 */
int	provenance_unit(const char *cgroup, size_t len, char *unit,
	    size_t unitlen);

/*
 * The header lines for a peer (host: this host's name), each ending in
 * a newline, into out; their length, 0 when they do not fit.
 */
size_t	provenance_stamp(char *out, size_t outlen, const char *host,
	    uid_t uid, pid_t pid);

#endif
