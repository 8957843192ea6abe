#!/usr/bin/python3
"""integration.py: end-to-end tests of pubrelayd against a private RabbitMQ.

Prints TAP.  Run by `make check` (automake's TAP driver) or by hand:

    PUBRELAYD=./pubrelayd PUBRELAY=./pubrelay /usr/bin/python3 \
        tests/integration.py [SCENARIO ...]

`--list [-v]` prints the scenarios and what each proves (their
docstrings); tests/README.md has the environment variables.

Needs rabbitmq-server (Debian's 3.10; one node for the run, booted in about
7-10 s) and python3-pika.  The whole suite takes about 50 s on 2 cores
(boot included), 65 s with two suites running side by side; the aim is
under 6 minutes.  Deliveries are checked with harness.check_delivery.
"""

import json
import re
import os
import socket
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import harness as H  # noqa: E402
import scenarios as S  # noqa: E402
from harness import log  # noqa: E402
from scenarios import Failure, check, check_eq  # noqa: E402,F401


class Ctx:
    """What a scenario gets: the shared broker and a registry of the relays
    it started (their logs are shown when it fails)."""

    def __init__(self, broker, name):
        self.broker = broker
        self.name = name
        self.relays = []
        self.notes = []

    def relay(self, name=None, overrides=None, uri=None, start=True):
        r = H.Relay(self.broker, name or self.name, overrides=overrides,
                    uri=uri)
        self.relays.append(r)
        if start:
            r.start()
        return r

    def consumer(self):
        return H.Consumer(self.broker)

    def note(self, msg):
        self.notes.append(msg)
        log("%s: %s" % (self.name, msg))


scenario = S.Registry()


# ---------------------------------------------------------------------------
# Shared checks


def check_ids_stable(producer, deliveries, ids_by_seq):
    """Every delivery of seq s carries the message-id the client got in
    "OK <id>" for s (republished copies included)."""
    bad = []
    for seq, mid, _ in deliveries:
        want = ids_by_seq.get(seq)
        if want is not None and mid != want:
            bad.append("seq %d: message-id %r, OK said %r" % (seq, mid, want))
    check(not bad, "producer %d: %d deliveries with a message-id other than "
          "the OK reply's: %s" % (producer, len(bad), "; ".join(bad[:5])))


def term_within(ctx, relay, what, limit):
    """SIGTERM: exit 0 within limit seconds.  Returns the seconds taken."""
    t0 = time.monotonic()
    rc = relay.term(timeout=20)
    took = time.monotonic() - t0
    ctx.note("SIGTERM %s: exit %s after %.1fs" % (what, rc, took))
    check_eq(rc, 0, "exit code after SIGTERM %s" % what)
    check(took < limit, "SIGTERM %s took %.1fs (want < %g s)"
          % (what, took, limit))
    return took


def lines_for(producer, n, start=0):
    return [H.seq_line(producer, i) for i in range(start, n)]


# ---------------------------------------------------------------------------
# 1. stream_100k


def props_messages(queue):
    """(body, request properties, expected AMQP properties) triples."""
    binary = bytes(range(256)) + b"\n\nPUB 3\n\nabc\n\x00\r\n\x00end"
    full = [
        ("routing-key", queue),
        ("content-type", "application/x-test; charset=binary"),
        ("content-encoding", "identity"),
        ("header", "h1=v1"),
        ("header", "h2=value with spaces"),
        ("header", "h3=a=b"),
        ("delivery-mode", "2"),
        ("priority", "7"),
        ("correlation-id", "corr-0001"),
        ("reply-to", "reply.queue"),
        ("expiration", "86400000"),
        ("message-id", "mid-full-1"),
        ("timestamp", "1700000000"),
        ("type", "test.full"),
        ("app-id", "pubrelay-tests"),
        ("mandatory", "yes"),
    ]
    want_full = {
        "content_type": "application/x-test; charset=binary",
        "content_encoding": "identity",
        "headers": {"h1": "v1", "h2": "value with spaces", "h3": "a=b"},
        "delivery_mode": 2,
        "priority": 7,
        "correlation_id": "corr-0001",
        "reply_to": "reply.queue",
        "expiration": "86400000",
        "message_id": "mid-full-1",
        "timestamp": 1700000000,
        "type": "test.full",
        "app_id": "pubrelay-tests",
    }
    out = [(binary, full, want_full)]
    # The same with transient delivery, other values, names in capitals.
    second = [
        ("Routing-Key", queue),
        ("CONTENT-TYPE", "text/plain"),
        ("Content-Encoding", "gzip"),
        ("Header", "x-a=1"),
        ("header", "x-b="),
        ("header", "x-c=\u00e9t\u00e9"),
        ("Delivery-Mode", "1"),
        ("priority", "0"),
        ("correlation-id", "c" * 255),
        ("reply-to", "reply.queue.2"),
        ("expiration", "3600000"),
        ("message-id", "mid-full-2"),
        ("timestamp", "0"),
        ("type", "t"),
        ("app-id", "a"),
    ]
    want_second = {
        "content_type": "text/plain",
        "content_encoding": "gzip",
        "headers": {"x-a": "1", "x-b": "", "x-c": "\u00e9t\u00e9"},
        "delivery_mode": 1,
        "priority": 0,
        "correlation_id": "c" * 255,
        "reply_to": "reply.queue.2",
        "expiration": "3600000",
        "message_id": "mid-full-2",
        "timestamp": 0,
        "type": "t",
        "app_id": "a",
    }
    out.append((b"\r\n" * 100 + b"\x00" * 100, second, want_second))
    # An empty body, and a body through a named exchange.
    out.append((b"", [("routing-key", queue), ("message-id", "mid-empty")],
                {"message_id": "mid-empty", "delivery_mode": 2}))
    out.append((b"via amq.direct",
                [("exchange", "amq.direct"), ("routing-key", queue),
                 ("message-id", "mid-direct")],
                {"message_id": "mid-direct", "delivery_mode": 2}))
    # A body of exactly one newline, and one with a trailing "\r".
    out.append((b"\n", [("routing-key", queue), ("message-id", "mid-nl")],
                {"message_id": "mid-nl"}))
    out.append((b"cr\r", [("routing-key", queue), ("message-id", "mid-cr")],
                {"message_id": "mid-cr"}))
    return out


def norm_headers(h):
    if h is None:
        return None
    return {k: (v.decode("utf-8", "replace") if isinstance(v, bytes) else v)
            for k, v in h.items()}


def compare_props(props, want):
    diffs = []
    for field, value in want.items():
        got = getattr(props, field)
        if field == "headers":
            got = norm_headers(got)
        if got != value:
            diffs.append("%s: got %r, want %r" % (field, got, value))
    return diffs


STATS_KEYS = ("state", "outbox_messages", "backlog", "outbox_bytes", "in_flight",
              "accepted", "published", "confirmed", "nacked", "returned",
              "reconnects", "last_error")


@scenario
def stream_100k(ctx):
    """4 concurrent `pubrelay publish --lines --print-id` clients, 25,000 lines
    each, to a durable queue through the default exchange, plus messages over a
    raw connection with every property set (content-type and -encoding, three
    headers, delivery-mode, priority, correlation-id, reply-to, a long
    expiration, message-id, timestamp, type, app-id, mandatory), binary bodies
    with NULs and newlines, an empty body, and one through `amq.direct`.
    Proves: everything arrives exactly once, each client's messages in order,
    bodies and properties intact (headers as strings, capitalised property
    names accepted), the default is persistent, every message carries a
    message-id, the generated ones distinct and equal to the id in the client's
    OK reply; no nacks or returns; SIGTERM exits 0."""
    P, N = 4, 25000
    relay = ctx.relay()
    with ctx.consumer() as c:
        q = c.declare(H.unique_queue("stream"))
        c.ch.queue_bind(queue=q, exchange="amq.direct", routing_key=q)

    t0 = time.monotonic()
    prods = [H.LinesProducer(relay, q, lines_for(p, N),
                             extra_args=["--print-id"]).start()
             for p in range(P)]
    # Meanwhile, the messages with every property, over a raw connection.
    specials = props_messages(q)
    special_ids = []
    with relay.client() as cl:
        for body, req, _ in specials:
            reply = cl.pub(body, req)
            check(reply.startswith("OK "), "PUB with properties %r: %r"
                  % ([k for k, _ in req], reply))
            special_ids.append(reply[3:])
    for p, pr in enumerate(prods):
        pr.join(180)
        check_eq(pr.rc, 0, "producer %d exit code (%s)" % (p, pr.describe()))
    t_accept = time.monotonic() - t0
    ids = {}
    for p, pr in enumerate(prods):
        out = pr.stdout.decode().splitlines()
        check_eq(len(out), N, "producer %d: message-ids printed by --print-id"
                 % p)
        ids[p] = dict(enumerate(out))
    for want, (_, req, _) in zip(special_ids, specials):
        mid = dict((k.lower(), v) for k, v in req).get("message-id")
        check_eq(want, mid, "OK reply to a PUB with a message-id")

    st = relay.wait_drained(180)
    t_drain = time.monotonic() - t0
    ctx.note("%d messages accepted in %.1fs, all confirmed after %.1fs "
             "(%.0f msg/s)" % (P * N + len(specials), t_accept, t_drain,
                               (P * N + len(specials)) / t_drain))
    ctx.note("stats: %s" % H.fmt_stats(st))

    with ctx.consumer() as c:
        msgs = c.drain(q)
    check_eq(len(msgs), P * N + len(specials), "messages in the queue")
    per, _ = H.check_delivery(msgs, {p: N for p in range(P)},
                              allow_dups=False, foreign=len(specials),
                              same_ids=True, persistent=True, note=ctx.note)
    all_ids = []
    for p in range(P):
        check_ids_stable(p, per[p], ids[p])
        all_ids.extend(mid for _, mid, _ in per[p])
    check_eq(len(set(all_ids)), len(all_ids),
             "distinct generated message-ids")

    by_body = {}
    for body, props in H.split_by_producer(msgs)[1]:
        by_body.setdefault(body, []).append(props)
    for body, req, want in specials:
        got = by_body.get(body, [])
        check_eq(len(got), 1, "deliveries of the %d-byte body sent with "
                 "message-id %s" % (len(body), want.get("message_id")))
        diffs = compare_props(got[0], want)
        check(not diffs, "message %s: properties differ: %s"
              % (want.get("message_id"), "; ".join(diffs)))
    missing = [k for k in STATS_KEYS if k not in st]
    check(not missing, "STATS lacks %s" % ", ".join(missing))
    check_eq(st.get("nacked"), 0, "stats nacked")
    check_eq(st.get("returned"), 0, "stats returned")
    check(st.get("confirmed", 0) >= P * N + len(specials),
          "stats confirmed %s < %d" % (st.get("confirmed"),
                                       P * N + len(specials)))
    rc = relay.term()
    check_eq(rc, 0, "pubrelayd exit code after SIGTERM")


# ---------------------------------------------------------------------------
# 2. broker_restart / broker_kill


def broker_fault(ctx, fault):
    P, N = 2, 20000
    relay = ctx.relay()
    with ctx.consumer() as c:
        q = c.declare(H.unique_queue(ctx.name))
    prods = [H.LinesProducer(relay, q, lines_for(p, N),
                             pace=(500, 0.05)).start() for p in range(P)]
    relay.wait_stats(lambda s: s.get("confirmed", 0) >= 5000, 60,
                     "5000 messages confirmed before the fault")
    st0 = relay.stats()
    ctx.note("fault at: %s" % H.fmt_stats(st0))
    # The fault must come in the middle of the stream, not after the relay
    # delivered it all (a slow relay may have accepted it all by now).
    check(st0.get("backlog", 0) > 0, "nothing left to publish at the "
          "fault: %s" % H.fmt_stats(st0))
    fault(relay)
    for p, pr in enumerate(prods):
        pr.join(120)
        check_eq(pr.rc, 0, "producer %d exit code while the broker was "
                 "down (%s)" % (p, pr.describe()))
    st = relay.wait_stats(lambda s: s.get("reconnects", 0) >= 1, 60,
                          "stats reconnects >= 1")
    st = relay.wait_drained(120)
    ctx.note("after: %s" % H.fmt_stats(st))
    check(st.get("reconnects", 0) >= 1, "reconnects = %s"
          % st.get("reconnects"))
    with ctx.consumer() as c:
        msgs = c.drain(q)
    H.check_delivery(msgs, {p: N for p in range(P)}, same_ids=True,
                     persistent=True, note=ctx.note)
    check_eq(relay.term(), 0, "pubrelayd exit code after SIGTERM")


def wait_link_down(ctx, relay):
    st = relay.wait_stats(lambda s: s.get("state") != "connected", 30,
                          "pubrelayd to notice the broker is gone "
                          "(state != connected)")
    ctx.note("relay noticed: state=%s last_error=%s"
             % (st.get("state"), st.get("last_error")))


@scenario
def broker_restart(ctx):
    """stop_app, then start_app, in the middle of a stream.

    2 paced producers of 20,000 lines; after 5,000 confirms the broker's app is
    stopped (`rabbitmqctl stop_app`), the relay must notice (`state` leaves
    `connected`), then it is started again. Proves: producers are not disturbed
    by the outage, everything arrives, in order with duplicates only of the
    unconfirmed suffix, a republished message keeps its message-id, and
    `reconnects >= 1`."""
    def fault(relay):
        ctx.broker.stop_app()
        wait_link_down(ctx, relay)
        ctx.broker.start_app()
    broker_fault(ctx, fault)


@scenario
def broker_kill(ctx):
    """SIGKILL of the broker's Erlang VM, then a fresh node on the same data,
    in the middle of a stream.

    As `broker_restart`, but with `kill -9` of the broker's Erlang VM and a new
    node on the same data dir and ports (confirmed persistent messages must
    survive the crash; the relay republishes the rest)."""
    def fault(relay):
        ctx.broker.kill()
        wait_link_down(ctx, relay)
        ctx.note("broker back after %.1fs" % ctx.broker.restart())
    broker_fault(ctx, fault)


@scenario
def broker_close_connections(ctx):
    """rabbitmqctl close_all_connections in the middle of a stream: the
    broker keeps what it received, so the republished suffix shows up as
    duplicates."""
    def fault(relay):
        ctx.broker.close_all_connections()
        # The relay reconnects at once: look for that, not for the gap.
        relay.wait_stats(lambda s: s.get("reconnects", 0) >= 1, 30,
                         "pubrelayd to reconnect (reconnects >= 1)")
    broker_fault(ctx, fault)


# ---------------------------------------------------------------------------
# 3. relay_kill


@scenario
def relay_kill(ctx):
    """A raw pipelined client streams 60,000 PUBs; after 10,000 OKs `pubrelayd`
    is SIGKILLed; it is restarted on the same outbox and the client resends
    everything it has no OK for. Proves: every OK'd message arrives (OK means
    durable), in order, duplicates only of a suffix, and its message-id is the
    one in its OK reply."""
    relay_kill_run(ctx, ctx.relay())


@scenario
def relay_kill_sync_normal(ctx):
    """The same with [outbox] sync = normal (survives a process crash)."""
    relay_kill_run(ctx, ctx.relay(overrides={"outbox": {"sync": "normal"}}))


def relay_kill_run(ctx, relay):
    N = 60000
    with ctx.consumer() as c:
        q = c.declare(H.unique_queue("relaykill"))
    reqs = [H.encode_pub(H.seq_line(1, i), [("routing-key", q)])
            for i in range(N)]
    stream = H.PipelinedStream(relay.sock, reqs, chunk=100,
                               pause=0.005).start()
    H.wait_until(lambda: stream.ok_count() >= 10000, 60,
                 "10000 OK replies before the kill", interval=0.005)
    st = relay.stats()
    relay.kill()
    stream.join(30)
    k = stream.ok_count()
    ctx.note("SIGKILL after %d OK replies (%d replies in all); stats just "
             "before: %s" % (k, stream.reply_count(), H.fmt_stats(st)))
    check(k < N, "the stream ended before the kill: the test proves nothing")
    bad = [r for r in stream.replies if not r.startswith("OK ")]
    check(not bad, "replies other than OK before the kill: %r" % bad[:3])
    ok_ids = dict(enumerate(stream.ids[:k]))

    relay.restart()
    ctx.note("after restart: %s" % H.fmt_stats(relay.stats()))
    # A well-behaved client resends what it has no OK for.
    stream2 = H.PipelinedStream(relay.sock, reqs[k:]).start()
    check(stream2.join(120), "the resend of %d messages did not finish"
          % (N - k))
    check_eq(stream2.ok_count(), N - k, "OK replies to the resend")
    st = relay.wait_drained(120)
    ctx.note("drained: %s" % H.fmt_stats(st))
    with ctx.consumer() as c:
        msgs = c.drain(q)
    per, _ = H.check_delivery(msgs, {1: N}, note=ctx.note)
    check_ids_stable(1, per[1], ok_ids)
    check_eq(relay.term(), 0, "pubrelayd exit code after SIGTERM")


# ---------------------------------------------------------------------------
# 3b. idempotency keys


def idem_pub(c, seq, key, q, mid=None, producer=1):
    props = [("routing-key", q), ("idempotency-key", key)]
    if mid is not None:
        props.append(("message-id", mid))
    return c.pub(H.seq_line(producer, seq), props)


@scenario
def idem_keys(ctx):
    """Messages with an idempotency-key property: a key sent again gets the
    first message's "OK <id>" and stores nothing, within one group commit,
    while the first waits in the outbox, after it was confirmed and deleted,
    and after a restart; other keys are other messages; a client-given
    message-id is what a repeat names.  `pubrelay publish --idempotency-key`
    and its --lines form ("KEY:<line>") rerun with more input send only the
    new lines.  Proves: the queue holds each keyed message exactly once, the
    key never reaches the broker, STATS counts keys and hits."""
    relay = ctx.relay()
    with ctx.consumer() as c:
        q = c.declare(H.unique_queue("idem"))
    hits = 0
    with relay.client() as c:
        first = idem_pub(c, 0, "k0", q)
        check(first.startswith("OK "), "first keyed PUB: %r" % first)
        check_eq(idem_pub(c, 0, "k0", q), first, "the same key again")
        hits += 1
        other = idem_pub(c, 1, "k1", q)
        check(other.startswith("OK ") and other != first,
              "another key, another message: %r vs %r" % (other, first))
        # A client-given message-id is the one a repeat names.
        mine = idem_pub(c, 2, "k2", q, mid="mine-2")
        check_eq(mine, "OK mine-2", "keyed PUB with a message-id")
        check_eq(idem_pub(c, 2, "k2", q, mid="other"), "OK mine-2",
                 "a repeat with another message-id")
        hits += 1
        # Three in one send: one group commit holds the key and its repeat.
        c.send(b"".join(H.encode_pub(H.seq_line(1, 3),
                                     [("routing-key", q),
                                      ("idempotency-key", "k3")])
                        for _ in range(3)))
        r = [c.read_line() for _ in range(3)]
        check(r[0].startswith("OK ") and r.count(r[0]) == 3,
              "a key repeated within one commit: %r" % r)
        hits += 2
        # Keys compare byte for byte.
        up = idem_pub(c, 4, "K0", q)
        check(up.startswith("OK ") and up != first, "K0 is not k0: %r" % up)
        check_eq(c.pub(H.seq_line(1, 9), [("routing-key", q),
                                           ("idempotency-key", "")]),
                 "ERR BADREQ idempotency-key: empty", "an empty key")
    relay.wait_drained(60)
    with relay.client() as c:
        check_eq(idem_pub(c, 0, "k0", q), first,
                 "k0 after its message was confirmed and deleted")
        hits += 1
    st = relay.stats()
    check_eq(st.get("idempotency_keys"), 5, "STATS idempotency_keys")
    check_eq(st.get("idempotency_hits"), hits, "STATS idempotency_hits")
    check_eq(st.get("accepted"), 5, "STATS accepted (repeats not counted)")

    # The client: one message, and --lines with a prefix, then a rerun.
    args = ("publish", "-k", q, "--print-id")
    rc, out, err = relay.cmd(*args, "--idempotency-key", "k1",
                             H.seq_line(1, 1))
    check_eq((rc, out.strip()), (0, other[3:]),
             "pubrelay publish --idempotency-key k1 (exit, id; %s)" % err)
    hits += 1
    lines = "".join(line + "\n" for line in lines_for(2, 3))
    rc, out1, err = relay.cmd(*args, "--lines", "--idempotency-key", "job",
                              data=lines.encode())
    check_eq(rc, 0, "publish --lines --idempotency-key job: %s" % err)
    lines = "".join(line + "\n" for line in lines_for(2, 5))
    rc, out2, err = relay.cmd(*args, "--lines", "--idempotency-key", "job",
                              data=lines.encode())
    check_eq(rc, 0, "the rerun with two more lines: %s" % err)
    ids1, ids2 = out1.split(), out2.split()
    check_eq(ids2[:3], ids1, "the rerun's first three ids")
    check(len(set(ids2)) == 5, "five distinct ids: %r" % ids2)
    hits += 3
    with relay.client() as c:
        check_eq(c.pub(H.seq_line(2, 1), [("routing-key", q),
                                          ("idempotency-key", "job:2")]),
                 "OK " + ids2[1], "line 2's key is job:2")
        hits += 1

    # A restart: the keys are in the outbox file.
    check_eq(relay.term(), 0, "pubrelayd exit code after SIGTERM")
    relay.restart()
    with relay.client() as c:
        check_eq(idem_pub(c, 0, "k0", q), first, "k0 after a restart")
        check_eq(idem_pub(c, 2, "k2", q), "OK mine-2", "k2 after a restart")
        check(idem_pub(c, 5, "k5", q) not in (first, other),
              "a new key after a restart")
    st = relay.wait_drained(60)
    check_eq(st.get("idempotency_keys"), 11, "keys after the restart")
    check_eq(st.get("idempotency_hits"), 2, "hits since the restart")
    with ctx.consumer() as c:
        msgs = c.drain(q)
    H.check_delivery(msgs, {1: 6, 2: 5}, allow_dups=False, same_ids=True,
                     note=ctx.note)
    for body, props in msgs:
        hdrs = props.headers or {}
        check(not any("idempotency" in k.lower() for k in hdrs),
              "the key reached the broker as a header: %r" % hdrs)
    check_eq(relay.term(), 0, "pubrelayd exit code after SIGTERM")


