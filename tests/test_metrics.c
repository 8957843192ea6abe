/*
 * test_metrics.c: the STATS fields' one table (metrics.c), its formatting,
 * and that the two man pages document exactly its fields (pubrelayd(8):
 * the STATS lines; pubrelay(1): the Prometheus metrics), in its order.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "metrics.h"
#include "util.h"

#include "tap.h"

/* The lines of file, NULL when it cannot be read. */
static char *
slurp(const char *name)
{
	const char	*dir = getenv("PUBRELAY_SRCDIR");
	char		 path[4096], *p;
	FILE		*f;
	long		 n;

	snprintf(path, sizeof(path), "%s/%s", dir ? dir : ".", name);
	if ((f = fopen(path, "r")) == NULL)
		return NULL;
	fseek(f, 0, SEEK_END);
	n = ftell(f);
	rewind(f);
	p = xmalloc((size_t)n + 1);
	p[fread(p, 1, (size_t)n, f)] = '\0';
	fclose(f);
	return p;
}

static void
test_format(void)
{
	struct metrics_snap	m;
	struct buf		b;
	char			want[64];
	size_t			i;
	const char		*line;

	memset(&m, 0, sizeof(m));
	snprintf(m.str[M_STATE], sizeof(m.str[M_STATE]), "connected");
	for (i = M_NSTRINGS; i < M_COUNT; i++)
		m.v[i] = 1000 + i;
	m.v[M_UPTIME_S] = UINT64_MAX;
	buf_init(&b);
	metrics_format(&m, &b);
	buf_append(&b, "", 1);
	ok(strncmp(b.data, "state connected\nbroker -\nlast_error -\n"
	    "outbox_messages 1003\n", 58) == 0,
	    "strings first, an empty one as -, then the numbers in order");
	snprintf(want, sizeof(want), "\nuptime_s %llu\n",
	    (unsigned long long)UINT64_MAX);
	line = strstr(b.data, want);
	ok(line != NULL && line[strlen(want)] == '\0',
	    "the last line is uptime_s, its full 64 bits");
	for (i = 0; i < M_COUNT; i++) {
		snprintf(want, sizeof(want), "%s ", metrics[i].key);
		if (strstr(b.data, want) == NULL)
			break;
	}
	is_int(i, M_COUNT, "every field has its line");
	buf_free(&b);
}

static void
test_find(void)
{
	const struct metric	*m;
	size_t			 i;

	for (i = 0; i < M_COUNT; i++) {
		m = metric_find(metrics[i].key, strlen(metrics[i].key));
		if (m != &metrics[i])
			break;
		if ((i < M_NSTRINGS) != (m->unit == MU_STRING))
			break;
		if ((m->prom == NULL) != (m->unit == MU_STRING))
			break;
	}
	is_int(i, M_COUNT, "each key found, strings first and not exported");
	ok(metric_find("backlog_x", 9) == NULL, "whole names only");
	ok(metric_find("backlog_x", 7) == &metrics[M_BACKLOG],
	    "by length, not NUL");
	ok(metric_find("", 0) == NULL, "an empty name is none");
}

/*
 * pubrelayd(8) lists the STATS lines as ".It Li <key>" in the list that
 * follows "returns these lines": exactly the table, in its order.
 */
static void
test_man_stats(void)
{
	char	*man = slurp("man/pubrelayd.8"), *p, *end, *it;
	size_t	 i = 0, len;
	int	 same = 1;

	ok(man != NULL, "man/pubrelayd.8 read (PUBRELAY_SRCDIR)");
	if (man == NULL)
		return;
	p = strstr(man, "returns these lines");
	ok(p != NULL, "pubrelayd(8) has the STATS list");
	if (p == NULL)
		goto out;
	end = strstr(p, "\n.El\n");
	for (it = strstr(p, "\n.It Li "); it != NULL && it < end;
	    it = strstr(it + 1, "\n.It Li ")) {
		it += 8;
		len = strcspn(it, " \n");
		if (i >= M_COUNT || strlen(metrics[i].key) != len ||
		    memcmp(metrics[i].key, it, len) != 0) {
			diag("pubrelayd(8) has %.*s where the table has %s",
			    (int)len, it, i < M_COUNT ? metrics[i].key : "none");
			same = 0;
			break;
		}
		i++;
	}
	ok(same && i == M_COUNT, "pubrelayd(8) documents the %d STATS fields "
	    "in the table's order (%zu matched)", M_COUNT, i);
out:
	free(man);
}

/*
 * pubrelay(1) has a row ".It Li <metric> Ta <type> Ta Cm <key>" for each
 * exported field (the summary's two keys as one row, confirm_latency_*).
 */
static void
test_man_prometheus(void)
{
	char		*man = slurp("man/pubrelay.1"), row[256], *p;
	const char	*key, *last = NULL;
	size_t		 i, rows = 0, want = 0;
	int		 found = 1;

	ok(man != NULL, "man/pubrelay.1 read");
	if (man == NULL)
		return;
	for (i = 0; i < M_COUNT; i++) {
		if (metrics[i].prom == NULL ||
		    (last != NULL && strcmp(last, metrics[i].prom) == 0))
			continue;
		last = metrics[i].prom;
		want++;
		key = metrics[i].key;
		if (strcmp(metrics[i].type, "summary") == 0)
			key = "confirm_latency_*";
		snprintf(row, sizeof(row), "\n.It Li %s Ta %s Ta Cm %s\n",
		    metrics[i].prom, metrics[i].type, key);
		if (strstr(man, row) == NULL) {
			diag("pubrelay(1) lacks the row%s", row);
			found = 0;
		}
	}
	for (p = strstr(man, "\n.It Li pubrelay_"); p != NULL;
	    p = strstr(p + 1, "\n.It Li pubrelay_"))
		rows++;
	ok(found, "pubrelay(1) has a row for each of the %zu metrics", want);
	/* pubrelay_up and pubrelay_link_state are the client's own. */
	is_int(rows, want + 2, "and no other metric rows");
	free(man);
}

int
main(void)
{
	test_format();
	test_find();
	test_man_stats();
	test_man_prometheus();
	return done_testing();
}
