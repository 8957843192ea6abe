"""harness.py: the test harness behind tests/integration.py.

A private RabbitMQ node (Broker, started once per run) or a cluster of them
on this machine (Cluster, for tests/cluster.py), the daemon under test
(Relay, one per scenario, each in its own temp dir), a raw protocol client
(RawClient), pika consumer helpers, `pubrelay publish --lines` producers and
the ordering checker.  Standard library plus pika only; run by /usr/bin/python3.

Everything listens on 127.0.0.1 on free ports picked at run time; nothing here
uses the default RabbitMQ ports or the packaged node.  Every wait polls with a
timeout and fails with a message naming what it waited for.
"""

import atexit
import json
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

RMQ_BIN = "/usr/lib/rabbitmq/bin"
KEEP_TMP = os.environ.get("PUBRELAY_KEEP_TMP", "") not in ("", "0")


# A suite whose machine lacks what it needs (root, RabbitMQ, systemd, a
# tool) skips as a whole, saying why: a package build machine.  With
# PUBRELAY_REQUIRE_ALL=1 (scripts/test.sh, .ci/run) such a skip fails.
REQUIRE_ALL = "PUBRELAY_REQUIRE_ALL"

# What a need names: (test, what to say when it fails).
_NEEDS = {
    "root": (lambda: os.geteuid() == 0, "needs root"),
    "broker": (lambda: os.access(os.path.join(RMQ_BIN, "rabbitmq-server"),
                                 os.X_OK),
               "needs RabbitMQ (Debian package rabbitmq-server)"),
    "systemd": (lambda: os.access("/lib/systemd/systemd", os.X_OK),
                "needs systemd (Debian package systemd)"),
}


def lacking(needs):
    """The first of needs this machine lacks, as a reason, or None.  A need
    is "root", "broker", "systemd", "pika" or the name of a program that
    must be on PATH."""
    for n in needs:
        if n == "pika":
            try:
                import pika  # noqa: F401
            except ImportError:
                return "needs pika (Debian package python3-pika)"
        elif n in _NEEDS:
            ok, why = _NEEDS[n]
            if not ok():
                return why
        elif shutil.which(n) is None:
            return "needs %s on PATH" % n
    return None


def skip_all(reason):
    """Skip the whole suite (TAP "1..0 # SKIP", which automake's TAP driver
    reports as SKIP), or fail it when $PUBRELAY_REQUIRE_ALL is set."""
    if os.environ.get(REQUIRE_ALL, "") not in ("", "0"):
        print("Bail out! %s (%s is set: nothing may skip)"
              % (reason, REQUIRE_ALL))
        sys.stdout.flush()
        sys.exit(1)
    print("1..0 # SKIP %s" % reason)
    sys.stdout.flush()
    sys.exit(0)


class HarnessError(Exception):
    """A setup step or a wait of the harness failed (not the product)."""


class Failure(Exception):
    """An assertion about the product failed (scenarios.Failure)."""


def log(msg):
    """A TAP diagnostic line (stdout, so the TAP driver keeps it in the log)."""
    for line in str(msg).splitlines() or [""]:
        sys.stdout.write("# " + line + "\n")
    sys.stdout.flush()


# ---------------------------------------------------------------------------
# Temp dirs, cleanup, children


_tmpdirs = []
_cleanups = []          # callables run at exit, last registered first
_cleanup_lock = threading.Lock()


def mkdtemp(prefix):
    d = tempfile.mkdtemp(prefix=prefix)
    _tmpdirs.append(d)
    return d


def on_exit(fn):
    with _cleanup_lock:
        _cleanups.append(fn)


def _run_cleanups():
    while True:
        with _cleanup_lock:
            if not _cleanups:
                break
            fn = _cleanups.pop()
        try:
            fn()
        except Exception as e:  # cleanup must go on
            sys.stderr.write("harness: cleanup failed: %r\n" % (e,))
    guardian.close()
    if KEEP_TMP:
        for d in _tmpdirs:
            sys.stderr.write("harness: kept %s\n" % d)
    else:
        for d in _tmpdirs:
            shutil.rmtree(d, ignore_errors=True)
    del _tmpdirs[:]


atexit.register(_run_cleanups)


def _signal_exit(signum, frame):
    _run_cleanups()
    os._exit(128 + signum)


for _sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
    signal.signal(_sig, _signal_exit)


class _Guardian:
    """A tiny watchdog process that SIGKILLs our children's process groups when
    this process dies without running its cleanups (SIGKILL, crash): it reads
    process-group ids from a pipe and acts on EOF."""

    CODE = r"""
import os, signal, sys
groups = set()
for line in sys.stdin:
    w = line.split()
    if len(w) == 2 and w[0] == "+":
        groups.add(int(w[1]))
    elif len(w) == 2 and w[0] == "-":
        groups.discard(int(w[1]))
for g in groups:
    try:
        os.killpg(g, signal.SIGKILL)
    except OSError:
        pass
"""

    def __init__(self):
        self.proc = None
        self.lock = threading.Lock()

    def _send(self, line):
        with self.lock:
            if self.proc is None:
                self.proc = subprocess.Popen(
                    [sys.executable, "-c", self.CODE], stdin=subprocess.PIPE,
                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                    start_new_session=True, close_fds=True)
            try:
                self.proc.stdin.write((line + "\n").encode())
                self.proc.stdin.flush()
            except OSError:
                pass

    def close(self):
        with self.lock:
            if self.proc is not None:
                try:
                    self.proc.stdin.close()
                except OSError:
                    pass
                try:
                    self.proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    pass
                self.proc = None

    def watch(self, pgid):
        self._send("+ %d" % pgid)

    def unwatch(self, pgid):
        self._send("- %d" % pgid)


guardian = _Guardian()


def spawn(argv, **kw):
    """Popen in a new session (own process group) watched by the guardian."""
    kw.setdefault("start_new_session", True)
    kw.setdefault("close_fds", True)
    p = subprocess.Popen(argv, **kw)
    guardian.watch(p.pid)
    return p


def killpg(p, sig=signal.SIGKILL):
    try:
        os.killpg(p.pid, sig)
    except OSError:
        pass


def reap(p, timeout=10):
    """Wait for p; SIGKILL its process group if it lingers.  Returns the code."""
    try:
        rc = p.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        killpg(p, signal.SIGKILL)
        rc = p.wait(timeout=10)
    guardian.unwatch(p.pid)
    return rc


# ---------------------------------------------------------------------------
# Small utilities


_handed_out = set()      # ports free_port() gave out in this run
_ports_lock = threading.Lock()


def free_port():
    """A free port, never the same one twice in a run (several brokers and
    proxies pick their ports before they bind them)."""
    for _ in range(100):
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        finally:
            s.close()
        with _ports_lock:
            if port not in _handed_out:
                _handed_out.add(port)
                return port
    raise HarnessError("no free port found")


def port_free(port):
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        s.bind(("127.0.0.1", port))
        return True
    except OSError:
        return False
    finally:
        s.close()


def free_port_range(n):
    """A run of n consecutive free ports outside the ephemeral range."""
    for _ in range(200):
        base = random.randrange(20000, 32000 - n)
        if all(port_free(base + i) for i in range(n)):
            return base
    raise HarnessError("no run of %d free ports found" % n)