@scenario
def idem_waiting(ctx):
    """3,000 keyed PUBs, pipelined, to a relay whose broker is unreachable,
    so every key is still only in its row (the key table gets it when the
    row leaves the outbox); `pubrelayd` is SIGKILLed and restarted, still
    without a broker, and the client sends all 3,000 again; then the relay
    is pointed at the broker, drains, and gets them all a third time.
    Proves: a key waiting with its row is known after a crash (its
    fingerprint comes back from the rows), and once the row is confirmed
    and deleted (its key in the table); every repeat names the first OK's
    id; the queue holds each message once; STATS idempotency_keys counts
    each key once throughout."""
    N = 3000
    relay = ctx.relay(uri="amqp://guest:guest@127.0.0.1:%d" % H.free_port())
    with ctx.consumer() as c:
        q = c.declare(H.unique_queue("idemwait"))

    def send_all(what):
        with relay.client() as c:
            c.send(b"".join(H.encode_pub(H.seq_line(1, i),
                                         [("routing-key", q),
                                          ("idempotency-key", "w%d" % i)])
                            for i in range(N)))
            r = [c.read_line() for _ in range(N)]
        check(all(x.startswith("OK ") for x in r),
              "%s: not all OK: %r" % (what, [x for x in r
                                              if not x.startswith("OK ")][:3]))
        return r

    first = send_all("first send")
    check_eq(len(set(first)), N, "distinct ids")
    check_eq(relay.stats().get("idempotency_keys"), N, "keys counted")
    relay.kill()
    relay.restart()
    check_eq(relay.stats().get("idempotency_keys"), N,
             "keys counted after SIGKILL, from their rows")
    check_eq(send_all("after SIGKILL"), first, "the ids of the first OKs")
    st = relay.stats()
    check_eq((st.get("accepted"), st.get("idempotency_hits")), (0, N),
             "nothing stored again (accepted, hits)")
    check_eq(relay.term(), 0, "pubrelayd exit code after SIGTERM")
    relay.sections["broker"]["uri"] = ctx.broker.uri()
    H.write_ini(relay.ini, relay.sections)
    relay.restart()
    st = relay.wait_drained(60)
    check_eq(st.get("idempotency_keys"), N, "keys once delivered")
    check_eq(send_all("after delivery"), first, "the ids again")
    check_eq(relay.stats().get("outbox_messages"), 0, "nothing stored")
    with ctx.consumer() as c:
        msgs = c.drain(q)
    H.check_delivery(msgs, {1: N}, allow_dups=False, same_ids=True,
                     note=ctx.note)
    check_eq(relay.term(), 0, "pubrelayd exit code after SIGTERM")


@scenario
def idem_kill(ctx):
    """Four raw pipelined clients stream 15,000 keyed PUBs each ("p<n>-<seq>"
    keys); after 10,000 OKs in all `pubrelayd` is SIGKILLed, restarted on the
    same outbox, and each client resends, with the same keys, everything it
    had no OK for, and its last 100 OK'd messages too (a client that lost
    track of its last replies).  Proves: the resent ones already stored get
    the ids of their first OKs, and the queue holds every message at least
    once and never under two message-ids (copies only from republishing,
    under the same id)."""
    N, P, AGAIN = 15000, 4, 100
    relay = ctx.relay()
    with ctx.consumer() as c:
        q = c.declare(H.unique_queue("idemkill"))
    reqs = {p: [H.encode_pub(H.seq_line(p, i),
                             [("routing-key", q),
                              ("idempotency-key", "p%d-%d" % (p, i))])
                for i in range(N)] for p in range(1, P + 1)}
    streams = {p: H.PipelinedStream(relay.sock, reqs[p], chunk=100,
                                    pause=0.005).start()
               for p in reqs}
    H.wait_until(lambda: sum(s.ok_count() for s in streams.values())
                 >= 10000, 60, "10000 OK replies before the kill",
                 interval=0.005)
    relay.kill()
    oks, ok_ids = {}, {}
    for p, s in streams.items():
        s.join(30)
        oks[p] = s.ok_count()
        ok_ids[p] = dict(enumerate(s.ids[:oks[p]]))
        bad = [r for r in s.replies if not r.startswith("OK ")]
        check(not bad, "client %d: replies other than OK before the kill: "
              "%r" % (p, bad[:3]))
    ctx.note("SIGKILL after %r OK replies" % oks)
    check(all(k < N for k in oks.values()),
          "a stream ended before the kill: the test proves less")

    relay.restart()
    starts = {p: max(0, oks[p] - AGAIN) for p in reqs}
    again = {p: H.PipelinedStream(relay.sock, reqs[p][starts[p]:]).start()
             for p in reqs}
    for p, s in again.items():
        check(s.join(120), "client %d: the resend did not finish" % p)
        check_eq(s.ok_count(), N - starts[p], "client %d: OK replies to "
                 "the resend" % p)
        for i in range(starts[p], oks[p]):
            check_eq(s.ids[i - starts[p]], ok_ids[p][i],
                     "client %d seq %d: id of the resent OK'd message"
                     % (p, i))
        ok_ids[p].update((starts[p] + j, mid) for j, mid in
                         enumerate(s.ids))
    st = relay.wait_drained(120)
    ctx.note("drained: %s" % H.fmt_stats(st))
    want_hits = sum(oks[p] - starts[p] for p in reqs)
    check(st.get("idempotency_hits", 0) >= want_hits,
          "idempotency_hits %s, want at least %d (the resent OK'd ones)"
          % (st.get("idempotency_hits"), want_hits))
    with ctx.consumer() as c:
        msgs = c.drain(q)
    per, _ = H.check_delivery(msgs, {p: N for p in reqs}, same_ids=True,
                              note=ctx.note)
    for p in reqs:
        check_ids_stable(p, per[p], ok_ids[p])
    check_eq(relay.term(), 0, "pubrelayd exit code after SIGTERM")


# ---------------------------------------------------------------------------
# 4. broker_down_from_start


@scenario
def broker_down_from_start(ctx):
    """The broker's app is stopped before the relay starts; 5,000 lines are
    accepted quickly (under 15 s) while STATS shows `outbox_messages == 5000`,
    `confirmed == 0` and a state other than `connected`; after `start_app` the
    outbox drains and all 5,000 arrive in order, exactly once."""
    N = 5000
    b = ctx.broker
    with ctx.consumer() as c:
        q = c.declare(H.unique_queue("down"))
    b.stop_app()
    try:
        relay = ctx.relay()
        t0 = time.monotonic()
        pr = H.LinesProducer(relay, q, lines_for(1, N)).start()
        pr.join(60)
        took = time.monotonic() - t0
        check_eq(pr.rc, 0, "producer exit code with the broker down (%s)"
                 % pr.describe())
        ctx.note("%d messages accepted in %.2fs with the broker down"
                 % (N, took))
        check(took < 15, "accepting %d messages took %.1fs with the broker "
              "down" % (N, took))
        st = relay.stats()
        ctx.note("stats while down: %s" % H.fmt_stats(st))
        check_eq(st.get("outbox_messages"), N, "stats outbox_messages")
        check_eq(st.get("backlog"), N, "stats backlog")
        check(st.get("state") != "connected",
              "stats state is %r with the broker down" % st.get("state"))
        check_eq(st.get("confirmed", 0), 0, "stats confirmed")
    finally:
        b.start_app()
    st = relay.wait_drained(60)
    ctx.note("drained: %s" % H.fmt_stats(st))
    with ctx.consumer() as c:
        msgs = c.drain(q)
    H.check_delivery(msgs, {1: N}, allow_dups=False, note=ctx.note)
    check_eq(relay.term(), 0, "pubrelayd exit code after SIGTERM")


@scenario
def down_logged_once(ctx):
    """Two broker uris, neither listening: the relay alternates between them
    every ~100 ms, and each uri's failure is logged once at warning level
    (then at debug, "(again)"), not once per attempt, naming the cause
    (Connection refused); when one comes up the relay connects and says
    after how many attempts.

    With `reconnect_min = 50ms`: after ten attempts that failed again, exactly
    one warning per `uri` is in the log; the cause is also in `last_error`."""
    b = ctx.broker
    p1, p2 = H.free_port(), H.free_port()
    relay = ctx.relay(uri=[b.uri(port=p1), b.uri(port=p2)], overrides={
        "broker": {"reconnect_min": "50ms", "reconnect_max": "100ms"},
        "log": {"level": "debug"}})
    again = re.compile(r"debug: broker \S+: .* \(again\)$", re.M)
    H.wait_until(lambda: len(again.findall(relay.log_text())) >= 10, 30,
                 "ten repeated connect failures")
    warned = [ln for ln in relay.log_text().splitlines()
              if "warning: broker " in ln]
    ctx.note("%d attempts repeated, warnings: %s"
             % (len(again.findall(relay.log_text())), warned))
    check_eq(len(warned), 2, "warnings for two uris that stay down")
    check(any(":%d" % p1 in ln for ln in warned) and
          any(":%d" % p2 in ln for ln in warned),
          "one warning per uri: %s" % warned)
    # The cause, not rabbitmq-c 0.11's "a socket error occurred".
    check(all(ln.endswith(": Connection refused") for ln in warned),
          "the warnings do not say the connection was refused: %s" % warned)
    check("Connection refused" in relay.stats().get("last_error", ""),
          "stats last_error: %r" % relay.stats().get("last_error"))
    check_eq(relay.term(), 0, "pubrelayd exit code after SIGTERM")


FLOOD = """import socket, sys, time
end = time.monotonic() + float(sys.argv[2])
n = 0
while time.monotonic() < end:
    s = socket.socket(socket.AF_UNIX)
    try:
        s.connect(sys.argv[1])
        n += 1
    except OSError:
        pass
    s.close()
print(n)
"""


@scenario
def accept_flood(ctx):
    """Four processes connect and close as fast as they can for 4 s (none
    holds more than one connection) while a client publishes, a new
    connection a message, retrying a connect the full listen backlog
    refuses, and `pubrelay publish` runs (it retries such a connect
    itself): every message gets OK, none LIMIT (max_clients = 256), every
    pubrelay exits 0, and no connection was refused for max_clients
    (clients_refused 0).
    Accepting until EAGAIN filled max_clients with sessions whose peers had
    already gone, and refused everyone else.

    The old client exited 75 ("daemon busy") on such a refused connect; the old
    listener was the one that accepted until EAGAIN."""
    import subprocess
    relay = ctx.relay(overrides={"socket": {"max_clients": "256"}})
    rk = [("routing-key", "nowhere")]
    procs = [subprocess.Popen([sys.executable, "-c", FLOOD, relay.sock, "4"],
                              stdout=subprocess.PIPE) for _ in range(4)]
    replies, busy, cli = [], 0, []
    try:
        while any(p.poll() is None for p in procs) or not replies:
            deadline = time.monotonic() + 10
            while True:
                try:
                    c = H.RawClient(relay.sock, timeout=10)
                    break
                except BlockingIOError:     # the backlog is full: retry
                    busy += 1
                    check(time.monotonic() < deadline, "no connection in "
                          "10 s")
                    time.sleep(0.005)
            with c:
                replies.append(c.pub("m%d" % len(replies), rk))
            # pubrelay retries a connect the full backlog refuses itself.
            rc, out, err = relay.cmd("publish", "-k", "nowhere", "c")
            cli.append((rc, err.strip()))
            time.sleep(0.05)
    finally:
        for p in procs:
            p.wait(30)
    floods = [int(p.stdout.read() or 0) for p in procs]
    ctx.note("flood connections %s; %d publishes, %d connects retried"
             % (floods, len(replies), busy))
    check(sum(floods) > 2000, "the flood made %d connections, too few to "
          "prove anything" % sum(floods))
    bad = [r for r in replies if not r.startswith("OK ")]
    check(not bad, "%d of %d publishes not OK during the flood: %r"
          % (len(bad), len(replies), bad[:3]))
    bad = [c for c in cli if c[0] != 0]
    check(not bad, "%d of %d `pubrelay publish` failed during the flood: %r"
          % (len(bad), len(cli), bad[:3]))
    check_eq(relay.stats().get("clients_refused"), 0, "stats "
             "clients_refused after a flood of connect-and-close clients")
    check_eq(relay.term(), 0, "pubrelayd exit code after SIGTERM")


@scenario
def out_of_fds(ctx):
    """pubrelayd out of descriptors (RLIMIT_NOFILE of the running daemon
    lowered to leave it two free descriptors): accept pauses and tries again every
    second, logged once as a warning however long it lasts (the rest at
    debug); a client connected before goes on; once descriptors are free
    it accepts again and says so.

    The running daemon's `RLIMIT_NOFILE` lowered to what it uses + 2
    (`prlimit`, needs root), six clients connect: accept pauses and retries
    each second, one warning for four pauses (the rest at debug), a client
    connected before still answers; with descriptors back it logs that it
    accepts again and a new client gets PONG."""
    import resource
    check(os.geteuid() == 0, "out_of_fds needs root to set another "
          "process's RLIMIT_NOFILE")
    relay = ctx.relay(overrides={"log": {"level": "debug"}})
    a = relay.client()
    check_eq(a.ping(), "PONG", "client A")
    pid = relay.proc.pid
    old = resource.prlimit(pid, resource.RLIMIT_NOFILE)
    # The limit caps descriptor numbers, and a new one takes the lowest
    # free number: below the second free number + 1 exactly two are free.
    # (Counting the open ones is wrong under valgrind, whose own
    # descriptors sit near the top of the range.)
    used = set(int(x) for x in os.listdir("/proc/%d/fd" % pid))
    free = [n for n in range(len(used) + 3) if n not in used][:2]
    held = []
    pausing = re.compile(r"^pubrelayd: (\w+): accept: pausing for 1000 ms: "
                         r"Too many open files$", re.M)
    try:
        resource.prlimit(pid, resource.RLIMIT_NOFILE, (free[1] + 1, old[1]))
        for _ in range(6):
            held.append(relay.client())
        H.wait_until(lambda: len(pausing.findall(relay.log_text())) >= 4,
                     20, "four pauses of accept")
        levels = pausing.findall(relay.log_text())
        ctx.note("accept paused %d times: %s" % (len(levels), levels))
        check_eq(levels.count("warning"), 1, "warnings for one lack of "
                 "descriptors")
        check_eq(a.ping(), "PONG", "client A while accept is paused")
    finally:
        for c in held:
            c.close()
        resource.prlimit(pid, resource.RLIMIT_NOFILE, old)
    H.wait_until(lambda: "accept: accepting clients again" in
                 relay.log_text(), 10, "the notice that accept works again")
    with relay.client() as c:
        check_eq(c.ping(), "PONG", "a new client after the pause")
    a.close()
    check_eq(relay.term(), 0, "pubrelayd exit code after SIGTERM")


# ---------------------------------------------------------------------------
# 4b. outbox_full: max_bytes reached gives a retryable error, never a drop


@scenario
def outbox_full(ctx):
    """`max_bytes = 20K` with the broker down: `pubrelay publish --lines` exits
    75 naming FULL and how many (a prefix) were accepted; STATS backlog equals
    that count; a raw PUB gets `ERR FULL` and the connection still answers
    PING; a message larger than the whole outbox gets `ERR TOOBIG` (not FULL:
    retrying cannot help; `pubrelay` exits 65). Once the broker is back, a
    client that resends from the first refused line gets all 5,000 in, in
    order, exactly once (the relay recovers by itself)."""
    import re
    b = ctx.broker
    with ctx.consumer() as c:
        q = c.declare(H.unique_queue("full"))
    b.stop_app()
    try:
        # Each line is "pNNN-SSSSSSSS" (13 bytes) plus its property block.
        relay = ctx.relay(overrides={"outbox": {"max_bytes": "20K"}})
        lines = lines_for(1, 5000)
        pr = H.LinesProducer(relay, q, lines).start()
        pr.join(60)
        err = pr.stderr.decode(errors="replace")
        ctx.note("producer: rc=%s stderr=%r" % (pr.rc, err.strip()))
        check_eq(pr.rc, 75, "client exit code when the outbox is full")
        m = re.search(r"message (\d+) refused: FULL .*; (\d+) (of 5000 "
                      r"messages )?accepted", err)
        check(m is not None, "client names FULL and the accepted count: %r"
              % err)
        accepted = int(m.group(2))
        check_eq(int(m.group(1)), accepted + 1, "the refused message follows "
                 "the accepted prefix")
        check(0 < accepted < 5000, "some but not all accepted (%d)" % accepted)
        st = relay.stats()
        check_eq(st.get("backlog"), accepted, "stats backlog = accepted")
        check(st.get("outbox_bytes") <= 20 * 1024, "outbox_bytes %s over "
              "max_bytes" % st.get("outbox_bytes"))
        # The FULL counted once; the SKIPPED behind it in the pipe not.
        check_eq(st.get("refused"), 1, "stats refused after one FULL")
        # Still full: the next message is refused too, the connection kept.
        with H.RawClient(relay.sock) as rc:
            rep = rc.pub(b"p001-99999999", [("routing-key", q)])
            check(rep.startswith("ERR FULL "), "PUB while full: %r" % rep)
            rep = rc.pub(b"p001-99999999", [("routing-key", q)])
            check(rep.startswith("ERR SKIPPED "), "PUB after FULL: %r" % rep)
            check_eq(rc.ping(), "PONG", "connection kept after FULL")
        check_eq(relay.stats().get("refused"), 2, "stats refused after a "
                 "second FULL and a SKIPPED")
        # Bigger than the whole outbox: no use retrying, so not FULL.
        with H.RawClient(relay.sock) as rc:
            rep = rc.pub(b"x" * 21000, [("routing-key", q)])
            check(rep.startswith("ERR TOOBIG ") and "max_bytes" in rep,
                  "PUB larger than max_bytes: %r" % rep)
            check_eq(rc.request("RESET\n"), "OK", "RESET after TOOBIG")
            check_eq(rc.ping(), "PONG", "connection kept after TOOBIG")
        rc_, out, err = relay.cmd("publish", "-k", q, data=b"x" * 21000)
        check_eq(rc_, 65, "exit code of `pubrelay publish` of a message "
                 "larger than max_bytes (%s)" % err.strip())
    finally:
        b.start_app()
    # Room again as the broker drains it: the relay recovers by itself, and
    # a client that resends from the first refused message (exit 75) gets
    # everything in, in order.
    done, attempts = accepted, 1
    deadline = time.monotonic() + 120
    while done < len(lines):
        check(time.monotonic() < deadline, "resending took over 120s "
              "(%d of %d in)" % (done, len(lines)))
        relay.wait_stats(lambda st: st.get("backlog", 1) < 100, 60,
                         "the outbox to drain")
        pr = H.LinesProducer(relay, q, lines[done:]).start()
        pr.join(60)
        attempts += 1
        if pr.rc == 0:
            done = len(lines)
            break
        err = pr.stderr.decode(errors="replace")
        check_eq(pr.rc, 75, "resumed producer: only FULL is expected (%s)"
                 % err.strip())
        m = re.search(r"; (\d+) (of \d+ messages )?accepted", err)
        check(m is not None, "accepted count in %r" % err)
        done += int(m.group(1))
    ctx.note("all %d in after %d attempts" % (len(lines), attempts))
    relay.wait_drained(60)
    with ctx.consumer() as c:
        msgs = c.drain(q)
    H.check_delivery(msgs, {1: 5000}, allow_dups=False, note=ctx.note)
    check_eq(relay.term(), 0, "pubrelayd exit code after SIGTERM")


# ---------------------------------------------------------------------------
# 4b2. dead_bounded: the dead-letter table has a limit, lists page, and
# DEAD RETRY ALL goes in batches within max_bytes


def pub_all_ok(relay, reqs, what):
    """Send the encoded PUBs pipelined; every reply must be OK."""
    with H.RawClient(relay.sock, timeout=60) as c:
        for i in range(0, len(reqs), 200):
            c.send(b"".join(reqs[i:i + 200]))
            for _ in reqs[i:i + 200]:
                rep = c.read_line()
                check(rep is not None and rep.startswith("OK "),
                      "%s: reply %r" % (what, rep))


def unroutable_reqs(q, key, n, body_len):
    """n mandatory-unroutable PUBs (amq.direct, key bound by nobody yet),
    with long message-ids so that a DEAD LIST line is long too."""
    mids = ["%s-dead-%05d-%s" % (q, i, "m" * 80) for i in range(n)]
    reqs = [H.encode_pub((b"%05d" % i) + b"d" * (body_len - 5),
                         [("exchange", "amq.direct"), ("routing-key", key),
                          ("message-id", mid)])
            for i, mid in enumerate(mids)]
    return mids, reqs


