/*
 * pubrelayd: the local publish relay.  main, options, signals, start-up and
 * shutdown order.  The two sides meet here and at the outbox.
 */
#include <errno.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sysexits.h>
#include <time.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/event.h>
#include <event2/thread.h>

#include "config.h"
#include "dead.h"
#include "httpd.h"
#include "ingress.h"
#include "listener.h"
#include "log.h"
#include "metrics.h"
#include "outbox.h"
#include "publisher.h"
#include "receipt.h"
#include "sdnotify.h"
#include "session.h"
#include "stats.h"
#include "status.h"
#include "util.h"

#ifndef PUBRELAY_CONFIG_PATH
#define PUBRELAY_CONFIG_PATH	"/etc/pubrelay/pubrelay.ini"
#endif

#define SHUTDOWN_FLUSH_MS	1000	/* time to write the last replies */
#define SHUTDOWN_PUBLISHER_MS	2000	/* time for the broker side to stop */
#define STATUS_INTERVAL_MS	2000	/* how often STATUS= may change */

struct daemon {
	struct event_base	*base;
	struct config		 cf;
	const char		*config_path;
	int			 verbose;
	struct outbox		*ob;
	struct ingress		*ing;
	struct listener		*lst;
	struct httpd		*httpd;		/* [metrics] listen; NULL: off */
	struct event		*ev_disk;	/* a sync failed: stop, exit 74 */
	int			 exit_status;
	struct publisher	*pub;
	struct relay_stats	 stats;
	struct event		*ev_term, *ev_int, *ev_hup, *ev_done;
	int			 stopping;
	/* systemd: notifications, only when NOTIFY_SOCKET was set */
	int			 notify;
	struct event		*ev_status, *ev_watchdog;
	char			 status[1024];	/* the last STATUS= sent */
	int			 notify_failed;	/* logged once */
};

static void
usage(FILE *f)
{
	fprintf(f, "usage: pubrelayd [-htvV] [-c file] [--check-outbox]\n"
	    "  -c, --config file  configuration file (default %s)\n"
	    "  -h, --help         print this help and exit\n"
	    "  -t, --check        check the configuration and exit\n"
	    "      --check-outbox check the outbox (read-only), report, exit\n"
	    "  -v, --verbose      log at debug level (overrides [log] level)\n"
	    "  -V, --version      print the version and exit\n",
	    PUBRELAY_CONFIG_PATH);
}

/* What -h and -V print: exit 0, or 74 when stdout could not take it. */
static int
stdout_done(void)
{
	if (fflush(stdout) == EOF || ferror(stdout)) {
		fprintf(stderr, "pubrelayd: stdout: %s\n", strerror(errno));
		return EX_IOERR;
	}
	return 0;
}

static void
daemon_park_cb(int64_t id, unsigned attempts, const char *reason, void *arg)
{
	struct daemon	*d = arg;

	/* Receipts are held before the confirmed prefix passes id. */
	receipts_parking(ingress_receipts(d->ing), id);
	dead_park(ingress_dead(d->ing), id, attempts, reason);
}

static void
daemon_confirmed_cb(int64_t upto, void *arg)
{
	struct daemon	*d = arg;

	ingress_confirmed(d->ing, upto);
}

/* Ingress to publisher: main wires the two sides; neither knows the other. */
static void
daemon_wake_cb(void *arg)
{
	publisher_wake(arg);
}

static int
daemon_fits_cb(void *arg, const struct proto_pub *m, char *err, size_t errlen)
{
	return publisher_fits(arg, m, err, errlen);
}

static void
daemon_eager_cb(void *arg, int on)
{
	publisher_set_eager(arg, on);
}

/* A notification to systemd; a failure is logged once, not per ping. */
static void
daemon_notify(struct daemon *d, const char *what)
{
	if (!d->notify)
		return;
	if (sdnotify_send("%s", what) == -1 && !d->notify_failed) {
		log_warn("cannot notify systemd (%s)", what);
		d->notify_failed = 1;
	}
}

/* The status line from the STATS values; 1 when it changed. */
static int
daemon_status_update(struct daemon *d)
{
	struct metrics_snap	m;
	char			line[sizeof(d->status)];

	ingress_stats(d->ing, &m);
	status_line(&m, line, sizeof(line));
	if (strcmp(line, d->status) == 0)
		return 0;
	memcpy(d->status, line, sizeof(d->status));
	return 1;
}

