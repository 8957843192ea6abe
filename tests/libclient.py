#!/usr/bin/python3
"""libclient.py: libpubrelay (lib/) against a real pubrelayd and a private
RabbitMQ node, checked by an independent consumer (pika).

Prints TAP.  Run by `make check`, or by hand after `make`:

    PUBRELAYD=$PWD/pubrelayd PUBRELAY=$PWD/pubrelay \
        /usr/bin/python3 tests/libclient.py [SCENARIO ...]

The scenarios drive tests/libclient_prog (a check_PROGRAM linked against
libpubrelay.so; built with `make tests/libclient_prog` in the build tree
of $PUBRELAYD when missing), which prints what each API call returned; the
return codes are compared with the values pubrelay.h defines.  `--list
[-v]` prints what each scenario proves.  About 30 s, broker boot included.
"""

import errno
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import harness as H  # noqa: E402
import scenarios as S  # noqa: E402
from scenarios import check, check_eq  # noqa: E402

SRCDIR = os.environ.get("PUBRELAY_SRCDIR",
                        os.path.dirname(os.path.dirname(
                            os.path.abspath(__file__))))


def codes():
    """NAME -> value of the enums in lib/pubrelay.h."""
    with open(os.path.join(SRCDIR, "lib", "pubrelay.h")) as f:
        text = f.read()
    found = dict((m.group(1), int(m.group(2))) for m in re.finditer(
        r"\b(PUBRELAY_[A-Z_]+)\s*=\s*(-?\d+)", text))
    if "PUBRELAY_E_BADREQ" not in found or "PUBRELAY_CONFIRMED" not in found:
        raise H.HarnessError("cannot read the codes of lib/pubrelay.h")
    return found


C = codes()


def prog():
    """tests/libclient_prog of the build tree, built if need be."""
    builddir = os.environ.get("PUBRELAY_BUILDDIR") or os.path.dirname(
        H.binary("PUBRELAYD"))
    path = os.path.join(builddir, "tests", "libclient_prog")
    if not os.access(path, os.X_OK):
        env = dict(os.environ)
        for k in ("MAKEFLAGS", "MFLAGS", "MAKELEVEL", "MAKEOVERRIDES"):
            env.pop(k, None)
        p = subprocess.run(["make", "-s", "-C", builddir,
                            "tests/libclient_prog"], env=env,
                           stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, timeout=300)
        if p.returncode != 0 or not os.access(path, os.X_OK):
            raise H.HarnessError("cannot build %s:\n%s" % (
                path, p.stdout.decode("utf-8", "replace")[-2000:]))
    return path


class Ctx(S.Ctx):
    def __init__(self, env, name):
        super().__init__(env, name)
        self.broker = env["broker"]
        self.prog = env["prog"]

    def relay(self, overrides=None, uri=None):
        r = H.Relay(self.broker, self.name, overrides=overrides, uri=uri)
        self.relays.append(r)
        r.start()
        return r

    def run(self, cmd, sock, *args, timeout=120):
        """libclient_prog's key=value lines as a dict (values as text)."""
        p = subprocess.run([self.prog, cmd, sock] + [str(a) for a in args],
                           stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, timeout=timeout)
        out = p.stdout.decode("utf-8", "replace")
        if p.returncode != 0:
            raise S.Failure("libclient_prog %s exited %d: %s %s"
                            % (cmd, p.returncode, out,
                               p.stderr.decode("utf-8", "replace")))
        res = {}
        for line in out.splitlines():
            k, _, v = line.partition("=")
            res[k] = v
        check_eq(res.get("open"), "0", "%s: pubrelay_open's code (%s)"
                 % (cmd, res.get("open_msg")))
        return res


def rc(res, key, name, what=None):
    """res[key] is the code of pubrelay.h's name."""
    got = int(res.get(key, "none") if res.get(key) is not None else -999)
    want = C[name]
    if got != want:
        names = [n for n, v in C.items() if v == got]
        raise S.Failure("%s: %s is %d (%s), want %s (%d); message: %s"
                        % (what or key, key, got, "/".join(names) or "?",
                           name, want, res.get(key + "_msg")))


scenario = S.Registry()


