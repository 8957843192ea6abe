#!/usr/bin/python3
"""examples.py: the client examples of clients/examples/ (PHP, Go, Node.js
and the shell with socat) run as real processes against a real pubrelayd
and a private RabbitMQ node, and checked with an independent consumer.

Prints TAP.  Run by `make check` or by hand:

    PUBRELAYD=./pubrelayd PUBRELAY=./pubrelay /usr/bin/python3 \
        tests/examples.py [SCENARIO ...]

Needs rabbitmq-server, python3-pika and the languages' Debian packages
(php-cli, golang-go, nodejs, socat; scripts/install-deps.sh installs them):
a missing one fails its scenarios, naming the package.  The Go example is
built once per run (gofmt and go vet first), in a temp dir, offline, while
the broker boots.  The suite takes about 25-40 s on 2 cores.
"""

import os
import re
import shutil
import socket
import subprocess
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import harness as H  # noqa: E402
import scenarios as S  # noqa: E402
from harness import log  # noqa: E402
from scenarios import Failure, check, check_eq  # noqa: E402

SRCDIR = os.environ.get("PUBRELAY_SRCDIR") or os.path.join(
    os.path.dirname(os.path.abspath(__file__)), "..")
EXAMPLES = os.path.join(SRCDIR, "clients", "examples")

# Language: (the tool, its Debian package, the example's file).
LANGS = {
    "php": ("php", "php-cli", "pubrelay.php"),
    "go": ("go", "golang-go", "pubrelay.go"),
    "node": ("node", "nodejs", "pubrelay.js"),
    "shell": ("socat", "socat", "pubrelay.sh"),
}

N_LINES = 2000          # messages each example pipelines
GATE_NEED = 500         # requests a client must send before any reply
GATE_LIMIT = 10         # seconds the gate holds replies back at most
MAX_BODY = 100          # the relays' max_message_size
GENERATED_ID = re.compile(r"^[0-9a-f]{16}-[0-9]+$")
EXIT = {"ok": 0, "refused": 1, "parked": 3, "timeout": 4}  # the examples'


class World:
    """The run's broker and, once built, the Go example's binary."""

    def __init__(self, broker):
        self.broker = broker
        self.go_binary = None
        self.go_env = None
        self.go_error = "the build did not finish"

    def argv(self, lang):
        """The command line that runs lang's example; fails naming the
        missing tool or package."""
        tool, pkg, name = LANGS[lang]
        path = os.path.join(EXAMPLES, name)
        if not os.path.isfile(path):
            raise Failure("%s: no such example" % path)
        if shutil.which(tool) is None:
            raise Failure("%s not found on PATH: the %s example needs the "
                          "Debian package %s (scripts/install-deps.sh)"
                          % (tool, lang, pkg))
        if lang == "go":
            if self.go_binary is None:
                raise Failure("the Go example did not build: %s"
                              % self.go_error)
            return [self.go_binary]
        if lang == "shell":
            return ["/bin/sh", path]
        return [tool, path]


def build_go(world):
    """go build the example once, offline, with its cache in a temp dir."""
    if shutil.which("go") is None:
        world.go_error = ("go not found on PATH: install the Debian package "
                          "golang-go (scripts/install-deps.sh)")
        return
    d = H.mkdtemp("pubrelay-go-")
    world.go_env = env = dict(
        os.environ, GOCACHE=os.path.join(d, "cache"),
        GOPATH=os.path.join(d, "gopath"), GOFLAGS="", GOENV="off",
        GOPROXY="off", GOTOOLCHAIN="local", CGO_ENABLED="0")
    src = os.path.join(EXAMPLES, "pubrelay.go")
    out = os.path.join(d, "pubrelay-go")
    t0 = time.monotonic()
    for argv in (["gofmt", "-l", src], ["go", "vet", src],
                 ["go", "build", "-o", out, src]):
        p = subprocess.run(argv, cwd=d, env=env, stdin=subprocess.DEVNULL,
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                           timeout=120)
        text = p.stdout.decode("utf-8", "replace").strip()
        if argv[0] == "gofmt" and p.returncode == 0 and text:
            world.go_error = "not gofmt-clean: %s" % text
            return
        if p.returncode != 0:
            world.go_error = "%s exited %d: %s" % (" ".join(argv[:2]),
                                                   p.returncode, text)
            return
    world.go_binary = out
    log("go: vetted and built %s in %.1fs" % (out, time.monotonic() - t0))


