/*
 * metrics.c: the STATS fields (metrics.h).
 */
#include <inttypes.h>
#include <string.h>

#include "metrics.h"
#include "util.h"

/*
 * Prometheus: base units (ms become seconds), counters end in _total.  The
 * two confirm latency keys are the _sum and _count of one summary (without
 * quantiles), so they share a name.
 */
const struct metric metrics[M_COUNT] = {
	[M_STATE] = { "state", MU_STRING, NULL, NULL, NULL, 0, NULL },
	[M_BROKER] = { "broker", MU_STRING, NULL, NULL, NULL, 0, NULL },
	[M_LAST_ERROR] = { "last_error", MU_STRING, NULL, NULL, NULL, 0,
	  NULL },
	[M_OUTBOX_MESSAGES] = { "outbox_messages", MU_NONE,
	  "pubrelay_outbox_messages", "", "gauge", 0,
	  "Messages in the outbox: not yet confirmed, or confirmed and not "
	  "yet deleted." },
	[M_BACKLOG] = { "backlog", MU_NONE, "pubrelay_backlog_messages", "",
	  "gauge", 0,
	  "Messages in the outbox the broker has not confirmed yet." },
	[M_OUTBOX_BYTES] = { "outbox_bytes", MU_BYTES,
	  "pubrelay_outbox_bytes", "", "gauge", 0,
	  "Size of the outbox messages (property block and body), the figure "
	  "max_bytes limits." },
	[M_OUTBOX_MAX_BYTES] = { "outbox_max_bytes", MU_LIMIT,
	  "pubrelay_outbox_max_bytes", "", "gauge", 0,
	  "The [outbox] max_bytes limit; 0 means no limit." },
	[M_OLDEST_AGE_MS] = { "oldest_age_ms", MU_MS,
	  "pubrelay_oldest_message_age_seconds", "", "gauge", 1,
	  "Age of the oldest message in the outbox; 0 when it is empty." },
	[M_IN_FLIGHT] = { "in_flight", MU_NONE, "pubrelay_in_flight_messages",
	  "", "gauge", 0,
	  "Messages published and not yet confirmed on the current broker "
	  "connection." },
	[M_ACCEPTED] = { "accepted", MU_NONE, "pubrelay_accepted_total", "",
	  "counter", 0,
	  "Messages committed to the outbox and acknowledged to clients." },
	[M_REFUSED] = { "refused", MU_NONE, "pubrelay_refused_total", "",
	  "counter", 0,
	  "Messages refused with an error (FULL, STORE, BAD..., TOOBIG), "
	  "the SKIPPED ones that follow a refusal not counted." },
	[M_PUBLISHED] = { "published", MU_NONE, "pubrelay_published_total",
	  "", "counter", 0, "basic.publish calls, republishes included." },
	[M_CONFIRMED] = { "confirmed", MU_NONE, "pubrelay_confirmed_total",
	  "", "counter", 0, "Messages confirmed by the broker." },
	[M_NACKED] = { "nacked", MU_NONE, "pubrelay_nacked_total", "",
	  "counter", 0, "Messages nacked by the broker (each is retried)." },
	[M_RETURNED] = { "returned", MU_NONE, "pubrelay_returned_total", "",
	  "counter", 0,
	  "Messages returned by the broker (basic.return), every attempt "
	  "counted." },
	[M_PARKED] = { "parked", MU_NONE, "pubrelay_parked_total", "",
	  "counter", 0,
	  "Messages parked as dead letters; one the relay retries counts "
	  "once for each refusal." },
	[M_EXPIRED] = { "expired", MU_NONE, "pubrelay_expired_total", "",
	  "counter", 0,
	  "Messages parked unsent, older than their max-age (counted in "
	  "parked too)." },
	[M_DEAD_MESSAGES] = { "dead_messages", MU_NONE,
	  "pubrelay_dead_messages", "", "gauge", 0,
	  "Dead letters in the outbox file." },
	[M_DEAD_BYTES] = { "dead_bytes", MU_BYTES, "pubrelay_dead_bytes", "",
	  "gauge", 0,
	  "Size of the dead letters (property block and body), the figure "
	  "dead_max_bytes limits." },
	[M_DEAD_MAX_BYTES] = { "dead_max_bytes", MU_LIMIT,
	  "pubrelay_dead_max_bytes", "", "gauge", 0,
	  "The [outbox] dead_max_bytes limit; 0 means no limit." },
	[M_DEAD_WAITING] = { "dead_waiting", MU_NONE,
	  "pubrelay_dead_waiting_messages", "", "gauge", 0,
	  "Refused messages waiting to be parked, kept in the outbox: the "
	  "dead-letter table is full (or cannot be written)." },
	[M_IDEM_KEYS] = { "idempotency_keys", MU_NONE,
	  "pubrelay_idempotency_keys", "", "gauge", 0,
	  "Idempotency keys remembered in the outbox file." },
	[M_IDEM_HITS] = { "idempotency_hits", MU_NONE,
	  "pubrelay_idempotency_hits_total", "", "counter", 0,
	  "Messages whose idempotency key was known: answered with the "
	  "original message-id, nothing stored." },
	[M_RECONNECTS] = { "reconnects", MU_NONE, "pubrelay_reconnects_total",
	  "", "counter", 0, "Successful broker connections after the first." },
	[M_BLOCKED_MS] = { "blocked_ms", MU_MS,
	  "pubrelay_blocked_seconds_total", "", "counter", 1,
	  "Time the broker has blocked publishing (connection.blocked), the "
	  "current block included." },
	[M_CONFIRM_MS_SUM] = { "confirm_latency_ms_sum", MU_MS,
	  "pubrelay_confirm_latency_seconds", "_sum", "summary", 1,
	  "Time from publish to confirm of the confirmed messages, time "
	  "blocked excluded." },
	[M_CONFIRM_COUNT] = { "confirm_latency_count", MU_MEAN,
	  "pubrelay_confirm_latency_seconds", "_count", "summary", 0,
	  "Time from publish to confirm of the confirmed messages, time "
	  "blocked excluded." },
	[M_CLIENTS] = { "clients", MU_NONE, "pubrelay_clients", "", "gauge",
	  0, "Open client connections, the one asking included." },
	[M_CLIENTS_REFUSED] = { "clients_refused", MU_NONE,
	  "pubrelay_clients_refused_total", "", "counter", 0,
	  "Connections refused at accept: over max_clients (LIMIT) or not in "
	  "allow_users/allow_groups (DENIED)." },
	[M_RECEIPTS_WAITING] = { "receipts_waiting", MU_NONE,
	  "pubrelay_receipts_waiting", "", "gauge", 0,
	  "Replies waiting for the broker's confirm: PUBs with confirm: and "
	  "WAITs." },
	[M_UPTIME_S] = { "uptime_s", MU_SECONDS, "pubrelay_uptime_seconds", "",
	  "gauge", 0, "Seconds since pubrelayd started." },
};

const struct metric *
metric_find(const char *name, size_t len)
{
	size_t	i;

	for (i = 0; i < M_COUNT; i++)
		if (strlen(metrics[i].key) == len &&
		    memcmp(metrics[i].key, name, len) == 0)
			return &metrics[i];
	return NULL;
}

void
metrics_format(const struct metrics_snap *m, struct buf *out)
{
	size_t	i;

	for (i = 0; i < M_COUNT; i++)
		if (i < M_NSTRINGS)
			buf_printf(out, "%s %s\n", metrics[i].key,
			    m->str[i][0] != '\0' ? m->str[i] : "-");
		else
			buf_printf(out, "%s %" PRIu64 "\n", metrics[i].key,
			    m->v[i]);
}