@scenario
def props_one(ctx):
    """One message with every property through pubrelay_publish(): the
    consumer gets the binary body and each property as set, and the
    message-id the reply named.

    The body holds a NUL, newlines and a PUB line; the message-id is set
    twice (the second replaces the first); headers come from
    pubrelay_props_set("header") and pubrelay_props_header(); the exchange
    is amq.direct, bound to the queue."""
    r = ctx.relay()
    q = H.unique_queue("lib-props")
    with H.Consumer(ctx.broker) as c:
        c.declare(q)
        c.ch.queue_bind(q, "amq.direct", routing_key=q)
        res = ctx.run("props", r.sock, q)
        check_eq(res.get("header"), "0", "pubrelay_props_header")
        rc(res, "publish", "PUBRELAY_ACCEPTED")
        check_eq(res.get("id"), "lib-mid-1", "the id of the OK")
        r.wait_drained(60)
        msgs = c.drain(q)
    check_eq(len(msgs), 1, "messages delivered")
    body, p = msgs[0]
    check_eq(body, b"bin\0ary\nPUB 3\n\nxyz\r\n", "body")
    want = {"content_type": "application/x-lib",
            "content_encoding": "identity", "delivery_mode": 2,
            "priority": 7, "correlation_id": "corr-lib",
            "reply_to": "reply.lib", "expiration": "86400000",
            "message_id": "lib-mid-1", "timestamp": 1700000000,
            "type": "lib.test", "app_id": "libclient",
            "headers": {"h1": "v1", "h2": "a=b c"}}
    for k, v in want.items():
        got = getattr(p, k)
        if isinstance(got, dict):
            got = dict((hk, hv.decode() if isinstance(hv, bytes) else hv)
                       for hk, hv in got.items())
        check_eq(got, v, "property %s" % k)


@scenario
def pipeline_10k(ctx):
    """10,000 messages pipelined with pubrelay_send()/pubrelay_recv() in a
    window of 256: every reply is OK, in order (row numbers rise), at most
    256 wait, one more send is refused with PUBRELAY_E_BUSY, and the
    consumer gets all 10,000 once each, in order, with the ids the replies
    named (first and last)."""
    r = ctx.relay()
    q = H.unique_queue("lib-pipe")
    n = 10000
    with H.Consumer(ctx.broker) as c:
        c.declare(q)
        res = ctx.run("pipeline", r.sock, q, n, 256)
        rc(res, "set_window", "PUBRELAY_OK")
        check_eq(res.get("ok"), str(n), "replies OK (%s)" % res)
        check_eq(res.get("inorder"), "1", "replies in request order")
        check_eq(res.get("maxpending"), "256", "most requests in flight")
        check_eq(res.get("pending"), "0", "pending at the end")
        rc(res, "busy", "PUBRELAY_E_BUSY", "a send beyond the window")
        r.wait_drained(120)
        msgs = c.drain(q)
    H.check_delivery(msgs, {0: n}, allow_dups=False, same_ids=True)
    check_eq(msgs[0][1].message_id, res["first"], "first message's id")
    check_eq(msgs[-1][1].message_id, res["last"], "last message's id")


@scenario
def threads(ctx):
    """Four threads of one process, each with its own handle, pipeline
    2,000 messages each at once: every one accepted, and the consumer gets
    each thread's messages once, in that thread's order (the library has
    no state the threads share)."""
    r = ctx.relay()
    q = H.unique_queue("lib-threads")
    nt, n = 4, 2000
    with H.Consumer(ctx.broker) as c:
        c.declare(q)
        res = ctx.run("threads", r.sock, q, nt, n)
        for i in range(nt):
            check_eq(res.get("thread%d" % i), "0", "thread %d's result (%s)"
                     % (i, res.get("thread%d_msg" % i)))
            check_eq(res.get("thread%d_ok" % i), str(n),
                     "thread %d's messages accepted" % i)
        r.wait_drained(120)
        msgs = c.drain(q)
    H.check_delivery(msgs, dict((i, n) for i in range(nt)),
                     allow_dups=False)


