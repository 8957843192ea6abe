#!/usr/bin/python3
"""pid1.py: the shipped units under a real systemd, PID 1 of its own namespaces.

Prints TAP.  Run by `make check`, or by hand after `make` (as root):

    PUBRELAYD=$PWD/pubrelayd PUBRELAY=$PWD/pubrelay \\
        /usr/bin/python3 tests/pid1.py [CHECK ...]

tests/systemd.py checks what can be checked without a service manager (the
units verify, notifications, socket activation by systemd-socket-activate).
This suite boots the real one in new PID, mount, UTS and IPC namespaces,
keeping what systemd as PID 1 would change on the host inside: /usr, /etc
and /var get overlays (writes go to a temp dir), /run and /dev are its own
(the console bound to /dev/null), /proc/sys and /sys are read-only (it
would raise host-wide limits), the hostname is its own, and it runs in a
cgroup of its own below the runner's, removed with everything systemd
made under it.  `make install` output is copied in,
systemd-sysusers creates the user pubrelay, and /lib/systemd/systemd runs as
PID 1 with SYSTEMD_UNIT_PATH limited to a temp dir: pubrelayd.service and
pubrelayd.socket as installed, journald's units, and empty stand-ins for the
targets they order against, so nothing else of the host starts (no getty,
no udev, no host rabbitmq-server).  The network is the host's: the relay
publishes to this run's private broker on 127.0.0.1.  Commands run inside
through nsenter; clients as nobody, with or without the group pubrelay.
The config at the unit's ExecStart= path is the installed pubrelay.ini as
shipped plus the broker's uri: the outbox and the socket go where the unit
makes room for them ($STATE_DIRECTORY, $RUNTIME_DIRECTORY), whatever prefix
the build was configured with (make check's default is /usr/local).

Each check's docstring says what it proves: `pid1.py --list -v`.  They
run in order, about 90 s in all (the watchdog check about 30 s of it):
later checks expect the state the earlier ones leave, but start the service
when it is not running, so a subset works.

A drop-in next to the units sets LimitCORE=0 (the watchdog check aborts the
daemon).

Needs root, RabbitMQ, unshare, nsenter and setpriv (util-linux), systemd,
systemd-sysusers, make, tar and fiu-run (fiu-utils, for sync_failure); without one the suite skips, saying which
(and fails when PUBRELAY_REQUIRE_ALL is set).
"""

import json
import os
import shutil
import signal
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import harness as H  # noqa: E402
from harness import log  # noqa: E402
import scenarios  # noqa: E402
from scenarios import Failure, check, check_eq  # noqa: E402

SYSTEMD = "/lib/systemd/systemd"
NOBODY = 65534
# Units of the host that the stand-in targets replace: empty, so that
# DefaultDependencies= pull in nothing but themselves.
STAND_INS = ("sysinit.target", "basic.target", "sockets.target",
             "shutdown.target", "network-online.target", "network.target",
             "multi-user.target", "local-fs.target", "paths.target",
             "timers.target", "slices.target")
JOURNALD = ("systemd-journald.service", "systemd-journald.socket",
            "systemd-journald-dev-log.socket")


def tool(name):
    path = shutil.which(name)
    if path is None:
        raise H.HarnessError("%s not found" % name)
    return path


def unit_value(path, key):
    with open(path) as f:
        for line in f:
            line = line.strip()
            if line.startswith(key + "="):
                return line.split("=", 1)[1].strip()
    return None


