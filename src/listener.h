/*
 * listener.h: the Unix stream socket: create it (refusing to steal a live
 * daemon's socket), accept clients up to max_clients, pause accepting on
 * EMFILE instead of spinning.
 */
#ifndef PUBRELAY_LISTENER_H
#define PUBRELAY_LISTENER_H

#include <stddef.h>

struct config;
struct event_base;
struct ingress;
struct listener;

struct listener *listener_open(struct event_base *base, const struct config *cf,
	    struct ingress *ing, char *err, size_t errlen);
/* Stop accepting and remove the socket file. */
void	listener_close(struct listener *l);

#endif