@scenario
def pipeline_big(ctx):
    """100 messages of 200 KiB pipelined (20 MB, more than the library
    keeps unsent, 1 MiB, and than the socket holds): the library sends
    while it reads replies, every reply is OK in order, and the consumer
    gets the 100 bodies whole, in order."""
    r = ctx.relay()
    q = H.unique_queue("lib-big")
    n, pad = 100, 200 * 1024
    with H.Consumer(ctx.broker) as c:
        c.declare(q)
        res = ctx.run("pipeline", r.sock, q, n, 256, pad)
        check_eq(res.get("ok"), str(n), "replies OK (%s)" % res)
        check_eq(res.get("inorder"), "1", "replies in request order")
        r.wait_drained(120)
        msgs = c.drain(q)
    H.check_delivery(msgs, {0: n}, allow_dups=False)
    check_eq(set(len(b) for b, _ in msgs), {9 + pad}, "body sizes")


@scenario
def receipts(ctx):
    """Receipts through the "confirm" property: CONFIRMED for a message the
    broker took, PARKED with the broker's 404 for a missing exchange;
    pubrelay_status() then says CONFIRMED and PARKED (with the reason) of
    them, UNKNOWN of an id never given, and pubrelay_wait() returns
    CONFIRMED with the daemon's dead count (as a raw WAIT gives it)."""
    r = ctx.relay()
    q = H.unique_queue("lib-receipt")
    with H.Consumer(ctx.broker) as c:
        c.declare(q)
        ok = ctx.run("confirm", r.sock, "", q, 30000)
        rc(ok, "publish", "PUBRELAY_CONFIRMED", "receipt to a queue")
        check(ok["id"], "the receipt names an id")
        bad = ctx.run("confirm", r.sock, "lib-no-such-exchange", "x", 30000)
        rc(bad, "publish", "PUBRELAY_PARKED", "receipt to a missing exchange")
        check("404" in bad["reason"] and "NOT_FOUND" in bad["reason"],
              "the reason names the broker's 404: %r" % bad["reason"])
        st = ctx.run("status", r.sock, ok["id"])
        rc(st, "status", "PUBRELAY_CONFIRMED", "STATUS of the confirmed")
        check_eq(st["id"], ok["id"], "STATUS repeats the id")
        st = ctx.run("status", r.sock, bad["id"])
        rc(st, "status", "PUBRELAY_PARKED", "STATUS of the parked")
        check("NOT_FOUND" in st["reason"], "STATUS's reason: %r"
              % st["reason"])
        st = ctx.run("status", r.sock, "0000000000000000-999999")
        rc(st, "status", "PUBRELAY_UNKNOWN", "STATUS of an id never given")
        w = ctx.run("wait", r.sock, 30000)
        rc(w, "wait", "PUBRELAY_CONFIRMED", "WAIT")
        # The count is the daemon's (dead letters up to the last message
        # accepted before the WAIT); a raw client's WAIT says the same.
        with r.client() as raw:
            line = raw.request("WAIT 30000\n")
        check_eq("OK " + w["dead"], line, "WAIT's dead count, against a "
                 "raw client's")
        msgs = c.drain(q)
    check_eq([b for b, _ in msgs], [b"receipt"], "delivered")


@scenario
def pending(ctx):
    """With no broker link, what is accepted stays pending: a receipt of
    300 ms is PUBRELAY_PENDING with its id, pubrelay_status() says QUEUED,
    and pubrelay_wait(300) returns PUBRELAY_PENDING."""
    r = ctx.relay(uri="amqp://guest:guest@127.0.0.1:%d" % H.free_port())
    res = ctx.run("confirm", r.sock, "", "lib-pending", 300)
    rc(res, "publish", "PUBRELAY_PENDING", "receipt without a broker")
    check(res["id"], "a pending receipt names its id")
    st = ctx.run("status", r.sock, res["id"])
    rc(st, "status", "PUBRELAY_QUEUED", "STATUS without a broker")
    w = ctx.run("wait", r.sock, 300)
    rc(w, "wait", "PUBRELAY_PENDING", "WAIT 300 without a broker")


