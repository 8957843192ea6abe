/*
 * outbox_fixture.h: a real outbox in a temp dir for the unit tests of the
 * main thread's modules (test_dead, test_receipt): the directory, opening a
 * file in it, committing rows.  A test that cannot set these up bails out.
 */
#ifndef PUBRELAY_OUTBOX_FIXTURE_H
#define PUBRELAY_OUTBOX_FIXTURE_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "outbox.h"

static char	fixture_dir[256];

/* The temp dir, named after the test; removed by fixture_done(). */
static void
fixture_init(const char *test)
{
	snprintf(fixture_dir, sizeof(fixture_dir), "%s/%s.XXXXXX",
	    getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp", test);
	if (mkdtemp(fixture_dir) == NULL) {
		printf("Bail out! mkdtemp %s\n", fixture_dir);
		exit(1);
	}
}

static void
fixture_done(void)
{
	char	cmd[600];

	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", fixture_dir);
	if (system(cmd) != 0)
		printf("# could not remove %s\n", fixture_dir);
}

static struct outbox *
open_in(const char *name)
{
	struct outbox	*ob;
	char		 p[512], err[512];

	snprintf(p, sizeof(p), "%s/%s", fixture_dir, name);
	if (outbox_open(&ob, p, 0, err, sizeof(err)) != 0) {
		printf("Bail out! open %s: %s\n", p, err);
		exit(1);
	}
	return ob;
}

/*
 * n rows to exchange "ex", key "q", bodies "<tag><i>", created at 1000 + i,
 * in one transaction; their ids into ids (may be NULL).
 */
static void
insert_n(struct outbox *ob, int n, const char *tag, int64_t *ids)
{
	char	body[32];
	int64_t	id;
	int	i;

	if (outbox_begin(ob) != OUTBOX_OK)
		goto fail;
	for (i = 0; i < n; i++) {
		snprintf(body, sizeof(body), "%s%d", tag, i);
		if (outbox_insert(ob, "exchange: ex\nrouting-key: q\n", 28,
		    body, strlen(body), 1000 + i, &id) != OUTBOX_OK)
			goto fail;
		if (ids != NULL)
			ids[i] = id;
	}
	if (outbox_commit(ob) == OUTBOX_OK)
		return;
fail:
	printf("Bail out! insert: %s\n", outbox_errmsg(ob));
	exit(1);
}

#endif
