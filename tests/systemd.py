#!/usr/bin/python3
"""systemd.py: pubrelayd under systemd's interfaces, without a broker.

Prints TAP.  Run by `make check`, or by hand after `make`:

    PUBRELAYD=$PWD/pubrelayd PUBRELAY=$PWD/pubrelay \\
        /usr/bin/python3 tests/systemd.py [CHECK ...]

Each check's docstring says what it proves: `systemd.py --list -v`.  The
shared driver (scenarios.py) runs them, each within 120 s.

The daemon points at amqp://127.0.0.1:1 (nothing listens there).  A missing
tool (make, systemd-analyze, systemd-sysusers, systemd-socket-activate; all
but make are in Debian's systemd package) fails its check: nothing skips.
"""

import os
import re
import shutil
import signal
import socket
import stat
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import harness as H  # noqa: E402
from harness import log  # noqa: E402
import scenarios as S  # noqa: E402
from scenarios import Failure, check  # noqa: E402

CHECK_TIMEOUT = 120         # seconds; a check taking longer fails
MAX_EXPOSURE = 2.0          # systemd-analyze security; 1.1 with systemd 252
DEAD_BROKER = "amqp://guest:guest@127.0.0.1:1"


def tool(name):
    path = shutil.which(name)
    if path is None:
        raise Failure("%s not found (Debian package: %s)"
                      % (name, "make" if name == "make" else "systemd"))
    return path


def run(argv, **kw):
    p = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                       timeout=kw.pop("timeout", 120), **kw)
    return p.returncode, p.stdout.decode("utf-8", "replace")


# ---------------------------------------------------------------------------
# The installed tree, made once and shared by the checks that need it


_root = None


def installed_root():
    """A DESTDIR that `make install` filled; its files, by name."""
    global _root
    if _root is not None:
        return _root
    tool("make")
    root = H.mkdtemp("pubrelay-destdir-")
    _root = (root, H.make_install(root))
    return _root


def one(files, name):
    paths = files.get(name, [])
    check(len(paths) == 1, "%s: want one installed, found %r (configure "
          "--with-systemdsystemunitdir=no or --with-sysusersdir=no?)"
          % (name, paths))
    return paths[0]


def unit_settings(path):
    """{key: [values]} of a unit file."""
    out = {}
    with open(path) as f:
        for line in f:
            line = line.strip()
            if not line or line[0] in "#;[" or "=" not in line:
                continue
            k, v = line.split("=", 1)
            out.setdefault(k.strip(), []).append(v.strip())
    return out


def exec_path(value):
    """The program of an Exec*= line, without its prefixes (-, @, +, !)."""
    return value.lstrip("-@+!:|").split()[0]


# ---------------------------------------------------------------------------
# A daemon with a notification socket


class Notify:
    """A datagram socket standing in for systemd's NOTIFY_SOCKET."""

    def __init__(self, name):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        if name.startswith("@"):
            self.sock.bind("\0" + name[1:])
        else:
            self.sock.bind(name)
        self.name = name
        self.messages = []      # (monotonic time, {key: value})

    def _drain(self, timeout):
        self.sock.settimeout(timeout)
        try:
            data = self.sock.recv(65536)
        except socket.timeout:
            return
        kv = {}
        for line in data.decode("utf-8", "replace").split("\n"):
            if "=" in line:
                k, v = line.split("=", 1)
                kv[k] = v
        self.messages.append((time.monotonic(), kv))
        log("notify: %r" % (data.decode("utf-8", "replace"),))

    def wait(self, pred, timeout, what, start=0):
        """The first message from index start on that pred accepts; returns
        its index."""
        deadline = time.monotonic() + timeout
        i = start
        while True:
            while i < len(self.messages):
                if pred(self.messages[i][1]):
                    return i
                i += 1
            left = deadline - time.monotonic()
            if left <= 0:
                raise Failure("no %s on NOTIFY_SOCKET within %.0fs (got %r)"
                              % (what, timeout,
                                 [m for _, m in self.messages[start:]]))
            self._drain(min(left, 0.2))

    def collect(self, seconds):
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            self._drain(max(0.01, min(0.2, end - time.monotonic())))

    def close(self):
        self.sock.close()

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        self.close()
        return False