static void
daemon_status_cb(evutil_socket_t fd, short what, void *arg)
{
	struct daemon	*d = arg;
	char		 msg[sizeof(d->status) + 16];

	(void)fd;
	(void)what;
	if (d->stopping || !daemon_status_update(d))
		return;
	snprintf(msg, sizeof(msg), "STATUS=%s", d->status);
	daemon_notify(d, msg);
}

/* From the main loop: a loop that is stuck stops the pings. */
static void
daemon_watchdog_cb(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	daemon_notify(arg, "WATCHDOG=1");
}

static uint64_t
daemon_monotonic_usec(void)
{
	struct timespec	ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000 + (uint64_t)ts.tv_nsec / 1000;
}

/* Stop when the last client has been answered, or after a deadline. */
static void
daemon_done_cb(evutil_socket_t fd, short what, void *arg)
{
	struct daemon	*d = arg;
	struct timeval	 tv = { 0, 20000 };
	static int	 ticks;

	(void)fd;
	(void)what;
	if (session_count() == 0 ||
	    ++ticks * 20 >= SHUTDOWN_FLUSH_MS) {
		event_base_loopbreak(d->base);
		return;
	}
	evtimer_add(d->ev_done, &tv);
}

static void	daemon_shutdown(struct daemon *, const char *);

/*
 * A sync of the outbox failed: what the kernel could not write it may have
 * dropped while reporting success later, so neither this process's view
 * of the file nor the page cache is to be trusted.  The clients of the
 * failed commit got ERR STORE; nothing more is written (outbox.c); stop as
 * for SIGTERM and exit 74, for systemd to start the daemon again, which
 * reads the outbox from the disk.  (From the failing call: the shutdown
 * itself runs from the loop.)
 */
static void
daemon_sync_failed(void *arg)
{
	struct daemon	*d = arg;

	log_errx("outbox %s: a sync failed (%s): the disk may have lost what "
	    "was written; %s; refusing messages and exiting with status 74, "
	    "to start again from what the disk holds", d->cf.outbox_path,
	    outbox_errmsg(d->ob), outbox_sync_cut(d->ob));
	d->exit_status = EX_IOERR;
	event_active(d->ev_disk, EV_TIMEOUT, 0);
}

static void
daemon_disk_cb(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	daemon_shutdown(arg, "outbox sync failure");
}

static void
daemon_shutdown(struct daemon *d, const char *sig)
{
	struct timeval	tv = { 0, 0 };

	if (d->stopping)
		return;
	d->stopping = 1;
	log_notice("%s: shutting down", sig);
	daemon_notify(d, "STOPPING=1\nSTATUS=stopping");
	listener_close(d->lst);
	d->lst = NULL;
	httpd_close(d->httpd);		/* no longer ready: no more scrapes */
	d->httpd = NULL;
	session_drain_all();		/* parse nothing more */
	ingress_flush(d->ing);		/* the turn in progress commits */
	receipts_shutdown(ingress_receipts(d->ing)); /* still queued */
	session_close_all();		/* answers go out, then close */
	evtimer_add(d->ev_done, &tv);
}

/*
 * config_load() with its error lines through log_lines() at prio, so the
 * journal files them as errors (start-up) or warnings (reload); summary
 * adds "pubrelayd: FILE: N errors".
 */
static int
daemon_config_load(struct config *cf, const char *path, int prio,
    int summary)
{
	char	*errs = NULL;
	size_t	 errlen = 0;
	FILE	*errf = open_memstream(&errs, &errlen);
	int	 n;

	if (errf == NULL)
		return config_load(cf, path, stderr);
	n = config_load(cf, path, errf);
	if (n > 0 && summary)
		fprintf(errf, "pubrelayd: %s: %d error%s\n", path, n,
		    n == 1 ? "" : "s");
	fclose(errf);
	log_lines(prio, errs);
	free(errs);
	return n;
}

