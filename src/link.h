/*
 * link.h: one AMQP connection to one broker, opened with blocking calls
 * bounded by the config's timeouts: TCP or TLS, login, a channel in confirm
 * mode.  The publisher thread owns the connection; this module only opens
 * it and says why it could not.
 */
#ifndef PUBRELAY_LINK_H
#define PUBRELAY_LINK_H

#include <stddef.h>

#include <amqp.h>

struct config;

struct link_params {
	const struct config	*cf;
	const char		*uri;		/* with credentials */
	amqp_channel_t		 channel;
	/* The socket is open, before the login: fd is conn's. */
	void			(*opened_cb)(void *arg, int fd);
	void			*arg;
};

/*
 * Connect conn to lp->uri, log in and open lp->channel in confirm mode.
 * 0, with *tls set; or -1 with why set (conn is the caller's to destroy).
 */
int	link_open(amqp_connection_state_t conn, const struct link_params *lp,
	    int *tls, char *why, size_t n);
/* Open channel ch in confirm mode.  0, or -1 with why set. */
int	link_channel_open(amqp_connection_state_t conn, amqp_channel_t ch,
	    char *why, size_t n);
/* What an RPC reply says, into buf. */
const char *link_reply_text(amqp_rpc_reply_t r, char *buf, size_t n);
/*
 * How long a broker may send nothing while bytes wait to be sent to it
 * (TCP_USER_TIMEOUT), in ms.
 */
unsigned int link_user_timeout(const struct config *cf);

#endif