class World:
    """The installed tree, the private broker and systemd as PID 1."""

    def __init__(self):
        if os.geteuid() != 0:
            raise H.HarnessError("needs root (namespaces, mounts)")
        for t in ("unshare", "nsenter", "setpriv", "systemd-sysusers",
                  "make", "tar"):
            tool(t)
        if not os.access(SYSTEMD, os.X_OK):
            raise H.HarnessError("%s not found (Debian package systemd)"
                                 % SYSTEMD)
        self.work = H.mkdtemp("pubrelay-pid1-")
        self.unshare = None
        self.pid1 = None
        self.pidfd = None
        self.cg_made = None
        self.shipped_ini = None
        self.broker = H.Broker()
        self.broker.start()
        self.install()
        self.boot()

    # -- the installed tree ---------------------------------------------------

    def install(self):
        root = os.path.join(self.work, "root")
        found = H.make_install(root)
        for n in ("pubrelayd.service", "pubrelayd.socket", "pubrelay.conf",
                  "pubrelay"):
            if len(found.get(n, [])) != 1:
                raise H.HarnessError("make install: want one %s, found %r"
                                     % (n, found.get(n)))
        self.root = root
        service = found["pubrelayd.service"][0]
        socket_unit = found["pubrelayd.socket"][0]
        self.sysusers_conf = found["pubrelay.conf"][0][len(root):]
        self.client = found["pubrelay"][0][len(root):]
        self.sock = unit_value(socket_unit, "ListenStream")
        execstart = unit_value(service, "ExecStart").split()
        check(len(execstart) >= 3 and execstart[1] == "-c",
              "ExecStart= without -c CONFIG: %r" % execstart)
        self.ini = execstart[2]
        self.outbox_dir = "/var/lib/" + unit_value(service, "StateDirectory")
        self.outbox = self.outbox_dir + "/outbox.db"
        self.queue = "pubrelay-pid1"
        with H.Consumer(self.broker) as c:
            c.declare(self.queue)
        self.write_ini()
        # The unit path: an empty "admin" dir first (masks and drop-ins, as
        # /etc/systemd/system would hold them), then the units.
        self.admin = os.path.join(self.work, "admin")
        self.units = os.path.join(self.work, "units")
        os.makedirs(self.admin)
        os.makedirs(self.units)
        shutil.copy(service, self.units)
        shutil.copy(socket_unit, self.units)
        for u in JOURNALD:
            shutil.copy(os.path.join("/lib/systemd/system", u), self.units)
        # The watchdog check aborts the daemon: no core file anywhere.
        os.makedirs(os.path.join(self.units, "pubrelayd.service.d"))
        with open(os.path.join(self.units, "pubrelayd.service.d",
                               "pid1-test.conf"), "w") as f:
            f.write("[Service]\nLimitCORE=0\n")
        for t in STAND_INS:
            with open(os.path.join(self.units, t), "w") as f:
                f.write("[Unit]\nDescription=%s (pid1.py stand-in)\n" % t)
        with open(os.path.join(self.units, "pubrelay-test.target"), "w") as f:
            f.write("[Unit]\nDescription=pid1.py\nWants=%s pubrelayd.socket\n"
                    % " ".join(JOURNALD))

    def compiled_outbox(self):
        """The outbox path the build compiled in: localstatedir of its
        Makefile + /lib/pubrelay/outbox.db."""
        mk = {}
        builddir = os.path.dirname(H.binary("PUBRELAYD"))
        with open(os.path.join(builddir, "Makefile")) as f:
            for line in f:
                k, eq, v = line.partition(" = ")
                if eq and k in ("prefix", "localstatedir"):
                    mk[k] = v.strip()
        var = mk["localstatedir"].replace("${prefix}", mk["prefix"])
        return var + "/lib/pubrelay/outbox.db"

    def write_ini(self, socket_extra="", outbox_extra=""):
        """The installed pubrelay.ini as shipped (every key commented out)
        with the broker's uri, and socket_extra under [socket]: in the
        installed tree (copied in at boot) and, once booted, inside."""
        if self.shipped_ini is None:
            with open(self.root + self.ini) as f:
                self.shipped_ini = f.read()
        text = self.shipped_ini
        for sect, add in (("[broker]\n", "uri = %s\n" % self.broker.uri()),
                          ("[socket]\n", socket_extra),
                          ("[outbox]\n", outbox_extra)):
            check(text.count(sect) == 1, "shipped ini: no single %r" % sect)
            text = text.replace(sect, sect + add)
        path = self.root + self.ini
        with open(path, "w") as f:
            f.write(text)
        os.chmod(path, 0o640)       # a password in the uri
        if self.pid1 is not None:
            rc, out = self.ns(["sh", "-c", 'cat >"$1" && chgrp pubrelay "$1" '
                               '&& chmod 0640 "$1"', "sh", self.ini],
                              input=text)
            check(rc == 0, "writing %s: %s" % (self.ini, out))

    # -- systemd as PID 1 ---------------------------------------------------

    def cgroups(self):
        """[(hierarchy mount point, this process's path in it)]."""
        mounts = []
        with open("/proc/self/mountinfo") as f:
            for line in f:
                pre, _, post = line.partition(" - ")
                fstype, _, opts = post.split()[:3]
                if fstype in ("cgroup", "cgroup2"):
                    mounts.append((pre.split()[4], fstype,
                                   set(opts.split(","))))
        out = []
        with open("/proc/self/cgroup") as f:
            for line in f:
                hid, ctrls, path = line.rstrip("\n").split(":", 2)
                want = set(ctrls.split(","))
                for mp, fstype, opts in mounts:
                    if (fstype == "cgroup2") == (hid == "0") and \
                            (hid == "0" or want <= opts):
                        out.append((mp, path))
                        break
        return out

    def cgroup_setup(self):
        """A cgroup of its own for the namespaces, below the deepest one
        this process is in (a memory limit of the runner's stays over it):
        systemd builds its slices under it, and shutdown() removes it all.
        Returns the cgroup.procs files the boot script joins."""
        hier = self.cgroups()
        base = max((p for _, p in hier), key=lambda p: p.count("/"))
        self.cg_rel = base.rstrip("/") + "/pubrelay-pid1-%d" % os.getpid()
        self.cg_made = []           # directories to remove, deepest last
        procs = []
        for mp, path in hier:
            # cpuset wants cpus and mems set before a task joins: systemd
            # leaves it alone, and so does this.
            if mp.rstrip("/").endswith("cpuset"):
                continue
            d = mp
            for part in self.cg_rel.strip("/").split("/"):
                d = os.path.join(d, part)
                if not os.path.isdir(d):
                    os.mkdir(d)
                    self.cg_made.append(d)
            if path in ("/", base):
                procs.append(os.path.join(d, "cgroup.procs"))
        return procs

    def cgroup_remove(self):
        """The namespaces' cgroups, once their processes are gone: every
        directory below ours (systemd's slices too), deepest first, then
        the ones made to reach it."""
        tops = [os.path.join(mp, self.cg_rel.strip("/"))
                for mp, _ in self.cgroups()]
        tops = [t for t in tops if os.path.isdir(t)]

        def empty():
            for t in tops:
                for d, _, _ in os.walk(t):
                    try:
                        with open(os.path.join(d, "cgroup.procs")) as f:
                            if f.read().strip():
                                return False
                    except OSError:
                        pass
            return True
        try:
            H.wait_until(empty, 20, "the namespaces' processes to go",
                         interval=0.2)
        except H.HarnessError as e:
            log("pid1: %s; cgroups left in place" % e)
            return
        for t in tops:
            for d, _, _ in sorted(os.walk(t), key=lambda w: -len(w[0])):
                try:
                    os.rmdir(d)
                except OSError as e:
                    log("pid1: cannot remove cgroup %s: %s" % (d, e))
        for d in reversed(self.cg_made):
            try:
                os.rmdir(d)
            except OSError:
                pass

    # What a subclass (tests/package.py) changes: which top directories get
    # overlays, what goes into the tree before /run is mounted and after,
    # and systemd's unit path.

    def overlaid(self):
        """The top directories that get overlays: those the installed tree
        writes to, and /etc, /var, /usr."""
        tops = set()
        for name in os.listdir(self.root):
            real = os.path.realpath("/" + name)
            tops.add("/" + real.strip("/").split("/")[0])
        return tops | {"/etc", "/var", "/usr"}

    def tree_lines(self):
        """Boot script lines filling the overlaid tree: `make install`'s."""
        return ["tar -C %s -cf - . | tar -C / -xf - --keep-directory-symlink"
                % self.root]

    def setup_lines(self):
        """Boot script lines run once /run, /proc and /sys are mounted,
        before systemd: the system user, the config's group."""
        return ["systemd-sysusers %s" % self.sysusers_conf,
                "chgrp pubrelay %s" % self.ini]

    def unit_path(self):
        """SYSTEMD_UNIT_PATH: the admin dir, then the units."""
        return "%s:%s" % (self.admin, self.units)

    def boot(self):
        """systemd as PID 1 of new PID, mount, UTS and IPC namespaces, with
        what it would change on the host kept inside: overlays on /usr, /etc,
        /var; its own /run, /dev (console bound to /dev/null) and hostname;
        /proc/sys and /sys read-only (it would raise host-wide limits); a
        cgroup of its own (cgroup_setup())."""
        tops = self.overlaid()
        self.tops = tops
        procs = self.cgroup_setup()
        lines = ["set -e"]
        lines += ["echo $$ >%s" % p for p in procs]
        for top in sorted(tops):
            up = os.path.join(self.work, "ov" + top.replace("/", "-"))
            os.makedirs(up + "/up")
            os.makedirs(up + "/wk")
            lines.append("mount -t overlay overlay -o lowerdir=%s,upperdir=%s,"
                         "workdir=%s %s" % (top, up + "/up", up + "/wk", top))
        dev = os.path.join(self.work, "dev")
        os.makedirs(dev)
        lines.append("mount -t tmpfs -o mode=0755,nosuid tmpfs %s" % dev)
        for node in ("null", "zero", "full", "random", "urandom", "tty"):
            lines.append(": >%s/%s && mount --bind /dev/%s %s/%s"
                         % (dev, node, node, dev, node))
        lines += [
            ": >%s/console && mount --bind /dev/null %s/console" % (dev, dev),
            "mkdir %s/shm %s/pts && ln -s /proc/self/fd %s/fd" % (dev, dev,
                                                                 dev),
            "mkdir %s/mqueue && ln -s pts/ptmx %s/ptmx" % (dev, dev),
            "mount --move %s /dev" % dev,
            "mount -t tmpfs -o mode=01777,nosuid,nodev tmpfs /dev/shm",
            "mount -t devpts -o newinstance,ptmxmode=0666,mode=0620 devpts "
            "/dev/pts",
            "mount -t mqueue mqueue /dev/mqueue",
            "hostname pubrelay-pid1",
        ]
        lines += self.tree_lines()
        lines += [
            "mount -t tmpfs -o mode=0755 tmpfs /run",
            "mount -t proc proc /proc",
            "mount --bind /proc/sys /proc/sys",
            "mount -o remount,bind,ro /proc/sys",
            "mount --rbind /sys /sys",
            "mount -o remount,bind,ro /sys",
        ]
        lines += self.setup_lines()
        lines += [
            "exec env -i container=pubrelay-test PATH=%s "
            "SYSTEMD_UNIT_PATH=%s %s --system --unit=pubrelay-test.target "
            "--log-target=journal --show-status=no"
            % ("/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
               self.unit_path(), SYSTEMD),
        ]
        self.bootlog = os.path.join(self.work, "boot.log")
        with open(self.bootlog, "w") as out:
            self.unshare = H.spawn(
                ["unshare", "--pid", "--mount", "--uts", "--ipc",
                 "--kill-child", "--propagation", "private", "sh", "-c",
                 "\n".join(lines)],
                stdout=out, stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL)
        H.on_exit(self.shutdown)

        def child():
            try:
                with open("/proc/%d/task/%d/children"
                          % (self.unshare.pid, self.unshare.pid)) as f:
                    kids = f.read().split()
            except OSError:
                kids = []
            if not kids:
                return None
            with open("/proc/%s/comm" % kids[0]) as f:
                return int(kids[0]) if f.read().strip() == "systemd" else None

        try:
            H.wait_until(lambda: self.unshare.poll() is not None or child(),
                         60, "systemd to start in the namespaces")
            check(self.unshare.poll() is None, "unshare exited %s: %s"
                  % (self.unshare.returncode, H.tail(self.bootlog)))
            self.pid1 = child()
            # Signals go through a pidfd: a number could be reused.
            self.pidfd = os.pidfd_open(self.pid1)

            def running():
                rc, out = self.ns(["systemctl", "is-system-running"])
                return out.strip() in ("running", "degraded")
            H.wait_until(running, 60, "systemd to finish booting",
                         interval=0.5)
        except (Failure, H.HarnessError):
            log(H.tail(self.bootlog))
            raise

    def shutdown(self):
        """Once: SIGKILL to PID 1 takes every process of the namespace with
        it (and its mounts); then the cgroups go."""
        if self.pidfd is not None:
            try:
                signal.pidfd_send_signal(self.pidfd, signal.SIGKILL)
            except OSError:
                pass
            os.close(self.pidfd)
            self.pidfd = None
        if self.unshare is not None:
            if self.unshare.poll() is None:
                H.killpg(self.unshare)
            H.reap(self.unshare)
            self.unshare = None
        if self.cg_made is not None:
            self.cgroup_remove()
            self.cg_made = None

    def ns(self, argv, user=None, input=None, timeout=60):
        """argv inside the namespaces; user: None (root), or (uid, [gids])."""
        cmd = ["nsenter", "-t", str(self.pid1), "-m", "-p", "--"]
        if user is not None:
            uid, gids = user
            cmd += ["setpriv", "--reuid=%d" % uid, "--regid=%d" % uid]
            cmd += (["--groups=" + ",".join(str(g) for g in gids)] if gids
                    else ["--clear-groups"])
            cmd += ["--"]
        p = subprocess.run(cmd + list(argv), input=(input or "").encode(),
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                           timeout=timeout)
        return p.returncode, p.stdout.decode("utf-8", "replace")

    def systemctl(self, *args):
        return self.ns(["systemctl", "--no-pager"] + list(args), timeout=90)

    def show(self, unit, prop):
        rc, out = self.systemctl("show", "-p", prop, "--value", unit)
        check(rc == 0, "systemctl show %s %s: %s" % (prop, unit, out))
        return out.strip()

    def journal(self, unit="pubrelayd.service"):
        rc, out = self.ns(["journalctl", "--no-pager", "-o", "cat", "-u",
                           unit])
        return out

    def gid(self, group):
        rc, out = self.ns(["getent", "group", group])
        check(rc == 0, "no group %s inside: %s" % (group, out))
        return int(out.split(":")[2])

    def publisher(self):
        """nobody with the supplementary group pubrelay."""
        return (NOBODY, [self.gid("pubrelay")])

    def publish(self, bodies, user=None):
        """One `pubrelay publish` per body; the exit codes and output."""
        results = []
        for b in bodies:
            results.append(self.ns([self.client, "-s", self.sock, "publish",
                                    "-k", self.queue, b],
                                   user=user or self.publisher()))
        return results

    def publish_ok(self, bodies, user=None):
        for b, (rc, out) in zip(bodies, self.publish(bodies, user=user)):
            check(rc == 0, "publish %s: exit %d: %s" % (b, rc, out.strip()))

    def receive(self, n, timeout=60):
        """The next n bodies from the queue, in order."""
        got = []
        with H.Consumer(self.broker) as c:
            deadline = time.monotonic() + timeout
            for method, props, body in c.ch.consume(
                    self.queue, auto_ack=True, inactivity_timeout=0.5):
                if method is not None:
                    got.append(body.decode())
                if len(got) >= n or time.monotonic() > deadline:
                    break
            c.ch.cancel()
        return got

    def main_pid(self):
        """The service's main process (pid inside), started if it is not:
        never 0, which kill would take for its own process group."""
        if self.show("pubrelayd.service", "ActiveState") != "active":
            rc, out = self.systemctl("start", "pubrelayd.service")
            check(rc == 0, "systemctl start pubrelayd.service: %s" % out)
        pid = int(self.show("pubrelayd.service", "MainPID"))
        check(pid > 0, "pubrelayd.service has no main process")
        return pid

    def proc_status(self, pid):
        rc, out = self.ns(["cat", "/proc/%d/status" % pid])
        check(rc == 0, "/proc/%d/status: %s" % (pid, out))
        return dict(ln.split(":\t", 1) for ln in out.splitlines()
                    if ":\t" in ln)

    def wait_active(self, unit="pubrelayd.service", timeout=30):
        H.wait_until(lambda: self.show(unit, "ActiveState") == "active",
                     timeout, "%s to be active" % unit, interval=0.5)

    def stats(self):
        rc, out = self.ns([self.client, "-s", self.sock, "stats", "--json"])
        check(rc == 0, "pubrelay stats: %d %s" % (rc, out))
        return json.loads(out)

    def wait_drained(self, timeout=30):
        """Every row confirmed and deleted: a crash from here on has
        nothing to publish again."""
        H.wait_until(lambda: self.stats().get("outbox_messages") == 0,
                     timeout, "the outbox to be empty", interval=0.5)

    def status_line(self):
        return self.show("pubrelayd.service", "StatusText")


