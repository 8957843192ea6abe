/*
 * wire.h: the pure half of libpubrelay: which properties exist and what
 * values they take, and the reading of reply lines.  No I/O, no
 * allocation, so tests/test_libwire.c reaches it directly.  Not exported:
 * libpubrelay.sym keeps these symbols local.
 */
#ifndef PUBRELAY_WIRE_H
#define PUBRELAY_WIRE_H

#include <stddef.h>
#include <stdint.h>

/*
 * The symbols carry the library's prefix: the static libpubrelay.a has no
 * version script, and wire_reply() is a name an application may use.
 */
#define wire_prop_name		pubrelay_wire_prop_name
#define wire_prop_repeats	pubrelay_wire_prop_repeats
#define wire_prop_check		pubrelay_wire_prop_check
#define wire_reply		pubrelay_wire_reply
#define wire_err_code		pubrelay_wire_err_code
#define wire_err_closes		pubrelay_wire_err_closes
#define wire_stat		pubrelay_wire_stat

#define WIRE_SHORTSTR_MAX	255	/* an AMQP short string */
#define WIRE_MAX_LINE		8192	/* a request or property line, EOL too */
#define WIRE_MAX_BLOCK		65536	/* the whole property block */
#define WIRE_MAX_MS		86400000 /* confirm: and WAIT, a day */
#define WIRE_MAX_STATS		(16 * 1024 * 1024)
#define WIRE_MAX_DEAD		(256 * 1024 * 1024)	/* a DEAD LIST page */
#define WIRE_DEAD_LIST_MAX	100000	/* DEAD LIST <max> */

/* What a reply answers: it decides which replies are valid. */
enum wire_req {
	WIRE_PUB = 0,
	WIRE_PUB_CONFIRM,
	WIRE_PING,
	WIRE_RESET,
	WIRE_WAIT,
	WIRE_STATUS,
	WIRE_STATS,
	WIRE_DEAD_LIST,
	WIRE_DEAD_MOVE,		/* DEAD RETRY, DEAD PURGE */
	WIRE_NONE,		/* nothing asked: only ERR is a reply */
};

/* A reply line read; pointers borrow from the line. */
struct wire_reply {
	const char	*id;		/* message-id, when the reply names one */
	size_t		 idlen;
	const char	*text;		/* ERR text, PARKED reason */
	size_t		 textlen;
	uint64_t	 n;		/* STATS <n>, DEAD <n>, OK <count> */
};

/*
 * The canonical name of a property (case-insensitive), or NULL when the
 * protocol has none of that name.
 */
const char	*wire_prop_name(const char *name);
/* Whether a property may appear more than once ("header"). */
int		 wire_prop_repeats(const char *canonical);
/*
 * Whether value can be sent for the property: 0, or -1 with err filled,
 * in the words of pubrelayd's own encoder (src/protocol.c).  Only what the
 * encoding needs and what the daemon could never take is checked here (the
 * daemon checks numbers and the rest).
 */
int		 wire_prop_check(const char *canonical, const char *value,
		    char *err, size_t errlen);

/*
 * Read one reply line (without its "\n"; a "\r" before it is dropped) to a
 * request of kind req.  mid: the message-id the request gave (PUB's
 * property, STATUS's argument), or NULL: a PARKED reply's id is that one
 * when the line starts with it, else the line up to a blank.  A reply to
 * STATUS must name mid.  Returns a
 * pubrelay_state (>= 0), or a PUBRELAY_E_* code: the daemon's ERR code
 * (r->text its text), or PUBRELAY_E_REPLY for a line that does not answer
 * req.
 */
int		 wire_reply(enum wire_req req, const char *line, size_t len,
		    const char *mid, size_t midlen, struct wire_reply *r);

/* PUBRELAY_E_* for an ERR code, PUBRELAY_E_REFUSED when unknown. */
int		 wire_err_code(const char *code, size_t len);
/* Whether the daemon closes the connection after this error. */
int		 wire_err_closes(int code);

/*
 * Look up name in STATS text ("name value\n" lines): the value and its
 * length, or NULL.
 */
const char	*wire_stat(const char *text, size_t len, const char *name,
		    size_t *vlen);

#endif
