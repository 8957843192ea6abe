/*
 * protocol.h: the pubrelay socket protocol.  Pure parser and encoder: no I/O,
 * no allocation in the parser, so unit tests and fuzzers reach it directly and
 * the client shares the encoder with the daemon.
 *
 * pubrelay-protocol(7) describes the protocol in full, for client authors;
 * keep it in step with this parser.  In short (one reply per request, in
 * request order; any request may get "ERR <CODE> <text>" instead):
 *
 *   PUB <length>\n                     -> OK <message-id>\n
 *   <name>: <value>\n ...              (property names: prop_defs[])
 *   \n
 *   <length bytes>\n
 *   PING\n                             -> PONG\n
 *   STATS\n                            -> STATS <n>\n + n bytes
 *   RESET\n                            -> OK\n
 *   DEAD LIST [<max>] [AFTER <id>]\n   -> DEAD <n>\n + n bytes
 *   DEAD RETRY|PURGE <id>|ALL\n        -> OK <count>\n
 *   WAIT [<ms>]\n                      -> OK <dead>\n | TIMEOUT\n
 *   STATUS <message-id>\n              -> QUEUED|INFLIGHT|CONFIRMED|UNKNOWN
 *                                          <message-id>\n |
 *                                          PARKED <message-id> <reason>\n
 * A PUB with "confirm: <ms>" is answered once the broker confirmed it:
 *   CONFIRMED <message-id>\n | PARKED <message-id> <reason>\n |
 *   TIMEOUT <message-id>\n
 */
#ifndef PUBRELAY_PROTOCOL_H
#define PUBRELAY_PROTOCOL_H

#include <stddef.h>
#include <stdint.h>

#include "util.h"

/* Error codes sent as "ERR <CODE> <text>". */
#define PROTO_E_BADREQ	 "BADREQ"	/* malformed request; connection kept */
#define PROTO_E_TOOBIG	 "TOOBIG"	/* body over max_message_size; kept */
#define PROTO_E_UNKNOWN	 "UNKNOWN"	/* unknown verb; connection kept */
#define PROTO_E_PROTO	 "PROTO"	/* cannot resynchronise; closed */
#define PROTO_E_FULL	 "FULL"		/* outbox full: retry later */
#define PROTO_E_STORE	 "STORE"	/* outbox write failed: retry later */
#define PROTO_E_SKIPPED	 "SKIPPED"	/* an earlier PUB here was refused */
#define PROTO_E_SHUTDOWN "SHUTDOWN"	/* daemon stopping: retry later */
#define PROTO_E_LIMIT	 "LIMIT"	/* too many clients; closed */
#define PROTO_E_NOTFOUND "NOTFOUND"	/* DEAD RETRY/PURGE: no such id */
#define PROTO_E_DENIED	 "DENIED"	/* peer not in allow_users/groups; closed */

#define PROTO_SHORTSTR_MAX	255	/* AMQP shortstr */
#define PROTO_MAX_HEADERS	128	/* "header:" lines in one request */
#define PROTO_MAX_LINE		8192	/* one request or property line, with EOL */
#define PROTO_MAX_BLOCK		65536	/* the whole property block */
/* The largest body a daemon may take: [socket] max_message_size at most. */
#define PROTO_MAX_BODY		(128 * 1024 * 1024)
/*
 * A stored block (outbox, dead letters) may be longer by the message-id
 * line a park adds when the client gave none (outbox_park_props(): a
 * newline, "message-id: " and <16 hex digits>-<id>, then a newline), so a
 * replayed message keeps the id its OK named.  proto_parse_props() takes
 * that much; requests are held to PROTO_MAX_BLOCK while they are read.
 */
#define PROTO_PARK_ID_ROOM	64
/* And by the header lines of [publish] provenance (provenance.h). */
#define PROTO_STAMP_ROOM	512
#define PROTO_MAX_STORED_BLOCK	(PROTO_MAX_BLOCK + PROTO_PARK_ID_ROOM + \
				    PROTO_STAMP_ROOM)
#define PROTO_DEAD_LIST_MAX	100000	/* DEAD LIST <max> */
#define PROTO_DEAD_LIST_DEFAULT	1000	/* DEAD LIST without a max */
#define PROTO_WAIT_MAX_MS	86400000 /* confirm: and WAIT, at most a day */
#define PROTO_MAX_AGE_MAX_MS	315360000000ULL	/* max-age: ten years */

struct proto_str {
	const char	*p;		/* borrowed; NULL when absent */
	size_t		 len;
};

struct proto_header {
	struct proto_str name;
	struct proto_str value;
};