def bodies(tag, n):
    return ["%s-%03d" % (tag, i) for i in range(n)]


# ---------------------------------------------------------------------------
# Checks, in order: each leaves the service as the next one expects it


CHECKS = scenarios.Registry()


def check_fn(fn):
    """A check fn(w, notes) as a scenario of the shared driver: its context
    carries the world; the notes are logged after it."""
    def scenario(ctx):
        notes = []
        try:
            fn(ctx.w, notes)
        finally:
            if notes:
                log("%s: %s" % (fn.__name__, "; ".join(notes)))
    scenario.__name__ = fn.__name__
    scenario.__doc__ = fn.__doc__
    CHECKS(scenario)
    return fn


@check_fn
def boot(w, notes):
    """The socket unit listens at its path, group pubrelay, mode 0660; the
    service is not started yet."""
    check_eq(w.show("pubrelayd.socket", "SubState"), "listening",
             "pubrelayd.socket")
    check_eq(w.show("pubrelayd.service", "ActiveState"), "inactive",
             "pubrelayd.service before any client")
    rc, out = w.ns(["stat", "-c", "%G %a %F", w.sock])
    check_eq(out.strip(), "pubrelay 660 socket", "socket %s" % w.sock)
    notes.append("socket %s" % w.sock)


@check_fn
def activation(w, notes):
    """A client of the group pubrelay starts the service through the
    socket; its messages arrive in order; the main process runs as
    pubrelay; a client outside the group is refused by the socket's mode."""
    sent = bodies("act", 20)
    w.publish_ok(sent)
    w.wait_active()     # READY=1 may reach systemd after the first OK
    st = w.proc_status(w.main_pid())
    uid = int(st["Uid"].split()[0])
    rc, out = w.ns(["getent", "passwd", "pubrelay"])
    check_eq(uid, int(out.split(":")[2]), "main process uid (pubrelay)")
    outsider = w.publish(["refused"], user=(NOBODY, []))[0]
    check(outsider[0] != 0 and "Permission denied" in outsider[1],
          "a client outside the group: exit %d: %s" % outsider)
    got = w.receive(len(sent))
    check_eq(got, sent, "messages through the activated service")
    notes.append("20 in order; outsider: %s" % outsider[1].strip())


