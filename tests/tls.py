#!/usr/bin/python3
"""tls.py: pubrelayd to a broker over TLS (amqps://), and the secrets rules.

Prints TAP.  Run by `make check`, or by hand after `make`:

    PUBRELAYD=$PWD/pubrelayd PUBRELAY=$PWD/pubrelay \\
        /usr/bin/python3 tests/tls.py [CHECK ...]

With `openssl` (Debian package openssl) the test makes, in a temp dir, a CA,
a second CA that signed nothing the broker shows, a server certificate for
"localhost" and a client certificate.  One private RabbitMQ node gets a TLS
listener on 127.0.0.1 (ssl_options.verify = verify_peer,
fail_if_no_peer_cert = true: the broker wants the client certificate) beside
its plain one, which the test uses to declare and read the queue (pika).

Each check's docstring says what it proves: `tls.py --list -v`.  The
shared driver (scenarios.py) runs them, each within 180 s.
tls_broker_hung and tls_blocked_long run pubrelayd with a preloaded socket()
(built with `cc`) that caps SO_SNDBUF at 256 KiB: loopback's 4 MiB would
hold the whole window.  Every relay must exit 0 on SIGTERM with no
sanitizer report in its log."""

import os
import shutil
import signal
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import harness as H  # noqa: E402
from faultproxy import FaultProxy  # noqa: E402
from harness import log  # noqa: E402
import scenarios as S  # noqa: E402
from scenarios import check, sanitizer_reports  # noqa: E402

CHECK_TIMEOUT = 180         # seconds; a check taking longer fails
USER = "tlsuser"
PASSWORD = "tls-Secret-4711"   # must never show up in a log or STATS


def write_private(path, text, mode=0o600):
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    os.fchmod(fd, mode)
    with os.fdopen(fd, "w") as f:
        f.write(text)


# ---------------------------------------------------------------------------
# Certificates


def openssl(*args, cwd):
    p = subprocess.run(["openssl"] + list(args), cwd=cwd,
                       stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                       stderr=subprocess.STDOUT, timeout=120)
    if p.returncode != 0:
        raise H.HarnessError("openssl %s failed: %s"
                             % (" ".join(args),
                                p.stdout.decode("utf-8", "replace")))


class Certs:
    """CA, other CA, server (localhost) and client certificates."""

    def __init__(self):
        if shutil.which("openssl") is None:
            raise H.HarnessError("openssl not found (Debian package openssl)")
        self.dir = d = H.mkdtemp("pubrelay-tls-")
        for ca in ("ca", "other-ca"):
            openssl("req", "-x509", "-new", "-newkey", "rsa:2048", "-nodes",
                    "-keyout", ca + ".key", "-out", ca + ".pem", "-days", "2",
                    "-subj", "/CN=pubrelay test %s" % ca,
                    "-addext", "basicConstraints=critical,CA:TRUE",
                    "-addext", "keyUsage=critical,keyCertSign,cRLSign",
                    cwd=d)
        self.leaf("server", "localhost", "serverAuth",
                  "subjectAltName = DNS:localhost\n")
        self.leaf("client", "pubrelay-client", "clientAuth", "")
        for name in os.listdir(d):
            if name.endswith(".key"):
                os.chmod(os.path.join(d, name), 0o600)

    def leaf(self, name, cn, usage, extra):
        d = self.dir
        with open(os.path.join(d, name + ".ext"), "w") as f:
            f.write("basicConstraints = CA:FALSE\n"
                    "keyUsage = critical,digitalSignature,keyEncipherment\n"
                    "extendedKeyUsage = %s\n%s" % (usage, extra))
        openssl("req", "-new", "-newkey", "rsa:2048", "-nodes",
                "-keyout", name + ".key", "-out", name + ".csr",
                "-subj", "/CN=" + cn, cwd=d)
        openssl("x509", "-req", "-in", name + ".csr", "-CA", "ca.pem",
                "-CAkey", "ca.key", "-CAcreateserial", "-days", "2",
                "-extfile", name + ".ext", "-out", name + ".pem", cwd=d)

    def path(self, name):
        return os.path.join(self.dir, name)


