/*
 * session.h: one client connection: framing, parsing with protocol.c, replies
 * in request order.  Knows no AMQP; hands PUBs to ingress.c.
 */
#ifndef PUBRELAY_SESSION_H
#define PUBRELAY_SESSION_H

#include <stdint.h>

struct config;
struct ingress;
struct session;
struct ucred;
struct user;

/*
 * Take ownership of the connected socket fd, whose peer is uc (NULL: not
 * known), and of one connection of user u (NULL: no per-user limits), given
 * back when the session is freed; limits from cf's [socket].
 */
struct session *session_new(struct ingress *ing, int fd,
	    const struct config *cf, const struct ucred *uc, struct user *u);
/*
 * The transaction holding s's messages committed (ok) or was rolled back:
 * ingress's done callback (ingress_done_fn), s a struct session.
 */
void	session_committed(void *s, int ok, const char *code, const char *err);
/* Number of open sessions. */
unsigned session_count(void);
/*
 * Shutdown, in two steps around the last commit: stop reading and parsing;
 * then answer what was committed (ERR SHUTDOWN for the first request left
 * unread) and close each session once its replies are written.
 */
void	session_drain_all(void);
void	session_close_all(void);

#endif
