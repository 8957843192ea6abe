/*
 * listener.c: the Unix stream socket clients connect to: bound here, or
 * inherited from the service manager (socket activation).
 */
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>

#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <pwd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <event2/event.h>

#include "config.h"
#include "ingress.h"
#include "listener.h"
#include "log.h"
#include "protocol.h"
#include "session.h"
#include "users.h"
#include "util.h"

#define LISTENER_BACKLOG	512
/*
 * Connections taken per wake-up.  The loop turn runs the sessions' reads
 * too; accepting until EAGAIN let a flood of connect-and-close clients
 * fill max_clients with sessions whose peers had already gone, refusing
 * everyone else.
 */
#define LISTENER_ACCEPT_BATCH	16
#define LISTENER_PAUSE_MS	1000	/* out of descriptors: wait this long */
#define LISTENER_DENIED_LOG	256	/* uids whose refusal was logged */
#define LISTENER_LIMIT_LOG_S	60	/* max_clients: a line at most this often */
#define LISTENER_GROUPS_MAX	1024	/* groups of a peer we look at */

struct listener {
	struct event_base	*base;
	const struct config	*cf;
	struct ingress		*ing;
	int			 fd;
	char			*path;		/* where clients connect */
	int			 owned;		/* we bound it: unlink at close */
	struct event		*ev_accept;
	struct event		*ev_resume;
	time_t			 limit_logged;	/* monotonic s of the last line */
	unsigned long		 limit_refused;	/* refused since that line */
	int			 pause_logged;	/* out of descriptors, logged */
	uid_t			 denied[LISTENER_DENIED_LOG];
	size_t			 ndenied;
};

/* Whether this process is in group gid (primary or supplementary). */
static int
listener_in_group(gid_t gid)
{
	gid_t	*groups;
	int	 i, n, found = 0;

	if (getegid() == gid)
		return 1;
	if ((n = getgroups(0, NULL)) <= 0 ||
	    (groups = calloc((size_t)n, sizeof(*groups))) == NULL)
		return 0;
	n = getgroups(n, groups);
	for (i = 0; i < n && !found; i++)
		found = groups[i] == gid;
	free(groups);
	return found;
}

/*
 * "chown to [socket] group NAME (gid N): ERROR", and for EPERM the likelier
 * cause: a daemon in that group may chown its own file, so then a system
 * call filter refused it (the shipped pubrelayd.service denies chown());
 * otherwise its user is not in the group.
 */
static void
listener_chown_err(const struct config *cf, int e, char *err, size_t errlen)
{
	struct group	*gr = getgrgid(cf->socket_gid);
	const char	*hint = "";

	if (e == EPERM && geteuid() != 0)
		hint = listener_in_group(cf->socket_gid) ?
		    " (the daemon is in that group: a system call filter "
		    "denies chown(), as pubrelayd.service does; use "
		    "pubrelayd.socket, or a drop-in with "
		    "SystemCallFilter=@chown)" :
		    " (the daemon's user is not in that group)";
	snprintf(err, errlen, "%s: chown to [socket] group %s%s(gid %ld): "
	    "%s%s", cf->socket_path, gr != NULL ? gr->gr_name : "",
	    gr != NULL ? " " : "", (long)cf->socket_gid, strerror(e), hint);
}

/*
 * Probe an existing socket file: 0 when it is stale (nobody listens: the
 * connect is refused), else the errno that leaves it in doubt (EACCES: a
 * daemon of another user may be behind it; EAGAIN: one with a full
 * backlog), or EISCONN when a daemon answered.  Never blocks.
 */
static int
listener_probe(const char *path)
{
	struct sockaddr_un	sun;
	int			fd, rc, error;

	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd == -1)
		return errno;
	memset(&sun, 0, sizeof(sun));
	sun.sun_family = AF_UNIX;
	snprintf(sun.sun_path, sizeof(sun.sun_path), "%s", path);
	rc = connect(fd, (struct sockaddr *)&sun, sizeof(sun));
	error = rc == 0 ? EISCONN : errno;
	close(fd);
	return error == ECONNREFUSED ? 0 : error;
}

static void
listener_refuse(int fd, unsigned max)
{
	char	msg[128];
	int	n;

	/* Best effort: the socket is fresh, the line fits its buffer. */
	n = snprintf(msg, sizeof(msg), "ERR %s too many clients (max_clients "
	    "%u); retry later\n", PROTO_E_LIMIT, max);
	if (write(fd, msg, (size_t)n) == -1)
		(void)0;
	close(fd);
}

