/*
 * log.c: leveled logging to stderr.  One fprintf per line, so lines from the
 * ingress and publisher threads never interleave mid-line.
 */
#include <errno.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "log.h"

static atomic_int	 log_level = LOG_INFO;
static int		 log_journal;	/* stderr is the journal: "<N>" prefixes */
static const char	*log_prog = "pubrelayd";

static const struct {
	const char	*name;
	int		 level;
} log_levels[] = {
	{ "error",	LOG_ERR },
	{ "warning",	LOG_WARNING },
	{ "notice",	LOG_NOTICE },
	{ "info",	LOG_INFO },
	{ "debug",	LOG_DEBUG },
};

/* systemd sets JOURNAL_STREAM=dev:ino when stderr is connected to the journal. */
static int
log_stderr_is_journal(void)
{
	const char	*e = getenv("JOURNAL_STREAM");
	struct stat	 st;
	unsigned long long dev, ino;

	if (e == NULL || sscanf(e, "%llu:%llu", &dev, &ino) != 2)
		return 0;
	if (fstat(fileno(stderr), &st) == -1)
		return 0;
	return (unsigned long long)st.st_dev == dev &&
	    (unsigned long long)st.st_ino == ino;
}

void
log_init(int level, const char *progname)
{
	log_level = level;
	if (progname != NULL)
		log_prog = progname;
	log_journal = log_stderr_is_journal();
}

void
log_set_level(int level)
{
	log_level = level;
}

int
log_get_level(void)
{
	return log_level;
}

int
log_level_parse(const char *s, int *level)
{
	size_t	i;

	for (i = 0; i < sizeof(log_levels) / sizeof(log_levels[0]); i++) {
		if (strcasecmp(s, log_levels[i].name) == 0) {
			*level = log_levels[i].level;
			return 0;
		}
	}
	return -1;
}

const char *
log_level_name(int level)
{
	size_t	i;

	for (i = 0; i < sizeof(log_levels) / sizeof(log_levels[0]); i++)
		if (log_levels[i].level == level)
			return log_levels[i].name;
	return "unknown";
}

static void
log_vmsg(int prio, int with_errno, const char *fmt, va_list ap)
{
	char	 line[2048];
	int	 saved = errno;

	if (prio > log_level)
		return;
	vsnprintf(line, sizeof(line), fmt, ap);
	if (log_journal) {
		if (with_errno)
			fprintf(stderr, "<%d>%s: %s\n", prio, line,
			    strerror(saved));
		else
			fprintf(stderr, "<%d>%s\n", prio, line);
	} else {
		if (with_errno)
			fprintf(stderr, "%s: %s: %s: %s\n", log_prog,
			    log_level_name(prio), line, strerror(saved));
		else
			fprintf(stderr, "%s: %s: %s\n", log_prog,
			    log_level_name(prio), line);
	}
	errno = saved;
}

/*
 * Lines another module wrote for stderr, the config loader's errors: as
 * they are on a terminal ("FILE:LINE: [section] key: ..."), with the
 * journal's "<N>" in front of each under systemd, so that journalctl -p
 * finds them.  Whatever the log level.
 */
void
log_lines(int prio, const char *text)
{
	const char	*nl;
	int		 saved = errno;

	while (*text != '\0') {
		size_t	len = (nl = strchr(text, '\n')) != NULL ?
			    (size_t)(nl - text) : strlen(text);

		if (log_journal)
			fprintf(stderr, "<%d>", prio);
		fprintf(stderr, "%.*s\n", (int)len, text);
		text += len + (nl != NULL);
	}
	errno = saved;
}

void
log_msg(int prio, const char *fmt, ...)
{
	va_list	ap;

	va_start(ap, fmt);
	log_vmsg(prio, 0, fmt, ap);
	va_end(ap);
}

#define LOG_FN(name, prio, with_errno)					\
void									\
name(const char *fmt, ...)						\
{									\
	va_list	ap;							\
									\
	va_start(ap, fmt);						\
	log_vmsg(prio, with_errno, fmt, ap);				\
	va_end(ap);							\
}

LOG_FN(log_err, LOG_ERR, 1)
LOG_FN(log_errx, LOG_ERR, 0)
LOG_FN(log_warn, LOG_WARNING, 1)
LOG_FN(log_warnx, LOG_WARNING, 0)
LOG_FN(log_notice, LOG_NOTICE, 0)
LOG_FN(log_info, LOG_INFO, 0)
LOG_FN(log_debug, LOG_DEBUG, 0)
