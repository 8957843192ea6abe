/*
 * listener.h: the Unix stream socket: create it (refusing to steal a live
 * daemon's socket) or take the one systemd passed, accept clients up to
 * max_clients (and max_clients_per_user of each uid), pause accepting on
 * EMFILE instead of spinning.
 */
#ifndef PUBRELAY_LISTENER_H
#define PUBRELAY_LISTENER_H

#include <stddef.h>

struct config;
struct event_base;
struct ingress;
struct listener;

/*
 * Bind [socket] path with [socket] mode (and group) and listen.  Every
 * accepted peer is checked against allow_users/allow_groups and the
 * per-user limits (SO_PEERCRED).
 */
struct listener *listener_open(struct event_base *base, const struct config *cf,
	    struct ingress *ing, char *err, size_t errlen);
/*
 * Accept on fd, a listening socket the service manager passed (socket
 * activation), found at path; the listener owns fd from here on.
 */
struct listener *listener_inherit(struct event_base *base,
	    const struct config *cf, struct ingress *ing, int fd,
	    const char *path, char *err, size_t errlen);
/* Where clients connect. */
const char *listener_path(const struct listener *l);
/* Stop accepting; remove the socket file unless it was inherited. */
void	listener_close(struct listener *l);

#endif