@check_fn
def sandbox(w, notes):
    """The running daemon has no capabilities, no_new_privs, a seccomp
    filter; the outbox directory is 0700 and the outbox 0600, both
    pubrelay's; the status line says it is connected; the journal has its
    start-up lines."""
    st = w.proc_status(w.main_pid())
    check_eq(st.get("CapEff", "").strip(), "0" * 16, "CapEff")
    check_eq(st.get("NoNewPrivs", "").strip(), "1", "NoNewPrivs")
    check_eq(st.get("Seccomp", "").strip(), "2", "Seccomp (filter)")
    rc, out = w.ns(["stat", "-c", "%U %a", w.outbox_dir, w.outbox])
    check_eq(out.split("\n")[:2], ["pubrelay 700", "pubrelay 600"],
             "owner and mode of %s and %s" % (w.outbox_dir, w.outbox))
    H.wait_until(lambda: "connected" in w.status_line()
                 and "not connected" not in w.status_line(), 30,
                 "the status line to say connected", interval=0.5)
    j = w.journal()
    for want in ("socket activation: using the socket %s" % w.sock,
                 "listening on %s; outbox %s" % (w.sock, w.outbox)):
        check(want in j, "journal lacks %r:\n%s" % (want, j[-2000:]))
    notes.append("status: %s" % w.status_line())


