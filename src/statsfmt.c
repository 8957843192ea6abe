/*
 * statsfmt.c: the body of a STATS reply ("name value" lines; metrics.h holds
 * the fields, their units and Prometheus names) as a table, as JSON or in
 * the Prometheus text format, for `pubrelay stats`.  Pure: text in, text
 * out.  A key this code does not know is shown in the table, passed
 * through in JSON and left out of the Prometheus output, so a newer
 * daemon's keys do no harm.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "metrics.h"
#include "protocol.h"
#include "statsfmt.h"
#include "util.h"

/* One line of the body; val is NULL for a line without a space. */
struct stats_kv {
	const char	*name;
	size_t		 nlen;
	const char	*val;
	size_t		 vlen;
	int		 dup;		/* an earlier line has the same name */
};

struct stats_body {
	struct stats_kv	*kv;
	size_t		 n;
};

static int
stats_kv_cmp(const void *a, const void *b)
{
	const struct stats_kv	*x = *(const struct stats_kv *const *)a;
	const struct stats_kv	*y = *(const struct stats_kv *const *)b;
	size_t			 n = x->nlen < y->nlen ? x->nlen : y->nlen;
	int			 c;

	if ((c = memcmp(x->name, y->name, n)) != 0)
		return c;
	if (x->nlen != y->nlen)
		return x->nlen < y->nlen ? -1 : 1;
	return x < y ? -1 : x > y;	/* the earlier line first */
}

/*
 * Cut the body into lines (a "\r" before the "\n" dropped, empty lines
 * skipped) and mark the repeated names: JSON and Prometheus take the first.
 */
static void
stats_split(const char *p, size_t len, struct stats_body *b)
{
	const char	*end = p + len, *eol, *stop, *sp, *q;
	struct stats_kv	*kv, **order;
	size_t		 cap = 0, i;

	b->kv = NULL;
	b->n = 0;
	for (q = p; q < end; q = eol + 1) {
		if ((eol = memchr(q, '\n', (size_t)(end - q))) == NULL)
			eol = end;
		stop = eol > q && eol[-1] == '\r' ? eol - 1 : eol;
		if (stop == q)
			continue;
		if (b->n == cap) {
			cap = cap ? cap * 2 : 32;
			b->kv = xrealloc(b->kv, cap * sizeof(*b->kv));
		}
		kv = &b->kv[b->n++];
		kv->name = q;
		kv->dup = 0;
		if ((sp = memchr(q, ' ', (size_t)(stop - q))) == NULL) {
			kv->nlen = (size_t)(stop - q);
			kv->val = NULL;
			kv->vlen = 0;
		} else {
			kv->nlen = (size_t)(sp - q);
			kv->val = sp + 1;
			kv->vlen = (size_t)(stop - sp - 1);
		}
	}
	if (b->n < 2)
		return;
	order = xcalloc(b->n, sizeof(*order));
	for (i = 0; i < b->n; i++)
		order[i] = &b->kv[i];
	qsort(order, b->n, sizeof(*order), stats_kv_cmp);
	for (i = 1; i < b->n; i++)
		if (order[i]->nlen == order[i - 1]->nlen &&
		    memcmp(order[i]->name, order[i - 1]->name,
		    order[i]->nlen) == 0)
			order[i]->dup = 1;
	free(order);
}

static int
stats_name_is(const struct stats_kv *kv, const char *name)
{
	return kv->nlen == strlen(name) && memcmp(kv->name, name, kv->nlen) == 0;
}

/* The first line named name, or NULL. */
static const struct stats_kv *
stats_find(const struct stats_body *b, const char *name)
{
	size_t	i;

	for (i = 0; i < b->n; i++)
		if (!b->kv[i].dup && stats_name_is(&b->kv[i], name))
			return &b->kv[i];
	return NULL;
}

static const struct metric *
stats_key_of(const struct stats_kv *kv)
{
	return metric_find(kv->name, kv->nlen);
}

/*
 * Decimal digits as JSON writes an integer: no sign, no leading zero, at
 * most max.  0 when p[0..len) is one, with its value in *out.
 */
static int
stats_digits(const char *p, size_t len, uint64_t max, uint64_t *out)
{
	char	tmp[24];
	size_t	i;

	if (len == 0 || len >= sizeof(tmp) || (len > 1 && p[0] == '0'))
		return -1;
	for (i = 0; i < len; i++)
		if (p[i] < '0' || p[i] > '9')
			return -1;
	memcpy(tmp, p, len);
	tmp[len] = '\0';
	return util_parse_u64(tmp, 0, max, out);
}

/* An unsigned value (what every numeric key has); 0 when it is one. */
static int
stats_u64(const struct stats_kv *kv, uint64_t *out)
{
	if (kv == NULL || kv->val == NULL)
		return -1;
	return stats_digits(kv->val, kv->vlen, UINT64_MAX, out);
}

/* A JSON integer in the range of int64 or uint64, written as sent. */
static int
stats_json_int(const char *p, size_t len)
{
	uint64_t	v;

	if (len > 0 && p[0] == '-')
		return stats_digits(p + 1, len - 1, (uint64_t)INT64_MAX + 1,
		    &v) == 0;
	return stats_digits(p, len, UINT64_MAX, &v) == 0;
}