@scenario
def dead_bounded(ctx):
    """[outbox] dead_max_bytes = 256K, max_bytes = 1M, [socket] max_buffer
    = 64K, mandatory, max_attempts = 1.  800 unroutable messages of ~500
    bytes: the dead table stops at its limit, the rest wait in the outbox
    (stats dead_waiting, one log line), confirmed messages around them are
    deleted; `dead list` shows every dead letter through pages no larger
    than max_buffer.  Once bound, with the broker stopped and the outbox
    filled, `dead retry --all` stops at max_bytes with FULL (the rest stay
    parked) and, asked again once the broker is back, replays them all:
    every refused message arrives.  A second relay
    with 12000 dead letters (18 MB): `dead retry --all` goes in batches, and
    another client's PUBs keep getting OKs while it runs."""
    import re
    import threading
    N, LIMIT, MAXB, BUF = 800, 256 * 1024, 1024 * 1024, 64 * 1024
    relay = ctx.relay(overrides={
        "outbox": {"max_bytes": "1M", "dead_max_bytes": "256K",
                   "sync": "normal"},
        "socket": {"max_buffer": "64K"},
        "publish": {"mandatory": "yes", "max_attempts": "1"}})
    with ctx.consumer() as c:
        q = c.declare(H.unique_queue("deadbound"))
        qd = c.declare(H.unique_queue("deadbound-later"))
    key = qd + "-key"
    mids, reqs = unroutable_reqs(q, key, N, 300)
    pub_all_ok(relay, reqs, "unroutable PUB")
    st = relay.wait_stats(
        lambda s: s.get("dead_messages", 0) + s.get("dead_waiting", 0) == N
        and s.get("in_flight") == 0, 60,
        "every refused message parked or waiting for room")
    ctx.note("dead table full: %s" % H.fmt_stats(st))
    check_eq(st.get("dead_max_bytes"), LIMIT, "stats dead_max_bytes")
    check(st["dead_bytes"] <= LIMIT, "dead_bytes %d over dead_max_bytes %d"
          % (st["dead_bytes"], LIMIT))
    check(0 < st["dead_waiting"] < N and st["dead_bytes"] > LIMIT - 1024,
          "the dead table stopped at its limit with messages waiting "
          "(dead_messages %d, dead_waiting %d, dead_bytes %d)"
          % (st["dead_messages"], st["dead_waiting"], st["dead_bytes"]))
    check(st["outbox_messages"] >= st["dead_waiting"], "the waiting "
          "messages are still in the outbox (%d < %d)"
          % (st["outbox_messages"], st["dead_waiting"]))
    full_lines = [ln for ln in relay.log_text().splitlines()
                  if "dead-letter table full" in ln]
    check_eq(len(full_lines), 1, "log lines about the full dead table (%r)"
             % full_lines[:3])
    ndead = st["dead_messages"]

    # Every dead letter, through pages that fit in max_buffer.
    with H.RawClient(relay.sock, timeout=30) as c:
        page = c.dead_list(max_rows=100000)
        first_bytes = c.last_page_bytes
        rows = c.dead_list_all()
    ctx.note("DEAD LIST 100000: %d rows in %d bytes; all: %d rows"
             % (len(page), first_bytes, len(rows)))
    check(first_bytes <= BUF, "a DEAD LIST page of %d bytes, over "
          "max_buffer %d" % (first_bytes, BUF))
    check(0 < len(page) < ndead, "the first page holds part of the %d dead "
          "letters (%d)" % (ndead, len(page)))
    check_eq(len(rows), ndead, "dead letters listed through pages")
    check_eq(sorted(r["message_id"] for r in rows), sorted(mids[:ndead]),
             "the paged listing: the first %d refused, each once" % ndead)
    rc, out, err = relay.cmd("dead", "list", "--raw")
    check_eq(rc, 0, "exit code of `pubrelay dead list --raw` (%s)"
             % err.strip())
    check_eq(len(out.splitlines()), ndead, "lines of `pubrelay dead list "
             "--raw`")
    check(len(out) > BUF, "the listing (%d bytes) is larger than "
          "max_buffer" % len(out))
    rc, out, err = relay.cmd("dead", "list")
    check_eq(rc, 0, "exit code of `pubrelay dead list` (%s)" % err.strip())
    check(all(m in out for m in (mids[0], mids[ndead - 1])), "`pubrelay "
          "dead list` shows the first and the last dead letter")
    rc, out, err = relay.cmd("dead", "list", "--max", "5", "--raw")
    check_eq(len(out.splitlines()), 5, "`pubrelay dead list --max 5`")

    # Confirmed messages around the waiting ones are deleted as usual.
    pub_all_ok(relay, [H.encode_pub(b"r" * 1000, [("routing-key", q)])
                       for _ in range(200)], "routable PUB")
    accepted = 200
    st = relay.wait_stats(lambda s: s.get("confirmed") == accepted
                          and s.get("outbox_messages") == s.get("dead_waiting"),
                          60, "the routable messages confirmed and deleted")
    check_eq(st["dead_messages"], ndead, "dead_messages while full")

    # Routable now.  With the broker away, fill the outbox: a retry stops
    # at max_bytes with FULL, and the rest stay parked.
    with ctx.consumer() as c:
        c.ch.queue_bind(queue=qd, exchange="amq.direct", routing_key=key)
    ctx.broker.stop_app()
    try:
        rep = None
        with H.RawClient(relay.sock, timeout=30) as c:
            for _ in range(5000):
                rep = c.pub(b"r" * 1000, [("routing-key", q)])
                if not rep.startswith("OK "):
                    break
                accepted += 1
        ctx.note("routable messages accepted in all: %d, then %r"
                 % (accepted, rep))
        check(rep.startswith("ERR FULL "), "PUB into a full outbox: %r" % rep)
        rc, out, err = relay.cmd("dead", "retry", "--all")
        ctx.note("dead retry --all into a full outbox: rc=%d %s%s"
                 % (rc, out.strip(), err.strip()))
        check_eq(rc, 75, "exit code of `pubrelay dead retry --all` into a "
                 "full outbox (%s)" % err.strip())
        check("FULL" in err and "stay parked" in err, "the refusal says "
              "FULL and that the rest stay parked: %r" % err)
        st = relay.stats()
        check(st["outbox_bytes"] <= MAXB, "outbox_bytes %d over max_bytes "
              "after the retry" % st["outbox_bytes"])
        check(st["dead_messages"] > 0, "dead letters left parked")
    finally:
        ctx.broker.start_app()

    # Asked again as the outbox drains, everything goes.
    deadline, tries = time.monotonic() + 90, 1
    while True:
        check(time.monotonic() < deadline, "dead letters left after 90s: "
              "%s" % H.fmt_stats(relay.stats()))
        st = relay.stats()
        if st["dead_messages"] == 0 and st["dead_waiting"] == 0:
            break
        rc, out, err = relay.cmd("dead", "retry", "--all")
        tries += 1
        check(rc in (0, 75), "exit code of `pubrelay dead retry --all`: %d "
              "(%s)" % (rc, err.strip()))
        time.sleep(0.2)
    ctx.note("all replayed after %d retries" % tries)
    relay.wait_drained(60)
    with ctx.consumer() as c:
        got = c.drain(qd)
        routed = c.drain(q)
    check_eq(sorted(set(p.message_id for _, p in got)), sorted(mids),
             "every refused message arrives once bound (message-ids)")
    check_eq(len(routed), accepted, "the routable messages in their queue")
    check_eq(relay.term(), 0, "pubrelayd exit code after SIGTERM")

    # Batches: a large table replays while another client is served.
    M = 12000
    relay = ctx.relay(name=ctx.name + "-big", overrides={
        "outbox": {"sync": "normal"},
        "publish": {"mandatory": "yes", "max_attempts": "1"}})
    with ctx.consumer() as c:
        qb = c.declare(H.unique_queue("deadbound-big"))
    key = qb + "-key"
    mids, reqs = unroutable_reqs(qb, key, M, 1500)
    pub_all_ok(relay, reqs, "unroutable PUB")
    st = relay.wait_stats(lambda s: s.get("dead_messages") == M, 120,
                          "%d dead letters" % M)
    ctx.note("parked: %s" % H.fmt_stats(st))
    with ctx.consumer() as c:
        c.ch.queue_bind(queue=qb, exchange="amq.direct", routing_key=key)
        qo = c.declare(H.unique_queue("deadbound-other"))
    oks, stop, errors = [], threading.Event(), []

    def other():
        try:
            with H.RawClient(relay.sock, timeout=30) as c:
                while not stop.is_set():
                    rep = c.pub(b"other", [("routing-key", qo)])
                    if not rep.startswith("OK "):
                        errors.append(rep)
                        return
                    oks.append(time.monotonic())
        except Exception as e:      # reported below
            errors.append(repr(e))

    t = threading.Thread(target=other, daemon=True)
    t.start()
    H.wait_until(lambda: len(oks) >= 20 or errors, 30, "the other client's "
                 "first OKs")
    # Over a socket of its own: the window is the request's, not a process
    # start's as well.
    with H.RawClient(relay.sock, timeout=120) as c:
        t0 = time.monotonic()
        rep = c.request("DEAD RETRY ALL\n")
        t1 = time.monotonic()
    stop.set()
    t.join(30)
    check(not errors, "the other client: %r" % errors[:1])
    during = [x for x in oks if t0 < x < t1]
    gaps = [b - a for a, b in zip(during, during[1:])]
    ctx.note("DEAD RETRY ALL of %d: %.2fs, %r; the other client got %d OKs "
             "meanwhile (longest gap %.1f ms)"
             % (M, t1 - t0, rep, len(during), max(gaps or [0]) * 1000))
    check_eq(rep, "OK %d" % M, "reply to DEAD RETRY ALL")
    check(len(during) >= 10, "the other client got %d OKs while %d dead "
          "letters were replayed: it must be served between batches"
          % (len(during), M))
    check(re.search(r"\b%d dead letters replayed \(all\)" % M,
                    relay.log_text()) is not None,
          "log line about the replay")
    relay.wait_drained(120)
    with ctx.consumer() as c:
        got = c.drain(qb)
    check_eq(len(set(p.message_id for _, p in got)), M,
             "every replayed message arrives")
    check_eq(relay.term(), 0, "pubrelayd exit code after SIGTERM")


# ---------------------------------------------------------------------------
# 4c. broker_hung: a broker that accepts TCP and never speaks AMQP


@scenario
def broker_hung(ctx):
    """The URI points at a socket that accepts and never speaks AMQP (login
    hangs for `connect_timeout = 30s`): 2,000 OKs still come at once, state is
    `connecting`, SIGTERM exits 0 in under 10 s, and the backlog is there after
    a restart."""
    import socket
    import threading
    hung = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    hung.bind(("127.0.0.1", 0))
    hung.listen(64)
    port = hung.getsockname()[1]
    held, stop = [], threading.Event()

    def accept_and_hold():
        hung.settimeout(0.2)
        while not stop.is_set():
            try:
                conn, _ = hung.accept()
                held.append(conn)   # read nothing, answer nothing
            except OSError:
                pass
    t = threading.Thread(target=accept_and_hold, daemon=True)
    t.start()
    try:
        # Login waits for the connect_timeout (here 30 s): longer than the
        # whole scenario, so anything ingress did in its shadow would show.
        relay = ctx.relay(uri="amqp://guest:guest@127.0.0.1:%d" % port,
                          overrides={"broker": {"connect_timeout": "30s"}})
        H.wait_until(lambda: len(held) > 0, 10, "pubrelayd to connect to "
                     "the hung broker")
        N = 2000
        t0 = time.monotonic()
        pr = H.LinesProducer(relay, "hung", lines_for(1, N)).start()
        pr.join(30)
        took = time.monotonic() - t0
        check_eq(pr.rc, 0, "producer exit code while the broker hangs (%s)"
                 % pr.describe())
        ctx.note("%d OKs in %.2fs while the broker hangs in login" % (N, took))
        st = relay.stats()
        check_eq(st.get("state"), "connecting", "link state during the hang")
        check_eq(st.get("backlog"), N, "stats backlog")
        term_within(ctx, relay, "during a hung login", 10)
        # The backlog is still there for the next start.
        relay.start()
        check_eq(relay.stats().get("backlog"), N, "backlog after restart")
        relay.kill()
    finally:
        stop.set()
        t.join(2)
        for c in held:
            c.close()
        hung.close()


# ---------------------------------------------------------------------------
# 4d. client_exit_codes: the pubrelay contract against the real daemon


class FakeDaemon:
    """A daemon socket that answers each connection's first line (with its
    "\n") with answer(line), then reads until the client closes, answering
    every further line with more(line) when more is given."""

    def __init__(self, answer, more=None):
        import socket
        import threading
        self.answer = answer
        self.more = more
        self.path = os.path.join(H.mkdtemp("pubrelay-fake-"), "s.sock")
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.bind(self.path)
        self.sock.listen(8)
        self.sock.settimeout(0.2)
        self.stop = False
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self):
        import socket
        while not self.stop:
            try:
                c, _ = self.sock.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            with c:
                c.settimeout(5)
                got = b""
                try:
                    while b"\n" not in got:
                        chunk = c.recv(256)
                        if not chunk:
                            break
                        got += chunk
                    c.sendall(self.answer(got[:got.index(b"\n") + 1]
                                          if b"\n" in got else got))
                    got = got[got.index(b"\n") + 1:] if b"\n" in got \
                        else b""
                    # Closing with a request unread would reset the
                    # connection, and the client might lose the reply.
                    while True:
                        while self.more is not None and b"\n" in got:
                            i = got.index(b"\n") + 1
                            c.sendall(self.more(got[:i]))
                            got = got[i:]
                        chunk = c.recv(65536)
                        if not chunk:
                            break
                        got += chunk
                except OSError:
                    pass

    def close(self):
        self.stop = True
        self.thread.join(5)
        self.sock.close()


def run_against_fake(cl, args, reply, more=None):
    """The client cl run with args against a FakeDaemon that answers
    reply (and later lines with more, if given): the CompletedProcess."""
    import subprocess
    fake = FakeDaemon(lambda line: reply,
                      more and (lambda line: more))
    try:
        return subprocess.run([cl, "-s", fake.path] + args,
                              capture_output=True, timeout=30)
    finally:
        fake.close()



