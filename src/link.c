/*
 * link.c: one AMQP connection to one broker: a TCP or TLS connect with a
 * deadline, the login (advertising the capabilities the publisher needs),
 * the channel in confirm mode.  Blocking calls, bounded by the config's
 * timeouts; no event loop, no window, no outbox.  publisher.c decides when
 * to connect, to which URI, and what a failure means.
 */
#include <sys/socket.h>
#include <poll.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <netdb.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <amqp.h>
#include <amqp_ssl_socket.h>
#include <amqp_tcp_socket.h>

#include "config.h"
#include "link.h"
#include "util.h"

#define LINK_FRAME_MAX		131072
#define LINK_PROBE_MS		2000	/* a TLS connect failed: ask why */

static int64_t
link_now_ms(void)
{
	struct timespec	ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

const char *
link_reply_text(amqp_rpc_reply_t r, char *buf, size_t n)
{
	switch (r.reply_type) {
	case AMQP_RESPONSE_NORMAL:
		snprintf(buf, n, "ok");
		break;
	case AMQP_RESPONSE_NONE:
		snprintf(buf, n, "missing RPC reply");
		break;
	case AMQP_RESPONSE_LIBRARY_EXCEPTION:
		snprintf(buf, n, "%s", amqp_error_string2(r.library_error));
		break;
	case AMQP_RESPONSE_SERVER_EXCEPTION:
		if (r.reply.id == AMQP_CONNECTION_CLOSE_METHOD) {
			amqp_connection_close_t *m = r.reply.decoded;

			snprintf(buf, n, "connection closed by broker: %u %.*s",
			    m->reply_code, (int)m->reply_text.len,
			    (const char *)m->reply_text.bytes);
		} else if (r.reply.id == AMQP_CHANNEL_CLOSE_METHOD) {
			amqp_channel_close_t *m = r.reply.decoded;

			snprintf(buf, n, "channel closed by broker: %u %.*s",
			    m->reply_code, (int)m->reply_text.len,
			    (const char *)m->reply_text.bytes);
		} else
			snprintf(buf, n, "unexpected server method 0x%08x",
			    r.reply.id);
		break;
	}
	return buf;
}

/*
 * How long a broker may send nothing while bytes wait to be sent to it: 2 x
 * heartbeat, four of the heartbeats it sends when idle (every heartbeat / 2).
 * Without heartbeats a live broker may be silent for ever: a fixed 60 s.
 */
unsigned int
link_user_timeout(const struct config *cf)
{
	return cf->heartbeat ? cf->heartbeat * 2000 : 60000;
}

static void
link_tune_socket(int fd, const struct config *cf)
{
	int		 on = 1, idle, intvl = 5, cnt = 3;
	unsigned int	 uto;

	/*
	 * A peer that acknowledges nothing (a dead host, a cut cable) ends the
	 * connection in the kernel after the user timeout, whatever call the
	 * publisher waits in.  Suspended while the peer holds its window
	 * closed: publisher.c, pub_watch_window().
	 */
	uto = link_user_timeout(cf);
	idle = cf->heartbeat ? (int)cf->heartbeat : 30;
	setsockopt(fd, IPPROTO_TCP, TCP_USER_TIMEOUT, &uto, sizeof(uto));
	setsockopt(fd, SOL_SOCKET, SO_KEEPALIVE, &on, sizeof(on));
	setsockopt(fd, IPPROTO_TCP, TCP_KEEPIDLE, &idle, sizeof(idle));
	setsockopt(fd, IPPROTO_TCP, TCP_KEEPINTVL, &intvl, sizeof(intvl));
	setsockopt(fd, IPPROTO_TCP, TCP_KEEPCNT, &cnt, sizeof(cnt));
}

/*
 * A TCP connection to host:port within timeout_ms, each address in turn, as
 * rabbitmq-c's amqp_socket_open_noblock() makes it (non-blocking, close on
 * exec, no Nagle, keepalive), but keeping why a connect failed: 0.11 says
 * "a socket error occurred" for refused, unreachable and out of
 * descriptors alike.  The socket, or -1 with why set.
 */
static int
link_tcp_connect(const char *host, int port, int64_t timeout_ms, char *why,
    size_t n)
{
	struct addrinfo	 hints, *res, *ai;
	struct pollfd	 pfd;
	socklen_t	 sl;
	char		 service[16];
	int64_t		 deadline = link_now_ms() + timeout_ms, left;
	int		 fd = -1, rc, err = 0, one = 1;

	memset(&hints, 0, sizeof(hints));
	hints.ai_family = AF_UNSPEC;
	hints.ai_socktype = SOCK_STREAM;
	hints.ai_protocol = IPPROTO_TCP;
	snprintf(service, sizeof(service), "%d", port);
	if ((rc = getaddrinfo(host, service, &hints, &res)) != 0) {
		snprintf(why, n, "cannot resolve %s: %s", host,
		    rc == EAI_SYSTEM ? strerror(errno) : gai_strerror(rc));
		return -1;
	}
	for (ai = res; ai != NULL && err != ETIMEDOUT; ai = ai->ai_next) {
		fd = socket(ai->ai_family, ai->ai_socktype | SOCK_NONBLOCK |
		    SOCK_CLOEXEC, ai->ai_protocol);
		if (fd == -1) {
			err = errno;
			continue;
		}
		(void)setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one,
		    sizeof(one));
		(void)setsockopt(fd, SOL_SOCKET, SO_KEEPALIVE, &one,
		    sizeof(one));
		if (connect(fd, ai->ai_addr, ai->ai_addrlen) == 0)
			break;
		if ((err = errno) == EINPROGRESS) {
			pfd.fd = fd;
			pfd.events = POLLOUT;
			do {
				left = deadline - link_now_ms();
				rc = left > 0 ? poll(&pfd, 1, (int)left) : 0;
			} while (rc == -1 && errno == EINTR);
			sl = sizeof(err);
			if (rc == 0)
				err = ETIMEDOUT;	/* for all addresses */
			else if (rc == -1)
				err = errno;
			else if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err,
			    &sl) == -1)
				err = errno;
			else if (err == 0)
				break;
		}
		close(fd);
		fd = -1;
	}
	freeaddrinfo(res);
	if (fd == -1)
		snprintf(why, n, "%s", err == ETIMEDOUT ? "timed out" :
		    strerror(err));
	return fd;
}