/*
 * A JSON string of any bytes: quotes, backslashes, control characters and
 * DEL escaped, valid UTF-8 kept, and every byte that is not part of valid
 * UTF-8 written as \u00XX (that byte as a code point), so the output is
 * always valid JSON.
 */
void
statsfmt_json_string(struct buf *o, const char *s, size_t len)
{
	const unsigned char	*p = (const unsigned char *)s;
	size_t			 i, n;

	buf_append(o, "\"", 1);
	for (i = 0; i < len; i++) {
		switch (p[i]) {
		case '"':
			buf_appends(o, "\\\"");
			continue;
		case '\\':
			buf_appends(o, "\\\\");
			continue;
		case '\b':
			buf_appends(o, "\\b");
			continue;
		case '\f':
			buf_appends(o, "\\f");
			continue;
		case '\n':
			buf_appends(o, "\\n");
			continue;
		case '\r':
			buf_appends(o, "\\r");
			continue;
		case '\t':
			buf_appends(o, "\\t");
			continue;
		}
		if (p[i] < 0x20 || p[i] == 0x7f)
			buf_printf(o, "\\u%04x", p[i]);
		else if (p[i] < 0x80)
			buf_append(o, p + i, 1);
		else if ((n = util_utf8_seq(p + i, len - i)) != 0) {
			buf_append(o, p + i, n);
			i += n - 1;
		} else
			buf_printf(o, "\\u%04x", p[i]);
	}
	buf_append(o, "\"", 1);
}

/*
 * One object, a member per key in the daemon's order (the first of
 * repeated names): integers as numbers, "-" (and a line without a value)
 * as null, everything else as a string.
 */
static void
stats_json(struct buf *o, const struct stats_body *b)
{
	const struct stats_kv	*kv;
	const struct metric	*k;
	size_t			 i;
	int			 first = 1;

	buf_appends(o, "{");
	for (i = 0; i < b->n; i++) {
		kv = &b->kv[i];
		if (kv->dup || kv->nlen == 0)
			continue;
		buf_appends(o, first ? "\n  " : ",\n  ");
		first = 0;
		statsfmt_json_string(o, kv->name, kv->nlen);
		buf_appends(o, ": ");
		k = stats_key_of(kv);
		if (kv->val == NULL || (kv->vlen == 1 && kv->val[0] == '-'))
			buf_appends(o, "null");
		else if ((k == NULL || k->unit != MU_STRING) &&
		    stats_json_int(kv->val, kv->vlen))
			buf_append(o, kv->val, kv->vlen);
		else
			statsfmt_json_string(o, kv->val, kv->vlen);
	}
	buf_appends(o, first ? "}\n" : "\n}\n");
}