@scenario
def client_exit_codes(ctx):
    """The `pubrelay` contract against the real daemon: ping via `-s` and
    `$PUBRELAY_SOCKET`, `--print-id`, stdin bodies (66 for a closed stdin, an
    empty body for an empty one), 65 for TOOBIG (and a repeated `--header`
    named; a 300 MB body or line is refused at 128 MiB, read no further (under
    200 MB written to its stdin), never sent), 64 for usage errors (an empty
    `-s` too), 75 for an unreachable daemon (no such path, or a socket nobody
    listens on), 72 for a `-s` that is not a socket (a regular file, a
    directory, a path through a file), 74 for every command (`-h` and `-V` too)
    whose standard output is `/dev/full`, the stats table; and, against a fake
    daemon, 76 for malformed replies (`OK` without a message-id or with one
    over 255 bytes, a NUL in a reply line to publish, ping, stats and dead
    retry), and control characters (C1 in UTF-8 too) and bytes that are not
    UTF-8 shown as `?` in `--print-id` ids (from the real daemon too), the
    stats table and the dead letter table; `status` against a fake: each
    state's line and exit status (75 for INFLIGHT too), 76 for a reply
    naming another id or holding a NUL, 74 on `/dev/full`, 64 for an id it
    cannot send (none, two, empty, over 255 bytes, a newline, a leading
    blank)."""
    import socket
    import subprocess
    relay = ctx.relay(overrides={"socket": {"max_message_size": "1K"}})
    cl = H.binary("PUBRELAY")

    def run(args, data=None, env=None):
        e = dict(os.environ)
        e.pop("PUBRELAY_SOCKET", None)
        e.update(env or {})
        p = subprocess.run([cl] + args, input=data, capture_output=True,
                           timeout=30, env=e)
        return p.returncode, p.stdout.decode(errors="replace"), \
            p.stderr.decode(errors="replace")

    def run_full(args, data=b""):
        """Exit code and stderr with standard output on /dev/full."""
        with open("/dev/full", "wb") as full:
            p = subprocess.run([cl] + args, input=data, stdout=full,
                               stderr=subprocess.PIPE, timeout=30)
        return p.returncode, p.stderr.decode(errors="replace")

    def feed_big(args, head, size):
        """Run with head and then size bytes on stdin, written until the
        client stops reading: (exit code, stderr, bytes written, peak RSS
        of the client in KiB)."""
        p = subprocess.Popen([cl] + args, stdin=subprocess.PIPE,
                             stdout=subprocess.DEVNULL,
                             stderr=subprocess.PIPE, bufsize=0)
        chunk = b"z" * (1 << 20)
        written = 0
        try:
            p.stdin.write(head)
            while written < size:
                p.stdin.write(chunk)
                written += len(chunk)
            p.stdin.close()
        except BrokenPipeError:
            pass
        err = p.stderr.read()
        _, status, ru = os.wait4(p.pid, 0)
        p.returncode = os.waitstatus_to_exitcode(status)
        return p.returncode, err.decode(errors="replace"), written, \
            ru.ru_maxrss

    s = ["-s", relay.sock]
    rc, out, _ = run(s + ["ping"])
    check_eq((rc, out.strip()), (0, "PONG"), "ping")
    # Whatever goes to standard output: 74 when it cannot be written.
    for args in (["-h"], ["-V"], ["publish", "-h"], ["stats", "--help"],
                 ["dead", "-h"], ["dead", "list", "-h"], ["status", "-h"],
                 s + ["ping"], s + ["stats"], s + ["stats", "--json"],
                 s + ["publish", "-k", "x", "--print-id", "b"],
                 s + ["publish", "-k", "x", "--print-id", "--lines"]):
        rc, err = run_full(args, data=b"l1\nl2\n")
        check_eq(rc, 74, "%s to /dev/full (%s)" % (" ".join(args),
                                                   err.strip()))
        check("standard output: No space left on device" in err,
              "%s to /dev/full: the error named: %r" % (args, err))
    # Closed standard descriptors are /dev/null, not the socket: --lines
    # with stdin closed sends nothing (it used to read its own connection
    # and hang), and ids printed to a closed stdout are not requests.
    before = relay.stats().get("accepted")
    p = subprocess.run(["sh", "-c", '"$0" -t 5 -s "$1" publish --lines -k x '
                        '<&-', cl, relay.sock], capture_output=True,
                       timeout=30)
    check_eq(p.returncode, 0, "--lines with stdin closed (%s)"
             % p.stderr.decode(errors="replace").strip())
    p = subprocess.run(["sh", "-c", 'printf "a\\nb\\n" | "$0" -s "$1" '
                        'publish --lines --print-id -k x >&-', cl,
                        relay.sock], capture_output=True, timeout=30)
    check_eq(p.returncode, 0, "--lines --print-id with stdout closed (%s)"
             % p.stderr.decode(errors="replace").strip())
    check_eq(relay.stats().get("accepted"), before + 2, "accepted: the two "
             "lines, nothing else")
    # One body from a closed stdin is no input (66), not an empty message;
    # an empty stdin that is open is an empty body.
    p = subprocess.run(["sh", "-c", '"$0" -s "$1" publish -k x <&-', cl,
                        relay.sock], capture_output=True, timeout=30)
    err = p.stderr.decode(errors="replace").strip()
    check_eq((p.returncode, err), (66, "pubrelay: publish: no body, and "
                                   "standard input is closed"),
             "publish with stdin closed")
    p = subprocess.run(["sh", "-c", '"$0" -s "$1" publish -k x </dev/null',
                        cl, relay.sock], capture_output=True, timeout=30)
    check_eq(p.returncode, 0, "publish with an empty stdin (%s)"
             % p.stderr.decode(errors="replace").strip())
    check_eq(relay.stats().get("accepted"), before + 3, "accepted: the "
             "empty body, not the closed stdin")
    rc, out, err = run(["ping"], env={"PUBRELAY_SOCKET": relay.sock})
    check_eq(rc, 0, "ping through $PUBRELAY_SOCKET (%s)" % err.strip())
    rc, out, err = run(s + ["publish", "-k", "x", "--print-id", "body"])
    check_eq(rc, 0, "publish one (%s)" % err.strip())
    check(len(out.strip()) > 0, "--print-id prints the message-id")
    rc, out, err = run(s + ["publish", "-k", "x", "--message-id", "m-1",
                            "--print-id"], data=b"from stdin")
    check_eq((rc, out.strip()), (0, "m-1"), "stdin body with own id")
    # An id goes to a terminal as text: no escape sequence, no bytes that
    # are not UTF-8 (each such byte is '?'); UTF-8 is kept.
    p = subprocess.run([cl.encode()] + [a.encode() for a in s] +
                       [b"publish", b"-k", b"x", b"--print-id",
                        b"--message-id", b"\x1b[31mr\xff\xc3\xa9\x7f", b"b"],
                       capture_output=True, timeout=30)
    check_eq((p.returncode, p.stdout), (0, b"?[31mr?\xc3\xa9?\n"),
             "--print-id of an id with control bytes (%s)"
             % p.stderr.decode(errors="replace").strip())
    rc, _, err = run(s + ["publish", "-k", "x"], data=b"y" * 2048)
    check_eq(rc, 65, "body over max_message_size (%s)" % err.strip())
    check("TOOBIG" in err, "TOOBIG named: %r" % err)
    # Over the protocol's hard maximum (128 MiB, max_message_size at
    # most): TOOBIG as the daemon would say, without reading the rest of
    # a 300 MB input into memory and without sending anything.
    for args, head, accepted in (([], b"", 0), (["--lines"], b"a\nb\n", 2)):
        before = relay.stats()
        rc, err, written, rss = feed_big(s + ["publish", "-k", "x"] + args,
                                         head, 300 << 20)
        what = "300 MB %s" % ("line" if args else "body")
        check_eq(rc, 65, "%s: exit code (%s)" % (what, err.strip()))
        check("TOOBIG" in err and "134217728" in err,
              "%s: TOOBIG and the limit named: %r" % (what, err))
        check(written < 200 << 20, "%s: the client stopped reading at "
              "the limit, not after %d bytes" % (what, written))
        # Not a check: a sanitizer build's allocator keeps freed blocks.
        ctx.note("%s: %d MiB written, the client's peak RSS %d MiB"
                 % (what, written >> 20, rss >> 10))
        after = relay.stats()
        check_eq((after.get("accepted") - before.get("accepted"),
                  after.get("refused") - before.get("refused")),
                 (accepted, 0), "%s: accepted, refused (nothing sent past "
                 "the limit)" % what)
        if args:
            check("2 accepted" in err, "%s: the accepted count: %r"
                  % (what, err))
    rc, _, err = run(["-t", "3000000000000h"] + s + ["ping"])
    check_eq(rc, 64, "-t too large for the clock: usage error (%s)"
             % err.strip())
    rc, out, err = run(["-t", "8760h"] + s + ["ping"])
    check_eq((rc, out.strip()), (0, "PONG"), "-t 8760h (%s)" % err.strip())
    rc, _, err = run(s + ["publish", "-k", "x", "--header", "novalue", "b"])
    check_eq(rc, 64, "bad --header usage (%s)" % err.strip())
    rc, _, err = run(s + ["publish", "b"])
    check_eq(rc, 64, "missing -k (%s)" % err.strip())
    rc, _, err = run(s + ["publish", "-k", "x", "--header", "foo=1",
                          "--header", "foo=2", "b"])
    check_eq((rc, err.strip()),
             (65, 'pubrelay: cannot send: header: "foo" given twice'),
             "a header given twice is named")
    rc, _, err = run(["-s", relay.sock + ".nope", "publish", "-k", "x", "b"])
    check_eq(rc, 75, "daemon unreachable is retryable (%s)" % err.strip())
    # A socket file nobody listens on: a daemon may come back, retry.
    stale = os.path.join(H.mkdtemp("pubrelay-paths-"), "stale.sock")
    ls = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    ls.bind(stale)
    ls.close()
    rc, _, err = run(["-s", stale, "ping"])
    check_eq(rc, 75, "socket nobody listens on is retryable (%s)"
             % err.strip())
    # A path that is no socket stays so: not retryable, and said so.
    for path in (relay.ini, os.path.dirname(relay.sock)):
        rc, _, err = run(["-s", path, "ping"])
        check_eq((rc, err.strip()), (72, "pubrelay: %s: not a socket" % path),
                 "-s names a file that is not a socket")
    rc, _, err = run(["-s", os.path.join(relay.ini, "sock"), "ping"])
    check_eq(rc, 72, "-s through a regular file (%s)" % err.strip())
    rc, _, err = run(["-s", "", "ping"])
    check_eq(rc, 64, "-s '' is a usage error (%s)" % err.strip())
    check("-s: empty socket path" in err, "-s '' names the option: %r" % err)
    # Usage errors name the option, wherever the C library leaves optind
    # (musl's is past argc when the last option lacks its argument, and a
    # cluster's first letter is read before optind moves).
    for args, want in (
            (["-t"], "option -t requires an argument"),
            (s + ["publish", "-k"], "option -k requires an argument"),
            (s + ["publish", "--routing-key"],
             "option --routing-key requires an argument"),
            (s + ["publish", "--transient", "-zk", "q", "b"],
             "unknown option -z"),
            (s + ["publish", "--transient=1", "-k", "q", "b"],
             "option --transient takes no argument"),
            (["--bogus", "ping"], "unknown option --bogus"),
            (s + ["stats", "-x"], "unknown option -x")):
        rc, _, err = run(args)
        first = err.splitlines()[0] if err else ""
        check_eq((rc, first), (64, "pubrelay: " + want),
                 "usage error of pubrelay %s" % " ".join(args))
    rc, out, err = run(s + ["stats"])
    check_eq(rc, 0, "stats (%s)" % err.strip())
    check("accepted" in out and "backlog" in out and "state" in out,
          "stats table: %r" % out)
    check_eq(relay.term(), 0, "pubrelayd exit code after SIGTERM")

    # Malformed replies from something that is not quite the daemon: 76,
    # never success.  An OK to a PUB must name the message-id; a NUL
    # must not cut a reply short into one that looks right.
    cases = [
        (["publish", "-k", "x", "b"], b"OK\n"),
        (["publish", "-k", "x", "--print-id", "b"], b"OK \n"),
        (["publish", "-k", "x", "b"], b"OK a\x00b\n"),
        (["publish", "-k", "x", "b"], b"OK " + b"i" * 256 + b"\n"),
        (["publish", "-k", "x", "--lines"], b"OK\n"),
        (["ping"], b"PONG\x00junk\n"),
        (["stats", "--raw"], b"STATS 0\x00\n"),
        (["dead", "retry", "1"], b"OK 1\x00junk\n"),
    ]
    for args, reply in cases:
        fake = FakeDaemon(lambda line, reply=reply: reply)
        try:
            rc, out, err = run(["-s", fake.path] + args, data=b"line\n")
        finally:
            fake.close()
        check_eq(rc, 76, "%s answered %r: exit code (%s)"
                 % (" ".join(args), reply, err.strip()))
        check_eq(out, "", "%s answered %r: nothing on stdout"
                 % (" ".join(args), reply))

    # Daemon text for the terminal: control characters (C1 in UTF-8 too,
    # U+009B is a CSI to some terminals) and bytes that are not UTF-8
    # become '?', in ids, the stats table and the dead letter table.
    evil = b"\x1b]0;t\x07\xc2\x9b2J\xff\xc3\xa9"
    shown = "?]0;t??2J?\u00e9"
    dead = (b"7\t1700000000000\t3\t212\t-\trk\t" + evil + b"\tNO_ROUTE " +
            evil + b"\n")
    cases = [
        (["publish", "-k", "x", "--print-id", "b"], b"OK " + evil + b"\n",
         shown + "\n"),
        (["stats"], b"STATS %d\nlast_error %s\n" % (len(evil) + 12, evil),
         "last_error  " + shown + "\n"),
        (["dead", "list"], b"DEAD %d\n%s" % (len(dead), dead), None),
    ]
    for args, reply, want in cases:
        # dead list asks for the page after the last id it got: empty.
        p = run_against_fake(cl, args, reply,
                             b"DEAD 0\n" if args[0] == "dead" else None)
        what = "%s: %r shown" % (" ".join(args), evil)
        check_eq(p.returncode, 0, "%s: exit code (%s)"
                 % (what, p.stderr.decode(errors="replace").strip()))
        out = p.stdout.decode("utf-8")      # must be valid UTF-8
        if want is not None:
            check_eq(out, want, what)
        else:
            check(out.count(shown) == 2 and "NO_ROUTE " + shown in out,
                  "%s: %r" % (what, out))
        check(not any(c < " " and c != "\n" or "\x7f" <= c <= "\x9f"
                      for c in out), "%s: no control characters: %r"
              % (what, out))

    # status: each reply word to its line and exit status (INFLIGHT is
    # hard to catch on a real daemon); a reply naming another id, or
    # with a NUL, is not taken; the broker's reason is shown as text.
    mid = "ce4c234c3cac8f0e-12"
    for reply, want_rc, want_out in (
            (b"INFLIGHT %s\n" % mid.encode(), 75, "inflight " + mid + "\n"),
            (b"QUEUED %s\n" % mid.encode(), 75, "queued " + mid + "\n"),
            (b"PARKED %s NO_ROUTE %s\n" % (mid.encode(), evil), 65,
             "parked %s: NO_ROUTE %s\n" % (mid, shown)),
            (b"UNKNOWN %s\n" % mid.encode(), 66, "unknown " + mid + "\n"),
            (b"CONFIRMED %s-1\n" % mid.encode(), 76, ""),
            (b"CONFIRMED %s\x00\n" % mid.encode(), 76, ""),
            (b"PARKED %s\n" % mid.encode(), 76, ""),
            (b"ERR BADREQ no id\n", 65, "")):
        p = run_against_fake(cl, ["status", mid], reply)
        check_eq((p.returncode, p.stdout.decode("utf-8")),
                 (want_rc, want_out), "status answered %r (%s)"
                 % (reply, p.stderr.decode(errors="replace").strip()))
    for args in (["status"], ["status", "a", "b"], ["status", ""],
                 ["status", "x" * 256], ["status", "a\nb"],
                 ["status", " a"]):
        rc, out, err = run(s + args)
        check_eq((rc, out), (64, ""), "%r: usage error (%s)"
                 % (args, err.strip()[:100]))
    fake = FakeDaemon(lambda line: b"CONFIRMED %s\n" % mid.encode())
    try:
        rc, err = run_full(["-s", fake.path, "status", mid])
    finally:
        fake.close()
    check_eq(rc, 74, "status to /dev/full (%s)" % err.strip())

@scenario
def client_bodies(ctx):
    """One-shot publishes whose request, body or reply outgrow the client's
    first buffers (on its stack; heap after): every byte arrives, in order,
    with the properties given, and a long reply is read whole.

    One-shot publishes whose request, body or reply outgrow the client's first
    buffers (kept on its stack, moved to the heap as they grow): stdin bodies
    of 1 byte to 300,000 around the 1 KiB first read and the 64 KiB chunks,
    argument bodies that take the request across 2 KiB, 40 headers, all
    consumed byte for byte in order with their ids and headers; and, from a
    fake daemon, a 3,000-byte `ERR` reply to publish and to ping read whole
    (65, 76)."""
    relay = ctx.relay()
    cl = H.binary("PUBRELAY")
    with ctx.consumer() as c:
        q = c.declare(H.unique_queue("bodies"))
        client_bodies_send(ctx, relay, cl, q, c)


def client_bodies_send(ctx, relay, cl, q, c):
    import random
    import subprocess
    rnd = random.Random(6)
    sent = []
    # Standard input: binary, around the 1 KiB first read and the 64 KiB
    # chunks after it.
    for n in (1, 1022, 1023, 1024, 1025, 2047, 2048, 2049, 4095, 4097,
              65535, 65536, 65537, 131073, 300000):
        body = bytes(rnd.randrange(256) for _ in range(n))
        p = subprocess.run([cl, "-s", relay.sock, "publish", "-k", q,
                            "--message-id", "in-%d" % n], input=body,
                           capture_output=True, timeout=60)
        check_eq(p.returncode, 0, "stdin body of %d bytes (%s)"
                 % (n, p.stderr.decode(errors="replace").strip()))
        sent.append(("in-%d" % n, body))
    # An argument: the request (header and body) across its first 2 KiB,
    # whatever the length of the queue's name ("b" first: not an option).
    head = len(b"PUB 0000\nrouting-key: %s\nmessage-id: arg-0000\n\n"
               % q.encode())
    for n in [1, 10000] + list(range(2048 - head - 40, 2048 - head + 40, 3)):
        body = b"b" + bytes(rnd.randrange(33, 127) for _ in range(n - 1))
        p = subprocess.run([cl, "-s", relay.sock, "publish", "-k", q,
                            "--message-id", "arg-%d" % n, body],
                           capture_output=True, timeout=60)
        check_eq(p.returncode, 0, "argument body of %d bytes (%s)"
                 % (n, p.stderr.decode(errors="replace").strip()))
        sent.append(("arg-%d" % n, body))
    # Headers make the request large before the body does; --print-id
    # prints the reply's id.
    hdrs = []
    for i in range(40):
        hdrs += ["--header", "h%02d=%s" % (i, "v" * 60)]
    p = subprocess.run([cl, "-s", relay.sock, "publish", "-k", q,
                        "--message-id", "headers", "--print-id"] + hdrs +
                       ["small"], capture_output=True, timeout=60)
    check_eq((p.returncode, p.stdout), (0, b"headers\n"),
             "40 headers of 64 bytes (%s)"
             % p.stderr.decode(errors="replace").strip())
    sent.append(("headers", b"small"))
    relay.wait_drained(120)
    got = c.drain(q)
    check_eq([props.message_id for _, props in got],
             [mid for mid, _ in sent], "message ids, in order")
    for (mid, body), (gbody, _) in zip(sent, got):
        check(gbody == body, "%s: the body arrived as sent (%d bytes, got "
              "%d)" % (mid, len(body), len(gbody)))
    h = got[-1][1].headers or {}
    check_eq(sorted(h), ["h%02d" % i for i in range(40)],
             "the 40 headers arrived")
    check(all(v in ("v" * 60, b"v" * 60) for v in h.values()),
          "header values arrived: %r" % list(h.values())[:2])

    # Replies longer than the first reply buffer, from something that
    # answers like the daemon: read to their end, not cut or hung.
    for args, reply, want_rc, want_err in (
            (["publish", "-k", "x", "b"],
             b"ERR BADREQ " + b"r" * 3000 + b"\n", 65,
             "pubrelay: message refused: BADREQ rrrr"),
            (["ping"], b"PONG" + b"g" * 3000 + b"\n", 76,
             'pubrelay: unexpected reply to ping: "PONGggg')):
        p = run_against_fake(cl, args, reply)
        err = p.stderr.decode(errors="replace")
        check_eq(p.returncode, want_rc, "%s answered %d bytes: exit code "
                 "(%s)" % (args[0], len(reply), err.strip()[:100]))
        check(err.startswith(want_err), "%s answered %d bytes: %r"
              % (args[0], len(reply), err[:120]))


# ---------------------------------------------------------------------------
# 5. bad_input


