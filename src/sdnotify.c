/*
 * sdnotify.c: systemd's notification and socket-activation protocols,
 * spoken directly.
 *
 * Why not libsystemd: both are small, documented, stable interfaces (see
 * sd_notify(3) and sd_listen_fds(3), and systemd's "interface portability
 * and stability" promise): a notification is one datagram of KEY=VALUE
 * lines sent to the AF_UNIX socket named by $NOTIFY_SOCKET (a leading '@'
 * means the abstract namespace), and passed sockets are the descriptors
 * from 3 on, $LISTEN_FDS of them, when $LISTEN_PID is our pid.  Here they
 * take about sixty lines.  Linking libsystemd instead would add a build and
 * run-time dependency, a configure switch and a second build to test, all
 * for those lines; this way one binary runs with or without systemd, and
 * the parsing is reachable from the unit tests (tests/test_sdnotify.c).
 */
#include <sys/types.h>
#include <sys/socket.h>
#include <sys/un.h>

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "sdnotify.h"
#include "util.h"

#define SDNOTIFY_MAX	2048	/* one notification; longer is cut */

static int			 sd_fd = -1;
static struct sockaddr_un	 sd_addr;
static socklen_t		 sd_addrlen;
static uint64_t			 sd_watchdog;

int
sdnotify_addr(const char *s, struct sockaddr_un *sun, socklen_t *len)
{
	size_t	n;

	if (s == NULL || (s[0] != '/' && s[0] != '@'))
		return -1;
	n = strlen(s);
	if (n < 2 || n >= sizeof(sun->sun_path))
		return -1;
	memset(sun, 0, sizeof(*sun));
	sun->sun_family = AF_UNIX;
	memcpy(sun->sun_path, s, n);
	if (s[0] == '@')
		sun->sun_path[0] = '\0';	/* abstract: no trailing NUL */
	*len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + n +
	    (s[0] == '/'));
	return 0;
}

/* pid in an environment variable: 1 it is self, 0 another process, -1 bad. */
static int
sdnotify_pid_is(const char *pid, pid_t self)
{
	uint64_t	v;

	if (util_parse_u64(pid, 1, INT_MAX, &v) == -1)
		return -1;
	return (pid_t)v == self;
}

int
sdnotify_parse_watchdog(const char *usec, const char *pid, pid_t self,
    uint64_t *out)
{
	uint64_t	v;
	int		mine = 1;

	*out = 0;
	if (pid != NULL && (mine = sdnotify_pid_is(pid, self)) == -1)
		return -1;
	if (usec == NULL)
		return 0;
	if (util_parse_u64(usec, 1, UINT64_MAX, &v) == -1)
		return -1;
	if (mine)
		*out = v;
	return 0;
}

int
sdnotify_parse_listen(const char *pid, const char *fds, pid_t self, int *n)
{
	uint64_t	v;
	int		mine;

	*n = 0;
	if (pid == NULL || fds == NULL)
		return 0;
	if ((mine = sdnotify_pid_is(pid, self)) == -1 ||
	    util_parse_u64(fds, 0, INT_MAX - SD_LISTEN_FDS_START, &v) == -1)
		return -1;
	if (mine)
		*n = (int)v;
	return 0;
}

int
sdnotify_init(char *err, size_t errlen)
{
	const char	*ns = getenv("NOTIFY_SOCKET");

	if (errlen > 0)
		err[0] = '\0';
	if (sd_fd != -1)
		close(sd_fd);
	sd_fd = -1;
	if (sdnotify_parse_watchdog(getenv("WATCHDOG_USEC"),
	    getenv("WATCHDOG_PID"), getpid(), &sd_watchdog) == -1) {
		snprintf(err, errlen, "malformed WATCHDOG_USEC or WATCHDOG_PID: "
		    "no watchdog");
	}
	if (ns != NULL && sdnotify_addr(ns, &sd_addr, &sd_addrlen) == -1) {
		snprintf(err, errlen, "NOTIFY_SOCKET=%s: not an AF_UNIX socket "
		    "name: no notifications", ns);
	} else if (ns != NULL &&
	    (sd_fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0)) == -1) {
		snprintf(err, errlen, "notification socket: %s: no "
		    "notifications", strerror(errno));
	}
	if (sd_fd == -1)
		sd_watchdog = 0;	/* pings could go nowhere */
	unsetenv("NOTIFY_SOCKET");
	unsetenv("WATCHDOG_USEC");
	unsetenv("WATCHDOG_PID");
	return sd_fd != -1;
}