static void
daemon_reload(struct daemon *d)
{
	struct config	cf;

	/* Only what can change safely without a restart: the log level. */
	config_defaults(&cf);
	if (daemon_config_load(&cf, d->config_path, LOG_WARNING, 0) != 0) {
		log_warnx("SIGHUP: %s has errors; keeping the running "
		    "configuration", d->config_path);
		config_free(&cf);
		return;
	}
	if (!d->verbose && cf.log_level != d->cf.log_level) {
		d->cf.log_level = cf.log_level;
		log_set_level(cf.log_level);
	}
	log_notice("SIGHUP: reloaded; log level %s (other settings need a "
	    "restart)", log_level_name(log_get_level()));
	config_free(&cf);
}

/* Reload, telling systemd (RELOADING=1, then READY=1) when it listens. */
static void
daemon_sighup(struct daemon *d)
{
	char	msg[sizeof(d->status) + 32];
	int	tell = d->notify && !d->stopping;

	if (tell) {
		/* MONOTONIC_USEC: systemd 253 and later want it with this. */
		snprintf(msg, sizeof(msg), "RELOADING=1\nMONOTONIC_USEC=%llu",
		    (unsigned long long)daemon_monotonic_usec());
		daemon_notify(d, msg);
	}
	daemon_reload(d);
	if (tell) {
		daemon_status_update(d);
		snprintf(msg, sizeof(msg), "READY=1\nSTATUS=%s", d->status);
		daemon_notify(d, msg);
	}
}

static void
daemon_signal_cb(evutil_socket_t sig, short what, void *arg)
{
	struct daemon	*d = arg;

	(void)what;
	switch (sig) {
	case SIGHUP:
		daemon_sighup(d);
		break;
	case SIGINT:
		daemon_shutdown(d, "SIGINT");
		break;
	default:
		daemon_shutdown(d, "SIGTERM");
		break;
	}
}

