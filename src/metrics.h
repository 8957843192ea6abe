/*
 * metrics.h: the STATS fields, the one table of them.  Each field's name
 * on the wire, how the client shows it and its Prometheus metric live
 * here; the daemon fills a snapshot and formats it once, for the STATS
 * reply (metrics_format()) and the service status (status_line()).  The
 * fields are documented in pubrelayd(8) and the metrics in pubrelay(1);
 * tests/test_metrics.c holds the three to the same list.  Pure code.
 */
#ifndef PUBRELAY_METRICS_H
#define PUBRELAY_METRICS_H

#include <stddef.h>
#include <stdint.h>

struct buf;

/* In the order of the STATS reply. */
enum metric_id {
	M_STATE = 0,		/* strings first (M_NSTRINGS of them) */
	M_BROKER,
	M_LAST_ERROR,
	M_OUTBOX_MESSAGES,
	M_BACKLOG,
	M_OUTBOX_BYTES,
	M_OUTBOX_MAX_BYTES,
	M_OLDEST_AGE_MS,
	M_IN_FLIGHT,
	M_ACCEPTED,
	M_REFUSED,
	M_PUBLISHED,
	M_CONFIRMED,
	M_NACKED,
	M_RETURNED,
	M_PARKED,
	M_EXPIRED,
	M_DEAD_MESSAGES,
	M_DEAD_BYTES,
	M_DEAD_MAX_BYTES,
	M_DEAD_WAITING,
	M_IDEM_KEYS,
	M_IDEM_HITS,
	M_RECONNECTS,
	M_BLOCKED_MS,
	M_CONFIRM_MS_SUM,
	M_CONFIRM_COUNT,
	M_CLIENTS,
	M_CLIENTS_REFUSED,
	M_RECEIPTS_WAITING,
	M_UPTIME_S,
	M_COUNT
};
#define M_NSTRINGS	3

/* How `pubrelay stats` shows a value. */
enum metric_unit {
	MU_NONE = 0,		/* a number, as sent */
	MU_STRING,		/* never a JSON number */
	MU_BYTES,
	MU_LIMIT,		/* bytes, 0 meaning no limit */
	MU_MS,
	MU_SECONDS,
	MU_MEAN,		/* confirm_latency_count: and the mean */
};

struct metric {
	const char	*key;		/* the STATS name */
	enum metric_unit unit;
	/* Prometheus: NULL name for none (the strings). */
	const char	*prom;		/* the metric family */
	const char	*suffix;	/* sample name = prom + suffix */
	const char	*type;		/* gauge, counter, summary */
	int		 ms;		/* key in ms, metric in seconds */
	const char	*help;
};

extern const struct metric metrics[M_COUNT];

/* The field named by name[0..len), NULL when this build knows none. */
const struct metric *metric_find(const char *name, size_t len);

/* One STATS reply's values; a string "" is sent as "-". */
struct metrics_snap {
	char		 str[M_NSTRINGS][256];
	uint64_t	 v[M_COUNT];
};

/* The STATS reply body: one "name value\n" line per field, in order. */
void	metrics_format(const struct metrics_snap *m, struct buf *out);

#endif
