#!/usr/bin/python3
"""package.py: the Debian packages, built, checked, and installed under a
real systemd.

Prints TAP.  Run by `make check`, or by hand (as root):

    PUBRELAYD=$PWD/pubrelayd PUBRELAY=$PWD/pubrelay \\
        /usr/bin/python3 tests/package.py [CHECK ...]

Setup builds the packages from this source tree with scripts/package.sh
(--nocheck: make check runs the unit tests already), version 0.1.0, and
then, while the first checks run, version 0.1.0+test1 for the upgrade.  It
boots systemd as PID 1 in private namespaces as tests/pid1.py does (its
World: overlays on /usr, /etc and /var, so that dpkg inside writes to the
overlays and the host's dpkg database stays as it was), with empty tmpfs
mounts over /lib/systemd/system and /etc/systemd/system: systemd sees the
units dpkg installs and the links deb-systemd-helper makes, and none of the
host's.  The unit path is the stand-in targets and journald's units, then
/etc/systemd/system, then /lib/systemd/system.  The host's policy-rc.d (a
container's "start nothing") is hidden inside, as a real machine has none.
The packages are installed with dpkg inside, whose maintainer scripts talk
to that systemd.  The relay publishes to this run's private broker.

Each check's docstring says what it proves: `package.py --list -v`.  They
run in order, each expecting the state the one before leaves; about four
minutes in all on 2 cores, most of it the two builds.

Needs root, RabbitMQ, pika, systemd, unshare, nsenter, setpriv, git,
dpkg-buildpackage, lintian, hardening-check (devscripts) and the package's
Build-Depends; without one the suite skips, saying which (and fails when
PUBRELAY_REQUIRE_ALL is set).
"""

import os
import re
import shutil
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import harness as H  # noqa: E402
from harness import log  # noqa: E402
import pid1  # noqa: E402
import scenarios  # noqa: E402
from scenarios import check, check_eq  # noqa: E402

SRCDIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
VERSION = "0.1.0"
UPGRADE = "0.1.0+test1"
PACKAGES = ("libpubrelay0", "libpubrelay-dev", "pubrelay", "python3-pubrelay")
INI = "/etc/pubrelay/pubrelay.ini"
STATE = "/var/lib/pubrelay"
UNITS = ("pubrelayd.service", "pubrelayd.socket")
# What deb-systemd-helper enable makes, from the units' [Install].
WANTS = ("/etc/systemd/system/multi-user.target.wants/pubrelayd.service",
         "/etc/systemd/system/sockets.target.wants/pubrelayd.socket")
PURGE_SAYS = "pubrelay: purge: removing /var/lib/pubrelay"
BUILD_TIMEOUT = 600


def clean_env():
    """The environment for a build: not make check's jobserver."""
    env = dict(os.environ)
    for k in ("MAKEFLAGS", "MFLAGS", "MAKELEVEL", "MAKEOVERRIDES",
              "DEB_BUILD_OPTIONS"):
        env.pop(k, None)
    return env


class Build:
    """scripts/package.sh --nocheck --no-deps --no-lintian into outdir, in
    the background; wait() returns {package: .deb path}."""

    def __init__(self, outdir, version=None):
        self.outdir = outdir
        self.version = version
        self.log = outdir + ".log"
        argv = [os.path.join(SRCDIR, "scripts", "package.sh"), "--nocheck",
                "--no-deps", "--no-lintian", "-o", outdir]
        if version is not None:
            argv += ["--version", version]
        self.t0 = time.monotonic()
        with open(self.log, "w") as out:
            self.p = H.spawn(argv, stdout=out, stderr=subprocess.STDOUT,
                             stdin=subprocess.DEVNULL, env=clean_env())
        self.debs = None

    def wait(self):
        if self.debs is not None:
            return self.debs
        try:
            rc = self.p.wait(BUILD_TIMEOUT)
        except subprocess.TimeoutExpired:
            H.killpg(self.p)
            raise H.HarnessError("package.sh %s: still building after %ds"
                                 % (self.version, BUILD_TIMEOUT))
        if rc != 0:
            raise H.HarnessError("package.sh %s failed (%d):\n%s"
                                 % (self.version or VERSION, rc,
                                    H.tail(self.log, 40)))
        log("package.sh %s: %.0f s" % (self.version or VERSION,
                                       time.monotonic() - self.t0))
        want = self.version or VERSION
        debs = {}
        for name in os.listdir(self.outdir):
            m = re.match(r"([^_]+)_([^_]+)_[^_]+\.deb$", name)
            if m and m.group(2) == want:
                debs[m.group(1)] = os.path.join(self.outdir, name)
        for p in PACKAGES:
            check(p in debs, "package.sh %s built no %s: %s"
                  % (want, p, sorted(os.listdir(self.outdir))))
        self.changes = os.path.join(self.outdir, "pubrelay_%s_%s.changes"
                                    % (want, arch()))
        self.debs = debs
        return debs


