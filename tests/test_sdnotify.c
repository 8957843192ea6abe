/*
 * Unit tests for the systemd interface: sdnotify.c (NOTIFY_SOCKET names,
 * the watchdog and LISTEN_* variables, datagrams actually sent, the checks
 * on a passed socket) and status.c (the STATUS= line).
 */
#include <sys/socket.h>
#include <sys/un.h>

#include <fcntl.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "sdnotify.h"
#include "metrics.h"
#include "status.h"
#include "tap.h"

static char	tmpdir[] = "/tmp/test_sdnotify.XXXXXX";

static void
test_addr(void)
{
	struct sockaddr_un	sun;
	socklen_t		len;
	char			longp[200];

	ok(sdnotify_addr("/run/systemd/notify", &sun, &len) == 0, "path name");
	is_int(sun.sun_family, AF_UNIX, "path: AF_UNIX");
	is_str(sun.sun_path, "/run/systemd/notify", "path: copied");
	is_int(len, offsetof(struct sockaddr_un, sun_path) + 20,
	    "path: length counts the NUL");
	ok(sdnotify_addr("@sd-notify", &sun, &len) == 0, "abstract name");
	ok(sun.sun_path[0] == '\0' && memcmp(sun.sun_path + 1, "sd-notify",
	    9) == 0, "abstract: leading NUL, then the name");
	is_int(len, offsetof(struct sockaddr_un, sun_path) + 10,
	    "abstract: length without a trailing NUL");
	ok(sdnotify_addr(NULL, &sun, &len) == -1, "NULL refused");
	ok(sdnotify_addr("", &sun, &len) == -1, "empty refused");
	ok(sdnotify_addr("@", &sun, &len) == -1, "empty abstract refused");
	ok(sdnotify_addr("relative/notify", &sun, &len) == -1,
	    "relative path refused");
	ok(sdnotify_addr("vsock:2:1234", &sun, &len) == -1,
	    "vsock refused (not AF_UNIX)");
	memset(longp, 'a', sizeof(longp) - 1);
	longp[0] = '/';
	longp[sizeof(longp) - 1] = '\0';
	ok(sdnotify_addr(longp, &sun, &len) == -1, "too long refused");
}

static void
test_parse(void)
{
	pid_t		self = 4242;
	uint64_t	u = 99;
	int		n = 99;

	ok(sdnotify_parse_watchdog(NULL, NULL, self, &u) == 0 && u == 0,
	    "watchdog: none");
	ok(sdnotify_parse_watchdog("30000000", NULL, self, &u) == 0 &&
	    u == 30000000, "watchdog: WATCHDOG_USEC without WATCHDOG_PID");
	ok(sdnotify_parse_watchdog("1000000", "4242", self, &u) == 0 &&
	    u == 1000000, "watchdog: WATCHDOG_PID is us");
	ok(sdnotify_parse_watchdog("1000000", "4243", self, &u) == 0 && u == 0,
	    "watchdog: WATCHDOG_PID is another process");
	ok(sdnotify_parse_watchdog("0", NULL, self, &u) == -1, "watchdog: 0");
	ok(sdnotify_parse_watchdog("1s", NULL, self, &u) == -1,
	    "watchdog: not a number");
	ok(sdnotify_parse_watchdog("-1", NULL, self, &u) == -1,
	    "watchdog: negative");
	ok(sdnotify_parse_watchdog("100", "x", self, &u) == -1,
	    "watchdog: bad WATCHDOG_PID");

	ok(sdnotify_parse_listen(NULL, NULL, self, &n) == 0 && n == 0,
	    "listen: none");
	ok(sdnotify_parse_listen("4242", "1", self, &n) == 0 && n == 1,
	    "listen: one for us");
	ok(sdnotify_parse_listen("4242", "3", self, &n) == 0 && n == 3,
	    "listen: three for us");
	ok(sdnotify_parse_listen("1", "1", self, &n) == 0 && n == 0,
	    "listen: for another process");
	ok(sdnotify_parse_listen("4242", NULL, self, &n) == 0 && n == 0,
	    "listen: LISTEN_FDS missing");
	ok(sdnotify_parse_listen(NULL, "1", self, &n) == 0 && n == 0,
	    "listen: LISTEN_PID missing");
	ok(sdnotify_parse_listen("4242", "0", self, &n) == 0 && n == 0,
	    "listen: zero");
	ok(sdnotify_parse_listen("4242", "x", self, &n) == -1,
	    "listen: bad LISTEN_FDS");
	ok(sdnotify_parse_listen("pid", "1", self, &n) == -1,
	    "listen: bad LISTEN_PID");
	ok(sdnotify_parse_listen("4242", "99999999999", self, &n) == -1,
	    "listen: LISTEN_FDS out of range");
}