# ---------------------------------------------------------------------------
# Shared state: one broker with a TLS listener for the run


class World:
    """The run's broker and certificates; also each check's context (its
    relays and the notes on its TAP line, reset before each check)."""

    def __init__(self):
        self.certs = Certs()
        self.tls_port = H.free_port()
        c = self.certs
        self.broker = H.Broker(extra_conf=[
            "listeners.ssl.default = 127.0.0.1:%d" % self.tls_port,
            "ssl_options.cacertfile = %s" % c.path("ca.pem"),
            "ssl_options.certfile = %s" % c.path("server.pem"),
            "ssl_options.keyfile = %s" % c.path("server.key"),
            "ssl_options.verify = verify_peer",
            "ssl_options.fail_if_no_peer_cert = true",
        ])
        self.broker.start()
        H.wait_until(lambda: H.tcp_connectable(self.tls_port), 60,
                     "TLS port %d to accept connections" % self.tls_port)
        self.broker.add_user(USER, PASSWORD)
        self.relays = []
        self.notes = []

    def uri(self, host="localhost", password=True):
        if password:
            return "amqps://%s:%s@%s:%d" % (USER, PASSWORD, host,
                                            self.tls_port)
        return "amqps://%s@%s:%d" % (USER, host, self.tls_port)

    def relay(self, name, broker_keys, uri, log_level=None, env=None):
        keys = {"connect_timeout": "5s"}
        keys.update(broker_keys)
        over = {"broker": keys}
        if log_level is not None:
            over["log"] = {"level": log_level}
        r = H.Relay(self.broker, name, overrides=over, uri=uri)
        r.env = env
        self.relays.append(r)
        r.start()
        return r

    def tls_keys(self, ca="ca.pem", client=True):
        keys = {"ca_file": self.certs.path(ca)}
        if client:
            keys["cert_file"] = self.certs.path("client.pem")
            keys["key_file"] = self.certs.path("client.key")
        return keys

    def queue(self, name):
        conn = self.broker.connect()
        ch = conn.channel()
        ch.queue_declare(name, durable=True)
        ch.queue_purge(name)
        conn.close()

    def read_queue(self, name, n, timeout=30):
        """The bodies of the first n messages of a queue (waits for them)."""
        conn = self.broker.connect()
        ch = conn.channel()
        got = []
        deadline = time.monotonic() + timeout
        while len(got) < n and time.monotonic() < deadline:
            method, props, body = ch.basic_get(name, auto_ack=True)
            if method is None:
                time.sleep(0.1)
                continue
            got.append(body.decode())
        conn.close()
        return got

    def drain_queue(self, name, quiet=2.0):
        """Every message in a queue, until it stays empty for quiet s."""
        conn = self.broker.connect()
        ch = conn.channel()
        got = []
        last = time.monotonic()
        while time.monotonic() - last < quiet:
            method, props, body = ch.basic_get(name, auto_ack=True)
            if method is None:
                time.sleep(0.1)
                continue
            got.append(body.decode())
            last = time.monotonic()
        conn.close()
        return got


def publish(relay, queue, bodies):
    for b in bodies:
        rc, out, err = relay.cmd("publish", "-k", queue, b)
        check(rc == 0, "pubrelay publish exited %d: %s" % (rc, err.strip()))


def check_no_password(relay):
    text = relay.log_text()
    check(PASSWORD not in text, "the password is in the log %s"
          % relay.logpath)
    st = relay.stats()
    check(all(PASSWORD not in str(v) for v in st.values()),
          "the password is in STATS: %s" % H.fmt_stats(st))


def wait_failure(relay, words, what):
    """The link does not come up, and last_error says why."""
    st = relay.wait_stats(
        lambda s: all(w in s.get("last_error", "") for w in words), 30,
        "last_error to name %s" % what)
    check(st.get("state") != "connected",
          "state is connected despite %s" % what)
    time.sleep(1.5)     # a few reconnect attempts: none may succeed
    st = relay.stats()
    check(st.get("state") != "connected" and st.get("reconnects") == 0
          and st.get("confirmed") == 0,
          "connected despite %s: %s" % (what, H.fmt_stats(st)))
    text = relay.log_text()
    check(all(w in text for w in words),
          "the log does not say %s (%s)" % (" ".join(words), relay.logpath))
    return st