class Ctx(S.Ctx):
    def __init__(self, world, name):
        super().__init__(world, name)
        self.consumers = []

    def relay(self, overrides=None):
        r = H.Relay(self.world.broker, self.name, overrides=overrides)
        self.relays.append(r)
        return r.start()

    def consumer(self):
        """A pika connection, closed after the scenario."""
        c = H.Consumer(self.world.broker)
        self.consumers.append(c)
        return c

    def note(self, msg):
        self.notes.append(msg)
        log("%s: %s" % (self.name, msg))


scenario = S.Registry()


def run_example(argv, data=None, timeout=60):
    """Run an example to its end: (exit code, stdout, stderr) as text."""
    p = H.spawn(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                stderr=subprocess.PIPE)
    try:
        out, err = p.communicate(data.encode() if data is not None else b"",
                                 timeout=timeout)
    except subprocess.TimeoutExpired:
        H.killpg(p)
        p.communicate()
        raise Failure("%s did not finish within %ds" % (argv, timeout))
    finally:
        H.reap(p)
    return p.returncode, out.decode("utf-8", "replace"), \
        err.decode("utf-8", "replace")


class Example:
    """One language's example against one socket; each call a process."""

    def __init__(self, ctx, lang, sock):
        self.ctx = ctx
        self.lang = lang
        self.argv = ctx.world.argv(lang)
        self.sock = sock

    def __call__(self, *args, data=None, sock=None, want="ok"):
        argv = self.argv + [sock or self.sock] + [str(a) for a in args]
        rc, out, err = run_example(argv, data)
        what = "%s %s" % (self.lang, " ".join(str(a) for a in args[:1]))
        check_eq(rc, EXIT[want], "%s exit code (stdout %r, stderr %r)"
                 % (what, out[-300:], err[-300:]))
        if want in ("ok", "parked", "timeout"):
            check(err == "", "%s wrote to stderr: %r" % (what, err[-300:]))
        return out, err


def headers(props):
    """A delivery's headers, values as text."""
    return {k: v.decode() if isinstance(v, bytes) else v
            for k, v in (props.headers or {}).items()}


def lines_for(producer, n):
    return [H.seq_line(producer, i) for i in range(n)]


class ReplyGate:
    """A Unix socket between one client and the daemon that holds the
    daemon's replies back until the client sent `need` PUB requests (or
    shut down its sending side).  A client that waits for each reply
    before it sends the next request stalls there; after `limit` seconds
    the gate gives up, lets the replies through and records it."""

    def __init__(self, target, need, limit):
        self.target = target
        self.need = need
        self.limit = limit
        self.path = os.path.join(H.mkdtemp("pubrelay-gate-"), "gate.sock")
        self.sent = 0               # PUB requests the client sent
        self.sent_at_open = None
        self.gave_up = False
        self.opened = threading.Event()
        self.lsock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.lsock.bind(self.path)
        self.lsock.listen(1)
        self.lsock.settimeout(60)
        self.threads = [threading.Thread(target=self._serve, daemon=True)]

    def start(self):
        self.threads[0].start()
        return self

    def _serve(self):
        try:
            cl, _ = self.lsock.accept()
        except OSError:
            return
        up = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        up.connect(self.target)
        for fn, a in ((self._requests, (cl, up)), (self._replies, (up, cl))):
            t = threading.Thread(target=fn, args=a, daemon=True)
            self.threads.append(t)
            t.start()

    def _open(self):
        if not self.opened.is_set():
            self.sent_at_open = self.sent
            self.opened.set()

    def _requests(self, cl, up):
        tail = b"\n"    # "\nPUB " is 5 bytes: no match lies inside a tail of 4
        try:
            while True:
                data = cl.recv(65536)
                if not data:
                    up.shutdown(socket.SHUT_WR)
                    break
                up.sendall(data)
                self.sent += (tail + data).count(b"\nPUB ")
                tail = data[-4:]
                if self.sent >= self.need:
                    self._open()
        except OSError:
            pass
        self._open()

    def _replies(self, up, cl):
        if not self.opened.wait(self.limit):
            self.gave_up = True
            self._open()
        try:
            while True:
                data = up.recv(65536)
                if not data:
                    cl.shutdown(socket.SHUT_WR)
                    break
                cl.sendall(data)
        except OSError:
            pass

    def close(self):
        self.lsock.close()
        for t in self.threads[1:]:
            t.join(10)


