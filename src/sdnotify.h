/*
 * sdnotify.h: the two interfaces a systemd service speaks, without
 * libsystemd (sdnotify.c says why): notifications to the service manager
 * (READY=1, STATUS=, WATCHDOG=1, RELOADING=1, STOPPING=1) sent as datagrams
 * to $NOTIFY_SOCKET, and the listening socket passed by socket activation
 * ($LISTEN_PID, $LISTEN_FDS).  Outside systemd every call does nothing.
 * Owns the one notification socket.
 */
#ifndef PUBRELAY_SDNOTIFY_H
#define PUBRELAY_SDNOTIFY_H

#include <sys/types.h>
#include <sys/socket.h>
#include <sys/un.h>

#include <stddef.h>
#include <stdint.h>

#define SD_LISTEN_FDS_START	3	/* the first passed descriptor */

/*
 * Read NOTIFY_SOCKET, WATCHDOG_USEC and WATCHDOG_PID, then unset them (a
 * child must not notify in our name).  Call before any thread starts:
 * unsetenv() is not thread-safe.  Returns 1 when notifications go
 * somewhere, 0 when not (not under systemd).  err is set (not empty) when
 * a variable was malformed or the socket could not be created: a warning,
 * what was valid is still used.
 */
int	 sdnotify_init(char *err, size_t errlen);
/*
 * Send one notification: newline-separated KEY=VALUE assignments.  Never
 * blocks.  0 when sent or when there is nowhere to send; -1 (errno set)
 * when the datagram could not be sent.
 */
int	 sdnotify_send(const char *fmt, ...)
	    __attribute__((format(printf, 1, 2)));
/* The watchdog interval, in microseconds, or 0 when no watchdog is asked. */
uint64_t sdnotify_watchdog_usec(void);

/*
 * Socket activation: the listening socket the service manager passed, when
 * LISTEN_PID is this process and LISTEN_FDS counts exactly one descriptor
 * and it is a listening AF_UNIX stream socket.  Sets FD_CLOEXEC on it,
 * writes its address to path (a path, "@name" for an abstract socket), and
 * unsets LISTEN_PID, LISTEN_FDS and LISTEN_FDNAMES (whatever the outcome).
 * Returns the descriptor (SD_LISTEN_FDS_START), -1 when no socket was
 * passed to this process, -2 with err set when what was passed is not
 * usable.  Call before any thread starts.
 */
int	 sdnotify_listen_fds(char *path, size_t pathlen, char *err,
	    size_t errlen);

/* Pure parts, for the unit tests. */

/* NOTIFY_SOCKET ("/path" or "@abstract") as an address; -1 if invalid. */
int	 sdnotify_addr(const char *s, struct sockaddr_un *sun, socklen_t *len);
/*
 * WATCHDOG_USEC and WATCHDOG_PID (either may be NULL): *usec is the
 * interval, 0 when absent or meant for another pid.  -1 when malformed.
 */
int	 sdnotify_parse_watchdog(const char *usec, const char *pid, pid_t self,
	    uint64_t *out);
/*
 * LISTEN_PID and LISTEN_FDS (either may be NULL): *n is the number of
 * descriptors passed to self, 0 when none or meant for another pid.  -1
 * when malformed.
 */
int	 sdnotify_parse_listen(const char *pid, const char *fds, pid_t self,
	    int *n);

#endif