/*
 * An amqps:// socket: CA, client certificate, verification, TLS 1.2 or
 * later.  The files were checked at config load; they are read again here,
 * at each connect, so renewed certificates are picked up.  NULL on failure,
 * with why set.
 */
static amqp_socket_t *
link_tls_socket(amqp_connection_state_t conn, const struct config *cf,
    char *why, size_t n)
{
	const char		*ca;
	amqp_socket_t		*sock;
	int			 rc;

	if ((sock = amqp_ssl_socket_new(conn)) == NULL) {
		snprintf(why, n, "TLS: cannot create the TLS socket");
		return NULL;
	}
	rc = amqp_ssl_socket_set_ssl_versions(sock, AMQP_TLSv1_2,
	    AMQP_TLSvLATEST);
	if (rc != AMQP_STATUS_OK) {
		snprintf(why, n, "TLS: cannot require TLS 1.2 or later: %s",
		    amqp_error_string2(rc));
		return NULL;
	}
	amqp_ssl_socket_set_verify_peer(sock, cf->verify_peer != 0);
	amqp_ssl_socket_set_verify_hostname(sock, cf->verify_hostname != 0);
	ca = cf->ca_file != NULL ? cf->ca_file : CONFIG_DEFAULT_CA_FILE;
	if (cf->verify_peer || cf->ca_file != NULL) {
		rc = amqp_ssl_socket_set_cacert(sock, ca);
		if (rc != AMQP_STATUS_OK) {
			snprintf(why, n, "TLS: cannot load the CA certificates "
			    "in %s (ca_file): %s", ca, amqp_error_string2(rc));
			return NULL;
		}
	}
	if (cf->cert_file != NULL && cf->key_file != NULL) {
		rc = amqp_ssl_socket_set_key(sock, cf->cert_file,
		    cf->key_file);
		if (rc != AMQP_STATUS_OK) {
			snprintf(why, n, "TLS: cannot load the client "
			    "certificate %s (cert_file) with the key %s "
			    "(key_file; do they match?): %s", cf->cert_file,
			    cf->key_file, amqp_error_string2(rc));
			return NULL;
		}
	}
	return sock;
}