def request_ends(buf):
    """The end offsets of the complete PUB requests at the start of buf
    (requests as the examples write them)."""
    ends, pos = [], 0
    while True:
        blank = buf.find(b"\n\n", pos)
        if blank < 0:
            return ends
        length = int(buf[pos:buf.index(b"\n", pos)].split()[1])
        end = blank + 2 + length + 1
        if end > len(buf):
            return ends
        ends.append(end)
        pos = end


class CutGate:
    """A Unix socket between one client and the daemon that passes the
    client's first `keep` PUB requests, then shuts the daemon's side down
    for writing and drops the rest: the daemon answers those requests and
    closes the connection, as when it goes away in the middle of a
    pipeline.  Replies pass as they come, then the client's side is shut
    down for writing only, so that the client sees the end of the replies
    rather than a failed write (which a daemon that closes can cause too,
    depending on how the client writes)."""

    def __init__(self, target, keep):
        self.target = target
        self.keep = keep
        self.passed = 0
        self.path = os.path.join(H.mkdtemp("pubrelay-cut-"), "cut.sock")
        self.lsock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.lsock.bind(self.path)
        self.lsock.listen(1)
        self.lsock.settimeout(60)
        self.threads = []

    def start(self):
        t = threading.Thread(target=self._serve, daemon=True)
        t.start()
        return self

    def _serve(self):
        try:
            cl, _ = self.lsock.accept()
        except OSError:
            return
        up = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        up.connect(self.target)
        for fn, a in ((self._requests, (cl, up)), (self._replies, (up, cl))):
            t = threading.Thread(target=fn, args=a, daemon=True)
            self.threads.append(t)
            t.start()

    def _requests(self, cl, up):
        pending = b""
        try:
            while True:
                data = cl.recv(65536)
                if not data:
                    break
                if self.passed == self.keep:
                    continue                # dropped
                pending += data
                ends = request_ends(pending)[:self.keep - self.passed]
                if ends:
                    up.sendall(pending[:ends[-1]])
                    pending = pending[ends[-1]:]
                    self.passed += len(ends)
                if self.passed == self.keep:
                    up.shutdown(socket.SHUT_WR)
        except OSError:
            pass

    def _replies(self, up, cl):
        try:
            while True:
                data = up.recv(65536)
                if not data:
                    break
                cl.sendall(data)
            cl.shutdown(socket.SHUT_WR)
        except OSError:
            pass

    def close(self):
        self.lsock.close()
        for t in self.threads:
            t.join(10)


# ---------------------------------------------------------------------------