# ---------------------------------------------------------------------------
# Checks


def verified(w):
    """amqps://localhost with ca_file, cert_file and key_file (and the
    password from a 0600 password_file) publishes, the messages arrive in
    order, and the password is in neither the log nor STATS."""
    pwfile = os.path.join(w.certs.dir, "password")
    write_private(pwfile, PASSWORD + "\n")
    keys = w.tls_keys()
    keys["password_file"] = pwfile
    r = w.relay("tls-ok", keys, w.uri(password=False))
    q = "tls-verified"
    w.queue(q)
    bodies = ["tls message %d" % i for i in range(20)]
    publish(r, q, bodies)
    # A stream, so that acks wait in OpenSSL's buffer behind others.
    more = ["tls line %d" % i for i in range(5000)]
    rc, out, err = r.cmd("publish", "-k", q, "--lines",
                         data=("\n".join(more) + "\n").encode())
    check(rc == 0, "pubrelay publish --lines exited %d: %s"
          % (rc, err.strip()))
    bodies += more
    st = r.wait_drained(30)
    check(st.get("state") == "connected", "state %r" % st.get("state"))
    check(st.get("broker", "").startswith("amqps://"),
          "broker %r" % st.get("broker"))
    got = w.read_queue(q, len(bodies), timeout=60)
    check(got == bodies, "read %d of %d messages back, in order: %r"
          % (len(got), len(bodies), got[:5]))
    check_no_password(r)
    # The broker's view: TLS 1.2 or later, our client certificate.
    out = w.broker.ctl("list_connections", "--no-table-headers", "user",
                       "ssl", "ssl_protocol", "peer_cert_subject"
                       ).stdout.decode("utf-8", "replace")
    mine = [ln.split("\t") for ln in out.splitlines()
            if ln.startswith(USER + "\t")]
    check(len(mine) == 1, "list_connections: %r" % out)
    user, ssl, proto, subject = (mine[0] + ["", "", ""])[:4]
    check(ssl == "true" and proto in ("tlsv1.2", "tlsv1.3")
          and "pubrelay-client" in subject,
          "the broker sees ssl=%s %s peer %s" % (ssl, proto, subject))
    w.notes.append("%d messages over %s" % (len(bodies), proto))
    stop(r)


def wrong_ca(w):
    """ca_file is the other CA: no connection; last_error and the log say
    the certificate verification failed; accepted messages stay queued
    (the backlog is kept)."""
    r = w.relay("tls-wrong-ca", w.tls_keys(ca="other-ca.pem"), w.uri())
    q = "tls-wrong-ca"
    w.queue(q)
    publish(r, q, ["held back"])
    st = wait_failure(r, ["certificate verify failed"], "a wrong CA")
    check(st.get("backlog") == 1, "backlog %r, want 1" % st.get("backlog"))
    check_no_password(r)
    w.notes.append("last_error: %s" % st.get("last_error"))
    stop(r)
    check(w.read_queue(q, 1, timeout=1) == [],
          "a message reached the queue through an unverified link")


def hostname(w):
    """amqps://127.0.0.1 with the "localhost" certificate: no connection;
    last_error names the hostname verification; the backlog is kept."""
    r = w.relay("tls-hostname", w.tls_keys(), w.uri(host="127.0.0.1"))
    q = "tls-hostname"
    w.queue(q)
    publish(r, q, ["held back"])
    st = wait_failure(r, ["hostname verification failed"],
                      "a certificate for another host name")
    check(st.get("backlog") == 1, "backlog %r, want 1" % st.get("backlog"))
    w.notes.append("last_error: %s" % st.get("last_error"))
    stop(r)
    check(w.read_queue(q, 1, timeout=1) == [],
          "a message reached the queue through a link to the wrong host")


