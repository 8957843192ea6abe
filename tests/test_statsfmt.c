/*
 * Unit tests for statsfmt.c: a STATS body as a table, as JSON and in the
 * Prometheus text format, byte for byte.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "statsfmt.h"
#include "tap.h"
#include "util.h"

typedef void (*fmt_fn)(struct buf *, const char *, size_t);

/* body formatted by fn, NUL-terminated, for is_str (freed by the caller). */
static char *
fmt(fmt_fn fn, const char *body)
{
	struct buf	b;
	char		*s;

	buf_init(&b);
	fn(&b, body, strlen(body));
	s = xstrndup(b.data ? b.data : "", b.len);
	buf_free(&b);
	return s;
}

static void
check(fmt_fn fn, const char *body, const char *want, const char *what)
{
	char	*got = fmt(fn, body);

	is_str(got, want, "%s", what);
	free(got);
}

static void
test_table(void)
{
	check(statsfmt_table, "state connected\nbacklog 5\n"
	    "outbox_bytes 2048\noutbox_max_bytes 0\nuptime_s 3700\n"
	    "oldest_age_ms 1500\nconfirm_latency_ms_sum 30\n"
	    "confirm_latency_count 4\n",
	    "state                   connected\n"
	    "backlog                 5\n"
	    "outbox_bytes            2048 B (2.0 KiB)\n"
	    "outbox_max_bytes        0 (no limit)\n"
	    "uptime_s                3700 s (1h 1m 40s)\n"
	    "oldest_age_ms           1500 ms (1.5 s)\n"
	    "confirm_latency_ms_sum  30 ms\n"
	    "confirm_latency_count   4 (mean 7.5 ms)\n",
	    "table: units, aligned by the longest name");
	check(statsfmt_table, "future_key 12 apples\nbare\n\r\nx\x01y caf\xc3\xa9\xff\n",
	    "future_key  12 apples\n"
	    "bare\n"
	    "x?y         caf\xc3\xa9?\n",
	    "table: unknown keys as sent, a bare name, control bytes and bad "
	    "UTF-8 made safe, empty lines skipped");
	check(statsfmt_table, "", "", "table: an empty body, no output");
}

static void
test_json(void)
{
	check(statsfmt_json, "state connected\nbacklog 5\nbacklog 6\n"
	    "last_error -\nbare\nbroker amqp://h:5672\nneg -12\nlead 007\n"
	    "big 18446744073709551615\ntoo_big 18446744073709551616\n"
	    "q a\"b\\c\td\x01\xff\xc3\xa9\n",
	    "{\n"
	    "  \"state\": \"connected\",\n"
	    "  \"backlog\": 5,\n"
	    "  \"last_error\": null,\n"
	    "  \"bare\": null,\n"
	    "  \"broker\": \"amqp://h:5672\",\n"
	    "  \"neg\": -12,\n"
	    "  \"lead\": \"007\",\n"
	    "  \"big\": 18446744073709551615,\n"
	    "  \"too_big\": \"18446744073709551616\",\n"
	    "  \"q\": \"a\\\"b\\\\c\\td\\u0001\\u00ff\xc3\xa9\"\n"
	    "}\n",
	    "json: first of repeated names, null, numbers only when they are "
	    "JSON integers, escapes, valid UTF-8 kept");
	check(statsfmt_json, "state 12\n", "{\n  \"state\": \"12\"\n}\n",
	    "json: a string key stays a string");
	check(statsfmt_json, "", "{}\n", "json: an empty body, an empty object");
}

static void
test_prometheus(void)
{
	char	*got;

	got = fmt(statsfmt_prometheus, "state connected\nbacklog 5\n"
	    "oldest_age_ms 1500\nconfirm_latency_ms_sum 2000\n"
	    "confirm_latency_count 4\nfuture_key 9\naccepted x\n");
	ok(strncmp(got, "# HELP pubrelay_up ", 19) == 0 &&
	    strstr(got, "\npubrelay_up 1\n") != NULL, "prometheus: up 1 first");
	ok(strstr(got, "pubrelay_link_state{state=\"connected\"} 1\n") != NULL &&
	    strstr(got, "pubrelay_link_state{state=\"connecting\"} 0\n") !=
	    NULL, "prometheus: the current link state 1, the others 0");
	ok(strstr(got, "# TYPE pubrelay_backlog_messages gauge\n"
	    "pubrelay_backlog_messages 5\n") != NULL, "prometheus: a gauge");
	ok(strstr(got, "\npubrelay_oldest_message_age_seconds 1.5\n") != NULL,
	    "prometheus: ms as exact decimal seconds");
	ok(strstr(got, "# TYPE pubrelay_confirm_latency_seconds summary\n"
	    "pubrelay_confirm_latency_seconds_sum 2\n"
	    "pubrelay_confirm_latency_seconds_count 4\n") != NULL,
	    "prometheus: a summary's _sum and _count in one family");
	ok(strstr(got, "future") == NULL, "prometheus: unknown keys left out");
	ok(strstr(got, "pubrelay_accepted_total") == NULL,
	    "prometheus: a value that is not a number left out");
	free(got);
	got = fmt(statsfmt_prometheus, "state sideways\n");
	ok(strstr(got, "pubrelay_link_state") == NULL,
	    "prometheus: a state this client does not know, no family");
	free(got);
	{
		struct buf	b;

		buf_init(&b);
		statsfmt_prometheus_down(&b);
		buf_append(&b, "", 1);
		ok(strstr(b.data, "# TYPE pubrelay_up gauge\npubrelay_up 0\n") !=
		    NULL, "prometheus: down is up 0");
		buf_free(&b);
	}
}

int
main(void)
{
	test_table();
	test_json();
	test_prometheus();
	return done_testing();
}