@scenario
def idempotency(ctx):
    """The same idempotency-key twice: both accepted with the first one's
    message-id, and the consumer gets the first body only."""
    r = ctx.relay()
    q = H.unique_queue("lib-idem")
    with H.Consumer(ctx.broker) as c:
        c.declare(q)
        res = ctx.run("idem", r.sock, q, "lib-key-1")
        rc(res, "first", "PUBRELAY_ACCEPTED")
        rc(res, "second", "PUBRELAY_ACCEPTED")
        check(res["id1"], "an id")
        check_eq(res["id2"], res["id1"], "the repeat's id")
        r.wait_drained(60)
        msgs = c.drain(q)
    check_eq([b for b, _ in msgs], [b"idem-first"], "delivered")
    st = r.stats()
    check_eq(st.get("idempotency_hits"), 1, "the relay's idempotency_hits")


@scenario
def stats_ping(ctx):
    """pubrelay_stats() and pubrelay_stat() give the relay's own figures
    (the same accepted count and state STATS gives a raw client), an
    absent name is NULL; pubrelay_ping() answers twice on one handle."""
    r = ctx.relay()
    r.wait_stats(lambda s: s.get("state") == "connected", 30,
                 "the relay to connect")
    ctx.run("confirm", r.sock, "", H.unique_queue("lib-stats"), 30000)
    raw = r.stats()
    res = ctx.run("stats", r.sock, "state", "accepted", "no_such_stat")
    rc(res, "stats", "PUBRELAY_OK")
    check_eq(res["stat.state"], "connected", "state")
    check_eq(res["stat.accepted"], str(raw["accepted"]), "accepted")
    check_eq(res["stat.no_such_stat"], "(none)", "an absent name")
    check(int(res["text_len"]) > 100, "the whole text: %s bytes"
          % res["text_len"])
    res = ctx.run("ping", r.sock)
    rc(res, "ping1", "PUBRELAY_OK")
    rc(res, "ping2", "PUBRELAY_OK")


@scenario
def errors(ctx):
    """Refusals come back as their codes and the handle stays usable where
    the protocol keeps the connection: the library refuses bad arguments
    itself (PUBRELAY_E_INVAL, nothing sent); the daemon's BADREQ, then
    SKIPPED (the refusal latch) until pubrelay_reset(), TOOBIG; in a
    pipeline each reply in its place; a call while replies are owed is
    PUBRELAY_E_BUSY; a property set that would pass the 64 KiB block
    fails and leaves the set as it was.  Only the accepted messages reach
    the queue.

    The relay takes 1 KiB bodies at most (max_message_size)."""
    r = ctx.relay(overrides={"socket": {"max_message_size": "1K"}})
    q = H.unique_queue("lib-errors")
    with H.Consumer(ctx.broker) as c:
        c.declare(q)
        res = ctx.run("errors", r.sock, q)
        for key in ("set_unknown", "set_newline", "set_confirm0",
                    "status_empty", "window0", "set_header_twice",
                    "set_newline2"):
            rc(res, key, "PUBRELAY_E_INVAL")
        # Said as pubrelayd's encoder says it (pubrelay(1) prints these).
        check_eq(res.get("set_header_twice_msg"), 'header: "h" given twice',
                 "a header name given twice, refused by the library")
        check_eq(res.get("set_newline_msg"), "type: contains a line break",
                 "pubrelay_props_errmsg()")
        rc(res, "set_header_none", "PUBRELAY_OK", "headers removed")
        rc(res, "badreq", "PUBRELAY_E_BADREQ")
        check("priority" in res.get("badreq_msg", ""),
              "BADREQ's message names the property: %r"
              % res.get("badreq_msg"))
        rc(res, "skipped", "PUBRELAY_E_SKIPPED")
        rc(res, "ping", "PUBRELAY_OK", "PING after refusals")
        rc(res, "reset", "PUBRELAY_OK")
        rc(res, "after", "PUBRELAY_ACCEPTED", "publish after RESET")
        rc(res, "toobig", "PUBRELAY_E_TOOBIG")
        rc(res, "reset2", "PUBRELAY_OK")
        for key in ("send1", "send2", "send3"):
            rc(res, key, "PUBRELAY_OK")
        rc(res, "busy_ping", "PUBRELAY_E_BUSY", "PING with replies owed")
        rc(res, "recv1", "PUBRELAY_ACCEPTED")
        rc(res, "recv2", "PUBRELAY_E_BADREQ")
        rc(res, "recv3", "PUBRELAY_E_SKIPPED")
        rc(res, "recv_none", "PUBRELAY_E_INVAL", "recv with nothing owed")
        rc(res, "reset3", "PUBRELAY_OK")
        rc(res, "last", "PUBRELAY_ACCEPTED")
        # 8 headers of 8,000 bytes fit in the 64 KiB block, a 9th not.
        check_eq(res.get("headers_set"), "8", "headers set")
        rc(res, "headers_full", "PUBRELAY_E_INVAL", "a header past 64 KiB")
        rc(res, "headers_publish", "PUBRELAY_ACCEPTED",
           "publish with the properties the failed set left")
        r.wait_drained(60)
        msgs = c.drain(q)
    check_eq([b for b, _ in msgs], [b"after-reset", b"pipe-1", b"last",
                                    b"big-headers"], "delivered")
    check_eq(len(msgs[-1][1].headers), 8, "headers of the last message")