int
main(int argc, char *argv[])
{
	struct daemon			 d;
	struct publisher_params		 pp;
	struct ingress_link		 link;
	char				 err[512], path[256];
	char				 msg[sizeof(d.status) + 32];
	int64_t				 confirmed = 0;
	int				 ch, check = 0, n, lfd, rc;
	int				 check_outbox = 0;

	memset(&d, 0, sizeof(d));
	d.config_path = PUBRELAY_CONFIG_PATH;
	log_init(LOG_INFO, "pubrelayd");

	static const struct option	 longopts[] = {
		{ "config",	required_argument,	NULL, 'c' },
		{ "check",	no_argument,		NULL, 't' },
		{ "check-outbox", no_argument,		NULL, 'O' },
		{ "help",	no_argument,		NULL, 'h' },
		{ "verbose",	no_argument,		NULL, 'v' },
		{ "version",	no_argument,		NULL, 'V' },
		{ NULL,		0,			NULL, 0 }
	};

	while ((ch = getopt_long(argc, argv, "c:htvV", longopts, NULL)) !=
	    -1) {
		switch (ch) {
		case 'c':
			d.config_path = optarg;
			break;
		case 't':
			check = 1;
			break;
		case 'O':
			check_outbox = 1;
			break;
		case 'v':
			d.verbose = 1;
			break;
		case 'V':
			printf("pubrelayd %s\n", PACKAGE_VERSION);
			return stdout_done();
		case 'h':
			usage(stdout);
			return stdout_done();
		default:	/* getopt named the option */
			usage(stderr);
			return EX_USAGE;
		}
	}
	if (optind != argc) {
		fprintf(stderr, "pubrelayd: unexpected argument '%s' (options "
		    "only)\n", argv[optind]);
		usage(stderr);
		return EX_USAGE;
	}

	config_defaults(&d.cf);
	if ((n = daemon_config_load(&d.cf, d.config_path, LOG_ERR, 1)) != 0) {
		config_free(&d.cf);
		return EX_CONFIG;
	}
	if (check) {
		printf("configuration OK\n");
		config_free(&d.cf);
		return 0;
	}
	if (check_outbox) {
		/* Read-only, beside a running daemon or not. */
		n = outbox_check(d.cf.outbox_path, stdout, err, sizeof(err));
		config_free(&d.cf);
		if (n == -1) {
			log_errx("%s", err);
			return EX_NOINPUT;
		}
		if (stdout_done() != 0)
			return EX_IOERR;
		return n > 0 ? EX_DATAERR : 0;
	}
	log_set_level(d.verbose ? LOG_DEBUG : d.cf.log_level);

	/* Before any thread: both read and unset environment variables. */
	d.notify = sdnotify_init(err, sizeof(err));
	if (err[0] != '\0')
		log_warnx("systemd: %s", err);
	lfd = sdnotify_listen_fds(path, sizeof(path), err, sizeof(err));
	if (lfd == -2) {
		log_errx("socket activation: %s", err);
		rc = EX_OSERR;
		goto fail;
	}

	signal(SIGPIPE, SIG_IGN);
	pthread_mutex_init(&d.stats.lock, NULL);
	if (evthread_use_pthreads() == -1) {
		log_errx("libevent: no pthreads support");
		rc = EX_SOFTWARE;
		goto fail;
	}
	if ((d.base = event_base_new()) == NULL) {
		log_errx("cannot create the event base");
		rc = EX_SOFTWARE;
		goto fail;
	}

	if (outbox_open(&d.ob, d.cf.outbox_path, d.cf.sync_full, err,
	    sizeof(err)) == -1) {
		log_errx("%s", err);
		d.ob = NULL;
		rc = EX_CANTCREAT;
		goto fail;
	}
	/*
	 * The config or $STATE_DIRECTORY put the outbox elsewhere than the
	 * build's default: an outbox left there by an earlier set-up is
	 * published by nobody.  Said at every start until it is dealt with.
	 */
	if (strcmp(d.cf.outbox_path, PUBRELAY_OUTBOX_PATH) != 0 &&
	    outbox_unattended(PUBRELAY_OUTBOX_PATH))
		log_warnx("outbox %s (the build's default path) exists and no "
		    "pubrelayd holds it; this one uses %s: what it holds is "
		    "not published (name it in [outbox] path, or move it away "
		    "once it is empty)", PUBRELAY_OUTBOX_PATH,
		    d.cf.outbox_path);
	if (outbox_migrated_from(d.ob) != 0)
		log_notice("outbox %s: migrated from schema version %d to %d",
		    d.cf.outbox_path, outbox_migrated_from(d.ob),
		    OUTBOX_SCHEMA_VERSION);
	if (outbox_keys_problem(d.ob) != NULL)
		log_warnx("outbox %s: cannot read every idempotency key (%s): "
		    "each message with a key is looked up in the file, and "
		    "refused (STORE) while that fails", d.cf.outbox_path,
		    outbox_keys_problem(d.ob));
	if (outbox_presize_wal(d.ob, d.cf.min_free) == -1)
		log_info("outbox %s: cannot pre-size the write-ahead log; "
		    "it grows as it is written", d.cf.outbox_path);
	if (outbox_rows(d.ob) > 0)
		log_notice("outbox %s: %llu messages (%llu bytes) waiting",
		    d.cf.outbox_path, (unsigned long long)outbox_rows(d.ob),
		    (unsigned long long)outbox_bytes(d.ob));
	d.ev_disk = evtimer_new(d.base, daemon_disk_cb, &d);
	outbox_on_sync_failure(d.ob, daemon_sync_failed, &d);
	d.ing = ingress_new(d.base, d.ob, &d.cf, &d.stats, session_committed);
	if (lfd >= 0) {
		log_info("socket activation: using the socket %s passed by the "
		    "service manager; [socket] path and mode are the socket "
		    "unit's business", path);
		d.lst = listener_inherit(d.base, &d.cf, d.ing, lfd, path, err,
		    sizeof(err));
	} else
		d.lst = listener_open(d.base, &d.cf, d.ing, err, sizeof(err));
	if (d.lst == NULL) {
		log_errx("%s", err);
		rc = EX_OSERR;
		goto fail;
	}
	if (d.cf.metrics_listen != NULL) {
		if ((d.httpd = httpd_open(d.base, d.cf.metrics_listen, d.ing,
		    err, sizeof(err))) == NULL) {
			log_errx("%s", err);
			rc = EX_OSERR;
			goto fail;
		}
		log_info("metrics: http://%s/metrics and /health",
		    httpd_address(d.httpd));
	}

	memset(&pp, 0, sizeof(pp));
	pp.cf = &d.cf;
	pp.instance = outbox_instance(d.ob);
	pp.stats = &d.stats;
	pp.main_base = d.base;
	pp.confirmed_cb = daemon_confirmed_cb;
	pp.park_cb = daemon_park_cb;
	pp.cb_arg = &d;
	if ((d.pub = publisher_start(&pp, err, sizeof(err))) == NULL) {
		log_errx("%s", err);
		rc = EX_SOFTWARE;
		goto fail;
	}
	link.wake = daemon_wake_cb;
	link.fits = daemon_fits_cb;
	link.eager = daemon_eager_cb;
	link.arg = d.pub;
	ingress_set_link(d.ing, &link);

	d.ev_term = evsignal_new(d.base, SIGTERM, daemon_signal_cb, &d);
	d.ev_int = evsignal_new(d.base, SIGINT, daemon_signal_cb, &d);
	d.ev_hup = evsignal_new(d.base, SIGHUP, daemon_signal_cb, &d);
	d.ev_done = evtimer_new(d.base, daemon_done_cb, &d);
	event_add(d.ev_term, NULL);
	event_add(d.ev_int, NULL);
	event_add(d.ev_hup, NULL);

	log_notice("pubrelayd %s listening on %s; outbox %s (sync %s)",
	    PACKAGE_VERSION, listener_path(d.lst), d.cf.outbox_path,
	    d.cf.sync_full ? "full" : "normal");
	if (d.notify) {
		struct timeval	tv = { STATUS_INTERVAL_MS / 1000,
				    (STATUS_INTERVAL_MS % 1000) * 1000 };
		uint64_t	wd = sdnotify_watchdog_usec() / 2;

		/* The outbox is open and the socket listens. */
		daemon_status_update(&d);
		snprintf(msg, sizeof(msg), "READY=1\nSTATUS=%s", d.status);
		daemon_notify(&d, msg);
		d.ev_status = event_new(d.base, -1, EV_PERSIST,
		    daemon_status_cb, &d);
		event_add(d.ev_status, &tv);
		if (wd > 0) {
			/* Half the interval, as sd_watchdog_enabled(3) advises. */
			if (wd < 1000)
				wd = 1000;
			tv.tv_sec = (time_t)(wd / 1000000);
			tv.tv_usec = (suseconds_t)(wd % 1000000);
			d.ev_watchdog = event_new(d.base, -1, EV_PERSIST,
			    daemon_watchdog_cb, &d);
			event_add(d.ev_watchdog, &tv);
			log_info("systemd watchdog: a ping every %llu ms",
			    (unsigned long long)(wd / 1000));
		}
	}
	event_base_dispatch(d.base);

	/* Everything accepted is committed; now stop the broker side. */
	if (publisher_stop(d.pub, SHUTDOWN_PUBLISHER_MS, &confirmed) == 0)
		d.pub = NULL;
	/* Fewer duplicates after a restart. */
	ingress_delete_now(d.ing, confirmed);
	ingress_set_link(d.ing, NULL);
	event_free(d.ev_term);
	event_free(d.ev_int);
	event_free(d.ev_hup);
	event_free(d.ev_done);
	event_free(d.ev_disk);
	if (d.ev_status != NULL)
		event_free(d.ev_status);
	if (d.ev_watchdog != NULL)
		event_free(d.ev_watchdog);
	if (d.pub != NULL) {
		/*
		 * The publisher thread is stuck in a system call and may still
		 * read the configuration, the outbox and the base: free
		 * nothing, and leave without exit handlers (LeakSanitizer's
		 * among them, which would call all that leaked).
		 */
		log_notice("stopped");
		_exit(d.exit_status);
	}
	ingress_free(d.ing);
	outbox_close(d.ob);
	event_base_free(d.base);
	config_free(&d.cf);
	if (d.exit_status != 0)
		log_notice("stopped, exit status %d", d.exit_status);
	else
		log_notice("stopped");
	return d.exit_status;

fail:
	/* Start-up failed: give everything back (LeakSanitizer checks). */
	httpd_close(d.httpd);
	if (d.lst != NULL)
		listener_close(d.lst);
	if (d.ing != NULL)
		ingress_free(d.ing);
	if (d.ob != NULL)
		outbox_close(d.ob);
	if (d.ev_disk != NULL)
		event_free(d.ev_disk);
	if (d.base != NULL)
		event_base_free(d.base);
	config_free(&d.cf);
	return rc;
}