class Daemon:
    """pubrelayd in its own temp dir, started with extra environment."""

    def __init__(self, name):
        self.dir = H.mkdtemp("pubrelay-%s-" % name)
        self.sock = os.path.join(self.dir, "pubrelay.sock")
        self.ini = os.path.join(self.dir, "pubrelay.ini")
        self.logpath = os.path.join(self.dir, "pubrelayd.log")
        self.proc = None
        H.write_ini(self.ini, {
            "broker": {"uri": DEAD_BROKER, "reconnect_min": "100ms",
                       "reconnect_max": "1s"},
            "socket": {"path": self.sock},
            "outbox": {"path": os.path.join(self.dir, "outbox.db")},
        })
        H.on_exit(self.kill)

    def start(self, argv, env, pass_fds=()):
        with open(self.logpath, "ab") as logf:
            self.proc = H.spawn(argv, cwd=self.dir, env=env,
                                stdin=subprocess.DEVNULL, stdout=logf,
                                stderr=subprocess.STDOUT, pass_fds=pass_fds)
        return self

    def ping(self, path=None):
        with H.RawClient(path or self.sock, timeout=5) as c:
            return c.ping()

    def signal(self, sig):
        os.kill(self.proc.pid, sig)

    def wait(self, timeout=15):
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            raise Failure("pubrelayd still running %ds later" % timeout)

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        """The log's tail when the check failed; the daemon gone."""
        if exc_type is not None:
            log(H.tail(self.logpath, 30))
        self.kill()
        return False

    def kill(self):
        if self.proc is not None and self.proc.poll() is None:
            H.killpg(self.proc)
        if self.proc is not None:
            H.reap(self.proc)

    def log_text(self):
        return H.read_text(self.logpath)


def daemon_env(**extra):
    env = dict(os.environ)
    for k in ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID", "LISTEN_PID",
              "LISTEN_FDS", "LISTEN_FDNAMES"):
        env.pop(k, None)
    env.update(extra)
    return env


# ---------------------------------------------------------------------------
# Checks


CHECKS = S.Registry()
check_fn = CHECKS


@check_fn
def install(ctx):
    """`make install DESTDIR=R` puts the units, the sysusers.d file, the
    man pages and the config where they belong, with the paths substituted
    (no @VAR@ left): the service is Type=notify, User=/Group=pubrelay, its
    ExecStart= daemon and `-c` config exist at those paths; the socket is
    SocketGroup=pubrelay, SocketMode=0660, Service=pubrelayd.service."""
    root, files = installed_root()
    service = one(files, "pubrelayd.service")
    socket_unit = one(files, "pubrelayd.socket")
    sysusers = one(files, "pubrelay.conf")
    check(os.path.basename(os.path.dirname(sysusers)) == "sysusers.d",
          "%s: not in a sysusers.d directory" % sysusers)
    check(os.path.dirname(service).endswith("/systemd/system"),
          "%s: not in a systemd/system directory" % service)
    for name in ("pubrelayd", "pubrelay", "pubrelayd.8", "pubrelay.1",
                 "pubrelay.ini.5", "pubrelay.ini"):
        one(files, name)
    for path in (service, socket_unit):
        with open(path) as f:
            text = f.read()
        left = re.findall(r"@[a-z_]+@", text)
        check(not left, "%s: not substituted: %s" % (path, left))
    s = unit_settings(service)
    check(s.get("Type") == ["notify"], "Type=%r" % s.get("Type"))
    argv = s["ExecStart"][0].split()
    daemon = root + exec_path(s["ExecStart"][0])
    check(os.access(daemon, os.X_OK),
          "ExecStart=%s: not installed at that path" % argv[0])
    check(argv[1:2] == ["-c"] and os.path.isfile(root + argv[2]),
          "ExecStart= config %r: not installed at that path" % argv[2:])
    check(s.get("User") == ["pubrelay"] and s.get("Group") == ["pubrelay"],
          "User=/Group= are not pubrelay")
    k = unit_settings(socket_unit)
    check(k.get("SocketGroup") == ["pubrelay"] and
          k.get("SocketMode") == ["0660"], "socket group/mode: %r %r"
          % (k.get("SocketGroup"), k.get("SocketMode")))
    check(k.get("Service") == ["pubrelayd.service"], "Service=%r"
          % k.get("Service"))
    ctx.notes.append("units in %s" % os.path.dirname(service))