@scenario
def closed(ctx):
    """Errors that end the connection: no daemon at the path is
    PUBRELAY_E_CONNECT, with errno ENOENT (ENOTSOCK for a file that is no
    socket); a relay at max_clients answers ERR LIMIT, which the first call
    returns as PUBRELAY_E_LIMIT, and the next call PUBRELAY_E_CLOSED (the
    daemon closed it); with nothing asked, the caller's poll() of
    pubrelay_fd() and pubrelay_ready() see the LIMIT, pubrelay_recv()
    returns it, and then PUBRELAY_E_CLOSED."""
    p = subprocess.run([ctx.prog, "ping", "/nonexistent/pubrelay.sock"],
                       stdout=subprocess.PIPE, timeout=60)
    out = p.stdout.decode()
    check("open=%d" % C["PUBRELAY_E_CONNECT"] in out.splitlines(),
          "open of a missing socket: %r" % out)
    check("open_errno=%d" % errno.ENOENT in out.splitlines(),
          "errno says why: %r" % out)
    p = subprocess.run([ctx.prog, "ping", os.path.abspath(__file__)],
                       stdout=subprocess.PIPE, timeout=60)
    out = p.stdout.decode()
    check("open=%d" % C["PUBRELAY_E_CONNECT"] in out.splitlines() and
          "open_errno=%d" % errno.ENOTSOCK in out.splitlines(),
          "open of a file that is no socket: ENOTSOCK: %r" % out)
    r = ctx.relay(overrides={"socket": {"max_clients": "1"}})
    with r.client() as hold:
        check_eq(hold.ping(), "PONG", "the one client allowed")
        res = ctx.run("twice", r.sock)
        rc(res, "ping1", "PUBRELAY_E_LIMIT", "a client over max_clients")
        rc(res, "ping2", "PUBRELAY_E_CLOSED", "the call after LIMIT")
        check("LIMIT" in res.get("ping1_msg", "") and
              res.get("ping2_msg", "").endswith(res.get("ping1_msg", "?")),
              "the messages: %r, then %r (why it closed)"
              % (res.get("ping1_msg"), res.get("ping2_msg")))
        # Nothing asked: the caller's own poll() on pubrelay_fd() sees
        # the LIMIT, and pubrelay_recv() returns it.
        res = ctx.run("unasked", r.sock)
        check_eq(res.get("ready"), "1", "pubrelay_ready() with LIMIT sent")
        rc(res, "recv", "PUBRELAY_E_LIMIT", "the unasked ERR LIMIT")
        check_eq((res.get("fd"), res.get("ready_closed")), ("-1", "1"),
                 "closed: no fd, and ready (recv says why at once)")
        rc(res, "recv_closed", "PUBRELAY_E_CLOSED", "recv once closed")


