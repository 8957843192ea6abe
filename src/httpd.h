/*
 * httpd.h: the optional HTTP endpoint ([metrics] listen) on the main event
 * loop: GET /metrics, the STATS values in the Prometheus text format (the
 * names of `pubrelay stats --prometheus`); GET /health, whether the relay
 * is ready and its broker link up.  pubrelayd(8), section METRICS.
 */
#ifndef PUBRELAY_HTTPD_H
#define PUBRELAY_HTTPD_H

#include <stddef.h>

struct event_base;
struct ingress;
struct httpd;

/*
 * Listen on addr ("ADDRESS:PORT", as config.c checked it).  NULL with
 * the reason in err when it cannot.
 */
struct httpd	*httpd_open(struct event_base *base, const char *addr,
		    struct ingress *ing, char *err, size_t errlen);
/* The address it listens on, "ADDRESS:PORT" (port 0 resolved). */
const char	*httpd_address(const struct httpd *h);
/* Stop listening; requests in progress are dropped.  NULL is fine. */
void		 httpd_close(struct httpd *h);

#endif