/* What a failed TLS open means (rabbitmq-c's text says little). */
static const char *
link_tls_open_error(int rc)
{
	switch (rc) {
	case AMQP_STATUS_SSL_PEER_VERIFY_FAILED:
		return "TLS: certificate verify failed: the broker's "
		    "certificate is not signed by a CA in ca_file, or expired";
	case AMQP_STATUS_SSL_HOSTNAME_VERIFY_FAILED:
		return "TLS: hostname verification failed: the broker's "
		    "certificate is not for the host in the uri";
	case AMQP_STATUS_SSL_CONNECTION_FAILED:
		return "TLS: handshake failed: the port does not speak TLS "
		    "(amqps:// wants the broker's TLS listener, 5671 by "
		    "default), no common TLS version (1.2 or later), or the "
		    "client certificate was refused or missing";
	default:
		return amqp_error_string2(rc);
	}
}

int
link_channel_open(amqp_connection_state_t conn, amqp_channel_t ch, char *why,
    size_t n)
{
	amqp_rpc_reply_t	 r;
	char			 text[256];

	amqp_channel_open(conn, ch);
	r = amqp_get_rpc_reply(conn);
	if (r.reply_type != AMQP_RESPONSE_NORMAL) {
		snprintf(why, n, "channel.open: %s", link_reply_text(r, text,
		    sizeof(text)));
		return -1;
	}
	amqp_confirm_select(conn, ch);
	r = amqp_get_rpc_reply(conn);
	if (r.reply_type != AMQP_RESPONSE_NORMAL) {
		snprintf(why, n, "confirm.select: %s", link_reply_text(r, text,
		    sizeof(text)));
		return -1;
	}
	return 0;
}

/* The socket of conn to uri: TCP or TLS.  0, or -1 with why set. */
static int
link_connect(amqp_connection_state_t conn, const struct config *cf,
    struct amqp_connection_info *ci, char *why, size_t n)
{
	amqp_socket_t	*sock;
	struct timeval	 tv;
	char		 cause[256];
	int		 rc, fd;

	if (ci->ssl)
		sock = link_tls_socket(conn, cf, cause, sizeof(cause));
	else if ((sock = amqp_tcp_socket_new(conn)) == NULL)
		snprintf(cause, sizeof(cause), "out of memory creating the "
		    "socket");
	if (sock == NULL) {
		snprintf(why, n, "%s", cause);
		return -1;
	}
	if (!ci->ssl) {
		if ((fd = link_tcp_connect(ci->host, ci->port,
		    cf->connect_timeout_ms, cause, sizeof(cause))) == -1) {
			snprintf(why, n, "connect to %s:%d: %s", ci->host,
			    ci->port, cause);
			return -1;
		}
		amqp_tcp_socket_set_sockfd(sock, fd);
		return 0;
	}
	tv.tv_sec = (time_t)(cf->connect_timeout_ms / 1000);
	tv.tv_usec = (suseconds_t)(cf->connect_timeout_ms % 1000) * 1000;
	rc = amqp_socket_open_noblock(sock, ci->host, ci->port, &tv);
	if (rc == AMQP_STATUS_SOCKET_ERROR && (fd = link_tcp_connect(
	    ci->host, ci->port, LINK_PROBE_MS, cause, sizeof(cause))) != -1) {
		close(fd);	/* it works now: no cause to tell */
		snprintf(cause, sizeof(cause), "%s", link_tls_open_error(rc));
	} else if (rc != AMQP_STATUS_SOCKET_ERROR)
		snprintf(cause, sizeof(cause), "%s", link_tls_open_error(rc));
	/* else: the cause, from a plain connect like rabbitmq-c's */
	if (rc != AMQP_STATUS_OK) {
		snprintf(why, n, "connect to %s:%d: %s", ci->host, ci->port,
		    cause);
		return -1;
	}
	return 0;
}