def wait_until(pred, timeout, what, interval=0.05):
    """Poll pred() until it returns a true value; HarnessError on timeout."""
    deadline = time.monotonic() + timeout
    last_exc = None
    while True:
        try:
            v = pred()
            if v:
                return v
            last_exc = None
        except HarnessError:    # the predicate knows it is hopeless
            raise
        except Exception as e:  # the predicate may fail while not ready
            last_exc = e
        if time.monotonic() >= deadline:
            msg = "timed out after %.1fs waiting for %s" % (timeout, what)
            if last_exc is not None:
                msg += " (last error: %s)" % (last_exc,)
            raise HarnessError(msg)
        time.sleep(interval)


def read_text(path):
    """A log file's text so far ("" while it does not exist)."""
    try:
        with open(path, "rb") as f:
            return f.read().decode("utf-8", "replace")
    except OSError:
        return ""


def tail(path, lines=40):
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as e:
        return "(cannot read %s: %s)" % (path, e)
    text = data.decode("utf-8", "replace").splitlines()
    return "\n".join(text[-lines:])


def tcp_connectable(port, host="127.0.0.1"):
    try:
        socket.create_connection((host, port), timeout=1).close()
        return True
    except OSError:
        return False


class Tmpfs:
    """A small tmpfs mounted on a fresh temp dir (needs root): a disk that
    fills up, or that can be remounted read-only.  Unmounted by umount() or
    at exit.  Its content is gone after the umount, PUBRELAY_KEEP_TMP or
    not."""

    def __init__(self, size="2m"):
        self.dir = mkdtemp("pubrelay-tmpfs-")
        self.mounted = False
        r = subprocess.run(["mount", "-t", "tmpfs", "-o",
                            "size=%s,mode=0755" % size, "tmpfs", self.dir],
                           stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT)
        if r.returncode != 0:
            raise HarnessError(
                "cannot mount a %s tmpfs on %s (this test needs root with "
                "CAP_SYS_ADMIN): mount exited %d: %s"
                % (size, self.dir, r.returncode,
                   r.stdout.decode("utf-8", "replace").strip()))
        self.mounted = True
        on_exit(self.umount)

    def remount(self, opts):
        r = subprocess.run(["mount", "-o", "remount," + opts, self.dir],
                           stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT)
        if r.returncode != 0:
            raise HarnessError("mount -o remount,%s %s failed: %s"
                               % (opts, self.dir,
                                  r.stdout.decode("utf-8", "replace").strip()))

    def free_bytes(self):
        st = os.statvfs(self.dir)
        return st.f_bavail * st.f_frsize

    def umount(self):
        if not self.mounted:
            return
        r = subprocess.run(["umount", self.dir], stdin=subprocess.DEVNULL,
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        if r.returncode != 0:     # still busy: detach it anyway
            subprocess.run(["umount", "-l", self.dir],
                           stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL)
        self.mounted = False


def file_bytes(path):
    """The content of path, or None when it does not exist."""
    try:
        with open(path, "rb") as f:
            return f.read()
    except FileNotFoundError:
        return None


# ---------------------------------------------------------------------------
# Broker: a private RabbitMQ node


class Broker:
    """A private RabbitMQ node for one test run, all of it under one temp dir.

    start() boots it; stop_app()/start_app() stop and start the rabbit app in a
    running node (connections refused meanwhile); kill() SIGKILLs the node's
    Erlang VM and restart() boots a fresh VM on the same data dir and ports.
    """

    BOOT_TIMEOUT = 90
    _instances = 0      # several nodes in one run get distinct names

    def __init__(self, extra_conf=None, name=None, cookie=None):
        self.dir = None
        self.proc = None
        self.port = None
        # Lines appended to rabbitmq.conf (e.g. a TLS listener).
        self.extra_conf = list(extra_conf or [])
        # name: the node name's part before "@localhost" (default
        # pubrelaytest-<pid>[-<n>]).  cookie: the Erlang cookie, written to
        # $HOME/.erlang.cookie (mode 0400) before the first boot, so that
        # several nodes (a Cluster) and their rabbitmqctl share it; without
        # it the node makes up its own.
        self.name = name
        self.cookie = cookie
        self.dist_port = None
        self.node = None
        self.env = None
        self.boot_seconds = None
        self._outlog = None
        self._generation = 0

    # -- setup --------------------------------------------------------------

    def start(self):
        self.dir = mkdtemp("pubrelay-rmq-")
        self.port = free_port()
        while True:
            self.dist_port = free_port()
            if self.dist_port != self.port:
                break
        ctl_base = free_port_range(11)
        if self.name is not None:
            self.instance = None
            self.node = "%s@localhost" % self.name
        else:
            Broker._instances += 1
            self.instance = Broker._instances
            if self.instance == 1:
                self.node = "pubrelaytest-%d@localhost" % os.getpid()
            else:
                self.node = "pubrelaytest-%d-%d@localhost" % (os.getpid(),
                                                             self.instance)
        d = self.dir
        os.makedirs(os.path.join(d, "mnesia"))
        os.makedirs(os.path.join(d, "log"))
        if self.cookie is not None:
            cpath = os.path.join(d, ".erlang.cookie")
            fd = os.open(cpath, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o400)
            with os.fdopen(fd, "w") as f:
                f.write(self.cookie)
        with open(os.path.join(d, "enabled_plugins"), "w") as f:
            f.write("[].\n")
        with open(os.path.join(d, "rabbitmq-env.conf"), "w") as f:
            f.write("# private test node: nothing from /etc/rabbitmq\n")
        with open(os.path.join(d, "rabbitmq.conf"), "w") as f:
            f.write("listeners.tcp.1 = 127.0.0.1:%d\n" % self.port)
            f.write("log.console = false\n")
            f.write("log.file.level = info\n")
            # A test machine may have little free disk: no disk alarm here.
            f.write("disk_free_limit.absolute = 1MB\n")
            for line in self.extra_conf:
                f.write(line + "\n")
        env = {k: v for k, v in os.environ.items()
               if not k.startswith(("RABBITMQ_", "ERL_"))}
        env.update({
            "HOME": d,
            "RABBITMQ_NODENAME": self.node,
            "RABBITMQ_NODE_IP_ADDRESS": "127.0.0.1",
            "RABBITMQ_NODE_PORT": str(self.port),
            "RABBITMQ_DIST_PORT": str(self.dist_port),
            "RABBITMQ_MNESIA_BASE": os.path.join(d, "mnesia"),
            "RABBITMQ_LOG_BASE": os.path.join(d, "log"),
            "RABBITMQ_PID_FILE": os.path.join(d, "rabbitmq.pid"),
            "RABBITMQ_ENABLED_PLUGINS_FILE": os.path.join(d, "enabled_plugins"),
            "RABBITMQ_CONFIG_FILE": os.path.join(d, "rabbitmq.conf"),
            "RABBITMQ_ADVANCED_CONFIG_FILE": os.path.join(d, "advanced.config"),
            "RABBITMQ_CONF_ENV_FILE": os.path.join(d, "rabbitmq-env.conf"),
            "RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS":
                "-kernel inet_dist_use_interface {127,0,0,1}",
            "RABBITMQ_CTL_ERL_ARGS":
                "-kernel inet_dist_use_interface {127,0,0,1}",
            "RABBITMQ_CTL_DIST_PORT_MIN": str(ctl_base),
            "RABBITMQ_CTL_DIST_PORT_MAX": str(ctl_base + 10),
            "ERL_EPMD_ADDRESS": "127.0.0.1",
            "ERL_CRASH_DUMP": os.path.join(d, "erl_crash.dump"),
            "LANG": "C.UTF-8",
            "LC_ALL": "C.UTF-8",
        })
        self.env = env
        on_exit(self.stop)
        t0 = time.monotonic()
        self._spawn()
        self._wait_ready(self.BOOT_TIMEOUT)
        self.boot_seconds = time.monotonic() - t0
        return self

    def _spawn(self):
        self._generation += 1
        try:
            os.unlink(self.env["RABBITMQ_PID_FILE"])
        except OSError:
            pass
        outpath = os.path.join(self.dir, "server.out")
        self._outlog = open(outpath, "ab")
        self._outlog.write(b"==== harness: start #%d at %s\n"
                           % (self._generation, time.ctime().encode()))
        self._outlog.flush()
        self.proc = spawn([os.path.join(RMQ_BIN, "rabbitmq-server")],
                          env=self.env, cwd=self.dir, stdin=subprocess.DEVNULL,
                          stdout=self._outlog, stderr=subprocess.STDOUT)

    def ctl(self, *args, timeout=60, check=True):
        """Run rabbitmqctl against our node; returns CompletedProcess."""
        argv = [os.path.join(RMQ_BIN, "rabbitmqctl"), "-n", self.node] + list(args)
        try:
            r = subprocess.run(argv, env=self.env, cwd=self.dir,
                               stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, timeout=timeout)
        except subprocess.TimeoutExpired:
            raise HarnessError("rabbitmqctl %s: no answer in %ds"
                               % (" ".join(args), timeout))
        if check and r.returncode != 0:
            raise HarnessError("rabbitmqctl %s failed (%d): %s"
                               % (" ".join(args), r.returncode,
                                  r.stdout.decode("utf-8", "replace").strip()))
        return r

    def ctl_json(self, *args, timeout=60):
        """rabbitmqctl -q ARGS --formatter json, parsed.  (Lines the CLI
        logs before the JSON document are skipped.)"""
        r = self.ctl("-q", *(list(args) + ["--formatter", "json"]),
                     timeout=timeout)
        text = r.stdout.decode("utf-8", "replace")
        starts = [i for i, c in enumerate(text) if c in "[{"
                  and (i == 0 or text[i - 1] == "\n")]
        if not starts:
            raise HarnessError("rabbitmqctl %s: no JSON in %r"
                               % (" ".join(args), text[:300]))
        try:
            return json.loads(text[starts[0]:])
        except ValueError as e:
            raise HarnessError("rabbitmqctl %s: bad JSON (%s): %r"
                               % (" ".join(args), e, text[:300]))

    def _wait_ready(self, timeout):
        deadline = time.monotonic() + timeout

        def ready():
            if self.proc.poll() is not None:
                raise HarnessError("rabbitmq-server exited with %s during boot"
                                   % self.proc.returncode)
            left = max(1, int(deadline - time.monotonic()))
            r = self.ctl("await_startup", "--timeout", str(left),
                         timeout=left + 10, check=False)
            return r.returncode == 0

        try:
            wait_until(ready, timeout, "broker node %s to boot" % self.node,
                       interval=0.2)
            wait_until(lambda: tcp_connectable(self.port),
                       max(1, deadline - time.monotonic()),
                       "AMQP port %d to accept connections" % self.port)
        except HarnessError:
            self.dump_log()
            raise

    def wait_port_closed(self, timeout=30):
        wait_until(lambda: not tcp_connectable(self.port), timeout,
                   "AMQP port %d to close" % self.port)

    # -- faults ---------------------------------------------------------------

    def stop_app(self):
        self.ctl("stop_app")

    def start_app(self):
        self.ctl("start_app")
        wait_until(lambda: tcp_connectable(self.port), 60,
                   "AMQP port %d to accept connections after start_app"
                   % self.port)

    def os_pid(self):
        with open(self.env["RABBITMQ_PID_FILE"]) as f:
            return int(f.read().split()[0])

    def kill(self):
        """SIGKILL the node's Erlang VM (no clean shutdown, no fsync).

        Queue declarations are Mnesia records, which RabbitMQ 3.10 does
        not fsync on declare: a durable queue declared just before a
        SIGKILL can be gone after the restart (seen twice in
        integration.py broker_kill).  That is not what the tests are
        about (confirmed messages are fsynced), so the node's Mnesia log
        is synced first; messages are left as they are."""
        self.ctl("eval", "mnesia:sync_log().", check=False)
        pid = self.os_pid()
        os.kill(pid, signal.SIGKILL)
        # The wrapper shell exits once the VM is gone.
        reap(self.proc, timeout=30)
        self._outlog.close()

    def restart(self):
        """A fresh node on the same data dir and ports; waits until ready."""
        if self.proc is not None and self.proc.poll() is None:
            raise HarnessError("restart() while the broker is running")
        t0 = time.monotonic()
        self._spawn()
        self._wait_ready(self.BOOT_TIMEOUT)
        return time.monotonic() - t0

    def close_all_connections(self, reason="test"):
        self.ctl("close_all_connections", reason)

    def running(self):
        """The node's VM is up and its AMQP port accepts connections."""
        return (self.proc is not None and self.proc.poll() is None
                and tcp_connectable(self.port))

    # A resource alarm: a memory high watermark of 1 byte trips the memory
    # alarm at once (the broker blocks publishing connections); the default
    # relative watermark 0.4 clears it.
    ALARM_WATERMARK = ("absolute", "1")
    NORMAL_WATERMARK = ("0.4",)

    def memory_alarm(self, on=True):
        self.ctl("set_vm_memory_high_watermark",
                 *(self.ALARM_WATERMARK if on else self.NORMAL_WATERMARK))

    def alarms(self):
        """The node's active resource alarms, as rabbitmq-diagnostics
        prints them (empty when none)."""
        r = subprocess.run(
            [os.path.join(RMQ_BIN, "rabbitmq-diagnostics"), "-n", self.node,
             "-q", "alarms"], env=self.env, cwd=self.dir,
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT, timeout=60)
        text = r.stdout.decode("utf-8", "replace").strip()
        if r.returncode != 0:
            raise HarnessError("rabbitmq-diagnostics alarms failed (%d): %s"
                               % (r.returncode, text))
        return "" if "no alarms" in text.lower() else text

    def add_user(self, user, password, write=".*", configure=".*",
                 read=".*", vhost="/"):
        """A user with the given permission regexes on vhost.  Users live
        in the node's data: delete it (ctl("delete_user", user)) when the
        scenario ends."""
        self.ctl("add_user", user, password)
        self.ctl("set_permissions", "-p", vhost, user, configure, write, read)

    def stop(self):
        if self.proc is None:
            return
        if self.proc.poll() is None:
            try:
                self.ctl("stop", timeout=60, check=False)
            except HarnessError:
                pass
            reap(self.proc, timeout=30)
        else:
            reap(self.proc, timeout=1)
        # The VM may outlive the wrapper in odd cases: kill what is left.
        try:
            os.kill(self.os_pid(), signal.SIGKILL)
        except (OSError, ValueError):
            pass
        killpg(self.proc)
        if self._outlog:
            self._outlog.close()
        self.proc = None

    def dump_log(self, lines=40):
        log("---- broker output (%s/server.out), last %d lines:"
            % (self.dir, lines))
        log(tail(os.path.join(self.dir, "server.out"), lines))
        logfile = os.path.join(self.dir, "log", self.node + ".log")
        log("---- broker log (%s), last %d lines:" % (logfile, lines))
        log(tail(logfile, lines))

    # -- AMQP helpers -----------------------------------------------------------

    def connect(self):
        import pika
        params = pika.ConnectionParameters(
            host="127.0.0.1", port=self.port,
            credentials=pika.PlainCredentials("guest", "guest"),
            heartbeat=0, connection_attempts=3, retry_delay=0.5,
            socket_timeout=10, blocked_connection_timeout=60)
        return pika.BlockingConnection(params)

    def uri(self, port=None, user="guest", password="guest"):
        # No trailing "/": pubrelayd reads it as the empty vhost.
        return "amqp://%s:%s@127.0.0.1:%d" % (user, password,
                                              port or self.port)


# ---------------------------------------------------------------------------
# Cluster: several private RabbitMQ nodes clustered together


class Cluster:
    """`size` private RabbitMQ nodes on this machine joined into one cluster.

    Each node is a Broker (own temp dir, AMQP and distribution ports, all on
    127.0.0.1) named pubrelaycl-<pid>-<n>@localhost; they share one Erlang
    cookie (written to each node's $HOME/.erlang.cookie, mode 0400, which
    rabbitmqctl reads too).  start() boots the nodes side by side, then
    joins nodes 2.. to node 1 (stop_app, join_cluster, start_app) one at a
    time and waits until every node reports all of them running.

    kill(node) SIGKILLs a node's VM; restart(node) boots it again on its data
    dir and waits until it is back in the cluster.  The cluster-wide queries
    (cluster_status, list_connections, list_queues) go through a live node.
    """

    BOOT_TIMEOUT = Broker.BOOT_TIMEOUT
    FORM_TIMEOUT = 90

    def __init__(self, size=3, extra_conf=None, prefix=None):
        if size < 1:
            raise HarnessError("a cluster needs at least one node")
        prefix = prefix or "pubrelaycl-%d" % os.getpid()
        self.cookie = "".join(random.choice("ABCDEFGHIJKLMNOPQRSTUVWXYZ")
                              for _ in range(32))
        self.nodes = [Broker(extra_conf=extra_conf,
                             name="%s-%d" % (prefix, i + 1),
                             cookie=self.cookie) for i in range(size)]
        self.boot_seconds = None
        self.join_seconds = None

    # -- setup ----------------------------------------------------------------

    def start(self):
        t0 = time.monotonic()
        errors = {}

        def boot(b):
            try:
                b.start()
            except Exception as e:
                errors[b.name] = e
        threads = [threading.Thread(target=boot, args=(b,), daemon=True)
                   for b in self.nodes]
        for t in threads:
            t.start()
        for t in threads:
            t.join(self.BOOT_TIMEOUT + 60)
        on_exit(self.stop)      # runs before the nodes' own stop()
        if errors or any(t.is_alive() for t in threads):
            raise HarnessError("cluster boot failed: %s" % "; ".join(
                "%s: %s" % kv for kv in sorted(errors.items()))
                or "boot timed out")
        self.boot_seconds = time.monotonic() - t0
        t1 = time.monotonic()
        for b in self.nodes[1:]:
            self.join(b, self.nodes[0])
        self.wait_formed()
        self.join_seconds = time.monotonic() - t1
        return self

    def join(self, node, seed):
        """Join `node` to the cluster `seed` belongs to."""
        node.ctl("stop_app")
        node.ctl("join_cluster", seed.node)
        node.start_app()

    # -- queries ------------------------------------------------------------

    def __iter__(self):
        return iter(self.nodes)

    def __getitem__(self, i):
        return self.nodes[i]

    def live(self, exclude=()):
        """The nodes whose VM runs and whose AMQP port accepts connections."""
        return [b for b in self.nodes if b not in exclude and b.running()]

    def any_live(self, exclude=()):
        live = self.live(exclude)
        if not live:
            raise HarnessError("no live node in the cluster")
        return live[0]

    def running_nodes(self, via=None):
        """Node names cluster_status (on `via`, else a live node) reports
        running."""
        st = (via or self.any_live()).ctl_json("cluster_status")
        return set(st.get("running_nodes", []))

    def formed(self):
        """Every node up, and each reports all of them running."""
        want = {b.node for b in self.nodes}
        for b in self.nodes:
            if not b.running():
                return False
            if self.running_nodes(via=b) != want:
                return False
        return True

    def wait_formed(self, timeout=None):
        wait_until(self.formed, timeout or self.FORM_TIMEOUT,
                   "all %d nodes running in the cluster (cluster_status on "
                   "each)" % len(self.nodes), interval=0.5)

    def by_port(self, port):
        for b in self.nodes:
            if b.port == port:
                return b
        return None

    def node_in_uri(self, uri):
        """The node whose AMQP port a (masked) uri names, or None."""
        hostport = str(uri or "").split("://", 1)[-1]
        hostport = hostport.split("/", 1)[0].rsplit("@", 1)[-1]
        m = re.search(r":(\d+)$", hostport)
        return self.by_port(int(m.group(1))) if m else None

    def connections(self, via=None):
        """Every AMQP connection in the cluster: [(node, name)] where node
        is the Broker it is connected to (by server port)."""
        rows = (via or self.any_live()).ctl_json("list_connections", "name",
                                                 "port")
        return [(self.by_port(r.get("port")), r.get("name")) for r in rows]

    def queue_info(self, queue, via=None):
        """list_queues for one queue: {name, type, leader, members,
        online, messages}."""
        rows = (via or self.any_live()).ctl_json(
            "list_queues", "name", "type", "leader", "members", "online",
            "messages")
        for r in rows:
            if r.get("name") == queue:
                return r
        raise HarnessError("queue %s not listed by list_queues" % queue)

    def wait_queue_online(self, queue, timeout=60):
        """A quorum queue has every member online (a node that came back
        has restarted its replica)."""
        want = {b.node for b in self.nodes}

        def ok():
            info = self.queue_info(queue)
            return (set(info.get("members") or []) == want
                    and set(info.get("online") or []) == want
                    and info.get("leader") in want)
        wait_until(ok, timeout, "every member of quorum queue %s online"
                   % queue, interval=0.5)

    def uris(self):
        return [b.uri() for b in self.nodes]

    # -- faults ---------------------------------------------------------------

    def kill(self, node):
        """SIGKILL one node's VM."""
        node.kill()

    def restart(self, node):
        """Boot a killed node again on its data dir and wait until the
        cluster has all its nodes running.  Returns the seconds it took."""
        t0 = time.monotonic()
        node.restart()
        self.wait_formed()
        return time.monotonic() - t0

    def ensure(self):
        """Put every node back in service (VM running, app started, no
        memory alarm) and wait for the whole cluster."""
        for b in self.nodes:
            if b.proc is None or b.proc.poll() is not None:
                log("cluster node %s: not running; restarting it" % b.node)
                b.restart()
            elif not tcp_connectable(b.port):
                log("cluster node %s: app stopped; starting it" % b.node)
                b.start_app()
        self.wait_formed()

    def stop(self):
        """Stop every node, side by side."""
        threads = [threading.Thread(target=b.stop, daemon=True)
                   for b in self.nodes if b.proc is not None]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)

    def dump_logs(self, lines=20):
        for b in self.nodes:
            b.dump_log(lines)