int
sdnotify_send(const char *fmt, ...)
{
	char	msg[SDNOTIFY_MAX];
	va_list	ap;
	int	n;

	if (sd_fd == -1)
		return 0;
	va_start(ap, fmt);
	n = vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	if (n < 0)
		return -1;
	if ((size_t)n >= sizeof(msg))
		n = sizeof(msg) - 1;
	/* A full queue drops the datagram: the main loop must not block. */
	if (sendto(sd_fd, msg, (size_t)n, MSG_NOSIGNAL | MSG_DONTWAIT,
	    (struct sockaddr *)&sd_addr, sd_addrlen) == -1)
		return -1;
	return 0;
}

uint64_t
sdnotify_watchdog_usec(void)
{
	return sd_watchdog;
}

/* fd is a listening AF_UNIX stream socket: 0, its address in path; or -1. */
static int
sdnotify_check_listener(int fd, char *path, size_t pathlen, char *err,
    size_t errlen)
{
	struct sockaddr_un	sun;
	socklen_t		len = sizeof(sun), olen;
	int			type = 0, acc = 0;
	size_t			n;

	memset(&sun, 0, sizeof(sun));
	olen = sizeof(type);
	if (getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &olen) == -1 ||
	    getsockname(fd, (struct sockaddr *)&sun, &len) == -1) {
		snprintf(err, errlen, "descriptor %d: %s", fd, strerror(errno));
		return -1;
	}
	olen = sizeof(acc);
	if (getsockopt(fd, SOL_SOCKET, SO_ACCEPTCONN, &acc, &olen) == -1)
		acc = 0;
	if (sun.sun_family != AF_UNIX || type != SOCK_STREAM || !acc) {
		snprintf(err, errlen, "descriptor %d is not a listening Unix "
		    "stream socket (ListenStream= with a path)", fd);
		return -1;
	}
	n = len > offsetof(struct sockaddr_un, sun_path) ?
	    len - offsetof(struct sockaddr_un, sun_path) : 0;
	if (n == 0)
		snprintf(path, pathlen, "(unnamed)");
	else if (sun.sun_path[0] == '\0')
		snprintf(path, pathlen, "@%.*s", (int)(n - 1), sun.sun_path + 1);
	else
		snprintf(path, pathlen, "%.*s", (int)strnlen(sun.sun_path, n),
		    sun.sun_path);
	return 0;
}

int
sdnotify_listen_fds(char *path, size_t pathlen, char *err, size_t errlen)
{
	int	n, rc, fd = SD_LISTEN_FDS_START, flags;

	rc = sdnotify_parse_listen(getenv("LISTEN_PID"), getenv("LISTEN_FDS"),
	    getpid(), &n);
	unsetenv("LISTEN_PID");
	unsetenv("LISTEN_FDS");
	unsetenv("LISTEN_FDNAMES");
	if (rc == -1) {
		snprintf(err, errlen, "malformed LISTEN_PID or LISTEN_FDS");
		return -2;
	}
	if (n == 0)
		return -1;
	if (n != 1) {
		snprintf(err, errlen, "%d sockets passed, expected one", n);
		return -2;
	}
	if (sdnotify_check_listener(fd, path, pathlen, err, errlen) == -1)
		return -2;
	if ((flags = fcntl(fd, F_GETFD)) == -1 ||
	    fcntl(fd, F_SETFD, flags | FD_CLOEXEC) == -1) {
		snprintf(err, errlen, "descriptor %d: %s", fd, strerror(errno));
		return -2;
	}
	return fd;
}