/* A datagram socket bound at name ("/path" or "@abstract"). */
static int
bind_dgram(const char *name)
{
	struct sockaddr_un	sun;
	socklen_t		len;
	int			fd;

	if (sdnotify_addr(name, &sun, &len) == -1)
		return -1;
	if ((fd = socket(AF_UNIX, SOCK_DGRAM, 0)) == -1)
		return -1;
	if (bind(fd, (struct sockaddr *)&sun, len) == -1) {
		close(fd);
		return -1;
	}
	return fd;
}

static int
recv_str(int fd, char *buf, size_t len)
{
	ssize_t	n = recv(fd, buf, len - 1, MSG_DONTWAIT);

	if (n < 0)
		return -1;
	buf[n] = '\0';
	return 0;
}

static void
test_send(void)
{
	char	path[256], abs[64], buf[4096], err[256], pid[32];
	int	fd;

	unsetenv("NOTIFY_SOCKET");
	setenv("WATCHDOG_USEC", "1000000", 1);
	is_int(sdnotify_init(err, sizeof(err)), 0, "no NOTIFY_SOCKET: off");
	is_int(sdnotify_watchdog_usec(), 0, "no NOTIFY_SOCKET: no watchdog");
	is_int(sdnotify_send("READY=1"), 0, "no NOTIFY_SOCKET: send is a no-op");
	ok(getenv("WATCHDOG_USEC") == NULL, "WATCHDOG_USEC unset");

	snprintf(path, sizeof(path), "%s/notify", tmpdir);
	fd = bind_dgram(path);
	ok(fd != -1, "bound %s", path);
	setenv("NOTIFY_SOCKET", path, 1);
	setenv("WATCHDOG_USEC", "500000", 1);
	snprintf(pid, sizeof(pid), "%d", (int)getpid());
	setenv("WATCHDOG_PID", pid, 1);
	is_int(sdnotify_init(err, sizeof(err)), 1, "path socket: on");
	is_str(err, "", "path socket: no warning");
	ok(getenv("NOTIFY_SOCKET") == NULL && getenv("WATCHDOG_USEC") == NULL &&
	    getenv("WATCHDOG_PID") == NULL, "variables unset for children");
	is_int(sdnotify_watchdog_usec(), 500000, "watchdog interval");
	is_int(sdnotify_send("READY=1\nSTATUS=backlog %d", 12), 0, "sent");
	ok(recv_str(fd, buf, sizeof(buf)) == 0, "received a datagram");
	is_str(buf, "READY=1\nSTATUS=backlog 12", "datagram text");
	is_int(sdnotify_send("WATCHDOG=1"), 0, "sent again");
	ok(recv_str(fd, buf, sizeof(buf)) == 0 &&
	    strcmp(buf, "WATCHDOG=1") == 0, "one datagram per notification");
	close(fd);
	unlink(path);
	ok(sdnotify_send("STOPPING=1") == -1,
	    "a vanished socket is an error, not a hang");

	snprintf(abs, sizeof(abs), "@pubrelay-test-%d", (int)getpid());
	fd = bind_dgram(abs);
	ok(fd != -1, "bound %s", abs);
	setenv("NOTIFY_SOCKET", abs, 1);
	is_int(sdnotify_init(err, sizeof(err)), 1, "abstract socket: on");
	is_int(sdnotify_watchdog_usec(), 0, "no WATCHDOG_USEC: no watchdog");
	sdnotify_send("STATUS=%s", "x");
	ok(recv_str(fd, buf, sizeof(buf)) == 0 && strcmp(buf, "STATUS=x") == 0,
	    "abstract socket: datagram received");
	close(fd);

	setenv("NOTIFY_SOCKET", "vsock:2:1", 1);
	setenv("WATCHDOG_USEC", "soon", 1);
	is_int(sdnotify_init(err, sizeof(err)), 0, "bad NOTIFY_SOCKET: off");
	ok(err[0] != '\0', "bad variables: warning '%s'", err);
}