/* A PUB request.  Every pointer borrows from the parsed buffer. */
struct proto_pub {
	struct proto_str exchange;
	struct proto_str routing_key;
	struct proto_str content_type;
	struct proto_str content_encoding;
	struct proto_str correlation_id;
	struct proto_str reply_to;
	struct proto_str expiration;
	struct proto_str message_id;
	struct proto_str type;
	struct proto_str app_id;
	/* Not an AMQP property: the daemon's de-duplication key. */
	struct proto_str idempotency_key;
	int		 mandatory;	/* -1 unset, 0, 1 */
	int		 delivery_mode;	/* 0 unset, 1, 2 */
	int		 priority;	/* -1 unset, 0..255 */
	int		 has_timestamp;
	uint64_t	 timestamp;
	unsigned	 confirm_ms;	/* "confirm:", 0: answer OK at commit */
	/* "max-age:": park, not publish, this long after it was accepted */
	uint64_t	 max_age_ms;	/* 0: [outbox] max_age */
	unsigned	 nheaders;
	struct proto_header headers[PROTO_MAX_HEADERS];
	struct proto_str props;		/* the raw property block (stored as is) */
	struct proto_str body;
};

enum proto_verb {
	PROTO_PUB = 1,
	PROTO_PING,
	PROTO_STATS,
	PROTO_RESET,
	PROTO_DEAD,
	PROTO_WAIT,
	PROTO_STATUS,
};

enum proto_dead_op {
	PROTO_DEAD_LIST = 1,
	PROTO_DEAD_RETRY,
	PROTO_DEAD_PURGE,
};

enum proto_status {
	PROTO_INCOMPLETE = 0,	/* need more bytes; see req->need */
	PROTO_DONE = 1,		/* one request parsed; *consumed bytes */
	PROTO_BAD = -1,		/* refused, framing kept; discard *consumed */
	PROTO_FATAL = -2,	/* cannot resynchronise: reply and close */
};

struct proto_limits {
	size_t	 max_body;	/* bodies longer get TOOBIG */
	size_t	 max_line;	/* 0 or up to PROTO_MAX_LINE; longer: PROTO */
	unsigned max_headers;	/* 0 or up to PROTO_MAX_HEADERS; more: BADREQ */
};

struct proto_req {
	enum proto_verb	 verb;
	struct proto_pub pub;		/* valid when verb == PROTO_PUB */
	enum proto_dead_op dead_op;	/* verb == PROTO_DEAD */
	int64_t		 dead_id;	/* RETRY/PURGE: id, 0 for ALL */
	unsigned	 dead_max;	/* LIST: at most this many, 0: default */
	int64_t		 dead_after;	/* LIST: ids above this one */
	unsigned	 wait_ms;	/* WAIT: time limit, 0: none */
	struct proto_str status_mid;	/* STATUS: the message-id asked of */
	size_t		 need;		/* INCOMPLETE: total bytes needed, 0 if unknown */
	const char	*err_code;	/* BAD/FATAL: one of PROTO_E_* */
	char		 err[256];	/* BAD/FATAL: human-readable reason */
};

/*
 * Parse one request from the start of buf[0..len).
 * DONE: req filled, *consumed = its length (leading empty lines included).
 * INCOMPLETE: *consumed = 0; req->need > len when the total length is known.
 * BAD: req->err_code/err set; *consumed = bytes to discard, which may exceed len
 *      (an oversized body is skipped as it arrives without being buffered).
 * FATAL: req->err_code/err set; the caller replies and closes.
 */
/*
 * The values of STATS "state", the broker link's, in the order of enum
 * link_state (stats.h): one list for the daemon, its log and the client.
 */
#define PROTO_LINK_STATES	5
extern const char *const proto_link_states[PROTO_LINK_STATES];
/* Its name, "unknown" out of range. */
const char *proto_link_state(int state);

int	proto_parse(const char *buf, size_t len, const struct proto_limits *lim,
	    struct proto_req *req, size_t *consumed);

/*
 * Parse a stored property block (as in pub->props) into pub; the other fields of
 * pub are reset first.  0 on success, -1 with err filled otherwise.
 */
int	proto_parse_props(const char *block, size_t len, struct proto_pub *pub,
	    char *err, size_t errlen);

/* Start pub with every property unset. */
void	proto_pub_init(struct proto_pub *pub);

/*
 * Append a complete PUB request for pub (its props field is ignored; the block
 * is built from the fields) to out.  0 on success, -1 with err filled when a
 * field cannot be encoded (a newline in a value, a short string too long...).
 */
int	proto_encode_pub(struct buf *out, const struct proto_pub *pub,
	    char *err, size_t errlen);

/*
 * Append one DEAD LIST line (with its "\n") for a dead letter to out:
 * exchange, routing key and message-id come from props (parsed from the
 * stored block; NULL: none), reason may be NULL.
 */
void	proto_dead_line(struct buf *out, int64_t id, int64_t parked_ms,
	    unsigned attempts, uint64_t bytes, const struct proto_pub *props,
	    const char *reason);

/*
 * The error of a reply to a failed outbox write, why being the store's
 * message: into err, and its code returned (FULL when the disk or the
 * database is full, else STORE).
 */
const char *proto_store_error(int full, const char *why, char *err,
	    size_t errlen);

#endif