# ---------------------------------------------------------------------------
# The raw protocol client


def encode_pub(body, props=()):
    """One PUB request.  props: (name, value) pairs, in order (may repeat)."""
    if isinstance(body, str):
        body = body.encode()
    head = ["PUB %d\n" % len(body)]
    for name, value in props:
        head.append("%s: %s\n" % (name, value))
    head.append("\n")
    return "".join(head).encode() + body + b"\n"


class ProtocolError(Exception):
    pass


class RawClient:
    """A blocking client for the pubrelay socket protocol (stdlib only)."""

    def __init__(self, path, timeout=10):
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(timeout)
        self.sock.connect(path)
        self.buf = b""
        self.eof = False

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass

    def __enter__(self):
        return self

    def __exit__(self, *a):
        self.close()

    def send(self, data):
        if isinstance(data, str):
            data = data.encode()
        self.sock.sendall(data)

    def _fill(self):
        chunk = self.sock.recv(65536)
        if not chunk:
            self.eof = True
            return False
        self.buf += chunk
        return True

    def read_line(self):
        """One reply line without its newline; None at EOF."""
        while True:
            i = self.buf.find(b"\n")
            if i >= 0:
                line, self.buf = self.buf[:i], self.buf[i + 1:]
                return line.rstrip(b"\r").decode("utf-8", "replace")
            if self.eof or not self._fill():
                return None

    def read_exact(self, n):
        while len(self.buf) < n:
            if self.eof or not self._fill():
                raise ProtocolError("EOF after %d of %d bytes"
                                    % (len(self.buf), n))
        data, self.buf = self.buf[:n], self.buf[n:]
        return data

    def request(self, data):
        self.send(data)
        line = self.read_line()
        if line is None:
            raise ProtocolError("connection closed without a reply to %r"
                                % (data[:60],))
        return line

    def pub(self, body, props=()):
        return self.request(encode_pub(body, props))

    def ping(self):
        return self.request("PING\n")

    def closed_by_peer(self, timeout=5):
        """True when the daemon closes the connection (EOF or reset)."""
        self.sock.settimeout(timeout)
        try:
            while not self.eof:
                if not self._fill():
                    return True
            return True
        except (ConnectionResetError, BrokenPipeError):
            return True
        except socket.timeout:
            return False

    def stats(self):
        self.send("STATS\n")
        line = self.read_line()
        if line is None:
            raise ProtocolError("connection closed without a STATS reply")
        m = re.match(r"^STATS (\d+)$", line)
        if not m:
            raise ProtocolError("bad STATS reply %r" % line)
        payload = self.read_exact(int(m.group(1))).decode("utf-8", "replace")
        out = {}
        for ln in payload.splitlines():
            if not ln.strip():
                continue
            name, _, value = ln.partition(" ")
            value = value.strip()
            try:
                out[name] = int(value)
            except ValueError:
                out[name] = value
        return out


    DEAD_FIELDS = ("id", "parked_ms", "attempts", "bytes", "exchange",
                   "routing_key", "message_id", "reason")

    def dead_list(self, max_rows=None, after=None):
        """DEAD LIST: one page of the parked messages as dicts (DEAD_FIELDS;
        numbers as int, "-" as "")."""
        req = "DEAD LIST"
        if max_rows is not None:
            req += " %d" % max_rows
        if after is not None:
            req += " AFTER %d" % after
        self.send(req + "\n")
        line = self.read_line()
        if line is None:
            raise ProtocolError("connection closed without a DEAD reply")
        m = re.match(r"^DEAD (\d+)$", line)
        if not m:
            raise ProtocolError("bad DEAD LIST reply %r" % line)
        payload = self.read_exact(int(m.group(1))).decode("utf-8", "replace")
        rows = []
        for ln in payload.splitlines():
            if not ln.strip():
                continue
            f = ln.split("\t")
            if len(f) < len(self.DEAD_FIELDS):
                raise ProtocolError("DEAD LIST line with %d fields: %r"
                                    % (len(f), ln))
            row = dict(zip(self.DEAD_FIELDS, f))
            for k in ("id", "parked_ms", "attempts", "bytes"):
                row[k] = int(row[k])
            for k in ("exchange", "routing_key", "message_id", "reason"):
                if row[k] == "-":
                    row[k] = ""
            rows.append(row)
        self.last_page_bytes = len(payload)
        return rows

    def dead_list_all(self):
        """Every dead letter, a page at a time until an empty one."""
        rows, after = [], 0
        while True:
            page = self.dead_list(after=after)
            if not page:
                return rows
            if page[0]["id"] <= after:
                raise ProtocolError("DEAD LIST AFTER %d went back to %d"
                                    % (after, page[0]["id"]))
            rows += page
            after = page[-1]["id"]