@check_fn
def reload(w, notes):
    """`systemctl reload` keeps the process and logs the reload."""
    pid = w.main_pid()
    rc, out = w.systemctl("reload", "pubrelayd.service")
    check(rc == 0, "systemctl reload: %d %s" % (rc, out))
    w.wait_active()     # "reloading" until READY=1
    check_eq(w.main_pid(), pid, "main pid after reload")
    H.wait_until(lambda: "SIGHUP: reloaded" in w.journal(), 10,
                 "the reload in the journal", interval=0.5)
    w.publish_ok(["after-reload"])
    check_eq(w.receive(1), ["after-reload"], "a message after the reload")


@check_fn
def stop_reactivate(w, notes):
    """`systemctl stop` ends it cleanly (status 0, Result success) and
    leaves the socket listening; the next client starts it again."""
    pid = w.main_pid()
    t0 = time.monotonic()
    rc, out = w.systemctl("stop", "pubrelayd.service")
    took = time.monotonic() - t0
    check(rc == 0, "systemctl stop: %d %s" % (rc, out))
    check_eq(w.show("pubrelayd.service", "Result"), "success", "Result")
    check_eq(w.show("pubrelayd.service", "ExecMainStatus"), "0",
             "exit status")
    check_eq(w.show("pubrelayd.socket", "SubState"), "listening",
             "socket unit after the service stopped")
    rc, out = w.ns(["stat", "-c", "%F", w.sock])
    check_eq(out.strip(), "socket", "socket file after the stop")
    sent = bodies("react", 5)
    w.publish_ok(sent)
    w.wait_active()
    check(w.main_pid() != pid, "no new main process")
    check_eq(w.receive(len(sent)), sent, "messages after reactivation")
    notes.append("stopped in %.1f s" % took)