def arch():
    return subprocess.run(["dpkg", "--print-architecture"], check=True,
                          stdout=subprocess.PIPE).stdout.decode().strip()


def host_status(package):
    """dpkg's status of package on the host ("" when unknown to it)."""
    p = subprocess.run(["dpkg-query", "-W", "-f=${Status}", package],
                       stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    return p.stdout.decode().strip()


class World(pid1.World):
    """pid1.World with nothing of `make install`: systemd boots with empty
    unit directories, and the packages are installed into it with dpkg."""

    def install(self):
        self.units = os.path.join(self.work, "units")
        os.makedirs(self.units)
        for u in pid1.JOURNALD:
            shutil.copy(os.path.join("/lib/systemd/system", u), self.units)
        for t in pid1.STAND_INS:
            with open(os.path.join(self.units, t), "w") as f:
                f.write("[Unit]\nDescription=%s (package.py stand-in)\n" % t)
        with open(os.path.join(self.units, "pubrelay-test.target"), "w") as f:
            f.write("[Unit]\nDescription=package.py\nWants=%s\n"
                    % " ".join(pid1.JOURNALD))
        self.client = "/usr/bin/pubrelay"
        self.sock = "/run/pubrelay/pubrelay.sock"
        self.ini = INI
        self.outbox_dir = STATE
        self.outbox = STATE + "/outbox.db"
        self.queue = "pubrelay-package"
        with H.Consumer(self.broker) as c:
            c.declare(self.queue)
        self.host_before = {p: host_status(p) for p in PACKAGES}
        self.host_paths = {p: os.path.exists(p)
                           for p in (INI, STATE, "/usr/sbin/pubrelayd")}

    def overlaid(self):
        return {"/etc", "/var", "/usr"}

    def tree_lines(self):
        lib_units = os.path.realpath("/lib/systemd/system")
        return ["mount -t tmpfs -o mode=0755 tmpfs %s" % lib_units,
                "mount -t tmpfs -o mode=0755 tmpfs /etc/systemd/system",
                "rm -f /usr/sbin/policy-rc.d"]

    def setup_lines(self):
        return []

    def unit_path(self):
        return "%s:/etc/systemd/system:/lib/systemd/system" % self.units

    def dpkg(self, *args):
        """dpkg inside, stdin /dev/null: a conffile prompt fails it."""
        return self.ns(["dpkg"] + list(args), timeout=240)

    def dpkg_ok(self, *args):
        rc, out = self.dpkg(*args)
        check(rc == 0, "dpkg %s: exit %d:\n%s" % (" ".join(args), rc, out))
        return out

    def status(self, package):
        rc, out = self.ns(["dpkg-query", "-W", "-f=${Status} ${Version}",
                           package])
        return out.strip() if rc == 0 else "unknown"

    def exists(self, path):
        return self.ns(["test", "-e", path])[0] == 0

    def set_uri(self, uri):
        """The admin's edit of the conffile: [broker] uri, the shipped text
        otherwise; its owner and mode stay."""
        rc, text = self.ns(["cat", INI])
        check(rc == 0, "cat %s: %s" % (INI, text))
        text = re.sub(r"(?m)^uri = .*\n", "", text)
        check(text.count("[broker]\n") == 1, "%s: no single [broker]" % INI)
        text = text.replace("[broker]\n", "[broker]\nuri = %s\n" % uri)
        rc, out = self.ns(["sh", "-c", 'cat >"$1"', "sh", INI], input=text)
        check(rc == 0, "writing %s: %s" % (INI, out))

    def outbox_rows(self):
        """Rows in the outbox file, read with SQLite (the daemon may be
        gone)."""
        rc, out = self.ns(["/usr/bin/python3", "-c",
                           "import sqlite3, sys; "
                           "c = sqlite3.connect('file:%s?mode=ro', uri=True);"
                           " print(c.execute('SELECT count(*) FROM outbox')"
                           ".fetchone()[0])" % self.outbox])
        check(rc == 0, "reading %s: %s" % (self.outbox, out))
        return int(out.strip())

    def drained_queue(self):
        with H.Consumer(self.broker) as c:
            return c.count(self.queue)


class Env:
    def __init__(self, work):
        self.work = work
        self.v1 = Build(os.path.join(work, "debs-" + VERSION))
        self.v1.wait()
        # The upgrade's build runs while the first checks do.
        self.v2 = Build(os.path.join(work, "debs-" + UPGRADE), UPGRADE)
        self.w = None


# ---------------------------------------------------------------------------
# Checks, in order: each leaves the system as the next one expects it


CHECKS = scenarios.Registry()


def check_fn(fn):
    def scenario(ctx):
        notes = []
        try:
            fn(ctx.env, ctx.env.w, notes)
        finally:
            if notes:
                log("%s: %s" % (fn.__name__, "; ".join(notes)))
    scenario.__name__ = fn.__name__
    scenario.__doc__ = fn.__doc__
    CHECKS(scenario)
    return fn


def deb_files(deb):
    """{path: mode string} of what a .deb holds (directories left out)."""
    out = subprocess.run(["dpkg-deb", "-c", deb], check=True,
                         stdout=subprocess.PIPE).stdout.decode()
    files = {}
    for ln in out.splitlines():
        f = ln.split()
        if not f[0].startswith("d"):
            files[f[5].lstrip(".")] = f[0]
    return files


@check_fn
def contents(env, w, notes):
    """Each package holds what it should: the daemon, client, units,
    sysusers.d file, man pages 1/5/7/8 and the config as its one conffile in
    pubrelay; the versioned library only in libpubrelay0; header, .so link,
    static library, pkg-config file and section-3 pages (no .la) in
    libpubrelay-dev; the module in python3-pubrelay.  The symbols file lists
    exactly what lib/libpubrelay.sym exports, at version node PUBRELAY_0."""
    debs = env.v1.debs
    ma = subprocess.run(["dpkg-architecture", "-qDEB_HOST_MULTIARCH"],
                        check=True, stdout=subprocess.PIPE).stdout.decode()
    lib = "/usr/lib/%s/" % ma.strip()
    want = {
        "pubrelay": ["/usr/sbin/pubrelayd", "/usr/bin/pubrelay",
                     "/lib/systemd/system/pubrelayd.service",
                     "/lib/systemd/system/pubrelayd.socket",
                     "/usr/lib/sysusers.d/pubrelay.conf", INI,
                     "/usr/share/man/man1/pubrelay.1.gz",
                     "/usr/share/man/man5/pubrelay.ini.5.gz",
                     "/usr/share/man/man7/pubrelay-protocol.7.gz",
                     "/usr/share/man/man8/pubrelayd.8.gz"],
        "libpubrelay0": [lib + "libpubrelay.so.0", lib + "libpubrelay.so.0.0.0"],
        "libpubrelay-dev": ["/usr/include/pubrelay.h", lib + "libpubrelay.so",
                            lib + "libpubrelay.a",
                            lib + "pkgconfig/pubrelay.pc",
                            "/usr/share/man/man3/libpubrelay.3.gz",
                            "/usr/share/man/man3/pubrelay_open.3.gz"],
        "python3-pubrelay": ["/usr/lib/python3/dist-packages/pubrelay.py"],
    }
    held = {p: deb_files(debs[p]) for p in PACKAGES}
    for p, paths in want.items():
        for path in paths:
            check(path in held[p], "%s lacks %s" % (p, path))
    for p in PACKAGES:
        for path in held[p]:
            check(not path.endswith(".la"), "%s ships %s" % (p, path))
            if p != "libpubrelay0":
                check(".so.0" not in path, "%s ships %s" % (p, path))
    check_eq(held["pubrelay"]["/usr/sbin/pubrelayd"], "-rwxr-xr-x",
             "mode of pubrelayd")
    conffiles = subprocess.run(
        ["dpkg-deb", "--info", debs["pubrelay"], "conffiles"], check=True,
        stdout=subprocess.PIPE).stdout.decode().split()
    check_eq(conffiles, [INI], "pubrelay's conffiles")
    symbols = subprocess.run(
        ["dpkg-deb", "--info", debs["libpubrelay0"], "symbols"], check=True,
        stdout=subprocess.PIPE).stdout.decode()
    got = sorted(re.findall(r"^ (pubrelay_\w+)@PUBRELAY_0 ", symbols, re.M))
    with open(os.path.join(SRCDIR, "lib", "libpubrelay.sym")) as f:
        node = f.read().split("PUBRELAY_0 {", 1)[1].split("local:", 1)[0]
    exported = sorted(re.findall(r"^\s*(pubrelay_\w+);", node, re.M))
    check(exported, "no symbols in lib/libpubrelay.sym's PUBRELAY_0")
    check_eq(got, exported, "libpubrelay0's symbols against libpubrelay.sym")
    dynsym = subprocess.run(
        ["sh", "-c", 'dpkg-deb --fsys-tarfile "$1" | tar -xOf - '
         '"./%slibpubrelay.so.0.0.0" | '
         'cat >"$2" && objdump -T "$2"' % lib.lstrip("/"), "sh",
         debs["libpubrelay0"], os.path.join(env.work, "libpubrelay.so")],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    check(dynsym.returncode == 0, "objdump -T: %s" % dynsym.stdout.decode())
    defined = sorted(set(re.findall(r"\.text\s+\S+\s+PUBRELAY_0\s+(\w+)$",
                                    dynsym.stdout.decode(), re.M)))
    check_eq(defined, exported, "libpubrelay.so.0's PUBRELAY_0 functions")
    notes.append("%d symbols" % len(exported))


@check_fn
def lintian(env, w, notes):
    """lintian (errors, warnings, info and pedantic tags shown) finds no
    error and no warning in the packages built, overrides aside; each
    override names its reason in debian/*.lintian-overrides."""
    p = subprocess.run(["lintian", "--fail-on", "error,warning",
                        "--display-info", "--pedantic", "--show-overrides",
                        env.v1.changes], stdout=subprocess.PIPE,
                       stderr=subprocess.STDOUT, timeout=240)
    out = p.stdout.decode("utf-8", "replace")
    log("lintian:\n" + out)
    check(p.returncode == 0, "lintian: exit %d" % p.returncode)
    bad = [ln for ln in out.splitlines() if ln[:2] in ("E:", "W:")]
    check(not bad, "lintian errors or warnings: %s" % bad)
    for ov in os.listdir(os.path.join(SRCDIR, "debian")):
        if not ov.endswith("lintian-overrides"):
            continue
        with open(os.path.join(SRCDIR, "debian", ov)) as f:
            lines = f.read().splitlines()
        for i, ln in enumerate(lines):
            if ln.strip() and not ln.startswith("#"):
                check(i > 0 and lines[i - 1].startswith("#"),
                      "debian/%s: override %r has no reason above it"
                      % (ov, ln))
    notes.append("%d tags shown" % sum(1 for ln in out.splitlines()
                                       if re.match(r"[EWIPXO]: ", ln)))


@check_fn
def hardening(env, w, notes):
    """hardening-check finds PIE, the stack protector, FORTIFY_SOURCE, RELRO
    and BIND_NOW in pubrelayd, pubrelay and libpubrelay.so.0 as packaged,
    and -fcf-protection reached the code (endbr64 at function entries).
    The control flow integrity ELF note is not asked for: bookworm's
    crt1.o lacks it, so no program linked on bookworm has it."""
    x = os.path.join(env.work, "extracted")
    os.makedirs(x, exist_ok=True)
    for p in ("pubrelay", "libpubrelay0"):
        subprocess.run(["dpkg-deb", "-x", env.v1.debs[p], x], check=True)
    elfs = [os.path.join(x, "usr/sbin/pubrelayd"),
            os.path.join(x, "usr/bin/pubrelay")]
    for d, _, names in os.walk(os.path.join(x, "usr/lib")):
        elfs += [os.path.join(d, n) for n in names if n == "libpubrelay.so.0"]
    check_eq(len(elfs), 3, "ELF files found")
    p = subprocess.run(["hardening-check", "--nocfprotection"] + elfs,
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    out = p.stdout.decode()
    log("hardening-check:\n" + out)
    check(p.returncode == 0, "hardening-check: exit %d" % p.returncode)
    if arch() == "amd64":
        for e in elfs:
            d = subprocess.run(["objdump", "-d", e], check=True,
                               stdout=subprocess.PIPE).stdout.decode()
            check("endbr64" in d, "%s: no endbr64 (-fcf-protection)" % e)
    notes.append("3 binaries")


@check_fn
def install(env, w, notes):
    """dpkg -i of the four packages: the postinst makes the user pubrelay
    before the units start, enables pubrelayd.socket and pubrelayd.service
    (the wants links) and starts both; the daemon runs as pubrelay with the
    shipped config (no broker uri: the default, localhost), which is now
    root:pubrelay 0640; the Python module imports from dist-packages."""
    debs = env.v1.debs
    w.dpkg_ok("-i", *[debs[p] for p in PACKAGES])
    for p in PACKAGES:
        check_eq(w.status(p), "install ok installed %s" % VERSION,
                 "dpkg status of %s" % p)
    rc, out = w.ns(["getent", "passwd", "pubrelay"])
    check(rc == 0, "no user pubrelay: %s" % out)
    uid = int(out.split(":")[2])
    check(uid < 1000, "pubrelay is no system user: uid %d" % uid)
    for u in UNITS:
        check_eq(w.show(u, "UnitFileState"), "enabled", "%s enabled" % u)
        w.wait_active(u)
    for link in WANTS:
        check(w.exists(link), "no %s" % link)
    # "running": its service has the socket (listening when it is
    # stopped, as activation checks).
    check_eq(w.show("pubrelayd.socket", "SubState"), "running",
             "pubrelayd.socket")
    st = w.proc_status(w.main_pid())
    check_eq(int(st["Uid"].split()[0]), uid, "the daemon's uid")
    # The socket's owner is not checked: the service's RuntimeDirectory=
    # hands /run/pubrelay and what it holds to the user pubrelay.
    rc, out = w.ns(["stat", "-c", "%U:%G %a", INI, w.sock])
    got = out.split("\n")[:2]
    check_eq([got[0], got[1].split(":")[-1]],
             ["root:pubrelay 640", "pubrelay 660"],
             "owner and mode of %s, group and mode of %s" % (INI, w.sock))
    check(w.status_line(), "no status line with the shipped config")
    rc, out = w.ns(["/usr/bin/python3", "-c",
                    "import pubrelay; print(pubrelay.__file__)"])
    check_eq(out.strip(), "/usr/lib/python3/dist-packages/pubrelay.py",
             "the Python module")
    notes.append("status: %s" % w.status_line())


@check_fn
def publish(env, w, notes):
    """With the broker's uri written into /etc/pubrelay/pubrelay.ini and the
    service restarted, `pubrelay publish` by a member of group pubrelay, a
    program built against libpubrelay-dev (pkg-config) and the Python
    module all reach the broker, in order."""
    w.set_uri(w.broker.uri())
    rc, out = w.systemctl("restart", "pubrelayd.service")
    check(rc == 0, "systemctl restart: %s" % out)
    w.wait_active()
    sent = pid1.bodies("cli", 10)
    w.publish_ok(sent)
    check_eq(w.receive(len(sent)), sent, "messages through the package")
    prog = os.path.join(env.work, "libprog.c")
    with open(prog, "w") as f:
        f.write('#include <stdio.h>\n#include <string.h>\n'
                '#include <pubrelay.h>\n'
                'int main(int argc, char **argv) {\n'
                '  pubrelay *h = pubrelay_open(NULL, 5000);\n'
                '  pubrelay_props *p = pubrelay_props_new();\n'
                '  int rc;\n'
                '  if (h == NULL || p == NULL) return 2;\n'
                '  pubrelay_props_set(p, "routing-key", argv[1]);\n'
                '  rc = pubrelay_publish(h, p, argv[2], strlen(argv[2]));\n'
                '  if (rc != PUBRELAY_ACCEPTED) {\n'
                '    fprintf(stderr, "%s\\n", pubrelay_errmsg(h));\n'
                '    return 1;\n  }\n'
                '  pubrelay_props_free(p);\n  pubrelay_close(h);\n'
                '  return argc == 3 ? 0 : 3;\n}\n')
    exe = os.path.join(env.work, "libprog")
    rc, out = w.ns(["sh", "-c", 'cc -o "$2" "$1" $(pkg-config --cflags '
                    '--libs pubrelay) && "$2" "$3" lib-1', "sh", prog, exe,
                    w.queue])
    check(rc == 0, "a program against the installed library: %s" % out)
    rc, out = w.ns(["/usr/bin/python3", "-c",
                    "import pubrelay, sys; c = pubrelay.Client(); "
                    "c.publish('py-1', routing_key=sys.argv[1])", w.queue],
                   user=w.publisher())
    check(rc == 0, "the Python module: %s" % out)
    check_eq(w.receive(2), ["lib-1", "py-1"], "the library's and Python's")
    notes.append("10 + 1 + 1")


@check_fn
def activation(env, w, notes):
    """Stopped, the service is started again by a client through the
    socket, which stayed listening."""
    pid = w.main_pid()
    rc, out = w.systemctl("stop", "pubrelayd.service")
    check(rc == 0, "systemctl stop: %s" % out)
    check_eq(w.show("pubrelayd.service", "ActiveState"), "inactive",
             "the stopped service")
    check_eq(w.show("pubrelayd.socket", "SubState"), "listening",
             "the socket after the stop")
    sent = pid1.bodies("act", 3)
    w.publish_ok(sent)
    w.wait_active()
    check(w.main_pid() != pid, "the same main process after a stop")
    check_eq(w.receive(len(sent)), sent, "messages after reactivation")


@check_fn
def reload(env, w, notes):
    """`systemctl reload pubrelayd` keeps the process and logs the
    reload."""
    pid = w.main_pid()
    rc, out = w.systemctl("reload", "pubrelayd")
    check(rc == 0, "systemctl reload: %d %s" % (rc, out))
    w.wait_active()
    check_eq(w.main_pid(), pid, "main pid after reload")
    H.wait_until(lambda: "SIGHUP: reloaded" in w.journal(), 10,
                 "the reload in the journal", interval=0.5)


@check_fn
def upgrade(env, w, notes):
    """With the broker's AMQP app stopped and messages waiting in the
    outbox, dpkg -i of version 0.1.0+test1 (stdin /dev/null: a conffile
    prompt would fail it) keeps the edited conffile without asking,
    restarts the service (a new main process; the socket unit is not
    restarted) and, once the broker is back, every waiting message is
    delivered once, in order."""
    debs = env.v2.wait()
    rc, before = w.ns(["cat", INI])
    w.broker.stop_app()
    try:
        sent = pid1.bodies("upgrade", 20)
        w.publish_ok(sent)
        H.wait_until(lambda: "backlog 20" in w.status_line(), 20,
                     "backlog 20 (status: %s)" % w.status_line(),
                     interval=0.5)
        pid = w.main_pid()
        sock_since = w.show("pubrelayd.socket",
                            "ActiveEnterTimestampMonotonic")
        out = w.dpkg_ok("-i", *[debs[p] for p in PACKAGES])
        check("Configuration file" not in out, "dpkg asked:\n%s" % out)
        for p in PACKAGES:
            check_eq(w.status(p), "install ok installed %s" % UPGRADE,
                     "dpkg status of %s" % p)
        rc, after = w.ns(["cat", INI])
        check_eq(after, before, "the edited %s after the upgrade" % INI)
        check(not w.exists(INI + ".dpkg-dist") and
              not w.exists(INI + ".dpkg-new"), "dpkg left a new %s" % INI)
        w.wait_active()
        check(w.main_pid() != pid, "the service was not restarted")
        check_eq(w.show("pubrelayd.socket", "ActiveEnterTimestampMonotonic"),
                 sock_since, "the socket unit's start (restarted?)")
        H.wait_until(lambda: "backlog 20" in w.status_line(), 20,
                     "backlog 20 after the upgrade (status: %s)"
                     % w.status_line(), interval=0.5)
    finally:
        w.broker.start_app()
    check_eq(w.receive(len(sent), timeout=90), sent,
             "the outbox after the upgrade")
    w.wait_drained()
    check_eq(w.drained_queue(), 0, "messages beyond the 20 (duplicates)")
    notes.append("pid %d -> %d" % (pid, w.main_pid()))


@check_fn
def remove(env, w, notes):
    """dpkg -r pubrelay stops the units and removes the daemon, the client
    and the units; the outbox, with the message waiting in it, and the
    edited config stay.  Installed again, the relay publishes that
    message."""
    w.broker.stop_app()
    try:
        w.publish_ok(["kept-1"])
        out = w.dpkg_ok("-r", "pubrelay")
        check_eq(w.status("pubrelay"), "deinstall ok config-files %s"
                 % UPGRADE, "dpkg status of pubrelay")
        for gone in ("/usr/sbin/pubrelayd", "/usr/bin/pubrelay",
                     "/lib/systemd/system/pubrelayd.service",
                     "/lib/systemd/system/pubrelayd.socket", "/run/pubrelay"):
            check(not w.exists(gone), "%s left after remove" % gone)
        for u in UNITS:
            check(w.show(u, "ActiveState") in ("inactive", "failed"),
                  "%s still active" % u)
        rc, out = w.ns(["pgrep", "-x", "pubrelayd"])
        check(rc != 0, "a pubrelayd still runs: %s" % out)
        check_eq(w.outbox_rows(), 1, "rows in the outbox after remove")
        rc, text = w.ns(["cat", INI])
        check("uri = %s\n" % w.broker.uri() in text,
              "%s lost the edit after remove" % INI)
        w.dpkg_ok("-i", env.v2.debs["pubrelay"])
        w.wait_active()
    finally:
        w.broker.start_app()
    check_eq(w.receive(1, timeout=90), ["kept-1"],
             "the message kept across remove and install")
    w.wait_drained()


@check_fn
def purge(env, w, notes):
    """dpkg -P pubrelay says on stderr that it removes /var/lib/pubrelay
    (the outbox) and removes it, the config and /etc/pubrelay, and the
    units' enablement links."""
    rc, out = w.ns(["sh", "-c", "dpkg -P pubrelay 2>&1 >/dev/null"])
    check(rc == 0, "dpkg -P: %s" % out)
    check(PURGE_SAYS in out, "dpkg -P's stderr lacks %r:\n%s"
          % (PURGE_SAYS, out))
    check(w.status("pubrelay").split()[-1:] in (["not-installed"],
                                                 ["unknown"]),
          "dpkg status after purge: %r" % w.status("pubrelay"))
    for gone in (STATE, INI, "/etc/pubrelay") + WANTS:
        check(not w.exists(gone), "%s left after purge" % gone)
    notes.append(out.strip().splitlines()[0] if out.strip() else "")


@check_fn
def host_untouched(env, w, notes):
    """The host's dpkg database, /etc/pubrelay and /var/lib/pubrelay are as
    they were before the run: every install went to the overlays."""
    for p in PACKAGES:
        check_eq(host_status(p), w.host_before[p], "host dpkg status of %s"
                 % p)
    check(not host_status("pubrelay").startswith("install"),
          "pubrelay is installed on the host")
    for path, was in w.host_paths.items():
        check_eq(os.path.exists(path), was, "host %s exists" % path)


class Ctx:
    def __init__(self, env):
        self.env = env
        self.relays = []


def setup(names):
    work = H.mkdtemp("pubrelay-package-")
    env = Env(work)
    env.w = World()
    log("systemd %d in its namespaces; broker on %d"
        % (env.w.pid1, env.w.broker.port))
    return env


def report(env, ctx, name):
    if env.w is not None and env.w.pid1 is not None:
        log("journal of pubrelayd.service, last lines:")
        log(env.w.journal()[-3000:])


def teardown(env):
    if env.v2.p.poll() is None:
        H.killpg(env.v2.p)
    H.reap(env.v2.p)
    if env.w is not None:
        env.w.shutdown()
        env.w.broker.stop()
    return "systemd and broker stop"


NEEDS = ("root", "broker", "pika", "systemd", "unshare", "nsenter",
         "setpriv", "git", "dpkg-buildpackage", "dpkg-checkbuilddeps",
         "lintian", "hardening-check", "objdump", "cc", "pkg-config")


def main(argv):
    if "--list" not in argv and not H.lacking(NEEDS):
        # The Build-Depends too: package.sh --no-deps installs nothing.
        p = subprocess.run(["dpkg-checkbuilddeps"], cwd=SRCDIR,
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        if p.returncode != 0:
            H.skip_all("package.py needs the Build-Depends: %s"
                       % p.stdout.decode().strip())
    return scenarios.run("package.py", CHECKS, argv, setup, lambda e, n: Ctx(e),
                         report=report, teardown=teardown, timeout=600,
                         needs=NEEDS)


if __name__ == "__main__":
    sys.exit(main(sys.argv))