/* Put a socket of type at descriptor 3; listening if asked. */
static int
fd3_socket(int type, const char *name, int do_listen)
{
	struct sockaddr_un	sun;
	int			fd;

	if ((fd = socket(AF_UNIX, type, 0)) == -1)
		return -1;
	memset(&sun, 0, sizeof(sun));
	sun.sun_family = AF_UNIX;
	snprintf(sun.sun_path, sizeof(sun.sun_path), "%s/%s", tmpdir, name);
	unlink(sun.sun_path);
	if (bind(fd, (struct sockaddr *)&sun, sizeof(sun)) == -1 ||
	    (do_listen && listen(fd, 5) == -1)) {
		close(fd);
		return -1;
	}
	if (fd != SD_LISTEN_FDS_START) {
		if (dup2(fd, SD_LISTEN_FDS_START) == -1)
			return -1;
		close(fd);
	}
	return SD_LISTEN_FDS_START;
}

static void
set_listen(const char *fds)
{
	char	pid[32];

	snprintf(pid, sizeof(pid), "%d", (int)getpid());
	setenv("LISTEN_PID", pid, 1);
	setenv("LISTEN_FDS", fds, 1);
	setenv("LISTEN_FDNAMES", "pubrelayd.socket", 1);
}

static void
test_listen(void)
{
	char	path[256], want[256], err[256];
	int	p[2];

	unsetenv("LISTEN_PID");
	unsetenv("LISTEN_FDS");
	is_int(sdnotify_listen_fds(path, sizeof(path), err, sizeof(err)), -1,
	    "no LISTEN_FDS: nothing passed");

	ok(fd3_socket(SOCK_STREAM, "listen.sock", 1) == 3,
	    "listening stream socket at 3");
	fcntl(3, F_SETFD, 0);
	set_listen("1");
	snprintf(want, sizeof(want), "%s/listen.sock", tmpdir);
	is_int(sdnotify_listen_fds(path, sizeof(path), err, sizeof(err)), 3,
	    "one listening socket: taken");
	is_str(path, want, "its path");
	ok(fcntl(3, F_GETFD) & FD_CLOEXEC, "FD_CLOEXEC set");
	ok(getenv("LISTEN_PID") == NULL && getenv("LISTEN_FDS") == NULL &&
	    getenv("LISTEN_FDNAMES") == NULL, "LISTEN_* unset");

	setenv("LISTEN_PID", "1", 1);
	setenv("LISTEN_FDS", "1", 1);
	is_int(sdnotify_listen_fds(path, sizeof(path), err, sizeof(err)), -1,
	    "LISTEN_PID of another process: not ours");
	ok(getenv("LISTEN_FDS") == NULL, "LISTEN_FDS unset anyway");

	set_listen("2");
	is_int(sdnotify_listen_fds(path, sizeof(path), err, sizeof(err)), -2,
	    "two sockets: refused (%s)", err);
	set_listen("one");
	is_int(sdnotify_listen_fds(path, sizeof(path), err, sizeof(err)), -2,
	    "malformed LISTEN_FDS: refused (%s)", err);
	close(3);

	ok(fd3_socket(SOCK_STREAM, "bound.sock", 0) == 3,
	    "bound, not listening, stream socket at 3");
	set_listen("1");
	is_int(sdnotify_listen_fds(path, sizeof(path), err, sizeof(err)), -2,
	    "not listening: refused (%s)", err);
	close(3);

	ok(fd3_socket(SOCK_DGRAM, "dgram.sock", 0) == 3,
	    "datagram socket at 3");
	set_listen("1");
	is_int(sdnotify_listen_fds(path, sizeof(path), err, sizeof(err)), -2,
	    "datagram socket: refused (%s)", err);
	close(3);

	if (pipe(p) == 0) {
		if (p[0] != 3) {
			dup2(p[0], 3);
			close(p[0]);
		}
		set_listen("1");
		is_int(sdnotify_listen_fds(path, sizeof(path), err,
		    sizeof(err)), -2, "a pipe: refused (%s)", err);
		close(3);
		close(p[1]);
	} else
		ok(0, "pipe");
	set_listen("1");
	is_int(sdnotify_listen_fds(path, sizeof(path), err, sizeof(err)), -2,
	    "a closed descriptor: refused (%s)", err);
}