@check_fn
def sysusers(ctx):
    """`systemd-sysusers --root=R` creates the user and group pubrelay
    (a system uid, the user in the group)."""
    sysusers_bin = tool("systemd-sysusers")
    root, files = installed_root()
    conf = one(files, "pubrelay.conf")
    os.makedirs(os.path.join(root, "etc"), exist_ok=True)
    rc, out = run([sysusers_bin, "--root=" + root, conf])
    check(rc == 0, "systemd-sysusers failed (%d): %s" % (rc, out))
    with open(os.path.join(root, "etc/passwd")) as f:
        users = [ln.split(":") for ln in f]
    with open(os.path.join(root, "etc/group")) as f:
        groups = [ln.split(":") for ln in f]
    user = [u for u in users if u[0] == "pubrelay"]
    group = [g for g in groups if g[0] == "pubrelay"]
    check(user and group, "no user or group pubrelay:\n%s" % out)
    check(user[0][3] == group[0][2], "user pubrelay not in group pubrelay")
    check(int(user[0][2]) < 1000, "not a system user: uid %s" % user[0][2])


def verify_root():
    """The installed tree plus what --root needs from the host."""
    root, files = installed_root()
    host = None
    for d in ("/usr/lib/systemd/system", "/lib/systemd/system"):
        if os.path.isfile(os.path.join(d, "sysinit.target")):
            host = os.path.realpath(d)
            break
    check(host is not None, "no systemd system unit directory on this host")
    if not os.path.exists(root + host):
        shutil.copytree(host, root + host, symlinks=True)
    service = one(files, "pubrelayd.service")
    for key, values in unit_settings(service).items():
        if not key.startswith("Exec"):
            continue
        for v in values:
            prog = exec_path(v)
            if os.path.exists(root + prog) or not os.path.exists(prog):
                continue
            os.makedirs(os.path.dirname(root + prog), exist_ok=True)
            shutil.copy2(prog, root + prog)      # e.g. /bin/kill
    return root, files


def analyze_env(root, unit):
    """systemd looks for units inside --root, in its own directories; a
    prefix it does not search (distcheck's) is added, relative to root."""
    env = dict(os.environ)
    env["SYSTEMD_UNIT_PATH"] = os.path.dirname(unit)[len(root):] + ":"
    return env


@check_fn
def verify(ctx):
    """`systemd-analyze verify --root=R` on the installed units is silent,
    and does notice a misspelt key.

    R gets a copy of the host's system unit directory, for sysinit.target
    and friends, and of the host's ExecReload= binary /bin/kill: --root
    looks for everything inside R; SYSTEMD_UNIT_PATH adds the unit
    directory, which systemd does not search under distcheck's prefix."""
    analyze = tool("systemd-analyze")
    root, files = verify_root()
    units = [one(files, "pubrelayd.service"), one(files, "pubrelayd.socket")]
    env = analyze_env(root, units[0])
    rc, out = run([analyze, "verify", "--man=no", "--root=" + root] + units,
                  cwd=root, env=env)
    check(rc == 0 and out.strip() == "",
          "systemd-analyze verify (rc %d):\n%s" % (rc, out))
    # The check can fail: a misspelt key is reported.
    bad = os.path.join(os.path.dirname(units[0]), "pubrelayd-bad.service")
    with open(units[0]) as f, open(bad, "w") as g:
        g.write(f.read().replace("\nUMask=", "\nUMsk="))
    try:
        rc, out = run([analyze, "verify", "--man=no", "--root=" + root, bad],
                      cwd=root, env=env)
    finally:
        os.unlink(bad)
    check("UMsk" in out, "verify did not notice a misspelt key:\n%s" % out)


@check_fn
def security(ctx):
    """`systemd-analyze security --offline=true` exposure stays low: at most
    MAX_EXPOSURE (2.0; 1.1 with systemd 252)."""
    analyze = tool("systemd-analyze")
    root, files = verify_root()
    unit = one(files, "pubrelayd.service")
    rc, out = run([analyze, "security", "--offline=true", "--root=" + root,
                   unit], cwd=root, env=analyze_env(root, unit))
    m = re.search(r"Overall exposure level for pubrelayd\.service: "
                  r"([0-9.]+)", out)
    check(m is not None, "no exposure level in:\n%s" % out[-3000:])
    level = float(m.group(1))
    ctx.notes.append("exposure %.1f" % level)
    check(level <= MAX_EXPOSURE, "exposure %.1f above %.1f:\n%s"
          % (level, MAX_EXPOSURE,
             "\n".join(ln for ln in out.splitlines() if "\u2717" in ln)))


def wait_exit_ok(d):
    rc = d.wait()
    check(rc == 0, "exit status %d after SIGTERM" % rc)