@check_fn
def backlog_restart(w, notes):
    """With the broker's AMQP app stopped, accepted messages survive
    `systemctl restart` in the state directory and arrive in order once the
    broker is back."""
    w.broker.stop_app()
    try:
        sent = bodies("backlog", 10)
        w.publish_ok(sent)
        rc, out = w.systemctl("restart", "pubrelayd.service")
        check(rc == 0, "systemctl restart: %d %s" % (rc, out))
        w.wait_active()
        H.wait_until(lambda: "backlog 10" in w.status_line(), 20,
                     "the restarted relay to show backlog 10 (status: %s)"
                     % w.status_line(), interval=0.5)
    finally:
        w.broker.start_app()
    check_eq(w.receive(len(sent), timeout=90), sent,
             "the backlog after the restart")
    notes.append("10 kept across the restart")


@check_fn
def sync_failure(w, notes):
    """A failed sync of the outbox under the shipped unit: with ExecStart=
    wrapped in libfiu's fiu-run (a drop-in) and fdatasync made to fail in
    the running daemon (fiu-ctrl), the client of that commit is refused
    with STORE, pubrelayd exits 74, and systemd starts it again by itself
    (Restart=on-failure, RestartSec=2s: NRestarts grows, a new main pid),
    the new process without the fault.  The 10 messages OK'd before the
    fault (the broker's AMQP app stopped, so they wait in the outbox) and
    the refused one sent again arrive, in order, once each; the journal
    says once what happened, that the failed commit was cut from the
    write-ahead log, and the exit status 74."""
    execstart = unit_value(os.path.join(w.units, "pubrelayd.service"),
                           "ExecStart")
    fifo = "/run/pubrelay/fiu"
    dropin_dir = os.path.join(w.admin, "pubrelayd.service.d")
    os.makedirs(dropin_dir, exist_ok=True)
    with open(os.path.join(dropin_dir, "fiu.conf"), "w") as f:
        f.write("[Service]\nExecStart=\nExecStart=%s -x -f %s %s\n"
                % (tool("fiu-run"), fifo, execstart))
    w.wait_drained()
    try:
        rc, out = w.systemctl("daemon-reload")
        check(rc == 0, "daemon-reload: %s" % out)
        rc, out = w.systemctl("restart", "pubrelayd.service")
        check(rc == 0, "restart under fiu-run: %s\n%s"
              % (out, w.journal()[-1500:]))
        w.wait_active()
        pid = w.main_pid()
        restarts = int(w.show("pubrelayd.service", "NRestarts"))
        w.broker.stop_app()
        try:
            sent = bodies("sync", 10)
            w.publish_ok(sent)
            rc, out = w.ns(["fiu-ctrl", "-f", fifo, "-c",
                            "enable name=posix/io/sync/fdatasync,failinfo=5",
                            str(pid)])
            check(rc == 0, "fiu-ctrl: %s" % out)
            refused = "sync-refused"
            rc, out = w.publish([refused])[0]
            check(rc != 0 and "STORE" in out, "the commit whose sync failed: "
                  "exit %d: %s" % (rc, out.strip()))
            H.wait_until(lambda: int(w.show("pubrelayd.service", "NRestarts"))
                         > restarts, 30, "systemd to start pubrelayd again",
                         interval=0.5)
            w.wait_active()
            check(w.main_pid() != pid, "same main pid after the restart")
            w.publish_ok([refused])
        finally:
            w.broker.start_app()
        check_eq(w.receive(len(sent) + 1, timeout=90), sent + [refused],
                 "the OK'd messages and the one sent again")
        j = w.journal()
        check(j.count("a sync failed") == 1 and
              "the failed commit was cut from the write-ahead log" in j,
              "the journal does not say once what happened:\n%s"
              % j[-2000:])
        check("Main process exited, code=exited, status=74/IOERR" in j,
              "journal lacks exit status 74:\n%s" % j[-2000:])
    finally:
        shutil.rmtree(dropin_dir, ignore_errors=True)
        w.systemctl("daemon-reload")
        w.systemctl("restart", "pubrelayd.service")
    notes.append("refused: %s; restarted in about %s"
                 % (out.strip()[:60], w.show("pubrelayd.service",
                                             "RestartUSec")))


