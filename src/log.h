/*
 * log.h: leveled logging to stderr, one line per event.  When stderr is the
 * systemd journal (JOURNAL_STREAM matches) lines carry "<N>" priority prefixes;
 * otherwise a level word.  Safe to call from any thread.
 */
#ifndef PUBRELAY_LOG_H
#define PUBRELAY_LOG_H

#include <syslog.h>

void	log_init(int level, const char *progname);
void	log_set_level(int level);
int	log_get_level(void);
/* "error", "warning", "notice", "info", "debug"; 0 on success. */
int	log_level_parse(const char *s, int *level);
const char *log_level_name(int level);

void	log_msg(int prio, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Finished lines (the config loader's), each with its priority if journald. */
void	log_lines(int prio, const char *text);
/* log_warn/log_err append ": strerror(errno)"; the x variants don't. */
void	log_err(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void	log_errx(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void	log_warn(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void	log_warnx(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void	log_notice(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void	log_info(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void	log_debug(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

#endif