def run_daemon(args, timeout=15):
    import subprocess
    p = H.spawn([H.binary("PUBRELAYD")] + args, stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        out, err = p.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        H.killpg(p)
        p.communicate()
        raise Failure("pubrelayd %s did not exit within %ds"
                      % (" ".join(args), timeout))
    finally:
        H.guardian.unwatch(p.pid)
    return p.returncode, out.decode("utf-8", "replace"), \
        err.decode("utf-8", "replace")


def bad_configs(ctx):
    d = H.mkdtemp("pubrelay-badconf-")
    bad = os.path.join(d, "bad.ini")
    with open(bad, "w") as f:
        f.write("[broker]\n"                                    # 1
                "uri = %s\n" % ctx.broker.uri() +               # 2
                "bogus_key = 1\n"                               # 3
                "heartbeat = abc\n"                             # 4
                "[outbox]\n"                                    # 5
                "path = %s\n" % os.path.join(d, "o.db") +       # 6
                "sync = sometimes\n"                            # 7
                "[nosuch]\n"                                    # 8
                "foo = bar\n"                                   # 9
                "[socket]\n"                                    # 10
                "path = %s\n" % os.path.join(d, "s.sock"))      # 11
    rc, out, err = run_daemon(["-t", "-c", bad])
    ctx.note("-t bad.ini: exit %d, stderr:\n%s" % (rc, err.rstrip()))
    check_eq(rc, 78, "exit code of -t on a bad config")
    want = [
        (3, "[broker] bogus_key"),
        (4, "[broker] heartbeat"),
        (7, "[outbox] sync"),
        (8, "[nosuch]"),
    ]
    lines = err.splitlines()
    for lineno, what in want:
        prefix = "%s:%d:" % (bad, lineno)
        hit = [ln for ln in lines if ln.find(prefix) >= 0 and what in ln]
        check(hit, "no error line naming %s and %s in stderr" % (prefix, what))
    check(not os.path.exists(os.path.join(d, "o.db")),
          "-t on a bad config created the outbox")

    good = os.path.join(d, "good.ini")
    H.write_ini(good, {
        "broker": {"uri": ctx.broker.uri(), "heartbeat": "5",
                   "reconnect_min": "100ms", "reconnect_max": "1s"},
        "socket": {"path": os.path.join(d, "g.sock"),
                   "max_message_size": "1K"},
        "outbox": {"path": os.path.join(d, "g.db"), "sync": "normal"},
        "publish": {"window": "16", "persistent": "yes"},
    })
    rc, out, err = run_daemon(["-t", "-c", good])
    check_eq(rc, 0, "exit code of -t on a good config (stderr: %r)"
             % err.strip())
    check("configuration OK" in out + err,
          "-t on a good config did not say \"configuration OK\": %r"
          % (out + err))
    check(not os.path.exists(os.path.join(d, "g.sock")),
          "-t created the socket")

    missing = os.path.join(d, "no-such.ini")
    rc, out, err = run_daemon(["-t", "-c", missing])
    ctx.note("-t missing.ini: exit %d, stderr: %s" % (rc, err.strip()))
    check(rc != 0, "-t on a missing config exited 0")
    check(missing in err, "the error for a missing config does not name %s: "
          "%r" % (missing, err))
    rc, out, err = run_daemon(["-c", missing])
    check(rc != 0, "pubrelayd on a missing config exited 0")
    check(missing in err, "the error for a missing config does not name %s: "
          "%r" % (missing, err))

    # The command line: long options, named usage errors, a full stdout.
    rc, out, err = run_daemon(["--check", "--config", good])
    check_eq((rc, "configuration OK" in out + err), (0, True),
             "--check --config on a good config (%r)" % (out + err))
    rc, out, err = run_daemon(["-t", "-c", good, "extra"])
    check_eq(rc, 64, "exit code with an extra argument")
    check("'extra'" in err, "the usage error does not name the argument: %r"
          % err)
    rc, out, err = run_daemon(["--bogus"])
    check(rc == 64 and "--bogus" in err, "an unknown long option: exit %d, "
          "%r" % (rc, err))
    rc, out, err = run_daemon(["--version"])
    check(rc == 0 and out.startswith("pubrelayd "), "--version: exit %d, %r"
          % (rc, out))
    import subprocess
    with open("/dev/full", "w") as full:
        for opt in ("-V", "-h"):
            p = H.spawn([H.binary("PUBRELAYD"), opt], stdout=full,
                        stderr=subprocess.PIPE)
            err = p.communicate(timeout=15)[1].decode("utf-8", "replace")
            H.guardian.unwatch(p.pid)
            check_eq(p.returncode, 74, "exit code of pubrelayd %s with "
                     "stdout on /dev/full (%s)" % (opt, err.strip()))


def bad_protocol(ctx):
    relay = ctx.relay(overrides={"socket": {"max_message_size": "1K"}})
    with ctx.consumer() as c:
        q = c.declare(H.unique_queue("badinput"))
    rk = [("routing-key", q)]
    a = relay.client()
    b = relay.client()
    try:
        r = a.pub("a-1", rk)
        check(r.startswith("OK "), "PUB on connection A: %r" % r)

        r = b.request("FROB x y\n")
        check(r.startswith("ERR UNKNOWN"), "unknown verb: %r" % r)
        check_eq(b.ping(), "PONG", "PING after an unknown verb")
        check_eq(b.request("ping\n"), "PONG", "lower-case ping")
        r = b.pub("b-ok-1", rk)
        check(r.startswith("OK "), "PUB after an unknown verb: %r" % r)

        r = b.pub("refused-badprop", rk + [("x-bogus", "1")])
        check(r.startswith("ERR BADREQ"), "PUB with an unknown property: %r"
              % r)
        check("x-bogus" in r, "the BADREQ reply does not name the property: "
              "%r" % r)
        r = b.pub("refused-skipped", rk)
        check(r.startswith("ERR SKIPPED"), "PUB after a refused PUB: %r" % r)
        check_eq(b.ping(), "PONG", "PING while PUBs are skipped")
        r = b.pub("refused-skipped-2", rk)
        check(r.startswith("ERR SKIPPED"), "second PUB after a refused PUB: "
              "%r" % r)
        check_eq(b.request("RESET\n"), "OK", "RESET")
        r = b.pub("b-ok-2", rk)
        check(r.startswith("OK "), "PUB after RESET: %r" % r)

        # An oversized body, pipelined with what follows it: the daemon must
        # skip exactly the body and answer the rest in order.
        b.send(H.encode_pub(b"refused-toobig-" + b"x" * 2000, rk) +
               H.encode_pub("refused-after-toobig", rk) +
               b"PING\nRESET\n" +
               H.encode_pub(b"b-ok-3-" + b"y" * 1000, rk) +
               b"FROB\n" +
               H.encode_pub("b-ok-4", rk) +
               b"PING\n")
        replies = [b.read_line() for _ in range(8)]
        ctx.note("pipelined replies: %r" % [(r or "")[:40] for r in replies])
        want = ["ERR TOOBIG", "ERR SKIPPED", "PONG", "OK", "OK ",
                "ERR UNKNOWN", "OK ", "PONG"]
        for i, (got, w) in enumerate(zip(replies, want)):
            check(got is not None and (got == w if w in ("PONG", "OK")
                                       else got.startswith(w)),
                  "pipelined reply %d: %r, want %r (max_message_size = 1K; "
                  "all replies: %r)" % (i + 1, got, w, replies))

        r = b.request("PUB abc\n")
        check(r.startswith("ERR PROTO"), "PUB abc: %r" % r)
        check(b.closed_by_peer(5), "the connection stays open after "
              "ERR PROTO")

        check_eq(a.ping(), "PONG", "connection A after B's errors")
        r = a.pub("a-2", rk)
        check(r.startswith("OK "), "second PUB on connection A: %r" % r)
        # BADREQ and TOOBIG; neither the SKIPPED nor the fatal PROTO.
        check_eq(relay.stats().get("refused"), 2, "stats refused")
    finally:
        a.close()
        b.close()
    relay.wait_drained(60)
    with ctx.consumer() as c:
        msgs = c.drain(q)
    bodies = [m[0] for m in msgs]
    want = [b"a-1", b"b-ok-1", b"b-ok-2", b"b-ok-3-" + b"y" * 1000,
            b"b-ok-4", b"a-2"]
    check_eq(sorted(bodies), sorted(want), "bodies in the queue")
    # Per connection, in order.
    check_eq([x for x in bodies if x.startswith(b"a-")], [b"a-1", b"a-2"],
             "connection A's messages in order")
    check_eq([x[:6] for x in bodies if x.startswith(b"b-")],
             [b"b-ok-1", b"b-ok-2", b"b-ok-3", b"b-ok-4"],
             "connection B's messages in order")
    check(relay.alive(), "pubrelayd died")
    check_eq(relay.term(), 0, "pubrelayd exit code after SIGTERM")


@scenario
def bad_input(ctx):
    """`pubrelayd -t` on a config with an unknown key, a bad number, a bad
    `sync` value and an unknown section exits 78 and prints `FILE:LINE:` with
    `[section] key` for each; on a good config prints `configuration OK` and
    exits 0 (creating no socket); on a missing file fails naming the file (with
    and without `-t`); the long options (`--check --config`, `--version`), an
    extra argument and an unknown option exit 64 naming it, `-V` and `-h` into
    `/dev/full` exit 74. Over the socket: an unknown verb gets `ERR UNKNOWN`
    and the connection works on; a PUB with an unknown property gets `ERR
    BADREQ` naming it, later PUBs `ERR SKIPPED` until `RESET` (`OK`); a body
    over `max_message_size = 1K` gets `ERR TOOBIG`, connection kept, its body
    skipped exactly (a pipelined PUB, PING, RESET, PUB, unknown verb, PUB, PING
    after it get SKIPPED, PONG, OK, OK, UNKNOWN, OK, PONG, in order); `PUB abc`
    gets `ERR PROTO` and the connection is closed. Another connection is
    unaffected throughout, and exactly the accepted messages reach the queue,
    in order per connection."""
    bad_configs(ctx)
    bad_protocol(ctx)


# ---------------------------------------------------------------------------
# 6. stats_formats: pubrelay stats as a table, --json, --prometheus, --raw



PROM_NAME = r"[a-zA-Z_:][a-zA-Z0-9_:]*"
PROM_LABEL = r'[a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\\n]|\\[\\"n])*"'
PROM_FLOAT = r"[+-]?(?:(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?|Inf|NaN)"
PROM_HELP_RE = re.compile(r"^# HELP (%s) ((?:[^\\\n]|\\[\\n])*)$" % PROM_NAME)
PROM_TYPE_RE = re.compile(r"^# TYPE (%s) (counter|gauge|summary|histogram|"
                          r"untyped)$" % PROM_NAME)
PROM_SAMPLE_RE = re.compile(r"^(%s)(\{(?:%s(?:,%s)*,?)?\})? (%s)(?: -?[0-9]+)?$"
                            % (PROM_NAME, PROM_LABEL, PROM_LABEL, PROM_FLOAT))
PROM_LABEL_RE = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\\n]|\\[\\"n])*)"')


def prom_family_of(sample, types):
    """The metric family a sample name belongs to, given the TYPEs so far."""
    if sample in types:
        return sample
    for suffix, kinds in (("_sum", ("summary", "histogram")),
                          ("_count", ("summary", "histogram")),
                          ("_bucket", ("histogram",))):
        if sample.endswith(suffix):
            base = sample[:-len(suffix)]
            if types.get(base) in kinds:
                return base
    return None


def check_exposition(text):
    """A strict check of the Prometheus text format 0.0.4: only HELP, TYPE
    and sample lines, each family's HELP and TYPE once and before its
    samples, its samples in one group, counters named *_total, no duplicate
    series.  Returns ({(sample name, ((label, value), ...)): value string},
    {family: type})."""
    check(text.endswith("\n"), "exposition does not end in a newline: %r"
          % text[-40:])
    helps, types, series = {}, {}, {}
    done = set()            # families whose sample group has ended
    current = None          # the family of the previous line
    for n, ln in enumerate(text[:-1].split("\n"), 1):
        where = "exposition line %d %r" % (n, ln)
        if ln.startswith("#"):
            m = PROM_HELP_RE.match(ln) or PROM_TYPE_RE.match(ln)
            check(m, "%s: a comment that is neither # HELP nor # TYPE"
                  % where)
            name = m.group(1)
            which = helps if ln.startswith("# HELP") else types
            check(name not in which, "%s: second %s for %s"
                  % (where, ln[2:6], name))
            check(name not in done and not any(
                prom_family_of(s, types) == name for s, _ in series),
                "%s: after samples of %s" % (where, name))
            which[name] = m.group(2)
            if current is not None and current != name:
                done.add(current)
            current = name
            continue
        m = PROM_SAMPLE_RE.match(ln)
        check(m, "%s: not a valid sample line" % where)
        sample, labels, value = m.group(1), m.group(2) or "", m.group(3)
        fam = prom_family_of(sample, types)
        check(fam is not None, "%s: no # TYPE before it" % where)
        check(fam in helps, "%s: no # HELP before it" % where)
        check(fam not in done, "%s: samples of %s not in one group"
              % (where, fam))
        if current is not None and current != fam:
            done.add(current)
        current = fam
        if types[fam] == "counter":
            check(sample.endswith("_total"), "%s: counter %s does not end "
                  "in _total" % (where, sample))
        pairs = tuple(sorted(PROM_LABEL_RE.findall(labels)))
        names = [k for k, _ in pairs]
        check(len(set(names)) == len(names), "%s: repeated label" % where)
        check(not any(k.startswith("__") for k in names),
              "%s: reserved label name" % where)
        key = (sample, pairs)
        check(key not in series, "%s: duplicate series" % where)
        series[key] = value
    for fam in helps:
        check(fam in types, "# HELP %s without # TYPE" % fam)
    return series, types


STATS_STRINGS = ("state", "broker", "last_error")
LINK_STATES = ("disconnected", "connecting", "connected", "blocked",
               "stopped")
# STATS key -> (sample, type, scale): the documented metric names.
PROM_MAP = {
    "outbox_messages": ("pubrelay_outbox_messages", "gauge", 1),
    "backlog": ("pubrelay_backlog_messages", "gauge", 1),
    "outbox_bytes": ("pubrelay_outbox_bytes", "gauge", 1),
    "outbox_max_bytes": ("pubrelay_outbox_max_bytes", "gauge", 1),
    "oldest_age_ms": ("pubrelay_oldest_message_age_seconds", "gauge", 1000),
    "in_flight": ("pubrelay_in_flight_messages", "gauge", 1),
    "accepted": ("pubrelay_accepted_total", "counter", 1),
    "refused": ("pubrelay_refused_total", "counter", 1),
    "published": ("pubrelay_published_total", "counter", 1),
    "confirmed": ("pubrelay_confirmed_total", "counter", 1),
    "nacked": ("pubrelay_nacked_total", "counter", 1),
    "returned": ("pubrelay_returned_total", "counter", 1),
    "parked": ("pubrelay_parked_total", "counter", 1),
    "expired": ("pubrelay_expired_total", "counter", 1),
    "dead_messages": ("pubrelay_dead_messages", "gauge", 1),
    "dead_bytes": ("pubrelay_dead_bytes", "gauge", 1),
    "dead_max_bytes": ("pubrelay_dead_max_bytes", "gauge", 1),
    "dead_waiting": ("pubrelay_dead_waiting_messages", "gauge", 1),
    "idempotency_keys": ("pubrelay_idempotency_keys", "gauge", 1),
    "idempotency_hits": ("pubrelay_idempotency_hits_total", "counter", 1),
    "reconnects": ("pubrelay_reconnects_total", "counter", 1),
    "blocked_ms": ("pubrelay_blocked_seconds_total", "counter", 1000),
    "confirm_latency_ms_sum": ("pubrelay_confirm_latency_seconds_sum",
                               "summary", 1000),
    "confirm_latency_count": ("pubrelay_confirm_latency_seconds_count",
                              "summary", 1),
    "clients": ("pubrelay_clients", "gauge", 1),
    "clients_refused": ("pubrelay_clients_refused_total", "counter", 1),
    "receipts_waiting": ("pubrelay_receipts_waiting", "gauge", 1),
    "uptime_s": ("pubrelay_uptime_seconds", "gauge", 1),
}


def stats_pairs(body):
    """The STATS body as [(name, value)] text pairs, in order."""
    out = []
    for ln in body.decode("utf-8", "surrogateescape").split("\n"):
        if ln:
            name, _, value = ln.partition(" ")
            out.append((name, value))
    return out


def expected_series(pairs):
    """{(sample, labels): Fraction} that --prometheus must print for a STATS
    body from the real daemon (every key known)."""
    from fractions import Fraction
    st = dict(pairs)
    want = {("pubrelay_up", ()): Fraction(1)}
    for s in LINK_STATES:
        want[("pubrelay_link_state", (("state", s),))] = \
            Fraction(int(st["state"] == s))
    for key, (sample, _, scale) in PROM_MAP.items():
        want[(sample, ())] = Fraction(int(st[key]), scale)
    return want


def json_expected(raw):
    """How --json must show the bytes raw: valid UTF-8 as it is, any other
    byte as the code point of that byte (\\u00XX)."""
    s = raw.decode("utf-8", "surrogateescape")
    return "".join(chr(ord(c) - 0xdc00) if 0xdc80 <= ord(c) <= 0xdcff else c
                   for c in s)


class FakeStatsDaemon(FakeDaemon):
    """Answers every connection's first line with one canned STATS reply."""

    def __init__(self, body):
        self.body = body
        FakeDaemon.__init__(self, self._answer)

    def _answer(self, line):
        if line == b"STATS\n":
            return b"STATS %d\n" % len(self.body) + self.body
        return b"ERR UNKNOWN not STATS\n"


@scenario
def stats_formats(ctx):
    """`pubrelay stats` as a table, `--raw` (the STATS body), `--json` (every
    key, typed) and `--prometheus` (checked line by line against the text
    exposition format, values converted to base units); two format flags are a
    usage error; no daemon gives `pubrelay_up 0`."""
    import json
    import subprocess
    from fractions import Fraction

    cl = H.binary("PUBRELAY")

    def run(sock, *args):
        e = dict(os.environ)
        e.pop("PUBRELAY_SOCKET", None)
        p = subprocess.run([cl, "-s", sock, "stats"] + list(args),
                           capture_output=True, timeout=30, env=e)
        return p.returncode, p.stdout, p.stderr.decode(errors="replace")

    def raw_body(relay):
        with relay.client() as c:
            line = c.request("STATS\n")
            check(line.startswith("STATS "), "STATS reply: %r" % line)
            return c.read_exact(int(line[6:]))

    def against_daemon(relay, args, compare, what):
        """Run the client and compare its output with a STATS body read
        just before or just after it (uptime_s and clients may move in
        between: try again a few times)."""
        last = None
        for _ in range(10):
            before = raw_body(relay)
            rc, out, err = run(relay.sock, *args)
            after = raw_body(relay)
            check_eq(rc, 0, "%s: exit status (stderr %r)" % (what, err))
            check(err == "", "%s: stderr %r" % (what, err))
            for body in (before, after):
                try:
                    compare(out, body)
                    return out
                except Failure as e:
                    last = e
            time.sleep(0.3)
        raise Failure("%s: output does not match STATS: %s" % (what, last))

    relay = ctx.relay()
    with ctx.consumer() as c:
        q = c.declare(H.unique_queue("stats"))
    rc, _, err = relay.cmd("publish", "-k", q, "--lines",
                           data=b"".join(b"stats-%d\n" % i for i in range(5)))
    check_eq(rc, 0, "publish 5 lines (%s)" % err.strip())
    st = relay.wait_drained(60)
    check(st["accepted"] >= 5 and st["confirmed"] >= 5,
          "accepted/confirmed after 5 messages: %s" % H.fmt_stats(st))

    # The table: one line per key, in the daemon's order, names first.
    def cmp_table(out, body):
        lines = out.decode("utf-8").splitlines()
        names = [n for n, _ in stats_pairs(body)]
        check_eq([ln.split(" ", 1)[0] for ln in lines], names,
                 "table: the names of its lines")
        for ln, (n, v) in zip(lines, stats_pairs(body)):
            shown = ln[len(n):].strip()
            check(shown.split(" ")[0] == v.split(" ")[0],
                  "table: %s shows %r for %r" % (n, shown, v))
    table = against_daemon(relay, [], cmp_table, "stats (table)")
    ctx.note("table:\n%s" % table.decode().rstrip())

    # --raw: the body as the daemon sent it.
    def cmp_raw(out, body):
        check_eq(out, body, "--raw output")
    against_daemon(relay, ["--raw"], cmp_raw, "stats --raw")

    # --json: one object, every STATS key with its value, integers as
    # numbers, "-" as null, the string keys as strings.
    def cmp_json(out, body):
        obj = json.loads(out.decode("utf-8"))
        check(isinstance(obj, dict), "--json: not an object: %r" % obj)
        pairs = stats_pairs(body)
        check_eq(sorted(obj), sorted(n for n, _ in pairs), "--json keys")
        for n, v in pairs:
            got = obj[n]
            if v == "-":
                check(got is None, "--json %s: %r for \"-\"" % (n, got))
            elif n in STATS_STRINGS:
                check_eq(got, v, "--json %s" % n)
            else:
                check(type(got) is int, "--json %s: %r is not an integer"
                      % (n, got))
                check_eq(got, int(v), "--json %s" % n)
    out = against_daemon(relay, ["--json"], cmp_json, "stats --json")
    check_eq(json.loads(out)["state"], "connected", "--json state")

    # --prometheus: a valid exposition, the documented names and types, the
    # values of STATS in base units.
    def cmp_prom(out, body):
        series, types = check_exposition(out.decode("utf-8"))
        want = expected_series(stats_pairs(body))
        check_eq(sorted(series), sorted(want), "--prometheus series")
        for key, value in series.items():
            check(Fraction(value) == want[key], "--prometheus %s%s: %s, "
                  "want %s" % (key[0], dict(key[1]) or "", value,
                               want[key]))
        for key, (sample, typ, _) in PROM_MAP.items():
            fam = prom_family_of(sample, types)
            check_eq(types.get(fam), typ, "--prometheus type of %s" % sample)
        check_eq(types.get("pubrelay_up"), "gauge", "type of pubrelay_up")
        check_eq(types.get("pubrelay_link_state"), "gauge",
                 "type of pubrelay_link_state")
    out = against_daemon(relay, ["--prometheus"], cmp_prom,
                         "stats --prometheus")
    ctx.note("prometheus: %d lines" % len(out.splitlines()))

    # Two formats at once: a usage error, nothing on stdout.
    for args in (["--json", "--prometheus"], ["--raw", "--json"],
                 ["--prometheus", "--raw"], ["--json", "--raw", "--json"]):
        rc, out, err = run(relay.sock, *args)
        check_eq((rc, out), (64, b""), "stats %s" % " ".join(args))
        check("exclude" in err, "stats %s: stderr %r" % (" ".join(args), err))
    rc, out, _ = run(relay.sock, "--json", "--json")
    check_eq(rc, 0, "stats --json --json")

    # Daemon not reachable: exit 75; --prometheus still says pubrelay_up 0.
    rc, out, _ = run(relay.sock + ".nope", "--prometheus")
    check_eq(rc, 75, "stats --prometheus without a daemon")
    series, _ = check_exposition(out.decode("utf-8"))
    check_eq(series, {("pubrelay_up", ()): "0"},
             "stats --prometheus without a daemon")
    for args in ([], ["--json"], ["--raw"]):
        rc, out, _ = run(relay.sock + ".nope", *args)
        check_eq((rc, out), (75, b""), "stats %s without a daemon"
                 % " ".join(args))

    with ctx.consumer() as c:
        got = sorted(m[0] for m in c.drain(q))
    check_eq(got, sorted(b"stats-%d" % i for i in range(5)),
             "the 5 messages in the queue")
    check_eq(relay.term(), 0, "pubrelayd exit code after SIGTERM")

    # A daemon that sends odd things: JSON must stay valid and exact for any
    # bytes, keys the client does not know pass through in JSON and are left
    # out of Prometheus, values that do not parse are strings / left out.
    odd = (b"state sleeping\n"
           b"broker q\"uo\\te \x00\x01\x1f\x7f tab\there "
           b"\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80 "
           b"bad \xff \xc3( \xed\xa0\x80 \xc0\xaf \xf4\x90\x80\x80 \xe2\x82\n"
           b"last_error -\n"
           b"outbox_messages 007\n"
           b"backlog 12abc\n"
           b"outbox_bytes 4096\n"
           b"oldest_age_ms 1500\n"
           b"accepted 18446744073709551615\n"
           b"published 18446744073709551616\n"
           b"confirmed 3\n"
           b"confirmed 4\n"
           b"frobnications 42\n"
           b"new_string some text\n"
           b"\xff\xfekey -\n"
           b"blocked_ms 1\n"
           b"confirm_latency_count 2\n")
    fake = FakeStatsDaemon(odd)
    try:
        rc, out, err = run(fake.path, "--json")
        check_eq(rc, 0, "--json from the odd daemon (%s)" % err)
        text = out.decode("utf-8")          # strict: valid UTF-8
        obj = json.loads(text)
        raw_broker = odd.split(b"\n")[1][len(b"broker "):]
        want = {
            "state": "sleeping",
            "broker": json_expected(raw_broker),
            "last_error": None,
            "outbox_messages": "007",
            "backlog": "12abc",
            "outbox_bytes": 4096,
            "oldest_age_ms": 1500,
            "accepted": 18446744073709551615,
            "published": "18446744073709551616",
            "confirmed": 3,
            "frobnications": 42,
            "new_string": "some text",
            "\u00ff\u00fekey": None,
            "blocked_ms": 1,
            "confirm_latency_count": 2,
        }
        check_eq(obj, want, "--json from the odd daemon")
        check(all(0x20 <= ord(ch) for ch in text.replace("\n", "")),
              "--json prints raw control characters: %r" % text)
        check_eq(list(obj), list(want), "--json keeps the daemon's order")

        rc, out, err = run(fake.path, "--prometheus")
        check_eq(rc, 0, "--prometheus from the odd daemon (%s)" % err)
        series, types = check_exposition(out.decode("utf-8"))
        check_eq(series, {
            ("pubrelay_up", ()): "1",
            ("pubrelay_outbox_bytes", ()): "4096",
            ("pubrelay_oldest_message_age_seconds", ()): "1.5",
            ("pubrelay_accepted_total", ()): "18446744073709551615",
            ("pubrelay_confirmed_total", ()): "3",
            ("pubrelay_blocked_seconds_total", ()): "0.001",
            ("pubrelay_confirm_latency_seconds_count", ()): "2",
        }, "--prometheus from the odd daemon")
        check_eq(types.get("pubrelay_confirm_latency_seconds"), "summary",
                 "summary with only _count")

        rc, out, err = run(fake.path)
        check_eq(rc, 0, "table from the odd daemon (%s)" % err)
        text = out.decode("utf-8")
        check(all(0x20 <= ord(ch) < 0x7f or ord(ch) >= 0xa0
                  for ch in text.replace("\n", "")),
              "the table prints control characters: %r" % text)
        check_eq(len(text.splitlines()), len(odd.splitlines()),
                 "table: one line per line of the body")
        rc, out, err = run(fake.path, "--raw")
        check_eq((rc, out), (0, odd), "--raw from the odd daemon")

        fake.body = b""
        rc, out, err = run(fake.path, "--json")
        check_eq((rc, json.loads(out)), (0, {}), "--json of an empty body")
        rc, out, err = run(fake.path, "--prometheus")
        check_eq(rc, 0, "--prometheus of an empty body")
        check_eq(check_exposition(out.decode())[0], {("pubrelay_up", ()): "1"},
                 "--prometheus of an empty body")
    finally:
        fake.close()


# ---------------------------------------------------------------------------
# 7. allow_lists: who may publish ([socket] allow_users / allow_groups)


def run_as_nobody(args, regid="nogroup", timeout=30, groups=None):
    """The client as user nobody (no supplementary groups, or groups: a
    comma-separated list)."""
    import subprocess
    p = subprocess.run(["setpriv", "--reuid=nobody", "--regid=%s" % regid,
                        "--groups=%s" % groups if groups else
                        "--clear-groups"] + args, capture_output=True,
                       timeout=timeout, stdin=subprocess.DEVNULL)
    return p.returncode, p.stdout.decode(errors="replace"), \
        p.stderr.decode(errors="replace")


def reachable_client(relay):
    """The relay's dir opened to others, and a copy of the client in it
    (the checkout may not be reachable for nobody)."""
    import shutil
    os.chmod(relay.dir, 0o755)
    cl = os.path.join(relay.dir, "pubrelay")
    shutil.copy(H.binary("PUBRELAY"), cl)
    os.chmod(cl, 0o755)
    return cl


@scenario
def allow_lists(ctx):
    """With `allow_users = root` a client run as `nobody` gets `ERR DENIED`
    (exit 77, logged once per uid with its pid) while root publishes;
    `allow_groups` admits by primary and supplementary group; 300 refused uids
    (and one again) give 256 log lines, the last saying that further uids are
    not logged, and `clients_refused` 301. Needs root (to run a client as
    another user); fails otherwise."""
    import subprocess
    # Running a client as another user takes root: CI and the README's
    # test command run as root; elsewhere this fails rather than pass
    # without testing anything.
    check(os.geteuid() == 0, "allow_lists needs root to run a client as "
          "another user")
    relay = ctx.relay(overrides={"socket": {"mode": "0666",
                                            "allow_users": "root"}})
    cl = reachable_client(relay)
    for attempt in (1, 2):
        rc, out, err = run_as_nobody([cl, "-s", relay.sock, "publish", "-k",
                                      "x", "body"])
        ctx.note("nobody, attempt %d: exit %d, %s" % (attempt, rc,
                                                      err.strip()))
        check_eq(rc, 77, "exit code of a refused client (%s)" % err.strip())
        check("DENIED" in err, "DENIED named: %r" % err)
    # Every command: no retry turns a DENIED into an answer (77, not 75).
    for args in (["ping"], ["stats"], ["stats", "--prometheus"],
                 ["dead", "list"]):
        rc, out, err = run_as_nobody([cl, "-s", relay.sock] + args)
        check_eq(rc, 77, "exit code of a refused `%s` (%s)"
                 % (" ".join(args), err.strip()))
        check("DENIED" in err, "`%s`: DENIED named: %r"
              % (" ".join(args), err))
        if "--prometheus" in args:
            check("\npubrelay_up 0\n" in "\n" + out,
                  "--prometheus, refused: pubrelay_up 0: %r" % out)
    rc, out, err = run_as_nobody(["sh", "-c", '(sleep 0.5; echo a) | "$0" '
                                  '-s "$1" publish --lines -k x', cl,
                                  relay.sock])
    check_eq(rc, 77, "--lines refused before its first line (%s)"
             % err.strip())
    check("DENIED" in err, "--lines: DENIED named: %r" % err)
    with relay.client() as c:
        check_eq(c.ping(), "PONG", "root client next to refused ones")
        r = c.pub("root-1", [("routing-key", "nowhere")])
        check(r.startswith("OK "), "root PUB: %r" % r)
    p = subprocess.run([cl, "-s", relay.sock, "ping"], capture_output=True,
                       timeout=30)
    check_eq(p.returncode, 0, "root client exit code")
    logged = [ln for ln in relay.log_text().splitlines()
              if "uid 65534" in ln and "refused" in ln]
    check_eq(len(logged), 1, "refusals of uid 65534 logged (once): %r"
             % logged)
    check("pid " in logged[0], "the log line names the pid: %r" % logged[0])
    check_eq(relay.term(), 0, "pubrelayd exit code after SIGTERM")

    # allow_groups: the peer's gid as it connected, or a group of its uid
    # in the group database (nobody's primary group nogroup, even when it
    # runs with another gid), lets it in.
    relay = ctx.relay(name="allow_groups", overrides={"socket": {
        "mode": "0666", "allow_users": "root", "allow_groups": "nogroup"}})
    cl = reachable_client(relay)
    rc, out, err = run_as_nobody([cl, "-s", relay.sock, "ping"])
    check_eq((rc, out.strip()), (0, "PONG"),
             "nobody with gid nogroup (%s)" % err.strip())
    rc, out, err = run_as_nobody([cl, "-s", relay.sock, "ping"],
                                 regid="root")
    check_eq((rc, out.strip()), (0, "PONG"),
             "nobody with gid root, nogroup in the database (%s)"
             % err.strip())
    check_eq(relay.term(), 0, "pubrelayd exit code after SIGTERM")

    # A supplementary group the process holds (SupplementaryGroups=, sg)
    # but the database does not give its user: SO_PEERGROUPS lets it in.
    relay = ctx.relay(name="allow_peergroups", overrides={"socket": {
        "mode": "0666", "allow_users": "root", "allow_groups": "4242"}})
    cl = reachable_client(relay)
    rc, out, err = run_as_nobody([cl, "-s", relay.sock, "ping"])
    check_eq(rc, 77, "nobody without group 4242 (%s)" % err.strip())
    rc, out, err = run_as_nobody([cl, "-s", relay.sock, "ping"],
                                 groups="4242")
    check_eq((rc, out.strip()), (0, "PONG"),
             "nobody holding supplementary group 4242 (%s)" % err.strip())
    check_eq(relay.term(), 0, "pubrelayd exit code after SIGTERM")

    # Refusals are logged once per uid, for the first 256 uids: 300 uids,
    # one connection each, then the last one again: 256 lines.
    import socket as S
    relay = ctx.relay(name="allow_many", overrides={"socket": {
        "mode": "0666", "allow_users": "root"}})
    os.chmod(relay.dir, 0o755)
    uids = list(range(30000, 30300)) + [30299]
    for uid in uids:
        pid = os.fork()
        if pid == 0:
            try:
                os.setgid(uid)
                os.setuid(uid)
                c = S.socket(S.AF_UNIX, S.SOCK_STREAM)
                c.settimeout(10)
                c.connect(relay.sock)
                ok = c.recv(200).startswith(b"ERR DENIED")
                os._exit(0 if ok else 1)
            except BaseException:
                os._exit(2)
        _, status = os.waitpid(pid, 0)
        check_eq(status, 0, "uid %d refused with ERR DENIED" % uid)
    refused = [ln for ln in relay.log_text().splitlines()
               if "is not in [socket] allow_users" in ln]
    ctx.note("%d connections of %d uids refused: %d log lines, the last %r"
             % (len(uids), len(set(uids)), len(refused), refused[-1:]))
    check_eq(len(refused), 256, "refusal lines for 300 uids")
    check("further refused uids are not logged" in refused[-1],
          "the 256th line says what follows: %r" % refused[-1])
    check_eq(relay.stats().get("clients_refused"), len(uids),
             "stats clients_refused")
    check_eq(relay.term(), 0, "pubrelayd exit code after SIGTERM")


# ---------------------------------------------------------------------------
# 8. limits: max_headers, max_line, idle_timeout, max_clients, max_buffer


@scenario
def limits(ctx):
    """`max_headers`, `max_line`, `idle_timeout` (a half-sent request is
    closed, an idle connection kept, one idle after empty lines too),
    `max_clients` (`ERR LIMIT`) and `max_buffer` (a client that never reads its
    replies is paused, not buffered without bound); five client turnovers at
    `max_clients` log one warning, not five, and STATS `clients_refused` counts
    every refusal."""
    import socket as S
    relay = ctx.relay(overrides={"socket": {
        "max_headers": "2", "max_line": "512", "idle_timeout": "1s",
        "max_clients": "4", "max_buffer": "64K",
        "max_message_size": "1K"}})
    rk = [("routing-key", "nowhere")]
    a = relay.client()          # stays healthy through it all
    try:
        check_eq(a.ping(), "PONG", "client A")
        with relay.client() as b:
            r = b.pub("h3", rk + [("header", "a=1"), ("header", "b=2"),
                                  ("header", "c=3")])
            check(r.startswith("ERR BADREQ") and "max_headers" in r,
                  "3 headers over max_headers 2: %r" % r)
            check_eq(b.request("RESET\n"), "OK", "RESET after max_headers")
            r = b.pub("h2", rk + [("header", "a=1"), ("header", "b=2")])
            check(r.startswith("OK "), "2 headers: %r" % r)
            r = b.pub("long", rk + [("header", "a=" + "x" * 600)])
            check(r.startswith("ERR PROTO") and "512" in r,
                  "property line over max_line: %r" % r)
            check(b.closed_by_peer(5), "connection kept after ERR PROTO")

        # idle_timeout: only a half-sent request is timed out.
        with relay.client() as idle, relay.client() as half:
            half.send("PUB 5\nrouting-key: x\n")
            time.sleep(2.5)
            r = half.read_line()
            check(r is not None and r.startswith("ERR PROTO") and
                  "idle" in r, "half-sent request after idle_timeout: %r"
                  % r)
            check(half.closed_by_peer(5), "half-sent connection kept")
            check_eq(idle.ping(), "PONG", "idle connection between "
                     "requests after idle_timeout")
        # Empty lines after a request are between requests too.
        with relay.client() as blank, relay.client() as crlf:
            blank.send("PING\n\n")
            check_eq(blank.read_line(), "PONG", "PING with an empty line")
            r = crlf.pub("b", rk)
            check(r.startswith("OK "), "PUB: %r" % r)
            crlf.send("\r\n\n")
            time.sleep(2.5)
            check_eq(blank.ping(), "PONG", "a connection idle after an empty "
                     "line, past idle_timeout")
            check_eq(crlf.ping(), "PONG", "a connection idle after empty "
                     "lines (CRLF, LF), past idle_timeout")
            # The log names who is behind the connection it closed.
            check(re.search(r"info: client \d+ \(uid %d, pid %d\): partial "
                            r"request idle" % (os.getuid(), os.getpid()),
                            relay.log_text()),
                  "the idle_timeout line names the client's uid and pid")
        check_eq(a.ping(), "PONG", "client A after the timeout")

        # max_clients = 4: A and three more; the fifth gets ERR LIMIT.
        extra = [relay.client() for _ in range(3)]
        try:
            for c in extra:
                check_eq(c.ping(), "PONG", "client under max_clients")
            with relay.client() as over:
                r = over.read_line()
                check(r is not None and r.startswith("ERR LIMIT"),
                      "client over max_clients: %r" % r)
            # The client names the LIMIT it was sent, not the broken pipe
            # of a request sent after the daemon closed: 75, try later.
            import subprocess
            for args in (["ping"], ["stats"], ["publish", "-k", "x", "b"]):
                p = subprocess.run([H.binary("PUBRELAY"), "-s", relay.sock]
                                   + args, capture_output=True, timeout=30)
                err = p.stderr.decode(errors="replace")
                check_eq(p.returncode, 75, "`%s` over max_clients (%s)"
                         % (" ".join(args), err.strip()))
                check("LIMIT" in err, "`%s` over max_clients names LIMIT: "
                      "%r" % (" ".join(args), err))
            # --lines connects before its first line: the LIMIT comes
            # with no request out, and still means 75.
            p = subprocess.run(["sh", "-c", '(sleep 0.5; echo a) | "$0" -s '
                                '"$1" publish --lines -k x',
                                H.binary("PUBRELAY"), relay.sock],
                               capture_output=True, timeout=30)
            err = p.stderr.decode(errors="replace")
            check_eq(p.returncode, 75, "--lines over max_clients, slow "
                     "input (%s)" % err.strip())
            check("LIMIT" in err, "--lines names LIMIT: %r" % err)

            # Clients coming and going at the limit: one warning, not one
            # per turnover (an accept used to start a new episode).
            slot_refused = [0]

            def take_slot():
                for _ in range(200):
                    c = relay.client()
                    try:
                        if c.ping() == "PONG":
                            return c
                    except Exception:
                        pass
                    slot_refused[0] += 1
                    c.close()
                    time.sleep(0.05)
                raise Failure("no free slot after a client left")
            for i in range(5):
                with relay.client() as over:
                    r = over.read_line()
                    check(r is not None and r.startswith("ERR LIMIT"),
                          "client over max_clients, turnover %d: %r"
                          % (i, r))
                extra[i % 3].close()
                extra[i % 3] = take_slot()
            lines = [ln for ln in relay.log_text().splitlines()
                     if "max_clients (4) reached" in ln]
            check_eq(len(lines), 1, "max_clients lines after 5 turnovers "
                     "at the limit (%r)" % lines)
            # Every connection refused with LIMIT is counted: the raw one,
            # three commands, --lines, five turnovers, and the attempts
            # on a slot the daemon had not freed yet.  STATS is asked on
            # a connection already in, so that asking refuses nobody.
            st = extra[0].stats()
            check_eq(st.get("clients_refused"), 10 + slot_refused[0],
                     "stats clients_refused")
        finally:
            for c in extra:
                c.close()
        # Room for the next client once the daemon has seen the closes (A
        # and the STATS connection itself remain).
        relay.wait_stats(lambda s: int(s.get("clients", 99)) <= 2, 10,
                         "the daemon to see three clients close")

        # max_buffer: a client that sends and never reads ends up blocked
        # in send() instead of growing the daemon's buffers without bound.
        hog = S.socket(S.AF_UNIX, S.SOCK_STREAM)
        hog.connect(relay.sock)
        hog.setblocking(False)
        chunk = b"PING\n" * 4096
        sent = 0
        deadline = time.monotonic() + 20
        stuck_since = None
        while sent < 64 * 1024 * 1024 and time.monotonic() < deadline:
            try:
                # after a partial send, go on from the byte that follows
                sent += hog.send(chunk[sent % 5:])
                stuck_since = None
            except BlockingIOError:
                if stuck_since is None:
                    stuck_since = time.monotonic()
                elif time.monotonic() - stuck_since > 1.0:
                    break
                time.sleep(0.01)
        ctx.note("non-reading client got %d bytes in before send blocked"
                 % sent)
        # What may be in flight: max_buffer of requests read and of replies
        # held (64K each, twice for slack), plus the kernel's socket
        # buffers both ways.  The 4M default instead of 64K would exceed it.
        sndbuf = hog.getsockopt(S.SOL_SOCKET, S.SO_SNDBUF)
        bound = 4 * 64 * 1024 + 2 * sndbuf
        check(sent < bound, "the daemon read %d bytes (bound %d) from a "
              "client that does not read its replies" % (sent, bound))
        check_eq(a.ping(), "PONG", "client A while another one is backed up")
        # Every PING is still answered, in full, once it reads.
        hog.setblocking(True)
        hog.settimeout(10)
        want = (sent // 5) * 5
        got = 0
        while got < want:
            data = hog.recv(1 << 20)
            check(data, "EOF after %d of %d reply bytes" % (got, want))
            got += len(data)
        check_eq(got, want, "reply bytes for the PINGs sent")
        hog.close()
        check_eq(a.ping(), "PONG", "client A at the end")
    finally:
        a.close()
    check(relay.alive(), "pubrelayd died")
    check_eq(relay.term(), 0, "pubrelayd exit code after SIGTERM")


def connect_as(path, uid, timeout=10):
    """A RawClient on a connection made by a process running as uid (and
    gid uid): SO_PEERCRED reports whoever called connect(), so the daemon
    sees uid although this process goes on to use the socket."""
    import socket as S
    here, there = S.socketpair(S.AF_UNIX, S.SOCK_STREAM)
    pid = os.fork()
    if pid == 0:
        try:
            here.close()
            os.setgroups([])
            os.setgid(uid)
            os.setuid(uid)
            c = S.socket(S.AF_UNIX, S.SOCK_STREAM)
            c.connect(path)
            S.send_fds(there, [b"x"], [c.fileno()])
            os._exit(0)
        except BaseException:
            os._exit(1)
    there.close()
    try:
        here.settimeout(timeout)
        _, fds, _, _ = S.recv_fds(here, 16, 1)
    finally:
        here.close()
        _, status = os.waitpid(pid, 0)
    check(status == 0 and len(fds) == 1, "connect as uid %d (status %d)"
          % (uid, status))
    c = H.RawClient.__new__(H.RawClient)
    c.path, c.buf, c.eof = path, b"", False
    c.sock = S.socket(fileno=fds[0])
    c.sock.settimeout(timeout)
    return c


@scenario
def user_limits(ctx):
    """[socket] max_clients_per_user and [outbox] max_bytes_per_user, with
    clients of two uids: one at its limits, the other unaffected.

    Clients of two uids (connected by a child run as each): with
    `max_clients_per_user = 2` the third client of uid A gets `ERR LIMIT`
    naming its uid and the key (5 refusals, one log line, `clients_refused` 5)
    while uid B connects and publishes, and A gets in again once one of its
    clients left; with `max_bytes_per_user = 2K` and the broker stopped, A gets
    `ERR FULL` naming its uid and the key, on each of its connections (one log
    line), while B gets OK; after the drain A gets OK again, and every OK'd
    message is delivered once. Needs root; fails otherwise."""
    check(os.geteuid() == 0, "user_limits needs root to connect as other "
          "uids")
    A, B = 30500, 30501
    with ctx.consumer() as c:
        q = c.declare(H.unique_queue("users"))
    rk = [("routing-key", q)]
    relay = ctx.relay(overrides={"socket": {"mode": "0666",
                                            "max_clients_per_user": "2"},
                                 "outbox": {"max_bytes_per_user": "2K"}})
    os.chmod(relay.dir, 0o755)
    oked = []                   # bodies that got OK: all must arrive

    def pub(c, body):
        r = c.pub(body, rk)
        if r.startswith("OK "):
            oked.append(body.encode())
        return r

    def limit_lines():
        return [ln for ln in relay.log_text().splitlines()
                if "max_clients_per_user (2)" in ln]

    # Connections: A at 2 is refused, B is not; refusals logged once.
    a1, a2 = connect_as(relay.sock, A), connect_as(relay.sock, A)
    b1 = connect_as(relay.sock, B)
    try:
        for c in (a1, a2, b1):
            check_eq(c.ping(), "PONG", "client under max_clients_per_user")
        for i in range(5):
            with connect_as(relay.sock, A) as over:
                r = over.read_line()
                check(r is not None and r.startswith("ERR LIMIT") and
                      "uid %d" % A in r and "max_clients_per_user 2" in r,
                      "third client of uid %d (%d): %r" % (A, i, r))
                check(over.closed_by_peer(5), "refused connection closed")
        with connect_as(relay.sock, B) as b2:
            check_eq(b2.ping(), "PONG", "uid %d's second client while uid %d "
                     "is at its limit" % (B, A))
            r = pub(b2, "B-first")
            check(r.startswith("OK "), "uid %d publishes: %r" % (B, r))
        check_eq(a1.ping(), "PONG", "uid %d's clients kept" % A)
        lines = limit_lines()
        check_eq(len(lines), 1, "LIMIT lines for 5 refusals (%r)" % lines)
        check("uid %d" % A in lines[0], "the line names the uid: %r"
              % lines[0])
        check_eq(relay.stats().get("clients_refused"), 5,
                 "stats clients_refused")
        # A slot given back is A's again.
        a2.close()
        relay.wait_stats(lambda s: s.get("clients") == 3, 10,
                         "the daemon to see a client of uid %d close" % A)
        a2 = connect_as(relay.sock, A)
        check_eq(a2.ping(), "PONG", "uid %d again once a client left" % A)

        # Bytes: with the broker stopped nothing drains.  A fills its 2K
        # share and gets FULL; B goes on.
        before = len(oked)
        ctx.broker.stop_app()
        try:
            relay.wait_stats(lambda s: s.get("state") != "connected", 30,
                             "the link to go down")
            r = None
            for i in range(100):
                r = pub(a1, "A-%04d-%s" % (i, "x" * 90))
                if not r.startswith("OK "):
                    break
            n_a = len([b for b in oked if b.startswith(b"A-")])
            ctx.note("uid %d: %d messages in before %r" % (A, n_a, r))
            check(r.startswith("ERR FULL") and "uid %d" % A in r and
                  "max_bytes_per_user" in r, "PUB over the share: %r" % r)
            check(5 < n_a < 30, "uid %d got %d messages of ~110 bytes into "
                  "a 2K share" % (A, n_a))
            r = pub(a2, "A-%04d-%s" % (999, "z" * 90))
            check(r.startswith("ERR FULL"), "the share is the uid's, not "
                  "the connection's: %r" % r)
            # B under its own share (also 2K): every one gets OK.
            for i in range(10):
                r = pub(b1, "B-%04d-%s" % (i, "y" * 30))
                check(r.startswith("OK "), "uid %d PUB %d while uid %d is "
                      "over its share: %r" % (B, i, A, r))
            for c in (a1, a2):
                check_eq(c.request("RESET\n"), "OK", "RESET")
                r = pub(c, "A-%04d-%s" % (998, "w" * 90))
                check(r.startswith("ERR FULL"), "still full: %r" % r)
                check_eq(c.request("RESET\n"), "OK", "RESET")
            st = relay.stats()
            check_eq(st.get("refused"), 4, "stats refused: each FULL")
            check_eq(st.get("backlog"), len(oked) - before,
                     "backlog = messages OK'd with the broker stopped")
            full = [ln for ln in relay.log_text().splitlines()
                    if "outbox share full" in ln]
            check_eq(len(full), 1, "share-full lines for 4 refusals (%r)"
                     % full)
            check("uid %d" % A in full[0], "the line names the uid: %r"
                  % full[0])
        finally:
            ctx.broker.start_app()
        # Drained: A is accepted again.
        relay.wait_drained(60)
        for i in range(5):
            r = pub(a1, "A-after-%d" % i)
            check(r.startswith("OK "), "uid %d after the drain: %r" % (A, r))
        relay.wait_drained(60)
    finally:
        for c in (a1, a2, b1):
            c.close()
    with ctx.consumer() as c:
        got = [m[0] for m in c.drain(q)]
    ctx.note("%d OK'd, %d delivered" % (len(oked), len(got)))
    check_eq(sorted(got), sorted(oked), "delivered = OK'd, once each")
    check_eq(relay.term(), 0, "pubrelayd exit code after SIGTERM")


@scenario
def uri_order(ctx):
    """[broker] uri_order.  Four uris name the same node as four users, so
    the user of the relay's connection (rabbitmqctl list_connections, the
    broker's own view) tells which uri it took.
    ordered: the relay connects with the first uri, and logs the order as
    written.  shuffle: under eight host names (each pubrelayd in its own UTS
    namespace, needs root) the logged order is a permutation of the uris,
    the same on a restart under the same name, the connection is made with
    its first uri, a message goes through, and the eight hosts do not all
    pick the same first node.

    Four `uri` keys name the same node as four users, so the connection's user
    (`rabbitmqctl list_connections`) shows which was taken. `ordered` (the
    default): the first uri, and the order logged as written. `shuffle`, eight
    relays each under its own host name (a UTS namespace, needs root): the
    logged order is a permutation, the connection is made with its first uri, a
    message goes through, the same order and first uri after a restart (read
    from the restart's own log line), every relay exits 0, and the eight do not
    all start with the same uri."""
    b = ctx.broker
    users = ["order%d" % i for i in range(4)]
    for u in users:
        b.add_user(u, "pw-" + u)
    uris = [b.uri(user=u, password="pw-" + u) for u in users]
    order_re = re.compile(r"broker uris, in the order tried \((.*?)\): (.*)")
    q = H.unique_queue("uri-order")
    with ctx.consumer() as c:
        c.declare(q)

    def conn_users():
        out = b.ctl("list_connections", "user", "--no-table-headers",
                    "--quiet").stdout.decode()
        return sorted(ln.strip() for ln in out.splitlines()
                      if ln.strip().startswith("order"))

    def logged_order(relay, since=0):
        """The last order line the relay logged after offset since of its
        log (a restart appends to the same file)."""
        m = None
        for ln in relay.log_text()[since:].splitlines():
            m = order_re.search(ln) or m
        check(m is not None, "no 'broker uris, in the order tried' line "
              "in %s" % relay.logpath)
        got = [re.search(r"//(order\d)", u).group(1)
               for u in m.group(2).split(", ")]
        return m.group(1), got

    def connected(relay):
        st = relay.wait_stats(lambda s: s.get("state") == "connected", 30,
                              "the relay connected")
        wait_until_users = time.monotonic() + 20
        while conn_users() == [] and time.monotonic() < wait_until_users:
            time.sleep(0.1)
        got = conn_users()
        check_eq(len(got), 1, "connections on the node (%s)" % got)
        check(got[0] in str(st.get("broker")), "STATS broker %s is not the "
              "connection's user %s" % (st.get("broker"), got[0]))
        return got[0]

    try:
        # ordered (the default): the first uri, order logged as written
        relay = ctx.relay(name="ordered", uri=uris,
                          overrides={"log": {"level": "info"}})
        check_eq(connected(relay), users[0], "ordered: connection user")
        how, got = logged_order(relay)
        check_eq((how, got), ("as written", users), "ordered: logged order")
        check_eq(relay.term(), 0, "ordered: exit code")

        # shuffle: one relay per host name
        real = H.binary("PUBRELAYD")
        firsts = {}
        for i in range(8):
            host = "relay-host-%d" % i
            relay = H.Relay(b, "shuffle-%d" % i, uri=uris, overrides={
                "broker": {"uri_order": "shuffle"},
                "log": {"level": "info"}})
            ctx.relays.append(relay)
            wrapper = os.path.join(relay.dir, "in-uts-ns")
            with open(wrapper, "w") as f:
                f.write("#!/bin/sh\nexec unshare --uts /bin/sh -c "
                        "'hostname \"$0\" && exec \"$@\"' %s %s \"$@\"\n"
                        % (host, real))
            os.chmod(wrapper, 0o755)
            relay.bin = wrapper
            relay.start()
            user = connected(relay)
            how, got = logged_order(relay)
            check_eq(how, "shuffled for this host", "%s: order kind" % host)
            check_eq(sorted(got), users, "%s: a permutation" % host)
            check_eq(user, got[0], "%s: connected with its first uri" % host)
            with relay.client() as cl:
                r = cl.pub(host.encode(), [("routing-key", q)])
                check(r.startswith("OK"), "%s: PUB answered %r" % (host, r))
            relay.wait_drained(30)
            if i < 2:
                check_eq(relay.term(), 0, "%s: exit code" % host)
                mark = len(relay.log_text())
                relay.start()
                check_eq(connected(relay), user, "%s: first uri after a "
                         "restart" % host)
                check_eq(logged_order(relay, mark)[1], got, "%s: order "
                         "after a restart" % host)
            check_eq(relay.term(), 0, "%s: exit code" % host)
            firsts[host] = user
        ctx.note("first uri per host: %s" % firsts)
        check(len(set(firsts.values())) >= 2, "eight hosts all start "
              "with the same uri: %s" % firsts)
        with ctx.consumer() as c:
            bodies = sorted(m[0].decode() for m in c.drain(q))
            c.ch.queue_delete(queue=q)
        check_eq(bodies, sorted(firsts), "one message per host arrived")
    finally:
        for r in ctx.relays:
            if r.alive():
                r.kill()
        for u in users:
            b.ctl("delete_user", u, check=False)


# ---------------------------------------------------------------------------
# Driver


sanitizer_reports = S.sanitizer_reports


# ---------------------------------------------------------------------------
# Receipts: publish --confirm, wait (issue #20)


def lines_data(lines):
    return ("\n".join(lines) + "\n").encode()


@scenario
def confirm_basic(ctx):
    """`pubrelay publish --confirm` exits 0 and the message is already in the
    queue when the command returns (a passive declare right after, no sleep);
    `--lines --confirm` with 200 lines exits 0 with all 200 in the queue when
    it returns, each arriving exactly once, in order, persistent."""
    N = 200
    relay = ctx.relay()
    with ctx.consumer() as c:
        q = c.declare(H.unique_queue("confirm"))
        rc, out, err = relay.cmd("publish", "-k", q, "--confirm",
                                 "--print-id", "single")
        check_eq(rc, 0, "publish --confirm exit code (stderr %r)" % err)
        check(out.strip() != "", "--print-id printed no message-id")
        check_eq(c.count(q), 1, "messages queued when publish --confirm "
                 "returned")
        t0 = time.monotonic()
        rc, out, err = relay.cmd("publish", "-k", q, "--lines", "--confirm",
                                 "--print-id",
                                 data=lines_data(lines_for(1, N)))
        ctx.note("%d lines confirmed in %.2fs" % (N, time.monotonic() - t0))
        check_eq(rc, 0, "publish --lines --confirm exit code (stderr %r)"
                 % err)
        check_eq(len(out.splitlines()), N, "--print-id ids for %d lines" % N)
        check_eq(c.count(q), N + 1, "messages queued when publish --lines "
                 "--confirm returned")
    relay.wait_drained(60)
    with ctx.consumer() as c:
        msgs = c.drain(q)
    H.check_delivery(msgs, {1: N}, allow_dups=False, foreign=1,
                     persistent=True, note=ctx.note)
    check_eq(relay.term(), 0, "pubrelayd exit code after SIGTERM")


@scenario
def confirm_timeout(ctx):
    """With the broker's app stopped, `publish --confirm=2s` exits 75 within a
    few seconds, saying the message stays queued; after `start_app` that
    message arrives, once."""
    relay = ctx.relay()
    with ctx.consumer() as c:
        q = c.declare(H.unique_queue("confirmto"))
    ctx.broker.stop_app()
    try:
        wait_link_down(ctx, relay)
        t0 = time.monotonic()
        rc, out, err = relay.cmd("publish", "-k", q, "--confirm=2s",
                                 "--print-id", H.seq_line(1, 0))
        took = time.monotonic() - t0
        ctx.note("--confirm=2s with the broker down: exit %d after %.1fs: "
                 "%s" % (rc, took, err.strip()))
        check_eq(rc, 75, "publish --confirm=2s exit code with the broker "
                 "down (stderr %r)" % err)
        check(1.5 <= took < 6, "publish --confirm=2s returned after %.1fs"
              % took)
        mid = out.strip()
        check(mid != "", "--print-id printed no message-id")
        check("%s not confirmed within 2s" % mid in err and "queued" in err,
              "stderr does not say the message stays queued: %r" % err)
    finally:
        ctx.broker.start_app()
    relay.wait_drained(60)
    with ctx.consumer() as c:
        msgs = c.drain(q)
    per, _ = H.check_delivery(msgs, {1: 1}, allow_dups=False,
                              note=ctx.note)
    check_eq(per[1][0][1], mid, "message-id of the delivered message")
    check_eq(relay.term(), 0, "pubrelayd exit code after SIGTERM")


@scenario
def confirm_parked(ctx):
    """max_attempts = 1.  `publish --confirm` to a missing exchange exits 65
    and names the 404; a `--mandatory` message nobody receives exits 65 and
    names the 312; `--lines --confirm` of three such lines exits 65 and
    reports each by line number; `pubrelay wait` then exits 65 counting the
    five dead letters, and `dead list` shows them.  The first carried an
    idempotency key: once purged, sending it again with the key gets
    "parked: purged", exit 65 (it was never confirmed), and stores
    nothing."""
    relay = ctx.relay(overrides={"publish": {"max_attempts": "1"}})
    with ctx.consumer() as c:
        q = c.declare(H.unique_queue("parked"))
    key = q + "-nobody"
    idem = ["--idempotency-key", q + "-first"]
    rc, out, err = relay.cmd("publish", "-e", "no_such_exchange", "-k", key,
                             "--confirm=20s", "--print-id", *idem,
                             "to nowhere")
    ctx.note("missing exchange: exit %d: %s" % (rc, err.strip()))
    check_eq(rc, 65, "publish --confirm to a missing exchange (stderr %r)"
             % err)
    mid = out.strip()
    check(("%s parked: " % mid) in err and "404" in err,
          "stderr does not name the message and the 404: %r" % err)

    rc, out, err = relay.cmd("publish", "-e", "amq.direct", "-k", key,
                             "--mandatory", "--confirm=20s", "unroutable")
    ctx.note("unroutable: exit %d: %s" % (rc, err.strip()))
    check_eq(rc, 65, "publish --mandatory --confirm, unroutable (stderr %r)"
             % err)
    check("parked: " in err and "312" in err,
          "stderr does not name the 312: %r" % err)

    rc, out, err = relay.cmd("publish", "-e", "amq.direct", "-k", key,
                             "--mandatory", "--confirm=20s", "--lines",
                             data=b"a\nb\nc\n")
    check_eq(rc, 65, "publish --lines --confirm of 3 unroutable lines "
             "(stderr %r)" % err)
    for n in (1, 2, 3):
        check(("(line %d) parked: " % n) in err, "line %d not reported as "
              "parked: %r" % (n, err))

    rc, out, err = relay.cmd("wait", "--timeout", "30s")
    check_eq(rc, 65, "wait after 5 parked messages (stderr %r)" % err)
    check("5 dead letters" in err, "wait does not count 5 dead letters: %r"
          % err)
    with relay.client() as cl:
        rows = cl.dead_list_all()
    check_eq(len(rows), 5, "dead letters listed")

    rc, _, err = relay.cmd("dead", "purge", rows[0]["id"])
    check_eq(rc, 0, "dead purge of the first (stderr %r)" % err)
    rc, out, err = relay.cmd("publish", "-e", "no_such_exchange", "-k", key,
                             "--confirm=20s", "--print-id", *idem,
                             "to nowhere")
    ctx.note("its key again after the purge: exit %d: %s"
             % (rc, err.strip()))
    check_eq(rc, 65, "the purged message's key again with --confirm "
             "(stderr %r)" % err)
    check_eq(out.strip(), mid, "the repeat's message-id")
    check(("%s parked: purged" % mid) in err,
          "stderr does not say it was purged: %r" % err)
    with relay.client() as cl:
        check_eq(len(cl.dead_list_all()), 4, "dead letters after the purge "
                 "and the repeat")
    check_eq(relay.term(), 0, "pubrelayd exit code after SIGTERM")


@scenario
def confirm_retried(ctx):
    """max_attempts = 3 (the default), retries 300 ms apart.  A message to a
    missing exchange is refused, parked, retried by the relay under a new
    id and refused again until no attempt is left.  `pubrelay wait`, started
    after it was accepted, and `publish --confirm` of a second such message
    both exit 65 only once the dead letter is parked for good: `dead list`
    then shows each with its 3 attempts, and `status` of the first id says
    parked.  Proves: a park with retries left is no fate for a receipt or a
    barrier (a barrier used to see the row leave the outbox and answer OK 0
    while the relay still retried it)."""
    import subprocess
    relay = ctx.relay(overrides={
        "publish": {"max_attempts": "3"},
        "broker": {"reconnect_min": "300ms", "reconnect_max": "300ms"}})
    rc, out, err = relay.cmd("publish", "-e", "no_such_exchange", "-k", "x",
                             "--print-id", "first")
    check_eq(rc, 0, "publish without --confirm (stderr %r)" % err)
    first = out.strip()
    waiter = subprocess.Popen([H.binary("PUBRELAY"), "-s", relay.sock,
                               "wait", "--timeout", "30s"],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True)
    try:
        # The WAIT is in before the second message (a slow start of the
        # client, under the sanitizers, must not put it after).
        relay.wait_stats(lambda st: st.get("receipts_waiting", 0) >= 1 or
                         waiter.poll() is not None, 30,
                         "the wait registered (or done)")
        rc, out, err = relay.cmd("publish", "-e", "no_such_exchange", "-k",
                                 "x", "--confirm=30s", "--print-id", "second")
        second = out.strip()
        with relay.client() as cl:
            rows = {r["message_id"]: r for r in cl.dead_list_all()}
        check_eq(rc, 65, "publish --confirm, refused 3 times (stderr %r)"
                 % err)
        check(second in rows and rows[second]["attempts"] == 3,
              "--confirm returned before the last attempt of %s: dead "
              "letters %r" % (second, rows))
        wout, werr = waiter.communicate(timeout=60)
        with relay.client() as cl:
            rows = cl.dead_list_all()
    finally:
        if waiter.poll() is None:
            waiter.kill()
            waiter.wait()
    check_eq(waiter.returncode, 65, "wait (stderr %r)" % werr)
    check("1 dead letter" in werr,
          "wait does not count the one dead letter before it: %r" % werr)
    check_eq(sorted(r["attempts"] for r in rows), [3, 3],
             "two dead letters, 3 attempts each: %r" % rows)
    rc, out, err = relay.cmd("status", first)
    check(out.startswith("parked"), "status %s: %r %r" % (first, out, err))
    check_eq(relay.term(), 0, "pubrelayd exit code after SIGTERM")


@scenario
def wait_barrier(ctx):
    """With the broker's app stopped, 500 lines are published without
    --confirm (exit 0); `pubrelay wait --timeout 1s` exits 75; `pubrelay wait
    --timeout 60s` started then has not returned 2 s later; after
    `start_app` it exits 0 and at that moment the queue holds all 500, which
    arrive exactly once, in order."""
    import subprocess
    N = 500
    relay = ctx.relay()
    with ctx.consumer() as c:
        q = c.declare(H.unique_queue("waitbar"))
    ctx.broker.stop_app()
    waiter = None
    try:
        wait_link_down(ctx, relay)
        rc, out, err = relay.cmd("publish", "-k", q, "--lines",
                                 data=lines_data(lines_for(1, N)))
        check_eq(rc, 0, "publish --lines with the broker down (stderr %r)"
                 % err)
        t0 = time.monotonic()
        rc, out, err = relay.cmd("wait", "--timeout", "1s")
        took = time.monotonic() - t0
        check_eq(rc, 75, "wait --timeout 1s with the broker down (stderr "
                 "%r)" % err)
        check(0.8 <= took < 5, "wait --timeout 1s returned after %.1fs"
              % took)
        waiter = H.spawn([H.binary("PUBRELAY"), "-s", relay.sock, "wait",
                          "--timeout", "60s"], stdin=subprocess.DEVNULL,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 2
        while time.monotonic() < deadline:
            if waiter.poll() is not None:
                raise Failure("wait returned %s with the broker down: %r"
                              % (waiter.returncode, waiter.stderr.read()))
            time.sleep(0.05)
    except BaseException:
        if waiter is not None:
            H.reap(waiter, timeout=0)
        raise
    finally:
        ctx.broker.start_app()
    with ctx.consumer() as c:
        try:
            _, err = waiter.communicate(timeout=60)
        finally:
            rc = H.reap(waiter, timeout=5)
        n = c.count(q)
        check_eq(rc, 0, "wait exit code once the broker is back (stderr %r)"
                 % err)
        check_eq(n, N, "messages queued when wait returned")
        msgs = c.drain(q)
    H.check_delivery(msgs, {1: N}, allow_dups=False, note=ctx.note)
    check_eq(relay.term(), 0, "pubrelayd exit code after SIGTERM")


@scenario
def confirm_pipelined(ctx):
    """A raw client sends 100 requests in one write, PUB with confirm:, PUB,
    PING in turn: the replies come in request order, CONFIRMED for the first
    kind, OK for the second, PONG.  Then, with the broker's app stopped, a
    client's `confirm: 4000` PUB and the PING after it wait while another
    client's plain PUBs are answered OK at once; the first gets TIMEOUT with
    the same message-id the deliveries carry, then PONG.  Everything
    arrives once the broker is back."""
    relay = ctx.relay()
    with ctx.consumer() as c:
        q = c.declare(H.unique_queue("pipeconf"))
    reqs, kinds, seq = [], [], 0
    for i in range(100):
        if i % 3 == 2:
            reqs.append(b"PING\n")
            kinds.append("PONG")
            continue
        props = [("routing-key", q)]
        if i % 3 == 0:
            props.append(("confirm", "20000"))
        reqs.append(H.encode_pub(H.seq_line(1, seq), props))
        kinds.append("CONFIRMED" if i % 3 == 0 else "OK")
        seq += 1
    with relay.client(timeout=30) as cl:
        cl.send(b"".join(reqs))
        replies = [cl.read_line() for _ in reqs]
    bad = [(i, want, got) for i, (want, got) in enumerate(zip(kinds, replies))
           if got is None or got.split(" ")[0] != want
           or (want != "PONG" and len(got.split(" ")) != 2)]
    check(not bad, "replies out of order or of the wrong kind (request, "
          "wanted, got): %r" % bad[:5])

    ctx.broker.stop_app()
    try:
        wait_link_down(ctx, relay)
        a = relay.client(timeout=30)
        b = relay.client(timeout=10)
        try:
            a.send(H.encode_pub(H.seq_line(2, 0), [("routing-key", q),
                                                   ("confirm", "4000")])
                   + b"PING\n")
            t0 = time.monotonic()
            for i in range(20):
                rep = b.pub(H.seq_line(3, i), [("routing-key", q)])
                check(rep.startswith("OK "), "plain PUB %d while a receipt "
                      "waits: %r" % (i, rep))
            took = time.monotonic() - t0
            check(took < 2, "20 plain PUBs took %.1fs while a receipt "
                  "waited" % took)
            a.sock.settimeout(0.2)
            try:
                early = a.sock.recv(100)
            except OSError:
                early = b""
            check_eq(early, b"", "a reply before the receipt's time was up")
            a.sock.settimeout(30)
            rep = a.read_line()
            took = time.monotonic() - t0
            check(rep is not None and rep.startswith("TIMEOUT "),
                  "reply to the confirm PUB with the broker down: %r" % rep)
            check(3 <= took < 10, "TIMEOUT after %.1fs, want about 4" % took)
            check_eq(a.read_line(), "PONG", "reply to the PING after it")
            timed_out_id = rep.split(" ", 1)[1]
        finally:
            a.close()
            b.close()
    finally:
        ctx.broker.start_app()
    relay.wait_drained(60)
    with ctx.consumer() as c:
        msgs = c.drain(q)
    per, _ = H.check_delivery(msgs, {1: seq, 2: 1, 3: 20}, allow_dups=False,
                              note=ctx.note)
    check_eq(per[2][0][1], timed_out_id, "message-id of the message whose "
             "receipt timed out")
    check_eq(relay.term(), 0, "pubrelayd exit code after SIGTERM")


@scenario
def status_query(ctx):
    """max_attempts = 1.  `pubrelay status` of a message confirmed by
    `publish --confirm` prints "confirmed <id>" and exits 0; of one parked
    at a missing exchange "parked <id>: ..." naming the 404, exit 65; both
    again after a relay restart.  With the broker's app stopped a new
    message is "queued", exit 75, and "confirmed" once delivered.  An id
    never given out, another instance's, a --message-id of the client's
    own and a purged dead letter are "unknown", exit 66 (B, replayed by
    `dead retry` and parked again under a new id, is found by its own id
    until purged under the new one).  Raw STATUS gets
    exactly CONFIRMED/PARKED/QUEUED/UNKNOWN <id>; STATUS without an id or
    with one over 255 bytes is ERR BADREQ."""
    relay = ctx.relay(overrides={"publish": {"max_attempts": "1"}})
    with ctx.consumer() as c:
        q = c.declare(H.unique_queue("status"))

    def status(mid, want_rc, word):
        rc, out, err = relay.cmd("status", mid)
        check_eq(rc, want_rc, "status %s: exit code (stdout %r, stderr %r)"
                 % (mid, out, err))
        want = "%s %s" % (word, mid)
        check(out == want + "\n" or (word == "parked" and
                                     out.startswith(want + ": ")),
              "status %s: stdout %r, want %r" % (mid, out, want))
        return out

    def raw(req):
        with relay.client() as cl:
            return cl.request(req)

    rc, out, err = relay.cmd("publish", "-k", q, "--confirm=20s",
                             "--print-id", "A")
    check_eq(rc, 0, "publish --confirm A (stderr %r)" % err)
    a = out.strip()
    rc, out, err = relay.cmd("publish", "-e", "no_such_exchange", "-k", q,
                             "--confirm=20s", "--print-id", "B")
    check_eq(rc, 65, "publish --confirm B to a missing exchange (stderr %r)"
             % err)
    b = out.strip()
    instance, _, b_row = b.rpartition("-")
    check(re.fullmatch(r"[0-9a-f]{16}", instance) is not None
          and b_row.isdigit() and a.startswith(instance + "-"),
          "generated ids %r and %r are not <instance>-<row id>" % (a, b))

    def a_and_b(when):
        status(a, 0, "confirmed")
        out = status(b, 65, "parked")
        check("404" in out, "status of B %s does not name the 404: %r"
              % (when, out))
        check_eq(raw("STATUS %s\n" % a), "CONFIRMED %s" % a,
                 "raw STATUS of A %s" % when)
        line = raw("STATUS %s\n" % b)
        check(line.startswith("PARKED %s " % b) and "404" in line,
              "raw STATUS of B %s: %r" % (when, line))

    a_and_b("before a restart")
    check_eq(relay.term(), 0, "pubrelayd exit code after SIGTERM")
    relay.restart()
    a_and_b("after a restart")

    ctx.broker.stop_app()
    try:
        wait_link_down(ctx, relay)
        rc, out, err = relay.cmd("publish", "-k", q, "--print-id", "C")
        check_eq(rc, 0, "publish C with the broker down (stderr %r)" % err)
        cid = out.strip()
        status(cid, 75, "queued")
        check_eq(raw("STATUS %s\n" % cid), "QUEUED %s" % cid,
                 "raw STATUS of C with the broker down")
    finally:
        ctx.broker.start_app()
    relay.wait_drained(60)
    status(cid, 0, "confirmed")

    never = "%s-999999999" % instance
    status(never, 66, "unknown")
    check_eq(raw("STATUS %s\n" % never), "UNKNOWN %s" % never,
             "raw STATUS of an id never given out")
    other = "0000000000000000-1" if instance != "0" * 16 else \
        "ffffffffffffffff-1"
    status(other, 66, "unknown")
    rc, out, err = relay.cmd("publish", "-k", q, "--confirm=20s",
                             "--message-id", "status-own-id", "D")
    check_eq(rc, 0, "publish --confirm --message-id D (stderr %r)" % err)
    status("status-own-id", 66, "unknown")

    line = raw("STATUS\n")
    check(line.startswith("ERR BADREQ"), "STATUS without an id: %r" % line)
    line = raw("STATUS %s\n" % ("x" * 256))
    check(line.startswith("ERR BADREQ"), "STATUS with a 256-byte id: %r"
          % line)

    # Replayed, B is parked again under a new id, still found by its own.
    rc, out, err = relay.cmd("dead", "retry", b_row)
    check_eq(rc, 0, "dead retry %s (stderr %r)" % (b_row, err))
    H.wait_until(lambda: relay.cmd("status", b)[0] != 75, 30,
                 "B, replayed, to be parked again", interval=0.2)
    status(b, 65, "parked")
    with relay.client() as cl:
        rows = [r for r in cl.dead_list_all() if r["message_id"] == b]
    check(len(rows) == 1 and str(rows[0]["id"]) != b_row,
          "B parked again under a new dead letter id: %r" % rows)
    rc, out, err = relay.cmd("dead", "purge", rows[0]["id"])
    check_eq(rc, 0, "dead purge %s (stderr %r)" % (rows[0]["id"], err))
    status(b, 66, "unknown")

    relay.wait_drained(60)
    with ctx.consumer() as c:
        bodies = sorted(body for body, _ in c.drain(q))
    check_eq(bodies, [b"A", b"C", b"D"], "messages delivered")
    check_eq(relay.term(), 0, "pubrelayd exit code after SIGTERM")


def setup(names):
    b = S.start_broker()
    log("broker dir %s" % b.dir)
    return b


def report(broker, ctx, name):
    if "broker" in name:
        broker.dump_log(15)


def teardown(broker):
    broker.stop()


def http_get(port, path, method="GET", timeout=10):
    """(status, body) of one request to 127.0.0.1:port."""
    import http.client
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        c.request(method, path)
        r = c.getresponse()
        return r.status, r.read().decode("utf-8", "replace")
    finally:
        c.close()


def prom_samples(text):
    """{sample name with labels: value} of a Prometheus text exposition."""
    out = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            out[name] = float(value)
    return out


@scenario
def metrics_endpoint(ctx):
    """[metrics] listen on a free loopback port.  GET /metrics carries
    exactly the samples `pubrelay stats --prometheus` prints, with the same
    values once the relay is idle; /health says ready and the link up, and
    /health/link answers 200.  With the broker app stopped /health/link
    answers 503, /health still 200 (the relay accepts), and the backlog
    gauge counts the messages published meanwhile; after start_app it falls
    to 0 and /health/link is 200 again.  A scraper that connects and sends
    half a request holds neither the relay nor another scrape.  POST and
    unknown paths are refused.  A second relay on the same port exits 71
    naming [metrics] listen."""
    port = H.free_port()
    relay = ctx.relay(overrides={"metrics": {"listen": str(port)}})
    with ctx.consumer() as c:
        q = c.declare(H.unique_queue("metrics"))
    rc, _, err = relay.cmd("publish", "-k", q, "--lines",
                           data=b"".join(b"m%d\n" % i for i in range(20)))
    check_eq(rc, 0, "publish 20 (stderr %r)" % err)
    relay.wait_drained()

    st, body = http_get(port, "/metrics")
    check_eq(st, 200, "GET /metrics")
    got = prom_samples(body)
    rc, out, err = relay.cmd("stats", "--prometheus")
    check_eq(rc, 0, "pubrelay stats --prometheus (stderr %r)" % err)
    want = prom_samples(out)
    check_eq(sorted(got), sorted(want), "the endpoint's samples")
    for name in ("pubrelay_accepted_total", "pubrelay_confirmed_total",
                 "pubrelay_backlog_messages", "pubrelay_up"):
        check_eq(got.get(name), want.get(name), name)
    check_eq(got["pubrelay_accepted_total"], 20.0, "accepted")

    st, body = http_get(port, "/health")
    check_eq(st, 200, "GET /health while connected")
    h = json.loads(body)
    check(h["ready"] is True and h["link_up"] is True and
          h["link"] == "connected", "health while connected: %r" % h)
    check_eq(http_get(port, "/health/link")[0], 200, "/health/link, up")

    # A scraper that never finishes its request.
    stuck = socket.create_connection(("127.0.0.1", port))
    stuck.sendall(b"GET /metrics HTTP/1.1\r\nHost: x")
    try:
        ctx.broker.stop_app()
        H.wait_until(lambda: http_get(port, "/health/link")[0] == 503, 30,
                     "/health/link to say 503 with the broker stopped")
        rc, _, err = relay.cmd("publish", "-k", q, "--lines",
                               data=b"".join(b"d%d\n" % i
                                             for i in range(7)))
        check_eq(rc, 0, "publish 7 while the broker is down (stderr %r)"
                 % err)
        st, body = http_get(port, "/health")
        h = json.loads(body)
        check(st == 200 and h["ready"] is True and h["link_up"] is False,
              "/health with the broker down: %d %r" % (st, h))
        got = prom_samples(http_get(port, "/metrics")[1])
        check_eq(got["pubrelay_backlog_messages"], 7.0, "backlog, broker "
                 "down")
        check_eq(got['pubrelay_link_state{state="connected"}'], 0.0,
                 "link state connected, broker down")
    finally:
        ctx.broker.start_app()
    H.wait_until(lambda: prom_samples(http_get(port, "/metrics")[1])
                 ["pubrelay_backlog_messages"] == 0, 60,
                 "the backlog gauge to fall to 0 after start_app")
    check_eq(http_get(port, "/health/link")[0], 200, "/health/link, back")
    stuck.close()
    relay.wait_drained()
    with ctx.consumer() as c:
        got = [b for b, _ in c.drain(q, timeout=30)]
    check_eq(got, [b"m%d" % i for i in range(20)] +
             [b"d%d" % i for i in range(7)], "messages delivered, in order")

    st, _ = http_get(port, "/metrics", method="POST")
    check(st in (405, 501), "POST /metrics: %d" % st)
    st, body = http_get(port, "/nope")
    check(st == 404 and "/metrics" in body, "GET /nope: %d %r" % (st, body))

    other = ctx.relay(name=ctx.name + "-2", start=False,
                      overrides={"metrics": {"listen": str(port)}})
    other.start(wait=False)
    rc = other.proc.wait(timeout=30)
    check_eq(rc, 71, "exit of a relay whose metrics port is taken")
    check("[metrics] listen 127.0.0.1:%d" % port in other.log_text(),
          "its log does not name [metrics] listen: %r"
          % other.log_text()[-500:])
    check_eq(relay.term(), 0, "pubrelayd exit code after SIGTERM")


@scenario
def expiry(ctx):
    """[outbox] max_age = 2s, the broker app stopped.  Four messages: A
    with the default age, B with max-age 10 minutes, C with max-age 1 s
    and a receipt (confirm:), D by `pubrelay publish --max-age 10m`.
    After the ages pass the broker comes back: only B and D are
    delivered; A and C are dead letters whose reasons start "expired",
    with 0 attempts (`dead list --json` says so too, one JSON object a
    line); C's receipt is PARKED naming it; STATUS of A is PARKED;
    `expired` counts 2.  Neither is retried by the relay,
    also not after a restart.  `pubrelay dead retry` of A (an operator's
    replay) publishes it after B."""
    relay = ctx.relay(overrides={"outbox": {"max_age": "2s"}})
    with ctx.consumer() as c:
        q = c.declare(H.unique_queue("expiry"))
    ctx.broker.stop_app()
    try:
        H.wait_until(lambda: relay.stats()["state"] != "connected", 30,
                     "the relay to lose the link")
        with H.RawClient(relay.sock) as cl, H.RawClient(relay.sock) as rc:
            a = cl.pub("A", [("routing-key", q)])
            b = cl.pub("B", [("routing-key", q), ("max-age", "600000")])
            check(a.startswith("OK ") and b.startswith("OK "),
                  "A and B accepted: %r %r" % (a, b))
            rc.send(H.encode_pub("C", [("routing-key", q),
                                       ("max-age", "1000"),
                                       ("confirm", "60000")]))
            rc_, _, err = relay.cmd("publish", "-k", q, "--max-age",
                                    "10m", "D")
            check_eq(rc_, 0, "publish --max-age 10m (stderr %r)" % err)
            H.wait_until(lambda: int(relay.stats()["backlog"]) == 4, 10,
                         "four messages in the backlog")
            t0 = time.monotonic()
            # The condition is time itself: A's 2 s must pass.
            time.sleep(2.3)
            ctx.broker.start_app()
            receipt = rc.read_line()
        check(time.monotonic() - t0 >= 2.0, "ages passed")
    finally:
        ctx.broker.start_app()
    ida, idc = a[3:], receipt.split(" ")[1] if " " in receipt else ""
    check(receipt.startswith("PARKED ") and " expired: " in receipt,
          "C's receipt: %r" % receipt)
    relay.wait_drained()
    with ctx.consumer() as c:
        got = [m for m, _ in c.drain(q, timeout=30)]
    check_eq(got, [b"B", b"D"], "delivered")
    st = relay.stats()
    check_eq((int(st["expired"]), int(st["parked"]),
              int(st["dead_messages"])), (2, 2, 2),
             "expired, parked, dead_messages")
    with relay.client() as cl:
        rows = cl.dead_list_all()
        status = cl.request("STATUS %s\n" % ida)
    check_eq(sorted(r["message_id"] for r in rows), sorted([ida, idc]),
             "dead letters")
    for r in rows:
        check(r["reason"].startswith("expired: ") and r["attempts"] == 0,
              "dead letter %r" % r)
    check(status.startswith("PARKED %s expired: " % ida),
          "STATUS of A: %r" % status)
    rc_, out, err = relay.cmd("dead", "list", "--json")
    check_eq(rc_, 0, "dead list --json (stderr %r)" % err)
    objs = [json.loads(ln) for ln in out.splitlines()]
    check_eq(sorted((o["id"], o["message_id"], o["attempts"],
                     o["reason"].startswith("expired: ")) for o in objs),
             sorted((r["id"], r["message_id"], 0, True) for r in rows),
             "dead list --json")
    check(all(isinstance(o["parked_ms"], int) and o["routing_key"] == q and
              o["exchange"] == "-" for o in objs), "json fields: %r" % objs)

    check_eq(relay.term(), 0, "exit code after SIGTERM")
    relay.start()
    time.sleep(1.0)     # several retry delays (reconnect_min is 100 ms)
    st = relay.stats()
    check_eq((int(st["dead_messages"]), int(st["backlog"])), (2, 0),
             "after a restart: not retried")
    rid = [r["id"] for r in rows if r["message_id"] == ida][0]
    rc_, out, err = relay.cmd("dead", "retry", str(rid))
    check_eq(rc_, 0, "dead retry of A (stderr %r)" % err)
    relay.wait_drained()
    with ctx.consumer() as c:
        got = [m for m, _ in c.drain(q, timeout=30)]
    check_eq(got, [b"A"], "the replayed A")
    check_eq(relay.term(), 0, "exit code after SIGTERM")


def cgroup_unit(text):
    """The systemd unit of a /proc/PID/cgroup text, as pubrelayd finds it
    (provenance.c), written again here: None when there is none."""
    path = None
    for line in text.splitlines():
        if line.startswith("0::"):
            path = line[3:]
            break
    if path is None:
        for line in text.splitlines():
            parts = line.split(":", 2)
            if len(parts) == 3 and parts[1] == "name=systemd":
                path = parts[2]
                break
    units = [c for c in (path or "").split("/")
             if (c.endswith(".service") and len(c) > 8) or
             (c.endswith(".scope") and len(c) > 6)]
    return units[-1] if units else None


@scenario
def provenance(ctx):
    """[publish] provenance = yes: a message gets x-pubrelay-host (this
    host's name), x-pubrelay-uid and x-pubrelay-pid (the sending process)
    and x-pubrelay-unit exactly when /proc/PID/cgroup names a unit, beside
    the client's own headers.  A client header named x-pubrelay-... is
    refused (ERR BADREQ naming it) and the connection stays open.  A
    sender moved into a cgroup named like a scope gets that unit and its
    own pid.  A relay with the default (no) adds nothing and lets such a
    header through."""
    relay = ctx.relay(overrides={"publish": {"provenance": "yes"}})
    plain = ctx.relay(name=ctx.name + "-plain")
    with ctx.consumer() as c:
        q = c.declare(H.unique_queue("provenance"))
    with H.RawClient(relay.sock) as cl:
        r = cl.pub("stamped", [("routing-key", q), ("header", "app=x")])
        check(r.startswith("OK "), "stamped PUB: %r" % r)
        r = cl.pub("spoofed", [("routing-key", q),
                               ("header", "X-Pubrelay-Uid=7")])
        check(r.startswith("ERR BADREQ header X-Pubrelay-Uid: ") and
              "provenance" in r, "a client's x-pubrelay- header: %r" % r)
        check_eq(cl.request("RESET\n"), "OK", "RESET after the refusal")
        check_eq(cl.ping(), "PONG", "the connection stays")
    with H.RawClient(plain.sock) as cl:
        r = cl.pub("plain", [("routing-key", q),
                             ("header", "x-pubrelay-uid=7")])
        check(r.startswith("OK "), "plain relay: %r" % r)
    # A sender in a unit: a child moved into a cgroup of its own, named
    # like a scope, below this process's in the unified hierarchy.
    scope = "pubrelay-test-%d.scope" % os.getpid()
    cg2 = None
    with open("/proc/self/mountinfo") as f:
        for line in f:
            pre, _, post = line.partition(" - ")
            if post.split()[0] == "cgroup2":
                cg2 = pre.split()[4]
    check(cg2 is not None, "no cgroup2 hierarchy mounted")
    with open("/proc/self/cgroup") as f:
        mine = [ln[3:].strip() for ln in f if ln.startswith("0::")][0]
    cgdir = os.path.join(cg2, mine.strip("/"), scope)
    os.mkdir(cgdir)
    try:
        sender = ("import os, socket, sys\n"
                  "s = socket.socket(socket.AF_UNIX)\n"
                  "s.connect(sys.argv[1])\n"
                  "s.sendall(b'PUB 5\\nrouting-key: %s\\n\\nscope\\n')\n"
                  "r = s.recv(200)\n"
                  "print(os.getpid(), r.decode().strip())\n" % q)
        out = subprocess.run(
            ["sh", "-c", 'echo $$ >"$1/cgroup.procs" && exec "$2" -c "$3" '
             '"$4"', "sh", cgdir, sys.executable, sender, relay.sock],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            timeout=30).stdout.decode()
    finally:
        os.rmdir(cgdir)
    check(" OK " in out, "the sender in %s: %r" % (scope, out))
    scope_pid = out.split()[0]
    relay.wait_drained()
    plain.wait_drained()
    with ctx.consumer() as c:
        got = {m: p.headers or {} for m, p in c.drain(q, timeout=30)}
    check_eq(sorted(got), [b"plain", b"scope", b"stamped"], "delivered")
    check_eq({k: v.decode() if isinstance(v, bytes) else v
              for k, v in got[b"scope"].items()
              if k in ("x-pubrelay-pid", "x-pubrelay-unit")},
             {"x-pubrelay-pid": scope_pid, "x-pubrelay-unit": scope},
             "the sender in a scope")
    with open("/proc/self/cgroup") as f:
        unit = cgroup_unit(f.read())
    want = {"app": "x", "x-pubrelay-host": socket.gethostname(),
            "x-pubrelay-uid": str(os.getuid()),
            "x-pubrelay-pid": str(os.getpid())}
    if unit is not None:
        want["x-pubrelay-unit"] = unit
    hdrs = {k: v.decode() if isinstance(v, bytes) else v
            for k, v in got[b"stamped"].items()}
    check_eq(hdrs, want, "the stamped message's headers")
    ctx.note("unit: %s" % unit)
    check_eq({k: v.decode() if isinstance(v, bytes) else v
              for k, v in got[b"plain"].items()},
             {"x-pubrelay-uid": "7"}, "the plain relay's message")


def tmux(*args):
    p = subprocess.run(["tmux", "-L", "pubrelay-test-%d" % os.getpid()] +
                       list(args), stdout=subprocess.PIPE,
                       stderr=subprocess.STDOUT, timeout=30)
    return p.returncode, p.stdout.decode("utf-8", "replace")


@scenario
def top_screen(ctx):
    """`pubrelay top` in an 80x24 tmux pane (UTF-8), read back with
    capture-pane: a screen of at most 24 lines, none wider than 80
    columns, showing the link connected, an in rate above 0 while
    messages stream, the backlog, dead letters and clients; with the
    broker app stopped the state leaves connected and the backlog grows;
    with the relay gone it says "not reachable" and keeps trying; ^C ends
    it with exit 0 and the terminal restored.  Piped (not a tty), `top -n
    3 -d 200ms` prints three lines of name=value pairs, the first without
    rates."""
    relay = ctx.relay()
    with ctx.consumer() as c:
        q = c.declare(H.unique_queue("top"))
    rk = [("routing-key", q)]
    exitf = os.path.join(relay.dir, "top.exit")
    cmd = ("LANG=C.UTF-8 LC_ALL=C.UTF-8 %s -s %s top; echo $? >%s; "
           "sleep 60" % (H.binary("PUBRELAY"), relay.sock, exitf))
    rc, out = tmux("new-session", "-d", "-s", "top", "-x", "80", "-y",
                   "24", cmd)
    check_eq(rc, 0, "tmux new-session: %s" % out)
    H.on_exit(lambda: tmux("kill-server"))

    def screen():
        rc, out = tmux("capture-pane", "-p", "-t", "top")
        check_eq(rc, 0, "capture-pane: %s" % out)
        return out

    def shows(pred, what, timeout=20):
        last = [""]

        def ok():
            last[0] = screen()
            return pred(last[0])
        try:
            H.wait_until(ok, timeout, what, interval=0.2)
        except H.HarnessError:
            log("the screen:\n" + last[0])
            raise
        return last[0]

    def stream(n):
        with H.RawClient(relay.sock) as cl:
            for i in range(n):
                check(cl.pub("t%d" % i, rk).startswith("OK "), "PUB")
                time.sleep(0.01)

    shows(lambda s: "link      connected" in s, "top to show the link")
    stream(150)
    out = shows(lambda s: re.search(r"^in +[0-9.]+/s", s, re.M) and
                not re.search(r"^in +0\.0/s", s, re.M),
                "an in rate above 0", timeout=10)
    lines = out.rstrip("\n").split("\n")
    check(len(lines) <= 24 and max(len(ln) for ln in lines) <= 80,
          "the screen fits 80x24: %d lines, widest %d" %
          (len(lines), max(len(ln) for ln in lines)))
    for want in ("backlog", "dead      0 letters", "clients", "outbox",
                 "pubrelay top"):
        check(want in out, "%r not on the screen:\n%s" % (want, out))
    check("\u2581" in out or any(ch in out for ch in "\u2582\u2583\u2584"
                                                      "\u2585\u2586\u2587"
                                                      "\u2588"),
          "no sparkline on the screen:\n%s" % out)

    ctx.broker.stop_app()
    try:
        H.wait_until(lambda: relay.stats()["state"] != "connected", 30,
                     "the relay to lose the link")
        with H.RawClient(relay.sock) as cl:
            for i in range(5):
                cl.pub("held%d" % i, rk)
        shows(lambda s: re.search(r"^backlog +5 ", s, re.M) and
              "link      connected" not in s,
              "the backlog of 5 and the link down")
    finally:
        ctx.broker.start_app()
    relay.wait_drained()
    check_eq(relay.term(), 0, "relay exit code")
    shows(lambda s: "not reachable" in s, "top to say the relay is gone")
    relay.start()
    shows(lambda s: "link      connected" in s, "top to find it again")
    tmux("send-keys", "-t", "top", "C-c")
    H.wait_until(lambda: os.path.exists(exitf) and
                 open(exitf).read().strip() != "", 10, "top to exit")
    check_eq(open(exitf).read().strip(), "0", "top's exit status after ^C")
    tmux("kill-server")

    p = subprocess.run([H.binary("PUBRELAY"), "-s", relay.sock, "top", "-n",
                        "3", "-d", "200ms"], stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE, timeout=30)
    lines = p.stdout.decode().splitlines()
    check(p.returncode == 0 and len(lines) == 3, "top -n 3 piped: exit %d, "
          "%r" % (p.returncode, lines))
    check(all("state=connected" in ln and " backlog=" in ln for ln in lines)
          and " in=- " in lines[0] and " in=- " not in lines[2],
          "the piped lines: %r" % lines)


def main(argv):
    return S.run("integration.py", scenario, argv, setup, Ctx, report=report,
                 repair=lambda b, last: S.ensure_broker(b), teardown=teardown,
                 needs=("root", "broker", "pika", "tmux"))


if __name__ == "__main__":
    sys.exit(main(sys.argv))