@check_fn
def watchdog(w, notes):
    """A main loop stopped with SIGSTOP is killed by the watchdog
    (WatchdogSec=30s, "Watchdog timeout" in the journal) and restarted
    (Restart=on-failure, a new main pid; about 30 s); nothing accepted is
    lost."""
    pid = w.main_pid()
    # Confirmed rows still in the outbox would be published again after the
    # kill (at least once): that is not what this check is about.
    w.wait_drained()
    restarts = int(w.show("pubrelayd.service", "NRestarts"))
    rc, out = w.ns(["kill", "-STOP", str(pid)])
    check(rc == 0, "kill -STOP: %s" % out)
    t0 = time.monotonic()
    H.wait_until(lambda: int(w.show("pubrelayd.service", "NRestarts"))
                 > restarts, 90, "the watchdog to restart the service",
                 interval=1)
    took = time.monotonic() - t0
    w.wait_active()
    check(w.main_pid() != pid, "same main pid after the restart")
    j = w.journal()
    check("Watchdog timeout" in j, "journal lacks the watchdog timeout")
    sent = bodies("wd", 3)
    w.publish_ok(sent)
    check_eq(w.receive(len(sent)), sent, "messages after the restart")
    notes.append("restarted %.0f s after SIGSTOP" % took)


@check_fn
def socket_group(w, notes):
    """With pubrelayd.socket masked and `[socket] group` set, the shipped
    filter denies chown() and the service fails (status 71/OSERR), saying
    so; the drop-in the units' comment gives (SystemCallFilter=@chown)
    makes it work."""
    for args in (("stop", "pubrelayd.socket", "pubrelayd.service"),):
        rc, out = w.systemctl(*args)
        check(rc == 0, "systemctl %s: %s" % (" ".join(args), out))
    # A group that is not the daemon's own, which it is a member of: the
    # socket file shows whether chown() happened.
    rc, out = w.ns(["sh", "-c", "getent group pubpub >/dev/null || "
                    "{ groupadd -r pubpub && usermod -a -G pubpub pubrelay; }"])
    check(rc == 0, "groupadd/usermod: %s" % out)
    member = (NOBODY, [w.gid("pubpub")])
    mask = os.path.join(w.admin, "pubrelayd.socket")
    dropin_dir = os.path.join(w.admin, "pubrelayd.service.d")
    os.symlink("/dev/null", mask)
    w.write_ini("group = pubpub\nmode = 0660\n")
    try:
        rc, out = w.systemctl("daemon-reload")
        check(rc == 0, "daemon-reload: %s" % out)
        check_eq(w.show("pubrelayd.socket", "LoadState"), "masked",
                 "pubrelayd.socket")
        w.systemctl("reset-failed", "pubrelayd.service")
        rc, out = w.systemctl("start", "pubrelayd.service")
        check(rc != 0, "started with [socket] group under the shipped "
              "filter: chown() is not denied any more? (the docs say it is)")
        j = w.journal()
        want = ("%s: chown to [socket] group pubpub (gid %d): Operation "
                "not permitted (the daemon is in that group: a system call "
                "filter denies chown(), as pubrelayd.service does; use "
                "pubrelayd.socket, or a drop-in with SystemCallFilter=@chown)"
                % (w.sock, w.gid("pubpub")))
        check(want in j, "journal lacks %r:\n%s" % (want, j[-1500:]))
        # Not ExecMainStatus: Restart=on-failure may have started the next
        # try by now.
        check("Main process exited, code=exited, status=71/OSERR" in j,
              "journal lacks exit status 71 without the drop-in")
        # Restart=on-failure keeps trying: stop that before the reload.
        rc, out = w.systemctl("stop", "pubrelayd.service")
        check(rc == 0, "systemctl stop: %s" % out)
        os.makedirs(dropin_dir)
        dropin = os.path.join(dropin_dir, "chown.conf")
        with open(dropin, "w") as f:
            f.write("[Service]\nSystemCallFilter=@chown\n")
        rc, out = w.systemctl("daemon-reload")
        check(rc == 0, "daemon-reload: %s" % out)
        check(dropin in w.show("pubrelayd.service", "DropInPaths"),
              "the drop-in is not loaded: %s"
              % w.show("pubrelayd.service", "DropInPaths"))
        w.systemctl("reset-failed", "pubrelayd.service")
        rc, out = w.systemctl("start", "pubrelayd.service")
        check(rc == 0, "start with the @chown drop-in: %s\n%s"
              % (out, w.journal()[-1500:]))
        rc, out = w.ns(["stat", "-c", "%G %a %F", w.sock])
        check_eq(out.strip(), "pubpub 660 socket", "self-bound socket")
        sent = bodies("group", 3)
        w.publish_ok(sent, user=member)
        check_eq(w.receive(len(sent)), sent, "messages via the own socket")
    finally:
        os.unlink(mask)
        shutil.rmtree(dropin_dir, ignore_errors=True)
        w.write_ini()
        w.systemctl("stop", "pubrelayd.service")
        w.systemctl("daemon-reload")
        w.systemctl("start", "pubrelayd.socket")
    notes.append("EPERM without the drop-in, works with it")