def plain_port(w):
    """amqps:// to the broker's plain AMQP port, the commonest mistake:
    the handshake fails and last_error says the port may not speak TLS."""
    uri = w.uri().replace(":%d" % w.tls_port, ":%d" % w.broker.port)
    r = w.relay("tls-plain-port", w.tls_keys(), uri)
    q = "tls-plain-port"
    w.queue(q)
    publish(r, q, ["held back"])
    st = wait_failure(r, ["TLS: handshake failed", "does not speak TLS"],
                      "amqps:// to a plain AMQP port")
    check(st.get("backlog") == 1, "backlog %r, want 1" % st.get("backlog"))
    w.notes.append("last_error: %s" % st.get("last_error"))
    stop(r)


def closed_port(w):
    """amqps:// to a port nothing listens on: last_error names the cause
    (Connection refused), not rabbitmq-c's "a socket error occurred"."""
    uri = w.uri().replace(":%d" % w.tls_port, ":%d" % H.free_port())
    r = w.relay("tls-closed-port", w.tls_keys(), uri)
    q = "tls-closed-port"
    w.queue(q)
    publish(r, q, ["held back"])
    st = wait_failure(r, ["Connection refused"], "amqps:// to a closed port")
    check(st.get("backlog") == 1, "backlog %r, want 1" % st.get("backlog"))
    w.notes.append("last_error: %s" % st.get("last_error"))
    stop(r)


def no_verify_hostname(w):
    """The same as hostname with verify_hostname = no: it connects and
    publishes."""
    keys = w.tls_keys()
    keys["verify_hostname"] = "no"
    r = w.relay("tls-nohost", keys, w.uri(host="127.0.0.1"))
    q = "tls-no-verify-hostname"
    w.queue(q)
    publish(r, q, ["a", "b", "c"])
    r.wait_drained(30)
    got = w.read_queue(q, 3)
    check(got == ["a", "b", "c"], "read back %r" % got)
    stop(r)


def no_client_cert(w):
    """Without cert_file/key_file the broker refuses the link: the login
    fails, last_error hints at cert_file, the backlog is kept."""
    r = w.relay("tls-nocert", w.tls_keys(client=False), w.uri())
    q = "tls-no-client-cert"
    w.queue(q)
    publish(r, q, ["held back"])
    # TLS 1.3 reports the refusal after the client's handshake, on the
    # first read (the login): rabbitmq-c then names an SSL error, for which
    # pubrelayd adds the hint, or a closed socket.
    st = wait_failure(r, ["login: "], "a missing client certificate")
    err = st.get("last_error", "")
    check("cert_file?" in err or "closed" in err,
          "last_error neither hints at cert_file nor says closed: %r" % err)
    check(st.get("backlog") == 1, "backlog %r, want 1" % st.get("backlog"))
    w.notes.append("last_error: %s" % st.get("last_error"))
    stop(r)
    check(w.read_queue(q, 1, timeout=1) == [],
          "a message reached the queue without a client certificate")


# Loopback's send buffer grows to 4 MiB (net.ipv4.tcp_wmem), as much as
# pubrelayd keeps in flight, and the broker reads the first message of an
# alarm: a TLS publish would seldom wait inside rabbitmq-c's write.  A
# preloaded socket() caps SO_SNDBUF, as a smaller tcp_wmem or a slow path
# would, so that it does.
SNDBUF_SHIM = r"""
#define _GNU_SOURCE
#include <sys/socket.h>
#include <dlfcn.h>
#include <stdlib.h>

int
socket(int domain, int type, int protocol)
{
	static int	(*real)(int, int, int);
	const char	*v = getenv("PUBRELAY_TEST_SNDBUF");
	int		 fd, n;

	if (real == NULL)
		real = (int (*)(int, int, int))dlsym(RTLD_NEXT, "socket");
	fd = real(domain, type, protocol);
	if (fd != -1 && domain != AF_UNIX && (type & 0xf) == SOCK_STREAM &&
	    v != NULL && (n = atoi(v)) > 0)
		setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &n, sizeof(n));
	return fd;
}
"""


