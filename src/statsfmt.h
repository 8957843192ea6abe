/*
 * statsfmt.h: a STATS reply's body for people and for programs.  Each
 * function appends to out; the body is the bytes after the "STATS <n>" line.
 */
#ifndef PUBRELAY_STATSFMT_H
#define PUBRELAY_STATSFMT_H

#include <stddef.h>

#include "util.h"

/*
 * Two aligned columns, a line per line of the body in its order, sizes and
 * times with their units, daemon text made safe for a terminal.
 */
void	statsfmt_table(struct buf *out, const char *body, size_t len);
/*
 * One JSON object, a member per key in the daemon's order (the first of
 * repeated names): integers as numbers, "-" (and a line without a value)
 * as null, everything else as a string; always valid JSON.
 */
void	statsfmt_json(struct buf *out, const char *body, size_t len);
/*
 * The Prometheus text format 0.0.4: pubrelay_up 1, the link state family,
 * then each metric the body has as an unsigned number, ms as exact
 * decimal seconds.
 */
void	statsfmt_prometheus(struct buf *out, const char *body, size_t len);
/* s[0..len) as a JSON string, quotes included: always valid JSON. */
void	statsfmt_json_string(struct buf *out, const char *s, size_t len);
/* pubrelay_up 0: what a scrape says when the daemon did not answer. */
void	statsfmt_prometheus_down(struct buf *out);

#endif