@check_fn
def default_outbox_left(w, notes):
    """A file at the build's compiled-in outbox path while [outbox] path
    names another: every start warns, naming both paths, unless another
    process holds its lock as a daemon does.

    The file is made for the check or, in a build that compiles in the
    unit's path, is the outbox used so far."""
    default = w.compiled_outbox()
    check("/" + default.strip("/").split("/")[0] in w.tops,
          "%s: not under an overlaid directory %s" % (default, w.tops))
    other = w.outbox_dir + "/other.db"
    want = ("outbox %s (the build's default path) exists and no pubrelayd "
            "holds it; this one uses %s: what it holds is not published"
            % (default, other))
    # A package-style build compiles in the unit's own path: the outbox the
    # service used so far is then the file left behind. Else one is made,
    # and only what was made is removed.
    rc, out = w.ns(["sh", "-c", '[ -e "$1" ] && echo kept || '
                    '{ mkdir -p "${1%/*}" && : >"$1" && echo made; }', "sh",
                    default])
    check(rc == 0, "creating %s: %s" % (default, out))
    made = out.strip() == "made"
    holder = None
    w.write_ini(outbox_extra="path = %s\n" % other)
    try:
        rc, out = w.systemctl("restart", "pubrelayd.service")
        check(rc == 0, "restart: %s" % out)
        H.wait_until(lambda: want in w.journal(), 10,
                     "the warning about %s" % default, interval=0.5)
        before = w.journal().count(want)
        # Held as a daemon holds it (an exclusive flock): not left behind.
        # flock -o: the lock is flock's own, which dies with nsenter.
        holder = subprocess.Popen(
            ["nsenter", "-t", str(w.pid1), "-m", "-p", "--", "setpriv",
             "--pdeathsig", "KILL", "--", "flock", "-o", "-x",
             default + ".lock", "sleep", "120"],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL)
        H.wait_until(lambda: w.ns(["flock", "-n", "-x", default + ".lock",
                                   "true"])[0] != 0, 10,
                     "the lock on %s.lock to be held" % default,
                     interval=0.2)
        rc, out = w.systemctl("restart", "pubrelayd.service")
        check(rc == 0, "restart: %s" % out)
        w.publish_ok(["beside-a-held-outbox"])
        check_eq(w.receive(1), ["beside-a-held-outbox"], "publish")
        check_eq(w.journal().count(want), before,
                 "warnings with the default outbox held by another process")
    finally:
        if holder is not None:
            holder.kill()
            holder.wait()
        if made:
            w.ns(["rm", "-f", default, default + ".lock"])
        w.write_ini()
        w.systemctl("restart", "pubrelayd.service")
    notes.append(default)


class Ctx:
    def __init__(self, w):
        self.w = w
        self.relays = []        # the service is systemd's, not a Relay


def setup(names):
    w = World()
    log("systemd %d in its namespaces; broker on %d; units in %s"
        % (w.pid1, w.broker.port, w.units))
    return w


def report(w, ctx, name):
    log("journal of pubrelayd.service, last lines:")
    log(w.journal()[-3000:])


def teardown(w):
    w.shutdown()
    w.broker.stop()
    return "systemd and broker stop"


def main(argv):
    return scenarios.run("pid1.py", CHECKS, argv, setup, lambda w, n: Ctx(w),
                         report=report, teardown=teardown,
                         needs=("root", "broker", "pika", "systemd",
                                "systemd-sysusers", "unshare", "nsenter",
                                "setpriv", "make", "tar", "fiu-run"))


if __name__ == "__main__":
    sys.exit(main(sys.argv))
