/*
 * httpd.c: the optional HTTP endpoint, with libevent's evhttp on the main
 * event loop, beside the socket's sessions.
 *
 * A request costs the loop what a STATS request costs it: one snapshot of
 * the values (ingress_stats()), formatted once, and a non-blocking write
 * that evhttp finishes in the background; a slow or stuck scraper holds a
 * connection, never the loop.  GET and HEAD only, small headers, no body,
 * a few seconds per request: nothing here is for anyone but a scraper.
 */
#include <sys/socket.h>
#include <netinet/in.h>
#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/buffer.h>
#include <event2/event.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>
#include <event2/util.h>

#include "httpd.h"
#include "ingress.h"
#include "metrics.h"
#include "session.h"
#include "statsfmt.h"
#include "util.h"

#define HTTPD_TIMEOUT_S		10
#define HTTPD_MAX_HEADERS	8192

struct httpd {
	struct evhttp	*http;
	struct ingress	*ing;
	char		 address[80];
};

/* The values STATS would send now, as its body. */
static void
httpd_snapshot(struct httpd *h, struct metrics_snap *m, struct buf *body)
{
	ingress_stats(h->ing, m);
	m->v[M_CLIENTS] = session_count();
	metrics_format(m, body);
}

static void
httpd_send(struct evhttp_request *req, int code, const char *reason,
    const char *type, const struct buf *out)
{
	struct evbuffer	*eb = evhttp_request_get_output_buffer(req);

	evhttp_add_header(evhttp_request_get_output_headers(req),
	    "Content-Type", type);
	evhttp_add_header(evhttp_request_get_output_headers(req),
	    "Cache-Control", "no-store");
	if (out != NULL && out->len > 0)
		evbuffer_add(eb, out->data, out->len);
	evhttp_send_reply(req, code, reason, NULL);
}

/* GET /metrics: pubrelay stats --prometheus, from the daemon itself. */
static void
httpd_metrics(struct httpd *h, struct evhttp_request *req)
{
	struct metrics_snap	m;
	struct buf		body, out;

	buf_init(&body);
	buf_init(&out);
	httpd_snapshot(h, &m, &body);
	statsfmt_prometheus(&out, body.data, body.len);
	httpd_send(req, HTTP_OK, "OK", "text/plain; version=0.0.4; "
	    "charset=utf-8", &out);
	buf_free(&body);
	buf_free(&out);
}

/*
 * GET /health: 200 while the relay accepts messages (it serves only then:
 * the endpoint opens after the outbox and the socket, and closes when a
 * shutdown begins), with the link's state; "link_up" is whether it
 * publishes.  GET /health/link: 200 while the link is up, else 503, for a
 * check that wants the broker side alone.
 */
static void
httpd_health(struct httpd *h, struct evhttp_request *req, int link_only)
{
	struct metrics_snap	m;
	struct buf		body, out;
	int			up;

	buf_init(&body);
	buf_init(&out);
	httpd_snapshot(h, &m, &body);
	up = strcmp(m.str[M_STATE], "connected") == 0;
	buf_appends(&out, "{\"ready\": true, \"link_up\": ");
	buf_appends(&out, up ? "true" : "false");
	buf_appends(&out, ", \"link\": ");
	statsfmt_json_string(&out, m.str[M_STATE], strlen(m.str[M_STATE]));
	buf_appends(&out, ", \"broker\": ");
	statsfmt_json_string(&out, m.str[M_BROKER], strlen(m.str[M_BROKER]));
	buf_printf(&out, ", \"backlog\": %llu, \"oldest_age_ms\": %llu}\n",
	    (unsigned long long)m.v[M_BACKLOG],
	    (unsigned long long)m.v[M_OLDEST_AGE_MS]);
	if (link_only && !up)
		httpd_send(req, 503, "Service Unavailable", "application/json",
		    &out);
	else
		httpd_send(req, HTTP_OK, "OK", "application/json", &out);
	buf_free(&body);
	buf_free(&out);
}