static void
listener_refuse_user(int fd, uid_t uid, unsigned max)
{
	char	msg[160];
	int	n;

	/* Best effort, as in listener_refuse(). */
	n = snprintf(msg, sizeof(msg), "ERR %s too many clients of uid %ld "
	    "(max_clients_per_user %u); retry later\n", PROTO_E_LIMIT,
	    (long)uid, max);
	if (write(fd, msg, (size_t)n) == -1)
		(void)0;
	close(fd);
}

static int
listener_gid_allowed(const struct config *cf, gid_t gid)
{
	size_t	i;

	for (i = 0; i < cf->nallow_gids; i++)
		if (cf->allow_gids[i] == gid)
			return 1;
	return 0;
}

/*
 * May this peer publish?  Its uid is in allow_users, or its primary group
 * or one of its supplementary groups (as it connected: SO_PEERGROUPS) or a
 * group of its uid in the group database is in allow_groups.  The lookup
 * may block on a remote user database (NSS): only when allow_groups is set
 * and the cheap checks failed.
 */
static int
listener_peer_allowed(const struct config *cf, int fd, const struct ucred *uc)
{
	socklen_t	 glen;
	struct passwd	*pw;
	gid_t		 groups[LISTENER_GROUPS_MAX];
	int		 i, n = LISTENER_GROUPS_MAX;
	size_t		 j;

	if (cf->nallow_uids == 0 && cf->nallow_gids == 0)
		return 1;
	for (j = 0; j < cf->nallow_uids; j++)
		if (cf->allow_uids[j] == uc->uid)
			return 1;
	if (cf->nallow_gids == 0)
		return 0;
	if (listener_gid_allowed(cf, uc->gid))
		return 1;
	/* Over LISTENER_GROUPS_MAX (ERANGE): only the database below. */
	glen = sizeof(groups);
	if (getsockopt(fd, SOL_SOCKET, SO_PEERGROUPS, groups, &glen) == 0) {
		for (j = 0; j < glen / sizeof(groups[0]); j++)
			if (listener_gid_allowed(cf, groups[j]))
				return 1;
	}
	if ((pw = getpwuid(uc->uid)) == NULL)
		return 0;
	/* On overflow n is the count needed; the first LISTENER_GROUPS_MAX do. */
	if (getgrouplist(pw->pw_name, pw->pw_gid, groups, &n) == -1)
		n = LISTENER_GROUPS_MAX;
	for (i = 0; i < n && i < LISTENER_GROUPS_MAX; i++)
		if (listener_gid_allowed(cf, groups[i]))
			return 1;
	return 0;
}

/* Whether the limits of one uid are on: then every peer is counted. */
static int
listener_per_user(const struct config *cf)
{
	return cf->max_clients_per_user > 0 || cf->max_bytes_per_user > 0;
}

/*
 * Who the peer is (*have set when known), and refuse it when outside the
 * allow-lists; logged once per uid.  Without its credentials the peer is
 * refused only when allow-lists or per-user limits need them.
 */
static int
listener_check_peer(struct listener *l, int fd, struct ucred *uc, int *have)
{
	socklen_t	len = sizeof(*uc);
	char		msg[160];
	size_t		i;
	int		n, need;

	need = l->cf->nallow_uids > 0 || l->cf->nallow_gids > 0 ||
	    listener_per_user(l->cf);
	*have = getsockopt(fd, SOL_SOCKET, SO_PEERCRED, uc, &len) == 0;
	if (!*have && need) {
		log_warn("SO_PEERCRED: refusing the client");
		close(fd);
		return -1;
	}
	if (!*have || listener_peer_allowed(l->cf, fd, uc))
		return 0;
	for (i = 0; i < l->ndenied && l->denied[i] != uc->uid; i++)
		;
	if (i == l->ndenied && l->ndenied < LISTENER_DENIED_LOG) {
		log_warnx("client uid %ld (pid %ld) is not in [socket] "
		    "allow_users or allow_groups: refused%s", (long)uc->uid,
		    (long)uc->pid, l->ndenied + 1 == LISTENER_DENIED_LOG ?
		    " (further refused uids are not logged)" : "");
		l->denied[l->ndenied++] = uc->uid;
	}
	/* Best effort, as in listener_refuse(). */
	n = snprintf(msg, sizeof(msg), "ERR %s uid %ld may not publish here "
	    "(not in allow_users or allow_groups)\n", PROTO_E_DENIED,
	    (long)uc->uid);
	if (write(fd, msg, (size_t)n) == -1)
		(void)0;
	close(fd);
	return -1;
}

/*
 * A client refused for max_clients: a warning, then at most one a minute
 * however the clients come and go at the limit, saying how many were
 * refused without a line.
 */
