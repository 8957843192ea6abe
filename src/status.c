/*
 * status.c: the service status line from a STATS snapshot.  It reads the
 * same snapshot as the STATS reply, so that systemctl status and
 * `pubrelay stats` can never disagree.
 */
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "metrics.h"
#include "status.h"

void
status_line(const struct metrics_snap *m, char *out, size_t outlen)
{
	const char	*state = m->str[M_STATE];
	const char	*broker = m->str[M_BROKER][0] ? m->str[M_BROKER] : "-";
	const char	*error = m->str[M_LAST_ERROR];
	uint64_t	 dead = m->v[M_DEAD_MESSAGES];
	char		 tail[96];
	int		 failed;

	if (dead == 0)
		snprintf(tail, sizeof(tail), "; backlog %" PRIu64,
		    m->v[M_BACKLOG]);
	else
		snprintf(tail, sizeof(tail), "; backlog %" PRIu64 "; %" PRIu64
		    " dead letter%s", m->v[M_BACKLOG], dead,
		    dead == 1 ? "" : "s");

	/*
	 * While the broker is down the link goes disconnected, connecting,
	 * disconnected...: both read "unreachable", so the line does not
	 * flap with every attempt.
	 */
	failed = error[0] != '\0' && strcmp(error, "-") != 0;
	if (strcmp(state, "connected") == 0)
		snprintf(out, outlen, "connected to %s%s", broker, tail);
	else if (strcmp(state, "blocked") == 0)
		snprintf(out, outlen, "blocked by the broker: %s%s",
		    failed ? error : "-", tail);
	else if (strcmp(state, "connecting") == 0 && !failed)
		snprintf(out, outlen, "connecting to %s%s", broker, tail);
	else if ((strcmp(state, "connecting") == 0 ||
	    strcmp(state, "disconnected") == 0) && failed)
		snprintf(out, outlen, "broker unreachable: %s%s", error, tail);
	else if (strcmp(state, "disconnected") == 0)
		snprintf(out, outlen, "not connected yet%s", tail);
	else
		snprintf(out, outlen, "%s%s", state[0] ? state : "-", tail);
}
