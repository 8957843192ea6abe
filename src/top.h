/*
 * top.h: `pubrelay top`, a live view of one relay (pubrelay(1)).
 */
#ifndef PUBRELAY_TOP_H
#define PUBRELAY_TOP_H

#include <stdint.h>

/*
 * Run `pubrelay top` with its arguments (argv[0] is "top") against the
 * socket sock, each request bounded by timeout_ms (0: none).  Returns the
 * exit status.
 */
int	top_cmd(const char *sock, uint64_t timeout_ms, int argc, char **argv);

#endif