class PipelinedStream:
    """Send many PUBs on one connection as fast as the socket takes them
    while a reader thread records, in order, which ones got "OK <id>".

    Survives the daemon dying mid-stream: ok_count() then tells how many of
    the requests (a prefix, replies being in request order) were accepted.
    """

    def __init__(self, path, requests, chunk=64, pause=0):
        self.client = RawClient(path, timeout=30)
        self.requests = requests        # list of encoded PUB requests
        self.chunk = chunk              # requests per send()
        self.pause = pause              # seconds to sleep after each send()
        self.replies = []               # reply lines, in request order
        self.ids = []                   # message-ids of the OK replies
        self.send_error = None
        self.read_error = None
        self.lock = threading.Lock()
        self._w = threading.Thread(target=self._writer, daemon=True)
        self._r = threading.Thread(target=self._reader, daemon=True)

    def start(self):
        self._r.start()
        self._w.start()
        return self

    def _writer(self):
        try:
            for i in range(0, len(self.requests), self.chunk):
                self.client.send(b"".join(self.requests[i:i + self.chunk]))
                if self.pause:
                    time.sleep(self.pause)
        except OSError as e:
            self.send_error = e

    def _reader(self):
        try:
            for _ in range(len(self.requests)):
                line = self.client.read_line()
                if line is None:
                    break
                with self.lock:
                    self.replies.append(line)
                    if line.startswith("OK"):
                        self.ids.append(line[3:].strip())
        except OSError as e:
            self.read_error = e

    def ok_count(self):
        """Length of the prefix of requests answered OK."""
        with self.lock:
            n = 0
            for line in self.replies:
                if not line.startswith("OK"):
                    break
                n += 1
            return n

    def reply_count(self):
        with self.lock:
            return len(self.replies)

    def join(self, timeout):
        deadline = time.monotonic() + timeout
        self._w.join(max(0, deadline - time.monotonic()))
        self._r.join(max(0, deadline - time.monotonic()))
        done = not self._r.is_alive()
        self.client.close()
        return done