static void
listener_limit_log(struct listener *l)
{
	struct timespec	now;

	clock_gettime(CLOCK_MONOTONIC, &now);
	if (l->limit_logged != 0 &&
	    now.tv_sec - l->limit_logged < LISTENER_LIMIT_LOG_S) {
		l->limit_refused++;
		return;
	}
	if (l->limit_refused > 0)
		log_warnx("max_clients (%u) reached: refusing new clients "
		    "(%lu more refused since the last such line, %ld s ago)",
		    l->cf->max_clients, l->limit_refused,
		    (long)(now.tv_sec - l->limit_logged));
	else
		log_warnx("max_clients (%u) reached: refusing new clients",
		    l->cf->max_clients);
	/* Never 0 once set: the clock may read 0 s on a fresh boot. */
	l->limit_logged = now.tv_sec > 0 ? now.tv_sec : 1;
	l->limit_refused = 0;
}

/*
 * A client of u refused for max_clients_per_user: as listener_limit_log(),
 * but for each uid on its own, so that one user at its limit neither
 * floods the log nor hides another one reaching its own.
 */
static void
listener_user_log(struct listener *l, struct user *u, const struct ucred *uc)
{
	struct timespec	now;
	unsigned long	quiet;

	clock_gettime(CLOCK_MONOTONIC, &now);
	if (!users_log_due(user_conn_log(u), now.tv_sec, USERS_LOG_S, &quiet))
		return;
	if (quiet > 0)
		log_warnx("client uid %ld (pid %ld) refused: the uid has "
		    "max_clients_per_user (%u) connections (%lu more of its "
		    "clients refused since the last such line)", (long)uc->uid,
		    (long)uc->pid, l->cf->max_clients_per_user, quiet);
	else
		log_warnx("client uid %ld (pid %ld) refused: the uid has "
		    "max_clients_per_user (%u) connections", (long)uc->uid,
		    (long)uc->pid, l->cf->max_clients_per_user);
}

/*
 * Count the connection against its uid, or refuse it over
 * max_clients_per_user.  *up gets the uid's record (NULL when no per-user
 * limit is set).
 */
static int
listener_check_user(struct listener *l, int fd, const struct ucred *uc,
    struct user **up)
{
	struct users	*us = ingress_users(l->ing);
	struct user	*u;
	unsigned	 max = l->cf->max_clients_per_user;

	*up = NULL;
	if (!listener_per_user(l->cf))
		return 0;
	if (max > 0 && (u = users_lookup(us, uc->uid)) != NULL &&
	    user_connections(u) >= max) {
		listener_user_log(l, u, uc);
		listener_refuse_user(fd, uc->uid, max);
		return -1;
	}
	*up = users_connect(us, uc->uid);
	return 0;
}

