/*
 * fuzz_replay.c: run a fuzz target's LLVMFuzzerTestOneInput over files and
 * directories of inputs, without libFuzzer.  Built with the normal compiler
 * (and the sanitizers under --enable-sanitizers) for every make check, so
 * the seed corpus and every reproducer kept under tests/corpus/ stay
 * regression tests where clang is missing.
 *
 *   fuzz_replay_X [-q] PATH...	exit 0 when every input ran; a crash aborts
 */
#include <sys/stat.h>

#include <dirent.h>
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *, size_t);

static unsigned	replay_count;
static int	replay_quiet;

static int
replay_file(const char *path)
{
	FILE	*fp;
	uint8_t	*buf = NULL;
	size_t	 len = 0, cap = 0, n;

	if ((fp = fopen(path, "rb")) == NULL) {
		fprintf(stderr, "%s: %s\n", path, strerror(errno));
		return -1;
	}
	for (;;) {
		if (len == cap) {
			cap = cap ? cap * 2 : 4096;
			if ((buf = realloc(buf, cap)) == NULL)
				abort();
		}
		n = fread(buf + len, 1, cap - len, fp);
		if (n == 0)
			break;
		len += n;
	}
	if (ferror(fp)) {
		fprintf(stderr, "%s: read error\n", path);
		fclose(fp);
		free(buf);
		return -1;
	}
	fclose(fp);
	if (!replay_quiet)
		fprintf(stderr, "replay %s (%zu bytes)\n", path, len);
	/* An exact-size copy, so the sanitizers see reads past the end. */
	{
		uint8_t	*exact = malloc(len ? len : 1);

		if (exact == NULL)
			abort();
		if (len)
			memcpy(exact, buf, len);
		LLVMFuzzerTestOneInput(exact, len);
		free(exact);
	}
	free(buf);
	replay_count++;
	return 0;
}

static int
replay_path(const char *path)
{
	struct stat	 sb;
	struct dirent	**ents;
	char		 sub[4096];
	int		 i, n, rc = 0;

	if (stat(path, &sb) == -1) {
		fprintf(stderr, "%s: %s\n", path, strerror(errno));
		return -1;
	}
	if (!S_ISDIR(sb.st_mode))
		return replay_file(path);
	if ((n = scandir(path, &ents, NULL, alphasort)) == -1) {
		fprintf(stderr, "%s: %s\n", path, strerror(errno));
		return -1;
	}
	for (i = 0; i < n; i++) {
		if (ents[i]->d_name[0] != '.') {
			snprintf(sub, sizeof(sub), "%s/%s", path,
			    ents[i]->d_name);
			if (replay_path(sub) == -1)
				rc = -1;
		}
		free(ents[i]);
	}
	free(ents);
	return rc;
}

int
main(int argc, char **argv)
{
	int	i, rc = 0;

	for (i = 1; i < argc; i++) {
		if (strcmp(argv[i], "-q") == 0) {
			replay_quiet = 1;
			continue;
		}
		if (replay_path(argv[i]) == -1)
			rc = 1;
	}
	printf("%u inputs replayed\n", replay_count);
	if (replay_count == 0) {
		/* An empty or misnamed corpus would pass having run nothing. */
		fprintf(stderr, "no inputs found\n");
		rc = 1;
	}
	return rc;
}