@check_fn
def notify(ctx):
    """READY=1 (once the socket answers), STATUS= (with the backlog),
    WATCHDOG=1 (WATCHDOG_USEC=1000000), RELOADING=1/READY=1 on SIGHUP and
    STOPPING=1 on SIGTERM, on a NOTIFY_SOCKET datagram socket the test
    binds at a path; exit 0."""
    with Daemon("notify") as d, \
            Notify(os.path.join(d.dir, "notify")) as n:
        d.start([H.binary("PUBRELAYD"), "-c", d.ini],
                daemon_env(NOTIFY_SOCKET=n.name, WATCHDOG_USEC="1000000"))
        i = n.wait(lambda m: "READY" in m, 10, "READY=1")
        m = n.messages[i][1]
        check(m["READY"] == "1", "READY=%r" % m["READY"])
        check(d.ping() == "PONG", "no PONG once READY=1 was sent")
        check("STATUS" in m and "backlog 0" in m["STATUS"],
              "READY=1 without a STATUS= line: %r" % m)
        t_ready = n.messages[i][0]

        # WATCHDOG_USEC=1000000: a ping every 500 ms from the main loop.
        n.collect(2.6)
        pings = [t for t, m in n.messages if m.get("WATCHDOG") == "1"
                 and t > t_ready]
        check(len(pings) >= 3, "%d WATCHDOG=1 in 2.6s, want about 5"
              % len(pings))
        i = n.wait(lambda m: "broker unreachable: " in m.get("STATUS", ""),
                   8, "STATUS=broker unreachable")
        check("backlog 0" in n.messages[i][1]["STATUS"], "no backlog in %r"
              % n.messages[i][1]["STATUS"])
        statuses = [m["STATUS"] for _, m in n.messages if "STATUS" in m]
        check(all(a != b for a, b in zip(statuses, statuses[1:])),
              "STATUS= repeated without a change: %r" % statuses)

        start = len(n.messages)
        d.signal(signal.SIGHUP)
        i = n.wait(lambda m: m.get("RELOADING") == "1", 5, "RELOADING=1",
                   start)
        check("MONOTONIC_USEC" in n.messages[i][1], "RELOADING=1 without "
              "MONOTONIC_USEC")
        n.wait(lambda m: m.get("READY") == "1", 5, "READY=1 after the "
               "reload", i + 1)

        start = len(n.messages)
        d.signal(signal.SIGTERM)
        n.wait(lambda m: m.get("STOPPING") == "1", 5, "STOPPING=1", start)
        wait_exit_ok(d)
        check(not os.path.exists(d.sock), "a socket it bound itself is "
              "left behind")


@check_fn
def journal_priorities(ctx):
    """With stderr on the journal (JOURNAL_STREAM names its dev:ino) every
    line carries its syslog priority as "<N>", the config loader's errors
    too: <3> for a config that keeps the daemon from starting, <4> for one
    a SIGHUP refuses; <5> and <4> for the daemon's own notice and broker
    warning."""
    with Daemon("journal") as d:
        journal_checks(d)


def journal_checks(d):
    open(d.logpath, "ab").close()
    st = os.stat(d.logpath)
    env = daemon_env(JOURNAL_STREAM="%d:%d" % (st.st_dev, st.st_ino))
    good = open(d.ini).read()
    bad = good.replace("[broker]\n", "[broker]\nheartbeat = banana\n", 1)
    check(bad != good, "no [broker] section in %s" % d.ini)
    with open(d.ini, "w") as f:
        f.write(bad)
    d.start([H.binary("PUBRELAYD"), "-c", d.ini], env)
    rc = d.wait()
    check(rc == 78, "exit %d on a bad config, want 78" % rc)
    lines = d.log_text().splitlines()
    check(any(ln.startswith("<3>%s:" % d.ini) and "heartbeat" in ln
              for ln in lines), "no <3> FILE:LINE error: %r" % lines)
    check(all(ln.startswith("<") for ln in lines),
          "a line without a priority: %r" % lines)

    with open(d.ini, "w") as f:
        f.write(good)
    mark = len(d.log_text())
    d.start([H.binary("PUBRELAYD"), "-c", d.ini], env)
    H.wait_until(lambda: "<4>broker " in d.log_text()[mark:], 10,
                 "the broker warning at <4>")
    check("<5>pubrelayd " in d.log_text()[mark:],
          "no <5> start-up notice: %r" % d.log_text()[mark:])
    with open(d.ini, "w") as f:
        f.write(bad)
    d.signal(signal.SIGHUP)
    H.wait_until(lambda: "<4>SIGHUP: " in d.log_text()[mark:], 10,
                 "the refused reload at <4>")
    lines = d.log_text()[mark:].splitlines()
    check(any(ln.startswith("<4>%s:" % d.ini) and "heartbeat" in ln
              for ln in lines), "no <4> FILE:LINE error on SIGHUP: %r"
          % lines)
    check(all(ln.startswith("<") for ln in lines),
          "a line without a priority: %r" % lines)
    check(d.ping() == "PONG", "no PONG after the refused reload")
    d.signal(signal.SIGTERM)
    wait_exit_ok(d)