def exercise(ctx, lang):
    """What every language's scenario checks; see php's docstring."""
    relay = ctx.relay(overrides={"publish": {"max_attempts": "1"},
                                 "socket": {"max_message_size":
                                            str(MAX_BODY)}})
    ex = Example(ctx, lang, relay.sock)
    c = ctx.consumer()
    q = c.declare(H.unique_queue(lang))

    # A daemon that is not there is reported, not ignored.
    out, err = ex("pub", q, "x", sock=os.path.join(relay.dir, "nobody.sock"),
                  want="refused")
    check(err.strip() != "", "%s: nothing on stderr without a daemon" % lang)

    # One message with properties, one with a generated message-id.
    mid = "%s-props-1" % lang
    out, _ = ex("pub", q, "with properties", "message-id: " + mid,
                "header: lang=" + lang, "header: note=a b=c",
                "content-type: text/plain")
    check_eq(out, mid + "\n", "%s pub: the message-id printed" % lang)
    out, _ = ex("pub", q, "generated id")
    gen_id = out.strip()
    check(GENERATED_ID.match(gen_id), "%s pub: %r is not a generated "
          "message-id" % (lang, out))

    # A refusal is surfaced with its code: a priority over 255.
    out, err = ex("pub", q, "refused", "priority: 256", want="refused")
    check("BADREQ" in err, "%s: ERR BADREQ not on stderr: %r" % (lang, err))
    check_eq(out, "", "%s: stdout after a refusal" % lang)

    # Pipelined: N_LINES requests before the replies (the gate), in order.
    gate = ReplyGate(relay.sock, GATE_NEED, GATE_LIMIT).start()
    t0 = time.monotonic()
    try:
        out, _ = ex("lines", q, "header: lang=" + lang, sock=gate.path,
                    data="\n".join(lines_for(1, N_LINES)) + "\n")
    finally:
        gate.close()
    ctx.note("%d messages pipelined in %.2fs" % (N_LINES,
                                                 time.monotonic() - t0))
    check(not gate.gave_up, "%s lines does not pipeline: it sent %d "
          "requests, then waited for a reply for %ds"
          % (lang, gate.sent_at_open, GATE_LIMIT))
    ids = out.splitlines()
    check_eq(len(ids), N_LINES, "%s lines: message-ids printed" % lang)
    check_eq(len(set(ids)), N_LINES, "%s lines: distinct message-ids" % lang)

    # A refusal inside a pipeline: 10 accepted, 1 too big, 2 skipped.
    bad = lines_for(2, 10) + ["p2-000010-" + "x" * MAX_BODY] \
        + lines_for(2, 13)[11:]
    out, err = ex("lines", q, data="\n".join(bad) + "\n", want="refused")
    check("message 11 refused: TOOBIG" in err and "10 of 13 accepted" in err,
          "%s lines: the refusal of message 11 (TOOBIG) and 10 of 13 "
          "accepted are not on stderr: %r" % (lang, err))
    check_eq(len(out.splitlines()), 10, "%s lines: message-ids printed "
             "before the refusal" % lang)

    # WAIT: a barrier; when it answers, everything so far is in the queue.
    out, _ = ex("wait", 30000)
    check_eq(out, "ok 0\n", "%s wait" % lang)
    check_eq(c.count(q), 2 + N_LINES + 10, "%s: messages queued when wait "
             "returned" % lang)

    # Receipts: confirmed, and parked for a missing exchange.
    out, _ = ex("confirm", 20000, q, "confirmed")
    m = re.match(r"^confirmed (\S+)\n$", out)
    check(m, "%s confirm: %r, want \"confirmed ID\"" % (lang, out))
    confirmed_id = m.group(1)
    check_eq(c.count(q), 2 + N_LINES + 10 + 1, "%s: messages queued when "
             "confirm returned" % lang)
    out, _ = ex("confirm", 20000, q, "to nowhere",
                "exchange: no_such_exchange", want="parked")
    check(re.match(r"^parked \S+ .*404", out), "%s confirm to a missing "
          "exchange: %r, want \"parked ID ...404...\"" % (lang, out))
    out, _ = ex("wait", 30000, want="parked")
    check_eq(out, "ok 1\n", "%s wait after a parked message" % lang)

    relay.wait_drained(60)
    msgs = c.drain(q)
    check_eq(len(msgs), 2 + N_LINES + 10 + 1, "%s: messages delivered"
             % lang)
    body, props = msgs[0]
    check_eq(body, b"with properties", "%s: first message" % lang)
    check_eq((props.message_id, props.content_type, headers(props)),
             (mid, "text/plain", {"lang": lang, "note": "a b=c"}),
             "%s: message-id, content-type, headers" % lang)
    check_eq((msgs[1][0], msgs[1][1].message_id), (b"generated id", gen_id),
             "%s: second message and its message-id" % lang)
    check_eq((msgs[-1][0], msgs[-1][1].message_id),
             (b"confirmed", confirmed_id),
             "%s: last message and its message-id" % lang)
    per, _ = H.check_delivery(msgs, {1: N_LINES, 2: 10}, sent={2: 13},
                              allow_dups=False, foreign=3, persistent=True,
                              note=ctx.note)
    check_eq([d[1] for d in per[1]], ids, "%s lines: message-ids delivered "
             "against those printed" % lang)
    check(all(headers(d[2]) == {"lang": lang} for d in per[1]),
          "%s lines: a message without its header" % lang)
    check_eq(relay.term(), 0, "pubrelayd exit code after SIGTERM")