@scenario
def dead_letters(ctx):
    """pubrelay_dead_list(), _retry() and _purge() on a message parked
    for a missing exchange: the page names it, a page after its id is
    empty, a max over 100000 is refused by the library, an unknown id is
    NOTFOUND, a retry replays the one, a purge of all (id 0) deletes what
    is parked, and the list is empty then."""
    r = ctx.relay()
    res = ctx.run("dead", r.sock, "lib-no-such-exchange")
    rc(res, "publish", "PUBRELAY_PARKED", "the message parked")
    rc(res, "list", "PUBRELAY_OK")
    check(int(res.get("list_len", "0")) > 0 and
          "lib-no-such-exchange" in res.get("list_first", ""),
          "the page names the dead letter: %r" % res.get("list_first"))
    rc(res, "list_after", "PUBRELAY_OK")
    check_eq(res.get("list_after_len"), "0", "the page after its id")
    rc(res, "list_badmax", "PUBRELAY_E_INVAL", "max over 100000")
    rc(res, "retry", "PUBRELAY_OK")
    check_eq(res.get("retry_n"), "1", "one replayed")
    rc(res, "retry_none", "PUBRELAY_E_NOTFOUND", "an id never parked")
    rc(res, "wait", "PUBRELAY_CONFIRMED", "WAIT after the replay")
    rc(res, "purge", "PUBRELAY_OK")
    check_eq(res.get("purge_n"), "1", "the replay parked again, purged")
    rc(res, "list_end", "PUBRELAY_OK")
    check_eq(res.get("list_end_len"), "0", "nothing parked at the end")


@scenario
def bad_reply(ctx):
    """Something on the socket that answers a PING with "PONG!": the call
    returns PUBRELAY_E_REPLY and pubrelay_reply_line() the line as it
    came, for the caller to show (pubrelay(1) does)."""
    d = H.mkdtemp("pubrelay-libfake-")
    path = os.path.join(d, "s.sock")
    ls = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    ls.bind(path)
    ls.listen(1)

    def serve():
        c, _ = ls.accept()
        with c:
            c.recv(100)
            c.sendall(b"PONG!\x01\n")
            c.recv(100)
    t = threading.Thread(target=serve, daemon=True)
    t.start()
    try:
        res = ctx.run("badreply", path)
    finally:
        ls.close()
    rc(res, "ping", "PUBRELAY_E_REPLY", "PONG!")
    check_eq((res.get("line_len"), res.get("line")), ("6", "PONG!\x01"),
             "pubrelay_reply_line()")


@scenario
def timeout(ctx):
    """A daemon that stops answering (SIGSTOP): a call on a handle opened
    with a 500 ms timeout returns PUBRELAY_E_TIMEOUT after about that long,
    and the next PUBRELAY_E_CLOSED (a late reply could not be matched)."""
    r = ctx.relay()
    os.kill(r.proc.pid, signal.SIGSTOP)
    try:
        t0 = time.monotonic()
        res = ctx.run("timeout", r.sock, 500)
        took = time.monotonic() - t0
    finally:
        os.kill(r.proc.pid, signal.SIGCONT)
    rc(res, "ping1", "PUBRELAY_E_TIMEOUT", "PING to a stopped daemon")
    rc(res, "ping2", "PUBRELAY_E_CLOSED", "the call after the timeout")
    check(0.4 < took < 10, "the timeout took %.1f s, want about 0.5" % took)
    r.wait_ready()


def man_examples():
    """The C code of libpubrelay(3)'s EXAMPLES, as the page shows it."""
    with open(os.path.join(SRCDIR, "man", "libpubrelay.3")) as f:
        text = f.read()
    sect = text.split(".Sh EXAMPLES", 1)[1].split("\n.Sh ", 1)[0]
    blocks = re.findall(r"\.Bd -literal[^\n]*\n(.*?)\n\.Ed", sect, re.S)
    return [b.replace("\\e", "\\") for b in blocks]


