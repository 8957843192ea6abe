/*
 * status.c: the service status line from the STATS lines.  It reads the
 * STATS text rather than the counters so that systemctl status and
 * `pubrelay stats` can never disagree.
 */
#include <stdio.h>
#include <string.h>

#include "status.h"

/* The value of key in the "name value" lines; "-" when absent. */
static void
status_get(const char *stats, const char *key, char *out, size_t outlen)
{
	size_t		 klen = strlen(key), len;
	const char	*p = stats, *nl;

	while (*p != '\0') {
		nl = strchr(p, '\n');
		len = nl != NULL ? (size_t)(nl - p) : strlen(p);
		if (len > klen && strncmp(p, key, klen) == 0 && p[klen] == ' ') {
			snprintf(out, outlen, "%.*s", (int)(len - klen - 1),
			    p + klen + 1);
			return;
		}
		if (nl == NULL)
			break;
		p = nl + 1;
	}
	snprintf(out, outlen, "-");
}

void
status_line(const char *stats, char *out, size_t outlen)
{
	char	state[32], broker[256], error[256], backlog[32], dead[32];
	char	tail[96];
	int	failed;

	status_get(stats, "state", state, sizeof(state));
	status_get(stats, "broker", broker, sizeof(broker));
	status_get(stats, "last_error", error, sizeof(error));
	status_get(stats, "backlog", backlog, sizeof(backlog));
	status_get(stats, "dead_messages", dead, sizeof(dead));

	if (strcmp(dead, "-") == 0 || strcmp(dead, "0") == 0)
		snprintf(tail, sizeof(tail), "; backlog %s", backlog);
	else
		snprintf(tail, sizeof(tail), "; backlog %s; %s dead letter%s",
		    backlog, dead, strcmp(dead, "1") == 0 ? "" : "s");

	/*
	 * While the broker is down the link goes disconnected, connecting,
	 * disconnected...: both read "unreachable", so the line does not
	 * flap with every attempt.
	 */
	failed = strcmp(error, "-") != 0;
	if (strcmp(state, "connected") == 0)
		snprintf(out, outlen, "connected to %s%s", broker, tail);
	else if (strcmp(state, "blocked") == 0)
		snprintf(out, outlen, "blocked by the broker: %s%s", error,
		    tail);
	else if (strcmp(state, "connecting") == 0 && !failed)
		snprintf(out, outlen, "connecting to %s%s", broker, tail);
	else if ((strcmp(state, "connecting") == 0 ||
	    strcmp(state, "disconnected") == 0) && failed)
		snprintf(out, outlen, "broker unreachable: %s%s", error, tail);
	else if (strcmp(state, "disconnected") == 0)
		snprintf(out, outlen, "not connected yet%s", tail);
	else
		snprintf(out, outlen, "%s%s", state, tail);
}