def small_sndbuf_env(w, size=262144):
    """An environment for pubrelayd whose TCP sockets get SO_SNDBUF size."""
    so = os.path.join(w.certs.dir, "sndbuf.so")
    if not os.path.exists(so):
        src = os.path.join(w.certs.dir, "sndbuf.c")
        with open(src, "w") as f:
            f.write(SNDBUF_SHIM)
        p = subprocess.run(["cc", "-shared", "-fPIC", "-o", so, src, "-ldl"],
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                           timeout=120)
        if p.returncode != 0:
            raise H.HarnessError("cannot build the SO_SNDBUF shim: %s"
                                 % p.stdout.decode("utf-8", "replace"))
    env = dict(os.environ)
    env["LD_PRELOAD"] = so
    env["PUBRELAY_TEST_SNDBUF"] = str(size)
    # A sanitizer build wants its runtime first; the shim does not mind.
    env["ASAN_OPTIONS"] = (env.get("ASAN_OPTIONS", "") +
                           ":verify_asan_link_order=0").lstrip(":")
    return env


def big_bodies(first, n, pad=65536):
    """n seq_line()s of pad bytes, numbered from first."""
    return [H.seq_line(1, i, pad=pad) for i in range(first, first + n)]


def pub_pipelined(relay, queue, bodies):
    """All the PUBs in one write, then every reply: OK, or a Failure."""
    reqs = [H.encode_pub(b, [("routing-key", queue)]) for b in bodies]
    with H.RawClient(relay.sock, timeout=60) as c:
        c.send(b"".join(reqs))
        replies = [c.read_line() for _ in reqs]
    bad = [(i, r) for i, r in enumerate(replies)
           if r is None or not r.startswith("OK ")]
    check(not bad, "replies other than OK: %r" % bad[:3])


def check_first_deliveries(w, q, bodies):
    """Every body (big_bodies() from 0) reached q, first deliveries in
    order, duplicates only of a republished suffix; returns how many."""
    per, reports = H.check_delivery(w.drain_queue(q), {1: len(bodies)})
    return reports[1].duplicates


def tls_broker_hung(w):
    """The broker's VM SIGSTOPped (its kernel still ACKs and answers the
    window probes) with the TLS link up, then a backlog of 1 MB messages
    (SO_SNDBUF capped): the publisher writes into the stopped broker and
    waits inside rabbitmq-c's TLS write.  The link is given up within a few
    heartbeats, and after SIGCONT everything arrives in order.  The same
    over amqp://, where the relay waits in its own write loop.

    With `heartbeat = 3s` the link is given up within 6 heartbeats."""
    hb = 3
    for scheme in ("amqps", "amqp"):
        if scheme == "amqps":
            keys, uri = w.tls_keys(), w.uri()
        else:
            keys, uri = {}, "amqp://%s:%s@localhost:%d" % (
                USER, PASSWORD, w.broker.port)
        keys["heartbeat"] = "%ds" % hb
        r = w.relay("%s-hung" % scheme, keys, uri, log_level="debug",
                    env=small_sndbuf_env(w))
        q = "%s-broker-hung" % scheme
        w.queue(q)
        r.wait_stats(lambda s: s.get("state") == "connected", 30, "link up")
        bodies = big_bodies(0, 30, pad=1000000)
        pid = w.broker.os_pid()
        os.kill(pid, signal.SIGSTOP)
        try:
            t0 = time.monotonic()
            pub_pipelined(r, q, bodies)
            st = r.wait_stats(lambda s: s.get("state") != "connected",
                              20 * hb, "the %s link to a stopped broker to "
                              "be given up" % scheme)
            took = time.monotonic() - t0
            w.notes.append("%s: given up %.1f s after SIGSTOP (heartbeat "
                           "%d s): %s" % (scheme, took, hb,
                                          st.get("last_error")))
            check(took <= 6 * hb, "%s: given up after %.1f s, want <= %d s"
                  % (scheme, took, 6 * hb))
            check(st.get("last_error"), "no last_error: %s"
                  % H.fmt_stats(st))
        finally:
            os.kill(pid, signal.SIGCONT)
        st = r.wait_drained(120)
        check(st.get("reconnects", 0) >= 1, "reconnects %r"
              % st.get("reconnects"))
        dups = check_first_deliveries(w, q, bodies)
        w.notes.append("%d messages after SIGCONT, %d again"
                       % (len(bodies), dups))
        warned = [ln for ln in r.log_text().splitlines()
                  if "warning: broker " in ln and "sent nothing" in ln]
        check(len(warned) == 1, "%s: the silence is warned about %d times"
              % (scheme, len(warned)))
        stop(r)