static void
httpd_cb(struct evhttp_request *req, void *arg)
{
	struct httpd		*h = arg;
	const char		*path;
	struct evhttp_uri	*uri;
	struct buf		 msg;

	buf_init(&msg);
	uri = evhttp_uri_parse(evhttp_request_get_uri(req));
	path = uri != NULL ? evhttp_uri_get_path(uri) : NULL;
	if (path == NULL || *path == '\0')
		path = "/";
	if (strcmp(path, "/metrics") == 0)
		httpd_metrics(h, req);
	else if (strcmp(path, "/health") == 0)
		httpd_health(h, req, 0);
	else if (strcmp(path, "/health/link") == 0)
		httpd_health(h, req, 1);
	else {
		buf_appends(&msg, "not found: pubrelayd serves /metrics, "
		    "/health and /health/link\n");
		httpd_send(req, HTTP_NOTFOUND, "Not Found",
		    "text/plain; charset=utf-8", &msg);
	}
	if (uri != NULL)
		evhttp_uri_free(uri);
	buf_free(&msg);
}

struct httpd *
httpd_open(struct event_base *base, const char *addr, struct ingress *ing,
    char *err, size_t errlen)
{
	struct httpd			*h;
	struct evhttp_bound_socket	*bs;
	struct sockaddr_storage		 ss;
	socklen_t			 sslen = sizeof(ss);
	int				 len = (int)sizeof(ss);
	char				 host[INET6_ADDRSTRLEN];
	evutil_socket_t			 fd;
	uint16_t			 port;

	memset(&ss, 0, sizeof(ss));
	if (evutil_parse_sockaddr_port(addr, (struct sockaddr *)&ss,
	    &len) == -1) {
		snprintf(err, errlen, "[metrics] listen %s: not ADDRESS:PORT",
		    addr);
		return NULL;
	}
	h = xcalloc(1, sizeof(*h));
	h->ing = ing;
	if ((h->http = evhttp_new(base)) == NULL) {
		snprintf(err, errlen, "[metrics] listen %s: cannot set up the "
		    "HTTP server", addr);
		free(h);
		return NULL;
	}
	evhttp_set_allowed_methods(h->http, EVHTTP_REQ_GET | EVHTTP_REQ_HEAD);
	evhttp_set_max_headers_size(h->http, HTTPD_MAX_HEADERS);
	evhttp_set_max_body_size(h->http, 0);
	evhttp_set_timeout(h->http, HTTPD_TIMEOUT_S);
	evhttp_set_gencb(h->http, httpd_cb, h);
	fd = socket(ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC,
	    0);
	if (fd == -1 || evutil_make_listen_socket_reuseable(fd) == -1 ||
	    bind(fd, (struct sockaddr *)&ss, (socklen_t)len) == -1 ||
	    listen(fd, 64) == -1 ||
	    getsockname(fd, (struct sockaddr *)&ss, &sslen) == -1 ||
	    (bs = evhttp_accept_socket_with_handle(h->http, fd)) == NULL) {
		snprintf(err, errlen, "[metrics] listen %s: %s", addr,
		    evutil_socket_error_to_string(EVUTIL_SOCKET_ERROR()));
		if (fd != -1)
			evutil_closesocket(fd);
		evhttp_free(h->http);
		free(h);
		return NULL;
	}
	(void)bs;
	if (ss.ss_family == AF_INET6) {
		struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)&ss;

		inet_ntop(AF_INET6, &s6->sin6_addr, host, sizeof(host));
		port = ntohs(s6->sin6_port);
		snprintf(h->address, sizeof(h->address), "[%s]:%u", host,
		    port);
	} else {
		struct sockaddr_in *s4 = (struct sockaddr_in *)&ss;

		inet_ntop(AF_INET, &s4->sin_addr, host, sizeof(host));
		port = ntohs(s4->sin_port);
		snprintf(h->address, sizeof(h->address), "%s:%u", host, port);
	}
	return h;
}

const char *
httpd_address(const struct httpd *h)
{
	return h->address;
}

void
httpd_close(struct httpd *h)
{
	if (h == NULL)
		return;
	evhttp_free(h->http);
	free(h);
}