static void
prom_family(struct buf *o, const char *name, const char *type,
    const char *help)
{
	buf_printf(o, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

static void
prom_up(struct buf *o, int up)
{
	prom_family(o, "pubrelay_up", "gauge",
	    "1 when pubrelayd answered the stats request, 0 when not.");
	buf_printf(o, "pubrelay_up %d\n", up);
}

/*
 * The text exposition format 0.0.4.  Values are printed exactly: ms / 1000
 * as a decimal fraction, not through a double.  A key that is missing or
 * not an unsigned number, or a state this client does not know, leaves its
 * metric out.
 */
static void
stats_prometheus(struct buf *o, const struct stats_body *b)
{
	const struct stats_kv		*kv;
	const struct metric		*m;
	const char			*last = NULL;
	char				 num[32];
	uint64_t			 v;
	size_t				 i, nstates, cur;

	prom_up(o, 1);
	nstates = PROTO_LINK_STATES;
	cur = nstates;
	if ((kv = stats_find(b, "state")) != NULL && kv->val != NULL)
		for (cur = 0; cur < nstates; cur++)
			if (kv->vlen == strlen(proto_link_states[cur]) &&
			    memcmp(kv->val, proto_link_states[cur],
			    kv->vlen) == 0)
				break;
	if (cur < nstates) {
		prom_family(o, "pubrelay_link_state", "gauge",
		    "Broker link state: 1 for the current one, 0 for the "
		    "others.");
		for (i = 0; i < nstates; i++)
			buf_printf(o, "pubrelay_link_state{state=\"%s\"} %d\n",
			    proto_link_states[i], i == cur);
	}
	for (i = 0; i < M_COUNT; i++) {
		m = &metrics[i];
		if (m->prom == NULL ||
		    stats_u64(stats_find(b, m->key), &v) == -1)
			continue;
		if (last == NULL || strcmp(last, m->prom) != 0)
			prom_family(o, m->prom, m->type, m->help);
		last = m->prom;
		if (!m->ms || v % 1000 == 0)
			snprintf(num, sizeof(num), "%llu",
			    (unsigned long long)(m->ms ? v / 1000 : v));
		else {
			size_t	n;

			n = (size_t)snprintf(num, sizeof(num), "%llu.%03llu",
			    (unsigned long long)(v / 1000),
			    (unsigned long long)(v % 1000));
			while (num[n - 1] == '0')
				num[--n] = '\0';
		}
		buf_printf(o, "%s%s %s\n", m->prom, m->suffix, num);
	}
}

/* A duration for people: 12.3 s, 4m 5s, 1h 2m 3s, 2d 3h 4m. */
static void
stats_duration(uint64_t ms, char *out, size_t outlen)
{
	unsigned long long	s = ms / 1000;

	if (s < 60)
		snprintf(out, outlen, "%llu.%llu s", s,
		    (unsigned long long)(ms % 1000 / 100));
	else if (s < 3600)
		snprintf(out, outlen, "%llum %llus", s / 60, s % 60);
	else if (s < 86400)
		snprintf(out, outlen, "%lluh %llum %llus", s / 3600,
		    s / 60 % 60, s % 60);
	else
		snprintf(out, outlen, "%llud %lluh %llum", s / 86400,
		    s / 3600 % 24, s / 60 % 60);
}

/* A known key's value with its unit; 0 when it was one, -1 to show raw. */
static int
stats_human(const struct stats_body *b, const struct stats_kv *kv,
    char *out, size_t outlen)
{
	static const char *const units[] = {
		"KiB", "MiB", "GiB", "TiB", "PiB", "EiB",
	};
	const struct metric	*k = stats_key_of(kv);
	char			 d[64];
	uint64_t		 v, sum;
	double			 x;
	size_t			 u;

	if (k == NULL || k->unit == MU_NONE || k->unit == MU_STRING ||
	    stats_u64(kv, &v) == -1)
		return -1;
	switch (k->unit) {
	case MU_LIMIT:
		if (v == 0) {
			snprintf(out, outlen, "0 (no limit)");
			break;
		}
		/* FALLTHROUGH */
	case MU_BYTES:
		if (v < 1024) {
			snprintf(out, outlen, "%llu B", (unsigned long long)v);
			break;
		}
		x = (double)v / 1024;
		for (u = 0; x >= 1024 && u + 1 < sizeof(units) /
		    sizeof(units[0]); u++)
			x /= 1024;
		snprintf(out, outlen, "%llu B (%.1f %s)",
		    (unsigned long long)v, x, units[u]);
		break;
	case MU_MS:
		if (v < 1000) {
			snprintf(out, outlen, "%llu ms", (unsigned long long)v);
			break;
		}
		stats_duration(v, d, sizeof(d));
		snprintf(out, outlen, "%llu ms (%s)", (unsigned long long)v,
		    d);
		break;
	case MU_SECONDS:
		if (v < 60 || v > UINT64_MAX / 1000) {
			snprintf(out, outlen, "%llu s", (unsigned long long)v);
			break;
		}
		stats_duration(v * 1000, d, sizeof(d));
		snprintf(out, outlen, "%llu s (%s)", (unsigned long long)v, d);
		break;
	case MU_MEAN:
		if (v == 0 || stats_u64(stats_find(b,
		    "confirm_latency_ms_sum"), &sum) == -1) {
			snprintf(out, outlen, "%llu", (unsigned long long)v);
			break;
		}
		snprintf(out, outlen, "%llu (mean %.1f ms)",
		    (unsigned long long)v, (double)sum / (double)v);
		break;
	case MU_NONE:
	case MU_STRING:
		return -1;
	}
	return 0;
}

/*
 * Two aligned columns, one line per line of the body, in its order: sizes
 * and times with their units; a line without a value keeps its name.
 */
static void
stats_table(struct buf *o, const struct stats_body *b)
{
	const struct stats_kv	*kv;
	char			*name, *val, human[128];
	size_t			 i;
	int			 width = 0, w;

	for (i = 0; i < b->n; i++) {
		name = util_text(b->kv[i].name, b->kv[i].nlen, &w);
		free(name);
		if (w > width)
			width = w;
	}
	for (i = 0; i < b->n; i++) {
		kv = &b->kv[i];
		name = util_text(kv->name, kv->nlen, &w);
		if (kv->val == NULL) {
			buf_printf(o, "%s\n", name);
			free(name);
			continue;
		}
		if (stats_human(b, kv, human, sizeof(human)) == 0)
			val = xstrdup(human);
		else
			val = util_text(kv->val, kv->vlen, NULL);
		buf_printf(o, "%s%*s  %s\n", name, width - w, "", val);
		free(name);
		free(val);
	}
}

static void
statsfmt_run(struct buf *o, const char *body, size_t len,
    void (*fn)(struct buf *, const struct stats_body *))
{
	struct stats_body	b;

	stats_split(body, len, &b);
	fn(o, &b);
	free(b.kv);
}

void
statsfmt_table(struct buf *out, const char *body, size_t len)
{
	statsfmt_run(out, body, len, stats_table);
}

void
statsfmt_json(struct buf *out, const char *body, size_t len)
{
	statsfmt_run(out, body, len, stats_json);
}

void
statsfmt_prometheus(struct buf *out, const char *body, size_t len)
{
	statsfmt_run(out, body, len, stats_prometheus);
}

void
statsfmt_prometheus_down(struct buf *out)
{
	prom_up(out, 0);
}
