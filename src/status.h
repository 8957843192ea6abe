/*
 * status.h: the one-line summary of the daemon that systemd shows as the
 * service status (STATUS=, in `systemctl status`), made from the STATS
 * reply lines.  Pure code: no I/O.
 */
#ifndef PUBRELAY_STATUS_H
#define PUBRELAY_STATUS_H

#include <stddef.h>

/*
 * From "name value\n" lines (the STATS body, NUL-terminated), e.g.
 * "connected to amqp://guest:***@mq1:5672; backlog 12" or
 * "broker unreachable: connection refused; backlog 40; 2 dead letters".
 */
void	status_line(const char *stats, char *out, size_t outlen);

#endif