# ---------------------------------------------------------------------------
# The daemon under test


def binary(envname):
    path = os.environ.get(envname)
    if not path:
        raise HarnessError("%s is not set (path to the binary under test)"
                           % envname)
    if not (os.path.isfile(path) and os.access(path, os.X_OK)):
        raise HarnessError("%s=%s is not an executable file" % (envname, path))
    return path


def make_install(destdir, timeout=300):
    """`make install DESTDIR=destdir` in the build tree of $PUBRELAYD (not as
    a sub-make of make check's jobserver); returns {file name: [paths]} of
    what it installed."""
    builddir = os.path.dirname(binary("PUBRELAYD"))
    env = dict(os.environ)
    for k in ("MAKEFLAGS", "MFLAGS", "MAKELEVEL", "MAKEOVERRIDES"):
        env.pop(k, None)
    p = subprocess.run(["make", "-s", "-C", builddir, "install",
                        "DESTDIR=" + destdir], env=env,
                       stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                       stderr=subprocess.STDOUT, timeout=timeout)
    if p.returncode != 0:
        raise HarnessError("make install DESTDIR=%s failed (%d):\n%s"
                           % (destdir, p.returncode,
                              p.stdout.decode("utf-8", "replace")[-3000:]))
    files = {}
    for d, _, names in os.walk(destdir):
        for n in names:
            files.setdefault(n, []).append(os.path.join(d, n))
    return files