/* A snapshot with the fields status_line() reads. */
static const char *
status_of(const char *state, const char *broker, const char *error,
    uint64_t backlog, uint64_t dead, size_t outlen)
{
	static char		out[1024];
	struct metrics_snap	m;

	memset(&m, 0, sizeof(m));
	snprintf(m.str[M_STATE], sizeof(m.str[M_STATE]), "%s", state);
	snprintf(m.str[M_BROKER], sizeof(m.str[M_BROKER]), "%s", broker);
	snprintf(m.str[M_LAST_ERROR], sizeof(m.str[M_LAST_ERROR]), "%s",
	    error);
	m.v[M_BACKLOG] = backlog;
	m.v[M_DEAD_MESSAGES] = dead;
	status_line(&m, out, outlen);
	return out;
}

static void
test_status(void)
{
	is_str(status_of("connected", "amqp://guest:***@mq1:5672", "", 12, 0,
	    1024), "connected to amqp://guest:***@mq1:5672; backlog 12",
	    "connected");
	is_str(status_of("disconnected", "amqp://guest:***@mq1:5672",
	    "connection refused", 40, 2, 1024),
	    "broker unreachable: connection refused; backlog 40; "
	    "2 dead letters", "disconnected after an error, dead letters");
	is_str(status_of("connecting", "amqp://mq2:5672", "connection refused",
	    40, 1, 1024), "broker unreachable: connection refused; backlog 40; "
	    "1 dead letter", "reconnecting reads as unreachable too");
	is_str(status_of("connecting", "amqp://mq1:5672", "", 0, 0, 1024),
	    "connecting to amqp://mq1:5672; backlog 0", "first connection");
	is_str(status_of("blocked", "amqp://mq1:5672", "low on memory", 7, 0,
	    1024), "blocked by the broker: low on memory; backlog 7",
	    "blocked");
	is_str(status_of("disconnected", "", "", 0, 0, 1024),
	    "not connected yet; backlog 0", "before the first attempt");
	is_str(status_of("connected", "", "", 3, 0, 1024),
	    "connected to -; backlog 3", "no broker yet reads as -");
	is_int(strlen(status_of("connected", "amqp://mq1:5672", "", 5, 0, 20)),
	    19, "cut to the buffer");
}

int
main(void)
{
	if (mkdtemp(tmpdir) == NULL) {
		perror("mkdtemp");
		return 1;
	}
	test_addr();
	test_parse();
	test_send();
	test_listen();
	test_status();
	{
		static const char *const files[] = { "notify", "listen.sock",
		    "bound.sock", "dgram.sock" };
		char	path[300];
		size_t	i;

		for (i = 0; i < sizeof(files) / sizeof(files[0]); i++) {
			snprintf(path, sizeof(path), "%s/%s", tmpdir, files[i]);
			unlink(path);
		}
		if (rmdir(tmpdir) == -1)
			diag("cannot remove %s", tmpdir);
	}
	return done_testing();
}