int
link_open(amqp_connection_state_t conn, const struct link_params *lp,
    int *tls, char *why, size_t n)
{
	const struct config		*cf = lp->cf;
	struct amqp_connection_info	 ci;
	amqp_rpc_reply_t		 r;
	amqp_table_entry_t		 caps[3], props[3];
	amqp_table_t			 client_props;
	struct timeval			 tv;
	char				*url, text[256];
	const char			*password;
	int				 fd, rc = -1;

	url = xstrdup(lp->uri);
	amqp_default_connection_info(&ci);
	if (amqp_parse_url(url, &ci) != AMQP_STATUS_OK) {
		snprintf(why, n, "cannot parse the URI");
		goto out;
	}
	*tls = ci.ssl != 0;
	password = cf->password != NULL ? cf->password : ci.password;
	if (link_connect(conn, cf, &ci, why, n) == -1)
		goto out;
	fd = amqp_get_sockfd(conn);
	if (lp->opened_cb != NULL)
		lp->opened_cb(lp->arg, fd);
	link_tune_socket(fd, cf);
	tv.tv_sec = (time_t)(cf->connect_timeout_ms / 1000);
	tv.tv_usec = (suseconds_t)(cf->connect_timeout_ms % 1000) * 1000;
	amqp_set_handshake_timeout(conn, &tv);
	amqp_set_rpc_timeout(conn, &tv);

	/* Advertise connection.blocked so resource alarms are reported. */
	caps[0].key = amqp_cstring_bytes("connection.blocked");
	caps[0].value.kind = AMQP_FIELD_KIND_BOOLEAN;
	caps[0].value.value.boolean = 1;
	caps[1].key = amqp_cstring_bytes("publisher_confirms");
	caps[1].value.kind = AMQP_FIELD_KIND_BOOLEAN;
	caps[1].value.value.boolean = 1;
	caps[2].key = amqp_cstring_bytes("basic.nack");
	caps[2].value.kind = AMQP_FIELD_KIND_BOOLEAN;
	caps[2].value.value.boolean = 1;
	props[0].key = amqp_cstring_bytes("product");
	props[0].value.kind = AMQP_FIELD_KIND_UTF8;
	props[0].value.value.bytes = amqp_cstring_bytes("pubrelay");
	props[1].key = amqp_cstring_bytes("version");
	props[1].value.kind = AMQP_FIELD_KIND_UTF8;
	props[1].value.value.bytes = amqp_cstring_bytes(PACKAGE_VERSION);
	props[2].key = amqp_cstring_bytes("capabilities");
	props[2].value.kind = AMQP_FIELD_KIND_TABLE;
	props[2].value.value.table.num_entries = 3;
	props[2].value.value.table.entries = caps;
	client_props.num_entries = 3;
	client_props.entries = props;

	r = amqp_login_with_properties(conn, ci.vhost, 0, LINK_FRAME_MAX,
	    (int)cf->heartbeat, &client_props, AMQP_SASL_METHOD_PLAIN,
	    ci.user, password);
	if (r.reply_type != AMQP_RESPONSE_NORMAL) {
		/* TLS 1.3: a refused client certificate shows up here. */
		if (ci.ssl && r.reply_type == AMQP_RESPONSE_LIBRARY_EXCEPTION &&
		    r.library_error == AMQP_STATUS_SSL_ERROR)
			snprintf(why, n, "login: TLS: %s (did the broker "
			    "refuse or miss the client certificate, "
			    "cert_file?)", amqp_error_string2(r.library_error));
		else
			snprintf(why, n, "login: %s",
			    link_reply_text(r, text, sizeof(text)));
		goto out;
	}
	if (link_channel_open(conn, lp->channel, why, n) == -1)
		goto out;
	amqp_maybe_release_buffers(conn);
	rc = 0;
 out:
	free(url);
	return rc;
}