@scenario
def man_example(ctx):
    """The two examples of libpubrelay(3), compiled as the page shows them
    (each wrapped in a main() and given what it names), with -Wall -Wextra
    -Werror against pubrelay.h and the built library, and run against the
    relay (its socket from PUBRELAY_SOCKET).  Proves: the first publishes
    {"id": 42} to amq.topic, orders.created, persistent, with its header,
    and gets the broker's confirm; the pipelining loop sends 100 in order,
    each once."""
    ex = man_examples()
    check_eq(len(ex), 2, "examples in libpubrelay(3)")
    libdir = os.path.join(os.path.dirname(os.path.dirname(ctx.prog)),
                          ".libs")
    srcs = {
        "confirm": "#include <err.h>\n#include <stdio.h>\n"
        "#include <pubrelay.h>\n\nint\nmain(void)\n{\n" + ex[0] +
        "\nreturn rc == PUBRELAY_CONFIRMED ? 0 : 3;\n}\n",
        "pipeline": "#include <err.h>\n#include <stdio.h>\n#include <string.h>\n"
        "#include <pubrelay.h>\n\nstatic char bodies[100][16];\n"
        "static const char *body[100];\nstatic size_t len[100];\n\n"
        "int\nmain(int argc, char **argv)\n{\n"
        "pubrelay *h = pubrelay_open(NULL, 30000);\n"
        "pubrelay_props *p = pubrelay_props_new();\nsize_t i, n = 100;\n"
        "(void)argc;\npubrelay_props_set(p, \"routing-key\", argv[1]);\n"
        "for (i = 0; i < n; i++) {\n"
        "snprintf(bodies[i], sizeof(bodies[i]), \"m%zu\", i);\n"
        "body[i] = bodies[i];\nlen[i] = strlen(bodies[i]);\n}\n{\n" +
        ex[1] + "\n}\npubrelay_props_free(p);\npubrelay_close(h);\n"
        "return 0;\nfail:\nerrx(1, \"%s\", pubrelay_errmsg(h));\n}\n",
    }
    tmp = H.mkdtemp("pubrelay-manex-")
    bins = {}
    for name, src in srcs.items():
        c = os.path.join(tmp, name + ".c")
        with open(c, "w") as f:
            f.write(src)
        bins[name] = os.path.join(tmp, name)
        # The build's sanitizers too: an ASan library needs its runtime
        # first in the program.
        p = subprocess.run([os.environ.get("CC", "cc"), "-std=c99",
                            "-D_DEFAULT_SOURCE", "-Wall", "-Wextra",
                            "-Werror"] +
                           os.environ.get("PUBRELAY_SAN_FLAGS", "").split() +
                           ["-I", os.path.join(SRCDIR, "lib"),
                            "-o", bins[name], c, "-L", libdir, "-lpubrelay",
                            "-Wl,-rpath," + libdir],
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        check_eq(p.returncode, 0, "the %s example compiles: %s" % (
            name, p.stdout.decode("utf-8", "replace")))
    r = ctx.relay()
    env = dict(os.environ, PUBRELAY_SOCKET=r.sock)
    q, q2 = H.unique_queue("lib-manex"), H.unique_queue("lib-manex-pipe")
    with H.Consumer(ctx.broker) as c:
        c.declare(q)
        c.declare(q2)
        c.ch.queue_bind(q, "amq.topic", routing_key="orders.created")
        p = subprocess.run([bins["confirm"]], env=env, timeout=60,
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        check_eq(p.returncode, 0, "the first example: confirmed (stderr %r)"
                 % p.stderr)
        msgs = c.drain(q)
        check_eq(len(msgs), 1, "the confirmed message is in the queue")
        body, props = msgs[0]
        check_eq(body, b'{"id": 42}', "its body")
        check_eq((props.delivery_mode, props.headers),
                 (2, {"source": "billing"}), "persistent, its header")
        p = subprocess.run([bins["pipeline"], q2], env=env, timeout=60,
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        check_eq(p.returncode, 0, "the pipelining example (stderr %r)"
                 % p.stderr)
        r.wait_drained(60)
        got = [b for b, _ in c.drain(q2)]
    check_eq(got, [b"m%d" % i for i in range(100)], "100 in order, once")


def setup(names):
    path = prog()
    return {"broker": S.start_broker("program %s" % path), "prog": path}


def main(argv):
    return S.run("libclient.py", scenario, argv, setup, Ctx,
                 repair=lambda env, last: S.ensure_broker(env["broker"]),
                 teardown=lambda env: env["broker"].stop(),
                 needs=("broker", "pika"))


if __name__ == "__main__":
    sys.exit(main(sys.argv))