def write_ini(path, sections):
    """sections: {section: {key: value}}; a list value repeats the key and
    None drops it.  Mode 0600: pubrelayd refuses a config that holds a
    password (our uris do) and is readable by others."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.fchmod(fd, 0o600)
    with os.fdopen(fd, "w") as f:
        for sect, keys in sections.items():
            f.write("[%s]\n" % sect)
            for k, v in keys.items():
                if v is None:
                    continue
                for one in (v if isinstance(v, list) else [v]):
                    f.write("%s = %s\n" % (k, one))
            f.write("\n")


class Relay:
    """pubrelayd in its own temp dir with its own ini, socket and outbox."""

    READY_TIMEOUT = 10

    def __init__(self, broker, name, overrides=None, uri=None):
        self.broker = broker
        self.name = name
        self.bin = binary("PUBRELAYD")
        self.dir = mkdtemp("pubrelay-%s-" % name)
        self.sock = os.path.join(self.dir, "pubrelay.sock")
        self.outbox = os.path.join(self.dir, "outbox.db")
        self.ini = os.path.join(self.dir, "pubrelay.ini")
        self.logpath = os.path.join(self.dir, "pubrelayd.log")
        self.proc = None
        self.env = None     # pubrelayd's environment; None: the test's
        self.wrap = []      # argv before pubrelayd's (fiu-run -x ...)
        self.starts = 0
        sections = {
            "broker": {
                "uri": uri if uri is not None else broker.uri(),
                "reconnect_min": "100ms",
                "reconnect_max": "1s",
                "heartbeat": "5",
            },
            "socket": {"path": self.sock},
            "outbox": {"path": self.outbox},
        }
        for sect, keys in (overrides or {}).items():
            sections.setdefault(sect, {}).update(keys)
        # Overrides may move the socket or the outbox (e.g. onto a tmpfs).
        self.sock = sections["socket"]["path"]
        self.outbox = sections["outbox"]["path"]
        self.sections = sections
        write_ini(self.ini, sections)
        on_exit(self._cleanup)

    def start(self, wait=True):
        self.starts += 1
        logf = open(self.logpath, "ab")
        logf.write(b"==== harness: start #%d at %s\n"
                   % (self.starts, time.ctime().encode()))
        logf.flush()
        self.proc = spawn(self.wrap + [self.bin, "-c", self.ini],
                          cwd=self.dir,
                          stdin=subprocess.DEVNULL, stdout=logf,
                          stderr=subprocess.STDOUT, env=self.env)
        logf.close()
        with open(self.logpath, "ab") as logf:
            logf.write(b"==== harness: pid %d\n" % self.proc.pid)
        if wait:
            self.wait_ready()
        return self

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def _ping(self):
        if not self.alive():
            raise HarnessError("pubrelayd exited with %s before it was ready"
                               % (self.proc.returncode,))
        try:
            with RawClient(self.sock, timeout=2) as c:
                return c.ping() == "PONG"
        except (OSError, ProtocolError):
            return False

    def wait_ready(self, timeout=None):
        wait_until(self._ping, timeout or self.READY_TIMEOUT,
                   "pubrelayd to answer PING on %s" % self.sock)

    def client(self, timeout=10):
        return RawClient(self.sock, timeout=timeout)

    def stats(self):
        with RawClient(self.sock, timeout=10) as c:
            return c.stats()

    def wait_stats(self, pred, timeout, what):
        """Poll STATS until pred(stats) holds; returns those stats."""
        last = {}

        def check():
            if not self.alive():
                raise HarnessError("pubrelayd exited with %s"
                                   % (self.proc.returncode,))
            last.clear()
            last.update(self.stats())
            return pred(last)
        try:
            wait_until(check, timeout, what, interval=0.1)
        except HarnessError as e:
            raise HarnessError("%s; last STATS: %s" % (e, fmt_stats(last)))
        return dict(last)

    def wait_drained(self, timeout=60):
        return self.wait_stats(
            lambda s: s.get("outbox_messages") == 0 and s.get("in_flight") == 0
            and s.get("backlog") == 0,
            timeout, "pubrelayd outbox to drain (outbox_messages == 0 and "
            "in_flight == 0)")

    def term(self, timeout=15):
        """SIGTERM; waits for the exit and returns the exit code."""
        if self.proc is None:
            return None
        try:
            os.kill(self.proc.pid, signal.SIGTERM)
        except OSError:
            pass
        try:
            rc = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            killpg(self.proc)
            self.proc.wait(timeout=10)
            guardian.unwatch(self.proc.pid)
            raise HarnessError("pubrelayd did not exit within %ds of SIGTERM"
                               % timeout)
        killpg(self.proc)
        guardian.unwatch(self.proc.pid)
        return rc

    def kill(self):
        if self.proc is None:
            return None
        killpg(self.proc, signal.SIGKILL)
        return reap(self.proc, timeout=10)

    def restart(self, wait=True):
        if self.alive():
            raise HarnessError("restart() while pubrelayd is running")
        return self.start(wait=wait)

    def cmd(self, *args, data=None, timeout=60):
        """Run `$PUBRELAY -s SOCK args...`; returns (rc, stdout, stderr) as
        text."""
        p = subprocess.run([binary("PUBRELAY"), "-s", self.sock]
                           + [str(a) for a in args],
                           input=data, stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, timeout=timeout)
        return (p.returncode, p.stdout.decode("utf-8", "replace"),
                p.stderr.decode("utf-8", "replace"))

    def log_text(self):
        return read_text(self.logpath)

    def dump_log(self, lines=40):
        log("---- pubrelayd log (%s), last %d lines:" % (self.logpath, lines))
        log(tail(self.logpath, lines))

    def _cleanup(self):
        if self.alive():
            self.kill()


def fmt_stats(s):
    return " ".join("%s=%s" % (k, s[k]) for k in sorted(s)) or "(none)"


# ---------------------------------------------------------------------------
# Consumers (pika)


def _quiet_pika():
    import logging
    logging.getLogger("pika").setLevel(logging.CRITICAL)


class Consumer:
    """A pika connection to the private broker for declaring and draining."""

    def __init__(self, broker):
        _quiet_pika()
        self.broker = broker
        self.conn = broker.connect()
        self.ch = self.conn.channel()

    def close(self):
        try:
            if self.conn.is_open:
                self.conn.close()
        except Exception:
            pass

    def __enter__(self):
        return self

    def __exit__(self, *a):
        self.close()

    def declare(self, queue, arguments=None):
        """A durable queue, empty.  arguments: x-arguments, e.g.
        {"x-queue-type": "quorum"}."""
        self.ch.queue_declare(queue=queue, durable=True, arguments=arguments)
        self.ch.queue_purge(queue=queue)
        return queue

    def count(self, queue):
        return self.ch.queue_declare(queue=queue, durable=True,
                                     passive=True).method.message_count

    def drain(self, queue, timeout=120):
        """Consume (auto-ack) everything the queue holds now and return
        [(body, properties)] in delivery order.  Call it once the relay is
        drained: every message it will ever publish is then in the queue."""
        n = self.count(queue)
        out = []
        if n == 0:
            return out
        deadline = time.monotonic() + timeout
        gen = self.ch.consume(queue, auto_ack=True, inactivity_timeout=1.0)
        try:
            for method, props, body in gen:
                if method is not None:
                    out.append((body, props))
                    if len(out) >= n:
                        break
                if time.monotonic() >= deadline:
                    raise HarnessError("drain %s: got %d of %d messages in %ds"
                                       % (queue, len(out), n, timeout))
        finally:
            self.ch.cancel()
        left = self.count(queue)
        if left:
            raise HarnessError("drain %s: %d messages still queued after "
                               "consuming %d" % (queue, left, n))
        return out


def unique_queue(name):
    return "pubrelay-test-%s-%d-%04x" % (name, os.getpid(),
                                           random.randrange(0x10000))


# ---------------------------------------------------------------------------
# `pubrelay publish --lines` producers


def seq_line(producer, seq, width=6, pad=0):
    """"p<producer>-<seq>", and with pad > 0 a "-xxx..." tail of pad bytes
    (bigger messages; parse_seq() ignores the tail)."""
    line = "p%d-%0*d" % (producer, width, seq)
    if pad > 0:
        line += "-" + "x" * (pad - 1)
    return line


_SEQ_RE = re.compile(rb"^p(\d+)-(\d+)(?:-x*)?$")


def parse_seq(body):
    """(producer, seq) from a body made by seq_line(), or None."""
    m = _SEQ_RE.match(body)
    if not m:
        return None
    return int(m.group(1)), int(m.group(2))


class LinesProducer:
    """`$PUBRELAY -s SOCK publish -k QUEUE --lines` fed lines from a thread.

    pace=(n, seconds) writes n lines then sleeps, to keep a stream running
    for a while instead of handing everything over at once."""

    def __init__(self, relay, queue, lines, extra_args=(), pace=None):
        self.argv = [binary("PUBRELAY"), "-s", relay.sock, "publish",
                     "-k", queue, "--lines"] + list(extra_args)
        self.lines = lines
        self.pace = pace
        self.proc = None
        self.stdout = b""
        self.stderr = b""
        self.rc = None
        self.error = None
        self._t = None

    def start(self):
        self.proc = spawn(self.argv, stdin=subprocess.PIPE,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        self._t = threading.Thread(target=self._run, daemon=True)
        self._t.start()
        return self

    def _run(self):
        out, err = [], []
        readers = [
            threading.Thread(target=lambda: out.append(self.proc.stdout.read()),
                             daemon=True),
            threading.Thread(target=lambda: err.append(self.proc.stderr.read()),
                             daemon=True),
        ]
        for t in readers:
            t.start()
        self._write()
        for t in readers:
            t.join()
        self.rc = self.proc.wait()
        guardian.unwatch(self.proc.pid)
        self.stdout = b"".join(out)
        self.stderr = b"".join(err)

    def _write(self):
        try:
            if self.pace:
                n, pause = self.pace
                for i in range(0, len(self.lines), n):
                    self.proc.stdin.write(
                        ("\n".join(self.lines[i:i + n]) + "\n").encode())
                    self.proc.stdin.flush()
                    time.sleep(pause)
            else:
                self.proc.stdin.write(("\n".join(self.lines) + "\n").encode())
            self.proc.stdin.close()
        except OSError as e:
            self.error = e

    def join(self, timeout):
        self._t.join(timeout)
        if self._t.is_alive():
            killpg(self.proc)
            self._t.join(10)
            raise HarnessError("%s did not finish within %ds"
                               % (" ".join(self.argv[3:]), timeout))
        return self.rc

    _ACCEPTED_RE = re.compile(rb"(\d+) (?:of|accepted of the) (\d+) messages")

    def accepted(self):
        """How many lines got OK: all on success, else what the client's
        final error line says ("...; N of M messages accepted")."""
        if self.rc == 0:
            return len(self.lines)
        m = self._ACCEPTED_RE.search(self.stderr)
        return int(m.group(1)) if m else None

    def describe(self):
        return ("rc=%s stderr=%r" % (self.rc,
                                     self.stderr.decode("utf-8", "replace")[-500:]))


class StreamProducer(LinesProducer):
    """A LinesProducer whose input has no set length: it writes
    seq_line(producer, 0), seq_line(producer, 1), ... pace[0] lines every
    pace[1] seconds until stop() (or until max_lines), then closes the
    client's input.  self.lines holds what was written, so after join()
    accepted() is right as for a LinesProducer."""

    def __init__(self, relay, queue, producer, pace=(20, 0.05),
                 extra_args=(), max_lines=None):
        super().__init__(relay, queue, [], extra_args=extra_args, pace=pace)
        self.producer = producer
        self.max_lines = max_lines
        self._stop = threading.Event()

    def stop(self):
        self._stop.set()

    def written(self):
        return len(self.lines)

    def _write(self):
        n, pause = self.pace
        try:
            while not self._stop.is_set():
                if self.max_lines is not None and \
                        len(self.lines) >= self.max_lines:
                    break
                k = len(self.lines)
                chunk = [seq_line(self.producer, k + i) for i in range(n)]
                self.proc.stdin.write(("\n".join(chunk) + "\n").encode())
                self.proc.stdin.flush()
                self.lines.extend(chunk)
                self._stop.wait(pause)
            self.proc.stdin.close()
        except OSError as e:
            self.error = e


# ---------------------------------------------------------------------------
# Delivery checks: what producers were told was accepted against what a
# consumer read.  check_delivery() is the one check the suites make.


class OrderReport:
    def __init__(self):
        self.problems = []
        self.duplicates = 0
        self.runs = 0
        self.delivered = 0
        self.distinct = 0
        self.lost = 0           # accepted numbers that never arrived
        self.out_of_order = 0   # first deliveries after a higher number
        self.unsent = 0         # deliveries of numbers never sent

    @property
    def ok(self):
        return not self.problems

    def __str__(self):
        s = ("%d delivered, %d distinct, %d duplicates, %d runs"
             % (self.delivered, self.distinct, self.duplicates, self.runs))
        if self.problems:
            s += "; PROBLEMS: " + "; ".join(self.problems[:10])
            if len(self.problems) > 10:
                s += "; ... (%d more)" % (len(self.problems) - 10)
        return s


def check_order(delivered, accepted, first=0, last=None, allow_dups=True):
    """Check one producer's delivery sequence; returns an OrderReport whose
    problems name each offending delivery (#index), the first one first.

    delivered: sequence numbers in delivery order.  accepted: the numbers the
    producer got OK for (each must arrive).  first..last: the numbers that
    were ever sent (last None: unbounded).

    Rules: (a) every accepted number arrived; (b) first deliveries are in
    increasing order with no gap; (c) duplicates are only a republished
    suffix: the sequence splits into contiguous ascending runs and each run
    after the first starts at or before (highest seen so far + 1); with
    allow_dups False, (d) no number arrives twice (exactly once).
    The counters (lost, out_of_order, duplicates, unsent) are kept for the
    callers that report rather than fail (nack_window64, soak.py).
    """
    r = OrderReport()
    r.delivered = len(delivered)
    seen = set()
    hi = None           # highest number delivered so far
    prev = None
    for i, s in enumerate(delivered):
        if s < first or (last is not None and s > last):
            r.unsent += 1
            r.problems.append("#%d: %d was never sent" % (i, s))
        if s in seen:
            r.duplicates += 1
            if not allow_dups:
                r.problems.append("#%d: %d delivered again (exactly once "
                                  "expected)" % (i, s))
        if prev is None:
            r.runs = 1
            if s != first:
                r.problems.append("#%d: first delivery is %d, expected %d"
                                  % (i, s, first))
        elif s != prev + 1:
            r.runs += 1
            if s > hi + 1:
                r.problems.append(
                    "#%d: run starts at %d after %d, beyond highest+1 = %d "
                    "(gap or reordering)" % (i, s, prev, hi + 1))
        if s not in seen and hi is not None and s < hi:
            r.out_of_order += 1
            r.problems.append("#%d: first delivery of %d after %d "
                              "(reordered)" % (i, s, hi))
        seen.add(s)
        hi = s if hi is None else max(hi, s)
        prev = s
    r.distinct = len(seen)
    missing = sorted(set(accepted) - seen)
    r.lost = len(missing)
    if missing:
        r.problems.append("%d accepted messages never arrived (first: %s)"
                          % (len(missing), missing[:10]))
    return r


def split_by_producer(msgs):
    """{producer: [(seq, message_id, props)]} in delivery order, and the
    messages whose body is not a seq_line().  msgs: [(body, props)] as
    Consumer.drain() returns them, or bare bodies (bytes or str)."""
    per, other = {}, []
    for m in msgs:
        body, props = m if isinstance(m, tuple) else (m, None)
        ps = parse_seq(body.encode() if isinstance(body, str) else body)
        if ps is None:
            other.append(m)
        else:
            per.setdefault(ps[0], []).append(
                (ps[1], getattr(props, "message_id", None), props))
    return per, other


def _numbers(n):
    return range(n) if isinstance(n, int) else n


def check_producer(producer, deliveries, accepted, sent=None,
                   allow_dups=True, note=None):
    """check_order() of one producer's deliveries ([(seq, ...)] as
    split_by_producer() gives them): a Failure naming the producer and its
    first lost, duplicated or reordered message, else its OrderReport.

    accepted: n (0 .. n-1 got OK) or the numbers; sent: how many were ever
    sent (default: as many as accepted); note(text): where the report goes
    (ctx.note)."""
    accepted = _numbers(accepted)
    if sent is None:
        sent = max(accepted) + 1 if len(accepted) else 0
    rep = check_order([d[0] for d in deliveries], accepted, first=0,
                      last=sent - 1, allow_dups=allow_dups)
    if note is not None:
        note("producer %d: %s" % (producer, rep))
    if not rep.ok:
        raise Failure("producer %d: %s" % (producer, rep))
    return rep


def check_delivery(msgs, expected, sent=None, allow_dups=True, foreign=0,
                   same_ids=False, persistent=False, note=None):
    """Did the consumed messages bring every producer's accepted lines, in
    producer order?  The one delivery check of the suites.

    msgs: what a consumer read, in delivery order (Consumer.drain()'s
    [(body, props)], or bodies), every one a seq_line().  expected:
    {producer: accepted}, accepted n (lines 0 .. n-1 got OK) or the numbers.
    sent: {producer: n} lines ever sent, when more were sent than accepted.
    allow_dups: True, at least once: duplicates only of a republished
    suffix (after a reconnect, a crash, a nack); False, exactly once (a run
    without faults).  Every accepted line must arrive and first deliveries
    be in order either way.  foreign: how many messages that are not
    seq_line()s are expected among msgs.  same_ids: every delivery has a
    message-id, its copies the same one.  persistent: every delivery has
    delivery_mode 2.

    A Failure names the first foreign message, unexpected producer, or
    lost, duplicated or reordered line; else returns (per, reports):
    split_by_producer()'s deliveries and each producer's OrderReport."""
    per, other = split_by_producer(msgs)
    if len(other) != foreign:
        first = other[0] if other else b""
        first = first[0] if isinstance(first, tuple) else first
        raise Failure("%d foreign messages in the queue, want %d (first: %r)"
                      % (len(other), foreign, first[:60]))
    strays = sorted(set(per) - set(expected))
    if strays:
        raise Failure("messages of producer(s) %s, expected only %s"
                      % (strays, sorted(expected)))
    reports = {}
    for p in sorted(expected):
        mine = per.get(p, [])
        reports[p] = check_producer(p, mine, expected[p],
                                    sent=(sent or {}).get(p),
                                    allow_dups=allow_dups, note=note)
        ids = {}
        for seq, mid, props in mine:
            if same_ids and not mid:
                raise Failure("producer %d seq %d arrived without a "
                              "message-id" % (p, seq))
            if same_ids and ids.setdefault(seq, mid) != mid:
                raise Failure("producer %d seq %d: republished with another "
                              "message-id (%r, then %r)"
                              % (p, seq, ids[seq], mid))
            if persistent and props.delivery_mode != 2:
                raise Failure("producer %d seq %d: not persistent "
                              "(delivery_mode %r)"
                              % (p, seq, props.delivery_mode))
    return per, reports
