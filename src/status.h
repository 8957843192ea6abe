/*
 * status.h: the one-line summary of the daemon that systemd shows as the
 * service status (STATUS=, in `systemctl status`), made from the snapshot
 * the STATS reply is formatted from.  Pure code: no I/O.
 */
#ifndef PUBRELAY_STATUS_H
#define PUBRELAY_STATUS_H

#include <stddef.h>

struct metrics_snap;

/*
 * From the STATS snapshot, e.g.
 * "connected to amqp://guest:***@mq1:5672; backlog 12" or
 * "broker unreachable: connection refused; backlog 40; 2 dead letters".
 */
void	status_line(const struct metrics_snap *m, char *out, size_t outlen);

#endif
