/*
 * config.h: the pubrelay.ini configuration (inih).  config_load() reports every
 * error as "FILE:LINE: [section] key: message" and keeps going; the caller
 * rejects the file when any error was counted.
 */
#ifndef PUBRELAY_CONFIG_H
#define PUBRELAY_CONFIG_H

#include <sys/types.h>

#include <stdint.h>
#include <stdio.h>

#define CONFIG_MAX_URIS		16

/* Defaults: every limit is named once, here. */
#define CONFIG_DEFAULT_URI		"amqp://guest:guest@localhost:5672"
#define CONFIG_DEFAULT_HEARTBEAT	30		/* s */
#define CONFIG_DEFAULT_CONNECT_TIMEOUT	5000		/* ms */
#define CONFIG_DEFAULT_RECONNECT_MIN	100		/* ms */
#define CONFIG_DEFAULT_RECONNECT_MAX	30000		/* ms */
/* TLS without ca_file: the system bundle (Debian's ca-certificates). */
#define CONFIG_DEFAULT_CA_FILE		"/etc/ssl/certs/ca-certificates.crt"
#define CONFIG_DEFAULT_SOCKET_MODE	0660
#define CONFIG_DEFAULT_MAX_CLIENTS	1024
#define CONFIG_DEFAULT_MAX_MESSAGE	(1024 * 1024)	/* bytes */
#define CONFIG_DEFAULT_MAX_BUFFER	(4ULL * 1024 * 1024)	/* bytes */
#define CONFIG_DEFAULT_IDLE_TIMEOUT	60000		/* ms */
#define CONFIG_DEFAULT_MAX_BYTES	(1024ULL * 1024 * 1024)	/* bytes */
#define CONFIG_DEFAULT_MIN_FREE		(64ULL * 1024 * 1024)	/* bytes */
#define CONFIG_DEFAULT_DEAD_MAX_BYTES	(64ULL * 1024 * 1024)	/* bytes */
#define CONFIG_DEFAULT_WINDOW		256
#define CONFIG_DEFAULT_CONFIRM_TIMEOUT	30000		/* ms */
#define CONFIG_DEFAULT_MAX_ATTEMPTS	3
#define CONFIG_DEFAULT_IDEM_WINDOW	(24ULL * 3600 * 1000)	/* ms */
#define CONFIG_DEFAULT_IDEM_MAX_KEYS	1000000

/* What to do with a message the broker refuses for good. */
enum config_policy {
	POLICY_PARK = 0,	/* after max_attempts, into the dead-letter table */
	POLICY_RETRY,		/* retry with backoff for ever, holding the queue */
};

struct config {
	/* [broker] */
	char		*uris[CONFIG_MAX_URIS];	/* as written, password included */
	int		 nuris;
	int		 uri_shuffle;		/* uri_order: 0 ordered, 1 shuffle */
	char		*password_file;
	char		*password;		/* read from password_file, or NULL */
	unsigned	 heartbeat;		/* seconds; 0 disables */
	uint64_t	 connect_timeout_ms;
	uint64_t	 reconnect_min_ms;
	uint64_t	 reconnect_max_ms;
	/* TLS (amqps:// URIs); paths checked readable at load time */
	char		*ca_file;		/* NULL: CONFIG_DEFAULT_CA_FILE */
	char		*cert_file;		/* client certificate, with key_file */
	char		*key_file;
	int		 verify_peer;		/* default 1 */
	int		 verify_hostname;	/* default 1 */
	/* [socket] */
	char		*socket_path;
	unsigned	 socket_mode;
	unsigned	 max_clients;
	unsigned	 max_clients_per_user;	/* connections of one uid; 0: off */
	uint64_t	 max_message_size;
	int		 socket_has_group;	/* group set: chgrp the socket */
	gid_t		 socket_gid;
	uid_t		*allow_uids;		/* both empty: anyone may publish */
	size_t		 nallow_uids;
	gid_t		*allow_gids;
	size_t		 nallow_gids;
	unsigned	 max_headers;		/* per request, <= PROTO_MAX_HEADERS */
	unsigned	 max_line;		/* request/property line, <= PROTO_MAX_LINE */
	uint64_t	 max_buffer;		/* bytes buffered per client */
	uint64_t	 idle_timeout_ms;	/* partial request stalled; 0: never */
	/* [outbox] */
	char		*outbox_path;
	uint64_t	 max_bytes;		/* 0: no limit */
	uint64_t	 max_bytes_per_user;	/* outbox bytes of one uid; 0: off */
	uint64_t	 min_free;		/* refuse below this much disk */
	uint64_t	 dead_max_bytes;	/* dead-letter table; 0: no limit */
	uint64_t	 idem_window_ms;	/* keys remembered; 0: keys off */
	uint64_t	 idem_max_keys;		/* at most this many kept */
	int		 sync_full;		/* 1: full (default), 0: normal */
	uint64_t	 max_age_ms;		/* park unsent after; 0: never */
	/* [publish] */
	unsigned	 window;
	int		 persistent;
	int		 mandatory;
	uint64_t	 confirm_timeout_ms;	/* oldest unconfirmed may wait */
	int		 on_unroutable;		/* enum config_policy: returns */
	int		 on_rejected;		/* channel closed: 403, 404, 406 */
	unsigned	 max_attempts;		/* attempts before parking */
	int		 provenance;		/* x-pubrelay-* headers */
	/* [metrics] */
	/*
	 * The HTTP endpoint (/metrics, /health): "ADDRESS:PORT", checked;
	 * NULL: off.
	 */
	char		*metrics_listen;
	/* [log] */
	int		 log_level;		/* syslog LOG_* */
};

/* Fill cf with the compiled-in defaults (no URI yet: see config_load). */
void	config_defaults(struct config *cf);
/*
 * Load path over the defaults.  Errors go to errf, one line each.  Returns the
 * number of errors (0: cf is valid and complete), or -1 when path cannot be
 * read at all (also reported to errf).  When no uri key is given,
 * CONFIG_DEFAULT_URI is used.
 */
int	config_load(struct config *cf, const char *path, FILE *errf);
void	config_free(struct config *cf);
/*
 * The keys config_load() knows, one row each: how a value is read, where it
 * goes in struct config and its limits.  The parser, the error messages and
 * the tests that hold the docs to the parser all read this one table.
 */
enum config_type {
	CONFIG_BOOL,		/* int: yes or no */
	CONFIG_NUMBER,		/* unsigned: decimal, min to max */
	CONFIG_SIZE,		/* bytes, units K, M, G, T; min to max */
	CONFIG_DURATION,	/* uint64_t ms; min to max in ms */
	CONFIG_SECONDS,		/* unsigned s: a duration in whole seconds;
				   min to max in ms */
	CONFIG_ENUM,		/* int: the value of one of names[] */
	CONFIG_CUSTOM,		/* set() reads and checks the value */
};

struct config_parse;

struct config_enum {
	const char	*name;		/* case-insensitive */
	int		 value;
};

struct config_key {
	const char		*section;
	const char		*name;
	enum config_type	 type;
	size_t			 offset;	/* of the field in struct config */
	size_t			 size;		/* of that field */
	uint64_t		 min;		/* numeric types */
	uint64_t		 max;
	const struct config_enum *names;	/* CONFIG_ENUM: NULL-terminated */
	/* CONFIG_CUSTOM: 0 when the value was taken, -1 when reported. */
	int			(*set)(struct config_parse *,
				    const struct config_key *, const char *);
};

/* The i-th row of the table (from 0), NULL past the last. */
const struct config_key *config_key(size_t i);

#endif