def tls_blocked_long(w):
    """A memory alarm of 6 heartbeats over TLS, twice: the broker stops
    reading but goes on heartbeating, so the link stays (no reconnect) and
    OKs keep coming.  First the relay reads connection.blocked and waits in
    its loop (state blocked).  Then it is restarted during the alarm with
    1 MB messages in the outbox, SO_SNDBUF capped, and a proxy that lets
    only 1.5 MB more reach the broker (its buffers full): it writes 5 MB at
    once and waits inside rabbitmq-c's TLS write, with connection.blocked
    unread behind it (state connected).  When the alarm clears, everything
    arrives in order."""
    hb = 3
    keys = w.tls_keys()
    keys["heartbeat"] = "%ds" % hb
    px = FaultProxy(w.tls_port, rcvbuf=65536).start()
    q = "tls-blocked-long"
    w.queue(q)
    bodies = []

    def hold(r, what, states):
        t0 = time.monotonic()
        n = 0
        while time.monotonic() - t0 < 6 * hb:
            more = big_bodies(len(bodies), 1, pad=100)
            ok0 = time.monotonic()
            pub_pipelined(r, q, more)
            check(time.monotonic() - ok0 < 2, "%s: an OK took %.1f s"
                  % (what, time.monotonic() - ok0))
            bodies.extend(more)
            st = r.stats()
            check(st.get("state") in states and st.get("reconnects") == 0,
                  "%s, %.0f s into the alarm: %s"
                  % (what, time.monotonic() - t0, H.fmt_stats(st)))
            n += 1
            time.sleep(0.5)
        w.notes.append("%s: %.0f s (heartbeat %d s), state %s, %d OKs"
                       % (what, time.monotonic() - t0, hb, st.get("state"), n))

    try:
        r = w.relay("tls-blocked", keys, "amqps://%s:%s@localhost:%d"
                    % (USER, PASSWORD, px.port), log_level="debug")
        r.wait_stats(lambda s: s.get("state") == "connected", 30, "link up")
        try:
            w.broker.memory_alarm(True)
            H.wait_until(lambda: w.broker.alarms(), 20, "the memory alarm")
            more = big_bodies(0, 20, pad=1000000)
            pub_pipelined(r, q, more)
            bodies.extend(more)
            r.wait_stats(lambda s: s.get("state") == "blocked", 30,
                         "state blocked")
            hold(r, "blocked", ("blocked",))
            stop(r)
            px.hold(1500000)
            r.env = small_sndbuf_env(w)
            r.start()
            r.wait_stats(lambda s: s.get("in_flight", 0) > 0, 10,
                         "messages in flight after the restart")
            hold(r, "restarted, buffers full", ("connected", "blocked"))
        finally:
            w.broker.memory_alarm(False)
            px.passthrough()
        st = r.wait_drained(120)
        check(st.get("reconnects") == 0, "reconnects %r after the alarm"
              % st.get("reconnects"))
        dups = check_first_deliveries(w, q, bodies)
        w.notes.append("%d messages after the alarm, %d again"
                       % (len(bodies), dups))
        stop(r)
    finally:
        px.stop()


def stop(relay):
    """SIGTERM: exit 0, and no sanitizer report in the log (for a build
    with --enable-sanitizers)."""
    rc = relay.term()
    bad = sanitizer_reports(relay.log_text())
    check(not bad, "sanitizer report in %s:\n%s"
          % (relay.logpath, "\n".join(bad[:40])))
    check(rc == 0, "pubrelayd exited %r after SIGTERM (%s)"
          % (rc, relay.logpath))


def run_check_config(path):
    p = subprocess.run([H.binary("PUBRELAYD"), "-t", "-c", path],
                       stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE, timeout=30)
    return (p.returncode, p.stdout.decode("utf-8", "replace"),
            p.stderr.decode("utf-8", "replace"))