@check_fn
def notify_abstract(ctx):
    """The same on an abstract '@' NOTIFY_SOCKET name: READY=1 and
    STOPPING=1; with WATCHDOG_PID naming another process, no WATCHDOG=1."""
    with Daemon("notify-abstract") as d, \
            Notify("@pubrelay-test-%d-%d" % (os.getpid(),
                                             int(time.time()))) as n:
        # WATCHDOG_PID names another process: no watchdog for us.
        d.start([H.binary("PUBRELAYD"), "-c", d.ini],
                daemon_env(NOTIFY_SOCKET=n.name, WATCHDOG_USEC="200000",
                           WATCHDOG_PID="1"))
        n.wait(lambda m: m.get("READY") == "1", 10, "READY=1")
        n.collect(1.0)
        check(not any("WATCHDOG" in m for _, m in n.messages),
              "WATCHDOG=1 sent though WATCHDOG_PID is another process")
        d.signal(signal.SIGTERM)
        n.wait(lambda m: m.get("STOPPING") == "1", 5, "STOPPING=1")
        wait_exit_ok(d)


@check_fn
def activation(ctx):
    """`systemd-socket-activate -l PATH pubrelayd -c INI` answers on PATH
    (more than one connection), ignores [socket] path, says "socket
    activation" in its log, and leaves PATH in place when it exits."""
    activate = tool("systemd-socket-activate")
    with Daemon("activation") as d, \
            Notify(os.path.join(d.dir, "notify")) as n:
        path = os.path.join(d.dir, "activated.sock")
        d.start([activate, "-l", path, "-E", "NOTIFY_SOCKET=" + n.name,
                 H.binary("PUBRELAYD"), "-c", d.ini], daemon_env())
        H.wait_until(lambda: os.path.exists(path) or d.proc.poll() is not None,
                     10, "systemd-socket-activate to listen on %s" % path)
        check(d.proc.poll() is None, "systemd-socket-activate exited: %s"
              % H.tail(d.logpath))
        # The first connection starts pubrelayd; it waits in the backlog.
        check(d.ping(path) == "PONG", "no PONG on the activated socket")
        n.wait(lambda m: m.get("READY") == "1", 10, "READY=1")
        check(d.ping(path) == "PONG", "no PONG on a second connection")
        check(not os.path.exists(d.sock),
              "[socket] path %s was bound too" % d.sock)
        check("socket activation" in d.log_text(),
              "the log does not say the socket was passed")
        d.signal(signal.SIGTERM)
        n.wait(lambda m: m.get("STOPPING") == "1", 5, "STOPPING=1")
        wait_exit_ok(d)
        check(os.path.exists(path) and stat.S_ISSOCK(os.lstat(path).st_mode),
              "the socket unit's %s was removed at exit" % path)


@check_fn
def activation_refused(ctx):
    """A passed socket that is not a listening stream socket (a datagram
    socket as LISTEN_FDS=1) is an error (exit 71, EX_OSERR, "not a
    listening" in the log), not silently ignored; no [socket] path is bound
    instead."""
    with Daemon("activation-refused") as d, \
            socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
        s.bind(os.path.join(d.dir, "dgram.sock"))
        fd = s.fileno()
        move = "3<&%d %d<&-" % (fd, fd) if fd != 3 else ""
        d.start(["/bin/sh", "-c", 'LISTEN_PID=$$ LISTEN_FDS=1; '
                 'export LISTEN_PID LISTEN_FDS; exec "$@" ' + move, "sh",
                 H.binary("PUBRELAYD"), "-c", d.ini], daemon_env(),
                pass_fds=(fd,))
        rc = d.wait()
        check(rc == 71, "exit status %d, want 71 (EX_OSERR)" % rc)
        text = d.log_text()
        check("socket activation" in text and "not a listening" in text,
              "no clear error in the log:\n%s" % text)
        check(not os.path.exists(d.sock), "bound [socket] path instead")


def main(argv):
    # No broker: nothing to set up; a check's context holds its notes.
    return S.run("systemd.py", CHECKS, argv, lambda names: {}, S.Ctx,
                 teardown=lambda env: "nothing to stop",
                 timeout=CHECK_TIMEOUT, tap_notes=True,
                 needs=("systemd", "systemd-analyze",
                        "systemd-socket-activate", "make"))


if __name__ == "__main__":
    sys.exit(main(sys.argv))