@scenario
def php(ctx):
    """clients/examples/pubrelay.php publishes, pipelines, gets receipts and
    WAITs, and reports every error with its code.

    Each language's scenario runs its example as a process per call against
    its own relay (max_attempts 1, max_message_size 100) and checks: a
    missing socket exits 1 with a message; `pub` with message-id, headers
    and content-type prints that id, `pub` without prints a generated one;
    `pub` with priority 256 exits 1 naming BADREQ; `lines` pipelines 2000
    messages (a gate between it and the daemon holds the replies back until
    it has sent 500 requests) and prints 2000 distinct ids; `lines` with a
    too-big 11th line exits 1 naming message 11, TOOBIG and "10 of 13
    accepted", after printing 10 ids; `wait` prints "ok 0" and everything
    is queued when it returns; `confirm` prints "confirmed ID" with the
    message already queued; `confirm` to a missing exchange exits 3 with
    "parked ID ...404..."; `wait` then exits 3 with "ok 1".  A consumer
    finds the messages in order, exactly once, persistent, the first with
    its properties, the pipelined ones under the ids printed, none after
    the refused one, none for the parked one."""
    exercise(ctx, "php")


@scenario
def go(ctx):
    """clients/examples/pubrelay.go, built once per run (gofmt-clean, go vet
    clean, offline with the standard library only), checked as php's."""
    exercise(ctx, "go")


@scenario
def node(ctx):
    """clients/examples/pubrelay.js under nodejs, checked as php's."""
    exercise(ctx, "node")


@scenario
def shell(ctx):
    """clients/examples/pubrelay.sh under /bin/sh with socat, checked as
    php's."""
    exercise(ctx, "shell")


