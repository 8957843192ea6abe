/*
 * fuzz_config.c: libFuzzer entry point for the config loader: each input is
 * written to a temporary file and loaded with config_load(), errors going
 * to /dev/null.  Any crash, sanitizer report or leak is a bug; config_load
 * must also never leave cf without a uri, or report success with errors.
 *
 *   clang -g -O1 -fsanitize=fuzzer,address,undefined -Isrc \
 *       tests/fuzz_config.c src/config.c src/log.c src/util.c \
 *       src/protocol.c -linih -lrabbitmq -o fuzz_config
 *   ./fuzz_config -max_total_time=60 tests/corpus/config
 *
 * make check builds and runs it (tests/fuzz.sh) when configure found a
 * clang that takes -fsanitize=fuzzer; tests/fuzz_replay.c replays the
 * corpus through the same function without libFuzzer.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "config.h"

int LLVMFuzzerTestOneInput(const uint8_t *, size_t);

static char	fuzz_path[4096];
static FILE	*fuzz_null;

static void
fuzz_cleanup(void)
{
	if (fuzz_path[0] != '\0')
		unlink(fuzz_path);
}

static int
fuzz_setup(void)
{
	const char	*t = getenv("TMPDIR");
	int		 fd;

	snprintf(fuzz_path, sizeof(fuzz_path), "%s/fuzz_config.XXXXXX",
	    t != NULL && *t != '\0' ? t : "/tmp");
	if ((fd = mkstemp(fuzz_path)) == -1)
		return -1;
	close(fd);
	atexit(fuzz_cleanup);
	fuzz_null = fopen("/dev/null", "we");
	return fuzz_null == NULL ? -1 : 0;
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct config	 cf;
	FILE		*fp;
	int		 rc;

	if (fuzz_null == NULL && fuzz_setup() == -1)
		abort();
	if ((fp = fopen(fuzz_path, "we")) == NULL)
		abort();
	if (size > 0 && fwrite(data, 1, size, fp) != size)
		abort();
	if (fclose(fp) != 0)
		abort();
	config_defaults(&cf);
	rc = config_load(&cf, fuzz_path, fuzz_null);
	if (rc != -1 && (cf.nuris < 1 || cf.uris[0] == NULL))
		abort();
	if (rc == 0 && (cf.socket_path == NULL || cf.outbox_path == NULL))
		abort();
	config_free(&cf);
	return 0;
}
