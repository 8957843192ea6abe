/*
 * Unit tests for provenance.c: the unit in /proc/PID/cgroup texts of
 * cgroup v2, v1 and hybrid systems, and the header lines for this very
 * process (whose /proc/self/cgroup the test reads the same way).
 */
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "provenance.h"
#include "tap.h"

static void
unit_is(const char *text, const char *want, const char *what)
{
	char	unit[256];
	int	found = provenance_unit(text, strlen(text), unit, sizeof(unit));

	if (want == NULL)
		ok(!found, "%s: no unit", what);
	else {
		ok(found, "%s: a unit", what);
		if (found)
			is_str(unit, want, "%s", what);
	}
}

int
main(void)
{
	char	out[512], want[512];
	char	unit[300];
	size_t	n;

	unit_is("0::/system.slice/nginx.service\n", "nginx.service",
	    "v2 system service");
	unit_is("0::/user.slice/user-1000.slice/user@1000.service/app.slice/"
	    "worker.service\n", "worker.service",
	    "v2 user service: the innermost unit");
	unit_is("0::/user.slice/user-1000.slice/session-4.scope\n",
	    "session-4.scope", "v2 login session scope");
	unit_is("0::/system.slice/cron.service/x.scope/y\n", "x.scope",
	    "the last unit, not a plain directory below it");
	unit_is("0::/\n", NULL, "v2 root");
	unit_is("0::/init.scope", "init.scope", "no final newline");
	unit_is("12:cpu:/x\n4:name=systemd:/system.slice/php-fpm.service\n",
	    "php-fpm.service", "v1 name=systemd, any hierarchy number");
	unit_is("9:name=systemd:/system.slice/a.service\n"
	    "0::/system.slice/b.service\n", "b.service",
	    "hybrid: the unified line first");
	unit_is("4:memory:/docker/abc\n", NULL, "v1 without name=systemd");
	unit_is("", NULL, "empty");
	unit_is("0::/system.slice/.service\n", NULL, "a bare suffix is no unit");
	memset(unit, 'a', sizeof(unit));
	memcpy(unit, "0::/", 4);
	snprintf(unit + 290, 10, ".service\n");
	unit_is(unit, NULL, "a unit too long for the buffer: none");

	/* This process: the same fields, and the unit /proc/self has. */
	n = provenance_stamp(out, sizeof(out), "h1", getuid(), getpid());
	ok(n == strlen(out) && n > 0, "stamp of this process: %zu bytes", n);
	snprintf(want, sizeof(want), "header: x-pubrelay-host=h1\n"
	    "header: x-pubrelay-uid=%lu\nheader: x-pubrelay-pid=%ld\n",
	    (unsigned long)getuid(), (long)getpid());
	ok(strncmp(out, want, strlen(want)) == 0, "host, uid, pid first");
	{
		FILE	*f = fopen("/proc/self/cgroup", "r");
		char	 text[4096], u[256];
		size_t	 len = f != NULL ? fread(text, 1, sizeof(text) - 1, f) :
			    0;

		if (f != NULL)
			fclose(f);
		text[len] = '\0';
		if (provenance_unit(text, len, u, sizeof(u))) {
			snprintf(want + strlen(want), sizeof(want) -
			    strlen(want), "header: x-pubrelay-unit=%s\n", u);
			is_str(out, want, "and the unit of /proc/self/cgroup");
		} else
			is_str(out, want, "and no unit: /proc/self/cgroup "
			    "names none");
	}
	ok(provenance_stamp(out, 40, "h1", 0, 1) == 0, "too small: 0");
	return done_testing();
}