@scenario
def receipt_timeout(ctx):
    """With the broker's app stopped, every example's `confirm 1000` exits 4
    printing "timeout ID" after about a second, and `wait 500` exits 4
    printing "timeout"; after start_app each of those messages arrives,
    once, under the id printed."""
    relay = ctx.relay()
    exs = [Example(ctx, lang, relay.sock) for lang in LANGS]
    with ctx.consumer() as c:
        q = c.declare(H.unique_queue("timeout"))
    ctx.world.broker.stop_app()
    ids = {}
    try:
        relay.wait_stats(lambda s: s.get("state") != "connected", 30,
                         "pubrelayd to notice the broker is gone")
        for ex in exs:
            t0 = time.monotonic()
            out, _ = ex("confirm", 1000, q, ex.lang, want="timeout")
            took = time.monotonic() - t0
            m = re.match(r"^timeout (\S+)\n$", out)
            check(m, "%s confirm: %r, want \"timeout ID\"" % (ex.lang, out))
            check(took >= 0.9, "%s confirm 1000 returned after %.2fs"
                  % (ex.lang, took))
            ids[ex.lang] = m.group(1)
            out, _ = ex("wait", 500, want="timeout")
            check_eq(out, "timeout\n", "%s wait 500" % ex.lang)
    finally:
        ctx.world.broker.start_app()
    relay.wait_drained(60)
    with ctx.consumer() as c:
        got = {body.decode(): props.message_id for body, props in c.drain(q)}
    check_eq(got, ids, "messages delivered after start_app and their ids")
    check_eq(relay.term(), 0, "pubrelayd exit code after SIGTERM")


@scenario
def daemon_gone(ctx):
    """When the daemon answers 1300 of 2000 pipelined messages and closes
    the connection, every example's `lines` exits 1 saying "1300 of 2000
    accepted" after printing those 1300 ids, and exactly those messages
    arrive, in order: the caller knows where to resume.

    A gate passes the first 1300 requests and half-closes the daemon's
    side (the daemon answers them, then closes); 1300 is past the PHP, Go
    and Node.js clients' first batch of 1000."""
    keep, n = 1300, N_LINES
    relay = ctx.relay()
    c = ctx.consumer()
    for lang in LANGS:
        ex = Example(ctx, lang, relay.sock)
        q = c.declare(H.unique_queue("gone-" + lang))
        gate = CutGate(relay.sock, keep).start()
        try:
            out, err = ex("lines", q, sock=gate.path, want="refused",
                          data="\n".join(lines_for(1, n)) + "\n")
        finally:
            gate.close()
        check_eq(gate.passed, keep, "%s: requests the gate passed" % lang)
        check("%d of %d accepted" % (keep, n) in err, "%s: stderr does not "
              "say %d of %d accepted: %r" % (lang, keep, n, err))
        ids = out.splitlines()
        check_eq(len(ids), keep, "%s: message-ids printed" % lang)
        relay.wait_drained(60)
        per, _ = H.check_delivery(c.drain(q), {1: keep}, sent={1: keep},
                                  allow_dups=False)
        check_eq([d[1] for d in per[1]], ids, "%s: message-ids delivered "
                 "against those printed" % lang)
    check_eq(relay.term(), 0, "pubrelayd exit code after SIGTERM")


# The sections of docs/CLIENTS.md and the language of their first code block.
DOC_SECTIONS = {"php": ("## PHP", "php"), "go": ("## Go", "go"),
                "node": ("## Node.js", "js"),
                "shell": ("## Shell (socat)", "sh")}
DOC_SOCK = "/run/pubrelay/pubrelay.sock"
DOC_KEY = "orders.created"


def doc_snippet(lang):
    """The first code block of lang's section of docs/CLIENTS.md."""
    path = os.path.join(SRCDIR, "docs", "CLIENTS.md")
    with open(path) as f:
        text = f.read()
    heading, tag = DOC_SECTIONS[lang]
    lines = text.split("\n")
    if heading not in lines:
        raise Failure("%s: no section %r" % (path, heading))
    block = None
    for ln in lines[lines.index(heading) + 1:]:
        if ln.startswith("## "):
            break
        if block is None and ln == "```" + tag:
            block = []
        elif block is not None and ln == "```":
            return "".join(x + "\n" for x in block)
        elif block is not None:
            block.append(ln)
    raise Failure("%s: no ```%s block under %r" % (path, tag, heading))


