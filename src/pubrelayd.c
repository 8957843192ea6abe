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
#include <unistd.h>

#include <event2/event.h>
#include <event2/thread.h>

#include "config.h"
#include "ingress.h"
#include "listener.h"
#include "log.h"
#include "outbox.h"
#include "publisher.h"
#include "session.h"
#include "stats.h"
#include "util.h"

#ifndef PUBRELAY_CONFIG_PATH
#define PUBRELAY_CONFIG_PATH	"/etc/pubrelay/pubrelay.ini"
#endif

#define SHUTDOWN_FLUSH_MS	1000	/* time to write the last replies */
#define SHUTDOWN_PUBLISHER_MS	2000	/* time for the broker side to stop */

struct daemon {
	struct event_base	*base;
	struct config		 cf;
	const char		*config_path;
	int			 verbose;
	struct outbox		*ob;
	struct ingress		*ing;
	struct listener		*lst;
	struct publisher	*pub;
	struct relay_stats	 stats;
	struct event		*ev_term, *ev_int, *ev_hup, *ev_done;
	int			 stopping;
};

static void
usage(FILE *f)
{
	fprintf(f, "usage: pubrelayd [-htvV] [-c file]\n"
	    "  -c file  configuration file (default %s)\n"
	    "  -h       print this help and exit\n"
	    "  -t       check the configuration and exit\n"
	    "  -v       log at debug level (overrides [log] level)\n"
	    "  -V       print the version and exit\n", PUBRELAY_CONFIG_PATH);
}

static void
daemon_park_cb(int64_t id, unsigned attempts, const char *reason, void *arg)
{
	struct daemon	*d = arg;

	ingress_park(d->ing, id, attempts, reason);
}

static void
daemon_confirmed_cb(int64_t upto, void *arg)
{
	struct daemon	*d = arg;

	ingress_confirmed(d->ing, upto);
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

static void
daemon_shutdown(struct daemon *d, const char *sig)
{
	struct timeval	tv = { 0, 0 };

	if (d->stopping)
		return;
	d->stopping = 1;
	log_notice("%s: shutting down", sig);
	listener_close(d->lst);
	d->lst = NULL;
	session_drain_all();		/* parse nothing more */
	ingress_flush(d->ing);		/* the turn in progress commits */
	session_close_all();		/* answers go out, then close */
	evtimer_add(d->ev_done, &tv);
}

static void
daemon_reload(struct daemon *d)
{
	struct config	cf;
	FILE		*errf = stderr;

	/* Only what can change safely without a restart: the log level. */
	config_defaults(&cf);
	if (config_load(&cf, d->config_path, errf) != 0) {
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

static void
daemon_signal_cb(evutil_socket_t sig, short what, void *arg)
{
	struct daemon	*d = arg;

	(void)what;
	switch (sig) {
	case SIGHUP:
		daemon_reload(d);
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
	char				 err[512];
	int64_t				 confirmed = 0;
	int				 ch, check = 0, n;

	memset(&d, 0, sizeof(d));
	d.config_path = PUBRELAY_CONFIG_PATH;
	log_init(LOG_INFO, "pubrelayd");

	while ((ch = getopt(argc, argv, "c:htvV")) != -1) {
		switch (ch) {
		case 'c':
			d.config_path = optarg;
			break;
		case 't':
			check = 1;
			break;
		case 'v':
			d.verbose = 1;
			break;
		case 'V':
			printf("pubrelayd %s\n", PACKAGE_VERSION);
			return 0;
		case 'h':
			usage(stdout);
			return 0;
		default:
			usage(stderr);
			return EX_USAGE;
		}
	}
	if (optind != argc) {
		usage(stderr);
		return EX_USAGE;
	}

	config_defaults(&d.cf);
	n = config_load(&d.cf, d.config_path, stderr);
	if (n != 0) {
		if (n > 0)
			fprintf(stderr, "pubrelayd: %s: %d error%s\n",
			    d.config_path, n, n == 1 ? "" : "s");
		config_free(&d.cf);
		return EX_CONFIG;
	}
	if (check) {
		printf("configuration OK\n");
		config_free(&d.cf);
		return 0;
	}
	log_set_level(d.verbose ? LOG_DEBUG : d.cf.log_level);

	signal(SIGPIPE, SIG_IGN);
	pthread_mutex_init(&d.stats.lock, NULL);
	if (evthread_use_pthreads() == -1) {
		log_errx("libevent: no pthreads support");
		return EX_SOFTWARE;
	}
	if ((d.base = event_base_new()) == NULL) {
		log_errx("cannot create the event base");
		return EX_SOFTWARE;
	}

	if (outbox_open(&d.ob, d.cf.outbox_path, d.cf.sync_full, err,
	    sizeof(err)) == -1) {
		log_errx("%s", err);
		return EX_CANTCREAT;
	}
	if (outbox_migrated_from(d.ob) != 0)
		log_notice("outbox %s: migrated from schema version %d to %d",
		    d.cf.outbox_path, outbox_migrated_from(d.ob),
		    OUTBOX_SCHEMA_VERSION);
	if (outbox_rows(d.ob) > 0)
		log_notice("outbox %s: %llu messages (%llu bytes) waiting",
		    d.cf.outbox_path, (unsigned long long)outbox_rows(d.ob),
		    (unsigned long long)outbox_bytes(d.ob));
	d.ing = ingress_new(d.base, d.ob, &d.cf, &d.stats);
	d.lst = listener_open(d.base, &d.cf, d.ing, err, sizeof(err));
	if (d.lst == NULL) {
		log_errx("%s", err);
		outbox_close(d.ob);
		return EX_OSERR;
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
		listener_close(d.lst);
		outbox_close(d.ob);
		return EX_SOFTWARE;
	}
	ingress_set_publisher(d.ing, d.pub);

	d.ev_term = evsignal_new(d.base, SIGTERM, daemon_signal_cb, &d);
	d.ev_int = evsignal_new(d.base, SIGINT, daemon_signal_cb, &d);
	d.ev_hup = evsignal_new(d.base, SIGHUP, daemon_signal_cb, &d);
	d.ev_done = evtimer_new(d.base, daemon_done_cb, &d);
	event_add(d.ev_term, NULL);
	event_add(d.ev_int, NULL);
	event_add(d.ev_hup, NULL);

	log_notice("pubrelayd %s listening on %s; outbox %s (sync %s)",
	    PACKAGE_VERSION, d.cf.socket_path, d.cf.outbox_path,
	    d.cf.sync_full ? "full" : "normal");
	event_base_dispatch(d.base);

	/* Everything accepted is committed; now stop the broker side. */
	if (publisher_stop(d.pub, SHUTDOWN_PUBLISHER_MS, &confirmed) == 0)
		d.pub = NULL;
	/* Fewer duplicates after a restart. */
	ingress_delete_now(d.ing, confirmed);
	ingress_set_publisher(d.ing, NULL);
	event_free(d.ev_term);
	event_free(d.ev_int);
	event_free(d.ev_hup);
	event_free(d.ev_done);
	if (d.pub == NULL) {
		ingress_free(d.ing);
		outbox_close(d.ob);
		event_base_free(d.base);
	}
	config_free(&d.cf);
	log_notice("stopped");
	return 0;
}