def secrets(w):
    """`pubrelayd -t` refuses a config readable by others holding a
    password in a uri, a password_file readable by others, a key_file
    readable by others, cert_file without key_file, an unreadable ca_file
    (each error naming FILE:LINE, the key and the file, never the
    password), and accepts the same files once they are 0600."""
    d = H.mkdtemp("pubrelay-secrets-")
    c = w.certs
    ini = os.path.join(d, "pubrelay.ini")
    base = ("[socket]\npath = %s\n[outbox]\npath = %s\n"
            % (os.path.join(d, "s.sock"), os.path.join(d, "o.db")))

    def expect(text, mode, want, what):
        write_private(ini, text, mode)
        rc, out, err = run_check_config(ini)
        check(PASSWORD not in out + err, "%s: the password was printed: %r"
              % (what, err))
        if want is None:
            check(rc == 0 and "configuration OK" in out + err,
                  "%s: -t exited %d: %r" % (what, rc, err.strip()))
        else:
            check(rc == 78, "%s: -t exited %d, want 78: %r"
                  % (what, rc, err.strip()))
            check(want in err, "%s: no %r in %r" % (what, want, err.strip()))

    # A password in a uri: the file must not be readable by others.
    text = "[broker]\nuri = %s\n" % w.uri() + base
    expect(text, 0o644, "%s:2: [broker] uri: this uri holds a password and "
           "'%s' is readable by others (mode 0644)" % (ini, ini),
           "uri password, mode 0644")
    expect(text, 0o640, None, "uri password, mode 0640")
    # No password in the file: any mode will do.
    pwfile = os.path.join(d, "password")
    write_private(pwfile, PASSWORD + "\n", 0o644)
    text = ("[broker]\nuri = %s\npassword_file = %s\n"
            % (w.uri(password=False), pwfile) + base)
    expect(text, 0o644, "%s:3: [broker] password_file: '%s' is readable by "
           "others (mode 0644)" % (ini, pwfile), "password_file mode 0644")
    os.chmod(pwfile, 0o600)
    expect(text, 0o644, None, "password_file 0600, config 0644")
    # The client key is a secret too.
    key = os.path.join(d, "client.key")
    shutil.copy(c.path("client.key"), key)
    os.chmod(key, 0o644)
    text = ("[broker]\nuri = %s\nca_file = %s\ncert_file = %s\n"
            "key_file = %s\n" % (w.uri(password=False), c.path("ca.pem"),
                                 c.path("client.pem"), key) + base)
    expect(text, 0o644, "%s:5: [broker] key_file: '%s' is readable by "
           "others (mode 0644)" % (ini, key), "key_file mode 0644")
    os.chmod(key, 0o600)
    expect(text, 0o644, None, "TLS files in order")
    # Both or neither; files readable at load time.
    text = ("[broker]\nuri = %s\ncert_file = %s\n"
            % (w.uri(password=False), c.path("client.pem")) + base)
    expect(text, 0o644, "%s:3: [broker] cert_file: a client certificate "
           "needs its key: key_file is missing" % ini, "cert without key")
    missing = os.path.join(d, "no-such-ca.pem")
    text = ("[broker]\nuri = %s\nca_file = %s\n"
            % (w.uri(password=False), missing) + base)
    expect(text, 0o644, "%s:3: [broker] ca_file: cannot open '%s': No such "
           "file or directory" % (ini, missing), "missing ca_file")
    w.notes.append("7 configs")


CHECKS = S.Registry()
for _fn in (verified, wrong_ca, hostname, plain_port, closed_port,
            no_verify_hostname, no_client_cert, tls_broker_hung,
            tls_blocked_long, secrets):
    CHECKS(_fn)


def setup(names):
    w = World()
    log("broker %s: AMQP on %d, TLS on %d (%.1f s); certificates in %s"
        % (w.broker.node, w.broker.port, w.tls_port,
           w.broker.boot_seconds or 0, w.certs.dir))
    return w


def make_ctx(w, name):
    w.relays = []
    w.notes = []
    return w


def main(argv):
    return S.run("tls.py", CHECKS, argv, setup, make_ctx,
                 report=lambda w, ctx, name: None,
                 teardown=lambda w: w.broker.stop(),
                 timeout=CHECK_TIMEOUT, tap_notes=True,
                 needs=("broker", "pika", "openssl"))


if __name__ == "__main__":
    sys.exit(main(sys.argv))