def program(world, lang, snippet, d):
    """Write a snippet of lang's code into a program in d, beside a copy
    of the example; returns the command line that runs it."""
    tool, pkg, name = LANGS[lang]
    world.argv(lang)            # fails naming a missing tool
    shutil.copy(os.path.join(EXAMPLES, name), d)
    prog = os.path.join(d, "snippet")
    if lang == "php":
        with open(prog, "w") as f:
            f.write("<?php\n" + snippet)
        return ["php", prog]
    if lang == "node":
        with open(prog + ".js", "w") as f:
            f.write("(async () => {\n%s})().catch((e) => {\n"
                    "  console.error(e); process.exit(1);\n});\n" % snippet)
        return ["node", prog + ".js"]
    if lang == "shell":
        with open(prog, "w") as f:
            f.write("set -e\nPATH=%s:$PATH\n%s" % (d, snippet))
        return ["/bin/sh", prog]
    # Go: the example without its main, and a main around the snippet that
    # uses what it declares and fails on the last error.
    ex = os.path.join(d, name)
    with open(ex) as f:
        src = f.read()
    src, n = re.subn(r"^func main\(\) \{.*\}$", "", src, flags=re.M)
    check(n == 1, "%s: no one-line func main() to replace" % name)
    with open(ex, "w") as f:
        f.write(src)
    names = set()
    for decl in re.findall(r"^\s*([\w, ]+) :=", snippet, re.M):
        names.update(n.strip() for n in decl.split(","))
    pkgs = [p for p in ("errors", "fmt", "log", "os", "time")
            if p + "." in snippet]
    with open(prog + ".go", "w") as f:
        f.write("package main\n\nimport (\n%s)\n\nfunc main() {\n%s"
                "\t%s = %s\n\tif err != nil {\n\t\tpanic(err)\n\t}\n}\n"
                % ("".join('\t"%s"\n' % p for p in pkgs), snippet,
                   ", ".join("_" for _ in sorted(names)),
                   ", ".join(sorted(names))))
    out = os.path.join(d, "snippet-go")
    p = subprocess.run(["go", "build", "-o", out, ex, prog + ".go"], cwd=d,
                       env=world.go_env, stdin=subprocess.DEVNULL,
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                       timeout=120)
    check(p.returncode == 0, "this Go snippet does not build: %s\n%s"
          % (p.stdout.decode("utf-8", "replace"), snippet))
    return [out]


@scenario
def doc_snippets(ctx):
    """The PHP, Go, Node.js and shell code of docs/CLIENTS.md runs as shown
    (socket path and routing key replaced) beside its example, exits 0,
    and a consumer finds what it published, in order.

    Each snippet publishes {"id": 42}, pipelines two more (the shell's
    seq 1000 lines), publishes {"id": 45} with a receipt and WAITs."""
    relay = ctx.relay()
    c = ctx.consumer()
    for lang in DOC_SECTIONS:
        q = c.declare(H.unique_queue("doc-" + lang))
        snippet = doc_snippet(lang).replace(DOC_SOCK, relay.sock) \
            .replace(DOC_KEY, q)
        argv = program(ctx.world, lang, snippet,
                           H.mkdtemp("pubrelay-doc-%s-" % lang))
        rc, out, err = run_example(argv)
        check_eq(rc, 0, "%s snippet of docs/CLIENTS.md: exit code (stdout "
                 "%r, stderr %r)" % (lang, out[-300:], err[-500:]))
        relay.wait_drained(60)
        bodies = [b.decode() for b, _ in c.drain(q)]
        if lang == "shell":
            want = ['{"id": 42}'] + [str(i) for i in range(1, 1001)] \
                + ['{"id": 45}']
        else:
            want = ['{"id": %d}' % i for i in (42, 43, 44, 45)]
        check_eq(bodies, want, "%s snippet: messages delivered" % lang)
    check_eq(relay.term(), 0, "pubrelayd exit code after SIGTERM")