static void
listener_accept_cb(evutil_socket_t lfd, short what, void *arg)
{
	struct listener	*l = arg;
	struct timeval	 tv = { LISTENER_PAUSE_MS / 1000,
			    (LISTENER_PAUSE_MS % 1000) * 1000 };
	struct ucred	 uc;
	struct user	*u;
	int		 fd, i, have;

	(void)what;
	for (i = 0; i < LISTENER_ACCEPT_BATCH; i++) {
		fd = accept4(lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
		if (fd == -1) {
			if (errno == EAGAIN || errno == EWOULDBLOCK ||
			    errno == EINTR || errno == ECONNABORTED)
				return;
			if (errno == EMFILE || errno == ENFILE ||
			    errno == ENOBUFS || errno == ENOMEM) {
				/*
				 * Pause instead of spinning on a full table;
				 * one warning however long it lasts.
				 */
				log_msg(l->pause_logged ? LOG_DEBUG :
				    LOG_WARNING, "accept: pausing for %d ms: %s",
				    LISTENER_PAUSE_MS, strerror(errno));
				l->pause_logged = 1;
				event_del(l->ev_accept);
				evtimer_add(l->ev_resume, &tv);
				return;
			}
			log_warn("accept");
			return;
		}
		if (l->pause_logged) {
			log_notice("accept: accepting clients again");
			l->pause_logged = 0;
		}
		if (listener_check_peer(l, fd, &uc, &have) == -1) {
			ingress_count_client_refused(l->ing);
			continue;
		}
		if (session_count() >= l->cf->max_clients) {
			ingress_count_client_refused(l->ing);
			listener_limit_log(l);
			listener_refuse(fd, l->cf->max_clients);
			continue;
		}
		/* have is set here whenever a per-user limit is. */
		u = NULL;
		if (have && listener_check_user(l, fd, &uc, &u) == -1) {
			ingress_count_client_refused(l->ing);
			continue;
		}
		session_new(l->ing, fd, l->cf, have ? &uc : NULL, u);
	}
}

static void
listener_resume_cb(evutil_socket_t fd, short what, void *arg)
{
	struct listener	*l = arg;

	(void)fd;
	(void)what;
	event_add(l->ev_accept, NULL);
}

static void
listener_start(struct listener *l)
{
	l->ev_accept = event_new(l->base, l->fd, EV_READ | EV_PERSIST,
	    listener_accept_cb, l);
	l->ev_resume = evtimer_new(l->base, listener_resume_cb, l);
	event_add(l->ev_accept, NULL);
}

struct listener *
listener_open(struct event_base *base, const struct config *cf,
    struct ingress *ing, char *err, size_t errlen)
{
	struct listener		*l;
	struct sockaddr_un	 sun;
	struct stat		 sb;
	mode_t			 old;
	int			 probe;

	memset(&sun, 0, sizeof(sun));
	sun.sun_family = AF_UNIX;
	if (strlen(cf->socket_path) >= sizeof(sun.sun_path)) {
		snprintf(err, errlen, "%s: socket path too long",
		    cf->socket_path);
		return NULL;
	}
	memcpy(sun.sun_path, cf->socket_path, strlen(cf->socket_path) + 1);

	if (lstat(cf->socket_path, &sb) == 0) {
		if (!S_ISSOCK(sb.st_mode)) {
			snprintf(err, errlen, "%s: exists and is not a socket",
			    cf->socket_path);
			return NULL;
		}
		if ((probe = listener_probe(cf->socket_path)) == EISCONN) {
			snprintf(err, errlen, "%s: another daemon is "
			    "listening there", cf->socket_path);
			return NULL;
		} else if (probe != 0) {
			/* Not provably stale: never take a live one's path. */
			snprintf(err, errlen, "%s: exists and cannot be probed "
			    "(%s); remove it if no daemon uses it",
			    cf->socket_path, strerror(probe));
			return NULL;
		}
		unlink(cf->socket_path);	/* stale, from a crash */
	}

	l = xcalloc(1, sizeof(*l));
	l->base = base;
	l->cf = cf;
	l->ing = ing;
	l->fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (l->fd == -1) {
		snprintf(err, errlen, "socket: %s", strerror(errno));
		free(l);
		return NULL;
	}
	/* No window in which the socket has looser permissions than asked. */
	old = umask(0777 & ~cf->socket_mode);
	if (bind(l->fd, (struct sockaddr *)&sun, sizeof(sun)) == -1) {
		umask(old);
		snprintf(err, errlen, "%s: bind: %s", cf->socket_path,
		    strerror(errno));
		close(l->fd);
		free(l);
		return NULL;
	}
	umask(old);
	if (cf->socket_has_group &&
	    chown(cf->socket_path, (uid_t)-1, cf->socket_gid) == -1)
		listener_chown_err(cf, errno, err, errlen);
	else if (chmod(cf->socket_path, cf->socket_mode) == -1)
		snprintf(err, errlen, "%s: chmod to [socket] mode (%04o): %s",
		    cf->socket_path, cf->socket_mode, strerror(errno));
	else if (listen(l->fd, LISTENER_BACKLOG) == -1)
		snprintf(err, errlen, "%s: listen: %s", cf->socket_path,
		    strerror(errno));
	else
		err[0] = '\0';
	if (err[0] != '\0') {
		unlink(cf->socket_path);
		close(l->fd);
		free(l);
		return NULL;
	}
	l->path = xstrdup(cf->socket_path);
	l->owned = 1;
	listener_start(l);
	return l;
}

struct listener *
listener_inherit(struct event_base *base, const struct config *cf,
    struct ingress *ing, int fd, const char *path, char *err, size_t errlen)
{
	struct listener	*l;
	int		 flags;

	/* The service manager hands the socket over in blocking mode. */
	if ((flags = fcntl(fd, F_GETFL)) == -1 ||
	    fcntl(fd, F_SETFL, flags | O_NONBLOCK) == -1) {
		snprintf(err, errlen, "%s: %s", path, strerror(errno));
		return NULL;
	}
	l = xcalloc(1, sizeof(*l));
	l->base = base;
	l->cf = cf;
	l->ing = ing;
	l->fd = fd;
	l->path = xstrdup(path);
	l->owned = 0;
	listener_start(l);
	return l;
}

const char *
listener_path(const struct listener *l)
{
	return l->path;
}

void
listener_close(struct listener *l)
{
	if (l == NULL)
		return;
	event_free(l->ev_accept);
	event_free(l->ev_resume);
	close(l->fd);
	/* An inherited socket belongs to the socket unit: it stays. */
	if (l->owned)
		unlink(l->path);
	free(l->path);
	free(l);
}