# A refused PUB, then, after idling longer than the client's 1 s timeout,
# another on the same connection: SOCK and QUEUE are replaced.  Exit 10:
# the refusal was not reported; 11: not as BADREQ.
REUSE = {
    "php": """require 'pubrelay.php';
$relay = new PubRelay('SOCK', 1.0);
try {
    $relay->publish('bad', [['routing-key', 'QUEUE'], ['priority', '256']]);
    exit(10);
} catch (PubRelayError $e) {
    if ($e->errCode !== 'BADREQ') exit(11);
}
usleep(1500000);
echo $relay->publish('good', [['routing-key', 'QUEUE']]), "\\n";
""",
    "go": """c, err := Dial("SOCK", time.Second)
_, err = c.Publish([]byte("bad"), Prop{"routing-key", "QUEUE"},
\tProp{"priority", "256"})
var e *Error
if !errors.As(err, &e) {
\tos.Exit(10)
} else if e.Code != "BADREQ" {
\tos.Exit(11)
}
time.Sleep(1500 * time.Millisecond)
id, err := c.Publish([]byte("good"), Prop{"routing-key", "QUEUE"})
fmt.Println(id)
""",
    "node": """const { PubRelay } = require('./pubrelay');
const relay = await PubRelay.connect('SOCK', 1000);
await relay.publish('bad', [['routing-key', 'QUEUE'], ['priority', '256']])
  .then(() => process.exit(10),
    (e) => e.code === 'BADREQ' || process.exit(11));
await new Promise((resolve) => setTimeout(resolve, 1500));
console.log(await relay.publish('good', [['routing-key', 'QUEUE']]));
relay.close();
""",
}


@scenario
def reuse_after_refusal(ctx):
    """The PHP, Go and Node.js clients, handed a message the daemon refuses
    (BADREQ), raise an error with that code, and the same connection then
    publishes the next message (the client sent RESET, else the refusal
    latch would answer ERR SKIPPED), after idling longer than the client's
    reply timeout (which bounds only a reply that is due); only that
    message arrives.

    The shell example opens a connection per call, so it has no latch to
    reset."""
    relay = ctx.relay()
    c = ctx.consumer()
    for lang, code in REUSE.items():
        q = c.declare(H.unique_queue("reuse-" + lang))
        argv = program(ctx.world, lang,
                       code.replace("SOCK", relay.sock).replace("QUEUE", q),
                       H.mkdtemp("pubrelay-reuse-%s-" % lang))
        rc, out, err = run_example(argv)
        check_eq(rc, 0, "%s: exit code (stdout %r, stderr %r)"
                 % (lang, out[-300:], err[-500:]))
        relay.wait_drained(60)
        msgs = c.drain(q)
        check_eq([(b, p.message_id + "\n") for b, p in msgs],
                 [(b"good", out)], "%s: messages delivered" % lang)
    check_eq(relay.term(), 0, "pubrelayd exit code after SIGTERM")


# ---------------------------------------------------------------------------


def setup(names):
    try:
        b = H.Broker()
        world = World(b)
        # The Go example builds while the broker boots.
        builder = threading.Thread(target=build_go, args=(world,),
                                   daemon=True)
        builder.start()
        b.start()
    except Exception as e:
        raise H.HarnessError("cannot start the RabbitMQ broker: %s" % (e,))
    log("broker %s on 127.0.0.1:%d booted in %.1fs (dir %s)"
        % (b.node, b.port, b.boot_seconds, b.dir))
    builder.join(180)
    return world


def cleanup(ctx):
    for c in ctx.consumers:
        c.close()


def repair(world, last):
    b = world.broker
    if not H.tcp_connectable(b.port):
        log("broker: app stopped after the scenario; starting it")
        b.start_app()


def main(argv):
    return S.run("examples.py", scenario, argv, setup, Ctx, cleanup=cleanup,
                 repair=repair,
                 teardown=lambda w: w.broker.stop(), tap_notes=True,
                 needs=("broker", "pika", "php", "go", "node", "socat"))


if __name__ == "__main__":
    sys.exit(main(sys.argv))
